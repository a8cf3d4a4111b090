//! A manager and a pool of real `ovm-agent` processes on loopback: VMs placed across
//! agents, an agent SIGKILLed and restarted, the manager restarted.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ovm_agent::protocol::{Call, Reply};
use ovm_agent::{AgentClient, Identity};
use ovm_core::model::{EventQuery, HypervisorKind, ServerState, VmSpec, VmState};
use ovm_core::{ServerId, VmId};
use ovm_manager::{PoolSpec, ServerSpec};
use support::{AgentProcess, free_port, manager, own, wait_for_state};

const T: Duration = Duration::from_secs(30);
const SIM: &str = "cpus=2,memory_mib=4096";

/// What each agent runs, by asking the agents themselves.
async fn running_per_agent(agents: &[AgentProcess], identity: &Identity) -> Vec<Vec<VmId>> {
    let mut out = Vec::new();
    for a in agents {
        let c = AgentClient::new(&a.endpoint, Some(identity), "probe").unwrap();
        let Reply::List(vms) = c.call(Call::List).await.unwrap() else {
            panic!("list")
        };
        out.push(
            vms.into_iter()
                .filter(|(_, s)| *s == VmState::Running)
                .map(|(v, _)| v)
                .collect(),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vms_run_across_agents_through_kills_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let identity = Identity::generate("test-manager").unwrap();
    let mut agents: Vec<AgentProcess> = (0..3)
        .map(|i| AgentProcess::start(&dir.path().join(format!("agent{i}")), free_port(), SIM))
        .collect();
    for a in &agents {
        own(&a.endpoint, &identity).await;
    }
    let db = dir.path().join("ovm.db");
    let mgr = manager(&db, &identity).await;
    mgr.create_pool_now(PoolSpec::new("p")).await.unwrap();
    let mut servers: Vec<ServerId> = Vec::new();
    for (i, a) in agents.iter().enumerate() {
        let spec = ServerSpec::with_agent(
            format!("s{i}"),
            HypervisorKind::Sim,
            &a.endpoint.url,
            &a.endpoint.fingerprint,
        );
        servers.push(
            mgr.add_server("p", spec)
                .await
                .unwrap()
                .wait(T)
                .await
                .unwrap(),
        );
    }
    // The same agent cannot be added twice, whatever URL names it.
    let mut twin = ServerSpec::with_agent(
        "twin",
        HypervisorKind::Sim,
        agents[0].endpoint.url.replace("127.0.0.1", "localhost"),
        &agents[0].endpoint.fingerprint,
    );
    twin.address = twin.agent.as_ref().unwrap().url.clone();
    assert!(
        mgr.add_server("p", twin)
            .await
            .unwrap()
            .wait(T)
            .await
            .is_err()
    );

    // Six 1-vCPU VMs on three 2-CPU servers: two on each.
    let mut vms = Vec::new();
    for i in 0..6 {
        let id = mgr
            .create_vm("p", VmSpec::new(format!("v{i}"), 1, 512))
            .await
            .unwrap()
            .wait(T)
            .await
            .unwrap();
        mgr.vm(id).start().await.unwrap().wait(T).await.unwrap();
        vms.push(id);
    }
    let per_agent = running_per_agent(&agents, &identity).await;
    assert_eq!(
        per_agent.iter().map(Vec::len).collect::<Vec<_>>(),
        [2, 2, 2]
    );
    let mut all: Vec<VmId> = per_agent.concat();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 6, "no VM runs twice");

    // SIGKILL the first agent: its server becomes unreachable (with an event), its VMs
    // keep their last known state, calls on them fail fast, naming the server.
    let on_first: Vec<VmId> = per_agent[0].clone();
    agents[0].kill();
    wait_for_state(&mgr, servers[0], ServerState::Unreachable).await;
    let events = mgr
        .events(&EventQuery {
            object_id: Some(servers[0].to_string()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        events.iter().any(|e| e.action == "server.unreachable"),
        "{events:?}"
    );
    assert_eq!(mgr.vm(on_first[0]).state().unwrap(), VmState::Running);
    assert!(
        mgr.vm(on_first[0]).state_is_stale().unwrap(),
        "last known, not current"
    );
    assert!(!mgr.vm(per_agent[1][0]).state_is_stale().unwrap());
    let started = Instant::now();
    let err = mgr
        .vm(on_first[0])
        .stop()
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let text = err.to_string();
    assert!(
        text.contains("s0") && text.contains("unreachable"),
        "{text}"
    );

    // Back on the same port with the same state: its VMs still run, none started again.
    agents[0].restart(SIM);
    wait_for_state(&mgr, servers[0], ServerState::Running).await;
    assert!(!mgr.vm(on_first[0]).state_is_stale().unwrap());
    let per_agent = running_per_agent(&agents, &identity).await;
    assert_eq!(
        per_agent[0].len(),
        2,
        "the restarted agent re-adopted its VMs"
    );
    let mut sorted = per_agent[0].clone();
    sorted.sort();
    let mut before = on_first.clone();
    before.sort();
    assert_eq!(sorted, before);
    // The failed stop was rolled back: the VM is running, and can be stopped now.
    assert_eq!(mgr.vm(on_first[0]).state().unwrap(), VmState::Running);
    mgr.vm(on_first[0])
        .stop()
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap();

    // A new manager process on the same database sees the same VMs through the agents.
    drop(mgr);
    let mgr = manager(&db, &identity).await;
    let states: HashMap<VmId, VmState> = vms
        .iter()
        .map(|v| (*v, mgr.vm(*v).state().unwrap()))
        .collect();
    assert_eq!(
        states.values().filter(|s| **s == VmState::Running).count(),
        5
    );
    assert_eq!(states[&on_first[0]], VmState::Stopped);
    // Cold move: the stopped VM starts wherever placement finds room.
    mgr.vm(on_first[0])
        .start()
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap();
    let all: usize = running_per_agent(&agents, &identity)
        .await
        .iter()
        .map(Vec::len)
        .sum();
    assert_eq!(all, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_retried_after_the_agent_restarts_is_not_applied_again() {
    let dir = tempfile::tempdir().unwrap();
    let identity = Identity::generate("test-manager").unwrap();
    let mut agent = AgentProcess::start(&dir.path().join("a"), free_port(), SIM);
    own(&agent.endpoint, &identity).await;
    let client = AgentClient::new(&agent.endpoint, Some(&identity), "s").unwrap();
    let config = ovm_core::hypervisor::VmConfig::new(VmId::new(), VmSpec::new("v", 1, 128));
    let define = || Call::Define {
        config: Box::new(config.clone()),
    };
    let start = Call::Start { vm: config.id };
    let (d, s) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    client.call_with_id(d, define()).await.unwrap();
    client.call_with_id(s, start.clone()).await.unwrap();
    agent.restart(SIM);
    let client = AgentClient::new(&agent.endpoint, Some(&identity), "s").unwrap();
    // Both retries are answered from the journal: no "already exists", no second start.
    assert_eq!(client.call_with_id(d, define()).await.unwrap(), Reply::Done);
    assert_eq!(client.call_with_id(s, start).await.unwrap(), Reply::Done);
    let Reply::List(vms) = client.call(Call::List).await.unwrap() else {
        panic!()
    };
    assert_eq!(vms, vec![(config.id, VmState::Running)]);
}
