//! One opened file-server repository: its lock, its volume index and every volume
//! operation, each atomic on disk.
//!
//! Commit protocol of a new volume (create, clone, snapshot, import): the data is made in
//! `.ovm/tmp/<uuid>.img` and the metadata written to `.ovm/tmp/<uuid>.json`; both are
//! fsynced (together). Then the metadata is renamed into `.ovm/volumes/`, the data into
//! `VirtualDisks/` — the commit point: a volume is visible only when both files are in
//! place — and both directories are fsynced (together). Deleting removes the data first
//! (durably), then the metadata. Whatever a crash interrupts, opening the repository again
//! removes a data file whose metadata is still in `.ovm/tmp/`, removes metadata whose data
//! file never arrived (or already left), and empties `.ovm/tmp/`: no half-made volume is
//! ever listed, and no file ovm did not make is touched.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use ovm_core::id::{PoolId, RepoId, Timestamp, VolumeId};
use ovm_core::model::{Repository, Volume, VolumeFormat, validate_name};
use ovm_core::storage::{VolumeAccess, VolumeSpec, validate_size};
use ovm_core::{Error, OpContext, Result};
use rustix::io::Errno;

use super::identity::{FORMAT_VERSION, RepoIdentity};
use super::layout::Layout;
use super::lock::RepoLock;
use super::meta::{Origin, VolumeMeta};
use crate::copy::{self, CloneMethod, CloneMode};
use crate::durable;
use crate::error::{FS_PLUGIN_NAME, io_err};
use crate::qemu::{self, QemuImg};

/// Settings an opened repository works with.
#[derive(Debug, Clone, Default)]
pub struct RepoSettings {
    /// Reflink or copy.
    pub clone_mode: CloneMode,
    /// The `qemu-img` to run.
    pub qemu: QemuImg,
}

/// Names and metadata of the volumes of an open repository.
#[derive(Debug, Default)]
struct Index {
    volumes: HashMap<VolumeId, VolumeMeta>,
    names: HashMap<String, VolumeId>,
    /// Names held by volumes being made (clone, import): taken, but not yet listed.
    reserved: HashSet<String>,
}

impl Index {
    fn meta(&self, id: VolumeId) -> Result<&VolumeMeta> {
        self.volumes
            .get(&id)
            .ok_or_else(|| Error::not_found("volume", id))
    }

    fn check_free(&self, name: &str) -> Result<()> {
        if self.names.contains_key(name) || self.reserved.contains(name) {
            return Err(Error::AlreadyExists {
                kind: "volume",
                id: name.to_string(),
            });
        }
        Ok(())
    }

    fn insert(&mut self, meta: VolumeMeta) {
        self.names.insert(meta.name.clone(), meta.id);
        self.volumes.insert(meta.id, meta);
    }
}

/// What opening found and cleaned.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// Files removed from `.ovm/tmp/` (work a crash interrupted).
    pub temp_files_removed: usize,
    /// Metadata files removed because their data file was missing.
    pub orphan_metadata_removed: usize,
    /// Metadata files left alone because they could not be read (see the log).
    pub unreadable_metadata: usize,
    /// Data files removed because their volume's commit was cut short.
    pub interrupted_commits_rolled_back: usize,
}

/// An open repository. Holding one holds the repository's lock.
#[derive(Debug)]
pub struct FsRepo {
    id: RepoId,
    layout: Layout,
    location: String,
    identity: Mutex<RepoIdentity>,
    index: Mutex<Index>,
    settings: RepoSettings,
    reflink: OnceLock<bool>,
    recovery: Recovery,
    _lock: RepoLock,
}

/// A name held while its volume is being made; released on drop.
struct Reservation<'a> {
    repo: &'a FsRepo,
    name: String,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.repo.index().reserved.remove(&self.name);
    }
}

