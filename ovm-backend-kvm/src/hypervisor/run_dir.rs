//! The files of a VM's directory that processes sharing a run directory rely on: the
//! lock that keeps an adopter off a VMM being started or removed, `vm.json` (what an
//! adopter needs to describe the VM), and owner-only directories and files.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use ovm_core::hypervisor::VmConfig;

use crate::vmm::VmmConfig;

/// What a detached VM's directory keeps so another process can adopt it (`vm.json`).
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct VmRecord {
    pub config: VmConfig,
    pub vmm_config: VmmConfig,
    /// When its VMM was started, milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
}

/// Locks a VM's directory against other processes sharing the run directory: held by
/// whoever starts its VMM (from writing `vm.json` until the vCPUs run) or removes it, so
/// that an adopter never takes a VMM being started for one that its starter abandoned.
/// The lock is `flock` on `<dir>/lock`: it goes with the process, so a starter that
/// died leaves nothing held.
pub(super) fn lock_vm_dir(dir: &Path) -> std::io::Result<std::fs::File> {
    let f = open_lock_file(dir)?;
    f.lock()?;
    Ok(f)
}

/// Like [`lock_vm_dir`], but `None` at once if another process holds the lock.
pub(super) fn try_lock_vm_dir(dir: &Path) -> std::io::Result<Option<std::fs::File>> {
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

/// Now, milliseconds since the Unix epoch.
pub(super) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Creates `dir` (and its parents) and makes it owner-only.
pub(super) fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

pub(super) use ovm_core::files::write_private;
