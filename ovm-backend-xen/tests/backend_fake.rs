//! The backend's logic against the simulated `xl` (no Xen needed): the Hypervisor
//! conformance suite, and what the suite does not reach (stop-then-destroy, crashes,
//! capacity, snapshots, migration, persistence, consoles, errors carrying xl's words).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ovm_backend_xen::fake::{FakeXl, HVM_HOST_INFO, PV_ONLY_HOST_INFO};
use ovm_backend_xen::{XenHypervisor, XenOptions};
use ovm_core::conformance::hypervisor::{SuiteConfig, run};
use ovm_core::hypervisor::{MigrationTarget, VmEventKind};
use ovm_core::model::{BootSource, DomainType, VmSpec, VmState};
use ovm_core::{Error, Hypervisor, ServerId, VmConfig, VmId};

struct Bed {
    _dir: tempfile::TempDir,
    xl: Arc<FakeXl>,
    hv: XenHypervisor,
    kernel: PathBuf,
    state_dir: PathBuf,
    console_dir: PathBuf,
}

async fn bed_with(info: &str, watch: Option<Duration>) -> Bed {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("vmlinuz");
    std::fs::write(&kernel, b"not really a kernel").unwrap();
    let console_dir = dir.path().join("console");
    std::fs::create_dir_all(&console_dir).unwrap();
    let xl = Arc::new(FakeXl::with_info(info));
    xl.log_consoles_to(&console_dir);
    let state_dir = dir.path().join("state");
    let mut opts = XenOptions::new(&state_dir);
    opts.console_log_dir = console_dir.clone();
    opts.poll_interval = Duration::from_millis(10);
    opts.watch_interval = watch;
    let hv = XenHypervisor::connect(xl.clone(), opts).await.unwrap();
    Bed {
        _dir: dir,
        xl,
        hv,
        kernel,
        state_dir,
        console_dir,
    }
}

async fn bed() -> Bed {
    bed_with(HVM_HOST_INFO, None).await
}

impl Bed {
    fn spec(&self, name: &str, dt: DomainType) -> VmSpec {
        let mut s = VmSpec::new(name, 1, 128);
        s.max_memory_mib = 256;
        s.domain_type = dt;
        s.boot = BootSource::Kernel {
            kernel: self.kernel.clone(),
            initrd: None,
            cmdline: "console=hvc0".into(),
        };
        s
    }

    async fn running(&self, name: &str) -> VmId {
        let id = VmId::new();
        self.hv
            .define(&VmConfig::new(id, self.spec(name, DomainType::Pv)))
            .await
            .unwrap();
        self.hv.start(id).await.unwrap();
        id
    }

    fn calls_matching(&self, prefix: &str) -> Vec<String> {
        self.xl
            .calls()
            .into_iter()
            .filter(|c| c.starts_with(prefix))
            .collect()
    }
}

fn suite(kernel: PathBuf) -> SuiteConfig {
    SuiteConfig {
        boot: BootSource::Kernel {
            kernel,
            initrd: None,
            cmdline: "console=hvc0".into(),
        },
        memory_mib: 64,
        op_timeout: Duration::from_secs(10),
        stop_timeout: Duration::from_millis(200),
        ..SuiteConfig::default()
    }
}

#[tokio::test]
async fn conforms_on_a_host_with_hvm() {
    let b = bed().await;
    assert_eq!(
        b.hv.capabilities().domain_types,
        vec![
            DomainType::Pv,
            DomainType::PvHvm,
            DomainType::Hvm,
            DomainType::Pvh
        ]
    );
    run(&b.hv, &suite(b.kernel.clone())).await;
}

#[tokio::test]
async fn conforms_on_a_pv_only_host() {
    let b = bed_with(PV_ONLY_HOST_INFO, Some(Duration::from_millis(20))).await;
    let caps = b.hv.capabilities();
    assert_eq!(caps.domain_types, vec![DomainType::Pv]);
    assert!(!caps.live_migration, "PV migration needs shadow paging");
    run(&b.hv, &suite(b.kernel.clone())).await;
}

#[tokio::test]
async fn hvm_on_a_pv_only_host_is_unsupported_before_xl_runs() {
    let b = bed_with(PV_ONLY_HOST_INFO, None).await;
    for dt in [DomainType::Hvm, DomainType::PvHvm, DomainType::Pvh] {
        let err =
            b.hv.define(&VmConfig::new(VmId::new(), b.spec("h", dt)))
                .await
                .unwrap_err();
        match err {
            Error::Unsupported { op, backend } => {
                assert_eq!(backend, "xen");
                assert!(op.contains("virt_caps"), "{op}");
            }
            other => panic!("{dt:?}: expected Unsupported, got {other:?}"),
        }
    }
    assert!(b.calls_matching("xl create").is_empty());
}

