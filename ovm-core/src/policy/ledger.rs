//! The working state every policy decides on: per-server usage, group membership and the
//! HA reserve, built once from a `PoolView` and updated move by move.
//!
//! The hard constraints live here, in [`Ledger::check`], so placement, DRS and DPM apply
//! the very same rules. Usage is kept in integers (MiB, vCPUs, micro-CPUs of demand) so a
//! ledger updated move by move is bit-for-bit the ledger rebuilt from the result: that is
//! what makes "apply the proposal, ask again, get nothing" hold exactly.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use super::ha::{self, HaPoint, HaReserve, Slack};
use super::view::{PlacementRequest, PoolView, VmView};
use crate::id::{NetworkId, RepoId, ServerId, Timestamp, VmId};
use crate::model::{PlacementSettings, PreferredMode, ServerState};

/// Hashes ids and indexes by folding their bytes with a multiply (the FxHash step) and
/// a final mix.
/// Server and VM ids are random UUIDs the manager made, not attacker-chosen strings, so
/// they need no flood-resistant hash; group names keep the standard one.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct IdHasher(u64);

impl IdHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        // MurmurHash3's finaliser: spreads high input bits (sequential ids differ only
        // there) into the low bits the table indexes by.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// A hash map keyed by ids or indexes.
pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// CPU demand is kept in millionths of a CPU.
pub(crate) const MICROS: f64 = 1_000_000.0;

/// A server as the ledger tracks it.
#[derive(Debug, Clone)]
pub(crate) struct Host {
    /// Index into `PoolView::servers`.
    pub view: usize,
    pub id: ServerId,
    pub state: ServerState,
    pub cpus: u32,
    pub memory_mib: u64,
    /// Memory VMs may reserve: `memory_mib × memory_overcommit`.
    pub mem_cap: u64,
    /// vCPUs VMs may have: `cpus × cpu_overcommit`.
    pub vcpu_cap: u64,
    pub mem_used: u64,
    pub vcpus_used: u64,
    pub demand: u64,
    pub ha_mem: u64,
    pub ha_vcpus: u64,
    /// Guests on this host, as indices into `Ledger::guests`.
    pub guests: Vec<usize>,
}

impl Host {
    /// Takes new VMs.
    pub fn accepting(&self) -> bool {
        self.state == ServerState::Running
    }

    /// Utilisation: the larger of CPU demand over CPUs and memory over memory.
    pub fn load(&self) -> f64 {
        load_of(self.demand, self.mem_used, self.cpus, self.memory_mib)
    }

    /// Utilisation with `demand` micro-CPUs and `mem` MiB more.
    pub fn load_plus(&self, demand: u64, mem: u64) -> f64 {
        load_of(
            self.demand.saturating_add(demand),
            self.mem_used.saturating_add(mem),
            self.cpus,
            self.memory_mib,
        )
    }

    /// Utilisation with `demand` micro-CPUs and `mem` MiB less.
    pub fn load_minus(&self, demand: u64, mem: u64) -> f64 {
        load_of(
            self.demand.saturating_sub(demand),
            self.mem_used.saturating_sub(mem),
            self.cpus,
            self.memory_mib,
        )
    }

    fn point(&self, mem: u64, vcpus: u64, ha_mem: u64, ha_vcpus: u64) -> HaPoint {
        HaPoint::new(
            [self.mem_cap, self.vcpu_cap],
            [mem, vcpus],
            [ha_mem.min(mem), ha_vcpus.min(vcpus)],
        )
    }
}

/// Dominant-resource utilisation of `demand` micro-CPUs and `mem` MiB on a server.
pub(crate) fn load_of(demand: u64, mem: u64, cpus: u32, memory_mib: u64) -> f64 {
    let cpu = demand as f64 / (f64::from(cpus.max(1)) * MICROS);
    let mem = mem as f64 / memory_mib.max(1) as f64;
    cpu.max(mem)
}

/// A VM as the ledger tracks it.
#[derive(Debug, Clone)]
pub(crate) struct Guest {
    /// Index into `PoolView::vms`; `None` for a VM placed by a `Placer`.
    pub view: Option<usize>,
    pub id: VmId,
    pub host: Option<usize>,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub demand: u64,
    pub ha: bool,
    pub affinity: Option<u32>,
    pub anti_affinity: Option<u32>,
    pub last_moved: Option<Timestamp>,
    pub pinned: bool,
}

/// The members of one group: how many in all and how many on each server.
#[derive(Debug, Clone, Default)]
struct Members {
    total: u32,
    on: IdMap<usize, u32>,
}

