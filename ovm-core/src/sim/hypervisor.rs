//! The simulated hypervisor: VMs as records, with capacity accounting, guest messages,
//! console lines, save/restore, live migration between simulated hosts in one process,
//! and fault injection.

use crate::sync::lock;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::faults::Faults;
use crate::hypervisor::{
    Capabilities, ConsoleStream, HostInfo, Hypervisor, MigrationTarget, VmConfig, VmEvent,
    VmEventKind, VmStats, guest_message,
};
use crate::id::{ServerId, VmId};
use crate::model::{DomainType, HypervisorKind, VmState};
use crate::{Error, Result};

const BACKEND: &str = "sim";

/// Size and name of a simulated host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimHostConfig {
    /// Host name.
    pub hostname: String,
    /// CPUs.
    pub cpus: u32,
    /// Memory, MiB.
    pub memory_mib: u64,
}

impl Default for SimHostConfig {
    fn default() -> Self {
        SimHostConfig {
            hostname: "sim".into(),
            cpus: 16,
            memory_mib: 64 * 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SimVm {
    config: VmConfig,
    state: VmState,
    /// Values the guest published (the simulated guest agent answers each message by
    /// publishing `echo:<value>` under the same key, as the KVM test guest does).
    guest_kv: HashMap<String, Vec<u8>>,
    console: Vec<u8>,
    #[serde(skip)]
    started: Option<Instant>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SimState {
    vms: HashMap<VmId, SimVm>,
}

/// A simulated hypervisor host.
pub struct SimHypervisor {
    config: SimHostConfig,
    state: Mutex<SimState>,
    events: broadcast::Sender<VmEvent>,
    faults: Faults,
    /// Where the state is kept between processes (the CLI), if anywhere.
    state_file: Option<PathBuf>,
    /// Incoming migrations prepared on this host.
    incoming: Mutex<HashMap<VmId, VmConfig>>,
    address: String,
}

impl std::fmt::Debug for SimHypervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHypervisor")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Simulated hosts of this process by migration address, so one can send VMs to another.
fn registry() -> &'static Mutex<HashMap<String, Weak<SimHypervisor>>> {
    static REG: OnceLock<Mutex<HashMap<String, Weak<SimHypervisor>>>> = OnceLock::new();
    REG.get_or_init(Default::default)
}

impl SimHypervisor {
    /// A host with the given size, state in memory only.
    pub fn new(config: SimHostConfig) -> Arc<Self> {
        Self::build(config, None, SimState::default())
    }

    /// A host whose VMs persist in `path` (JSON), so that separate processes (CLI calls)
    /// see the same simulated host.
    pub fn with_state_file(config: SimHostConfig, path: impl Into<PathBuf>) -> Result<Arc<Self>> {
        let path = path.into();
        let state = {
            let _lock = lock_state_file(&path)?;
            read_state(&path)?.unwrap_or_default()
        };
        Ok(Self::build(config, Some(path), state))
    }

    fn build(config: SimHostConfig, state_file: Option<PathBuf>, state: SimState) -> Arc<Self> {
        let address = format!("sim://{}/{}", config.hostname, uuid::Uuid::new_v4());
        let (events, _) = broadcast::channel(1024);
        let hv = Arc::new(SimHypervisor {
            config,
            state: Mutex::new(state),
            events,
            faults: Faults::default(),
            state_file,
            incoming: Mutex::new(HashMap::new()),
            address: address.clone(),
        });
        let mut reg = lock(registry());
        reg.retain(|_, w| w.strong_count() > 0);
        reg.insert(address, Arc::downgrade(&hv));
        hv
    }

    /// The fault injector of this host.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The host's size.
    pub fn config(&self) -> &SimHostConfig {
        &self.config
    }

    /// Simulates a host crash: every VM is gone and operations fail until `power_on`.
    pub fn crash(&self) {
        let ids: Vec<VmId> = {
            let mut st = self.lock();
            let ids = st.vms.keys().copied().collect();
            st.vms.clear();
            ids
        };
        self.faults.set_down(true);
        for vm in ids {
            self.emit(
                vm,
                VmEventKind::Crashed {
                    reason: "host crashed".into(),
                },
            );
        }
    }

    /// Brings a crashed or powered-off host back (empty).
    pub fn power_on(&self) {
        self.faults.set_down(false);
    }

    /// Simulates the guest crashing.
    pub fn crash_guest(&self, vm: VmId) -> Result<()> {
        self.with_vm(vm, |v| {
            v.state = VmState::Crashed;
            Ok(())
        })?;
        self.emit(
            vm,
            VmEventKind::Crashed {
                reason: "guest crashed (simulated)".into(),
            },
        );
        Ok(())
    }

    /// Simulates the guest powering itself off.
    pub fn guest_poweroff(&self, vm: VmId) -> Result<()> {
        self.with_vm(vm, |v| {
            v.state = VmState::Stopped;
            Ok(())
        })?;
        self.emit(vm, VmEventKind::PoweredOff);
        Ok(())
    }

    /// The host's state, for one operation. A host persisted in a file is shared with
    /// other processes: the file is locked (`flock`) for the operation, read first and
    /// written back after a change, so that two processes never overwrite each other's
    /// VMs.
    fn lock(&self) -> StateGuard<'_> {
        let mut state = lock(&self.state);
        let file_lock = self.state_file.as_deref().and_then(|path| {
            let lock = lock_state_file(path)
                .map_err(|e| tracing::error!("sim: cannot lock {}: {e}", path.display()))
                .ok()?;
            match read_state(path) {
                Ok(Some(on_disk)) => merge_from_disk(&mut state, on_disk),
                Ok(None) => {}
                Err(e) => tracing::error!("sim: {e}"),
            }
            Some((path, lock))
        });
        StateGuard {
            state,
            file: file_lock,
            dirty: false,
        }
    }

    fn emit(&self, vm: VmId, kind: VmEventKind) {
        // No subscribers is fine.
        let _ = self.events.send(VmEvent { vm, kind });
    }

    fn with_vm<T>(&self, vm: VmId, f: impl FnOnce(&mut SimVm) -> Result<T>) -> Result<T> {
        let mut st = self.lock();
        let v = st
            .vms
            .get_mut(&vm)
            .ok_or_else(|| Error::not_found("vm", vm))?;
        f(v)
    }

    fn used_memory(st: &SimState) -> u64 {
        st.vms
            .values()
            .filter(|v| v.state.is_active())
            .map(|v| v.config.spec.memory_mib)
            .sum()
    }

    fn wrong_state(vm: VmId, state: VmState, op: &str) -> Error {
        Error::InvalidState {
            kind: "vm",
            id: vm.to_string(),
            state: state.to_string(),
            op: op.into(),
        }
    }
}

/// A host's state during one operation (see [`SimHypervisor::lock`]).
struct StateGuard<'a> {
    state: std::sync::MutexGuard<'a, SimState>,
    /// The state file and its lock, for a persisted host.
    file: Option<(&'a Path, std::fs::File)>,
    /// Changed: written back when the guard goes.
    dirty: bool,
}

impl std::ops::Deref for StateGuard<'_> {
    type Target = SimState;
    fn deref(&self) -> &SimState {
        &self.state
    }
}

impl std::ops::DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut SimState {
        self.dirty = true;
        &mut self.state
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        let Some((path, _lock)) = &self.file else {
            return;
        };
        if !self.dirty {
            return;
        }
        let bytes = match serde_json::to_vec(&*self.state) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("sim: cannot encode state: {e}");
                return;
            }
        };
        let tmp = path.with_extension("tmp");
        if let Err(e) = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path)) {
            tracing::error!("sim: cannot save state to {}: {e}", path.display());
        }
        // The lock goes with the file, after the rename.
    }
}

