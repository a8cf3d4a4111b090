//! The VMM process: runs one VM in this process (the `ovm-vmm` binary is `run` with its
//! arguments; another binary can embed it, e.g. as a hidden subcommand, and point
//! `KvmOptions` at itself).
//!
//! ```text
//! ovm-vmm --config <vm.json> --api-sock <path> [--vm-id <id>] [--no-start]
//!         [--die-with-parent | --detach]
//! ```
//!
//! The config is a `VmmConfig` as JSON. Control requests arrive on the Unix socket (see
//! `ovm_backend_kvm::api`); events go to standard output as JSON lines and to every control
//! connection that asked for them (`{"op":"events"}`); logs to standard error. The process
//! exits when the VM does: code 0 after a power-off or a stop, 3 after a reboot request, 4
//! after a crash, 5 after a KVM error, 2 if the VM could not be built.
//!
//! `--die-with-parent` ties the VMM to the thread that spawned it (`PR_SET_PDEATHSIG`).
//! `--detach` does the opposite, so the VM outlives whoever started it: the process forks
//! at once, the first half exits (its parent reaps it; no zombie is left), the second
//! starts its own session (no controlling terminal, no signals from the starter's terminal)
//! and runs the VM. Once the VM is built it prints `{"event":"listening","pid":N}` on
//! standard output (or the `error` line if the build failed) and points standard output at
//! /dev/null, so nothing of it stays tied to the starter; its events then reach only the
//! `events` subscribers. `--vm-id` is what `state` reports, so whoever finds the socket
//! later can check it is talking to the VM it expects.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::api::{self, Request, Response};
use crate::vmm::{ExitReason, RunState, Vmm, VmmConfig, VmmEvent};

struct Args {
    config: PathBuf,
    socket: PathBuf,
    vm_id: Option<String>,
    start: bool,
    die_with_parent: bool,
    detach: bool,
}

const USAGE: &str = "usage: ovm-vmm --config <vm.json> --api-sock <path> [--vm-id <id>] \
                     [--no-start] [--die-with-parent | --detach]";

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut config = None;
    let mut socket = None;
    let mut vm_id = None;
    let mut start = true;
    let mut die_with_parent = false;
    let mut detach = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" => config = args.next().map(PathBuf::from),
            "--api-sock" => socket = args.next().map(PathBuf::from),
            "--vm-id" => vm_id = Some(args.next().ok_or("--vm-id needs a value")?),
            "--no-start" => start = false,
            "--die-with-parent" => die_with_parent = true,
            "--detach" => detach = true,
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if detach && die_with_parent {
        return Err("--detach and --die-with-parent contradict each other".into());
    }
    Ok(Args {
        config: config.ok_or("--config <vm.json> is required")?,
        socket: socket.ok_or("--api-sock <path> is required")?,
        vm_id,
        start,
        die_with_parent,
        detach,
    })
}

/// The connections that asked for events (`{"op":"events"}`).
#[derive(Default)]
struct Subscribers(Mutex<Vec<UnixStream>>);

/// How long one subscriber may hold the VMM up before it is dropped.
const SUBSCRIBER_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

impl Subscribers {
    /// Answers `ok` on `stream` and adds it; under the lock, so no event line can come
    /// before the answer.
    fn add(&self, mut stream: UnixStream, ok_line: &[u8]) {
        let mut subs = crate::devices::lock(&self.0);
        if stream
            .set_write_timeout(Some(SUBSCRIBER_WRITE_TIMEOUT))
            .is_ok()
            && stream.write_all(ok_line).is_ok()
        {
            subs.push(stream);
        }
    }

    /// Writes `line` to every subscriber; those that fail (gone, or not reading) are dropped.
    fn send(&self, line: &[u8]) {
        crate::devices::lock(&self.0).retain_mut(|s| s.write_all(line).is_ok());
    }
}

/// Forks; the parent half exits at once and the child half, in a new session, goes on
/// (see the module docs). Must run before this process starts any thread.
fn detach() {
    let threads = std::fs::read_dir("/proc/self/task").map_or(1, |d| d.count());
    if threads > 1 {
        fail(format!(
            "--detach must come before any thread starts ({threads} threads run)"
        ));
    }
    // SAFETY: the process has a single thread (checked above), so the child of fork is a
    // complete copy and may go on running Rust code.
    match unsafe { libc::fork() } {
        -1 => fail(format!(
            "cannot fork to detach: {}",
            std::io::Error::last_os_error()
        )),
        // SAFETY: setsid takes no arguments; in the child of fork (not a group leader) it
        // cannot fail.
        0 => unsafe {
            libc::setsid();
        },
        // SAFETY: _exit ends the parent half without running destructors or atexit
        // handlers that belong to the child half now.
        _ => unsafe { libc::_exit(0) },
    }
}

