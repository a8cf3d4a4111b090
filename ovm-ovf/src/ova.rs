//! Reading packages — OVA archives (streamed, never extracted as is) and `.ovf`
//! directories — verifying them, and converting their disks to sparse raw files.
//!
//! Order (DSP0243 §5.3): the descriptor first, then the manifest, then the optional
//! certificate, then the referenced files in any order, chunked files as consecutive
//! `href.000000000`, `href.000000001`, ... entries.
//!
//! Refused: tar entries that are links, devices, directories, absolute or `..` paths,
//! duplicates, or referenced by nothing; files whose size differs from the declared one;
//! files or chunks not covered by the manifest, or whose digest differs; gzip streams
//! that expand beyond the disk they hold.
//!
//! Certificates: recognised and reported; their X.509 signature is not verified (see
//! [`CertificatePolicy`]). Integrity rests on the manifest digests, always verified.
//!
//! Disk data is handed to a converter thread through a small bounded channel, so that
//! hashing and inflating run on two cores and memory stays bounded (a few MiB) whatever
//! the disk size.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use crate::disk::{self, ConvertStats, ImageFormat, SparseWriter};
use crate::error::{OvfError, Result};
use crate::limits::{CertificatePolicy, Limits};
use crate::manifest::{Hasher, Manifest};
use crate::model::{Envelope, FileReference};
use crate::parse::{self, Parsed, check_href};

/// The head of a package: descriptor, manifest, certificate.
#[derive(Debug, Clone)]
pub struct Package {
    /// The parsed, validated descriptor.
    pub parsed: Parsed,
    /// The descriptor's name in the package.
    pub descriptor_name: String,
    /// The descriptor bytes (for digest checks).
    pub descriptor_bytes: Vec<u8>,
    /// The manifest, if present.
    pub manifest: Option<Manifest>,
    /// The manifest's name.
    pub manifest_name: Option<String>,
    /// The certificate's name, if present.
    pub certificate: Option<String>,
    /// Warnings about the package (beyond the descriptor's).
    pub warnings: Vec<String>,
}

/// A disk that comes from a file of the package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskPlan {
    /// `ovf:diskId`.
    pub disk_id: String,
    /// `ovf:fileRef`.
    pub file_id: String,
    /// The file's href.
    pub href: String,
    /// Guest-visible size.
    pub capacity_bytes: u64,
    /// Declared image format.
    pub declared: Option<ImageFormat>,
}

/// A converted disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractedDisk {
    /// The plan it fulfils.
    pub plan: DiskPlan,
    /// Where the raw image was written.
    pub path: PathBuf,
    /// Format read.
    pub format: ImageFormat,
    /// Bytes of data written (holes excluded).
    pub data_bytes: u64,
}

/// The outcome of extracting a package.
#[derive(Debug, Clone)]
pub struct Extraction {
    /// The head.
    pub package: Package,
    /// The converted disks, in DiskSection order.
    pub disks: Vec<ExtractedDisk>,
    /// Every warning (descriptor and package).
    pub warnings: Vec<String>,
}

/// Plans the disks backed by files: capacity, declared format, href. Blank disks (no
/// file) are not included. A file backing two disks is refused.
pub fn disk_plans(env: &Envelope, limits: &Limits) -> Result<Vec<DiskPlan>> {
    let mut plans = Vec::new();
    let mut used = BTreeSet::new();
    let Some(ds) = &env.disk_section else {
        return Ok(plans);
    };
    for d in &ds.disks {
        let Some(file_id) = &d.file_ref else { continue };
        let file = env
            .file(file_id)
            .ok_or_else(|| OvfError::DanglingReference {
                what: format!("Disk {} ovf:fileRef", d.disk_id),
                target: "File".into(),
                id: file_id.clone(),
            })?;
        if !used.insert(file_id.clone()) {
            return Err(OvfError::disk(
                &file.href,
                "backs more than one disk (copies are not made)",
            ));
        }
        if d.parent_ref.is_some() {
            return Err(OvfError::ExternalReference {
                file: file.href.clone(),
                what: format!(
                    "parent disk {:?} (delta disks are not imported)",
                    d.parent_ref
                ),
            });
        }
        plans.push(DiskPlan {
            disk_id: d.disk_id.clone(),
            file_id: file_id.clone(),
            href: file.href.clone(),
            capacity_bytes: parse::disk_capacity_bytes(env, d, limits)?,
            declared: disk::declared_format(&file.href, d.format.as_deref())?,
        });
    }
    Ok(plans)
}

