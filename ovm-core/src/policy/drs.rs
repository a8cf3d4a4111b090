//! Distributed Resource Scheduling: migrations that bring every server under the pool's
//! target and keep doing so without ping-pong.
//!
//! A server's utilisation is its dominant share: the larger of its VMs' CPU demand over
//! its CPUs and their memory over its memory. The pool's utilisation `u` (total demand
//! over total capacity, per resource, the larger of the two) is the fluid lower bound:
//! no assignment of VMs makes the busiest server less busy than `u`. DRS aims every
//! running server at or under the target `T = min(threshold, u + tolerance)`.
//!
//! Each move takes a VM from a server above `T` (the busiest first) to a server that
//! stays at or under `T` (the least busy that passes every placement constraint), so the
//! peak never rises and a VM never moves onto a server DRS would later unload. Among a
//! busy server's VMs the one chosen relieves the most of the excess above `T` net of its
//! migration cost (the memory copied, as a share of the server's memory): a VM that just
//! covers the excess beats a bigger one. The run ends when no busy server has such a
//! move; the decision depends only on the state, so applying the proposal and asking
//! again proposes nothing.

use std::collections::BTreeSet;

use super::ledger::{HaRule, Ledger, MICROS, Need};
use super::placer::OrdF64;
use super::{BalancePolicy, Migration, PoolView};
use crate::id::Timestamp;
use crate::model::{DrsSettings, PreferredMode};

/// DRS tuning beyond the pool's `DrsSettings`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Drs {
    /// How far above the pool's utilisation (the fluid bound) a server may run before it
    /// counts as imbalanced, as a fraction (0.03 is 3 percentage points).
    pub tolerance: f64,
    /// Least a move must lower its source server's excess, as a fraction.
    pub min_gain: f64,
    /// Weight of migration cost (memory copied over the source's memory) against gain.
    pub cost_weight: f64,
    /// How many of a busy server's best VMs are tried before it is left as is.
    pub candidates: usize,
}

impl Default for Drs {
    fn default() -> Self {
        Drs {
            tolerance: 0.03,
            min_gain: 0.005,
            cost_weight: 0.1,
            candidates: 16,
        }
    }
}

/// The DRS target for a pool with utilisation `pool`.
pub(crate) fn threshold(s: &DrsSettings) -> f64 {
    let t = s.threshold_pct / 100.0;
    if t.is_nan() {
        DrsSettings::default().threshold_pct / 100.0
    } else {
        t.max(0.0)
    }
}

/// Servers ordered by utilisation, lowest first, kept current as VMs move.
struct Loads {
    load: Vec<f64>,
    order: BTreeSet<(OrdF64, usize)>,
}

impl Loads {
    fn new(ledger: &Ledger<'_>) -> Self {
        let load: Vec<f64> = ledger.hosts.iter().map(|h| h.load()).collect();
        let order = ledger
            .hosts
            .iter()
            .enumerate()
            .filter(|(_, h)| h.accepting())
            .map(|(i, _)| (OrdF64(load[i]), i))
            .collect();
        Loads { load, order }
    }

    fn update(&mut self, ledger: &Ledger<'_>, h: usize) {
        if self.order.remove(&(OrdF64(self.load[h]), h)) {
            self.load[h] = ledger.hosts[h].load();
            self.order.insert((OrdF64(self.load[h]), h));
        }
    }
}

/// What one run decides by.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// Servers above this are busy; moves must leave their target at or under it.
    target: f64,
    now: Timestamp,
    hold_ms: u64,
    /// The most CPUs and the most memory of any running server.
    biggest: (u32, u64),
}

/// A chosen move.
struct Move {
    guest: usize,
    to: usize,
}

