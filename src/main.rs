//! The `ovm` command line.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // The `ovm` binary doubles as the VMM process of the KVM backend.
    if std::env::args().nth(1).as_deref() == Some(ovm::backends::VMM_MODE) {
        ovm::kvm::vmm_process::run(std::env::args().skip(2));
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OVM_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// 2 for what the user asked wrong, 1 for what failed.
fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<cli::UserError>().is_some() {
        return 2;
    }
    match e.downcast_ref::<ovm::Error>() {
        Some(err) if err.is_user_error() => 2,
        _ => 1,
    }
}
