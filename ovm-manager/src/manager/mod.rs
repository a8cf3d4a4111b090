//! The manager: the façade over the store, the job engine, the backends and the policies.
//!
//! Every state-changing operation returns a [`JobHandle`] of a persisted job; getters read
//! the manager's in-memory index and never make hidden round trips to servers.

mod change;
mod handles;
mod index;
mod monitor;
mod names;
mod placement_lease;
mod pool;
mod reconcile;
mod refs;
mod schedule;
mod storage;
mod store_check;
mod sync;
mod template;
mod upkeep;
mod vm;
mod wiring;

pub use handles::{PoolHandle, ServerHandle, VmHandle};
pub use ovm_core::connector::Connector;
pub use ovm_core::sim::{SimAddress, SimConnector};
pub use pool::{PoolSpec, ServerSpec};
pub use refs::{NetworkRef, PoolRef, Ref, RepoRef, ServerRef, VmRef};
pub use schedule::ScheduleReport;
pub use template::ImportRecord;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use index::Index;
use wiring::Wiring;

use crate::id::{JobId, Timestamp};
use crate::job::{JobEngine, JobHandle, OwnerLease};
use crate::model::{Event, EventQuery, Job, Outcome};
use crate::network::NetworkBackend;
use crate::policy::{BalancePolicy, BestFit, PlacementPolicy, PowerPolicy};
use crate::sim::SimNetwork;
use crate::storage::StoragePlugin;
use crate::store::{SqliteStore, Store, StoreExt, Versioned};
use crate::{Error, Result};

/// How a manager is put together.
pub struct ManagerOptions {
    /// Who the manager acts for (recorded in jobs and events).
    pub initiator: String,
    /// Connectors to hypervisors, by kind.
    pub connectors: Vec<Arc<dyn Connector>>,
    /// Storage Connect plugins, by their names.
    pub storage: Vec<Arc<dyn StoragePlugin>>,
    /// The network backend.
    pub network: Arc<dyn NetworkBackend>,
    /// The placement policy.
    pub placement: Arc<dyn PlacementPolicy>,
    /// The balancing (DRS) policy.
    pub balance: Arc<dyn BalancePolicy>,
    /// The power (DPM) policy.
    pub power: Arc<dyn PowerPolicy>,
    /// How long a graceful stop waits before killing.
    pub stop_timeout: Duration,
    /// Most time one undo of a rolled-back job may take.
    pub undo_timeout: Duration,
    /// How long this manager's lease on its jobs holds without renewal (renewed every
    /// quarter of it). Another process rolls back the jobs of a manager whose lease ran
    /// out. Default 15 s; `$OVM_LEASE_TTL_MS` overrides the default.
    pub lease_ttl: Duration,
    /// How often the index catches up with other processes' commits in the background.
    pub sync_interval: Duration,
    /// Compare every server's hypervisor with the records when the manager opens, before
    /// it answers anything (what runs, what died while no manager watched).
    pub reconcile_on_open: bool,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
        ManagerOptions {
            initiator: format!("user:{user}"),
            connectors: vec![Arc::new(SimConnector::new())],
            storage: Vec::new(),
            network: Arc::new(SimNetwork::new()),
            placement: Arc::new(BestFit),
            balance: Arc::from(crate::policy::default_balance()),
            power: Arc::from(crate::policy::default_power()),
            stop_timeout: Duration::from_secs(30),
            undo_timeout: crate::job::DEFAULT_UNDO_TIMEOUT,
            lease_ttl: std::env::var("OVM_LEASE_TTL_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .map(Duration::from_millis)
                .unwrap_or(crate::job::DEFAULT_LEASE_TTL),
            sync_interval: Duration::from_millis(250),
            reconcile_on_open: true,
        }
    }
}

impl std::fmt::Debug for ManagerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagerOptions")
            .field("initiator", &self.initiator)
            .field("stop_timeout", &self.stop_timeout)
            .finish_non_exhaustive()
    }
}

/// The manager. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

