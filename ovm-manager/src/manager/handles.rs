//! Typed handles: `mgr.vm(id).start()`, `mgr.pool(id).servers()`.

use super::{Manager, PoolSpec, ServerRef, ServerSpec};
use crate::Result;
use crate::id::{PoolId, ServerId, VmId};
use crate::job::JobHandle;
use crate::model::{Server, ServerPool, Vm, VmSpec, VmState};
use crate::policy::Explanation;

/// A VM of a manager. Getters read the manager's index; operations return jobs.
#[derive(Debug, Clone)]
pub struct VmHandle {
    mgr: Manager,
    id: VmId,
}

impl VmHandle {
    /// The VM's id.
    pub fn id(&self) -> VmId {
        self.id
    }

    /// The VM as recorded.
    pub fn info(&self) -> Result<Vm> {
        self.mgr.find_vm(self.id)
    }

    /// Its state as recorded.
    pub fn state(&self) -> Result<VmState> {
        self.mgr.vm_state(self.id)
    }

    /// True while its server does not answer: the recorded state is the last one known.
    pub fn state_is_stale(&self) -> Result<bool> {
        self.mgr.vm_state_is_stale(self.id)
    }

    /// Starts it (placed by the pool's policy).
    pub async fn start(&self) -> Result<JobHandle<ServerId>> {
        self.mgr.start_vm(self.id).await
    }

    /// Why each server would or would not take it.
    pub async fn explain_start(&self) -> Result<Explanation> {
        self.mgr.explain_start(self.id).await
    }

    /// Stops it gracefully.
    pub async fn stop(&self) -> Result<JobHandle<()>> {
        self.mgr.stop_vm(self.id).await
    }

    /// Kills it.
    pub async fn kill(&self) -> Result<JobHandle<()>> {
        self.mgr.kill_vm(self.id).await
    }

    /// Pauses it.
    pub async fn pause(&self) -> Result<JobHandle<()>> {
        self.mgr.pause_vm(self.id).await
    }

    /// Resumes it.
    pub async fn resume(&self) -> Result<JobHandle<()>> {
        self.mgr.resume_vm(self.id).await
    }

    /// Live-migrates it.
    pub async fn migrate(&self, to: Option<ServerRef>) -> Result<JobHandle<ServerId>> {
        self.mgr.migrate_vm(self.id, to).await
    }

    /// Deletes it.
    pub async fn delete(&self) -> Result<JobHandle<()>> {
        self.mgr.delete_vm(self.id).await
    }

    /// Sends a guest message.
    pub async fn send_message(&self, key: &str, value: &[u8]) -> Result<()> {
        self.mgr.send_message(self.id, key, value).await
    }

    /// Reads what the guest published under `key`.
    pub async fn read_message(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.mgr.read_message(self.id, key).await
    }

    /// Console output so far.
    pub async fn console(&self) -> Result<Vec<u8>> {
        self.mgr.console(self.id).await
    }
}

/// A pool of a manager.
#[derive(Debug, Clone)]
pub struct PoolHandle {
    mgr: Manager,
    id: PoolId,
}

impl PoolHandle {
    /// The pool's id.
    pub fn id(&self) -> PoolId {
        self.id
    }

    /// The pool as recorded.
    pub fn info(&self) -> Result<ServerPool> {
        self.mgr.find_pool(self.id)
    }

    /// Its servers.
    pub fn servers(&self) -> Vec<Server> {
        self.mgr
            .servers()
            .into_iter()
            .filter(|s| s.pool == Some(self.id))
            .collect()
    }

    /// Its VMs.
    pub fn vms(&self) -> Vec<Vm> {
        self.mgr
            .vms()
            .into_iter()
            .filter(|v| v.pool == self.id)
            .collect()
    }

    /// Adds a server.
    pub async fn add_server(&self, spec: ServerSpec) -> Result<JobHandle<ServerId>> {
        self.mgr.add_server(self.id, spec).await
    }

    /// Defines a VM.
    pub async fn create_vm(&self, spec: VmSpec) -> Result<JobHandle<VmId>> {
        self.mgr.create_vm(self.id, spec).await
    }

    /// Deletes the (empty) pool.
    pub async fn delete(&self) -> Result<JobHandle<()>> {
        self.mgr.delete_pool(self.id).await
    }
}

/// A server of a manager.
#[derive(Debug, Clone)]
pub struct ServerHandle {
    mgr: Manager,
    id: ServerId,
}

impl ServerHandle {
    /// The server's id.
    pub fn id(&self) -> ServerId {
        self.id
    }

    /// The server as recorded.
    pub fn info(&self) -> Result<Server> {
        self.mgr.find_server(self.id)
    }

    /// VMs recorded on it.
    pub fn vms(&self) -> Vec<Vm> {
        self.mgr
            .vms()
            .into_iter()
            .filter(|v| v.server == Some(self.id) && v.state.is_active())
            .collect()
    }

    /// Enters or leaves maintenance.
    pub async fn set_maintenance(&self, on: bool) -> Result<JobHandle<()>> {
        self.mgr.set_maintenance(self.id, on).await
    }
}

impl Manager {
    /// A handle on a VM (no lookup until used).
    pub fn vm(&self, id: VmId) -> VmHandle {
        VmHandle {
            mgr: self.clone(),
            id,
        }
    }

    /// A handle on a pool.
    pub fn pool(&self, id: PoolId) -> PoolHandle {
        PoolHandle {
            mgr: self.clone(),
            id,
        }
    }

    /// A handle on a server.
    pub fn server(&self, id: ServerId) -> ServerHandle {
        ServerHandle {
            mgr: self.clone(),
            id,
        }
    }

    /// Creates a pool and waits for it: a shortcut for scripts and tests.
    pub async fn create_pool_now(&self, spec: PoolSpec) -> Result<PoolHandle> {
        let id = self.create_pool(spec).await?.join().await?;
        Ok(self.pool(id))
    }
}