/// A temporary data file, removed on drop unless committed.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl FsRepo {
    /// Makes a new repository in `root` (created if missing; else it must be empty) and
    /// opens it.
    pub fn create(
        root: PathBuf,
        name: &str,
        pool: Option<PoolId>,
        settings: RepoSettings,
    ) -> Result<Self> {
        validate_name("repository.name", name)?;
        let location = root.to_string_lossy().into_owned();
        match std::fs::symlink_metadata(&root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::invalid(
                    "repository.location",
                    format!("{location:?} exists and is not a directory"),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match std::fs::create_dir(&root) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_err("create directory", &root, e)),
                }
                if let Some(parent) = root.parent() {
                    durable::fsync_dir(parent)?;
                }
            }
            Err(e) => return Err(io_err("stat", &root, e)),
        }
        let layout = Layout::new(root);
        let exists = || -> Result<()> {
            if std::fs::symlink_metadata(layout.identity()).is_ok() {
                return Err(Error::AlreadyExists {
                    kind: "repository",
                    id: location.clone(),
                });
            }
            Ok(())
        };
        exists()?;
        layout.check_empty_for_create()?;
        layout.ensure_dirs()?;
        let lock = RepoLock::acquire(&layout.lock(), &location)?;
        exists()?;
        let identity = RepoIdentity {
            format_version: FORMAT_VERSION,
            uuid: RepoId::new(),
            name: name.to_string(),
            pool,
            plugin: FS_PLUGIN_NAME.to_string(),
            created_at: Timestamp::now(),
        };
        identity.write(&layout)?;
        tracing::info!(repository = %location, id = %identity.uuid, "created repository");
        Ok(FsRepo {
            id: identity.uuid,
            layout,
            location,
            identity: Mutex::new(identity),
            index: Mutex::new(Index::default()),
            settings,
            reflink: OnceLock::new(),
            recovery: Recovery::default(),
            _lock: lock,
        })
    }

    /// Opens the repository in `root` for `pool`: takes the lock, checks ownership (an
    /// unowned repository is taken by `pool`), cleans what crashed operations left.
    pub fn open(root: PathBuf, pool: Option<PoolId>, settings: RepoSettings) -> Result<Self> {
        let location = root.to_string_lossy().into_owned();
        let layout = Layout::new(root);
        RepoIdentity::read(&layout)?;
        layout.ensure_dirs()?;
        let lock = RepoLock::acquire(&layout.lock(), &location)?;
        let mut identity = RepoIdentity::read(&layout)?;
        check_owner(&location, identity.pool, pool)?;
        if identity.pool.is_none() && pool.is_some() {
            identity.pool = pool;
            identity.write(&layout)?;
        }
        let (index, recovery) = recover(&layout)?;
        if recovery != Recovery::default() {
            tracing::warn!(repository = %location, ?recovery, "cleaned after an interrupted run");
        }
        Ok(FsRepo {
            id: identity.uuid,
            layout,
            location,
            identity: Mutex::new(identity),
            index: Mutex::new(index),
            settings,
            reflink: OnceLock::new(),
            recovery,
            _lock: lock,
        })
    }

    /// The repository's id.
    pub fn id(&self) -> RepoId {
        self.id
    }

    /// Its resolved path.
    pub fn root(&self) -> &Path {
        self.layout.root()
    }

    /// The pool that owns it.
    pub fn pool(&self) -> Option<PoolId> {
        self.identity.lock().unwrap_or_else(|e| e.into_inner()).pool
    }

    /// What opening it cleaned up.
    pub fn recovery(&self) -> Recovery {
        self.recovery
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The repository with current space figures.
    pub fn repository(&self) -> Result<Repository> {
        let identity = self
            .identity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        repository_of(&identity, &self.location, self.layout.root())
    }

    /// True if clones here can share blocks (probed once).
    pub fn supports_reflink(&self) -> bool {
        *self.reflink.get_or_init(|| {
            copy::probe_reflink(&self.layout.tmp_dir()).unwrap_or_else(|e| {
                tracing::warn!(repository = %self.location, "reflink probe failed: {e}");
                false
            })
        })
    }

    fn volume_of(&self, meta: &VolumeMeta) -> Result<Volume> {
        let path = self.layout.disk(meta.id);
        let m = std::fs::symlink_metadata(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::not_found("volume", meta.id)
            } else {
                io_err("stat", &path, e)
            }
        })?;
        Ok(Volume {
            id: meta.id,
            repo: self.id,
            name: meta.name.clone(),
            size_bytes: m.len(),
            allocated_bytes: m.blocks().saturating_mul(512),
            format: meta.format,
            path: Some(path),
            parent: meta.parent,
            created_at: meta.created_at,
        })
    }

    /// Every volume, sorted by name.
    pub fn list(&self) -> Result<Vec<Volume>> {
        let metas: Vec<VolumeMeta> = self.index().volumes.values().cloned().collect();
        let mut vols = Vec::with_capacity(metas.len());
        for meta in &metas {
            match self.volume_of(meta) {
                Ok(v) => vols.push(v),
                // Deleted between the snapshot of the index and the stat.
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        vols.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(vols)
    }

    /// One volume.
    pub fn volume(&self, id: VolumeId) -> Result<Volume> {
        let meta = self.index().meta(id)?.clone();
        self.volume_of(&meta)
    }

    /// How a hypervisor reaches a volume: the path of its raw file.
    pub fn access(&self, id: VolumeId) -> Result<VolumeAccess> {
        self.index().meta(id)?;
        Ok(VolumeAccess::Path {
            path: self.layout.disk(id),
            format: VolumeFormat::Raw,
        })
    }

    fn reserve(&self, name: &str) -> Result<Reservation<'_>> {
        let mut index = self.index();
        index.check_free(name)?;
        index.reserved.insert(name.to_string());
        Ok(Reservation {
            repo: self,
            name: name.to_string(),
        })
    }

    fn temp_data(&self, id: VolumeId) -> Result<(File, TempFile)> {
        let path = self.layout.tmp_disk(id);
        let file = durable::create_new(&path)?;
        Ok((file, TempFile { path, keep: false }))
    }

    /// Publishes a volume whose data is complete (not yet synced) in `tmp`.
    ///
    /// Phase one makes the data and the metadata durable under temporary names, both
    /// fsyncs in flight together so that a journaling file system commits them at once.
    /// Phase two renames the metadata, then the data (the commit point) into place and
    /// syncs both directories, again together. Whatever subset of the renames a crash
    /// keeps, recovery either finds the whole volume or removes its pieces.
    fn commit(
        &self,
        meta: VolumeMeta,
        data: File,
        mut tmp: TempFile,
        held: Reservation<'_>,
    ) -> Result<Volume> {
        let bytes = serde_json::to_vec_pretty(&meta)?;
        let mut meta_tmp = TempFile {
            path: self.layout.tmp_meta(meta.id),
            keep: false,
        };
        both(
            || durable::fsync_file(&data, &tmp.path),
            || durable::write_new_synced(&meta_tmp.path, &bytes),
        )?;
        drop(data);
        let (meta_path, disk) = (self.layout.meta(meta.id), self.layout.disk(meta.id));
        std::fs::rename(&meta_tmp.path, &meta_path)
            .map_err(|e| io_err("rename", &meta_tmp.path, e))?;
        meta_tmp.keep = true;
        let published = std::fs::rename(&tmp.path, &disk)
            .map_err(|e| io_err("rename", &tmp.path, e))
            .and_then(|()| {
                tmp.keep = true;
                both(
                    || durable::fsync_dir(&self.layout.volumes_dir()),
                    || durable::fsync_dir(&self.layout.disks_dir()),
                )
            });
        if let Err(e) = published {
            if tmp.keep {
                let _ = std::fs::remove_file(&disk);
            }
            let _ = std::fs::remove_file(&meta_path);
            return Err(e);
        }
        let vol = self.volume_of(&meta);
        self.index().insert(meta);
        drop(held);
        vol
    }

    /// Creates an empty (sparse) raw volume.
    pub fn create_volume(&self, spec: &VolumeSpec) -> Result<Volume> {
        spec.validate()?;
        if spec.format != VolumeFormat::Raw {
            return Err(Error::invalid(
                "volume.format",
                format!(
                    "{:?}: the fs plugin stores raw volumes (import qcow2 or VMDK images instead)",
                    spec.format
                ),
            ));
        }
        let held = self.reserve(&spec.name)?;
        let meta = VolumeMeta::new(&spec.name, None, Origin::Created);
        let (file, tmp) = self.temp_data(meta.id)?;
        set_len(&file, &tmp.path, spec.size_bytes)?;
        self.commit(meta, file, tmp, held)
    }

    /// Grows a volume, or shrinks it when `allow_shrink`.
    pub fn resize(&self, id: VolumeId, new_size: u64, allow_shrink: bool) -> Result<Volume> {
        validate_size(new_size)?;
        let index = self.index();
        let meta = index.meta(id)?.clone();
        let path = self.layout.disk(id);
        let file = durable::open_rw(&path)?;
        let current = file.metadata().map_err(|e| io_err("stat", &path, e))?.len();
        if new_size < current && !allow_shrink {
            return Err(Error::invalid(
                "volume.size_bytes",
                format!(
                    "shrinking volume {} from {current} to {new_size} bytes loses data; \
                     refused unless shrinking is allowed explicitly",
                    meta.name
                ),
            ));
        }
        if new_size != current {
            set_len(&file, &path, new_size)?;
            durable::fsync_file(&file, &path)?;
        }
        drop(index);
        self.volume_of(&meta)
    }

    /// Clones (or snapshots, per `origin`) a volume under a new name; returns how.
    pub fn clone_volume(
        &self,
        source: VolumeId,
        name: &str,
        origin: Origin,
        ctx: &OpContext,
    ) -> Result<(Volume, CloneMethod)> {
        validate_name("volume.name", name)?;
        let src_meta = self.index().meta(source)?.clone();
        let held = self.reserve(name)?;
        let what = format!("copy of volume {} to {name}", src_meta.name);
        ctx.check(&what)?;
        let src_path = self.layout.disk(source);
        let src = durable::open_read(&src_path).map_err(|e| match e {
            Error::Backend { .. } if !src_path.exists() => Error::not_found("volume", source),
            e => e,
        })?;
        let meta = VolumeMeta::new(name, Some(source), origin);
        let (dst, tmp) = self.temp_data(meta.id)?;
        let method = copy::clone_file(
            &src,
            &src_path,
            &dst,
            &tmp.path,
            self.settings.clone_mode,
            ctx,
            &what,
        )?;
        let vol = self.commit(meta, dst, tmp, held)?;
        tracing::info!(repository = %self.location, volume = %vol.name, ?method, "cloned");
        Ok((vol, method))
    }

    /// Renames a volume (rewrites its metadata file atomically).
    pub fn rename(&self, id: VolumeId, name: &str) -> Result<Volume> {
        validate_name("volume.name", name)?;
        let mut index = self.index();
        let mut meta = index.meta(id)?.clone();
        if meta.name != name {
            index.check_free(name)?;
            let old = std::mem::replace(&mut meta.name, name.to_string());
            meta.write(&self.layout)?;
            index.names.remove(&old);
            index.insert(meta.clone());
        }
        drop(index);
        self.volume_of(&meta)
    }

    /// Deletes a volume: its data (the point of no return), then its metadata.
    pub fn delete(&self, id: VolumeId) -> Result<()> {
        let mut index = self.index();
        let meta = index.meta(id)?.clone();
        durable::remove_durable(&self.layout.disk(id))?;
        index.volumes.remove(&id);
        index.names.remove(&meta.name);
        durable::remove_durable(&self.layout.meta(id))
    }

    /// Imports an image file read as `format` into a new raw volume.
    pub fn import(
        &self,
        name: &str,
        source: &Path,
        format: VolumeFormat,
        ctx: &OpContext,
    ) -> Result<Volume> {
        validate_name("volume.name", name)?;
        qemu::format_name(format)?;
        let source = std::fs::canonicalize(source)
            .map_err(|e| Error::invalid("import.source", format!("{}: {e}", source.display())))?;
        let src_meta = std::fs::metadata(&source).map_err(|e| io_err("stat", &source, e))?;
        if !src_meta.is_file() {
            return Err(Error::invalid(
                "import.source",
                format!("{} is not a regular file", source.display()),
            ));
        }
        let size = if format == VolumeFormat::Raw {
            validate_size(src_meta.len())?;
            src_meta.len()
        } else {
            self.settings.qemu.info(&source, format)?.virtual_size
        };
        let held = self.reserve(name)?;
        let what = format!("import of {} as volume {name}", source.display());
        ctx.check(&what)?;
        let meta = VolumeMeta::new(name, None, Origin::Import { format });
        let (dst, tmp) = self.temp_data(meta.id)?;
        if format == VolumeFormat::Raw {
            let src = File::open(&source).map_err(|e| io_err("open", &source, e))?;
            copy::clone_file(
                &src,
                &source,
                &dst,
                &tmp.path,
                self.settings.clone_mode,
                ctx,
                &what,
            )?;
        } else {
            set_len(&dst, &tmp.path, size)?;
            self.settings.qemu.convert(
                &source,
                format,
                &tmp.path,
                VolumeFormat::Raw,
                true,
                size,
                ctx,
                &what,
            )?;
        }
        self.commit(meta, dst, tmp, held)
    }

    /// Writes a volume to the new file `dest` in `format`; never replaces a file.
    pub fn export(
        &self,
        id: VolumeId,
        dest: &Path,
        format: VolumeFormat,
        ctx: &OpContext,
    ) -> Result<()> {
        qemu::format_name(format)?;
        let meta = self.index().meta(id)?.clone();
        let taken = || Error::AlreadyExists {
            kind: "file",
            id: dest.display().to_string(),
        };
        if std::fs::symlink_metadata(dest).is_ok() {
            return Err(taken());
        }
        let (Some(parent), Some(file_name)) = (dest.parent(), dest.file_name()) else {
            return Err(Error::invalid(
                "export.dest",
                format!("{} is not a file path", dest.display()),
            ));
        };
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        if !parent.is_dir() {
            return Err(Error::invalid(
                "export.dest",
                format!("{} is not an existing directory", parent.display()),
            ));
        }
        let tmp = TempFile {
            path: parent.join(format!(
                ".{}.ovm-export-{}.tmp",
                file_name.to_string_lossy(),
                uuid::Uuid::new_v4().simple()
            )),
            keep: false,
        };
        let what = format!("export of volume {} to {}", meta.name, dest.display());
        let src_path = self.layout.disk(id);
        if format == VolumeFormat::Raw {
            let src = durable::open_read(&src_path)?;
            let dst = durable::create_new(&tmp.path)?;
            copy::clone_file(
                &src,
                &src_path,
                &dst,
                &tmp.path,
                self.settings.clone_mode,
                ctx,
                &what,
            )?;
        } else {
            let size = self.volume_of(&meta)?.size_bytes;
            self.settings.qemu.convert(
                &src_path,
                VolumeFormat::Raw,
                &tmp.path,
                format,
                false,
                size,
                ctx,
                &what,
            )?;
        }
        let out = durable::open_read(&tmp.path)?;
        durable::fsync_file(&out, &tmp.path)?;
        drop(out);
        rename_no_replace(&tmp.path, dest).map_err(|e| match e {
            Errno::EXIST => taken(),
            e => io_err("rename", &tmp.path, e.into()),
        })?;
        durable::fsync_dir(parent)?;
        Ok(())
    }
}

