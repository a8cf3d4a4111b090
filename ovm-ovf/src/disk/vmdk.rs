//! VMDK sparse extents, natively: streamOptimized read as a stream (grain markers in
//! order), monolithicSparse and marker-less compressed extents read through their grain
//! directory after spooling; and a streamOptimized writer for export.
//!
//! Layout (VMware "Virtual Disk Format 5.0"): a 512-byte header (`KDMV`), an embedded
//! text descriptor, then grains. Stream-optimized extents carry a marker before each
//! compressed grain (`lba: u64, size: u32`) and typed metadata markers (grain tables,
//! grain directory, footer, end of stream).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use flate2::write::ZlibEncoder;
use flate2::{Compression, Decompress, FlushDecompress, Status};

use super::{SparseWriter, read_full, spool};
use crate::error::{OvfError, Result};
use crate::manifest::{DigestAlgorithm, Hasher};

const SECTOR: u64 = 512;
const GD_AT_END: u64 = u64::MAX;
const FLAG_COMPRESSED: u32 = 1 << 16;
const FLAG_MARKERS: u32 = 1 << 17;
const MARKER_EOS: u32 = 0;
const MARKER_GT: u32 = 1;
const MARKER_GD: u32 = 2;
const MARKER_FOOTER: u32 = 3;
/// Largest grain accepted: 1 MiB (VMware writes 64 KiB).
const MAX_GRAIN_SECTORS: u64 = 2048;
/// Largest embedded descriptor accepted.
const MAX_DESCRIPTOR_SECTORS: u64 = 2048;
/// Largest metadata block (grain directory) accepted in a stream: 64 MiB.
const MAX_METADATA_SECTORS: u64 = 1 << 17;

/// The sparse extent header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseHeader {
    /// Format version (1, 2 or 3).
    pub version: u32,
    /// Flags (compressed grains, markers, ...).
    pub flags: u32,
    /// Capacity in sectors.
    pub capacity: u64,
    /// Grain size in sectors.
    pub grain_size: u64,
    /// Descriptor offset in sectors.
    pub descriptor_offset: u64,
    /// Descriptor size in sectors.
    pub descriptor_size: u64,
    /// Grain table entries per grain table.
    pub num_gtes_per_gt: u32,
    /// Redundant grain directory offset, sectors.
    pub rgd_offset: u64,
    /// Grain directory offset, sectors (`u64::MAX`: in the footer).
    pub gd_offset: u64,
    /// Sectors before the first grain.
    pub overhead: u64,
    /// Compression algorithm (1: deflate).
    pub compress_algorithm: u16,
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl SparseHeader {
    /// Parses and sanity-checks a header sector.
    pub fn parse(file: &str, b: &[u8]) -> Result<SparseHeader> {
        if b.len() < 512 || &b[0..4] != b"KDMV" {
            return Err(OvfError::disk(
                file,
                "not a VMDK sparse extent (no KDMV magic)",
            ));
        }
        let h = SparseHeader {
            version: le32(b, 4),
            flags: le32(b, 8),
            capacity: le64(b, 12),
            grain_size: le64(b, 20),
            descriptor_offset: le64(b, 28),
            descriptor_size: le64(b, 36),
            num_gtes_per_gt: le32(b, 44),
            rgd_offset: le64(b, 48),
            gd_offset: le64(b, 56),
            overhead: le64(b, 64),
            compress_algorithm: u16::from_le_bytes([b[77], b[78]]),
        };
        let bad = |r: String| Err(OvfError::disk(file, r));
        if !(1..=3).contains(&h.version) {
            return bad(format!("unsupported VMDK version {}", h.version));
        }
        if h.grain_size < 8 || h.grain_size > MAX_GRAIN_SECTORS || !h.grain_size.is_power_of_two() {
            return bad(format!("grain size of {} sectors is invalid", h.grain_size));
        }
        if h.num_gtes_per_gt == 0 || h.num_gtes_per_gt > 1 << 16 {
            return bad(format!(
                "{} grain table entries per table is invalid",
                h.num_gtes_per_gt
            ));
        }
        if h.capacity.checked_mul(SECTOR).is_none() {
            return bad(format!("capacity of {} sectors overflows", h.capacity));
        }
        if h.descriptor_size > MAX_DESCRIPTOR_SECTORS {
            return bad(format!(
                "descriptor of {} sectors is too large",
                h.descriptor_size
            ));
        }
        if h.flags & FLAG_COMPRESSED != 0 && h.compress_algorithm != 1 {
            return bad(format!(
                "compression algorithm {} is unknown",
                h.compress_algorithm
            ));
        }
        Ok(h)
    }

    /// Capacity in bytes.
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity * SECTOR
    }

    fn grain_bytes(&self) -> usize {
        (self.grain_size * SECTOR) as usize
    }

    /// Serialises the header sector.
    fn to_bytes(&self) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[0..4].copy_from_slice(b"KDMV");
        b[4..8].copy_from_slice(&self.version.to_le_bytes());
        b[8..12].copy_from_slice(&self.flags.to_le_bytes());
        b[12..20].copy_from_slice(&self.capacity.to_le_bytes());
        b[20..28].copy_from_slice(&self.grain_size.to_le_bytes());
        b[28..36].copy_from_slice(&self.descriptor_offset.to_le_bytes());
        b[36..44].copy_from_slice(&self.descriptor_size.to_le_bytes());
        b[44..48].copy_from_slice(&self.num_gtes_per_gt.to_le_bytes());
        b[48..56].copy_from_slice(&self.rgd_offset.to_le_bytes());
        b[56..64].copy_from_slice(&self.gd_offset.to_le_bytes());
        b[64..72].copy_from_slice(&self.overhead.to_le_bytes());
        b[72] = 0;
        b[73] = b'\n';
        b[74] = b' ';
        b[75] = b'\r';
        b[76] = b'\n';
        b[77..79].copy_from_slice(&self.compress_algorithm.to_le_bytes());
        b
    }
}

