use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Mutex, watch};
use tokio_util::sync::CancellationToken;

use super::job_event;
use crate::id::{JobId, Timestamp};
use crate::model::{Event, Job, JobState, JobStep, StepState, Undo, UndoRecord};
use crate::op::OpContext;
use crate::store::{Expect, Store, StoreExt, WriteOp};
use crate::{Error, Result};

/// What a job body uses to run steps, record undos and commit changes.
#[derive(Clone)]
pub struct JobCtx {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    /// The job as persisted, and its revision.
    state: Mutex<(Job, u64)>,
    cancel: CancellationToken,
    watch: watch::Sender<Job>,
    id: JobId,
}

impl std::fmt::Debug for JobCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobCtx")
            .field("id", &self.inner.id)
            .finish()
    }
}

impl JobCtx {
    pub(super) fn new(
        store: Arc<dyn Store>,
        job: Job,
        revision: u64,
        cancel: CancellationToken,
        watch: watch::Sender<Job>,
    ) -> Self {
        let id = job.id;
        JobCtx {
            inner: Arc::new(Inner {
                store,
                state: Mutex::new((job, revision)),
                cancel,
                watch,
                id,
            }),
        }
    }

    /// The job's id.
    pub fn id(&self) -> JobId {
        self.inner.id
    }

    pub(super) async fn cancelled(&self) {
        self.inner.cancel.cancelled().await
    }

    pub(super) fn abort_error(&self) -> Error {
        Error::Aborted {
            what: format!("job {}", self.inner.id),
        }
    }

    /// `Err(Aborted)` if an abort was asked.
    pub fn check_abort(&self) -> Result<()> {
        if self.inner.cancel.is_cancelled() {
            Err(self.abort_error())
        } else {
            Ok(())
        }
    }

    /// An `OpContext` for a long backend operation of this job: aborting the job aborts it.
    pub fn op_context(&self) -> OpContext {
        OpContext::none().with_cancel(self.inner.cancel.child_token())
    }

    /// Runs one named step: marks it running, runs `work` (interrupted by an abort), marks
    /// it done and persists progress. An error fails the step and, returned from the body,
    /// rolls the job back.
    pub async fn step<T>(&self, name: &str, work: impl Future<Output = Result<T>>) -> Result<T> {
        self.poll_external_abort().await?;
        self.set_step(name, StepState::Running).await;
        let result = tokio::select! {
            biased;
            _ = self.inner.cancel.cancelled() => Err(self.abort_error()),
            r = work => r,
        };
        match result {
            Ok(v) => {
                self.set_step(name, StepState::Done).await;
                self.persist(Vec::new(), Vec::new(), Vec::new()).await?;
                Ok(v)
            }
            Err(e) => {
                self.set_step(name, StepState::Failed).await;
                Err(e)
            }
        }
    }

    /// Records an undo durably before the action it undoes is taken.
    pub async fn record_undo(&self, step: &str, undo: Undo) -> Result<()> {
        self.persist(
            Vec::new(),
            vec![UndoRecord {
                step: step.into(),
                undo,
            }],
            Vec::new(),
        )
        .await?;
        Ok(())
    }

    /// Commits store writes together with the undos that reverse them and with events, in
    /// one transaction with the job record: either all are durable or none. Returns the new
    /// revision of each write (0 for deletes).
    pub async fn commit(
        &self,
        step: &str,
        writes: Vec<WriteOp>,
        undos: Vec<Undo>,
        events: Vec<Event>,
    ) -> Result<Vec<u64>> {
        let undos = undos
            .into_iter()
            .map(|undo| UndoRecord {
                step: step.into(),
                undo,
            })
            .collect();
        self.persist(writes, undos, events).await
    }

    /// Reports progress inside the current step (e.g. bytes copied): updates the percent
    /// seen by waiters without a store write.
    pub async fn report_fraction(&self, fraction: f64) {
        let mut g = self.inner.state.lock().await;
        let job = &mut g.0;
        let total = job.steps.len().max(1) as f64;
        let done = job
            .steps
            .iter()
            .filter(|s| s.state == StepState::Done)
            .count() as f64;
        job.progress.percent = ((done + fraction.clamp(0.0, 1.0)) / total * 100.0).min(100.0);
        self.inner.watch.send_replace(job.clone());
    }

    async fn set_step(&self, name: &str, state: StepState) {
        let mut g = self.inner.state.lock().await;
        let job = &mut g.0;
        match job
            .steps
            .iter_mut()
            .find(|s| s.name == name && s.state != StepState::Done)
        {
            Some(s) => s.state = state,
            None => job.steps.push(JobStep {
                name: name.into(),
                state,
            }),
        }
        let done = job
            .steps
            .iter()
            .filter(|s| s.state == StepState::Done)
            .count() as u32;
        job.progress.steps_done = done;
        job.progress.steps_total = job.steps.len() as u32;
        job.progress.percent = f64::from(done) * 100.0 / f64::from(job.progress.steps_total.max(1));
        self.inner.watch.send_replace(job.clone());
    }

