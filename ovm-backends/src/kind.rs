//! The hypervisor backends this build knows, by name, and whether this machine can use them.

use std::fmt;
use std::str::FromStr;

use ovm_core::Error;

/// A hypervisor backend a manager (or an agent) on this machine can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BackendKind {
    /// The in-memory simulator: always there.
    Sim,
    /// ovm's VMM on /dev/kvm.
    Kvm,
    /// Xen through `xl`, in a dom0.
    Xen,
}

impl BackendKind {
    /// Every backend, in the order listings show them.
    pub const ALL: [BackendKind; 3] = [BackendKind::Sim, BackendKind::Kvm, BackendKind::Xen];

    /// The name users give (`sim`, `kvm`, `xen`).
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Sim => "sim",
            BackendKind::Kvm => "kvm",
            BackendKind::Xen => "xen",
        }
    }

    /// Why this machine (or this build) cannot use the backend; `None` if it can.
    pub fn unavailable_reason(self) -> Option<String> {
        match self {
            BackendKind::Sim => None,
            BackendKind::Kvm => kvm_unavailable_reason(),
            BackendKind::Xen => xen_unavailable_reason(),
        }
    }

    /// True where [`BackendKind::unavailable_reason`] is `None`.
    pub fn is_available(self) -> bool {
        self.unavailable_reason().is_none()
    }
}

/// The backends usable here, in the order of [`BackendKind::ALL`].
pub fn available() -> Vec<BackendKind> {
    BackendKind::ALL
        .into_iter()
        .filter(|k| k.is_available())
        .collect()
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        BackendKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                let known: Vec<&str> = BackendKind::ALL.iter().map(|k| k.name()).collect();
                Error::unsupported(
                    format!("the backend {s:?} (known: {})", known.join(", ")),
                    "ovm",
                )
            })
    }
}

#[cfg(feature = "kvm")]
fn kvm_unavailable_reason() -> Option<String> {
    ovm_backend_kvm::kvm_usable().err()
}

#[cfg(not(feature = "kvm"))]
fn kvm_unavailable_reason() -> Option<String> {
    Some("this build has no KVM backend (cargo feature `kvm`)".into())
}

#[cfg(feature = "xen")]
fn xen_unavailable_reason() -> Option<String> {
    ovm_backend_xen::dom0_available().err()
}

#[cfg(not(feature = "xen"))]
fn xen_unavailable_reason() -> Option<String> {
    Some("this build has no Xen backend (cargo feature `xen`)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_unknown_ones_list_the_known() {
        for k in BackendKind::ALL {
            assert_eq!(k.name().parse::<BackendKind>().unwrap(), k);
            assert_eq!(
                k.to_string().to_uppercase().parse::<BackendKind>().unwrap(),
                k
            );
        }
        let err = "vmware".parse::<BackendKind>().unwrap_err().to_string();
        assert!(
            err.contains("\"vmware\"") && err.contains("sim, kvm, xen"),
            "{err}"
        );
    }

    #[test]
    fn the_simulator_is_always_available_and_listed_first() {
        assert_eq!(available().first(), Some(&BackendKind::Sim));
        assert!(BackendKind::Sim.unavailable_reason().is_none());
        for k in available() {
            assert!(k.is_available());
        }
    }
}
