//! `XenHypervisor`: ovm's `Hypervisor` on Xen, run by the agent in dom0.
//!
//! A VM's definition lives in the state directory (`<state_dir>/<vm id>/domain.cfg`, the
//! generated xl configuration, and `vm.json`, the `VmConfig` it came from); Xen knows a
//! domain only while it exists. The domain carries the VM id as its UUID, so `xl list -v`
//! maps domains back to VMs whatever their names. Commands address a domain by the domid
//! just listed, never by a name that `xl` might read as a number or an option.

use ovm_core::sync::lock;
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use ovm_core::hypervisor::{ConsoleStream, MigrationTarget, VmEventKind, VmStats};
use ovm_core::model::{DomainType, VmState};
use ovm_core::{
    Capabilities, Error, HostInfo, Hypervisor, Result, ServerId, VmConfig, VmEvent, VmId,
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::config::{self, ConfigOptions};
use crate::console;
use crate::error::{BACKEND, XlError};
use crate::parse::{self, ListedDomain, XlInfo};
use crate::runner::{XlRunner, args};

/// Most vCPUs ovm gives a Xen guest (Xen 4.17's limit for HVM guests).
pub const MAX_VCPUS: u32 = 128;

/// How the backend is set up on one dom0.
#[derive(Debug, Clone)]
pub struct XenOptions {
    /// Where VM definitions are kept (one directory per VM).
    pub state_dir: PathBuf,
    /// Where xenconsoled writes `guest-<name>.log` (its `--log-dir`).
    pub console_log_dir: PathBuf,
    /// Lifecycle actions, bootloader and firmware of generated configurations.
    pub config: ConfigOptions,
    /// This server's id, for migration targets.
    pub server_id: ServerId,
    /// Address other dom0s reach this one at for migration (`xl migrate` over ssh);
    /// `xl info`'s host name when `None`.
    pub migration_host: Option<String>,
    /// Time limit of one ordinary `xl` command.
    pub command_timeout: Duration,
    /// Time limit of `xl save`, `restore` and `migrate`, which copy guest memory.
    pub transfer_timeout: Duration,
    /// How often a graceful stop checks whether the domain is gone.
    pub poll_interval: Duration,
    /// How often a background task lists domains to report guest-initiated changes
    /// (power-off, crash, reboot) as events; `None` for no such task.
    pub watch_interval: Option<Duration>,
}

impl XenOptions {
    /// Options with the usual dom0 paths under `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        XenOptions {
            state_dir: state_dir.into(),
            console_log_dir: PathBuf::from("/var/log/xen/console"),
            config: ConfigOptions::default(),
            server_id: ServerId::new(),
            migration_host: None,
            command_timeout: Duration::from_secs(120),
            transfer_timeout: Duration::from_secs(30 * 60),
            poll_interval: Duration::from_millis(250),
            watch_interval: Some(Duration::from_secs(2)),
        }
    }
}

impl Default for XenOptions {
    fn default() -> Self {
        Self::new("/var/lib/ovm/xen")
    }
}

/// What is kept in `vm.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredVm {
    config: VmConfig,
    /// Length of the console log when the VM last started.
    #[serde(default)]
    console_offset: u64,
}

/// What the backend last saw of a VM's domain.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Seen {
    domid: u32,
    state: VmState,
}

#[derive(Debug)]
struct VmEntry {
    stored: StoredVm,
    /// Held by every state-changing operation on the VM, so they do not interleave.
    op: Arc<tokio::sync::Mutex<()>>,
    last_seen: Option<Seen>,
}

#[derive(Debug)]
struct Inner {
    xl: Arc<dyn XlRunner>,
    opts: XenOptions,
    info: XlInfo,
    caps: Capabilities,
    vms: Mutex<HashMap<VmId, VmEntry>>,
    events: broadcast::Sender<VmEvent>,
}

/// The Xen backend (see the module docs). Cheap to clone: clones share one state.
#[derive(Debug, Clone)]
pub struct XenHypervisor {
    inner: Arc<Inner>,
}

