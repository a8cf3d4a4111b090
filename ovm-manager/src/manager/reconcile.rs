//! Reconciliation: what a server's hypervisor runs against what the store records, when a
//! manager connects to it (every open, every first use) — before it answers.
//!
//! - A VM recorded running or paused there that the hypervisor does not run (the server
//!   restarted, the VMM was killed while no manager watched) is recorded as it is:
//!   `crashed` if the hypervisor says so, else `stopped`, with a `vm.crashed` or
//!   `vm.lost` event.
//! - A VM the hypervisor runs whose record says it is at rest (stopped or crashed) runs
//!   without the store's knowledge — left by a process that lost its lease, say — and is
//!   stopped by a `vm.stray` job, which first claims the record (a conditional write), so
//!   that a start racing with it either wins first or is refused; never both.
//!
//! Records in transition (starting, stopping, migrating) belong to the job moving them
//! and are left alone.

use ovm_core::sync::lock;
use std::collections::HashMap;
use std::time::Duration;

use super::Manager;
use super::change::{Change, Doc};
use crate::hypervisor::Hypervisor;
use crate::id::{ServerId, VmId};
use crate::job::JobSpec;
use crate::model::{Outcome, ServerState, Undo, Vm, VmState};
use crate::store::{StoreExt, Versioned};
use crate::{Error, Result};

/// Most time connecting to and listing one server may take while opening.
const SERVER_TIMEOUT: Duration = Duration::from_secs(10);

