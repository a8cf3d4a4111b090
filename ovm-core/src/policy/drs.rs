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
//! peak never rises and a VM never moves onto a server DRS would later unload. Only a
//! server above the threshold, finding no such home, may level with a server that ends
//! clearly below it. Among a busy server's VMs the one chosen relieves the most of the
//! excess above `T` net of its migration cost (the memory copied, as a share of the
//! server's memory): a VM that just covers the excess beats a bigger one. The run ends
//! when a pass over the busy servers moves nothing; every decision depends only on the
//! state, so applying the proposal and asking again proposes nothing. Every move lowers
//! the list of server loads sorted from the top, so runs settle rather than cycle.

use std::collections::BTreeSet;

use super::ledger::{HaRule, Ledger, MICROS, Need};
use super::placer::OrdF64;
use super::{BalancePolicy, Migration, PoolView};
use crate::id::{Timestamp, VmId};
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

/// The pool's DRS threshold as a fraction; not a number means the default.
pub(crate) fn threshold(s: &DrsSettings) -> f64 {
    let t = s.threshold_pct / 100.0;
    if t.is_nan() {
        DrsSettings::default().threshold_pct / 100.0
    } else {
        t.max(0.0)
    }
}

/// Running servers ordered by utilisation, lowest first, kept current as VMs move.
pub(crate) struct Loads {
    pub load: Vec<f64>,
    pub order: BTreeSet<(OrdF64, usize)>,
}

impl Loads {
    pub fn new(ledger: &Ledger<'_>) -> Self {
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

    /// Brings server `h` up to date after its VMs or its state changed.
    pub fn update(&mut self, ledger: &Ledger<'_>, h: usize) {
        self.order.remove(&(OrdF64(self.load[h]), h));
        self.load[h] = ledger.hosts[h].load();
        if ledger.hosts[h].accepting() {
            self.order.insert((OrdF64(self.load[h]), h));
        }
    }
}

/// What one run decides by.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// Servers above this are busy; moves should leave their target at or under it.
    target: f64,
    /// Servers above this may also move VMs to servers that end above `target`, as long
    /// as they end clearly below the source.
    threshold: f64,
    /// The most CPUs and the most memory of any running server.
    biggest: (u32, u64),
    /// The pool's utilisation, for reasons.
    pool: f64,
    now: Timestamp,
}

/// A movable VM on the server being unloaded, with what scoring needs at hand.
#[derive(Debug, Clone, Copy)]
struct Cand {
    guest: usize,
    demand: u64,
    memory_mib: u64,
    id: VmId,
}

/// A chosen move: which candidate, to which server.
struct Move {
    cand: usize,
    to: usize,
}

impl Drs {
    /// The VMs on `h` that may move now.
    fn candidates(&self, ledger: &Ledger<'_>, h: usize, now: Timestamp, hold_ms: u64) -> Vec<Cand> {
        ledger.hosts[h]
            .guests
            .iter()
            .filter(|g| ledger.movable(**g, now, hold_ms))
            .map(|&g| {
                let guest = &ledger.guests[g];
                Cand {
                    guest: g,
                    demand: guest.demand,
                    memory_mib: guest.memory_mib,
                    id: guest.id,
                }
            })
            .collect()
    }