fn entry_refused(name: &str, reason: impl Into<String>) -> OvfError {
    OvfError::EntryRefused {
        name: name.to_owned(),
        reason: reason.into(),
    }
}

/// Normalises and checks an entry name: relative, no `..`, no NUL or backslash.
fn entry_name(raw: &[u8]) -> Result<String> {
    let shown = String::from_utf8_lossy(raw).into_owned();
    let name = std::str::from_utf8(raw).map_err(|_| entry_refused(&shown, "name is not UTF-8"))?;
    let name = name.strip_prefix("./").unwrap_or(name);
    if name.is_empty() {
        return Err(entry_refused(&shown, "empty name"));
    }
    if name.starts_with('/') {
        return Err(entry_refused(&shown, "absolute path"));
    }
    if name.split('/').any(|c| c == "..") {
        return Err(entry_refused(&shown, "contains a `..` component"));
    }
    if name.contains('\\') || name.chars().any(char::is_control) {
        return Err(entry_refused(
            &shown,
            "contains a backslash or control character",
        ));
    }
    Ok(name.to_owned())
}

fn check_entry_type(name: &str, t: tar::EntryType) -> Result<()> {
    use tar::EntryType as T;
    match t {
        T::Regular | T::Continuous => Ok(()),
        T::Symlink | T::Link => Err(entry_refused(name, "is a link")),
        T::Char | T::Block | T::Fifo => Err(entry_refused(name, "is a device or FIFO")),
        T::Directory => Err(entry_refused(name, "is a directory")),
        other => Err(entry_refused(
            name,
            format!("has unsupported type {other:?}"),
        )),
    }
}

fn read_bounded(r: &mut dyn Read, what: &str, limit: u64) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| OvfError::io(format!("reading {what}"), e))?;
    if buf.len() as u64 > limit {
        return Err(OvfError::TooLarge {
            what: what.to_owned(),
            size: buf.len() as u64,
            limit,
        });
    }
    Ok(buf)
}

