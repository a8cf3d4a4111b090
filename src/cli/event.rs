//! `ovm event ...`

use std::time::{Duration, SystemTime};

use clap::Subcommand;
use ovm::Timestamp;
use ovm::model::EventQuery;

use super::output::{self, Format};
use super::{Ctx, user_error};

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// List events, oldest first.
    List {
        /// Only events about this object (a VM, server, pool name or id).
        #[arg(long)]
        object: Option<String>,
        /// Only events of the last DURATION (e.g. `10m`, `2h`).
        #[arg(long)]
        since: Option<String>,
        /// Most events (the newest).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

/// Resolves a name to an id where it names a VM, server or pool; otherwise keeps it.
fn object_id(ctx: &Ctx, key: &str) -> String {
    let m = &ctx.mgr;
    m.find_vm(key)
        .map(|v| v.id.to_string())
        .or_else(|_| m.find_server(key).map(|s| s.id.to_string()))
        .or_else(|_| m.find_pool(key).map(|p| p.id.to_string()))
        .unwrap_or_else(|_| key.to_string())
}

pub async fn run(cmd: Cmd, ctx: &Ctx) -> anyhow::Result<()> {
    let Cmd::List {
        object,
        since,
        limit,
    } = cmd;
    let since = match since {
        Some(s) => {
            let d: Duration = humantime::parse_duration(&s)
                .map_err(|e| user_error(format!("--since {s:?}: {e}")))?;
            let t = SystemTime::now() - d;
            let ms = t
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64;
            Some(Timestamp(ms))
        }
        None => None,
    };
    let q = EventQuery {
        object_id: object.map(|o| object_id(ctx, &o)),
        since,
        until: None,
        limit: Some(limit),
    };
    let events = ctx.mgr.events(&q).await?;
    if ctx.format == Format::Json {
        return output::json(&events);
    }
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                e.time.to_string(),
                e.initiator.clone(),
                e.action.clone(),
                format!("{:?}", e.outcome).to_lowercase(),
                format!("{} {}", e.object_kind, output::short(&e.object_id)),
                e.detail.clone(),
            ]
        })
        .collect();
    output::table(
        &["TIME", "BY", "ACTION", "OUTCOME", "OBJECT", "DETAIL"],
        &rows,
    );
    Ok(())
}
