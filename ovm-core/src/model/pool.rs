use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::id::{NetworkId, PoolId, RepoId, ServerId};

/// Which hypervisor a server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HypervisorKind {
    /// The in-memory simulator.
    Sim,
    /// ovm's own VMM on /dev/kvm.
    Kvm,
    /// Xen, driven through its `xl` toolstack.
    Xen,
}

impl HypervisorKind {
    /// The lowercase name (`sim`, `kvm`, `xen`).
    pub fn as_str(self) -> &'static str {
        match self {
            HypervisorKind::Sim => "sim",
            HypervisorKind::Kvm => "kvm",
            HypervisorKind::Xen => "xen",
        }
    }
}

impl std::fmt::Display for HypervisorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for HypervisorKind {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "sim" => Ok(HypervisorKind::Sim),
            "kvm" => Ok(HypervisorKind::Kvm),
            "xen" => Ok(HypervisorKind::Xen),
            _ => Err(crate::Error::invalid(
                "hypervisor",
                format!("{s:?} is not sim, kvm or xen"),
            )),
        }
    }
}

/// A role a server plays in its pool, as in Oracle VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerRole {
    /// Holds the pool's master role (cluster coordination).
    PoolMaster,
    /// Runs utility work (imports, clones) rather than VMs.
    Utility,
    /// Runs virtual machines.
    VmServer,
}

/// The operational state of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerState {
    /// Up and accepting VMs.
    Running,
    /// Up, but takes no new VMs (being serviced).
    Maintenance,
    /// Powered off (by DPM or an administrator).
    PoweredOff,
    /// Not answering; its VMs may still be running.
    Unreachable,
    /// Known to be down (fenced); its VMs are not running.
    Dead,
}

impl ServerState {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Running => "running",
            ServerState::Maintenance => "maintenance",
            ServerState::PoweredOff => "powered_off",
            ServerState::Unreachable => "unreachable",
            ServerState::Dead => "dead",
        }
    }
}

/// A hypervisor host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Server {
    /// Its id.
    pub id: ServerId,
    /// Unique name.
    pub name: String,
    /// How to reach it (host name, address or, for local backends, a label).
    pub address: String,
    /// Which hypervisor it runs.
    pub hypervisor: HypervisorKind,
    /// Physical CPUs (threads) usable by guests.
    pub cpus: u32,
    /// Memory usable by guests, MiB.
    pub memory_mib: u64,
    /// Roles in the pool.
    pub roles: BTreeSet<ServerRole>,
    /// Current state.
    pub state: ServerState,
    /// The pool it belongs to, if any.
    pub pool: Option<PoolId>,
    /// Networks this server is connected to.
    #[serde(default)]
    pub networks: BTreeSet<NetworkId>,
    /// The agent that serves it, for a server on another machine (`None`: this machine's
    /// own backends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentEndpoint>,
}

impl Server {
    /// A server in no pool, not yet sized (its backend says how big it is): what an agent
    /// or a benchmark connects a backend with.
    pub fn standalone(
        id: ServerId,
        name: impl Into<String>,
        address: impl Into<String>,
        hypervisor: HypervisorKind,
    ) -> Self {
        Server {
            id,
            name: name.into(),
            address: address.into(),
            hypervisor,
            cpus: 0,
            memory_mib: 0,
            roles: BTreeSet::new(),
            state: ServerState::Running,
            pool: None,
            networks: BTreeSet::new(),
            agent: None,
        }
    }
}

/// Where a server's agent listens, and the certificate it must present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentEndpoint {
    /// `https://HOST:PORT`.
    pub url: String,
    /// The SHA-256 fingerprint of the agent's certificate, pinned when the server was added.
    pub fingerprint: String,
}

/// Placement settings of a pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlacementSettings {
    /// Allowed ratio of VM memory to server memory (1.0: never over-commit).
    pub memory_overcommit: f64,
    /// Allowed ratio of vCPUs to server CPUs.
    pub cpu_overcommit: f64,
    /// Weight of free memory in the best-fit score.
    pub memory_weight: f64,
    /// Weight of free CPU in the best-fit score.
    pub cpu_weight: f64,
    /// Weight of network utilisation in the best-fit score.
    pub network_weight: f64,
    /// How many server failures HA admission control must survive.
    pub ha_host_failures: u32,
}

impl Default for PlacementSettings {
    fn default() -> Self {
        PlacementSettings {
            memory_overcommit: 1.0,
            cpu_overcommit: 4.0,
            memory_weight: 1.0,
            cpu_weight: 1.0,
            network_weight: 0.5,
            ha_host_failures: 1,
        }
    }
}

/// Distributed Resource Scheduling settings of a pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DrsSettings {
    /// Run DRS periodically.
    pub enabled: bool,
    /// Utilisation (percent) above which a server is overloaded.
    pub threshold_pct: f64,
    /// Most migrations proposed per run.
    pub max_moves: u32,
    /// A VM moved less than this many seconds ago is not moved again.
    pub hold_secs: u64,
    /// Seconds between runs.
    pub interval_secs: u64,
}

impl Default for DrsSettings {
    fn default() -> Self {
        DrsSettings {
            enabled: false,
            threshold_pct: 80.0,
            max_moves: 8,
            hold_secs: 600,
            interval_secs: 120,
        }
    }
}

/// Dynamic Power Management settings of a pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DpmSettings {
    /// Run DPM periodically.
    pub enabled: bool,
    /// Lower edge of the target utilisation band, percent.
    pub low_pct: f64,
    /// Upper edge of the target utilisation band, percent.
    pub high_pct: f64,
    /// Never fewer running servers than this.
    pub min_servers: u32,
}

impl Default for DpmSettings {
    fn default() -> Self {
        DpmSettings {
            enabled: false,
            low_pct: 45.0,
            high_pct: 81.0,
            min_servers: 1,
        }
    }
}

/// The policies of a pool.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PoolPolicies {
    /// Placement.
    pub placement: PlacementSettings,
    /// DRS.
    pub drs: DrsSettings,
    /// DPM.
    pub dpm: DpmSettings,
}

/// A server pool: servers sharing storage and networks, among which VMs move.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerPool {
    /// Its id.
    pub id: PoolId,
    /// Unique name.
    pub name: String,
    /// Member servers.
    pub servers: Vec<ServerId>,
    /// Repositories shared by all members.
    pub repositories: Vec<RepoId>,
    /// Pool-level HA switch; a VM is HA only when both pool and VM say so.
    pub ha_enabled: bool,
    /// Placement, DRS and DPM policies.
    pub policies: PoolPolicies,
    /// Most servers the pool accepts (Oracle VM: 32).
    pub max_servers: u32,
}

impl ServerPool {
    /// Oracle VM's limit of servers per pool, the default here.
    pub const DEFAULT_MAX_SERVERS: u32 = 32;
}