fn archive_err(path: &Path, e: impl std::fmt::Display) -> OvfError {
    OvfError::Archive {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// Counts bytes read from the archive, for progress.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Builds the package head from the first entries, in order.
struct HeadBuilder {
    descriptor: Option<(String, Vec<u8>, Parsed)>,
    manifest: Option<(String, Manifest)>,
    certificate: Option<String>,
    warnings: Vec<String>,
}

impl HeadBuilder {
    fn new() -> Self {
        HeadBuilder {
            descriptor: None,
            manifest: None,
            certificate: None,
            warnings: Vec::new(),
        }
    }

    /// Offers an entry; returns false when it is not part of the head.
    fn offer(&mut self, name: &str, r: &mut dyn Read, limits: &Limits) -> Result<bool> {
        let lower = name.to_ascii_lowercase();
        if self.descriptor.is_none() {
            if !lower.ends_with(".ovf") {
                return Err(entry_refused(
                    name,
                    "the first entry must be the .ovf descriptor",
                ));
            }
            let bytes = read_bounded(
                r,
                &format!("descriptor {name}"),
                limits.max_descriptor_bytes,
            )?;
            let parsed = parse::parse(&bytes, limits)?;
            self.descriptor = Some((name.to_owned(), bytes, parsed));
            return Ok(true);
        }
        if lower.ends_with(".mf") && self.manifest.is_none() && self.certificate.is_none() {
            let bytes = read_bounded(r, &format!("manifest {name}"), limits.max_manifest_bytes)?;
            self.manifest = Some((name.to_owned(), Manifest::parse(&bytes)?));
            return Ok(true);
        }
        if lower.ends_with(".cert") && self.certificate.is_none() {
            let bytes = read_bounded(
                r,
                &format!("certificate {name}"),
                limits.max_certificate_bytes,
            )?;
            self.certificate(name, &bytes, limits)?;
            return Ok(true);
        }
        Ok(false)
    }

    fn certificate(&mut self, name: &str, bytes: &[u8], limits: &Limits) -> Result<()> {
        let text = String::from_utf8_lossy(bytes);
        if !text.contains("-----BEGIN CERTIFICATE-----") {
            return Err(OvfError::Certificate {
                file: name.to_owned(),
                reason: "no PEM certificate found".into(),
            });
        }
        if limits.certificate == CertificatePolicy::Refuse {
            return Err(OvfError::Certificate {
                file: name.to_owned(),
                reason:
                    "signed packages are refused by policy: ovm does not verify X.509 signatures"
                        .into(),
            });
        }
        self.warnings.push(format!(
            "package is signed ({name}); the signature is not verified, integrity rests on the manifest digests"
        ));
        self.certificate = Some(name.to_owned());
        Ok(())
    }

    fn finish(mut self, limits: &Limits) -> Result<Package> {
        let (descriptor_name, descriptor_bytes, parsed) = self
            .descriptor
            .ok_or_else(|| entry_refused("", "the package has no .ovf descriptor"))?;
        let (manifest_name, manifest) = match self.manifest {
            Some((n, m)) => {
                let actual = {
                    let alg = m
                        .get(&descriptor_name)
                        .map(|e| e.algorithm)
                        .ok_or_else(|| OvfError::NotInManifest {
                            file: descriptor_name.clone(),
                        })?;
                    let mut h = Hasher::new(alg);
                    h.update(&descriptor_bytes);
                    (alg, h.finish_hex())
                };
                m.verify(&descriptor_name, actual.0, &actual.1)?;
                (Some(n), Some(m))
            }
            None => {
                if limits.require_manifest {
                    return Err(OvfError::NotInManifest {
                        file: format!("{descriptor_name} (the package has no manifest)"),
                    });
                }
                self.warnings
                    .push("package has no manifest: file integrity is not verified".into());
                (None, None)
            }
        };
        Ok(Package {
            parsed,
            descriptor_name,
            descriptor_bytes,
            manifest,
            manifest_name,
            certificate: self.certificate,
            warnings: self.warnings,
        })
    }
}

/// Reads only the head of an OVA (descriptor, manifest, certificate).
pub fn read_head(path: &Path, limits: &Limits) -> Result<Package> {
    check_package_path(path)?;
    let f = File::open(path).map_err(|e| OvfError::io(format!("opening {}", path.display()), e))?;
    let mut archive = tar::Archive::new(BufReader::new(f));
    let mut head = HeadBuilder::new();
    let entries = archive.entries().map_err(|e| archive_err(path, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| archive_err(path, e))?;
        if entry.header().entry_type() == tar::EntryType::XGlobalHeader {
            continue;
        }
        let name = entry_name(&entry.path_bytes())?;
        check_entry_type(&name, entry.header().entry_type())?;
        if !head.offer(&name, &mut entry, limits)? {
            break;
        }
    }
    head.finish(limits)
}

/// Refuses a package path that is not a regular file (after symbolic links): reading a
/// FIFO, a device or a socket would wait forever or never end.
pub fn check_package_path(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path)
        .map_err(|e| OvfError::io(format!("opening {}", path.display()), e))?;
    let ft = meta.file_type();
    if ft.is_file() {
        return Ok(());
    }
    use std::os::unix::fs::FileTypeExt;
    let what = if ft.is_dir() {
        "a directory (give the .ova file, or the .ovf file inside the directory)"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_block_device() || ft.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    };
    Err(OvfError::Archive {
        path: path.to_path_buf(),
        reason: format!("is {what}: a package must be a regular file"),
    })
}

/// Reads a package: an `.ova` archive, or an `.ovf` with its files beside it.
pub fn read_package_head(path: &Path, limits: &Limits) -> Result<Package> {
    check_package_path(path)?;
    if is_ovf_path(path) {
        let dir = DirSource::new(path)?;
        dir.head(limits)
    } else {
        read_head(path, limits)
    }
}

fn is_ovf_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("ovf"))
}

