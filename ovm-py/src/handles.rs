//! Typed handles: `mgr.vm(key)`, `mgr.pool(key)`, `mgr.server(key)`.
//!
//! Getters read the manager's index (no round trip, no waiting); every operation that
//! changes something returns an `ovm.JobHandle`. Each blocking method has an `_async`
//! twin returning an awaitable.

use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

use ovm_core::Error;
use ovm_core::id::{PoolId, ServerId, VmId};
use ovm_core::model::{VmSpec, VmState};
use ovm_manager::{Manager, ServerSpec};

use crate::convert::{PowerActions, ToPython, VM_STATE, record, spec_from_py};
use crate::errors::IntoPyResult;
use crate::job::{Output, PyJobHandle};
use crate::runtime::{awaitable, block_on, seconds, wait_interruptibly, wait_long};

impl ToPython for PyJobHandle {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(Py::new(py, self)?.into_any())
    }
}

/// A wait "without limit" for core APIs that want one: long enough never to matter.
const UNLIMITED: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A spec argument: an instance of the `ovm._model` data class `class`, or a mapping read
/// by its `from_dict` (so that a dict gets the same defaults as the class).
pub(crate) fn spec_arg<T: serde::de::DeserializeOwned>(
    py: Python<'_>,
    class: &str,
    what: &str,
    obj: &Bound<'_, PyAny>,
) -> PyResult<T> {
    let cls = crate::convert::model_module(py)?.getattr(class)?;
    let obj = if obj.is_instance(&cls)? {
        obj.clone()
    } else {
        cls.call_method1("from_dict", (obj,))?
    };
    spec_from_py(what, &obj)?.into_py(py)
}

/// A key naming an object: a str (id or name) or a handle (its id).
pub(crate) fn key_arg(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(s.to_cow()?.into_owned());
    }
    if let Ok(h) = obj.cast::<PyServerHandle>() {
        return Ok(h.get().id.to_string());
    }
    if let Ok(h) = obj.cast::<PyPoolHandle>() {
        return Ok(h.get().id.to_string());
    }
    if let Ok(h) = obj.cast::<PyVmHandle>() {
        return Ok(h.get().id.to_string());
    }
    Err(pyo3::exceptions::PyTypeError::new_err(format!(
        "expected an id or name (str) or a handle, got {}",
        obj.get_type().name()?
    )))
}

/// Bytes from `bytes`, `bytearray` or `str` (UTF-8).
fn bytes_arg(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(s.to_cow()?.as_bytes().to_vec());
    }
    obj.extract::<Vec<u8>>()
        .map_err(|_| pyo3::exceptions::PyTypeError::new_err("expected bytes, bytearray or str"))
}

/// A job-starting future as one that gives the Python `JobHandle`.
///
/// Boxed here, once: a manager operation's future is several KiB (its state holds the
/// job engine's), and every move of an unboxed one on its way to the runtime is a copy.
pub(crate) fn job<T, F>(
    mgr: &Manager,
    output: Output,
    fut: F,
) -> BoxFuture<'static, ovm_core::Result<PyJobHandle>>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
    F: Future<Output = ovm_core::Result<ovm_manager::job::JobHandle<T>>> + Send + 'static,
{
    let mgr = mgr.clone();
    Box::pin(async move { Ok(PyJobHandle::new(mgr, fut.await?, output)) })
}

// ----- VMs ------------------------------------------------------------------------------

/// A VM of a manager. Compares equal to handles of the same VM.
#[pyclass(frozen, module = "ovm._ovm", name = "VmHandle")]
pub(crate) struct PyVmHandle {
    mgr: Manager,
    id: VmId,
}

impl PyVmHandle {
    pub(crate) fn new(mgr: Manager, id: VmId) -> Self {
        PyVmHandle { mgr, id }
    }

    fn op<T, F, Fut>(
        &self,
        output: Output,
        f: F,
    ) -> impl Future<Output = ovm_core::Result<PyJobHandle>> + Send + 'static
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
        F: FnOnce(ovm_manager::manager::VmHandle) -> Fut,
        Fut: Future<Output = ovm_core::Result<ovm_manager::job::JobHandle<T>>> + Send + 'static,
    {
        job(&self.mgr, output, f(self.mgr.vm(self.id)))
    }

