//! `ovm.JobHandle`: wait for a job (with a timeout that raises, never returns `None`),
//! watch its progress, abort it; and `ovm.ProgressStream`, an iterator (sync and async)
//! over its progress updates.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use pyo3::exceptions::PyStopAsyncIteration;
use pyo3::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

use ovm_core::Error;
use ovm_core::id::JobId;
use ovm_core::model::{Job, JobState, Progress};
use ovm_manager::Manager;
use ovm_manager::job::JobHandle;

use crate::convert::{JOB_STATE, ToPython, record};
use crate::errors::{IntoPyResult, to_pyerr};
use crate::handles::{PyPoolHandle, PyServerHandle, PyVmHandle};
use crate::runtime::{awaitable, awaitable_with, ready, seconds, wait_interruptibly};

/// A job handle with its result type erased to JSON (Python sees one `JobHandle` class).
trait ErasedJob: Send + Sync {
    fn id(&self) -> JobId;
    fn job(&self) -> Job;
    fn state(&self) -> JobState;
    fn progress(&self) -> Progress;
    fn abort(&self);
    /// Resolves when the job has finished.
    fn finished(&self) -> BoxFuture<'static, Job>;
    /// Waits for the job and returns its result as JSON, or the error that undid it.
    fn join(&self) -> BoxFuture<'static, ovm_core::Result<serde_json::Value>>;
    fn progress_stream(&self) -> Pin<Box<dyn Stream<Item = Progress> + Send>>;
}

impl<T> ErasedJob for JobHandle<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    fn id(&self) -> JobId {
        JobHandle::id(self)
    }
    fn job(&self) -> Job {
        JobHandle::job(self)
    }
    fn state(&self) -> JobState {
        JobHandle::state(self)
    }
    fn progress(&self) -> Progress {
        JobHandle::progress(self)
    }
    fn abort(&self) {
        JobHandle::abort(self)
    }
    fn finished(&self) -> BoxFuture<'static, Job> {
        let h = self.clone();
        Box::pin(async move { h.finished().await })
    }
    fn join(&self) -> BoxFuture<'static, ovm_core::Result<serde_json::Value>> {
        let h = self.clone();
        Box::pin(async move { Ok(serde_json::to_value(h.join().await?)?) })
    }
    fn progress_stream(&self) -> Pin<Box<dyn Stream<Item = Progress> + Send>> {
        Box::pin(JobHandle::progress_stream(self))
    }
}

/// What a job's result becomes in Python.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    /// `None`.
    Nothing,
    /// The id string (repositories, volumes, networks).
    Id,
    /// A `VmHandle`.
    Vm,
    /// A `PoolHandle`.
    Pool,
    /// A `ServerHandle`.
    Server,
    /// An instance of the named data class of `ovm._model`, read from the result.
    Data(&'static str),
}

/// A job's result on its way to Python.
struct JobResult {
    value: serde_json::Value,
    output: Output,
    mgr: Manager,
}

fn parse_id<I: std::str::FromStr<Err = Error>>(v: &serde_json::Value) -> ovm_core::Result<I> {
    v.as_str()
        .ok_or_else(|| Error::backend("job", format!("job result {v} is not an id")))?
        .parse()
}

impl ToPython for JobResult {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let v = &self.value;
        Ok(match self.output {
            Output::Nothing => py.None(),
            Output::Id => crate::convert::json_to_py(py, v)?.unbind(),
            Output::Vm => {
                Py::new(py, PyVmHandle::new(self.mgr, parse_id(v).into_py(py)?))?.into_any()
            }
            Output::Pool => {
                Py::new(py, PyPoolHandle::new(self.mgr, parse_id(v).into_py(py)?))?.into_any()
            }
            Output::Server => {
                Py::new(py, PyServerHandle::new(self.mgr, parse_id(v).into_py(py)?))?.into_any()
            }
            Output::Data(class) => crate::convert::data_class(py, class, v)?,
        })
    }
}

/// A running (or finished) job: `wait(timeout)` for its result, `progress`, `abort()`.
///
/// Waiting raises `ovm.TimeoutError` when the timeout passes (the job goes on), the
/// exception of the error that made the job roll back, or `ovm.Aborted`.
#[pyclass(frozen, generic, module = "ovm._ovm", name = "JobHandle")]
pub(crate) struct PyJobHandle {
    job: Arc<dyn ErasedJob>,
    output: Output,
    mgr: Manager,
}

impl PyJobHandle {
    pub(crate) fn new<T>(mgr: Manager, handle: JobHandle<T>, output: Output) -> Self
    where
        T: Serialize + DeserializeOwned + Send + 'static,
    {
        PyJobHandle {
            job: Arc::new(handle),
            output,
            mgr,
        }
    }

    fn result(&self, value: serde_json::Value) -> JobResult {
        JobResult {
            value,
            output: self.output,
            mgr: self.mgr.clone(),
        }
    }
}

