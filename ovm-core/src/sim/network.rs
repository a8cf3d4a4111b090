//! The simulated network backend: records which networks exist where and which NICs are
//! plugged, and hands out MAC addresses.

use crate::sync::lock;
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;

use super::faults::Faults;
use crate::Result;
use crate::hypervisor::NicAttachment;
use crate::id::{NetworkId, ServerId, VmId};
use crate::model::{Network, NicSpec};
use crate::network::NetworkBackend;

const BACKEND: &str = "sim-network";

/// The simulated network backend.
#[derive(Debug, Default)]
pub struct SimNetwork {
    realized: Mutex<BTreeSet<(ServerId, NetworkId)>>,
    plugged: Mutex<HashMap<(ServerId, VmId, usize), NicAttachment>>,
    next_mac: AtomicU32,
    faults: Faults,
}

impl SimNetwork {
    /// A backend with nothing realised.
    pub fn new() -> Self {
        Self::default()
    }

    /// Its fault injector.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// True if `network` exists on `server`.
    pub fn is_realized(&self, server: ServerId, network: NetworkId) -> bool {
        lock(&self.realized).contains(&(server, network))
    }

    /// NICs plugged on `server`.
    pub fn plugged_on(&self, server: ServerId) -> usize {
        lock(&self.plugged).keys().filter(|k| k.0 == server).count()
    }
}

/// The bridge a network uses: its own name if set, else `ovm-` + the first id characters.
pub fn bridge_name(network: &Network) -> String {
    network
        .bridge
        .clone()
        .unwrap_or_else(|| format!("ovm-{}", &network.id.to_string()[..8]))
}

#[async_trait]
impl NetworkBackend for SimNetwork {
    fn backend(&self) -> &str {
        BACKEND
    }

    async fn realize(&self, server: ServerId, network: &Network) -> Result<()> {
        self.faults.enter(BACKEND, "realize").await?;
        lock(&self.realized).insert((server, network.id));
        Ok(())
    }

    async fn remove(&self, server: ServerId, network: &Network) -> Result<()> {
        self.faults.enter(BACKEND, "remove").await?;
        lock(&self.realized).remove(&(server, network.id));
        Ok(())
    }

    async fn plug(
        &self,
        server: ServerId,
        vm: VmId,
        index: usize,
        nic: &NicSpec,
        network: &Network,
    ) -> Result<NicAttachment> {
        self.faults.enter(BACKEND, "plug").await?;
        let mac = nic.mac.clone().unwrap_or_else(|| {
            let n = self.next_mac.fetch_add(1, Ordering::Relaxed);
            format!(
                "52:54:00:{:02x}:{:02x}:{:02x}",
                (n >> 16) & 0xff,
                (n >> 8) & 0xff,
                n & 0xff
            )
        });
        let att = NicAttachment {
            mac,
            bridge: bridge_name(network),
            tap: None,
        };
        lock(&self.plugged).insert((server, vm, index), att.clone());
        Ok(att)
    }

    async fn unplug(&self, server: ServerId, vm: VmId, index: usize) -> Result<()> {
        self.faults.enter(BACKEND, "unplug").await?;
        lock(&self.plugged).remove(&(server, vm, index));
        Ok(())
    }
}
