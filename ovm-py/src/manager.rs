//! `ovm.Manager`: opens a store, hands out typed handles, lists records, creates pools,
//! repositories and volumes, shows jobs and the audit history.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use ovm_core::Error;
use ovm_core::model::{EventQuery, Server};
use ovm_core::storage::VolumeSpec;
use ovm_manager::manager::{Connector, SimConnector};
use ovm_manager::{Manager, ManagerOptions, PoolSpec};
use ovm_ovf::export::DiskExportFormat;

use crate::backends;
use crate::convert::{ToPython, record, spec_from_py};
use crate::errors::IntoPyResult;
use crate::handles::{PyPoolHandle, PyServerHandle, PyVmHandle, key_arg};
use crate::job::{Output, PyJobHandle};
use crate::runtime::{awaitable, block_on, seconds, wait_long};

/// How a Python manager is opened.
struct OpenArgs {
    path: Option<PathBuf>,
    /// The interpreter (`sys.executable`), to run embedded VMM processes.
    python: Option<PathBuf>,
    backends: Option<Vec<String>>,
    initiator: String,
    stop_timeout: Duration,
}

fn open_args(
    py: Python<'_>,
    path: Option<PathBuf>,
    backends: Option<&Bound<'_, PyAny>>,
    initiator: Option<String>,
    stop_timeout: f64,
) -> PyResult<OpenArgs> {
    let backends = match backends {
        None => None,
        Some(b) if b.is_instance_of::<pyo3::types::PyString>() => Some(vec![b.extract()?]),
        Some(b) => Some(b.extract::<Vec<String>>()?),
    };
    let initiator = initiator.unwrap_or_else(|| {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".into());
        format!("python:{user}")
    });
    let python: String = py
        .import("sys")?
        .getattr("executable")?
        .extract()
        .unwrap_or_default();
    Ok(OpenArgs {
        python: Some(PathBuf::from(python)).filter(|p| !p.as_os_str().is_empty()),
        path: path.and_then(store_path),
        backends,
        initiator,
        stop_timeout: seconds("stop_timeout", stop_timeout).into_py(py)?,
    })
}

/// The file of a store named by a path or a `sqlite://` URL; `None` for an in-memory
/// store (`:memory:`, as in `sqlite3.connect`).
fn store_path(given: PathBuf) -> Option<PathBuf> {
    let path = match given.to_str().and_then(|s| s.strip_prefix("sqlite://")) {
        Some(rest) => PathBuf::from(rest),
        None => given,
    };
    (path.as_os_str() != ":memory:").then_some(path)
}

async fn open(args: OpenArgs) -> ovm_core::Result<PyManager> {
    let built = backends::build(args.backends, args.path.as_deref(), args.python)?;
    let names = built.kinds.iter().map(|k| k.name().to_string()).collect();
    let identity = backends::identity(args.path.as_deref())?;
    let options = ManagerOptions {
        initiator: args.initiator,
        connectors: ovm_agent::with_agents(built.connectors, &identity),
        storage: built.storage,
        stop_timeout: args.stop_timeout,
        ..ManagerOptions::default()
    };
    let mgr = match &args.path {
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            Manager::open(path, options).await?
        }
        None => Manager::open_in_memory(options).await?,
    };
    Ok(PyManager {
        mgr,
        identity,
        sim: built.sim,
        backends: names,
        path: args.path,
    })
}

impl ToPython for PyManager {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(Py::new(py, self)?.into_any())
    }
}

/// The ovm manager: the entry point. Thread-safe; handles and jobs taken from it may be
/// shared between threads.
#[pyclass(frozen, module = "ovm._ovm", name = "Manager")]
pub(crate) struct PyManager {
    mgr: Manager,
    /// Its TLS client certificate: the agents it owns let it in by it.
    identity: ovm_agent::Identity,
    sim: Arc<SimConnector>,
    backends: Vec<String>,
    path: Option<PathBuf>,
}

