//! Watches each connected hypervisor's events and records what happens to VMs that no job
//! caused: a guest powering off, crashing, misbehaving.

use std::sync::{Arc, Weak};

use tokio::sync::broadcast::error::RecvError;

use super::{Inner, Manager};
use crate::Error;
use crate::hypervisor::{Hypervisor, VmEvent, VmEventKind};
use crate::id::ServerId;
use crate::model::{Outcome, Server, ServerState, Vm, VmState};
use crate::store::{Expect, StoreExt, Versioned};

pub(super) fn spawn(manager: Weak<Inner>, server: ServerId, hv: Arc<dyn Hypervisor>) {
    let mut events = hv.subscribe();
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        tracing::warn!(%server, "no async runtime: VM events of this server are not watched");
        return;
    };
    if let Some(mut reach) = hv.reachability() {
        let (manager, hv) = (manager.clone(), hv.clone());
        rt.spawn(async move {
            loop {
                let up = *reach.borrow_and_update();
                let Some(inner) = manager.upgrade() else {
                    return;
                };
                let mgr = Manager { inner };
                // Back after a silence: record what really runs there now.
                if mgr.on_reachability(server, up).await && up {
                    mgr.reconcile_once(server, &*hv).await;
                }
                if reach.changed().await.is_err() {
                    return;
                }
            }
        });
    }
    rt.spawn(async move {
        // Subscribed first, so nothing that happens while reconciling is missed.
        if let Some(inner) = manager.upgrade() {
            Manager { inner }.reconcile_once(server, &*hv).await;
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
    /// Records a server whose agent stopped (or resumed) answering: `unreachable` with an
    /// event, and back to `running`. Its VMs keep their last known state; nothing is
    /// stopped. Managers racing to record it: one write wins, the others find it done.
    /// Returns true if this call recorded the change.
    async fn on_reachability(&self, server: ServerId, up: bool) -> bool {
        for _ in 0..5 {
            let Some(s) = self.wiring().index_read().servers.get(&server).cloned() else {
                return false;
            };
            let next = match (s.value.state, up) {
                (ServerState::Running, false) => ServerState::Unreachable,
                (ServerState::Unreachable, true) => ServerState::Running,
                _ => return false,
            };
            let mut ns: Server = s.value.clone();
            ns.state = next;
            match self
                .store()
                .put_obj(&ns, Expect::Revision(s.revision))
                .await
            {
                Ok(revision) => {
                    self.wiring().index_write().put_server(Versioned {
                        revision,
                        value: ns.clone(),
                    });
                    let (action, outcome, detail) = if up {
                        ("server.reachable", Outcome::Info, "its agent answers again")
                    } else {
                        (
                            "server.unreachable",
                            Outcome::Failure,
                            "its agent does not answer; its VMs keep their last known state",
                        )
                    };
                    if let Err(e) = self
                        .log_event("server", server.to_string(), action, outcome, detail.into())
                        .await
                    {
                        tracing::warn!(%server, "cannot record {action}: {e}");
                    }
                    return true;
                }
                Err(Error::Conflict { .. }) => {
                    if let Err(e) = self.wiring().refresh("server", &server.to_string()).await {
                        tracing::warn!(%server, "refreshing the server: {e}");
                        return false;
                    }
                }
                Err(e) => {
                    tracing::warn!(%server, "cannot record reachability: {e}");
                    return false;
                }
            }
        }
        false
    }

    /// Writes a VM record changed by an observation (no job), if it is still at
    /// `revision`, and indexes it.
    pub(super) async fn write_vm_observed(&self, vm: Vm, revision: u64) -> crate::Result<()> {
        let revision = self
            .store()
            .put_obj(&vm, Expect::Revision(revision))
            .await?;
        self.wiring().index_write().put_vm(Versioned {
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
                let Some(v) = self.wiring().index_read().vms.get(&ev.vm).cloned() else {
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
                        self.wiring().refresh("vm", &ev.vm.to_string()).await?
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        self.log_event("vm", ev.vm.to_string(), action, outcome, detail)
            .await
    }
}
