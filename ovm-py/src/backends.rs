//! Which hypervisor backends a Python manager connects through.
//!
//! Backends are chosen by name. `sim` (the in-memory simulator) is always there. `kvm`
//! (with the default cargo feature `kvm`) runs VMs on this machine's /dev/kvm through
//! `ovm-backend-kvm`, where /dev/kvm works: each VM is a VMM process, and the VMM is
//! embedded in this extension (`python -m ovm._vmm`), so a pip-installed package needs no
//! other binary.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ovm_core::{Error, Result};
use ovm_manager::manager::{Connector, SimConnector};

/// Names of every backend this package knows.
pub(crate) const KNOWN: &[&str] = &["sim", "kvm"];

/// Why a backend cannot be used on this machine, or `None` if it can.
pub(crate) fn unavailable_reason(name: &str) -> Option<String> {
    match name {
        "sim" => None,
        "kvm" => kvm::unavailable_reason(),
        other => Some(format!(
            "unknown backend {other:?}; known: {}",
            KNOWN.join(", ")
        )),
    }
}

/// The backends usable here, in the order of [`KNOWN`].
pub(crate) fn available() -> Vec<&'static str> {
    KNOWN
        .iter()
        .copied()
        .filter(|b| unavailable_reason(b).is_none())
        .collect()
}

/// The connectors of a manager.
pub(crate) struct Connectors {
    /// The simulator's (kept for fault injection).
    pub sim: Arc<SimConnector>,
    /// All of them, the simulator's included.
    pub all: Vec<Arc<dyn Connector>>,
    /// Their names.
    pub names: Vec<String>,
}

/// Where the backends of a manager keep their state.
pub(crate) struct StateDirs {
    /// Simulated hosts: beside a file store (where the `ovm` CLI keeps them, so that both
    /// see the same VMs); in memory for an in-memory store.
    pub sim: Option<PathBuf>,
    /// KVM VM directories (sockets, consoles).
    pub kvm: PathBuf,
    /// KVM VMs outlive this process and are shared with other processes on the same
    /// store (the `ovm` CLI): true beside a file store.
    pub kvm_shared: bool,
}

impl StateDirs {
    /// The directories for a store at `store` (`None`: in memory).
    pub fn for_store(store: Option<&Path>) -> Self {
        match store {
            Some(p) => {
                let dir = p
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                StateDirs {
                    sim: Some(dir.join("sim")),
                    kvm: dir.join("kvm"),
                    kvm_shared: true,
                }
            }
            None => StateDirs {
                sim: None,
                kvm: std::env::temp_dir().join(format!("ovm-py-kvm-{}", std::process::id())),
                kvm_shared: false,
            },
        }
    }
}

/// Connectors for `names` (`None`: every backend usable here). `python` is the
/// interpreter that runs embedded VMM processes.
pub(crate) fn connectors(
    names: Option<Vec<String>>,
    dirs: &StateDirs,
    python: Option<PathBuf>,
) -> Result<Connectors> {
    let names = match names {
        Some(n) => n,
        None => available().into_iter().map(String::from).collect(),
    };
    let sim = Arc::new(match &dirs.sim {
        Some(dir) => SimConnector::persistent(dir),
        None => SimConnector::new(),
    });
    let mut all: Vec<Arc<dyn Connector>> = Vec::new();
    for name in &names {
        if let Some(reason) = unavailable_reason(name) {
            return Err(Error::unsupported(
                format!("backend {name:?}: {reason}"),
                "ovm-py",
            ));
        }
        match name.as_str() {
            "sim" => all.push(sim.clone()),
            "kvm" => all.push(kvm::connector(dirs, python.clone())?),
            // `unavailable_reason` refuses every other name.
            other => {
                return Err(Error::unsupported(format!("backend {other:?}"), "ovm-py"));
            }
        }
    }
    Ok(Connectors { sim, all, names })
}

#[cfg(feature = "kvm")]
mod kvm {
    use std::path::PathBuf;
    use std::sync::Arc;

    use ovm_backend_kvm::{KvmConnector, VmmCommand};
    use ovm_core::{Error, Result};
    use ovm_manager::manager::Connector;

    use super::StateDirs;

    pub(super) fn unavailable_reason() -> Option<String> {
        ovm_backend_kvm::kvm_usable().err()
    }

    /// The KVM connector the `ovm` CLI uses too, running VMMs through an installed
    /// `ovm-vmm` (or $OVM_VMM_BIN), else through the VMM embedded in this extension, run
    /// by the interpreter that loaded it.
    pub(super) fn connector(
        dirs: &StateDirs,
        python: Option<PathBuf>,
    ) -> Result<Arc<dyn Connector>> {
        let vmm = match ovm_backend_kvm::hypervisor::find_vmm_binary() {
            Ok(bin) => VmmCommand {
                program: Some(bin),
                prefix_args: Vec::new(),
            },
            Err(_) => match python {
                Some(py) => VmmCommand {
                    program: Some(py),
                    prefix_args: vec!["-m".into(), "ovm._vmm".into()],
                },
                None => {
                    return Err(Error::unsupported(
                        "running VMM processes: no ovm-vmm binary and no Python interpreter \
                         path (sys.executable is empty)",
                        "kvm",
                    ));
                }
            },
        };
        Ok(Arc::new(if dirs.kvm_shared {
            KvmConnector::persistent(dirs.kvm.clone(), vmm)
        } else {
            KvmConnector::new(dirs.kvm.clone(), vmm)
        }))
    }

    /// Runs one VMM in this process (`python -m ovm._vmm ARGS`) until its VM exits, then
    /// exits the process.
    pub(crate) fn vmm_main(args: Vec<String>) -> ! {
        ovm_backend_kvm::vmm_process::run(args.into_iter())
    }
}

#[cfg(not(feature = "kvm"))]
mod kvm {
    use std::path::PathBuf;
    use std::sync::Arc;

    use ovm_core::{Error, Result};
    use ovm_manager::manager::Connector;

    pub(super) fn unavailable_reason() -> Option<String> {
        Some("this build of the ovm Python package has no KVM backend (cargo feature `kvm`)".into())
    }

    pub(super) fn connector(
        _: &super::StateDirs,
        _: Option<PathBuf>,
    ) -> Result<Arc<dyn Connector>> {
        Err(Error::unsupported("KVM", "ovm-py"))
    }

    pub(crate) fn vmm_main(_: Vec<String>) -> ! {
        eprintln!("ovm._vmm: this build has no KVM backend (cargo feature `kvm`)");
        std::process::exit(2)
    }
}

/// The embedded VMM's entry point (`python -m ovm._vmm`): never returns.
#[pyo3::pyfunction]
pub(crate) fn _vmm_main(py: pyo3::Python<'_>, args: Vec<String>) {
    py.detach(move || kvm::vmm_main(args))
}
