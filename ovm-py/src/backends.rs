//! Which hypervisor backends a Python manager connects through, and the simulator's fault
//! injection (a test hook).
//!
//! Backends are chosen by name. `sim` (the in-memory simulator) is always there. `kvm`
//! is the extension point for the KVM backend: it becomes available here once
//! `ovm-backend-kvm` provides an `ovm_core::manager::Connector`; until then asking for it
//! raises `ovm.Unsupported` saying so.

use std::path::Path;
use std::sync::Arc;

use ovm_core::manager::{Connector, SimConnector};
use ovm_core::{Error, Result};

/// Names of every backend this build knows.
pub(crate) const KNOWN: &[&str] = &["sim", "kvm"];

/// Why a backend cannot be used on this machine, or `None` if it can.
pub(crate) fn unavailable_reason(name: &str) -> Option<String> {
    match name {
        "sim" => None,
        "kvm" => Some(
            "this build of the ovm Python package has no KVM connector yet \
             (ovm-backend-kvm does not provide an ovm_core::manager::Connector)"
                .into(),
        ),
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

/// Connectors for `names` (`None`: every backend usable here). Simulated hosts are kept
/// in `sim_dir` when given, so that other processes on the same store (the `ovm` CLI) see
/// the same VMs.
pub(crate) fn connectors(names: Option<Vec<String>>, sim_dir: Option<&Path>) -> Result<Connectors> {
    let names = match names {
        Some(n) => n,
        None => available().into_iter().map(String::from).collect(),
    };
    let sim = Arc::new(match sim_dir {
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
            // Every known name is matched above or refused by `unavailable_reason`.
            other => {
                return Err(Error::unsupported(format!("backend {other:?}"), "ovm-py"));
            }
        }
    }
    Ok(Connectors { sim, all, names })
}
