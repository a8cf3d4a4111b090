//! Disk images: detection, and conversion of every accepted format into a sparse raw
//! file (zero blocks become holes).
//!
//! - VMDK streamOptimized: read as a stream, natively ([`vmdk`]);
//! - VMDK monolithicSparse (and compressed sparse without markers): spooled, then read
//!   natively through its grain directory;
//! - qcow2: spooled, header checked (no backing file, no external data file), converted
//!   with `qemu-img convert -f qcow2 -O raw` — the format is always named, never probed;
//! - raw: copied as is.
//!
//! Descriptor-only VMDKs (external extents), delta disks and backing files are refused.

pub mod qcow2;
pub mod vmdk;

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{OvfError, Result};

/// A format as declared by `ovf:format` or detected from content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// Raw bytes.
    Raw,
    /// VMDK (a sparse extent: streamOptimized or monolithicSparse).
    Vmdk,
    /// qcow2.
    Qcow2,
}

impl ImageFormat {
    /// A short name.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Vmdk => "vmdk",
            ImageFormat::Qcow2 => "qcow2",
        }
    }
}

/// What an `ovf:format` URI declares: `Ok(None)` when absent, an error for formats ovm
/// does not read (VHD, VDI, ...).
pub fn declared_format(file: &str, uri: Option<&str>) -> Result<Option<ImageFormat>> {
    let Some(uri) = uri.map(str::trim).filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    let lower = uri.to_ascii_lowercase();
    if lower.contains("vmdk") {
        return Ok(Some(ImageFormat::Vmdk));
    }
    if lower.contains("qcow") {
        return Ok(Some(ImageFormat::Qcow2));
    }
    // oVirt writes raw images as "http://en.wikipedia.org/wiki/Byte".
    if lower.ends_with("/wiki/byte") || lower.contains("raw") {
        return Ok(Some(ImageFormat::Raw));
    }
    Err(OvfError::UnsupportedFormat {
        file: file.to_owned(),
        format: uri.to_owned(),
    })
}

/// What the first bytes of an image say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    /// A VMDK sparse extent (`KDMV`).
    VmdkSparse,
    /// A VMDK text descriptor (its data lives in other files).
    VmdkDescriptor,
    /// qcow2 (`QFI\xfb`).
    Qcow2,
    /// VHD (`conectix`).
    Vhd,
    /// VirtualBox VDI.
    Vdi,
    /// Nothing recognisable (raw data).
    Unknown,
}

/// Detects a format from the first bytes.
pub fn sniff(head: &[u8]) -> Sniffed {
    if head.starts_with(b"KDMV") {
        Sniffed::VmdkSparse
    } else if head.starts_with(b"QFI\xfb") {
        Sniffed::Qcow2
    } else if head.starts_with(b"# Disk DescriptorFile") {
        Sniffed::VmdkDescriptor
    } else if head.starts_with(b"conectix") {
        Sniffed::Vhd
    } else if head.len() >= 68 && &head[64..68] == b"\x7f\x10\xda\xbe" {
        Sniffed::Vdi
    } else {
        Sniffed::Unknown
    }
}

/// Writes a raw image at offsets, leaving zero blocks as holes. The file must start
/// empty (new file, or a freshly created volume): skipped blocks read back as zeros.
pub struct SparseWriter {
    file: File,
    path: PathBuf,
    capacity: u64,
    data_bytes: u64,
}

/// Granularity of hole detection.
const BLOCK: usize = 4096;

impl SparseWriter {
    /// Opens (creating if needed) the file at `path` that will hold `capacity` bytes.
    /// An existing file must be empty or all zeros (a fresh volume).
    pub fn create(path: &Path, capacity: u64) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        Ok(SparseWriter {
            file,
            path: path.to_owned(),
            capacity,
            data_bytes: 0,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The guest-visible size.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes written as data (not holes).
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// Writes `data` at `offset`, refusing anything beyond the capacity.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|e| *e <= self.capacity)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "write of {} bytes at {offset} is beyond the capacity of {} bytes",
                        data.len(),
                        self.capacity
                    ),
                )
            })?;
        let _ = end;
        let mut i = 0;
        while i < data.len() {
            // Align blocks to the file, so holes line up with file system blocks.
            let pos = offset + i as u64;
            let to_boundary = BLOCK - (pos % BLOCK as u64) as usize;
            let n = to_boundary.min(data.len() - i);
            let block = &data[i..i + n];
            if block.iter().any(|b| *b != 0) {
                // Coalesce consecutive non-zero blocks into one write.
                let mut j = i + n;
                while j < data.len() {
                    let m = BLOCK.min(data.len() - j);
                    if data[j..j + m].iter().all(|b| *b == 0) {
                        break;
                    }
                    j += m;
                }
                self.file.write_all_at(&data[i..j], pos)?;
                self.data_bytes += (j - i) as u64;
                i = j;
            } else {
                i += n;
            }
        }
        Ok(())
    }

    /// Sets the final size (holes up to the capacity) and flushes.
    pub fn finish(self) -> io::Result<u64> {
        self.file.set_len(self.capacity)?;
        self.file.sync_all()?;
        Ok(self.data_bytes)
    }
}

/// Reads up to `buf.len()` bytes, stopping early only at end of input.
pub(crate) fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// What a conversion did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvertStats {
    /// The format actually read.
    pub format: ImageFormat,
    /// Bytes of data written (holes excluded).
    pub data_bytes: u64,
}

