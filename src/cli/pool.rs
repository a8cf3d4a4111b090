//! `ovm pool ...`

use clap::Subcommand;
use ovm::PoolSpec;

use super::output::{self, Format, short};
use super::{Ctx, wait::wait};

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Create a pool.
    Create {
        /// Its name.
        name: String,
        /// Enable HA for the pool.
        #[arg(long)]
        ha: bool,
        /// Most servers (default 32).
        #[arg(long, default_value_t = ovm::model::ServerPool::DEFAULT_MAX_SERVERS)]
        max_servers: u32,
    },
    /// List pools.
    List,
    /// Show one pool.
    Show {
        /// Name or id.
        pool: String,
    },
    /// Delete an empty pool.
    Delete {
        /// Name or id.
        pool: String,
    },
    /// Run DRS once: migrate VMs to balance the pool.
    Rebalance {
        /// Name or id.
        pool: String,
        /// Only print the proposed moves and their reasons.
        #[arg(long)]
        dry_run: bool,
    },
    /// Run DPM once: power servers off (after evacuating them) or on.
    Power {
        /// Name or id.
        pool: String,
        /// Only print the proposed actions.
        #[arg(long)]
        dry_run: bool,
    },
}

fn server_name(mgr: &ovm::Manager, id: ovm::ServerId) -> String {
    mgr.find_server(id)
        .map(|s| s.name)
        .unwrap_or_else(|_| id.to_string())
}

fn vm_name(mgr: &ovm::Manager, id: ovm::VmId) -> String {
    mgr.find_vm(id)
        .map(|v| v.spec.name)
        .unwrap_or_else(|_| id.to_string())
}

fn print_moves(mgr: &ovm::Manager, moves: &[ovm::policy::Migration]) {
    let rows: Vec<Vec<String>> = moves
        .iter()
        .map(|m| {
            vec![
                vm_name(mgr, m.vm),
                server_name(mgr, m.from),
                server_name(mgr, m.to),
                m.reason.clone(),
            ]
        })
        .collect();
    output::table(&["VM", "FROM", "TO", "REASON"], &rows);
}

pub async fn run(cmd: Cmd, ctx: &Ctx) -> anyhow::Result<()> {
    let mgr = &ctx.mgr;
    match cmd {
        Cmd::Create {
            name,
            ha,
            max_servers,
        } => {
            let mut spec = PoolSpec::new(name);
            spec.ha_enabled = ha;
            spec.max_servers = max_servers;
            let job = mgr.create_pool(spec).await?;
            let id = wait(&job, ctx.format == Format::Human).await?;
            let pool = mgr.find_pool(id)?;
            match ctx.format {
                Format::Json => output::json(&pool)?,
                Format::Human => outln!("created pool {} ({})", pool.name, pool.id),
            }
        }
        Cmd::List => {
            let pools = mgr.pools();
            match ctx.format {
                Format::Json => output::json(&pools)?,
                Format::Human => {
                    let rows: Vec<Vec<String>> = pools
                        .iter()
                        .map(|p| {
                            let vms = mgr.pool(p.id).vms().len();
                            vec![
                                short(p.id),
                                p.name.clone(),
                                format!("{}/{}", p.servers.len(), p.max_servers),
                                vms.to_string(),
                                p.repositories.len().to_string(),
                                if p.ha_enabled { "on" } else { "off" }.into(),
                            ]
                        })
                        .collect();
                    output::table(&["ID", "NAME", "SERVERS", "VMS", "REPOS", "HA"], &rows);
                }
            }
        }
        Cmd::Show { pool } => {
            let p = mgr.find_pool(&pool)?;
            match ctx.format {
                Format::Json => output::json(&p)?,
                Format::Human => {
                    outln!("pool {} ({})", p.name, p.id);
                    outln!("  HA: {}", if p.ha_enabled { "on" } else { "off" });
                    outln!("  servers: {}/{}", p.servers.len(), p.max_servers);
                    for s in mgr.pool(p.id).servers() {
                        outln!(
                            "    {} {} {} CPUs {}",
                            s.name,
                            s.state.as_str(),
                            s.cpus,
                            output::mib(s.memory_mib)
                        );
                    }
                    outln!("  VMs: {}", mgr.pool(p.id).vms().len());
                    outln!("  placement: {:?}", p.policies.placement);
                }
            }
        }
        Cmd::Rebalance {
            pool,
            dry_run: true,
        } => {
            let moves = mgr.propose_rebalance(&pool)?;
            match ctx.format {
                Format::Json => output::json(&moves)?,
                Format::Human if moves.is_empty() => outln!("pool {pool} is balanced: no moves"),
                Format::Human => print_moves(mgr, &moves),
            }
        }
        Cmd::Rebalance {
            pool,
            dry_run: false,
        } => {
            let report = mgr.rebalance(&pool).await?;
            match ctx.format {
                Format::Json => output::json(&report)?,
                Format::Human => {
                    print_moves(mgr, &report.migrated);
                    for e in &report.errors {
                        outln!("failed: {e}");
                    }
                }
            }
        }
        Cmd::Power { pool, dry_run } => {
            if dry_run {
                let actions = mgr.propose_power(&pool)?;
                match ctx.format {
                    Format::Json => output::json(&actions)?,
                    Format::Human if actions.is_empty() => {
                        outln!("pool {pool} is inside its band: nothing to do")
                    }
                    Format::Human => {
                        for a in &actions {
                            match a {
                                ovm::policy::PowerAction::PowerOff {
                                    server,
                                    evacuate,
                                    reason,
                                } => {
                                    outln!("power off {} ({reason})", server_name(mgr, *server));
                                    print_moves(mgr, evacuate);
                                }
                                ovm::policy::PowerAction::PowerOn { server, reason } => {
                                    outln!("power on {} ({reason})", server_name(mgr, *server))
                                }
                            }
                        }
                    }
                }
            } else {
                let report = mgr.apply_power(&pool).await?;
                match ctx.format {
                    Format::Json => output::json(&report)?,
                    Format::Human => {
                        for s in &report.powered_off {
                            outln!("powered off {}", server_name(mgr, *s));
                        }
                        for s in &report.powered_on {
                            outln!("powered on {}", server_name(mgr, *s));
                        }
                        for e in &report.errors {
                            outln!("failed: {e}");
                        }
                    }
                }
            }
        }
        Cmd::Delete { pool } => {
            let job = mgr.delete_pool(&pool).await?;
            wait(&job, ctx.format == Format::Human).await?;
            if ctx.format == Format::Human {
                outln!("deleted pool {pool}");
            }
        }
    }
    Ok(())
}
