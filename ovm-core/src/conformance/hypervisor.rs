//! The `Hypervisor` conformance suite: lifecycle, state transitions, errors for bad specs
//! and unknown VMs, unsupported operations, guest message limits and events.
//!
//! ```no_run
//! # async fn demo(hv: &dyn ovm_core::Hypervisor) {
//! use ovm_core::conformance::hypervisor::{run, SuiteConfig};
//! run(hv, &SuiteConfig::default()).await;
//! # }
//! ```

use std::time::Duration;

use crate::hypervisor::{Hypervisor, VmConfig, VmEventKind, guest_message};
use crate::id::VmId;
use crate::model::{BootSource, DomainType, VmSpec, VmState};
use crate::{Error, Result};

/// How the suite makes its test VMs.
#[derive(Debug, Clone)]
pub struct SuiteConfig {
    /// How test VMs boot (an idle guest that keeps running until stopped).
    pub boot: BootSource,
    /// Domain type of test VMs; the first the backend supports if `None`.
    pub domain_type: Option<DomainType>,
    /// Memory of test VMs, MiB.
    pub memory_mib: u64,
    /// Most time any one operation may take.
    pub op_timeout: Duration,
    /// Timeout handed to graceful `stop`.
    pub stop_timeout: Duration,
}

impl Default for SuiteConfig {
    fn default() -> Self {
        SuiteConfig {
            boot: BootSource::TestGuest {
                cmdline: "idle".into(),
            },
            domain_type: None,
            memory_mib: 32,
            op_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(5),
        }
    }
}

/// Runs every check; panics naming the first broken rule.
pub async fn run(hv: &dyn Hypervisor, cfg: &SuiteConfig) {
    host_info_is_sane(hv, cfg).await;
    bad_specs_are_refused(hv, cfg).await;
    unknown_vms_are_not_found(hv, cfg).await;
    lifecycle(hv, cfg).await;
    unsupported_operations_say_so(hv, cfg).await;
}

fn spec(hv: &dyn Hypervisor, cfg: &SuiteConfig, name: &str) -> VmSpec {
    let mut s = VmSpec::new(name, 1, cfg.memory_mib);
    s.boot = cfg.boot.clone();
    s.domain_type = cfg
        .domain_type
        .or_else(|| hv.capabilities().domain_types.first().copied())
        .unwrap_or(DomainType::PvHvm);
    s
}

async fn within<T>(cfg: &SuiteConfig, what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(cfg.op_timeout, f).await {
        Ok(v) => v,
        Err(_) => panic!(
            "conformance: {what} did not return within {:?}",
            cfg.op_timeout
        ),
    }
}

/// Runs `f`, requires a specific error kind.
fn expect_err<T: std::fmt::Debug>(what: &str, r: Result<T>, ok: impl Fn(&Error) -> bool) {
    match r {
        Err(e) if ok(&e) => {}
        other => panic!("conformance: {what}: unexpected result {other:?}"),
    }
}

async fn host_info_is_sane(hv: &dyn Hypervisor, cfg: &SuiteConfig) {
    let info = within(cfg, "host_info", hv.host_info())
        .await
        .expect("conformance: host_info fails");
    assert!(info.cpus > 0, "conformance: host_info reports 0 CPUs");
    assert!(
        info.memory_mib > 0,
        "conformance: host_info reports no memory"
    );
    assert!(
        info.free_memory_mib <= info.memory_mib,
        "conformance: free memory exceeds memory"
    );
    let caps = hv.capabilities();
    assert!(
        !caps.domain_types.is_empty(),
        "conformance: backend supports no domain type"
    );
    assert!(!hv.backend().is_empty(), "conformance: backend has no name");
}

