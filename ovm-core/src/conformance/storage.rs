//! The `StoragePlugin` conformance suite: one contract for every Storage Connect plugin.
//!
//! A plugin's tests call [`run`] with the plugin and a [`SuiteEnv`] that hands out fresh
//! repository locations (temporary directories for a file-server plugin, any unique string
//! for the simulator). The suite panics with a message naming the broken rule; it returns
//! a [`Report`] of what it checked and what it skipped (and why) so a test can print it.
//!
//! What it holds a plugin to:
//! - repositories: create, refuse a second create at the same place, open idempotently for
//!   the owning pool, refuse another pool, close (then the id is unknown), reopen;
//! - volumes: create, list, look up, duplicate names refused, bad names (`/`, `..`, NUL,
//!   over 255 bytes, empty) and bad sizes (0, over 64 TiB) refused with `InvalidSpec` and
//!   nothing left behind, unknown ids answered with `NotFound`;
//! - thin provisioning (when claimed): a huge new volume allocates almost nothing;
//! - resize (when claimed): grow, shrink refused unless allowed, shrink when allowed;
//! - clone and snapshot (when claimed): a new volume with its parent recorded, progress
//!   that only goes forward, abort leaving nothing visible, and — for plugins that expose
//!   raw files — the same bytes as the source and independent of it afterwards;
//! - rename (unless `Unsupported`), delete (a clone outlives its source);
//! - concurrency: many creates at once lose nothing; racing creates and renames to one
//!   name have exactly one winner;
//! - crash safety: close, leave crash debris (where the environment can), reopen: the same
//!   volumes, and the debris gone.

use std::fmt;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::future::join_all;

use crate::id::{PoolId, RepoId, VolumeId};
use crate::model::{MAX_NAME_LEN, Repository, Volume, VolumeFormat};
use crate::op::OpContext;
use crate::storage::{StorageCapabilities, StoragePlugin, VolumeAccess, VolumeSpec};
use crate::{Error, Result};

/// What the suite needs from the place a plugin is tested in.
pub trait SuiteEnv: Sync {
    /// A location where no repository exists yet (a new one on every call), valid for
    /// `StoragePlugin::create_repository`.
    fn new_location(&self) -> String;

    /// Leaves, in the closed repository at `location`, what a process killed in the middle
    /// of a clone or import would leave behind. Returns false when the environment cannot
    /// (the crash-debris check is then skipped and reported as such).
    fn leave_crash_debris(&self, location: &str) -> bool {
        let _ = location;
        false
    }

    /// True while debris left by `leave_crash_debris` is still present at `location`.
    fn crash_debris_present(&self, location: &str) -> bool {
        let _ = location;
        false
    }
}

/// A plain closure returning fresh locations is an environment without crash debris.
impl<F: Fn() -> String + Sync> SuiteEnv for F {
    fn new_location(&self) -> String {
        self()
    }
}

/// What a run checked, and what it skipped and why.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// The plugin's registered name.
    pub plugin: String,
    /// Rules checked and kept.
    pub passed: Vec<&'static str>,
    /// Rules not checked, each with the reason.
    pub skipped: Vec<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "storage conformance of {:?}: {} passed",
            self.plugin,
            self.passed.len()
        )?;
        if !self.skipped.is_empty() {
            write!(f, "; skipped: {}", self.skipped.join("; "))?;
        }
        Ok(())
    }
}

/// Volumes created at once by the concurrency check.
const PARALLEL_CREATES: usize = 48;
/// Contenders for one name in the concurrency check.
const RACERS: usize = 12;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Runs the whole suite against `plugin`, creating repositories where `env` says.
///
/// Must run on a multi-threaded tokio runtime when the plugin does blocking work on
/// `spawn_blocking` threads (as file-system plugins do).
pub async fn run(plugin: &dyn StoragePlugin, env: &dyn SuiteEnv) -> Report {
    let info = plugin.info();
    assert!(!info.name.is_empty(), "plugin info: the name is empty");
    assert!(
        !info.version.is_empty(),
        "plugin info: the version is empty"
    );
    let mut s = Suite {
        plugin,
        env,
        caps: info.capabilities.clone(),
        report: Report {
            plugin: info.name,
            ..Report::default()
        },
    };
    s.repositories().await;
    s.create_and_list().await;
    s.bad_input().await;
    s.thin().await;
    s.resize().await;
    s.clone_and_snapshot().await;
    s.abort().await;
    s.rename().await;
    s.delete().await;
    s.concurrency().await;
    s.crash_safety().await;
    s.report
}

