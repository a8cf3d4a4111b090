//! `ovm demo`: the tour on embedded defaults.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use ovm::manager::SimConnector;
use ovm::model::{EventQuery, HypervisorKind, PreferredMode, VmSpec};
use ovm::{Manager, ManagerOptions, PoolSpec, ServerSpec};

use super::output::{self, Format};

/// Options of the demo.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the demo's store in this directory (default: a temporary one, removed after).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// How many VMs to start.
    #[arg(long, default_value_t = 6)]
    pub vms: u32,
}

const WAIT: Duration = Duration::from_secs(60);

/// Runs the demo.
pub async fn run(args: DemoArgs, _format: Format) -> anyhow::Result<()> {
    let tmp;
    let dir = match args.dir {
        Some(d) => d,
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("ovm.db");
    let sim = Arc::new(SimConnector::new());
    let options = ManagerOptions {
        initiator: "demo".into(),
        connectors: vec![sim.clone()],
        ..ManagerOptions::default()
    };
    let mgr = Manager::open(&db, options).await?;
    println!("== ovm demo ==");
    println!("store: {}", db.display());
    println!("backend: simulator (in-memory hosts)");

    println!("\n-- a pool of three servers");
    let pool = mgr
        .create_pool_now(PoolSpec {
            ha_enabled: true,
            ..PoolSpec::new("demo-pool")
        })
        .await?;
    let sizes = [
        ("server-a", 8, 16),
        ("server-b", 16, 32),
        ("server-c", 4, 8),
    ];
    let mut servers = Vec::new();
    for (name, cpus, gib) in sizes {
        let address = format!("cpus={cpus},memory_mib={}", gib * 1024);
        let id = mgr
            .add_server(
                "demo-pool",
                ServerSpec::new(name, HypervisorKind::Sim, address),
            )
            .await?
            .wait(WAIT)
            .await?;
        servers.push(id);
        println!("added {name}: {cpus} CPUs, {gib} GiB");
    }

    println!(
        "\n-- {} VMs defined and started at once (placement spreads the burst)",
        args.vms
    );
    let mut vm_ids = Vec::new();
    for i in 0..args.vms {
        let mut spec = VmSpec::new(
            format!("web-{i:02}"),
            1 + i % 4,
            1024 * u64::from(1 + i % 3),
        );
        spec.ha_enabled = i % 2 == 0;
        vm_ids.push(pool.create_vm(spec).await?.wait(WAIT).await?);
    }
    let e = mgr.explain_start("web-00").await?;
    super::vm::print_explanation(&mgr, "web-00", &e);
    let mut starts = Vec::new();
    for id in &vm_ids {
        starts.push(mgr.vm(*id).start().await?);
    }
    let mut rows = Vec::new();
    for (id, job) in vm_ids.iter().zip(&starts) {
        let server = job.wait(WAIT).await?;
        let vm = mgr.find_vm(&id.to_string())?;
        let s = mgr.find_server(&server.to_string())?;
        rows.push(vec![
            vm.spec.name,
            vm.state.to_string(),
            s.name,
            vm.spec.vcpus.to_string(),
            output::mib(vm.spec.memory_mib),
        ]);
    }
    println!();
    output::table(&["VM", "STATE", "SERVER", "VCPUS", "MEMORY"], &rows);

    println!("\n-- a guest message round trip");
    let first = mgr.vm(vm_ids[0]);
    first
        .send_message("greeting", b"hello from the manager")
        .await?;
    let reply = first.read_message("greeting").await?.unwrap_or_default();
    println!(
        "sent greeting; the guest answered: {:?}",
        String::from_utf8_lossy(&reply)
    );

    println!("\n-- a job that fails and rolls back");
    let victim = servers[1];
    if let Some(host) = sim.host(victim) {
        host.faults().fail("start", 1);
    }
    let mut spec = VmSpec::new("doomed", 2, 2048);
    spec.preferred_servers = vec![victim];
    spec.preferred_mode = PreferredMode::Manual;
    pool.create_vm(spec).await?.wait(WAIT).await?;
    let job = mgr.start_vm("doomed").await?;
    match job.wait(WAIT).await {
        Ok(_) => println!("unexpected: the start succeeded"),
        Err(e) => println!("start of vm doomed failed: {e}"),
    }
    let j = job.job();
    println!("job {} ended {}:", j.id, j.state);
    for s in &j.steps {
        println!("  step {:<8} {:?}", s.name, s.state);
    }
    for u in j.undo_log.iter().rev() {
        println!("  undone: {}", u.undo);
    }
    println!(
        "vm doomed is {} and holds nothing on server-b",
        mgr.find_vm("doomed")?.state
    );

    println!("\n-- pause, resume, stop");
    let second = mgr.vm(vm_ids[1]);
    second.pause().await?.wait(WAIT).await?;
    println!("web-01 is {}", second.state()?);
    second.resume().await?.wait(WAIT).await?;
    println!("web-01 is {}", second.state()?);
    second.stop().await?.wait(WAIT).await?;
    println!("web-01 is {}", second.state()?);

    println!("\n-- the event history");
    let events = mgr.events(&EventQuery::default()).await?;
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                e.action.clone(),
                format!("{:?}", e.outcome).to_lowercase(),
                e.detail.clone(),
            ]
        })
        .collect();
    output::table(&["ACTION", "OUTCOME", "DETAIL"], &rows);
    println!(
        "\ndemo finished: {} jobs, {} events recorded",
        mgr.jobs().await?.len(),
        events.len()
    );
    Ok(())
}
