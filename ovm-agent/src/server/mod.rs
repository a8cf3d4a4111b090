//! The agent daemon: one per server, serving that server's hypervisor over HTTPS to the
//! manager that owns it.

mod calls;
pub mod events;
mod http;
pub mod journal;
pub mod owner;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ovm_backends::{BackendKind, LocalBackends};
use ovm_core::model::{HypervisorKind, Server};
use ovm_core::{Hypervisor, ServerId};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken as Cancel;

use crate::protocol::{Hello, PROTOCOL};
use crate::tls::{Fingerprint, Identity, TlsError};
use events::EventLog;
use journal::Journal;
use owner::Ownership;

/// How an agent is set up.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Where it listens (default 127.0.0.1:8899).
    pub listen: SocketAddr,
    /// Its state: identity, owner, request journal, the backend's VM state.
    pub state_dir: PathBuf,
    /// The hypervisor it serves.
    pub hypervisor: HypervisorKind,
    /// For a simulated host: its size (`cpus=8,memory_mib=16384`).
    pub sim_address: String,
    /// A program with the VMM built in (`ovm __vmm`), where no `ovm-vmm` is installed.
    pub embedded_vmm: Option<(PathBuf, Vec<String>)>,
    /// Directories VM definitions may name files in (kernels, disks), besides the state
    /// directory.
    pub allowed_paths: Vec<PathBuf>,
    /// Longest a request may take, waiting for events included.
    pub request_timeout: Duration,
    /// Events kept for managers that reconnect.
    pub event_ring: usize,
    /// Longest a TLS handshake or a request's headers may take (slow clients are dropped).
    pub handshake_timeout: Duration,
    /// For Xen: where xenconsoled writes guest logs (default `/var/log/xen/console`).
    pub xen_console_log_dir: Option<PathBuf>,
}

impl AgentOptions {
    /// Defaults for an agent serving `hypervisor` with its state in `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>, hypervisor: HypervisorKind) -> Self {
        AgentOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 8899)),
            state_dir: state_dir.into(),
            hypervisor,
            sim_address: String::new(),
            embedded_vmm: None,
            allowed_paths: Vec::new(),
            request_timeout: Duration::from_secs(60),
            event_ring: events::RING,
            handshake_timeout: Duration::from_secs(10),
            xen_console_log_dir: None,
        }
    }
}

