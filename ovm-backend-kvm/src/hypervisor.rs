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

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ovm_core::hypervisor::{
    Capabilities, ConsoleStream, HostInfo, Hypervisor, VmConfig, VmEvent, VmEventKind, VmStats,
    guest_message,
};
use ovm_core::model::{BootSource, DomainType, HypervisorKind, VmState, VolumeFormat};
use ovm_core::{Error, Result, VmId, VolumeAccess};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{broadcast, oneshot, watch};

use crate::api::{Request, Response};
use crate::devices::lock;
use crate::vmm::{BootConfig, DiskConfig, ExitReason, MAX_VCPUS, VmmConfig, VmmEvent, VmmStats};

const BACKEND: &str = "kvm";
/// Environment variable naming the `ovm-vmm` binary.
pub const VMM_BIN_ENV: &str = "OVM_VMM_BIN";
const CONSOLE_KEEP_BYTES: usize = 64 * 1024;

/// What to do when a guest asks to reboot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RebootPolicy {
    /// Start it again (a fresh VMM process).
    #[default]
    Restart,
    /// Leave it stopped.
    Stop,
}

/// How the backend runs.
#[derive(Debug, Clone)]
pub struct KvmOptions {
    /// Where VM directories go.
    pub state_dir: PathBuf,
    /// The `ovm-vmm` binary; found automatically if `None`.
    pub vmm_binary: Option<PathBuf>,
    /// Arguments put before the VMM's own (for a binary that embeds
    /// `vmm_process::run` behind a subcommand).
    pub vmm_prefix_args: Vec<String>,
    /// Reboot handling.
    pub reboot: RebootPolicy,
    /// Most time `start` waits for the vCPUs to run.
    pub start_timeout: Duration,
}

impl Default for KvmOptions {
    fn default() -> Self {
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        KvmOptions {
            state_dir: std::env::temp_dir().join(format!("ovm-kvm-{uid}")),
            vmm_binary: None,
            vmm_prefix_args: Vec::new(),
            reboot: RebootPolicy::Restart,
            start_timeout: Duration::from_secs(30),
        }
    }
}

/// Whether /dev/kvm can run VMs here; the reason if not.
pub fn kvm_usable() -> std::result::Result<(), String> {
    let kvm = kvm_ioctls::Kvm::new().map_err(|e| format!("cannot open /dev/kvm: {e}"))?;
    kvm.create_vm()
        .map(drop)
        .map_err(|e| format!("/dev/kvm cannot create a VM: {e}"))
}

/// Finds the `ovm-vmm` binary (see the module docs).
pub fn find_vmm_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(VMM_BIN_ENV) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let mut candidates = Vec::new();
    if let Some(dir) = exe.parent() {
        candidates.push(dir.join("ovm-vmm"));
        if let Some(up) = dir.parent() {
            candidates.push(up.join("ovm-vmm"));
        }
    }
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        Error::backend(
            BACKEND,
            format!(
                "ovm-vmm binary not found next to {} (set {VMM_BIN_ENV})",
                exe.display()
            ),
        )
    })
}

struct RunningVm {
    pid: u32,
    socket: PathBuf,
    started: Instant,
    /// Asks the supervisor, which owns the child, to SIGKILL it (no pid-reuse race: the
    /// child is reaped only by the supervisor, after which kills are no-ops).
    kill: Arc<tokio::sync::Notify>,
}

impl RunningVm {
    fn kill(&self) {
        self.kill.notify_one();
    }
}

