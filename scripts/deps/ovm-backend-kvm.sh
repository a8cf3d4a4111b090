# ovm-backend-kvm: the test guest is built with gcc/as/ld (binutils); the kvm_boot and
# kvm_overhead benchmarks run QEMU microvm beside ovm-vmm. Idempotent; the caller has run
# `apt-get update`.
for pkg in gcc binutils qemu-system-x86; do
    dpkg -s "$pkg" >/dev/null 2>&1 || apt-get install -y "$pkg"
done
