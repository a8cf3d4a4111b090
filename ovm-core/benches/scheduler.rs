//! Scheduler benchmarks: placement throughput, DRS quality and DRS runtime, each beside a
//! peer measured in the same run. Prints one JSON object per figure.
//!
//!     cargo bench -p ovm-core --bench scheduler
//!
//! Pools are generated from fixed seeds, so every run measures the same work.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ovm_core::id::{NetworkId, RepoId, ServerId, Timestamp, VmId};
use ovm_core::model::PreferredMode;
use ovm_core::policy::{
    BalancePolicy, BestFit, Dpm, Drs, PlacementPolicy, PlacementRequest, Placer, PoolView,
    PowerAction, PowerPolicy, ServerView, VmView, pool_utilisation, server_utilisation,
};
use serde_json::json;

/// SplitMix64: small, fast, good enough to draw workloads from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

fn emit(v: serde_json::Value) {
    println!("{v}");
}

/// Time this thread has spent on a CPU, from the kernel's scheduler statistics: unlike
/// wall-clock time it does not grow while other processes hold the (shared) cores.
/// `None` where `/proc/thread-self/schedstat` is missing.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Wall-clock and on-CPU milliseconds of `f`, and its result.
fn timed<T>(f: impl FnOnce() -> T) -> (f64, Option<f64>, T) {
    let (wall, cpu) = (Instant::now(), cpu_time());
    let out = f();
    let cpu = cpu
        .zip(cpu_time())
        .map(|(a, b)| (b - a).as_secs_f64() * 1e3);
    (wall.elapsed().as_secs_f64() * 1e3, cpu, out)
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

// ------------------------------------------------------------------ place_throughput

const NET_A: u128 = 1;
const NET_B: u128 = 2;

/// 10,000 servers of two shapes, most on both networks, all on the repository.
fn placement_pool(rng: &mut Rng, servers: usize) -> PoolView {
    let mut view = PoolView {
        ha_enabled: true,
        ..Default::default()
    };
    for i in 0..servers {
        let (cpus, mem) = if i % 5 < 3 {
            (32, 131_072)
        } else {
            (16, 65_536)
        };
        let mut s = ServerView::new(
            ServerId::from_u128(i as u128 + 1),
            format!("s{i}"),
            cpus,
            mem,
        );
        s.networks.insert(NetworkId::from_u128(NET_A));
        if rng.chance(0.9) {
            s.networks.insert(NetworkId::from_u128(NET_B));
        }
        s.repositories.insert(RepoId::from_u128(1));
        // Few distinct values: real monitoring reports coarse figures.
        s.net_util = rng.below(5) as f64 / 10.0;
        view.servers.push(s);
    }
    view
}

/// VMs with anti-affinity groups, affinity pairs, preferred lists (Auto and Manual),
/// network and repository needs, half of them HA.
fn placement_requests(rng: &mut Rng, n: usize, servers: usize) -> Vec<PlacementRequest> {
    let server = |rng: &mut Rng| ServerId::from_u128(rng.below(servers as u64) as u128 + 1);
    (0..n)
        .map(|i| {
            let vcpus = 1 + rng.below(8) as u32;
            let memory_mib = 1024 << rng.below(5);
            let mut r = PlacementRequest::new(VmId::from_u128(i as u128 + 1), vcpus, memory_mib);
            r.ha = rng.chance(0.5);
            r.networks.push(NetworkId::from_u128(NET_A));
            if rng.chance(0.2) {
                r.networks.push(NetworkId::from_u128(NET_B));
            }
            r.repositories.push(RepoId::from_u128(1));
            if rng.chance(0.3) {
                r.anti_affinity_group = Some(format!("aa{}", rng.below(2_000)));
            }
            if rng.chance(0.02) {
                r.affinity_group = Some(format!("af{}", i / 2));
            }
            let p = rng.unit();
            if p < 0.10 {
                r.preferred = (0..3).map(|_| server(rng)).collect();
            } else if p < 0.12 {
                r.mode = PreferredMode::Manual;
                r.preferred = (0..4).map(|_| server(rng)).collect();
            }
            r
        })
        .collect()
}

fn place_throughput() {
    const SERVERS: usize = 10_000;
    const VMS: usize = 100_000;
    const SAMPLE_EVERY: usize = 50;
    let mut rng = Rng(0x5eed_0001);
    let view = placement_pool(&mut rng, SERVERS);
    let reqs = placement_requests(&mut rng, VMS, SERVERS);

    // The indexed placer, one VM at a time, each counting against the next.
    let (build_ms, _, mut placer) = timed(|| Placer::new(&view));
    let (wall_ms, cpu_ms, placed) = timed(|| {
        reqs.iter()
            .map(|r| placer.place(r).ok())
            .collect::<Vec<Option<ServerId>>>()
    });
    let ok = placed.iter().filter(|p| p.is_some()).count();

    // The trait's burst call: builds its index from the view, then the same.
    let (burst_ms, burst_cpu_ms, burst) = timed(|| BestFit.place_many(&view, &reqs));
    let burst_agrees = burst
        .iter()
        .zip(&placed)
        .all(|(a, b)| a.as_ref().ok() == b.as_ref());

    // The filter-then-weigh peer judges and scores every server for each VM. At ~10k
    // servers per VM it is timed on every 50th request of the same sequence, the state
    // advanced by the indexed placer in between; both must pick the same server.
    let mut placer = Placer::new(&view);
    let (mut peer_wall, mut peer_cpu, mut samples, mut agree) = (0.0, 0.0, 0usize, true);
    for (i, r) in reqs.iter().enumerate() {
        if i % SAMPLE_EVERY == 0 {
            let (w, c, chosen) = timed(|| placer.choose_by_scan(r).ok());
            peer_wall += w;
            peer_cpu += c.unwrap_or(w);
            samples += 1;
            agree &= chosen == placed[i];
        }
        if let Some(s) = placed[i] {
            let _ = placer.commit(r, s);
        }
    }
    let per_s = |n: usize, ms: f64| (n as f64 / ms * 1e3).round();
    let (rate, peer_rate) = (per_s(VMS, wall_ms), per_s(samples, peer_wall));
    let cpu_rate = cpu_ms.map(|c| per_s(VMS, c));
    emit(json!({
        "bench": "place_throughput", "metric": "placements_per_s", "value": rate,
        "unit": "1/s", "cpu_value": cpu_rate,
        "peer": "filter_then_weigh_scan", "peer_value": peer_rate,
        "peer_cpu_value": per_s(samples, peer_cpu),
        "ratio": (rate / peer_rate * 10.0).round() / 10.0,
        "servers": SERVERS, "vms": VMS, "placed": ok, "rejected": VMS - ok,
        "index_build_ms": round2(build_ms), "peer_samples": samples, "same_choices": agree,
    }));
    emit(json!({
        "bench": "place_throughput", "metric": "place_many_per_s",
        "value": per_s(VMS, burst_ms), "unit": "1/s",
        "cpu_value": burst_cpu_ms.map(|c| per_s(VMS, c)),
        "note": "BestFit::place_many on the PoolView, index build included",
        "same_choices": burst_agrees,
    }));
}

// ------------------------------------------------------------------ DRS pools

/// A skewed pool: servers of two sizes, VMs of at most 1/8 of the smaller server, each
/// VM dropped on a server drawn with weight `u⁴` (a few servers get most of them).
fn skewed_pool(rng: &mut Rng, servers: usize, vms: usize) -> PoolView {
    let mut view = PoolView::default();
    view.policies.drs.max_moves = u32::MAX;
    view.policies.drs.hold_secs = 0;
    for i in 0..servers {
        let (cpus, mem) = if i % 3 == 2 {
            (64, 262_144)
        } else {
            (32, 131_072)
        };
        view.servers.push(ServerView::new(
            ServerId::from_u128(i as u128 + 1),
            format!("s{i}"),
            cpus,
            mem,
        ));
    }
    let weights: Vec<f64> = (0..servers).map(|_| rng.unit().powi(4) + 0.01).collect();
    let mut cumulative = Vec::with_capacity(servers);
    let mut sum = 0.0;
    for w in &weights {
        sum += w;
        cumulative.push(sum);
    }
    let mut demand = vec![0.0f64; servers];
    let mut memory = vec![0u64; servers];
    for i in 0..vms {
        let vcpus = 1 + rng.below(4) as u32;
        let cpu = f64::from(vcpus) * (0.1 + 0.8 * rng.unit());
        let mem = 1024 * (1 + rng.below(8));
        let x = rng.unit() * sum;
        let mut s = cumulative.partition_point(|c| *c < x).min(servers - 1);
        // A server that cannot take the VM passes it to the next one.
        for _ in 0..servers {
            let srv = &view.servers[s];
            if (demand[s] + cpu) / f64::from(srv.cpus) <= 1.0 && memory[s] + mem <= srv.memory_mib {
                break;
            }
            s = (s + 1) % servers;
        }
        demand[s] += cpu;
        memory[s] += mem;
        let mut v = VmView::new(
            VmId::from_u128(i as u128 + 1),
            Some(view.servers[s].id),
            vcpus,
            mem,
        );
        v.cpu_demand = cpu;
        view.vms.push(v);
    }
    view
}

fn peak(view: &PoolView) -> f64 {
    server_utilisation(view)
        .into_iter()
        .map(|(_, u)| u)
        .fold(0.0, f64::max)
}

/// The greedy peer: move from the most loaded server to the least loaded the VM that
/// lowers the larger of the two the most, until the most loaded is at or under `target`
/// or no VM helps. It checks memory and vCPU capacity (the generated pools have no other
/// constraints).
fn greedy_baseline(view: &PoolView, target: f64) -> (usize, f64) {
    let n = view.servers.len();
    let index: HashMap<ServerId, usize> = view
        .servers
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id, i))
        .collect();
    let mut demand = vec![0.0f64; n];
    let mut mem = vec![0u64; n];
    let mut vcpus = vec![0u64; n];
    let mut on: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, v) in view.vms.iter().enumerate() {
        let Some(s) = v.server.and_then(|s| index.get(&s).copied()) else {
            continue;
        };
        demand[s] += v.cpu_demand;
        mem[s] += v.memory_mib;
        vcpus[s] += u64::from(v.vcpus);
        on[s].push(i);
    }
    let cap = &view.policies.placement;
    let load = |s: usize, d: f64, m: u64| {
        let srv = &view.servers[s];
        (d / f64::from(srv.cpus)).max(m as f64 / srv.memory_mib as f64)
    };
    let mut moves = 0;
    loop {
        let loads: Vec<f64> = (0..n).map(|s| load(s, demand[s], mem[s])).collect();
        let (h, l) = (0..n).fold((0, 0), |(h, l), s| {
            (
                if loads[s] > loads[h] { s } else { h },
                if loads[s] < loads[l] { s } else { l },
            )
        });
        if loads[h] <= target || h == l {
            return (moves, loads[h]);
        }
        let srv = &view.servers[l];
        let best = on[h]
            .iter()
            .enumerate()
            .filter(|(_, i)| {
                let v = &view.vms[**i];
                mem[l] + v.memory_mib <= (srv.memory_mib as f64 * cap.memory_overcommit) as u64
                    && vcpus[l] + u64::from(v.vcpus)
                        <= (f64::from(srv.cpus) * cap.cpu_overcommit) as u64
            })
            .map(|(k, i)| {
                let v = &view.vms[*i];
                let after = load(h, demand[h] - v.cpu_demand, mem[h] - v.memory_mib).max(load(
                    l,
                    demand[l] + v.cpu_demand,
                    mem[l] + v.memory_mib,
                ));
                (after, k)
            })
            .min_by(|a, b| a.0.total_cmp(&b.0));
        let Some((after, k)) = best.filter(|(after, _)| *after < loads[h]) else {
            return (moves, loads[h]);
        };
        let _ = after;
        let i = on[h].swap_remove(k);
        let v = &view.vms[i];
        demand[h] -= v.cpu_demand;
        mem[h] -= v.memory_mib;
        vcpus[h] -= u64::from(v.vcpus);
        demand[l] += v.cpu_demand;
        mem[l] += v.memory_mib;
        vcpus[l] += u64::from(v.vcpus);
        on[l].push(i);
        moves += 1;
    }
}

