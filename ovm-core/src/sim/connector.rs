//! The simulator's [`Connector`]: simulated hosts by server, sized by their address.

use crate::sync::lock;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{SimHostConfig, SimHypervisor};
use crate::connector::Connector;
use crate::hypervisor::Hypervisor;
use crate::id::ServerId;
use crate::model::{HypervisorKind, Server};
use crate::{Error, Result};

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
        lock(&self.hosts).get(&server).cloned()
    }

    /// Power actions taken so far: (server, on).
    pub fn power_log(&self) -> Vec<(ServerId, bool)> {
        lock(&self.power_log).clone()
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
        lock(&self.hosts).insert(server.id, host.clone());
        Ok(host)
    }

    /// Records the action; a simulated host powered off is down (its VMs are gone).
    async fn set_power(&self, server: &Server, on: bool) -> Result<()> {
        lock(&self.power_log).push((server.id, on));
        if let Some(h) = self.host(server.id) {
            if on { h.power_on() } else { h.crash() }
        }
        Ok(())
    }
}