/// A reader over blocks sent by the reading thread.
struct ChannelReader {
    rx: Receiver<Vec<u8>>,
    block: Vec<u8>,
    at: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at >= self.block.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.block = b;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.block.len() - self.at);
        buf[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Marks an I/O error raised because a gzip stream expanded too far.
#[derive(Debug)]
struct GzipBomb {
    limit: u64,
}

impl std::fmt::Display for GzipBomb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "gzip stream expands beyond {} bytes", self.limit)
    }
}

impl std::error::Error for GzipBomb {}

/// Bounds what a decompressor may produce.
struct Bounded<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            return Err(io::Error::other(GzipBomb { limit: self.limit }));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn map_bomb(file: &str, e: OvfError) -> OvfError {
    if let OvfError::Io { source, .. } = &e
        && let Some(b) = source.get_ref().and_then(|i| i.downcast_ref::<GzipBomb>())
    {
        return OvfError::TooLarge {
            what: format!("decompressed {file} (gzip bomb?)"),
            size: b.limit + 1,
            limit: b.limit,
        };
    }
    e
}

/// A running conversion of one file.
struct Pipe {
    tx: Option<SyncSender<Vec<u8>>>,
    worker: JoinHandle<Result<ConvertStats>>,
    plan: DiskPlan,
    path: PathBuf,
}

/// State of one referenced file while the package streams by.
struct FileProgress {
    reference: FileReference,
    next_chunk: u64,
    received: u64,
    whole: Option<Hasher>,
    pipe: Option<Pipe>,
    started: bool,
    done: bool,
}

const BLOCK: usize = 1 << 20;

/// Consumes the body entries of a package, in order.
struct Streamer<'a> {
    limits: &'a Limits,
    manifest: Option<Manifest>,
    files: Vec<FileProgress>,
    plans: BTreeMap<String, DiskPlan>,
    targets: &'a mut dyn FnMut(&DiskPlan) -> Result<PathBuf>,
    spool_dir: PathBuf,
    current: Option<usize>,
    seen: BTreeSet<String>,
    extracted: Vec<ExtractedDisk>,
    warnings: Vec<String>,
}

impl<'a> Streamer<'a> {
    /// Which referenced file (and chunk number) an entry is.
    fn locate(&self, name: &str) -> Option<(usize, Option<u64>)> {
        for (i, f) in self.files.iter().enumerate() {
            if f.reference.chunk_size.is_some() {
                if let Some(suffix) = name
                    .strip_prefix(f.reference.href.as_str())
                    .and_then(|s| s.strip_prefix('.'))
                    && suffix.len() == 9
                    && suffix.bytes().all(|b| b.is_ascii_digit())
                {
                    return suffix.parse().ok().map(|n| (i, Some(n)));
                }
            } else if f.reference.href == name {
                return Some((i, None));
            }
        }
        None
    }

