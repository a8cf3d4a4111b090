//! The job engine: every state-changing operation is a persisted `Job` of named steps.
//!
//! A step that changes something first records how to undo it (an [`Undo`], as data, in
//! the same transaction as the change where the change is a store write). When a step
//! fails or an abort is asked, the engine carries out the recorded undos in reverse and
//! the job ends `RolledBack` — or `Failed`, naming what could not be undone. Because undos
//! are data, a manager restarted after a crash rolls back what was in flight the same way
//! ([`JobEngine::recover`]).

mod ctx;
mod handle;
pub mod owner;

pub use ctx::JobCtx;
pub use handle::JobHandle;
pub use owner::{DEFAULT_LEASE_TTL, HostIdentity, Liveness, OwnerLease};

use ovm_core::sync::lock;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::id::{JobId, Timestamp};
use crate::model::{Event, Job, JobState, JobStep, Outcome, Progress, StepState, Undo};
use crate::store::{Expect, Object, Store, StoreExt, WriteOp};
use crate::{Error, Result};

/// Carries out undos. The manager implements it: it knows the servers and repositories.
#[async_trait]
pub trait UndoExecutor: Send + Sync {
    /// Undoes one thing; must be idempotent (undoing what is already undone succeeds).
    async fn undo(&self, undo: &Undo) -> Result<()>;
}

/// What a new job is.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// What it does (`vm.start`).
    pub kind: String,
    /// One line for people.
    pub description: String,
    /// The object it works on: (kind, id).
    pub target: Option<(String, String)>,
    /// Who starts it.
    pub initiator: String,
    /// Its steps, in order (for progress; steps not listed are appended when they run).
    pub steps: Vec<String>,
}

impl JobSpec {
    /// A spec with the given kind, description, target, initiator and step names.
    pub fn new(
        kind: &str,
        description: impl Into<String>,
        target: Option<(&str, String)>,
        initiator: &str,
        steps: &[&str],
    ) -> Self {
        JobSpec {
            kind: kind.to_string(),
            description: description.into(),
            target: target.map(|(k, id)| (k.to_string(), id)),
            initiator: initiator.to_string(),
            steps: steps.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// A job running in this process.
struct LiveJob {
    cancel: CancellationToken,
    /// Its record as it runs: an abort that comes after the outcome is refused.
    record: watch::Receiver<Job>,
}

/// Runs jobs, persists them, rolls them back.
pub struct JobEngine {
    store: Arc<dyn Store>,
    undo: Arc<dyn UndoExecutor>,
    /// This process's lease: the owner of every job it spawns.
    owner: Arc<OwnerLease>,
    /// Who recovers (written into recovered jobs' errors).
    host: HostIdentity,
    live: Mutex<HashMap<JobId, LiveJob>>,
    /// Most time one undo may take: a hung backend must not keep a job unfinished.
    undo_timeout: Duration,
}

/// Default bound on one undo.
pub const DEFAULT_UNDO_TIMEOUT: Duration = Duration::from_secs(60);

impl std::fmt::Debug for JobEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobEngine").finish_non_exhaustive()
    }
}

impl JobEngine {
    /// An engine persisting to `store`, undoing through `undo`, owning its jobs by `owner`.
    pub fn new(
        store: Arc<dyn Store>,
        undo: Arc<dyn UndoExecutor>,
        owner: Arc<OwnerLease>,
    ) -> Arc<Self> {
        Self::with_undo_timeout(store, undo, owner, DEFAULT_UNDO_TIMEOUT)
    }

    /// An engine whose undos each give up after `undo_timeout` (the job then ends `Failed`,
    /// naming the undo that did not finish).
    pub fn with_undo_timeout(
        store: Arc<dyn Store>,
        undo: Arc<dyn UndoExecutor>,
        owner: Arc<OwnerLease>,
        undo_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(JobEngine {
            store,
            undo,
            owner,
            host: HostIdentity::current(),
            live: Mutex::new(HashMap::new()),
            undo_timeout,
        })
    }

    /// The lease this engine's jobs are owned by.
    pub fn owner(&self) -> &Arc<OwnerLease> {
        &self.owner
    }

