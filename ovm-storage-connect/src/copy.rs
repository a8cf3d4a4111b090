//! Copying volume data: a reflink (`FICLONE`) where the file system shares blocks between
//! files — instant whatever the size — and otherwise a sparse-aware copy that walks the
//! source's data extents (`SEEK_DATA` / `SEEK_HOLE`), moves them with `copy_file_range`,
//! leaves holes as holes, reports progress and stops when aborted.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use ovm_core::{OpContext, Result};
use rustix::fs::SeekFrom;
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

use crate::error::io_err;

/// Bytes moved per `copy_file_range` call: small enough to report progress and notice an
/// abort a few times per second on slow disks, large enough to cost nothing.
const CHUNK: u64 = 16 << 20;

/// Buffer of the read/write fallback, used where `copy_file_range` is refused.
const FALLBACK_BUF: usize = 1 << 20;

/// How clones are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloneMode {
    /// A reflink where the file system supports it, else a sparse copy.
    #[default]
    Auto,
    /// Always a sparse copy (to measure it, or to avoid shared blocks).
    CopyOnly,
}

/// How a clone was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloneMethod {
    /// Blocks shared with the source (`FICLONE`).
    Reflink,
    /// Data extents copied, holes kept.
    SparseCopy,
}

/// Makes `dst` (a new, empty file) a copy of `src`: a reflink if `mode` allows and the file
/// system can, else a sparse copy. `what` names the copy in an `Aborted` error.
pub fn clone_file(
    src: &File,
    src_path: &Path,
    dst: &File,
    dst_path: &Path,
    mode: CloneMode,
    ctx: &OpContext,
    what: &str,
) -> Result<CloneMethod> {
    ctx.check(what)?;
    if mode == CloneMode::Auto {
        let len = src
            .metadata()
            .map_err(|e| io_err("stat", src_path, e))?
            .len();
        match rustix::fs::ioctl_ficlone(dst, src) {
            Ok(()) => {
                ctx.progress(len, len);
                return Ok(CloneMethod::Reflink);
            }
            Err(e) if reflink_unsupported(e) => {
                tracing::debug!(src = %src_path.display(), "no reflink ({e}); copying");
            }
            Err(e) => return Err(io_err("reflink", dst_path, e.into())),
        }
    }
    sparse_copy(src, src_path, dst, dst_path, ctx, what)?;
    Ok(CloneMethod::SparseCopy)
}

/// True for the answers of a file system (or pair of files) that cannot share blocks.
fn reflink_unsupported(e: Errno) -> bool {
    matches!(
        e,
        Errno::OPNOTSUPP | Errno::XDEV | Errno::INVAL | Errno::NOTTY | Errno::NOSYS | Errno::PERM
    )
}

/// True if the two files of `dir` can share blocks: probes with two scratch files.
pub fn probe_reflink(dir: &Path) -> Result<bool> {
    let a_path = crate::durable::temp_path(dir, "reflink-probe-a");
    let b_path = crate::durable::temp_path(dir, "reflink-probe-b");
    let result = (|| {
        let a = crate::durable::create_new(&a_path)?;
        a.write_all_at(b"reflink probe", 0)
            .map_err(|e| io_err("write", &a_path, e))?;
        let b = crate::durable::create_new(&b_path)?;
        match rustix::fs::ioctl_ficlone(&b, &a) {
            Ok(()) => Ok(true),
            Err(e) if reflink_unsupported(e) => Ok(false),
            Err(e) => Err(io_err("reflink", &b_path, e.into())),
        }
    })();
    let _ = std::fs::remove_file(&a_path);
    let _ = std::fs::remove_file(&b_path);
    result
}