struct Inner {
    wiring: Arc<Wiring>,
    jobs: Arc<JobEngine>,
    placement: Arc<dyn PlacementPolicy>,
    balance: Arc<dyn BalancePolicy>,
    power: Arc<dyn PowerPolicy>,
    initiator: String,
    stop_timeout: Duration,
    /// Serialises placement decisions so that concurrent starts see each other's
    /// reservations.
    placing: tokio::sync::Mutex<()>,
    /// Starts waiting to be placed (see `place_pending`).
    pending_placements: std::sync::Mutex<Vec<PendingPlacement>>,
    /// The pools whose placement lease this process holds (see `placement_lease`).
    placement_leases: placement_lease::Held,
    /// The change feed position the index has caught up to.
    seen_seq: std::sync::atomic::AtomicU64,
    /// One catch-up at a time.
    syncing: tokio::sync::Mutex<()>,
    sync_interval: Duration,
    /// Stops the background upkeep (lease renewal, catch-up, recovery).
    closed: tokio_util::sync::CancellationToken,
    /// Servers reconciled since they were connected (see `reconcile_once`).
    reconciled: std::sync::Mutex<HashMap<crate::id::ServerId, Arc<tokio::sync::OnceCell<()>>>>,
}

/// A start waiting for its server.
struct PendingPlacement {
    pool: crate::id::PoolId,
    request: crate::policy::PlacementRequest,
    reply: tokio::sync::oneshot::Sender<Result<(crate::id::ServerId, placement_lease::Ticket)>>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("initiator", &self.inner.initiator)
            .finish_non_exhaustive()
    }
}

impl Manager {
    /// Opens (creating if needed) the SQLite store at `path`, rolls back the jobs a previous
    /// process left unfinished, and loads the index.
    pub async fn open(path: impl AsRef<Path>, options: ManagerOptions) -> Result<Self> {
        let store = SqliteStore::open(path)?;
        Self::with_store(Arc::new(store), options).await
    }

    /// A manager on a private in-memory store (tests, demos).
    pub async fn open_in_memory(options: ManagerOptions) -> Result<Self> {
        Self::with_store(Arc::new(SqliteStore::in_memory()?), options).await
    }

    /// A manager on any store.
    pub async fn with_store(store: Arc<dyn Store>, options: ManagerOptions) -> Result<Self> {
        let index = Arc::new(RwLock::new(Index::default()));
        let wiring = Arc::new(Wiring {
            store: store.clone(),
            index,
            connectors: options
                .connectors
                .into_iter()
                .map(|c| (c.kind(), c))
                .collect(),
            hypervisors: RwLock::new(HashMap::new()),
            storage: options
                .storage
                .into_iter()
                .map(|p| (p.info().name, p))
                .collect(),
            network: options.network,
            on_connect: OnceLock::new(),
        });
        let owner =
            OwnerLease::register(store.clone(), options.lease_ttl, &options.initiator).await?;
        let jobs = JobEngine::with_undo_timeout(
            store.clone(),
            wiring.clone(),
            owner,
            options.undo_timeout,
        );
        let mgr = Manager {
            inner: Arc::new(Inner {
                wiring,
                jobs,
                placement: options.placement,
                balance: options.balance,
                power: options.power,
                initiator: options.initiator,
                stop_timeout: options.stop_timeout,
                placing: tokio::sync::Mutex::new(()),
                pending_placements: std::sync::Mutex::new(Vec::new()),
                placement_leases: placement_lease::Held::default(),
                seen_seq: std::sync::atomic::AtomicU64::new(0),
                syncing: tokio::sync::Mutex::new(()),
                sync_interval: options.sync_interval,
                closed: tokio_util::sync::CancellationToken::new(),
                reconciled: std::sync::Mutex::new(HashMap::new()),
            }),
        };
        names::claim_existing(&**mgr.store()).await?;
        mgr.load().await?;
        mgr.reopen_repositories().await;
        let weak = Arc::downgrade(&mgr.inner);
        let _ = mgr.inner.wiring.on_connect.set(Box::new(move |server, hv| {
            monitor::spawn(weak.clone(), server, hv);
        }));
        let recovered = mgr.inner.jobs.recover().await?;
        if !recovered.is_empty() {
            tracing::warn!(
                count = recovered.len(),
                "rolled back jobs whose managers had gone"
            );
            mgr.load().await?;
        }
        if options.reconcile_on_open {
            mgr.reconcile_all().await;
        }
        upkeep::spawn(&mgr);
        Ok(mgr)
    }

