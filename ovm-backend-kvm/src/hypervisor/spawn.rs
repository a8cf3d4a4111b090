//! Starting a VM's VMM process: attached (a child that dies with us and reports on its
//! standard output) or detached (`ovm-vmm --detach --no-start` in its own session,
//! followed over its socket and a pidfd), and waiting until its vCPUs run.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

use ovm_core::model::VmState;
use ovm_core::{Error, Result, VmId};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::oneshot;

use super::run_dir::{VmRecord, lock_vm_dir, private_dir, unix_ms, write_private};
use super::supervise::{RunningVm, VmmProcess};
use super::{BACKEND, KvmHypervisor, invalid_state, not_found};
use crate::control::{ControlClient, EventLines, OutputLine, ProcessNotice, ProtocolVersion};
use crate::devices::lock;
use crate::pidfd::Pidfd;
use crate::vmm::RunState;

impl KvmHypervisor {
    /// Spawns the VMM process for `vm` and waits until its vCPUs run. (Boxed: the
    /// supervisor calls it again to restart a rebooted guest.)
    pub(super) fn spawn(
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
        if !self.inner.opts.detached {
            return self.spawn_attached(vm, &config_path, socket).await;
        }
        // Under the lock nobody else is starting it: a VMM that answers there was
        // started by another process and runs. Never a second one beside it.
        if ControlClient::new(&socket).connect().await.is_ok() {
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
        self.spawn_detached(vm, &config_path, socket).await
    }

    /// Starts an attached VMM: our child, killed with the thread that started it, its
    /// events on its standard output.
    async fn spawn_attached(&self, vm: VmId, config_path: &Path, socket: PathBuf) -> Result<()> {
        let mut child = tokio::process::Command::new(&self.inner.vmm_binary)
            .args(&self.inner.opts.vmm_prefix_args)
            .arg("--config")
            .arg(config_path)
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
        let run = RunningVm::new(pid, socket, Instant::now());
        self.install(vm, &run)?;
        let source: Box<dyn tokio::io::AsyncBufRead + Send + Unpin> =
            Box::new(BufReader::new(stdout));
        let lines: EventLines = source.lines();
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
    /// session and announces its pid and protocol version; we check the version,
    /// subscribe to its events, then start its vCPUs (so no event is missed).
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
        let (announced_pid, protocol) = announced.map_err(|_| Error::Timeout {
            what: format!("ovm-vmm of vm {vm} to build the VM"),
            after: timeout,
        })??;
        let control = ControlClient::new(&socket).for_vm(vm);
        if let Err(refused) = control.check_version(protocol) {
            // Built, not started, and not ours to talk to: it goes.
            if let Err(e) = Pidfd::open(announced_pid).and_then(|p| p.kill()) {
                tracing::warn!(pid = announced_pid, "cannot kill the refused ovm-vmm: {e}");
            }
            return Err(Error::backend_source(BACKEND, refused));
        }
        let connection = control.connect().await?;
        let (run, pidfd, lines, status) =
            self.attach(vm, connection, &socket, Instant::now()).await?;
        if run.pid != announced_pid || status.state != RunState::Created {
            let _ = pidfd.kill();
            return Err(Error::backend(
                BACKEND,
                format!(
                    "{}: pid {} in state {:?} answered, not the new VMM (pid {announced_pid})",
                    socket.display(),
                    run.pid,
                    status.state
                ),
            ));
        }
        if let Err(e) = self.install(vm, &run) {
            let _ = pidfd.kill();
            return Err(e);
        }
        let started = self.spawn_supervisor(vm, &run, VmmProcess::Detached(pidfd), lines, true);
        if let Err(e) = control.done(crate::control::Request::Start).await {
            run.kill();
            return Err(super::call_error(vm, &run, e));
        }
        self.await_started(vm, &run, started).await
    }
}

/// Reads what a detached VMM says once it has built its VM: its pid and protocol version,
/// or why it failed.
async fn read_announcement(
    stdout: tokio::process::ChildStdout,
) -> Result<(u32, Option<ProtocolVersion>)> {
    let mut lines = BufReader::new(stdout).lines();
    while let Some(line) = lines.next_line().await? {
        match OutputLine::parse(&line) {
            OutputLine::Notice(ProcessNotice::Listening { pid, protocol }) => {
                return Ok((pid, protocol));
            }
            OutputLine::Notice(ProcessNotice::Error { message }) => {
                return Err(Error::backend(BACKEND, message));
            }
            OutputLine::Event(_) | OutputLine::Other => {}
        }
    }
    Err(Error::backend(
        BACKEND,
        "ovm-vmm ended before its VM was built (see vmm.log in the VM's directory)",
    ))
}
