//! kvm_pause_resume: a pause request followed by a resume request over the control socket,
//! each answered once done (all vCPUs parked / released); median and p90 round trip.

mod support;

use std::time::{Duration, Instant};

use ovm_backend_kvm::api::{Request, call};
use support::*;

const ROUNDS: usize = 200;

fn main() {
    if let Some(reason) = skip_reason() {
        println!("{{\"bench\":\"kvm_pause_resume\",\"skipped\":{reason:?}}}");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    for vcpus_cmd in ["idle", "spin"] {
        let vm = spawn_ovm(dir.path(), vcpus_cmd, 32, vcpus_cmd);
        vm.wait_for(READY_LINE, Duration::from_secs(30))
            .expect("boot");
        let socket = vm.socket.clone().expect("socket");
        let mut rounds = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let t = Instant::now();
            let p = call(&socket, &Request::Pause, Duration::from_secs(5)).expect("pause");
            let r = call(&socket, &Request::Resume, Duration::from_secs(5)).expect("resume");
            rounds.push(t.elapsed().as_secs_f64() * 1e3);
            assert!(p.ok && r.ok, "{p:?} {r:?}");
        }
        vm.kill();
        let metric = format!("{vcpus_cmd}_guest_median_ms");
        report(
            "kvm_pause_resume",
            &metric,
            median(&mut rounds.clone()),
            "ms",
            None,
        );
        let metric = format!("{vcpus_cmd}_guest_p90_ms");
        report(
            "kvm_pause_resume",
            &metric,
            percentile(&mut rounds, 90.0),
            "ms",
            None,
        );
    }
}
