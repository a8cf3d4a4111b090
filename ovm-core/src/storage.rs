//! The `StoragePlugin` trait (Storage Connect): discovering repositories and managing the
//! volumes in them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

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

    /// An opened repository, with fresh space figures.
    async fn repository(&self, repo: RepoId) -> Result<Repository> {
        let _ = repo;
        Err(Error::unsupported("repository", self.info().name))
    }

    /// Imports the disk image at `source`, read as `format` (named by the caller, never
    /// probed), as a new volume called `name`. Images that refer to other files (backing
    /// files, extra extents) are refused. Reports progress and honours abort through `ctx`;
    /// an aborted or failed import leaves no volume behind.
    async fn import_volume(
        &self,
        repo: RepoId,
        name: &str,
        source: &Path,
        format: VolumeFormat,
        ctx: &OpContext,
    ) -> Result<Volume> {
        let _ = (repo, name, source, format, ctx);
        Err(Error::unsupported("import", self.info().name))
    }

    /// Writes a volume to the new file `dest` in `format`; refused if `dest` exists. An
    /// aborted or failed export leaves no file at `dest`.
    async fn export_volume(
        &self,
        repo: RepoId,
        volume: VolumeId,
        dest: &Path,
        format: VolumeFormat,
        ctx: &OpContext,
    ) -> Result<()> {
        let _ = (repo, volume, dest, format, ctx);
        Err(Error::unsupported("export", self.info().name))
    }
}

/// One thing a storage plugin may or may not do; the manager asks for these before it
/// chooses an operation, so that a missing one is reported up front and by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageCapability {
    /// Volumes allocate space only when written.
    ThinProvisioning,
    /// Instant clones sharing blocks with their source.
    ReflinkClone,
    /// Clones of any kind (reflink or copy).
    Clone,
    /// Point-in-time snapshots.
    Snapshot,
    /// Resizing volumes.
    Resize,
    /// Repositories reachable from every server of a pool.
    Shared,
    /// Import and export of the given format.
    Import(VolumeFormat),
}

impl std::fmt::Display for StorageCapability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageCapability::ThinProvisioning => f.write_str("thin provisioning"),
            StorageCapability::ReflinkClone => f.write_str("reflink clone"),
            StorageCapability::Clone => f.write_str("clone"),
            StorageCapability::Snapshot => f.write_str("snapshot"),
            StorageCapability::Resize => f.write_str("resize"),
            StorageCapability::Shared => f.write_str("shared repositories"),
            StorageCapability::Import(format) => write!(f, "import of {format:?}"),
        }
    }
}

impl StorageCapabilities {
    /// True if the plugin has `cap`.
    pub fn has(&self, cap: StorageCapability) -> bool {
        match cap {
            StorageCapability::ThinProvisioning => self.thin_provisioning,
            StorageCapability::ReflinkClone => self.reflink_clone,
            StorageCapability::Clone => self.reflink_clone || self.copy_clone,
            StorageCapability::Snapshot => self.snapshot,
            StorageCapability::Resize => self.resize,
            StorageCapability::Shared => self.shared,
            StorageCapability::Import(format) => self.import_formats.contains(&format),
        }
    }
}

impl PluginInfo {
    /// `Err(Unsupported)` naming this plugin and `cap` unless the plugin has it.
    pub fn require(&self, cap: StorageCapability) -> Result<()> {
        if self.capabilities.has(cap) {
            Ok(())
        } else {
            Err(Error::unsupported(cap.to_string(), self.name.clone()))
        }
    }
}

/// The storage plugins a manager knows, by registered name (`Repository::plugin`).
///
/// Cheap to clone: clones share one table. Safe to use from many tasks.
#[derive(Clone, Default)]
pub struct PluginRegistry {
    plugins: Arc<RwLock<BTreeMap<String, Arc<dyn StoragePlugin>>>>,
}

impl std::fmt::Debug for PluginRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl PluginRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `plugin` under the name its `info()` reports; a taken name is refused.
    pub fn register(&self, plugin: Arc<dyn StoragePlugin>) -> Result<()> {
        let name = plugin.info().name;
        crate::model::validate_name("storage_plugin.name", &name)?;
        let mut plugins = self.plugins.write().unwrap_or_else(|e| e.into_inner());
        if plugins.contains_key(&name) {
            return Err(Error::AlreadyExists {
                kind: "storage plugin",
                id: name,
            });
        }
        plugins.insert(name, plugin);
        Ok(())
    }

    /// Removes and returns the plugin registered as `name`.
    pub fn unregister(&self, name: &str) -> Result<Arc<dyn StoragePlugin>> {
        let mut plugins = self.plugins.write().unwrap_or_else(|e| e.into_inner());
        plugins
            .remove(name)
            .ok_or_else(|| Error::not_found("storage plugin", name))
    }

    /// The plugin registered as `name`.
    pub fn get(&self, name: &str) -> Result<Arc<dyn StoragePlugin>> {
        let plugins = self.plugins.read().unwrap_or_else(|e| e.into_inner());
        plugins
            .get(name)
            .cloned()
            .ok_or_else(|| Error::not_found("storage plugin", name))
    }

    /// The plugin registered as `name`, if it has `cap`; else `Unsupported` naming both.
    pub fn get_with(&self, name: &str, cap: StorageCapability) -> Result<Arc<dyn StoragePlugin>> {
        let plugin = self.get(name)?;
        plugin.info().require(cap)?;
        Ok(plugin)
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        let plugins = self.plugins.read().unwrap_or_else(|e| e.into_inner());
        plugins.keys().cloned().collect()
    }

    /// Info of every registered plugin, sorted by name.
    pub fn infos(&self) -> Vec<PluginInfo> {
        let plugins: Vec<Arc<dyn StoragePlugin>> = {
            let plugins = self.plugins.read().unwrap_or_else(|e| e.into_inner());
            plugins.values().cloned().collect()
        };
        plugins.iter().map(|p| p.info()).collect()
    }

    /// Names of the plugins having `cap`, sorted.
    pub fn with_capability(&self, cap: StorageCapability) -> Vec<String> {
        self.infos()
            .into_iter()
            .filter(|i| i.capabilities.has(cap))
            .map(|i| i.name)
            .collect()
    }
}