/// Converts an image read from `input` into `out` (sparse raw of the disk's capacity).
///
/// `declared` is the descriptor's claim; the content is always sniffed and must agree
/// (a declared raw image is copied whatever it contains, which is safe). Formats that
/// need random access are spooled into `spool_dir` first (removed afterwards).
pub fn convert(
    file: &str,
    declared: Option<ImageFormat>,
    input: &mut dyn Read,
    out: SparseWriter,
    spool_dir: &Path,
) -> Result<ConvertStats> {
    let mut head = vec![0u8; 512];
    let n = read_full(input, &mut head).map_err(|e| OvfError::io(format!("reading {file}"), e))?;
    head.truncate(n);
    let sniffed = sniff(&head);
    let mut input = io::Cursor::new(head.clone()).chain(input);
    let format = match (declared, sniffed) {
        (_, Sniffed::VmdkDescriptor) => {
            return Err(OvfError::ExternalReference {
                file: file.to_owned(),
                what: "extents in other files (a VMDK descriptor without data)".into(),
            });
        }
        (Some(ImageFormat::Raw), _) => ImageFormat::Raw,
        (Some(ImageFormat::Vmdk) | None, Sniffed::VmdkSparse) => ImageFormat::Vmdk,
        (Some(ImageFormat::Qcow2) | None, Sniffed::Qcow2) => ImageFormat::Qcow2,
        (None, Sniffed::Vhd) => {
            return Err(OvfError::UnsupportedFormat {
                file: file.to_owned(),
                format: "VHD".into(),
            });
        }
        (None, Sniffed::Vdi) => {
            return Err(OvfError::UnsupportedFormat {
                file: file.to_owned(),
                format: "VDI".into(),
            });
        }
        (None, Sniffed::Unknown) => {
            return Err(OvfError::disk(
                file,
                "no ovf:format and the content is not a known image format (raw must be declared)",
            ));
        }
        (Some(d), s) => {
            return Err(OvfError::disk(
                file,
                format!("declared {} but the content looks like {s:?}", d.as_str()),
            ));
        }
    };
    let data_bytes = match format {
        ImageFormat::Raw => copy_raw(file, &mut input, out)?,
        ImageFormat::Vmdk => vmdk::convert(file, &mut input, out, spool_dir)?,
        ImageFormat::Qcow2 => qcow2::convert(file, &mut input, out, spool_dir)?,
    };
    Ok(ConvertStats { format, data_bytes })
}

fn copy_raw(file: &str, input: &mut dyn Read, mut out: SparseWriter) -> Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    loop {
        let n =
            read_full(input, &mut buf).map_err(|e| OvfError::io(format!("reading {file}"), e))?;
        if n == 0 {
            break;
        }
        if pos + n as u64 > out.capacity() {
            return Err(OvfError::disk(
                file,
                format!(
                    "raw image is larger than the disk capacity of {} bytes",
                    out.capacity()
                ),
            ));
        }
        out.write_at(pos, &buf[..n])
            .map_err(|e| OvfError::io(format!("writing disk from {file}"), e))?;
        pos += n as u64;
    }
    out.finish()
        .map_err(|e| OvfError::io(format!("finishing disk from {file}"), e))
}

/// Writes `input` to a new file in `dir` (for formats that need random access), with
/// a size bound. The file is removed when the returned guard drops.
pub(crate) fn spool(dir: &Path, file: &str, input: &mut dyn Read, max: u64) -> Result<Spooled> {
    let path = dir.join(format!(".ovm-spool-{}-{}", std::process::id(), unique()));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| OvfError::io(format!("creating spool file {}", path.display()), e))?;
    let guard = Spooled { path };
    let mut limited = input.take(max.saturating_add(1));
    let n =
        io::copy(&mut limited, &mut f).map_err(|e| OvfError::io(format!("spooling {file}"), e))?;
    if n > max {
        return Err(OvfError::TooLarge {
            what: format!("disk image {file}"),
            size: n,
            limit: max,
        });
    }
    Ok(guard)
}

/// A spooled file, removed on drop.
pub(crate) struct Spooled {
    pub(crate) path: std::path::PathBuf,
}

impl Drop for Spooled {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

pub(crate) fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (NEXT.fetch_add(1, Ordering::Relaxed) << 48)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_writer_leaves_holes_and_bounds_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.raw");
        let mut w = SparseWriter::create(&path, 1 << 20).unwrap();
        let mut data = vec![0u8; 64 << 10];
        data[10] = 1;
        data[40_000] = 2;
        w.write_at(4096, &data).unwrap();
        assert!(w.write_at((1 << 20) - 1, &[1, 2]).is_err());
        assert_eq!(w.data_bytes(), 8192);
        w.finish().unwrap();
        let back = std::fs::read(&path).unwrap();
        assert_eq!(back.len(), 1 << 20);
        assert_eq!(back[4096 + 10], 1);
        assert_eq!(back[4096 + 40_000], 2);
        assert_eq!(back.iter().map(|b| *b as u64).sum::<u64>(), 3);
    }

    #[test]
    fn declared_formats() {
        let f = |u| declared_format("f", Some(u));
        assert_eq!(
            f("http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized").unwrap(),
            Some(ImageFormat::Vmdk)
        );
        assert_eq!(
            f("http://en.wikipedia.org/wiki/Byte").unwrap(),
            Some(ImageFormat::Raw)
        );
        assert_eq!(
            f("http://www.gnome.org/~markmc/qcow-image-format.html").unwrap(),
            Some(ImageFormat::Qcow2)
        );
        assert!(f("http://go.microsoft.com/fwlink/?LinkId=137171").is_err());
    }
}
