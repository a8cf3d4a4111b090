//! The tokio runtime the bindings run on, and the two ways Python waits for it: blocking
//! (with the GIL released, so other Python threads keep running) and awaitable (an asyncio
//! future, through pyo3-async-runtimes).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, mpsc};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{IntoPyDict, PyList};

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
/// runtime, its output turned into Python by `convert` (with the GIL). Cancelling the
/// asyncio future drops `fut`.
///
/// The future is completed here rather than by `pyo3_async_runtimes::future_into_py`
/// so that completions are batched ([`deliver`]) and cannot race the interpreter's exit:
/// each batch holds an [`InFlight`] token while it touches Python, and [`shutdown`] (run by `atexit`) waits
/// for them and refuses new ones.
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
    let py_future = OVM_FUTURE.import(py, "ovm._future", "OvmFuture")?.call(
        (),
        Some(&[(intern!(py, "loop"), &event_loop)].into_py_dict(py)?),
    )?;
    let (loop_ref, future_ref) = (event_loop.unbind(), py_future.clone().unbind());
    let live = LiveAwaitable::new();
    let task = runtime().spawn(async move {
        let _live = live;
        let output = fut.await;
        deliver(Completion {
            event_loop: loop_ref,
            future: future_ref,
            convert: Box::new(move |py| convert(py, output)),
        });
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
/// wait for a finished job): no task, no trip through the completer thread.
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
            // A future cancelled meanwhile is skipped on the loop's thread (the only one
            // where asking is safe); its task was aborted, so this is rare.
            let future = c.future.bind(py);
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
        let py = future.py();
        if future.call_method0(intern!(py, "done"))?.is_truthy()? {
            continue; // cancelled
        }
        let method = if ok {
            intern!(py, "set_result")
        } else {
            intern!(py, "set_exception")
        };
        future.call_method1(method, (value,))?;
    }
    Ok(())
}

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