#[tokio::test]
async fn stop_asks_then_destroys_a_guest_that_ignores_it() {
    let b = bed().await;
    let id = b.running("stubborn").await;
    b.xl.ignore_shutdown(true);
    let t0 = std::time::Instant::now();
    b.hv.stop(id, Duration::from_millis(150)).await.unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(150));
    assert_eq!(b.hv.state(id).await.unwrap(), VmState::Stopped);
    let calls = b.xl.calls();
    let shutdown = calls.iter().position(|c| c.starts_with("xl shutdown"));
    let destroy = calls.iter().position(|c| c.starts_with("xl destroy"));
    assert!(
        matches!((shutdown, destroy), (Some(s), Some(d)) if s < d),
        "{calls:?}"
    );
}

#[tokio::test]
async fn a_shutdown_request_nobody_acknowledges_does_not_outlast_the_timeout() {
    let b = bed().await;
    let id = b.running("deaf").await;
    b.xl.ignore_shutdown(true);
    // libxl waits for the guest to acknowledge; a booting guest never does.
    b.xl.delay("shutdown", Duration::from_secs(60));
    let t0 = std::time::Instant::now();
    b.hv.stop(id, Duration::from_secs(1)).await.unwrap();
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert_eq!(b.hv.state(id).await.unwrap(), VmState::Stopped);
    assert_eq!(b.calls_matching("xl destroy").len(), 1);
}

#[tokio::test]
async fn a_cooperative_guest_is_not_destroyed() {
    let b = bed().await;
    let id = b.running("polite").await;
    b.hv.stop(id, Duration::from_secs(5)).await.unwrap();
    assert!(b.calls_matching("xl destroy").is_empty());
    expect_invalid_state(b.hv.stop(id, Duration::from_secs(1)).await, "stopped");
}

fn expect_invalid_state<T: std::fmt::Debug>(r: ovm_core::Result<T>, want: &str) {
    match r {
        Err(Error::InvalidState { state, .. }) => assert_eq!(state, want),
        other => panic!("expected InvalidState({want}), got {other:?}"),
    }
}

#[tokio::test]
async fn xl_failures_carry_xl_message() {
    let b = bed().await;
    let mut spec = b.spec("nokernel", DomainType::Pv);
    spec.boot = BootSource::Kernel {
        kernel: "/nonexistent/vmlinuz".into(),
        initrd: None,
        cmdline: String::new(),
    };
    let id = VmId::new();
    b.hv.define(&VmConfig::new(id, spec)).await.unwrap();
    match b.hv.start(id).await.unwrap_err() {
        Error::Backend {
            backend, message, ..
        } => {
            assert_eq!(backend, "xen");
            assert!(message.contains("xl create"), "{message}");
            assert!(
                message.contains("failed to open file '/nonexistent/vmlinuz'"),
                "{message}"
            );
        }
        other => panic!("expected Backend, got {other:?}"),
    }
    assert_eq!(b.hv.state(id).await.unwrap(), VmState::Stopped);

    let id = b.running("victim").await;
    b.xl.fail_next("pause", "libxl: error: libxl_domain.c:600: pausing failed");
    match b.hv.pause(id).await.unwrap_err() {
        Error::Backend { message, .. } => assert!(message.contains("pausing failed")),
        other => panic!("expected Backend, got {other:?}"),
    }
}

#[tokio::test]
async fn a_vm_larger_than_free_memory_is_a_capacity_error() {
    let b = bed().await;
    let mut spec = b.spec("big", DomainType::Pv);
    spec.memory_mib = 15_361;
    spec.max_memory_mib = 15_361;
    let id = VmId::new();
    b.hv.define(&VmConfig::new(id, spec)).await.unwrap();
    assert!(matches!(b.hv.start(id).await, Err(Error::Capacity { .. })));
    assert!(b.calls_matching("xl create").is_empty());
}

#[tokio::test]
async fn pause_resume_and_stats() {
    let b = bed().await;
    let id = b.running("p").await;
    b.hv.pause(id).await.unwrap();
    assert_eq!(b.hv.state(id).await.unwrap(), VmState::Paused);
    expect_invalid_state(b.hv.pause(id).await, "paused");
    b.hv.resume(id).await.unwrap();
    assert_eq!(b.hv.state(id).await.unwrap(), VmState::Running);
    expect_invalid_state(b.hv.resume(id).await, "running");
    let stats = b.hv.stats(id).await.unwrap();
    assert_eq!(stats.memory_mib, 128);
    assert_eq!(stats.host_rss_bytes, 128 << 20);
    b.hv.kill(id).await.unwrap();
    expect_invalid_state(b.hv.stats(id).await, "stopped");
}