/// Checks the embedded descriptor: one extent in this file, no parent.
fn check_descriptor(file: &str, text: &str) -> Result<String> {
    let text = text.trim_end_matches('\0');
    let mut create_type = String::new();
    let mut extents = 0;
    for line in text.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("createType") {
            create_type = v
                .trim_start_matches([' ', '='])
                .trim()
                .trim_matches('"')
                .to_owned();
        } else if let Some(v) = line.strip_prefix("parentCID") {
            let v = v.trim_start_matches([' ', '=']).trim();
            if !v.eq_ignore_ascii_case("ffffffff") {
                return Err(OvfError::ExternalReference {
                    file: file.to_owned(),
                    what: format!("a parent disk (parentCID={v})"),
                });
            }
        } else if line.starts_with("parentFileNameHint") {
            return Err(OvfError::ExternalReference {
                file: file.to_owned(),
                what: format!("a backing file ({line})"),
            });
        } else if line.starts_with("RW ")
            || line.starts_with("RDONLY ")
            || line.starts_with("NOACCESS ")
        {
            extents += 1;
            if !line.contains("SPARSE") {
                return Err(OvfError::ExternalReference {
                    file: file.to_owned(),
                    what: format!("an external extent ({line})"),
                });
            }
        }
    }
    if extents > 1 {
        return Err(OvfError::ExternalReference {
            file: file.to_owned(),
            what: format!("{extents} extents (only a single embedded extent is read)"),
        });
    }
    match create_type.as_str() {
        "streamOptimized" | "monolithicSparse" | "" => Ok(create_type),
        other => Err(OvfError::UnsupportedFormat {
            file: file.to_owned(),
            format: format!("VMDK createType {other}"),
        }),
    }
}

