//! `ovm.inspect_ovf`: what an OVF package holds, without a manager (import and export
//! are manager methods, see `manager.rs`).

use std::path::PathBuf;

use ovm_ovf::Limits;
use pyo3::prelude::*;

use crate::convert::json_to_py;
use crate::errors::IntoPyResult;

/// Summarises an `.ova` or `.ovf` (reading its descriptor, manifest and certificate only):
/// a dict with its virtual systems (CPUs, memory, disks, NICs), networks, whether it is
/// a collection, and what ovm would not honour. A package ovm refuses (hostile XML, bad
/// sizes, hrefs outside the package) raises `ovm.InvalidSpec` naming the cause.
#[pyfunction]
pub(crate) fn inspect_ovf(py: Python<'_>, path: PathBuf) -> PyResult<Py<PyAny>> {
    let summary = py
        .detach(|| ovm_ovf::inspect::summary_json(&path, &Limits::default()))
        .map_err(ovm_core::Error::from)
        .into_py(py)?;
    Ok(json_to_py(py, &summary)?.unbind())
}
