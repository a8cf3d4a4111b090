#!/usr/bin/env bash
# System packages for ovm-ovf's tests and benchmark:
# - qemu-utils: qemu-img, for qcow2 conversion, cross-checking the native VMDK reader and
#   writer, and the peer pipeline of the ova_import benchmark (with tar and sha256sum,
#   which coreutils/tar provide).
# Idempotent; the caller runs `apt-get update` once before sourcing this.
for pkg in qemu-utils tar coreutils; do
    dpkg -s "$pkg" >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$pkg"
done