struct VmEntry {
    config: VmConfig,
    vmm_config: VmmConfig,
    state_tx: watch::Sender<VmState>,
    run: Option<Arc<RunningVm>>,
    /// Set when `stop`/`kill` ended the VM, so its exit is reported as `Stopped`.
    stop_requested: bool,
    console: Arc<Mutex<VecDeque<u8>>>,
    console_tx: broadcast::Sender<Vec<u8>>,
    published: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

impl VmEntry {
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

fn read_meminfo_kib(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn host_cpus() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

impl KvmHypervisor {
    /// A backend with default options; fails if /dev/kvm is unusable or `ovm-vmm` is missing.
    pub fn new() -> Result<Self> {
        Self::with_options(KvmOptions::default())
    }

    /// A backend with `opts`.
    pub fn with_options(opts: KvmOptions) -> Result<Self> {
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

    fn vmm_config(&self, config: &VmConfig) -> Result<VmmConfig> {
        let spec = &config.spec;
        spec.validate()?;
        if !self.capabilities().domain_types.contains(&spec.domain_type) {
            return Err(Error::unsupported(
                format!("domain type {}", spec.domain_type.as_str()),
                BACKEND,
            ));
        }
        if spec.vcpus > self.inner.max_vcpus {
            return Err(Error::invalid(
                "vm.vcpus",
                format!(
                    "{} is more than the {} this host's KVM backend runs",
                    spec.vcpus, self.inner.max_vcpus
                ),
            ));
        }
        if !config.nics.is_empty() || !spec.nics.is_empty() {
            return Err(Error::unsupported("network interfaces", BACKEND));
        }
        let boot = match &spec.boot {
            BootSource::TestGuest { cmdline } => BootConfig::Kernel {
                kernel: crate::guest::test_guest_path()?,
                initrd: None,
                cmdline: cmdline.clone(),
            },
            BootSource::Kernel {
                kernel,
                initrd,
                cmdline,
            } => BootConfig::Kernel {
                kernel: kernel.clone(),
                initrd: initrd.clone(),
                cmdline: cmdline.clone(),
            },
            BootSource::Disk => return Err(Error::unsupported("booting from disk", BACKEND)),
        };
        let disks = config
            .disks
            .iter()
            .enumerate()
            .map(|(i, d)| match &d.access {
                VolumeAccess::Path {
                    path,
                    format: VolumeFormat::Raw,
                } => Ok(DiskConfig {
                    path: path.clone(),
                    read_only: d.read_only,
                }),
                other => Err(Error::unsupported(
                    format!("disk {i} access {other:?} (raw files only)"),
                    BACKEND,
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(VmmConfig {
            vcpus: spec.vcpus as u8,
            memory_mib: spec.memory_mib,
            boot,
            console_log: Some(self.dir(config.id).join("console.log")),
            disks,
            prefer_pvh: false,
        })
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

    async fn call(
        &self,
        run: &RunningVm,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response> {
        let exchange = async {
            let stream = tokio::net::UnixStream::connect(&run.socket).await?;
            let (read, mut write) = stream.into_split();
            let mut line = serde_json::to_vec(request)?;
            line.push(b'\n');
            write.write_all(&line).await?;
            let mut answer = String::new();
            BufReader::new(read).read_line(&mut answer).await?;
            let response: Response = serde_json::from_str(&answer)?;
            Ok::<_, Error>(response)
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| Error::Timeout {
                what: format!("ovm-vmm (pid {}) to answer {request:?}", run.pid),
                after: timeout,
            })?
    }

    async fn call_ok(
        &self,
        vm: VmId,
        run: &RunningVm,
        request: Request,
    ) -> Result<Option<serde_json::Value>> {
        let op = format!("{request:?}");
        let r = self.call(run, &request, Duration::from_secs(10)).await?;
        if r.ok {
            return Ok(r.result);
        }
        let e = r.error.unwrap_or(crate::api::ApiError {
            code: "internal".into(),
            message: "no error given".into(),
        });
        Err(match e.code.as_str() {
            "invalid_state" => Error::InvalidState {
                kind: "vm",
                id: vm.to_string(),
                state: "not ready".into(),
                op: format!("{op}: {}", e.message),
            },
            "invalid" => Error::invalid("guest message", e.message),
            _ => Error::backend(BACKEND, format!("{op}: {}", e.message)),
        })
    }

    /// Spawns the VMM process for `vm` and waits until its vCPUs run. (Boxed: the
    /// supervisor calls it again to restart a rebooted guest.)
    fn spawn(
        &self,
        vm: VmId,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + '_>> {
        Box::pin(self.spawn_inner(vm))
    }

    async fn spawn_inner(&self, vm: VmId) -> Result<()> {
        let vmm_config = {
            let vms = lock(&self.inner.vms);
            let e = vms.get(&vm).ok_or_else(|| not_found(vm))?;
            e.vmm_config.clone()
        };
        let dir = self.dir(vm);
        std::fs::create_dir_all(&dir)?;
        let config_path = dir.join("config.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&vmm_config)?)?;
        let socket = dir.join("api.sock");
        let mut child = tokio::process::Command::new(&self.inner.vmm_binary)
            .args(&self.inner.opts.vmm_prefix_args)
            .arg("--config")
            .arg(&config_path)
            .arg("--api-sock")
            .arg(&socket)
            .arg("--die-with-parent")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                Error::backend(
                    BACKEND,
                    format!("cannot run {}: {e}", self.inner.vmm_binary.display()),
                )
            })?;
        let pid = child.id().unwrap_or(0);
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::backend(BACKEND, "ovm-vmm stdout not captured"))?;
        let run = Arc::new(RunningVm {
            pid,
            socket,
            started: Instant::now(),
            kill: Arc::new(tokio::sync::Notify::new()),
        });
        {
            let mut vms = lock(&self.inner.vms);
            let e = vms.get_mut(&vm).ok_or_else(|| not_found(vm))?;
            e.run = Some(run.clone());
            e.stop_requested = false;
            e.state_tx.send_replace(VmState::Starting);
        }
        let (started_tx, started_rx) = oneshot::channel();
        let me = self.clone();
        let supervised = run.clone();
        tokio::spawn(async move {
            me.supervise(vm, supervised, child, stdout, started_tx)
                .await
        });
        match tokio::time::timeout(self.inner.opts.start_timeout, started_rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(Error::backend(BACKEND, "ovm-vmm ended before starting")),
            Err(_) => {
                run.kill();
                Err(Error::Timeout {
                    what: format!("vm {vm} to start"),
                    after: self.inner.opts.start_timeout,
                })
            }
        }
    }

    /// Follows one VMM process to its end.
    async fn supervise(
        self,
        vm: VmId,
        run: Arc<RunningVm>,
        mut child: tokio::process::Child,
        stdout: tokio::process::ChildStdout,
        started: oneshot::Sender<Result<()>>,
    ) {
        let (console, console_tx, published) = match lock(&self.inner.vms).get(&vm) {
            Some(e) => (e.console.clone(), e.console_tx.clone(), e.published.clone()),
            None => return,
        };
        let mut started = Some(started);
        let mut exit: Option<ExitReason> = None;
        let mut build_error: Option<String> = None;
        let mut lines = BufReader::new(stdout).lines();
        loop {
            let line = tokio::select! {
                line = lines.next_line() => match line {
                    Ok(Some(line)) => line,
                    Ok(None) | Err(_) => break,
                },
                () = run.kill.notified() => {
                    // The process ends; its stdout closes and the loop ends with it.
                    let _ = child.start_kill();
                    continue;
                }
            };
            let event: VmmEvent = match serde_json::from_str(&line) {
                Ok(ev) => ev,
                Err(_) => {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                        && v["event"] == "error"
                    {
                        build_error = v["message"].as_str().map(str::to_string);
                    }
                    continue;
                }
            };
            match event {
                VmmEvent::Started => {
                    self.set_state(vm, VmState::Running);
                    self.emit(vm, VmEventKind::Started);
                    if let Some(tx) = started.take() {
                        let _ = tx.send(Ok(()));
                    }
                }
                VmmEvent::Ready { .. } => {}
                VmmEvent::Console { data } => {
                    {
                        let mut ring = lock(&console);
                        ring.extend(&data);
                        let excess = ring.len().saturating_sub(CONSOLE_KEEP_BYTES);
                        ring.drain(..excess);
                    }
                    let _ = console_tx.send(data);
                }
                VmmEvent::GuestMessage { key, value } => {
                    lock(&published).insert(key.clone(), value);
                    self.emit(vm, VmEventKind::GuestMessage { key });
                }
                VmmEvent::GuestMisbehaved { detail } => {
                    self.emit(vm, VmEventKind::GuestMisbehaved { detail });
                }
                VmmEvent::Paused => {
                    self.set_state(vm, VmState::Paused);
                    self.emit(vm, VmEventKind::Paused);
                }
                VmmEvent::Resumed => {
                    self.set_state(vm, VmState::Running);
                    self.emit(vm, VmEventKind::Resumed);
                }
                VmmEvent::Exit { reason } => exit = Some(reason),
            }
        }
        let status = child.wait().await;
        let stop_requested = lock(&self.inner.vms)
            .get(&vm)
            .is_some_and(|e| e.stop_requested);
        if let Some(tx) = started.take() {
            let detail = build_error.unwrap_or_else(|| format!("ovm-vmm exited: {status:?}"));
            let _ = tx.send(Err(Error::backend(BACKEND, detail)));
            self.finish(vm, &run, VmState::Stopped);
            return;
        }
        let (state, kind) = match (stop_requested, exit) {
            (true, _) => (VmState::Stopped, VmEventKind::Stopped),
            (false, Some(ExitReason::PowerOff)) => (VmState::Stopped, VmEventKind::PoweredOff),
            (false, Some(ExitReason::Killed)) => (VmState::Stopped, VmEventKind::Stopped),
            (false, Some(ExitReason::Reboot)) => {
                self.emit(vm, VmEventKind::Rebooted);
                if self.inner.opts.reboot == RebootPolicy::Restart {
                    self.finish(vm, &run, VmState::Stopped);
                    if let Err(e) = self.spawn(vm).await {
                        self.emit(
                            vm,
                            VmEventKind::InternalError {
                                detail: format!("restart after reboot failed: {e}"),
                            },
                        );
                    }
                    return;
                }
                (VmState::Stopped, VmEventKind::Stopped)
            }
            (false, Some(ExitReason::Crash { reason })) => {
                (VmState::Crashed, VmEventKind::Crashed { reason })
            }
            (false, Some(ExitReason::InternalError { detail })) => {
                (VmState::Crashed, VmEventKind::InternalError { detail })
            }
            (false, None) => (
                VmState::Crashed,
                VmEventKind::InternalError {
                    detail: format!(
                        "ovm-vmm (pid {}) ended without an exit report: {status:?}",
                        run.pid
                    ),
                },
            ),
        };
        self.finish(vm, &run, state);
        self.emit(vm, kind);
    }

    fn finish(&self, vm: VmId, run: &Arc<RunningVm>, state: VmState) {
        let mut vms = lock(&self.inner.vms);
        if let Some(e) = vms.get_mut(&vm)
            && e.run.as_ref().is_some_and(|r| Arc::ptr_eq(r, run))
        {
            e.run = None;
            e.state_tx.send_replace(state);
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
        let total = read_meminfo_kib("MemTotal").unwrap_or(0) / 1024;
        let available = read_meminfo_kib("MemAvailable").unwrap_or(total * 1024) / 1024;
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
            cpus: host_cpus(),
            memory_mib: total,
            free_memory_mib: total.saturating_sub(assigned).min(available),
        })
    }

    async fn define(&self, config: &VmConfig) -> Result<()> {
        let vmm_config = self.vmm_config(config)?;
        let mut vms = lock(&self.inner.vms);
        if vms.contains_key(&config.id) {
            return Err(Error::AlreadyExists {
                kind: "vm",
                id: config.id.to_string(),
            });
        }
        let (state_tx, _) = watch::channel(VmState::Stopped);
        let (console_tx, _) = broadcast::channel(256);
        vms.insert(
            config.id,
            VmEntry {
                config: config.clone(),
                vmm_config,
                state_tx,
                run: None,
                stop_requested: false,
                console: Arc::new(Mutex::new(VecDeque::new())),
                console_tx,
                published: Arc::new(Mutex::new(HashMap::new())),
            },
        );
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
        let request = Request::Stop {
            timeout_ms: timeout.as_millis() as u64,
        };
        let asked = self
            .call(&run, &request, timeout + Duration::from_secs(2))
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
        self.call_ok(vm, &run, Request::Pause).await?;
        self.set_state(vm, VmState::Paused);
        Ok(())
    }

    async fn resume(&self, vm: VmId) -> Result<()> {
        let run = self.running(vm, "resume")?;
        self.call_ok(vm, &run, Request::Resume).await?;
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
        Ok(lock(&self.inner.vms)
            .iter()
            .map(|(id, e)| (*id, e.state()))
            .collect())
    }

    async fn stats(&self, vm: VmId) -> Result<VmStats> {
        let run = self.running(vm, "read stats of")?;
        let value = self.call_ok(vm, &run, Request::Stats).await?;
        let s: VmmStats = serde_json::from_value(value.unwrap_or_default())?;
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
        Ok(lock(&e.console).iter().copied().collect())
    }

    async fn console_stream(&self, vm: VmId) -> Result<ConsoleStream> {
        let rx = lock(&self.inner.vms)
            .get(&vm)
            .ok_or_else(|| not_found(vm))?
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
        self.call_ok(
            vm,
            &run,
            Request::ConsoleWrite {
                data: input.to_vec(),
            },
        )
        .await
        .map(drop)
    }

    async fn guest_send(&self, vm: VmId, key: &str, value: &[u8]) -> Result<()> {
        guest_message::validate(key, value)?;
        let run = self.running(vm, "send a guest message to")?;
        self.call_ok(
            vm,
            &run,
            Request::GuestSend {
                key: key.into(),
                value: value.to_vec(),
            },
        )
        .await
        .map(drop)
    }

    async fn guest_read(&self, vm: VmId, key: &str) -> Result<Option<Vec<u8>>> {
        let vms = lock(&self.inner.vms);
        let e = vms.get(&vm).ok_or_else(|| not_found(vm))?;
        Ok(lock(&e.published).get(key).cloned())
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