/// The DRS target for a pool: the threshold or the bound plus the tolerance.
fn drs_target(view: &PoolView, drs: &Drs) -> f64 {
    (view.policies.drs.threshold_pct / 100.0).min(pool_utilisation(view) + drs.tolerance)
}

fn drs_quality() {
    let drs = Drs::default();
    for (servers, seeds) in [(32usize, 7u64), (256, 5), (2048, 3)] {
        let vms = servers * 40_000 / 2048;
        let (mut gaps, mut peer_gaps, mut moves, mut peer_moves) = (vec![], vec![], vec![], vec![]);
        let mut worst_gap = 0.0f64;
        let mut before_gap = vec![];
        for seed in 0..seeds {
            let mut rng = Rng(0xd25_0000 + seed * 7919 + servers as u64);
            let mut view = skewed_pool(&mut rng, servers, vms);
            let bound = pool_utilisation(&view);
            before_gap.push((peak(&view) - bound) * 100.0);
            let (pm, ppeak) = greedy_baseline(&view, drs_target(&view, &drs));
            let proposal = drs.propose(&view, Timestamp(0));
            view.apply_migrations(&proposal, Timestamp(0));
            let gap = (peak(&view) - bound) * 100.0;
            worst_gap = worst_gap.max(gap);
            gaps.push(gap);
            peer_gaps.push((ppeak - bound) * 100.0);
            moves.push(proposal.len() as f64);
            peer_moves.push(pm as f64);
        }
        let round = |x: f64| (x * 100.0).round() / 100.0;
        emit(json!({
            "bench": "drs_quality", "servers": servers, "vms": vms, "seeds": seeds,
            "metric": "peak_minus_fluid_bound_pp", "value": round(median(&mut gaps)),
            "unit": "pp", "worst": round(worst_gap), "before": round(median(&mut before_gap)),
            "peer": "greedy_most_to_least", "peer_value": round(median(&mut peer_gaps)),
        }));
        emit(json!({
            "bench": "drs_quality", "servers": servers, "vms": vms, "seeds": seeds,
            "metric": "migrations", "value": median(&mut moves), "unit": "moves",
            "peer": "greedy_most_to_least", "peer_value": median(&mut peer_moves),
        }));
    }
}

