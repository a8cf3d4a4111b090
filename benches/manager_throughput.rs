//! manager_throughput: create + start VMs on simulated servers through the real manager
//! and its SQLite store (on disk, WAL), in two modes, each printing JSON lines:
//!
//! - one process: 10,000 VMs on 1,000 servers, 64 concurrent clients (`jobs_per_s`,
//!   `job_latency_p50`, `job_latency_p99`);
//! - several processes on one store (`OVM_BENCH_PROCS`, default 4), as CLI calls and a
//!   Python script beside each other are: each process is a manager of its own with its
//!   share of the clients, the simulated hosts are shared through their state files, and
//!   the servers have exactly room for every VM (a stale view overcommits at once). The
//!   same workload in one worker process is the peer. Figures `mp_jobs_per_s_Nproc`,
//!   `mp_job_latency_p99_Nproc`, and the check of what the store holds after both runs:
//!   `mp_lost_records`, `mp_duplicated_records`, `mp_vms_not_running`,
//!   `mp_overcommitted_servers` (all must be 0).
//!
//! `cargo bench --bench manager_throughput` (env `OVM_BENCH_VMS`, `OVM_BENCH_SERVERS`,
//! `OVM_BENCH_IN_FLIGHT` — concurrent clients —, `OVM_BENCH_PROCS`, `OVM_BENCH_MP_VMS`,
//! `OVM_BENCH_MP_SERVERS` to change the sizes; `OVM_BENCH_PROCS=0` skips the second mode).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ovm::manager::SimConnector;
use ovm::model::{HypervisorKind, VmSpec, VmState};
use ovm::{Manager, ManagerOptions, PoolSpec, ServerSpec};

/// Set in a worker process: its index.
const WORKER_ENV: &str = "OVM_BENCH_WORKER";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

fn emit(metric: &str, value: f64, unit: &str) {
    println!(
        r#"{{"bench":"manager_throughput","metric":"{metric}","value":{value:.3},"unit":"{unit}"}}"#
    );
}

const SERVER_ADDRESS: &str = "cpus=64,memory_mib=262144";

/// Memory of each VM the clients create.
const VM_MEMORY_MIB: u64 = 1024;

async fn add_servers(mgr: &Manager, servers: usize) -> ovm::Result<()> {
    add_servers_of(mgr, servers, SERVER_ADDRESS).await
}

async fn add_servers_of(mgr: &Manager, servers: usize, address: &str) -> ovm::Result<()> {
    mgr.create_pool_now(PoolSpec {
        max_servers: servers as u32,
        ..PoolSpec::new("bench")
    })
    .await?;
    for i in 0..servers {
        let spec = ServerSpec::new(format!("s{i:05}"), HypervisorKind::Sim, address);
        mgr.add_server("bench", spec).await?.join().await?;
    }
    Ok(())
}

/// `clients` concurrent clients, as a busy API sees them: each creates a VM, waits for
/// it, starts it, waits again, and takes the next of `names`. Returns the job latencies.
async fn run_clients(
    mgr: &Manager,
    names: Vec<String>,
    clients: usize,
) -> ovm::Result<Vec<Duration>> {
    let names = Arc::new(names);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (mgr, next, names) = (mgr.clone(), next.clone(), names.clone());
        set.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(name) = names.get(i) else {
                    return Ok::<_, ovm::Error>(latencies);
                };
                let t = Instant::now();
                let spec = VmSpec::new(name.clone(), 1, VM_MEMORY_MIB);
                let id = mgr.create_vm("bench", spec).await?.join().await?;
                latencies.push(t.elapsed());
                let t = Instant::now();
                mgr.vm(id).start().await?.join().await?;
                latencies.push(t.elapsed());
            }
        });
    }
    let mut latencies = Vec::with_capacity(names.len() * 2);
    while let Some(client) = set.join_next().await {
        latencies.extend(client.map_err(|e| ovm::Error::backend("bench", e.to_string()))??);
    }
    Ok(latencies)
}

