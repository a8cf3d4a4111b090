//! ovm errors as Python exceptions.
//!
//! The exception classes live in the pure-Python module `ovm._errors` (a Python class can
//! derive from two bases there: `NotFound` is also a `LookupError`, `InvalidSpec` a
//! `ValueError`, `TimeoutError` the builtin `TimeoutError`). Each Rust variant maps to one
//! class, and its fields become the exception's attributes.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule};

use ovm_core::Error;

static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// One structured field of an exception.
enum Field<'a> {
    Str(&'a str),
    Int(u64),
    Float(f64),
}

/// The Python class name and the fields of an ovm error.
fn describe(e: &Error) -> (&'static str, Vec<(&'static str, Field<'_>)>) {
    use Field::{Float, Int, Str};
    match e {
        Error::NotFound { kind, id } => ("NotFound", vec![("kind", Str(kind)), ("id", Str(id))]),
        Error::AlreadyExists { kind, id } => {
            ("AlreadyExists", vec![("kind", Str(kind)), ("id", Str(id))])
        }
        Error::Conflict {
            kind,
            id,
            expected,
            found,
        } => (
            "Conflict",
            vec![
                ("kind", Str(kind)),
                ("id", Str(id)),
                ("expected", Int(*expected)),
                ("found", Int(*found)),
            ],
        ),
        Error::InvalidSpec { field, reason } => (
            "InvalidSpec",
            vec![("field", Str(field)), ("reason", Str(reason))],
        ),
        Error::InvalidState {
            kind,
            id,
            state,
            op,
        } => (
            "InvalidState",
            vec![
                ("kind", Str(kind)),
                ("id", Str(id)),
                ("state", Str(state)),
                ("op", Str(op)),
            ],
        ),
        Error::Capacity { reason } => ("Capacity", vec![("reason", Str(reason))]),
        Error::Unsupported { op, backend } => (
            "Unsupported",
            vec![("op", Str(op)), ("backend", Str(backend))],
        ),
        Error::Backend {
            backend, message, ..
        } => (
            "BackendError",
            vec![("backend", Str(backend)), ("message", Str(message))],
        ),
        Error::Timeout { what, after } => (
            "TimeoutError",
            vec![("what", Str(what)), ("after", Float(after.as_secs_f64()))],
        ),
        Error::Aborted { what } => ("Aborted", vec![("what", Str(what))]),
        // A variant added to the core later: the base class still says what happened.
        _ => ("OvmError", vec![]),
    }
}

fn build(py: Python<'_>, e: &Error) -> PyResult<PyErr> {
    let module = ERRORS
        .get_or_try_init(py, || py.import("ovm._errors").map(Bound::unbind))?
        .bind(py);
    let (class, fields) = describe(e);
    let kwargs = PyDict::new(py);
    for (name, value) in fields {
        match value {
            Field::Str(s) => kwargs.set_item(name, s)?,
            Field::Int(i) => kwargs.set_item(name, i)?,
            Field::Float(f) => kwargs.set_item(name, f)?,
        }
    }
    let exc = module
        .getattr(class)?
        .call((e.to_string(),), Some(&kwargs))?;
    if let Some(source) = std::error::Error::source(e) {
        // The backend's own error, for tracebacks: "The above exception was the direct
        // cause of ...".
        let cause = pyo3::exceptions::PyRuntimeError::new_err(source.to_string());
        exc.setattr("__cause__", cause.value(py))?;
    }
    Ok(PyErr::from_value(exc))
}

/// The Python exception for an ovm error.
pub(crate) fn to_pyerr(py: Python<'_>, e: Error) -> PyErr {
    // Failing to build the exception (the `ovm` package is not importable) is itself
    // the more useful error to show.
    build(py, &e).unwrap_or_else(|import_error| import_error)
}

/// Converts ovm results to Python results (needs the interpreter).
pub(crate) trait IntoPyResult<T> {
    /// The result with an ovm error mapped to its exception.
    fn into_py(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for ovm_core::Result<T> {
    fn into_py(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_pyerr(py, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_variant_has_its_class_and_fields() {
        let cases = [
            (Error::not_found("vm", "web"), "NotFound", 2),
            (
                Error::AlreadyExists {
                    kind: "vm",
                    id: "web".into(),
                },
                "AlreadyExists",
                2,
            ),
            (
                Error::Conflict {
                    kind: "vm".into(),
                    id: "x".into(),
                    expected: 1,
                    found: 2,
                },
                "Conflict",
                4,
            ),
            (Error::invalid("vm.vcpus", "0"), "InvalidSpec", 2),
            (
                Error::InvalidState {
                    kind: "vm",
                    id: "x".into(),
                    state: "running".into(),
                    op: "delete".into(),
                },
                "InvalidState",
                4,
            ),
            (Error::capacity("memory"), "Capacity", 1),
            (Error::unsupported("migrate", "xen"), "Unsupported", 2),
            (Error::backend("sim", "down"), "BackendError", 2),
            (
                Error::Timeout {
                    what: "job".into(),
                    after: Duration::from_millis(1500),
                },
                "TimeoutError",
                2,
            ),
            (Error::Aborted { what: "job".into() }, "Aborted", 1),
        ];
        for (err, class, n) in cases {
            let (got, fields) = describe(&err);
            assert_eq!(got, class, "{err}");
            assert_eq!(fields.len(), n, "{err}");
        }
    }
}
