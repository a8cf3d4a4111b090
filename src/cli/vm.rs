//! `ovm vm ...`

use std::path::PathBuf;

use clap::Subcommand;
use ovm::model::{BootSource, DomainType, PreferredMode, VmSpec};
use ovm::policy::{Explanation, Verdict};

use super::output::{self, Format, short};
use super::{Ctx, user_error, wait::wait};

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Define a VM in a pool.
    Create {
        /// The pool (name or id).
        pool: String,
        /// The VM's name.
        name: String,
        /// Virtual CPUs.
        #[arg(long, default_value_t = 1)]
        vcpus: u32,
        /// Memory, MiB.
        #[arg(long, default_value_t = 512)]
        memory: u64,
        /// Most memory, MiB (default: --memory).
        #[arg(long)]
        max_memory: Option<u64>,
        /// Domain type: hvm, pv_hvm, pv, pvh.
        #[arg(long, default_value = "pv_hvm")]
        domain_type: String,
        /// Boot the backend's test guest with this command line (e.g. `idle`, `kv`).
        #[arg(long, conflicts_with = "kernel")]
        test_guest: Option<String>,
        /// Boot this kernel directly.
        #[arg(long)]
        kernel: Option<PathBuf>,
        /// Initial ramdisk for --kernel.
        #[arg(long, requires = "kernel")]
        initrd: Option<PathBuf>,
        /// Kernel command line for --kernel.
        #[arg(long, default_value = "", requires = "kernel")]
        cmdline: String,
        /// Restart elsewhere if its server fails (with pool HA).
        #[arg(long)]
        ha: bool,
        /// Preferred servers (names or ids, comma-separated).
        #[arg(long, value_delimiter = ',')]
        preferred: Vec<String>,
        /// Only preferred servers may run it.
        #[arg(long, requires = "preferred")]
        manual: bool,
        /// Start order (lower first).
        #[arg(long, default_value_t = 0)]
        priority: u32,
    },
    /// List VMs.
    List,
    /// Show one VM.
    Show {
        /// Name or id.
        vm: String,
    },
    /// Start a VM.
    Start {
        /// Name or id.
        vm: String,
        /// Only explain where it would go and why; start nothing.
        #[arg(long)]
        explain: bool,
    },
    /// Stop a VM gracefully.
    Stop {
        /// Name or id.
        vm: String,
    },
    /// Stop a VM at once.
    Kill {
        /// Name or id.
        vm: String,
    },
    /// Pause a VM.
    Pause {
        /// Name or id.
        vm: String,
    },
    /// Resume a paused VM.
    Resume {
        /// Name or id.
        vm: String,
    },
    /// Live-migrate a VM.
    Migrate {
        /// Name or id.
        vm: String,
        /// Destination server (default: chosen by placement).
        #[arg(long)]
        to: Option<String>,
    },
    /// Delete a stopped VM.
    Delete {
        /// Name or id.
        vm: String,
    },
    /// Send a key/value message to the guest.
    Send {
        /// Name or id.
        vm: String,
        /// Key (≤ 256 bytes).
        key: String,
        /// Value (≤ 8 KiB).
        value: String,
    },
    /// Read what the guest published under a key.
    Read {
        /// Name or id.
        vm: String,
        /// Key.
        key: String,
    },
    /// Print the console output so far.
    Console {
        /// Name or id.
        vm: String,
    },
}

fn domain_type(s: &str) -> anyhow::Result<DomainType> {
    Ok(match s {
        "hvm" => DomainType::Hvm,
        "pv_hvm" | "pvhvm" => DomainType::PvHvm,
        "pv" => DomainType::Pv,
        "pvh" => DomainType::Pvh,
        other => {
            return Err(user_error(format!(
                "domain type {other:?}: say hvm, pv_hvm, pv or pvh"
            )));
        }
    })
}

/// Prints an explanation as a table.
pub fn print_explanation(mgr: &ovm::Manager, vm: &str, e: &Explanation) {
    match e.chosen.and_then(|s| mgr.find_server(s).ok()) {
        Some(s) => outln!("vm {vm} would start on {}", s.name),
        None => outln!("vm {vm} fits on no server"),
    }
    let rows: Vec<Vec<String>> = e
        .servers
        .iter()
        .map(|v| match &v.verdict {
            Verdict::Scored { score } => {
                vec![v.name.clone(), format!("score {score:.3}"), String::new()]
            }
            Verdict::Rejected { reason } => vec![v.name.clone(), "rejected".into(), reason.clone()],
        })
        .collect();
    output::table(&["SERVER", "VERDICT", "REASON"], &rows);
}