#[tokio::test]
async fn crashes_are_reported_and_cleared_by_the_next_start() {
    let b = bed().await;
    let id = b.running("fragile").await;
    let mut events = b.hv.subscribe();
    b.xl.crash("fragile");
    assert_eq!(b.hv.state(id).await.unwrap(), VmState::Crashed);
    let ev = events.try_recv().unwrap();
    assert!(
        matches!(ev.kind, VmEventKind::Crashed { .. }),
        "{:?}",
        ev.kind
    );
    b.hv.start(id).await.unwrap();
    assert_eq!(b.hv.state(id).await.unwrap(), VmState::Running);
    let calls = b.xl.calls();
    let last_destroy = calls
        .iter()
        .rposition(|c| c.starts_with("xl destroy"))
        .unwrap();
    let last_create = calls
        .iter()
        .rposition(|c| c.starts_with("xl create"))
        .unwrap();
    assert!(last_destroy < last_create, "{calls:?}");
}

#[tokio::test]
async fn the_watcher_reports_a_guest_power_off() {
    let b = bed_with(HVM_HOST_INFO, Some(Duration::from_millis(20))).await;
    let id = b.running("leaver").await;
    let mut events = b.hv.subscribe();
    b.xl.guest_poweroff("leaver");
    let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("no event within 5 s")
        .unwrap();
    assert_eq!(ev.vm, id);
    assert_eq!(ev.kind, VmEventKind::PoweredOff);
}

#[tokio::test]
async fn save_and_restore() {
    let b = bed().await;
    let id = b.running("snap").await;
    let image = b.state_dir.join("snap.save");
    b.hv.save(id, &image).await.unwrap();
    assert!(image.exists());
    assert_eq!(b.hv.state(id).await.unwrap(), VmState::Stopped);
    let config = VmConfig::new(id, b.spec("snap", DomainType::Pv));
    b.hv.restore(&config, &image).await.unwrap();
    assert_eq!(b.hv.state(id).await.unwrap(), VmState::Running);
    expect_invalid_state(b.hv.restore(&config, &image).await, "running");

    // A snapshot restored on a host that never saw the VM defines it there.
    let other = bed().await;
    other
        .xl
        .fail_next("restore", "xc: error: Restore failed: Internal error");
    let err = other.hv.restore(&config, &image).await.unwrap_err();
    assert!(err.to_string().contains("Restore failed"), "{err}");
    assert_eq!(other.hv.state(id).await.unwrap(), VmState::Stopped);
}

#[tokio::test]
async fn migration_on_one_host_and_to_another() {
    let b = bed().await;
    assert!(b.hv.capabilities().live_migration);
    let id = b.running("mover").await;
    let config = VmConfig::new(id, b.spec("mover", DomainType::Pv));
    let target = b.hv.migrate_prepare(&config).await.unwrap();
    assert_eq!(target.address, "local");
    b.hv.migrate_send(id, &target).await.unwrap();
    assert_eq!(b.hv.state(id).await.unwrap(), VmState::Running);
    assert_eq!(
        b.calls_matching("xl migrate"),
        vec![format!(
            "xl migrate -s \"\" {} \"xl migrate-receive\"",
            b.xl.calls()
                .iter()
                .find_map(|c| c.strip_prefix("xl migrate -s \"\" "))
                .and_then(|r| r.split(' ').next())
                .unwrap()
        )]
    );

    let remote = MigrationTarget {
        server: ServerId::new(),
        address: "ssh:dom0-b.example".into(),
    };
    b.hv.migrate_send(id, &remote).await.unwrap();
    assert!(
        b.calls_matching("xl migrate")
            .last()
            .unwrap()
            .ends_with(" dom0-b.example")
    );
    assert_eq!(b.hv.state(id).await.unwrap(), VmState::Stopped);

    let id2 = b.running("mover2").await;
    let hostile = MigrationTarget {
        server: ServerId::new(),
        address: "ssh:-oProxyCommand=evil".into(),
    };
    assert!(matches!(
        b.hv.migrate_send(id2, &hostile).await,
        Err(Error::InvalidSpec { .. })
    ));

    let pv_only = bed_with(PV_ONLY_HOST_INFO, None).await;
    let id3 = pv_only.running("stuck").await;
    let cfg3 = VmConfig::new(id3, pv_only.spec("stuck", DomainType::Pv));
    assert!(matches!(
        pv_only.hv.migrate_prepare(&cfg3).await,
        Err(Error::Unsupported { .. })
    ));
    assert!(matches!(
        pv_only.hv.migrate_send(id3, &remote).await,
        Err(Error::Unsupported { .. })
    ));
}