    /// Persists a new job and runs `body` in the background; returns its handle once the
    /// job is recorded.
    pub async fn spawn<T, F, Fut>(self: &Arc<Self>, spec: JobSpec, body: F) -> Result<JobHandle<T>>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce(JobCtx) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        // A process whose lease is in doubt starts nothing.
        self.owner.check()?;
        let now = Timestamp::now();
        let job = Job {
            id: JobId::new(),
            kind: spec.kind,
            description: spec.description,
            target: spec.target,
            initiator: spec.initiator,
            state: JobState::Running,
            steps: spec
                .steps
                .into_iter()
                .map(|name| JobStep {
                    name,
                    state: StepState::Pending,
                })
                .collect(),
            undo_log: Vec::new(),
            progress: Progress {
                percent: 0.0,
                steps_done: 0,
                steps_total: 0,
            },
            abort_requested: false,
            created_at: now,
            started_at: Some(now),
            finished_at: None,
            error: None,
            rollback_errors: Vec::new(),
            result: None,
            owner: Some(self.owner.id()),
        };
        let mut job = job;
        job.progress.steps_total = job.steps.len() as u32;
        let id = job.id;
        let cancel = CancellationToken::new();
        let (tx, rx) = watch::channel(job.clone());
        let error_slot = Arc::new(std::sync::OnceLock::new());
        // Live before it is stored: a recovery pass of this very process must never see
        // the record of a job of its own that is not live (it would take it for
        // abandoned).
        self.lock_live().insert(
            id,
            LiveJob {
                cancel: cancel.clone(),
                record: rx.clone(),
            },
        );
        let revision = match self.store.put_obj(&job, Expect::Absent).await {
            Ok(r) => r,
            Err(e) => {
                self.lock_live().remove(&id);
                return Err(e);
            }
        };
        let ctx = JobCtx::new(
            self.store.clone(),
            self.owner.clone(),
            job,
            revision,
            cancel.clone(),
            tx,
        );

        let engine = self.clone();
        let slot = error_slot.clone();
        tokio::spawn(async move {
            let run = body(ctx.clone());
            let outcome = tokio::select! {
                biased;
                _ = ctx.cancelled() => Err(ctx.abort_error()),
                r = run => r,
            };
            match outcome {
                Ok(value) => match serde_json::to_value(&value) {
                    Ok(v) => {
                        if let Err(e) = ctx.finish_completed(v).await {
                            let _ = slot.set(e.clone());
                            engine.roll_back(&ctx, e).await;
                        }
                    }
                    Err(e) => {
                        let e = Error::from(e);
                        let _ = slot.set(e.clone());
                        engine.roll_back(&ctx, e).await;
                    }
                },
                Err(e) => {
                    let _ = slot.set(e.clone());
                    engine.roll_back(&ctx, e).await;
                }
            }
            engine.lock_live().remove(&id);
        });
        Ok(JobHandle::new(id, rx, cancel, error_slot))
    }