/// Tells the starter where the detached VMM is, then lets go of its standard output.
fn announce_detached() {
    println!(
        "{}",
        serde_json::json!({"event": "listening", "pid": std::process::id()})
    );
    let _ = std::io::stdout().flush();
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: both descriptors are open; dup2 replaces standard output atomically.
        unsafe { libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO) };
    }
}

fn emit(event: &VmmEvent, subscribers: &Subscribers) {
    let Ok(mut line) = serde_json::to_vec(event) else {
        return;
    };
    line.push(b'\n');
    {
        let mut out = std::io::stdout().lock();
        // The supervisor may be gone; the VM still runs until it is told to stop.
        let _ = out.write_all(&line).and_then(|_| out.flush());
    }
    subscribers.send(&line);
}

fn fail(message: String) -> ! {
    eprintln!("ovm-vmm: {message}");
    let line = serde_json::json!({"event": "error", "message": message});
    println!("{line}");
    std::process::exit(2);
}

/// What the process says about itself in `state`.
struct Identity {
    vm_id: Option<String>,
    pid: u32,
}

fn handle(
    vmm: &Arc<Vmm>,
    identity: &Identity,
    request: Request,
    shutdown: &mpsc::Sender<()>,
) -> Response {
    let done = |r: crate::Result<()>| match r {
        Ok(()) => Response::ok(None),
        Err(crate::VmmError::InvalidState { state, op }) => {
            Response::err("invalid_state", format!("VM is {state}: cannot {op}"))
        }
        Err(e) => Response::err("internal", e.to_string()),
    };
    let json = |v: serde_json::Result<serde_json::Value>| match v {
        Ok(v) => Response::ok(Some(v)),
        Err(e) => Response::err("internal", e.to_string()),
    };
    match request {
        Request::Start => done(vmm.start()),
        Request::Pause => done(vmm.pause()),
        Request::Resume => done(vmm.resume()),
        Request::Stop { timeout_ms } => {
            if vmm.state() == RunState::Created {
                vmm.kill();
                return Response::ok(Some(serde_json::json!({"kind": "killed"})));
            }
            if vmm.state() == RunState::Paused {
                let _ = vmm.resume();
            }
            json(serde_json::to_value(
                vmm.stop(Duration::from_millis(timeout_ms)),
            ))
        }
        Request::Kill => {
            vmm.kill();
            Response::ok(None)
        }
        Request::State => json(Ok(serde_json::json!({
            "state": vmm.state(),
            "exit": vmm.exit_reason(),
            "vm_id": identity.vm_id,
            "pid": identity.pid,
        }))),
        Request::Stats => json(serde_json::to_value(vmm.stats())),
        Request::Console => json(serde_json::to_value(vmm.console())),
        Request::ConsoleWrite { data } => {
            json(Ok(serde_json::json!({"taken": vmm.console_input(&data)})))
        }
        Request::GuestSend { key, value } => match vmm.send_to_guest(&key, &value) {
            Ok(()) => Response::ok(None),
            Err(e) => Response::err("invalid", e.to_string()),
        },
        Request::GuestRead { key } => json(serde_json::to_value(vmm.guest_value(&key))),
        Request::VcpuStates => {
            if vmm.state() != RunState::Paused {
                return Response::err("invalid_state", "vCPU states are captured while paused");
            }
            json(vmm.paused_vcpu_states())
        }
        Request::DeviceStates => json(serde_json::to_value(vmm.device_states())),
        Request::Shutdown => {
            vmm.kill();
            let _ = shutdown.send(());
            Response::ok(None)
        }
        // Taken by `serve` before it gets here.
        Request::Events => Response::err("internal", "events are served by the connection"),
    }
}

/// Shared by the connection threads.
struct Server {
    vmm: Arc<Vmm>,
    identity: Identity,
    inflight: AtomicUsize,
    subscribers: Subscribers,
}

