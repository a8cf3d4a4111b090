#!/usr/bin/env bash
# System packages for ovm-backend-xen's test bed: Xen 4.17 booted under QEMU (TCG) with a
# PV dom0 built from this machine's own files (see scripts/xen-testbed.sh).
# Idempotent; the caller runs `apt-get update` once before sourcing this.
xen_deps_installed() {
    # `dpkg -s` also succeeds for half-installed packages; ask for the full status.
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}
for pkg in \
    xen-hypervisor-4.17-amd64 \
    xen-utils-4.17 \
    linux-image-amd64 \
    linux-image-cloud-amd64 \
    busybox-static \
    grub-pc-bin \
    grub-common \
    xorriso \
    mtools \
    qemu-system-x86; do
    # INITRD=No: the kernels are only read by the test bed, no boot initramfs is needed.
    # A package that cannot be installed must not stop the caller (scripts/setup.sh runs
    # under `set -e`): the Xen test bed then skips and says what is missing.
    xen_deps_installed "$pkg" ||
        DEBIAN_FRONTEND=noninteractive INITRD=No apt-get install -y --no-install-recommends "$pkg" ||
        echo "ovm-backend-xen deps: cannot install $pkg; the Xen test bed will skip" >&2
done
unset -f xen_deps_installed
