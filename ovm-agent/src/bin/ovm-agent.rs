//! `ovm-agent`: the per-server agent (`ovm-agent run --hypervisor kvm`).

use clap::Parser;
use ovm_agent::cli::AgentCommand;

/// The argument that makes this program a VMM process (it embeds ovm's VMM).
const VMM_MODE: &str = "__vmm";

#[derive(Parser)]
#[command(name = "ovm-agent", version, about = "The ovm agent of this server")]
struct Cli {
    #[command(subcommand)]
    command: AgentCommand,
}

fn main() -> std::process::ExitCode {
    let mut args = std::env::args();
    if args.nth(1).as_deref() == Some(VMM_MODE) {
        ovm_backend_kvm::vmm_process::run(args);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OVM_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let embedded = std::env::current_exe()
        .ok()
        .map(|exe| (exe, vec![VMM_MODE.to_string()]));
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ovm-agent: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(cli.command.run(embedded)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ovm-agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