    fn entry(&mut self, name: &str, size: u64, reader: &mut dyn Read) -> Result<()> {
        if !self.seen.insert(name.to_owned()) {
            return Err(entry_refused(name, "duplicate entry"));
        }
        let (index, chunk) = self
            .locate(name)
            .ok_or_else(|| entry_refused(name, "not referenced by the descriptor"))?;
        if self.current != Some(index)
            && let Some(prev) = self.current.take()
        {
            self.complete(prev)?;
        }
        let limits = self.limits;
        let file = &mut self.files[index];
        if file.done {
            return Err(entry_refused(
                name,
                "belongs to a file that was already complete",
            ));
        }
        if let Some(n) = chunk {
            if n != file.next_chunk {
                return Err(entry_refused(
                    name,
                    format!("chunk out of order (expected number {})", file.next_chunk),
                ));
            }
            file.next_chunk += 1;
            let chunk_size = file.reference.chunk_size.unwrap_or(u64::MAX);
            if size > chunk_size {
                return Err(entry_refused(
                    name,
                    format!("chunk larger than ovf:chunkSize {chunk_size}"),
                ));
            }
        }
        let total = file.received.saturating_add(size);
        let declared = file.reference.size;
        if declared.is_some_and(|d| total > d) || total > limits.max_file_bytes {
            return Err(OvfError::size(
                format!("File {} (href {})", file.reference.id, file.reference.href),
                total.to_string(),
                format!("more bytes than declared ({:?}) or allowed", declared),
            ));
        }
        self.current = Some(index);
        if !file.started {
            file.started = true;
            self.start(index)?;
        }
        // Digest of this entry, when the manifest lists it by name.
        let mut entry_hasher = self
            .manifest
            .as_ref()
            .and_then(|m| m.get(name))
            .map(|e| (e.algorithm, Hasher::new(e.algorithm)));
        let file = &mut self.files[index];
        let covered_whole = file.whole.is_some();
        if self.manifest.is_some() && entry_hasher.is_none() && !(chunk.is_some() && covered_whole)
        {
            return Err(OvfError::NotInManifest {
                file: name.to_owned(),
            });
        }
        let mut left = size;
        while left > 0 {
            let mut block = vec![0u8; BLOCK.min(left as usize)];
            let n = disk::read_full(reader, &mut block)
                .map_err(|e| OvfError::io(format!("reading {name}"), e))?;
            if n < block.len() {
                return Err(entry_refused(name, "truncated entry"));
            }
            left -= n as u64;
            if let Some((_, h)) = &mut entry_hasher {
                h.update(&block);
            }
            if let Some(h) = &mut file.whole {
                h.update(&block);
            }
            if let Some(pipe) = &mut file.pipe
                && let Some(tx) = &pipe.tx
                && tx.send(block).is_err()
            {
                // The converter finished (or failed) early; keep hashing.
                pipe.tx = None;
            }
        }
        file.received += size;
        if let (Some((alg, h)), Some(m)) = (entry_hasher, &self.manifest) {
            m.verify(name, alg, &h.finish_hex())?;
        }
        Ok(())
    }

    fn start(&mut self, index: usize) -> Result<()> {
        let file = &self.files[index];
        if let Some(m) = &self.manifest
            && let Some(e) = m.get(&file.reference.href)
            && file.reference.chunk_size.is_some()
        {
            self.files[index].whole = Some(Hasher::new(e.algorithm));
        }
        let file = &self.files[index];
        let Some(plan) = self.plans.get(&file.reference.id).cloned() else {
            self.warnings.push(format!(
                "file {} is not a disk ovm imports; verified and skipped",
                file.reference.href
            ));
            return Ok(());
        };
        let path = (self.targets)(&plan)?;
        let (tx, rx) = sync_channel::<Vec<u8>>(4);
        let gzip = file.reference.is_gzip();
        let spool_dir = self.spool_dir.clone();
        let plan2 = plan.clone();
        let path2 = path.clone();
        let worker = std::thread::Builder::new()
            .name(format!("ovf-disk-{}", plan.disk_id))
            .spawn(move || -> Result<ConvertStats> {
                let reader = ChannelReader {
                    rx,
                    block: Vec::new(),
                    at: 0,
                };
                let out = SparseWriter::create(&path2, plan2.capacity_bytes)
                    .map_err(|e| OvfError::io(format!("creating {}", path2.display()), e))?;
                let limit = plan2
                    .capacity_bytes
                    .saturating_add(plan2.capacity_bytes / 8)
                    .saturating_add(64 << 20);
                let result = if gzip {
                    let mut r = Bounded {
                        inner: flate2::read::MultiGzDecoder::new(reader),
                        left: limit,
                        limit,
                    };
                    disk::convert(&plan2.href, plan2.declared, &mut r, out, &spool_dir)
                } else {
                    let mut r = reader;
                    disk::convert(&plan2.href, plan2.declared, &mut r, out, &spool_dir)
                };
                result.map_err(|e| map_bomb(&plan2.href, e))
            })
            .map_err(|e| OvfError::io("starting a conversion thread", e))?;
        self.files[index].pipe = Some(Pipe {
            tx: Some(tx),
            worker,
            plan,
            path,
        });
        Ok(())
    }

