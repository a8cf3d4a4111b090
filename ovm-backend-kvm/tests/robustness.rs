//! Misbehaving guests and clients never take down a VMM or another VM.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::{backend, boot, console_shows, event, guest};
use ovm_backend_kvm::RebootPolicy;
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
async fn malformed_control_messages_get_error_replies() {
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
    for bad in [
        &b"not json\n"[..],
        b"{\"op\":\"explode\"}\n",
        b"{\"op\":\"guest_send\",\"key\":\"k\"}\n",
        b"{\"op\":\"pause\",\"extra\":true}\n",
        b"\xff\xfe\n",
        b"{\"op\":\"guest_send\",\"key\":\"\",\"value\":[]}\n",
    ] {
        writer.write_all(bad).unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let r: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(r["ok"], false, "{bad:?} -> {line}");
        assert!(r["error"]["code"].is_string(), "{line}");
    }
    writer.write_all(b"{\"op\":\"state\"}\n").unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(
        line.contains("\"running\""),
        "the same connection still works: {line}"
    );
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