/// Group names interned to small numbers, with their members.
#[derive(Debug, Clone, Default)]
struct Groups {
    ids: HashMap<String, u32>,
    names: Vec<String>,
    members: Vec<Members>,
}

impl Groups {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = self.names.len() as u32;
        self.ids.insert(name.to_owned(), id);
        self.names.push(name.to_owned());
        self.members.push(Members::default());
        id
    }

    fn lookup(&self, name: Option<&str>) -> Option<u32> {
        name.and_then(|n| self.ids.get(n).copied())
    }

    fn add(&mut self, group: u32, host: usize) {
        let m = &mut self.members[group as usize];
        m.total += 1;
        *m.on.entry(host).or_default() += 1;
    }

    fn remove(&mut self, group: u32, host: usize) {
        let m = &mut self.members[group as usize];
        m.total = m.total.saturating_sub(1);
        if let Some(n) = m.on.get_mut(&host) {
            *n -= 1;
            if *n == 0 {
                m.on.remove(&host);
            }
        }
    }

    fn on(&self, group: u32, host: usize) -> u32 {
        self.members[group as usize]
            .on
            .get(&host)
            .copied()
            .unwrap_or(0)
    }

    fn total(&self, group: u32) -> u32 {
        self.members[group as usize].total
    }

    fn hosts(&self, group: u32) -> impl Iterator<Item = usize> + '_ {
        self.members[group as usize].on.keys().copied()
    }
}

/// What a VM needs from a server, whether it is a request or a running VM.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Need<'a> {
    pub vm: VmId,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// Micro-CPUs of demand.
    pub demand: u64,
    pub ha: bool,
    pub preferred: &'a [ServerId],
    pub mode: PreferredMode,
    pub networks: &'a [NetworkId],
    pub repositories: &'a [RepoId],
    pub affinity: Option<&'a str>,
    pub anti_affinity: Option<&'a str>,
}

impl<'a> Need<'a> {
    /// A new VM's needs: its demand is taken as all its vCPUs until it is measured.
    pub fn of_request(r: &'a PlacementRequest) -> Self {
        Need {
            vm: r.vm,
            vcpus: r.vcpus,
            memory_mib: r.memory_mib,
            demand: u64::from(r.vcpus).saturating_mul(MICROS as u64),
            ha: r.ha,
            preferred: &r.preferred,
            mode: r.mode,
            networks: &r.networks,
            repositories: &r.repositories,
            affinity: r.affinity_group.as_deref(),
            anti_affinity: r.anti_affinity_group.as_deref(),
        }
    }

    /// A running VM's needs.
    pub fn of_vm(v: &'a VmView) -> Self {
        Need {
            vm: v.id,
            vcpus: v.vcpus,
            memory_mib: v.memory_mib,
            demand: demand_micros(v.cpu_demand, v.vcpus),
            ha: v.ha,
            preferred: &v.preferred,
            mode: v.mode,
            networks: &v.networks,
            repositories: &v.repositories,
            affinity: v.affinity_group.as_deref(),
            anti_affinity: v.anti_affinity_group.as_deref(),
        }
    }

    /// Whether `server` is on the preferred list.
    pub fn prefers(&self, server: ServerId) -> bool {
        self.preferred.contains(&server)
    }
}

/// Measured demand as micro-CPUs, clamped to `0..=vcpus`; unmeasured (not a number)
/// counts as all vCPUs.
pub(crate) fn demand_micros(cpu_demand: f64, vcpus: u32) -> u64 {
    let d = if cpu_demand.is_nan() {
        f64::from(vcpus)
    } else {
        cpu_demand.clamp(0.0, f64::from(vcpus))
    };
    (d * MICROS).round() as u64
}

/// A need with its group names resolved against the ledger.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Resolved<'a> {
    pub need: Need<'a>,
    affinity: Option<u32>,
    anti_affinity: Option<u32>,
}

/// How HA admission control judges a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HaRule {
    /// A new VM: the pool must still survive its failure budget afterwards.
    Strict,
    /// A running VM moving: the change must not deepen an existing shortfall.
    NoWorse,
    /// Not judged here (the caller checks the whole change at once).
    Skip,
}