/// The error of a wait that gave up after `after` (made only then: it copies the record).
fn timeout_error(job: &dyn ErasedJob, after: Duration) -> Error {
    Error::Timeout {
        what: format!("job {} ({})", job.id(), job.job().description),
        after,
    }
}

/// `timeout` in seconds, `None` for no limit.
fn limit(timeout: Option<f64>) -> ovm_core::Result<Option<Duration>> {
    timeout.map(|t| seconds("timeout", t)).transpose()
}

#[pymethods]
impl PyJobHandle {
    /// The job's id.
    #[getter]
    fn id(&self) -> String {
        self.job.id().to_string()
    }

    /// What it does (`vm.start`, ...).
    #[getter]
    fn kind(&self) -> String {
        self.job.job().kind
    }

    /// One line for people.
    #[getter]
    fn description(&self) -> String {
        self.job.job().description
    }

    /// Its state now (an `ovm.JobState`).
    #[getter]
    fn state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        JOB_STATE.get(py, self.job.state().as_str())
    }

    /// True once the job will not change any more.
    #[getter]
    fn done(&self) -> bool {
        self.job.state().is_finished()
    }

    /// Its progress now (an `ovm.Progress`).
    #[getter]
    fn progress(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        record(py, &self.job.progress())
    }

    /// The full job record now (an `ovm.Job`): steps, times, error, rollback errors.
    fn info(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        record(py, &self.job.job())
    }

    /// Asks the job to abort: its current step is interrupted and what it did is undone.
    /// Waiters then get `ovm.Aborted`. Returns at once.
    fn abort(&self) {
        self.job.abort()
    }

    /// Waits for the job and returns its result; at most `timeout` seconds if given.
    ///
    /// Raises `ovm.TimeoutError` if the job has not finished in time (the job goes on:
    /// abort it to stop it), or the error that made the job roll back. The GIL is released
    /// while waiting; Ctrl-C interrupts the wait.
    #[pyo3(signature = (timeout = None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        let limit = limit(timeout).into_py(py)?;
        // The join is polled on this thread (the GIL released), which sleeps until the
        // job ends: a job that ended before anyone waited answers at the first poll.
        let job = &self.job;
        let value = match wait_interruptibly(py, limit, job.join())? {
            Some(r) => r.into_py(py)?,
            None => {
                let after = limit.unwrap_or_default();
                return Err(timeout_error(&**job, after)).into_py(py);
            }
        };
        self.result(value).to_python(py)
    }

    /// `wait` as an awaitable: `await job.wait_async(timeout=30)`.
    #[pyo3(signature = (timeout = None))]
    fn wait_async<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let limit = limit(timeout).into_py(py)?;
        // A finished job answers at once: an awaitable that is already done.
        let finished = self.job.state().is_finished();
        if let Some(joined) = finished.then(|| self.job.join().now_or_never()).flatten() {
            let value = joined
                .map_err(|e| to_pyerr(py, e))
                .and_then(|v| self.result(v).to_python(py));
            return ready(py, value);
        }
        let job = self.job.clone();
        let output = self.output;
        let mgr = self.mgr.clone();
        awaitable(py, async move {
            if let Some(l) = limit
                && tokio::time::timeout(l, job.finished()).await.is_err()
            {
                return Err(timeout_error(&*job, l));
            }
            let value = job.join().await?;
            Ok(JobResult { value, output, mgr })
        })
    }

    /// Progress updates until the job finishes, the current one first: iterate it with
    /// `for` or `async for`.
    fn progress_stream(&self) -> PyProgressStream {
        PyProgressStream {
            stream: Arc::new(tokio::sync::Mutex::new(self.job.progress_stream())),
        }
    }

    fn __repr__(&self) -> String {
        let job = self.job.job();
        format!(
            "<JobHandle {} {:?} {} {:.0}%>",
            job.id, job.description, job.state, job.progress.percent
        )
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<PyJobHandle>()
            .is_ok_and(|o| o.get().job.id() == self.job.id())
    }

    fn __hash__(&self) -> u64 {
        self.job.id().0.as_u64_pair().0
    }
}

type ProgressItems = Pin<Box<dyn Stream<Item = Progress> + Send>>;

/// Progress updates of a job until it finishes: `for p in stream` (the GIL is released
/// while waiting for the next update) or `async for p in stream`.
#[pyclass(frozen, module = "ovm._ovm", name = "ProgressStream")]
pub(crate) struct PyProgressStream {
    stream: Arc<tokio::sync::Mutex<ProgressItems>>,
}

#[pymethods]
impl PyProgressStream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let stream = self.stream.clone();
        let next = wait_interruptibly(py, None, async move { stream.lock().await.next().await })?;
        match next.flatten() {
            Some(p) => Ok(Some(record(py, &p)?)),
            None => Ok(None),
        }
    }

    fn __aiter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let stream = self.stream.clone();
        awaitable_with(
            py,
            async move { stream.lock().await.next().await },
            |py, next| match next {
                Some(p) => record(py, &p),
                None => Err(PyStopAsyncIteration::new_err(())),
            },
        )
    }
}
