//! The `NetworkBackend` trait: realising networks on servers and plugging vNICs.

use async_trait::async_trait;

use crate::Result;
use crate::hypervisor::NicAttachment;
use crate::id::{ServerId, VmId};
use crate::model::{Network, NicSpec};

/// Makes networks exist on servers (bridges, VLANs, bonds) and connects VM NICs to them.
#[async_trait]
pub trait NetworkBackend: Send + Sync {
    /// Backend name.
    fn backend(&self) -> &str;

    /// Makes `network` exist on `server` (idempotent).
    async fn realize(&self, server: ServerId, network: &Network) -> Result<()>;

    /// Removes `network` from `server` (idempotent).
    async fn remove(&self, server: ServerId, network: &Network) -> Result<()>;

    /// Connects NIC number `index` of `vm` on `server`; returns what the hypervisor needs.
    async fn plug(
        &self,
        server: ServerId,
        vm: VmId,
        index: usize,
        nic: &NicSpec,
        network: &Network,
    ) -> Result<NicAttachment>;

    /// Disconnects a NIC (idempotent).
    async fn unplug(&self, server: ServerId, vm: VmId, index: usize) -> Result<()>;
}