    /// Closes the manager: stops its background work and, once no job of it is running,
    /// gives up its lease (so nobody waits for it to expire). Jobs still running keep
    /// their owner and are rolled back by the next manager once this process is gone.
    pub async fn close(&self) -> Result<()> {
        self.inner.closed.cancel();
        if !self.inner.jobs.has_live() {
            self.inner.jobs.owner().release().await?;
        }
        Ok(())
    }

    /// This manager's record as the owner of its jobs.
    pub fn instance(&self) -> crate::model::ManagerInstance {
        self.inner.jobs.owner().record()
    }

    /// Opens every registered repository with its plugin (plugins keep what they opened in
    /// memory). One that cannot be opened now is reported and left for later: a manager
    /// starts even while an NFS export is away.
    async fn reopen_repositories(&self) {
        for repo in self.repositories() {
            let opened = match self.wiring().plugin(&repo.plugin) {
                Ok(p) => p.open_repository(&repo.location, repo.pool).await,
                Err(e) => Err(e),
            };
            match opened {
                Ok(r) if r.id != repo.id => tracing::warn!(
                    repository = %repo.name,
                    "{} now holds repository {}, not {}",
                    repo.location,
                    r.id,
                    repo.id
                ),
                Ok(_) | Err(Error::AlreadyExists { .. }) => {}
                Err(e) => {
                    tracing::warn!(repository = %repo.name, "cannot open {}: {e}", repo.location)
                }
            }
        }
    }

    /// Who this manager acts for.
    pub fn initiator(&self) -> &str {
        &self.inner.initiator
    }

    /// The store of record.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.wiring.store
    }

    fn wiring(&self) -> &Wiring {
        &self.inner.wiring
    }

    // ----- jobs and events -----

    /// All jobs, newest first.
    pub async fn jobs(&self) -> Result<Vec<Job>> {
        let mut jobs: Vec<Job> = self
            .store()
            .list_obj::<Job>()
            .await?
            .into_iter()
            .map(|v| v.value)
            .collect();
        jobs.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        Ok(jobs)
    }

    /// One job by id (or a unique prefix of it).
    pub async fn job(&self, key: &str) -> Result<Job> {
        if let Ok(id) = key.parse::<JobId>() {
            return self
                .store()
                .get_obj::<Job>(&id.to_string())
                .await?
                .map(|v| v.value)
                .ok_or_else(|| Error::not_found("job", key));
        }
        let matches: Vec<Job> = self
            .jobs()
            .await?
            .into_iter()
            .filter(|j| j.id.to_string().starts_with(key))
            .collect();
        match matches.len() {
            1 => Ok(matches.into_iter().next().unwrap_or_else(|| unreachable!())),
            0 => Err(Error::not_found("job", key)),
            n => Err(Error::invalid(
                "job id",
                format!("{key:?} matches {n} jobs; give more of the id"),
            )),
        }
    }

    /// Asks a job to abort (see `JobEngine::abort`).
    pub async fn abort_job(&self, id: JobId) -> Result<()> {
        self.inner.jobs.abort(id).await
    }

    /// The audit history.
    pub async fn events(&self, query: &EventQuery) -> Result<Vec<Event>> {
        self.store().events(query).await
    }

    /// Records an event that is not the end of a job (an observation, a message).
    async fn log_event(
        &self,
        kind: &str,
        id: String,
        action: &str,
        outcome: Outcome,
        detail: String,
    ) -> Result<()> {
        let e = Event {
            seq: 0,
            time: Timestamp::now(),
            initiator: self.inner.initiator.clone(),
            object_kind: kind.into(),
            object_id: id,
            action: action.into(),
            outcome,
            detail,
            job: None,
        };
        self.store().commit(&[], &[e]).await?;
        Ok(())
    }

    async fn spawn<T, F, Fut>(&self, spec: crate::job::JobSpec, body: F) -> Result<JobHandle<T>>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
        F: FnOnce(crate::job::JobCtx) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        self.inner.jobs.spawn(spec, body).await
    }
}

/// The value of a versioned object.
fn value<T: Clone>(v: &Versioned<T>) -> T {
    v.value.clone()
}