struct Suite<'a> {
    plugin: &'a dyn StoragePlugin,
    env: &'a dyn SuiteEnv,
    caps: StorageCapabilities,
    report: Report,
}

/// Panics unless `r` failed with the error `code`.
#[track_caller]
fn expect_err<T: fmt::Debug>(r: Result<T>, code: &str, rule: &str) -> Error {
    match r {
        Err(e) if e.code() == code => e,
        Err(e) => panic!("{rule}: expected a {code} error, got {} ({e})", e.code()),
        Ok(v) => panic!("{rule}: expected a {code} error, got success: {v:?}"),
    }
}

/// Unwraps `r`, panicking with the rule on error.
#[track_caller]
fn expect_ok<T>(r: Result<T>, rule: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{rule}: failed with {} error: {e}", e.code()),
    }
}

fn names(vols: &[Volume]) -> Vec<String> {
    let mut n: Vec<String> = vols.iter().map(|v| v.name.clone()).collect();
    n.sort();
    n
}

/// What a reopened repository must give back for each volume.
fn identity(vols: &[Volume]) -> Vec<(VolumeId, String, u64, Option<VolumeId>, VolumeFormat)> {
    let mut v: Vec<_> = vols
        .iter()
        .map(|v| (v.id, v.name.clone(), v.size_bytes, v.parent, v.format))
        .collect();
    v.sort_by_key(|t| t.0);
    v
}

