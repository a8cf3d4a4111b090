//! Misbehaving guests and clients never take down a VMM or another VM.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::{backend, boot, console_shows, event, guest};
use ovm_backend_kvm::RebootPolicy;
use ovm_backend_kvm::control::{
    ControlClient, ErrorCode, MAX_REQUEST_BYTES, PROTOCOL_VERSION, Reply, Request, Response,
};
use ovm_backend_kvm::vmm::RunState;
use ovm_core::hypervisor::{Hypervisor, VmEventKind};
use ovm_core::model::VmState;

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread")]
async fn garbage_guest_is_reported_survives_and_is_killable() {
    let Some((hv, _dir)) = backend(RebootPolicy::Restart) else {
        return;
    };
    let mut events = hv.subscribe();
    let vm = guest("garbage", "garbage", 16);
    boot(&hv, &vm).await;
    let kind = event(&mut events, vm.id, T, |k| {
        matches!(k, VmEventKind::GuestMisbehaved { .. })
    })
    .await;
    assert!(format!("{kind:?}").contains("guest channel"), "{kind:?}");
    console_shows(
        &hv,
        vm.id,
        "ovm-guest: garbage round 64",
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(hv.state(vm.id).await.unwrap(), VmState::Running);
    hv.stats(vm.id).await.expect("the VMM still answers");
    hv.pause(vm.id).await.expect("pause under garbage");
    hv.resume(vm.id).await.expect("resume under garbage");
    let t = Instant::now();
    hv.kill(vm.id).await.expect("kill");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "kill took {:?}",
        t.elapsed()
    );
    assert_eq!(hv.state(vm.id).await.unwrap(), VmState::Stopped);
}

