//! Weighted best-fit placement over indexes, so a burst of placements does not scan
//! every server for every VM.
//!
//! The score of server `s` for a VM needing `m` MiB and `v` vCPUs is
//! `base(s) − w_mem·m/mem_cap(s) − w_cpu·v/vcpu_cap(s)`, where `base(s)` is the weighted
//! free memory, free vCPU slots and idle network of `s` now. Servers of one shape
//! (CPUs, memory, networks, repositories) share the request-dependent part, so within a
//! shape the best server is the first, in descending `base` order, that passes the hard
//! constraints. The placer keeps one ordered set per shape and looks only at each shape's
//! head; a pool has few shapes. The choice is the one a full scan makes — the same
//! scores, the same tie-break (lowest server id) — which the tests check against
//! [`Placer::choose_by_scan`].

use std::cell::Cell;
use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use super::ledger::{HaRule, Ledger, Need, Rejection, Resolved};
use super::{Explanation, PlacementRequest, PoolView, ServerVerdict, Verdict};
use crate::id::{NetworkId, RepoId, ServerId};
use crate::model::PreferredMode;
use crate::{Error, Result};

/// Added to a preferred server's displayed score in Auto mode. Weights are clamped to
/// 100 each, so no unpreferred score (at most 300) reaches it.
pub const PREFERRED_BONUS: f64 = 1000.0;

/// An `f64` ordered by `total_cmp`, for ordered sets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct OrdF64(pub f64);

impl Eq for OrdF64 {}

impl PartialOrd for OrdF64 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrdF64 {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// What makes servers alike for scoring and reachability: CPUs, memory, networks,
/// repositories.
type ShapeKey<'v> = (u32, u64, &'v BTreeSet<NetworkId>, &'v BTreeSet<RepoId>);

/// Servers of one shape, ordered by base score.
#[derive(Debug, Clone)]
struct Shape<'v> {
    networks: &'v BTreeSet<NetworkId>,
    repositories: &'v BTreeSet<RepoId>,
    /// Best base score first, then lowest id.
    by_score: BTreeSet<(Reverse<OrdF64>, usize)>,
    /// At least the most free memory and free vCPUs of any member: raised as servers
    /// free up, made exact whenever a search looks at every member. A request larger
    /// than this skips the shape at once.
    most_free: Cell<(u64, u64)>,
}

/// Where a server sits in the indexes.
#[derive(Debug, Clone, Copy)]
struct Slot {
    shape: usize,
    base: f64,
    free_mem: u64,
    free_vcpus: u64,
}

/// A candidate that passed every constraint.
#[derive(Debug, Clone, Copy)]
struct Pick {
    host: usize,
    preferred: bool,
    score: f64,
}

impl Pick {
    /// Preferred first, then the higher score, then the lower id (host order is id order).
    fn beats(&self, other: &Pick) -> bool {
        (self.preferred, OrdF64(self.score), Reverse(self.host))
            > (other.preferred, OrdF64(other.score), Reverse(other.host))
    }
}

fn better(a: Option<Pick>, b: Pick) -> Option<Pick> {
    match a {
        Some(a) if !b.beats(&a) => Some(a),
        _ => Some(b),
    }
}

/// A prepared placement state for one pool: place many VMs, each counting against the
/// next, at a cost independent of the number of servers in the common case.
#[derive(Debug, Clone)]
pub struct Placer<'v> {
    ledger: Ledger<'v>,
    shapes: Vec<Shape<'v>>,
    slots: Vec<Option<Slot>>,
}

impl<'v> Placer<'v> {
    /// Indexes `view`: O(servers · log servers + VMs).
    pub fn new(view: &'v PoolView) -> Self {
        let ledger = Ledger::new(view);
        let mut shapes: Vec<Shape<'v>> = Vec::new();
        let mut shape_of: HashMap<ShapeKey<'v>, usize> = HashMap::new();
        let mut slots = vec![None; ledger.hosts.len()];
        for (h, host) in ledger.hosts.iter().enumerate() {
            if !host.accepting() {
                continue;
            }
            let server = &view.servers[host.view];
            let key = (
                host.cpus,
                host.memory_mib,
                &server.networks,
                &server.repositories,
            );
            let shape = *shape_of.entry(key).or_insert_with(|| {
                shapes.push(Shape {
                    networks: &server.networks,
                    repositories: &server.repositories,
                    by_score: BTreeSet::new(),
                    most_free: Cell::new((0, 0)),
                });
                shapes.len() - 1
            });
            slots[h] = Some(Slot {
                shape,
                base: 0.0,
                free_mem: 0,
                free_vcpus: 0,
            });
        }
        let mut placer = Placer {
            ledger,
            shapes,
            slots,
        };
        for h in 0..placer.slots.len() {
            placer.index(h);
        }
        placer
    }

