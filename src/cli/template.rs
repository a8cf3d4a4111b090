//! `ovm template ...`

use clap::Subcommand;

use super::output::{self, Format, short};
use super::{Ctx, wait::wait};

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// List templates.
    List,
    /// Show one template.
    Show {
        /// Name or id.
        template: String,
    },
    /// Create a VM from a template (its disks are cloned).
    Deploy {
        /// The template.
        template: String,
        /// The pool.
        pool: String,
        /// The new VM's name.
        name: String,
    },
}

pub async fn run(cmd: Cmd, ctx: &Ctx) -> anyhow::Result<()> {
    let mgr = &ctx.mgr;
    let human = ctx.format == Format::Human;
    match cmd {
        Cmd::List => {
            let ts = mgr.templates().await?;
            if !human {
                return output::json(&ts);
            }
            let rows: Vec<Vec<String>> = ts
                .iter()
                .map(|t| {
                    vec![
                        short(t.id),
                        t.name.clone(),
                        t.spec.vcpus.to_string(),
                        output::mib(t.spec.memory_mib),
                        t.volumes.len().to_string(),
                    ]
                })
                .collect();
            output::table(&["ID", "NAME", "VCPUS", "MEMORY", "DISKS"], &rows);
        }
        Cmd::Show { template } => {
            let t = mgr.find_template(&template).await?;
            if !human {
                return output::json(&t);
            }
            outln!("template {} ({})", t.name, t.id);
            outln!(
                "  {} vCPUs, {}",
                t.spec.vcpus,
                output::mib(t.spec.memory_mib)
            );
            outln!("  disks: {}", t.volumes.len());
            if !t.description.is_empty() {
                outln!("  {}", t.description);
            }
        }
        Cmd::Deploy {
            template,
            pool,
            name,
        } => {
            let id = wait(
                &mgr.create_vm_from_template(&pool, &template, &name).await?,
                human,
            )
            .await?;
            if human {
                outln!("created vm {name} ({id}) from template {template}");
            } else {
                output::json(&mgr.find_vm(id)?)?;
            }
        }
    }
    Ok(())
}
