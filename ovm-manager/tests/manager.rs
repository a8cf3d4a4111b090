//! The manager end to end on the simulator: lifecycle, placement, rollback, abort,
//! optimistic concurrency, guest messages, events.

use std::sync::Arc;
use std::time::Duration;

use ovm_core::model::{
    EventQuery, HypervisorKind, JobState, Outcome, PreferredMode, VmSpec, VmState,
};
use ovm_core::{Error, Hypervisor};
use ovm_manager::manager::SimConnector;
use ovm_manager::{Manager, ManagerOptions, PoolSpec, ServerSpec};

const T: Duration = Duration::from_secs(20);

struct Bed {
    mgr: Manager,
    sim: Arc<SimConnector>,
}

async fn bed(servers: &[(&str, u32, u64)]) -> Bed {
    let addresses: Vec<(&str, String)> = servers
        .iter()
        .map(|(name, cpus, mem)| (*name, format!("cpus={cpus},memory_mib={mem}")))
        .collect();
    bed_at(&addresses).await
}

/// A pool `p` of simulated servers at the given addresses.
async fn bed_at(servers: &[(&str, String)]) -> Bed {
    let sim = Arc::new(SimConnector::new());
    let opts = ManagerOptions {
        connectors: vec![sim.clone()],
        initiator: "test".into(),
        ..Default::default()
    };
    let mgr = Manager::open_in_memory(opts).await.unwrap();
    mgr.create_pool_now(PoolSpec::new("p")).await.unwrap();
    for (name, addr) in servers {
        mgr.add_server(
            "p",
            ServerSpec::new(*name, HypervisorKind::Sim, addr.as_str()),
        )
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap();
    }
    Bed { mgr, sim }
}

async fn vm(mgr: &Manager, name: &str, vcpus: u32, mem: u64) -> ovm_core::VmId {
    create(mgr, VmSpec::new(name, vcpus, mem)).await
}

/// A 1-vCPU, 1 GiB VM that may run only on `server` (Manual preferred servers).
async fn pinned_vm(mgr: &Manager, name: &str, server: ovm_core::ServerId) -> ovm_core::VmId {
    let mut spec = VmSpec::new(name, 1, 1024);
    spec.preferred_servers = vec![server];
    spec.preferred_mode = PreferredMode::Manual;
    create(mgr, spec).await
}

async fn create(mgr: &Manager, spec: VmSpec) -> ovm_core::VmId {
    mgr.create_vm("p", spec)
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap()
}

#[tokio::test]
async fn lifecycle_and_history() {
    let b = bed(&[("small", 4, 4096), ("big", 16, 65536)]).await;
    let id = vm(&b.mgr, "web", 2, 2048).await;
    let h = b.mgr.vm(id);
    assert_eq!(h.state().unwrap(), VmState::Stopped);
    let server = h.start().await.unwrap().wait(T).await.unwrap();
    assert_eq!(
        b.mgr.find_server(server).unwrap().name,
        "big",
        "best fit: most free"
    );
    assert_eq!(h.state().unwrap(), VmState::Running);
    let host = b.sim.host(server).unwrap();
    assert_eq!(host.state(id).await.unwrap(), VmState::Running);

    h.pause().await.unwrap().wait(T).await.unwrap();
    assert_eq!(host.state(id).await.unwrap(), VmState::Paused);
    h.resume().await.unwrap().wait(T).await.unwrap();
    h.stop().await.unwrap().wait(T).await.unwrap();
    assert_eq!(h.state().unwrap(), VmState::Stopped);
    assert!(
        matches!(host.state(id).await, Err(Error::NotFound { .. })),
        "stopped VMs are undefined on the server"
    );
    h.start().await.unwrap().wait(T).await.unwrap();
    h.kill().await.unwrap().wait(T).await.unwrap();
    h.delete().await.unwrap().wait(T).await.unwrap();
    assert!(matches!(b.mgr.find_vm("web"), Err(Error::NotFound { .. })));

    let events = b
        .mgr
        .events(&EventQuery {
            object_id: Some(id.to_string()),
            ..Default::default()
        })
        .await
        .unwrap();
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "vm.create",
            "vm.start",
            "vm.pause",
            "vm.resume",
            "vm.stop",
            "vm.start",
            "vm.kill",
            "vm.delete"
        ]
    );
    assert!(
        events
            .iter()
            .all(|e| e.initiator == "test" && e.outcome == Outcome::Success)
    );
}

