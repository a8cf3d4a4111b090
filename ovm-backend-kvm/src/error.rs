//! The errors of the VMM: each names what failed and why.

use std::io;

/// Result alias for the VMM.
pub type Result<T, E = VmmError> = std::result::Result<T, E>;

/// What can go wrong while building or running a VM.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VmmError {
    /// `/dev/kvm` could not be opened or used.
    #[error("/dev/kvm unusable: {0}")]
    KvmUnavailable(String),
    /// A KVM ioctl failed.
    #[error("KVM {op} failed: {source}")]
    Kvm {
        /// The ioctl, e.g. `KVM_CREATE_VM`.
        op: &'static str,
        /// The error KVM returned.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Guest memory could not be set up or accessed.
    #[error("guest memory: {0}")]
    Memory(String),
    /// The configuration is invalid.
    #[error("invalid {field}: {reason}")]
    InvalidConfig {
        /// The offending field.
        field: String,
        /// Why.
        reason: String,
    },
    /// The kernel or guest image could not be loaded.
    #[error("cannot load kernel {path}: {reason}")]
    KernelLoad {
        /// The image.
        path: String,
        /// Why.
        reason: String,
    },
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The operation is not valid in the VM's current state.
    #[error("VM is {state}: cannot {op}")]
    InvalidState {
        /// The state.
        state: String,
        /// What was attempted.
        op: String,
    },
}

impl VmmError {
    /// Wraps a KVM error with the ioctl that failed.
    pub fn kvm(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmmError {
        move |source| VmmError::Kvm { op, source }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> VmmError {
        let what = what.into();
        move |source| VmmError::Io { what, source }
    }

    /// An `InvalidConfig` error.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> VmmError {
        VmmError::InvalidConfig {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<VmmError> for ovm_core::Error {
    fn from(e: VmmError) -> Self {
        match e {
            VmmError::InvalidConfig { field, reason } => ovm_core::Error::invalid(field, reason),
            VmmError::KernelLoad { path, reason } => {
                ovm_core::Error::invalid("vm.boot.kernel", format!("{path}: {reason}"))
            }
            other => ovm_core::Error::backend_source("kvm", other),
        }
    }
}
