use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::id::{NetworkId, RepoId, ServerId, Timestamp, VmId};
use crate::model::{PoolPolicies, PreferredMode, ServerState, VmSpec};

/// A server as policies see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerView {
    /// Its id.
    pub id: ServerId,
    /// Its name (explanations).
    pub name: String,
    /// Its state: only `Running` servers take VMs.
    pub state: ServerState,
    /// CPUs.
    pub cpus: u32,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// Networks it reaches.
    pub networks: BTreeSet<NetworkId>,
    /// Repositories it reaches.
    pub repositories: BTreeSet<RepoId>,
    /// Network utilisation, 0–1.
    pub net_util: f64,
}

/// A VM as policies see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmView {
    /// Its id.
    pub id: VmId,
    /// The server it occupies (running, paused, or placed and starting).
    pub server: Option<ServerId>,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// CPU demand in CPUs (0..=vcpus): what it actually uses.
    pub cpu_demand: f64,
    /// HA is effective (pool and VM).
    pub ha: bool,
    /// Affinity group.
    pub affinity_group: Option<String>,
    /// Anti-affinity group.
    pub anti_affinity_group: Option<String>,
    /// When it last moved.
    pub last_moved: Option<Timestamp>,
    /// Preferred servers (DRS and DPM keep a Manual VM on them).
    #[serde(default)]
    pub preferred: Vec<ServerId>,
    /// How preferred servers are used.
    #[serde(default)]
    pub mode: PreferredMode,
    /// Networks its server must reach.
    #[serde(default)]
    pub networks: Vec<NetworkId>,
    /// Repositories its server must reach.
    #[serde(default)]
    pub repositories: Vec<RepoId>,
    /// Must not be migrated now (starting, in a job, bound to its server's hardware).
    #[serde(default)]
    pub pinned: bool,
}

impl VmView {
    /// A VM on `server` using all its vCPUs, in no group, without HA or preferences: the
    /// fields that matter most, the rest to be set by the caller.
    pub fn new(id: VmId, server: Option<ServerId>, vcpus: u32, memory_mib: u64) -> Self {
        VmView {
            id,
            server,
            vcpus,
            memory_mib,
            cpu_demand: f64::from(vcpus),
            ha: false,
            affinity_group: None,
            anti_affinity_group: None,
            last_moved: None,
            preferred: Vec::new(),
            mode: PreferredMode::Auto,
            networks: Vec::new(),
            repositories: Vec::new(),
            pinned: false,
        }
    }
}

impl ServerView {
    /// A running server with no networks or repositories and an idle network.
    pub fn new(id: ServerId, name: impl Into<String>, cpus: u32, memory_mib: u64) -> Self {
        ServerView {
            id,
            name: name.into(),
            state: ServerState::Running,
            cpus,
            memory_mib,
            networks: BTreeSet::new(),
            repositories: BTreeSet::new(),
            net_util: 0.0,
        }
    }
}

/// What to place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacementRequest {
    /// The VM being placed.
    pub vm: VmId,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// HA is effective.
    pub ha: bool,
    /// Preferred servers.
    pub preferred: Vec<ServerId>,
    /// How preferred servers are used.
    pub mode: PreferredMode,
    /// Networks the server must reach.
    pub networks: Vec<NetworkId>,
    /// Repositories the server must reach.
    pub repositories: Vec<RepoId>,
    /// Affinity group.
    pub affinity_group: Option<String>,
    /// Anti-affinity group.
    pub anti_affinity_group: Option<String>,
}

impl PlacementRequest {
    /// A request with no preferences, groups, networks or repositories.
    pub fn new(vm: VmId, vcpus: u32, memory_mib: u64) -> Self {
        PlacementRequest {
            vm,
            vcpus,
            memory_mib,
            ha: false,
            preferred: Vec::new(),
            mode: PreferredMode::Auto,
            networks: Vec::new(),
            repositories: Vec::new(),
            affinity_group: None,
            anti_affinity_group: None,
        }
    }

