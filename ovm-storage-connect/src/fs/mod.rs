//! The `fs` plugin: repositories on any mounted POSIX file system — a local disk, or an
//! NFS / OCFS2 export mounted at the same path on every server of a pool.
//!
//! A repository has the Oracle VM layout (see [`layout`]) and an identity file naming its
//! pool; volumes are sparse raw files. Clones are reflinks where the file system shares
//! blocks (XFS with reflink, Btrfs, OCFS2) and sparse copies elsewhere. Every change is
//! atomic on disk and survives `kill -9`; see [`repo`] for the commit protocol and
//! `docs/storage.md` for the on-disk format.
//!
//! All file-system work runs on tokio's blocking threads.

pub mod identity;
pub mod layout;
pub mod lock;
pub mod meta;
pub mod repo;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use ovm_core::id::{PoolId, RepoId, VolumeId};
use ovm_core::model::{Repository, Volume, VolumeFormat};
use ovm_core::storage::{
    PluginInfo, StorageCapabilities, StorageKind, StoragePlugin, VolumeAccess, VolumeSpec,
};
use ovm_core::{Error, OpContext, Result};

use self::identity::RepoIdentity;
use self::layout::Layout;
use self::meta::Origin;
pub use self::repo::Recovery;
use self::repo::{FsRepo, RepoSettings};
pub use crate::copy::{CloneMethod, CloneMode};
use crate::error::FS_PLUGIN_NAME;
use crate::qemu::QemuImg;

/// How the `fs` plugin is set up.
#[derive(Debug, Clone, Default)]
pub struct FsConfig {
    /// Directories repositories may live in, and where discovery looks (each root and its
    /// direct subdirectories). A location whose real path (symlinks resolved) is outside
    /// every root is refused. Empty: any absolute path is accepted and discovery finds
    /// nothing.
    pub roots: Vec<PathBuf>,
    /// Reflink where possible (the default), or always copy.
    pub clone_mode: CloneMode,
    /// The `qemu-img` program; `None` runs `qemu-img` from `PATH`.
    pub qemu_img: Option<PathBuf>,
}

impl FsConfig {
    /// Repositories under these roots.
    pub fn with_roots(roots: impl IntoIterator<Item = impl Into<PathBuf>>) -> Self {
        FsConfig {
            roots: roots.into_iter().map(Into::into).collect(),
            ..FsConfig::default()
        }
    }
}

#[derive(Debug, Default)]
struct OpenRepos {
    by_id: HashMap<RepoId, Arc<FsRepo>>,
    by_root: HashMap<PathBuf, RepoId>,
}

#[derive(Debug)]
struct Inner {
    config: FsConfig,
    settings: RepoSettings,
    open: Mutex<OpenRepos>,
    /// Serialises opening and creating, so that one plugin never races itself for a lock.
    gate: Mutex<()>,
}

impl Inner {
    fn open(&self) -> MutexGuard<'_, OpenRepos> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn repo(&self, id: RepoId) -> Result<Arc<FsRepo>> {
        self.open()
            .by_id
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::not_found("repository", id))
    }

    fn remember(&self, repo: FsRepo) -> Result<Repository> {
        let info = repo.repository()?;
        let mut open = self.open();
        open.by_root.insert(repo.root().to_path_buf(), repo.id());
        open.by_id.insert(repo.id(), Arc::new(repo));
        Ok(info)
    }
}

/// The file-server Storage Connect plugin. Cheap to clone: clones share open repositories.
#[derive(Debug, Clone)]
pub struct FsPlugin {
    inner: Arc<Inner>,
}

/// Runs blocking file-system work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::backend(FS_PLUGIN_NAME, format!("worker thread failed: {e}")))?
}

