use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, watch};
use tokio_util::sync::CancellationToken;

use super::job_event;
use crate::id::{JobId, Timestamp};
use crate::model::{Event, Job, JobState, JobStep, StepState, Undo, UndoRecord};
use crate::op::OpContext;
use crate::store::{Expect, Object, Store, StoreExt, WriteOp};
use crate::{Error, Result};

/// What a job body uses to run steps, record undos and commit changes.
#[derive(Clone)]
pub struct JobCtx {
    inner: Arc<Inner>,
}

/// How long step progress may stay only in memory. Step boundaries are not written on
/// their own when steps follow each other quickly: the next durable write (an undo, a
/// change, the outcome) carries them, which saves a transaction per step. A step still
/// running after this long has the job's progress written.
const PROGRESS_LAG: Duration = Duration::from_millis(100);

/// How often, at most, a step start reads the job's record to notice an abort flagged by
/// another process. Between reads the job's own writes notice it (they conflict).
const ABORT_POLL: Duration = Duration::from_millis(200);

struct Inner {
    store: Arc<dyn Store>,
    owner: Arc<super::OwnerLease>,
    state: Mutex<Record>,
    cancel: CancellationToken,
    watch: watch::Sender<Job>,
    id: JobId,
}

/// The job as this process knows it, and what of it is durable.
struct Record {
    job: Job,
    /// Revision of the stored record.
    revision: u64,
    /// The stored record lags `job` (step progress not yet written).
    behind: bool,
    /// When the stored record was last known to hold no flag from another process.
    checked_at: Instant,
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
        owner: Arc<super::OwnerLease>,
        job: Job,
        revision: u64,
        cancel: CancellationToken,
        watch: watch::Sender<Job>,
    ) -> Self {
        let id = job.id;
        JobCtx {
            inner: Arc::new(Inner {
                store,
                owner,
                state: Mutex::new(Record {
                    job,
                    revision,
                    behind: false,
                    checked_at: Instant::now(),
                }),
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

    /// Runs one named step: marks it running, runs `work` (interrupted by an abort) and
    /// marks it done. Waiters see progress at once; the store sees it with the job's next
    /// write, or `PROGRESS_LAG` into a step that is still running. An error fails the step
    /// and, returned from the body, rolls the job back.
    pub async fn step<T>(&self, name: &str, work: impl Future<Output = Result<T>>) -> Result<T> {
        self.inner.owner.check()?;
        self.poll_external_abort().await?;
        self.set_step(name, StepState::Running).await;
        let mut work = std::pin::pin!(work);
        let lag = tokio::time::sleep(PROGRESS_LAG);
        let mut lag = std::pin::pin!(lag);
        let mut lag_written = false;
        let result = loop {
            tokio::select! {
                biased;
                _ = self.inner.cancel.cancelled() => break Err(self.abort_error()),
                r = &mut work => break r,
                _ = &mut lag, if !lag_written => {
                    lag_written = true;
                    self.write_progress().await?;
                }
            }
        };
        match result {
            Ok(v) => {
                self.set_step(name, StepState::Done).await;
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

    /// A callback reporting `done` of `total` units (bytes copied, entries read) as the
    /// progress of the current step, for synchronous code that counts. Each report runs
    /// as a task of the current tokio runtime (so make the callback inside one).
    pub fn fraction_reporter(&self) -> impl Fn(u64, u64) + Send + Sync + 'static {
        let ctx = self.clone();
        let rt = tokio::runtime::Handle::current();
        move |done, total| {
            let ctx = ctx.clone();
            let fraction = if total == 0 {
                1.0
            } else {
                done as f64 / total as f64
            };
            rt.spawn(async move { ctx.report_fraction(fraction).await });
        }
    }

    /// Reports progress inside the current step (e.g. bytes copied): updates the percent
    /// seen by waiters without a store write.
    pub async fn report_fraction(&self, fraction: f64) {
        let mut g = self.inner.state.lock().await;
        let job = &mut g.job;
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
        g.behind = true;
        let job = &mut g.job;
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
    /// there), reading the record at most every `ABORT_POLL`.
    async fn poll_external_abort(&self) -> Result<()> {
        self.check_abort()?;
        let rev = {
            let g = self.inner.state.lock().await;
            if g.checked_at.elapsed() < ABORT_POLL {
                return Ok(());
            }
            g.revision
        };
        let id = self.inner.id.to_string();
        // Only this job's engine writes its record, so a new revision means someone else
        // flagged it: read the record only then.
        if self.inner.store.revision(Job::KIND, &id).await? == Some(rev) {
            self.inner.state.lock().await.checked_at = Instant::now();
            return Ok(());
        }
        if let Some(v) = self.inner.store.get_obj::<Job>(&id).await?
            && v.revision != rev
            && v.value.abort_requested
        {
            self.inner.state.lock().await.job.abort_requested = true;
            self.inner.cancel.cancel();
        }
        self.check_abort()
    }

    /// Writes step progress the store has not seen yet. Never waits for the record: the
    /// step's own work may hold it (in the middle of a write, which then carries the
    /// progress anyway), and the work is not polled while this runs.
    async fn write_progress(&self) -> Result<()> {
        let Ok(mut g) = self.inner.state.try_lock() else {
            return Ok(());
        };
        if g.behind {
            self.persist_locked(&mut g, Vec::new(), Vec::new(), Vec::new())
                .await?;
        }
        Ok(())
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
        self.persist_locked(&mut g, writes, undos, events).await
    }

    async fn persist_locked(
        &self,
        g: &mut Record,
        writes: Vec<WriteOp>,
        undos: Vec<UndoRecord>,
        events: Vec<Event>,
    ) -> Result<Vec<u64>> {
        let mut next = g.job.clone();
        next.undo_log.extend(undos);
        for _ in 0..3 {
            // Nothing is written for a job whose owner may no longer be this process.
            self.inner.owner.check()?;
            let mut all = Vec::with_capacity(writes.len() + 1);
            all.push(WriteOp::put(&next, Expect::Revision(g.revision))?);
            all.extend(writes.iter().cloned());
            match self.inner.store.commit(&all, &events).await {
                Ok(mut revs) => {
                    g.revision = revs[0];
                    g.behind = false;
                    g.checked_at = Instant::now();
                    g.job = next;
                    self.inner.watch.send_replace(g.job.clone());
                    revs.remove(0);
                    return Ok(revs);
                }
                Err(Error::Conflict { ref kind, .. }) if kind == Job::KIND => {
                    if self.merge_stored(g).await? {
                        next.abort_requested = true;
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

    /// After a conflict on the job's record: reads it again. Another process may only have
    /// flagged an abort (merged here: the job is cancelled; true is returned) — or have
    /// taken the job over (its owner changed, or it was finished for us by recovery), in
    /// which case this process must stop without touching anything more.
    async fn merge_stored(&self, g: &mut Record) -> Result<bool> {
        let Some(stored) = self
            .inner
            .store
            .get_obj::<Job>(&self.inner.id.to_string())
            .await?
        else {
            return Err(Error::not_found("job", self.inner.id));
        };
        if stored.value.owner != g.job.owner || stored.value.state.is_finished() {
            return Err(Error::Aborted {
                what: format!(
                    "job {} was taken over by another manager ({}): this process had lost its lease",
                    self.inner.id, stored.value.state
                ),
            });
        }
        g.revision = stored.revision;
        if stored.value.abort_requested {
            g.job.abort_requested = true;
            self.inner.cancel.cancel();
            return Ok(true);
        }
        Ok(false)
    }

    /// Writes the job's record as `job`, with `events`, expecting the revision this
    /// process last wrote; merges an abort flag and retries on a conflict. `Err` if the
    /// job was taken over or the store failed.
    async fn write_record(&self, g: &mut Record, job: &mut Job, events: &[Event]) -> Result<()> {
        for _ in 0..3 {
            let write = WriteOp::put(&*job, Expect::Revision(g.revision))?;
            match self.inner.store.commit(&[write], events).await {
                Ok(revs) => {
                    g.revision = revs[0];
                    g.behind = false;
                    return Ok(());
                }
                Err(Error::Conflict { ref kind, .. }) if kind == Job::KIND => {
                    if self.merge_stored(g).await? {
                        job.abort_requested = true;
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
        self.inner.owner.check()?;
        let mut g = self.inner.state.lock().await;
        let now = Timestamp::now();
        let mut job = g.job.clone();
        job.state = JobState::Completed;
        job.finished_at = Some(now);
        job.result = Some(result);
        job.progress.percent = 100.0;
        job.progress.steps_done = job.steps.len() as u32;
        let event = job_event(&job, now);
        self.write_record(&mut g, &mut job, &[event]).await?;
        g.job = job;
        self.inner.watch.send_replace(g.job.clone());
        Ok(())
    }

    /// Marks the job rolling back (persisted) and returns the undos to run — or `None` if
    /// the job was taken over by another process, which undoes it itself.
    pub(super) async fn begin_rollback(&self, cause: &Error) -> Option<Vec<UndoRecord>> {
        let mut g = self.inner.state.lock().await;
        let mut job = g.job.clone();
        job.state = JobState::RollingBack;
        job.error = Some(cause.to_string());
        if matches!(cause, Error::Aborted { .. }) {
            job.abort_requested = true;
        }
        // A step interrupted by an abort never got to say so.
        for s in &mut job.steps {
            if s.state == StepState::Running {
                s.state = StepState::Failed;
            }
        }
        match self.write_record(&mut g, &mut job, &[]).await {
            Ok(()) => {}
            Err(Error::Aborted { what }) => {
                tracing::warn!(job = %self.inner.id, "not rolled back here: {what}");
                return None;
            }
            // Best effort: recovery after a restart still sees the job unfinished and rolls
            // it back from the persisted undo log.
            Err(e) => tracing::warn!(job = %self.inner.id, "cannot record the rollback: {e}"),
        }
        g.job = job;
        self.inner.watch.send_replace(g.job.clone());
        Some(g.job.undo_log.clone())
    }

    pub(super) async fn finish_rolled_back(&self, rollback_errors: Vec<String>) {
        let mut g = self.inner.state.lock().await;
        let now = Timestamp::now();
        let mut job = g.job.clone();
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
        let event = job_event(&job, now);
        if let Err(e) = self.write_record(&mut g, &mut job, &[event]).await {
            tracing::error!(job = %job.id, "cannot record rollback: {e}");
        }
        g.job = job;
        self.inner.watch.send_replace(g.job.clone());
    }
}