impl Suite<'_> {
    fn pass(&mut self, rule: &'static str) {
        self.report.passed.push(rule);
    }

    fn skip(&mut self, rule: &str, why: &str) {
        self.report.skipped.push(format!("{rule} ({why})"));
    }

    async fn new_repo(&self) -> (Repository, PoolId) {
        let pool = PoolId::new();
        let location = self.env.new_location();
        let repo = expect_ok(
            self.plugin
                .create_repository("conformance", &location, Some(pool))
                .await,
            "create a repository at a fresh location",
        );
        (repo, pool)
    }

    async fn list(&self, repo: RepoId) -> Vec<Volume> {
        expect_ok(self.plugin.list_volumes(repo).await, "list volumes")
    }

    async fn create(&self, repo: RepoId, name: &str, size: u64) -> Volume {
        expect_ok(
            self.plugin
                .create_volume(repo, &VolumeSpec::raw(name, size))
                .await,
            "create a volume",
        )
    }

    async fn close(&self, repo: RepoId) {
        expect_ok(
            self.plugin.close_repository(repo).await,
            "close a repository",
        );
    }

    /// The raw file behind a volume, for plugins that expose one.
    async fn raw_path(&self, repo: RepoId, vol: VolumeId) -> Option<PathBuf> {
        match expect_ok(
            self.plugin.volume_access(repo, vol).await,
            "volume access of an existing volume",
        ) {
            VolumeAccess::Path {
                path,
                format: VolumeFormat::Raw,
            } => Some(path),
            _ => None,
        }
    }

    async fn repositories(&mut self) {
        let p = self.plugin;
        let pool = PoolId::new();
        let location = self.env.new_location();

        expect_err(
            p.create_repository("bad/name", &location, Some(pool)).await,
            "invalid_spec",
            "a repository name with '/' is refused",
        );
        let repo = expect_ok(
            p.create_repository("conformance", &location, Some(pool))
                .await,
            "create a repository",
        );
        assert_eq!(repo.name, "conformance", "repository: name as given");
        assert_eq!(repo.plugin, self.report.plugin, "repository: plugin name");
        assert_eq!(repo.pool, Some(pool), "repository: owning pool as given");
        assert!(
            repo.free_bytes <= repo.capacity_bytes,
            "repository: free bytes {} exceed capacity {}",
            repo.free_bytes,
            repo.capacity_bytes
        );
        self.pass("create a repository");

        expect_err(
            p.create_repository("again", &location, Some(pool)).await,
            "already_exists",
            "a second repository at the same location is refused",
        );
        self.pass("a second repository at one location is refused");

        let again = expect_ok(
            p.open_repository(&location, Some(pool)).await,
            "opening an open repository for its own pool is idempotent",
        );
        assert_eq!(again.id, repo.id, "reopening gives the same repository id");
        expect_err(
            p.open_repository(&location, Some(PoolId::new())).await,
            "invalid_state",
            "an open repository owned by one pool is refused to another",
        );
        self.pass("open is idempotent for the owner, refused to another pool");

        match p.repository(repo.id).await {
            Ok(r) => {
                assert_eq!(r.id, repo.id, "repository(): same id");
                assert!(
                    r.free_bytes <= r.capacity_bytes,
                    "repository(): free <= capacity"
                );
                self.pass("repository() reports space");
            }
            Err(Error::Unsupported { .. }) => self.skip("repository()", "unsupported"),
            Err(e) => panic!("repository() of an open repository failed: {e}"),
        }
        expect_ok(p.discover().await, "discover");

        self.close(repo.id).await;
        expect_err(
            p.list_volumes(repo.id).await,
            "not_found",
            "a closed repository's volumes are unknown",
        );
        expect_err(
            p.close_repository(repo.id).await,
            "not_found",
            "closing a closed repository",
        );
        expect_err(
            p.open_repository(&location, Some(PoolId::new())).await,
            "invalid_state",
            "a closed repository owned by one pool is refused to another",
        );
        let reopened = expect_ok(
            p.open_repository(&location, Some(pool)).await,
            "reopen a closed repository",
        );
        assert_eq!(reopened.id, repo.id, "a reopened repository keeps its id");
        assert_eq!(
            reopened.name, repo.name,
            "a reopened repository keeps its name"
        );
        assert_eq!(
            reopened.pool,
            Some(pool),
            "a reopened repository keeps its pool"
        );
        self.close(reopened.id).await;
        self.pass("close and reopen keep id, name and pool");

        let nowhere = self.env.new_location();
        expect_err(
            p.open_repository(&nowhere, Some(pool)).await,
            "not_found",
            "opening a location without a repository",
        );
        expect_err(
            p.list_volumes(RepoId::new()).await,
            "not_found",
            "listing an unknown repository",
        );
        self.pass("unknown repositories are not found");
    }

    async fn create_and_list(&mut self) {
        let p = self.plugin;
        let (repo, _) = self.new_repo().await;
        let r = repo.id;
        assert!(self.list(r).await.is_empty(), "a new repository is empty");

        let a = self.create(r, "disk-a", GIB).await;
        assert_eq!(a.repo, r, "volume: repository id");
        assert_eq!(a.name, "disk-a", "volume: name as given");
        assert_eq!(a.size_bytes, GIB, "volume: size as given");
        assert_eq!(a.format, VolumeFormat::Raw, "volume: format as given");
        assert_eq!(a.parent, None, "volume: a created volume has no parent");
        assert!(
            a.allocated_bytes <= a.size_bytes,
            "volume: allocated {} exceeds size {}",
            a.allocated_bytes,
            a.size_bytes
        );
        let long_name = "n".repeat(MAX_NAME_LEN);
        let b = self.create(r, &long_name, MIB).await;
        let c = self.create(r, "disque-été ☃", 4096).await;
        assert_eq!(
            names(&self.list(r).await),
            names(&[a.clone(), b.clone(), c.clone()]),
            "list shows exactly the created volumes"
        );
        let got = expect_ok(p.volume(r, a.id).await, "look up a volume");
        assert_eq!(
            (got.id, got.name.as_str(), got.size_bytes),
            (a.id, "disk-a", GIB),
            "volume(): what create returned"
        );
        self.pass("create, list and look up volumes (255-byte and non-ASCII names)");

        expect_err(
            p.create_volume(r, &VolumeSpec::raw("disk-a", MIB)).await,
            "already_exists",
            "a taken volume name is refused",
        );
        assert_eq!(
            self.list(r).await.len(),
            3,
            "a refused create leaves nothing"
        );
        self.pass("a taken volume name is refused");

        let ghost = VolumeId::new();
        expect_err(
            p.volume(r, ghost).await,
            "not_found",
            "volume() of an unknown id",
        );
        expect_err(
            p.delete_volume(r, ghost).await,
            "not_found",
            "deleting an unknown volume",
        );
        expect_err(
            p.volume_access(r, ghost).await,
            "not_found",
            "access to an unknown volume",
        );
        expect_err(
            p.create_volume(RepoId::new(), &VolumeSpec::raw("x", MIB))
                .await,
            "not_found",
            "creating in an unknown repository",
        );
        if self.caps.resize {
            expect_err(
                p.resize_volume(r, ghost, GIB, false).await,
                "not_found",
                "resizing an unknown volume",
            );
        }
        if self.caps.reflink_clone || self.caps.copy_clone {
            expect_err(
                p.clone_volume(r, ghost, "x", &OpContext::none()).await,
                "not_found",
                "cloning an unknown volume",
            );
        }
        self.pass("unknown volumes and repositories are not found");
        self.close(r).await;
    }

    async fn bad_input(&mut self) {
        let p = self.plugin;
        let (repo, _) = self.new_repo().await;
        let r = repo.id;
        let src = self.create(r, "source", MIB).await;
        let too_long = "x".repeat(MAX_NAME_LEN + 1);
        let bad_names = [
            "",
            "a/b",
            "/abs",
            "..",
            ".",
            "../escape",
            "nul\0byte",
            "line\nbreak",
            too_long.as_str(),
        ];
        for name in bad_names {
            expect_err(
                p.create_volume(r, &VolumeSpec::raw(name, MIB)).await,
                "invalid_spec",
                &format!("create with bad name {name:?}"),
            );
            if self.caps.reflink_clone || self.caps.copy_clone {
                expect_err(
                    p.clone_volume(r, src.id, name, &OpContext::none()).await,
                    "invalid_spec",
                    &format!("clone to bad name {name:?}"),
                );
            }
            if self.caps.snapshot {
                expect_err(
                    p.snapshot_volume(r, src.id, name).await,
                    "invalid_spec",
                    &format!("snapshot to bad name {name:?}"),
                );
            }
            match p.rename_volume(r, src.id, name).await {
                Err(Error::Unsupported { .. }) => {}
                other => {
                    expect_err(
                        other,
                        "invalid_spec",
                        &format!("rename to bad name {name:?}"),
                    );
                }
            }
        }
        self.pass("bad names are refused (empty, '/', '..', '.', NUL, control, > 255 bytes)");

        for size in [0, VolumeSpec::MAX_SIZE + 1, u64::MAX, i64::MAX as u64] {
            expect_err(
                p.create_volume(r, &VolumeSpec::raw("sized", size)).await,
                "invalid_spec",
                &format!("create with size {size}"),
            );
            if self.caps.resize {
                expect_err(
                    p.resize_volume(r, src.id, size, true).await,
                    "invalid_spec",
                    &format!("resize to {size}"),
                );
            }
        }
        self.pass("sizes of 0 and over 64 TiB are refused");

        let left = self.list(r).await;
        assert_eq!(
            names(&left),
            vec!["source".to_string()],
            "refused requests leave no volume behind"
        );
        assert_eq!(
            left[0].size_bytes, MIB,
            "refused resizes leave the size alone"
        );
        self.pass("refused requests leave nothing behind");
        self.close(r).await;
    }

    async fn thin(&mut self) {
        if !self.caps.thin_provisioning {
            self.skip("thin provisioning", "not claimed");
            return;
        }
        let (repo, _) = self.new_repo().await;
        let big = self.create(repo.id, "thin", 4 << 40).await;
        assert_eq!(
            big.size_bytes,
            4 << 40,
            "a thin volume has its full virtual size"
        );
        assert!(
            big.allocated_bytes < 16 * MIB,
            "a new 4 TiB thin volume allocated {} bytes",
            big.allocated_bytes
        );
        expect_ok(
            self.plugin.delete_volume(repo.id, big.id).await,
            "delete a thin volume",
        );
        self.close(repo.id).await;
        self.pass("thin provisioning: a new 4 TiB volume allocates almost nothing");
    }

    async fn resize(&mut self) {
        let p = self.plugin;
        let (repo, _) = self.new_repo().await;
        let r = repo.id;
        let v = self.create(r, "growing", GIB).await;
        if !self.caps.resize {
            expect_err(
                p.resize_volume(r, v.id, 2 * GIB, false).await,
                "unsupported",
                "a plugin without resize says so",
            );
            self.skip("resize", "not claimed");
            self.close(r).await;
            return;
        }
        let grown = expect_ok(p.resize_volume(r, v.id, 2 * GIB, false).await, "grow");
        assert_eq!(grown.size_bytes, 2 * GIB, "grow: new size");
        assert_eq!(grown.id, v.id, "grow: same volume");
        expect_ok(
            p.resize_volume(r, v.id, 2 * GIB, false).await,
            "resize to the same size",
        );
        expect_err(
            p.resize_volume(r, v.id, GIB, false).await,
            "invalid_spec",
            "shrinking without allow_shrink is refused",
        );
        let still = expect_ok(p.volume(r, v.id).await, "look up after refused shrink");
        assert_eq!(
            still.size_bytes,
            2 * GIB,
            "a refused shrink changes nothing"
        );
        let shrunk = expect_ok(
            p.resize_volume(r, v.id, GIB / 2, true).await,
            "shrink with allow_shrink",
        );
        assert_eq!(shrunk.size_bytes, GIB / 2, "shrink: new size");
        let listed = expect_ok(p.volume(r, v.id).await, "look up after shrink");
        assert_eq!(listed.size_bytes, GIB / 2, "list shows the new size");
        self.close(r).await;
        self.pass("resize: grow, shrink refused unless allowed");
    }

    async fn clone_and_snapshot(&mut self) {
        let p = self.plugin;
        let (repo, _) = self.new_repo().await;
        let r = repo.id;
        let src = self.create(r, "golden", 64 * MIB).await;
        let data_path = self.raw_path(r, src.id).await;
        let pattern: Vec<(u64, Vec<u8>)> = vec![
            (0, b"first block of the golden image".to_vec()),
            (20 * MIB + 12345, vec![0xA5; 70_000]),
            (64 * MIB - 4096, vec![0x5A; 4096]),
        ];
        if let Some(path) = &data_path {
            write_at(path, &pattern);
        }

        if self.caps.reflink_clone || self.caps.copy_clone {
            let seen = Arc::new(Mutex::new(Vec::<(u64, u64)>::new()));
            let seen2 = seen.clone();
            let ctx = OpContext::with_progress(Arc::new(move |d, t| {
                seen2.lock().unwrap_or_else(|e| e.into_inner()).push((d, t));
            }));
            let c = expect_ok(p.clone_volume(r, src.id, "clone-1", &ctx).await, "clone");
            assert_ne!(c.id, src.id, "clone: a new id");
            assert_eq!(c.name, "clone-1", "clone: name as given");
            assert_eq!(c.size_bytes, src.size_bytes, "clone: the source's size");
            assert_eq!(c.parent, Some(src.id), "clone: parent recorded");
            let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
            for w in seen.windows(2) {
                assert!(w[0].0 <= w[1].0, "clone progress went backwards: {seen:?}");
            }
            for &(d, t) in &seen {
                assert!(d <= t, "clone progress past its total: {seen:?}");
            }
            expect_err(
                p.clone_volume(r, src.id, "clone-1", &OpContext::none())
                    .await,
                "already_exists",
                "clone to a taken name",
            );
            expect_err(
                p.clone_volume(r, src.id, "golden", &OpContext::none())
                    .await,
                "already_exists",
                "clone to its source's name",
            );
            if let Some(src_path) = &data_path {
                let c_path = self.raw_path(r, c.id).await;
                let c_path = c_path
                    .unwrap_or_else(|| panic!("clone: the source is a raw file, the clone is not"));
                check_pattern(&c_path, &pattern, "clone: same bytes as the source");
                let len = std::fs::metadata(&c_path).map(|m| m.len()).unwrap_or(0);
                assert_eq!(len, 64 * MIB, "clone: file length is the volume size");
                write_at(&c_path, &[(0, b"written into the clone".to_vec())]);
                check_pattern(
                    src_path,
                    &pattern[..1],
                    "clone: writes to a clone leave the source alone",
                );
                self.pass("clone: same bytes as the source, independent afterwards");
            } else {
                self.skip("clone data", "the plugin exposes no raw file");
            }
            self.pass("clone: new volume, parent recorded, progress forward, names checked");
        } else {
            expect_err(
                p.clone_volume(r, src.id, "clone-1", &OpContext::none())
                    .await,
                "unsupported",
                "a plugin without clone says so",
            );
            self.skip("clone", "not claimed");
        }

        if self.caps.snapshot {
            let s = expect_ok(p.snapshot_volume(r, src.id, "snap-1").await, "snapshot");
            assert_eq!(s.parent, Some(src.id), "snapshot: parent recorded");
            assert_eq!(s.size_bytes, src.size_bytes, "snapshot: the source's size");
            assert_eq!(s.name, "snap-1", "snapshot: name as given");
            expect_err(
                p.snapshot_volume(r, src.id, "snap-1").await,
                "already_exists",
                "snapshot to a taken name",
            );
            if let (Some(src_path), Some(s_path)) = (&data_path, self.raw_path(r, s.id).await) {
                write_at(src_path, &[(0, b"changed after the snapshot".to_vec())]);
                check_pattern(&s_path, &pattern, "snapshot: the point-in-time bytes");
                self.pass("snapshot: keeps the point-in-time bytes");
            }
            self.pass("snapshot: new volume, parent recorded");
        } else {
            expect_err(
                p.snapshot_volume(r, src.id, "snap-1").await,
                "unsupported",
                "a plugin without snapshot says so",
            );
            self.skip("snapshot", "not claimed");
        }
        self.close(r).await;
    }

    async fn abort(&mut self) {
        if !(self.caps.reflink_clone || self.caps.copy_clone) {
            self.skip("aborted clone", "clone not claimed");
            return;
        }
        let p = self.plugin;
        let (repo, _) = self.new_repo().await;
        let r = repo.id;
        let src = self.create(r, "source", 32 * MIB).await;
        if let Some(path) = self.raw_path(r, src.id).await {
            write_at(&path, &[(MIB, vec![7; 4 * MIB as usize])]);
        }
        let ctx = OpContext::none();
        ctx.cancel_token().cancel();
        expect_err(
            p.clone_volume(r, src.id, "never", &ctx).await,
            "aborted",
            "a clone aborted before it starts",
        );
        assert_eq!(
            names(&self.list(r).await),
            vec!["source".to_string()],
            "an aborted clone leaves no volume visible"
        );
        let reuse = self.create(r, "never", MIB).await;
        assert_eq!(reuse.name, "never", "an aborted clone frees its name");
        self.close(r).await;
        self.pass("an aborted clone leaves nothing visible and frees its name");
    }

    async fn rename(&mut self) {
        let p = self.plugin;
        let (repo, _) = self.new_repo().await;
        let r = repo.id;
        let a = self.create(r, "old-name", MIB).await;
        self.create(r, "other", MIB).await;
        let renamed = match p.rename_volume(r, a.id, "new-name").await {
            Err(Error::Unsupported { .. }) => {
                self.skip("rename", "unsupported");
                self.close(r).await;
                return;
            }
            other => expect_ok(other, "rename"),
        };
        assert_eq!(renamed.id, a.id, "rename keeps the id");
        assert_eq!(renamed.name, "new-name", "rename: the new name");
        assert_eq!(renamed.size_bytes, MIB, "rename keeps the size");
        expect_err(
            p.rename_volume(r, a.id, "other").await,
            "already_exists",
            "rename to a taken name",
        );
        expect_ok(
            p.rename_volume(r, a.id, "new-name").await,
            "rename to its own name",
        );
        expect_err(
            p.rename_volume(r, VolumeId::new(), "x").await,
            "not_found",
            "renaming an unknown volume",
        );
        let reuse = self.create(r, "old-name", MIB).await;
        assert_ne!(reuse.id, a.id, "the old name is free for a new volume");
        assert_eq!(
            names(&self.list(r).await),
            vec!["new-name".to_string(), "old-name".into(), "other".into()],
            "list after rename"
        );
        self.close(r).await;
        self.pass("rename: keeps id and size, taken names refused, old name freed");
    }

    async fn delete(&mut self) {
        let p = self.plugin;
        let (repo, _) = self.new_repo().await;
        let r = repo.id;
        let v = self.create(r, "doomed", MIB).await;
        expect_ok(p.delete_volume(r, v.id).await, "delete");
        assert!(
            self.list(r).await.is_empty(),
            "a deleted volume is not listed"
        );
        expect_err(
            p.delete_volume(r, v.id).await,
            "not_found",
            "deleting twice",
        );
        expect_err(
            p.volume(r, v.id).await,
            "not_found",
            "looking up a deleted volume",
        );
        self.create(r, "doomed", MIB).await;
        self.pass("delete: gone from the list, twice is not found, name reusable");

        if self.caps.reflink_clone || self.caps.copy_clone {
            let src = self.create(r, "parent", 8 * MIB).await;
            let path = self.raw_path(r, src.id).await;
            let pattern = vec![(MIB, b"survives its parent".to_vec())];
            if let Some(path) = &path {
                write_at(path, &pattern);
            }
            let c = expect_ok(
                p.clone_volume(r, src.id, "child", &OpContext::none()).await,
                "clone",
            );
            match p.delete_volume(r, src.id).await {
                Ok(()) => {
                    let child = expect_ok(p.volume(r, c.id).await, "a clone outlives its source");
                    if let Some(c_path) = self.raw_path(r, child.id).await {
                        check_pattern(
                            &c_path,
                            &pattern,
                            "a clone keeps its data after its source is deleted",
                        );
                    }
                    self.pass("a clone outlives its deleted source");
                }
                Err(Error::InvalidState { .. }) => {
                    self.skip(
                        "clone outlives source",
                        "the plugin keeps sources of clones",
                    );
                }
                Err(e) => panic!("deleting a clone's source failed with {}: {e}", e.code()),
            }
        }
        self.close(r).await;
    }

    async fn concurrency(&mut self) {
        let p = self.plugin;
        let (repo, _) = self.new_repo().await;
        let r = repo.id;

        let created = join_all((0..PARALLEL_CREATES).map(|i| async move {
            p.create_volume(r, &VolumeSpec::raw(format!("par-{i:03}"), MIB))
                .await
        }))
        .await;
        let created: Vec<Volume> = created
            .into_iter()
            .map(|c| expect_ok(c, "parallel creates with distinct names all succeed"))
            .collect();
        let mut ids: Vec<VolumeId> = created.iter().map(|v| v.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(
            ids.len(),
            PARALLEL_CREATES,
            "parallel creates: every id distinct"
        );
        assert_eq!(
            self.list(r).await.len(),
            PARALLEL_CREATES,
            "parallel creates: no volume lost"
        );
        self.pass("parallel creates lose nothing");

        let racing =
            join_all((0..RACERS).map(|_| async move {
                p.create_volume(r, &VolumeSpec::raw("contested", MIB)).await
            }))
            .await;
        let won = racing.iter().filter(|c| c.is_ok()).count();
        for c in &racing {
            if let Err(e) = c {
                assert_eq!(e.code(), "already_exists", "losing a create race: {e}");
            }
        }
        assert_eq!(won, 1, "racing creates of one name: exactly one winner");
        let count = self
            .list(r)
            .await
            .iter()
            .filter(|v| v.name == "contested")
            .count();
        assert_eq!(count, 1, "racing creates: one volume of that name listed");
        self.pass("racing creates of one name have one winner");

        let renames = join_all(
            created[..RACERS]
                .iter()
                .map(|v| async move { p.rename_volume(r, v.id, "crown").await }),
        )
        .await;
        if renames
            .iter()
            .all(|x| matches!(x, Err(Error::Unsupported { .. })))
        {
            self.skip("racing renames", "rename unsupported");
        } else {
            let won = renames.iter().filter(|c| c.is_ok()).count();
            for c in &renames {
                if let Err(e) = c {
                    assert_eq!(e.code(), "already_exists", "losing a rename race: {e}");
                }
            }
            assert_eq!(won, 1, "racing renames to one name: exactly one winner");
            self.pass("racing renames to one name have one winner");
        }

        if self.caps.reflink_clone || self.caps.copy_clone {
            let src = created[RACERS].id;
            let clones = join_all((0..8).map(|i| async move {
                p.clone_volume(r, src, &format!("pclone-{i}"), &OpContext::none())
                    .await
            }))
            .await;
            for c in clones {
                expect_ok(c, "parallel clones of one source");
            }
            self.pass("parallel clones of one source");
        }

        let all = self.list(r).await;
        let deleted = join_all(
            all.iter()
                .map(|v| async move { p.delete_volume(r, v.id).await }),
        )
        .await;
        for d in deleted {
            expect_ok(d, "parallel deletes");
        }
        assert!(
            self.list(r).await.is_empty(),
            "parallel deletes: nothing left"
        );
        self.pass("parallel deletes");
        self.close(r).await;
    }

    async fn crash_safety(&mut self) {
        let p = self.plugin;
        let pool = PoolId::new();
        let location = self.env.new_location();
        let repo = expect_ok(
            p.create_repository("durable", &location, Some(pool)).await,
            "create a repository",
        );
        let r = repo.id;
        let a = self.create(r, "a", 16 * MIB).await;
        let b = self.create(r, "b", MIB).await;
        if self.caps.resize {
            expect_ok(p.resize_volume(r, a.id, 32 * MIB, false).await, "grow");
        }
        let _ = p.rename_volume(r, b.id, "b-renamed").await;
        if self.caps.reflink_clone || self.caps.copy_clone {
            expect_ok(
                p.clone_volume(r, a.id, "a-clone", &OpContext::none()).await,
                "clone",
            );
        }
        let doomed = self.create(r, "deleted", MIB).await;
        expect_ok(p.delete_volume(r, doomed.id).await, "delete");
        let before = identity(&self.list(r).await);
        self.close(r).await;

        let debris = self.env.leave_crash_debris(&location);
        let reopened = expect_ok(
            p.open_repository(&location, Some(pool)).await,
            "reopen after a crash",
        );
        assert_eq!(reopened.id, r, "a reopened repository keeps its id");
        let after = identity(&self.list(r).await);
        assert_eq!(
            after, before,
            "reopening gives back exactly the volumes there were"
        );
        self.pass("volumes survive close and reopen unchanged");
        if debris {
            assert!(
                !self.env.crash_debris_present(&location),
                "opening a repository removes what a crashed operation left"
            );
            self.pass("opening a repository cleans crash leftovers");
        } else {
            self.skip("crash debris", "the environment cannot leave any");
        }
        expect_err(
            p.create_volume(r, &VolumeSpec::raw("a", MIB)).await,
            "already_exists",
            "names stay taken after reopening",
        );
        self.create(r, "after-reopen", MIB).await;
        self.close(r).await;
        self.pass("names stay taken after reopening");
    }
}

/// Writes each `(offset, bytes)` into the file at `path`.
#[track_caller]
fn write_at(path: &PathBuf, pattern: &[(u64, Vec<u8>)]) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {} for writing: {e}", path.display()));
    for (off, bytes) in pattern {
        f.write_all_at(bytes, *off)
            .unwrap_or_else(|e| panic!("write {} at {off}: {e}", path.display()));
    }
    f.sync_all()
        .unwrap_or_else(|e| panic!("sync {}: {e}", path.display()));
}

/// Panics with `rule` unless the file at `path` holds each `(offset, bytes)`.
#[track_caller]
fn check_pattern(path: &PathBuf, pattern: &[(u64, Vec<u8>)], rule: &str) {
    let f = std::fs::File::open(path)
        .unwrap_or_else(|e| panic!("{rule}: open {}: {e}", path.display()));
    for (off, bytes) in pattern {
        let mut got = vec![0u8; bytes.len()];
        f.read_exact_at(&mut got, *off)
            .unwrap_or_else(|e| panic!("{rule}: read {} at {off}: {e}", path.display()));
        assert!(got == *bytes, "{rule}: bytes at offset {off} differ");
    }
}