/// Inflates one grain into `out`, which must not be exceeded (bounded: a grain that
/// inflates beyond the grain size is refused).
fn inflate_grain(file: &str, z: &mut Decompress, input: &[u8], out: &mut [u8]) -> Result<usize> {
    z.reset(true);
    let status = z
        .decompress(input, out, FlushDecompress::Finish)
        .map_err(|e| OvfError::disk(file, format!("corrupt compressed grain: {e}")))?;
    let produced = z.total_out() as usize;
    match status {
        Status::StreamEnd => Ok(produced),
        _ if produced == out.len() => Err(OvfError::disk(
            file,
            "a compressed grain inflates beyond the grain size",
        )),
        _ => Err(OvfError::disk(file, "truncated compressed grain")),
    }
}

/// Converts a VMDK sparse extent read from `input` into `out`.
pub fn convert(
    file: &str,
    input: &mut dyn Read,
    out: SparseWriter,
    spool_dir: &Path,
) -> Result<u64> {
    let io_err = |e| OvfError::io(format!("reading {file}"), e);
    let mut header = [0u8; 512];
    if read_full(input, &mut header).map_err(io_err)? < 512 {
        return Err(OvfError::disk(file, "truncated header"));
    }
    let h = SparseHeader::parse(file, &header)?;
    if h.capacity_bytes() > out.capacity() {
        return Err(OvfError::disk(
            file,
            format!(
                "VMDK capacity {} bytes exceeds the disk capacity {} bytes",
                h.capacity_bytes(),
                out.capacity()
            ),
        ));
    }
    let streamed = h.flags & FLAG_MARKERS != 0 && h.flags & FLAG_COMPRESSED != 0;
    if streamed {
        return convert_stream(file, &h, input, out);
    }
    // Random access needed: spool the whole extent first.
    let max = h
        .capacity_bytes()
        .saturating_add(h.capacity_bytes() / 8)
        .saturating_add(64 << 20);
    let mut rest = io::Cursor::new(header.to_vec()).chain(input);
    let spooled = spool(spool_dir, file, &mut rest, max)?;
    let f = File::open(&spooled.path)
        .map_err(|e| OvfError::io(format!("opening spool of {file}"), e))?;
    convert_random(file, &h, &f, out)
}

fn skip(input: &mut dyn Read, mut n: u64, file: &str) -> Result<()> {
    let mut buf = [0u8; 8192];
    while n > 0 {
        let want = n.min(buf.len() as u64) as usize;
        let got = read_full(input, &mut buf[..want])
            .map_err(|e| OvfError::io(format!("reading {file}"), e))?;
        if got < want {
            return Err(OvfError::disk(file, "truncated"));
        }
        n -= want as u64;
    }
    Ok(())
}