fn drs_runtime() {
    let drs = Drs::default();
    let mut rng = Rng(0xd25_7777);
    let view = skewed_pool(&mut rng, 2048, 40_000);
    let target = drs_target(&view, &drs);
    // Median of 7 runs, wall-clock and on-CPU; the machine's cores may be shared.
    let time = |f: &mut dyn FnMut() -> usize| {
        let (mut wall, mut cpu, mut out) = (Vec::new(), Vec::new(), 0);
        for _ in 0..7 {
            let (w, c, o) = timed(&mut *f);
            wall.push(w);
            cpu.extend(c);
            out = o;
        }
        let cpu = (!cpu.is_empty()).then(|| round2(median(&mut cpu)));
        (round2(median(&mut wall)), cpu, out)
    };
    let (ours, ours_cpu, moves) = time(&mut || drs.propose(&view, Timestamp(0)).len());
    let (peer, peer_cpu, peer_moves) = time(&mut || greedy_baseline(&view, target).0);
    emit(json!({
        "bench": "drs_runtime", "servers": 2048, "vms": view.vms.len(),
        "metric": "median_ms", "value": ours, "unit": "ms", "cpu_ms": ours_cpu,
        "moves": moves, "peer": "greedy_most_to_least", "peer_value": peer,
        "peer_cpu_ms": peer_cpu, "peer_moves": peer_moves,
    }));
    let mut capped = view.clone();
    capped.policies.drs.max_moves = 8;
    let (ours, ours_cpu, moves) = time(&mut || drs.propose(&capped, Timestamp(0)).len());
    emit(json!({
        "bench": "drs_runtime", "servers": 2048, "vms": view.vms.len(),
        "metric": "median_ms_default_cap", "value": ours, "unit": "ms", "cpu_ms": ours_cpu,
        "moves": moves,
    }));
}