impl FsPlugin {
    /// A plugin with `config`.
    pub fn new(config: FsConfig) -> Self {
        let settings = RepoSettings {
            clone_mode: config.clone_mode,
            qemu: config
                .qemu_img
                .as_ref()
                .map_or_else(QemuImg::default, QemuImg::with_program),
        };
        FsPlugin {
            inner: Arc::new(Inner {
                config,
                settings,
                open: Mutex::new(OpenRepos::default()),
                gate: Mutex::new(()),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &FsConfig {
        &self.inner.config
    }

    /// Reads the repository at `location` without opening it (no lock, no cleanup): for
    /// showing a repository that another manager or pool may hold.
    pub async fn inspect(&self, location: &str) -> Result<Repository> {
        let roots = self.inner.config.roots.clone();
        let location = location.to_string();
        blocking(move || {
            let root = layout::resolve_existing(&location, &roots)?;
            inspect_root(&root)
        })
        .await
    }

    /// True if clones in this open repository share blocks with their source (instant).
    pub async fn supports_reflink(&self, repo: RepoId) -> Result<bool> {
        let repo = self.inner.repo(repo)?;
        blocking(move || Ok(repo.supports_reflink())).await
    }

    /// What opening this repository cleaned up after an interrupted run.
    pub fn recovery(&self, repo: RepoId) -> Result<Recovery> {
        Ok(self.inner.repo(repo)?.recovery())
    }

    /// Clones a volume and says how (reflink or copy).
    pub async fn clone_volume_with_method(
        &self,
        repo: RepoId,
        source: VolumeId,
        name: &str,
        ctx: &OpContext,
    ) -> Result<(Volume, CloneMethod)> {
        let repo = self.inner.repo(repo)?;
        let name = name.to_string();
        let ctx = ctx.clone();
        blocking(move || repo.clone_volume(source, &name, Origin::Clone, &ctx)).await
    }

    async fn with_repo<T: Send + 'static>(
        &self,
        repo: RepoId,
        f: impl FnOnce(&FsRepo) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let repo = self.inner.repo(repo)?;
        blocking(move || f(&repo)).await
    }
}

/// A `Repository` for the repository in `root`, read without taking it.
fn inspect_root(root: &Path) -> Result<Repository> {
    let layout = Layout::new(root.to_path_buf());
    let identity = RepoIdentity::read(&layout)?;
    repo::repository_of(&identity, &root.to_string_lossy(), root)
}

/// Repositories in `root` and its direct subdirectories (symlinks are not followed).
fn discover_root(root: &Path) -> Vec<Repository> {
    let mut found = Vec::new();
    let root = match std::fs::canonicalize(root) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(root = %root.display(), "storage root unusable: {e}");
            return found;
        }
    };
    let mut candidates = vec![root.clone()];
    if let Ok(entries) = std::fs::read_dir(&root) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                candidates.push(entry.path());
            }
        }
    }
    for dir in candidates {
        if std::fs::symlink_metadata(dir.join(layout::IDENTITY_FILE)).is_err() {
            continue;
        }
        match inspect_root(&dir) {
            Ok(repo) => found.push(repo),
            Err(e) => tracing::warn!(path = %dir.display(), "unreadable repository: {e}"),
        }
    }
    found
}

