//! `KvmHypervisor`: `ovm_core::Hypervisor` on this host's /dev/kvm, one `ovm-vmm` process
//! per running VM.
//!
//! Each VM has a directory (`vm_dir`) with its `config.json`, control socket `api.sock`
//! and `console.log`. `start` spawns `ovm-vmm` there and returns once its vCPUs run; a
//! supervisor task reads the process's event lines (console output, guest messages, exit)
//! and turns its end into VM states and events. `kill` is SIGKILL to the process, so a
//! guest that spins or floods the VMM is always killable.
//!
//! The `ovm-vmm` binary is found through `$OVM_VMM_BIN`, then next to the current
//! executable (and one directory up, which is where cargo puts binaries relative to test
//! and bench executables in `deps/`). `KvmOptions::vmm_binary` overrides both.
//!
//! Two process models (`KvmOptions::detached`):
//!
//! - attached (the default, `KvmHypervisor::with_options`): each VMM is a child that dies
//!   with the thread that started it (`PR_SET_PDEATHSIG`) and reports on its standard
//!   output. For tests, benchmarks and programs that own their VMs.
//! - detached (`KvmHypervisor::open`, `with_run_dir`): the state directory is a *run
//!   directory*; each VMM runs in its own session, owned by no one (`ovm-vmm --detach`),
//!   and outlives the process that started it, as VMs outlive a manager. It is followed
//!   over its control socket (`events` subscription) and a pidfd. Opening a run directory
//!   adopts the VMMs an earlier process left running there (checked through their sockets:
//!   alive, speaking this control protocol's major version, and answering as the VM the
//!   directory is named after) and removes the directories of those that have ended.
//!
//! A VMM that announces another major version of the control protocol (or none) is
//! refused: killed if this process started it (the start fails), left alone otherwise.
//!
//! The parts: `options` (how the backend runs, finding `ovm-vmm`), `translate`
//! (`VmConfig` → `VmmConfig`), `spawn` (starting VMM processes), `supervise` (following
//! one to its end), `adopt` (taking over detached VMMs), `run_dir` (the VM directory's
//! files and locks), `host` (what the host offers); the VMM is talked to with
//! [`crate::control`]. This file keeps the VM table and the `Hypervisor` implementation.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ovm_core::hypervisor::{
    Capabilities, ConsoleStream, HostInfo, Hypervisor, VmConfig, VmEvent, VmEventKind, VmStats,
    guest_message,
};
use ovm_core::model::{DomainType, HypervisorKind, VmState};
use ovm_core::{Error, Result, VmId};
use tokio::sync::{broadcast, watch};

use crate::control::{ClientError, ErrorCode, Request};
use crate::devices::lock;
use crate::vmm::{MAX_VCPUS, VmmConfig};

mod adopt;
mod host;
mod options;
mod run_dir;
mod spawn;
mod supervise;
mod translate;

pub use host::kvm_usable;
pub use options::{KvmOptions, RebootPolicy, VMM_BIN_ENV, find_vmm_binary};

use run_dir::{lock_vm_dir, private_dir};
use supervise::RunningVm;

const BACKEND: &str = "kvm";
const CONSOLE_KEEP_BYTES: usize = 64 * 1024;

