//! Connecting a manager to Xen servers: `XenConnector` gives the manager a
//! `XenHypervisor` for a Xen server that is this machine's dom0. Remote dom0s are reached
//! through the per-server agent, which runs this same backend there.

use ovm_core::sync::lock;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use ovm_core::Connector;
use ovm_core::model::{HypervisorKind, Server};
use ovm_core::{Error, Hypervisor, Result, ServerId};

use crate::backend::{XenHypervisor, XenOptions};
use crate::error::BACKEND;
use crate::runner::{ProcessXl, XlRunner};

/// Addresses that mean "this machine".
const LOCAL: &[&str] = &["", "local", "localhost", "127.0.0.1", "::1"];

/// `Ok` when this machine is a Xen dom0 with the toolstack's kernel interfaces
/// (`/proc/xen/capabilities` says `control_d`); otherwise why not.
pub fn dom0_available() -> std::result::Result<(), String> {
    match std::fs::read_to_string("/proc/xen/capabilities") {
        Ok(caps) if caps.contains("control_d") => Ok(()),
        Ok(_) => Err("this machine runs on Xen but is not dom0".into()),
        Err(e) => Err(format!(
            "not a Xen dom0 (/proc/xen/capabilities: {e}; is xenfs mounted?)"
        )),
    }
}

/// Gives the manager a `XenHypervisor` per local Xen server (see the module docs).
pub struct XenConnector {
    state_dir: PathBuf,
    console_log_dir: PathBuf,
    runner: Option<Arc<dyn XlRunner>>,
    hosts: Mutex<HashMap<ServerId, XenHypervisor>>,
}

impl std::fmt::Debug for XenConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XenConnector")
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

impl XenConnector {
    /// VM definitions under `state_dir/<server id>/`; the real `xl`, in dom0 only.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        XenConnector {
            state_dir: state_dir.into(),
            console_log_dir: XenOptions::default().console_log_dir,
            runner: None,
            hosts: Mutex::default(),
        }
    }

    /// Runs `xl` through `runner` and skips the dom0 check (tests, a wrapped `xl`).
    pub fn with_runner(state_dir: impl Into<PathBuf>, runner: Arc<dyn XlRunner>) -> Self {
        XenConnector {
            runner: Some(runner),
            ..Self::new(state_dir)
        }
    }

    /// Where xenconsoled writes guest logs (default `/var/log/xen/console`).
    pub fn console_log_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.console_log_dir = dir.into();
        self
    }

    /// The backend of a connected server.
    pub fn host(&self, server: ServerId) -> Option<XenHypervisor> {
        lock(&self.hosts).get(&server).cloned()
    }
}

#[async_trait]
impl Connector for XenConnector {
    fn kind(&self) -> HypervisorKind {
        HypervisorKind::Xen
    }

    /// Every local address is this machine's dom0.
    fn host_key(&self, server: &Server) -> Option<String> {
        LOCAL
            .contains(&server.address.as_str())
            .then(|| "local".to_string())
    }

    async fn connect(&self, server: &Server) -> Result<Arc<dyn Hypervisor>> {
        if let Some(h) = self.host(server.id) {
            return Ok(Arc::new(h));
        }
        if !LOCAL.contains(&server.address.as_str()) {
            return Err(Error::unsupported(
                format!(
                    "Xen server {} at {:?}: only this machine's dom0 (`local`) is reachable without the ovm agent",
                    server.name, server.address
                ),
                BACKEND,
            ));
        }
        let runner = match &self.runner {
            Some(r) => r.clone(),
            None => {
                dom0_available().map_err(|why| Error::backend(BACKEND, why))?;
                Arc::new(ProcessXl::new())
            }
        };
        let mut opts = XenOptions::new(self.state_dir.join(server.id.to_string()));
        opts.server_id = server.id;
        opts.console_log_dir = self.console_log_dir.clone();
        let hv = XenHypervisor::connect(runner, opts).await?;
        let mut hosts = lock(&self.hosts);
        // Two first connections may race: keep the one stored first.
        let hv = hosts.entry(server.id).or_insert(hv).clone();
        Ok(Arc::new(hv))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use ovm_core::model::ServerState;

    use super::*;
    use crate::fake::FakeXl;

    fn server(id: u128, address: &str) -> Server {
        Server {
            id: ServerId::from_u128(id),
            name: "dom0-a".into(),
            address: address.into(),
            hypervisor: HypervisorKind::Xen,
            cpus: 8,
            memory_mib: 16384,
            roles: BTreeSet::new(),
            state: ServerState::Running,
            pool: None,
            networks: BTreeSet::new(),
            agent: None,
        }
    }

    #[tokio::test]
    async fn local_servers_connect_once_remote_ones_need_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let xl = Arc::new(FakeXl::new());
        let c = XenConnector::with_runner(dir.path(), xl.clone());
        assert_eq!(c.kind(), HypervisorKind::Xen);
        let hv = c.connect(&server(7, "local")).await.unwrap();
        assert_eq!(hv.backend(), "xen");
        assert_eq!(hv.host_info().await.unwrap().hostname, "fake-xen");
        c.connect(&server(7, "local")).await.unwrap();
        let infos = xl.calls().iter().filter(|c| *c == "xl info").count();
        assert_eq!(
            infos,
            2,
            "connect once (xl info), then host_info: {:?}",
            xl.calls()
        );
        assert!(dir.path().join(ServerId::from_u128(7).to_string()).is_dir());
        assert!(matches!(
            c.connect(&server(8, "dom0-b.example")).await,
            Err(Error::Unsupported { .. })
        ));
    }

    #[test]
    fn dom0_detection_explains_itself_here() {
        // The test machines are not dom0s; inside the test bed this is Ok.
        if let Err(why) = dom0_available() {
            assert!(why.contains("dom0"), "{why}");
        }
    }
}
