//! Conversions between Rust values and Python objects.
//!
//! Records (VMs, jobs, events, ...) cross as their serde form: serialized to a
//! `serde_json::Value`, built into Python dicts and lists, and read by the frozen data
//! classes of `ovm._model` (`Vm.from_dict`). Input specs take the opposite road, so a bad
//! field gets serde's message and its path (`vm.vcpus: invalid value ...`). Enum values
//! on hot paths (`vm.state()`) come from a cache of the Python enum members.

use pyo3::exceptions::PyTypeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PyModule, PySet, PyString, PyTuple,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Number, Value};

use ovm_core::Error;

static MODEL: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// The pure-Python model module (`ovm._model`).
pub(crate) fn model_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    Ok(MODEL
        .get_or_try_init(py, || py.import("ovm._model").map(Bound::unbind))?
        .bind(py))
}

/// A JSON value as Python data (dicts, lists, str, int, float, bool, None).
pub(crate) fn json_to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, item) in map {
                dict.set_item(k, json_to_py(py, item)?)?;
            }
            dict.into_any()
        }
    })
}

/// Python data as a JSON value. Enum members of `ovm` are `str` subclasses and become
/// their names; tuples, sets and frozensets become arrays; objects with a `to_dict()`
/// method (the data classes) become what it returns.
pub(crate) fn py_to_json(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    if obj.is_none() {
        return Ok(Value::Null);
    }
    // bool before int: a Python bool is an int.
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::from(i));
        }
        return obj
            .extract::<u64>()
            .map(Value::from)
            .map_err(|_| PyTypeError::new_err(format!("integer {obj} is too large")));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        let f = f.value();
        return Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| PyTypeError::new_err(format!("{f} is not a finite number")));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::String(s.to_cow()?.into_owned()));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut map = Map::with_capacity(d.len());
        for (k, v) in d.iter() {
            let key = k.cast::<PyString>().map_err(|_| {
                PyTypeError::new_err(format!("dict keys must be str, not {}", type_name(&k)))
            })?;
            map.insert(key.to_cow()?.into_owned(), py_to_json(&v)?);
        }
        return Ok(Value::Object(map));
    }
    if obj.is_instance_of::<PyList>()
        || obj.is_instance_of::<PyTuple>()
        || obj.is_instance_of::<PySet>()
        || obj.is_instance_of::<PyFrozenSet>()
    {
        let mut items = Vec::new();
        for item in obj.try_iter()? {
            items.push(py_to_json(&item?)?);
        }
        return Ok(Value::Array(items));
    }
    if let Some(value) = data_fields_to_json(obj)? {
        return Ok(value);
    }
    let py = obj.py();
    if obj.hasattr(intern!(py, "to_dict"))? {
        return py_to_json(&obj.call_method0(intern!(py, "to_dict"))?);
    }
    Err(PyTypeError::new_err(format!(
        "cannot convert a {} to ovm data",
        type_name(obj)
    )))
}

