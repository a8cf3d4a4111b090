//! Routing servers to their agents: a server with an agent endpoint is reached through it,
//! any other through this machine's own backend of its kind.

use std::sync::Arc;

use async_trait::async_trait;
use ovm_core::model::{HypervisorKind, Server};
use ovm_core::{Connector, Error, Hypervisor, Result};

use super::{AgentClient, RemoteHypervisor};
use crate::tls::{Fingerprint, Identity};

/// Connects servers of one hypervisor kind: through their agent where they have one,
/// else through `local`.
pub struct AgentConnector {
    kind: HypervisorKind,
    local: Option<Arc<dyn Connector>>,
    identity: Identity,
}

impl AgentConnector {
    /// Servers of `kind`; `local` for those without an agent; `identity` is the manager's
    /// client certificate, which the agents it owns let in.
    pub fn new(
        kind: HypervisorKind,
        local: Option<Arc<dyn Connector>>,
        identity: Identity,
    ) -> Self {
        AgentConnector {
            kind,
            local,
            identity,
        }
    }
}

/// The connectors of a manager that reaches servers both here and through agents: one per
/// hypervisor kind, falling back on the given local connector of that kind.
pub fn with_agents(local: Vec<Arc<dyn Connector>>, identity: &Identity) -> Vec<Arc<dyn Connector>> {
    [
        HypervisorKind::Sim,
        HypervisorKind::Kvm,
        HypervisorKind::Xen,
    ]
    .into_iter()
    .map(|kind| {
        let here = local.iter().find(|c| c.kind() == kind).cloned();
        Arc::new(AgentConnector::new(kind, here, identity.clone())) as Arc<dyn Connector>
    })
    .collect()
}

#[async_trait]
impl Connector for AgentConnector {
    fn kind(&self) -> HypervisorKind {
        self.kind
    }

    async fn connect(&self, server: &Server) -> Result<Arc<dyn Hypervisor>> {
        let Some(endpoint) = &server.agent else {
            return match &self.local {
                Some(local) => local.connect(server).await,
                None => Err(Error::unsupported(
                    format!(
                        "{} servers on this machine (server {}): give its agent (--agent https://HOST:PORT)",
                        self.kind, server.name
                    ),
                    "manager",
                )),
            };
        };
        let client = AgentClient::new(endpoint, Some(&self.identity), &server.name)?;
        let hv = RemoteHypervisor::connect(client).await?;
        if hv.hello().hypervisor != server.hypervisor {
            return Err(Error::invalid(
                "server.hypervisor",
                format!(
                    "server {} is recorded as {}, but its agent at {} serves {}",
                    server.name,
                    server.hypervisor,
                    endpoint.url,
                    hv.hello().hypervisor
                ),
            ));
        }
        Ok(Arc::new(hv))
    }

    /// One agent is one host, whatever URL names it: its certificate says which.
    fn host_key(&self, server: &Server) -> Option<String> {
        match &server.agent {
            Some(a) => Some(match a.fingerprint.parse::<Fingerprint>() {
                Ok(fp) => format!("agent:{fp}"),
                Err(_) => format!("agent:{}", a.fingerprint),
            }),
            None => self.local.as_ref().and_then(|l| l.host_key(server)),
        }
    }

    async fn set_power(&self, server: &Server, on: bool) -> Result<()> {
        match (&server.agent, &self.local) {
            (None, Some(local)) => local.set_power(server, on).await,
            _ => Err(Error::unsupported(
                format!("power control of server {}", server.name),
                "agent",
            )),
        }
    }
}
