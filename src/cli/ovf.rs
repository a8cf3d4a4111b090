//! `ovm ovf ...`: inspect, import and export OVF/OVA packages.

use std::path::PathBuf;

use clap::Subcommand;
use ovm::ovf::export::DiskExportFormat;
use ovm::ovf::jobs::{export_template_of, import_package};
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
            super::output::write_text(&ovm::ovf::inspect::render_text(&summary));
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
            let job = import_package(mgr, &path, &repo, name).await?;
            let summary = wait(&job, human).await?;
            if human {
                outln!("imported templates: {}", summary.templates.join(", "));
                if let Some(assembly) = &summary.assembly {
                    outln!("assembly: {assembly}");
                }
                for w in &summary.warnings {
                    outln!("warning: {w}");
                }
                for n in &summary.not_honoured {
                    outln!("not honoured: {n}");
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
            let format = DiskExportFormat::raw_if(raw);
            let t = export_template_of(mgr, &template, &out, format)
                .await
                .map_err(ovf_error)?;
            if human {
                outln!("exported template {} to {}", t.name, out.display());
            } else {
                output::json(&serde_json::json!({ "template": t.name, "output": out }))?;
            }
        }
    }
    Ok(())
}
