//! Dynamic Power Management: keep the pool's utilisation inside a band by powering
//! servers off when it runs below and on when it runs above.
//!
//! Utilisation is the pool's dominant share over running servers (see `drs`). Below the
//! band's low edge, DPM plans to power off the least loaded servers whose VMs may all
//! move, while the pool is below the band and stays at or under its high edge without
//! them, keeping at least `min_servers` (never fewer than one) running. It then moves
//! each planned server's VMs, biggest first, to the least busy servers that stay on,
//! each passing every placement constraint and staying under the high edge (and the DRS
//! threshold), and powers the server off if HA admission control still holds; a server
//! that cannot be emptied stays on. Above the high edge, or when HA admission control is
//! short, DPM powers servers on, the biggest first, until neither holds. A run does one
//! or the other, never both, and a power-off never takes the pool above the high edge,
//! so the two cannot chase each other.

use super::drs::{Loads, pct, threshold};
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
    let mut candidates: Vec<usize> = (0..ledger.hosts.len())
        .filter(|h| ledger.hosts[*h].accepting())
        .collect();
    candidates.sort_by_key(|h| (ledger.hosts[*h].mem_used, ledger.hosts[*h].guests.len(), *h));
    let running = candidates.len();
    let mut totals = ledger.totals();
    let mut loads = Loads::new(ledger);
    let mut actions = Vec::new();
    // Plan: the least loaded servers whose VMs may all move, while the pool is below the
    // band and would stay under its top without them. Planned servers take no VMs, so
    // every VM moves once, onto a server that stays on.
    let mut plan = Vec::new();
    let mut planned = totals;
    for &x in &candidates {
        if planned.utilisation() >= low || running - plan.len() <= min_running {
            break;
        }
        let without = planned.with_host(&ledger.hosts[x], false);
        let movable = ledger.hosts[x]
            .guests
            .iter()
            .all(|g| ledger.movable(*g, now, hold_ms));
        if without.utilisation() <= high && movable {
            plan.push(x);
            planned = without;
            loads.order.remove(&(OrdF64(loads.load[x]), x));
        }
    }
    // Carry it out; a server whose VMs find no home, or whose loss would break HA
    // admission control, stays on and may take VMs from the rest.
    for x in plan {
        let util = totals.utilisation();
        let without = totals.with_host(&ledger.hosts[x], false);
        let Some(evacuate) = evacuate(ledger, &mut loads, x, ceiling, now) else {
            loads.update(ledger, x);
            continue;
        };
        totals = without;
        actions.push(PowerAction::PowerOff {
            server: ledger.hosts[x].id,
            reason: format!(
                "pool at {} is below the {} band edge: moving {} VM(s) off {} and powering \
                 it off brings it to {}",
                pct(util),
                pct(low),
                evacuate.len(),
                ledger.name(x),
                pct(totals.utilisation())
            ),
            evacuate,
        });
    }
    actions
}

/// Moves every VM off `x` and powers it off in the ledger, or changes nothing and returns
/// `None` when some VM has no home or HA admission control would break. Each VM goes to
/// the least busy server in `loads` that takes it under `ceiling`, biggest VM first.
fn evacuate(
    ledger: &mut Ledger<'_>,
    loads: &mut Loads,
    x: usize,
    ceiling: f64,
    now: Timestamp,
) -> Option<Vec<Migration>> {
    let mut guests = ledger.hosts[x].guests.clone();
    guests.sort_by(|a, b| {
        let (p, q) = (&ledger.guests[*a], &ledger.guests[*b]);
        q.memory_mib.cmp(&p.memory_mib).then(p.id.cmp(&q.id))
    });
    let mut moved: Vec<(usize, usize)> = Vec::new();
    let mut homed = true;
    for &g in &guests {
        let home = ledger.vm_view(g).and_then(|vm| {
            let r = ledger.resolve(Need::of_vm(vm));
            let guest = &ledger.guests[g];
            loads
                .order
                .iter()
                .take_while(|(l, _)| l.0 <= ceiling)
                .map(|(_, t)| *t)
                .find(|t| {
                    *t != x
                        && ledger.hosts[*t].load_plus(guest.demand, guest.memory_mib) <= ceiling
                        && ledger.check(&r, *t, Some(x), HaRule::Skip).is_ok()
                })
        });
        let Some(t) = home else {
            homed = false;
            break;
        };
        ledger.relocate(g, t);
        loads.update(ledger, t);
        moved.push((g, t));
    }
    if homed {
        ledger.set_state(x, ServerState::PoweredOff);
        if !ledger.ha.has_ha() || ledger.ha.slack().iter().all(|s| *s >= 0) {
            let reason = format!("evacuating {} to power it off", ledger.name(x));
            return Some(
                moved
                    .iter()
                    .map(|&(g, t)| {
                        ledger.guests[g].last_moved = Some(now);
                        Migration {
                            vm: ledger.guests[g].id,
                            from: ledger.hosts[x].id,
                            to: ledger.hosts[t].id,
                            reason: reason.clone(),
                        }
                    })
                    .collect(),
            );
        }
        ledger.set_state(x, ServerState::Running);
    }
    for &(g, t) in moved.iter().rev() {
        ledger.relocate(g, x);
        loads.update(ledger, t);
    }
    None
}