#[tokio::test]
async fn bad_requests_get_typed_errors_and_change_nothing() {
    let b = bed(&[("s", 4, 4096)]).await;
    let err = b
        .mgr
        .create_vm("p", VmSpec::new("x", 0, 512))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidSpec { ref field, .. } if field == "vm.vcpus"),
        "{err}"
    );
    assert!(matches!(
        b.mgr.create_vm("nope", VmSpec::new("x", 1, 512)).await,
        Err(Error::NotFound { .. })
    ));

    vm(&b.mgr, "dup", 1, 512).await;
    let err = b
        .mgr
        .create_vm("p", VmSpec::new("dup", 1, 512))
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    assert_eq!(b.mgr.vms().len(), 1);

    let err = b
        .mgr
        .delete_pool("p")
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidState { .. }), "{err}");

    // Too big for any server: the start rolls back and the VM stays stopped, unplaced.
    let big = vm(&b.mgr, "huge", 2, 8192).await;
    let job = b.mgr.start_vm("huge").await.unwrap();
    let err = job.wait(T).await.unwrap_err();
    assert!(
        matches!(err, Error::Capacity { ref reason } if reason.contains("memory")),
        "{err}"
    );
    assert_eq!(job.state(), JobState::RolledBack);
    let rec = b.mgr.find_vm(big).unwrap();
    assert_eq!((rec.state, rec.server), (VmState::Stopped, None));

    let started = b.mgr.start_vm("dup").await.unwrap();
    started.wait(T).await.unwrap();
    assert!(matches!(
        b.mgr.start_vm("dup").await,
        Err(Error::InvalidState { .. })
    ));
}

