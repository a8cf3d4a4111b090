//! `ovm job ...`

use clap::Subcommand;

use super::output::{self, Format, short};
use super::{Ctx, user_error};

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// List jobs, newest first.
    List {
        /// Most jobs to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show one job with its steps.
    Show {
        /// Id (or a unique prefix).
        job: String,
    },
    /// Abort a running job: what it did is undone.
    Abort {
        /// Id (or a unique prefix).
        job: String,
    },
}

pub async fn run(cmd: Cmd, ctx: &Ctx) -> anyhow::Result<()> {
    let mgr = &ctx.mgr;
    let human = ctx.format == Format::Human;
    match cmd {
        Cmd::List { limit } => {
            let jobs: Vec<_> = mgr.jobs().await?.into_iter().take(limit).collect();
            if !human {
                return output::json(&jobs);
            }
            let rows: Vec<Vec<String>> = jobs
                .iter()
                .map(|j| {
                    vec![
                        short(j.id),
                        j.kind.clone(),
                        j.state.to_string(),
                        format!("{:.0}%", j.progress.percent),
                        j.created_at.to_string(),
                        j.description.clone(),
                    ]
                })
                .collect();
            output::table(
                &["ID", "KIND", "STATE", "PROGRESS", "CREATED", "DESCRIPTION"],
                &rows,
            );
        }
        Cmd::Show { job } => {
            let j = mgr.job(&job).await?;
            if !human {
                return output::json(&j);
            }
            outln!("job {} ({})", j.id, j.kind);
            outln!("  {}", j.description);
            outln!(
                "  state: {}  progress: {:.0}% ({}/{} steps)",
                j.state,
                j.progress.percent,
                j.progress.steps_done,
                j.progress.steps_total
            );
            outln!("  by {} at {}", j.initiator, j.created_at);
            if let Some(t) = j.finished_at {
                outln!("  finished at {t}");
            }
            for s in &j.steps {
                outln!("  step {:<12} {:?}", s.name, s.state);
            }
            if let Some(e) = &j.error {
                outln!("  error: {e}");
            }
            for e in &j.rollback_errors {
                outln!("  not undone: {e}");
            }
        }
        Cmd::Abort { job } => {
            let j = mgr.job(&job).await?;
            if j.state.is_finished() {
                return Err(user_error(format!(
                    "job {} already ended {}",
                    j.id, j.state
                )));
            }
            mgr.abort_job(j.id).await?;
            if human {
                outln!("abort requested for job {}", j.id);
            }
        }
    }
    Ok(())
}