    fn complete(&mut self, index: usize) -> Result<()> {
        let file = &mut self.files[index];
        file.done = true;
        if let Some(d) = file.reference.size
            && d != file.received
        {
            return Err(OvfError::size(
                format!("File {} (href {})", file.reference.id, file.reference.href),
                d.to_string(),
                format!("declared, but the package holds {} bytes", file.received),
            ));
        }
        if let (Some(h), Some(m)) = (file.whole.take(), &self.manifest) {
            let alg = m.get(&file.reference.href).map(|e| e.algorithm);
            if let Some(alg) = alg {
                m.verify(&file.reference.href, alg, &h.finish_hex())?;
            }
        }
        if let Some(mut pipe) = file.pipe.take() {
            pipe.tx = None;
            let stats = pipe
                .worker
                .join()
                .map_err(|_| OvfError::disk(&pipe.plan.href, "conversion thread panicked"))??;
            self.extracted.push(ExtractedDisk {
                plan: pipe.plan,
                path: pipe.path,
                format: stats.format,
                data_bytes: stats.data_bytes,
            });
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(Vec<ExtractedDisk>, Vec<String>)> {
        if let Some(prev) = self.current.take() {
            self.complete(prev)?;
        }
        for f in &self.files {
            if !f.done {
                return Err(OvfError::MissingFile {
                    href: f.reference.href.clone(),
                });
            }
        }
        // Order the result as the DiskSection does.
        let order: Vec<String> = self.plans.values().map(|p| p.disk_id.clone()).collect();
        let mut disks = std::mem::take(&mut self.extracted);
        disks.sort_by_key(|d| order.iter().position(|o| *o == d.plan.disk_id));
        Ok((disks, std::mem::take(&mut self.warnings)))
    }
}

impl Drop for Streamer<'_> {
    fn drop(&mut self) {
        // On failure, stop converters and wait for them before the caller cleans up.
        for f in &mut self.files {
            if let Some(mut pipe) = f.pipe.take() {
                pipe.tx = None;
                let _ = pipe.worker.join();
            }
        }
    }
}

/// Reads a whole package and writes each file-backed disk, as sparse raw, to the path
/// `target` returns for it. Nothing else is written, except short-lived spool files in
/// `spool_dir` for formats that need random access. `progress(done, total)` is called
/// with bytes of the package read.
pub fn extract(
    path: &Path,
    limits: &Limits,
    target: &mut dyn FnMut(&DiskPlan) -> Result<PathBuf>,
    spool_dir: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Extraction> {
    check_package_path(path)?;
    if is_ovf_path(path) {
        return DirSource::new(path)?.extract(limits, target, spool_dir, progress);
    }
    let total = std::fs::metadata(path)
        .map_err(|e| OvfError::io(format!("opening {}", path.display()), e))?
        .len();
    let f = File::open(path).map_err(|e| OvfError::io(format!("opening {}", path.display()), e))?;
    let count = Arc::new(AtomicU64::new(0));
    let mut archive = tar::Archive::new(BufReader::with_capacity(
        256 << 10,
        Counting {
            inner: f,
            count: count.clone(),
        },
    ));
    let entries = archive.entries().map_err(|e| archive_err(path, e))?;
    let mut head = HeadBuilder::new();
    let mut package: Option<Package> = None;
    let mut streamer: Option<Streamer<'_>> = None;
    let mut n_entries = 0u64;
    // `target` is borrowed by the streamer once the head is known.
    let mut target = Some(target);
    for entry in entries {
        let mut entry = entry.map_err(|e| archive_err(path, e))?;
        if entry.header().entry_type() == tar::EntryType::XGlobalHeader {
            continue;
        }
        n_entries += 1;
        if n_entries > limits.max_archive_entries {
            return Err(OvfError::LimitExceeded {
                what: "OVA entries".into(),
                limit: limits.max_archive_entries,
            });
        }
        let name = entry_name(&entry.path_bytes())?;
        check_entry_type(&name, entry.header().entry_type())?;
        if package.is_none() {
            if head.offer(&name, &mut entry, limits)? {
                continue;
            }
            let built = std::mem::replace(&mut head, HeadBuilder::new()).finish(limits)?;
            package = Some(built);
        }
        if streamer.is_none() {
            let pkg = package
                .as_ref()
                .ok_or_else(|| archive_err(path, "no head"))?;
            let t = target
                .take()
                .ok_or_else(|| archive_err(path, "target taken twice"))?;
            streamer = Some(new_streamer(pkg, limits, t, spool_dir)?);
        }
        let s = streamer
            .as_mut()
            .ok_or_else(|| archive_err(path, "no streamer"))?;
        let head_names = [
            Some(
                package
                    .as_ref()
                    .map(|p| p.descriptor_name.clone())
                    .unwrap_or_default(),
            ),
            package.as_ref().and_then(|p| p.manifest_name.clone()),
            package.as_ref().and_then(|p| p.certificate.clone()),
        ];
        if head_names.iter().flatten().any(|n| *n == name) {
            return Err(entry_refused(&name, "duplicate entry"));
        }
        let size = entry
            .header()
            .entry_size()
            .map_err(|e| archive_err(path, e))?;
        s.entry(&name, size, &mut entry)?;
        progress(count.load(Ordering::Relaxed), total);
    }
    let package = match package {
        Some(p) => p,
        None => head.finish(limits)?,
    };
    let s = match streamer {
        Some(s) => s,
        None => {
            let t = target
                .take()
                .ok_or_else(|| archive_err(path, "target taken twice"))?;
            new_streamer(&package, limits, t, spool_dir)?
        }
    };
    let (disks, mut warnings) = s.finish()?;
    progress(total, total);
    let mut all = package.parsed.warnings.clone();
    all.extend(package.warnings.iter().cloned());
    all.append(&mut warnings);
    Ok(Extraction {
        package,
        disks,
        warnings: all,
    })
}

fn new_streamer<'a>(
    pkg: &Package,
    limits: &'a Limits,
    targets: &'a mut dyn FnMut(&DiskPlan) -> Result<PathBuf>,
    spool_dir: &Path,
) -> Result<Streamer<'a>> {
    let env = &pkg.parsed.envelope;
    let plans = disk_plans(env, limits)?
        .into_iter()
        .map(|p| (p.file_id.clone(), p))
        .collect();
    Ok(Streamer {
        limits,
        manifest: pkg.manifest.clone(),
        files: env
            .references
            .iter()
            .map(|r| FileProgress {
                reference: r.clone(),
                next_chunk: 0,
                received: 0,
                whole: None,
                pipe: None,
                started: false,
                done: false,
            })
            .collect(),
        plans,
        targets,
        spool_dir: spool_dir.to_owned(),
        current: None,
        seen: BTreeSet::new(),
        extracted: Vec::new(),
        warnings: Vec::new(),
    })
}

