//! Following one VMM process to its end: a supervisor task per running VM reads the
//! process's output (a child's standard output, or a detached VMM's `events`
//! subscription), turns its events into VM states and `VmEvent`s, holds the only handle
//! that may kill the process, and on its exit records how the VM ended (restarting a
//! rebooted guest if the policy says so).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ovm_core::hypervisor::VmEventKind;
use ovm_core::model::VmState;
use ovm_core::{Error, Result, VmId};
use tokio::sync::oneshot;

use super::{BACKEND, KvmHypervisor, RebootPolicy, VmOutput};
use crate::control::{ClientError, ControlClient, EventLines, OutputLine, ProcessNotice};
use crate::devices::lock;
use crate::pidfd::Pidfd;
use crate::vmm::{ExitReason, VmmEvent};

/// A VM's VMM process while it runs.
pub(super) struct RunningVm {
    pub pid: u32,
    pub socket: std::path::PathBuf,
    pub started: Instant,
    /// Asks the supervisor, which owns the process handle (the child, or a pidfd for a
    /// detached VMM), to SIGKILL it (no pid-reuse race either way: the child is reaped only
    /// by the supervisor, after which kills are no-ops; a pidfd names one process).
    pub kill: Arc<tokio::sync::Notify>,
}

impl RunningVm {
    /// A VMM process that is `pid` and listens on `socket`.
    pub fn new(pid: u32, socket: std::path::PathBuf, started: Instant) -> Arc<Self> {
        Arc::new(RunningVm {
            pid,
            socket,
            started,
            kill: Arc::new(tokio::sync::Notify::new()),
        })
    }

    /// Has the supervisor kill the process.
    pub fn kill(&self) {
        self.kill.notify_one();
    }

    /// The control client of this process, serving `vm`.
    pub fn control(&self, vm: VmId) -> ControlClient {
        ControlClient::new(&self.socket).for_vm(vm)
    }
}

/// How a supervisor reaches its VMM process.
pub(super) enum VmmProcess {
    /// Our child (attached mode).
    Child(tokio::process::Child),
    /// A detached or adopted VMM.
    Detached(Pidfd),
}

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

impl KvmHypervisor {
    /// Runs [`Self::supervise`] for `process` in a task of its own. With `report_start`,
    /// the receiver hears how the guest's start went (for a VM being started; an adopted
    /// one is already running).
    pub(super) fn spawn_supervisor(
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
        let Some(output) = lock(&self.inner.vms).get(&vm).map(|e| e.output.clone()) else {
            return;
        };
        let control = run.control(vm);
        let mut started = started;
        let mut exit: Option<ExitReason> = None;
        let mut build_error: Option<String> = None;
        // A child announces itself (and its protocol version) on standard output before
        // any event; a detached VMM did so to whoever started it.
        let mut awaiting_announcement = matches!(process, VmmProcess::Child(_));
        let mut refused: Option<ClientError> = None;
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
                            && let Ok(connection) = control.connect().await
                            && let Ok(again) = connection.subscribe().await
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
            if refused.is_some() {
                continue;
            }
            let event = match OutputLine::parse(&line) {
                OutputLine::Event(event) => event,
                OutputLine::Notice(ProcessNotice::Listening { protocol, .. }) => {
                    awaiting_announcement = false;
                    if let Err(e) = control.check_version(protocol) {
                        refused = Some(e);
                        process.kill();
                    }
                    continue;
                }
                OutputLine::Notice(ProcessNotice::Error { message }) => {
                    build_error = Some(message);
                    continue;
                }
                OutputLine::Other => continue,
            };
            if awaiting_announcement {
                // Events before any announcement: a VMM from before protocol versions.
                refused = control.check_version(None).err();
                process.kill();
                continue;
            }
            self.on_event(vm, event, &output, &mut exit, &mut started);
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
            let error = match refused {
                Some(e) => Error::backend_source(BACKEND, e),
                None => Error::backend(
                    BACKEND,
                    build_error.unwrap_or_else(|| format!("ovm-vmm exited: {status}")),
                ),
            };
            // Settled first, so that whoever hears of the failed start finds it stopped.
            self.finish(vm, &run, VmState::Stopped);
            let _ = tx.send(Err(error));
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

    /// Applies one event of a running VMM: its exit is kept in `exit`, its start is told
    /// to `started`.
    fn on_event(
        &self,
        vm: VmId,
        event: VmmEvent,
        output: &VmOutput,
        exit: &mut Option<ExitReason>,
        started: &mut Option<oneshot::Sender<Result<()>>>,
    ) {
        match event {
            VmmEvent::Started => {
                self.set_state(vm, VmState::Running);
                self.emit(vm, VmEventKind::Started);
                if let Some(tx) = started.take() {
                    let _ = tx.send(Ok(()));
                }
            }
            VmmEvent::Ready { .. } => {}
            VmmEvent::Console { data } => output.add_console(data),
            VmmEvent::GuestMessage { key, value } => {
                lock(&output.published).insert(key.clone(), value);
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
            VmmEvent::Exit { reason } => *exit = Some(reason),
        }
    }

    /// Records that `run` ended, in `state`, unless the VM has moved on to another process.
    pub(super) fn finish(&self, vm: VmId, run: &Arc<RunningVm>, state: VmState) {
        let mut vms = lock(&self.inner.vms);
        if let Some(e) = vms.get_mut(&vm)
            && e.run.as_ref().is_some_and(|r| Arc::ptr_eq(r, run))
        {
            e.run = None;
            e.state_tx.send_replace(state);
        }
    }
}