#[tokio::test(flavor = "multi_thread")]
async fn spinning_guest_is_killed_when_stop_times_out() {
    let Some((hv, _dir)) = backend(RebootPolicy::Restart) else {
        return;
    };
    let vm = guest("spin", "spin", 16);
    boot(&hv, &vm).await;
    console_shows(&hv, vm.id, "ovm-guest: spin", T).await;
    let t = Instant::now();
    hv.stop(vm.id, Duration::from_millis(300))
        .await
        .expect("stop");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(hv.state(vm.id).await.unwrap(), VmState::Stopped);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_control_messages_get_typed_error_replies_and_the_vmm_runs_on() {
    let Some((hv, _dir)) = backend(RebootPolicy::Restart) else {
        return;
    };
    let vm = guest("api", "idle", 16);
    boot(&hv, &vm).await;
    let socket = hv.api_socket(vm.id).expect("socket");
    let stream = UnixStream::connect(&socket).unwrap();
    stream.set_read_timeout(Some(T)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut ask = |line: &[u8]| -> Response {
        writer.write_all(line).unwrap();
        let mut answer = String::new();
        reader.read_line(&mut answer).unwrap();
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{answer:?}: {e}"))
    };
    for (bad, code) in [
        (&b"not json\n"[..], ErrorCode::BadRequest),
        (b"{\"op\":\"explode\"}\n", ErrorCode::BadRequest),
        (
            b"{\"op\":\"guest_send\",\"key\":\"k\"}\n",
            ErrorCode::BadRequest,
        ),
        (
            b"{\"op\":\"pause\",\"extra\":true}\n",
            ErrorCode::BadRequest,
        ),
        (
            b"{\"op\":\"stop\",\"timeout_ms\":\"soon\"}\n",
            ErrorCode::BadRequest,
        ),
        (b"\xff\xfe\n", ErrorCode::BadRequest),
        (b"[\"pause\"]\n", ErrorCode::BadRequest),
        (b"\n", ErrorCode::BadRequest),
        (
            b"{\"op\":\"guest_send\",\"key\":\"\",\"value\":[]}\n",
            ErrorCode::Invalid,
        ),
        (b"{\"op\":\"vcpu_states\"}\n", ErrorCode::InvalidState),
    ] {
        let answer = ask(bad);
        assert_eq!(answer.protocol, PROTOCOL_VERSION);
        match answer.outcome {
            Err(e) => assert_eq!(e.code, code, "{bad:?}: {e}"),
            Ok(reply) => panic!("{bad:?} was answered {reply:?}"),
        }
    }
    match ask(b"{\"op\":\"state\"}\n").outcome {
        Ok(Reply::State(status)) => {
            assert_eq!(
                status.state,
                RunState::Running,
                "the same connection still works"
            );
            assert_eq!(Some(status.pid), hv.vmm_pid(vm.id));
        }
        other => panic!("{other:?}"),
    }
    // A line over the limit is refused and its connection closed; the VMM goes on.
    let huge = format!(
        "{{\"op\":\"console_write\",\"data\":[{}1]}}\n",
        "1,".repeat(MAX_REQUEST_BYTES)
    );
    let answer = ask(huge.as_bytes());
    assert_eq!(answer.outcome.unwrap_err().code, ErrorCode::BadRequest);
    let client = ControlClient::new(&socket).for_vm(vm.id);
    assert_eq!(client.state().await.unwrap().state, RunState::Running);
    hv.stats(vm.id)
        .await
        .expect("the backend still talks to it");
    // The state replies are typed too: vCPU states once paused, device states any time.
    hv.pause(vm.id).await.expect("pause");
    match client
        .call(&Request::VcpuStates)
        .await
        .expect("vcpu_states")
    {
        Reply::VcpuStates(states) => {
            assert_eq!(states.iter().map(|s| s.id).collect::<Vec<_>>(), [0]);
            assert_ne!(states[0].regs.rip, 0, "{:?}", states[0].regs);
        }
        other => panic!("{other:?}"),
    }
    match client
        .call(&Request::DeviceStates)
        .await
        .expect("device_states")
    {
        Reply::DeviceStates(devices) => assert!(devices.disks.is_empty()),
        other => panic!("{other:?}"),
    }
    hv.resume(vm.id).await.expect("resume");
    assert_eq!(hv.state(vm.id).await.unwrap(), VmState::Running);
    hv.kill(vm.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn vms_are_isolated_processes() {
    let Some((hv, _dir)) = backend(RebootPolicy::Restart) else {
        return;
    };
    let mut events = hv.subscribe();
    let a = guest("iso-a", "idle", 16);
    let b = guest("iso-b", "kv", 16);
    boot(&hv, &a).await;
    boot(&hv, &b).await;
    let (pa, pb) = (hv.vmm_pid(a.id).unwrap(), hv.vmm_pid(b.id).unwrap());
    assert_ne!(pa, pb, "one process per VM");

    hv.kill(a.id).await.unwrap();
    assert_eq!(hv.state(a.id).await.unwrap(), VmState::Stopped);
    assert_eq!(hv.state(b.id).await.unwrap(), VmState::Running);

    // A VMM that dies unexpectedly is reported, and the other VM is untouched.
    boot_again(&hv, a.id).await;
    let pa = hv.vmm_pid(a.id).unwrap();
    // SAFETY: sending SIGKILL to a child process we started, by its pid.
    unsafe { libc::kill(pa as i32, libc::SIGKILL) };
    event(&mut events, a.id, T, |k| {
        matches!(k, VmEventKind::InternalError { .. })
    })
    .await;
    assert_eq!(hv.state(a.id).await.unwrap(), VmState::Crashed);

    console_shows(&hv, b.id, "ovm-guest: ready", T).await;
    hv.guest_send(b.id, "still", b"there").await.unwrap();
    event(
        &mut events,
        b.id,
        T,
        |k| matches!(k, VmEventKind::GuestMessage { key } if key == "still"),
    )
    .await;
    hv.kill(b.id).await.unwrap();
}

async fn boot_again(hv: &ovm_backend_kvm::KvmHypervisor, vm: ovm_core::VmId) {
    hv.start(vm).await.expect("start again");
}