fn wrong_state(vm: VmId, state: VmState, op: &str) -> Error {
    Error::InvalidState {
        kind: "vm",
        id: vm.to_string(),
        state: state.to_string(),
        op: op.to_string(),
    }
}

async fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::rename(&tmp, path).await
}

fn io_error(what: String, e: std::io::Error) -> Error {
    Error::Backend {
        backend: BACKEND.into(),
        message: format!("{what}: {e}"),
        source: Some(Arc::new(e)),
    }
}

impl XenHypervisor {
    /// Connects to the toolstack through `xl` (asks `xl info` for the host's capabilities)
    /// and loads the VM definitions kept in `opts.state_dir`.
    pub async fn connect(xl: Arc<dyn XlRunner>, opts: XenOptions) -> Result<Self> {
        let text = xl
            .run(&args(["info"]), opts.command_timeout)
            .await
            .map_err(Error::from)?;
        let info = XlInfo::parse(&text).map_err(Error::from)?;
        let domain_types = info.domain_types();
        let caps = Capabilities {
            live_migration: domain_types.iter().any(|t| info.can_migrate(*t)),
            domain_types,
            pause: true,
            console: true,
            guest_messages: false,
            snapshot: true,
            hotplug: true,
            test_guest: false,
            max_vcpus: MAX_VCPUS,
        };
        tokio::fs::create_dir_all(&opts.state_dir)
            .await
            .map_err(|e| io_error(format!("create {}", opts.state_dir.display()), e))?;
        let vms = load_definitions(&opts.state_dir).await?;
        let (events, _) = broadcast::channel(256);
        let hv = XenHypervisor {
            inner: Arc::new(Inner {
                xl,
                opts,
                info,
                caps,
                vms: Mutex::new(vms),
                events,
            }),
        };
        if let Some(every) = hv.inner.opts.watch_interval {
            tokio::spawn(watch(Arc::downgrade(&hv.inner), every));
        }
        Ok(hv)
    }

    /// `xl info` as read when connecting.
    pub fn xl_info(&self) -> &XlInfo {
        &self.inner.info
    }

    /// The generated configuration file of a defined VM.
    pub fn config_path(&self, vm: VmId) -> PathBuf {
        self.inner.vm_dir(vm).join("domain.cfg")
    }

    /// The domains Xen runs now as `xl list -l` reports them (dom0 included).
    pub async fn domain_records(&self) -> Result<Vec<parse::DomainRecord>> {
        let text = self.inner.xl(args(["list", "-l"])).await?;
        Ok(parse::parse_list_long(&text)?)
    }

    /// Asks the guest to reboot (`xl reboot`; `-F` falls back to an ACPI event for HVM
    /// guests without PV drivers).
    pub async fn reboot(&self, vm: VmId) -> Result<()> {
        let inner = &self.inner;
        let (stored, op) = inner.entry(vm)?;
        let _op = op.lock().await;
        let d = inner.require_active(vm, "reboot").await?;
        let mut a = args(["reboot"]);
        if stored.config.spec.domain_type != DomainType::Pv {
            a.push("-F".into());
        }
        a.push(d.domid.to_string().into());
        inner.xl(a).await?;
        inner.emit(vm, VmEventKind::Rebooted);
        Ok(())
    }
}

async fn load_definitions(dir: &Path) -> Result<HashMap<VmId, VmEntry>> {
    let mut vms = HashMap::new();
    let mut rd = tokio::fs::read_dir(dir)
        .await
        .map_err(|e| io_error(format!("read {}", dir.display()), e))?;
    while let Some(ent) = rd
        .next_entry()
        .await
        .map_err(|e| io_error(format!("read {}", dir.display()), e))?
    {
        let Some(id) = ent
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<VmId>().ok())
        else {
            continue;
        };
        let path = ent.path().join("vm.json");
        let stored: StoredVm = match tokio::fs::read(&path).await {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping unreadable VM definition");
                    continue;
                }
            },
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "skipping VM directory without vm.json");
                continue;
            }
        };
        if stored.config.id != id {
            tracing::warn!(path = %path.display(), "skipping VM definition stored under another id");
            continue;
        }
        vms.insert(
            id,
            VmEntry {
                stored,
                op: Arc::new(tokio::sync::Mutex::new(())),
                last_seen: None,
            },
        );
    }
    Ok(vms)
}

