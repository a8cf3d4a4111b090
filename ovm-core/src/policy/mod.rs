//! Placement, balancing (DRS) and power (DPM) policies: pure functions of a `PoolView`.
//!
//! No I/O, no clock, no randomness: time comes in as an argument, so every policy is
//! tested with proptest and benchmarked alone.
//!
//! Utilisation, as every policy here means it: a server's is its dominant share, the
//! larger of its VMs' CPU demand over its CPUs and their memory over its memory; the
//! pool's is the same over running servers' totals. Placement scores allocation (vCPUs
//! and memory reserved) instead, since a new VM's demand is not yet known. See
//! docs/scheduling.md.

mod best_fit;
mod dpm;
mod drs;
mod ha;
mod ledger;
mod placer;
mod view;

#[cfg(test)]
mod tests;

pub use best_fit::BestFit;
pub use dpm::Dpm;
pub use drs::Drs;
pub use placer::{PREFERRED_BONUS, Placer};
pub use view::{PlacementRequest, PoolView, ServerView, VmView};

/// The placement policy a pool uses unless told otherwise: [`BestFit`].
pub fn default_placement() -> Box<dyn PlacementPolicy> {
    Box::new(BestFit)
}

/// The balancing policy a pool uses unless told otherwise: [`Drs`] with default tuning.
pub fn default_balance() -> Box<dyn BalancePolicy> {
    Box::new(Drs::default())
}

/// The power policy a pool uses unless told otherwise: [`Dpm`].
pub fn default_power() -> Box<dyn PowerPolicy> {
    Box::new(Dpm)
}

/// The utilisation of `view`'s pool, 0–1 (more when over-committed): the larger of total
/// CPU demand over total CPUs and total memory over total memory, over running servers.
/// No placement of the VMs makes the busiest server less busy than this.
pub fn pool_utilisation(view: &PoolView) -> f64 {
    ledger::Ledger::new(view).totals().utilisation()
}

/// Each running server's utilisation, 0–1: the larger of its VMs' CPU demand over its
/// CPUs and their memory over its memory.
pub fn server_utilisation(view: &PoolView) -> Vec<(ServerId, f64)> {
    let ledger = ledger::Ledger::new(view);
    ledger
        .hosts
        .iter()
        .filter(|h| h.accepting())
        .map(|h| (h.id, h.load()))
        .collect()
}

use serde::{Deserialize, Serialize};

use crate::Result;
use crate::id::{ServerId, Timestamp, VmId};

/// Why a server was not chosen, or how it scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum Verdict {
    /// Fails a hard constraint.
    Rejected {
        /// Which constraint, said for people.
        reason: String,
    },
    /// Passes every constraint; higher is better.
    Scored {
        /// The score.
        score: f64,
    },
}

/// One server's verdict in an explanation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerVerdict {
    /// The server.
    pub server: ServerId,
    /// Its name.
    pub name: String,
    /// The verdict.
    pub verdict: Verdict,
}

/// Why a placement came out as it did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// The server `place` would choose.
    pub chosen: Option<ServerId>,
    /// Every server's verdict, best first, rejected last.
    pub servers: Vec<ServerVerdict>,
}

/// Chooses a server for a VM.
pub trait PlacementPolicy: Send + Sync {
    /// Policy name.
    fn name(&self) -> &str;

    /// The best server for `request`, or `Error::Capacity` saying why none fits.
    fn place(&self, view: &PoolView, request: &PlacementRequest) -> Result<ServerId>;

    /// Why each server was rejected or how it scored; `chosen` agrees with `place`.
    fn explain(&self, view: &PoolView, request: &PlacementRequest) -> Explanation;

    /// Places several VMs at once, each placement counting against the next, so a burst
    /// spreads as capacity says rather than piling onto one server.
    fn place_many(&self, view: &PoolView, requests: &[PlacementRequest]) -> Vec<Result<ServerId>> {
        let mut view = view.clone();
        requests
            .iter()
            .map(|r| {
                let chosen = self.place(&view, r)?;
                view.assume_placed(r, chosen);
                Ok(chosen)
            })
            .collect()
    }
}

/// A proposed live migration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Migration {
    /// The VM.
    pub vm: VmId,
    /// From this server.
    pub from: ServerId,
    /// To this server.
    pub to: ServerId,
    /// Why, for people.
    pub reason: String,
}

/// Proposes migrations that rebalance a pool (DRS).
pub trait BalancePolicy: Send + Sync {
    /// Policy name.
    fn name(&self) -> &str;

    /// Migrations to make now. Applying them and asking again proposes nothing.
    fn propose(&self, view: &PoolView, now: Timestamp) -> Vec<Migration>;
}

/// A proposed power action (DPM).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum PowerAction {
    /// Move these VMs away, then power the server off.
    PowerOff {
        /// The server.
        server: ServerId,
        /// Its VMs' new homes.
        evacuate: Vec<Migration>,
        /// Why, for people.
        reason: String,
    },
    /// Power the server on.
    PowerOn {
        /// The server.
        server: ServerId,
        /// Why, for people.
        reason: String,
    },
}

/// Proposes powering servers on and off (DPM).
pub trait PowerPolicy: Send + Sync {
    /// Policy name.
    fn name(&self) -> &str;

    /// Power actions to take now.
    fn propose(&self, view: &PoolView, now: Timestamp) -> Vec<PowerAction>;
}
