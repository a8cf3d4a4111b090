//! The live connections of a manager: a hypervisor per server (connected on first use),
//! storage plugins by name, the network backend — and the undo executor that reaches them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use async_trait::async_trait;

use super::cache::Cache;
use crate::hypervisor::Hypervisor;
use crate::id::{RepoId, ServerId};
use crate::job::{UndoExecutor, undo_in_store};
use crate::model::{HypervisorKind, Network, Repository, Server, ServerPool, Undo, Vm};
use crate::network::NetworkBackend;
use crate::sim::{SimHostConfig, SimHypervisor};
use crate::storage::StoragePlugin;
use crate::store::{Object, Store, StoreExt};
use crate::{Error, Result};

/// Connects to a server's hypervisor of one kind.
#[async_trait]
pub trait Connector: Send + Sync {
    /// The kind it connects to.
    fn kind(&self) -> HypervisorKind;

    /// A backend for `server` (its `address` says where it is).
    async fn connect(&self, server: &Server) -> Result<Arc<dyn Hypervisor>>;

    /// What identifies the physical host at `server`'s address, if one host can be only
    /// one server (`None`: every server is a host of its own, as simulated ones are).
    /// Two servers with the same key are refused: the host would be counted twice.
    fn host_key(&self, server: &Server) -> Option<String> {
        let _ = server;
        None
    }

    /// Powers a server on or off (IPMI, Wake-on-LAN...).
    async fn set_power(&self, server: &Server, on: bool) -> Result<()> {
        let _ = on;
        Err(Error::unsupported(
            format!("power control of server {}", server.name),
            self.kind().as_str(),
        ))
    }
}

/// Connects to simulated hosts. The address may carry the host's size:
/// `cpus=16,memory_mib=65536` (defaults: 16 CPUs, 64 GiB). With a state directory, each
/// host keeps its VMs in a file there, so separate processes (CLI calls) share them.
#[derive(Default)]
pub struct SimConnector {
    state_dir: Option<PathBuf>,
    hosts: Mutex<HashMap<ServerId, Arc<SimHypervisor>>>,
    power_log: Mutex<Vec<(ServerId, bool)>>,
}

impl std::fmt::Debug for SimConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConnector")
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

impl SimConnector {
    /// Hosts in memory only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Hosts persisted under `dir`.
    pub fn persistent(dir: impl Into<PathBuf>) -> Self {
        SimConnector {
            state_dir: Some(dir.into()),
            ..Self::default()
        }
    }

    /// The simulated host of a server connected through this connector (fault injection).
    pub fn host(&self, server: ServerId) -> Option<Arc<SimHypervisor>> {
        self.hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&server)
            .cloned()
    }

    /// Power actions taken so far: (server, on).
    pub fn power_log(&self) -> Vec<(ServerId, bool)> {
        self.power_log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Parses a simulated host's address: comma-separated `key=value` settings, each at
    /// most once — `cpus` (1..=4096, default 16), `memory_mib` (1..=67108864, default
    /// 65536) and `start_delay_ms` (how long a start takes, ≤ 600000, default 0). Anything
    /// else is refused, naming it.
    pub fn host_config(server: &Server) -> Result<SimHostConfig> {
        Ok(SimAddress::parse(&server.address, &server.name)?.host)
    }
}

/// A simulated host's address, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct SimAddress {
    /// The host's size.
    pub host: SimHostConfig,
    /// How long each start takes.
    pub start_delay: std::time::Duration,
}