#[tokio::test]
async fn vcpu_and_memory_changes_are_checked_then_passed_to_xl() {
    let b = bed().await;
    let id = b.running("elastic").await;
    assert!(matches!(
        b.hv.set_memory(id, 257).await,
        Err(Error::InvalidSpec { .. })
    ));
    assert!(matches!(
        b.hv.set_vcpus(id, 2).await,
        Err(Error::InvalidSpec { .. })
    ));
    b.hv.set_memory(id, 200).await.unwrap();
    b.hv.set_vcpus(id, 1).await.unwrap();
    assert_eq!(b.hv.stats(id).await.unwrap().memory_mib, 200);
    assert_eq!(b.calls_matching("xl mem-set").len(), 1);
    assert!(b.calls_matching("xl mem-set")[0].ends_with(" 200m"));
    assert!(b.calls_matching("xl vcpu-set --ignore-host ")[0].ends_with(" 1"));
}

#[tokio::test]
async fn definitions_survive_a_restart_of_the_backend() {
    let b = bed().await;
    let id = b.running("durable").await;
    let cfg_path = b.hv.config_path(id);
    let text = std::fs::read_to_string(&cfg_path).unwrap();
    assert!(text.contains("name = \"durable\""), "{text}");
    // A garbage directory in the state dir is skipped, not fatal.
    std::fs::create_dir_all(b.state_dir.join(VmId::new().to_string())).unwrap();
    let mut opts = XenOptions::new(&b.state_dir);
    opts.watch_interval = None;
    let again = XenHypervisor::connect(b.xl.clone(), opts).await.unwrap();
    assert_eq!(again.list().await.unwrap(), vec![(id, VmState::Running)]);
}

#[tokio::test]
async fn consoles_hold_the_current_run_only() {
    let b = bed().await;
    let id = b.running("chatty").await;
    let first = String::from_utf8(b.hv.console_buffer(id).await.unwrap()).unwrap();
    assert!(first.contains("OVM-FAKE: chatty booted"), "{first:?}");
    b.hv.kill(id).await.unwrap();
    b.hv.start(id).await.unwrap();
    let second = String::from_utf8(b.hv.console_buffer(id).await.unwrap()).unwrap();
    assert_eq!(second.lines().count(), 1, "{second:?}");
    let log = std::fs::read_to_string(b.console_dir.join("guest-chatty.log")).unwrap();
    assert_eq!(log.lines().count(), 2);

    use futures::StreamExt as _;
    let mut stream = b.hv.console_stream(id).await.unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(b.console_dir.join("guest-chatty.log"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"late line\n"))
        .unwrap();
    let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(chunk, b"late line\n");
}

#[tokio::test]
async fn names_are_unique_per_host_and_quotes_survive_xl() {
    let b = bed().await;
    let name = r#"it's "quoted" and spaced"#;
    let id = VmId::new();
    b.hv.define(&VmConfig::new(id, b.spec(name, DomainType::Pv)))
        .await
        .unwrap();
    b.hv.start(id).await.unwrap();
    assert_eq!(b.xl.domain_names(), vec![name.to_string()]);
    let records = b.hv.domain_records().await.unwrap();
    assert!(
        records
            .iter()
            .any(|r| r.config.c_info.name == name && r.vm_id() == Some(id))
    );
    let dup =
        b.hv.define(&VmConfig::new(VmId::new(), b.spec(name, DomainType::Pv)))
            .await;
    assert!(matches!(dup, Err(Error::InvalidSpec { ref field, .. }) if field == "vm.name"));
    expect_invalid_state(b.hv.undefine(id).await, "running");
}

#[tokio::test]
async fn reboot_is_passed_to_xl() {
    let b = bed().await;
    let id = b.running("bouncy").await;
    let mut events = b.hv.subscribe();
    b.hv.reboot(id).await.unwrap();
    assert_eq!(b.calls_matching("xl reboot").len(), 1);
    assert_eq!(events.try_recv().unwrap().kind, VmEventKind::Rebooted);
    assert_eq!(b.hv.state(id).await.unwrap(), VmState::Running);
}