/// The volume operations of the manager, as futures for both the sync and async forms.
impl PyManager {
    fn job_of<T, Fut>(
        &self,
        output: Output,
        fut: Fut,
    ) -> impl Future<Output = ovm_core::Result<PyJobHandle>> + Send + 'static
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
        Fut: Future<Output = ovm_core::Result<ovm_manager::job::JobHandle<T>>> + Send + 'static,
    {
        crate::handles::job(&self.mgr, output, fut)
    }

    fn import_ovf_op(
        &self,
        path: PathBuf,
        repo: String,
        name: Option<String>,
    ) -> impl Future<Output = ovm_core::Result<PyJobHandle>> + Send + 'static {
        let mgr = self.mgr.clone();
        self.job_of(Output::Data("ImportSummary"), async move {
            ovm_ovf::jobs::import_package(&mgr, &path, &repo, name).await
        })
    }

    fn export_template_op(
        &self,
        template: String,
        path: PathBuf,
        raw: bool,
    ) -> impl Future<Output = ovm_core::Result<ovm_core::model::Template>> + Send + 'static {
        let mgr = self.mgr.clone();
        let format = DiskExportFormat::raw_if(raw);
        async move {
            ovm_ovf::jobs::export_template_of(&mgr, &template, &path, format)
                .await
                .map_err(Error::from)
        }
    }

    fn create_pool_op(
        &self,
        spec: PoolSpec,
    ) -> impl Future<Output = ovm_core::Result<PyJobHandle>> + Send + 'static {
        let mgr = self.mgr.clone();
        self.job_of(Output::Pool, async move { mgr.create_pool(spec).await })
    }

    fn jobs_op(
        &self,
    ) -> impl Future<Output = ovm_core::Result<Vec<ovm_core::model::Job>>> + Send + 'static {
        let mgr = self.mgr.clone();
        async move { mgr.jobs().await }
    }

    fn job_op(
        &self,
        key: String,
    ) -> impl Future<Output = ovm_core::Result<ovm_core::model::Job>> + Send + 'static {
        let mgr = self.mgr.clone();
        async move { mgr.job(&key).await }
    }

    fn abort_job_op(
        &self,
        key: String,
    ) -> impl Future<Output = ovm_core::Result<()>> + Send + 'static {
        let mgr = self.mgr.clone();
        async move {
            let id = mgr.job(&key).await?.id;
            mgr.abort_job(id).await
        }
    }

    fn events_op(
        &self,
        q: EventQuery,
    ) -> impl Future<Output = ovm_core::Result<Vec<ovm_core::model::Event>>> + Send + 'static {
        let mgr = self.mgr.clone();
        async move { mgr.events(&q).await }
    }

    fn templates_op(
        &self,
    ) -> impl Future<Output = ovm_core::Result<Vec<ovm_core::model::Template>>> + Send + 'static
    {
        let mgr = self.mgr.clone();
        async move { mgr.templates().await }
    }

    fn find_template_op(
        &self,
        key: String,
    ) -> impl Future<Output = ovm_core::Result<ovm_core::model::Template>> + Send + 'static {
        let mgr = self.mgr.clone();
        async move { mgr.find_template(&key).await }
    }

    fn assemblies_op(
        &self,
    ) -> impl Future<Output = ovm_core::Result<Vec<ovm_core::model::Assembly>>> + Send + 'static
    {
        let mgr = self.mgr.clone();
        async move { mgr.assemblies().await }
    }

    fn volumes_op(
        &self,
        repo: String,
    ) -> impl Future<Output = ovm_core::Result<Vec<ovm_core::model::Volume>>> + Send + 'static {
        let mgr = self.mgr.clone();
        async move { mgr.volumes(&repo).await }
    }

    fn find_volume_op(
        &self,
        repo: String,
        key: String,
    ) -> impl Future<Output = ovm_core::Result<ovm_core::model::Volume>> + Send + 'static {
        let mgr = self.mgr.clone();
        async move { mgr.find_volume(&repo, &key).await }
    }

    fn create_volume_op(
        &self,
        repo: String,
        spec: VolumeSpec,
    ) -> impl Future<Output = ovm_core::Result<PyJobHandle>> + Send + 'static {
        let mgr = self.mgr.clone();
        self.job_of(
            Output::Id,
            async move { mgr.create_volume(&repo, spec).await },
        )
    }

    fn clone_volume_op(
        &self,
        repo: String,
        source: String,
        name: String,
    ) -> impl Future<Output = ovm_core::Result<PyJobHandle>> + Send + 'static {
        let mgr = self.mgr.clone();
        self.job_of(Output::Id, async move {
            mgr.clone_volume(&repo, &source, &name).await
        })
    }

    fn resize_volume_op(
        &self,
        repo: String,
        key: String,
        size_bytes: u64,
        allow_shrink: bool,
    ) -> impl Future<Output = ovm_core::Result<PyJobHandle>> + Send + 'static {
        let mgr = self.mgr.clone();
        self.job_of(Output::Nothing, async move {
            mgr.resize_volume(&repo, &key, size_bytes, allow_shrink)
                .await
        })
    }

    fn delete_volume_op(
        &self,
        repo: String,
        key: String,
    ) -> impl Future<Output = ovm_core::Result<PyJobHandle>> + Send + 'static {
        let mgr = self.mgr.clone();
        self.job_of(Output::Nothing, async move {
            mgr.delete_volume(&repo, &key).await
        })
    }

    /// The simulated host of a server (connecting to it if this process has not yet).
    fn sim_host(
        &self,
        py: Python<'_>,
        server: &Bound<'_, PyAny>,
    ) -> PyResult<Arc<ovm_core::sim::SimHypervisor>> {
        let record: Server = self.mgr.find_server(&key_arg(server)?).into_py(py)?;
        if record.hypervisor != ovm_core::model::HypervisorKind::Sim {
            return Err(Error::InvalidState {
                kind: "server",
                id: record.name,
                state: format!("a {} server", record.hypervisor),
                op: "inject simulator faults".into(),
            })
            .into_py(py);
        }
        if let Some(h) = self.sim.host(record.id) {
            return Ok(h);
        }
        let (sim, id) = (self.sim.clone(), record.id);
        block_on(py, async move { sim.connect(&record).await })?;
        self.sim
            .host(id)
            .ok_or_else(|| Error::backend("sim", "the simulator did not keep the host"))
            .into_py(py)
    }
}