impl SimAddress {
    /// Parses `address` (see [`SimConnector::host_config`]) for host `hostname`.
    pub fn parse(address: &str, hostname: &str) -> Result<Self> {
        let mut cfg = SimHostConfig {
            hostname: hostname.to_string(),
            ..Default::default()
        };
        let mut start_delay_ms = 0u64;
        let mut seen = std::collections::BTreeSet::new();
        let bad =
            |part: &str, why: String| Error::invalid("server.address", format!("{part:?}: {why}"));
        for part in address.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((k, v)) = part.split_once('=') else {
                return Err(bad(
                    part,
                    "expected key=value (cpus, memory_mib, start_delay_ms)".into(),
                ));
            };
            let (k, v) = (k.trim(), v.trim());
            if !seen.insert(k.to_string()) {
                return Err(bad(part, format!("{k} is given more than once")));
            }
            let number = |max: u64, min: u64| -> Result<u64> {
                match v.parse::<u64>() {
                    Ok(n) if (min..=max).contains(&n) => Ok(n),
                    _ => Err(bad(
                        part,
                        format!("{k} must be a whole number in {min}..={max}"),
                    )),
                }
            };
            match k {
                "cpus" => cfg.cpus = number(4096, 1)? as u32,
                "memory_mib" => cfg.memory_mib = number(64 * 1024 * 1024, 1)?,
                "start_delay_ms" => start_delay_ms = number(600_000, 0)?,
                other => {
                    return Err(bad(
                        part,
                        format!(
                            "unknown setting {other:?} (known: cpus, memory_mib, start_delay_ms)"
                        ),
                    ));
                }
            }
        }
        Ok(SimAddress {
            host: cfg,
            start_delay: std::time::Duration::from_millis(start_delay_ms),
        })
    }
}

#[async_trait]
impl Connector for SimConnector {
    fn kind(&self) -> HypervisorKind {
        HypervisorKind::Sim
    }

    async fn connect(&self, server: &Server) -> Result<Arc<dyn Hypervisor>> {
        if let Some(h) = self.host(server.id) {
            return Ok(h);
        }
        let address = SimAddress::parse(&server.address, &server.name)?;
        let host = match &self.state_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                SimHypervisor::with_state_file(
                    address.host,
                    dir.join(format!("sim-{}.json", server.id)),
                )?
            }
            None => SimHypervisor::new(address.host),
        };
        if !address.start_delay.is_zero() {
            host.faults().delay("start", address.start_delay);
        }
        self.hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(server.id, host.clone());
        Ok(host)
    }

    /// Records the action; a simulated host powered off is down (its VMs are gone).
    async fn set_power(&self, server: &Server, on: bool) -> Result<()> {
        self.power_log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((server.id, on));
        if let Some(h) = self.host(server.id) {
            if on { h.power_on() } else { h.crash() }
        }
        Ok(())
    }
}

type OnConnect = Box<dyn Fn(ServerId, Arc<dyn Hypervisor>) + Send + Sync>;

/// What the manager is connected to.
pub(crate) struct Backends {
    pub store: Arc<dyn Store>,
    pub cache: Arc<RwLock<Cache>>,
    pub connectors: HashMap<HypervisorKind, Arc<dyn Connector>>,
    pub hypervisors: RwLock<HashMap<ServerId, Arc<dyn Hypervisor>>>,
    pub storage: HashMap<String, Arc<dyn StoragePlugin>>,
    pub network: Arc<dyn NetworkBackend>,
    pub on_connect: OnceLock<OnConnect>,
}

impl Backends {
    pub fn cache_read(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.cache.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn cache_write(&self) -> std::sync::RwLockWriteGuard<'_, Cache> {
        self.cache.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The hypervisor of a server, connecting on first use.
    pub async fn hypervisor(&self, server: ServerId) -> Result<Arc<dyn Hypervisor>> {
        if let Some(h) = self
            .hypervisors
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&server)
        {
            return Ok(h.clone());
        }
        let record = self.cache_read().server(server)?.value.clone();
        let connector = self.connectors.get(&record.hypervisor).ok_or_else(|| {
            Error::unsupported(
                format!("connecting to server {}", record.name),
                record.hypervisor.as_str(),
            )
        })?;
        let hv = connector.connect(&record).await?;
        self.attach(server, hv.clone());
        Ok(hv)
    }

    /// Uses `hv` for `server` from now on.
    pub fn attach(&self, server: ServerId, hv: Arc<dyn Hypervisor>) {
        self.hypervisors
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(server, hv.clone());
        if let Some(f) = self.on_connect.get() {
            f(server, hv);
        }
    }

