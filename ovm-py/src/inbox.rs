//! How results reach asyncio: a finished Rust future leaves its output in its event
//! loop's [`Inbox`], and the loop's own thread makes the Python values and completes the
//! futures.
//!
//! The inbox rings a bell (an eventfd the loop watches with `add_reader`) only when it
//! goes from empty to not empty, so a burst of completions costs the loop one wake-up. No
//! runtime thread ever takes the GIL: none contends with the interpreter for it, and none
//! can touch Python while the interpreter exits.
//!
//! Lifetimes: the loop's selector holds the reader ([`Drain`]), the reader holds the
//! inbox, and the registry finds readers by loop holding both weakly. When the loop closes
//! its selector drops the reader, which closes the inbox: outputs arriving later are
//! dropped rather than kept (they would keep the closed loop alive through its futures).

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

/// An asyncio future and what it is to be completed with. The future is held strongly
/// until then, as any producer holds its future: a task awaiting it that nobody else
/// holds must not be collected meanwhile.
struct Delivery {
    future: Py<PyAny>,
    value: ToPy,
}

/// Outputs waiting for the loop's thread, or `None` once the loop dropped its reader.
type Waiting = Option<Vec<Delivery>>;

/// Outputs of finished futures waiting for their event loop's thread.
pub(crate) struct Inbox {
    waiting: Mutex<Waiting>,
    /// An eventfd registered with the loop (`add_reader`): readable while outputs wait.
    bell: OwnedFd,
}

impl Inbox {
    /// Leaves `value` for `future` (an asyncio future of this inbox's loop). Any thread, no
    /// GIL needed. Dropped if the loop has closed.
    pub(crate) fn deliver(&self, future: Py<PyAny>, value: ToPy) {
        let was_empty = {
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(waiting) = waiting.as_mut() else {
                return; // nobody will drain it
            };
            waiting.push(Delivery { future, value });
            waiting.len() == 1
        };
        if was_empty {
            // Fails only if the counter would overflow: then the loop is due to wake anyway.
            let _ = rustix::io::write(&self.bell, &1u64.to_ne_bytes());
        }
    }

    /// Whether its loop still holds its reader.
    fn is_open(&self) -> bool {
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Completes every waiting future (on the loop's thread).
    fn drain(&self, py: Python<'_>) {
        // The bell is silenced before the outputs are taken: an output left after this
        // read rings again, so none is stranded.
        let _ = rustix::io::read(&self.bell, &mut [0u8; 8]);
        let batch = self
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        for delivery in batch {
            if let Err(e) = complete(py, delivery) {
                e.write_unraisable(py, None);
            }
        }
    }
}

/// Sets the result (or exception) of a future that is not done already (one cancelled
/// meanwhile is left alone).
fn complete(py: Python<'_>, d: Delivery) -> PyResult<()> {
    let future = d.future.bind(py);
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
#[pyclass(frozen, weakref)]
struct Drain {
    inbox: Arc<Inbox>,
}

impl Drop for Drain {
    /// The loop let go of its reader (it closed): outputs waiting or still to come have
    /// nobody to go to.
    fn drop(&mut self) {
        let waiting = self
            .inbox
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(waiting);
    }
}

#[pymethods]
impl Drain {
    fn __call__(&self, py: Python<'_>) {
        self.inbox.drain(py);
    }
}

/// Readers by event loop: a `weakref.WeakKeyDictionary` loop → weak reference to its
/// [`Drain`] (the loop's selector holds the reader itself).
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
            (alive.is(event_loop) && inbox.is_open()).then(|| inbox.clone())
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
    let registered = registry
        .call_method1(intern!(py, "get"), (event_loop,))?
        .cast_into::<PyWeakrefReference>()
        .ok()
        .and_then(|weak| weak.upgrade());
    let inbox = match registered {
        Some(drain) => drain.cast::<Drain>()?.get().inbox.clone(),
        None => {
            let bell = eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)
                .map_err(|e| pyo3::exceptions::PyOSError::new_err(format!("eventfd: {e}")))?;
            let inbox = Arc::new(Inbox {
                waiting: Mutex::new(Some(Vec::new())),
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
            registry.set_item(event_loop, PyWeakrefReference::new(&drain)?)?;
            inbox
        }
    };
    let weak = PyWeakrefReference::new(event_loop)?.unbind();
    LAST.with_borrow_mut(|last| *last = Some((weak, inbox.clone())));
    Ok(inbox)
}
