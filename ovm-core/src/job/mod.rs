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

pub use ctx::JobCtx;
pub use handle::JobHandle;

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
use crate::store::{Expect, Store, StoreExt, WriteOp};
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
    /// An engine persisting to `store` and undoing through `undo`.
    pub fn new(store: Arc<dyn Store>, undo: Arc<dyn UndoExecutor>) -> Arc<Self> {
        Self::with_undo_timeout(store, undo, DEFAULT_UNDO_TIMEOUT)
    }

    /// An engine whose undos each give up after `undo_timeout` (the job then ends `Failed`,
    /// naming the undo that did not finish).
    pub fn with_undo_timeout(
        store: Arc<dyn Store>,
        undo: Arc<dyn UndoExecutor>,
        undo_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(JobEngine {
            store,
            undo,
            live: Mutex::new(HashMap::new()),
            undo_timeout,
        })
    }

    /// Persists a new job and runs `body` in the background; returns its handle once the
    /// job is recorded.
    pub async fn spawn<T, F, Fut>(self: &Arc<Self>, spec: JobSpec, body: F) -> Result<JobHandle<T>>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce(JobCtx) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
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
        };
        let mut job = job;
        job.progress.steps_total = job.steps.len() as u32;
        let revision = self.store.put_obj(&job, Expect::Absent).await?;
        let id = job.id;
        let cancel = CancellationToken::new();
        let (tx, rx) = watch::channel(job.clone());
        let error_slot = Arc::new(std::sync::OnceLock::new());
        let ctx = JobCtx::new(self.store.clone(), job, revision, cancel.clone(), tx);
        self.lock_live().insert(
            id,
            LiveJob {
                cancel: cancel.clone(),
                record: rx.clone(),
            },
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
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn roll_back(&self, ctx: &JobCtx, cause: Error) {
        let undos = ctx.begin_rollback(&cause).await;
        let errors = self.run_undos(&undos).await;
        ctx.finish_rolled_back(errors).await;
    }

    /// Carries out undos in reverse order; returns what could not be undone.
    async fn run_undos(&self, undos: &[crate::model::UndoRecord]) -> Vec<String> {
        let mut errors = Vec::new();
        for rec in undos.iter().rev() {
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
        errors
    }

    /// Asks a job to abort. A job running in this process stops at once (its current step
    /// is interrupted and rolled back); one running in another process is flagged and stops
    /// at its next step.
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
            let mut job = v.value;
            if job.state.is_finished() {
                return Err(finished(id, job.state));
            }
            job.abort_requested = true;
            match self.store.put_obj(&job, Expect::Revision(v.revision)).await {
                Err(Error::Conflict { .. }) => continue,
                other => return other.map(|_| ()),
            }
        }
    }

    /// True if the job runs in this process.
    pub fn is_live(&self, id: JobId) -> bool {
        self.lock_live().contains_key(&id)
    }

    /// Rolls back every job that a previous process left unfinished (it died while they
    /// ran): nothing stays "running" forever. Returns the jobs recovered.
    pub async fn recover(&self) -> Result<Vec<JobId>> {
        let mut recovered = Vec::new();
        for v in self.store.list_obj::<Job>().await? {
            let mut job = v.value;
            if job.state.is_finished() || self.is_live(job.id) {
                continue;
            }
            let errors = self.run_undos(&job.undo_log).await;
            let now = Timestamp::now();
            for s in &mut job.steps {
                if s.state == StepState::Done || s.state == StepState::Running {
                    s.state = StepState::Undone;
                }
            }
            job.error.get_or_insert_with(|| {
                "interrupted: the manager running this job stopped before it finished".into()
            });
            job.state = if errors.is_empty() {
                JobState::RolledBack
            } else {
                JobState::Failed
            };
            job.rollback_errors = errors;
            job.finished_at = Some(now);
            let event = job_event(&job, now);
            let write = WriteOp::put(&job, Expect::Revision(v.revision))?;
            match self.store.commit(&[write], &[event]).await {
                // Another manager recovered it first.
                Err(Error::Conflict { .. }) => continue,
                r => r?,
            };
            recovered.push(job.id);
        }
        Ok(recovered)
    }
}

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
    ];
    KINDS
        .iter()
        .find(|k| **k == kind)
        .copied()
        .ok_or_else(|| Error::invalid("undo.kind", format!("{kind:?} is not a stored kind")))
}