/// Runs two steps at once (two fsyncs in flight share one journal commit); both must pass.
fn both(a: impl FnOnce() -> Result<()>, b: impl FnOnce() -> Result<()> + Send) -> Result<()> {
    std::thread::scope(|s| {
        let second = s.spawn(b);
        let first = a();
        let second = second.join().unwrap_or_else(|_| {
            Err(Error::backend(
                FS_PLUGIN_NAME,
                "a file-system worker thread panicked",
            ))
        });
        first.and(second)
    })
}

/// Refuses a repository owned by a pool other than `wanted`.
fn check_owner(location: &str, owner: Option<PoolId>, wanted: Option<PoolId>) -> Result<()> {
    match owner {
        Some(owner) if wanted != Some(owner) => Err(Error::InvalidState {
            kind: "repository",
            id: location.to_string(),
            state: format!("owned by pool {owner}"),
            op: match wanted {
                Some(p) => format!("open for pool {p} (two pools never share a repository)"),
                None => "open without a pool".into(),
            },
        }),
        _ => Ok(()),
    }
}

/// The `Repository` for an identity, with space figures of the file system holding it.
pub fn repository_of(identity: &RepoIdentity, location: &str, root: &Path) -> Result<Repository> {
    let (capacity_bytes, free_bytes) = space(root)?;
    Ok(Repository {
        id: identity.uuid,
        name: identity.name.clone(),
        plugin: FS_PLUGIN_NAME.to_string(),
        location: location.to_string(),
        pool: identity.pool,
        capacity_bytes,
        free_bytes,
    })
}

