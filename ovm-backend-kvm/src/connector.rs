//! How a manager reaches KVM servers that are this machine: one [`KvmHypervisor`] per
//! server, each with its own state directory. Shared by every program that embeds the
//! manager (the `ovm` command line, the Python package); they differ only in how a VMM
//! process is run ([`VmmCommand`]). Remote KVM servers need the per-server agent.

use ovm_core::sync::lock;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use ovm_core::Connector;
use ovm_core::model::{HypervisorKind, Server};
use ovm_core::{Error, Hypervisor, Result, ServerId};

use crate::hypervisor::{KvmHypervisor, KvmOptions};

/// Addresses that mean "this machine" for a KVM server.
pub const LOCAL_ADDRESSES: &[&str] = &["", "local", "localhost", "127.0.0.1", "::1"];

/// The program that runs one VM, and the arguments that make it a VMM: `ovm-vmm`, or a
/// program embedding the VMM (`ovm __vmm`, `python -m ovm._vmm`).
#[derive(Debug, Clone, Default)]
pub struct VmmCommand {
    /// The program; `None` finds `ovm-vmm` as [`KvmOptions`] does.
    pub program: Option<PathBuf>,
    /// Arguments before the VMM's own.
    pub prefix_args: Vec<String>,
}

/// Connects KVM servers at a local address.
///
/// [`KvmConnector::persistent`] makes each server's directory a run directory: VMM
/// processes are detached and outlive the process that started them, and the next process
/// to connect adopts them — so separate commands act on the same running VMs.
/// [`KvmConnector::new`] keeps VMMs tied to this process (a program that owns its VMs).
pub struct KvmConnector {
    state_dir: PathBuf,
    vmm: VmmCommand,
    detached: bool,
    hosts: Mutex<HashMap<ServerId, Arc<KvmHypervisor>>>,
    /// Held while a server is connected, so two callers never adopt the same VMMs twice.
    connecting: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for KvmConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvmConnector")
            .field("state_dir", &self.state_dir)
            .field("detached", &self.detached)
            .finish_non_exhaustive()
    }
}

impl KvmConnector {
    /// VM state under `state_dir/<server>/`; VMMs die with this process.
    pub fn new(state_dir: impl Into<PathBuf>, vmm: VmmCommand) -> Self {
        KvmConnector {
            state_dir: state_dir.into(),
            vmm,
            detached: false,
            hosts: Mutex::default(),
            connecting: tokio::sync::Mutex::default(),
        }
    }

    /// Run directories under `state_dir/<server>/`: VMMs outlive this process and are
    /// adopted by the next one.
    pub fn persistent(state_dir: impl Into<PathBuf>, vmm: VmmCommand) -> Self {
        KvmConnector {
            detached: true,
            ..Self::new(state_dir, vmm)
        }
    }

    /// The backend of a connected server.
    pub fn host(&self, server: ServerId) -> Option<Arc<KvmHypervisor>> {
        lock(&self.hosts).get(&server).cloned()
    }
}

/// A server's directory name: the first 13 characters of its id — unique enough for the
/// servers of one machine, and short, so that a VM's control socket
/// (`<state dir>/<server>/<vm id>/api.sock`) fits a socket address as it is under
/// `~/.local/share/ovm` (deeper ones go through `socket_path`).
fn server_dir_name(server: ServerId) -> String {
    server.to_string().chars().take(13).collect()
}

#[async_trait]
impl Connector for KvmConnector {
    fn kind(&self) -> HypervisorKind {
        HypervisorKind::Kvm
    }

    /// Every local address is this one machine.
    fn host_key(&self, server: &Server) -> Option<String> {
        LOCAL_ADDRESSES
            .contains(&server.address.as_str())
            .then(|| "local".to_string())
    }

    async fn connect(&self, server: &Server) -> Result<Arc<dyn Hypervisor>> {
        let _connecting = self.connecting.lock().await;
        if let Some(h) = self.host(server.id) {
            return Ok(h);
        }
        if !LOCAL_ADDRESSES.contains(&server.address.as_str()) {
            return Err(Error::unsupported(
                format!(
                    "KVM server {} at {:?}: only this machine (`local`) is reachable \
                     without the ovm agent",
                    server.name, server.address
                ),
                "kvm",
            ));
        }
        crate::kvm_usable().map_err(|why| Error::backend("kvm", why))?;
        let opts = KvmOptions {
            state_dir: self.state_dir.join(server_dir_name(server.id)),
            vmm_binary: self.vmm.program.clone(),
            vmm_prefix_args: self.vmm.prefix_args.clone(),
            detached: self.detached,
            ..KvmOptions::default()
        };
        let hv = Arc::new(KvmHypervisor::open(opts).await?);
        lock(&self.hosts).insert(server.id, hv.clone());
        Ok(hv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_directories_keep_socket_paths_short() {
        let id = ServerId::new();
        let name = server_dir_name(id);
        assert_eq!(name.len(), 13);
        assert!(id.to_string().starts_with(&name));
        let socket = format!(
            "/root/.local/share/ovm/kvm/{name}/{}/api.sock",
            ovm_core::VmId::new()
        );
        assert!(socket.len() <= 107, "{} bytes", socket.len());
    }
}