async fn bad_specs_are_refused(hv: &dyn Hypervisor, cfg: &SuiteConfig) {
    let mut zero_cpus = spec(hv, cfg, "conf-bad-vcpus");
    zero_cpus.vcpus = 0;
    let r = within(
        cfg,
        "define(vcpus=0)",
        hv.define(&VmConfig::new(VmId::new(), zero_cpus)),
    )
    .await;
    expect_err("define with 0 vCPUs", r, |e| {
        matches!(e, Error::InvalidSpec { .. })
    });

    let mut no_mem = spec(hv, cfg, "conf-bad-mem");
    no_mem.memory_mib = 0;
    let r = within(
        cfg,
        "define(memory=0)",
        hv.define(&VmConfig::new(VmId::new(), no_mem)),
    )
    .await;
    expect_err("define with 0 MiB", r, |e| {
        matches!(e, Error::InvalidSpec { .. })
    });

    let mut huge = spec(hv, cfg, "conf-huge");
    huge.memory_mib = VmSpec::MAX_MEMORY_MIB;
    huge.max_memory_mib = VmSpec::MAX_MEMORY_MIB;
    let id = VmId::new();
    let r = within(cfg, "define+start(huge)", async {
        hv.define(&VmConfig::new(id, huge)).await?;
        hv.start(id).await
    })
    .await;
    expect_err("a VM larger than the host", r, |e| {
        matches!(e, Error::Capacity { .. } | Error::InvalidSpec { .. })
    });
    let _ = hv.undefine(id).await;

    let caps = hv.capabilities();
    for dt in [
        DomainType::Hvm,
        DomainType::PvHvm,
        DomainType::Pv,
        DomainType::Pvh,
    ] {
        if caps.domain_types.contains(&dt) {
            continue;
        }
        let mut s = spec(hv, cfg, "conf-unsupported-type");
        s.domain_type = dt;
        let r = within(
            cfg,
            "define(unsupported type)",
            hv.define(&VmConfig::new(VmId::new(), s)),
        )
        .await;
        expect_err(
            &format!("define of unsupported domain type {dt:?}"),
            r,
            |e| matches!(e, Error::Unsupported { .. }),
        );
    }
}

async fn unknown_vms_are_not_found(hv: &dyn Hypervisor, cfg: &SuiteConfig) {
    let ghost = VmId::new();
    let nf = |e: &Error| matches!(e, Error::NotFound { .. });
    expect_err(
        "start of an unknown VM",
        within(cfg, "start", hv.start(ghost)).await,
        nf,
    );
    expect_err(
        "state of an unknown VM",
        within(cfg, "state", hv.state(ghost)).await,
        nf,
    );
    expect_err(
        "kill of an unknown VM",
        within(cfg, "kill", hv.kill(ghost)).await,
        nf,
    );
    expect_err(
        "undefine of an unknown VM",
        within(cfg, "undefine", hv.undefine(ghost)).await,
        nf,
    );
}