/// A data class whose fields all cross as they are (its `_DIRECT` layout, see
/// `_model.py`: tag key, tag, field names), read field by field: the JSON `to_dict()`
/// would give, without building its dict first. `None` for other objects.
fn data_fields_to_json(obj: &Bound<'_, PyAny>) -> PyResult<Option<Value>> {
    let py = obj.py();
    let Some(layout) = obj.getattr_opt(intern!(py, "_DIRECT"))? else {
        return Ok(None);
    };
    if layout.is_none() {
        return Ok(None);
    }
    let (tag_key, tag, names): (Bound<'_, PyString>, Bound<'_, PyString>, Bound<'_, PyTuple>) =
        layout.extract()?;
    let mut map = Map::new();
    let tag = tag.to_cow()?;
    if !tag.is_empty() {
        map.insert(
            tag_key.to_cow()?.into_owned(),
            Value::String(tag.into_owned()),
        );
    }
    for name in names.iter() {
        let name = name.cast_into::<PyString>()?;
        let value = py_to_json(&obj.getattr(&name)?)?;
        map.insert(name.to_cow()?.into_owned(), value);
    }
    Ok(Some(Value::Object(map)))
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Reads a spec given from Python (a data class or a dict) into a Rust value; a value
/// serde refuses is an `InvalidSpec` naming the field, under `what` (`vm`, `pool`).
pub(crate) fn spec_from_py<T: DeserializeOwned>(
    what: &str,
    obj: &Bound<'_, PyAny>,
) -> PyResult<Result<T, Error>> {
    let json = py_to_json(obj)?;
    // Read straight from the borrowed value first (specs cross on every call); only a
    // value serde refuses is read again, tracking the path, for the message.
    if let Ok(value) = T::deserialize(&json) {
        return Ok(Ok(value));
    }
    Ok(
        serde_path_to_error::deserialize(json).map_err(|e: serde_path_to_error::Error<_>| {
            let path = e.path().to_string();
            let field = if path == "." || path.is_empty() {
                what.to_string()
            } else {
                format!("{what}.{path}")
            };
            Error::invalid(field, e.into_inner().to_string())
        }),
    )
}

/// A Rust value Python can receive.
pub(crate) trait ToPython {
    /// The Python object for the value.
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>>;
}

impl ToPython for () {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(py.None())
    }
}

impl ToPython for Py<PyAny> {
    fn to_python(self, _py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self)
    }
}

impl ToPython for Option<Vec<u8>> {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match self {
            Some(bytes) => bytes.to_python(py),
            None => Ok(py.None()),
        }
    }
}

impl ToPython for Vec<u8> {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(pyo3::types::PyBytes::new(py, &self).into_any().unbind())
    }
}

/// A record of the model with its data class in `ovm._model`.
pub(crate) trait Record: Serialize {
    /// The name of the data class.
    const CLASS: &'static str;
}

macro_rules! records {
    ($($t:ty => $class:literal),* $(,)?) => {$(
        impl Record for $t {
            const CLASS: &'static str = $class;
        }
    )*};
}

records! {
    ovm_core::model::Vm => "Vm",
    ovm_core::model::Server => "Server",
    ovm_core::model::ServerPool => "ServerPool",
    ovm_core::model::Network => "Network",
    ovm_core::model::Repository => "Repository",
    ovm_core::model::Volume => "Volume",
    ovm_core::model::Job => "Job",
    ovm_core::model::Event => "Event",
    ovm_core::model::Progress => "Progress",
    ovm_core::model::Template => "Template",
    ovm_core::model::Assembly => "Assembly",
    ovm_core::policy::Explanation => "Explanation",
    ovm_core::storage::PluginInfo => "PluginInfo",
    ovm_core::policy::Migration => "Migration",
    ovm_manager::manager::ScheduleReport => "ScheduleReport",
}

/// DPM's proposals: `ovm.PowerOff` and `ovm.PowerOn` (a union, read by one function).
pub(crate) struct PowerActions(pub(crate) Vec<ovm_core::policy::PowerAction>);

impl ToPython for PowerActions {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let read = model_module(py)?.getattr("_power_action_from_dict")?;
        let list = PyList::empty(py);
        for action in &self.0 {
            let json = serde_json::to_value(action).map_err(|e| {
                pyo3::exceptions::PyRuntimeError::new_err(format!("cannot encode {e}"))
            })?;
            list.append(read.call1((json_to_py(py, &json)?,))?)?;
        }
        Ok(list.into_any().unbind())
    }
}

/// The data class instance for a record.
pub(crate) fn record<T: Record>(py: Python<'_>, value: &T) -> PyResult<Py<PyAny>> {
    let json = serde_json::to_value(value).map_err(|e| {
        pyo3::exceptions::PyRuntimeError::new_err(format!("cannot encode {}: {e}", T::CLASS))
    })?;
    data_class(py, T::CLASS, &json)
}