/// What a VM's VMMs have said, kept for readers: the console's last bytes (and a stream
/// of new ones) and what the guest published. Shared with the supervisor.
#[derive(Clone)]
struct VmOutput {
    console: Arc<Mutex<VecDeque<u8>>>,
    console_tx: broadcast::Sender<Vec<u8>>,
    published: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

impl VmOutput {
    /// Output starting with the last [`CONSOLE_KEEP_BYTES`] of `console`, streamed to up
    /// to `stream_capacity` chunks behind.
    fn new(stream_capacity: usize, console: &[u8]) -> Self {
        let skip = console.len().saturating_sub(CONSOLE_KEEP_BYTES);
        let (console_tx, _) = broadcast::channel(stream_capacity);
        VmOutput {
            console: Arc::new(Mutex::new(console[skip..].iter().copied().collect())),
            console_tx,
            published: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Keeps and streams console output.
    fn add_console(&self, data: Vec<u8>) {
        {
            let mut ring = lock(&self.console);
            ring.extend(&data);
            let excess = ring.len().saturating_sub(CONSOLE_KEEP_BYTES);
            ring.drain(..excess);
        }
        let _ = self.console_tx.send(data);
    }
}

struct VmEntry {
    config: VmConfig,
    vmm_config: VmmConfig,
    state_tx: watch::Sender<VmState>,
    run: Option<Arc<RunningVm>>,
    /// Set when `stop`/`kill` ended the VM, so its exit is reported as `Stopped`.
    stop_requested: bool,
    output: VmOutput,
}

impl VmEntry {
    /// A VM in `state` with no process yet.
    fn new(config: VmConfig, vmm_config: VmmConfig, state: VmState, output: VmOutput) -> Self {
        let (state_tx, _) = watch::channel(state);
        VmEntry {
            config,
            vmm_config,
            state_tx,
            run: None,
            stop_requested: false,
            output,
        }
    }

    fn state(&self) -> VmState {
        *self.state_tx.borrow()
    }
}

struct Inner {
    opts: KvmOptions,
    vmm_binary: PathBuf,
    /// vCPUs per VM: KVM's limit, at most the VMM's.
    max_vcpus: u32,
    vms: Mutex<HashMap<VmId, VmEntry>>,
    events: broadcast::Sender<VmEvent>,
}

/// The KVM backend.
#[derive(Clone)]
pub struct KvmHypervisor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KvmHypervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvmHypervisor")
            .field("state_dir", &self.inner.opts.state_dir)
            .field("vmm_binary", &self.inner.vmm_binary)
            .finish()
    }
}

fn not_found(vm: VmId) -> Error {
    Error::not_found("vm", vm)
}

fn invalid_state(vm: VmId, state: VmState, op: &str) -> Error {
    Error::InvalidState {
        kind: "vm",
        id: vm.to_string(),
        state: state.to_string(),
        op: op.into(),
    }
}

/// A control call to `vm`'s VMM (`run`) that failed, as this crate's callers see it.
fn call_error(vm: VmId, run: &RunningVm, e: ClientError) -> Error {
    match e {
        ClientError::Refused { op, error, .. } => match error.code {
            ErrorCode::InvalidState => Error::InvalidState {
                kind: "vm",
                id: vm.to_string(),
                state: "not ready".into(),
                op: format!("{op}: {}", error.message),
            },
            ErrorCode::Invalid => Error::invalid("guest message", error.message),
            _ => Error::backend(BACKEND, format!("{op}: {}", error.message)),
        },
        ClientError::Timeout { op, after, .. } => Error::Timeout {
            what: format!("ovm-vmm (pid {}) to answer {op}", run.pid),
            after,
        },
        other => other.into(),
    }
}

impl From<ClientError> for Error {
    fn from(e: ClientError) -> Self {
        Error::backend_source(BACKEND, e)
    }
}

impl KvmHypervisor {
    /// A backend with default options (attached VMMs); fails if /dev/kvm is unusable or
    /// `ovm-vmm` is missing.
    pub fn new() -> Result<Self> {
        Self::with_options(KvmOptions::default())
    }

    /// A backend with attached VMMs (`opts.detached` must be false: a run directory is
    /// opened with `open`, which adopts what runs there).
    pub fn with_options(opts: KvmOptions) -> Result<Self> {
        if opts.detached {
            return Err(Error::invalid(
                "kvm.detached",
                "a run directory is opened with KvmHypervisor::open (it adopts running VMMs)",
            ));
        }
        Self::build(opts)
    }

    /// A backend with detached VMMs in the run directory `run_dir` (created owner-only),
    /// adopting the VMMs an earlier process left running there.
    pub async fn with_run_dir(run_dir: impl Into<PathBuf>) -> Result<Self> {
        Self::open(KvmOptions::with_run_dir(run_dir)).await
    }

