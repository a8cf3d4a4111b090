//! The backends of the `ovm` program: what [`ovm_backends::LocalBackends`] finds on this
//! machine, with this binary as the embedded VMM.

use std::path::Path;

use ovm_backends::LocalBackends;
use ovm_manager::ManagerOptions;

pub use ovm_backend_kvm::{KvmConnector, VmmCommand};

/// How this program runs VMM processes: `ovm-vmm` where it is installed beside us, else
/// this very binary's hidden `__vmm` mode (the `ovm` program embeds the VMM).
pub fn vmm_command() -> VmmCommand {
    ovm_backends::vmm_command(embedded_vmm())
}

/// This binary, when it is the `ovm` program, as the embedded VMM.
fn embedded_vmm() -> Option<(std::path::PathBuf, Vec<String>)> {
    std::env::current_exe()
        .ok()
        .filter(|exe| exe.file_stem().is_some_and(|s| s == "ovm"))
        .map(|exe| (exe, vec![VMM_MODE.to_string()]))
}

/// The argument that makes the `ovm` binary act as a VMM process.
pub const VMM_MODE: &str = "__vmm";

/// The manager's identity (its TLS client certificate, which the agents it owns let in),
/// kept under `dir/identity` and made on first use.
pub fn manager_identity(dir: &Path) -> ovm_core::Result<ovm_agent::Identity> {
    ovm_agent::Identity::load_or_create(&dir.join("identity"), "manager")
        .map_err(|e| ovm_core::Error::backend("manager", e.to_string()))
}

/// The backends of a manager on this machine, keeping their state under `dir` and
/// sharing it with every process using the same directory: simulated hosts, KVM where
/// /dev/kvm works, Xen in a dom0, the `fs` and `sim` storage plugins — and servers on
/// other machines through their agents.
pub fn local_options(dir: &Path, initiator: &str) -> ovm_core::Result<ManagerOptions> {
    let mut local = LocalBackends::shared(dir);
    if let Some((program, args)) = embedded_vmm() {
        local = local.embedded_vmm(program, args);
    }
    let backends = local.build()?;
    Ok(ManagerOptions {
        initiator: initiator.to_string(),
        connectors: ovm_agent::with_agents(backends.connectors, &manager_identity(dir)?),
        storage: backends.storage,
        ..ManagerOptions::default()
    })
}

/// True where /dev/kvm can run VMs.
pub fn kvm_available() -> bool {
    ovm_backends::BackendKind::Kvm.is_available()
}
