//! ovm-backends: the one place that decides which backends a process on this machine
//! drives — the simulator, KVM where /dev/kvm works, Xen where this machine is a dom0 —
//! and the built-in storage plugins. The `ovm` command line, the Python package and the
//! per-server agent build their backends here, so they see the same servers the same way.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let backends = ovm_backends::LocalBackends::shared(dir.path()).build().unwrap();
//! assert_eq!(backends.kinds[0], ovm_backends::BackendKind::Sim);
//! ```
#![warn(missing_docs)]

mod kind;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ovm_core::sim::SimConnector;
use ovm_core::{Connector, Error, Result, StoragePlugin};
use ovm_storage_connect::FsConfig;

pub use kind::{BackendKind, available};

/// What a process drives: the connectors a manager (or agent) is given, and the storage
/// plugins beside them.
pub struct Backends {
    /// The simulator's connector, kept for fault injection and for reading simulated
    /// hosts; in [`Backends::connectors`] only if [`BackendKind::Sim`] was chosen.
    pub sim: Arc<SimConnector>,
    /// One connector per chosen backend, in the order of [`Backends::kinds`].
    pub connectors: Vec<Arc<dyn Connector>>,
    /// The chosen backends.
    pub kinds: Vec<BackendKind>,
    /// The Storage Connect plugins built in: `fs` (repositories on local file systems)
    /// and `sim`.
    pub storage: Vec<Arc<dyn StoragePlugin>>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends")
            .field("kinds", &self.kinds)
            .field("storage", &self.storage.len())
            .finish_non_exhaustive()
    }
}

/// Where the backends keep their state, and whether other processes share it.
#[derive(Debug, Clone)]
enum StateDir {
    /// Beside a store on disk: simulated hosts are persisted and KVM VMMs outlive this
    /// process, so every process on the same store sees the same VMs.
    Shared(PathBuf),
    /// This process's alone: simulated hosts in memory, KVM VMMs tied to this process.
    Private(PathBuf),
}

/// Builds the [`Backends`] of a process on this machine.
#[derive(Clone)]
pub struct LocalBackends {
    state: StateDir,
    only: Option<Vec<BackendKind>>,
    embedded_vmm: Option<(PathBuf, Vec<String>)>,
    fs: FsConfig,
    #[cfg(feature = "xen")]
    xl: Option<Arc<dyn ovm_backend_xen::XlRunner>>,
    xen_console_log_dir: Option<PathBuf>,
}

impl LocalBackends {
    /// Backends sharing their state under `dir` with every other process using the same
    /// directory (the `ovm` CLI keeps it beside its database).
    pub fn shared(dir: impl Into<PathBuf>) -> Self {
        Self::with_state(StateDir::Shared(dir.into()))
    }

    /// Backends whose state is this process's alone; KVM run directories go under `dir`.
    pub fn private(dir: impl Into<PathBuf>) -> Self {
        Self::with_state(StateDir::Private(dir.into()))
    }

    fn with_state(state: StateDir) -> Self {
        LocalBackends {
            state,
            only: None,
            embedded_vmm: None,
            fs: FsConfig::default(),
            #[cfg(feature = "xen")]
            xl: None,
            xen_console_log_dir: None,
        }
    }

