//! manager_throughput: create + start 10,000 VMs on 1,000 simulated servers through the real
//! manager and its SQLite store (on disk, WAL). Prints jobs per second and p50/p99 job
//! latency as JSON lines.
//!
//! `cargo bench --bench manager_throughput` (env `OVM_BENCH_VMS`, `OVM_BENCH_SERVERS`,
//! `OVM_BENCH_IN_FLIGHT` to change the size).

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

    // Jobs are submitted with at most `in_flight` outstanding, as a busy API would see them.
    let mut latencies = Vec::with_capacity(vms * 2);
    let started = Instant::now();
    let mut next = 0;
    while next < vms {
        let batch: Vec<usize> = (next..(next + in_flight).min(vms)).collect();
        next += batch.len();
        let mut creates = Vec::new();
        for i in &batch {
            let t = Instant::now();
            creates.push((
                t,
                mgr.create_vm("bench", VmSpec::new(format!("vm{i:06}"), 1, 1024))
                    .await?,
            ));
        }
        let mut starts = Vec::new();
        for (t, job) in creates {
            let id = job.join().await?;
            latencies.push(t.elapsed());
            let t = Instant::now();
            starts.push((t, mgr.vm(id).start().await?));
        }
        for (t, job) in starts {
            job.join().await?;
            latencies.push(t.elapsed());
        }
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
