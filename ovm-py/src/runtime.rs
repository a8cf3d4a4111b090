//! The tokio runtime the bindings run on, and the two ways Python waits for it: blocking
//! (with the GIL released, so other Python threads keep running) and awaitable (an asyncio
//! future, through pyo3-async-runtimes).

use std::future::Future;
use std::sync::{Condvar, Mutex, OnceLock, mpsc};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyList;

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
/// so that completions are batched ([`deliver`]) and cannot race the interpreter's exit:
/// each batch holds an [`InFlight`] token while it touches Python, and [`shutdown`] (run by `atexit`) waits
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
        deliver(Completion {
            event_loop: loop_ref,
            future: future_ref,
            convert: Box::new(move |py| convert(py, output)),
        });
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
static COMPLETE_MANY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// A finished Rust future whose asyncio future waits for its result.
struct Completion {
    event_loop: Py<PyAny>,
    future: Py<PyAny>,
    convert: ToPy,
}

/// Makes the Python value of a finished future (with the GIL).
type ToPy = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

/// The thread that completes asyncio futures (see [`deliver`]).
static COMPLETER: OnceLock<Mutex<mpsc::Sender<Completion>>> = OnceLock::new();

/// Hands a finished future to the completer thread, which takes the GIL once for every
/// completion that is waiting and wakes each event loop once per batch: a thousand
/// awaitables finishing together cost a few GIL acquisitions, not a thousand. Holding
/// the GIL blocks a thread, so it is never one of the runtime's workers.
fn deliver(c: Completion) {
    let sender = COMPLETER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Completion>();
        let spawned = std::thread::Builder::new()
            .name("ovm-asyncio".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    complete_batch(batch);
                }
            });
        if let Err(e) = spawned {
            // The receiver is gone with the closure: every send below fails and falls back
            // to completing on a blocking thread of the runtime.
            eprintln!("ovm: cannot start the asyncio completion thread ({e})");
        }
        Mutex::new(tx)
    });
    let sent = sender.lock().unwrap_or_else(|p| p.into_inner()).send(c);
    if let Err(mpsc::SendError(c)) = sent {
        drop(runtime().spawn_blocking(move || complete_batch(vec![c])));
    }
}

/// Completes a batch of futures: one GIL acquisition, one wake-up per event loop.
fn complete_batch(batch: Vec<Completion>) {
    let Some(_token) = InFlight::enter() else {
        return; // the interpreter is exiting: nobody waits any more
    };
    Python::attach(|py| {
        let mut by_loop: Vec<(Py<PyAny>, Bound<'_, PyList>)> = Vec::new();
        for c in batch {
            let future = c.future.bind(py);
            let cancelled = future
                .call_method0("cancelled")
                .and_then(|x| x.is_truthy())
                .unwrap_or(true);
            if cancelled {
                continue;
            }
            let (ok, value) = match (c.convert)(py) {
                Ok(v) => (true, v),
                Err(e) => (false, e.into_value(py).into_any()),
            };
            let item = (future.clone(), ok, value);
            let list = match by_loop.iter().position(|(l, _)| l.is(&c.event_loop)) {
                Some(i) => by_loop[i].1.clone(),
                None => {
                    let list = PyList::empty(py);
                    by_loop.push((c.event_loop, list.clone()));
                    list
                }
            };
            if let Err(e) = list.append(item) {
                e.write_unraisable(py, None);
            }
        }
        let complete = match COMPLETE_MANY.import(py, "ovm._ovm", "_complete_many") {
            Ok(f) => f,
            Err(e) => return e.write_unraisable(py, None),
        };
        for (event_loop, items) in by_loop {
            // Fails only when the loop is closed: then nobody can await the results.
            let _ = event_loop
                .bind(py)
                .call_method1("call_soon_threadsafe", (complete, items));
        }
    });
}

/// Completes asyncio futures on their loop's thread (those not cancelled meanwhile):
/// `items` holds `(future, ok, value)` tuples.
#[pyfunction]
pub(crate) fn _complete_many(items: &Bound<'_, PyList>) -> PyResult<()> {
    for item in items.iter() {
        let (future, ok, value): (Bound<'_, PyAny>, bool, Bound<'_, PyAny>) = item.extract()?;
        if future.call_method0("done")?.is_truthy()? {
            continue;
        }
        let method = if ok { "set_result" } else { "set_exception" };
        future.call_method1(method, (value,))?;
    }
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
