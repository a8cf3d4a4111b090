//! Agent round trips and throughput, each beside the same work in process.
//!
//! `cargo bench -p ovm-agent --bench agent_rtt` prints one JSON object per figure:
//! - `agent_rtt`: `state()` of a running VM through an agent over loopback TLS with
//!   keep-alive (p50, p99), the peer the same call on the same kind of backend in process;
//! - `agent_throughput`: create + start of `OVM_BENCH_VMS` VMs (default 2,000) across 8
//!   simulated agents (in this process, each on its own port) through one manager, jobs/s
//!   and p99, the peer the same manager on 8 local simulated servers persisted the same way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ovm_agent::server::{self, AgentOptions, RunningAgent};
use ovm_agent::{AgentClient, Identity, RemoteHypervisor, with_agents};
use ovm_core::hypervisor::VmConfig;
use ovm_core::model::{AgentEndpoint, HypervisorKind, VmSpec};
use ovm_core::sim::SimConnector;
use ovm_core::{Connector, Hypervisor, VmId};
use ovm_manager::{Manager, ManagerOptions, PoolSpec, ServerSpec};

const PASSWORD: &str = "benchmark password";
const T: Duration = Duration::from_secs(120);

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn line(bench: &str, metric: &str, value: f64, unit: &str, peer: &str, peer_value: f64) {
    println!(
        "{}",
        serde_json::json!({"bench": bench, "metric": metric, "value": (value * 1000.0).round() / 1000.0,
            "unit": unit, "peer": peer, "peer_value": (peer_value * 1000.0).round() / 1000.0})
    );
}

async fn agent(
    dir: &std::path::Path,
    identity: &Identity,
    size: &str,
) -> (RunningAgent, AgentEndpoint) {
    server::set_password(dir, PASSWORD).unwrap();
    let mut opts = AgentOptions::new(dir, HypervisorKind::Sim);
    opts.listen = "127.0.0.1:0".parse().unwrap();
    opts.sim_address = size.into();
    let a = server::start(opts).await.unwrap();
    let ep = AgentEndpoint {
        url: format!("https://{}", a.addr),
        fingerprint: a.fingerprint.to_string(),
    };
    AgentClient::new(&ep, Some(identity), "bench")
        .unwrap()
        .take_ownership(PASSWORD, "bench")
        .await
        .unwrap();
    (a, ep)
}

async fn time_states(hv: &dyn Hypervisor, vm: VmId, n: usize) -> Vec<f64> {
    let mut us = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        hv.state(vm).await.unwrap();
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    us.sort_by(f64::total_cmp);
    us
}

async fn rtt() {
    let dir = tempfile::tempdir().unwrap();
    let identity = Identity::generate("bench").unwrap();
    let (_agent, ep) = agent(dir.path(), &identity, "cpus=8,memory_mib=16384").await;
    let remote =
        RemoteHypervisor::connect(AgentClient::new(&ep, Some(&identity), "bench").unwrap())
            .await
            .unwrap();
    let config = VmConfig::new(VmId::new(), VmSpec::new("v", 1, 64));
    remote.define(&config).await.unwrap();
    remote.start(config.id).await.unwrap();
    let local_conn = SimConnector::new();
    let server = ovm_core::model::Server::standalone(
        ovm_core::ServerId::new(),
        "local",
        "cpus=8,memory_mib=16384",
        HypervisorKind::Sim,
    );
    let local = local_conn.connect(&server).await.unwrap();
    local.define(&config).await.unwrap();
    local.start(config.id).await.unwrap();
    // Warm-up: connections made, caches filled.
    time_states(&remote, config.id, 200).await;
    let (mut r50, mut r99, mut l50) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        let r = time_states(&remote, config.id, 2000).await;
        let l = time_states(&*local, config.id, 2000).await;
        r50.push(pct(&r, 0.5));
        r99.push(pct(&r, 0.99));
        l50.push(pct(&l, 0.5));
    }
    for v in [&mut r50, &mut r99, &mut l50] {
        v.sort_by(f64::total_cmp);
    }
    line("agent_rtt", "p50_us", r50[2], "us", "in_process", l50[2]);
    line("agent_rtt", "p99_us", r99[2], "us", "in_process", l50[2]);
}

async fn fill(mgr: &Manager, n: usize) -> (f64, f64) {
    let mgr = Arc::new(mgr.clone());
    let started = Instant::now();
    let mut tasks = Vec::new();
    let per = n / 16;
    for w in 0..16 {
        let mgr = mgr.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for i in 0..per {
                let t = Instant::now();
                let id = mgr
                    .create_vm("p", VmSpec::new(format!("v{w}-{i}"), 1, 64))
                    .await
                    .unwrap()
                    .wait(T)
                    .await
                    .unwrap();
                mgr.vm(id).start().await.unwrap().wait(T).await.unwrap();
                lat.push(t.elapsed().as_secs_f64() * 1e3);
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    // Two jobs per VM: create and start.
    ((2 * lat.len()) as f64 / secs, pct(&lat, 0.99))
}

async fn throughput() {
    let n: usize = std::env::var("OVM_BENCH_VMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let size = format!("cpus=4096,memory_mib={}", 64 * 1024 * 1024);
    let dir = tempfile::tempdir().unwrap();
    let identity = Identity::generate("bench").unwrap();
    let mut agents = Vec::new();
    for i in 0..8 {
        agents.push(agent(&dir.path().join(format!("a{i}")), &identity, &size).await);
    }
    let remote = Manager::open_in_memory(ManagerOptions {
        connectors: with_agents(Vec::new(), &identity),
        ..ManagerOptions::default()
    })
    .await
    .unwrap();
    remote.create_pool_now(PoolSpec::new("p")).await.unwrap();
    for (i, (_, ep)) in agents.iter().enumerate() {
        let spec = ServerSpec::with_agent(
            format!("s{i}"),
            HypervisorKind::Sim,
            &ep.url,
            &ep.fingerprint,
        );
        remote
            .add_server("p", spec)
            .await
            .unwrap()
            .wait(T)
            .await
            .unwrap();
    }
    // The peer's simulated hosts keep their state on disk as the agents' do, so the
    // difference is the agent: TLS, HTTP, JSON, the request journal.
    let local = Manager::open_in_memory(ManagerOptions {
        connectors: vec![Arc::new(SimConnector::persistent(
            dir.path().join("local-sim"),
        ))],
        ..ManagerOptions::default()
    })
    .await
    .unwrap();
    local.create_pool_now(PoolSpec::new("p")).await.unwrap();
    for i in 0..8 {
        local
            .add_server(
                "p",
                ServerSpec::new(format!("s{i}"), HypervisorKind::Sim, size.as_str()),
            )
            .await
            .unwrap()
            .wait(T)
            .await
            .unwrap();
    }
    let (r_rate, r_p99) = fill(&remote, n).await;
    let (l_rate, l_p99) = fill(&local, n).await;
    line(
        "agent_throughput",
        "jobs_per_s",
        r_rate,
        "jobs/s",
        "local_sim",
        l_rate,
    );
    line(
        "agent_throughput",
        "p99_ms",
        r_p99,
        "ms",
        "local_sim",
        l_p99,
    );
    eprintln!("agent_throughput: {n} VMs created and started across 8 agents");
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        rtt().await;
        throughput().await;
    });
}