/// A package given as an `.ovf` file with its files in the same directory.
struct DirSource {
    ovf: PathBuf,
    dir: PathBuf,
}

impl DirSource {
    fn new(ovf: &Path) -> Result<Self> {
        let dir = ovf
            .parent()
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("."));
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let dir = dir
            .canonicalize()
            .map_err(|e| OvfError::io(format!("resolving {}", dir.display()), e))?;
        Ok(DirSource {
            ovf: ovf.to_owned(),
            dir,
        })
    }

    fn open_inside(&self, name: &str) -> Result<Option<File>> {
        check_href(name, Default::default())?;
        let p = self.dir.join(name);
        let real = match p.canonicalize() {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(OvfError::io(format!("resolving {}", p.display()), e)),
        };
        if !real.starts_with(&self.dir) {
            return Err(OvfError::BadHref {
                href: name.to_owned(),
                reason: "resolves outside the package directory (symbolic link)".into(),
            });
        }
        if !real.is_file() {
            return Err(entry_refused(name, "is not a regular file"));
        }
        File::open(&real)
            .map(Some)
            .map_err(|e| OvfError::io(format!("opening {}", real.display()), e))
    }

    fn head(&self, limits: &Limits) -> Result<Package> {
        let mut head = HeadBuilder::new();
        let name = self
            .ovf
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| archive_err(&self.ovf, "descriptor name is not UTF-8"))?
            .to_owned();
        let mut f = File::open(&self.ovf)
            .map_err(|e| OvfError::io(format!("opening {}", self.ovf.display()), e))?;
        head.offer(&name, &mut f, limits)?;
        let stem = name[..name.len() - 4].to_owned();
        for ext in [".mf", ".cert"] {
            if let Some(mut f) = self.open_inside(&format!("{stem}{ext}"))? {
                head.offer(&format!("{stem}{ext}"), &mut f, limits)?;
            }
        }
        head.finish(limits)
    }

    fn extract(
        &self,
        limits: &Limits,
        target: &mut dyn FnMut(&DiskPlan) -> Result<PathBuf>,
        spool_dir: &Path,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Extraction> {
        let package = self.head(limits)?;
        let refs = package.parsed.envelope.references.clone();
        let mut s = new_streamer(&package, limits, target, spool_dir)?;
        let mut done = 0u64;
        for r in &refs {
            if r.chunk_size.is_some() {
                for n in 0u64.. {
                    let name = format!("{}.{n:09}", r.href);
                    let Some(mut f) = self.open_inside(&name)? else {
                        break;
                    };
                    let size = f
                        .metadata()
                        .map_err(|e| OvfError::io(format!("reading {name}"), e))?
                        .len();
                    s.entry(&name, size, &mut f)?;
                    done += size;
                    progress(done, 0);
                }
            } else if let Some(mut f) = self.open_inside(&r.href)? {
                let size = f
                    .metadata()
                    .map_err(|e| OvfError::io(format!("reading {}", r.href), e))?
                    .len();
                s.entry(&r.href, size, &mut f)?;
                done += size;
                progress(done, 0);
            }
        }
        let (disks, mut warnings) = s.finish()?;
        let mut all = package.parsed.warnings.clone();
        all.extend(package.warnings.iter().cloned());
        all.append(&mut warnings);
        Ok(Extraction {
            package,
            disks,
            warnings: all,
        })
    }
}

