//! Adopting detached VMMs: a process opening a run directory (or listing it) takes over
//! the VMMs other processes left running there — checked through their sockets to be
//! alive, of this protocol's major version, and answering as the VM their directory is
//! named after — and clears the directories of those that have ended.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ovm_core::model::VmState;
use ovm_core::{Error, Result, VmId};

use super::run_dir::{VmRecord, try_lock_vm_dir, unix_ms};
use super::supervise::{RunningVm, VmmProcess};
use super::{BACKEND, KvmHypervisor, VmEntry, VmOutput};
use crate::control::{ClientError, Connection, ControlClient, EventLines, Request, VmmStatus};
use crate::devices::lock;
use crate::pidfd::Pidfd;
use crate::vmm::RunState;

/// How long adoption waits for an earlier VMM to answer.
const ADOPT_TIMEOUT: Duration = Duration::from_secs(3);

/// How old a VM directory without `vm.json` must be before an adopter clears it.
const ABANDONED_AFTER: Duration = Duration::from_secs(60);

/// How often, and how far apart, adopting a VMM that took the connection and failed to
/// answer is tried again before it is reported as an error.
const ATTACH_RETRIES: u32 = 3;
const ATTACH_RETRY_PAUSE: Duration = Duration::from_millis(100);

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

/// A followed detached VMM: its process, a pidfd on it, its event lines, what it said.
pub(super) type Attached = (Arc<RunningVm>, Pidfd, EventLines, VmmStatus);

impl KvmHypervisor {
    /// Follows a detached VMM on `connection` (to its socket): subscribes to its events,
    /// opens a pidfd on the process at the other end, and asks its state, which must name
    /// `vm`.
    pub(super) async fn attach(
        &self,
        vm: VmId,
        connection: Connection,
        socket: &Path,
        started: Instant,
    ) -> Result<Attached> {
        let peer = connection.peer_pid()?.ok_or_else(|| {
            Error::backend(BACKEND, format!("{}: peer has no pid", socket.display()))
        })?;
        let pidfd = Pidfd::open(peer)?;
        // The answer comes after the pidfd was opened, from the process at the other end:
        // so the pidfd names that process, not a later one that reused a dead one's pid.
        let lines = connection.subscribe().await?;
        let run = RunningVm::new(peer, socket.to_path_buf(), started);
        let status = run
            .control(vm)
            .state()
            .await
            .map_err(|e| super::call_error(vm, &run, e))?;
        let vm_name = vm.to_string();
        if status.vm_id.as_deref() != Some(vm_name.as_str()) || status.pid != peer {
            return Err(Error::backend(
                BACKEND,
                format!(
                    "{}: answers as vm {:?} (pid {}), not as vm {vm} (pid {peer})",
                    socket.display(),
                    status.vm_id,
                    status.pid
                ),
            ));
        }
        Ok((run, pidfd, lines, status))
    }

    /// Adopts the VMMs an earlier process left in the run directory; removes the
    /// directories of those that ended. Entries that are not VM directories are left alone.
    pub(super) async fn adopt_all(&self) -> Result<()> {
        self.adopt_unknown(true).await.map(drop)
    }

    /// Adopts the VM directories this process does not know yet (VMMs other processes
    /// sharing the run directory started since), so that a listing says what runs now,
    /// not what ran when this process connected. Returns the VMs another process is
    /// starting or removing right now. `loud` logs what was found at `info`/`warn`, else
    /// at `debug` (a listing repeats it).
    pub(super) async fn adopt_unknown(&self, loud: bool) -> Result<Vec<VmId>> {
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
        let control = ControlClient::new(&socket)
            .for_vm(vm)
            .with_timeout(ADOPT_TIMEOUT);
        let mut attempts = 0;
        let (run, pidfd, lines, status) = loop {
            let connection = match control.connect().await {
                Ok(c) => c,
                // No socket: the VMM ended and cleaned up after itself (or never started).
                Err(e) if e.io_kind() == Some(std::io::ErrorKind::NotFound) => return stale(),
                // A socket nobody listens on: the VMM died without cleaning up (SIGKILL, a
                // crash). It is reported crashed, so the manager records what happened.
                Err(e) if e.io_kind() == Some(std::io::ErrorKind::ConnectionRefused) => {
                    let Some(record) = record else {
                        return stale();
                    };
                    self.insert_crashed(vm, record);
                    return Ok(Adopted::Crashed);
                }
                Err(e) => return Err(e.into()),
            };
            match tokio::time::timeout(ADOPT_TIMEOUT, self.attach(vm, connection, &socket, started))
                .await
            {
                Ok(Ok(attached)) => break attached,
                // A VMM of another protocol version will not answer otherwise next time.
                Ok(Err(e)) if is_version_mismatch(&e) => return Err(e),
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
        let vm_state = match status.state {
            RunState::Running => VmState::Running,
            RunState::Paused => VmState::Paused,
            RunState::Created => {
                // Built but never started: whoever started it died before `start`.
                let _ = control.done(Request::Shutdown).await;
                if !pidfd.wait_exit(ADOPT_TIMEOUT).await {
                    let _ = pidfd.kill();
                    pidfd.wait_exit(ADOPT_TIMEOUT).await;
                }
                return stale();
            }
            RunState::Exited => {
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
        let console = run.control(vm).console().await.unwrap_or_default();
        {
            let mut vms = lock(&self.inner.vms);
            if vms.contains_key(&vm) {
                return Err(Error::AlreadyExists {
                    kind: "vm",
                    id: vm.to_string(),
                });
            }
            let mut entry = VmEntry::new(
                record.config,
                record.vmm_config,
                vm_state,
                VmOutput::new(256, &console),
            );
            entry.run = Some(run.clone());
            vms.insert(vm, entry);
        }
        self.spawn_supervisor(vm, &run, VmmProcess::Detached(pidfd), lines, false);
        Ok(Adopted::Running)
    }

    /// Lists a VM whose VMM died unseen as crashed (its console log stays until
    /// `undefine`).
    fn insert_crashed(&self, vm: VmId, record: VmRecord) {
        let mut vms = lock(&self.inner.vms);
        vms.entry(vm).or_insert_with(|| {
            VmEntry::new(
                record.config,
                record.vmm_config,
                VmState::Crashed,
                VmOutput::new(16, &[]),
            )
        });
    }
}

/// Whether `e` is a VMM's protocol version being refused.
fn is_version_mismatch(e: &Error) -> bool {
    matches!(e, Error::Backend { source: Some(source), .. }
        if matches!(source.downcast_ref::<ClientError>(), Some(ClientError::VersionMismatch { .. })))
}
