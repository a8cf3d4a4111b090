//! The `ovm` command line: one module per topic, each with its clap subcommands and the
//! code that runs them against a manager.

/// `println!` for command output: a reader that went away (`ovm job list | head -1`)
/// ends the program quietly with status 0, as `ls | head` does; any other failure to
/// write is reported.
macro_rules! outln {
    () => {
        $crate::cli::output::write_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::write_line(format_args!($($arg)*))
    };
}

mod agent;
pub mod demo;
mod event;
mod job;
pub mod output;
mod ovf;
mod pool;
mod repo;
mod server;
mod store;
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
    /// Create the store's directory if it does not exist (the default location is
    /// always created).
    #[arg(long, global = true)]
    pub create_db: bool,
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
    /// The store: check for and quarantine damaged documents.
    #[command(subcommand)]
    Store(store::Cmd),
    /// This server's agent (`ovm agent run`): what a manager on another machine talks to.
    #[command(subcommand)]
    Agent(ovm_agent::cli::AgentCommand),
}

/// What every command gets.
pub struct Ctx {
    /// The manager.
    pub mgr: Manager,
    /// The directory it keeps its state in (beside the database).
    pub dir: PathBuf,
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
/// A missing directory is created only if `create` says so: a mistyped `--db` must not
/// leave a new, empty manager behind.
pub async fn open_manager(db: &Path, initiator: &str, create: bool) -> anyhow::Result<Manager> {
    let dir = db
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(user_error(format!(
                "store {}: {} is not a directory",
                db.display(),
                dir.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            std::fs::create_dir_all(dir)
                .map_err(|e| user_error(format!("cannot create {}: {e}", dir.display())))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(user_error(format!(
                "store {}: directory {} does not exist (give --create-db to make it)",
                db.display(),
                dir.display()
            )));
        }
        Err(e) => return Err(user_error(format!("store {}: {e}", db.display()))),
    }
    if db.exists() && !db.is_file() {
        return Err(user_error(format!("store {} is not a file", db.display())));
    }
    Ok(Manager::open(db, ovm::backends::local_options(dir, initiator)?).await?)
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
        // The agent serves a manager elsewhere; it opens none of its own.
        Command::Agent(cmd) => return agent::run(cmd).await,
        // Inspecting a package needs no manager.
        Command::Ovf(ovf::Cmd::Inspect { path }) => return ovf::inspect(&path, format),
        _ => {}
    }
    // The default location is ours to make; a location given is the user's.
    let (db, create) = match cli.db {
        Some(db) => (db, cli.create_db),
        None => (default_db(), true),
    };
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let ctx = Ctx {
        mgr: open_manager(&db, &format!("cli:{user}"), create).await?,
        dir: db
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf(),
        format,
    };
    let result = run_command(cli.command, &ctx).await;
    // Give the lease up now rather than leave it to expire (jobs still running are
    // rolled back by the next manager once this process is gone).
    if let Err(e) = ctx.mgr.close().await {
        tracing::warn!("closing the manager: {e}");
    }
    result
}

async fn run_command(command: Command, ctx: &Ctx) -> anyhow::Result<()> {
    match command {
        Command::Demo(_) | Command::Agent(_) => Ok(()),
        Command::Repo(c) => repo::run_repo(c, ctx).await,
        Command::Volume(c) => repo::run_volume(c, ctx).await,
        Command::Template(c) => template::run(c, ctx).await,
        Command::Ovf(c) => ovf::run(c, ctx).await,
        Command::Pool(c) => pool::run(c, ctx).await,
        Command::Server(c) => server::run(c, ctx).await,
        Command::Vm(c) => vm::run(c, ctx).await,
        Command::Job(c) => job::run(c, ctx).await,
        Command::Event(c) => event::run(c, ctx).await,
        Command::Store(c) => store::run(c, ctx).await,
    }
}
