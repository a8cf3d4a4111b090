//! The identity file `.ovsrepo`: which repository this is, and which pool owns it.

use std::path::Path;

use ovm_core::id::{PoolId, RepoId, Timestamp};
use ovm_core::{Error, Result};
use serde::{Deserialize, Serialize};

use super::layout::Layout;
use crate::durable;
use crate::error::FsError;

/// Version of the on-disk format this code writes and understands.
pub const FORMAT_VERSION: u32 = 1;

/// Largest identity file accepted.
const MAX_IDENTITY_BYTES: u64 = 64 << 10;

/// The content of `.ovsrepo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepoIdentity {
    /// On-disk format version; a newer one is refused rather than misread.
    pub format_version: u32,
    /// The repository's id.
    pub uuid: RepoId,
    /// Its name.
    pub name: String,
    /// The pool that owns it; `None` until a pool takes it.
    #[serde(default)]
    pub pool: Option<PoolId>,
    /// The plugin that made it.
    pub plugin: String,
    /// When it was made.
    pub created_at: Timestamp,
}

impl RepoIdentity {
    /// Reads the identity of the repository at `layout`; `NotFound` if there is none.
    pub fn read(layout: &Layout) -> Result<Self> {
        let path = layout.identity();
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                return Err(FsError::Corrupt {
                    path,
                    reason: "not a regular file".into(),
                }
                .into());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::not_found(
                    "repository",
                    layout.root().display().to_string(),
                ));
            }
            Err(e) => return Err(crate::error::io_err("stat", &path, e)),
        }
        Self::parse(&path, &durable::read_small(&path, MAX_IDENTITY_BYTES)?)
    }

    fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        let id: RepoIdentity = serde_json::from_slice(bytes).map_err(|e| FsError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("not a repository identity: {e}"),
        })?;
        if id.format_version > FORMAT_VERSION {
            return Err(Error::InvalidState {
                kind: "repository",
                id: path.display().to_string(),
                state: format!(
                    "in on-disk format {} (this ovm understands up to {FORMAT_VERSION})",
                    id.format_version
                ),
                op: "open".into(),
            });
        }
        Ok(id)
    }

    /// Writes the identity atomically (the commit point of creating a repository).
    pub fn write(&self, layout: &Layout) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self)?;
        durable::write_atomic(&layout.tmp_dir(), &layout.identity(), &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(dir.path().to_path_buf());
        layout.ensure_dirs().expect("dirs");
        (dir, layout)
    }

    #[test]
    fn identity_round_trips() {
        let (_dir, layout) = layout();
        let id = RepoIdentity {
            format_version: FORMAT_VERSION,
            uuid: RepoId::new(),
            name: "repo".into(),
            pool: Some(PoolId::new()),
            plugin: "fs".into(),
            created_at: Timestamp::now(),
        };
        id.write(&layout).expect("write");
        assert_eq!(RepoIdentity::read(&layout).expect("read"), id);
    }

    #[test]
    fn missing_corrupt_and_newer_identities_are_told_apart() {
        let (_dir, layout) = layout();
        assert_eq!(
            RepoIdentity::read(&layout).expect_err("missing").code(),
            "not_found"
        );
        std::fs::write(layout.identity(), b"{ not json").expect("write");
        let err = RepoIdentity::read(&layout).expect_err("corrupt");
        assert!(
            err.to_string().contains("not a repository identity"),
            "{err}"
        );
        let newer = format!(
            r#"{{"format_version":99,"uuid":"{}","name":"r","plugin":"fs","created_at":0}}"#,
            RepoId::new()
        );
        std::fs::write(layout.identity(), newer).expect("write");
        let err = RepoIdentity::read(&layout).expect_err("newer");
        assert_eq!(err.code(), "invalid_state");
        assert!(err.to_string().contains("format 99"), "{err}");
    }
}
