//! `ovm demo`: the tour on embedded defaults.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use ovm::manager::SimConnector;
use ovm::model::{BootSource, EventQuery, HypervisorKind, PreferredMode, VmSpec};
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
    /// Which hypervisor: `auto` (KVM where /dev/kvm works, else the simulator), `kvm`, `sim`.
    #[arg(long, default_value = "auto")]
    pub backend: String,
}

/// The hypervisor the demo runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sim,
    Kvm,
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
    let backend = match args.backend.as_str() {
        "sim" => Backend::Sim,
        "kvm" => Backend::Kvm,
        "auto" if ovm::backends::kvm_available() => Backend::Kvm,
        "auto" => Backend::Sim,
        other => {
            return Err(super::user_error(format!(
                "--backend {other:?}: say auto, kvm or sim"
            )));
        }
    };
    if let Err(why) = ovm::kvm::kvm_usable().map_err(|w| w.to_string())
        && backend == Backend::Kvm
    {
        return Err(super::user_error(format!("--backend kvm: {why}")));
    }
    let sim = Arc::new(SimConnector::new());
    let kvm = Arc::new(ovm::backends::KvmConnector::new(
        dir.join("kvm"),
        ovm::backends::vmm_command(),
    ));
    let options = ManagerOptions {
        initiator: "demo".into(),
        connectors: vec![sim.clone(), kvm.clone()],
        stop_timeout: Duration::from_secs(5),
        ..ManagerOptions::default()
    };
    let mgr = Manager::open(&db, options).await?;
    outln!("== ovm demo ==");
    outln!("store: {}", db.display());
    match backend {
        Backend::Kvm => outln!(
            "backend: KVM (ovm's own VMM, one process per VM, booting the bundled test guest)"
        ),
        Backend::Sim => outln!("backend: simulator (no usable /dev/kvm)"),
    }

    outln!("\n-- a pool of three servers");
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
    for (i, (name, cpus, gib)) in sizes.into_iter().enumerate() {
        let sim_spec = |cpus: u32, mib: u64| {
            ServerSpec::new(
                name,
                HypervisorKind::Sim,
                format!("cpus={cpus},memory_mib={mib}"),
            )
        };
        let spec = match backend {
            Backend::Sim => sim_spec(cpus, gib * 1024),
            // This machine is one KVM server (one host is never two servers: its CPUs and
            // memory would count twice); the others are simulated.
            Backend::Kvm if i == 0 => ServerSpec::new(name, HypervisorKind::Kvm, "local"),
            // Small beside it, so that most guests boot on KVM.
            Backend::Kvm => sim_spec(1, 256),
        };
        let id = mgr.add_server("demo-pool", spec).await?.wait(WAIT).await?;
        let s = mgr.find_server(id)?;
        servers.push(id);
        outln!(
            "added {name} ({}): {} CPUs, {}",
            s.hypervisor,
            s.cpus,
            output::mib(s.memory_mib)
        );
    }

    outln!(
        "\n-- {} VMs defined and started at once (placement spreads the burst)",
        args.vms
    );
    let mut vm_ids = Vec::new();
    for i in 0..args.vms {
        let name = format!("web-{i:02}");
        let mut spec = match backend {
            Backend::Sim => VmSpec::new(name, 1 + i % 4, 1024 * u64::from(1 + i % 3)),
            Backend::Kvm => VmSpec::new(name, 1, 32 * u64::from(1 + i % 3)),
        };
        // The guest answers key/value messages (the KVM test guest's `kv` workload).
        spec.boot = BootSource::TestGuest {
            cmdline: "kv".into(),
        };
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
        let vm = mgr.find_vm(id)?;
        let s = mgr.find_server(server)?;
        rows.push(vec![
            vm.spec.name,
            vm.state.to_string(),
            s.name,
            vm.spec.vcpus.to_string(),
            output::mib(vm.spec.memory_mib),
        ]);
    }
    outln!();
    output::table(&["VM", "STATE", "SERVER", "VCPUS", "MEMORY"], &rows);

    if backend == Backend::Kvm {
        outln!("\n-- what the KVM guests printed on their serial consoles");
        for id in &vm_ids {
            let vm = mgr.find_vm(id)?;
            if vm.server != Some(servers[0]) {
                continue;
            }
            // The guest prints its first lines as it boots: give it a moment to.
            let mut console = Vec::new();
            for _ in 0..100 {
                console = mgr.console(id).await.unwrap_or_default();
                if console.iter().filter(|&&b| b == b'\n').count() >= 3 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            for line in String::from_utf8_lossy(&console).lines().take(3) {
                outln!("{}: {line}", vm.spec.name);
            }
        }
    }

    outln!("\n-- a guest message round trip");
    let first = mgr.vm(vm_ids[0]);
    first
        .send_message("greeting", b"hello from the manager")
        .await?;
    // The guest answers asynchronously; wait for its reply a little.
    let mut reply = None;
    for _ in 0..200 {
        reply = first.read_message("greeting").await?;
        if reply.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    match reply {
        Some(r) => outln!(
            "sent greeting; the guest answered: {:?}",
            String::from_utf8_lossy(&r)
        ),
        None => outln!("sent greeting; the guest has not answered yet"),
    }

    outln!("\n-- a job that fails and rolls back");
    // The KVM server boots a kernel that is not there; a simulated one refuses.
    let victim = match backend {
        Backend::Kvm => servers[0],
        Backend::Sim => servers[1],
    };
    let victim_name = mgr.find_server(victim)?.name;
    let mut spec = VmSpec::new("doomed", 1, 64);
    match backend {
        // The simulated server refuses the next start.
        Backend::Sim => {
            if let Some(host) = sim.host(victim) {
                host.faults().fail("start", 1);
            }
        }
        // A kernel that is not there: the VMM cannot boot it.
        Backend::Kvm => {
            spec.boot = BootSource::Kernel {
                kernel: dir.join("no-such-vmlinuz"),
                initrd: None,
                cmdline: String::new(),
            }
        }
    }
    spec.preferred_servers = vec![victim];
    spec.preferred_mode = PreferredMode::Manual;
    pool.create_vm(spec).await?.wait(WAIT).await?;
    let job = mgr.start_vm("doomed").await?;
    match job.wait(WAIT).await {
        Ok(_) => outln!("unexpected: the start succeeded"),
        Err(e) => outln!("start of vm doomed failed: {e}"),
    }
    let j = job.job();
    outln!("job {} ended {}:", j.id, j.state);
    for s in &j.steps {
        outln!("  step {:<8} {:?}", s.name, s.state);
    }
    if !j.state.is_finished() || j.state != ovm::model::JobState::Completed {
        for u in j.undo_log.iter().rev() {
            outln!("  undone: {}", u.undo);
        }
    }
    outln!(
        "vm doomed is {} and holds nothing on {victim_name}",
        mgr.find_vm("doomed")?.state
    );

    outln!("\n-- pause, resume, stop");
    let second = mgr.vm(vm_ids[1]);
    second.pause().await?.wait(WAIT).await?;
    outln!("web-01 is {}", second.state()?);
    second.resume().await?.wait(WAIT).await?;
    outln!("web-01 is {}", second.state()?);
    second.stop().await?.wait(WAIT).await?;
    outln!("web-01 is {}", second.state()?);

    outln!("\n-- the event history");
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
    outln!(
        "\ndemo finished: {} jobs, {} events recorded",
        mgr.jobs().await?.len(),
        events.len()
    );
    Ok(())
}
