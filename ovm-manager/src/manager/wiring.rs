//! What a manager is wired to: its store and the index over it, a hypervisor per server
//! (connected on first use), storage plugins by name, the network backend — and the undo
//! executor that reaches them all.

use ovm_core::sync::{read, write};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use async_trait::async_trait;

use super::index::Index;
use crate::hypervisor::Hypervisor;
use crate::id::{RepoId, ServerId};
use crate::job::{UndoExecutor, undo_in_store};
use crate::model::{HypervisorKind, Network, Repository, Server, ServerPool, Undo, Vm};
use crate::network::NetworkBackend;
use crate::storage::StoragePlugin;
use crate::store::{Object, Store, StoreExt};
use crate::{Error, Result};
use ovm_core::connector::Connector;

type OnConnect = Box<dyn Fn(ServerId, Arc<dyn Hypervisor>) + Send + Sync>;

/// What the manager is wired to (see the module docs).
pub(crate) struct Wiring {
    pub store: Arc<dyn Store>,
    pub index: Arc<RwLock<Index>>,
    pub connectors: HashMap<HypervisorKind, Arc<dyn Connector>>,
    pub hypervisors: RwLock<HashMap<ServerId, Arc<dyn Hypervisor>>>,
    pub storage: HashMap<String, Arc<dyn StoragePlugin>>,
    pub network: Arc<dyn NetworkBackend>,
    pub on_connect: OnceLock<OnConnect>,
}

impl Wiring {
    pub fn index_read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        read(&self.index)
    }

    pub fn index_write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        write(&self.index)
    }

    /// The hypervisor of a server, connecting on first use.
    pub async fn hypervisor(&self, server: ServerId) -> Result<Arc<dyn Hypervisor>> {
        if let Some(h) = read(&self.hypervisors).get(&server) {
            return Ok(h.clone());
        }
        let record = self.index_read().server(server)?.value.clone();
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
        write(&self.hypervisors).insert(server, hv.clone());
        if let Some(f) = self.on_connect.get() {
            f(server, hv);
        }
    }

    pub fn detach(&self, server: ServerId) {
        write(&self.hypervisors).remove(&server);
    }

    /// The plugin serving a repository.
    pub fn plugin_for(&self, repo: RepoId) -> Result<Arc<dyn StoragePlugin>> {
        let name = self
            .index_read()
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

    /// Reloads one object from the store into the index (after an undo or a conflict).
    pub async fn refresh(&self, kind: &str, id: &str) -> Result<()> {
        macro_rules! reload {
            ($t:ty, $put:ident, $remove:expr) => {{
                let v = self.store.get_obj::<$t>(id).await?;
                let mut c = self.index_write();
                match v {
                    Some(v) => c.$put(v),
                    None => $remove(&mut c),
                }
            }};
        }
        match kind {
            k if k == Vm::KIND => reload!(Vm, put_vm, |c: &mut Index| {
                if let Ok(i) = id.parse() {
                    c.remove_vm(i)
                }
            }),
            k if k == Server::KIND => reload!(Server, put_server, |c: &mut Index| {
                if let Ok(i) = id.parse() {
                    c.remove_server(i)
                }
            }),
            k if k == ServerPool::KIND => reload!(ServerPool, put_pool, |c: &mut Index| {
                if let Ok(i) = id.parse() {
                    c.remove_pool(i)
                }
            }),
            k if k == Repository::KIND => reload!(Repository, put_repo, |c: &mut Index| {
                if let Ok(i) = id.parse() {
                    c.repos.remove(&i);
                }
            }),
            k if k == Network::KIND => reload!(Network, put_network, |c: &mut Index| {
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
impl UndoExecutor for Wiring {
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
            Undo::DeleteVolumeNamed { repo, name } => {
                // A volume someone recorded is theirs, whoever made it.
                let recorded = self
                    .store
                    .list_obj::<crate::model::Volume>()
                    .await?
                    .into_iter()
                    .any(|v| v.value.repo == *repo && v.value.name == *name);
                if recorded {
                    return Ok(());
                }
                let plugin = self.plugin_for(*repo)?;
                for v in plugin.list_volumes(*repo).await? {
                    if v.name == *name {
                        gone_ok(plugin.delete_volume(*repo, v.id).await)?;
                    }
                }
                Ok(())
            }
            Undo::Custom { handler, .. } => Err(Error::unsupported(
                format!("undo handler {handler:?}"),
                "manager",
            )),
            Undo::DeleteObject { .. } | Undo::RestoreObject { .. } => Ok(()),
        }
    }
}
