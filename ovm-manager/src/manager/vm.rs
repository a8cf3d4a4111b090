//! Virtual machines: define, start (placed by the pool's policy), stop, kill, pause,
//! resume, migrate, delete; guest messages and console.

use super::refs::{PoolRef, ServerRef, VmRef};
use ovm_core::sync::lock;
use std::time::Duration;

use super::Manager;
use super::change::{Change, Doc};
use super::index::Index;
use crate::hypervisor::{DiskAttachment, Hypervisor, VmConfig};
use crate::id::{ServerId, Timestamp, VmId};
use crate::job::{JobCtx, JobHandle, JobSpec};
use crate::model::{Outcome, Undo, Vm, VmOp, VmSpec, VmState, Volume};
use crate::policy::{Explanation, PlacementRequest};
use crate::store::StoreExt;
use crate::{Error, Result};

fn wrong_state(vm: &Vm, op: &str) -> Error {
    Error::InvalidState {
        kind: "vm",
        id: vm.spec.name.clone(),
        state: vm.state.to_string(),
        op: op.into(),
    }
}

/// Refuses `op` unless the VM's state allows it (the table in `model::VmOp`).
fn check_op(vm: &Vm, op: VmOp) -> Result<()> {
    if op.allowed_from(vm.state) {
        Ok(())
    } else {
        Err(wrong_state(vm, op.as_str()))
    }
}

/// The placement request for a VM: its spec plus the repositories holding its disks.
fn request(c: &Index, vm: &Vm, disk_repos: Vec<crate::id::RepoId>) -> PlacementRequest {
    let ha = c.pools.get(&vm.pool).is_some_and(|p| p.value.ha_enabled);
    let mut r = PlacementRequest::for_spec(vm.id, &vm.spec, ha);
    r.repositories = disk_repos;
    r
}

impl Manager {
    /// All VMs, by name.
    pub fn vms(&self) -> Vec<Vm> {
        let mut v: Vec<Vm> = self
            .wiring()
            .index_read()
            .vms
            .values()
            .map(super::value)
            .collect();
        v.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        v
    }

    /// A VM by id or name.
    pub fn find_vm(&self, key: impl Into<VmRef>) -> Result<Vm> {
        Ok(self
            .wiring()
            .index_read()
            .vm_ref(&key.into())?
            .value
            .clone())
    }

    /// True if the VM's recorded state may be out of date: it is active on a server that
    /// does not answer (its agent is unreachable), so what it really does is unknown.
    pub fn vm_state_is_stale(&self, id: VmId) -> Result<bool> {
        let index = self.wiring().index_read();
        let vm = &index.vm(id)?.value;
        Ok(vm.state.is_active()
            && vm.server.is_some_and(|s| {
                index
                    .servers
                    .get(&s)
                    .is_some_and(|s| s.value.state == crate::model::ServerState::Unreachable)
            }))
    }

    /// A VM's state as last recorded.
    pub fn vm_state(&self, id: VmId) -> Result<VmState> {
        Ok(self.wiring().index_read().vm(id)?.value.state)
    }

    /// Defines a VM in a pool (it does not run until started).
    pub async fn create_vm(
        &self,
        pool_key: impl Into<PoolRef>,
        mut spec: VmSpec,
    ) -> Result<JobHandle<VmId>> {
        spec.name = crate::model::normalize_name("vm.name", &spec.name)?;
        spec.validate()?;
        let pool = self.find_pool(pool_key)?;
        let vm = Vm {
            id: VmId::new(),
            pool: pool.id,
            spec,
            state: VmState::Stopped,
            server: None,
            last_moved: None,
        };
        let job = JobSpec::new(
            "vm.create",
            format!("create vm {} in pool {}", vm.spec.name, pool.name),
            Some(("vm", vm.id.to_string())),
            self.initiator(),
            &["check", "record"],
        );
        let mgr = self.clone();
        self.spawn(job, move |ctx| async move {
            ctx.step("check", mgr.check_references(&vm)).await?;
            let id = vm.id;
            ctx.step(
                "record",
                mgr.apply(&ctx, "record", |c| {
                    if c.find_vm(&vm.spec.name).is_some() {
                        return Err(Error::AlreadyExists {
                            kind: "vm",
                            id: vm.spec.name.clone(),
                        });
                    }
                    if !c.pools.contains_key(&vm.pool) {
                        return Err(Error::not_found("pool", vm.pool));
                    }
                    Ok(vec![Change::Create(Doc::Vm(vm.clone()))])
                }),
            )
            .await?;
            Ok(id)
        })
        .await
    }