fn convert_stream(
    file: &str,
    h: &SparseHeader,
    input: &mut dyn Read,
    mut out: SparseWriter,
) -> Result<u64> {
    let io_err = |e| OvfError::io(format!("reading {file}"), e);
    let mut pos: u64 = 512;
    // Descriptor.
    if h.descriptor_offset > 0 && h.descriptor_size > 0 {
        let start = h.descriptor_offset * SECTOR;
        if start < pos {
            return Err(OvfError::disk(file, "descriptor overlaps the header"));
        }
        skip(input, start - pos, file)?;
        let mut desc = vec![0u8; (h.descriptor_size * SECTOR) as usize];
        if read_full(input, &mut desc).map_err(io_err)? < desc.len() {
            return Err(OvfError::disk(file, "truncated descriptor"));
        }
        pos = start + desc.len() as u64;
        check_descriptor(file, &String::from_utf8_lossy(&desc))?;
    }
    let overhead = h.overhead.saturating_mul(SECTOR);
    if overhead > pos {
        if overhead - pos > MAX_METADATA_SECTORS * SECTOR {
            return Err(OvfError::disk(file, "overhead too large"));
        }
        skip(input, overhead - pos, file)?;
    }
    let grain = h.grain_bytes();
    let max_compressed = grain * 2 + 4096;
    let mut compressed = vec![0u8; max_compressed];
    let mut plain = vec![0u8; grain];
    let mut z = Decompress::new(true);
    let capacity = h.capacity_bytes();
    loop {
        let mut m = [0u8; 12];
        if read_full(input, &mut m).map_err(io_err)? < 12 {
            return Err(OvfError::disk(
                file,
                "stream ends without an end-of-stream marker",
            ));
        }
        let val = le64(&m, 0);
        let size = le32(&m, 8) as usize;
        if size > 0 {
            if size > max_compressed {
                return Err(OvfError::disk(
                    file,
                    format!("compressed grain of {size} bytes is too large"),
                ));
            }
            if read_full(input, &mut compressed[..size]).map_err(io_err)? < size {
                return Err(OvfError::disk(file, "truncated grain"));
            }
            let pad = (SECTOR - (12 + size as u64) % SECTOR) % SECTOR;
            skip(input, pad, file)?;
            let n = inflate_grain(file, &mut z, &compressed[..size], &mut plain)?;
            let offset = val
                .checked_mul(SECTOR)
                .filter(|o| o.checked_add(n as u64).is_some_and(|e| e <= capacity))
                .ok_or_else(|| {
                    OvfError::disk(
                        file,
                        format!("grain at sector {val} lies beyond the capacity"),
                    )
                })?;
            out.write_at(offset, &plain[..n])
                .map_err(|e| OvfError::io(format!("writing disk from {file}"), e))?;
            continue;
        }
        let mut rest = [0u8; 500];
        if read_full(input, &mut rest).map_err(io_err)? < 500 {
            return Err(OvfError::disk(file, "truncated marker"));
        }
        match le32(&rest, 0) {
            MARKER_EOS => break,
            MARKER_GT | MARKER_GD | MARKER_FOOTER => {
                if val > MAX_METADATA_SECTORS {
                    return Err(OvfError::disk(
                        file,
                        format!("metadata block of {val} sectors is too large"),
                    ));
                }
                skip(input, val * SECTOR, file)?;
            }
            other => return Err(OvfError::disk(file, format!("unknown marker type {other}"))),
        }
    }
    out.finish()
        .map_err(|e| OvfError::io(format!("finishing disk from {file}"), e))
}

fn read_exact_at(f: &File, buf: &mut [u8], offset: u64, file: &str, len: u64) -> Result<()> {
    if offset.checked_add(buf.len() as u64).is_none_or(|e| e > len) {
        return Err(OvfError::disk(
            file,
            format!("reference to offset {offset} lies beyond the end of the file"),
        ));
    }
    f.read_exact_at(buf, offset)
        .map_err(|e| OvfError::io(format!("reading {file}"), e))
}

