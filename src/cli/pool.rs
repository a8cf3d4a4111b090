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
            let pool = mgr.find_pool(&id.to_string())?;
            match ctx.format {
                Format::Json => output::json(&pool)?,
                Format::Human => println!("created pool {} ({})", pool.name, pool.id),
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
                    println!("pool {} ({})", p.name, p.id);
                    println!("  HA: {}", if p.ha_enabled { "on" } else { "off" });
                    println!("  servers: {}/{}", p.servers.len(), p.max_servers);
                    for s in mgr.pool(p.id).servers() {
                        println!(
                            "    {} {} {} CPUs {}",
                            s.name,
                            s.state.as_str(),
                            s.cpus,
                            output::mib(s.memory_mib)
                        );
                    }
                    println!("  VMs: {}", mgr.pool(p.id).vms().len());
                    println!("  placement: {:?}", p.policies.placement);
                }
            }
        }
        Cmd::Delete { pool } => {
            let job = mgr.delete_pool(&pool).await?;
            wait(&job, ctx.format == Format::Human).await?;
            if ctx.format == Format::Human {
                println!("deleted pool {pool}");
            }
        }
    }
    Ok(())
}
