//! The `StoragePlugin` trait (Storage Connect): discovering repositories and managing the
//! volumes in them.

use std::path::PathBuf;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::id::{PoolId, RepoId, VolumeId};
use crate::model::{Repository, Volume, VolumeFormat};
use crate::op::OpContext;
use crate::{Error, Result};

/// Whether a plugin serves files on a file system or LUNs of an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageKind {
    /// A mounted file system (local disk, NFS, OCFS2).
    FileServer,
    /// A block storage array.
    StorageArray,
}

/// What a plugin can do; the manager chooses operations by these.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StorageCapabilities {
    /// Volumes allocate space only when written.
    pub thin_provisioning: bool,
    /// Clones share blocks with their source (instant, whatever the size).
    pub reflink_clone: bool,
    /// Clones by copying (slower, with progress).
    pub copy_clone: bool,
    /// Point-in-time snapshots.
    pub snapshot: bool,
    /// Resizing volumes.
    pub resize: bool,
    /// Every server of a pool reaches the same repositories.
    pub shared: bool,
    /// Formats it imports and exports (besides raw).
    pub import_formats: Vec<VolumeFormat>,
}

/// Who a plugin is and what it can do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginInfo {
    /// Registered name (`fs`, `sim`).
    pub name: String,
    /// Version of the plugin.
    pub version: String,
    /// File server or array.
    pub kind: StorageKind,
    /// Capabilities.
    pub capabilities: StorageCapabilities,
}

/// How a hypervisor reaches a volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum VolumeAccess {
    /// A file or block device path on the server.
    Path {
        /// The path.
        path: PathBuf,
        /// Its format.
        format: VolumeFormat,
    },
    /// An NBD export.
    Nbd {
        /// `nbd://host:port/export` or `nbd+unix:///export?socket=...`.
        url: String,
    },
    /// No real storage (the simulator).
    Simulated {
        /// The volume.
        volume: VolumeId,
    },
}

/// What to create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeSpec {
    /// Name, unique in the repository.
    pub name: String,
    /// Virtual size, bytes.
    pub size_bytes: u64,
    /// Format (plugins may support only raw).
    pub format: VolumeFormat,
}

impl VolumeSpec {
    /// Largest volume accepted: 64 TiB.
    pub const MAX_SIZE: u64 = 64 << 40;

    /// A raw volume.
    pub fn raw(name: impl Into<String>, size_bytes: u64) -> Self {
        VolumeSpec {
            name: name.into(),
            size_bytes,
            format: VolumeFormat::Raw,
        }
    }

    /// Checks name and size.
    pub fn validate(&self) -> Result<()> {
        crate::model::validate_name("volume.name", &self.name)?;
        validate_size(self.size_bytes)
    }
}

/// Checks a volume size: not zero, at most `VolumeSpec::MAX_SIZE`.
pub fn validate_size(size_bytes: u64) -> Result<()> {
    if size_bytes == 0 || size_bytes > VolumeSpec::MAX_SIZE {
        return Err(Error::invalid(
            "volume.size_bytes",
            format!(
                "{size_bytes} is outside 1..={} (64 TiB)",
                VolumeSpec::MAX_SIZE
            ),
        ));
    }
    Ok(())
}

/// A Storage Connect plugin.
///
/// Repositories are identified by `RepoId`; a plugin keeps the repositories it has opened.
/// Operations a plugin lacks return `Error::Unsupported` (the defaults here).
#[async_trait]
pub trait StoragePlugin: Send + Sync {
    /// Name, version, kind and capabilities.
    fn info(&self) -> PluginInfo;

    /// Repositories found where this plugin looks (configured roots), with space figures.
    async fn discover(&self) -> Result<Vec<Repository>>;

    /// Creates a new repository at `location`, owned by `pool`, and opens it.
    async fn create_repository(
        &self,
        name: &str,
        location: &str,
        pool: Option<PoolId>,
    ) -> Result<Repository>;

    /// Opens an existing repository for `pool`; refused if another pool owns it or another
    /// manager holds it.
    async fn open_repository(&self, location: &str, pool: Option<PoolId>) -> Result<Repository>;

    /// Releases an opened repository (drops locks).
    async fn close_repository(&self, repo: RepoId) -> Result<()>;

    /// The volumes of a repository.
    async fn list_volumes(&self, repo: RepoId) -> Result<Vec<Volume>>;

    /// One volume.
    async fn volume(&self, repo: RepoId, volume: VolumeId) -> Result<Volume> {
        self.list_volumes(repo)
            .await?
            .into_iter()
            .find(|v| v.id == volume)
            .ok_or_else(|| Error::not_found("volume", volume))
    }

    /// Creates a volume.
    async fn create_volume(&self, repo: RepoId, spec: &VolumeSpec) -> Result<Volume>;

    /// Resizes a volume; shrinking is refused unless `allow_shrink`.
    async fn resize_volume(
        &self,
        repo: RepoId,
        volume: VolumeId,
        new_size_bytes: u64,
        allow_shrink: bool,
    ) -> Result<Volume> {
        let _ = (repo, volume, new_size_bytes, allow_shrink);
        Err(Error::unsupported("resize", self.info().name))
    }

    /// Clones a volume under a new name (reflink where possible, else a copy reporting
    /// progress and honouring abort through `ctx`).
    async fn clone_volume(
        &self,
        repo: RepoId,
        source: VolumeId,
        name: &str,
        ctx: &OpContext,
    ) -> Result<Volume> {
        let _ = (repo, source, name, ctx);
        Err(Error::unsupported("clone", self.info().name))
    }

    /// Takes a snapshot of a volume under a new name.
    async fn snapshot_volume(&self, repo: RepoId, source: VolumeId, name: &str) -> Result<Volume> {
        let _ = (repo, source, name);
        Err(Error::unsupported("snapshot", self.info().name))
    }

    /// Renames a volume.
    async fn rename_volume(&self, repo: RepoId, volume: VolumeId, name: &str) -> Result<Volume> {
        let _ = (repo, volume, name);
        Err(Error::unsupported("rename", self.info().name))
    }

    /// Deletes a volume.
    async fn delete_volume(&self, repo: RepoId, volume: VolumeId) -> Result<()>;

    /// How a hypervisor reaches a volume.
    async fn volume_access(&self, repo: RepoId, volume: VolumeId) -> Result<VolumeAccess>;
}
