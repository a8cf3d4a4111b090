//! `ovm store ...`: the store's own health.

use clap::Subcommand;

use super::Ctx;
use super::output::{self, Format};

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// List documents that cannot be read (listings skip them).
    Check,
    /// Move such documents into the store's quarantine, out of every listing.
    Repair,
}

pub async fn run(cmd: Cmd, ctx: &Ctx) -> anyhow::Result<()> {
    let human = ctx.format == Format::Human;
    let (damaged, verb) = match cmd {
        Cmd::Check => (ctx.mgr.check_store().await?, "damaged"),
        Cmd::Repair => (ctx.mgr.repair_store().await?, "quarantined"),
    };
    if !human {
        let rows: Vec<serde_json::Value> = damaged
            .iter()
            .map(|d| serde_json::json!({ "kind": d.kind, "id": d.id, "reason": d.reason }))
            .collect();
        return output::json(&rows);
    }
    if damaged.is_empty() {
        outln!("store: every document reads back");
        return Ok(());
    }
    for d in &damaged {
        outln!("{verb}: {} {}: {}", d.kind, d.id, d.reason);
    }
    if verb == "damaged" {
        outln!("run `ovm store repair` to quarantine them");
    }
    Ok(())
}