async fn wait_state(hv: &dyn Hypervisor, cfg: &SuiteConfig, vm: VmId, want: VmState) {
    let deadline = tokio::time::Instant::now() + cfg.op_timeout;
    loop {
        let s = hv
            .state(vm)
            .await
            .expect("conformance: state fails for a defined VM");
        if s == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "conformance: VM stays {s} instead of becoming {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn lifecycle(hv: &dyn Hypervisor, cfg: &SuiteConfig) {
    let caps = hv.capabilities();
    let id = VmId::new();
    let config = VmConfig::new(id, spec(hv, cfg, "conf-lifecycle"));
    let mut events = hv.subscribe();

    within(cfg, "define", hv.define(&config))
        .await
        .expect("conformance: define of a valid spec fails");
    assert_eq!(
        hv.state(id).await.expect("state"),
        VmState::Stopped,
        "conformance: defined VM is not stopped"
    );
    let listed = hv.list().await.expect("conformance: list fails");
    assert!(
        listed.iter().any(|(v, _)| *v == id),
        "conformance: defined VM missing from list"
    );
    expect_err(
        "define of a taken id",
        within(cfg, "define", hv.define(&config)).await,
        |e| matches!(e, Error::AlreadyExists { .. }),
    );

    within(cfg, "start", hv.start(id))
        .await
        .expect("conformance: start fails");
    wait_state(hv, cfg, id, VmState::Running).await;
    let started = within(cfg, "Started event", async {
        loop {
            match events.recv().await {
                Ok(ev) if ev.vm == id && ev.kind == VmEventKind::Started => return true,
                Ok(_) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return false,
            }
        }
    })
    .await;
    assert!(started, "conformance: no Started event after start");
    expect_err(
        "start of a running VM",
        within(cfg, "start", hv.start(id)).await,
        |e| matches!(e, Error::InvalidState { .. }),
    );
    expect_err(
        "undefine of a running VM",
        within(cfg, "undefine", hv.undefine(id)).await,
        |e| matches!(e, Error::InvalidState { .. }),
    );

    if caps.pause {
        within(cfg, "pause", hv.pause(id))
            .await
            .expect("conformance: pause fails");
        wait_state(hv, cfg, id, VmState::Paused).await;
        within(cfg, "resume", hv.resume(id))
            .await
            .expect("conformance: resume fails");
        wait_state(hv, cfg, id, VmState::Running).await;
    } else {
        expect_err("pause without the capability", hv.pause(id).await, |e| {
            matches!(e, Error::Unsupported { .. })
        });
    }

    if caps.guest_messages {
        let long_key = "k".repeat(guest_message::MAX_KEY + 1);
        expect_err(
            "a guest message key over the limit",
            hv.guest_send(id, &long_key, b"v").await,
            |e| matches!(e, Error::InvalidSpec { .. }),
        );
        let big = vec![0u8; guest_message::MAX_VALUE + 1];
        expect_err(
            "a guest message value over the limit",
            hv.guest_send(id, "k", &big).await,
            |e| matches!(e, Error::InvalidSpec { .. }),
        );
    }

    within(cfg, "stop", hv.stop(id, cfg.stop_timeout))
        .await
        .expect("conformance: stop fails");
    wait_state(hv, cfg, id, VmState::Stopped).await;

    within(cfg, "start again", hv.start(id))
        .await
        .expect("conformance: restart after stop fails");
    wait_state(hv, cfg, id, VmState::Running).await;
    within(cfg, "kill", hv.kill(id))
        .await
        .expect("conformance: kill fails");
    wait_state(hv, cfg, id, VmState::Stopped).await;

    within(cfg, "undefine", hv.undefine(id))
        .await
        .expect("conformance: undefine fails");
    expect_err("state after undefine", hv.state(id).await, |e| {
        matches!(e, Error::NotFound { .. })
    });
}

async fn unsupported_operations_say_so(hv: &dyn Hypervisor, cfg: &SuiteConfig) {
    let caps = hv.capabilities();
    let id = VmId::new();
    let config = VmConfig::new(id, spec(hv, cfg, "conf-unsupported"));
    let unsupported = |e: &Error| matches!(e, Error::Unsupported { .. });
    if !caps.live_migration {
        expect_err(
            "migrate_prepare without live migration",
            hv.migrate_prepare(&config).await,
            unsupported,
        );
    }
    if !caps.snapshot {
        let path = std::env::temp_dir().join(format!("ovm-conformance-{id}"));
        expect_err(
            "save without snapshot",
            hv.save(id, &path).await,
            unsupported,
        );
    }
    if !caps.guest_messages {
        expect_err(
            "guest_send without guest messages",
            hv.guest_send(id, "k", b"v").await,
            unsupported,
        );
    }
    if !caps.console {
        expect_err(
            "console without console",
            hv.console_buffer(id).await,
            unsupported,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{SimHostConfig, SimHypervisor};

    #[tokio::test]
    async fn the_simulator_conforms() {
        let hv = SimHypervisor::new(SimHostConfig::default());
        run(&*hv, &SuiteConfig::default()).await;
    }

    #[tokio::test]
    #[should_panic(expected = "conformance")]
    async fn a_broken_backend_fails() {
        let hv = SimHypervisor::new(SimHostConfig::default());
        hv.faults().fail("start", 100);
        run(&*hv, &SuiteConfig::default()).await;
    }
}
