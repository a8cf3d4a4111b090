//! Pools, servers and networks.

use super::refs::{NetworkRef, PoolRef, ServerRef};
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::Manager;
use super::change::{Change, Doc};
use super::names::{HOST_CLAIM, NameClaim};
use crate::id::{NetworkId, PoolId, ServerId};
use crate::job::{JobHandle, JobSpec};
use crate::model::{
    HypervisorKind, Network, NetworkRole, PoolPolicies, Server, ServerPool, ServerRole,
    ServerState, normalize_name,
};
use crate::{Error, Result};

/// What a new pool is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolSpec {
    /// Unique name.
    pub name: String,
    /// Pool-level HA.
    #[serde(default)]
    pub ha_enabled: bool,
    /// Most servers (default 32, as in Oracle VM).
    #[serde(default = "default_max_servers")]
    pub max_servers: u32,
    /// Policies.
    #[serde(default)]
    pub policies: PoolPolicies,
}

fn default_max_servers() -> u32 {
    ServerPool::DEFAULT_MAX_SERVERS
}

impl PoolSpec {
    /// A pool with defaults.
    pub fn new(name: impl Into<String>) -> Self {
        PoolSpec {
            name: name.into(),
            ha_enabled: false,
            max_servers: ServerPool::DEFAULT_MAX_SERVERS,
            policies: PoolPolicies::default(),
        }
    }
}

/// What a new server is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerSpec {
    /// Unique name.
    pub name: String,
    /// Where it is (for the simulator: `cpus=..,memory_mib=..`).
    pub address: String,
    /// Its hypervisor.
    pub hypervisor: HypervisorKind,
    /// Its roles (default: VM server).
    #[serde(default)]
    pub roles: BTreeSet<ServerRole>,
    /// The agent serving it, for a server on another machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<crate::model::AgentEndpoint>,
}

impl ServerSpec {
    /// A VM server.
    pub fn new(
        name: impl Into<String>,
        hypervisor: HypervisorKind,
        address: impl Into<String>,
    ) -> Self {
        ServerSpec {
            name: name.into(),
            address: address.into(),
            hypervisor,
            roles: BTreeSet::from([ServerRole::VmServer]),
            agent: None,
        }
    }

    /// A VM server behind the agent at `url`, whose certificate has `fingerprint`.
    pub fn with_agent(
        name: impl Into<String>,
        hypervisor: HypervisorKind,
        url: impl Into<String>,
        fingerprint: impl Into<String>,
    ) -> Self {
        let url = url.into();
        ServerSpec {
            agent: Some(crate::model::AgentEndpoint {
                url: url.clone(),
                fingerprint: fingerprint.into(),
            }),
            ..ServerSpec::new(name, hypervisor, url)
        }
    }
}

/// Copies of indexed objects, sorted by name.
fn by_name<'a, T: Clone + 'a>(
    objects: impl Iterator<Item = &'a crate::store::Versioned<T>>,
    name: impl Fn(&T) -> &str,
) -> Vec<T> {
    let mut v: Vec<T> = objects.map(super::value).collect();
    v.sort_by(|a, b| name(a).cmp(name(b)));
    v
}

impl Manager {
    /// All pools, by name.
    pub fn pools(&self) -> Vec<ServerPool> {
        by_name(self.wiring().index_read().pools.values(), |p| &p.name)
    }

    /// A pool by id or name.
    pub fn find_pool(&self, key: impl Into<PoolRef>) -> Result<ServerPool> {
        Ok(self
            .wiring()
            .index_read()
            .pool_ref(&key.into())?
            .value
            .clone())
    }

    /// All servers, by name.
    pub fn servers(&self) -> Vec<Server> {
        by_name(self.wiring().index_read().servers.values(), |s| &s.name)
    }

    /// A server by id or name.
    pub fn find_server(&self, key: impl Into<ServerRef>) -> Result<Server> {
        Ok(self
            .wiring()
            .index_read()
            .server_ref(&key.into())?
            .value
            .clone())
    }