fn convert_random(
    file: &str,
    header: &SparseHeader,
    f: &File,
    mut out: SparseWriter,
) -> Result<u64> {
    let len = f
        .metadata()
        .map_err(|e| OvfError::io(format!("reading {file}"), e))?
        .len();
    let mut h = header.clone();
    if h.descriptor_offset > 0 && h.descriptor_size > 0 {
        let mut desc = vec![0u8; (h.descriptor_size * SECTOR) as usize];
        read_exact_at(f, &mut desc, h.descriptor_offset * SECTOR, file, len)?;
        check_descriptor(file, &String::from_utf8_lossy(&desc))?;
    }
    if h.gd_offset == GD_AT_END {
        // The footer (a header copy) is the sector before the end-of-stream marker.
        if len < 1536 {
            return Err(OvfError::disk(file, "too short for a footer"));
        }
        let mut footer = [0u8; 512];
        read_exact_at(f, &mut footer, len - 1024, file, len)?;
        h = SparseHeader::parse(file, &footer)?;
        if h.gd_offset == GD_AT_END {
            return Err(OvfError::disk(file, "footer has no grain directory"));
        }
    }
    let compressed = h.flags & FLAG_COMPRESSED != 0;
    let grain = h.grain_bytes();
    let grains = h.capacity.div_ceil(h.grain_size);
    let gts = grains.div_ceil(h.num_gtes_per_gt as u64);
    let mut gd = vec![0u8; (gts * 4) as usize];
    read_exact_at(f, &mut gd, h.gd_offset.saturating_mul(SECTOR), file, len)?;
    let mut gt = vec![0u8; h.num_gtes_per_gt as usize * 4];
    let mut plain = vec![0u8; grain];
    let mut packed = vec![0u8; grain * 2 + 4096];
    let mut z = Decompress::new(true);
    let capacity = h.capacity_bytes();
    for g in 0..gts as usize {
        let gt_sector = le32(&gd, g * 4) as u64;
        if gt_sector == 0 {
            continue;
        }
        read_exact_at(f, &mut gt, gt_sector * SECTOR, file, len)?;
        for e in 0..h.num_gtes_per_gt as usize {
            let index = g as u64 * h.num_gtes_per_gt as u64 + e as u64;
            if index >= grains {
                break;
            }
            let sector = le32(&gt, e * 4) as u64;
            if sector <= 1 {
                continue; // unallocated (0) or zero grain (1)
            }
            let offset = index * grain as u64;
            let n = (capacity - offset).min(grain as u64) as usize;
            if compressed {
                let mut m = [0u8; 12];
                read_exact_at(f, &mut m, sector * SECTOR, file, len)?;
                let size = le32(&m, 8) as usize;
                if size == 0 || size > packed.len() {
                    return Err(OvfError::disk(
                        file,
                        format!("bad compressed grain size {size}"),
                    ));
                }
                read_exact_at(f, &mut packed[..size], sector * SECTOR + 12, file, len)?;
                let got = inflate_grain(file, &mut z, &packed[..size], &mut plain)?;
                out.write_at(offset, &plain[..got.min(n)])
                    .map_err(|e| OvfError::io(format!("writing disk from {file}"), e))?;
            } else {
                read_exact_at(f, &mut plain[..n], sector * SECTOR, file, len)?;
                out.write_at(offset, &plain[..n])
                    .map_err(|e| OvfError::io(format!("writing disk from {file}"), e))?;
            }
        }
    }
    out.finish()
        .map_err(|e| OvfError::io(format!("finishing disk from {file}"), e))
}

/// What writing a streamOptimized VMDK produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenVmdk {
    /// Size of the VMDK file.
    pub size: u64,
    /// SHA-256 of the file, hex.
    pub sha256: String,
}

/// A writer that counts and hashes what passes through.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: Hasher,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> HashingWriter<W> {
    fn pad_to_sector(&mut self) -> io::Result<()> {
        let pad = (SECTOR - self.written % SECTOR) % SECTOR;
        self.write_all(&vec![0u8; pad as usize])
    }
    fn sector(&self) -> u64 {
        self.written / SECTOR
    }
}

fn metadata_marker(sectors: u64, kind: u32) -> [u8; 512] {
    let mut m = [0u8; 512];
    m[0..8].copy_from_slice(&sectors.to_le_bytes());
    m[12..16].copy_from_slice(&kind.to_le_bytes());
    m
}