    fn start_op(&self) -> impl Future<Output = ovm_core::Result<PyJobHandle>> + Send + 'static {
        self.op(Output::Server, |h| async move { h.start().await })
    }
    fn stop_op(&self) -> impl Future<Output = ovm_core::Result<PyJobHandle>> + Send + 'static {
        self.op(Output::Nothing, |h| async move { h.stop().await })
    }
    fn kill_op(&self) -> impl Future<Output = ovm_core::Result<PyJobHandle>> + Send + 'static {
        self.op(Output::Nothing, |h| async move { h.kill().await })
    }
    fn pause_op(&self) -> impl Future<Output = ovm_core::Result<PyJobHandle>> + Send + 'static {
        self.op(Output::Nothing, |h| async move { h.pause().await })
    }
    fn resume_op(&self) -> impl Future<Output = ovm_core::Result<PyJobHandle>> + Send + 'static {
        self.op(Output::Nothing, |h| async move { h.resume().await })
    }
    fn delete_op(&self) -> impl Future<Output = ovm_core::Result<PyJobHandle>> + Send + 'static {
        self.op(Output::Nothing, |h| async move { h.delete().await })
    }
    fn migrate_op(
        &self,
        to: Option<String>,
    ) -> impl Future<Output = ovm_core::Result<PyJobHandle>> + Send + 'static {
        self.op(Output::Server, |h| async move {
            h.migrate(to.map(Into::into)).await
        })
    }
    fn explain_op(
        &self,
    ) -> impl Future<Output = ovm_core::Result<ovm_core::policy::Explanation>> + Send + 'static
    {
        let h = self.mgr.vm(self.id);
        async move { h.explain_start().await }
    }
    fn send_op(
        &self,
        key: String,
        value: Vec<u8>,
    ) -> impl Future<Output = ovm_core::Result<()>> + Send + 'static {
        let h = self.mgr.vm(self.id);
        async move { h.send_message(&key, &value).await }
    }
    fn read_op(
        &self,
        key: String,
    ) -> impl Future<Output = ovm_core::Result<Option<Vec<u8>>>> + Send + 'static {
        let h = self.mgr.vm(self.id);
        async move { h.read_message(&key).await }
    }
    fn console_op(&self) -> impl Future<Output = ovm_core::Result<Vec<u8>>> + Send + 'static {
        let h = self.mgr.vm(self.id);
        async move { h.console().await }
    }
}

