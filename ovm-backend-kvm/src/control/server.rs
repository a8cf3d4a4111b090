//! The VMM's side of the protocol: one thread per connection reads request lines and
//! answers each with one typed response; `events` turns the connection into a
//! subscription. A malformed line gets a `bad_request` answer and the connection (and the
//! VMM) go on.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use super::protocol::{
    self, ControlError, ErrorCode, MAX_REQUEST_BYTES, Reply, Request, Response, VmmStatus,
};
use crate::devices::lock;
use crate::vmm::{ExitReason, RunState, Vmm};

/// How long one subscriber may hold the VMM up before it is dropped.
const SUBSCRIBER_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// The connections that asked for events (`{"op":"events"}`).
#[derive(Default)]
pub struct Subscribers(Mutex<Vec<UnixStream>>);

impl Subscribers {
    /// Answers `subscribed` on `stream` and adds it; under the lock, so no event line can
    /// come before the answer.
    fn add(&self, mut stream: UnixStream) {
        let mut subs = lock(&self.0);
        let answer = Response::new(Ok(Reply::Subscribed)).to_line();
        if stream
            .set_write_timeout(Some(SUBSCRIBER_WRITE_TIMEOUT))
            .is_ok()
            && stream.write_all(&answer).is_ok()
        {
            subs.push(stream);
        }
    }

    /// Writes `line` to every subscriber; those that fail (gone, or not reading) are dropped.
    pub fn send(&self, line: &[u8]) {
        lock(&self.0).retain_mut(|s| s.write_all(line).is_ok());
    }
}

/// What the connection threads share.
pub struct Server {
    vmm: Arc<Vmm>,
    vm_id: Option<String>,
    inflight: AtomicUsize,
    subscribers: Subscribers,
    shutdown: mpsc::Sender<()>,
}

impl Server {
    /// Serves `vmm`, which says it is `vm_id` in `state`; `shutdown` hears a `shutdown`
    /// request.
    pub fn new(vmm: Arc<Vmm>, vm_id: Option<String>, shutdown: mpsc::Sender<()>) -> Self {
        Server {
            vmm,
            vm_id,
            inflight: AtomicUsize::new(0),
            subscribers: Subscribers::default(),
            shutdown,
        }
    }

    /// The event subscribers.
    pub fn subscribers(&self) -> &Subscribers {
        &self.subscribers
    }

    /// Requests being answered right now.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::SeqCst)
    }

    /// Answers requests on `stream` until it closes, breaks, or subscribes.
    pub fn serve(&self, stream: UnixStream) {
        let Ok(mut writer) = stream.try_clone() else {
            return;
        };
        let limit = MAX_REQUEST_BYTES as u64 + 2;
        let mut reader = BufReader::new(stream).take(limit);
        let mut line = Vec::new();
        loop {
            line.clear();
            reader.set_limit(limit);
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let too_long = !line.ends_with(b"\n") && line.len() > MAX_REQUEST_BYTES;
            self.inflight.fetch_add(1, Ordering::SeqCst);
            let outcome = match std::str::from_utf8(&line) {
                Err(_) => Err(ControlError::bad_request("request is not UTF-8")),
                Ok(_) if too_long => Err(ControlError::bad_request(format!(
                    "request longer than {MAX_REQUEST_BYTES} bytes"
                ))),
                Ok(text) => match protocol::parse_request(text.trim_end()) {
                    Ok(Request::Events) => {
                        self.inflight.fetch_sub(1, Ordering::SeqCst);
                        self.subscribers.add(writer);
                        return;
                    }
                    Ok(request) => self.handle(request),
                    Err(bad) => Err(bad),
                },
            };
            let written = writer.write_all(&Response::new(outcome).to_line());
            self.inflight.fetch_sub(1, Ordering::SeqCst);
            if written.is_err() || too_long {
                return;
            }
        }
    }

    fn handle(&self, request: Request) -> Result<Reply, ControlError> {
        let vmm = &self.vmm;
        let done = |r: crate::Result<()>| match r {
            Ok(()) => Ok(Reply::Done),
            Err(crate::VmmError::InvalidState { state, op }) => Err(ControlError::new(
                ErrorCode::InvalidState,
                format!("VM is {state}: cannot {op}"),
            )),
            Err(e) => Err(ControlError::new(ErrorCode::Internal, e.to_string())),
        };
        match request {
            Request::Start => done(vmm.start()),
            Request::Pause => done(vmm.pause()),
            Request::Resume => done(vmm.resume()),
            Request::Stop { timeout_ms } => {
                if vmm.state() == RunState::Created {
                    vmm.kill();
                    return Ok(Reply::Stopped(ExitReason::Killed));
                }
                if vmm.state() == RunState::Paused {
                    let _ = vmm.resume();
                }
                Ok(Reply::Stopped(vmm.stop(Duration::from_millis(timeout_ms))))
            }
            Request::Kill => {
                vmm.kill();
                Ok(Reply::Done)
            }
            Request::State => Ok(Reply::State(VmmStatus {
                state: vmm.state(),
                exit: vmm.exit_reason(),
                vm_id: self.vm_id.clone(),
                pid: std::process::id(),
            })),
            Request::Stats => Ok(Reply::Stats(vmm.stats())),
            Request::Console => Ok(Reply::Console(vmm.console())),
            Request::ConsoleWrite { data } => Ok(Reply::ConsoleInput {
                taken: vmm.console_input(&data),
            }),
            Request::GuestSend { key, value } => match vmm.send_to_guest(&key, &value) {
                Ok(()) => Ok(Reply::Done),
                Err(e) => Err(ControlError::new(ErrorCode::Invalid, e.to_string())),
            },
            Request::GuestRead { key } => Ok(Reply::GuestValue(vmm.guest_value(&key))),
            Request::VcpuStates => {
                if vmm.state() != RunState::Paused {
                    return Err(ControlError::new(
                        ErrorCode::InvalidState,
                        "vCPU states are captured while paused",
                    ));
                }
                Ok(Reply::VcpuStates(vmm.paused_vcpu_states()))
            }
            Request::DeviceStates => Ok(Reply::DeviceStates(vmm.device_states())),
            Request::Shutdown => {
                vmm.kill();
                let _ = self.shutdown.send(());
                Ok(Reply::Done)
            }
            // Taken by `serve` before it gets here.
            Request::Events => Err(ControlError::new(
                ErrorCode::Internal,
                "events are served by the connection",
            )),
        }
    }
}
