//! Python bindings for ovm: the native module `ovm._ovm` of the Python package `ovm`.
//!
//! The package is this module plus a thin pure-Python layer (`python/ovm/`): the
//! exception hierarchy (`_errors.py`), the enums and frozen data classes of the model
//! (`_model.py`) and the re-exports (`__init__.py`). Records cross the boundary in their
//! serde form; handles, jobs and the manager are native classes.
//!
//! Every blocking call runs on a shared tokio runtime with the GIL released; every such
//! call has an `_async` twin returning an asyncio awaitable (on pyo3-async-runtimes' runtime).

mod backends;
mod convert;
mod errors;
mod handles;
mod inbox;
mod job;
mod manager;
mod ovf;
mod runtime;

use pyo3::prelude::*;

/// The native part of the `ovm` package.
#[pymodule]
#[pyo3(name = "_ovm")]
fn ovm_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<manager::PyManager>()?;
    m.add_class::<handles::PyVmHandle>()?;
    m.add_class::<handles::PyPoolHandle>()?;
    m.add_class::<handles::PyServerHandle>()?;
    m.add_class::<job::PyJobHandle>()?;
    m.add_class::<job::PyProgressStream>()?;
    m.add_class::<manager::PyScheduler>()?;
    m.add_function(wrap_pyfunction!(manager::available_backends, m)?)?;
    m.add_function(wrap_pyfunction!(manager::agent_fingerprint, m)?)?;
    m.add_function(wrap_pyfunction!(ovf::inspect_ovf, m)?)?;
    m.add_function(wrap_pyfunction!(runtime::_pending_awaitables, m)?)?;
    m.add_function(wrap_pyfunction!(backends::_vmm_main, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
