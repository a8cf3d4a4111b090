//! The backends of a local manager: simulated hosts, KVM on this machine where /dev/kvm
//! works, the file-server storage plugin and the simulated one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use ovm_backend_kvm::{KvmHypervisor, KvmOptions};
use ovm_core::manager::{Connector, SimConnector};
use ovm_core::model::{HypervisorKind, Server};
use ovm_core::sim::storage::SimStorage;
use ovm_core::{Error, Hypervisor, ManagerOptions, Result, ServerId};
use ovm_storage_connect::{FsConfig, FsPlugin};

/// Addresses that mean "this machine" for a KVM server.
const LOCAL: &[&str] = &["", "local", "localhost", "127.0.0.1", "::1"];

/// Connects KVM servers that are this machine: one `KvmHypervisor` (with its own state
/// directory) per server. Remote KVM servers need the per-server agent.
///
/// With `persistent` (what `local_options` uses) each server's directory is a run
/// directory: VMM processes are detached and outlive the process that started them, and
/// the next process to connect adopts them — so `ovm vm start` in one command and
/// `ovm vm stop` in another act on the same running VM. Without it, VMMs die with this
/// process (a program that owns its VMs, like the demo).
pub struct KvmConnector {
    state_dir: PathBuf,
    detached: bool,
    hosts: Mutex<HashMap<ServerId, Arc<KvmHypervisor>>>,
    /// Held while a server is connected, so two callers never adopt the same VMMs twice.
    connecting: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for KvmConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvmConnector")
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

impl KvmConnector {
    /// VM state (sockets, consoles, logs) under `state_dir/<server>/` (see `server_dir_name`); VMMs die with
    /// this process.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        KvmConnector {
            state_dir: state_dir.into(),
            detached: false,
            hosts: Mutex::default(),
            connecting: tokio::sync::Mutex::default(),
        }
    }

    /// Run directories under `state_dir/<server>/` (see `server_dir_name`): VMMs outlive this process and are
    /// adopted by the next one (see the type's docs).
    pub fn persistent(state_dir: impl Into<PathBuf>) -> Self {
        KvmConnector {
            detached: true,
            ..Self::new(state_dir)
        }
    }

    /// The backend of a connected server.
    pub fn host(&self, server: ServerId) -> Option<Arc<KvmHypervisor>> {
        self.hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&server)
            .cloned()
    }
}

/// How this program runs VMM processes: `ovm-vmm` where it is installed beside us, else
/// this very binary's hidden `__vmm` mode (the `ovm` program embeds the VMM).
fn vmm_command() -> (Option<PathBuf>, Vec<String>) {
    if let Ok(bin) = ovm_backend_kvm::hypervisor::find_vmm_binary() {
        return (Some(bin), Vec::new());
    }
    match std::env::current_exe() {
        Ok(exe) if exe.file_stem().is_some_and(|s| s == "ovm") => {
            (Some(exe), vec![VMM_MODE.into()])
        }
        _ => (None, Vec::new()),
    }
}

/// A server's directory name: the first 13 characters of its id. Short, because a VM's
/// control socket (`<state dir>/<server>/<vm id>/api.sock`) must fit the 107 bytes of a
/// Unix socket path even under `~/.local/share/ovm`; unique enough for the servers of one
/// machine.
fn server_dir_name(server: ServerId) -> String {
    server.to_string().chars().take(13).collect()
}

/// The argument that makes the `ovm` binary act as a VMM process.
pub const VMM_MODE: &str = "__vmm";

#[async_trait]
impl Connector for KvmConnector {
    fn kind(&self) -> HypervisorKind {
        HypervisorKind::Kvm
    }

    async fn connect(&self, server: &Server) -> Result<Arc<dyn Hypervisor>> {
        let _connecting = self.connecting.lock().await;
        if let Some(h) = self.host(server.id) {
            return Ok(h);
        }
        if !LOCAL.contains(&server.address.as_str()) {
            return Err(Error::unsupported(
                format!(
                    "KVM server {} at {:?}: only this machine (`local`) is reachable without the ovm agent",
                    server.name, server.address
                ),
                "kvm",
            ));
        }
        ovm_backend_kvm::kvm_usable().map_err(|why| Error::backend("kvm", why))?;
        let (vmm_binary, vmm_prefix_args) = vmm_command();
        let opts = KvmOptions {
            state_dir: self.state_dir.join(server_dir_name(server.id)),
            vmm_binary,
            vmm_prefix_args,
            detached: self.detached,
            ..KvmOptions::default()
        };
        let hv = Arc::new(KvmHypervisor::open(opts).await?);
        self.hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(server.id, hv.clone());
        Ok(hv)
    }
}

/// The backends of a manager on this machine, keeping their state under `dir`:
/// simulated hosts (persisted, so separate processes share them), KVM when /dev/kvm works,
/// the `fs` storage plugin (repositories anywhere on local file systems) and `sim` storage.
pub fn local_options(dir: &Path, initiator: &str) -> ManagerOptions {
    let mut connectors: Vec<Arc<dyn Connector>> =
        vec![Arc::new(SimConnector::persistent(dir.join("sim")))];
    if kvm_available() {
        connectors.push(Arc::new(KvmConnector::persistent(dir.join("kvm"))));
    }
    // In a Xen dom0, local Xen servers are driven through `xl`.
    if ovm_backend_xen::dom0_available().is_ok() {
        connectors.push(Arc::new(ovm_backend_xen::XenConnector::new(
            dir.join("xen"),
        )));
    }
    ManagerOptions {
        initiator: initiator.to_string(),
        connectors,
        storage: vec![
            Arc::new(FsPlugin::new(FsConfig::default())),
            Arc::new(SimStorage::new()),
        ],
        ..ManagerOptions::default()
    }
}

/// True where /dev/kvm can run VMs.
pub fn kvm_available() -> bool {
    ovm_backend_kvm::kvm_usable().is_ok()
}
