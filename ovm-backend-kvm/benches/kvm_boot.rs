//! kvm_boot: process spawn → the guest's "ready" line on the console, 20 runs, for ovm-vmm
//! and for QEMU microvm booting the same guest file. JSON lines on stdout.

mod support;

use std::time::{Duration, Instant};

use support::*;

const RUNS: usize = 20;

fn main() {
    if let Some(reason) = skip_reason() {
        println!("{{\"bench\":\"kvm_boot\",\"skipped\":{reason:?}}}");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut ovm = Vec::new();
    let mut qemu = Vec::new();
    let with_qemu = qemu_available();
    for i in 0..RUNS {
        let t = Instant::now();
        let vm = spawn_ovm(dir.path(), &format!("boot{i}"), 32, "idle");
        vm.wait_for(READY_LINE, Duration::from_secs(30))
            .expect("ovm boot");
        ovm.push(t.elapsed().as_secs_f64() * 1e3);
        vm.kill();
        if with_qemu {
            let t = Instant::now();
            let vm = spawn_qemu(32, "idle");
            vm.wait_for(READY_LINE, Duration::from_secs(30))
                .expect("qemu boot");
            qemu.push(t.elapsed().as_secs_f64() * 1e3);
            vm.kill();
        }
    }
    let peer = |v: f64| with_qemu.then_some(("qemu-microvm", v));
    let (om, qm) = (median(&mut ovm.clone()), median(&mut qemu.clone()));
    let (op, qp) = (percentile(&mut ovm, 90.0), percentile(&mut qemu, 90.0));
    report("kvm_boot", "median_ms", om, "ms", peer(qm));
    report("kvm_boot", "p90_ms", op, "ms", peer(qp));
}