    /// Chooses a server for `request` and records the placement, so later requests see
    /// it. A VM already placed is moved (as `PoolView::assume_placed` does).
    pub fn place(&mut self, request: &PlacementRequest) -> Result<ServerId> {
        let lifted = self.lift(request);
        let r = self.ledger.resolve(Need::of_request(request));
        match self.choose_indexed(&r) {
            Some(p) => {
                self.ledger.add_guest(&r.need, p.host);
                self.reindex(p.host);
                Ok(self.ledger.hosts[p.host].id)
            }
            None => {
                let err = self.no_fit(&r);
                self.restore(lifted);
                Err(err)
            }
        }
    }

    /// Records that `request` now runs on `server`, wherever that choice came from (a
    /// scan, an operator); constraints are not checked. A VM already placed is moved.
    pub fn commit(&mut self, request: &PlacementRequest, server: ServerId) -> Result<()> {
        let h = self
            .ledger
            .host_index(server)
            .ok_or_else(|| Error::not_found(ServerId::KIND, server))?;
        self.lift(request);
        let need = Need::of_request(request);
        self.ledger.add_guest(&need, h);
        self.reindex(h);
        Ok(())
    }

    /// Chooses a server for `request` without recording it.
    pub fn choose(&mut self, request: &PlacementRequest) -> Result<ServerId> {
        self.tentatively(request, |p, r| {
            p.choose_indexed(r)
                .map(|pick| p.ledger.hosts[pick.host].id)
                .ok_or_else(|| p.no_fit(r))
        })
    }

    /// Chooses as [`Placer::choose`] does, by judging and scoring every server: the
    /// straightforward filter-then-weigh placer, kept as the reference and benchmark peer.
    pub fn choose_by_scan(&mut self, request: &PlacementRequest) -> Result<ServerId> {
        self.tentatively(request, |p, r| {
            let mut best = None;
            for h in 0..p.ledger.hosts.len() {
                if let Ok(pick) = p.judge(r, h) {
                    best = better(best, pick);
                }
            }
            best.map(|pick| p.ledger.hosts[pick.host].id)
                .ok_or_else(|| p.no_fit(r))
        })
    }