/// One DPM run on a quiet pool (2,048 servers at about 15%): how long consolidating
/// takes, and how far. No peer: DPM is reported for its cost alone.
fn dpm_runtime() {
    let mut rng = Rng(0xd9a_0001);
    let mut view = skewed_pool(&mut rng, 2048, 10_000);
    view.policies.placement.ha_host_failures = 1;
    for (i, v) in view.vms.iter_mut().enumerate() {
        v.ha = i % 3 == 0;
    }
    let before = pool_utilisation(&view);
    let (wall, cpu, actions) = timed(|| Dpm.propose(&view, Timestamp(0)));
    let off = actions
        .iter()
        .filter(|a| matches!(a, PowerAction::PowerOff { .. }))
        .count();
    let moves: usize = actions
        .iter()
        .map(|a| match a {
            PowerAction::PowerOff { evacuate, .. } => evacuate.len(),
            PowerAction::PowerOn { .. } => 0,
        })
        .sum();
    view.apply_power(&actions, Timestamp(0));
    emit(json!({
        "bench": "dpm_runtime", "servers": 2048, "vms": view.vms.len(),
        "metric": "ms", "value": round2(wall), "unit": "ms", "cpu_ms": cpu.map(round2),
        "powered_off": off, "migrations": moves,
        "utilisation_before_pct": round2(before * 100.0),
        "utilisation_after_pct": round2(pool_utilisation(&view) * 100.0),
    }));
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn main() {
    // `cargo bench` passes `--bench`; a name filter selects benchmarks.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let run = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    if run("place_throughput") {
        place_throughput();
    }
    if run("drs_quality") {
        drs_quality();
    }
    if run("drs_runtime") {
        drs_runtime();
    }
    if run("dpm_runtime") {
        dpm_runtime();
    }
}