    pub fn detach(&self, server: ServerId) {
        self.hypervisors
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&server);
    }

    /// The plugin serving a repository.
    pub fn plugin_for(&self, repo: RepoId) -> Result<Arc<dyn StoragePlugin>> {
        let name = self
            .cache_read()
            .repos
            .get(&repo)
            .map(|r| r.value.plugin.clone())
            .ok_or_else(|| Error::not_found("repository", repo))?;
        self.plugin(&name)
    }

    pub fn plugin(&self, name: &str) -> Result<Arc<dyn StoragePlugin>> {
        self.storage.get(name).cloned().ok_or_else(|| {
            let known: Vec<&str> = self.storage.keys().map(String::as_str).collect();
            Error::not_found(
                "storage plugin",
                format!("{name} (registered: {})", known.join(", ")),
            )
        })
    }

    /// Reloads one object from the store into the cache (after an undo or a conflict).
    pub async fn refresh(&self, kind: &str, id: &str) -> Result<()> {
        macro_rules! reload {
            ($t:ty, $put:ident, $remove:expr) => {{
                let v = self.store.get_obj::<$t>(id).await?;
                let mut c = self.cache_write();
                match v {
                    Some(v) => c.$put(v),
                    None => $remove(&mut c),
                }
            }};
        }
        match kind {
            k if k == Vm::KIND => reload!(Vm, put_vm, |c: &mut Cache| {
                if let Ok(i) = id.parse() {
                    c.remove_vm(i)
                }
            }),
            k if k == Server::KIND => reload!(Server, put_server, |c: &mut Cache| {
                if let Ok(i) = id.parse() {
                    c.remove_server(i)
                }
            }),
            k if k == ServerPool::KIND => reload!(ServerPool, put_pool, |c: &mut Cache| {
                if let Ok(i) = id.parse() {
                    c.remove_pool(i)
                }
            }),
            k if k == Repository::KIND => reload!(Repository, put_repo, |c: &mut Cache| {
                if let Ok(i) = id.parse() {
                    c.repos.remove(&i);
                }
            }),
            k if k == Network::KIND => reload!(Network, put_network, |c: &mut Cache| {
                if let Ok(i) = id.parse() {
                    c.networks.remove(&i);
                }
            }),
            _ => {}
        }
        Ok(())
    }
}

/// Treats "already gone" as success: undos are idempotent.
fn gone_ok(r: Result<()>) -> Result<()> {
    match r {
        Err(Error::NotFound { .. }) => Ok(()),
        other => other,
    }
}

#[async_trait]
impl UndoExecutor for Backends {
    async fn undo(&self, undo: &Undo) -> Result<()> {
        if undo_in_store(&*self.store, undo).await? {
            if let Undo::DeleteObject { kind, id } | Undo::RestoreObject { kind, id, .. } = undo {
                self.refresh(kind, id).await?;
            }
            return Ok(());
        }
        match undo {
            Undo::KillVm { server, vm } => {
                let hv = self.hypervisor(*server).await?;
                match hv.state(*vm).await {
                    Ok(s) if s.is_active() => gone_ok(hv.kill(*vm).await),
                    Ok(_) | Err(Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Undo::UndefineVm { server, vm } => {
                let hv = self.hypervisor(*server).await?;
                if hv.state(*vm).await.is_ok_and(|s| s.is_active()) {
                    gone_ok(hv.kill(*vm).await)?;
                }
                gone_ok(hv.undefine(*vm).await)
            }
            Undo::DeleteVolume { repo, volume } => {
                gone_ok(self.plugin_for(*repo)?.delete_volume(*repo, *volume).await)
            }
            Undo::Custom { handler, .. } => Err(Error::unsupported(
                format!("undo handler {handler:?}"),
                "manager",
            )),
            Undo::DeleteObject { .. } | Undo::RestoreObject { .. } => Ok(()),
        }
    }
}