/// Why a server cannot take a VM.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Rejection {
    State(ServerState),
    NotPreferred,
    Memory {
        need: u64,
        free: u64,
        cap: u64,
    },
    Cpu {
        need: u32,
        free: u64,
        cap: u64,
    },
    Network(NetworkId),
    Repository(RepoId),
    Affinity(String),
    AntiAffinity(String),
    HaAdmission {
        resource: &'static str,
        short: i64,
        failures: usize,
    },
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::State(s) => write!(f, "server is {}", s.as_str()),
            Rejection::NotPreferred => f.write_str("not a preferred server (manual mode)"),
            Rejection::Memory { need, free, cap } => {
                write!(f, "memory: needs {need} MiB, {free} of {cap} MiB free")
            }
            Rejection::Cpu { need, free, cap } => {
                write!(f, "cpu: needs {need} vCPUs, {free} of {cap} free")
            }
            Rejection::Network(n) => write!(f, "not connected to network {n}"),
            Rejection::Repository(r) => write!(f, "cannot reach repository {r}"),
            Rejection::Affinity(g) => write!(f, "affinity group {g:?} runs on another server"),
            Rejection::AntiAffinity(g) => write!(f, "anti-affinity group {g:?} already runs here"),
            Rejection::HaAdmission {
                resource,
                short,
                failures,
            } => write!(
                f,
                "ha admission: would leave {short} {resource} too little to restart the HA VMs \
                 of {failures} failed server(s)"
            ),
        }
    }
}

/// Placement settings made safe to compute with: ratios that are not positive numbers
/// fall back to the defaults, weights are clamped to 0..=100.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub memory_overcommit: f64,
    pub cpu_overcommit: f64,
    pub memory_weight: f64,
    pub cpu_weight: f64,
    pub network_weight: f64,
    pub ha_host_failures: u32,
}

impl Settings {
    pub fn new(s: &PlacementSettings) -> Self {
        let d = PlacementSettings::default();
        let ratio = |v: f64, def: f64| if v.is_finite() && v > 0.0 { v } else { def };
        let weight = |v: f64| if v.is_nan() { 0.0 } else { v.clamp(0.0, 100.0) };
        Settings {
            memory_overcommit: ratio(s.memory_overcommit, d.memory_overcommit),
            cpu_overcommit: ratio(s.cpu_overcommit, d.cpu_overcommit),
            memory_weight: weight(s.memory_weight),
            cpu_weight: weight(s.cpu_weight),
            network_weight: weight(s.network_weight),
            ha_host_failures: s.ha_host_failures,
        }
    }
}

/// Per-server usage, group membership and HA reserve of one pool.
#[derive(Debug, Clone)]
pub(crate) struct Ledger<'v> {
    pub view: &'v PoolView,
    pub settings: Settings,
    /// Servers in id order, so an index order is the id order.
    pub hosts: Vec<Host>,
    pub guests: Vec<Guest>,
    host_of: IdMap<ServerId, usize>,
    guest_of: IdMap<VmId, usize>,
    affinity: Groups,
    anti_affinity: Groups,
    pub ha: HaReserve,
}

impl<'v> Ledger<'v> {
    /// The ledger of `view`. A VM listed twice counts once (the first listing).
    pub fn new(view: &'v PoolView) -> Self {
        let settings = Settings::new(&view.policies.placement);
        let mut order: Vec<usize> = (0..view.servers.len()).collect();
        order.sort_by_key(|i| view.servers[*i].id);
        order.dedup_by_key(|i| view.servers[*i].id);
        let hosts: Vec<Host> = order
            .iter()
            .map(|&i| {
                let s = &view.servers[i];
                Host {
                    view: i,
                    id: s.id,
                    state: s.state,
                    cpus: s.cpus,
                    memory_mib: s.memory_mib,
                    mem_cap: (s.memory_mib as f64 * settings.memory_overcommit) as u64,
                    vcpu_cap: (f64::from(s.cpus) * settings.cpu_overcommit) as u64,
                    mem_used: 0,
                    vcpus_used: 0,
                    demand: 0,
                    ha_mem: 0,
                    ha_vcpus: 0,
                    guests: Vec::new(),
                }
            })
            .collect();
        let host_of = hosts.iter().enumerate().map(|(i, h)| (h.id, i)).collect();
        let mut ledger = Ledger {
            view,
            settings,
            ha: HaReserve::new(hosts.len(), settings.ha_host_failures),
            hosts,
            guests: Vec::with_capacity(view.vms.len()),
            host_of,
            guest_of: IdMap::with_capacity_and_hasher(view.vms.len(), Default::default()),
            affinity: Groups::default(),
            anti_affinity: Groups::default(),
        };
        // Where each VM runs, and each server's guest list sized once (not grown VM by VM).
        let host_of_vm: Vec<Option<usize>> = view
            .vms
            .iter()
            .map(|vm| vm.server.and_then(|s| ledger.host_of.get(&s).copied()))
            .collect();
        let mut counts = vec![0usize; ledger.hosts.len()];
        for h in host_of_vm.iter().flatten() {
            counts[*h] += 1;
        }
        for (host, n) in ledger.hosts.iter_mut().zip(counts) {
            host.guests.reserve_exact(n);
        }
        for (i, vm) in view.vms.iter().enumerate() {
            if ledger.guest_of.contains_key(&vm.id) {
                continue;
            }
            let host = host_of_vm[i];
            let g = Guest {
                view: Some(i),
                id: vm.id,
                host: None,
                vcpus: vm.vcpus,
                memory_mib: vm.memory_mib,
                demand: demand_micros(vm.cpu_demand, vm.vcpus),
                ha: vm.ha,
                affinity: vm
                    .affinity_group
                    .as_deref()
                    .map(|n| ledger.affinity.intern(n)),
                anti_affinity: vm
                    .anti_affinity_group
                    .as_deref()
                    .map(|n| ledger.anti_affinity.intern(n)),
                last_moved: vm.last_moved,
                pinned: vm.pinned,
            };
            let gi = ledger.guests.len();
            ledger.guest_of.insert(vm.id, gi);
            ledger.guests.push(g);
            if let Some(h) = host {
                ledger.attach_usage(gi, h);
            }
        }
        for h in 0..ledger.hosts.len() {
            ledger.refresh_ha(h);
        }
        ledger
    }