async fn single_process() -> ovm::Result<()> {
    let vms = env("OVM_BENCH_VMS", 10_000);
    let servers = env("OVM_BENCH_SERVERS", 1_000);
    let in_flight = env("OVM_BENCH_IN_FLIGHT", 64);
    let dir = tempfile::tempdir()?;
    let opts = ManagerOptions {
        connectors: vec![Arc::new(SimConnector::new())],
        initiator: "bench".into(),
        ..Default::default()
    };
    let mgr = Manager::open(dir.path().join("ovm.db"), opts).await?;
    let setup = Instant::now();
    add_servers(&mgr, servers).await?;
    emit(
        "servers_added_per_s",
        servers as f64 / setup.elapsed().as_secs_f64(),
        "servers/s",
    );
    let names = (0..vms).map(|i| format!("vm{i:06}")).collect();
    let started = Instant::now();
    let mut latencies = run_clients(&mgr, names, in_flight).await?;
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let jobs = latencies.len() as f64;
    emit("jobs_per_s", jobs / elapsed, "jobs/s");
    emit("vms_started_per_s", vms as f64 / elapsed, "vms/s");
    emit("job_latency_p50", percentile(&latencies, 0.50), "ms");
    emit("job_latency_p99", percentile(&latencies, 0.99), "ms");
    emit("jobs", jobs, "jobs");
    let running = mgr
        .vms()
        .iter()
        .filter(|v| v.state == VmState::Running)
        .count();
    assert_eq!(running, vms, "every VM runs");
    Ok(())
}

/// A manager of the multi-process mode: the store at `dir`, simulated hosts shared
/// through state files there.
async fn shared_manager(dir: &Path, who: &str) -> ovm::Result<Manager> {
    let opts = ManagerOptions {
        connectors: vec![Arc::new(SimConnector::persistent(dir.join("sim")))],
        initiator: who.into(),
        ..Default::default()
    };
    Manager::open(dir.join("ovm.db"), opts).await
}

/// One worker process: its share of the VMs with its share of the clients; prints its
/// latencies (milliseconds, one JSON array) for the parent.
async fn worker(index: usize) -> ovm::Result<()> {
    let dir = std::path::PathBuf::from(std::env::var("OVM_BENCH_DIR").unwrap_or_default());
    let procs = env("OVM_BENCH_PROCS", 4).max(1);
    let vms = env("OVM_BENCH_MP_VMS", 2_000);
    let clients = (env("OVM_BENCH_IN_FLIGHT", 64) / procs).max(1);
    let mgr = shared_manager(&dir, &format!("bench-worker-{index}")).await?;
    let names = (0..vms)
        .filter(|i| i % procs == index)
        .map(|i| format!("vm{i:06}"))
        .collect();
    let latencies = run_clients(&mgr, names, clients).await?;
    let ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    println!("{}", serde_json::to_string(&ms).unwrap_or_default());
    mgr.close().await
}

/// What one run of the multi-process mode measured and found.
struct MpRun {
    jobs_per_s: f64,
    p99_ms: f64,
    lost: usize,
    duplicated: usize,
    not_running: usize,
    overcommitted: usize,
}

