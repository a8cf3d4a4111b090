//! The Rust side of the `py_overhead` benchmark: the same work as
//! `ovm-py/bench/py_overhead.py` does from Python, through the Rust API, in one process.
//!
//! Prints one JSON object per figure, for one round:
//! - `state_call_ns`: one `VmHandle::state()` (10,000 calls a round);
//! - `create_start_seq_per_s`: create + start of 1,000 VMs one after another, each job
//!   waited for, in VMs per second;
//! - `create_start_conc_per_s`: the same 1,000 creates issued together and waited for
//!   together, then the 1,000 starts likewise (what `asyncio.gather` does from Python).
//!
//! With `--serve`, it measures the figures named on its standard input, one a line:
//! `scripts/bench-py.sh` runs it so, interleaving each Rust measurement with the same
//! one from Python.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ovm_core::model::{HypervisorKind, VmSpec};
use ovm_manager::manager::SimConnector;
use ovm_manager::{Manager, ManagerOptions, PoolSpec, ServerSpec};

const T: Duration = Duration::from_secs(60);
const STATE_CALLS: usize = 10_000;
const VMS: usize = 1_000;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A manager on an in-memory store with four large simulated servers in pool `p`.
async fn bed() -> Result<(Manager, ovm_manager::manager::PoolHandle)> {
    let opts = ManagerOptions {
        connectors: vec![Arc::new(SimConnector::new())],
        initiator: "bench".into(),
        ..Default::default()
    };
    let mgr = Manager::open_in_memory(opts).await?;
    let pool = mgr.create_pool_now(PoolSpec::new("p")).await?;
    for i in 0..4 {
        let spec = ServerSpec::new(
            format!("s{i}"),
            HypervisorKind::Sim,
            "cpus=256,memory_mib=1048576",
        );
        pool.add_server(spec).await?.wait(T).await?;
    }
    Ok((mgr, pool))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn line(metric: &str, value: f64, unit: &str) {
    use std::io::Write;
    println!(
        "{}",
        serde_json::json!({"bench": "py_overhead", "side": "rust", "metric": metric, "value": value, "unit": unit})
    );
    let _ = std::io::stdout().flush();
}

async fn state_calls(rounds: usize) -> Result<f64> {
    let (mgr, pool) = bed().await?;
    let id = pool
        .create_vm(VmSpec::new("v", 1, 64))
        .await?
        .wait(T)
        .await?;
    let vm = mgr.vm(id);
    let mut per_call = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..STATE_CALLS {
            std::hint::black_box(vm.state()?);
        }
        per_call.push(t.elapsed().as_nanos() as f64 / STATE_CALLS as f64);
    }
    Ok(median(per_call))
}

async fn create_start_sequential() -> Result<f64> {
    let (mgr, pool) = bed().await?;
    let t = Instant::now();
    for i in 0..VMS {
        let spec = VmSpec::new(format!("vm-{i}"), 1, 64);
        let id = pool.create_vm(spec).await?.wait(T).await?;
        mgr.vm(id).start().await?.wait(T).await?;
    }
    Ok(VMS as f64 / t.elapsed().as_secs_f64())
}

async fn create_start_concurrent() -> Result<f64> {
    let (mgr, pool) = bed().await?;
    let t = Instant::now();
    // Issued together and waited for together: what `asyncio.gather` does from Python.
    let creates = futures::future::join_all(
        (0..VMS).map(|i| pool.create_vm(VmSpec::new(format!("vm-{i}"), 1, 64))),
    )
    .await
    .into_iter()
    .collect::<ovm_core::Result<Vec<_>>>()?;
    let ids = futures::future::join_all(creates.iter().map(|j| j.wait(T)))
        .await
        .into_iter()
        .collect::<ovm_core::Result<Vec<_>>>()?;
    let starts = futures::future::join_all(ids.iter().map(|id| {
        let h = mgr.vm(*id);
        async move { h.start().await }
    }))
    .await
    .into_iter()
    .collect::<ovm_core::Result<Vec<_>>>()?;
    for r in futures::future::join_all(starts.iter().map(|j| j.wait(T))).await {
        r?;
    }
    Ok(VMS as f64 / t.elapsed().as_secs_f64())
}

/// Measures one figure by name.
async fn figure(name: &str) -> Result<(f64, &'static str)> {
    Ok(match name {
        "state_call_ns" => (state_calls(5).await?, "ns"),
        "create_start_seq_per_s" => (create_start_sequential().await?, "vms/s"),
        "create_start_conc_per_s" => (create_start_concurrent().await?, "vms/s"),
        other => return Err(format!("unknown figure {other:?}").into()),
    })
}

const FIGURES: [&str; 3] = [
    "state_call_ns",
    "create_start_seq_per_s",
    "create_start_conc_per_s",
];

#[tokio::main]
async fn main() -> Result<()> {
    if std::env::args().nth(1).as_deref() == Some("--serve") {
        // One figure per line read from stdin, one JSON line written for each: the Python
        // side asks for a Rust measurement right before or after its own, so that both
        // see the same machine (shared and noisy) and the same warm process state.
        let mut lines =
            tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(tokio::io::stdin()));
        while let Some(name) = lines.next_line().await? {
            let (value, unit) = figure(name.trim()).await?;
            line(name.trim(), value, unit);
        }
        return Ok(());
    }
    // Without arguments: one measurement of each figure.
    for name in FIGURES {
        let (value, unit) = figure(name).await?;
        line(name, value, unit);
    }
    Ok(())
}
