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
        });
    }
}
