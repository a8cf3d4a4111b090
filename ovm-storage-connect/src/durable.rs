//! Durable, atomic file-system steps: a file appears whole under its final name or not
//! at all, and stays after a crash once the call returns.
//!
//! The recipe is the classic one: write under a temporary name, `fsync` the file, `rename`
//! it into place, `fsync` the directory that now holds the name.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ovm_core::{Error, Result};

use crate::error::{FsError, io_err};

/// Mode of files ovm creates: disk images and metadata are for the manager only.
pub const FILE_MODE: u32 = 0o600;

/// Opens an existing file for reading without following a symlink in its last component.
pub fn open_read(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| io_err("open", path, e))
}

/// Opens an existing file for reading and writing without following a symlink.
pub fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| io_err("open", path, e))
}

/// Creates a new file that must not exist yet (never follows or replaces anything).
pub fn create_new(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| io_err("create", path, e))
}

/// Flushes a directory's entries (new, renamed and removed names) to stable storage.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    let d = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map_err(|e| io_err("open directory", dir, e))?;
    d.sync_all().map_err(|e| io_err("fsync directory", dir, e))
}

/// Flushes a file's data and metadata.
pub fn fsync_file(file: &File, path: &Path) -> Result<()> {
    file.sync_all().map_err(|e| io_err("fsync", path, e))
}

/// Renames `from` to `to` and makes the new name durable.
pub fn rename_durable(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| io_err("rename", from, e))?;
    fsync_dir(parent_of(to)?)
}

/// Removes a file and makes the removal durable; a file already gone is fine.
pub fn remove_durable(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => fsync_dir(parent_of(path)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", path, e)),
    }
}

/// Writes `bytes` as the whole content of `dest`, atomically: a reader (or a reboot) sees
/// the old content or the new, never a mix. The temporary file goes in `tmp_dir`, which
/// must be on the same file system as `dest`.
pub fn write_atomic(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(tmp_dir, "write");
    let written = (|| {
        let mut f = create_new(&tmp)?;
        f.write_all(bytes).map_err(|e| io_err("write", &tmp, e))?;
        fsync_file(&f, &tmp)?;
        rename_durable(&tmp, dest)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Writes `bytes` into the new file `path` and syncs it (no rename: the caller publishes
/// it).
pub fn write_new_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = create_new(path)?;
    f.write_all(bytes).map_err(|e| io_err("write", path, e))?;
    fsync_file(&f, path)
}

/// Reads a small file ovm wrote (identity, metadata), refusing anything over `limit` bytes
/// or a symlink.
pub fn read_small(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let f = open_read(path)?;
    let mut buf = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| io_err("read", path, e))?;
    if buf.len() as u64 > limit {
        return Err(FsError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("larger than {limit} bytes"),
        }
        .into());
    }
    Ok(buf)
}

/// A fresh name in `dir` for a temporary file of `purpose`.
pub fn temp_path(dir: &Path, purpose: &str) -> PathBuf {
    dir.join(format!("{purpose}-{}.tmp", uuid::Uuid::new_v4().simple()))
}

fn parent_of(path: &Path) -> Result<&Path> {
    path.parent().ok_or_else(|| {
        Error::invalid(
            "path",
            format!("{} has no parent directory", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).expect("mkdir");
        let dest = dir.path().join("meta.json");
        write_atomic(&tmp, &dest, b"first").expect("write");
        write_atomic(&tmp, &dest, b"second, longer").expect("rewrite");
        assert_eq!(std::fs::read(&dest).expect("read"), b"second, longer");
        assert_eq!(std::fs::read_dir(&tmp).expect("ls").count(), 0);
    }

    #[test]
    fn small_reads_refuse_big_files_and_symlinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 100]).expect("write");
        assert!(read_small(&big, 100).is_ok());
        let err = read_small(&big, 99).expect_err("too big");
        assert!(err.to_string().contains("larger than 99 bytes"), "{err}");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&big, &link).expect("symlink");
        assert!(
            read_small(&link, 1000).is_err(),
            "symlinks are not followed"
        );
    }
}
