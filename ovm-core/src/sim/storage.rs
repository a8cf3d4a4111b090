//! In-memory Storage Connect plugin: repositories and thin volumes that live in the
//! plugin's memory, with space accounting and fault injection.
//!
//! Repositories persist for the life of the `SimStorage` value, across close and reopen,
//! the way a disk outlives a manager. Volumes are thin: a new volume allocates nothing;
//! [`SimStorage::write`] stands in for guest writes and allocates space (refused with
//! `Error::Capacity` when the repository is full). Clones and snapshots count their
//! source's allocated bytes against the repository.
//!
//! Faults: [`SimStorage::fail_next`] makes the next call of an operation fail with a chosen
//! error before it changes anything; [`SimStorage::set_delay`] makes every call of an
//! operation slow (clones report progress over the delay and honour abort);
//! [`SimStorage::leave_crash_debris`] leaves in a closed repository what a process killed
//! in the middle of a clone would leave, which the next open removes.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use crate::id::{PoolId, RepoId, Timestamp, VolumeId};
use crate::model::{Repository, Volume, VolumeFormat, validate_name};
use crate::op::OpContext;
use crate::storage::{
    PluginInfo, StorageCapabilities, StorageKind, StoragePlugin, VolumeAccess, VolumeSpec,
    validate_size,
};
use crate::{Error, Result};

/// Registered name of the simulator plugin.
pub const SIM_PLUGIN_NAME: &str = "sim";

/// Capacity of each simulated repository unless set with [`SimStorage::with_capacity`]:
/// 1 TiB.
pub const DEFAULT_CAPACITY: u64 = 1 << 40;

/// Steps a slow clone or snapshot is divided into for progress and abort.
const SLOW_STEPS: u32 = 10;

/// An operation of the simulated plugin, to inject faults into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SimStorageOp {
    /// `create_repository`.
    CreateRepository,
    /// `open_repository`.
    OpenRepository,
    /// `list_volumes` (and `volume`).
    ListVolumes,
    /// `create_volume`.
    CreateVolume,
    /// `resize_volume`.
    ResizeVolume,
    /// `clone_volume`.
    CloneVolume,
    /// `snapshot_volume`.
    SnapshotVolume,
    /// `rename_volume`.
    RenameVolume,
    /// `delete_volume`.
    DeleteVolume,
}

/// A simulated repository, open or not.
#[derive(Debug)]
struct SimRepo {
    repo: Repository,
    open: bool,
    volumes: BTreeMap<VolumeId, Volume>,
    /// Names held by clones and snapshots still in flight.
    reserved: HashSet<String>,
    /// Bytes held by half-done operations of a "killed" process; freed on open.
    debris_bytes: u64,
    /// Number of such leftovers.
    debris_count: usize,
}

impl SimRepo {
    fn used_bytes(&self) -> u64 {
        self.volumes
            .values()
            .map(|v| v.allocated_bytes)
            .fold(self.debris_bytes, u64::saturating_add)
    }

    fn free_bytes(&self) -> u64 {
        self.repo.capacity_bytes.saturating_sub(self.used_bytes())
    }

    fn snapshot(&self) -> Repository {
        Repository {
            free_bytes: self.free_bytes(),
            ..self.repo.clone()
        }
    }

    fn name_taken(&self, name: &str) -> bool {
        self.reserved.contains(name) || self.volumes.values().any(|v| v.name == name)
    }

    fn volume(&self, id: VolumeId) -> Result<&Volume> {
        self.volumes
            .get(&id)
            .ok_or_else(|| Error::not_found("volume", id))
    }
}

#[derive(Debug, Default)]
struct SimState {
    repos: HashMap<RepoId, SimRepo>,
    by_location: HashMap<String, RepoId>,
}

impl SimState {
    fn open_repo(&mut self, id: RepoId) -> Result<&mut SimRepo> {
        match self.repos.get_mut(&id) {
            Some(r) if r.open => Ok(r),
            _ => Err(Error::not_found("repository", id)),
        }
    }
}

