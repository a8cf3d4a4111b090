//! Watches each connected hypervisor's events and records what happens to VMs that no job
//! caused: a guest powering off, crashing, misbehaving.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use tokio::sync::broadcast::error::RecvError;

use super::{Inner, Manager};
use crate::Error;
use crate::hypervisor::{Hypervisor, VmEvent, VmEventKind};
use crate::id::{ServerId, VmId};
use crate::model::{Outcome, Vm, VmState};
use crate::store::{Expect, StoreExt, Versioned};

pub(super) fn spawn(manager: Weak<Inner>, server: ServerId, hv: Arc<dyn Hypervisor>) {
    let mut events = hv.subscribe();
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        tracing::warn!(%server, "no async runtime: VM events of this server are not watched");
        return;
    };
    rt.spawn(async move {
        // Subscribed first, so nothing that happens while reconciling is missed.
        if let Some(inner) = manager.upgrade() {
            Manager { inner }.reconcile(server, &*hv).await;
        }
        loop {
            let ev = match events.recv().await {
                Ok(ev) => ev,
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(%server, missed = n, "VM event monitor lagged");
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            let Some(inner) = manager.upgrade() else {
                return;
            };
            Manager { inner }.on_vm_event(server, ev).await;
        }
    });
}

impl Manager {
    /// Brings the records of VMs said to run on `server` in line with its hypervisor when
    /// the manager connects to it: a VM recorded running or paused that the hypervisor
    /// does not run (the server restarted, or the VM ended while no manager watched) is
    /// recorded as it is, with an audit event, so the record never claims a VM that does
    /// not exist. A VM whose record changes meanwhile belongs to whoever changed it.
    async fn reconcile(&self, server: ServerId, hv: &dyn Hypervisor) {
        let recorded: Vec<Versioned<Vm>> = self
            .backends()
            .cache_read()
            .vms
            .values()
            .filter(|v| {
                v.value.server == Some(server)
                    && matches!(v.value.state, VmState::Running | VmState::Paused)
            })
            .cloned()
            .collect();
        if recorded.is_empty() {
            return;
        }
        let actual: HashMap<VmId, VmState> = match hv.list().await {
            Ok(list) => list.into_iter().collect(),
            Err(e) => {
                tracing::warn!(%server, "cannot list VMs to reconcile: {e}");
                return;
            }
        };
        let name = self
            .backends()
            .cache_read()
            .servers
            .get(&server)
            .map_or_else(|| server.to_string(), |s| s.value.name.clone());
        for v in recorded {
            let now = actual.get(&v.value.id).copied();
            if now.is_some_and(VmState::is_active) {
                continue;
            }
            let mut nv = v.value.clone();
            nv.state = match now {
                Some(VmState::Crashed) => VmState::Crashed,
                _ => VmState::Stopped,
            };
            let detail = format!(
                "recorded {} on server {name}, which {} when the manager connected",
                v.value.state,
                match now {
                    None => "does not have it".to_string(),
                    Some(s) => format!("reports it {s}"),
                }
            );
            match self.write_vm_observed(nv, v.revision).await {
                Ok(()) => {
                    let id = v.value.id.to_string();
                    if let Err(e) = self
                        .log_event("vm", id, "vm.lost", Outcome::Failure, detail)
                        .await
                    {
                        tracing::warn!(vm = %v.value.id, "cannot record vm.lost: {e}");
                    }
                }
                Err(Error::Conflict { .. }) => {}
                Err(e) => tracing::warn!(vm = %v.value.id, "cannot reconcile: {e}"),
            }
        }
    }

    /// Writes a VM record changed by an observation (no job), if it is still at
    /// `revision`, and indexes it.
    async fn write_vm_observed(&self, vm: Vm, revision: u64) -> crate::Result<()> {
        let revision = self
            .store()
            .put_obj(&vm, Expect::Revision(revision))
            .await?;
        self.backends().cache_write().put_vm(Versioned {
            revision,
            value: vm,
        });
        Ok(())
    }

    async fn on_vm_event(&self, server: ServerId, ev: VmEvent) {
        let (new_state, action, outcome, detail) = match &ev.kind {
            VmEventKind::Crashed { reason } => (
                Some(VmState::Crashed),
                "vm.crashed",
                Outcome::Failure,
                reason.clone(),
            ),
            VmEventKind::InternalError { detail } => (
                Some(VmState::Crashed),
                "vm.internal_error",
                Outcome::Failure,
                detail.clone(),
            ),
            VmEventKind::PoweredOff => (
                Some(VmState::Stopped),
                "vm.powered_off",
                Outcome::Info,
                "the guest powered off".into(),
            ),
            VmEventKind::Rebooted => (
                None,
                "vm.rebooted",
                Outcome::Info,
                "the guest rebooted".into(),
            ),
            VmEventKind::GuestMisbehaved { detail } => {
                (None, "vm.guest_misbehaved", Outcome::Info, detail.clone())
            }
            // Started, stopped, paused, resumed: caused by jobs, which record them.
            _ => return,
        };
        if let Err(e) = self
            .observe(server, &ev, new_state, action, outcome, detail)
            .await
        {
            tracing::warn!(vm = %ev.vm, %server, "cannot record {action}: {e}");
        }
    }

    async fn observe(
        &self,
        server: ServerId,
        ev: &VmEvent,
        new_state: Option<VmState>,
        action: &str,
        outcome: Outcome,
        detail: String,
    ) -> crate::Result<()> {
        if let Some(state) = new_state {
            for _ in 0..5 {
                let Some(v) = self.backends().cache_read().vms.get(&ev.vm).cloned() else {
                    return Ok(());
                };
                // Transitional states belong to the job that is running on the VM; it reads
                // the hypervisor's state itself.
                if v.value.server != Some(server)
                    || !matches!(v.value.state, VmState::Running | VmState::Paused)
                {
                    break;
                }
                let mut nv: Vm = v.value.clone();
                nv.state = state;
                match self.write_vm_observed(nv, v.revision).await {
                    Ok(()) => break,
                    Err(Error::Conflict { .. }) => {
                        self.backends().refresh("vm", &ev.vm.to_string()).await?
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        self.log_event("vm", ev.vm.to_string(), action, outcome, detail)
            .await
    }
}
