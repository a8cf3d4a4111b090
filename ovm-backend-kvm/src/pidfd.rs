//! A process file descriptor (`pidfd_open(2)`): a handle on one process that works for
//! processes that are not our children (detached VMMs, VMMs adopted from an earlier
//! manager) and cannot be fooled by pid reuse — a signal sent through it reaches that
//! process or nobody, and it turns readable when that process ends.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;

/// A pidfd.
#[derive(Debug)]
pub struct Pidfd {
    pid: u32,
    fd: AsyncFd<OwnedFd>,
}

impl Pidfd {
    /// Opens the process `pid`. Must be called inside a tokio runtime.
    pub fn open(pid: u32) -> io::Result<Self> {
        let raw_pid = libc::pid_t::try_from(pid)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; it
        // touches no memory of ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw_pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = i32::try_from(fd).map_err(|_| io::Error::other("pidfd out of range"))?;
        // SAFETY: `fd` was just returned by pidfd_open and nothing else owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // Registering panics outside a runtime; say so instead.
        tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        // SAFETY: the OwnedFd is open and is moved into the AsyncFd, which keeps it (and so
        // the same descriptor) until it is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE) }?;
        Ok(Pidfd { pid, fd })
    }

    /// The process id it was opened on.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends SIGKILL to the process (nothing if it has ended).
    pub fn kill(&self) -> io::Result<()> {
        // SAFETY: pidfd_send_signal takes our open pidfd, a signal number, a null siginfo
        // (allowed: the kernel fills in a default one) and flags 0.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.get_ref().as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            // ESRCH: it has already ended.
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Whether the process has ended (without waiting).
    pub fn has_exited(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.fd.get_ref().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd for the duration of the call; timeout 0.
        let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
        rc > 0 && pfd.revents & libc::POLLIN != 0
    }

    /// Waits up to `timeout` for the process to end; true if it did.
    pub async fn wait_exit(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                match self.fd.readable().await {
                    Ok(mut guard) => {
                        if self.has_exited() {
                            return true;
                        }
                        guard.clear_ready();
                    }
                    Err(_) => return self.has_exited(),
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.unwrap_or(false)
    }
}