fn vm_state_arg(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<VmState> {
    spec_from_py("state", obj)?.into_py(py)
}

#[pymethods]
impl PyVmHandle {
    /// The VM's id.
    #[getter]
    fn id(&self) -> String {
        self.id.to_string()
    }

    /// The VM as recorded (an `ovm.Vm`).
    fn info(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let vm = self.mgr.vm(self.id).info().into_py(py)?;
        record(py, &vm)
    }

    /// Its state as recorded (an `ovm.VmState`); reads the index, never waits.
    fn state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let state = self.mgr.vm_state(self.id).into_py(py)?;
        VM_STATE.get(py, state.as_str())
    }

    /// True while its server does not answer: `state()` is then the last one known.
    fn state_is_stale(&self, py: Python<'_>) -> PyResult<bool> {
        self.mgr.vm_state_is_stale(self.id).into_py(py)
    }

    /// Starts it on the server its pool's placement policy chooses; the job's result is
    /// that server.
    fn start(&self, py: Python<'_>) -> PyResult<PyJobHandle> {
        block_on(py, self.start_op())
    }
    fn start_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.start_op())
    }

    /// Stops it gracefully (killed after the manager's stop timeout).
    fn stop(&self, py: Python<'_>) -> PyResult<PyJobHandle> {
        block_on(py, self.stop_op())
    }
    fn stop_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.stop_op())
    }

    /// Stops it at once.
    fn kill(&self, py: Python<'_>) -> PyResult<PyJobHandle> {
        block_on(py, self.kill_op())
    }
    fn kill_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.kill_op())
    }

    /// Pauses it.
    fn pause(&self, py: Python<'_>) -> PyResult<PyJobHandle> {
        block_on(py, self.pause_op())
    }
    fn pause_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.pause_op())
    }

    /// Resumes it.
    fn resume(&self, py: Python<'_>) -> PyResult<PyJobHandle> {
        block_on(py, self.resume_op())
    }
    fn resume_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.resume_op())
    }

    /// Deletes its record (its disks stay in their repository).
    fn delete(&self, py: Python<'_>) -> PyResult<PyJobHandle> {
        block_on(py, self.delete_op())
    }
    fn delete_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.delete_op())
    }

    /// Live-migrates it to `to` (a server id, name or handle) or where placement says;
    /// the job's result is the destination.
    #[pyo3(signature = (to = None))]
    fn migrate(&self, py: Python<'_>, to: Option<&Bound<'_, PyAny>>) -> PyResult<PyJobHandle> {
        let to = to.map(key_arg).transpose()?;
        block_on(py, self.migrate_op(to))
    }
    #[pyo3(signature = (to = None))]
    fn migrate_async<'py>(
        &self,
        py: Python<'py>,
        to: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let to = to.map(key_arg).transpose()?;
        awaitable(py, self.migrate_op(to))
    }

    /// Why each server would or would not take it now (an `ovm.Explanation`).
    fn explain_start(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        block_on(py, self.explain_op())?.to_python(py)
    }
    fn explain_start_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.explain_op())
    }

    /// Sends a key/value message to the guest (key ≤ 256 bytes, value ≤ 8 KiB).
    fn send_message(&self, py: Python<'_>, key: String, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let value = bytes_arg(value)?;
        block_on(py, self.send_op(key, value))
    }
    fn send_message_async<'py>(
        &self,
        py: Python<'py>,
        key: String,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let value = bytes_arg(value)?;
        awaitable(py, self.send_op(key, value))
    }

    /// What the guest published under `key`, or None.
    fn read_message<'py>(
        &self,
        py: Python<'py>,
        key: String,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let value = block_on(py, self.read_op(key))?;
        Ok(value.map(|v| PyBytes::new(py, &v)))
    }
    fn read_message_async<'py>(&self, py: Python<'py>, key: String) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.read_op(key))
    }

    /// The console output so far.
    fn console<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = block_on(py, self.console_op())?;
        Ok(PyBytes::new(py, &bytes))
    }
    fn console_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.console_op())
    }

    /// Waits until the VM's recorded state is `state` (changes no job makes, such as a
    /// guest powering off, are observed from the backend). Raises `ovm.TimeoutError`
    /// after `timeout` seconds if given.
    #[pyo3(signature = (state, timeout = None))]
    fn wait_state(
        &self,
        py: Python<'_>,
        state: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let want = vm_state_arg(py, state)?;
        let limit = timeout
            .map(|t| seconds("timeout", t))
            .transpose()
            .into_py(py)?;
        let (mgr, id) = (self.mgr.clone(), self.id);
        let reached = wait_interruptibly(py, limit, async move {
            mgr.wait_vm_state(id, want, UNLIMITED).await
        })?;
        match reached {
            Some(r) => r.into_py(py),
            None => Err(Error::Timeout {
                what: format!("vm {id} to become {want}"),
                after: limit.unwrap_or_default(),
            })
            .into_py(py),
        }
    }
    #[pyo3(signature = (state, timeout = None))]
    fn wait_state_async<'py>(
        &self,
        py: Python<'py>,
        state: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let want = vm_state_arg(py, state)?;
        let limit = timeout
            .map(|t| seconds("timeout", t))
            .transpose()
            .into_py(py)?;
        let (mgr, id) = (self.mgr.clone(), self.id);
        awaitable(py, async move {
            mgr.wait_vm_state(id, want, limit.unwrap_or(UNLIMITED))
                .await
        })
    }

    fn __repr__(&self) -> String {
        match self.mgr.find_vm(self.id) {
            Ok(vm) => format!("<VmHandle {:?} {} {}>", vm.spec.name, self.id, vm.state),
            Err(_) => format!("<VmHandle {} (not found)>", self.id),
        }
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<PyVmHandle>()
            .is_ok_and(|o| o.get().id == self.id)
    }

    fn __hash__(&self) -> u64 {
        self.id.0.as_u64_pair().0
    }
}

