//! Dynamic Power Management: keep the pool's utilisation inside a band by powering
//! servers off when it runs below and on when it runs above.
//!
//! Utilisation is the pool's dominant share over running servers (see `drs`). Below the
//! band's low edge, DPM evacuates and powers off servers, the least loaded first, while
//! every VM on it finds a home under the band's high edge (and the DRS threshold) that
//! passes every placement constraint, the pool stays at or under the high edge without
//! the server, HA admission control still holds, and at least `min_servers` (never
//! fewer than one) keep running. Above the high edge, or when HA admission control is
//! short, it powers servers on, the biggest first, until neither holds. A run does one
//! or the other, never both, and a power-off never takes the pool above the high edge,
//! so the two cannot chase each other.

use super::drs::{pct, threshold};
use super::ledger::{HaRule, Ledger, Need};
use super::placer::OrdF64;
use super::{Migration, PoolView, PowerAction, PowerPolicy};
use crate::id::Timestamp;
use crate::model::{DpmSettings, ServerState};

/// DPM as the pool's `DpmSettings` say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dpm;

/// The band as fractions, made safe: edges that are not numbers take the defaults, and a
/// high edge below the low one is raised to it.
fn band(s: &DpmSettings) -> (f64, f64) {
    let d = DpmSettings::default();
    let pick = |v: f64, def: f64| if v.is_nan() { def } else { v.max(0.0) } / 100.0;
    let low = pick(s.low_pct, d.low_pct);
    let high = pick(s.high_pct, d.high_pct).max(low);
    (low, high)
}

impl PowerPolicy for Dpm {
    fn name(&self) -> &str {
        "dpm"
    }

    fn propose(&self, view: &PoolView, now: Timestamp) -> Vec<PowerAction> {
        let (low, high) = band(&view.policies.dpm);
        let mut ledger = Ledger::new(view);
        let before = ledger.totals().utilisation();
        let ha_short = ledger.ha.slack().iter().any(|s| *s < 0);
        if before > high || ha_short {
            power_on(&mut ledger, high)
        } else if before < low {
            power_off(&mut ledger, view, low, high, now)
        } else {
            Vec::new()
        }
    }
}

fn power_on(ledger: &mut Ledger<'_>, high: f64) -> Vec<PowerAction> {
    let mut off: Vec<usize> = (0..ledger.hosts.len())
        .filter(|h| ledger.hosts[*h].state == ServerState::PoweredOff)
        .collect();
    off.sort_by(|a, b| {
        let (x, y) = (&ledger.hosts[*a], &ledger.hosts[*b]);
        (y.memory_mib, y.cpus)
            .cmp(&(x.memory_mib, x.cpus))
            .then(a.cmp(b))
    });
    let mut actions = Vec::new();
    for h in off {
        let util = ledger.totals().utilisation();
        let slack = ledger.ha.slack();
        let reason = if util > high {
            format!("pool at {} is above the {} band edge", pct(util), pct(high))
        } else if let Some(short) = slack.iter().map(|s| -s).find(|s| *s > 0) {
            let unit = if slack[0] < 0 { "MiB" } else { "vCPUs" };
            format!("HA admission control is {short} {unit} short")
        } else {
            break;
        };
        ledger.set_state(h, ServerState::Running);
        actions.push(PowerAction::PowerOn {
            server: ledger.hosts[h].id,
            reason: format!(
                "{reason}: powering {} on brings it to {}",
                ledger.name(h),
                pct(ledger.totals().utilisation())
            ),
        });
    }
    actions
}