/// The multi-process mode with `procs` worker processes sharing the clients.
async fn multi_process_run(procs: usize) -> ovm::Result<MpRun> {
    let vms = env("OVM_BENCH_MP_VMS", 2_000);
    let servers = env("OVM_BENCH_MP_SERVERS", 100);
    let dir = tempfile::tempdir()?;
    {
        // Exactly room for every VM: a process placing from a stale view overcommits a
        // server at once (or fails a start that should have fitted).
        let per_server = vms.div_ceil(servers.max(1)) as u64;
        let address = format!("cpus=64,memory_mib={}", per_server * VM_MEMORY_MIB);
        let mgr = shared_manager(dir.path(), "bench").await?;
        add_servers_of(&mgr, servers, &address).await?;
        mgr.close().await?;
    }
    let exe = std::env::current_exe()?;
    let started = Instant::now();
    let children: Vec<std::process::Child> = (0..procs)
        .map(|i| {
            std::process::Command::new(&exe)
                .env(WORKER_ENV, i.to_string())
                .env("OVM_BENCH_DIR", dir.path())
                .env("OVM_BENCH_PROCS", procs.to_string())
                .stdout(std::process::Stdio::piped())
                .spawn()
        })
        .collect::<std::io::Result<_>>()?;
    let mut latencies = Vec::new();
    for c in children {
        let out = c.wait_with_output()?;
        if !out.status.success() {
            let kept = dir.keep();
            return Err(ovm::Error::backend(
                "bench",
                format!(
                    "a worker process failed ({}); its store is kept in {}",
                    out.status,
                    kept.display()
                ),
            ));
        }
        let ms: Vec<f64> = serde_json::from_slice(&out.stdout)?;
        latencies.extend(ms.into_iter().map(|m| Duration::from_secs_f64(m / 1000.0)));
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let jobs_per_s = latencies.len() as f64 / elapsed;
    let p99_ms = percentile(&latencies, 0.99);

    // What the store and the hosts hold now, from a fresh manager.
    let mgr = shared_manager(dir.path(), "bench-check").await?;
    let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
    for v in mgr.vms() {
        *by_name.entry(v.spec.name).or_default() += 1;
    }
    let expected: BTreeSet<String> = (0..vms).map(|i| format!("vm{i:06}")).collect();
    let lost = expected
        .iter()
        .filter(|n| !by_name.contains_key(*n))
        .count();
    let duplicated: usize = by_name.values().map(|n| n.saturating_sub(1)).sum();
    let not_running = mgr
        .vms()
        .iter()
        .filter(|v| v.state != VmState::Running)
        .count();
    let mut overcommitted = 0;
    for s in mgr.servers() {
        let used: u64 = mgr
            .server(s.id)
            .vms()
            .iter()
            .filter(|v| v.state.is_active())
            .map(|v| v.spec.memory_mib)
            .sum();
        if used > s.memory_mib {
            overcommitted += 1;
        }
    }
    mgr.close().await?;
    Ok(MpRun {
        jobs_per_s,
        p99_ms,
        lost,
        duplicated,
        not_running,
        overcommitted,
    })
}

/// Runs the workload in one process, then in `procs`, and prints the figures of the
/// latter with the former as the peer, and the checks of both.
async fn multi_process(procs: usize) -> ovm::Result<()> {
    let one = multi_process_run(1).await?;
    let many = multi_process_run(procs).await?;
    let peer = |metric: &str, value: f64, unit: &str, peer_value: f64| {
        println!(
            r#"{{"bench":"manager_throughput","metric":"{metric}","value":{value:.3},"unit":"{unit}","peer":"1proc","peer_value":{peer_value:.3}}}"#
        );
    };
    peer(
        &format!("mp_jobs_per_s_{procs}proc"),
        many.jobs_per_s,
        "jobs/s",
        one.jobs_per_s,
    );
    peer(
        &format!("mp_job_latency_p99_{procs}proc"),
        many.p99_ms,
        "ms",
        one.p99_ms,
    );
    let total = |f: fn(&MpRun) -> usize| f(&one) + f(&many);
    let lost = total(|r| r.lost);
    let duplicated = total(|r| r.duplicated);
    let not_running = total(|r| r.not_running);
    let overcommitted = total(|r| r.overcommitted);
    emit("mp_lost_records", lost as f64, "records");
    emit("mp_duplicated_records", duplicated as f64, "records");
    emit("mp_vms_not_running", not_running as f64, "vms");
    emit("mp_overcommitted_servers", overcommitted as f64, "servers");
    assert_eq!(
        lost + duplicated + not_running + overcommitted,
        0,
        "nothing lost, doubled, stopped or overcommitted"
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> ovm::Result<()> {
    if let Ok(i) = std::env::var(WORKER_ENV) {
        return worker(i.parse().unwrap_or(0)).await;
    }
    single_process().await?;
    let procs = env("OVM_BENCH_PROCS", 4);
    if procs > 0 {
        multi_process(procs).await?;
    }
    Ok(())
}