/// Total and available bytes of the file system holding `path`.
pub fn space(path: &Path) -> Result<(u64, u64)> {
    let s = rustix::fs::statvfs(path).map_err(|e| io_err("statvfs", path, e.into()))?;
    Ok((
        s.f_blocks.saturating_mul(s.f_frsize),
        s.f_bavail.saturating_mul(s.f_frsize),
    ))
}

/// Sets a file's length, telling "too large for this file system" apart.
fn set_len(file: &File, path: &Path, len: u64) -> Result<()> {
    file.set_len(len).map_err(|e| {
        if e.raw_os_error() == Some(libc::EFBIG) || e.raw_os_error() == Some(libc::EINVAL) {
            Error::invalid(
                "volume.size_bytes",
                format!(
                    "{len} bytes is more than the file system of {} allows",
                    path.display()
                ),
            )
        } else {
            io_err("truncate", path, e)
        }
    })
}

/// `rename` that fails with `EEXIST` instead of replacing; where the file system cannot
/// (old NFS), a check then a plain rename.
fn rename_no_replace(from: &Path, to: &Path) -> std::result::Result<(), Errno> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
            if std::fs::symlink_metadata(to).is_ok() {
                return Err(Errno::EXIST);
            }
            std::fs::rename(from, to).map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))
        }
        other => other,
    }
}