    /// The most relieving admissible move of one of `cands` off busy server `h`.
    fn best_move(
        &self,
        ledger: &Ledger<'_>,
        loads: &Loads,
        h: usize,
        cands: &[Cand],
        run: Run,
    ) -> Option<Move> {
        let host = &ledger.hosts[h];
        let load = loads.load[h];
        let excess = load - run.target;
        let mut ranked: Vec<(f64, usize)> = cands
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let relief = load - host.load_minus(c.demand, c.memory_mib);
                let useful = relief.min(excess);
                (useful >= self.min_gain).then(|| {
                    let cost = c.memory_mib as f64 / host.memory_mib.max(1) as f64;
                    (useful - self.cost_weight * cost, i)
                })
            })
            .collect();
        // Most relief net of cost first; then less memory to copy; then the lower id.
        let better = |a: &(f64, usize), b: &(f64, usize)| {
            let (x, y) = (&cands[a.1], &cands[b.1]);
            a.0.total_cmp(&b.0)
                .then(y.memory_mib.cmp(&x.memory_mib))
                .then(y.id.cmp(&x.id))
        };
        // Candidates are drawn best first, only as far as needed (the first usually has
        // a home), and remembered in that order for the second look.
        let mut order: Vec<usize> = Vec::new();
        let mut find = |ceiling: f64| {
            for k in 0..self.candidates {
                if k == order.len() {
                    let (j, _) = ranked.iter().enumerate().max_by(|a, b| better(a.1, b.1))?;
                    order.push(ranked.swap_remove(j).1);
                }
                let i = order[k];
                if let Some(to) = self.target_for(ledger, loads, h, &cands[i], ceiling, run) {
                    return Some(Move { cand: i, to });
                }
            }
            None
        };
        // Onto servers that stay at or under the target; failing that, a server above
        // the threshold may level with servers clearly less busy than itself.
        find(run.target).or_else(|| {
            if load > run.threshold {
                find(load - self.min_gain)
            } else {
                None
            }
        })
    }

    /// The least busy server that takes `c` from `h` ending at or under `ceiling` and
    /// passes every placement constraint.
    fn target_for(
        &self,
        ledger: &Ledger<'_>,
        loads: &Loads,
        h: usize,
        c: &Cand,
        ceiling: f64,
        run: Run,
    ) -> Option<usize> {
        let vm = ledger.vm_view(c.guest)?;
        let r = ledger.resolve(Need::of_vm(vm));
        let fits = |t: usize| {
            t != h
                && ledger.hosts[t].load_plus(c.demand, c.memory_mib) <= ceiling
                && ledger.check(&r, t, Some(h), HaRule::NoWorse).is_ok()
        };
        if vm.mode == PreferredMode::Manual {
            let mut pref: Vec<usize> = vm
                .preferred
                .iter()
                .filter_map(|id| ledger.host_index(*id))
                .filter(|t| ledger.hosts[*t].accepting())
                .collect();
            pref.sort_by_key(|t| (OrdF64(loads.load[*t]), *t));
            pref.dedup();
            return pref.into_iter().find(|t| fits(*t));
        }
        // A server busier than `ceiling - floor` ends above `ceiling` whatever its shape.
        let floor = (c.demand as f64 / (f64::from(run.biggest.0.max(1)) * MICROS))
            .min(c.memory_mib as f64 / run.biggest.1.max(1) as f64);
        loads
            .order
            .iter()
            .take_while(|(l, _)| l.0 <= ceiling - floor + 1e-12)
            .map(|(_, t)| *t)
            .find(|t| fits(*t))
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
        let run = Run {
            target: threshold(s).min(pool + tolerance),
            threshold: threshold(s),
            biggest: ledger
                .hosts
                .iter()
                .filter(|h| h.accepting())
                .fold((0, 0), |(c, m), h| (c.max(h.cpus), m.max(h.memory_mib))),
            pool,
            now,
        };
        let mut loads = Loads::new(&ledger);
        let mut moves = Vec::new();
        // Passes over the busy servers, busiest first, each unloaded as far as it goes.
        // A pass that moves nothing ends the run: nothing in the state has a move left.
        loop {
            let busy: Vec<usize> = loads
                .order
                .iter()
                .rev()
                .take_while(|(l, _)| l.0 > run.target)
                .map(|(_, h)| *h)
                .collect();
            let mut moved = false;
            for h in busy {
                let mut cands = self.candidates(&ledger, h, now, hold_ms);
                while loads.load[h] > run.target && moves.len() < max_moves {
                    let Some(m) = self.best_move(&ledger, &loads, h, &cands, run) else {
                        break;
                    };
                    let c = cands.swap_remove(m.cand);
                    moves.push(self.apply(&mut ledger, &mut loads, h, c, m.to, run));
                    moved = true;
                }
            }
            if !moved || moves.len() >= max_moves {
                break;
            }
        }
        moves
    }
}

impl Drs {
    /// Moves `c` from `h` to `to` in the working state and says why.
    fn apply(
        &self,
        ledger: &mut Ledger<'_>,
        loads: &mut Loads,
        h: usize,
        c: Cand,
        to: usize,
        run: Run,
    ) -> Migration {
        let (from_load, to_load) = (loads.load[h], loads.load[to]);
        ledger.relocate(c.guest, to);
        ledger.guests[c.guest].last_moved = Some(run.now);
        loads.update(ledger, h);
        loads.update(ledger, to);
        Migration {
            vm: c.id,
            from: ledger.hosts[h].id,
            to: ledger.hosts[to].id,
            reason: format!(
                "{} at {} is above the {} target (pool {}, threshold {}): moving {} MiB and \
                 {}.{:02} CPUs to {} ({} → {}) brings it to {}",
                ledger.name(h),
                pct(from_load),
                pct(run.target),
                pct(run.pool),
                pct(run.threshold),
                c.memory_mib,
                (c.demand + 5_000) / 1_000_000,
                (c.demand + 5_000) / 10_000 % 100,
                ledger.name(to),
                pct(to_load),
                pct(loads.load[to]),
                pct(loads.load[h]),
            ),
        }
    }
}

/// A utilisation shown as a percentage.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pct(pub f64);

impl std::fmt::Display for Pct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tenths of a percent in integers: float formatting is most of a reason's cost.
        let tenths = (self.0 * 1000.0).round();
        if !tenths.is_finite() || tenths.abs() >= 1e15 {
            return write!(f, "{:.1}%", self.0 * 100.0);
        }
        let t = tenths as i64;
        let sign = if t < 0 { "-" } else { "" };
        write!(f, "{sign}{}.{}%", t.abs() / 10, t.abs() % 10)
    }
}

/// A utilisation as a percentage for people.
pub(crate) fn pct(u: f64) -> Pct {
    Pct(u)
}