    /// All networks, by name.
    pub fn networks(&self) -> Vec<Network> {
        by_name(self.wiring().index_read().networks.values(), |n| &n.name)
    }

    /// A network by id, name or unique id prefix.
    pub fn find_network(&self, key: impl Into<NetworkRef>) -> Result<Network> {
        Ok(self
            .wiring()
            .index_read()
            .network_ref(&key.into())?
            .value
            .clone())
    }

    /// Creates a pool.
    pub async fn create_pool(&self, mut spec: PoolSpec) -> Result<JobHandle<PoolId>> {
        spec.name = normalize_name("pool.name", &spec.name)?;
        if spec.max_servers == 0 {
            return Err(Error::invalid("pool.max_servers", "must be at least 1"));
        }
        let pool = ServerPool {
            id: PoolId::new(),
            name: spec.name.clone(),
            servers: Vec::new(),
            repositories: Vec::new(),
            ha_enabled: spec.ha_enabled,
            policies: spec.policies,
            max_servers: spec.max_servers,
        };
        let (id, name) = (pool.id, pool.name.clone());
        self.record_job(
            "pool.create",
            format!("create pool {name}"),
            ("pool", id.to_string()),
            id,
            move |c| {
                if c.find_pool(&pool.name).is_some() {
                    return Err(Error::AlreadyExists {
                        kind: "pool",
                        id: pool.name.clone(),
                    });
                }
                Ok(vec![Change::Create(Doc::Pool(pool.clone()))])
            },
        )
        .await
    }

    /// Deletes an empty pool (no servers, no VMs, no repositories).
    pub async fn delete_pool(&self, key: impl Into<PoolRef>) -> Result<JobHandle<()>> {
        let pool = self.find_pool(key)?;
        self.record_job(
            "pool.delete",
            format!("delete pool {}", pool.name),
            ("pool", pool.id.to_string()),
            (),
            move |c| {
                let p = c.pool(pool.id)?;
                let vms = c.vms.values().filter(|v| v.value.pool == pool.id).count();
                if !p.value.servers.is_empty() || vms > 0 || !p.value.repositories.is_empty() {
                    return Err(Error::InvalidState {
                        kind: "pool",
                        id: pool.name.clone(),
                        state: format!(
                            "holding {} servers, {vms} VMs and {} repositories",
                            p.value.servers.len(),
                            p.value.repositories.len()
                        ),
                        op: "delete".into(),
                    });
                }
                Ok(vec![Change::delete(p, Doc::Pool)])
            },
        )
        .await
    }

    /// Adds a server to a pool: connects to its hypervisor, reads its size, records it.
    pub async fn add_server(
        &self,
        pool_key: impl Into<PoolRef>,
        spec: ServerSpec,
    ) -> Result<JobHandle<ServerId>> {
        let hv = None;
        self.add_server_inner(pool_key, spec, hv).await
    }

    /// Adds a server whose hypervisor the caller already holds (embedding, tests).
    pub async fn add_server_with(
        &self,
        pool_key: impl Into<PoolRef>,
        spec: ServerSpec,
        hypervisor: std::sync::Arc<dyn crate::Hypervisor>,
    ) -> Result<JobHandle<ServerId>> {
        self.add_server_inner(pool_key, spec, Some(hypervisor))
            .await
    }