#[tokio::test]
async fn failing_backend_step_rolls_back_on_the_server_too() {
    let b = bed(&[("s", 8, 8192)]).await;
    let server = b.mgr.find_server("s").unwrap().id;
    let host = b.sim.host(server).unwrap();
    let id = vm(&b.mgr, "v", 1, 1024).await;
    host.faults().fail("start", 1);
    let job = b.mgr.start_vm("v").await.unwrap();
    assert!(matches!(job.wait(T).await, Err(Error::Backend { .. })));
    let j = job.job();
    assert_eq!(j.state, JobState::RolledBack);
    assert!(j.error.unwrap().contains("injected failure"));
    assert!(
        matches!(host.state(id).await, Err(Error::NotFound { .. })),
        "definition undone"
    );
    assert_eq!(b.mgr.vm_state(id).unwrap(), VmState::Stopped);
    // The failure is history.
    let ev = b
        .mgr
        .events(&EventQuery {
            object_id: Some(id.to_string()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ev.last().unwrap().outcome, Outcome::Failure);
    // And the VM starts once the fault is gone.
    b.mgr.start_vm("v").await.unwrap().wait(T).await.unwrap();
}

#[tokio::test]
async fn abort_mid_step_undoes_everything() {
    let b = bed(&[("s", 8, 8192)]).await;
    let server = b.mgr.find_server("s").unwrap().id;
    let host = b.sim.host(server).unwrap();
    let id = vm(&b.mgr, "slow", 1, 1024).await;
    host.faults().delay("start", Duration::from_secs(3600));
    let job = b.mgr.start_vm("slow").await.unwrap();
    // Wait until it is inside the slow step.
    while job.progress().steps_done < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(matches!(
        job.wait(Duration::from_millis(30)).await,
        Err(Error::Timeout { .. })
    ));
    job.abort();
    assert!(matches!(job.wait(T).await, Err(Error::Aborted { .. })));
    assert_eq!(job.state(), JobState::RolledBack);
    assert_eq!(b.mgr.vm_state(id).unwrap(), VmState::Stopped);
    assert!(host.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn manual_preferred_servers_restrict_placement() {
    let b = bed(&[("a", 4, 4096), ("b", 16, 65536)]).await;
    let a = b.mgr.find_server("a").unwrap().id;
    pinned_vm(&b.mgr, "pinned", a).await;
    assert_eq!(
        b.mgr
            .start_vm("pinned")
            .await
            .unwrap()
            .wait(T)
            .await
            .unwrap(),
        a
    );
    let e = b.mgr.explain_start("pinned").await;
    assert!(e.is_ok());
}

#[tokio::test]
async fn a_burst_spreads_over_equal_servers() {
    let b = bed(&[("a", 8, 8192), ("b", 8, 8192)]).await;
    let mut jobs = Vec::new();
    for i in 0..8 {
        vm(&b.mgr, &format!("v{i}"), 1, 1024).await;
    }
    for i in 0..8 {
        jobs.push(b.mgr.start_vm(&format!("v{i}")).await.unwrap());
    }
    let mut on_a = 0;
    let a = b.mgr.find_server("a").unwrap().id;
    for j in jobs {
        if j.wait(T).await.unwrap() == a {
            on_a += 1;
        }
    }
    assert_eq!(on_a, 4);
}

#[tokio::test]
async fn guest_messages_are_limited_and_private() {
    let b = bed(&[("s", 8, 8192)]).await;
    let one = vm(&b.mgr, "one", 1, 512).await;
    let two = vm(&b.mgr, "two", 1, 512).await;
    for id in [one, two] {
        b.mgr.vm(id).start().await.unwrap().wait(T).await.unwrap();
    }
    b.mgr.vm(one).send_message("secret", b"42").await.unwrap();
    assert_eq!(
        b.mgr.vm(one).read_message("secret").await.unwrap(),
        Some(b"echo:42".to_vec())
    );
    assert_eq!(
        b.mgr.vm(two).read_message("secret").await.unwrap(),
        None,
        "a VM sees only its own keys"
    );
    let long = "k".repeat(257);
    assert!(matches!(
        b.mgr.vm(one).send_message(&long, b"v").await,
        Err(Error::InvalidSpec { .. })
    ));
    let big = vec![b'x'; 8 * 1024 + 1];
    assert!(matches!(
        b.mgr.vm(one).send_message("k", &big).await,
        Err(Error::InvalidSpec { .. })
    ));
    assert!(
        b.mgr
            .vm(one)
            .send_message("k", &vec![b'x'; 8 * 1024])
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn guest_crash_and_poweroff_are_observed() {
    let b = bed(&[("s", 8, 8192)]).await;
    let server = b.mgr.find_server("s").unwrap().id;
    let host = b.sim.host(server).unwrap();
    let a = vm(&b.mgr, "a", 1, 512).await;
    let c = vm(&b.mgr, "c", 1, 512).await;
    for id in [a, c] {
        b.mgr.vm(id).start().await.unwrap().wait(T).await.unwrap();
    }
    host.crash_guest(a).unwrap();
    host.guest_poweroff(c).unwrap();
    b.mgr.wait_vm_state(a, VmState::Crashed, T).await.unwrap();
    b.mgr.wait_vm_state(c, VmState::Stopped, T).await.unwrap();
    let ev = b
        .mgr
        .events(&EventQuery {
            object_id: Some(a.to_string()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(ev.iter().any(|e| e.action == "vm.crashed"));
    // A crashed VM can be cleaned up and started again.
    b.mgr.kill_vm("a").await.unwrap().wait(T).await.unwrap();
    b.mgr.start_vm("a").await.unwrap().wait(T).await.unwrap();
}

#[tokio::test]
async fn pool_limits_and_server_removal() {
    let sim = Arc::new(SimConnector::new());
    let mgr = Manager::open_in_memory(ManagerOptions {
        connectors: vec![sim],
        ..Default::default()
    })
    .await
    .unwrap();
    mgr.create_pool_now(PoolSpec {
        max_servers: 1,
        ..PoolSpec::new("tiny")
    })
    .await
    .unwrap();
    let spec = |n: &str| ServerSpec::new(n, HypervisorKind::Sim, "cpus=2,memory_mib=2048");
    mgr.add_server("tiny", spec("one"))
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap();
    let err = mgr
        .add_server("tiny", spec("two"))
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Capacity { .. }), "{err}");
    assert_eq!(
        mgr.servers().len(),
        1,
        "the refused server is not half-added"
    );
    mgr.create_vm("tiny", VmSpec::new("v", 1, 512))
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap();
    mgr.start_vm("v").await.unwrap().wait(T).await.unwrap();
    let err = mgr
        .remove_server("one")
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidState { .. }));
    mgr.stop_vm("v").await.unwrap().wait(T).await.unwrap();
    mgr.remove_server("one")
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap();
    assert!(mgr.find_pool("tiny").unwrap().servers.is_empty());
}

#[tokio::test]
async fn maintenance_keeps_new_vms_away_and_migration_moves_them() {
    let b = bed(&[("a", 8, 8192), ("b", 8, 8192)]).await;
    b.mgr
        .set_maintenance("a", true)
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap();
    let b_id = b.mgr.find_server("b").unwrap().id;
    let id = vm(&b.mgr, "v", 1, 1024).await;
    assert_eq!(
        b.mgr.start_vm("v").await.unwrap().wait(T).await.unwrap(),
        b_id
    );
    b.mgr
        .set_maintenance("a", false)
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap();
    let dest = b
        .mgr
        .migrate_vm("v", None)
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap();
    let a_id = b.mgr.find_server("a").unwrap().id;
    assert_eq!(dest, a_id);
    assert_eq!(
        b.sim.host(a_id).unwrap().state(id).await.unwrap(),
        VmState::Running
    );
    assert!(b.sim.host(b_id).unwrap().list().await.unwrap().is_empty());
    let rec = b.mgr.find_vm("v").unwrap();
    assert_eq!(rec.server, Some(a_id));
    assert!(rec.last_moved.is_some());
}

/// Two managers on one store: a write based on a stale read is refused, never lost.
#[tokio::test]
async fn stale_writers_conflict_instead_of_losing_updates() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ovm.db");
    let sim = Arc::new(SimConnector::persistent(dir.path().join("sim")));
    let open = || {
        Manager::open(
            &db,
            ManagerOptions {
                connectors: vec![sim.clone()],
                ..Default::default()
            },
        )
    };
    let a = open().await.unwrap();
    a.create_pool_now(PoolSpec::new("p")).await.unwrap();
    a.add_server(
        "p",
        ServerSpec::new("s", HypervisorKind::Sim, "cpus=4,memory_mib=4096"),
    )
    .await
    .unwrap()
    .wait(T)
    .await
    .unwrap();
    vm(&a, "v", 1, 512).await;
    let b = open().await.unwrap();
    let id = b.find_vm("v").unwrap().id;
    // A deletes the VM; B, whose index still shows it, tries to start it.
    a.delete_vm("v").await.unwrap().wait(T).await.unwrap();
    let job = b.start_vm("v").await.unwrap();
    let err = job.wait(T).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert_eq!(job.state(), JobState::RolledBack);
    assert!(
        a.store()
            .get("vm", &id.to_string())
            .await
            .unwrap()
            .is_none(),
        "the delete stands"
    );
    assert!(b.find_vm("v").is_err(), "B's index was refreshed");
}

/// A hung server never hangs a job forever: the wait times out, an abort rolls back, and
/// an undo that cannot reach the server is bounded and named.
#[tokio::test]
async fn a_hung_server_cannot_hang_a_job() {
    let sim = Arc::new(SimConnector::new());
    let opts = ManagerOptions {
        connectors: vec![sim.clone()],
        undo_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let mgr = Manager::open_in_memory(opts).await.unwrap();
    mgr.create_pool_now(PoolSpec::new("p")).await.unwrap();
    let server = mgr
        .add_server(
            "p",
            ServerSpec::new("s", HypervisorKind::Sim, "cpus=4,memory_mib=4096"),
        )
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap();
    vm(&mgr, "v", 1, 512).await;
    let host = sim.host(server).unwrap();
    host.faults().delay("start", Duration::from_secs(3600));
    let job = mgr.start_vm("v").await.unwrap();
    while job.progress().steps_done < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The host stops answering altogether.
    host.faults().set_hung(true);
    assert!(matches!(
        job.wait(Duration::from_millis(50)).await,
        Err(Error::Timeout { .. })
    ));
    job.abort();
    let err = job.wait(Duration::from_secs(10)).await.unwrap_err();
    assert!(matches!(err, Error::Aborted { .. }), "{err}");
    let j = job.job();
    assert_eq!(
        j.state,
        JobState::Failed,
        "undos against a hung host cannot complete"
    );
    assert!(
        j.rollback_errors.iter().any(|e| e.contains("timed out")),
        "{:?}",
        j.rollback_errors
    );
    // The manager's own record was still put back.
    assert_eq!(
        mgr.vm_state(mgr.find_vm("v").unwrap().id).unwrap(),
        VmState::Stopped
    );
}

/// DRS moves VMs off an overloaded server as jobs; DPM empties and powers off what a quiet
/// pool does not need, and the simulator records the power action.
#[tokio::test]
async fn drs_and_dpm_run_as_jobs() {
    let b = bed(&[("a", 4, 8192), ("b", 4, 8192), ("c", 4, 8192)]).await;
    let a = b.mgr.find_server("a").unwrap().id;
    // Pile VMs onto `a` by preference, then let DRS spread them.
    for i in 0..4 {
        let mut spec = VmSpec::new(format!("v{i}"), 1, 1536);
        spec.preferred_servers = vec![a];
        create(&b.mgr, spec).await;
        b.mgr
            .start_vm(&format!("v{i}"))
            .await
            .unwrap()
            .wait(T)
            .await
            .unwrap();
    }
    let proposed = b.mgr.propose_rebalance("p").unwrap();
    assert!(
        !proposed.is_empty(),
        "a is at 100% memory: DRS proposes moves"
    );
    assert!(proposed.iter().all(|m| m.from == a && !m.reason.is_empty()));
    let report = b.mgr.rebalance("p").await.unwrap();
    assert_eq!(report.migrated.len(), proposed.len(), "{:?}", report.errors);
    assert!(
        b.mgr.propose_rebalance("p").unwrap().is_empty(),
        "no ping-pong: nothing more to do"
    );
    let jobs = b.mgr.jobs().await.unwrap();
    assert_eq!(
        jobs.iter().filter(|j| j.kind == "vm.migrate").count(),
        proposed.len()
    );

    // Stop most VMs: the pool is nearly idle, DPM powers servers off.
    for i in 1..4 {
        b.mgr
            .stop_vm(&format!("v{i}"))
            .await
            .unwrap()
            .wait(T)
            .await
            .unwrap();
    }
    let report = b.mgr.apply_power("p").await.unwrap();
    assert!(!report.powered_off.is_empty(), "{report:?}");
    for s in &report.powered_off {
        assert_eq!(
            b.mgr.find_server(s).unwrap().state,
            ovm_core::model::ServerState::PoweredOff
        );
        assert!(b.sim.power_log().contains(&(*s, false)));
    }
    // The running VM survived wherever it went.
    assert_eq!(
        b.mgr.vm_state(b.mgr.find_vm("v0").unwrap().id).unwrap(),
        VmState::Running
    );
    let still_on = b
        .mgr
        .servers()
        .iter()
        .filter(|s| s.state == ovm_core::model::ServerState::Running)
        .count();
    assert!(still_on >= 1);
}

/// A manager reconciles every server when it opens, before it answers: a VM recorded
/// running on a server that does not have it (it restarted, or the VM ended while no
/// manager watched) is recorded stopped with a `vm.lost` event; one it runs is left alone.
#[tokio::test]
async fn opening_reconciles_vms_the_server_no_longer_runs() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ovm.db");
    let open = |sim: Arc<SimConnector>| {
        let opts = ManagerOptions {
            connectors: vec![sim],
            initiator: "test".into(),
            ..Default::default()
        };
        Manager::open(db.clone(), opts)
    };
    let (lost, its_server) = {
        let mgr = open(Arc::new(SimConnector::new())).await.unwrap();
        mgr.create_pool_now(PoolSpec::new("p")).await.unwrap();
        for name in ["one", "two"] {
            let spec = ServerSpec::new(name, HypervisorKind::Sim, "cpus=8,memory_mib=8192");
            mgr.add_server("p", spec)
                .await
                .unwrap()
                .wait(T)
                .await
                .unwrap();
        }
        let lost = vm(&mgr, "lost", 1, 1024).await;
        mgr.vm(lost).start().await.unwrap().wait(T).await.unwrap();
        (lost, mgr.find_vm("lost").unwrap().server.unwrap())
    };
    // A new manager whose simulated servers run nothing: the record said `lost` runs;
    // by the time `open` returns, it says what is true.
    let sim = Arc::new(SimConnector::new());
    let mgr = open(sim.clone()).await.unwrap();
    assert_eq!(mgr.vm(lost).state().unwrap(), VmState::Stopped);
    let query = EventQuery {
        object_id: Some(lost.to_string()),
        ..Default::default()
    };
    let events = mgr.events(&query).await.unwrap();
    let other = vm(&mgr, "other", 1, 1024).await;
    let pinned = pinned_vm(&mgr, "pinned", its_server).await;
    mgr.vm(pinned).start().await.unwrap().wait(T).await.unwrap();
    assert_eq!(mgr.vm(lost).state().unwrap(), VmState::Stopped);
    assert_eq!(mgr.vm(pinned).state().unwrap(), VmState::Running);
    assert_eq!(mgr.vm(other).state().unwrap(), VmState::Stopped);
    let ev = events
        .iter()
        .find(|e| e.action == "vm.lost")
        .expect("vm.lost event");
    assert_eq!(ev.outcome, Outcome::Failure);
    assert!(ev.detail.contains("does not have it"), "{}", ev.detail);
    // The new start on that server did not disturb the VM that is really there, and
    // the lost one can be started again.
    mgr.vm(lost).start().await.unwrap().wait(T).await.unwrap();
    assert_eq!(mgr.vm(lost).state().unwrap(), VmState::Running);
}

/// The state machine decides what may be done: a VM being started belongs to its start
/// job (stop and kill are refused until it runs), a stop claims the VM before it acts (a
/// start racing it is refused), and a kill ends a VM whatever it runs.
#[tokio::test]
async fn operations_follow_the_vm_state_table() {
    let addr = "cpus=4,memory_mib=4096,start_delay_ms=400".to_string();
    let Bed { mgr, .. } = bed_at(&[("slow", addr)]).await;
    let id = vm(&mgr, "v", 1, 512).await;
    let start = mgr.vm(id).start().await.unwrap();
    while mgr.vm(id).state().unwrap() != VmState::Starting {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for (what, refused) in [
        ("stop", mgr.stop_vm("v").await.err()),
        ("kill", mgr.kill_vm("v").await.err()),
        ("delete", mgr.delete_vm("v").await.err()),
        ("pause", mgr.pause_vm("v").await.err()),
    ] {
        let err = refused.unwrap_or_else(|| panic!("{what} of a starting VM was accepted"));
        assert!(
            matches!(err, Error::InvalidState { .. }) && err.to_string().contains("is starting"),
            "{what}: {err}"
        );
    }
    start.wait(T).await.unwrap();
    // A stop and a start issued together: the stop claims first, the start is refused.
    let stop = mgr.stop_vm("v").await.unwrap();
    let restart = mgr.start_vm("v").await;
    stop.wait(T).await.unwrap();
    if let Ok(job) = restart {
        let err = job.wait(T).await.expect_err("a start racing a stop");
        assert!(matches!(err, Error::InvalidState { .. }), "{err}");
    }
    assert_eq!(mgr.vm(id).state().unwrap(), VmState::Stopped);
    let events: Vec<_> = mgr
        .events(&EventQuery::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.object_id == id.to_string())
        .map(|e| (e.action, e.outcome))
        .collect();
    assert!(
        events.contains(&("vm.stop".into(), Outcome::Success)),
        "{events:?}"
    );
}
