//! The tokio runtime the bindings run on, and the two ways Python waits for it: blocking
//! (with the GIL released, so other Python threads keep running) and awaitable (an asyncio
//! future, through pyo3-async-runtimes).

use std::future::Future;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use crate::convert::ToPython;
use crate::errors::{IntoPyResult, to_pyerr};

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

/// Waits until `done` resolves or `limit` passes (`None`: no limit), with the GIL released,
/// looking at Python's signals every [`SIGNAL_CHECK_INTERVAL`]: a `KeyboardInterrupt`
/// ends the wait (not the operation). Returns `Ok(None)` when the limit passed first.
///
/// `done` is called again after each interval, so it must be cheap to restart (a wait on
/// a watch channel is).
pub(crate) fn wait_interruptibly<F, Fut, T>(
    py: Python<'_>,
    limit: Option<Duration>,
    mut done: F,
) -> PyResult<Option<T>>
where
    F: FnMut() -> Fut + Send,
    Fut: Future<Output = T> + Send,
    T: Send,
{
    let deadline = limit.map(|l| tokio::time::Instant::now() + l);
    loop {
        let now = tokio::time::Instant::now();
        let slice = match deadline {
            Some(d) => d.saturating_duration_since(now).min(SIGNAL_CHECK_INTERVAL),
            None => SIGNAL_CHECK_INTERVAL,
        };
        let fut = done();
        // The timer must be made inside the runtime: build it in the future.
        let outcome =
            py.detach(|| runtime().block_on(async move { tokio::time::timeout(slice, fut).await }));
        if let Ok(value) = outcome {
            return Ok(Some(value));
        }
        py.check_signals()?;
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            return Ok(None);
        }
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
/// runtime, its output turned into Python by `convert` (with the GIL). Cancelling the
/// asyncio future drops `fut`.
///
/// The future is completed here rather than by `pyo3_async_runtimes::future_into_py`
/// so that completions cannot race the interpreter's exit: each one holds an
/// [`InFlight`] token while it touches Python, and [`shutdown`] (run by `atexit`) waits
/// for them and refuses new ones.
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
    let event_loop = GET_RUNNING_LOOP
        .import(py, "asyncio", "get_running_loop")?
        .call0()?;
    let py_future = event_loop.call_method0("create_future")?;
    let (loop_ref, future_ref) = (event_loop.unbind(), py_future.clone().unbind());
    let task = runtime().spawn(async move {
        let output = fut.await;
        // Holding the GIL blocks a thread: not one of the runtime's workers.
        let _ = tokio::task::spawn_blocking(move || {
            let Some(_token) = InFlight::enter() else {
                return; // the interpreter is exiting: nobody waits any more
            };
            Python::attach(|py| {
                let (future, event_loop) = (future_ref.bind(py), loop_ref.bind(py));
                let cancelled = future
                    .call_method0("cancelled")
                    .and_then(|c| c.is_truthy())
                    .unwrap_or(true);
                if cancelled {
                    return;
                }
                let (ok, value) = match convert(py, output) {
                    Ok(v) => (true, v),
                    Err(e) => (false, e.into_value(py).into_any()),
                };
                let complete = match COMPLETE.import(py, "ovm._ovm", "_complete") {
                    Ok(f) => f,
                    Err(e) => return e.write_unraisable(py, None),
                };
                // Fails only when the loop is closed: then nobody can await the result.
                let _ =
                    event_loop.call_method1("call_soon_threadsafe", (complete, future, ok, value));
            });
        })
        .await;
    });
    py_future.call_method1(
        "add_done_callback",
        (AbortOnCancel {
            task: task.abort_handle(),
        },),
    )?;
    Ok(py_future)
}

static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static COMPLETE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Completes an asyncio future on its loop's thread (unless it was cancelled meanwhile).
#[pyfunction]
pub(crate) fn _complete(
    future: &Bound<'_, PyAny>,
    ok: bool,
    value: &Bound<'_, PyAny>,
) -> PyResult<()> {
    if future.call_method0("done")?.is_truthy()? {
        return Ok(());
    }
    let method = if ok { "set_result" } else { "set_exception" };
    future.call_method1(method, (value,))?;
    Ok(())
}

/// Drops the Rust future of an asyncio future that was cancelled.
#[pyclass(frozen)]
struct AbortOnCancel {
    task: tokio::task::AbortHandle,
}

#[pymethods]
impl AbortOnCancel {
    fn __call__(&self, future: &Bound<'_, PyAny>) -> PyResult<()> {
        if future.call_method0("cancelled")?.is_truthy()? {
            self.task.abort();
        }
        Ok(())
    }
}

/// Completions touching Python right now, and whether the interpreter is exiting.
struct InFlightState {
    count: usize,
    closing: bool,
}

static IN_FLIGHT: Mutex<InFlightState> = Mutex::new(InFlightState {
    count: 0,
    closing: false,
});
static IN_FLIGHT_DONE: Condvar = Condvar::new();

/// Permission for a runtime thread to touch Python (see [`awaitable_with`]).
struct InFlight;

impl InFlight {
    fn enter() -> Option<InFlight> {
        let mut st = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
        if st.closing {
            return None;
        }
        st.count += 1;
        Some(InFlight)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut st = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
        st.count -= 1;
        if st.count == 0 {
            IN_FLIGHT_DONE.notify_all();
        }
    }
}

/// Run at interpreter exit (`atexit`): no completion may touch Python from now on, and
/// the ones that are doing so are waited for (a little), so that none races finalization.
#[pyfunction]
pub(crate) fn _shutdown(py: Python<'_>) {
    py.detach(|| {
        let mut st = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
        st.closing = true;
        let _ = IN_FLIGHT_DONE
            .wait_timeout_while(st, Duration::from_secs(2), |st| st.count > 0)
            .map(drop);
    });
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
