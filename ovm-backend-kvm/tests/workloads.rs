//! The test guest's workloads under `KvmHypervisor`, each in its own `ovm-vmm` process.

mod common;

use std::time::Duration;

use common::{backend, boot, console_shows, event, guest};
use ovm_backend_kvm::RebootPolicy;
use ovm_core::hypervisor::{Hypervisor, VmEventKind};
use ovm_core::model::VmState;

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread")]
async fn idle_guest_boots_pauses_resumes_and_stops_gracefully() {
    let Some((hv, _dir)) = backend(RebootPolicy::Restart) else {
        return;
    };
    let mut events = hv.subscribe();
    let vm = guest("idle", "idle", 32);
    boot(&hv, &vm).await;
    event(&mut events, vm.id, T, |k| *k == VmEventKind::Started).await;
    let console = console_shows(&hv, vm.id, "ovm-guest: ready", T).await;
    assert!(
        console.contains("ovm-guest: hello from the ovm test guest"),
        "{console}"
    );
    assert!(console.contains("ovm-guest: cmdline: idle"), "{console}");
    assert!(console.contains("ovm-guest: memory 32 MiB"), "{console}");

    let stats = hv.stats(vm.id).await.expect("stats");
    assert_eq!(stats.memory_mib, 32);
    assert!(stats.host_rss_bytes > 0);

    hv.pause(vm.id).await.expect("pause");
    assert_eq!(hv.state(vm.id).await.unwrap(), VmState::Paused);
    assert!(hv.pause(vm.id).await.is_err(), "pausing twice is refused");
    hv.resume(vm.id).await.expect("resume");
    assert_eq!(hv.state(vm.id).await.unwrap(), VmState::Running);

    let started = std::time::Instant::now();
    hv.stop(vm.id, Duration::from_secs(10)).await.expect("stop");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "an idle guest powers off when asked, without waiting for the timeout"
    );
    assert_eq!(hv.state(vm.id).await.unwrap(), VmState::Stopped);
    let console = String::from_utf8_lossy(&hv.console_buffer(vm.id).await.unwrap()).into_owned();
    assert!(
        console.contains("ovm-guest: poweroff"),
        "the guest itself powered off: {console}"
    );
    event(&mut events, vm.id, T, |k| *k == VmEventKind::Stopped).await;
    hv.undefine(vm.id).await.expect("undefine");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_with_waiting_application_processors_pauses_and_stops() {
    let Some((hv, _dir)) = backend(RebootPolicy::Restart) else {
        return;
    };
    // The test guest never starts its APs: they sit in KVM waiting for INIT/SIPI, which is
    // where a kick signal can be lost; pause and stop must still reach them.
    let mut vm = guest("smp", "idle", 32);
    vm.spec.vcpus = 4;
    boot(&hv, &vm).await;
    console_shows(&hv, vm.id, "ovm-guest: ready", T).await;
    for _ in 0..20 {
        hv.pause(vm.id).await.expect("pause");
        hv.resume(vm.id).await.expect("resume");
    }
    hv.stop(vm.id, Duration::from_secs(10)).await.expect("stop");
    assert_eq!(hv.state(vm.id).await.unwrap(), VmState::Stopped);
}

#[tokio::test(flavor = "multi_thread")]
async fn poweroff_is_reported_and_the_vm_is_stopped() {
    let Some((hv, _dir)) = backend(RebootPolicy::Restart) else {
        return;
    };
    let mut events = hv.subscribe();
    let vm = guest("poweroff", "poweroff", 16);
    boot(&hv, &vm).await;
    event(&mut events, vm.id, T, |k| *k == VmEventKind::PoweredOff).await;
    assert_eq!(hv.state(vm.id).await.unwrap(), VmState::Stopped);
}

#[tokio::test(flavor = "multi_thread")]
async fn reboot_restarts_or_stops_per_policy() {
    let Some((hv, _dir)) = backend(RebootPolicy::Restart) else {
        return;
    };
    let mut events = hv.subscribe();
    let vm = guest("reboot", "reboot", 16);
    boot(&hv, &vm).await;
    event(&mut events, vm.id, T, |k| *k == VmEventKind::Started).await;
    event(&mut events, vm.id, T, |k| *k == VmEventKind::Rebooted).await;
    event(&mut events, vm.id, T, |k| *k == VmEventKind::Started).await;
    event(&mut events, vm.id, T, |k| *k == VmEventKind::Rebooted).await;
    hv.kill(vm.id).await.expect("kill a rebooting guest");

    let Some((hv, _dir)) = backend(RebootPolicy::Stop) else {
        return;
    };
    let mut events = hv.subscribe();
    let vm = guest("reboot-stop", "reboot", 16);
    boot(&hv, &vm).await;
    event(&mut events, vm.id, T, |k| *k == VmEventKind::Rebooted).await;
    event(&mut events, vm.id, T, |k| *k == VmEventKind::Stopped).await;
    assert_eq!(hv.state(vm.id).await.unwrap(), VmState::Stopped);
}