// ----- pools ----------------------------------------------------------------------------

/// A server pool of a manager.
#[pyclass(frozen, module = "ovm._ovm", name = "PoolHandle")]
pub(crate) struct PyPoolHandle {
    mgr: Manager,
    id: PoolId,
}

impl PyPoolHandle {
    pub(crate) fn new(mgr: Manager, id: PoolId) -> Self {
        PyPoolHandle { mgr, id }
    }

    fn add_server_op(
        &self,
        new: NewServer,
    ) -> impl Future<Output = ovm_core::Result<PyJobHandle>> + Send + 'static {
        let h = self.mgr.pool(self.id);
        job(&self.mgr, Output::Server, async move {
            let mut spec = new.spec;
            if new.kind_from_agent
                && let Some(endpoint) = &spec.agent
            {
                let hello = ovm_agent::AgentClient::new(endpoint, None, &spec.name)?
                    .hello()
                    .await?;
                spec.hypervisor = hello.hypervisor;
            }
            h.add_server(spec).await
        })
    }
    fn create_vm_op(
        &self,
        spec: VmSpec,
    ) -> impl Future<Output = ovm_core::Result<PyJobHandle>> + Send + 'static {
        let h = self.mgr.pool(self.id);
        job(
            &self.mgr,
            Output::Vm,
            async move { h.create_vm(spec).await },
        )
    }
    fn vm_from_template_op(
        &self,
        template: String,
        name: String,
    ) -> impl Future<Output = ovm_core::Result<PyJobHandle>> + Send + 'static {
        let (mgr, pool) = (self.mgr.clone(), self.id.to_string());
        job(&self.mgr, Output::Vm, async move {
            mgr.create_vm_from_template(&pool, &template, &name).await
        })
    }
    fn delete_op(&self) -> impl Future<Output = ovm_core::Result<PyJobHandle>> + Send + 'static {
        let h = self.mgr.pool(self.id);
        job(&self.mgr, Output::Nothing, async move { h.delete().await })
    }
    fn create_network_op(
        &self,
        name: String,
        roles: std::collections::BTreeSet<ovm_core::model::NetworkRole>,
        vlan: Option<u16>,
    ) -> impl Future<Output = ovm_core::Result<PyJobHandle>> + Send + 'static {
        let (mgr, pool) = (self.mgr.clone(), self.id.to_string());
        job(&self.mgr, Output::Id, async move {
            mgr.create_network(&pool, &name, roles, vlan).await
        })
    }
    fn rebalance_op(
        &self,
    ) -> impl Future<Output = ovm_core::Result<ovm_manager::manager::ScheduleReport>> + Send + 'static
    {
        let (mgr, pool) = (self.mgr.clone(), self.id.to_string());
        async move { mgr.rebalance(&pool).await }
    }
    fn apply_power_op(
        &self,
    ) -> impl Future<Output = ovm_core::Result<ovm_manager::manager::ScheduleReport>> + Send + 'static
    {
        let (mgr, pool) = (self.mgr.clone(), self.id.to_string());
        async move { mgr.apply_power(&pool).await }
    }
    fn register_repository_op(
        &self,
        plugin: String,
        name: String,
        location: String,
        create: bool,
    ) -> impl Future<Output = ovm_core::Result<PyJobHandle>> + Send + 'static {
        let (mgr, pool) = (self.mgr.clone(), self.id.to_string());
        job(&self.mgr, Output::Id, async move {
            mgr.register_repository(&pool, &plugin, &name, &location, create)
                .await
        })
    }
}

/// What `add_server` was asked: the spec, and whether its hypervisor is the agent's to say.
pub(crate) struct NewServer {
    spec: ServerSpec,
    kind_from_agent: bool,
}

