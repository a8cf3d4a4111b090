//! Shared helpers: a backend on a private state dir, or a printed reason to skip.

#![allow(dead_code)]

use std::time::Duration;

use ovm_backend_kvm::{KvmHypervisor, KvmOptions, RebootPolicy, kvm_usable};
use ovm_core::VmId;
use ovm_core::hypervisor::{Hypervisor, VmConfig, VmEvent, VmEventKind};
use ovm_core::model::{BootSource, DomainType, VmSpec};
use tokio::sync::broadcast;

/// A backend using this crate's freshly built `ovm-vmm`, or `None` (with the reason
/// printed) where /dev/kvm is unusable.
pub fn backend(reboot: RebootPolicy) -> Option<(KvmHypervisor, tempfile::TempDir)> {
    if let Err(reason) = kvm_usable() {
        eprintln!("skipped: {reason}");
        return None;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let hv = KvmHypervisor::with_options(KvmOptions {
        state_dir: dir.path().to_path_buf(),
        vmm_binary: Some(env!("CARGO_BIN_EXE_ovm-vmm").into()),
        reboot,
        ..KvmOptions::default()
    })
    .expect("backend");
    Some((hv, dir))
}

/// A test-guest VM config running `cmdline`.
pub fn guest(name: &str, cmdline: &str, memory_mib: u64) -> VmConfig {
    let mut spec = VmSpec::new(name, 1, memory_mib);
    spec.domain_type = DomainType::Pvh;
    spec.boot = BootSource::TestGuest {
        cmdline: cmdline.into(),
    };
    VmConfig::new(VmId::new(), spec)
}

/// Defines and starts.
pub async fn boot(hv: &KvmHypervisor, config: &VmConfig) {
    hv.define(config).await.expect("define");
    hv.start(config.id).await.expect("start");
}

/// Waits for an event about `vm` that `want` accepts.
pub async fn event(
    rx: &mut broadcast::Receiver<VmEvent>,
    vm: VmId,
    timeout: Duration,
    want: impl Fn(&VmEventKind) -> bool,
) -> VmEventKind {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(e) if e.vm == vm && want(&e.kind) => return e.kind,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(e) => panic!("event stream ended: {e}"),
            }
        }
    };
    tokio::time::timeout(timeout, wait)
        .await
        .unwrap_or_else(|_| panic!("no matching event for {vm} within {timeout:?}"))
}

/// Waits until the console contains `text`.
pub async fn console_shows(hv: &KvmHypervisor, vm: VmId, text: &str, timeout: Duration) -> String {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let console =
            String::from_utf8_lossy(&hv.console_buffer(vm).await.expect("console")).into_owned();
        if console.contains(text) {
            return console;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "console never showed {text:?}; it has:\n{console}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
