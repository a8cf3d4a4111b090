//! Errors from running `xl`: each keeps the command and what `xl` said.

use std::sync::Arc;
use std::time::Duration;

/// Name of this backend in `ovm_core::Error`s.
pub const BACKEND: &str = "xen";

/// What went wrong while running or reading `xl`.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum XlError {
    /// `xl` could not be started at all (not installed, not executable).
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program that was run.
        program: String,
        /// The OS error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// `xl` ran and failed; `message` is what it printed (libxl's errors included).
    #[error("`{command}` failed ({status}): {message}")]
    Failed {
        /// The command line, e.g. `xl create /var/lib/ovm/xen/<id>/domain.cfg`.
        command: String,
        /// Its exit status, or how it ended.
        status: String,
        /// What it printed on stderr (stdout when stderr was empty), trimmed.
        message: String,
    },
    /// `xl` did not finish in time and was killed.
    #[error("`{command}` did not finish within {after:?}")]
    TimedOut {
        /// The command line.
        command: String,
        /// How long it was given.
        after: Duration,
    },
    /// `xl` printed something this backend cannot read.
    #[error("cannot parse {what}: {reason}")]
    Parse {
        /// What was being read, e.g. `xl list -l output`.
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },
}

impl XlError {
    /// What `xl` said, for `Failed`; the error's text otherwise.
    pub fn message(&self) -> String {
        match self {
            XlError::Failed { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    /// True when `xl` was killed by a signal (it aborted) rather than exiting.
    pub fn is_signal(&self) -> bool {
        matches!(self, XlError::Failed { status, .. } if status.contains("signal"))
    }

    /// True when `xl` refused a domain name or id because no such domain runs.
    pub fn is_no_such_domain(&self) -> bool {
        matches!(self, XlError::Failed { message, .. }
            if message.contains("is an invalid domain identifier"))
    }

    /// A parse error.
    pub(crate) fn parse(what: &'static str, reason: impl Into<String>) -> Self {
        XlError::Parse {
            what,
            reason: reason.into(),
        }
    }
}

impl From<XlError> for ovm_core::Error {
    fn from(e: XlError) -> Self {
        match e {
            XlError::TimedOut { command, after } => ovm_core::Error::Timeout {
                what: command,
                after,
            },
            other => ovm_core::Error::Backend {
                backend: BACKEND.to_string(),
                message: other.to_string(),
                source: Some(Arc::new(other)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_keep_xl_message_in_the_core_error() {
        let e = XlError::Failed {
            command: "xl create /tmp/d.cfg".into(),
            status: "exit status 3".into(),
            message: "libxl: error: libxl_create.c:1640: cannot (re-)build domain: -3".into(),
        };
        let core: ovm_core::Error = e.into();
        match core {
            ovm_core::Error::Backend {
                backend, message, ..
            } => {
                assert_eq!(backend, "xen");
                assert!(message.contains("xl create /tmp/d.cfg"), "{message}");
                assert!(message.contains("cannot (re-)build domain"), "{message}");
            }
            other => panic!("expected Backend, got {other:?}"),
        }
    }

    #[test]
    fn timeouts_become_core_timeouts() {
        let e = XlError::TimedOut {
            command: "xl save g /x".into(),
            after: Duration::from_secs(3),
        };
        assert!(matches!(
            ovm_core::Error::from(e),
            ovm_core::Error::Timeout { after, .. } if after == Duration::from_secs(3)
        ));
    }

    #[test]
    fn missing_domains_are_recognised() {
        let e = XlError::Failed {
            command: "xl pause probe".into(),
            status: "exit status 1".into(),
            message: "probe is an invalid domain identifier (rc=-6)".into(),
        };
        assert!(e.is_no_such_domain());
    }
}