fn server_spec(
    py: Python<'_>,
    name: &str,
    address: &str,
    hypervisor: Option<&Bound<'_, PyAny>>,
    roles: Option<&Bound<'_, PyAny>>,
    agent: Option<String>,
    fingerprint: Option<String>,
) -> PyResult<NewServer> {
    let d = PyDict::new(py);
    d.set_item("name", name)?;
    let sim = PyString::new(py, "sim").into_any();
    d.set_item("hypervisor", hypervisor.unwrap_or(&sim))?;
    if let Some(r) = roles {
        d.set_item("roles", r)?;
    }
    match (agent, fingerprint) {
        (Some(url), Some(fp)) => {
            d.set_item("address", &url)?;
            let a = PyDict::new(py);
            a.set_item("url", url)?;
            a.set_item("fingerprint", fp)?;
            d.set_item("agent", a)?;
        }
        (None, None) => d.set_item("address", address)?,
        _ => {
            return Err(ovm_core::Error::invalid(
                "server.agent",
                "give both agent= and fingerprint= (ovm.agent_fingerprint(url) shows it)",
            ))
            .into_py(py);
        }
    }
    let spec: ServerSpec = spec_from_py("server", &d)?.into_py(py)?;
    Ok(NewServer {
        kind_from_agent: hypervisor.is_none() && spec.agent.is_some(),
        spec,
    })
}

fn network_roles(
    py: Python<'_>,
    roles: &Bound<'_, PyAny>,
) -> PyResult<std::collections::BTreeSet<ovm_core::model::NetworkRole>> {
    spec_from_py("network.roles", roles)?.into_py(py)
}

#[pymethods]
impl PyPoolHandle {
    /// The pool's id.
    #[getter]
    fn id(&self) -> String {
        self.id.to_string()
    }

    /// The pool as recorded (an `ovm.ServerPool`).
    fn info(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.mgr.pool(self.id).info().into_py(py)?.to_python(py)
    }

    /// Its servers (`ovm.Server` records).
    fn servers(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.mgr.pool(self.id).servers().to_python(py)
    }

    /// Its VMs (`ovm.Vm` records).
    fn vms(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.mgr.pool(self.id).vms().to_python(py)
    }