fn pool_spec(
    py: Python<'_>,
    name: &str,
    ha_enabled: bool,
    max_servers: u32,
    policies: Option<&Bound<'_, PyAny>>,
) -> PyResult<PoolSpec> {
    let d = PyDict::new(py);
    d.set_item("name", name)?;
    d.set_item("ha_enabled", ha_enabled)?;
    d.set_item("max_servers", max_servers)?;
    if let Some(p) = policies {
        d.set_item("policies", p)?;
    }
    spec_from_py("pool", &d)?.into_py(py)
}

fn event_query(
    py: Python<'_>,
    object_id: Option<&Bound<'_, PyAny>>,
    since: Option<&Bound<'_, PyAny>>,
    until: Option<&Bound<'_, PyAny>>,
    limit: Option<u32>,
) -> PyResult<EventQuery> {
    let to_ms = py.import("ovm._model")?.getattr("_datetime_to_ms")?;
    let ms = |t: Option<&Bound<'_, PyAny>>| -> PyResult<Option<u64>> {
        t.map(|t| to_ms.call1((t,))?.extract::<u64>()).transpose()
    };
    Ok(EventQuery {
        object_id: object_id.map(key_arg).transpose()?,
        since: ms(since)?.map(ovm_core::Timestamp),
        until: ms(until)?.map(ovm_core::Timestamp),
        limit,
    })
}

fn volume_spec(
    py: Python<'_>,
    name: &str,
    size_bytes: u64,
    format: &Bound<'_, PyAny>,
) -> PyResult<VolumeSpec> {
    let d = PyDict::new(py);
    d.set_item("name", name)?;
    d.set_item("size_bytes", size_bytes)?;
    d.set_item("format", format)?;
    spec_from_py("volume", &d)?.into_py(py)
}