    /// Every server's verdict for `request`, best first; `chosen` is what
    /// [`Placer::choose`] returns.
    pub fn explain(&mut self, request: &PlacementRequest) -> Explanation {
        self.tentatively(request, |p, r| {
            let mut scored: Vec<Pick> = Vec::new();
            let mut rejected: Vec<(usize, Rejection)> = Vec::new();
            for h in 0..p.ledger.hosts.len() {
                match p.judge(r, h) {
                    Ok(pick) => scored.push(pick),
                    Err(why) => rejected.push((h, why)),
                }
            }
            scored.sort_by(|a, b| {
                if a.beats(b) {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            });
            let chosen = scored.first().map(|pick| p.ledger.hosts[pick.host].id);
            let verdict = |h: usize, verdict| ServerVerdict {
                server: p.ledger.hosts[h].id,
                name: p.ledger.name(h).to_owned(),
                verdict,
            };
            let mut servers: Vec<ServerVerdict> = scored
                .iter()
                .map(|pick| {
                    let bonus = if pick.preferred { PREFERRED_BONUS } else { 0.0 };
                    verdict(
                        pick.host,
                        Verdict::Scored {
                            score: pick.score + bonus,
                        },
                    )
                })
                .collect();
            servers.extend(rejected.into_iter().map(|(h, why)| {
                verdict(
                    h,
                    Verdict::Rejected {
                        reason: why.to_string(),
                    },
                )
            }));
            Explanation { chosen, servers }
        })
    }

    /// Runs `f` with the request's VM taken off its server (if placed), then puts it back.
    fn tentatively<T>(
        &mut self,
        request: &PlacementRequest,
        f: impl FnOnce(&Self, &Resolved<'_>) -> T,
    ) -> T {
        let lifted = self.lift(request);
        let r = self.ledger.resolve(Need::of_request(request));
        let out = f(self, &r);
        self.restore(lifted);
        out
    }

    /// Takes the request's VM off its server; returns it and the server.
    fn lift(&mut self, request: &PlacementRequest) -> Option<(usize, usize)> {
        let g = self.ledger.guest_index(request.vm)?;
        let h = self.ledger.detach(g)?;
        self.reindex(h);
        Some((g, h))
    }

    fn restore(&mut self, lifted: Option<(usize, usize)>) {
        if let Some((g, h)) = lifted {
            self.ledger.attach(g, h);
            self.reindex(h);
        }
    }

    /// The base score: weighted free memory, free vCPU slots and idle network, now.
    fn base(&self, h: usize) -> f64 {
        let host = &self.ledger.hosts[h];
        let s = &self.ledger.settings;
        let net = self.ledger.view.servers[host.view].net_util;
        let net = if net.is_nan() {
            0.0
        } else {
            net.clamp(0.0, 1.0)
        };
        s.memory_weight * (1.0 - host.mem_used as f64 / host.mem_cap.max(1) as f64)
            + s.cpu_weight * (1.0 - host.vcpus_used as f64 / host.vcpu_cap.max(1) as f64)
            + s.network_weight * (1.0 - net)
    }

    /// What placing `need` on `h` takes off the base score; equal across a shape.
    fn penalty(&self, need: &Need<'_>, h: usize) -> f64 {
        let host = &self.ledger.hosts[h];
        let s = &self.ledger.settings;
        s.memory_weight * need.memory_mib as f64 / host.mem_cap.max(1) as f64
            + s.cpu_weight * f64::from(need.vcpus) / host.vcpu_cap.max(1) as f64
    }

    /// Judges one server: the first constraint it fails, or its score.
    fn judge(&self, r: &Resolved<'_>, h: usize) -> std::result::Result<Pick, Rejection> {
        self.ledger.check(r, h, None, HaRule::Strict)?;
        Ok(self.pick(r, h))
    }

    /// [`Placer::judge`] for a server known to reach the request's networks and
    /// repositories.
    fn judge_reachable(&self, r: &Resolved<'_>, h: usize) -> std::result::Result<Pick, Rejection> {
        self.ledger.check_reach(r, h, None, HaRule::Strict, false)?;
        Ok(self.pick(r, h))
    }

    fn pick(&self, r: &Resolved<'_>, h: usize) -> Pick {
        let preferred =
            r.need.mode == PreferredMode::Auto && r.need.prefers(self.ledger.hosts[h].id);
        Pick {
            host: h,
            preferred,
            score: self.base(h) - self.penalty(&r.need, h),
        }
    }

    fn best_of(&self, r: &Resolved<'_>, hosts: impl IntoIterator<Item = usize>) -> Option<Pick> {
        hosts
            .into_iter()
            .filter_map(|h| self.judge(r, h).ok())
            .fold(None, better)
    }

    /// The indexed choice; agrees with a scan of every server.
    fn choose_indexed(&self, r: &Resolved<'_>) -> Option<Pick> {
        let need = &r.need;
        let known = |ids: &[ServerId]| -> Vec<usize> {
            let mut hs: Vec<usize> = ids
                .iter()
                .filter_map(|id| self.ledger.host_index(*id))
                .collect();
            hs.sort_unstable();
            hs.dedup();
            hs
        };
        // Small candidate sets first: each holds every server that can pass.
        if need.mode == PreferredMode::Manual {
            return self.best_of(r, known(need.preferred));
        }
        let affinity = self.ledger.affinity_hosts(r, None);
        if !affinity.is_empty() {
            return self.best_of(r, affinity);
        }
        if !self.admissible_off_top(need) {
            return self.best_of(r, self.ledger.ha.top_hosts());
        }
        if !need.preferred.is_empty()
            && let Some(p) = self.best_of(r, known(need.preferred))
        {
            return Some(p);
        }
        let mut best: Option<Pick> = None;
        for shape in &self.shapes {
            if let Some(p) = self.best_in_shape(r, shape) {
                best = better(best, p);
            }
        }
        best
    }

    /// Whether HA admission passes on a server outside the `n` largest: there, adding the
    /// VM lowers free capacity by its size and leaves the worst failure set unchanged.
    fn admissible_off_top(&self, need: &Need<'_>) -> bool {
        if !need.ha && !self.ledger.ha.has_ha() {
            return true;
        }
        let slack = self.ledger.ha.slack();
        let size = [
            i64::try_from(need.memory_mib).unwrap_or(i64::MAX),
            i64::from(need.vcpus),
        ];
        slack
            .iter()
            .zip(size)
            .all(|(s, n)| s.saturating_sub(n) >= 0)
    }

    fn best_in_shape(&self, r: &Resolved<'_>, shape: &Shape<'_>) -> Option<Pick> {
        let need = &r.need;
        if need.networks.iter().any(|n| !shape.networks.contains(n))
            || need
                .repositories
                .iter()
                .any(|rp| !shape.repositories.contains(rp))
        {
            return None;
        }
        let (max_mem, max_vcpus) = shape.most_free.get();
        if max_mem < need.memory_mib || max_vcpus < u64::from(need.vcpus) {
            return None;
        }
        let (_, first) = shape.by_score.first()?;
        let penalty = self.penalty(need, *first);
        let mut found: Option<Pick> = None;
        let mut from = Bound::Unbounded;
        // Among servers of equal base score the first that passes has the lowest id, so
        // the rest of its run is skipped; a lower base can still round to the same score,
        // and those runs are looked at too.
        let mut most_free = (0, 0);
        'runs: loop {
            for (Reverse(OrdF64(base)), h) in shape.by_score.range((from, Bound::Unbounded)) {
                if found.is_some_and(|f| base - penalty < f.score) {
                    break 'runs;
                }
                if let Ok(p) = self.judge_reachable(r, *h) {
                    found = better(found, p);
                    from = Bound::Excluded((Reverse(OrdF64(*base)), usize::MAX));
                    continue 'runs;
                }
                if let Some(slot) = &self.slots[*h] {
                    most_free = (
                        most_free.0.max(slot.free_mem),
                        most_free.1.max(slot.free_vcpus),
                    );
                }
            }
            break;
        }
        if found.is_none() {
            // Every member was looked at: the bound can be made exact.
            shape.most_free.set(most_free);
        }
        found
    }

    /// Puts a server into the indexes with its current usage.
    fn index(&mut self, h: usize) {
        let base = self.base(h);
        let host = &self.ledger.hosts[h];
        let free_mem = host.mem_cap.saturating_sub(host.mem_used);
        let free_vcpus = host.vcpu_cap.saturating_sub(host.vcpus_used);
        let Some(slot) = self.slots[h].as_mut() else {
            return;
        };
        *slot = Slot {
            shape: slot.shape,
            base,
            free_mem,
            free_vcpus,
        };
        let shape = &mut self.shapes[slot.shape];
        shape.by_score.insert((Reverse(OrdF64(base)), h));
        let (m, v) = shape.most_free.get();
        shape.most_free.set((m.max(free_mem), v.max(free_vcpus)));
    }

    /// Updates a server's place in the indexes after its usage changed.
    fn reindex(&mut self, h: usize) {
        let Some(slot) = self.slots[h] else {
            return;
        };
        let shape = &mut self.shapes[slot.shape];
        shape.by_score.remove(&(Reverse(OrdF64(slot.base)), h));
        self.index(h);
    }

    /// A capacity error that counts why servers were turned down.
    fn no_fit(&self, r: &Resolved<'_>) -> Error {
        let need = &r.need;
        if self.ledger.hosts.is_empty() {
            return Error::capacity(format!("no servers in the pool to place vm {}", need.vm));
        }
        let mut reasons: HashMap<String, usize> = HashMap::new();
        for h in 0..self.ledger.hosts.len() {
            if let Err(why) = self.ledger.check(r, h, None, HaRule::Strict) {
                let why = why.to_string();
                let key = why.split(':').next().unwrap_or(&why).to_owned();
                *reasons.entry(key).or_default() += 1;
            }
        }
        let mut reasons: Vec<_> = reasons.into_iter().collect();
        reasons.sort();
        let summary: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} × {r}")).collect();
        Error::capacity(format!(
            "no server fits vm {} ({} vCPUs, {} MiB): {}",
            need.vm,
            need.vcpus,
            need.memory_mib,
            summary.join(", ")
        ))
    }
}
