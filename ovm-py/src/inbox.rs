//! How results reach asyncio: a finished Rust future leaves its output in its event
//! loop's [`Inbox`], and the loop's own thread makes the Python values and completes the
//! futures.
//!
//! The inbox rings a bell (an eventfd the loop watches with `add_reader`) only when it
//! goes from empty to not empty, so a burst of completions costs the loop one wake-up. No
//! runtime thread ever takes the GIL: none contends with the interpreter for it, and none
//! can touch Python while the interpreter exits.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, PoisonError};

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyWeakrefReference;
use rustix::event::{EventfdFlags, eventfd};
use rustix::fd::{AsRawFd, OwnedFd};

/// Makes the Python value of a finished future's output, on the loop's thread: `Err` is
/// the exception the future is to raise.
pub(crate) type ToPy = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

/// An asyncio future and what it is to be completed with.
///
/// The future is held weakly: whoever awaits it holds it, and an inbox holding Python
/// objects would keep a closed loop alive (its futures refer to it) for as long as the
/// registry keeps the inbox, which is as long as the loop lives.
struct Delivery {
    future: Py<PyWeakrefReference>,
    value: ToPy,
}

/// Outputs of finished futures waiting for their event loop's thread.
pub(crate) struct Inbox {
    waiting: Mutex<Vec<Delivery>>,
    /// An eventfd registered with the loop (`add_reader`): readable while outputs wait.
    bell: OwnedFd,
}

impl Inbox {
    /// Leaves `value` for `future` (a weak reference to an asyncio future of this inbox's
    /// loop). Any thread, no GIL needed.
    pub(crate) fn deliver(&self, future: Py<PyWeakrefReference>, value: ToPy) {
        let was_empty = {
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            waiting.push(Delivery { future, value });
            waiting.len() == 1
        };
        if was_empty {
            // Fails only if the counter would overflow: then the loop is due to wake anyway.
            let _ = rustix::io::write(&self.bell, &1u64.to_ne_bytes());
        }
    }

    /// Completes every waiting future (on the loop's thread).
    fn drain(&self, py: Python<'_>) {
        // The bell is silenced before the outputs are taken: an output left after this
        // read rings again, so none is stranded.
        let _ = rustix::io::read(&self.bell, &mut [0u8; 8]);
        let batch =
            std::mem::take(&mut *self.waiting.lock().unwrap_or_else(PoisonError::into_inner));
        for delivery in batch {
            if let Err(e) = complete(py, delivery) {
                e.write_unraisable(py, None);
            }
        }
    }
}

/// Sets the result (or exception) of a future that is not done already (one cancelled
/// meanwhile is left alone, and one nobody holds any more is gone).
fn complete(py: Python<'_>, d: Delivery) -> PyResult<()> {
    let Some(future) = d.future.bind(py).upgrade() else {
        return Ok(());
    };
    if future.call_method0(intern!(py, "done"))?.is_truthy()? {
        return Ok(());
    }
    match (d.value)(py) {
        Ok(v) => future.call_method1(intern!(py, "set_result"), (v,))?,
        Err(e) => future.call_method1(intern!(py, "set_exception"), (e.into_value(py),))?,
    };
    Ok(())
}

/// The reader callback the loop runs when the bell rings.
#[pyclass(frozen)]
struct Drain {
    inbox: Arc<Inbox>,
}

#[pymethods]
impl Drain {
    fn __call__(&self, py: Python<'_>) {
        self.inbox.drain(py);
    }
}

/// Inboxes by event loop: a `weakref.WeakKeyDictionary` loop → [`Drain`], so an inbox
/// goes with its loop.
static INBOXES: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

thread_local! {
    /// The inbox this thread used last, and (weakly) its loop: a loop's thread asks for
    /// the same inbox over and over.
    static LAST: RefCell<Option<(Py<PyWeakrefReference>, Arc<Inbox>)>> = const { RefCell::new(None) };
}

/// The inbox of `event_loop` (the running loop of this thread), made and registered with
/// the loop on first use.
pub(crate) fn inbox_for(event_loop: &Bound<'_, PyAny>) -> PyResult<Arc<Inbox>> {
    let py = event_loop.py();
    let cached = LAST.with_borrow(|last| {
        last.as_ref().and_then(|(weak, inbox)| {
            let alive = weak.bind(py).upgrade()?;
            alive.is(event_loop).then(|| inbox.clone())
        })
    });
    if let Some(inbox) = cached {
        return Ok(inbox);
    }
    let registry = INBOXES
        .get_or_try_init(py, || {
            let dict = py
                .import("weakref")?
                .getattr("WeakKeyDictionary")?
                .call0()?;
            Ok::<_, PyErr>(dict.unbind())
        })?
        .bind(py);
    let inbox = match registry.get_item(event_loop) {
        Ok(drain) => drain.cast::<Drain>()?.get().inbox.clone(),
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyKeyError>(py) => {
            let bell = eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)
                .map_err(|e| pyo3::exceptions::PyOSError::new_err(format!("eventfd: {e}")))?;
            let inbox = Arc::new(Inbox {
                waiting: Mutex::new(Vec::new()),
                bell,
            });
            let drain = Bound::new(
                py,
                Drain {
                    inbox: inbox.clone(),
                },
            )?;
            event_loop.call_method1(
                intern!(py, "add_reader"),
                (inbox.bell.as_raw_fd(), drain.clone()),
            )?;
            registry.set_item(event_loop, drain)?;
            inbox
        }
        Err(e) => return Err(e),
    };
    let weak = PyWeakrefReference::new(event_loop)?.unbind();
    LAST.with_borrow_mut(|last| *last = Some((weak, inbox.clone())));
    Ok(inbox)
}