/// Lists domains every `every` and reports what guests did on their own as events.
async fn watch(inner: Weak<Inner>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        match inner.domains().await {
            Ok(domains) => {
                let ids: Vec<VmId> = inner.lock().keys().copied().collect();
                for id in ids {
                    let d = domains.iter().find(|d| d.vm_id() == Some(id));
                    inner.observe(id, d);
                }
            }
            Err(e) => tracing::debug!(error = %e, "xen watcher: xl list failed"),
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<VmId, VmEntry>> {
        // The map stays consistent even if a holder panicked: every update is one insert,
        // remove or field store.
        lock(&self.vms)
    }

    fn vm_dir(&self, vm: VmId) -> PathBuf {
        self.opts.state_dir.join(vm.to_string())
    }

    fn entry(&self, vm: VmId) -> Result<(StoredVm, Arc<tokio::sync::Mutex<()>>)> {
        self.lock()
            .get(&vm)
            .map(|e| (e.stored.clone(), e.op.clone()))
            .ok_or_else(|| Error::not_found("vm", vm))
    }

    async fn xl(&self, a: Vec<OsString>) -> Result<String, XlError> {
        self.xl.run(&a, self.opts.command_timeout).await
    }

    async fn xl_transfer(&self, a: Vec<OsString>) -> Result<String, XlError> {
        self.xl.run(&a, self.opts.transfer_timeout).await
    }

    /// `xl list -v`, read again (at most twice) if `xl` dies of a signal: listing races
    /// with domains being built or torn down, and a listing has no effect to repeat.
    async fn domains(&self) -> Result<Vec<ListedDomain>> {
        let mut attempt = 0;
        let text = loop {
            match self.xl(args(["list", "-v"])).await {
                Ok(text) => break text,
                Err(e) if e.is_signal() && attempt < 2 => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "xl list died; listing again");
                    tokio::time::sleep(self.opts.poll_interval).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        Ok(parse::parse_list_verbose(&text)?)
    }

    async fn domain_of(&self, vm: VmId) -> Result<Option<ListedDomain>> {
        Ok(self
            .domains()
            .await?
            .into_iter()
            .find(|d| d.vm_id() == Some(vm)))
    }

    /// The VM's domain, which must be running or paused for `op`.
    async fn require_active(&self, vm: VmId, op: &str) -> Result<ListedDomain> {
        match self.domain_of(vm).await? {
            Some(d) if matches!(d.flags.vm_state(), VmState::Running | VmState::Paused) => Ok(d),
            Some(d) => Err(wrong_state(vm, d.flags.vm_state(), op)),
            None => Err(wrong_state(vm, VmState::Stopped, op)),
        }
    }

    fn emit(&self, vm: VmId, kind: VmEventKind) {
        // No subscribers is fine: events are for whoever listens.
        let _ = self.events.send(VmEvent { vm, kind });
    }

    /// Records what an operation of ours left behind, so the watcher does not report it.
    fn expect(&self, vm: VmId, seen: Option<Seen>) {
        if let Some(e) = self.lock().get_mut(&vm) {
            e.last_seen = seen;
        }
    }

    /// Compares a listing with what was last seen and reports changes nobody here made.
    /// Skipped while an operation holds the VM: it records its own outcome.
    fn observe(&self, vm: VmId, domain: Option<&ListedDomain>) {
        let now = domain.map(|d| Seen {
            domid: d.domid,
            state: d.flags.vm_state(),
        });
        let event = {
            let mut vms = self.lock();
            let Some(e) = vms.get_mut(&vm) else { return };
            if e.op.try_lock().is_err() {
                return;
            }
            let prev = std::mem::replace(&mut e.last_seen, now);
            match (prev, now) {
                (Some(_), None) => Some(VmEventKind::PoweredOff),
                (None, Some(n)) if n.state != VmState::Crashed => Some(VmEventKind::Started),
                (prev, Some(n)) if n.state == VmState::Crashed => (prev.map(|p| p.state)
                    != Some(VmState::Crashed))
                .then(|| VmEventKind::Crashed {
                    reason: format!("xl list shows domain {} crashed", n.domid),
                }),
                (Some(p), Some(n)) if p.domid != n.domid => Some(VmEventKind::Rebooted),
                (Some(p), Some(n)) if p.state == VmState::Running && n.state == VmState::Paused => {
                    Some(VmEventKind::Paused)
                }
                (Some(p), Some(n)) if p.state == VmState::Paused && n.state == VmState::Running => {
                    Some(VmEventKind::Resumed)
                }
                _ => None,
            }
        };
        if let Some(kind) = event {
            self.emit(vm, kind);
        }
    }

    fn seen(d: &ListedDomain) -> Seen {
        Seen {
            domid: d.domid,
            state: d.flags.vm_state(),
        }
    }

    fn check_type(&self, domain_type: DomainType) -> Result<()> {
        if self.caps.domain_types.contains(&domain_type) {
            return Ok(());
        }
        Err(Error::unsupported(
            format!(
                "{} domains (this Xen reports virt_caps {:?}: no hardware virtualisation with HAP or shadow paging)",
                domain_type.as_str(),
                self.info.field("virt_caps").unwrap_or("")
            ),
            BACKEND,
        ))
    }

    async fn write_definition(&self, stored: &StoredVm, cfg_text: &str) -> Result<()> {
        let dir = self.vm_dir(stored.config.id);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| io_error(format!("create {}", dir.display()), e))?;
        let cfg_path = dir.join("domain.cfg");
        write_atomic(&cfg_path, cfg_text.as_bytes())
            .await
            .map_err(|e| io_error(format!("write {}", cfg_path.display()), e))?;
        self.write_stored(stored).await
    }

    async fn write_stored(&self, stored: &StoredVm) -> Result<()> {
        let path = self.vm_dir(stored.config.id).join("vm.json");
        let json = serde_json::to_vec_pretty(stored)?;
        write_atomic(&path, &json)
            .await
            .map_err(|e| io_error(format!("write {}", path.display()), e))
    }

    fn console_log(&self, stored: &StoredVm) -> PathBuf {
        console::log_path(&self.opts.console_log_dir, &stored.config.spec.name)
    }

    /// Remembers where this run's console output starts.
    async fn mark_console(&self, vm: VmId, stored: &mut StoredVm) -> Result<()> {
        let log = self.console_log(stored);
        stored.console_offset = console::log_len(&log)
            .await
            .map_err(|e| io_error(format!("stat {}", log.display()), e))?;
        self.write_stored(stored).await?;
        if let Some(e) = self.lock().get_mut(&vm) {
            e.stored.console_offset = stored.console_offset;
        }
        Ok(())
    }

    /// Destroys a dead domain (crashed or shut down and preserved) left by a VM's last run.
    async fn clear_remains(&self, vm: VmId, d: &ListedDomain) -> Result<()> {
        tracing::info!(%vm, domid = d.domid, "destroying the remains of the VM's last run");
        match self
            .xl(args(["destroy".to_string(), d.domid.to_string()]))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_no_such_domain() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits until the VM has no domain (or only a shut-down one), up to `deadline`.
    async fn wait_gone(&self, vm: VmId, deadline: tokio::time::Instant) -> Result<bool> {
        loop {
            match self.domain_of(vm).await? {
                None => return Ok(true),
                Some(d) if d.flags.shutdown && !d.flags.crashed => return Ok(true),
                Some(_) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(self.opts.poll_interval).await;
        }
    }

    async fn destroy_if_present(&self, vm: VmId) -> Result<()> {
        if let Some(d) = self.domain_of(vm).await? {
            match self
                .xl(args(["destroy".to_string(), d.domid.to_string()]))
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_no_such_domain() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Hypervisor for XenHypervisor {
    fn backend(&self) -> &str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.caps.clone()
    }

    async fn host_info(&self) -> Result<HostInfo> {
        let text = self.inner.xl(args(["info"])).await?;
        Ok(XlInfo::parse(&text)?.host_info())
    }

    async fn define(&self, config: &VmConfig) -> Result<()> {
        let inner = &self.inner;
        config.spec.validate()?;
        inner.check_type(config.spec.domain_type)?;
        let cfg_text = config::render(config, &inner.opts.config)?;
        let stored = StoredVm {
            config: config.clone(),
            console_offset: 0,
        };
        {
            let mut vms = inner.lock();
            if vms.contains_key(&config.id) {
                return Err(Error::AlreadyExists {
                    kind: "vm",
                    id: config.id.to_string(),
                });
            }
            if let Some((other, _)) = vms
                .iter()
                .find(|(_, e)| e.stored.config.spec.name == config.spec.name)
            {
                return Err(Error::invalid(
                    "vm.name",
                    format!(
                        "{:?} is already the domain name of vm {other} on this host",
                        config.spec.name
                    ),
                ));
            }
            vms.insert(
                config.id,
                VmEntry {
                    stored: stored.clone(),
                    op: Arc::new(tokio::sync::Mutex::new(())),
                    last_seen: None,
                },
            );
        }
        if let Err(e) = inner.write_definition(&stored, &cfg_text).await {
            inner.lock().remove(&config.id);
            let _ = tokio::fs::remove_dir_all(inner.vm_dir(config.id)).await;
            return Err(e);
        }
        Ok(())
    }

    async fn undefine(&self, vm: VmId) -> Result<()> {
        let inner = &self.inner;
        let (_, op) = inner.entry(vm)?;
        let _op = op.lock().await;
        if let Some(d) = inner.domain_of(vm).await? {
            let state = d.flags.vm_state();
            if state.is_active() && !d.flags.shutdown {
                return Err(wrong_state(vm, state, "undefine"));
            }
            inner.clear_remains(vm, &d).await?;
        }
        let dir = inner.vm_dir(vm);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(format!("remove {}", dir.display()), e)),
        }
        inner.lock().remove(&vm);
        Ok(())
    }

    async fn start(&self, vm: VmId) -> Result<()> {
        let inner = &self.inner;
        let (mut stored, op) = inner.entry(vm)?;
        let _op = op.lock().await;
        let spec = &stored.config.spec;
        inner.check_type(spec.domain_type)?;
        if let Some(d) = inner.domain_of(vm).await? {
            if d.flags.crashed || d.flags.shutdown {
                inner.clear_remains(vm, &d).await?;
            } else {
                return Err(wrong_state(vm, d.flags.vm_state(), "start"));
            }
        }
        let host = XlInfo::parse(&inner.xl(args(["info"])).await?)?;
        if spec.memory_mib > host.free_memory_mib() {
            return Err(Error::capacity(format!(
                "vm {} needs {} MiB, Xen on {} has {} MiB free",
                spec.name,
                spec.memory_mib,
                host.host(),
                host.free_memory_mib()
            )));
        }
        inner.mark_console(vm, &mut stored).await?;
        let cfg = inner.vm_dir(vm).join("domain.cfg");
        inner
            .xl(vec!["create".into(), cfg.into_os_string()])
            .await?;
        let seen = inner.domain_of(vm).await?.map(|d| Inner::seen(&d));
        inner.expect(vm, seen);
        inner.emit(vm, VmEventKind::Started);
        Ok(())
    }

    async fn stop(&self, vm: VmId, timeout: Duration) -> Result<()> {
        let inner = &self.inner;
        let (stored, op) = inner.entry(vm)?;
        let _op = op.lock().await;
        let Some(d) = inner.domain_of(vm).await? else {
            return Err(wrong_state(vm, VmState::Stopped, "stop"));
        };
        if d.flags.crashed || d.flags.shutdown {
            inner.clear_remains(vm, &d).await?;
        } else {
            if d.flags.paused {
                // A paused guest cannot act on a shutdown request.
                inner
                    .xl(args(["unpause".to_string(), d.domid.to_string()]))
                    .await?;
            }
            let mut a = args(["shutdown"]);
            if stored.config.spec.domain_type != DomainType::Pv {
                // HVM guests without PV drivers get an ACPI power button instead.
                a.push("-F".into());
            }
            a.push(d.domid.to_string().into());
            let deadline = tokio::time::Instant::now() + timeout;
            // `xl shutdown` itself waits for the guest to acknowledge the request (a
            // booting or hung guest never does): it gets the stop's timeout, no more.
            let asked = match inner.xl.run(&a, timeout.max(Duration::from_secs(1))).await {
                Ok(_) => true,
                Err(e) if e.is_no_such_domain() => true,
                Err(XlError::TimedOut { .. }) => false,
                Err(e) => {
                    tracing::info!(%vm, error = %e, "graceful shutdown refused; destroying");
                    false
                }
            };
            if !asked || !inner.wait_gone(vm, deadline).await? {
                tracing::info!(%vm, ?timeout, "guest did not shut down in time; destroying");
            }
            inner.destroy_if_present(vm).await?;
        }
        inner.expect(vm, None);
        inner.emit(vm, VmEventKind::Stopped);
        Ok(())
    }

    async fn kill(&self, vm: VmId) -> Result<()> {
        let inner = &self.inner;
        let (_, op) = inner.entry(vm)?;
        let _op = op.lock().await;
        inner.destroy_if_present(vm).await?;
        inner.expect(vm, None);
        inner.emit(vm, VmEventKind::Stopped);
        Ok(())
    }

    async fn pause(&self, vm: VmId) -> Result<()> {
        let inner = &self.inner;
        let (_, op) = inner.entry(vm)?;
        let _op = op.lock().await;
        let d = inner.require_active(vm, "pause").await?;
        if d.flags.paused {
            return Err(wrong_state(vm, VmState::Paused, "pause"));
        }
        inner
            .xl(args(["pause".to_string(), d.domid.to_string()]))
            .await?;
        inner.expect(
            vm,
            Some(Seen {
                domid: d.domid,
                state: VmState::Paused,
            }),
        );
        inner.emit(vm, VmEventKind::Paused);
        Ok(())
    }

    async fn resume(&self, vm: VmId) -> Result<()> {
        let inner = &self.inner;
        let (_, op) = inner.entry(vm)?;
        let _op = op.lock().await;
        let d = inner.require_active(vm, "resume").await?;
        if !d.flags.paused {
            return Err(wrong_state(vm, d.flags.vm_state(), "resume"));
        }
        inner
            .xl(args(["unpause".to_string(), d.domid.to_string()]))
            .await?;
        inner.expect(
            vm,
            Some(Seen {
                domid: d.domid,
                state: VmState::Running,
            }),
        );
        inner.emit(vm, VmEventKind::Resumed);
        Ok(())
    }

    async fn state(&self, vm: VmId) -> Result<VmState> {
        let inner = &self.inner;
        inner.entry(vm)?;
        let d = inner.domain_of(vm).await?;
        inner.observe(vm, d.as_ref());
        Ok(d.map_or(VmState::Stopped, |d| d.flags.vm_state()))
    }

    async fn list(&self) -> Result<Vec<(VmId, VmState)>> {
        let inner = &self.inner;
        let domains = inner.domains().await?;
        let ids: Vec<VmId> = inner.lock().keys().copied().collect();
        Ok(ids
            .into_iter()
            .map(|id| {
                let d = domains.iter().find(|d| d.vm_id() == Some(id));
                inner.observe(id, d);
                (id, d.map_or(VmState::Stopped, |d| d.flags.vm_state()))
            })
            .collect())
    }

    async fn stats(&self, vm: VmId) -> Result<VmStats> {
        let inner = &self.inner;
        inner.entry(vm)?;
        let d = inner.require_active(vm, "read stats of").await?;
        let uptime = parse::parse_uptime(
            &inner
                .xl(args(["uptime".to_string(), d.domid.to_string()]))
                .await?,
        )?;
        Ok(VmStats {
            cpu_time_ns: u64::try_from(d.cpu_time().as_nanos()).unwrap_or(u64::MAX),
            memory_mib: d.memory_mib,
            // A Xen guest's memory is host memory given to it; its device models, if
            // any, run in dom0 and are not counted here.
            host_rss_bytes: d.memory_mib.saturating_mul(1 << 20),
            uptime_ms: u64::try_from(uptime.as_millis()).unwrap_or(u64::MAX),
        })
    }

    async fn console_buffer(&self, vm: VmId) -> Result<Vec<u8>> {
        let inner = &self.inner;
        let (stored, _) = inner.entry(vm)?;
        let log = inner.console_log(&stored);
        console::read_from(&log, stored.console_offset, console::CONSOLE_BUFFER_MAX)
            .await
            .map_err(|e| io_error(format!("read {}", log.display()), e))
    }

    async fn console_stream(&self, vm: VmId) -> Result<ConsoleStream> {
        let inner = &self.inner;
        let (stored, _) = inner.entry(vm)?;
        let log = inner.console_log(&stored);
        let offset = console::log_len(&log)
            .await
            .map_err(|e| io_error(format!("stat {}", log.display()), e))?;
        let poll = inner.opts.poll_interval;
        let weak = Arc::downgrade(&self.inner);
        // Follows the log; ends when the VM has had no domain for a check (about every
        // 20 idle polls) or the backend is gone.
        let stream = futures::stream::unfold(
            (log, offset, 0u32),
            move |(log, mut offset, mut idle)| {
                let weak = weak.clone();
                async move {
                    loop {
                        match console::read_new(&log, &mut offset).await {
                            Ok(Some(chunk)) => return Some((chunk, (log, offset, 0))),
                            Ok(None) => {}
                            Err(e) => {
                                tracing::warn!(path = %log.display(), error = %e, "console stream ends");
                                return None;
                            }
                        }
                        idle += 1;
                        if idle % 20 == 0 {
                            let inner = weak.upgrade()?;
                            if let Ok(None) = inner.domain_of(vm).await {
                                return None;
                            }
                        }
                        tokio::time::sleep(poll).await;
                    }
                }
            },
        );
        Ok(Box::pin(stream))
    }

    async fn save(&self, vm: VmId, path: &Path) -> Result<()> {
        let inner = &self.inner;
        let (_, op) = inner.entry(vm)?;
        let _op = op.lock().await;
        let d = inner.require_active(vm, "save").await?;
        let a = vec![
            "save".into(),
            d.domid.to_string().into(),
            path.as_os_str().to_owned(),
        ];
        inner.xl_transfer(a).await?;
        inner.expect(vm, None);
        inner.emit(vm, VmEventKind::Stopped);
        Ok(())
    }

    async fn restore(&self, config: &VmConfig, path: &Path) -> Result<()> {
        let inner = &self.inner;
        let vm = config.id;
        config.spec.validate()?;
        inner.check_type(config.spec.domain_type)?;
        let cfg_text = config::render(config, &inner.opts.config)?;
        if inner.entry(vm).is_err() {
            self.define(config).await?;
        }
        let (mut stored, op) = inner.entry(vm)?;
        let _op = op.lock().await;
        if let Some(d) = inner.domain_of(vm).await? {
            return Err(wrong_state(vm, d.flags.vm_state(), "restore"));
        }
        if stored.config != *config {
            // The snapshot brings its configuration: it replaces the definition.
            stored.config = config.clone();
            inner.write_definition(&stored, &cfg_text).await?;
            if let Some(e) = inner.lock().get_mut(&vm) {
                e.stored.config = config.clone();
            }
        }
        inner.mark_console(vm, &mut stored).await?;
        let cfg = inner.vm_dir(vm).join("domain.cfg");
        inner
            .xl_transfer(vec![
                "restore".into(),
                cfg.into_os_string(),
                path.as_os_str().to_owned(),
            ])
            .await?;
        let seen = inner.domain_of(vm).await?.map(|d| Inner::seen(&d));
        inner.expect(vm, seen);
        inner.emit(vm, VmEventKind::Started);
        Ok(())
    }

    async fn migrate_prepare(&self, config: &VmConfig) -> Result<MigrationTarget> {
        let inner = &self.inner;
        inner.check_type(config.spec.domain_type)?;
        if !inner.info.can_migrate(config.spec.domain_type) {
            return Err(migration_unsupported(&inner.info, config.spec.domain_type));
        }
        let here = match inner.entry(config.id) {
            Ok(_) => inner.domain_of(config.id).await?.is_some(),
            Err(_) => {
                self.define(config).await?;
                false
            }
        };
        let address = if here {
            "local".to_string()
        } else {
            let host = inner
                .opts
                .migration_host
                .clone()
                .unwrap_or_else(|| inner.info.host().to_string());
            format!("ssh:{host}")
        };
        Ok(MigrationTarget {
            server: inner.opts.server_id,
            address,
        })
    }

    async fn migrate_send(&self, vm: VmId, target: &MigrationTarget) -> Result<()> {
        let inner = &self.inner;
        let (stored, op) = inner.entry(vm)?;
        let dt = stored.config.spec.domain_type;
        if !inner.info.can_migrate(dt) {
            return Err(migration_unsupported(&inner.info, dt));
        }
        let _op = op.lock().await;
        let d = inner.require_active(vm, "migrate").await?;
        let domid = d.domid.to_string();
        let local = target.address == "local";
        let a = if local {
            // An empty ssh command makes xl run the "host" argument itself: the receiver
            // is this dom0's own `xl migrate-receive`.
            args(["migrate", "-s", "", &domid, "xl migrate-receive"])
        } else {
            let host = target
                .address
                .strip_prefix("ssh:")
                .unwrap_or(&target.address);
            if host.is_empty()
                || host.starts_with('-')
                || host.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(Error::invalid(
                    "migration.address",
                    format!("{:?} is not `local` or `ssh:HOST`", target.address),
                ));
            }
            args(["migrate", &domid, host])
        };
        inner.xl_transfer(a).await?;
        if local {
            let seen = inner.domain_of(vm).await?.map(|d| Inner::seen(&d));
            inner.expect(vm, seen);
        } else {
            inner.expect(vm, None);
            inner.emit(vm, VmEventKind::Stopped);
        }
        Ok(())
    }

    async fn set_vcpus(&self, vm: VmId, vcpus: u32) -> Result<()> {
        let inner = &self.inner;
        let (stored, op) = inner.entry(vm)?;
        let max = stored.config.spec.vcpus;
        if vcpus == 0 || vcpus > max {
            return Err(Error::invalid(
                "vcpus",
                format!(
                    "{vcpus} is outside 1..={max} (the domain's maximum is its vcpus at start)"
                ),
            ));
        }
        let _op = op.lock().await;
        let d = inner.require_active(vm, "set vcpus of").await?;
        // ovm's placement decides overcommit; xl's own check would refuse more vCPUs
        // than physical CPUs.
        inner
            .xl(args([
                "vcpu-set".to_string(),
                "--ignore-host".to_string(),
                d.domid.to_string(),
                vcpus.to_string(),
            ]))
            .await?;
        Ok(())
    }

    async fn set_memory(&self, vm: VmId, memory_mib: u64) -> Result<()> {
        let inner = &self.inner;
        let (stored, op) = inner.entry(vm)?;
        let max = stored.config.spec.max_memory_mib;
        if memory_mib == 0 || memory_mib > max {
            return Err(Error::invalid(
                "memory_mib",
                format!("{memory_mib} MiB is outside 1..={max} MiB (the VM's max_memory_mib)"),
            ));
        }
        let _op = op.lock().await;
        let d = inner.require_active(vm, "set memory of").await?;
        inner
            .xl(args([
                "mem-set".to_string(),
                d.domid.to_string(),
                format!("{memory_mib}m"),
            ]))
            .await?;
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<VmEvent> {
        self.inner.events.subscribe()
    }

    fn vm_dir(&self, vm: VmId) -> Option<PathBuf> {
        Some(self.inner.vm_dir(vm))
    }
}

fn migration_unsupported(info: &XlInfo, dt: DomainType) -> Error {
    Error::unsupported(
        format!(
            "live migration of {} domains (it tracks dirty memory with {}, which this Xen lacks: virt_caps {:?})",
            dt.as_str(),
            if dt == DomainType::Pv {
                "shadow paging"
            } else {
                "HAP or shadow paging"
            },
            info.field("virt_caps").unwrap_or("")
        ),
        BACKEND,
    )
}
