#!/usr/bin/env bash
# System packages for ovm-storage-connect's tests and benchmarks:
# - xfsprogs: mkfs.xfs for the loop-mounted reflink XFS the fs plugin is tested on;
# - qemu-utils: qemu-img for qcow2/VMDK import and export.
# Idempotent; the caller runs `apt-get update` once before sourcing this.
for pkg in xfsprogs qemu-utils; do
    dpkg -s "$pkg" >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$pkg"
done