    async fn add_server_inner(
        &self,
        pool_key: impl Into<PoolRef>,
        spec: ServerSpec,
        given: Option<std::sync::Arc<dyn crate::Hypervisor>>,
    ) -> Result<JobHandle<ServerId>> {
        let mut spec = spec;
        spec.name = normalize_name("server.name", &spec.name)?;
        let pool = self.find_pool(pool_key)?;
        let mut server = Server {
            id: ServerId::new(),
            name: spec.name.clone(),
            address: spec.address.clone(),
            hypervisor: spec.hypervisor,
            cpus: 0,
            memory_mib: 0,
            roles: if spec.roles.is_empty() {
                BTreeSet::from([ServerRole::VmServer])
            } else {
                spec.roles
            },
            state: ServerState::Running,
            pool: Some(pool.id),
            networks: BTreeSet::new(),
            agent: spec.agent.clone(),
        };
        let job = JobSpec::new(
            "server.add",
            format!("add server {} to pool {}", server.name, pool.name),
            Some(("server", server.id.to_string())),
            self.initiator(),
            &["connect", "record"],
        );
        let host_claim = self.host_claim(&server);
        let mgr = self.clone();
        self.spawn(job, move |ctx| async move {
            let hv = ctx
                .step("connect", async {
                    let hv = match given {
                        Some(hv) => hv,
                        None => {
                            let connector = mgr
                                .wiring()
                                .connectors
                                .get(&server.hypervisor)
                                .ok_or_else(|| {
                                    Error::unsupported(
                                        format!("adding a {} server", server.hypervisor),
                                        "manager",
                                    )
                                })?;
                            connector.connect(&server).await?
                        }
                    };
                    let info = hv.host_info().await?;
                    Ok((hv, info))
                })
                .await;
            let (hv, info) = hv?;
            server.cpus = info.cpus;
            server.memory_mib = info.memory_mib;
            let id = server.id;
            ctx.step(
                "record",
                mgr.apply(&ctx, "record", |c| {
                    if c.find_server(&server.name).is_some() {
                        return Err(Error::AlreadyExists {
                            kind: "server",
                            id: server.name.clone(),
                        });
                    }
                    if let Some(claim) = &host_claim
                        && let Some(twin) = c
                            .servers
                            .values()
                            .find(|s| mgr.host_claim(&s.value).is_some_and(|c| c.key() == claim.key()))
                    {
                        return Err(Error::invalid(
                            "server.address",
                            format!(
                                "{} is the host of server {} already: one host added twice would count its CPUs and memory twice",
                                server.address, twin.value.name
                            ),
                        ));
                    }
                    let p = c.pool(pool.id)?;
                    if p.value.servers.len() as u32 >= p.value.max_servers {
                        return Err(Error::capacity(format!(
                            "pool {} already has its maximum of {} servers",
                            p.value.name, p.value.max_servers
                        )));
                    }
                    let mut np = p.value.clone();
                    np.servers.push(server.id);
                    let mut changes = vec![
                        Change::Create(Doc::Server(server.clone())),
                        Change::update(p, np, Doc::Pool),
                    ];
                    changes.extend(host_claim.clone().map(Change::Claim));
                    Ok(changes)
                }),
            )
            .await?;
            mgr.wiring().attach(id, hv);
            Ok(id)
        })
        .await
    }

    /// The claim on the physical host a server is (see `Connector::host_key`).
    fn host_claim(&self, server: &Server) -> Option<NameClaim> {
        let connector = self.wiring().connectors.get(&server.hypervisor)?;
        let key = connector.host_key(server)?;
        Some(NameClaim::new(
            HOST_CLAIM,
            &format!("{}:{key}", server.hypervisor),
            server.id,
        ))
    }

    /// Removes a server that runs no VMs from its pool and from the manager.
    pub async fn remove_server(&self, key: impl Into<ServerRef>) -> Result<JobHandle<()>> {
        let server = self.find_server(key)?;
        let job = JobSpec::new(
            "server.remove",
            format!("remove server {}", server.name),
            Some(("server", server.id.to_string())),
            self.initiator(),
            &["record"],
        );
        let mgr = self.clone();
        self.spawn(job, move |ctx| async move {
            ctx.step(
                "record",
                mgr.apply(&ctx, "record", |c| {
                    let s = c.server(server.id)?;
                    let active = c
                        .vms
                        .values()
                        .filter(|v| v.value.server == Some(server.id) && v.value.state.is_active())
                        .count();
                    if active > 0 {
                        return Err(Error::InvalidState {
                            kind: "server",
                            id: server.name.clone(),
                            state: format!("running {active} VMs"),
                            op: "remove".into(),
                        });
                    }
                    let mut changes = vec![Change::delete(s, Doc::Server)];
                    changes.extend(mgr.host_claim(&s.value).map(Change::Release));
                    if let Some(p) = s.value.pool.and_then(|p| c.pools.get(&p)) {
                        let mut np = p.value.clone();
                        np.servers.retain(|x| *x != server.id);
                        changes.push(Change::update(p, np, Doc::Pool));
                    }
                    Ok(changes)
                }),
            )
            .await?;
            mgr.wiring().detach(server.id);
            Ok(())
        })
        .await
    }