/// Copies the data extents of `src` into `dst`, which becomes as long as `src`; holes stay
/// holes. Progress is reported as `(offset reached, length)`.
pub fn sparse_copy(
    src: &File,
    src_path: &Path,
    dst: &File,
    dst_path: &Path,
    ctx: &OpContext,
    what: &str,
) -> Result<()> {
    let len = src
        .metadata()
        .map_err(|e| io_err("stat", src_path, e))?
        .len();
    dst.set_len(len)
        .map_err(|e| io_err("truncate", dst_path, e))?;
    ctx.progress(0, len);
    let mut use_copy_file_range = true;
    let mut offset = 0u64;
    while offset < len {
        ctx.check(what)?;
        let Some((start, end)) = next_extent(src, src_path, offset, len)? else {
            break;
        };
        let mut pos = start;
        while pos < end {
            ctx.check(what)?;
            let n = (end - pos).min(CHUNK);
            let moved = if use_copy_file_range {
                match copy_range(src, dst, pos, n) {
                    Ok(m) => m,
                    Err(e) if copy_range_unsupported(e) => {
                        use_copy_file_range = false;
                        continue;
                    }
                    Err(e) => return Err(io_err("copy_file_range", dst_path, e.into())),
                }
            } else {
                copy_range_rw(src, src_path, dst, dst_path, pos, n)?
            };
            if moved == 0 {
                // The source shrank under us: what is left reads as zeros.
                pos = end;
                break;
            }
            start_writeback(dst, pos, moved);
            pos += moved;
            ctx.progress(pos, len);
        }
        offset = end.max(pos);
    }
    ctx.progress(len, len);
    Ok(())
}

