//! The backends of a local manager: simulated hosts, KVM on this machine where /dev/kvm
//! works, the file-server storage plugin and the simulated one.

use std::path::Path;
use std::sync::Arc;

use ovm_manager::ManagerOptions;
use ovm_manager::manager::{Connector, SimConnector};
use ovm_storage_connect::FsConfig;

pub use ovm_backend_kvm::{KvmConnector, VmmCommand};

/// How this program runs VMM processes: `ovm-vmm` where it is installed beside us, else
/// this very binary's hidden `__vmm` mode (the `ovm` program embeds the VMM).
pub fn vmm_command() -> VmmCommand {
    if let Ok(bin) = ovm_backend_kvm::hypervisor::find_vmm_binary() {
        return VmmCommand {
            program: Some(bin),
            prefix_args: Vec::new(),
        };
    }
    match std::env::current_exe() {
        Ok(exe) if exe.file_stem().is_some_and(|s| s == "ovm") => VmmCommand {
            program: Some(exe),
            prefix_args: vec![VMM_MODE.into()],
        },
        _ => VmmCommand::default(),
    }
}

/// The argument that makes the `ovm` binary act as a VMM process.
pub const VMM_MODE: &str = "__vmm";

/// The backends of a manager on this machine, keeping their state under `dir`:
/// simulated hosts (persisted, so separate processes share them), KVM when /dev/kvm works,
/// the `fs` storage plugin (repositories anywhere on local file systems) and `sim` storage.
pub fn local_options(dir: &Path, initiator: &str) -> ManagerOptions {
    let mut connectors: Vec<Arc<dyn Connector>> =
        vec![Arc::new(SimConnector::persistent(dir.join("sim")))];
    if kvm_available() {
        connectors.push(Arc::new(KvmConnector::persistent(
            dir.join("kvm"),
            vmm_command(),
        )));
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
        storage: ovm_storage_connect::builtin_plugins(FsConfig::default()),
        ..ManagerOptions::default()
    }
}

/// True where /dev/kvm can run VMs.
pub fn kvm_available() -> bool {
    ovm_backend_kvm::kvm_usable().is_ok()
}