/// Locks a host's state file against other processes (held until the file is dropped).
fn lock_state_file(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path.with_extension("lock"))?;
    lock.lock()?;
    Ok(lock)
}

/// A host's state as its file holds it (`None`: no file yet).
fn read_state(path: &Path) -> Result<Option<SimState>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::backend(
                BACKEND,
                format!("{}: damaged simulator state: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Takes what another process may have changed, keeping what only this process knows
/// (when its VMs started).
fn merge_from_disk(state: &mut SimState, mut on_disk: SimState) {
    for (id, v) in on_disk.vms.iter_mut() {
        if let Some(mine) = state.vms.get(id)
            && mine.state.is_active() == v.state.is_active()
        {
            v.started = mine.started;
        }
    }
    *state = on_disk;
}

#[async_trait]
impl Hypervisor for SimHypervisor {
    fn backend(&self) -> &str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            domain_types: vec![
                DomainType::Hvm,
                DomainType::PvHvm,
                DomainType::Pv,
                DomainType::Pvh,
            ],
            pause: true,
            console: true,
            guest_messages: true,
            live_migration: true,
            snapshot: true,
            hotplug: true,
            test_guest: true,
            max_vcpus: 256,
        }
    }

    async fn host_info(&self) -> Result<HostInfo> {
        self.faults.enter(BACKEND, "host_info").await?;
        let used = Self::used_memory(&self.lock());
        Ok(HostInfo {
            hostname: self.config.hostname.clone(),
            hypervisor: HypervisorKind::Sim,
            version: env!("CARGO_PKG_VERSION").into(),
            cpus: self.config.cpus,
            memory_mib: self.config.memory_mib,
            free_memory_mib: self.config.memory_mib.saturating_sub(used),
        })
    }

    async fn define(&self, config: &VmConfig) -> Result<()> {
        self.faults.enter(BACKEND, "define").await?;
        config.spec.validate()?;
        if config.spec.memory_mib > self.config.memory_mib {
            return Err(Error::capacity(format!(
                "vm {} needs {} MiB, host {} has {} MiB",
                config.spec.name,
                config.spec.memory_mib,
                self.config.hostname,
                self.config.memory_mib
            )));
        }
        {
            let mut st = self.lock();
            if st.vms.contains_key(&config.id) {
                return Err(Error::AlreadyExists {
                    kind: "vm",
                    id: config.id.to_string(),
                });
            }
            st.vms.insert(
                config.id,
                SimVm {
                    config: config.clone(),
                    state: VmState::Stopped,
                    guest_kv: HashMap::new(),
                    console: Vec::new(),
                    started: None,
                },
            );
        }
        Ok(())
    }

    async fn undefine(&self, vm: VmId) -> Result<()> {
        self.faults.enter(BACKEND, "undefine").await?;
        {
            let mut st = self.lock();
            let v = st.vms.get(&vm).ok_or_else(|| Error::not_found("vm", vm))?;
            if v.state.is_active() {
                return Err(Self::wrong_state(vm, v.state, "undefine"));
            }
            st.vms.remove(&vm);
        }
        Ok(())
    }

    async fn start(&self, vm: VmId) -> Result<()> {
        self.faults.enter(BACKEND, "start").await?;
        let name = {
            let mut st = self.lock();
            let used = Self::used_memory(&st);
            let v = st
                .vms
                .get_mut(&vm)
                .ok_or_else(|| Error::not_found("vm", vm))?;
            if v.state.is_active() {
                return Err(Self::wrong_state(vm, v.state, "start"));
            }
            if used + v.config.spec.memory_mib > self.config.memory_mib {
                return Err(Error::capacity(format!(
                    "vm {} needs {} MiB, host {} has {} MiB free",
                    v.config.spec.name,
                    v.config.spec.memory_mib,
                    self.config.hostname,
                    self.config.memory_mib.saturating_sub(used)
                )));
            }
            v.state = VmState::Running;
            v.started = Some(Instant::now());
            let line = format!("ovm sim guest {}: booted\n", v.config.spec.name);
            v.console.extend_from_slice(line.as_bytes());
            v.config.spec.name.clone()
        };
        tracing::debug!(vm = %vm, name, "sim: started");
        self.emit(vm, VmEventKind::Started);
        Ok(())
    }

    async fn stop(&self, vm: VmId, _timeout: Duration) -> Result<()> {
        self.faults.enter(BACKEND, "stop").await?;
        self.with_vm(vm, |v| {
            if !v.state.is_active() {
                return Err(Self::wrong_state(vm, v.state, "stop"));
            }
            v.state = VmState::Stopped;
            v.console
                .extend_from_slice(b"ovm sim guest: shutting down\n");
            Ok(())
        })?;
        self.emit(vm, VmEventKind::Stopped);
        Ok(())
    }

    async fn kill(&self, vm: VmId) -> Result<()> {
        self.faults.enter(BACKEND, "kill").await?;
        self.with_vm(vm, |v| {
            v.state = VmState::Stopped;
            Ok(())
        })?;
        self.emit(vm, VmEventKind::Stopped);
        Ok(())
    }

    async fn pause(&self, vm: VmId) -> Result<()> {
        self.faults.enter(BACKEND, "pause").await?;
        self.with_vm(vm, |v| match v.state {
            VmState::Running => {
                v.state = VmState::Paused;
                Ok(())
            }
            s => Err(Self::wrong_state(vm, s, "pause")),
        })?;
        self.emit(vm, VmEventKind::Paused);
        Ok(())
    }

    async fn resume(&self, vm: VmId) -> Result<()> {
        self.faults.enter(BACKEND, "resume").await?;
        self.with_vm(vm, |v| match v.state {
            VmState::Paused => {
                v.state = VmState::Running;
                Ok(())
            }
            s => Err(Self::wrong_state(vm, s, "resume")),
        })?;
        self.emit(vm, VmEventKind::Resumed);
        Ok(())
    }

    async fn state(&self, vm: VmId) -> Result<VmState> {
        self.faults.enter(BACKEND, "state").await?;
        self.lock()
            .vms
            .get(&vm)
            .map(|v| v.state)
            .ok_or_else(|| Error::not_found("vm", vm))
    }

    async fn list(&self) -> Result<Vec<(VmId, VmState)>> {
        self.faults.enter(BACKEND, "list").await?;
        Ok(self
            .lock()
            .vms
            .iter()
            .map(|(id, v)| (*id, v.state))
            .collect())
    }

    async fn stats(&self, vm: VmId) -> Result<VmStats> {
        self.faults.enter(BACKEND, "stats").await?;
        let st = self.lock();
        let v = st.vms.get(&vm).ok_or_else(|| Error::not_found("vm", vm))?;
        let uptime = v
            .started
            .filter(|_| v.state.is_active())
            .map(|s| s.elapsed())
            .unwrap_or_default();
        Ok(VmStats {
            cpu_time_ns: 0,
            memory_mib: v.config.spec.memory_mib,
            host_rss_bytes: 0,
            uptime_ms: uptime.as_millis() as u64,
        })
    }

    async fn console_buffer(&self, vm: VmId) -> Result<Vec<u8>> {
        self.lock()
            .vms
            .get(&vm)
            .map(|v| v.console.clone())
            .ok_or_else(|| Error::not_found("vm", vm))
    }

    async fn console_stream(&self, vm: VmId) -> Result<ConsoleStream> {
        let buf = self.console_buffer(vm).await?;
        Ok(Box::pin(futures::stream::iter(std::iter::once(buf))))
    }

    async fn guest_send(&self, vm: VmId, key: &str, value: &[u8]) -> Result<()> {
        guest_message::validate(key, value)?;
        self.faults.enter(BACKEND, "guest_send").await?;
        self.with_vm(vm, |v| {
            if v.state != VmState::Running {
                return Err(Self::wrong_state(vm, v.state, "send a guest message"));
            }
            // Like the KVM test guest's `kv` workload: answer under the same key.
            v.guest_kv
                .insert(key.to_string(), [b"echo:".as_slice(), value].concat());
            Ok(())
        })?;
        self.emit(
            vm,
            VmEventKind::GuestMessage {
                key: key.to_string(),
            },
        );
        Ok(())
    }

    async fn guest_read(&self, vm: VmId, key: &str) -> Result<Option<Vec<u8>>> {
        guest_message::validate(key, &[])?;
        let st = self.lock();
        let v = st.vms.get(&vm).ok_or_else(|| Error::not_found("vm", vm))?;
        Ok(v.guest_kv.get(key).cloned())
    }

    async fn save(&self, vm: VmId, path: &Path) -> Result<()> {
        self.faults.enter(BACKEND, "save").await?;
        let saved = {
            let mut st = self.lock();
            let v = st.vms.get(&vm).ok_or_else(|| Error::not_found("vm", vm))?;
            if !v.state.is_active() {
                return Err(Self::wrong_state(vm, v.state, "save"));
            }
            let bytes = serde_json::to_vec(v)?;
            std::fs::write(path, bytes)?;
            let v = st
                .vms
                .get_mut(&vm)
                .ok_or_else(|| Error::not_found("vm", vm))?;
            v.state = VmState::Stopped;
            v.config.spec.name.clone()
        };
        tracing::debug!(vm = %vm, saved, "sim: saved");
        self.emit(vm, VmEventKind::Stopped);
        Ok(())
    }

    async fn restore(&self, config: &VmConfig, path: &Path) -> Result<()> {
        self.faults.enter(BACKEND, "restore").await?;
        let bytes = std::fs::read(path)?;
        let mut v: SimVm = serde_json::from_slice(&bytes).map_err(|e| {
            Error::invalid(
                "restore.path",
                format!("{}: not a sim save file: {e}", path.display()),
            )
        })?;
        if v.config.id != config.id {
            return Err(Error::invalid(
                "restore.path",
                format!(
                    "{} holds vm {}, not {}",
                    path.display(),
                    v.config.id,
                    config.id
                ),
            ));
        }
        v.state = VmState::Running;
        v.started = Some(Instant::now());
        self.lock().vms.insert(config.id, v);
        self.emit(config.id, VmEventKind::Started);
        Ok(())
    }

    async fn migrate_prepare(&self, config: &VmConfig) -> Result<MigrationTarget> {
        self.faults.enter(BACKEND, "migrate_prepare").await?;
        if self
            .lock()
            .vms
            .get(&config.id)
            .is_some_and(|v| v.state.is_active())
        {
            return Err(Error::AlreadyExists {
                kind: "vm",
                id: config.id.to_string(),
            });
        }
        lock(&self.incoming).insert(config.id, config.clone());
        Ok(MigrationTarget {
            server: ServerId::from_u128(0),
            address: self.address.clone(),
        })
    }

    async fn migrate_send(&self, vm: VmId, target: &MigrationTarget) -> Result<()> {
        self.faults.enter(BACKEND, "migrate_send").await?;
        let dest = lock(registry())
            .get(&target.address)
            .and_then(Weak::upgrade)
            .ok_or_else(|| {
                Error::backend(BACKEND, format!("no simulated host at {}", target.address))
            })?;
        if lock(&dest.incoming).remove(&vm).is_none() {
            return Err(Error::InvalidState {
                kind: "vm",
                id: vm.to_string(),
                state: "not prepared on the destination".into(),
                op: "migrate".into(),
            });
        }
        let mut moving = {
            let mut st = self.lock();
            let v = st.vms.get(&vm).ok_or_else(|| Error::not_found("vm", vm))?;
            if !matches!(v.state, VmState::Running | VmState::Paused) {
                return Err(Self::wrong_state(vm, v.state, "migrate"));
            }
            st.vms
                .remove(&vm)
                .ok_or_else(|| Error::not_found("vm", vm))?
        };
        moving.started.get_or_insert_with(Instant::now);
        dest.lock().vms.insert(vm, moving);
        self.emit(vm, VmEventKind::Stopped);
        dest.emit(vm, VmEventKind::Started);
        Ok(())
    }

    async fn set_vcpus(&self, vm: VmId, vcpus: u32) -> Result<()> {
        self.faults.enter(BACKEND, "set_vcpus").await?;
        self.with_vm(vm, |v| {
            if vcpus == 0 || vcpus > self.config.cpus.max(1) * 4 {
                return Err(Error::invalid(
                    "vm.vcpus",
                    format!("{vcpus} vCPUs on a host of {} CPUs", self.config.cpus),
                ));
            }
            v.config.spec.vcpus = vcpus;
            Ok(())
        })
    }

    async fn set_memory(&self, vm: VmId, memory_mib: u64) -> Result<()> {
        self.faults.enter(BACKEND, "set_memory").await?;
        self.with_vm(vm, |v| {
            if memory_mib == 0 || memory_mib > v.config.spec.max_memory_mib {
                return Err(Error::invalid(
                    "vm.memory_mib",
                    format!(
                        "{memory_mib} MiB is outside 1..={} (max_memory_mib)",
                        v.config.spec.max_memory_mib
                    ),
                ));
            }
            v.config.spec.memory_mib = memory_mib;
            Ok(())
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<VmEvent> {
        self.events.subscribe()
    }
}
