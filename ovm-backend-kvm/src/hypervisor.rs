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
//!   alive, and answering as the VM the directory is named after) and removes the
//!   directories of those that have ended.

use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
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
use crate::pidfd::Pidfd;
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
    /// VMM processes outlive this process, and `state_dir` is a run directory whose VMMs
    /// are adopted on `KvmHypervisor::open` (see the module docs). Default: false.
    pub detached: bool,
}

impl KvmOptions {
    /// Detached VMMs in the run directory `run_dir`, other options at their defaults.
    pub fn with_run_dir(run_dir: impl Into<PathBuf>) -> Self {
        KvmOptions {
            state_dir: run_dir.into(),
            detached: true,
            ..KvmOptions::default()
        }
    }
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
            detached: false,
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
    /// Asks the supervisor, which owns the process handle (the child, or a pidfd for a
    /// detached VMM), to SIGKILL it (no pid-reuse race either way: the child is reaped only
    /// by the supervisor, after which kills are no-ops; a pidfd names one process).
    kill: Arc<tokio::sync::Notify>,
}

/// How a supervisor reaches its VMM process.
enum VmmProcess {
    /// Our child (attached mode).
    Child(tokio::process::Child),
    /// A detached or adopted VMM.
    Detached(Pidfd),
}

/// What a detached VM's directory keeps so another process can adopt it (`vm.json`).
#[derive(serde::Serialize, serde::Deserialize)]
struct VmRecord {
    config: VmConfig,
    vmm_config: VmmConfig,
    /// When its VMM was started, milliseconds since the Unix epoch.
    started_unix_ms: u64,
}

/// What `state` on a VMM's socket says.
#[derive(serde::Deserialize)]
struct VmmStateReply {
    state: crate::vmm::RunState,
    #[serde(default)]
    vm_id: Option<String>,
    #[serde(default)]
    pid: Option<u32>,
}

/// Where a VMM's event lines come from: a child's standard output or a detached VMM's
/// `events` subscription.
type EventSource = Box<dyn tokio::io::AsyncRead + Send + Unpin>;
type EventLines = tokio::io::Lines<BufReader<EventSource>>;

impl VmmProcess {
    fn kill(&mut self) {
        match self {
            VmmProcess::Child(child) => {
                let _ = child.start_kill();
            }
            VmmProcess::Detached(pidfd) => {
                if let Err(e) = pidfd.kill() {
                    tracing::warn!(pid = pidfd.pid(), "cannot kill ovm-vmm: {e}");
                }
            }
        }
    }

    /// Waits for the process to end (its events have); says how it ended. A detached VMM
    /// whose events ended while it still runs cannot be followed any more: it is killed, so
    /// a VM reported stopped or crashed never still runs.
    async fn wait(&mut self) -> String {
        match self {
            VmmProcess::Child(child) => format!("{:?}", child.wait().await),
            VmmProcess::Detached(pidfd) => {
                if pidfd.wait_exit(Duration::from_secs(5)).await {
                    return "exited".into();
                }
                let _ = pidfd.kill();
                pidfd.wait_exit(Duration::from_secs(5)).await;
                "its events stopped while it ran; killed".into()
            }
        }
    }
}

/// Sends `events` on a fresh connection to a detached VMM and returns its event lines.
async fn subscribe(mut stream: tokio::net::UnixStream) -> Result<EventLines> {
    let request = serde_json::to_vec(&Request::Events)?;
    stream.write_all(&request).await?;
    stream.write_all(b"\n").await?;
    let mut lines = BufReader::new(Box::new(stream) as EventSource).lines();
    let answer = lines.next_line().await?.unwrap_or_default();
    let response: Response = serde_json::from_str(&answer).map_err(|e| {
        Error::backend(
            BACKEND,
            format!("ovm-vmm answered {answer:?} to an events request: {e}"),
        )
    })?;
    if !response.ok {
        return Err(Error::backend(
            BACKEND,
            format!("ovm-vmm refused an events request: {answer}"),
        ));
    }
    Ok(lines)
}

