//! The `ovm` command line: one module per topic, each with its clap subcommands and the
//! code that runs them against a manager.

pub mod demo;
mod event;
mod job;
pub mod output;
mod ovf;
mod pool;
mod repo;
mod server;
mod template;
mod vm;
pub mod wait;

use clap::{Parser, Subcommand};
use ovm::Manager;
use std::path::{Path, PathBuf};

use output::Format;

/// ovm: run virtual machines on pools of servers.
#[derive(Debug, Parser)]
#[command(name = "ovm", version, about, propagate_version = true)]
pub struct Cli {
    /// The manager's store (SQLite). Default: $OVM_DB, else ~/.local/share/ovm/ovm.db.
    #[arg(long, global = true, env = "OVM_DB")]
    pub db: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the tour: a pool of servers, VMs placed and started, a rolled-back job, the
    /// event history — on embedded defaults.
    Demo(demo::DemoArgs),
    /// Server pools.
    #[command(subcommand)]
    Pool(pool::Cmd),
    /// Servers.
    #[command(subcommand)]
    Server(server::Cmd),
    /// Virtual machines.
    #[command(subcommand)]
    Vm(vm::Cmd),
    /// Jobs.
    #[command(subcommand)]
    Job(job::Cmd),
    /// The event history (audit log).
    #[command(subcommand)]
    Event(event::Cmd),
    /// Storage repositories.
    #[command(subcommand)]
    Repo(repo::RepoCmd),
    /// Volumes (virtual disks) in repositories.
    #[command(subcommand)]
    Volume(repo::VolumeCmd),
    /// Templates.
    #[command(subcommand)]
    Template(template::Cmd),
    /// OVF and OVA packages.
    #[command(subcommand)]
    Ovf(ovf::Cmd),
}

/// What every command gets.
pub struct Ctx {
    /// The manager.
    pub mgr: Manager,
    /// Output format.
    pub format: Format,
}

/// An error in what the user asked (exit code 2), as opposed to a failure (exit code 1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UserError(pub String);

/// Shorthand for a user error.
pub fn user_error(msg: impl Into<String>) -> anyhow::Error {
    UserError(msg.into()).into()
}

fn default_db() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("ovm").join("ovm.db")
}

/// Opens the manager the CLI works on: the store at `db`, simulated hosts kept beside it
/// (so that separate invocations see the same VMs), and the real backends this build has.
pub async fn open_manager(db: &Path, initiator: &str) -> anyhow::Result<Manager> {
    let dir = db
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| user_error(format!("cannot create {}: {e}", dir.display())))?;
    Ok(Manager::open(db, ovm::backends::local_options(dir, initiator)).await?)
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let format = if cli.json {
        Format::Json
    } else {
        Format::Human
    };
    match cli.command {
        Command::Demo(args) => return demo::run(args, format).await,
        // Inspecting a package needs no manager.
        Command::Ovf(ovf::Cmd::Inspect { path }) => return ovf::inspect(&path, format),
        _ => {}
    }
    let db = cli.db.unwrap_or_else(default_db);
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let ctx = Ctx {
        mgr: open_manager(&db, &format!("cli:{user}")).await?,
        format,
    };
    match cli.command {
        Command::Demo(_) => Ok(()),
        Command::Repo(c) => repo::run_repo(c, &ctx).await,
        Command::Volume(c) => repo::run_volume(c, &ctx).await,
        Command::Template(c) => template::run(c, &ctx).await,
        Command::Ovf(c) => ovf::run(c, &ctx).await,
        Command::Pool(c) => pool::run(c, &ctx).await,
        Command::Server(c) => server::run(c, &ctx).await,
        Command::Vm(c) => vm::run(c, &ctx).await,
        Command::Job(c) => job::run(c, &ctx).await,
        Command::Event(c) => event::run(c, &ctx).await,
    }
}