    /// Checks that a VM's disks, networks and preferred servers exist in its pool.
    async fn check_references(&self, vm: &Vm) -> Result<()> {
        for (i, d) in vm.spec.disks.iter().enumerate() {
            let vol = self.volume_record(d.volume).await.map_err(|_| {
                Error::invalid(
                    format!("vm.disks[{i}].volume"),
                    format!("volume {} does not exist", d.volume),
                )
            })?;
            let pool_repos = self.find_pool(vm.pool)?.repositories;
            if !pool_repos.contains(&vol.repo) {
                return Err(Error::invalid(
                    format!("vm.disks[{i}].volume"),
                    format!(
                        "volume {} is in repository {}, which pool does not use",
                        vol.name, vol.repo
                    ),
                ));
            }
        }
        let c = self.wiring().index_read();
        for (i, n) in vm.spec.nics.iter().enumerate() {
            if !c.networks.contains_key(&n.network) {
                return Err(Error::invalid(
                    format!("vm.nics[{i}].network"),
                    format!("network {} does not exist", n.network),
                ));
            }
        }
        for s in &vm.spec.preferred_servers {
            if c.servers
                .get(s)
                .is_none_or(|s| s.value.pool != Some(vm.pool))
            {
                return Err(Error::invalid(
                    "vm.preferred_servers",
                    format!("server {s} is not in the VM's pool"),
                ));
            }
        }
        Ok(())
    }

    async fn volume_record(&self, id: crate::id::VolumeId) -> Result<Volume> {
        self.store()
            .get_obj::<Volume>(&id.to_string())
            .await?
            .map(|v| v.value)
            .ok_or_else(|| Error::not_found("volume", id))
    }

    /// The VM with its volumes' records, read once for a start or a migration.
    async fn with_disks(&self, vm: Vm) -> Result<VmWithDisks> {
        let mut volumes = Vec::with_capacity(vm.spec.disks.len());
        for d in &vm.spec.disks {
            volumes.push(self.volume_record(d.volume).await?);
        }
        Ok(VmWithDisks { vm, volumes })
    }

    /// What a hypervisor needs to define the VM on `server`: disks and NICs resolved.
    async fn vm_config(&self, plan: &VmWithDisks, server: ServerId) -> Result<VmConfig> {
        let vm = &plan.vm;
        let mut config = VmConfig::new(vm.id, vm.spec.clone());
        for (d, vol) in vm.spec.disks.iter().zip(&plan.volumes) {
            let access = self
                .wiring()
                .plugin_for(vol.repo)?
                .volume_access(vol.repo, vol.id)
                .await?;
            config.disks.push(DiskAttachment {
                access,
                read_only: d.read_only,
                device: d.device.clone(),
            });
        }
        for (i, nic) in vm.spec.nics.iter().enumerate() {
            let net = self
                .wiring()
                .index_read()
                .networks
                .get(&nic.network)
                .map(|n| n.value.clone())
                .ok_or_else(|| Error::not_found("network", nic.network))?;
            config.nics.push(
                self.wiring()
                    .network
                    .plug(server, vm.id, i, nic, &net)
                    .await?,
            );
        }
        Ok(config)
    }

    /// Why each server would or would not take this VM now.
    pub async fn explain_start(&self, key: impl Into<VmRef>) -> Result<Explanation> {
        let plan = self.with_disks(self.find_vm(key)?).await?;
        let c = self.wiring().index_read();
        let view = c
            .view(plan.vm.pool)
            .ok_or_else(|| Error::not_found("pool", plan.vm.pool))?;
        Ok(self
            .inner
            .placement
            .explain(view, &request(&c, &plan.vm, plan.repos())))
    }

