//! Which hypervisor backends a Python manager connects through: chosen by name and built
//! by [`ovm_backends::LocalBackends`], as the `ovm` CLI builds its own.
//!
//! `sim` (the in-memory simulator) is always there; `kvm` (cargo feature `kvm`, on by
//! default) where /dev/kvm works, with the VMM embedded in this extension (`python -m
//! ovm._vmm`) so a pip-installed package needs no other binary; `xen` where this machine is
//! a Xen dom0.

use std::path::{Path, PathBuf};

use ovm_backends::{BackendKind, Backends, LocalBackends};
use ovm_core::Result;

/// The backends usable here, by name.
pub(crate) fn available() -> Vec<&'static str> {
    ovm_backends::available()
        .into_iter()
        .map(BackendKind::name)
        .collect()
}

/// The backends of a manager on the store at `store` (`None`: in memory) using `names`
/// (`None`: every backend usable here). `python` is the interpreter that runs embedded
/// VMM processes.
pub(crate) fn build(
    names: Option<Vec<String>>,
    store: Option<&Path>,
    python: Option<PathBuf>,
) -> Result<Backends> {
    let mut local = match store {
        // Beside a file store, where the `ovm` CLI keeps them: both see the same VMs.
        Some(p) => LocalBackends::shared(
            p.parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        ),
        None => LocalBackends::private(
            std::env::temp_dir().join(format!("ovm-py-{}", std::process::id())),
        ),
    };
    if let Some(names) = names {
        let kinds = names
            .iter()
            .map(|n| n.parse::<BackendKind>())
            .collect::<Result<Vec<_>>>()?;
        local = local.only(kinds);
    }
    if let Some(python) = python {
        local = local.embedded_vmm(python, vec!["-m".into(), "ovm._vmm".into()]);
    }
    local.build()
}

/// The manager's TLS identity: beside a file store (shared with the `ovm` CLI on the same
/// store, so both are the same owner to their agents), made afresh for one in memory.
pub(crate) fn identity(store: Option<&Path>) -> Result<ovm_agent::Identity> {
    let made = match store {
        Some(p) => ovm_agent::Identity::load_or_create(
            &p.parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .join("identity"),
            "manager",
        ),
        None => ovm_agent::Identity::generate("manager"),
    };
    made.map_err(|e| ovm_core::Error::backend("manager", e.to_string()))
}

/// Runs one VMM in this process (`python -m ovm._vmm ARGS`) until its VM exits, then
/// exits the process.
#[cfg(feature = "kvm")]
fn vmm_main(args: Vec<String>) -> ! {
    ovm_backend_kvm::vmm_process::run(args.into_iter())
}

#[cfg(not(feature = "kvm"))]
fn vmm_main(_: Vec<String>) -> ! {
    eprintln!("ovm._vmm: this build has no KVM backend (cargo feature `kvm`)");
    std::process::exit(2)
}

/// The embedded VMM's entry point (`python -m ovm._vmm`): never returns.
#[pyo3::pyfunction]
pub(crate) fn _vmm_main(py: pyo3::Python<'_>, args: Vec<String>) {
    py.detach(move || vmm_main(args))
}