fn serve(server: Arc<Server>, stream: UnixStream, shutdown: mpsc::Sender<()>) {
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let inflight = &server.inflight;
    let mut writer = write_half;
    let mut reader = BufReader::new(stream).take(api::MAX_REQUEST_BYTES as u64 + 2);
    let mut line = Vec::new();
    loop {
        line.clear();
        reader.set_limit(api::MAX_REQUEST_BYTES as u64 + 2);
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        inflight.fetch_add(1, Ordering::SeqCst);
        let response = match std::str::from_utf8(&line) {
            Err(_) => Response::err("bad_request", "request is not UTF-8"),
            Ok(text) if !text.ends_with('\n') && text.len() > api::MAX_REQUEST_BYTES => {
                Response::err(
                    "bad_request",
                    format!("request longer than {} bytes", api::MAX_REQUEST_BYTES),
                )
            }
            Ok(text) => match api::parse_request(text.trim_end()) {
                Ok(Request::Events) => {
                    inflight.fetch_sub(1, Ordering::SeqCst);
                    server.subscribers.add(writer, b"{\"ok\":true}\n");
                    return;
                }
                Ok(request) => handle(&server.vmm, &server.identity, request, &shutdown),
                Err(bad) => bad,
            },
        };
        let mut out = serde_json::to_vec(&response).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
        out.push(b'\n');
        let written = writer.write_all(&out);
        inflight.fetch_sub(1, Ordering::SeqCst);
        if written.is_err() || (!line.ends_with(b"\n") && line.len() > api::MAX_REQUEST_BYTES) {
            return;
        }
    }
}

fn exit_code(reason: &ExitReason) -> i32 {
    match reason {
        ExitReason::PowerOff | ExitReason::Killed => 0,
        ExitReason::Reboot => 3,
        ExitReason::Crash { .. } => 4,
        ExitReason::InternalError { .. } => 5,
    }
}

/// Runs the VMM with `args` (without the program name) until the VM exits, then exits the
/// process with the code in the module docs.
pub fn run(args: impl Iterator<Item = String>) -> ! {
    let args = parse_args(args).unwrap_or_else(|e| fail(e));
    if args.detach {
        detach();
    }
    if args.die_with_parent {
        // SAFETY: prctl(PR_SET_PDEATHSIG) takes plain integers and touches no memory.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    }
    let text = std::fs::read_to_string(&args.config)
        .unwrap_or_else(|e| fail(format!("cannot read config {}: {e}", args.config.display())));
    let config: VmmConfig = serde_json::from_str(&text)
        .unwrap_or_else(|e| fail(format!("config {}: {e}", args.config.display())));

    let _ = std::fs::remove_file(&args.socket);
    let listener = crate::socket_path::SocketPath::new(&args.socket)
        .and_then(|at| UnixListener::bind(at.as_path()))
        .unwrap_or_else(|e| fail(format!("cannot listen on {}: {e}", args.socket.display())));

    let (events_tx, events) = mpsc::channel();
    let vmm = Vmm::build(config, events_tx).unwrap_or_else(|e| fail(e.to_string()));
    let server = Arc::new(Server {
        vmm: vmm.clone(),
        identity: Identity {
            vm_id: args.vm_id.clone(),
            pid: std::process::id(),
        },
        inflight: AtomicUsize::new(0),
        subscribers: Subscribers::default(),
    });
    let (shutdown_tx, shutdown) = mpsc::channel::<()>();
    {
        let server = server.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (server, shutdown) = (server.clone(), shutdown_tx.clone());
                let _ = std::thread::Builder::new()
                    .name("api".into())
                    .spawn(move || serve(server, stream, shutdown));
            }
        });
    }
    if args.detach {
        announce_detached();
    }
    let subscribers = &server.subscribers;
    let inflight = &server.inflight;
    if args.start
        && let Err(e) = vmm.start()
    {
        fail(e.to_string());
    }

    let reason = loop {
        match events.recv_timeout(Duration::from_millis(100)) {
            Ok(VmmEvent::Exit { reason }) => {
                // Events still queued come first, so `exit` is always the last line.
                while let Ok(event) = events.try_recv() {
                    emit(&event, subscribers);
                }
                emit(
                    &VmmEvent::Exit {
                        reason: reason.clone(),
                    },
                    subscribers,
                );
                break reason;
            }
            Ok(event) => emit(&event, subscribers),
            Err(mpsc::RecvTimeoutError::Timeout) => vmm.flush_console(),
            Err(mpsc::RecvTimeoutError::Disconnected) => break ExitReason::Killed,
        }
    };
    // Console output and guest messages sent before the exit are already on stdout; give
    // requests in flight (a `stop` waiting for this exit) a moment to answer.
    while let Ok(event) = events.try_recv() {
        emit(&event, subscribers);
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    while inflight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = shutdown.try_recv();
    let _ = std::fs::remove_file(&args.socket);
    std::process::exit(exit_code(&reason));
}
