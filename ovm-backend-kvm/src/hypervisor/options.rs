//! How the backend is set up: [`KvmOptions`] (where VM directories go, which VMM binary
//! runs them, attached or detached processes) and finding the `ovm-vmm` binary.

use std::path::PathBuf;
use std::time::Duration;

use ovm_core::{Error, Result};

use super::BACKEND;

/// Environment variable naming the `ovm-vmm` binary.
pub const VMM_BIN_ENV: &str = "OVM_VMM_BIN";

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
    /// are adopted on `KvmHypervisor::open` (see the `hypervisor` module docs). Default:
    /// false.
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

/// Finds the `ovm-vmm` binary: `$OVM_VMM_BIN`, then next to the current executable, then
/// one directory up (where cargo puts binaries relative to test and bench executables in
/// `deps/`).
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
