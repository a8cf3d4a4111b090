use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::id::{NetworkId, PoolId};

/// What a network carries, as in Oracle VM's network roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkRole {
    /// Manager ↔ server traffic.
    Management,
    /// Live migration traffic.
    LiveMigration,
    /// Cluster heartbeat.
    ClusterHeartbeat,
    /// Guest traffic.
    VirtualMachine,
    /// Storage traffic (NFS, iSCSI).
    Storage,
}

/// A network: roles, VLAN and the ports it uses on each server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
    /// Its id.
    pub id: NetworkId,
    /// Unique name.
    pub name: String,
    /// The pool it serves, if limited to one.
    pub pool: Option<PoolId>,
    /// Roles.
    pub roles: BTreeSet<NetworkRole>,
    /// 802.1Q VLAN id (1..=4094), untagged if absent.
    pub vlan: Option<u16>,
    /// Physical ports bonded for this network (one port: no bond).
    #[serde(default)]
    pub bond_ports: Vec<String>,
    /// Bridge name on servers, derived from the name if absent.
    #[serde(default)]
    pub bridge: Option<String>,
}