impl Manager {
    /// Connects to every server that is not powered off and reconciles it (in parallel,
    /// each bounded in time). A server that cannot be reached is logged and left for its
    /// first use.
    pub async fn reconcile_all(&self) {
        if let Err(e) = self.sync().await {
            tracing::warn!("cannot catch up before reconciling: {e}");
        }
        let servers: Vec<(ServerId, String)> = self
            .wiring()
            .index_read()
            .servers
            .values()
            .filter(|s| s.value.state != ServerState::PoweredOff)
            .filter(|s| self.wiring().connectors.contains_key(&s.value.hypervisor))
            .map(|s| (s.value.id, s.value.name.clone()))
            .collect();
        let work = servers.into_iter().map(|(id, name)| async move {
            let run = async {
                let hv = self.wiring().hypervisor(id).await?;
                self.reconcile_once(id, &*hv).await;
                Ok::<_, Error>(())
            };
            match tokio::time::timeout(SERVER_TIMEOUT, run).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(server = %name, "not reconciled: {e}"),
                Err(_) => tracing::warn!(server = %name, "not reconciled: no answer within {SERVER_TIMEOUT:?}"),
            }
        });
        futures::future::join_all(work).await;
    }

    /// Reconciles `server` once per connection: whoever comes first does it, and every
    /// other caller waits until it is done.
    pub(super) async fn reconcile_once(&self, server: ServerId, hv: &dyn Hypervisor) {
        let cell = lock(&self.inner.reconciled)
            .entry(server)
            .or_default()
            .clone();
        cell.get_or_init(|| self.reconcile(server, hv)).await;
    }

    /// Brings the records of `server`'s VMs in line with its hypervisor (see the module).
    async fn reconcile(&self, server: ServerId, hv: &dyn Hypervisor) {
        // Records read before the listing decide what was lost: a VM recorded running
        // then, and not running when listed, ended. (A start racing with this is still
        // `starting` in them, and left alone.)
        let before: HashMap<VmId, Versioned<Vm>> = match self.store().list_obj::<Vm>().await {
            Ok(v) => v.into_iter().map(|v| (v.value.id, v)).collect(),
            Err(e) => {
                tracing::warn!(%server, "cannot read VM records to reconcile: {e}");
                return;
            }
        };
        // The listing must say what runs now (a backend shared with other processes
        // lists what they started since it connected, and what they are starting as
        // `starting`), so that it is no older than `before`.
        let actual: HashMap<VmId, VmState> = match hv.list().await {
            Ok(list) => list.into_iter().collect(),
            Err(e) => {
                tracing::warn!(%server, "cannot list VMs to reconcile: {e}");
                return;
            }
        };
        let name = self
            .wiring()
            .index_read()
            .servers
            .get(&server)
            .map_or_else(|| server.to_string(), |s| s.value.name.clone());
        for v in before.into_values() {
            let now = actual.get(&v.value.id).copied();
            if v.value.server == Some(server)
                && matches!(v.value.state, VmState::Running | VmState::Paused)
                && !now.is_some_and(VmState::is_active)
            {
                // Written against the revision read before the listing: a VM changed
                // since belongs to whoever changed it.
                self.record_lost(&name, v, now).await;
            }
        }
        // Records read after the listing decide what is a stray: a VM that runs was
        // recorded `starting` before it was started, so one that runs while its record
        // (read later) says it is at rest runs without the store's knowledge.
        let after: Vec<Versioned<Vm>> = match self.store().list_obj::<Vm>().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(%server, "cannot read VM records to reconcile: {e}");
                return;
            }
        };
        for v in after {
            // Running, not merely active: one `starting` in a listing is being started or
            // removed by another process right now, which is that process's business.
            let runs_here = actual
                .get(&v.value.id)
                .is_some_and(|s| matches!(s, VmState::Running | VmState::Paused));
            if runs_here
                && matches!(v.value.state, VmState::Stopped | VmState::Crashed)
                && let Err(e) = self.stop_stray(server, &name, v).await
            {
                tracing::warn!(%server, "cannot stop a stray VM: {e}");
            }
        }
    }

    async fn record_lost(&self, server_name: &str, v: Versioned<Vm>, now: Option<VmState>) {
        let mut nv = v.value.clone();
        let crashed = now == Some(VmState::Crashed);
        nv.state = if crashed {
            VmState::Crashed
        } else {
            VmState::Stopped
        };
        let detail = format!(
            "recorded {} on server {server_name}, which {} when the manager connected",
            v.value.state,
            match now {
                None => "does not have it".to_string(),
                Some(VmState::Crashed) =>
                    "reports that its VMM ended without an exit report".into(),
                Some(s) => format!("reports it {s}"),
            }
        );
        let action = if crashed { "vm.crashed" } else { "vm.lost" };
        match self.write_vm_observed(nv, v.revision).await {
            Ok(()) => {
                let id = v.value.id.to_string();
                if let Err(e) = self
                    .log_event("vm", id, action, Outcome::Failure, detail)
                    .await
                {
                    tracing::warn!(vm = %v.value.id, "cannot record {action}: {e}");
                }
            }
            Err(Error::Conflict { .. }) => {}
            Err(e) => tracing::warn!(vm = %v.value.id, "cannot reconcile: {e}"),
        }
    }

    /// Stops a VM that runs on `server` though its record (at `v.revision`) says it is at
    /// rest: a job that claims the record first (state `stopping` there), then kills and
    /// undefines it, then records it stopped.
    async fn stop_stray(
        &self,
        server: ServerId,
        server_name: &str,
        v: Versioned<Vm>,
    ) -> Result<()> {
        let vm = v.value.clone();
        let job = JobSpec::new(
            "vm.stray",
            format!(
                "stop vm {} found running on server {server_name} though recorded {}",
                vm.spec.name, vm.state
            ),
            Some(("vm", vm.id.to_string())),
            self.initiator(),
            &["claim", "stop", "record"],
        );
        let mgr = self.clone();
        let handle = self
            .spawn(job, move |ctx| async move {
                let claimed = Versioned {
                    revision: v.revision,
                    value: v.value.clone(),
                };
                ctx.step(
                    "claim",
                    mgr.apply(&ctx, "claim", |_| {
                        let mut nv = claimed.value.clone();
                        nv.state = VmState::Stopping;
                        nv.server = Some(server);
                        // Against the revision read after the listing: anyone who changed
                        // the VM since wins, and this job ends with a conflict.
                        Ok(vec![Change::update(&claimed, nv, Doc::Vm)])
                    }),
                )
                .await?;
                let hv = mgr.wiring().hypervisor(server).await?;
                ctx.step("stop", async {
                    ctx.record_undo("stop", Undo::UndefineVm { server, vm: vm.id })
                        .await?;
                    match hv.kill(vm.id).await {
                        Ok(()) | Err(Error::NotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                    match hv.undefine(vm.id).await {
                        Ok(()) | Err(Error::NotFound { .. }) => Ok(()),
                        Err(e) => Err(e),
                    }
                })
                .await?;
                ctx.step(
                    "record",
                    mgr.set_vm(&ctx, "record", vm.id, move |r| {
                        r.state = VmState::Stopped;
                        Ok(())
                    }),
                )
                .await
            })
            .await?;
        handle.wait(Duration::from_secs(60)).await
    }
}