    /// The request for a VM spec (networks from its NICs; repositories are the caller's).
    pub fn for_spec(vm: VmId, spec: &VmSpec, pool_ha: bool) -> Self {
        PlacementRequest {
            vm,
            vcpus: spec.vcpus,
            memory_mib: spec.memory_mib,
            ha: pool_ha && spec.ha_enabled,
            preferred: spec.preferred_servers.clone(),
            mode: spec.preferred_mode,
            networks: spec.nics.iter().map(|n| n.network).collect(),
            repositories: Vec::new(),
            affinity_group: spec.affinity_group.clone(),
            anti_affinity_group: spec.anti_affinity_group.clone(),
        }
    }
}

/// A snapshot of a pool: everything a policy decides on.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PoolView {
    /// The pool's policies.
    pub policies: PoolPolicies,
    /// Pool-level HA.
    pub ha_enabled: bool,
    /// Servers.
    pub servers: Vec<ServerView>,
    /// VMs that occupy a server (and stopped ones, with `server: None`).
    pub vms: Vec<VmView>,
}

/// Memory and vCPUs in use on one server.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Usage {
    /// MiB of VM memory.
    pub memory_mib: u64,
    /// vCPUs of its VMs.
    pub vcpus: u64,
    /// CPU demand of its VMs, CPUs.
    pub cpu_demand: f64,
}

impl PoolView {
    /// Memory and CPU in use per server.
    pub fn usage(&self) -> HashMap<ServerId, Usage> {
        let mut map: HashMap<ServerId, Usage> = HashMap::with_capacity(self.servers.len());
        for vm in &self.vms {
            if let Some(s) = vm.server {
                let u = map.entry(s).or_default();
                u.memory_mib += vm.memory_mib;
                u.vcpus += u64::from(vm.vcpus);
                u.cpu_demand += vm.cpu_demand;
            }
        }
        map
    }

    /// Records that `request` now occupies `server` (burst placement).
    pub fn assume_placed(&mut self, request: &PlacementRequest, server: ServerId) {
        self.vms.retain(|v| v.id != request.vm);
        self.vms.push(VmView {
            id: request.vm,
            server: Some(server),
            vcpus: request.vcpus,
            memory_mib: request.memory_mib,
            cpu_demand: f64::from(request.vcpus),
            ha: request.ha,
            affinity_group: request.affinity_group.clone(),
            anti_affinity_group: request.anti_affinity_group.clone(),
            last_moved: None,
            preferred: request.preferred.clone(),
            mode: request.mode,
            networks: request.networks.clone(),
            repositories: request.repositories.clone(),
            pinned: false,
        });
    }
}

impl PoolView {
    /// Records migrations as done at `now`: each VM on its new server, `last_moved` set.
    /// Migrations of VMs the view does not list are ignored.
    pub fn apply_migrations(&mut self, moves: &[super::Migration], now: Timestamp) {
        let index: HashMap<VmId, usize> = self
            .vms
            .iter()
            .enumerate()
            .map(|(i, v)| (v.id, i))
            .collect();
        for m in moves {
            if let Some(&i) = index.get(&m.vm) {
                self.vms[i].server = Some(m.to);
                self.vms[i].last_moved = Some(now);
            }
        }
    }

    /// Records power actions as done at `now`: evacuations applied, then servers powered
    /// off or running.
    pub fn apply_power(&mut self, actions: &[super::PowerAction], now: Timestamp) {
        for a in actions {
            let (server, state) = match a {
                super::PowerAction::PowerOff {
                    server, evacuate, ..
                } => {
                    self.apply_migrations(evacuate, now);
                    (*server, ServerState::PoweredOff)
                }
                super::PowerAction::PowerOn { server, .. } => (*server, ServerState::Running),
            };
            for s in self.servers.iter_mut().filter(|s| s.id == server) {
                s.state = state;
            }
        }
    }
}
