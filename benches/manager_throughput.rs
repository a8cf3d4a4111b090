//! manager_throughput: create + start 10,000 VMs on 1,000 simulated servers through the real
//! manager and its SQLite store (on disk, WAL). Prints jobs per second and p50/p99 job
//! latency as JSON lines.
//!
//! `cargo bench --bench manager_throughput` (env `OVM_BENCH_VMS`, `OVM_BENCH_SERVERS`,
//! `OVM_BENCH_IN_FLIGHT` — concurrent clients — to change the size).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ovm::manager::SimConnector;
use ovm::model::{HypervisorKind, VmSpec};
use ovm::{Manager, ManagerOptions, PoolSpec, ServerSpec};

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

#[tokio::main(flavor = "multi_thread")]
async fn main() -> ovm::Result<()> {
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
    mgr.create_pool_now(PoolSpec {
        max_servers: servers as u32,
        ..PoolSpec::new("bench")
    })
    .await?;
    let setup = Instant::now();
    for i in 0..servers {
        mgr.add_server(
            "bench",
            ServerSpec::new(
                format!("s{i:05}"),
                HypervisorKind::Sim,
                "cpus=64,memory_mib=262144",
            ),
        )
        .await?
        .join()
        .await?;
    }
    emit(
        "servers_added_per_s",
        servers as f64 / setup.elapsed().as_secs_f64(),
        "servers/s",
    );

    // `in_flight` clients, as a busy API sees them: each creates a VM, waits for it, starts
    // it, waits again, and takes the next.
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..in_flight {
        let (mgr, next) = (mgr.clone(), next.clone());
        clients.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= vms {
                    return Ok::<_, ovm::Error>(latencies);
                }
                let t = Instant::now();
                let spec = VmSpec::new(format!("vm{i:06}"), 1, 1024);
                let id = mgr.create_vm("bench", spec).await?.join().await?;
                latencies.push(t.elapsed());
                let t = Instant::now();
                mgr.vm(id).start().await?.join().await?;
                latencies.push(t.elapsed());
            }
        });
    }
    let mut latencies = Vec::with_capacity(vms * 2);
    while let Some(client) = clients.join_next().await {
        latencies.extend(client.map_err(|e| ovm::Error::backend("bench", e.to_string()))??);
    }
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
        .filter(|v| v.state == ovm::model::VmState::Running)
        .count();
    assert_eq!(running, vms, "every VM runs");
    Ok(())
}