/// Sanitises a disk id into a file name.
pub fn safe_file_stem(id: &str) -> String {
    let s: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let s = s.trim_start_matches('.').to_owned();
    if s.is_empty() { "disk".into() } else { s }
}

/// Extracts a package's disks as `<diskId>.raw` files into `target_dir`: everything is
/// written into a staging directory inside it first and renamed into place only when
/// the whole package has been verified, so a failure leaves nothing behind. Existing
/// files are never overwritten.
pub fn extract_to_dir(
    path: &Path,
    target_dir: &Path,
    limits: &Limits,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Extraction> {
    let staging = target_dir.join(format!(
        ".ovm-import-{}-{:x}",
        std::process::id(),
        disk::unique()
    ));
    std::fs::create_dir(&staging).map_err(|e| {
        OvfError::io(
            format!("creating staging directory {}", staging.display()),
            e,
        )
    })?;
    let result = (|| {
        let mut target = |plan: &DiskPlan| -> Result<PathBuf> {
            let final_path = target_dir.join(format!("{}.raw", safe_file_stem(&plan.disk_id)));
            if final_path.exists() {
                return Err(OvfError::io(
                    format!("{} already exists", final_path.display()),
                    io::Error::from(io::ErrorKind::AlreadyExists),
                ));
            }
            Ok(staging.join(format!("{}.raw", safe_file_stem(&plan.disk_id))))
        };
        let mut ex = extract(path, limits, &mut target, &staging, progress)?;
        for d in &mut ex.disks {
            let name = d.path.file_name().map(|n| n.to_owned()).unwrap_or_default();
            let final_path = target_dir.join(name);
            std::fs::hard_link(&d.path, &final_path)
                .map_err(|e| OvfError::io(format!("placing {}", final_path.display()), e))?;
            d.path = final_path;
        }
        Ok(ex)
    })();
    if let Err(e) = &result {
        tracing::debug!(error = %e, "import failed; removing staging");
        // Remove disks already placed by this call (hard links), then the staging.
    }
    let placed: Vec<PathBuf> = match &result {
        Ok(_) => Vec::new(),
        Err(_) => std::fs::read_dir(&staging)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| target_dir.join(e.file_name()))
            .collect(),
    };
    for p in placed {
        // Only links to staged files (same inode) are ours to remove.
        let _ = remove_if_same(&p, &staging.join(p.file_name().unwrap_or_default()));
    }
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn remove_if_same(placed: &Path, staged: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let a = std::fs::metadata(placed)?;
    let b = std::fs::metadata(staged)?;
    if a.ino() == b.ino() && a.dev() == b.dev() {
        std::fs::remove_file(placed)?;
    }
    Ok(())
}
