//! The repository lock: an exclusive `flock()` on `.ovm/lock`, held while a manager has
//! the repository open and released by the kernel when the process dies, however it dies.
//!
//! On NFS, Linux clients implement `flock()` with NFS byte-range locks, so the lock also
//! excludes managers on other servers; OCFS2 supports it cluster-wide.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ovm_core::{Error, Result};
use rustix::fs::FlockOperation;
use rustix::io::Errno;

use crate::error::io_err;

/// Largest holder note read back from a lock file.
const MAX_NOTE: u64 = 1024;

/// An exclusive lock on a repository; dropped, it is released.
#[derive(Debug)]
pub struct RepoLock {
    _file: File,
    path: PathBuf,
}

impl RepoLock {
    /// Takes the lock at `path` without waiting; a held lock is `InvalidState` naming the
    /// holder (process id, host and time it wrote when it took the lock).
    pub fn acquire(path: &Path, repository: &str) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags_nofollow()
            .open(path)
            .map_err(|e| io_err("open lock", path, e))?;
        loop {
            match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(Errno::INTR) => continue,
                Err(Errno::WOULDBLOCK) => {
                    return Err(Error::InvalidState {
                        kind: "repository",
                        id: repository.to_string(),
                        state: format!("in use by another manager ({})", holder_note(&file)),
                        op: "open".into(),
                    });
                }
                Err(e) => return Err(io_err("lock", path, e.into())),
            }
        }
        let note = format!(
            "pid {} on {} since {}\n",
            std::process::id(),
            hostname(),
            ovm_core::Timestamp::now()
        );
        // The note is for people reading an "in use" error; failing to write it is harmless.
        if file.set_len(0).is_ok() {
            let _ = file.write_all_at(note.as_bytes(), 0);
        }
        Ok(RepoLock {
            _file: file,
            path: path.to_path_buf(),
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn holder_note(file: &File) -> String {
    let mut note = String::new();
    let _ = file.take(MAX_NOTE).read_to_string(&mut note);
    let note = note.trim();
    if note.is_empty() {
        "holder unknown".to_string()
    } else {
        note.to_string()
    }
}

fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

trait NoFollow {
    fn custom_flags_nofollow(&mut self) -> &mut Self;
}

impl NoFollow for std::fs::OpenOptions {
    fn custom_flags_nofollow(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(crate::durable::FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lock");
        let first = RepoLock::acquire(&path, "/repo").expect("first");
        let err = RepoLock::acquire(&path, "/repo").expect_err("second");
        assert_eq!(err.code(), "invalid_state");
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        drop(first);
        RepoLock::acquire(&path, "/repo").expect("free again");
    }
}