    /// The index of a server.
    pub fn host_index(&self, id: ServerId) -> Option<usize> {
        self.host_of.get(&id).copied()
    }

    /// The index of a VM.
    pub fn guest_index(&self, id: VmId) -> Option<usize> {
        self.guest_of.get(&id).copied()
    }

    /// The server's name, for people.
    pub fn name(&self, h: usize) -> &'v str {
        &self.view.servers[self.hosts[h].view].name
    }

    /// The view of a guest that came from the view.
    pub fn vm_view(&self, g: usize) -> Option<&'v VmView> {
        self.guests[g].view.map(|i| &self.view.vms[i])
    }

    /// Adds a new guest (a committed placement) and puts it on `host`.
    pub fn add_guest(&mut self, need: &Need<'_>, host: usize) -> usize {
        let g = Guest {
            view: None,
            id: need.vm,
            host: None,
            vcpus: need.vcpus,
            memory_mib: need.memory_mib,
            demand: need.demand,
            ha: need.ha,
            affinity: need.affinity.map(|n| self.affinity.intern(n)),
            anti_affinity: need.anti_affinity.map(|n| self.anti_affinity.intern(n)),
            last_moved: None,
            pinned: false,
        };
        let gi = self.guests.len();
        self.guest_of.insert(need.vm, gi);
        self.guests.push(g);
        self.attach(gi, host);
        gi
    }

    /// Puts a guest that is on no server onto `host`.
    pub fn attach(&mut self, g: usize, host: usize) {
        self.attach_usage(g, host);
        self.refresh_ha(host);
    }

    /// Takes a guest off its server; returns the server it was on.
    pub fn detach(&mut self, g: usize) -> Option<usize> {
        let host = self.guests[g].host.take()?;
        let guest = &self.guests[g];
        let h = &mut self.hosts[host];
        h.mem_used -= guest.memory_mib;
        h.vcpus_used -= u64::from(guest.vcpus);
        h.demand -= guest.demand;
        if guest.ha {
            h.ha_mem -= guest.memory_mib;
            h.ha_vcpus -= u64::from(guest.vcpus);
        }
        if let Some(pos) = h.guests.iter().position(|x| *x == g) {
            h.guests.swap_remove(pos);
        }
        if let Some(a) = guest.affinity {
            self.affinity.remove(a, host);
        }
        if let Some(a) = guest.anti_affinity {
            self.anti_affinity.remove(a, host);
        }
        self.refresh_ha(host);
        Some(host)
    }

    /// Moves a guest to `to`, returning where it was.
    pub fn relocate(&mut self, g: usize, to: usize) -> Option<usize> {
        let from = self.detach(g);
        self.attach(g, to);
        from
    }

    fn attach_usage(&mut self, g: usize, host: usize) {
        let guest = &mut self.guests[g];
        guest.host = Some(host);
        let h = &mut self.hosts[host];
        h.mem_used += guest.memory_mib;
        h.vcpus_used += u64::from(guest.vcpus);
        h.demand += guest.demand;
        if guest.ha {
            h.ha_mem += guest.memory_mib;
            h.ha_vcpus += u64::from(guest.vcpus);
        }
        h.guests.push(g);
        if let Some(a) = guest.affinity {
            self.affinity.add(a, host);
        }
        if let Some(a) = guest.anti_affinity {
            self.anti_affinity.add(a, host);
        }
    }

    /// Recomputes a server's HA point from its usage.
    pub fn refresh_ha(&mut self, host: usize) {
        let h = &self.hosts[host];
        let point = h
            .accepting()
            .then(|| h.point(h.mem_used, h.vcpus_used, h.ha_mem, h.ha_vcpus));
        self.ha.set(host, point);
    }

    /// Marks a server powered off (it must hold no guests) or back on.
    pub fn set_state(&mut self, host: usize, state: ServerState) {
        self.hosts[host].state = state;
        self.refresh_ha(host);
    }

    /// A server's HA point with `need` added (`sign > 0`) or removed.
    fn point_with(&self, host: usize, need: &Need<'_>, add: bool) -> Option<HaPoint> {
        let h = &self.hosts[host];
        if !h.accepting() {
            return None;
        }
        let (m, v) = (need.memory_mib, u64::from(need.vcpus));
        let (hm, hv) = if need.ha { (m, v) } else { (0, 0) };
        Some(if add {
            h.point(
                h.mem_used + m,
                h.vcpus_used + v,
                h.ha_mem + hm,
                h.ha_vcpus + hv,
            )
        } else {
            h.point(
                h.mem_used.saturating_sub(m),
                h.vcpus_used.saturating_sub(v),
                h.ha_mem.saturating_sub(hm),
                h.ha_vcpus.saturating_sub(hv),
            )
        })
    }

    /// HA slack if `need` moved from `origin` (or from nowhere) to `target`.
    pub fn slack_after(&self, need: &Need<'_>, target: usize, origin: Option<usize>) -> Slack {
        let to = (target, self.point_with(target, need, true));
        match origin {
            Some(o) if o != target => self
                .ha
                .slack_with(&[to, (o, self.point_with(o, need, false))]),
            _ => self.ha.slack_with(&[to]),
        }
    }

    /// Resolves a need's group names.
    pub fn resolve<'a>(&self, need: Need<'a>) -> Resolved<'a> {
        Resolved {
            need,
            affinity: self.affinity.lookup(need.affinity),
            anti_affinity: self.anti_affinity.lookup(need.anti_affinity),
        }
    }

    /// Servers hosting other members of the need's affinity group; empty when it has none.
    pub fn affinity_hosts(&self, r: &Resolved<'_>, origin: Option<usize>) -> Vec<usize> {
        let Some(a) = r.affinity else {
            return Vec::new();
        };
        let mut hosts: Vec<usize> = self
            .affinity
            .hosts(a)
            .filter(|h| Some(*h) != origin || self.affinity.on(a, *h) > 1)
            .collect();
        hosts.sort_unstable();
        hosts
    }

    /// Whether `target` may take the VM, checked in a fixed order so the first failing
    /// constraint is the reason given. `origin` is where the VM runs now, if it moves.
    pub fn check(
        &self,
        r: &Resolved<'_>,
        target: usize,
        origin: Option<usize>,
        rule: HaRule,
    ) -> Result<(), Rejection> {
        self.check_reach(r, target, origin, rule, true)
    }

    /// [`Ledger::check`], leaving out networks and repositories when `reach` is false
    /// (the caller knows the server reaches them).
    pub fn check_reach(
        &self,
        r: &Resolved<'_>,
        target: usize,
        origin: Option<usize>,
        rule: HaRule,
        reach: bool,
    ) -> Result<(), Rejection> {
        let need = &r.need;
        let h = &self.hosts[target];
        if !h.accepting() {
            return Err(Rejection::State(h.state));
        }
        if need.mode == PreferredMode::Manual && !need.prefers(h.id) {
            return Err(Rejection::NotPreferred);
        }
        let same = origin == Some(target);
        let (mem_used, vcpus_used) = if same {
            (
                h.mem_used.saturating_sub(need.memory_mib),
                h.vcpus_used.saturating_sub(u64::from(need.vcpus)),
            )
        } else {
            (h.mem_used, h.vcpus_used)
        };
        if mem_used.saturating_add(need.memory_mib) > h.mem_cap {
            return Err(Rejection::Memory {
                need: need.memory_mib,
                free: h.mem_cap.saturating_sub(mem_used),
                cap: h.mem_cap,
            });
        }
        if vcpus_used.saturating_add(u64::from(need.vcpus)) > h.vcpu_cap {
            return Err(Rejection::Cpu {
                need: need.vcpus,
                free: h.vcpu_cap.saturating_sub(vcpus_used),
                cap: h.vcpu_cap,
            });
        }
        if reach {
            let server = &self.view.servers[h.view];
            if let Some(n) = need.networks.iter().find(|n| !server.networks.contains(n)) {
                return Err(Rejection::Network(*n));
            }
            if let Some(rp) = need
                .repositories
                .iter()
                .find(|rp| !server.repositories.contains(rp))
            {
                return Err(Rejection::Repository(*rp));
            }
        }
        let own = |on_origin: bool| u32::from(on_origin && origin.is_some());
        if let Some(a) = r.affinity {
            let elsewhere = self.affinity.total(a).saturating_sub(own(true));
            let here = self.affinity.on(a, target).saturating_sub(own(same));
            if elsewhere > 0 && here == 0 {
                return Err(Rejection::Affinity(
                    need.affinity.unwrap_or_default().to_owned(),
                ));
            }
        }
        if let Some(a) = r.anti_affinity
            && self.anti_affinity.on(a, target) > own(same)
        {
            return Err(Rejection::AntiAffinity(
                need.anti_affinity.unwrap_or_default().to_owned(),
            ));
        }
        if rule != HaRule::Skip && !same && (need.ha || self.ha.has_ha()) {
            let after = self.slack_after(need, target, origin);
            let before = self.ha.slack();
            if !ha::admits(before, after, rule == HaRule::Strict) {
                let short = |d: usize| {
                    let floor = if rule == HaRule::Strict {
                        0
                    } else {
                        before[d].min(0)
                    };
                    floor - after[d]
                };
                let (resource, short) = if short(0) > 0 {
                    ("MiB", short(0))
                } else {
                    ("vCPUs", short(1))
                };
                return Err(Rejection::HaAdmission {
                    resource,
                    short,
                    failures: self.ha.failures(),
                });
            }
        }
        Ok(())
    }

    /// Whether a guest may be migrated at `now`: not pinned, not moved within `hold_ms`,
    /// and not tied by affinity to other running VMs (those move only together).
    pub fn movable(&self, g: usize, now: Timestamp, hold_ms: u64) -> bool {
        let guest = &self.guests[g];
        if guest.pinned {
            return false;
        }
        if let Some(t) = guest.last_moved
            && now.millis() < t.millis().saturating_add(hold_ms)
        {
            return false;
        }
        guest.affinity.is_none_or(|a| self.affinity.total(a) <= 1)
    }

    /// Totals of demand (micro-CPUs) and memory (MiB) on accepting servers, and their
    /// capacity (micro-CPUs, MiB).
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for h in self.hosts.iter().filter(|h| h.accepting()) {
            t.demand += u128::from(h.demand);
            t.mem += u128::from(h.mem_used);
            t.cpu_cap += u128::from(h.cpus) * MICROS as u128;
            t.mem_cap += u128::from(h.memory_mib);
        }
        t
    }
}

/// Pool-wide sums over accepting servers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub demand: u128,
    pub mem: u128,
    pub cpu_cap: u128,
    pub mem_cap: u128,
}

impl Totals {
    /// The pool's utilisation: the larger of total CPU demand over total CPUs and total
    /// memory over total memory. It is also the fluid lower bound on the peak server
    /// utilisation: no assignment of VMs to these servers can do better.
    pub fn utilisation(&self) -> f64 {
        let ratio = |a: u128, b: u128| {
            if b == 0 {
                if a == 0 { 0.0 } else { f64::INFINITY }
            } else {
                a as f64 / b as f64
            }
        };
        ratio(self.demand, self.cpu_cap).max(ratio(self.mem, self.mem_cap))
    }

    /// The same with one server's capacity more (`add`) or less.
    pub fn with_host(mut self, h: &Host, add: bool) -> Self {
        let cpu = u128::from(h.cpus) * MICROS as u128;
        let mem = u128::from(h.memory_mib);
        if add {
            self.cpu_cap += cpu;
            self.mem_cap += mem;
        } else {
            self.cpu_cap = self.cpu_cap.saturating_sub(cpu);
            self.mem_cap = self.mem_cap.saturating_sub(mem);
        }
        self
    }
}
