//! Failures of the file system and of `qemu-img`, with the path or command they concern.
//!
//! Plugins answer with `ovm_core::Error`; these convert into it. A full disk becomes
//! `Error::Capacity`, everything else `Error::Backend` naming the plugin and keeping the
//! cause as its source.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use ovm_core::Error;

/// Name the file-server plugin registers under, and the backend named in its errors.
pub const FS_PLUGIN_NAME: &str = "fs";

/// What went wrong below the plugin, and on what.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    /// A system call on a path failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was attempted (`create`, `fsync`, `rename`, ...).
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The system's answer.
        #[source]
        source: io::Error,
    },
    /// A file ovm wrote is not what ovm writes (damaged or edited by hand).
    #[error("{}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `qemu-img` could not be run, or failed.
    #[error("qemu-img {action} {}: {message}", path.display())]
    QemuImg {
        /// `info` or `convert`.
        action: &'static str,
        /// The image concerned.
        path: PathBuf,
        /// What went wrong (its stderr, trimmed).
        message: String,
    },
}

impl FsError {
    /// An `Io` error.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        FsError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Returns a closure building an `Io` error, for `map_err`.
    pub fn at(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| FsError::io(op, path, source)
    }
}

impl From<FsError> for Error {
    fn from(e: FsError) -> Self {
        if let FsError::Io { source, .. } = &e
            && matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
        {
            return Error::capacity(e.to_string());
        }
        Error::Backend {
            backend: FS_PLUGIN_NAME.to_string(),
            message: e.to_string(),
            source: Some(Arc::new(e)),
        }
    }
}

/// Shorthand: a failed system call as an `ovm_core::Error`.
pub(crate) fn io_err(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
    FsError::io(op, path, source).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_a_capacity_error_naming_the_path() {
        let e: Error = FsError::io(
            "write",
            "/repo/VirtualDisks/x.img",
            io::Error::from_raw_os_error(libc::ENOSPC),
        )
        .into();
        assert_eq!(e.code(), "capacity");
        assert!(e.to_string().contains("/repo/VirtualDisks/x.img"), "{e}");
    }

    #[test]
    fn other_failures_are_backend_errors_of_the_fs_plugin() {
        let e: Error = FsError::io(
            "open",
            "/repo/.ovsrepo",
            io::Error::from_raw_os_error(libc::EACCES),
        )
        .into();
        assert!(
            matches!(&e, Error::Backend { backend, .. } if backend == "fs"),
            "{e:?}"
        );
        assert!(e.to_string().contains("open /repo/.ovsrepo"), "{e}");
    }
}