    /// Starts a VM on the server its pool's placement policy chooses. The job's result is
    /// that server.
    pub async fn start_vm(&self, key: impl Into<VmRef>) -> Result<JobHandle<ServerId>> {
        let vm = self.find_vm(key)?;
        check_op(&vm, VmOp::Start)?;
        let job = JobSpec::new(
            "vm.start",
            format!("start vm {}", vm.spec.name),
            Some(("vm", vm.id.to_string())),
            self.initiator(),
            &["place", "define", "start"],
        );
        let mgr = self.clone();
        self.spawn(job, move |ctx| async move {
            // The VM and its volumes, read once: placement and the definition use the same.
            let plan = mgr.with_disks(vm).await?;
            let vm = &plan.vm;
            let server = ctx
                .step("place", mgr.place_and_reserve(&ctx, vm.id, plan.repos()))
                .await?;
            let hv = mgr.wiring().hypervisor(server).await?;
            ctx.step("define", mgr.define_on(&ctx, "define", &*hv, &plan, server))
                .await?;
            ctx.step("start", async {
                ctx.record_undo("start", Undo::KillVm { server, vm: vm.id })
                    .await?;
                hv.start(vm.id).await?;
                // The guest may already have stopped (a workload that powers off): record
                // what the hypervisor says, not what we hoped.
                let now = hv.state(vm.id).await.unwrap_or(VmState::Running);
                let state = if now == VmState::Starting {
                    VmState::Running
                } else {
                    now
                };
                mgr.set_vm(&ctx, "start", vm.id, move |v| {
                    v.state = state;
                    Ok(())
                })
                .await
            })
            .await?;
            Ok(server)
        })
        .await
    }