/// Starts writing a freshly copied range to disk without waiting for it, so that the
/// final fsync finds little left: the copy and the disk work side by side instead of one
/// after the other. Only a hint; failures are ignored (the final fsync reports real ones).
fn start_writeback(dst: &File, offset: u64, len: u64) {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: `dst` is an open file owned by the caller for the duration of the call;
    // sync_file_range only reads its arguments and touches no memory of this process.
    let rc = unsafe {
        libc::sync_file_range(
            std::os::fd::AsRawFd::as_raw_fd(dst),
            offset,
            len,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
    if rc != 0 {
        tracing::debug!("sync_file_range: {}", std::io::Error::last_os_error());
    }
}

/// The next data extent `[start, end)` at or after `offset`, or `None` past the last one.
/// Where the file system cannot say, everything from `offset` counts as data.
fn next_extent(src: &File, path: &Path, offset: u64, len: u64) -> Result<Option<(u64, u64)>> {
    let start = match rustix::fs::seek(src, SeekFrom::Data(offset)) {
        Ok(s) => s,
        Err(Errno::NXIO) => return Ok(None),
        Err(Errno::INVAL | Errno::OPNOTSUPP) => return Ok(Some((offset, len))),
        Err(e) => return Err(io_err("seek data", path, e.into())),
    };
    if start >= len {
        return Ok(None);
    }
    let end = match rustix::fs::seek(src, SeekFrom::Hole(start)) {
        Ok(h) => h.min(len),
        Err(Errno::NXIO) => len,
        Err(e) => return Err(io_err("seek hole", path, e.into())),
    };
    Ok(Some((start, end.max(start))))
}

fn copy_range(src: &File, dst: &File, pos: u64, n: u64) -> std::result::Result<u64, Errno> {
    let mut off_in = pos;
    let mut off_out = pos;
    let len = usize::try_from(n).unwrap_or(usize::MAX);
    loop {
        match rustix::fs::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), len) {
            Ok(m) => return Ok(m as u64),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

fn copy_range_unsupported(e: Errno) -> bool {
    matches!(
        e,
        Errno::XDEV | Errno::NOSYS | Errno::OPNOTSUPP | Errno::INVAL | Errno::BADF
    )
}

/// The read/write fallback: copies `[pos, pos + n)`, skipping all-zero blocks so that they
/// stay holes in `dst`.
fn copy_range_rw(
    src: &File,
    src_path: &Path,
    dst: &File,
    dst_path: &Path,
    pos: u64,
    n: u64,
) -> Result<u64> {
    let mut buf = vec![0u8; FALLBACK_BUF.min(usize::try_from(n).unwrap_or(FALLBACK_BUF))];
    let got = loop {
        match src.read_at(&mut buf, pos) {
            Ok(g) => break g,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("read", src_path, e)),
        }
    };
    for (i, block) in buf[..got].chunks(4096).enumerate() {
        if block.iter().any(|&b| b != 0) {
            dst.write_all_at(block, pos + (i * 4096) as u64)
                .map_err(|e| io_err("write", dst_path, e))?;
        }
    }
    Ok(got as u64)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn sparse_source(dir: &Path) -> (std::path::PathBuf, Vec<(u64, Vec<u8>)>) {
        let path = dir.join("src");
        let f = std::fs::File::create(&path).expect("create");
        f.set_len(256 << 20).expect("truncate");
        let pattern = vec![
            (0u64, vec![1u8; 8192]),
            (40 << 20, vec![2u8; 3 << 20]),
            ((256 << 20) - 10, vec![3u8; 10]),
        ];
        for (off, bytes) in &pattern {
            f.write_all_at(bytes, *off).expect("write");
        }
        (path, pattern)
    }

    #[test]
    fn sparse_copy_keeps_data_and_holes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (src_path, pattern) = sparse_source(dir.path());
        let src = std::fs::File::open(&src_path).expect("open");
        let dst_path = dir.path().join("dst");
        let dst = crate::durable::create_new(&dst_path).expect("create");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let ctx = OpContext::with_progress(Arc::new(move |d, t| {
            s2.lock().expect("lock").push((d, t));
        }));
        sparse_copy(&src, &src_path, &dst, &dst_path, &ctx, "test copy").expect("copy");
        let meta = dst.metadata().expect("stat");
        assert_eq!(meta.len(), 256 << 20);
        use std::os::unix::fs::MetadataExt;
        assert!(
            meta.blocks() * 512 < 16 << 20,
            "holes were filled: {} bytes allocated",
            meta.blocks() * 512
        );
        for (off, bytes) in &pattern {
            let mut got = vec![0u8; bytes.len()];
            dst.read_exact_at(&mut got, *off).expect("read");
            assert!(got == *bytes, "bytes at {off} differ");
        }
        let seen = seen.lock().expect("lock").clone();
        assert_eq!(seen.first(), Some(&(0, 256 << 20)));
        assert_eq!(seen.last(), Some(&(256 << 20, 256 << 20)));
        assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "{seen:?}");
    }

    #[test]
    fn the_read_write_fallback_keeps_zero_blocks_as_holes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src_path = dir.path().join("src");
        let src_w = std::fs::File::create(&src_path).expect("create");
        // Written zeros are data to SEEK_DATA; the fallback must still not allocate them.
        src_w.write_all_at(&vec![0u8; 1 << 20], 0).expect("zeros");
        src_w.write_all_at(b"tail", 1 << 20).expect("tail");
        let src = std::fs::File::open(&src_path).expect("open");
        let dst_path = dir.path().join("dst");
        let dst = crate::durable::create_new(&dst_path).expect("create");
        dst.set_len((1 << 20) + 4).expect("truncate");
        let mut pos = 0;
        while pos < (1 << 20) + 4 {
            pos += copy_range_rw(&src, &src_path, &dst, &dst_path, pos, (1 << 20) + 4 - pos)
                .expect("copy");
        }
        let mut tail = [0u8; 4];
        dst.read_exact_at(&mut tail, 1 << 20).expect("read");
        assert_eq!(&tail, b"tail");
        use std::os::unix::fs::MetadataExt;
        let allocated = dst.metadata().expect("stat").blocks() * 512;
        assert!(
            allocated <= 64 << 10,
            "zeros were written: {allocated} bytes"
        );
    }

    #[test]
    fn an_aborted_copy_stops_with_aborted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (src_path, _) = sparse_source(dir.path());
        let src = std::fs::File::open(&src_path).expect("open");
        let dst_path = dir.path().join("dst");
        let dst = crate::durable::create_new(&dst_path).expect("create");
        let ctx = OpContext::none();
        let token = ctx.cancel_token().clone();
        let ctx = OpContext::with_progress(Arc::new(move |d, _| {
            if d > 0 {
                token.cancel();
            }
        }))
        .with_cancel(ctx.cancel_token().clone());
        let err = sparse_copy(&src, &src_path, &dst, &dst_path, &ctx, "doomed copy")
            .expect_err("aborted");
        assert_eq!(err.code(), "aborted");
        assert!(err.to_string().contains("doomed copy"), "{err}");
    }
}