#[derive(Debug, Default)]
struct Faults {
    fail_next: HashMap<SimStorageOp, VecDeque<Error>>,
    delay: HashMap<SimStorageOp, Duration>,
}

/// The in-memory `StoragePlugin`. See the module documentation.
#[derive(Debug)]
pub struct SimStorage {
    capacity_bytes: u64,
    state: Mutex<SimState>,
    faults: Mutex<Faults>,
}

impl Default for SimStorage {
    fn default() -> Self {
        Self::new()
    }
}

impl SimStorage {
    /// A simulator whose repositories hold [`DEFAULT_CAPACITY`] bytes each.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    /// A simulator whose repositories hold `capacity_bytes` each.
    pub fn with_capacity(capacity_bytes: u64) -> Self {
        SimStorage {
            capacity_bytes,
            state: Mutex::new(SimState::default()),
            faults: Mutex::new(Faults::default()),
        }
    }

    /// Makes the next call of `op` fail with `error`, before it changes anything. Calls
    /// queue: two calls make the next two attempts fail.
    pub fn fail_next(&self, op: SimStorageOp, error: Error) {
        self.faults()
            .fail_next
            .entry(op)
            .or_default()
            .push_back(error);
    }

    /// Makes every call of `op` take `delay` (zero removes it). Slow clones and snapshots
    /// report progress over the delay and stop early when aborted.
    pub fn set_delay(&self, op: SimStorageOp, delay: Duration) {
        let mut faults = self.faults();
        if delay.is_zero() {
            faults.delay.remove(&op);
        } else {
            faults.delay.insert(op, delay);
        }
    }

    /// Removes every injected failure and delay.
    pub fn clear_faults(&self) {
        *self.faults() = Faults::default();
    }

    /// Stands in for a guest writing `bytes` new bytes into a volume: allocates them (up to
    /// the volume's size), or fails with `Error::Capacity` if the repository is full.
    pub fn write(&self, repo: RepoId, volume: VolumeId, bytes: u64) -> Result<Volume> {
        let mut state = self.state();
        let r = state.open_repo(repo)?;
        let free = r.free_bytes();
        let v = r.volume(volume)?;
        let grow = bytes.min(v.size_bytes.saturating_sub(v.allocated_bytes));
        if grow > free {
            return Err(Error::capacity(format!(
                "repository {} has {free} bytes free; writing {grow} to volume {} needs more",
                r.repo.name, v.name
            )));
        }
        let v = r
            .volumes
            .get_mut(&volume)
            .ok_or_else(|| Error::not_found("volume", volume))?;
        v.allocated_bytes += grow;
        Ok(v.clone())
    }

    /// Leaves, in the closed repository at `location`, what a process killed in the middle
    /// of a clone would leave: a hidden half-written volume holding space. The next
    /// `open_repository` removes it.
    pub fn leave_crash_debris(&self, location: &str) -> Result<()> {
        let mut state = self.state();
        let id = *state
            .by_location
            .get(location)
            .ok_or_else(|| Error::not_found("repository", location))?;
        let r = state
            .repos
            .get_mut(&id)
            .ok_or_else(|| Error::not_found("repository", location))?;
        if r.open {
            return Err(Error::InvalidState {
                kind: "repository",
                id: location.to_string(),
                state: "open".into(),
                op: "leave crash debris (only a closed repository can have crashed)".into(),
            });
        }
        r.debris_count += 1;
        r.debris_bytes = r.debris_bytes.saturating_add(1 << 20);
        Ok(())
    }

