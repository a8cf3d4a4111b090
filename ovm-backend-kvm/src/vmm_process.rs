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
//! `ovm_backend_kvm::control`); once the VM is built the process prints
//! `{"event":"listening","pid":N,"protocol":"1.0"}`; events go to standard output as JSON
//! lines and to every control connection that asked for them (`{"op":"events"}`); logs to
//! standard error. The process
//! exits when the VM does: code 0 after a power-off or a stop, 3 after a reboot request, 4
//! after a crash, 5 after a KVM error, 2 if the VM could not be built.
//!
//! `--die-with-parent` ties the VMM to the thread that spawned it (`PR_SET_PDEATHSIG`).
//! `--detach` does the opposite, so the VM outlives whoever started it: the process forks
//! at once, the first half exits (its parent reaps it; no zombie is left), the second
//! starts its own session (no controlling terminal, no signals from the starter's terminal)
//! and runs the VM. Once the VM is built it prints the `listening` line on standard output
//! (or the `error` line if the build failed) and points standard output at /dev/null, so
//! nothing of it stays tied to the starter; its events then reach only the `events`
//! subscribers. `--vm-id` is what `state` reports, so whoever finds the socket
//! later can check it is talking to the VM it expects.

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use crate::control::protocol::{PROTOCOL_VERSION, ProcessNotice};
use crate::control::server::{Server, Subscribers};
use crate::vmm::{ExitReason, Vmm, VmmConfig, VmmEvent};

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

/// Prints a notice line on standard output.
fn notice(notice: &ProcessNotice) {
    if let Ok(line) = serde_json::to_string(notice) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}").and_then(|_| out.flush());
    }
}

/// Tells the starter the VM is built, where the VMM is and what it speaks; a detached VMM
/// then lets go of its standard output.
fn announce(detached: bool) {
    notice(&ProcessNotice::Listening {
        pid: std::process::id(),
        protocol: Some(PROTOCOL_VERSION),
    });
    if !detached {
        return;
    }
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
    notice(&ProcessNotice::Error { message });
    std::process::exit(2);
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
    let (shutdown_tx, shutdown) = mpsc::channel::<()>();
    let server = Arc::new(Server::new(vmm.clone(), args.vm_id.clone(), shutdown_tx));
    {
        let server = server.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let server = server.clone();
                let _ = std::thread::Builder::new()
                    .name("api".into())
                    .spawn(move || server.serve(stream));
            }
        });
    }
    announce(args.detach);
    let subscribers = server.subscribers();
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
    while server.inflight() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = shutdown.try_recv();
    let _ = std::fs::remove_file(&args.socket);
    std::process::exit(exit_code(&reason));
}