#[tokio::test(flavor = "multi_thread")]
async fn triple_fault_is_a_crash_with_registers() {
    let Some((hv, _dir)) = backend(RebootPolicy::Restart) else {
        return;
    };
    let mut events = hv.subscribe();
    let vm = guest("crash", "crash", 16);
    boot(&hv, &vm).await;
    let kind = event(&mut events, vm.id, T, |k| {
        matches!(k, VmEventKind::Crashed { .. })
    })
    .await;
    let VmEventKind::Crashed { reason } = kind else {
        unreachable!()
    };
    assert!(
        reason.contains("triple fault") && reason.contains("rip="),
        "{reason}"
    );
    assert_eq!(hv.state(vm.id).await.unwrap(), VmState::Crashed);
    hv.start(vm.id)
        .await
        .expect("a crashed VM can be started again");
    hv.kill(vm.id).await.ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn kv_guest_answers_messages() {
    let Some((hv, _dir)) = backend(RebootPolicy::Restart) else {
        return;
    };
    let mut events = hv.subscribe();
    let vm = guest("kv", "kv", 16);
    boot(&hv, &vm).await;
    console_shows(&hv, vm.id, "ovm-guest: ready", T).await;
    hv.guest_send(vm.id, "greeting", b"hello")
        .await
        .expect("send");
    event(
        &mut events,
        vm.id,
        T,
        |k| matches!(k, VmEventKind::GuestMessage { key } if key == "greeting"),
    )
    .await;
    assert_eq!(
        hv.guest_read(vm.id, "greeting").await.unwrap().as_deref(),
        Some(&b"echo:hello"[..])
    );
    let big = vec![b'x'; 8000];
    hv.guest_send(vm.id, "big", &big)
        .await
        .expect("send 8000 bytes");
    event(
        &mut events,
        vm.id,
        T,
        |k| matches!(k, VmEventKind::GuestMessage { key } if key == "big"),
    )
    .await;
    let back = hv.guest_read(vm.id, "big").await.unwrap().expect("answer");
    assert_eq!(back.len(), 8005);
    assert!(hv.guest_send(vm.id, &"k".repeat(257), b"").await.is_err());
    assert_eq!(hv.guest_read(vm.id, "never").await.unwrap(), None);
    hv.kill(vm.id).await.expect("kill");
}

#[tokio::test(flavor = "multi_thread")]
async fn checksum_verifies_the_pattern_and_dirty_writes_it() {
    let Some((hv, _dir)) = backend(RebootPolicy::Restart) else {
        return;
    };
    let mut events = hv.subscribe();
    // This machine emulates ring-0 guest code (see docs/kvm.md): keep the span at 1 MiB.
    let vm = guest("checksum", "checksum,span=1", 32);
    boot(&hv, &vm).await;
    event(
        &mut events,
        vm.id,
        Duration::from_secs(60),
        |k| matches!(k, VmEventKind::GuestMessage { key } if key == "ovm.checksum"),
    )
    .await;
    let sum = hv
        .guest_read(vm.id, "ovm.checksum")
        .await
        .unwrap()
        .expect("published");
    let sum = String::from_utf8(sum).unwrap();
    assert!(sum.starts_with("ok pages=256 written=256 bad=0"), "{sum}");

    let dirty = guest("dirty", "dirty=1,span=1", 32);
    boot(&hv, &dirty).await;
    console_shows(&hv, dirty.id, "ovm-guest: dirty rate=1MiB/s span=1MiB", T).await;
    hv.guest_send(dirty.id, "ovm.cmd", b"checksum")
        .await
        .unwrap();
    event(
        &mut events,
        dirty.id,
        Duration::from_secs(60),
        |k| matches!(k, VmEventKind::GuestMessage { key } if key == "ovm.checksum"),
    )
    .await;
    let sum = String::from_utf8(
        hv.guest_read(dirty.id, "ovm.checksum")
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert!(
        sum.starts_with("ok pages=256") && sum.contains(" bad=0 "),
        "{sum}"
    );
    hv.kill(vm.id).await.unwrap();
    hv.kill(dirty.id).await.unwrap();
}