    /// How many leftovers of killed operations the repository at `location` holds.
    pub fn crash_debris(&self, location: &str) -> usize {
        let state = self.state();
        state
            .by_location
            .get(location)
            .and_then(|id| state.repos.get(id))
            .map_or(0, |r| r.debris_count)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies injected faults for one call of `op`: the queued failure, else the delay.
    async fn before(&self, op: SimStorageOp) -> Result<()> {
        let (failure, delay) = {
            let mut faults = self.faults();
            let failure = faults.fail_next.get_mut(&op).and_then(VecDeque::pop_front);
            (failure, faults.delay.get(&op).copied())
        };
        if let Some(e) = failure {
            return Err(e);
        }
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        Ok(())
    }

    /// Like `before`, for a copy: the delay is spread over steps reporting progress, and an
    /// abort stops it between steps.
    async fn before_copy(&self, op: SimStorageOp, bytes: u64, ctx: &OpContext) -> Result<()> {
        let (failure, delay) = {
            let mut faults = self.faults();
            let failure = faults.fail_next.get_mut(&op).and_then(VecDeque::pop_front);
            (failure, faults.delay.get(&op).copied())
        };
        if let Some(e) = failure {
            return Err(e);
        }
        ctx.check("volume copy")?;
        let Some(delay) = delay else {
            ctx.progress(bytes, bytes);
            return Ok(());
        };
        let step = delay / SLOW_STEPS;
        for i in 1..=u64::from(SLOW_STEPS) {
            tokio::select! {
                _ = tokio::time::sleep(step) => {}
                _ = ctx.cancel_token().cancelled() => {}
            }
            ctx.check("volume copy")?;
            ctx.progress(bytes / u64::from(SLOW_STEPS) * i, bytes);
        }
        ctx.progress(bytes, bytes);
        Ok(())
    }

    /// Copies `source` into a new volume `name` (clone or snapshot), reserving the name
    /// while the simulated copy runs.
    async fn copy_volume(
        &self,
        op: SimStorageOp,
        repo: RepoId,
        source: VolumeId,
        name: &str,
        ctx: &OpContext,
    ) -> Result<Volume> {
        validate_name("volume.name", name)?;
        let src = {
            let mut state = self.state();
            let r = state.open_repo(repo)?;
            let src = r.volume(source)?.clone();
            if r.name_taken(name) {
                return Err(Error::AlreadyExists {
                    kind: "volume",
                    id: name.to_string(),
                });
            }
            r.reserved.insert(name.to_string());
            src
        };
        let copied = self.before_copy(op, src.allocated_bytes, ctx).await;
        let mut state = self.state();
        let r = match state.open_repo(repo) {
            Ok(r) => r,
            // Closed while copying: nothing to release, the reservation went with it.
            Err(e) => return Err(e),
        };
        r.reserved.remove(name);
        copied?;
        let src = r.volumes.get(&source).cloned().unwrap_or(src);
        if src.allocated_bytes > r.free_bytes() {
            return Err(Error::capacity(format!(
                "repository {} has {} bytes free; copying volume {} needs {}",
                r.repo.name,
                r.free_bytes(),
                src.name,
                src.allocated_bytes
            )));
        }
        let vol = Volume {
            id: VolumeId::new(),
            repo,
            name: name.to_string(),
            size_bytes: src.size_bytes,
            allocated_bytes: src.allocated_bytes,
            format: src.format,
            path: None,
            parent: Some(source),
            created_at: Timestamp::now(),
        };
        r.volumes.insert(vol.id, vol.clone());
        Ok(vol)
    }
}

fn validate_location(location: &str) -> Result<()> {
    if location.is_empty() || location.contains('\0') {
        return Err(Error::invalid(
            "repository.location",
            format!("{location:?} is empty or contains NUL"),
        ));
    }
    Ok(())
}

#[async_trait]
impl StoragePlugin for SimStorage {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: SIM_PLUGIN_NAME.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            kind: StorageKind::FileServer,
            capabilities: StorageCapabilities {
                thin_provisioning: true,
                reflink_clone: true,
                copy_clone: true,
                snapshot: true,
                resize: true,
                shared: true,
                import_formats: Vec::new(),
            },
        }
    }

    async fn discover(&self) -> Result<Vec<Repository>> {
        let state = self.state();
        let mut repos: Vec<Repository> = state.repos.values().map(SimRepo::snapshot).collect();
        repos.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(repos)
    }

    async fn create_repository(
        &self,
        name: &str,
        location: &str,
        pool: Option<PoolId>,
    ) -> Result<Repository> {
        validate_name("repository.name", name)?;
        validate_location(location)?;
        self.before(SimStorageOp::CreateRepository).await?;
        let mut state = self.state();
        if state.by_location.contains_key(location) {
            return Err(Error::AlreadyExists {
                kind: "repository",
                id: location.to_string(),
            });
        }
        let repo = Repository {
            id: RepoId::new(),
            name: name.to_string(),
            plugin: SIM_PLUGIN_NAME.to_string(),
            location: location.to_string(),
            pool,
            capacity_bytes: self.capacity_bytes,
            free_bytes: self.capacity_bytes,
        };
        state.by_location.insert(location.to_string(), repo.id);
        state.repos.insert(
            repo.id,
            SimRepo {
                repo: repo.clone(),
                open: true,
                volumes: BTreeMap::new(),
                reserved: HashSet::new(),
                debris_bytes: 0,
                debris_count: 0,
            },
        );
        Ok(repo)
    }

    async fn open_repository(&self, location: &str, pool: Option<PoolId>) -> Result<Repository> {
        validate_location(location)?;
        self.before(SimStorageOp::OpenRepository).await?;
        let mut state = self.state();
        let id = *state
            .by_location
            .get(location)
            .ok_or_else(|| Error::not_found("repository", location))?;
        let r = state
            .repos
            .get_mut(&id)
            .ok_or_else(|| Error::not_found("repository", location))?;
        match (r.repo.pool, pool) {
            (Some(owner), _) if pool != Some(owner) => {
                return Err(Error::InvalidState {
                    kind: "repository",
                    id: location.to_string(),
                    state: format!("owned by pool {owner}"),
                    op: match pool {
                        Some(p) => format!("open for pool {p}"),
                        None => "open without a pool".into(),
                    },
                });
            }
            (None, Some(_)) if r.open => {
                return Err(Error::InvalidState {
                    kind: "repository",
                    id: location.to_string(),
                    state: "open without a pool".into(),
                    op: "open for a pool".into(),
                });
            }
            (None, Some(p)) => r.repo.pool = Some(p),
            _ => {}
        }
        if !r.open {
            r.open = true;
            r.debris_bytes = 0;
            r.debris_count = 0;
            r.reserved.clear();
        }
        Ok(r.snapshot())
    }

    async fn close_repository(&self, repo: RepoId) -> Result<()> {
        let mut state = self.state();
        let r = state.open_repo(repo)?;
        r.open = false;
        r.reserved.clear();
        Ok(())
    }

    async fn repository(&self, repo: RepoId) -> Result<Repository> {
        let mut state = self.state();
        Ok(state.open_repo(repo)?.snapshot())
    }

    async fn list_volumes(&self, repo: RepoId) -> Result<Vec<Volume>> {
        self.before(SimStorageOp::ListVolumes).await?;
        let mut state = self.state();
        Ok(state.open_repo(repo)?.volumes.values().cloned().collect())
    }

    async fn volume(&self, repo: RepoId, volume: VolumeId) -> Result<Volume> {
        self.before(SimStorageOp::ListVolumes).await?;
        let mut state = self.state();
        state.open_repo(repo)?.volume(volume).cloned()
    }

    async fn create_volume(&self, repo: RepoId, spec: &VolumeSpec) -> Result<Volume> {
        spec.validate()?;
        if spec.format != VolumeFormat::Raw {
            return Err(Error::invalid(
                "volume.format",
                format!("{:?}: the simulator creates raw volumes only", spec.format),
            ));
        }
        self.before(SimStorageOp::CreateVolume).await?;
        let mut state = self.state();
        let r = state.open_repo(repo)?;
        if r.name_taken(&spec.name) {
            return Err(Error::AlreadyExists {
                kind: "volume",
                id: spec.name.clone(),
            });
        }
        let vol = Volume {
            id: VolumeId::new(),
            repo,
            name: spec.name.clone(),
            size_bytes: spec.size_bytes,
            allocated_bytes: 0,
            format: spec.format,
            path: None,
            parent: None,
            created_at: Timestamp::now(),
        };
        r.volumes.insert(vol.id, vol.clone());
        Ok(vol)
    }

    async fn resize_volume(
        &self,
        repo: RepoId,
        volume: VolumeId,
        new_size_bytes: u64,
        allow_shrink: bool,
    ) -> Result<Volume> {
        validate_size(new_size_bytes)?;
        self.before(SimStorageOp::ResizeVolume).await?;
        let mut state = self.state();
        let r = state.open_repo(repo)?;
        let v = r
            .volumes
            .get_mut(&volume)
            .ok_or_else(|| Error::not_found("volume", volume))?;
        if new_size_bytes < v.size_bytes && !allow_shrink {
            return Err(Error::invalid(
                "volume.size_bytes",
                format!(
                    "shrinking volume {} from {} to {new_size_bytes} bytes loses data; \
                     refused unless shrinking is allowed explicitly",
                    v.name, v.size_bytes
                ),
            ));
        }
        v.size_bytes = new_size_bytes;
        v.allocated_bytes = v.allocated_bytes.min(new_size_bytes);
        Ok(v.clone())
    }

    async fn clone_volume(
        &self,
        repo: RepoId,
        source: VolumeId,
        name: &str,
        ctx: &OpContext,
    ) -> Result<Volume> {
        self.copy_volume(SimStorageOp::CloneVolume, repo, source, name, ctx)
            .await
    }

    async fn snapshot_volume(&self, repo: RepoId, source: VolumeId, name: &str) -> Result<Volume> {
        self.copy_volume(
            SimStorageOp::SnapshotVolume,
            repo,
            source,
            name,
            &OpContext::none(),
        )
        .await
    }

    async fn rename_volume(&self, repo: RepoId, volume: VolumeId, name: &str) -> Result<Volume> {
        validate_name("volume.name", name)?;
        self.before(SimStorageOp::RenameVolume).await?;
        let mut state = self.state();
        let r = state.open_repo(repo)?;
        let current = r.volume(volume)?.name.clone();
        if current != name && r.name_taken(name) {
            return Err(Error::AlreadyExists {
                kind: "volume",
                id: name.to_string(),
            });
        }
        let v = r
            .volumes
            .get_mut(&volume)
            .ok_or_else(|| Error::not_found("volume", volume))?;
        v.name = name.to_string();
        Ok(v.clone())
    }

    async fn delete_volume(&self, repo: RepoId, volume: VolumeId) -> Result<()> {
        self.before(SimStorageOp::DeleteVolume).await?;
        let mut state = self.state();
        state
            .open_repo(repo)?
            .volumes
            .remove(&volume)
            .map(|_| ())
            .ok_or_else(|| Error::not_found("volume", volume))
    }

    async fn volume_access(&self, repo: RepoId, volume: VolumeId) -> Result<VolumeAccess> {
        let mut state = self.state();
        state.open_repo(repo)?.volume(volume)?;
        Ok(VolumeAccess::Simulated { volume })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::conformance::storage::{SuiteEnv, run};

    struct SimEnv {
        sim: Arc<SimStorage>,
        next: AtomicU64,
    }

    impl SuiteEnv for SimEnv {
        fn new_location(&self) -> String {
            format!(
                "sim://conformance/{}",
                self.next.fetch_add(1, Ordering::Relaxed)
            )
        }

        fn leave_crash_debris(&self, location: &str) -> bool {
            self.sim.leave_crash_debris(location).is_ok()
        }

        fn crash_debris_present(&self, location: &str) -> bool {
            self.sim.crash_debris(location) > 0
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sim_passes_the_storage_conformance_suite() {
        let sim = Arc::new(SimStorage::new());
        let env = SimEnv {
            sim: sim.clone(),
            next: AtomicU64::new(0),
        };
        let report = run(sim.as_ref(), &env).await;
        println!("{report}");
        // Only the byte-level checks are out of reach: simulated volumes hold no bytes.
        assert!(
            report
                .skipped
                .iter()
                .all(|s| s.contains("exposes no raw file")),
            "sim skipped checks it should run: {report}"
        );
        assert!(report.passed.len() >= 25, "{report}");
    }

    async fn repo_with_volume(sim: &SimStorage) -> (RepoId, Volume) {
        let repo = sim
            .create_repository("r", "sim://unit", Some(PoolId::new()))
            .await
            .expect("create repository");
        let vol = sim
            .create_volume(repo.id, &VolumeSpec::raw("disk", 1 << 30))
            .await
            .expect("create volume");
        (repo.id, vol)
    }

    #[tokio::test]
    async fn injected_failure_hits_the_next_call_only_and_changes_nothing() {
        let sim = SimStorage::new();
        let (repo, _) = repo_with_volume(&sim).await;
        sim.fail_next(
            SimStorageOp::CreateVolume,
            Error::backend("sim", "disk on fire"),
        );
        let err = sim
            .create_volume(repo, &VolumeSpec::raw("second", 1 << 20))
            .await
            .expect_err("injected failure");
        assert_eq!(err.code(), "backend");
        assert_eq!(sim.list_volumes(repo).await.expect("list").len(), 1);
        sim.create_volume(repo, &VolumeSpec::raw("second", 1 << 20))
            .await
            .expect("the failure was used up");
    }

    #[tokio::test]
    async fn slow_clone_reports_progress_and_stops_on_abort() {
        let sim = SimStorage::new();
        let (repo, vol) = repo_with_volume(&sim).await;
        sim.write(repo, vol.id, 100 << 20).expect("write");
        sim.set_delay(SimStorageOp::CloneVolume, Duration::from_millis(200));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let ctx = OpContext::with_progress(Arc::new(move |d, t| {
            seen2.lock().unwrap_or_else(|e| e.into_inner()).push((d, t));
        }));
        let clone = sim
            .clone_volume(repo, vol.id, "copy", &ctx)
            .await
            .expect("clone");
        assert_eq!(clone.allocated_bytes, 100 << 20);
        let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert!(
            seen.len() >= SLOW_STEPS as usize,
            "progress steps: {seen:?}"
        );
        assert_eq!(seen.last(), Some(&(100 << 20, 100 << 20)));

        let ctx = OpContext::none();
        let token = ctx.cancel_token().clone();
        let aborter = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            token.cancel();
        });
        let started = std::time::Instant::now();
        let err = sim
            .clone_volume(repo, vol.id, "aborted", &ctx)
            .await
            .expect_err("aborted");
        aborter.await.expect("aborter");
        assert_eq!(err.code(), "aborted");
        assert!(started.elapsed() < Duration::from_millis(180));
        let names: Vec<String> = sim
            .list_volumes(repo)
            .await
            .expect("list")
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(!names.contains(&"aborted".to_string()));
    }

    #[tokio::test]
    async fn writes_are_thin_and_bounded_by_capacity() {
        let sim = SimStorage::with_capacity(10 << 20);
        let (repo, vol) = repo_with_volume(&sim).await;
        assert_eq!(vol.allocated_bytes, 0, "a new volume allocates nothing");
        let v = sim.write(repo, vol.id, 4 << 20).expect("write");
        assert_eq!(v.allocated_bytes, 4 << 20);
        let err = sim.write(repo, vol.id, 8 << 20).expect_err("full");
        assert_eq!(err.code(), "capacity");
        let r = sim.repository(repo).await.expect("repository");
        assert_eq!(r.free_bytes, 6 << 20);
        // A clone needs its source's allocated bytes: 4 MiB of 6 MiB free fits once.
        sim.clone_volume(repo, vol.id, "c1", &OpContext::none())
            .await
            .expect("first clone fits");
        let err = sim
            .clone_volume(repo, vol.id, "c2", &OpContext::none())
            .await
            .expect_err("second clone does not fit");
        assert_eq!(err.code(), "capacity");
    }

    #[tokio::test]
    async fn a_repository_owned_by_one_pool_is_refused_to_another() {
        let sim = SimStorage::new();
        let owner = PoolId::new();
        let repo = sim
            .create_repository("r", "sim://owned", Some(owner))
            .await
            .expect("create");
        sim.close_repository(repo.id).await.expect("close");
        let err = sim
            .open_repository("sim://owned", Some(PoolId::new()))
            .await
            .expect_err("other pool");
        assert_eq!(err.code(), "invalid_state");
        sim.open_repository("sim://owned", Some(owner))
            .await
            .expect("owner reopens");
    }
}