    /// A backend with `opts`; in detached mode it adopts the VMMs running in
    /// `opts.state_dir` and removes the directories of those that have ended. Must be
    /// called inside a tokio runtime.
    pub async fn open(opts: KvmOptions) -> Result<Self> {
        let detached = opts.detached;
        let hv = Self::build(opts)?;
        if detached {
            private_dir(&hv.inner.opts.state_dir)?;
            hv.adopt_all().await?;
        }
        Ok(hv)
    }

    fn build(opts: KvmOptions) -> Result<Self> {
        kvm_usable().map_err(|reason| Error::backend(BACKEND, reason))?;
        let max_vcpus = kvm_ioctls::Kvm::new()
            .map(|k| k.get_max_vcpus() as u32)
            .map_err(|e| Error::backend(BACKEND, format!("cannot open /dev/kvm: {e}")))?
            .min(u32::from(MAX_VCPUS));
        let vmm_binary = match &opts.vmm_binary {
            Some(p) => p.clone(),
            None => find_vmm_binary()?,
        };
        std::fs::create_dir_all(&opts.state_dir)?;
        let (events, _) = broadcast::channel(1024);
        Ok(KvmHypervisor {
            inner: Arc::new(Inner {
                opts,
                vmm_binary,
                max_vcpus,
                vms: Mutex::new(HashMap::new()),
                events,
            }),
        })
    }

    fn dir(&self, vm: VmId) -> PathBuf {
        self.inner.opts.state_dir.join(vm.to_string())
    }

    fn emit(&self, vm: VmId, kind: VmEventKind) {
        let _ = self.inner.events.send(VmEvent { vm, kind });
    }

    fn set_state(&self, vm: VmId, state: VmState) {
        if let Some(e) = lock(&self.inner.vms).get(&vm) {
            e.state_tx.send_replace(state);
        }
    }

    fn running(&self, vm: VmId, op: &str) -> Result<Arc<RunningVm>> {
        let vms = lock(&self.inner.vms);
        let e = vms.get(&vm).ok_or_else(|| not_found(vm))?;
        match (&e.run, e.state()) {
            (Some(r), VmState::Running | VmState::Paused) => Ok(r.clone()),
            (_, state) => Err(invalid_state(vm, state, op)),
        }
    }

    async fn wait_inactive(&self, vm: VmId, timeout: Duration) -> Result<()> {
        let mut rx = match lock(&self.inner.vms).get(&vm) {
            Some(e) => e.state_tx.subscribe(),
            None => return Ok(()),
        };
        let wait = rx.wait_for(|s| !s.is_active());
        match tokio::time::timeout(timeout, wait).await {
            Ok(_) => Ok(()),
            Err(_) => Err(Error::Timeout {
                what: format!("vm {vm} to stop"),
                after: timeout,
            }),
        }
    }

    fn mark_stop(&self, vm: VmId) -> Result<Option<Arc<RunningVm>>> {
        let mut vms = lock(&self.inner.vms);
        let e = vms.get_mut(&vm).ok_or_else(|| not_found(vm))?;
        if e.run.is_some() {
            e.stop_requested = true;
            if e.state().is_active() {
                e.state_tx.send_replace(VmState::Stopping);
            }
        }
        Ok(e.run.clone())
    }

    /// Path of the VM's control socket while it runs (for tools and benchmarks).
    pub fn api_socket(&self, vm: VmId) -> Option<PathBuf> {
        lock(&self.inner.vms)
            .get(&vm)
            .and_then(|e| e.run.as_ref().map(|r| r.socket.clone()))
    }

