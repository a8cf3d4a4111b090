//! The agent's command line, shared by the `ovm-agent` program and `ovm agent`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use ovm_core::model::HypervisorKind;

use crate::server::{self, AgentOptions};

/// Run or set up this server's agent.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Serves this server's hypervisor to the manager that owns the agent.
    Run(RunArgs),
    /// Sets the agent password a manager gives to take ownership (read from stdin, or
    /// $OVM_AGENT_PASSWORD).
    Init(StateArgs),
    /// Prints the agent certificate's fingerprint (made on first use).
    Fingerprint(StateArgs),
    /// Forgets the owning manager, so another can take the agent (run on the server).
    ResetOwnership(StateArgs),
}

/// Where the agent keeps its state.
#[derive(Debug, Args)]
pub struct StateArgs {
    /// State directory: identity, owner, request journal, VM state.
    #[arg(long, env = "OVM_AGENT_DIR", default_value = "/var/lib/ovm-agent")]
    pub state_dir: PathBuf,
}

/// `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    state: StateArgs,
    /// Address and port to listen on.
    #[arg(long, default_value = "127.0.0.1:8899")]
    listen: SocketAddr,
    /// The hypervisor served: kvm, xen or sim.
    #[arg(long, default_value = "kvm")]
    hypervisor: HypervisorKind,
    /// For `--hypervisor sim`: the simulated host's size.
    #[arg(long, default_value = "cpus=16,memory_mib=65536")]
    sim: String,
    /// A directory VM definitions may name files in (kernels, disks); repeatable.
    #[arg(long = "allow-path")]
    allow_paths: Vec<PathBuf>,
    /// For `--hypervisor xen`: where xenconsoled writes guest logs.
    #[arg(long)]
    xen_console_dir: Option<PathBuf>,
}

impl AgentCommand {
    /// Runs the command; `embedded_vmm` is this program as a VMM, where it is one.
    pub async fn run(self, embedded_vmm: Option<(PathBuf, Vec<String>)>) -> anyhow::Result<()> {
        match self {
            AgentCommand::Run(a) => {
                let mut opts = AgentOptions::new(&a.state.state_dir, a.hypervisor);
                opts.listen = a.listen;
                opts.sim_address = a.sim;
                opts.allowed_paths = a.allow_paths;
                opts.xen_console_log_dir = a.xen_console_dir;
                opts.embedded_vmm = embedded_vmm;
                let agent = server::start(opts).await?;
                // Machine-readable first line: scripts and tests read where it listens.
                println!(
                    "{}",
                    serde_json::json!({
                        "event": "listening",
                        "address": agent.addr.to_string(),
                        "fingerprint": agent.fingerprint.to_string(),
                    })
                );
                let serve = agent.wait();
                tokio::select! {
                    () = serve => {}
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate() => {}
                }
                Ok(())
            }
            AgentCommand::Init(s) => {
                let password = match std::env::var("OVM_AGENT_PASSWORD") {
                    Ok(p) => p,
                    Err(_) => {
                        let mut line = String::new();
                        std::io::stdin().read_line(&mut line)?;
                        line.trim_end_matches(['\n', '\r']).to_string()
                    }
                };
                server::set_password(&s.state_dir, &password)?;
                println!("agent password set in {}", s.state_dir.display());
                println!("{}", server::fingerprint(&s.state_dir)?);
                Ok(())
            }
            AgentCommand::Fingerprint(s) => {
                println!("{}", server::fingerprint(&s.state_dir)?);
                Ok(())
            }
            AgentCommand::ResetOwnership(s) => {
                server::reset_ownership(&s.state_dir)?;
                println!("ownership reset: the next manager with the password may take it");
                Ok(())
            }
        }
    }
}

async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}