/// What can stop an agent from starting.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Its identity.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Its state directory or port.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// What failed.
        source: std::io::Error,
    },
    /// Its hypervisor.
    #[error("the {hypervisor} backend: {source}")]
    Backend {
        /// Which.
        hypervisor: HypervisorKind,
        /// Why it cannot be used.
        source: ovm_core::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> AgentError {
    let what = what.into();
    move |source| AgentError::Io { what, source }
}

/// What every request handler shares.
pub(crate) struct Shared {
    pub hv: Arc<dyn Hypervisor>,
    pub events: EventLog,
    pub journal: Journal,
    pub ownership: Ownership,
    pub hostname: String,
    pub hypervisor: HypervisorKind,
    pub allowed_paths: Vec<PathBuf>,
}

impl Shared {
    pub fn hello(&self) -> Hello {
        Hello {
            protocol: PROTOCOL,
            agent: format!("ovm-agent {}", env!("CARGO_PKG_VERSION")),
            hypervisor: self.hypervisor,
            hostname: self.hostname.clone(),
            epoch: self.events.epoch().to_string(),
            seq: self.events.last(),
            owner: self.ownership.owner(),
        }
    }
}

/// A running agent.
pub struct RunningAgent {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its certificate's fingerprint (what a manager pins).
    pub fingerprint: Fingerprint,
    cancel: Cancel,
    task: tokio::task::JoinHandle<()>,
}

impl RunningAgent {
    /// Stops taking connections and returns when the listener is closed. VMs keep running.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }

    /// Serves until the task ends (it does not on its own).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Where the agent keeps its certificate and key, under its state directory.
pub fn identity_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("identity")
}

/// Sets the agent password in `state_dir` (`ovm-agent init`).
pub fn set_password(state_dir: &Path, password: &str) -> Result<(), AgentError> {
    std::fs::create_dir_all(state_dir).map_err(io(format!("creating {}", state_dir.display())))?;
    Ownership::open(state_dir)
        .and_then(|o| o.set_password(password))
        .map_err(io("setting the agent password"))
}

/// Forgets the agent's owner (`ovm-agent reset-ownership`, run on the server itself).
pub fn reset_ownership(state_dir: &Path) -> Result<(), AgentError> {
    Ownership::open(state_dir)
        .and_then(|o| o.reset())
        .map_err(io("resetting ownership"))
}

/// The agent's certificate fingerprint, made on first use.
pub fn fingerprint(state_dir: &Path) -> Result<Fingerprint, AgentError> {
    Ok(Identity::load_or_create(&identity_dir(state_dir), "agent")?.fingerprint())
}

/// Starts an agent: its identity (made on first start), its hypervisor (re-adopting the
/// VMs it ran before), its request journal, then the HTTPS listener.
pub async fn start(opts: AgentOptions) -> Result<RunningAgent, AgentError> {
    let dir = &opts.state_dir;
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let identity = Identity::load_or_create(&identity_dir(dir), "agent")?;
    let hv = connect_backend(&opts).await?;
    let events = EventLog::new(opts.event_ring);
    let shared = Arc::new(Shared {
        journal: Journal::open(dir).map_err(io("opening the request journal"))?,
        ownership: Ownership::open(dir).map_err(io("reading the owner"))?,
        hostname: hostname(),
        hypervisor: opts.hypervisor,
        allowed_paths: std::iter::once(dir.clone())
            .chain(opts.allowed_paths.iter().cloned())
            .collect(),
        hv: hv.clone(),
        events,
    });
    spawn_event_pump(&shared, hv);
    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(io(format!("listening on {}", opts.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(io("reading the bound address"))?;
    let tls = crate::tls::server_config(&identity)?;
    let cancel = Cancel::new();
    let task = tokio::spawn(http::serve(
        listener,
        tls,
        shared,
        http::Limits {
            request: opts.request_timeout,
            handshake: opts.handshake_timeout,
        },
        cancel.clone(),
    ));
    tracing::info!(%addr, fingerprint = %identity.fingerprint(), "ovm-agent listening");
    Ok(RunningAgent {
        addr,
        fingerprint: identity.fingerprint(),
        cancel,
        task,
    })
}

/// Forwards the hypervisor's events into the log, for as long as the hypervisor lives.
fn spawn_event_pump(shared: &Arc<Shared>, hv: Arc<dyn Hypervisor>) {
    let weak = Arc::downgrade(shared);
    let mut rx = hv.subscribe();
    tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let ev = rx.recv().await;
            let Some(shared) = weak.upgrade() else { return };
            match ev {
                Ok(ev) => shared.events.push(ev),
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "agent event pump lagged");
                }
                Err(RecvError::Closed) => return,
            }
        }
    });
}

/// The server as its own backend sees it: a stable id kept in the state directory (the
/// backend keys its VM state by it), at the local address.
async fn connect_backend(opts: &AgentOptions) -> Result<Arc<dyn Hypervisor>, AgentError> {
    let kind = match opts.hypervisor {
        HypervisorKind::Sim => BackendKind::Sim,
        HypervisorKind::Kvm => BackendKind::Kvm,
        HypervisorKind::Xen => BackendKind::Xen,
    };
    let fail = |source| AgentError::Backend {
        hypervisor: opts.hypervisor,
        source,
    };
    let mut local = LocalBackends::shared(opts.state_dir.join("backend")).only([kind]);
    if let Some((program, args)) = &opts.embedded_vmm {
        local = local.embedded_vmm(program, args.clone());
    }
    if let Some(dir) = &opts.xen_console_log_dir {
        local = local.xen_console_log_dir(dir);
    }
    let backends = local.build().map_err(fail)?;
    let connector = backends
        .connectors
        .into_iter()
        .next()
        .ok_or_else(|| fail(ovm_core::Error::unsupported("no backend", "agent")))?;
    let id = server_id(&opts.state_dir)?;
    let address = match opts.hypervisor {
        HypervisorKind::Sim => opts.sim_address.clone(),
        _ => "local".into(),
    };
    let server = Server::standalone(id, hostname(), address, opts.hypervisor);
    connector.connect(&server).await.map_err(fail)
}

fn server_id(dir: &Path) -> Result<ServerId, AgentError> {
    let path = dir.join("server-id");
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(id) = text.trim().parse()
    {
        return Ok(id);
    }
    let id = ServerId::new();
    ovm_core::files::write_private(&path, id.to_string().as_bytes())
        .map_err(io(format!("writing {}", path.display())))?;
    Ok(id)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}
