//! HA admission control: keep enough free capacity to restart the HA VMs of any `n`
//! failed servers.
//!
//! For a failure set `F` the survivors must hold the HA VMs of `F`:
//! `Σ_{s∉F} free(s) ≥ Σ_{s∈F} ha(s)`. Adding `Σ_{s∈F} free(s)` to both sides, this is
//! `Σ_all free ≥ Σ_{s∈F} (free(s) + ha(s))`, and it holds for every `F` of size `n` exactly
//! when it holds for the `n` servers with the largest `key(s) = free(s) + ha(s)` — the
//! capacity a server offers minus what its non-HA VMs use. So the check needs only the
//! pool's total free capacity and the `n` largest keys, kept in an ordered set: O(n log s)
//! per question instead of a pass over every server. Memory and vCPU slots are checked
//! independently, each against its own worst failure set.

use std::collections::BTreeSet;

/// Memory (MiB) and vCPU slots, the two resources a restart needs.
pub(crate) const DIMS: usize = 2;

/// One server's contribution: free capacity and key (`free + HA use`) per resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct HaPoint {
    pub free: [i64; DIMS],
    pub key: [i64; DIMS],
}

impl HaPoint {
    /// The point of a server with capacity `cap`, `used` in total of which `ha` by HA VMs.
    /// Free capacity below zero (an over-committed snapshot) counts as none.
    pub fn new(cap: [u64; DIMS], used: [u64; DIMS], ha: [u64; DIMS]) -> Self {
        let mut p = HaPoint::default();
        for d in 0..DIMS {
            let free = to_i64(cap[d]).saturating_sub(to_i64(used[d])).max(0);
            p.free[d] = free;
            p.key[d] = free.saturating_add(to_i64(ha[d]));
        }
        p
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The admission ledger of a pool's accepting servers.
///
/// The ordered key sets cost a few tree updates per change. A pool without HA VMs needs
/// no answer from them (admission cannot fail there), so they are built only once the
/// first HA VM arrives; until then the rare question that needs them (placing the first
/// HA VM) is answered by a pass over the servers.
#[derive(Debug, Clone)]
pub(crate) struct HaReserve {
    failures: usize,
    points: Vec<Option<HaPoint>>,
    total_free: [i64; DIMS],
    /// Every server's key, per resource, while `indexed`.
    keys: [BTreeSet<(i64, usize)>; DIMS],
    indexed: bool,
    /// `slack_with(&[])`, kept current by `set` while `indexed`.
    current: Slack,
    /// Resources HA VMs hold on accepting servers, all told.
    ha_total: [i64; DIMS],
}

/// How much spare capacity remains after restarting the worst failure set's HA VMs, per
/// resource; negative means admission control is broken by that much.
pub(crate) type Slack = [i64; DIMS];

impl HaReserve {
    /// An empty ledger for `hosts` servers surviving `failures` failures.
    pub fn new(hosts: usize, failures: u32) -> Self {
        HaReserve {
            failures: failures as usize,
            points: vec![None; hosts],
            total_free: [0; DIMS],
            keys: [BTreeSet::new(), BTreeSet::new()],
            indexed: false,
            current: [0; DIMS],
            ha_total: [0; DIMS],
        }
    }

    /// How many server failures the ledger guards against.
    pub fn failures(&self) -> usize {
        self.failures
    }

    /// Sets (or with `None` removes) a server's point.
    pub fn set(&mut self, host: usize, point: Option<HaPoint>) {
        let old = self.points[host];
        for d in 0..DIMS {
            self.total_free[d] += point.map_or(0, |p| p.free[d]) - old.map_or(0, |p| p.free[d]);
            let ha = |p: Option<HaPoint>| p.map_or(0, |p| p.key[d] - p.free[d]);
            self.ha_total[d] += ha(point) - ha(old);
            let (old_key, new_key) = (old.map(|p| p.key[d]), point.map(|p| p.key[d]));
            // An HA VM placed or moved leaves its server's key as it was.
            if self.indexed && old_key != new_key {
                if let Some(k) = old_key {
                    self.keys[d].remove(&(k, host));
                }
                if let Some(k) = new_key {
                    self.keys[d].insert((k, host));
                }
            }
        }
        self.points[host] = point;
        if !self.indexed && self.failures > 0 && self.has_ha() {
            for (d, keys) in self.keys.iter_mut().enumerate() {
                keys.extend(
                    self.points
                        .iter()
                        .enumerate()
                        .filter_map(|(h, p)| p.map(|p| (p.key[d], h))),
                );
            }
            self.indexed = true;
        }
        if self.indexed {
            self.current = self.slack_with(&[]);
        }
    }

    /// Whether any HA VM runs on an accepting server. Without one, and without adding
    /// one, admission cannot fail: every key is then the free capacity itself, and the
    /// total of the free capacity is at least the sum of its `n` largest parts.
    pub fn has_ha(&self) -> bool {
        self.ha_total.iter().any(|t| *t > 0)
    }

    /// Spare capacity now.
    pub fn slack(&self) -> Slack {
        if self.indexed {
            self.current
        } else {
            self.slack_with(&[])
        }
    }

    /// Spare capacity if the servers in `changes` had the given points (`None`: removed).
    /// Each server appears at most once in `changes`.
    pub fn slack_with(&self, changes: &[(usize, Option<HaPoint>)]) -> Slack {
        if self.failures == 0 {
            return [i64::MAX; DIMS];
        }
        let mut slack = [0; DIMS];
        // Small failure budgets (the usual 1 or 2) are worked out on the stack.
        let len = if self.indexed {
            self.failures + 2 * changes.len()
        } else {
            self.points.len() + changes.len()
        };
        let mut stack = [0i64; 16];
        let mut heap = Vec::new();
        let buf: &mut [i64] = if len <= stack.len() {
            &mut stack[..]
        } else {
            heap.resize(len, 0);
            &mut heap[..]
        };
        for (d, out) in slack.iter_mut().enumerate() {
            let mut total = self.total_free[d];
            for (host, new) in changes {
                total -= self.points[*host].map_or(0, |p| p.free[d]);
                total += new.map_or(0, |p| p.free[d]);
            }
            // The n largest keys of the changed multiset lie among the n + c largest of
            // the old one (at most c of those changed) and the changed servers' new keys;
            // without the index, among all of them.
            let mut n = 0;
            let unchanged = |h: &usize| !changes.iter().any(|(c, _)| c == h);
            if self.indexed {
                let top = self.keys[d]
                    .iter()
                    .rev()
                    .take(self.failures + changes.len());
                for (k, _) in top.filter(|(_, h)| unchanged(h)) {
                    buf[n] = *k;
                    n += 1;
                }
            } else {
                for (h, p) in self.points.iter().enumerate() {
                    if let Some(p) = p.filter(|_| unchanged(&h)) {
                        buf[n] = p.key[d];
                        n += 1;
                    }
                }
            }
            for p in changes.iter().filter_map(|(_, p)| *p) {
                buf[n] = p.key[d];
                n += 1;
            }
            let top = &mut buf[..n];
            let keep = self.failures.min(n);
            if keep > 0 && keep < n {
                top.select_nth_unstable_by(keep - 1, |a, b| b.cmp(a));
            }
            let worst: i64 = top[..keep].iter().sum();
            *out = total - worst;
        }
        slack
    }

    /// The servers whose key is among the `n` largest in some resource: the only ones
    /// where a placement can pass admission when it fails everywhere else.
    pub fn top_hosts(&self) -> Vec<usize> {
        let mut hosts: Vec<usize> = if self.indexed {
            self.keys
                .iter()
                .flat_map(|k| k.iter().rev().take(self.failures).map(|(_, h)| *h))
                .collect()
        } else {
            (0..DIMS)
                .flat_map(|d| {
                    let mut keys: Vec<(i64, usize)> = self
                        .points
                        .iter()
                        .enumerate()
                        .filter_map(|(h, p)| p.map(|p| (p.key[d], h)))
                        .collect();
                    keys.sort_unstable_by(|a, b| b.cmp(a));
                    keys.into_iter().take(self.failures).map(|(_, h)| h)
                })
                .collect()
        };
        hosts.sort_unstable();
        hosts.dedup();
        hosts
    }
}

/// Whether `after` passes when the pool had `before`: strict admission demands no
/// shortfall; the lenient rule (moves of running VMs) accepts any change that does not
/// deepen an existing one.
pub(crate) fn admits(before: Slack, after: Slack, strict: bool) -> bool {
    (0..DIMS).all(|d| {
        let floor = if strict { 0 } else { before[d].min(0) };
        after[d] >= floor
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute_slack(points: &[Option<HaPoint>], n: usize, d: usize) -> i64 {
        let live: Vec<HaPoint> = points.iter().flatten().copied().collect();
        let n = n.min(live.len());
        let mut worst = i64::MIN;
        // Every subset of size n: the survivors' free capacity minus the failed HA use.
        for mask in 0u32..(1 << live.len()) {
            if mask.count_ones() as usize != n {
                continue;
            }
            let mut v = 0;
            for (i, p) in live.iter().enumerate() {
                if mask & (1 << i) == 0 {
                    v += p.free[d];
                } else {
                    v -= p.key[d] - p.free[d];
                }
            }
            worst = worst.max(-v);
        }
        -worst
    }

    proptest::proptest! {
        #[test]
        fn slack_matches_every_failure_set(
            caps in proptest::collection::vec((0u64..100, 0u64..100, 0u64..100), 1..7),
            n in 1u32..4,
            change in (0usize..7, 0u64..100, 0u64..100, proptest::bool::ANY, 0u64..50),
            no_ha in proptest::bool::ANY,
        ) {
            let mut r = HaReserve::new(caps.len(), n);
            let mut points = Vec::new();
            for (i, (cap, used, ha)) in caps.iter().enumerate() {
                // Pools without HA VMs take the unindexed path.
                let ha = if no_ha { 0 } else { (*ha).min(*used) };
                let p = HaPoint::new([*cap, *cap], [*used, *used], [ha, ha]);
                r.set(i, Some(p));
                points.push(Some(p));
            }
            proptest::prop_assert_eq!(r.slack()[0], brute_slack(&points, n as usize, 0));
            let host = change.0 % caps.len();
            let new = (!change.3).then(|| {
                let ha = change.4.min(change.2);
                HaPoint::new([change.1, change.1], [change.2, change.2], [ha, ha])
            });
            let got = r.slack_with(&[(host, new)]);
            points[host] = new;
            proptest::prop_assert_eq!(got[1], brute_slack(&points, n as usize, 1));
            // Making the change for real (which may build the index) gives the same.
            r.set(host, new);
            proptest::prop_assert_eq!(r.slack()[0], brute_slack(&points, n as usize, 0));
            let mut top = r.top_hosts();
            top.sort_unstable();
            for h in top {
                proptest::prop_assert!(points[h].is_some());
            }
        }
    }
}