/// An instance of the data class `class` of `ovm._model`, read from its serde form.
pub(crate) fn data_class(py: Python<'_>, class: &str, json: &Value) -> PyResult<Py<PyAny>> {
    Ok(model_module(py)?
        .getattr(class)?
        .call_method1(intern!(py, "from_dict"), (json_to_py(py, json)?,))?
        .unbind())
}

impl<T: Record> ToPython for T {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        record(py, &self)
    }
}

impl<T: Record> ToPython for Vec<T> {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let list = PyList::empty(py);
        for item in &self {
            list.append(record(py, item)?)?;
        }
        Ok(list.into_any().unbind())
    }
}

/// The members of one Python enum of `ovm._model`, cached in the order of `values`.
pub(crate) struct EnumMembers {
    class: &'static str,
    values: &'static [&'static str],
    members: PyOnceLock<Vec<Py<PyAny>>>,
}

impl EnumMembers {
    pub(crate) const fn new(class: &'static str, values: &'static [&'static str]) -> Self {
        EnumMembers {
            class,
            values,
            members: PyOnceLock::new(),
        }
    }

    /// The member whose value is `value`.
    pub(crate) fn get<'py>(&self, py: Python<'py>, value: &str) -> PyResult<Bound<'py, PyAny>> {
        let members = self.members.get_or_try_init(py, || {
            let class = model_module(py)?.getattr(self.class)?;
            self.values
                .iter()
                .map(|v| class.call1((*v,)).map(Bound::unbind))
                .collect::<PyResult<Vec<_>>>()
        })?;
        let i = self
            .values
            .iter()
            .position(|v| *v == value)
            .ok_or_else(|| {
                pyo3::exceptions::PyRuntimeError::new_err(format!(
                    "{} has no member {value:?}",
                    self.class
                ))
            })?;
        Ok(members[i].bind(py).clone())
    }
}

/// `ovm.VmState` members.
pub(crate) static VM_STATE: EnumMembers = EnumMembers::new(
    "VmState",
    &[
        "stopped",
        "starting",
        "running",
        "paused",
        "stopping",
        "migrating",
        "crashed",
    ],
);

/// `ovm.JobState` members.
pub(crate) static JOB_STATE: EnumMembers = EnumMembers::new(
    "JobState",
    &[
        "pending",
        "running",
        "rolling_back",
        "completed",
        "rolled_back",
        "failed",
    ],
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_through_python() {
        Python::initialize();
        Python::attach(|py| {
            let v = serde_json::json!({
                "a": [1, -2, 3.5, "x", null, true],
                "big": u64::MAX,
                "nested": {"k": []}
            });
            let obj = json_to_py(py, &v).unwrap();
            assert_eq!(py_to_json(&obj).unwrap(), v);
        });
    }

    #[test]
    fn non_data_is_refused_with_a_type_error() {
        Python::initialize();
        Python::attach(|py| {
            let obj = py.eval(c"object()", None, None).unwrap();
            let err = py_to_json(&obj).unwrap_err();
            assert!(err.is_instance_of::<PyTypeError>(py));
            let nan = py.eval(c"float('nan')", None, None).unwrap();
            assert!(py_to_json(&nan).is_err());
        });
    }

    #[test]
    fn bad_spec_fields_are_named() {
        Python::initialize();
        Python::attach(|py| {
            let obj = py
                .eval(c"{'name': 'x', 'vcpus': -1, 'memory_mib': 5}", None, None)
                .unwrap();
            let r: Result<ovm_core::model::VmSpec, Error> = spec_from_py("vm", &obj).unwrap();
            match r {
                Err(Error::InvalidSpec { field, .. }) => assert_eq!(field, "vm.vcpus"),
                other => panic!("expected InvalidSpec, got {other:?}"),
            }
        });
    }
}