    /// Picks up an abort flagged by another process (`JobEngine::abort` on a job not live
    /// there).
    async fn poll_external_abort(&self) -> Result<()> {
        self.check_abort()?;
        let rev = self.inner.state.lock().await.1;
        if let Some(v) = self
            .inner
            .store
            .get_obj::<Job>(&self.inner.id.to_string())
            .await?
            && v.revision != rev
            && v.value.abort_requested
        {
            self.inner.state.lock().await.0.abort_requested = true;
            self.inner.cancel.cancel();
        }
        self.check_abort()
    }

    /// Writes the job record (with new undos) plus `writes` and `events` atomically. A
    /// conflict on the job record itself means another process flagged an abort: the flag
    /// is merged and the write retried.
    async fn persist(
        &self,
        writes: Vec<WriteOp>,
        undos: Vec<UndoRecord>,
        events: Vec<Event>,
    ) -> Result<Vec<u64>> {
        let mut g = self.inner.state.lock().await;
        let mut next = g.0.clone();
        next.undo_log.extend(undos);
        for _ in 0..3 {
            let mut all = Vec::with_capacity(writes.len() + 1);
            all.push(WriteOp::put(&next, Expect::Revision(g.1))?);
            all.extend(writes.iter().cloned());
            match self.inner.store.commit(&all, &events).await {
                Ok(mut revs) => {
                    g.1 = revs[0];
                    g.0 = next;
                    self.inner.watch.send_replace(g.0.clone());
                    revs.remove(0);
                    return Ok(revs);
                }
                Err(Error::Conflict { ref kind, .. }) if kind == "job" => {
                    let Some(stored) = self
                        .inner
                        .store
                        .get_obj::<Job>(&self.inner.id.to_string())
                        .await?
                    else {
                        return Err(Error::not_found("job", self.inner.id));
                    };
                    g.1 = stored.revision;
                    if stored.value.abort_requested {
                        next.abort_requested = true;
                        g.0.abort_requested = true;
                        self.inner.cancel.cancel();
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::backend(
            "job",
            format!("job {} record keeps changing under it", self.inner.id),
        ))
    }

    pub(super) async fn finish_completed(&self, result: serde_json::Value) -> Result<()> {
        let mut g = self.inner.state.lock().await;
        let now = Timestamp::now();
        let mut job = g.0.clone();
        job.state = JobState::Completed;
        job.finished_at = Some(now);
        job.result = Some(result);
        job.progress.percent = 100.0;
        job.progress.steps_done = job.steps.len() as u32;
        let event = job_event(&job, now);
        let write = WriteOp::put(&job, Expect::Any)?;
        self.inner.store.commit(&[write], &[event]).await?;
        g.0 = job;
        self.inner.watch.send_replace(g.0.clone());
        Ok(())
    }

    /// Marks the job rolling back (persisted) and returns the undos to run.
    pub(super) async fn begin_rollback(&self, cause: &Error) -> Vec<UndoRecord> {
        let mut g = self.inner.state.lock().await;
        g.0.state = JobState::RollingBack;
        g.0.error = Some(cause.to_string());
        if matches!(cause, Error::Aborted { .. }) {
            g.0.abort_requested = true;
        }
        // Best effort: if this write fails, recovery after a restart still sees the job
        // unfinished and rolls it back from the persisted undo log.
        if let Ok(w) = WriteOp::put(&g.0, Expect::Any)
            && let Ok(revs) = self.inner.store.commit(&[w], &[]).await
        {
            g.1 = revs[0];
        }
        self.inner.watch.send_replace(g.0.clone());
        g.0.undo_log.clone()
    }

    pub(super) async fn finish_rolled_back(&self, rollback_errors: Vec<String>) {
        let mut g = self.inner.state.lock().await;
        let now = Timestamp::now();
        let job = &mut g.0;
        for s in &mut job.steps {
            if s.state == StepState::Done {
                s.state = StepState::Undone;
            }
        }
        job.state = if rollback_errors.is_empty() {
            JobState::RolledBack
        } else {
            JobState::Failed
        };
        job.rollback_errors = rollback_errors;
        job.finished_at = Some(now);
        let event = job_event(job, now);
        if let Ok(w) = WriteOp::put(&*job, Expect::Any) {
            if let Err(e) = self.inner.store.commit(&[w], &[event]).await {
                tracing::error!(job = %job.id, "cannot record rollback: {e}");
            }
        }
        self.inner.watch.send_replace(job.clone());
    }
}