    /// Adds a server: connects to its hypervisor (`sim`, `kvm`, `xen`), reads its size,
    /// records it. For the simulator the address gives the size:
    /// `cpus=16,memory_mib=65536`. The job's result is the server.
    ///
    /// A server on another machine is reached through its agent: `agent="https://HOST:PORT"`
    /// and the `fingerprint` of its certificate (`ovm-agent fingerprint` on the server);
    /// the manager must own the agent first (`mgr.own_agent`). Its hypervisor is then what
    /// the agent serves unless given.
    #[pyo3(signature = (name, address = "", *, hypervisor = None, roles = None, agent = None, fingerprint = None))]
    #[allow(clippy::too_many_arguments)]
    fn add_server(
        &self,
        py: Python<'_>,
        name: &str,
        address: &str,
        hypervisor: Option<&Bound<'_, PyAny>>,
        roles: Option<&Bound<'_, PyAny>>,
        agent: Option<String>,
        fingerprint: Option<String>,
    ) -> PyResult<PyJobHandle> {
        let spec = server_spec(py, name, address, hypervisor, roles, agent, fingerprint)?;
        block_on(py, self.add_server_op(spec))
    }
    #[pyo3(signature = (name, address = "", *, hypervisor = None, roles = None, agent = None, fingerprint = None))]
    #[allow(clippy::too_many_arguments)]
    fn add_server_async<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        address: &str,
        hypervisor: Option<&Bound<'_, PyAny>>,
        roles: Option<&Bound<'_, PyAny>>,
        agent: Option<String>,
        fingerprint: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let spec = server_spec(py, name, address, hypervisor, roles, agent, fingerprint)?;
        awaitable(py, self.add_server_op(spec))
    }

    /// Defines a VM from an `ovm.VmSpec` (or a dict of its fields); it does not run until
    /// started. The job's result is the VM.
    fn create_vm(&self, py: Python<'_>, spec: &Bound<'_, PyAny>) -> PyResult<PyJobHandle> {
        let spec = spec_arg(py, "VmSpec", "vm", spec)?;
        block_on(py, self.create_vm_op(spec))
    }
    fn create_vm_async<'py>(
        &self,
        py: Python<'py>,
        spec: &Bound<'_, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let spec = spec_arg(py, "VmSpec", "vm", spec)?;
        awaitable(py, self.create_vm_op(spec))
    }

    /// Makes a VM named `name` from a template (id or name) of a repository the pool
    /// uses: the template's volumes are cloned into the VM's disks. The job's result is
    /// the VM.
    fn create_vm_from_template(
        &self,
        py: Python<'_>,
        template: String,
        name: String,
    ) -> PyResult<PyJobHandle> {
        block_on(py, self.vm_from_template_op(template, name))
    }
    fn create_vm_from_template_async<'py>(
        &self,
        py: Python<'py>,
        template: String,
        name: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.vm_from_template_op(template, name))
    }

    /// Deletes the pool, which must be empty.
    fn delete(&self, py: Python<'_>) -> PyResult<PyJobHandle> {
        block_on(py, self.delete_op())
    }
    fn delete_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.delete_op())
    }

    /// Creates a network with `roles` (`ovm.NetworkRole` values) on every server of the
    /// pool; the job's result is the network's id.
    #[pyo3(signature = (name, roles, *, vlan = None))]
    fn create_network(
        &self,
        py: Python<'_>,
        name: String,
        roles: &Bound<'_, PyAny>,
        vlan: Option<u16>,
    ) -> PyResult<PyJobHandle> {
        let roles = network_roles(py, roles)?;
        block_on(py, self.create_network_op(name, roles, vlan))
    }
    #[pyo3(signature = (name, roles, *, vlan = None))]
    fn create_network_async<'py>(
        &self,
        py: Python<'py>,
        name: String,
        roles: &Bound<'_, PyAny>,
        vlan: Option<u16>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let roles = network_roles(py, roles)?;
        awaitable(py, self.create_network_op(name, roles, vlan))
    }

    /// Registers a repository with the pool through storage plugin `plugin`: creates it
    /// at `location` (`create=True`) or opens an existing one. The job's result is the
    /// repository's id.
    #[pyo3(signature = (plugin, name, location, *, create = false))]
    fn register_repository(
        &self,
        py: Python<'_>,
        plugin: String,
        name: String,
        location: String,
        create: bool,
    ) -> PyResult<PyJobHandle> {
        block_on(
            py,
            self.register_repository_op(plugin, name, location, create),
        )
    }
    #[pyo3(signature = (plugin, name, location, *, create = false))]
    fn register_repository_async<'py>(
        &self,
        py: Python<'py>,
        plugin: String,
        name: String,
        location: String,
        create: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(
            py,
            self.register_repository_op(plugin, name, location, create),
        )
    }

    /// The migrations DRS would make in the pool now (`ovm.Migration`, each with its
    /// reason), by the pool's balance policy. Reads the index; changes nothing.
    fn propose_rebalance(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.mgr
            .propose_rebalance(self.id)
            .into_py(py)?
            .to_python(py)
    }

    /// The power actions DPM would take in the pool now (`ovm.PowerOff`,
    /// `ovm.PowerOn`), by the pool's power policy. Reads the index; changes nothing.
    fn propose_power(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let actions = self.mgr.propose_power(self.id).into_py(py)?;
        PowerActions(actions).to_python(py)
    }

    /// Runs DRS once: every proposed migration as a migration job, waited for. Returns
    /// what was done (an `ovm.ScheduleReport`; failures are in its `errors`, the rest
    /// went on). Ctrl-C stops the waiting; a migration under way goes on.
    fn rebalance(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        wait_long(py, self.rebalance_op())?
            .into_py(py)?
            .to_python(py)
    }
    fn rebalance_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.rebalance_op())
    }

    /// Runs DPM once: evacuations and power-offs, then power-ons. Returns what was done
    /// (an `ovm.ScheduleReport`). Ctrl-C stops the waiting; a job under way goes on.
    fn apply_power(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        wait_long(py, self.apply_power_op())?
            .into_py(py)?
            .to_python(py)
    }
    fn apply_power_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.apply_power_op())
    }

    fn __repr__(&self) -> String {
        match self.mgr.find_pool(self.id) {
            Ok(p) => format!("<PoolHandle {:?} {}>", p.name, self.id),
            Err(_) => format!("<PoolHandle {} (not found)>", self.id),
        }
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<PyPoolHandle>()
            .is_ok_and(|o| o.get().id == self.id)
    }

    fn __hash__(&self) -> u64 {
        self.id.0.as_u64_pair().0
    }
}

