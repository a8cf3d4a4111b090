//! kvm_overhead: resident memory of the VMM process beyond the guest memory it touched, for
//! an idle 256 MiB guest, ovm-vmm beside QEMU microvm.

mod support;

use std::time::Duration;

use support::*;

const MEMORY_MIB: u64 = 256;

fn overhead(vm: Vm) -> (f64, f64) {
    vm.wait_for(READY_LINE, Duration::from_secs(30))
        .expect("boot");
    std::thread::sleep(Duration::from_millis(500));
    let (total, guest) = rss_split(vm.child.id(), MEMORY_MIB << 20).expect("smaps");
    vm.kill();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    (mib(total.saturating_sub(guest)), mib(total))
}

fn main() {
    if let Some(reason) = skip_reason() {
        println!("{{\"bench\":\"kvm_overhead\",\"skipped\":{reason:?}}}");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (ovm, ovm_total) = overhead(spawn_ovm(dir.path(), "overhead", MEMORY_MIB, "idle"));
    if qemu_available() {
        let (qemu, qemu_total) = overhead(spawn_qemu(MEMORY_MIB, "idle"));
        report(
            "kvm_overhead",
            "vmm_rss_minus_guest_mib",
            ovm,
            "MiB",
            Some(("qemu-microvm", qemu)),
        );
        report(
            "kvm_overhead",
            "total_rss_mib",
            ovm_total,
            "MiB",
            Some(("qemu-microvm", qemu_total)),
        );
    } else {
        report("kvm_overhead", "vmm_rss_minus_guest_mib", ovm, "MiB", None);
        report("kvm_overhead", "total_rss_mib", ovm_total, "MiB", None);
    }
}
