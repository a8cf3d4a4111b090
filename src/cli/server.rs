//! `ovm server ...`

use clap::Subcommand;
use ovm::ServerSpec;
use ovm::model::HypervisorKind;

use super::output::{self, Format, short};
use super::{Ctx, user_error, wait::wait};

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Add a server to a pool.
    Add {
        /// The pool (name or id).
        pool: String,
        /// The server's name.
        name: String,
        /// Its hypervisor: sim, kvm or xen (default: what its agent serves, else sim).
        #[arg(long)]
        hypervisor: Option<HypervisorKind>,
        /// Where it is. For sim: `cpus=16,memory_mib=65536`.
        #[arg(long, default_value = "cpus=16,memory_mib=65536")]
        address: String,
        /// The agent serving it, on another machine: `https://HOST:PORT`.
        #[arg(long)]
        agent: Option<String>,
        /// The SHA-256 fingerprint of the agent's certificate (`ovm-agent fingerprint` on
        /// the server prints it). Without it, the fingerprint seen is shown, not trusted.
        #[arg(long, requires = "agent")]
        fingerprint: Option<String>,
        /// A file holding the agent password, to take ownership of the agent
        /// (default: $OVM_AGENT_PASSWORD).
        #[arg(long, requires = "agent")]
        password_file: Option<std::path::PathBuf>,
    },
    /// List servers.
    List,
    /// Show one server.
    Show {
        /// Name or id.
        server: String,
    },
    /// Enter or leave maintenance mode.
    Maintenance {
        /// Name or id.
        server: String,
        /// `on` or `off`.
        mode: String,
    },
    /// Remove a server that runs no VMs.
    Remove {
        /// Name or id.
        server: String,
    },
}

pub async fn run(cmd: Cmd, ctx: &Ctx) -> anyhow::Result<()> {
    let mgr = &ctx.mgr;
    let human = ctx.format == Format::Human;
    match cmd {
        Cmd::Add {
            pool,
            name,
            hypervisor,
            address,
            agent,
            fingerprint,
            password_file,
        } => {
            let spec = match agent {
                None => ServerSpec::new(name, hypervisor.unwrap_or(HypervisorKind::Sim), address),
                Some(url) => {
                    super::agent::own(ctx, &name, &url, fingerprint, password_file, hypervisor)
                        .await?
                }
            };
            let job = mgr.add_server(&pool, spec).await?;
            let id = wait(&job, human).await?;
            let s = mgr.find_server(id)?;
            if human {
                outln!(
                    "added server {} ({}): {} CPUs, {}",
                    s.name,
                    s.id,
                    s.cpus,
                    output::mib(s.memory_mib)
                );
            } else {
                output::json(&s)?;
            }
        }
        Cmd::List => {
            let servers = mgr.servers();
            if !human {
                return output::json(&servers);
            }
            let rows: Vec<Vec<String>> = servers
                .iter()
                .map(|s| {
                    let pool = s
                        .pool
                        .and_then(|p| mgr.find_pool(p).ok())
                        .map(|p| p.name)
                        .unwrap_or_default();
                    let vms = mgr.server(s.id).vms();
                    let used: u64 = vms.iter().map(|v| v.spec.memory_mib).sum();
                    vec![
                        short(s.id),
                        s.name.clone(),
                        pool,
                        s.hypervisor.to_string(),
                        s.state.as_str().into(),
                        s.cpus.to_string(),
                        format!("{}/{}", output::mib(used), output::mib(s.memory_mib)),
                        vms.len().to_string(),
                    ]
                })
                .collect();
            output::table(
                &[
                    "ID",
                    "NAME",
                    "POOL",
                    "HYPERVISOR",
                    "STATE",
                    "CPUS",
                    "MEMORY USED",
                    "VMS",
                ],
                &rows,
            );
        }
        Cmd::Show { server } => {
            let s = mgr.find_server(&server)?;
            if !human {
                return output::json(&s);
            }
            outln!("server {} ({})", s.name, s.id);
            outln!("  hypervisor: {} at {}", s.hypervisor, s.address);
            outln!("  state: {}", s.state.as_str());
            outln!("  {} CPUs, {}", s.cpus, output::mib(s.memory_mib));
            for v in mgr.server(s.id).vms() {
                outln!(
                    "    vm {} {} {} vCPUs {}",
                    v.spec.name,
                    v.state,
                    v.spec.vcpus,
                    output::mib(v.spec.memory_mib)
                );
            }
        }
        Cmd::Maintenance { server, mode } => {
            let on = match mode.as_str() {
                "on" => true,
                "off" => false,
                other => {
                    return Err(user_error(format!(
                        "maintenance mode {other:?}: say on or off"
                    )));
                }
            };
            let job = mgr.set_maintenance(&server, on).await?;
            wait(&job, human).await?;
            if human {
                outln!("server {server}: maintenance {mode}");
            }
        }
        Cmd::Remove { server } => {
            let job = mgr.remove_server(&server).await?;
            wait(&job, human).await?;
            if human {
                outln!("removed server {server}");
            }
        }
    }
    Ok(())
}
