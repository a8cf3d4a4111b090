use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::Stream;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::WatchStream;
use tokio_util::sync::CancellationToken;

use crate::id::JobId;
use crate::model::{Job, JobState, Progress};
use crate::{Error, Result};

/// A running (or finished) job: wait for it, watch its progress, abort it.
pub struct JobHandle<T> {
    id: JobId,
    rx: watch::Receiver<Job>,
    cancel: CancellationToken,
    error: Arc<OnceLock<Error>>,
    _output: PhantomData<fn() -> T>,
}

impl<T> Clone for JobHandle<T> {
    fn clone(&self) -> Self {
        JobHandle {
            id: self.id,
            rx: self.rx.clone(),
            cancel: self.cancel.clone(),
            error: self.error.clone(),
            _output: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for JobHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobHandle")
            .field("id", &self.id)
            .field("state", &self.rx.borrow().state)
            .finish()
    }
}

impl<T: DeserializeOwned> JobHandle<T> {
    pub(super) fn new(
        id: JobId,
        rx: watch::Receiver<Job>,
        cancel: CancellationToken,
        error: Arc<OnceLock<Error>>,
    ) -> Self {
        JobHandle {
            id,
            rx,
            cancel,
            error,
            _output: PhantomData,
        }
    }

    /// The job's id.
    pub fn id(&self) -> JobId {
        self.id
    }

    /// The job as it is now.
    pub fn job(&self) -> Job {
        self.rx.borrow().clone()
    }

    /// Its state now.
    pub fn state(&self) -> JobState {
        self.rx.borrow().state
    }

    /// Its progress now.
    pub fn progress(&self) -> Progress {
        self.rx.borrow().progress
    }

    /// Progress updates until the job finishes (the current value first).
    pub fn progress_stream(&self) -> impl Stream<Item = Progress> + Send + 'static {
        let mut finished = false;
        WatchStream::new(self.rx.clone())
            .take_while(move |job| {
                let keep = !finished;
                finished = job.state.is_finished();
                keep
            })
            .map(|job| job.progress)
    }

    /// Asks the job to abort: its current step is interrupted and everything done so far
    /// is undone. Waiters then get `Error::Aborted`.
    pub fn abort(&self) {
        self.cancel.cancel();
    }

    /// Waits until the job finishes, at most `timeout`; `Error::Timeout` if it has not.
    /// Returns the job's result, or the error that made it roll back.
    pub async fn wait(&self, timeout: Duration) -> Result<T> {
        match tokio::time::timeout(timeout, self.finished()).await {
            Ok(job) => self.outcome(job),
            Err(_) => Err(Error::Timeout {
                what: format!("job {}", self.id),
                after: timeout,
            }),
        }
    }

    /// Waits until the job finishes, however long it takes.
    pub async fn join(&self) -> Result<T> {
        let job = self.finished().await;
        self.outcome(job)
    }

    /// Waits for the job to finish and returns its final record.
    pub async fn finished(&self) -> Job {
        let mut rx = self.rx.clone();
        let finished = rx
            .wait_for(|j| j.state.is_finished())
            .await
            .map(|j| j.clone());
        // Err: the engine dropped the sender without finishing (runtime shut down).
        finished.unwrap_or_else(|_| self.rx.borrow().clone())
    }

    fn outcome(&self, job: Job) -> Result<T> {
        match job.state {
            JobState::Completed => {
                let v = job.result.unwrap_or(serde_json::Value::Null);
                serde_json::from_value(v).map_err(Error::from)
            }
            _ => Err(self.error.get().cloned().unwrap_or_else(|| {
                Error::backend(
                    "job",
                    format!(
                        "job {} ended {}: {}",
                        job.id,
                        job.state,
                        job.error.as_deref().unwrap_or("no error recorded")
                    ),
                )
            })),
        }
    }
}
