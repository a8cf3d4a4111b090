//! kvm_pause_resume: a pause request followed by a resume request over the control socket,
//! each answered once done (all vCPUs parked / released); median and p90 round trip. The
//! requests go through the crate's control client, driven by `BlockingClient`.

mod support;

use std::time::{Duration, Instant};

use ovm_backend_kvm::control::{BlockingClient, ControlClient, Request};
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
        let client = ControlClient::new(socket).with_timeout(Duration::from_secs(5));
        let client = BlockingClient::new(client).expect("client runtime");
        let mut rounds = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let t = Instant::now();
            client.done(Request::Pause).expect("pause");
            client.done(Request::Resume).expect("resume");
            rounds.push(t.elapsed().as_secs_f64() * 1e3);
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
