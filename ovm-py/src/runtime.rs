//! The tokio runtime the bindings run on, and the two ways Python waits for it: blocking
//! (with the GIL released, so other Python threads keep running) and awaitable (an asyncio
//! future, through pyo3-async-runtimes).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::IntoPyDict;

use crate::convert::ToPython;
use crate::errors::{IntoPyResult, to_pyerr};
use crate::inbox::inbox_for;

/// How long a blocking wait sleeps before it looks at Python's signals (Ctrl-C).
pub(crate) const SIGNAL_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// The process-wide runtime, shared with pyo3-async-runtimes (multi-threaded, created on
/// first use).
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    pyo3_async_runtimes::tokio::get_runtime()
}

/// Runs `fut` to completion with the GIL released.
///
/// For short operations (a store commit, a lookup on a server): long waits go through
/// [`wait_interruptibly`] so that Ctrl-C still works.
pub(crate) fn block_on<F, T>(py: Python<'_>, fut: F) -> PyResult<T>
where
    F: Future<Output = ovm_core::Result<T>> + Send,
    T: Send,
{
    py.detach(|| runtime().block_on(fut)).into_py(py)
}

/// Waits until `fut` resolves or `limit` passes (`None`: no limit), with the GIL
/// released, looking at Python's signals every [`SIGNAL_CHECK_INTERVAL`] at most: a
/// `KeyboardInterrupt` ends the wait (not the operation) and drops `fut`. Returns
/// `Ok(None)` when the limit passed first.
///
/// `fut` is polled on this thread (in the runtime's context), which parks in between
/// and is unparked by its waker: no timer of the runtime is involved, so a wait costs
/// no wake-up of a runtime thread beyond the one that completes `fut`, and the
/// future is polled on across signal checks rather than made again.
pub(crate) fn wait_interruptibly<F>(
    py: Python<'_>,
    limit: Option<Duration>,
    fut: F,
) -> PyResult<Option<F::Output>>
where
    F: Future + Send,
    F::Output: Send,
{
    let deadline = limit.map(|l| Instant::now() + l);
    let mut fut = std::pin::pin!(fut);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    loop {
        let slice_end = match deadline {
            Some(d) => d.min(Instant::now() + SIGNAL_CHECK_INTERVAL),
            None => Instant::now() + SIGNAL_CHECK_INTERVAL,
        };
        let fut = fut.as_mut();
        let outcome = py.detach(|| poll_until(fut, &waker, slice_end));
        if outcome.is_some() {
            return Ok(outcome);
        }
        py.check_signals()?;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
    }
}

/// Waits for `fut` however long it takes, as [`wait_interruptibly`] does (Ctrl-C ends
/// the wait).
pub(crate) fn wait_long<F>(py: Python<'_>, fut: F) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    wait_interruptibly(py, None, fut)?.ok_or_else(|| {
        pyo3::exceptions::PyRuntimeError::new_err("a wait without a time limit ended early")
    })
}

/// Polls `fut` on this thread until it resolves (`Some`) or `until` passes (`None`),
/// parking in between.
fn poll_until<F: Future>(mut fut: Pin<&mut F>, waker: &Waker, until: Instant) -> Option<F::Output> {
    let _context = runtime().enter();
    let mut cx = Context::from_waker(waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return Some(v);
        }
        let now = Instant::now();
        if now >= until {
            return None;
        }
        // Returns early when unparked (the waker) or spuriously: either way, poll again.
        std::thread::park_timeout(until - now);
    }
}

/// A waker that unparks the thread waiting in [`poll_until`].
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// An asyncio awaitable for `fut`, run on the tokio runtime; its result is converted to
/// Python when it is ready.
pub(crate) fn awaitable<'py, F, T>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = ovm_core::Result<T>> + Send + 'static,
    T: ToPython + Send + 'static,
{
    awaitable_with(py, fut, |py, result| match result {
        Ok(value) => value.to_python(py),
        Err(e) => Err(to_pyerr(py, e)),
    })
}