    /// Where xenconsoled writes guest logs, if not `/var/log/xen/console`.
    pub fn xen_console_log_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.xen_console_log_dir = Some(dir.into());
        self
    }

    /// Uses exactly these backends, failing [`LocalBackends::build`] with the reason if one
    /// cannot be used here. Without it: every backend usable here.
    pub fn only(mut self, kinds: impl IntoIterator<Item = BackendKind>) -> Self {
        let mut kinds: Vec<BackendKind> = kinds.into_iter().collect();
        kinds.sort();
        kinds.dedup();
        self.only = Some(kinds);
        self
    }

    /// The program embedding the VMM, run as `program ARGS… VMM-ARGS…` where no `ovm-vmm`
    /// binary is installed (`ovm __vmm`, `python -m ovm._vmm`).
    pub fn embedded_vmm(mut self, program: impl Into<PathBuf>, args: Vec<String>) -> Self {
        self.embedded_vmm = Some((program.into(), args));
        self
    }

    /// How the `fs` storage plugin works (defaults: [`FsConfig::default`]).
    pub fn fs_config(mut self, config: FsConfig) -> Self {
        self.fs = config;
        self
    }

    /// Drives Xen through `runner` instead of the `xl` program, and counts Xen as usable
    /// whether or not this machine is a dom0 (tests, or a toolstack wrapper).
    #[cfg(feature = "xen")]
    pub fn xl_runner(mut self, runner: Arc<dyn ovm_backend_xen::XlRunner>) -> Self {
        self.xl = Some(runner);
        self
    }

    /// The directory the backends keep their state in.
    pub fn state_dir(&self) -> &Path {
        match &self.state {
            StateDir::Shared(d) | StateDir::Private(d) => d,
        }
    }

    /// Why `kind` cannot be used by these backends; `None` if it can.
    fn unavailable_reason(&self, kind: BackendKind) -> Option<String> {
        #[cfg(feature = "xen")]
        if kind == BackendKind::Xen && self.xl.is_some() {
            return None;
        }
        kind.unavailable_reason()
    }

    /// Connects nothing yet: makes one connector per chosen backend.
    pub fn build(self) -> Result<Backends> {
        let kinds = match &self.only {
            Some(kinds) => {
                for &kind in kinds {
                    if let Some(reason) = self.unavailable_reason(kind) {
                        return Err(Error::unsupported(
                            format!("{kind} servers: {reason}"),
                            "this machine",
                        ));
                    }
                }
                kinds.clone()
            }
            None => BackendKind::ALL
                .into_iter()
                .filter(|&k| self.unavailable_reason(k).is_none())
                .collect(),
        };
        let dir = self.state_dir().to_path_buf();
        let sim = Arc::new(match &self.state {
            StateDir::Shared(d) => SimConnector::persistent(d.join("sim")),
            StateDir::Private(_) => SimConnector::new(),
        });
        let mut connectors: Vec<Arc<dyn Connector>> = Vec::new();
        for &kind in &kinds {
            connectors.push(match kind {
                BackendKind::Sim => sim.clone() as Arc<dyn Connector>,
                BackendKind::Kvm => self.kvm_connector(&dir)?,
                BackendKind::Xen => self.xen_connector(&dir)?,
            });
        }
        Ok(Backends {
            sim,
            connectors,
            kinds,
            storage: ovm_storage_connect::builtin_plugins(self.fs.clone()),
        })
    }

    #[cfg(feature = "kvm")]
    fn kvm_connector(&self, dir: &Path) -> Result<Arc<dyn Connector>> {
        use ovm_backend_kvm::KvmConnector;
        let vmm = vmm_command(self.embedded_vmm.clone());
        Ok(Arc::new(match self.state {
            StateDir::Shared(_) => KvmConnector::persistent(dir.join("kvm"), vmm),
            StateDir::Private(_) => KvmConnector::new(dir.join("kvm"), vmm),
        }))
    }

    #[cfg(not(feature = "kvm"))]
    fn kvm_connector(&self, _: &Path) -> Result<Arc<dyn Connector>> {
        Err(Error::unsupported("KVM servers", "kvm"))
    }

    #[cfg(feature = "xen")]
    fn xen_connector(&self, dir: &Path) -> Result<Arc<dyn Connector>> {
        use ovm_backend_xen::XenConnector;
        let connector = match &self.xl {
            // No xenconsoled writes logs for a stand-in `xl`: keep them with the state.
            Some(runner) => XenConnector::with_runner(dir.join("xen"), runner.clone())
                .console_log_dir(dir.join("xen").join("console")),
            None => XenConnector::new(dir.join("xen")),
        };
        Ok(Arc::new(match &self.xen_console_log_dir {
            Some(d) => connector.console_log_dir(d),
            None => connector,
        }))
    }

    #[cfg(not(feature = "xen"))]
    fn xen_connector(&self, _: &Path) -> Result<Arc<dyn Connector>> {
        Err(Error::unsupported("Xen servers", "xen"))
    }
}

/// How VMM processes are run: `$OVM_VMM_BIN` if set; else `embedded` (this very program,
/// which has the VMM built in and so always speaks its control protocol); else an
/// installed `ovm-vmm`; else `ovm-vmm` looked up when a VM starts. An `ovm-vmm` left
/// beside a newer program may be older than it: the embedded VMM comes first.
#[cfg(feature = "kvm")]
pub fn vmm_command(embedded: Option<(PathBuf, Vec<String>)>) -> ovm_backend_kvm::VmmCommand {
    use ovm_backend_kvm::VmmCommand;
    let installed = || {
        ovm_backend_kvm::hypervisor::find_vmm_binary()
            .ok()
            .map(|bin| VmmCommand {
                program: Some(bin),
                prefix_args: Vec::new(),
            })
    };
    if std::env::var_os(ovm_backend_kvm::hypervisor::VMM_BIN_ENV).is_some()
        && let Some(cmd) = installed()
    {
        return cmd;
    }
    match embedded {
        Some((program, prefix_args)) => VmmCommand {
            program: Some(program),
            prefix_args,
        },
        None => installed().unwrap_or_default(),
    }
}