    /// Puts a server into maintenance (no new VMs are placed there; running ones stay) or
    /// takes it out.
    pub async fn set_maintenance(
        &self,
        key: impl Into<ServerRef>,
        on: bool,
    ) -> Result<JobHandle<()>> {
        let state = if on {
            ServerState::Maintenance
        } else {
            ServerState::Running
        };
        self.set_server_state(key, state, "server.maintenance")
            .await
    }

    /// Records a server's state (maintenance, powered off, ...).
    pub async fn set_server_state(
        &self,
        key: impl Into<ServerRef>,
        state: ServerState,
        kind: &str,
    ) -> Result<JobHandle<()>> {
        let server = self.find_server(key)?;
        self.record_job(
            kind,
            format!("set server {} {}", server.name, state.as_str()),
            ("server", server.id.to_string()),
            (),
            move |c| {
                let s = c.server(server.id)?;
                let mut ns = s.value.clone();
                ns.state = state;
                Ok(vec![Change::update(s, ns, Doc::Server)])
            },
        )
        .await
    }

    /// Creates a network for a pool and realises it on every server of the pool.
    pub async fn create_network(
        &self,
        pool_key: impl Into<PoolRef>,
        name: &str,
        roles: BTreeSet<NetworkRole>,
        vlan: Option<u16>,
    ) -> Result<JobHandle<NetworkId>> {
        let name = &normalize_name("network.name", name)?;
        if let Some(v) = vlan
            && !(1..=4094).contains(&v)
        {
            return Err(Error::invalid(
                "network.vlan",
                format!("{v} is outside 1..=4094"),
            ));
        }
        if roles.is_empty() {
            return Err(Error::invalid(
                "network.roles",
                "a network needs at least one role",
            ));
        }
        let pool = self.find_pool(pool_key)?;
        let net = Network {
            id: NetworkId::new(),
            name: name.into(),
            pool: Some(pool.id),
            roles,
            vlan,
            bond_ports: Vec::new(),
            bridge: None,
        };
        let job = JobSpec::new(
            "network.create",
            format!("create network {name} in pool {}", pool.name),
            Some(("network", net.id.to_string())),
            self.initiator(),
            &["realize", "record"],
        );
        let mgr = self.clone();
        self.spawn(job, move |ctx| async move {
            let servers = pool.servers.clone();
            ctx.step("realize", async {
                for s in &servers {
                    mgr.wiring().network.realize(*s, &net).await?;
                }
                Ok(())
            })
            .await?;
            let id = net.id;
            ctx.step(
                "record",
                mgr.apply(&ctx, "record", |c| {
                    if c.find_network(&net.name).is_some() {
                        return Err(Error::AlreadyExists {
                            kind: "network",
                            id: net.name.clone(),
                        });
                    }
                    let mut changes = vec![Change::Create(Doc::Network(net.clone()))];
                    for s in servers.iter().filter_map(|s| c.servers.get(s)) {
                        let mut ns = s.value.clone();
                        ns.networks.insert(net.id);
                        changes.push(Change::update(s, ns, Doc::Server));
                    }
                    Ok(changes)
                }),
            )
            .await?;
            Ok(id)
        })
        .await
    }
}