/// An asyncio future of the running event loop that `fut` completes from the tokio
/// runtime, its output turned into Python by `convert` on the loop's thread (see
/// [`crate::inbox`]). Cancelling the asyncio future drops `fut`.
///
/// The asyncio future is an `ovm._future.OvmFuture`, whose `cancel()` aborts the tokio
/// task: no done-callback has to run on the event loop for the futures that complete.
pub(crate) fn awaitable_with<'py, F, R, C>(
    py: Python<'py>,
    fut: F,
    convert: C,
) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = R> + Send + 'static,
    R: Send + 'static,
    C: FnOnce(Python<'_>, R) -> PyResult<Py<PyAny>> + Send + 'static,
{
    let event_loop = running_loop(py)?;
    let inbox = inbox_for(&event_loop)?;
    let py_future = OVM_FUTURE.import(py, "ovm._future", "OvmFuture")?.call(
        (),
        Some(&[(intern!(py, "loop"), &event_loop)].into_py_dict(py)?),
    )?;
    let future_ref = py_future.clone().unbind();
    let live = LiveAwaitable::new();
    let task = runtime().spawn(async move {
        let _live = live;
        let output = fut.await;
        inbox.deliver(future_ref, Box::new(move |py| convert(py, output)));
    });
    // Set before anything can cancel the future: that happens on this (the loop's) thread.
    py_future.setattr(
        intern!(py, "_ovm_abort"),
        AbortOnCancel {
            task: task.abort_handle(),
        },
    )?;
    Ok(py_future)
}

/// An asyncio future of the running event loop that is already done: `value` is its
/// result or its exception. For awaitables whose answer is known when they are made (a
/// wait for a finished job): no task, no trip through the loop's inbox.
pub(crate) fn ready(py: Python<'_>, value: PyResult<Py<PyAny>>) -> PyResult<Bound<'_, PyAny>> {
    let py_future = running_loop(py)?.call_method0(intern!(py, "create_future"))?;
    match value {
        Ok(v) => py_future.call_method1(intern!(py, "set_result"), (v,))?,
        Err(e) => py_future.call_method1(intern!(py, "set_exception"), (e.into_value(py),))?,
    };
    Ok(py_future)
}

/// The running asyncio event loop (`RuntimeError` when there is none).
fn running_loop(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    GET_RUNNING_LOOP
        .import(py, "asyncio", "get_running_loop")?
        .call0()
}

static OVM_FUTURE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Rust futures behind awaitables, not yet finished nor dropped.
static LIVE_AWAITABLES: AtomicUsize = AtomicUsize::new(0);

/// Counted in [`LIVE_AWAITABLES`] while it lives (inside the task of an awaitable).
struct LiveAwaitable;

impl LiveAwaitable {
    fn new() -> Self {
        LIVE_AWAITABLES.fetch_add(1, Ordering::Relaxed);
        LiveAwaitable
    }
}

impl Drop for LiveAwaitable {
    fn drop(&mut self) {
        LIVE_AWAITABLES.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How many Rust futures behind `*_async` awaitables are alive: a test can see that
/// cancelling an awaitable drops its future.
#[pyfunction]
pub(crate) fn _pending_awaitables() -> usize {
    LIVE_AWAITABLES.load(Ordering::Relaxed)
}
static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
/// Drops the Rust future of an asyncio future that was cancelled (called by
/// `OvmFuture.cancel`).
#[pyclass(frozen)]
struct AbortOnCancel {
    task: tokio::task::AbortHandle,
}

#[pymethods]
impl AbortOnCancel {
    fn __call__(&self) {
        self.task.abort();
    }
}

/// A duration given in seconds from Python: finite and not negative.
pub(crate) fn seconds(field: &str, secs: f64) -> ovm_core::Result<Duration> {
    Duration::try_from_secs_f64(secs).map_err(|_| {
        ovm_core::Error::invalid(
            field,
            format!("{secs} is not a number of seconds (finite, at least 0)"),
        )
    })
}
