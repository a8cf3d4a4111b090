//! The one error type of ovm-core: variants a caller can act on.

use std::sync::Arc;
use std::time::Duration;

/// Result alias used throughout ovm.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Source error of a backend, shareable so that errors can be cloned to every waiter of a job.
pub type BackendSource = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in ovm, said so that a caller can act on it.
///
/// Each variant names the object and the cause. Errors are `Clone` because one job's
/// outcome is delivered to every handle waiting on it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object does not exist.
    #[error("{kind} {id} not found")]
    NotFound {
        /// What kind of object (`vm`, `server`, `pool`, ...).
        kind: &'static str,
        /// The id or name that was looked up.
        id: String,
    },
    /// The object already exists (usually: a name is taken).
    #[error("{kind} {id} already exists")]
    AlreadyExists {
        /// What kind of object.
        kind: &'static str,
        /// The id or name that is taken.
        id: String,
    },
    /// An update was based on a stale revision: someone else changed the object first.
    #[error("conflict on {kind} {id}: expected revision {expected}, found {found}")]
    Conflict {
        /// What kind of object.
        kind: String,
        /// Which object.
        id: String,
        /// The revision the writer based its change on (0: expected the object to be absent).
        expected: u64,
        /// The revision actually stored (0: absent).
        found: u64,
    },
    /// A specification or argument is invalid.
    #[error("invalid {field}: {reason}")]
    InvalidSpec {
        /// The offending field, e.g. `vm.memory_mib`.
        field: String,
        /// Why it is refused.
        reason: String,
    },
    /// The operation is not allowed in the object's current state.
    #[error("{kind} {id} is {state}: cannot {op}")]
    InvalidState {
        /// What kind of object.
        kind: &'static str,
        /// Which object.
        id: String,
        /// Its current state.
        state: String,
        /// What was attempted.
        op: String,
    },
    /// Not enough capacity (memory, CPU, servers, space) to do what was asked.
    #[error("insufficient capacity: {reason}")]
    Capacity {
        /// What ran out, and where.
        reason: String,
    },
    /// The backend does not support this operation.
    #[error("{backend} does not support {op}")]
    Unsupported {
        /// The operation, e.g. `migrate`.
        op: String,
        /// The backend, e.g. `kvm`.
        backend: String,
    },
    /// A backend (hypervisor, storage plugin, network, store) failed.
    #[error("{backend}: {message}")]
    Backend {
        /// Which backend failed.
        backend: String,
        /// What it said.
        message: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<BackendSource>,
    },
    /// A wait ran out of time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long was waited.
        after: Duration,
    },
    /// The operation was aborted on request.
    #[error("aborted: {what}")]
    Aborted {
        /// What was aborted.
        what: String,
    },
}

impl Error {
    /// A `NotFound` error.
    pub fn not_found(kind: &'static str, id: impl ToString) -> Self {
        Error::NotFound {
            kind,
            id: id.to_string(),
        }
    }

    /// An `InvalidSpec` error.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidSpec {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// An `Unsupported` error.
    pub fn unsupported(op: impl Into<String>, backend: impl Into<String>) -> Self {
        Error::Unsupported {
            op: op.into(),
            backend: backend.into(),
        }
    }

    /// A `Backend` error with a message only.
    pub fn backend(backend: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Backend {
            backend: backend.into(),
            message: message.into(),
            source: None,
        }
    }

    /// A `Backend` error wrapping a source error.
    pub fn backend_source(
        backend: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Backend {
            backend: backend.into(),
            message: source.to_string(),
            source: Some(Arc::new(source)),
        }
    }

    /// A `Capacity` error.
    pub fn capacity(reason: impl Into<String>) -> Self {
        Error::Capacity {
            reason: reason.into(),
        }
    }

    /// A short, stable name of the variant, for scripts (`--json`) and bindings.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "not_found",
            Error::AlreadyExists { .. } => "already_exists",
            Error::Conflict { .. } => "conflict",
            Error::InvalidSpec { .. } => "invalid_spec",
            Error::InvalidState { .. } => "invalid_state",
            Error::Capacity { .. } => "capacity",
            Error::Unsupported { .. } => "unsupported",
            Error::Backend { .. } => "backend",
            Error::Timeout { .. } => "timeout",
            Error::Aborted { .. } => "aborted",
        }
    }

    /// True for errors caused by what the caller asked (bad input, missing object, wrong
    /// state), as opposed to failures of the system.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Error::NotFound { .. }
                | Error::AlreadyExists { .. }
                | Error::Conflict { .. }
                | Error::InvalidSpec { .. }
                | Error::InvalidState { .. }
                | Error::Capacity { .. }
                | Error::Unsupported { .. }
        )
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::backend_source("serde_json", e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::backend_source("io", e)
    }
}