impl Drs {
    /// The most relieving admissible move off busy server `h`, if any.
    fn best_move(&self, ledger: &Ledger<'_>, loads: &Loads, h: usize, run: Run) -> Option<Move> {
        let Run {
            target,
            now,
            hold_ms,
            biggest,
        } = run;
        let host = &ledger.hosts[h];
        let excess = loads.load[h] - target;
        let mut cands: Vec<(f64, u64, usize)> = host
            .guests
            .iter()
            .filter(|g| ledger.movable(**g, now, hold_ms))
            .filter_map(|&g| {
                let guest = &ledger.guests[g];
                let relief = loads.load[h] - host.load_minus(guest.demand, guest.memory_mib);
                let useful = relief.min(excess);
                if useful < self.min_gain {
                    return None;
                }
                let cost = guest.memory_mib as f64 / host.memory_mib.max(1) as f64;
                Some((useful - self.cost_weight * cost, guest.memory_mib, g))
            })
            .collect();
        cands.sort_by(|a, b| {
            b.0.total_cmp(&a.0)
                .then(a.1.cmp(&b.1))
                .then_with(|| ledger.guests[a.2].id.cmp(&ledger.guests[b.2].id))
        });
        for &(_, _, g) in cands.iter().take(self.candidates) {
            let guest = &ledger.guests[g];
            let Some(vm) = ledger.vm_view(g) else {
                continue;
            };
            let r = ledger.resolve(Need::of_vm(vm));
            // No server below `target - floor` can take the VM and stay under `target`.
            let floor = (guest.demand as f64 / (f64::from(biggest.0.max(1)) * MICROS))
                .min(guest.memory_mib as f64 / biggest.1.max(1) as f64);
            let fits = |t: usize| {
                t != h
                    && ledger.hosts[t].load_plus(guest.demand, guest.memory_mib) <= target
                    && ledger.check(&r, t, Some(h), HaRule::NoWorse).is_ok()
            };
            let to = if vm.mode == PreferredMode::Manual {
                let mut pref: Vec<usize> = vm
                    .preferred
                    .iter()
                    .filter_map(|id| ledger.host_index(*id))
                    .filter(|t| ledger.hosts[*t].accepting())
                    .collect();
                pref.sort_by(|a, b| {
                    OrdF64(loads.load[*a])
                        .cmp(&OrdF64(loads.load[*b]))
                        .then(a.cmp(b))
                });
                pref.into_iter().find(|t| fits(*t))
            } else {
                loads
                    .order
                    .iter()
                    .take_while(|(l, _)| l.0 <= target - floor + 1e-12)
                    .map(|(_, t)| *t)
                    .find(|t| fits(*t))
            };
            if let Some(to) = to {
                return Some(Move { guest: g, to });
            }
        }
        None
    }
}

impl BalancePolicy for Drs {
    fn name(&self) -> &str {
        "drs"
    }

    fn propose(&self, view: &PoolView, now: Timestamp) -> Vec<Migration> {
        let s = &view.policies.drs;
        let max_moves = s.max_moves as usize;
        let hold_ms = s.hold_secs.saturating_mul(1000);
        let mut ledger = Ledger::new(view);
        let pool = ledger.totals().utilisation();
        let tolerance = if self.tolerance.is_nan() {
            0.0
        } else {
            self.tolerance.max(0.0)
        };
        let target = threshold(s).min(pool + tolerance);
        let mut loads = Loads::new(&ledger);
        let biggest = ledger
            .hosts
            .iter()
            .filter(|h| h.accepting())
            .fold((0, 0), |(c, m), h| (c.max(h.cpus), m.max(h.memory_mib)));
        let mut stuck = vec![false; ledger.hosts.len()];
        let mut moved_since_pass = false;
        let mut moves = Vec::new();
        while moves.len() < max_moves {
            let busiest = loads
                .order
                .iter()
                .rev()
                .take_while(|(l, _)| l.0 > target)
                .map(|(_, h)| *h)
                .find(|h| !stuck[*h]);
            let Some(h) = busiest else {
                // Servers left as they were may have a move now that others changed.
                if moved_since_pass {
                    stuck.fill(false);
                    moved_since_pass = false;
                    continue;
                }
                break;
            };
            let run = Run {
                target,
                now,
                hold_ms,
                biggest,
            };
            let Some(m) = self.best_move(&ledger, &loads, h, run) else {
                stuck[h] = true;
                continue;
            };
            let (from_load, to_load) = (loads.load[h], loads.load[m.to]);
            ledger.relocate(m.guest, m.to);
            ledger.guests[m.guest].last_moved = Some(now);
            loads.update(&ledger, h);
            loads.update(&ledger, m.to);
            moved_since_pass = true;
            let guest = &ledger.guests[m.guest];
            moves.push(Migration {
                vm: guest.id,
                from: ledger.hosts[h].id,
                to: ledger.hosts[m.to].id,
                reason: format!(
                    "{} at {} is above the {} target (pool {}, threshold {}): moving {} MiB \
                     and {:.2} CPUs to {} ({} → {}) brings it to {}",
                    ledger.name(h),
                    pct(from_load),
                    pct(target),
                    pct(pool),
                    pct(threshold(s)),
                    guest.memory_mib,
                    guest.demand as f64 / MICROS,
                    ledger.name(m.to),
                    pct(to_load),
                    pct(loads.load[m.to]),
                    pct(loads.load[h]),
                ),
            });
        }
        moves
    }
}

/// A utilisation as a percentage for people.
pub(crate) fn pct(u: f64) -> String {
    format!("{:.1}%", u * 100.0)
}