#[async_trait]
impl StoragePlugin for FsPlugin {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: FS_PLUGIN_NAME.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            kind: StorageKind::FileServer,
            capabilities: StorageCapabilities {
                thin_provisioning: true,
                reflink_clone: self.inner.config.clone_mode == CloneMode::Auto,
                copy_clone: true,
                snapshot: true,
                resize: true,
                shared: true,
                import_formats: vec![VolumeFormat::Qcow2, VolumeFormat::Vmdk],
            },
        }
    }

    async fn discover(&self) -> Result<Vec<Repository>> {
        let roots = self.inner.config.roots.clone();
        blocking(move || {
            let mut all: Vec<Repository> = roots.iter().flat_map(|r| discover_root(r)).collect();
            all.sort_by(|a, b| a.location.cmp(&b.location));
            all.dedup_by(|a, b| a.location == b.location);
            Ok(all)
        })
        .await
    }

    async fn create_repository(
        &self,
        name: &str,
        location: &str,
        pool: Option<PoolId>,
    ) -> Result<Repository> {
        let inner = self.inner.clone();
        let (name, location) = (name.to_string(), location.to_string());
        blocking(move || {
            let _gate = inner.gate.lock().unwrap_or_else(|e| e.into_inner());
            let root = layout::resolve_for_create(&location, &inner.config.roots)?;
            if inner.open().by_root.contains_key(&root) {
                return Err(Error::AlreadyExists {
                    kind: "repository",
                    id: location,
                });
            }
            let repo = FsRepo::create(root, &name, pool, inner.settings.clone())?;
            inner.remember(repo)
        })
        .await
    }

    async fn open_repository(&self, location: &str, pool: Option<PoolId>) -> Result<Repository> {
        let inner = self.inner.clone();
        let location = location.to_string();
        blocking(move || {
            let _gate = inner.gate.lock().unwrap_or_else(|e| e.into_inner());
            let root = layout::resolve_existing(&location, &inner.config.roots)?;
            let already = {
                let open = inner.open();
                open.by_root
                    .get(&root)
                    .and_then(|id| open.by_id.get(id))
                    .cloned()
            };
            if let Some(repo) = already {
                return match repo.pool() {
                    Some(owner) if pool != Some(owner) => Err(Error::InvalidState {
                        kind: "repository",
                        id: location,
                        state: format!("owned by pool {owner}"),
                        op: "open for another pool (two pools never share a repository)".into(),
                    }),
                    None if pool.is_some() => Err(Error::InvalidState {
                        kind: "repository",
                        id: location,
                        state: "open without a pool".into(),
                        op: "open for a pool (close it first)".into(),
                    }),
                    _ => repo.repository(),
                };
            }
            let repo = FsRepo::open(root, pool, inner.settings.clone())?;
            inner.remember(repo)
        })
        .await
    }

    async fn close_repository(&self, repo: RepoId) -> Result<()> {
        let mut open = self.inner.open();
        let r = open
            .by_id
            .remove(&repo)
            .ok_or_else(|| Error::not_found("repository", repo))?;
        open.by_root.remove(r.root());
        // The lock goes with the last reference: now, or when in-flight operations end.
        Ok(())
    }

    async fn repository(&self, repo: RepoId) -> Result<Repository> {
        self.with_repo(repo, |r| r.repository()).await
    }

    async fn list_volumes(&self, repo: RepoId) -> Result<Vec<Volume>> {
        self.with_repo(repo, |r| r.list()).await
    }

    async fn volume(&self, repo: RepoId, volume: VolumeId) -> Result<Volume> {
        self.with_repo(repo, move |r| r.volume(volume)).await
    }

    async fn create_volume(&self, repo: RepoId, spec: &VolumeSpec) -> Result<Volume> {
        let spec = spec.clone();
        self.with_repo(repo, move |r| r.create_volume(&spec)).await
    }

    async fn resize_volume(
        &self,
        repo: RepoId,
        volume: VolumeId,
        new_size_bytes: u64,
        allow_shrink: bool,
    ) -> Result<Volume> {
        self.with_repo(repo, move |r| {
            r.resize(volume, new_size_bytes, allow_shrink)
        })
        .await
    }

    async fn clone_volume(
        &self,
        repo: RepoId,
        source: VolumeId,
        name: &str,
        ctx: &OpContext,
    ) -> Result<Volume> {
        Ok(self
            .clone_volume_with_method(repo, source, name, ctx)
            .await?
            .0)
    }

    async fn snapshot_volume(&self, repo: RepoId, source: VolumeId, name: &str) -> Result<Volume> {
        let name = name.to_string();
        self.with_repo(repo, move |r| {
            r.clone_volume(source, &name, Origin::Snapshot, &OpContext::none())
                .map(|(v, _)| v)
        })
        .await
    }

    async fn rename_volume(&self, repo: RepoId, volume: VolumeId, name: &str) -> Result<Volume> {
        let name = name.to_string();
        self.with_repo(repo, move |r| r.rename(volume, &name)).await
    }

    async fn delete_volume(&self, repo: RepoId, volume: VolumeId) -> Result<()> {
        self.with_repo(repo, move |r| r.delete(volume)).await
    }

    async fn volume_access(&self, repo: RepoId, volume: VolumeId) -> Result<VolumeAccess> {
        self.with_repo(repo, move |r| r.access(volume)).await
    }

    async fn import_volume(
        &self,
        repo: RepoId,
        name: &str,
        source: &Path,
        format: VolumeFormat,
        ctx: &OpContext,
    ) -> Result<Volume> {
        let (name, source, ctx) = (name.to_string(), source.to_path_buf(), ctx.clone());
        self.with_repo(repo, move |r| r.import(&name, &source, format, &ctx))
            .await
    }

    async fn export_volume(
        &self,
        repo: RepoId,
        volume: VolumeId,
        dest: &Path,
        format: VolumeFormat,
        ctx: &OpContext,
    ) -> Result<()> {
        let (dest, ctx) = (dest.to_path_buf(), ctx.clone());
        self.with_repo(repo, move |r| r.export(volume, &dest, format, &ctx))
            .await
    }
}