/// Writes the raw image `input` (of `capacity` bytes) as a streamOptimized VMDK named
/// `name` (used in its descriptor) into `out`. Zero grains are left out.
pub fn write_stream_optimized(
    input: &mut dyn Read,
    capacity: u64,
    name: &str,
    out: &mut dyn Write,
) -> io::Result<WrittenVmdk> {
    let grain_sectors = 128u64;
    let grain = (grain_sectors * SECTOR) as usize;
    let sectors = capacity.div_ceil(SECTOR);
    let gtes = 512u32;
    let descriptor = format!(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"streamOptimized\"\n\n# Extent description\nRW {sectors} SPARSE \"{name}\"\n\n# The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\nddb.adapterType = \"lsilogic\"\nddb.geometry.cylinders = \"{}\"\nddb.geometry.heads = \"255\"\nddb.geometry.sectors = \"63\"\n",
        (sectors / (255 * 63)).clamp(1, 65535)
    );
    let desc_sectors = (descriptor.len() as u64).div_ceil(SECTOR).max(1);
    let overhead = 128u64.max(1 + desc_sectors);
    let mut header = SparseHeader {
        version: 3,
        flags: 1 | FLAG_COMPRESSED | FLAG_MARKERS,
        capacity: sectors,
        grain_size: grain_sectors,
        descriptor_offset: 1,
        descriptor_size: desc_sectors,
        num_gtes_per_gt: gtes,
        rgd_offset: 0,
        gd_offset: GD_AT_END,
        overhead,
        compress_algorithm: 1,
    };
    let mut w = HashingWriter {
        inner: out,
        hasher: Hasher::new(DigestAlgorithm::Sha256),
        written: 0,
    };
    w.write_all(&header.to_bytes())?;
    w.write_all(descriptor.as_bytes())?;
    w.write_all(&vec![0u8; (overhead * SECTOR - w.written) as usize])?;

    let grains = sectors.div_ceil(grain_sectors);
    let mut gt_entries = vec![0u32; grains.div_ceil(gtes as u64) as usize * gtes as usize];
    let mut buf = vec![0u8; grain];
    let mut packed = Vec::with_capacity(grain + 1024);
    for index in 0..grains {
        let want = (capacity - index * grain as u64).min(grain as u64) as usize;
        let got = read_full(input, &mut buf[..want])?;
        if got < want {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "raw image shorter than its capacity",
            ));
        }
        if buf[..got].iter().all(|b| *b == 0) {
            continue;
        }
        packed.clear();
        let mut enc = ZlibEncoder::new(std::mem::take(&mut packed), Compression::fast());
        enc.write_all(&buf[..got])?;
        packed = enc.finish()?;
        let sector = w.sector();
        gt_entries[index as usize] = u32::try_from(sector)
            .map_err(|_| io::Error::other("VMDK larger than 2 TiB of data"))?;
        w.write_all(&(index * grain_sectors).to_le_bytes())?;
        w.write_all(&(packed.len() as u32).to_le_bytes())?;
        w.write_all(&packed)?;
        w.pad_to_sector()?;
    }
    // Grain tables (only those with entries), then the directory.
    let gt_sectors = (gtes as u64 * 4).div_ceil(SECTOR);
    let mut gd = vec![0u32; gt_entries.len() / gtes as usize];
    for (t, table) in gt_entries.chunks(gtes as usize).enumerate() {
        if table.iter().all(|e| *e == 0) {
            continue;
        }
        w.write_all(&metadata_marker(gt_sectors, MARKER_GT))?;
        gd[t] = u32::try_from(w.sector()).map_err(|_| io::Error::other("VMDK too large"))?;
        let bytes: Vec<u8> = table.iter().flat_map(|e| e.to_le_bytes()).collect();
        w.write_all(&bytes)?;
        w.pad_to_sector()?;
    }
    let gd_sectors = (gd.len() as u64 * 4).div_ceil(SECTOR).max(1);
    w.write_all(&metadata_marker(gd_sectors, MARKER_GD))?;
    header.gd_offset = w.sector();
    let bytes: Vec<u8> = gd.iter().flat_map(|e| e.to_le_bytes()).collect();
    w.write_all(&bytes)?;
    w.pad_to_sector()?;
    w.write_all(&metadata_marker(1, MARKER_FOOTER))?;
    w.write_all(&header.to_bytes())?;
    w.write_all(&[0u8; 512])?; // end of stream
    w.flush()?;
    Ok(WrittenVmdk {
        size: w.written,
        sha256: w.hasher.finish_hex(),
    })
}
