//! `ovm ovf ...`: inspect, import and export OVF/OVA packages.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Subcommand;
use ovm::job::JobSpec;
use ovm::manager::ImportRecord;
use ovm::ovf::export::DiskExportFormat;
use ovm::ovf::import::{ImportOptions, import};
use ovm::ovf::{Limits, OvfError};

use super::output::{self, Format};
use super::{Ctx, user_error, wait::wait};

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Summarise an .ovf or .ova (reads the descriptor, manifest and certificate only).
    Inspect {
        /// The package.
        path: PathBuf,
    },
    /// Import a package into a repository as a template (or an assembly of templates).
    Import {
        /// The package.
        path: PathBuf,
        /// The repository (name or id).
        #[arg(long)]
        repo: String,
        /// Name for the template or assembly (default: from the package).
        #[arg(long)]
        name: Option<String>,
    },
    /// Export a template as an OVA.
    Export {
        /// The template (name or id).
        template: String,
        /// The .ova to write (must not exist).
        #[arg(short, long)]
        output: PathBuf,
        /// Write disks raw instead of as streamOptimized VMDK.
        #[arg(long)]
        raw: bool,
    },
}

/// An OVF error as the CLI reports it: refusals of the input are user errors (exit 2).
fn ovf_error(e: OvfError) -> anyhow::Error {
    if e.is_refusal() {
        user_error(e.to_string())
    } else {
        anyhow::Error::new(ovm::Error::from(e))
    }
}

/// `ovm ovf inspect` needs no manager.
pub fn inspect(path: &std::path::Path, format: Format) -> anyhow::Result<()> {
    let summary = ovm::ovf::inspect::summary_json(path, &Limits::default()).map_err(ovf_error)?;
    match format {
        Format::Json => output::json(&summary),
        Format::Human => {
            print!("{}", ovm::ovf::inspect::render_text(&summary));
            Ok(())
        }
    }
}

pub async fn run(cmd: Cmd, ctx: &Ctx) -> anyhow::Result<()> {
    let mgr = &ctx.mgr;
    let human = ctx.format == Format::Human;
    match cmd {
        Cmd::Inspect { path } => inspect(&path, ctx.format)?,
        Cmd::Import { path, repo, name } => {
            let (repo, plugin) = mgr.storage_for(&repo)?;
            let pool = repo.pool.ok_or_else(|| {
                user_error(format!("repository {} belongs to no pool", repo.name))
            })?;
            let networks: BTreeMap<String, ovm::NetworkId> =
                mgr.networks().into_iter().map(|n| (n.name, n.id)).collect();
            let opts = ImportOptions {
                networks,
                name,
                ..ImportOptions::default()
            };
            let spec = JobSpec::new(
                "ovf.import",
                format!("import {} into {}", path.display(), repo.name),
                Some(("repository", repo.id.to_string())),
                mgr.initiator(),
                &["import", "record"],
            );
            let m = mgr.clone();
            let job = mgr
                .run_job(spec, move |ctx| async move {
                    let reporter = ctx.clone();
                    let rt = tokio::runtime::Handle::current();
                    let progress = move |done: u64, total: u64| {
                        let r = reporter.clone();
                        let f = if total == 0 { 1.0 } else { done as f64 / total as f64 };
                        rt.spawn(async move { r.report_fraction(f).await });
                    };
                    let result = ctx
                        .step("import", async {
                            import(&*plugin, repo.id, &path, &opts, progress).await.map_err(ovm::Error::from)
                        })
                        .await?;
                    let rec = ImportRecord {
                        pool,
                        templates: result.templates.iter().map(|t| t.template.clone()).collect(),
                        assembly: result.assembly.clone(),
                        networks: result.networks.clone(),
                    };
                    ctx.step("record", m.record_import(&ctx, "record", rec)).await?;
                    let summary = serde_json::json!({
                        "templates": result.templates.iter().map(|t| &t.template.name).collect::<Vec<_>>(),
                        "assembly": result.assembly.as_ref().map(|a| &a.name),
                        "warnings": result.warnings,
                        "not_honoured": result.templates.iter()
                            .flat_map(|t| t.not_honoured.iter().map(|n| format!("{}: {n:?}", t.template.name)))
                            .collect::<Vec<_>>(),
                    });
                    Ok(summary)
                })
                .await?;
            let summary = wait(&job, human).await?;
            if human {
                println!("imported templates: {}", summary["templates"]);
                if !summary["assembly"].is_null() {
                    println!("assembly: {}", summary["assembly"]);
                }
                for w in summary["warnings"].as_array().into_iter().flatten() {
                    println!("warning: {}", w.as_str().unwrap_or_default());
                }
                for n in summary["not_honoured"].as_array().into_iter().flatten() {
                    println!("not honoured: {}", n.as_str().unwrap_or_default());
                }
            } else {
                output::json(&summary)?;
            }
        }
        Cmd::Export {
            template,
            output: out,
            raw,
        } => {
            let t = mgr.find_template(&template).await?;
            let (_, plugin) = mgr.storage_for(&t.repo.to_string())?;
            let names: BTreeMap<ovm::NetworkId, String> =
                mgr.networks().into_iter().map(|n| (n.id, n.name)).collect();
            let name_of =
                move |id: ovm::NetworkId| names.get(&id).cloned().unwrap_or_else(|| id.to_string());
            let format = if raw {
                DiskExportFormat::Raw
            } else {
                DiskExportFormat::StreamOptimizedVmdk
            };
            ovm::ovf::export::export_template(&*plugin, &t, &name_of, &out, format)
                .await
                .map_err(ovf_error)?;
            if human {
                println!("exported template {} to {}", t.name, out.display());
            } else {
                output::json(&serde_json::json!({ "template": t.name, "output": out }))?;
            }
        }
    }
    Ok(())
}