    /// Process id of the VM's `ovm-vmm` while it runs.
    pub fn vmm_pid(&self, vm: VmId) -> Option<u32> {
        lock(&self.inner.vms)
            .get(&vm)
            .and_then(|e| e.run.as_ref().map(|r| r.pid))
    }
}

#[async_trait]
impl Hypervisor for KvmHypervisor {
    fn backend(&self) -> &str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            domain_types: vec![DomainType::Pvh, DomainType::PvHvm],
            pause: true,
            console: true,
            guest_messages: true,
            live_migration: false,
            snapshot: false,
            hotplug: false,
            test_guest: true,
            max_vcpus: self.inner.max_vcpus,
        }
    }

    async fn host_info(&self) -> Result<HostInfo> {
        let total = host::read_meminfo_kib("MemTotal").unwrap_or(0) / 1024;
        let available = host::read_meminfo_kib("MemAvailable").unwrap_or(total * 1024) / 1024;
        let assigned: u64 = lock(&self.inner.vms)
            .values()
            .filter(|e| e.state().is_active())
            .map(|e| e.config.spec.memory_mib)
            .sum();
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let api = kvm_ioctls::Kvm::new()
            .map(|k| k.get_api_version())
            .unwrap_or(0);
        Ok(HostInfo {
            hostname,
            hypervisor: HypervisorKind::Kvm,
            version: format!("KVM API {api}, Linux {kernel}"),
            cpus: host::host_cpus(),
            memory_mib: total,
            free_memory_mib: total.saturating_sub(assigned).min(available),
        })
    }

    async fn define(&self, config: &VmConfig) -> Result<()> {
        let capabilities = self.capabilities();
        let limits = translate::Limits {
            domain_types: &capabilities.domain_types,
            max_vcpus: self.inner.max_vcpus,
        };
        let console_log = self.dir(config.id).join("console.log");
        let vmm_config = translate::vmm_config(config, &limits, console_log)?;
        let mut vms = lock(&self.inner.vms);
        if vms.contains_key(&config.id) {
            return Err(Error::AlreadyExists {
                kind: "vm",
                id: config.id.to_string(),
            });
        }
        let entry = VmEntry::new(
            config.clone(),
            vmm_config,
            VmState::Stopped,
            VmOutput::new(256, &[]),
        );
        vms.insert(config.id, entry);
        Ok(())
    }

    async fn undefine(&self, vm: VmId) -> Result<()> {
        {
            let mut vms = lock(&self.inner.vms);
            let e = vms.get(&vm).ok_or_else(|| not_found(vm))?;
            if e.state().is_active() || e.run.is_some() {
                return Err(invalid_state(vm, e.state(), "undefine"));
            }
            vms.remove(&vm);
        }
        let dir = self.dir(vm);
        if dir.exists() {
            let _dir_lock = lock_vm_dir(&dir)?;
            std::fs::remove_dir_all(&dir)?;
        }
        Ok(())
    }

    async fn start(&self, vm: VmId) -> Result<()> {
        let memory_mib = {
            let vms = lock(&self.inner.vms);
            let e = vms.get(&vm).ok_or_else(|| not_found(vm))?;
            if e.state().is_active() || e.run.is_some() {
                return Err(invalid_state(vm, e.state(), "start"));
            }
            e.config.spec.memory_mib
        };
        let info = self.host_info().await?;
        if memory_mib > info.free_memory_mib {
            return Err(Error::capacity(format!(
                "vm {vm} needs {memory_mib} MiB, host {} has {} MiB free",
                info.hostname, info.free_memory_mib
            )));
        }
        self.spawn(vm).await
    }

    async fn stop(&self, vm: VmId, timeout: Duration) -> Result<()> {
        let Some(run) = self.mark_stop(vm)? else {
            return Ok(());
        };
        let asked = run
            .control(vm)
            .with_timeout(timeout + Duration::from_secs(2))
            .stop(timeout)
            .await;
        if asked.is_err() {
            run.kill();
        }
        self.wait_inactive(vm, Duration::from_secs(10)).await
    }

    async fn kill(&self, vm: VmId) -> Result<()> {
        let Some(run) = self.mark_stop(vm)? else {
            return Ok(());
        };
        run.kill();
        self.wait_inactive(vm, Duration::from_secs(10)).await
    }

    async fn pause(&self, vm: VmId) -> Result<()> {
        let run = self.running(vm, "pause")?;
        run.control(vm)
            .done(Request::Pause)
            .await
            .map_err(|e| call_error(vm, &run, e))?;
        self.set_state(vm, VmState::Paused);
        Ok(())
    }

    async fn resume(&self, vm: VmId) -> Result<()> {
        let run = self.running(vm, "resume")?;
        run.control(vm)
            .done(Request::Resume)
            .await
            .map_err(|e| call_error(vm, &run, e))?;
        self.set_state(vm, VmState::Running);
        Ok(())
    }

    async fn state(&self, vm: VmId) -> Result<VmState> {
        lock(&self.inner.vms)
            .get(&vm)
            .map(VmEntry::state)
            .ok_or_else(|| not_found(vm))
    }

    async fn list(&self) -> Result<Vec<(VmId, VmState)>> {
        // Other processes share the run directory: what they started since is listed too,
        // and a VM one of them is starting right now is `starting`, not absent.
        let busy = if self.inner.opts.detached {
            self.adopt_unknown(false).await?
        } else {
            Vec::new()
        };
        let mut listed: Vec<(VmId, VmState)> = lock(&self.inner.vms)
            .iter()
            .map(|(id, e)| (*id, e.state()))
            .collect();
        listed.extend(busy.into_iter().map(|vm| (vm, VmState::Starting)));
        Ok(listed)
    }

    async fn stats(&self, vm: VmId) -> Result<VmStats> {
        let run = self.running(vm, "read stats of")?;
        let s = run
            .control(vm)
            .stats()
            .await
            .map_err(|e| call_error(vm, &run, e))?;
        Ok(VmStats {
            cpu_time_ns: s.cpu_time_ns,
            memory_mib: s.memory_mib,
            host_rss_bytes: s.rss_bytes,
            uptime_ms: run.started.elapsed().as_millis() as u64,
        })
    }

    async fn console_buffer(&self, vm: VmId) -> Result<Vec<u8>> {
        let vms = lock(&self.inner.vms);
        let e = vms.get(&vm).ok_or_else(|| not_found(vm))?;
        Ok(lock(&e.output.console).iter().copied().collect())
    }

    async fn console_stream(&self, vm: VmId) -> Result<ConsoleStream> {
        let rx = lock(&self.inner.vms)
            .get(&vm)
            .ok_or_else(|| not_found(vm))?
            .output
            .console_tx
            .subscribe();
        Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(chunk) => return Some((chunk, rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })))
    }

    async fn console_write(&self, vm: VmId, input: &[u8]) -> Result<()> {
        let run = self.running(vm, "write to the console of")?;
        run.control(vm)
            .console_write(input)
            .await
            .map(drop)
            .map_err(|e| call_error(vm, &run, e))
    }

    async fn guest_send(&self, vm: VmId, key: &str, value: &[u8]) -> Result<()> {
        guest_message::validate(key, value)?;
        let run = self.running(vm, "send a guest message to")?;
        let request = Request::GuestSend {
            key: key.into(),
            value: value.to_vec(),
        };
        run.control(vm)
            .done(request)
            .await
            .map_err(|e| call_error(vm, &run, e))
    }

    async fn guest_read(&self, vm: VmId, key: &str) -> Result<Option<Vec<u8>>> {
        let (known, run, published) = {
            let vms = lock(&self.inner.vms);
            let e = vms.get(&vm).ok_or_else(|| not_found(vm))?;
            let known = lock(&e.output.published).get(key).cloned();
            (known, e.run.clone(), e.output.published.clone())
        };
        if known.is_some() {
            return Ok(known);
        }
        // An adopted VM may have published before we followed its events: ask its VMM.
        let Some(run) = run.filter(|_| self.inner.opts.detached) else {
            return Ok(None);
        };
        let value = run.control(vm).guest_read(key).await.unwrap_or(None);
        if let Some(v) = &value {
            lock(&published).entry(key.to_string()).or_insert(v.clone());
        }
        Ok(value)
    }

    fn subscribe(&self) -> broadcast::Receiver<VmEvent> {
        self.inner.events.subscribe()
    }

    fn vm_dir(&self, vm: VmId) -> Option<PathBuf> {
        Some(self.dir(vm))
    }
}

/// The path of a VM's console log under `state_dir`.
pub fn console_log_path(state_dir: &Path, vm: VmId) -> PathBuf {
    state_dir.join(vm.to_string()).join("console.log")
}
