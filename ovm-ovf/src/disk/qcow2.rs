//! qcow2 images: the header is checked here (no backing file, no external data file,
//! virtual size within the disk), then `qemu-img convert -f qcow2 -O raw` does the
//! conversion, with the format named so that qemu never probes.

use std::io::Read;
use std::path::Path;
use std::process::Command;

use super::{SparseWriter, read_full, spool};
use crate::error::{OvfError, Result};

/// Incompatible feature bit: the data lives in an external file.
const INCOMPAT_EXTERNAL_DATA: u64 = 1 << 2;

/// Checks a qcow2 header (at least 104 bytes for version 3).
pub fn check_header(file: &str, h: &[u8], capacity: u64) -> Result<u64> {
    if h.len() < 72 || &h[0..4] != b"QFI\xfb" {
        return Err(OvfError::disk(file, "not a qcow2 image"));
    }
    let be32 = |at: usize| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    let be64 = |at: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&h[at..at + 8]);
        u64::from_be_bytes(a)
    };
    let version = be32(4);
    if !(2..=3).contains(&version) {
        return Err(OvfError::disk(
            file,
            format!("qcow2 version {version} is not supported"),
        ));
    }
    if be64(8) != 0 {
        return Err(OvfError::ExternalReference {
            file: file.to_owned(),
            what: "a backing file".into(),
        });
    }
    if version == 3 && h.len() >= 80 && be64(72) & INCOMPAT_EXTERNAL_DATA != 0 {
        return Err(OvfError::ExternalReference {
            file: file.to_owned(),
            what: "an external data file".into(),
        });
    }
    let size = be64(24);
    if size > capacity {
        return Err(OvfError::disk(
            file,
            format!("qcow2 virtual size {size} exceeds the disk capacity {capacity}"),
        ));
    }
    Ok(size)
}

/// Spools the image, checks it, and converts it with qemu-img into `out`'s file.
pub fn convert(
    file: &str,
    input: &mut dyn Read,
    out: SparseWriter,
    spool_dir: &Path,
) -> Result<u64> {
    let mut head = vec![0u8; 512];
    let n = read_full(input, &mut head).map_err(|e| OvfError::io(format!("reading {file}"), e))?;
    head.truncate(n);
    check_header(file, &head, out.capacity())?;
    let max = out
        .capacity()
        .saturating_add(out.capacity() / 4)
        .saturating_add(64 << 20);
    let mut all = std::io::Cursor::new(head).chain(input);
    let spooled = spool(spool_dir, file, &mut all, max)?;
    let target = out.path().to_owned();
    out.finish()
        .map_err(|e| OvfError::io(format!("sizing disk for {file}"), e))?;
    let output = Command::new("qemu-img")
        .args([
            "convert",
            "-q",
            "-f",
            "qcow2",
            "-O",
            "raw",
            "-n",
            "--target-is-zero",
        ])
        .arg(&spooled.path)
        .arg(&target)
        .output()
        .map_err(|e| OvfError::Tool {
            tool: "qemu-img".into(),
            reason: format!("cannot run: {e}"),
        })?;
    if !output.status.success() {
        return Err(OvfError::Tool {
            tool: "qemu-img convert -f qcow2".into(),
            reason: format!(
                "{} on {file}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    Ok(0)
}