#[pymethods]
impl PyManager {
    /// Opens (creating if needed) the manager's SQLite store at `path` (a path or a
    /// `sqlite://` URL; `":memory:"` for a private in-memory one) and rolls back the jobs a previous process left unfinished.
    ///
    /// `backends` names the hypervisor backends to connect through (`"sim"`, `"kvm"`);
    /// by default every backend usable on this machine. `initiator` is recorded in jobs
    /// and events (default `python:$USER`); `stop_timeout` is how long a graceful stop
    /// waits before killing, in seconds.
    #[staticmethod]
    #[pyo3(signature = (path, *, backends = None, initiator = None, stop_timeout = 30.0))]
    fn open(
        py: Python<'_>,
        path: PathBuf,
        backends: Option<&Bound<'_, PyAny>>,
        initiator: Option<String>,
        stop_timeout: f64,
    ) -> PyResult<PyManager> {
        let args = open_args(py, Some(path), backends, initiator, stop_timeout)?;
        block_on(py, open(args))
    }
    #[staticmethod]
    #[pyo3(signature = (path, *, backends = None, initiator = None, stop_timeout = 30.0))]
    fn open_async<'py>(
        py: Python<'py>,
        path: PathBuf,
        backends: Option<&Bound<'_, PyAny>>,
        initiator: Option<String>,
        stop_timeout: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let args = open_args(py, Some(path), backends, initiator, stop_timeout)?;
        awaitable(py, open(args))
    }

    /// A manager on a private in-memory store (tests, demos, notebooks).
    #[staticmethod]
    #[pyo3(signature = (*, backends = None, initiator = None, stop_timeout = 30.0))]
    fn open_in_memory(
        py: Python<'_>,
        backends: Option<&Bound<'_, PyAny>>,
        initiator: Option<String>,
        stop_timeout: f64,
    ) -> PyResult<PyManager> {
        let args = open_args(py, None, backends, initiator, stop_timeout)?;
        block_on(py, open(args))
    }
    #[staticmethod]
    #[pyo3(signature = (*, backends = None, initiator = None, stop_timeout = 30.0))]
    fn open_in_memory_async<'py>(
        py: Python<'py>,
        backends: Option<&Bound<'_, PyAny>>,
        initiator: Option<String>,
        stop_timeout: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let args = open_args(py, None, backends, initiator, stop_timeout)?;
        awaitable(py, open(args))
    }

    /// Who this manager acts for.
    #[getter]
    fn initiator(&self) -> String {
        self.mgr.initiator().to_string()
    }

    /// The hypervisor backends it connects through.
    #[getter]
    fn backends(&self) -> Vec<String> {
        self.backends.clone()
    }

    /// The store's path, None for an in-memory store.
    #[getter]
    fn path(&self) -> Option<PathBuf> {
        self.path.clone()
    }

    /// Catches up at once with what other processes (the `ovm` CLI, other scripts) changed
    /// in the store. An open manager does so by itself several times a second; this is
    /// for a script that must see a change it knows was just made.
    fn refresh(&self, py: Python<'_>) -> PyResult<()> {
        let mgr = self.mgr.clone();
        block_on(py, async move { mgr.refresh().await })
    }
    fn refresh_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let mgr = self.mgr.clone();
        awaitable(py, async move { mgr.refresh().await })
    }

    /// Stops this manager's background work and, if none of its jobs is running, gives
    /// up its ownership lease, so other processes need not wait for it to lapse.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let mgr = self.mgr.clone();
        block_on(py, async move { mgr.close().await })
    }
    fn close_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let mgr = self.mgr.clone();
        awaitable(py, async move { mgr.close().await })
    }

    // ----- records (read from the index; never wait) -----

    /// All pools (`ovm.ServerPool`), by name.
    fn pools(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.mgr.pools().to_python(py)
    }

    /// All servers (`ovm.Server`), by name.
    fn servers(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.mgr.servers().to_python(py)
    }

    /// All VMs (`ovm.Vm`), by name.
    fn vms(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.mgr.vms().to_python(py)
    }

    /// All networks (`ovm.Network`), by name.
    fn networks(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.mgr.networks().to_python(py)
    }

    /// All repositories (`ovm.Repository`), by name.
    fn repositories(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.mgr.repositories().to_python(py)
    }

    /// The registered storage plugins (`ovm.PluginInfo`).
    fn storage_plugins(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.mgr.storage_plugins().to_python(py)
    }

    /// A pool by id or name (`ovm.ServerPool`); raises `ovm.NotFound`.
    fn find_pool(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        record(py, &self.mgr.find_pool(&key_arg(key)?).into_py(py)?)
    }

    /// A server by id or name (`ovm.Server`); raises `ovm.NotFound`.
    fn find_server(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        record(py, &self.mgr.find_server(&key_arg(key)?).into_py(py)?)
    }

    /// A VM by id or name (`ovm.Vm`); raises `ovm.NotFound`.
    fn find_vm(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        record(py, &self.mgr.find_vm(&key_arg(key)?).into_py(py)?)
    }

    /// A repository by id or name (`ovm.Repository`); raises `ovm.NotFound`.
    fn find_repository(&self, py: Python<'_>, key: &str) -> PyResult<Py<PyAny>> {
        record(py, &self.mgr.find_repository(key).into_py(py)?)
    }

    // ----- handles -----

    /// A handle on a pool, by id or name (a name is looked up now: `ovm.NotFound`).
    fn pool(&self, py: Python<'_>, key: &str) -> PyResult<PyPoolHandle> {
        let id = match key.parse() {
            Ok(id) => id,
            Err(_) => self.mgr.find_pool(key).into_py(py)?.id,
        };
        Ok(PyPoolHandle::new(self.mgr.clone(), id))
    }

    /// Takes ownership of the agent at `url` (whose certificate has `fingerprint`) with
    /// its password, so servers behind it can be added (`pool.add_server(name,
    /// agent=url, fingerprint=...)`). Returns what the agent says about itself.
    #[pyo3(signature = (url, fingerprint, password, *, name = None))]
    fn own_agent(
        &self,
        py: Python<'_>,
        url: &str,
        fingerprint: &str,
        password: &str,
        name: Option<String>,
    ) -> PyResult<Py<PyAny>> {
        let endpoint = ovm_core::model::AgentEndpoint {
            url: url.to_string(),
            fingerprint: fingerprint.to_string(),
        };
        let (identity, password) = (self.identity.clone(), password.to_string());
        let name = name.unwrap_or_else(|| format!("ovm python {}", self.mgr.initiator()));
        let hello = block_on(py, async move {
            let client = ovm_agent::AgentClient::new(&endpoint, Some(&identity), &endpoint.url)?;
            client.take_ownership(&password, &name).await?;
            client.hello().await
        })?;
        let json = serde_json::to_value(&hello)
            .map_err(ovm_core::Error::from)
            .into_py(py)?;
        Ok(crate::convert::json_to_py(py, &json)?.unbind())
    }

    /// A handle on a server, by id or name (a name is looked up now: `ovm.NotFound`).
    fn server(&self, py: Python<'_>, key: &str) -> PyResult<PyServerHandle> {
        let id = match key.parse() {
            Ok(id) => id,
            Err(_) => self.mgr.find_server(key).into_py(py)?.id,
        };
        Ok(PyServerHandle::new(self.mgr.clone(), id))
    }

    /// A handle on a VM, by id or name (a name is looked up now: `ovm.NotFound`).
    fn vm(&self, py: Python<'_>, key: &str) -> PyResult<PyVmHandle> {
        let id = match key.parse() {
            Ok(id) => id,
            Err(_) => self.mgr.find_vm(key).into_py(py)?.id,
        };
        Ok(PyVmHandle::new(self.mgr.clone(), id))
    }

    // ----- pools -----

    /// Creates a pool; the job's result is its handle. `policies` is an
    /// `ovm.PoolPolicies` (or a dict of its fields).
    #[pyo3(signature = (name, *, ha_enabled = false, max_servers = 32, policies = None))]
    fn create_pool(
        &self,
        py: Python<'_>,
        name: &str,
        ha_enabled: bool,
        max_servers: u32,
        policies: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyJobHandle> {
        let spec = pool_spec(py, name, ha_enabled, max_servers, policies)?;
        block_on(py, self.create_pool_op(spec))
    }
    #[pyo3(signature = (name, *, ha_enabled = false, max_servers = 32, policies = None))]
    fn create_pool_async<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        ha_enabled: bool,
        max_servers: u32,
        policies: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let spec = pool_spec(py, name, ha_enabled, max_servers, policies)?;
        awaitable(py, self.create_pool_op(spec))
    }

    // ----- jobs and events -----

    /// All job records (`ovm.Job`), newest first.
    fn jobs(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        block_on(py, self.jobs_op())?.to_python(py)
    }
    fn jobs_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.jobs_op())
    }

    /// One job record by id or a unique prefix of it.
    fn job(&self, py: Python<'_>, key: String) -> PyResult<Py<PyAny>> {
        block_on(py, self.job_op(key))?.to_python(py)
    }
    fn job_async<'py>(&self, py: Python<'py>, key: String) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.job_op(key))
    }

    /// Asks a job (by id or prefix) to abort; one running in another process stops at
    /// its next step.
    fn abort_job(&self, py: Python<'_>, key: String) -> PyResult<()> {
        block_on(py, self.abort_job_op(key))
    }
    fn abort_job_async<'py>(&self, py: Python<'py>, key: String) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.abort_job_op(key))
    }

    /// The audit history (`ovm.Event`): about one object (an id or a handle), between two
    /// times (datetimes), at most `limit` (the newest).
    #[pyo3(signature = (*, object_id = None, since = None, until = None, limit = None))]
    fn events(
        &self,
        py: Python<'_>,
        object_id: Option<&Bound<'_, PyAny>>,
        since: Option<&Bound<'_, PyAny>>,
        until: Option<&Bound<'_, PyAny>>,
        limit: Option<u32>,
    ) -> PyResult<Py<PyAny>> {
        let q = event_query(py, object_id, since, until, limit)?;
        block_on(py, self.events_op(q))?.to_python(py)
    }
    #[pyo3(signature = (*, object_id = None, since = None, until = None, limit = None))]
    fn events_async<'py>(
        &self,
        py: Python<'py>,
        object_id: Option<&Bound<'_, PyAny>>,
        since: Option<&Bound<'_, PyAny>>,
        until: Option<&Bound<'_, PyAny>>,
        limit: Option<u32>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let q = event_query(py, object_id, since, until, limit)?;
        awaitable(py, self.events_op(q))
    }

    // ----- templates -----

    /// All templates (`ovm.Template`), by name.
    fn templates(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        block_on(py, self.templates_op())?.to_python(py)
    }
    fn templates_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.templates_op())
    }

    /// A template by id or name; raises `ovm.NotFound`.
    fn find_template(&self, py: Python<'_>, key: String) -> PyResult<Py<PyAny>> {
        block_on(py, self.find_template_op(key))?.to_python(py)
    }
    fn find_template_async<'py>(
        &self,
        py: Python<'py>,
        key: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.find_template_op(key))
    }

    /// All assemblies (`ovm.Assembly`), by name.
    fn assemblies(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        block_on(py, self.assemblies_op())?.to_python(py)
    }
    fn assemblies_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.assemblies_op())
    }

    // ----- volumes -----

    /// The volumes of a repository (`ovm.Volume`), by name.
    fn volumes(&self, py: Python<'_>, repo: String) -> PyResult<Py<PyAny>> {
        block_on(py, self.volumes_op(repo))?.to_python(py)
    }
    fn volumes_async<'py>(&self, py: Python<'py>, repo: String) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.volumes_op(repo))
    }

    /// A volume of a repository by id or name.
    fn find_volume(&self, py: Python<'_>, repo: String, key: String) -> PyResult<Py<PyAny>> {
        block_on(py, self.find_volume_op(repo, key))?.to_python(py)
    }
    fn find_volume_async<'py>(
        &self,
        py: Python<'py>,
        repo: String,
        key: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.find_volume_op(repo, key))
    }

    /// Creates a (thin) volume; the job's result is its id.
    #[pyo3(signature = (repo, name, size_bytes, *, format = None))]
    fn create_volume(
        &self,
        py: Python<'_>,
        repo: String,
        name: &str,
        size_bytes: u64,
        format: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyJobHandle> {
        let raw = pyo3::types::PyString::new(py, "raw").into_any();
        let spec = volume_spec(py, name, size_bytes, format.unwrap_or(&raw))?;
        block_on(py, self.create_volume_op(repo, spec))
    }
    #[pyo3(signature = (repo, name, size_bytes, *, format = None))]
    fn create_volume_async<'py>(
        &self,
        py: Python<'py>,
        repo: String,
        name: &str,
        size_bytes: u64,
        format: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let raw = pyo3::types::PyString::new(py, "raw").into_any();
        let spec = volume_spec(py, name, size_bytes, format.unwrap_or(&raw))?;
        awaitable(py, self.create_volume_op(repo, spec))
    }

    /// Clones a volume (instant where the plugin reflinks; otherwise a copy whose
    /// progress is the job's); the job's result is the clone's id.
    fn clone_volume(
        &self,
        py: Python<'_>,
        repo: String,
        source: String,
        name: String,
    ) -> PyResult<PyJobHandle> {
        block_on(py, self.clone_volume_op(repo, source, name))
    }
    fn clone_volume_async<'py>(
        &self,
        py: Python<'py>,
        repo: String,
        source: String,
        name: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.clone_volume_op(repo, source, name))
    }

    /// Resizes a volume (shrinking only with `allow_shrink`).
    #[pyo3(signature = (repo, key, size_bytes, *, allow_shrink = false))]
    fn resize_volume(
        &self,
        py: Python<'_>,
        repo: String,
        key: String,
        size_bytes: u64,
        allow_shrink: bool,
    ) -> PyResult<PyJobHandle> {
        block_on(
            py,
            self.resize_volume_op(repo, key, size_bytes, allow_shrink),
        )
    }
    #[pyo3(signature = (repo, key, size_bytes, *, allow_shrink = false))]
    fn resize_volume_async<'py>(
        &self,
        py: Python<'py>,
        repo: String,
        key: String,
        size_bytes: u64,
        allow_shrink: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(
            py,
            self.resize_volume_op(repo, key, size_bytes, allow_shrink),
        )
    }

    /// Deletes a volume no VM uses.
    fn delete_volume(&self, py: Python<'_>, repo: String, key: String) -> PyResult<PyJobHandle> {
        block_on(py, self.delete_volume_op(repo, key))
    }
    fn delete_volume_async<'py>(
        &self,
        py: Python<'py>,
        repo: String,
        key: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.delete_volume_op(repo, key))
    }

    // ----- OVF -----

    /// Imports an OVF package (an `.ova`, or an `.ovf` with its files beside it) into a
    /// repository (id or name) as a template, or as an assembly of templates for a
    /// multi-VM package, named `name` (default: from the package). The job's result is an
    /// `ovm.ImportSummary`; on failure or abort nothing is left in the repository.
    #[pyo3(signature = (path, repo, *, name = None))]
    fn import_ovf(
        &self,
        py: Python<'_>,
        path: PathBuf,
        repo: String,
        name: Option<String>,
    ) -> PyResult<PyJobHandle> {
        block_on(py, self.import_ovf_op(path, repo, name))
    }
    #[pyo3(signature = (path, repo, *, name = None))]
    fn import_ovf_async<'py>(
        &self,
        py: Python<'py>,
        path: PathBuf,
        repo: String,
        name: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.import_ovf_op(path, repo, name))
    }

    /// Writes a template (id or name) as an OVA at `path`, which must not exist: its disks
    /// as streamOptimized VMDK, or raw with `raw=True`. Returns the template
    /// (`ovm.Template`). The OVA appears whole or not at all; Ctrl-C ends the wait, not
    /// the writing.
    #[pyo3(signature = (template, path, *, raw = false))]
    fn export_template(
        &self,
        py: Python<'_>,
        template: String,
        path: PathBuf,
        raw: bool,
    ) -> PyResult<Py<PyAny>> {
        wait_long(py, self.export_template_op(template, path, raw))?
            .into_py(py)?
            .to_python(py)
    }
    #[pyo3(signature = (template, path, *, raw = false))]
    fn export_template_async<'py>(
        &self,
        py: Python<'py>,
        template: String,
        path: PathBuf,
        raw: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.export_template_op(template, path, raw))
    }

    // ----- scheduling -----

    /// Starts DRS and DPM for every pool that enables them, each at its pool's interval,
    /// in the background, until the returned scheduler is stopped or the manager is
    /// dropped (as in Rust, dropping the scheduler object does not stop it).
    fn spawn_scheduler(&self) -> PyScheduler {
        let _context = crate::runtime::runtime().enter();
        PyScheduler {
            task: self.mgr.spawn_scheduler(),
        }
    }

    // ----- simulator test hooks -----

    /// Test hook: injects faults into the simulated host of `server` (a `sim` server).
    ///
    /// `op` names a hypervisor operation (`start`, `stop`, `define`, `pause`, ...):
    /// `delay` seconds are added to every call of it, and its next `fail` calls fail
    /// with `ovm.BackendError`. `hung=True` makes every operation block until
    /// `hung=False`; `down=True` makes every operation fail. For tests and demos only.
    #[pyo3(signature = (server, op = None, *, delay = None, fail = None, hung = None, down = None))]
    #[allow(clippy::too_many_arguments)] // Python keyword arguments, not a Rust API
    fn sim_inject(
        &self,
        py: Python<'_>,
        server: &Bound<'_, PyAny>,
        op: Option<&str>,
        delay: Option<f64>,
        fail: Option<u32>,
        hung: Option<bool>,
        down: Option<bool>,
    ) -> PyResult<()> {
        if op.is_none() && (delay.is_some() || fail.is_some()) {
            return Err(Error::invalid(
                "op",
                "delay and fail need the operation they apply to",
            ))
            .into_py(py);
        }
        let delay = delay.map(|d| seconds("delay", d)).transpose().into_py(py)?;
        let host = self.sim_host(py, server)?;
        let faults = host.faults();
        if let Some(op) = op {
            if let Some(d) = delay {
                faults.delay(op, d);
            }
            if let Some(n) = fail {
                faults.fail(op, n);
            }
        }
        if let Some(h) = hung {
            faults.set_hung(h);
        }
        if let Some(d) = down {
            faults.set_down(d);
        }
        Ok(())
    }

    /// Test hook: clears every fault injected into the simulated host of `server`.
    fn sim_clear(&self, py: Python<'_>, server: &Bound<'_, PyAny>) -> PyResult<()> {
        self.sim_host(py, server)?.faults().clear();
        Ok(())
    }

    fn __repr__(&self) -> String {
        let store = match &self.path {
            Some(p) => p.display().to_string(),
            None => ":memory:".into(),
        };
        format!(
            "<Manager {store} backends={:?} initiator={:?}>",
            self.backends,
            self.mgr.initiator()
        )
    }
}