pub async fn run(cmd: Cmd, ctx: &Ctx) -> anyhow::Result<()> {
    let mgr = &ctx.mgr;
    let human = ctx.format == Format::Human;
    match cmd {
        Cmd::Create {
            pool,
            name,
            vcpus,
            memory,
            max_memory,
            domain_type: dt,
            test_guest,
            kernel,
            initrd,
            cmdline,
            ha,
            preferred,
            manual,
            priority,
        } => {
            let mut spec = VmSpec::new(name, vcpus, memory);
            spec.max_memory_mib = max_memory.unwrap_or(memory);
            spec.domain_type = domain_type(&dt)?;
            spec.boot = match (kernel, test_guest) {
                (Some(kernel), _) => BootSource::Kernel {
                    kernel,
                    initrd,
                    cmdline,
                },
                (None, Some(cmdline)) => BootSource::TestGuest { cmdline },
                (None, None) => BootSource::default(),
            };
            spec.ha_enabled = ha;
            for p in preferred {
                spec.preferred_servers.push(mgr.find_server(&p)?.id);
            }
            spec.preferred_mode = if manual {
                PreferredMode::Manual
            } else {
                PreferredMode::Auto
            };
            spec.start_priority = priority;
            let job = mgr.create_vm(&pool, spec).await?;
            let id = wait(&job, human).await?;
            let vm = mgr.find_vm(id)?;
            if human {
                outln!("created vm {} ({})", vm.spec.name, vm.id);
            } else {
                output::json(&vm)?;
            }
        }
        Cmd::List => {
            let vms = mgr.vms();
            if !human {
                return output::json(&vms);
            }
            let rows: Vec<Vec<String>> = vms
                .iter()
                .map(|v| {
                    let server = v
                        .server
                        .filter(|_| v.state.is_active())
                        .and_then(|s| mgr.find_server(s).ok())
                        .map(|s| s.name)
                        .unwrap_or_else(|| "-".into());
                    let state = if mgr.vm_state_is_stale(v.id).unwrap_or(false) {
                        format!("{} (stale: server unreachable)", v.state)
                    } else {
                        v.state.to_string()
                    };
                    vec![
                        short(v.id),
                        v.spec.name.clone(),
                        state,
                        server,
                        v.spec.vcpus.to_string(),
                        output::mib(v.spec.memory_mib),
                    ]
                })
                .collect();
            output::table(&["ID", "NAME", "STATE", "SERVER", "VCPUS", "MEMORY"], &rows);
        }
        Cmd::Show { vm } => {
            let v = mgr.find_vm(&vm)?;
            if !human {
                return output::json(&v);
            }
            outln!("vm {} ({})", v.spec.name, v.id);
            outln!("  state: {}", v.state);
            if let Some(s) = v.server.and_then(|s| mgr.find_server(s).ok()) {
                outln!("  server: {}", s.name);
            }
            outln!(
                "  {} vCPUs, {} (max {})",
                v.spec.vcpus,
                output::mib(v.spec.memory_mib),
                output::mib(v.spec.max_memory_mib)
            );
            outln!("  domain type: {}", v.spec.domain_type.as_str());
            outln!("  boot: {:?}", v.spec.boot);
            outln!("  HA: {}", if v.spec.ha_enabled { "on" } else { "off" });
        }
        Cmd::Start { vm, explain } => {
            if explain {
                let e = mgr.explain_start(&vm).await?;
                if human {
                    print_explanation(mgr, &vm, &e);
                } else {
                    output::json(&e)?;
                }
                return Ok(());
            }
            let job = mgr.start_vm(&vm).await?;
            let server = wait(&job, human).await?;
            let s = mgr.find_server(server)?;
            if human {
                outln!("started vm {vm} on {}", s.name);
            } else {
                output::json(
                    &serde_json::json!({ "vm": vm, "server": s.name, "server_id": s.id }),
                )?;
            }
        }
        Cmd::Stop { vm } => done(
            human,
            &vm,
            "stopped",
            wait(&mgr.stop_vm(&vm).await?, human).await?,
        )?,
        Cmd::Kill { vm } => done(
            human,
            &vm,
            "killed",
            wait(&mgr.kill_vm(&vm).await?, human).await?,
        )?,
        Cmd::Pause { vm } => done(
            human,
            &vm,
            "paused",
            wait(&mgr.pause_vm(&vm).await?, human).await?,
        )?,
        Cmd::Resume { vm } => done(
            human,
            &vm,
            "resumed",
            wait(&mgr.resume_vm(&vm).await?, human).await?,
        )?,
        Cmd::Delete { vm } => done(
            human,
            &vm,
            "deleted",
            wait(&mgr.delete_vm(&vm).await?, human).await?,
        )?,
        Cmd::Migrate { vm, to } => {
            let dest = wait(&mgr.migrate_vm(&vm, to.map(Into::into)).await?, human).await?;
            let s = mgr.find_server(dest)?;
            if human {
                outln!("migrated vm {vm} to {}", s.name);
            } else {
                output::json(&serde_json::json!({ "vm": vm, "server": s.name }))?;
            }
        }
        Cmd::Send { vm, key, value } => {
            mgr.send_message(&vm, &key, value.as_bytes()).await?;
            if human {
                outln!("sent {key} to vm {vm}");
            }
        }
        Cmd::Read { vm, key } => {
            let v = mgr.read_message(&vm, &key).await?;
            match (human, v) {
                (true, Some(v)) => outln!("{}", String::from_utf8_lossy(&v)),
                (true, None) => {
                    return Err(user_error(format!(
                        "vm {vm} has published nothing under {key:?}"
                    )));
                }
                (false, v) => output::json(&serde_json::json!({
                    "key": key,
                    "value": v.map(|v| String::from_utf8_lossy(&v).into_owned()),
                }))?,
            }
        }
        Cmd::Console { vm } => {
            let out = mgr.console(&vm).await?;
            if human {
                super::output::write_text(&String::from_utf8_lossy(&out));
            } else {
                output::json(&serde_json::json!({ "console": String::from_utf8_lossy(&out) }))?;
            }
        }
    }
    Ok(())
}

fn done(human: bool, vm: &str, what: &str, _: ()) -> anyhow::Result<()> {
    if human {
        outln!("{what} vm {vm}");
    } else {
        output::json(&serde_json::json!({ "vm": vm, "result": what }))?;
    }
    Ok(())
}