// ----- servers --------------------------------------------------------------------------

/// A server of a manager.
#[pyclass(frozen, module = "ovm._ovm", name = "ServerHandle")]
pub(crate) struct PyServerHandle {
    mgr: Manager,
    id: ServerId,
}

impl PyServerHandle {
    pub(crate) fn new(mgr: Manager, id: ServerId) -> Self {
        PyServerHandle { mgr, id }
    }

    fn maintenance_op(
        &self,
        on: bool,
    ) -> impl Future<Output = ovm_core::Result<PyJobHandle>> + Send + 'static {
        let h = self.mgr.server(self.id);
        job(&self.mgr, Output::Nothing, async move {
            h.set_maintenance(on).await
        })
    }
    fn power_op(
        &self,
        on: bool,
        reason: String,
    ) -> impl Future<Output = ovm_core::Result<()>> + Send + 'static {
        let (mgr, id) = (self.mgr.clone(), self.id);
        async move { mgr.power_server(id, on, &reason).await }
    }
    fn remove_op(&self) -> impl Future<Output = ovm_core::Result<PyJobHandle>> + Send + 'static {
        let (mgr, key) = (self.mgr.clone(), self.id.to_string());
        job(&self.mgr, Output::Nothing, async move {
            mgr.remove_server(&key).await
        })
    }
}

#[pymethods]
impl PyServerHandle {
    /// The server's id.
    #[getter]
    fn id(&self) -> String {
        self.id.to_string()
    }

    /// The server as recorded (an `ovm.Server`).
    fn info(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.mgr.server(self.id).info().into_py(py)?.to_python(py)
    }

    /// The VMs recorded as active on it (`ovm.Vm` records).
    fn vms(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.mgr.server(self.id).vms().to_python(py)
    }

    /// Puts it into maintenance (no new VMs are placed there) or takes it out.
    fn set_maintenance(&self, py: Python<'_>, on: bool) -> PyResult<PyJobHandle> {
        block_on(py, self.maintenance_op(on))
    }
    fn set_maintenance_async<'py>(&self, py: Python<'py>, on: bool) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.maintenance_op(on))
    }

    /// Powers it off (it must run no VMs) or on through its backend (IPMI, Wake-on-LAN;
    /// the simulator records it) and records its state, with `reason` in the history.
    #[pyo3(signature = (on, *, reason = ""))]
    fn set_power(&self, py: Python<'_>, on: bool, reason: &str) -> PyResult<()> {
        block_on(py, self.power_op(on, reason.to_string()))
    }
    #[pyo3(signature = (on, *, reason = ""))]
    fn set_power_async<'py>(
        &self,
        py: Python<'py>,
        on: bool,
        reason: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.power_op(on, reason.to_string()))
    }

    /// Removes it (it must run no VMs) from its pool and from the manager.
    fn remove(&self, py: Python<'_>) -> PyResult<PyJobHandle> {
        block_on(py, self.remove_op())
    }
    fn remove_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.remove_op())
    }

    fn __repr__(&self) -> String {
        match self.mgr.find_server(self.id) {
            Ok(s) => format!(
                "<ServerHandle {:?} {} {}>",
                s.name,
                self.id,
                s.state.as_str()
            ),
            Err(_) => format!("<ServerHandle {} (not found)>", self.id),
        }
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<PyServerHandle>()
            .is_ok_and(|o| o.get().id == self.id)
    }

    fn __hash__(&self) -> u64 {
        self.id.0.as_u64_pair().0
    }
}