/// Reads what a detached VMM says once it has built its VM: its pid, or why it failed.
async fn read_announcement(stdout: tokio::process::ChildStdout) -> Result<u32> {
    let mut lines = BufReader::new(stdout).lines();
    while let Some(line) = lines.next_line().await? {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        match v["event"].as_str() {
            Some("listening") => {
                return v["pid"]
                    .as_u64()
                    .and_then(|p| u32::try_from(p).ok())
                    .ok_or_else(|| {
                        Error::backend(BACKEND, format!("ovm-vmm announced no pid: {line}"))
                    });
            }
            Some("error") => {
                let message = v["message"].as_str().unwrap_or("the VM could not be built");
                return Err(Error::backend(BACKEND, message.to_string()));
            }
            _ => {}
        }
    }
    Err(Error::backend(
        BACKEND,
        "ovm-vmm ended before its VM was built (see vmm.log in the VM's directory)",
    ))
}

/// How long adoption waits for an earlier VMM to answer.
const ADOPT_TIMEOUT: Duration = Duration::from_secs(3);

/// How old a VM directory without `vm.json` must be before an adopter clears it.
const ABANDONED_AFTER: Duration = Duration::from_secs(60);

/// How often, and how far apart, adopting a VMM that took the connection and failed to
/// answer is tried again before it is reported as an error.
const ATTACH_RETRIES: u32 = 3;
const ATTACH_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Locks a VM's directory against other processes sharing the run directory: held by
/// whoever starts its VMM (from writing `vm.json` until the vCPUs run) or removes it, so
/// that an adopter never takes a VMM being started for one that its starter abandoned.
/// The lock is `flock` on `<dir>/lock`: it goes with the process, so a starter that
/// died leaves nothing held.
fn lock_vm_dir(dir: &Path) -> std::io::Result<std::fs::File> {
    let f = open_lock_file(dir)?;
    f.lock()?;
    Ok(f)
}