fn power_off(
    ledger: &mut Ledger<'_>,
    view: &PoolView,
    low: f64,
    high: f64,
    now: Timestamp,
) -> Vec<PowerAction> {
    let min_running = view.policies.dpm.min_servers.max(1) as usize;
    let hold_ms = view.policies.drs.hold_secs.saturating_mul(1000);
    // Evacuated VMs must not make a server busy enough for DRS to move them again.
    let ceiling = high.min(threshold(&view.policies.drs));
    let mut order: Vec<usize> = (0..ledger.hosts.len())
        .filter(|h| ledger.hosts[*h].accepting())
        .collect();
    order.sort_by_key(|h| (ledger.hosts[*h].mem_used, ledger.hosts[*h].guests.len(), *h));
    let mut received = vec![false; ledger.hosts.len()];
    let mut actions = Vec::new();
    for x in order {
        let totals = ledger.totals();
        let util = totals.utilisation();
        let running = ledger.hosts.iter().filter(|h| h.accepting()).count();
        if util >= low || running <= min_running {
            break;
        }
        let without = totals.with_host(&ledger.hosts[x], false).utilisation();
        if received[x] || without > high {
            continue;
        }
        let Some(evacuate) = evacuate(ledger, x, ceiling, now, hold_ms) else {
            continue;
        };
        for m in &evacuate {
            if let Some(t) = ledger.host_index(m.to) {
                received[t] = true;
            }
        }
        actions.push(PowerAction::PowerOff {
            server: ledger.hosts[x].id,
            reason: format!(
                "pool at {} is below the {} band edge: moving {} VM(s) off {} and powering \
                 it off brings it to {}",
                pct(util),
                pct(low),
                evacuate.len(),
                ledger.name(x),
                pct(without)
            ),
            evacuate,
        });
    }
    actions
}

/// Moves every VM off `x` and powers it off in the ledger, or changes nothing and returns
/// `None` when some VM has no home or HA admission control would break.
fn evacuate(
    ledger: &mut Ledger<'_>,
    x: usize,
    ceiling: f64,
    now: Timestamp,
    hold_ms: u64,
) -> Option<Vec<Migration>> {
    let mut guests = ledger.hosts[x].guests.clone();
    if guests.iter().any(|g| !ledger.movable(*g, now, hold_ms)) {
        return None;
    }
    guests.sort_by(|a, b| {
        let (p, q) = (&ledger.guests[*a], &ledger.guests[*b]);
        q.memory_mib.cmp(&p.memory_mib).then(p.id.cmp(&q.id))
    });
    let mut targets: Vec<usize> = (0..ledger.hosts.len())
        .filter(|h| *h != x && ledger.hosts[*h].accepting())
        .collect();
    targets.sort_by_key(|h| (OrdF64(ledger.hosts[*h].load()), *h));
    let mut moved: Vec<(usize, usize)> = Vec::new();
    let mut ok = true;
    for &g in &guests {
        let Some(vm) = ledger.vm_view(g) else {
            ok = false;
            break;
        };
        let r = ledger.resolve(Need::of_vm(vm));
        let guest = &ledger.guests[g];
        let home = targets.iter().copied().find(|t| {
            ledger.hosts[*t].load_plus(guest.demand, guest.memory_mib) <= ceiling
                && ledger.check(&r, *t, Some(x), HaRule::Skip).is_ok()
        });
        let Some(t) = home else {
            ok = false;
            break;
        };
        ledger.relocate(g, t);
        moved.push((g, t));
    }
    if ok {
        ledger.set_state(x, ServerState::PoweredOff);
        if ledger.ha.slack().iter().all(|s| *s >= 0) {
            return Some(
                moved
                    .iter()
                    .map(|&(g, t)| {
                        ledger.guests[g].last_moved = Some(now);
                        Migration {
                            vm: ledger.guests[g].id,
                            from: ledger.hosts[x].id,
                            to: ledger.hosts[t].id,
                            reason: format!("evacuating {} to power it off", ledger.name(x)),
                        }
                    })
                    .collect(),
            );
        }
        ledger.set_state(x, ServerState::Running);
    }
    for &(g, _) in moved.iter().rev() {
        ledger.relocate(g, x);
    }
    None
}