    /// Chooses a server and records the VM as starting there, in one step so concurrent
    /// starts see the reservation.
    async fn place_and_reserve(
        &self,
        ctx: &JobCtx,
        vm: VmId,
        repos: Vec<crate::id::RepoId>,
    ) -> Result<ServerId> {
        let (pool, req) = {
            let c = self.wiring().index_read();
            let v = c.vm(vm)?;
            check_op(&v.value, VmOp::Start)?;
            (v.value.pool, request(&c, &v.value, repos))
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        lock(&self.inner.pending_placements).push(super::PendingPlacement {
            pool,
            request: req,
            reply: tx,
        });
        self.place_pending().await;
        let (server, ticket) = rx
            .await
            .map_err(|_| Error::backend("manager", "placement was dropped"))??;
        let recorded = self
            .apply(ctx, "place", |c| {
                let v = c.vm(vm)?;
                check_op(&v.value, VmOp::Start)?;
                let mut nv = v.value.clone();
                nv.state = VmState::Starting;
                nv.server = Some(server);
                // Committed only while this process still decides the pool's placements.
                Ok(vec![
                    Change::update(v, nv, Doc::Vm),
                    Change::Assert(ticket.lease_check()?),
                ])
            })
            .await;
        // The reservation ends with the ticket: the VM occupies the server in the index
        // if and only if its record now says so.
        drop(ticket);
        recorded.map(|()| server)
    }

    /// Places every queued start at once: one pass of the policy over the pool's view per
    /// batch (`place_many`), each choice reserved in the view before the next batch, so a
    /// burst spreads as capacity says and costs one index build rather than one per VM.
    pub(super) async fn place_pending(&self) {
        let _serial = self.inner.placing.lock().await;
        let batch: Vec<super::PendingPlacement> =
            std::mem::take(&mut *lock(&self.inner.pending_placements));
        if batch.is_empty() {
            return;
        }
        let mut by_pool: std::collections::HashMap<
            crate::id::PoolId,
            Vec<super::PendingPlacement>,
        > = std::collections::HashMap::new();
        for p in batch {
            by_pool.entry(p.pool).or_default().push(p);
        }
        for (pool, pending) in by_pool {
            // Another manager waits for the pool: finish what is in flight, hand the
            // lease over, and place these after it (see `placement_lease`).
            if self.should_hand_over(pool).await {
                self.defer_placements(pending);
                continue;
            }
            if let Err(e) = self.acquire_placement_lease(pool).await {
                for p in pending {
                    let _ = p.reply.send(Err(e.clone()));
                }
                continue;
            }
            let requests: Vec<PlacementRequest> =
                pending.iter().map(|p| p.request.clone()).collect();
            // The policy reads the view under the shared lock (other jobs keep reading the
            // index meanwhile); only the reservations take it exclusively. Placements are
            // serialised by `placing`, so no other reservation lands in between.
            let results = match self.wiring().index_read().view(pool) {
                Some(view) => self.inner.placement.place_many(view, &requests),
                None => requests
                    .iter()
                    .map(|_| Err(Error::not_found("pool", pool)))
                    .collect(),
            };
            {
                let mut c = self.wiring().index_write();
                for (r, req) in results.iter().zip(&requests) {
                    if let Ok(server) = r {
                        c.reserve(req.vm, *server);
                    }
                }
            }
            // Held for the whole batch, so the lease is let go only after the last reply.
            let _batch = self.placement_ticket(pool, None);
            for (p, r) in pending.into_iter().zip(results) {
                // The job may have been aborted meanwhile: then the reply drops, and with it
                // the ticket and the reservation.
                let vm = p.request.vm;
                let _ = p
                    .reply
                    .send(r.map(|server| (server, self.placement_ticket(pool, Some(vm)))));
            }
        }
    }

    /// Defines the VM on a server, recording the undo first. A stale definition left on the
    /// server (a stopped VM of an earlier run) is replaced.
    async fn define_on(
        &self,
        ctx: &JobCtx,
        step: &str,
        hv: &dyn Hypervisor,
        plan: &VmWithDisks,
        server: ServerId,
    ) -> Result<()> {
        let vm = plan.vm.id;
        let config = self.vm_config(plan, server).await?;
        ctx.record_undo(step, Undo::UndefineVm { server, vm })
            .await?;
        match hv.define(&config).await {
            Err(Error::AlreadyExists { .. }) => {
                hv.undefine(vm).await?;
                hv.define(&config).await
            }
            other => other,
        }
    }

    /// Updates a VM record inside a job step.
    pub(super) async fn set_vm(
        &self,
        ctx: &JobCtx,
        step: &str,
        vm: VmId,
        mut f: impl FnMut(&mut Vm) -> Result<()>,
    ) -> Result<()> {
        self.apply(ctx, step, |c| {
            let v = c.vm(vm)?;
            let mut nv = v.value.clone();
            f(&mut nv)?;
            // Only the table's moves are recorded (`VmState::can_become`).
            if !v.value.state.can_become(nv.state) {
                return Err(wrong_state(&v.value, &format!("become {}", nv.state)));
            }
            Ok(vec![Change::update(v, nv, Doc::Vm)])
        })
        .await
    }

    /// Stops a VM gracefully (the guest is asked; after the timeout it is killed).
    pub async fn stop_vm(&self, key: impl Into<VmRef>) -> Result<JobHandle<()>> {
        let timeout = self.inner.stop_timeout;
        self.halt_vm(key.into(), VmOp::Stop, move |hv, vm| {
            Box::pin(async move { hv.stop(vm, timeout).await })
        })
        .await
    }

    /// Stops a VM at once.
    pub async fn kill_vm(&self, key: impl Into<VmRef>) -> Result<JobHandle<()>> {
        self.halt_vm(key.into(), VmOp::Kill, |hv, vm| {
            Box::pin(async move { hv.kill(vm).await })
        })
        .await
    }

    /// Stops or kills a VM: claims it (`stopping`, a conditional write, so a racing
    /// start or stop is refused) before acting on its server, then records it stopped.
    async fn halt_vm<F>(&self, key: VmRef, op: VmOp, halt: F) -> Result<JobHandle<()>>
    where
        F: for<'a> FnOnce(&'a dyn Hypervisor, VmId) -> futures::future::BoxFuture<'a, Result<()>>
            + Send
            + 'static,
    {
        let vm = self.find_vm(key)?;
        check_op(&vm, op)?;
        let verb = op.as_str();
        let job = JobSpec::new(
            &format!("vm.{verb}"),
            format!("{verb} vm {}", vm.spec.name),
            Some(("vm", vm.id.to_string())),
            self.initiator(),
            &[verb, "record"],
        );
        let mgr = self.clone();
        self.spawn(job, move |ctx| async move {
            ctx.step(verb, async {
                mgr.apply(&ctx, verb, |c| {
                    let v = c.vm(vm.id)?;
                    check_op(&v.value, op)?;
                    let mut nv = v.value.clone();
                    nv.state = VmState::Stopping;
                    Ok(vec![Change::update(v, nv, Doc::Vm)])
                })
                .await?;
                let Some(server) = vm.server else {
                    return Ok(());
                };
                let hv = mgr.wiring().hypervisor(server).await?;
                match hv.state(vm.id).await {
                    Ok(s) if s.is_active() => halt(&*hv, vm.id).await?,
                    Ok(_) | Err(Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
                match hv.undefine(vm.id).await {
                    Ok(()) | Err(Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
                for i in 0..vm.spec.nics.len() {
                    mgr.wiring().network.unplug(server, vm.id, i).await?;
                }
                Ok(())
            })
            .await?;
            ctx.step(
                "record",
                mgr.set_vm(&ctx, "record", vm.id, |v| {
                    v.state = VmState::Stopped;
                    Ok(())
                }),
            )
            .await
        })
        .await
    }

    /// Pauses a running VM.
    pub async fn pause_vm(&self, key: impl Into<VmRef>) -> Result<JobHandle<()>> {
        self.pause_or_resume(key.into(), true).await
    }

    /// Resumes a paused VM.
    pub async fn resume_vm(&self, key: impl Into<VmRef>) -> Result<JobHandle<()>> {
        self.pause_or_resume(key.into(), false).await
    }

    async fn pause_or_resume(&self, key: VmRef, pause: bool) -> Result<JobHandle<()>> {
        let vm = self.find_vm(key)?;
        let (op, to) = if pause {
            (VmOp::Pause, VmState::Paused)
        } else {
            (VmOp::Resume, VmState::Running)
        };
        check_op(&vm, op)?;
        let verb = op.as_str();
        let server = vm.server.ok_or_else(|| wrong_state(&vm, verb))?;
        let job = JobSpec::new(
            &format!("vm.{verb}"),
            format!("{verb} vm {}", vm.spec.name),
            Some(("vm", vm.id.to_string())),
            self.initiator(),
            &[verb],
        );
        let mgr = self.clone();
        self.spawn(job, move |ctx| async move {
            let hv = mgr.wiring().hypervisor(server).await?;
            ctx.step(verb, async {
                if pause {
                    hv.pause(vm.id).await?
                } else {
                    hv.resume(vm.id).await?
                }
                mgr.set_vm(&ctx, verb, vm.id, |v| {
                    v.state = to;
                    Ok(())
                })
                .await
            })
            .await
        })
        .await
    }

    /// Deletes a stopped VM's record (its disks stay in their repository).
    pub async fn delete_vm(&self, key: impl Into<VmRef>) -> Result<JobHandle<()>> {
        let vm = self.find_vm(key)?;
        check_op(&vm, VmOp::Delete)?;
        self.record_job(
            "vm.delete",
            format!("delete vm {}", vm.spec.name),
            ("vm", vm.id.to_string()),
            (),
            move |c| {
                let v = c.vm(vm.id)?;
                check_op(&v.value, VmOp::Delete)?;
                Ok(vec![Change::delete(v, Doc::Vm)])
            },
        )
        .await
    }

    /// Live-migrates a running VM to `to`, or to the server placement chooses among the
    /// others. The job's result is the destination.
    pub async fn migrate_vm(
        &self,
        key: impl Into<VmRef>,
        to: Option<ServerRef>,
    ) -> Result<JobHandle<ServerId>> {
        let vm = self.find_vm(key)?;
        check_op(&vm, VmOp::Migrate)?;
        let source = vm.server.ok_or_else(|| wrong_state(&vm, "migrate"))?;
        let wanted = match to {
            Some(k) => {
                let dest = self.find_server(k)?;
                if dest.id == source {
                    return Err(Error::invalid(
                        "migrate.to",
                        format!(
                            "vm {} already runs on server {}: name another server",
                            vm.spec.name, dest.name
                        ),
                    ));
                }
                if dest.pool != Some(vm.pool) {
                    return Err(Error::invalid(
                        "migrate.to",
                        format!(
                            "server {} is not in the pool of vm {}",
                            dest.name, vm.spec.name
                        ),
                    ));
                }
                Some(dest.id)
            }
            None => None,
        };
        let job = JobSpec::new(
            "vm.migrate",
            format!("migrate vm {}", vm.spec.name),
            Some(("vm", vm.id.to_string())),
            self.initiator(),
            &["place", "prepare", "send", "record"],
        );
        let mgr = self.clone();
        self.spawn(job, move |ctx| async move {
            let plan = mgr.with_disks(vm).await?;
            let vm = &plan.vm;
            let dest = ctx
                .step("place", async {
                    let c = mgr.wiring().index_read();
                    let mut view = c
                        .view(vm.pool)
                        .cloned()
                        .ok_or_else(|| Error::not_found("pool", vm.pool))?;
                    // The VM leaves its source: it must not count there, nor may it stay.
                    view.vms.retain(|v| v.id != vm.id);
                    for s in &mut view.servers {
                        if s.id == source || wanted.is_some_and(|w| w != s.id) {
                            s.state = crate::model::ServerState::Maintenance;
                        }
                    }
                    mgr.inner
                        .placement
                        .place(&view, &request(&c, vm, plan.repos()))
                })
                .await?;
            let src_hv = mgr.wiring().hypervisor(source).await?;
            let dest_hv = mgr.wiring().hypervisor(dest).await?;
            let target = ctx
                .step("prepare", async {
                    let config = mgr.vm_config(&plan, dest).await?;
                    ctx.record_undo(
                        "prepare",
                        Undo::UndefineVm {
                            server: dest,
                            vm: vm.id,
                        },
                    )
                    .await?;
                    dest_hv.migrate_prepare(&config).await
                })
                .await?;
            ctx.step("send", src_hv.migrate_send(vm.id, &target))
                .await?;
            ctx.step(
                "record",
                mgr.set_vm(&ctx, "record", vm.id, |v| {
                    v.server = Some(dest);
                    v.last_moved = Some(Timestamp::now());
                    Ok(())
                }),
            )
            .await?;
            Ok(dest)
        })
        .await
    }

    /// Sends a key/value message to a running VM's guest (key ≤ 256 bytes, value ≤ 8 KiB).
    pub async fn send_message(
        &self,
        key: impl Into<VmRef>,
        msg_key: &str,
        value: &[u8],
    ) -> Result<()> {
        crate::hypervisor::guest_message::validate(msg_key, value)?;
        let (vm, hv) = self.running_vm(key.into(), "send a message").await?;
        hv.guest_send(vm.id, msg_key, value).await?;
        self.log_event(
            "vm",
            vm.id.to_string(),
            "vm.message",
            Outcome::Success,
            format!("sent key {msg_key:?} ({} bytes)", value.len()),
        )
        .await
    }

    /// The value a VM's guest last published under `msg_key`. A VM sees only its own keys.
    pub async fn read_message(
        &self,
        key: impl Into<VmRef>,
        msg_key: &str,
    ) -> Result<Option<Vec<u8>>> {
        crate::hypervisor::guest_message::validate(msg_key, &[])?;
        let (vm, hv) = self.running_vm(key.into(), "read a message").await?;
        hv.guest_read(vm.id, msg_key).await
    }

    /// The VM's console output so far.
    pub async fn console(&self, key: impl Into<VmRef>) -> Result<Vec<u8>> {
        let vm = self.find_vm(key)?;
        let server = vm
            .server
            .ok_or_else(|| wrong_state(&vm, "read the console"))?;
        self.wiring()
            .hypervisor(server)
            .await?
            .console_buffer(vm.id)
            .await
    }

    async fn running_vm(
        &self,
        key: VmRef,
        op: &str,
    ) -> Result<(Vm, std::sync::Arc<dyn Hypervisor>)> {
        let vm = self.find_vm(key)?;
        let server = vm
            .server
            .filter(|_| vm.state == VmState::Running)
            .ok_or_else(|| wrong_state(&vm, op))?;
        let hv = self.wiring().hypervisor(server).await?;
        Ok((vm, hv))
    }

    /// Waits until a VM reaches `state` (observed through backend events), at most
    /// `timeout`.
    pub async fn wait_vm_state(&self, id: VmId, state: VmState, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.vm_state(id)? == state {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("vm {id} to become {state}"),
                    after: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A VM and the records of its volumes, in the order of its disks.
struct VmWithDisks {
    vm: Vm,
    volumes: Vec<Volume>,
}

impl VmWithDisks {
    /// The repositories its disks live in, each once: placement needs servers that reach
    /// all of them.
    fn repos(&self) -> Vec<crate::id::RepoId> {
        let mut repos = Vec::new();
        for v in &self.volumes {
            if !repos.contains(&v.repo) {
                repos.push(v.repo);
            }
        }
        repos
    }
}