/// The backends usable on this machine (`["sim"]`, plus `"kvm"` and `"xen"` where they work).
#[pyfunction]
pub(crate) fn available_backends() -> Vec<&'static str> {
    backends::available()
}

/// The SHA-256 fingerprint of the certificate the agent at `url` presents, to be checked
/// against `ovm-agent fingerprint` on that server before it is trusted.
#[pyfunction]
pub(crate) fn agent_fingerprint(py: Python<'_>, url: &str) -> PyResult<String> {
    let host = url
        .trim_end_matches('/')
        .trim_start_matches("https://")
        .to_string();
    block_on(py, async move {
        ovm_agent::tls::probe_fingerprint(&host)
            .await
            .map(|f| f.to_string())
            .map_err(|e| ovm_core::Error::backend("agent", e.to_string()))
    })
}

/// The background DRS/DPM loop of a manager (`mgr.spawn_scheduler()`).
#[pyclass(frozen, module = "ovm._ovm", name = "Scheduler")]
pub(crate) struct PyScheduler {
    task: tokio::task::JoinHandle<()>,
}

#[pymethods]
impl PyScheduler {
    /// Stops it (a pass under way is dropped at its next wait; its jobs go on).
    fn stop(&self) {
        self.task.abort();
    }

    /// True until it is stopped (or its manager is gone).
    #[getter]
    fn running(&self) -> bool {
        !self.task.is_finished()
    }

    fn __repr__(&self) -> String {
        let state = if self.task.is_finished() {
            "stopped"
        } else {
            "running"
        };
        format!("<Scheduler {state}>")
    }
}