/// Builds the index of a freshly locked repository, cleaning what crashes left.
fn recover(layout: &Layout) -> Result<(Index, Recovery)> {
    let mut rec = Recovery::default();
    let tmp_dir = layout.tmp_dir();
    // A commit cut short after its data arrived but before its metadata did: the metadata
    // is still in .ovm/tmp under the volume's id. Roll it back.
    for entry in std::fs::read_dir(&tmp_dir).map_err(|e| io_err("list", &tmp_dir, e))? {
        let entry = entry.map_err(|e| io_err("list", &tmp_dir, e))?;
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|n| n.parse::<VolumeId>().ok())
        else {
            continue;
        };
        let disk = layout.disk(id);
        if std::fs::symlink_metadata(&disk).is_ok()
            && std::fs::symlink_metadata(layout.meta(id)).is_err()
        {
            std::fs::remove_file(&disk).map_err(|e| io_err("remove leftover", &disk, e))?;
            rec.interrupted_commits_rolled_back += 1;
        }
    }
    if rec.interrupted_commits_rolled_back > 0 {
        durable::fsync_dir(&layout.disks_dir())?;
    }
    for entry in std::fs::read_dir(&tmp_dir).map_err(|e| io_err("list", &tmp_dir, e))? {
        let entry = entry.map_err(|e| io_err("list", &tmp_dir, e))?;
        let path = entry.path();
        let removed = match entry.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        match removed {
            Ok(()) => rec.temp_files_removed += 1,
            Err(e) => return Err(io_err("remove leftover", &path, e)),
        }
    }
    if rec.temp_files_removed > 0 {
        durable::fsync_dir(&tmp_dir)?;
    }

    let mut index = Index::default();
    let vol_dir = layout.volumes_dir();
    for entry in std::fs::read_dir(&vol_dir).map_err(|e| io_err("list", &vol_dir, e))? {
        let entry = entry.map_err(|e| io_err("list", &vol_dir, e))?;
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let meta = match VolumeMeta::read(&path) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(file = %path.display(), "skipping unreadable volume metadata: {e}");
                rec.unreadable_metadata += 1;
                continue;
            }
        };
        let disk = layout.disk(meta.id);
        match std::fs::symlink_metadata(&disk) {
            Ok(m) if m.is_file() => {
                if index.names.contains_key(&meta.name) {
                    tracing::warn!(file = %path.display(), name = %meta.name, "duplicate volume name");
                }
                index.insert(meta);
            }
            Ok(_) => {
                tracing::warn!(file = %disk.display(), "skipping volume whose data is not a regular file");
                rec.unreadable_metadata += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::remove_file(&path).map_err(|e| io_err("remove leftover", &path, e))?;
                rec.orphan_metadata_removed += 1;
            }
            Err(e) => return Err(io_err("stat", &disk, e)),
        }
    }
    if rec.orphan_metadata_removed > 0 {
        durable::fsync_dir(&vol_dir)?;
    }
    Ok((index, rec))
}