/// Like [`lock_vm_dir`], but `None` at once if another process holds the lock.
fn try_lock_vm_dir(dir: &Path) -> std::io::Result<Option<std::fs::File>> {
    let f = open_lock_file(dir)?;
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

fn open_lock_file(dir: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(dir.join("lock"))
}

/// What adopting a VM directory found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Adopted {
    /// A running (or paused) VMM, now followed by this process.
    Running,
    /// A VMM that ended normally: its directory is removed.
    Ended,
    /// A VMM that died without cleaning up (killed): listed as crashed until undefined.
    Crashed,
    /// Another process is starting or removing it right now: left alone.
    Busy,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Creates `dir` (and its parents) and makes it owner-only.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Writes an owner-only file in one step (a temporary file renamed over it).
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
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
            let stream = connect_socket(&run.socket).await?;
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
        let (config, vmm_config) = {
            let vms = lock(&self.inner.vms);
            let e = vms.get(&vm).ok_or_else(|| not_found(vm))?;
            (e.config.clone(), e.vmm_config.clone())
        };
        let dir = self.dir(vm);
        private_dir(&dir)?;
        // Held until the vCPUs run (or the start failed): adopters leave the VM alone.
        let _dir_lock = if self.inner.opts.detached {
            Some(lock_vm_dir(&dir)?)
        } else {
            None
        };
        let config_path = dir.join("config.json");
        write_private(&config_path, &serde_json::to_vec_pretty(&vmm_config)?)?;
        let socket = dir.join("api.sock");
        if self.inner.opts.detached {
            // Under the lock nobody else is starting it: a VMM that answers there was
            // started by another process and runs. Never a second one beside it.
            if connect_socket(&socket).await.is_ok() {
                return Err(invalid_state(
                    vm,
                    VmState::Running,
                    "start (another process runs its VMM)",
                ));
            }
            let record = VmRecord {
                config,
                vmm_config,
                started_unix_ms: unix_ms(),
            };
            write_private(&dir.join("vm.json"), &serde_json::to_vec_pretty(&record)?)?;
            return self.spawn_detached(vm, &config_path, socket).await;
        }
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
            .map_err(|e| self.cannot_run(e))?;
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
        self.install(vm, &run)?;
        let lines = BufReader::new(Box::new(stdout) as EventSource).lines();
        let started = self.spawn_supervisor(vm, &run, VmmProcess::Child(child), lines, true);
        self.await_started(vm, &run, started).await
    }

    fn cannot_run(&self, e: std::io::Error) -> Error {
        Error::backend(
            BACKEND,
            format!("cannot run {}: {e}", self.inner.vmm_binary.display()),
        )
    }

    /// Makes `run` the VM's running process, state `Starting`.
    fn install(&self, vm: VmId, run: &Arc<RunningVm>) -> Result<()> {
        let mut vms = lock(&self.inner.vms);
        let e = vms.get_mut(&vm).ok_or_else(|| not_found(vm))?;
        e.run = Some(run.clone());
        e.stop_requested = false;
        e.state_tx.send_replace(VmState::Starting);
        Ok(())
    }

    async fn await_started(
        &self,
        vm: VmId,
        run: &RunningVm,
        started: oneshot::Receiver<Result<()>>,
    ) -> Result<()> {
        match tokio::time::timeout(self.inner.opts.start_timeout, started).await {
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

    /// Starts a detached VMM: `ovm-vmm --detach --no-start` builds the VM in its own
    /// session and announces its pid; we subscribe to its events, then start its vCPUs
    /// (so no event is missed).
    async fn spawn_detached(&self, vm: VmId, config_path: &Path, socket: PathBuf) -> Result<()> {
        let dir = self.dir(vm);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(dir.join("vmm.log"))?;
        let mut child = tokio::process::Command::new(&self.inner.vmm_binary)
            .args(&self.inner.opts.vmm_prefix_args)
            .arg("--config")
            .arg(config_path)
            .arg("--api-sock")
            .arg(&socket)
            .arg("--vm-id")
            .arg(vm.to_string())
            .arg("--no-start")
            .arg("--detach")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| self.cannot_run(e))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::backend(BACKEND, "ovm-vmm stdout not captured"))?;
        let timeout = self.inner.opts.start_timeout;
        let announced = tokio::time::timeout(timeout, read_announcement(stdout)).await;
        // The first half exits as soon as it has forked: reap it.
        let _ = child.wait().await;
        let announced_pid = announced.map_err(|_| Error::Timeout {
            what: format!("ovm-vmm of vm {vm} to build the VM"),
            after: timeout,
        })??;
        let stream = connect_socket(&socket).await?;
        let (run, pidfd, lines, state) = self.attach(vm, stream, &socket, Instant::now()).await?;
        if run.pid != announced_pid || state.state != crate::vmm::RunState::Created {
            let _ = pidfd.kill();
            return Err(Error::backend(
                BACKEND,
                format!(
                    "{}: pid {} in state {:?} answered, not the new VMM (pid {announced_pid})",
                    socket.display(),
                    run.pid,
                    state.state
                ),
            ));
        }
        if let Err(e) = self.install(vm, &run) {
            let _ = pidfd.kill();
            return Err(e);
        }
        let started = self.spawn_supervisor(vm, &run, VmmProcess::Detached(pidfd), lines, true);
        if let Err(e) = self.call_ok(vm, &run, Request::Start).await {
            run.kill();
            return Err(e);
        }
        self.await_started(vm, &run, started).await
    }

    /// Follows a detached VMM on `stream` (connected to its socket): subscribes to its
    /// events, opens a pidfd on the process at the other end, and asks its state, which must
    /// name `vm`.
    async fn attach(
        &self,
        vm: VmId,
        stream: tokio::net::UnixStream,
        socket: &Path,
        started: Instant,
    ) -> Result<(Arc<RunningVm>, Pidfd, EventLines, VmmStateReply)> {
        let peer = stream
            .peer_cred()?
            .pid()
            .and_then(|p| u32::try_from(p).ok())
            .ok_or_else(|| {
                Error::backend(BACKEND, format!("{}: peer has no pid", socket.display()))
            })?;
        let pidfd = Pidfd::open(peer)?;
        // The answer comes after the pidfd was opened, from the process at the other end:
        // so the pidfd names that process, not a later one that reused a dead one's pid.
        let lines = subscribe(stream).await?;
        let run = Arc::new(RunningVm {
            pid: peer,
            socket: socket.to_path_buf(),
            started,
            kill: Arc::new(tokio::sync::Notify::new()),
        });
        let reply = self.call_ok(vm, &run, Request::State).await?;
        let state: VmmStateReply = serde_json::from_value(reply.unwrap_or_default())?;
        let vm_name = vm.to_string();
        if state.vm_id.as_deref() != Some(vm_name.as_str()) || state.pid.is_some_and(|p| p != peer)
        {
            return Err(Error::backend(
                BACKEND,
                format!(
                    "{}: answers as vm {:?} (pid {:?}), not as vm {vm} (pid {peer})",
                    socket.display(),
                    state.vm_id,
                    state.pid
                ),
            ));
        }
        Ok((run, pidfd, lines, state))
    }

    /// Adopts the VMMs an earlier process left in the run directory; removes the
    /// directories of those that ended. Entries that are not VM directories are left alone.
    async fn adopt_all(&self) -> Result<()> {
        self.adopt_unknown(true).await.map(drop)
    }

    /// Adopts the VM directories this process does not know yet (VMMs other processes
    /// sharing the run directory started since), so that a listing says what runs now,
    /// not what ran when this process connected. Returns the VMs another process is
    /// starting or removing right now. `loud` logs what was found at `info`/`warn`, else
    /// at `debug` (a listing repeats it).
    async fn adopt_unknown(&self, loud: bool) -> Result<Vec<VmId>> {
        let run_dir = self.inner.opts.state_dir.clone();
        let mut busy = Vec::new();
        for entry in std::fs::read_dir(&run_dir)? {
            let Ok(entry) = entry else { continue };
            let path = entry.path();
            let vm = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<VmId>().ok());
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            let (Some(vm), true) = (vm, is_dir) else {
                if loud {
                    tracing::warn!(path = %path.display(), "not a VM directory: left alone");
                }
                continue;
            };
            if lock(&self.inner.vms).contains_key(&vm) {
                continue;
            }
            let found = self.adopt(vm, &path).await;
            if matches!(found, Ok(Adopted::Busy)) {
                busy.push(vm);
            }
            if !loud {
                tracing::debug!(%vm, "adopting: {found:?}");
                continue;
            }
            match found {
                Ok(Adopted::Running) => tracing::info!(%vm, "adopted its running VMM"),
                Ok(Adopted::Ended) => tracing::info!(%vm, "removed the directory of its ended VMM"),
                Ok(Adopted::Crashed) => tracing::warn!(%vm, "its VMM died without an exit report"),
                Ok(Adopted::Busy) => {
                    tracing::info!(%vm, "being started or removed by another process: left alone")
                }
                Err(e) => tracing::warn!(%vm, path = %path.display(), "VMM not adopted: {e}"),
            }
        }
        Ok(busy)
    }

    /// Adopts the VMM of `vm` in `dir` (see [`Adopted`]).
    async fn adopt(&self, vm: VmId, dir: &Path) -> Result<Adopted> {
        // Read before the lock file is made in it (which makes it look new).
        let age = std::fs::metadata(dir)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .unwrap_or_default();
        let Some(_dir_lock) = try_lock_vm_dir(dir)? else {
            return Ok(Adopted::Busy);
        };
        let socket = dir.join("api.sock");
        let stale = || -> Result<Adopted> {
            std::fs::remove_dir_all(dir)?;
            Ok(Adopted::Ended)
        };
        let record: Option<VmRecord> = std::fs::read(dir.join("vm.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        // A starter writes `vm.json` only once it holds the lock: a directory without one
        // is being prepared (its starter has made it, not yet locked it) — or was left by
        // a starter that died right then, which is cleared once it is old.
        if !dir.join("vm.json").exists() {
            return if age > ABANDONED_AFTER {
                stale()
            } else {
                Ok(Adopted::Busy)
            };
        }
        let age = Duration::from_millis(
            unix_ms().saturating_sub(record.as_ref().map_or(0, |r| r.started_unix_ms)),
        );
        let started = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
        let mut attempts = 0;
        let (run, pidfd, lines, state) = loop {
            let stream = match connect_socket(&socket).await {
                Ok(s) => s,
                // No socket: the VMM ended and cleaned up after itself (or never started).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return stale(),
                // A socket nobody listens on: the VMM died without cleaning up (SIGKILL, a
                // crash). It is reported crashed, so the manager records what happened.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    let Some(record) = record else {
                        return stale();
                    };
                    self.insert_crashed(vm, record);
                    return Ok(Adopted::Crashed);
                }
                Err(e) => return Err(e.into()),
            };
            match tokio::time::timeout(ADOPT_TIMEOUT, self.attach(vm, stream, &socket, started))
                .await
            {
                Ok(Ok(attached)) => break attached,
                // A VMM being killed still listens for a moment after it stopped running
                // (its files close last): it takes the connection and drops it. Asking
                // again soon finds the socket refused.
                Ok(Err(_)) if attempts < ATTACH_RETRIES => {
                    attempts += 1;
                    tokio::time::sleep(ATTACH_RETRY_PAUSE).await;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(Error::Timeout {
                        what: format!("ovm-vmm at {} to answer", socket.display()),
                        after: ADOPT_TIMEOUT,
                    });
                }
            }
        };
        let vm_state = match state.state {
            crate::vmm::RunState::Running => VmState::Running,
            crate::vmm::RunState::Paused => VmState::Paused,
            crate::vmm::RunState::Created => {
                // Built but never started: whoever started it died before `start`.
                let _ = self.call(&run, &Request::Shutdown, ADOPT_TIMEOUT).await;
                if !pidfd.wait_exit(ADOPT_TIMEOUT).await {
                    let _ = pidfd.kill();
                    pidfd.wait_exit(ADOPT_TIMEOUT).await;
                }
                return stale();
            }
            crate::vmm::RunState::Exited => {
                pidfd.wait_exit(ADOPT_TIMEOUT).await;
                return stale();
            }
        };
        let Some(record) = record else {
            return Err(Error::backend(
                BACKEND,
                format!(
                    "{}: vm.json is missing or unreadable, so the VM cannot be described (its VMM, pid {}, is left running)",
                    dir.display(),
                    run.pid
                ),
            ));
        };
        let console: Vec<u8> = match self.call_ok(vm, &run, Request::Console).await {
            Ok(v) => serde_json::from_value(v.unwrap_or_default()).unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let (state_tx, _) = watch::channel(vm_state);
        let (console_tx, _) = broadcast::channel(256);
        {
            let mut vms = lock(&self.inner.vms);
            if vms.contains_key(&vm) {
                return Err(Error::AlreadyExists {
                    kind: "vm",
                    id: vm.to_string(),
                });
            }
            let skip = console.len().saturating_sub(CONSOLE_KEEP_BYTES);
            vms.insert(
                vm,
                VmEntry {
                    config: record.config,
                    vmm_config: record.vmm_config,
                    state_tx,
                    run: Some(run.clone()),
                    stop_requested: false,
                    console: Arc::new(Mutex::new(console[skip..].iter().copied().collect())),
                    console_tx,
                    published: Arc::new(Mutex::new(HashMap::new())),
                },
            );
        }
        self.spawn_supervisor(vm, &run, VmmProcess::Detached(pidfd), lines, false);
        Ok(Adopted::Running)
    }

    /// Lists a VM whose VMM died unseen as crashed (its console log stays until
    /// `undefine`).
    fn insert_crashed(&self, vm: VmId, record: VmRecord) {
        let (state_tx, _) = watch::channel(VmState::Crashed);
        let (console_tx, _) = broadcast::channel(16);
        let mut vms = lock(&self.inner.vms);
        vms.entry(vm).or_insert(VmEntry {
            config: record.config,
            vmm_config: record.vmm_config,
            state_tx,
            run: None,
            stop_requested: false,
            console: Arc::new(Mutex::new(VecDeque::new())),
            console_tx,
            published: Arc::new(Mutex::new(HashMap::new())),
        });
    }

    /// Runs [`Self::supervise`] for `process` in a task of its own. With `report_start`,
    /// the receiver hears how the guest's start went (for a VM being started; an adopted
    /// one is already running).
    fn spawn_supervisor(
        &self,
        vm: VmId,
        run: &Arc<RunningVm>,
        process: VmmProcess,
        lines: EventLines,
        report_start: bool,
    ) -> oneshot::Receiver<Result<()>> {
        let (started_tx, started_rx) = oneshot::channel();
        let (me, run) = (self.clone(), run.clone());
        let started = report_start.then_some(started_tx);
        tokio::spawn(async move { me.supervise(vm, run, process, lines, started).await });
        started_rx
    }

    /// Follows one VMM process to its end.
    async fn supervise(
        self,
        vm: VmId,
        run: Arc<RunningVm>,
        mut process: VmmProcess,
        mut lines: EventLines,
        started: Option<oneshot::Sender<Result<()>>>,
    ) {
        let (console, console_tx, published) = match lock(&self.inner.vms).get(&vm) {
            Some(e) => (e.console.clone(), e.console_tx.clone(), e.published.clone()),
            None => return,
        };
        let mut started = started;
        let mut exit: Option<ExitReason> = None;
        let mut build_error: Option<String> = None;
        loop {
            let line = tokio::select! {
                line = lines.next_line() => match line {
                    Ok(Some(line)) => line,
                    Ok(None) | Err(_) => {
                        // A detached VMM drops a subscriber that does not keep up; if the
                        // process lives on, subscribe again.
                        if exit.is_none()
                            && let VmmProcess::Detached(pidfd) = &process
                            && !pidfd.wait_exit(Duration::from_secs(1)).await
                            && let Ok(stream) = connect_socket(&run.socket).await
                            && let Ok(again) = subscribe(stream).await
                        {
                            lines = again;
                            continue;
                        }
                        break;
                    }
                },
                () = run.kill.notified() => {
                    // The process ends; its events close and the loop ends with them.
                    process.kill();
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
        let status = process.wait().await;
        if self.inner.opts.detached {
            // A killed VMM leaves its socket behind.
            let _ = std::fs::remove_file(&run.socket);
        }
        let stop_requested = lock(&self.inner.vms)
            .get(&vm)
            .is_some_and(|e| e.stop_requested);
        if let Some(tx) = started.take() {
            let detail = build_error.unwrap_or_else(|| format!("ovm-vmm exited: {status}"));
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
                        "ovm-vmm (pid {}) ended without an exit report: {status}",
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
        let (known, run, published) = {
            let vms = lock(&self.inner.vms);
            let e = vms.get(&vm).ok_or_else(|| not_found(vm))?;
            let known = lock(&e.published).get(key).cloned();
            (known, e.run.clone(), e.published.clone())
        };
        if known.is_some() {
            return Ok(known);
        }
        // An adopted VM may have published before we followed its events: ask its VMM.
        let Some(run) = run.filter(|_| self.inner.opts.detached) else {
            return Ok(None);
        };
        let request = Request::GuestRead { key: key.into() };
        let value: Option<Vec<u8>> = match self.call_ok(vm, &run, request).await {
            Ok(v) => serde_json::from_value(v.unwrap_or_default()).unwrap_or(None),
            Err(_) => None,
        };
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

/// Connects to a VMM's control socket, however deep its directory is.
async fn connect_socket(socket: &Path) -> std::io::Result<tokio::net::UnixStream> {
    let at = crate::socket_path::SocketPath::new(socket)?;
    tokio::net::UnixStream::connect(at.as_path()).await
}
