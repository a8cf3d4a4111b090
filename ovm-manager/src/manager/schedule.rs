//! DRS and DPM in the manager: proposals from the pool's policies, executed as migration
//! and power jobs, on demand or periodically.

use super::refs::PoolRef;
use std::time::Duration;

use super::Manager;
use crate::id::{PoolId, ServerId, Timestamp};
use crate::job::JobHandle;
use crate::model::{Outcome, ServerState, VmState};
use crate::policy::{Migration, PowerAction};
use crate::{Error, Result};

/// What one scheduling pass did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScheduleReport {
    /// Migrations carried out.
    pub migrated: Vec<Migration>,
    /// Servers powered off.
    pub powered_off: Vec<ServerId>,
    /// Servers powered on.
    pub powered_on: Vec<ServerId>,
    /// What failed (the rest went on).
    pub errors: Vec<String>,
}

impl Manager {
    fn pool_view(&self, pool: PoolId) -> Result<crate::policy::PoolView> {
        self.wiring()
            .index_read()
            .view(pool)
            .cloned()
            .ok_or_else(|| Error::not_found("pool", pool))
    }

    /// The migrations DRS proposes for a pool now, each with its reason.
    pub fn propose_rebalance(&self, pool_key: impl Into<PoolRef>) -> Result<Vec<Migration>> {
        let pool = self.find_pool(pool_key)?;
        Ok(self
            .inner
            .balance
            .propose(&self.pool_view(pool.id)?, Timestamp::now()))
    }

    /// The power actions DPM proposes for a pool now.
    pub fn propose_power(&self, pool_key: impl Into<PoolRef>) -> Result<Vec<PowerAction>> {
        let pool = self.find_pool(pool_key)?;
        Ok(self
            .inner
            .power
            .propose(&self.pool_view(pool.id)?, Timestamp::now()))
    }

    /// Runs DRS once: each proposed migration becomes a migration job; waits for them.
    pub async fn rebalance(&self, pool_key: impl Into<PoolRef>) -> Result<ScheduleReport> {
        let mut report = ScheduleReport::default();
        for m in self.propose_rebalance(pool_key)? {
            match self.migrate_to(&m).await {
                Ok(()) => report.migrated.push(m),
                Err(e) => report
                    .errors
                    .push(format!("migrate vm {} ({}): {e}", m.vm, m.reason)),
            }
        }
        Ok(report)
    }

    async fn migrate_to(&self, m: &Migration) -> Result<()> {
        let job: JobHandle<ServerId> = self.migrate_vm(m.vm, Some(m.to.into())).await?;
        job.join().await.map(|_| ())
    }

    /// Runs DPM once: evacuations first, then power-off jobs; power-on jobs.
    pub async fn apply_power(&self, pool_key: impl Into<PoolRef>) -> Result<ScheduleReport> {
        let mut report = ScheduleReport::default();
        for action in self.propose_power(pool_key)? {
            match action {
                PowerAction::PowerOff {
                    server,
                    evacuate,
                    reason,
                } => {
                    let mut ok = true;
                    for m in evacuate {
                        match self.migrate_to(&m).await {
                            Ok(()) => report.migrated.push(m),
                            Err(e) => {
                                ok = false;
                                report.errors.push(format!("evacuate vm {}: {e}", m.vm));
                            }
                        }
                    }
                    if !ok {
                        report
                            .errors
                            .push(format!("server {server} stays on: evacuation incomplete"));
                        continue;
                    }
                    match self.power_server(server, false, &reason).await {
                        Ok(()) => report.powered_off.push(server),
                        Err(e) => report
                            .errors
                            .push(format!("power off server {server}: {e}")),
                    }
                }
                PowerAction::PowerOn { server, reason } => {
                    match self.power_server(server, true, &reason).await {
                        Ok(()) => report.powered_on.push(server),
                        Err(e) => report.errors.push(format!("power on server {server}: {e}")),
                    }
                }
            }
        }
        Ok(report)
    }

    /// Powers a server off (it must run no VMs) or on, through its connector (IPMI,
    /// Wake-on-LAN; the simulator records it), and records its state.
    pub async fn power_server(&self, server: ServerId, on: bool, reason: &str) -> Result<()> {
        let record = self.find_server(server)?;
        if !on {
            let active = self
                .vms()
                .into_iter()
                .filter(|v| v.server == Some(server) && v.state.is_active())
                .count();
            if active > 0 {
                return Err(Error::InvalidState {
                    kind: "server",
                    id: record.name,
                    state: format!("running {active} VMs"),
                    op: "power off".into(),
                });
            }
        }
        let connector = self
            .wiring()
            .connectors
            .get(&record.hypervisor)
            .cloned()
            .ok_or_else(|| Error::unsupported("power control", record.hypervisor.as_str()))?;
        connector.set_power(&record, on).await?;
        if !on {
            self.wiring().detach(server);
        }
        let state = if on {
            ServerState::Running
        } else {
            ServerState::PoweredOff
        };
        let kind = if on {
            "server.power_on"
        } else {
            "server.power_off"
        };
        self.set_server_state(server, state, kind)
            .await?
            .join()
            .await?;
        self.log_event(
            "server",
            server.to_string(),
            kind,
            Outcome::Info,
            reason.to_string(),
        )
        .await
    }

    /// Runs DRS and DPM for every pool that enables them, each at its pool's interval,
    /// until the returned handle is aborted or the manager is dropped.
    pub fn spawn_scheduler(&self) -> tokio::task::JoinHandle<()> {
        let weak = std::sync::Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut last: std::collections::HashMap<PoolId, tokio::time::Instant> =
                Default::default();
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Some(inner) = weak.upgrade() else { return };
                let mgr = Manager { inner };
                for pool in mgr.pools() {
                    let (drs, dpm) = (&pool.policies.drs, &pool.policies.dpm);
                    if !drs.enabled && !dpm.enabled {
                        continue;
                    }
                    let every = Duration::from_secs(drs.interval_secs.max(1));
                    if last.get(&pool.id).is_some_and(|t| t.elapsed() < every) {
                        continue;
                    }
                    last.insert(pool.id, tokio::time::Instant::now());
                    let key = pool.id.to_string();
                    if drs.enabled
                        && let Err(e) = mgr.rebalance(&key).await
                    {
                        tracing::warn!(pool = %pool.name, "DRS: {e}");
                    }
                    if dpm.enabled
                        && let Err(e) = mgr.apply_power(&key).await
                    {
                        tracing::warn!(pool = %pool.name, "DPM: {e}");
                    }
                }
            }
        })
    }

    /// VMs of a pool that run (for reports).
    pub fn running_vms(&self, pool: PoolId) -> usize {
        self.vms()
            .iter()
            .filter(|v| v.pool == pool && v.state == VmState::Running)
            .count()
    }
}