    fn lock_live(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, LiveJob>> {
        lock(&self.live)
    }

    async fn roll_back(&self, ctx: &JobCtx, cause: Error) {
        // Only the job's owner with a valid lease may undo: a process that lost it (or
        // cannot tell) leaves the job to recovery, which may already be undoing it.
        if let Err(e) = self.owner.check() {
            tracing::warn!(job = %ctx.id(), "left to recovery, not rolled back here: {e}");
            return;
        }
        let Some(undos) = ctx.begin_rollback(&cause).await else {
            return;
        };
        let Some(errors) = self.run_undos(&undos, true).await else {
            tracing::warn!(job = %ctx.id(), "rollback stopped: this process's lease is in doubt");
            return;
        };
        ctx.finish_rolled_back(errors).await;
    }

    /// Carries out undos in reverse order; returns what could not be undone. With
    /// `leased`, the lease is checked before each undo and `None` returned once it fails
    /// (whoever recovers the job runs the whole log again: undos are idempotent).
    async fn run_undos(
        &self,
        undos: &[crate::model::UndoRecord],
        leased: bool,
    ) -> Option<Vec<String>> {
        let mut errors = Vec::new();
        for rec in undos.iter().rev() {
            if leased && self.owner.check().is_err() {
                return None;
            }
            let outcome =
                match tokio::time::timeout(self.undo_timeout, self.undo.undo(&rec.undo)).await {
                    Ok(r) => r,
                    Err(_) => Err(Error::Timeout {
                        what: format!("undo of step {:?}", rec.step),
                        after: self.undo_timeout,
                    }),
                };
            if let Err(e) = outcome {
                errors.push(format!("step {:?}: could not {}: {e}", rec.step, rec.undo));
            }
        }
        Some(errors)
    }

    /// Asks a job to abort. A job running in this process stops at once (its current step
    /// is interrupted and rolled back); one running in another live process is flagged and
    /// stops at its next step; one whose owner is gone is rolled back here and now.
    pub async fn abort(&self, id: JobId) -> Result<()> {
        if let Some(live) = self.lock_live().get(&id) {
            let state = live.record.borrow().state;
            if state.is_finished() {
                return Err(finished(id, state));
            }
            live.cancel.cancel();
            return Ok(());
        }
        loop {
            let Some(v) = self.store.get_obj::<Job>(&id.to_string()).await? else {
                return Err(Error::not_found("job", id));
            };
            if v.value.state.is_finished() {
                return Err(finished(id, v.value.state));
            }
            let (liveness, _) = self.owner_liveness(&v.value).await?;
            if liveness.is_dead() {
                self.recover_one(v, "aborted while its manager was gone")
                    .await?;
                return Ok(());
            }
            let mut job = v.value;
            job.abort_requested = true;
            match self.store.put_obj(&job, Expect::Revision(v.revision)).await {
                Err(Error::Conflict { .. }) => continue,
                other => return other.map(|_| ()),
            }
        }
    }

    /// True if any job runs in this process.
    pub fn has_live(&self) -> bool {
        !self.lock_live().is_empty()
    }

    /// True if the job runs in this process.
    pub fn is_live(&self, id: JobId) -> bool {
        self.lock_live().contains_key(&id)
    }

    /// Whether the owner of `job` can still be running it, and its record (`None` for a
    /// job without an owner, from a store written before ownership: treated as gone).
    async fn owner_liveness(
        &self,
        job: &Job,
    ) -> Result<(Liveness, Option<crate::model::ManagerInstance>)> {
        let Some(owner) = job.owner else {
            return Ok((Liveness::Gone, None));
        };
        if owner == self.owner.id() {
            // Ours but not running here: abandoned by a rollback that lost the lease.
            let liveness = if self.is_live(job.id) {
                Liveness::Alive
            } else {
                Liveness::Gone
            };
            return Ok((liveness, Some(self.owner.record())));
        }
        let rec = self
            .store
            .get_obj::<crate::model::ManagerInstance>(&owner.to_string())
            .await?
            .map(|v| v.value);
        let liveness = Liveness::of(rec.as_ref(), &self.host, Timestamp::now());
        Ok((liveness, rec))
    }

    /// Rolls back every unfinished job whose owner is gone (its process ended, or its lease
    /// expired): nothing stays "running" forever, and no live process's job is touched.
    /// Then removes the records of gone managers that own no unfinished job. Returns the
    /// jobs recovered.
    pub async fn recover(&self) -> Result<Vec<JobId>> {
        let unfinished = crate::store::decode_all::<Job>(
            self.store
                .list_by_field(Job::KIND, "state", UNFINISHED)
                .await?,
        );
        let mut recovered = Vec::new();
        let mut owners_busy = std::collections::HashSet::new();
        for v in unfinished {
            if v.value.state.is_finished() || self.is_live(v.value.id) {
                if let Some(o) = v.value.owner {
                    owners_busy.insert(o);
                }
                continue;
            }
            let (liveness, owner) = self.owner_liveness(&v.value).await?;
            if !liveness.is_dead() {
                if let Some(o) = v.value.owner {
                    owners_busy.insert(o);
                }
                continue;
            }
            let why = match (liveness, owner) {
                (Liveness::Expired, Some(o)) => format!(
                    "{} stopped renewing its lease before it finished",
                    o.describe()
                ),
                (_, Some(o)) => format!("{} ended before it finished", o.describe()),
                (_, None) => "the manager running this job stopped before it finished".into(),
            };
            let id = v.value.id;
            match self.recover_one(v, &why).await {
                Ok(true) => recovered.push(id),
                Ok(false) => {}
                Err(e) => tracing::warn!(job = %id, "cannot recover: {e}"),
            }
        }
        self.forget_gone_managers(&owners_busy).await;
        Ok(recovered)
    }

    /// Takes over one job of a gone owner — a conditional write naming this process its
    /// owner, so that of several recovering processes exactly one goes on — then undoes
    /// its log and records the outcome. False if another process took it first.
    async fn recover_one(&self, v: crate::store::Versioned<Job>, why: &str) -> Result<bool> {
        let mut job = v.value;
        job.owner = Some(self.owner.id());
        job.state = JobState::RollingBack;
        job.error
            .get_or_insert_with(|| format!("interrupted: {why}"));
        let claimed = match self.store.put_obj(&job, Expect::Revision(v.revision)).await {
            Ok(rev) => rev,
            Err(Error::Conflict { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        let Some(errors) = self.run_undos(&job.undo_log, true).await else {
            return Ok(false);
        };
        let now = Timestamp::now();
        for s in &mut job.steps {
            if matches!(s.state, StepState::Done | StepState::Running) {
                s.state = StepState::Undone;
            }
        }
        job.state = if errors.is_empty() {
            JobState::RolledBack
        } else {
            JobState::Failed
        };
        job.rollback_errors = errors;
        job.finished_at = Some(now);
        let event = job_event(&job, now);
        let write = WriteOp::put(&job, Expect::Revision(claimed))?;
        match self.store.commit(&[write], &[event]).await {
            Ok(_) => Ok(true),
            Err(Error::Conflict { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes the records of managers that are gone and own no unfinished job.
    async fn forget_gone_managers(&self, busy: &std::collections::HashSet<crate::id::InstanceId>) {
        let Ok(all) = self.store.list_obj::<crate::model::ManagerInstance>().await else {
            return;
        };
        let now = Timestamp::now();
        for v in all {
            let i = &v.value;
            if i.id == self.owner.id()
                || busy.contains(&i.id)
                || !Liveness::of(Some(i), &self.host, now).is_dead()
            {
                continue;
            }
            let delete = WriteOp::delete::<crate::model::ManagerInstance>(
                i.id,
                Expect::Revision(v.revision),
            );
            let _ = self.store.commit(&[delete], &[]).await;
        }
    }
}

/// The states of a job that has not finished (what recovery looks for).
const UNFINISHED: &[&str] = &["pending", "running", "rolling_back"];

/// The error for aborting a job that has already ended.
fn finished(id: JobId, state: JobState) -> Error {
    Error::InvalidState {
        kind: "job",
        id: id.to_string(),
        state: state.to_string(),
        op: "abort".into(),
    }
}

/// The audit event recording how a job ended.
pub(crate) fn job_event(job: &Job, now: Timestamp) -> Event {
    let (object_kind, object_id) = job
        .target
        .clone()
        .unwrap_or(("job".into(), job.id.to_string()));
    let outcome = if job.state == JobState::Completed {
        Outcome::Success
    } else {
        Outcome::Failure
    };
    let mut detail = format!("{} ({})", job.description, job.state);
    if let Some(e) = &job.error {
        detail.push_str(": ");
        detail.push_str(e);
    }
    for e in &job.rollback_errors {
        detail.push_str("; ");
        detail.push_str(e);
    }
    Event {
        seq: 0,
        time: now,
        initiator: job.initiator.clone(),
        object_kind,
        object_id,
        action: job.kind.clone(),
        outcome,
        detail,
        job: Some(job.id),
    }
}

#[cfg(test)]
mod tests;

/// Carries out the undos that only touch the store (`DeleteObject`, `RestoreObject`).
/// Returns `Ok(false)` for any other kind, which the caller must handle.
pub async fn undo_in_store(store: &dyn Store, undo: &Undo) -> Result<bool> {
    let write = match undo {
        Undo::DeleteObject { kind, id } => WriteOp::Delete {
            kind: static_kind(kind)?,
            id: id.clone(),
            expect: Expect::Any,
        },
        Undo::RestoreObject { kind, id, data } => WriteOp::Put {
            kind: static_kind(kind)?,
            id: id.clone(),
            expect: Expect::Any,
            data: serde_json::value::to_raw_value(data)?,
        },
        _ => return Ok(false),
    };
    store.commit(&[write], &[]).await?;
    Ok(true)
}

/// The store kinds known to the model (undo records name them as strings).
fn static_kind(kind: &str) -> Result<&'static str> {
    use crate::model::{Assembly, Network, Repository, Server, ServerPool, Template, Vm, Volume};
    use crate::store::Object;
    const KINDS: &[&str] = &[
        ServerPool::KIND,
        Server::KIND,
        Vm::KIND,
        Repository::KIND,
        Volume::KIND,
        Network::KIND,
        Template::KIND,
        Assembly::KIND,
        Job::KIND,
        // Name claims and leases (the manager's).
        "name",
        "lease",
    ];
    KINDS
        .iter()
        .find(|k| **k == kind)
        .copied()
        .ok_or_else(|| Error::invalid("undo.kind", format!("{kind:?} is not a stored kind")))
}
