//! How a manager reaches a server's hypervisor: a `Connector` per hypervisor kind, which
//! turns a server record (its address) into a live [`Hypervisor`].

use std::sync::Arc;

use async_trait::async_trait;

use crate::hypervisor::Hypervisor;
use crate::model::{HypervisorKind, Server};
use crate::{Error, Result};

/// Connects to a server's hypervisor of one kind.
#[async_trait]
pub trait Connector: Send + Sync {
    /// The kind it connects to.
    fn kind(&self) -> HypervisorKind;

    /// A backend for `server` (its `address` says where it is).
    async fn connect(&self, server: &Server) -> Result<Arc<dyn Hypervisor>>;

    /// What identifies the physical host at `server`'s address, if one host can be only
    /// one server (`None`: every server is a host of its own, as simulated ones are).
    /// Two servers with the same key are refused: the host would be counted twice.
    fn host_key(&self, server: &Server) -> Option<String> {
        let _ = server;
        None
    }

    /// Powers a server on or off (IPMI, Wake-on-LAN...).
    async fn set_power(&self, server: &Server, on: bool) -> Result<()> {
        let _ = on;
        Err(Error::unsupported(
            format!("power control of server {}", server.name),
            self.kind().as_str(),
        ))
    }
}
