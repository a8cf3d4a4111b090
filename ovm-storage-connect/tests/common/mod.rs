//! Helpers shared by the fs plugin's integration tests: temporary roots, a loop-mounted
//! reflink XFS, the conformance environment, and raw file I/O on volumes.
#![allow(dead_code)]

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use ovm_core::conformance::storage::SuiteEnv;
use ovm_storage_connect::fs::layout::Layout;
use ovm_storage_connect::fs::meta::{Origin, VolumeMeta};

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// A file system to test on: a directory inside it that repositories may use.
pub struct TestRoot {
    pub path: PathBuf,
    next: AtomicU64,
    _guard: RootGuard,
}

enum RootGuard {
    Temp(tempfile::TempDir),
    Xfs(LoopXfs),
}

impl TestRoot {
    /// A temporary directory on the machine's own file system (ext4 here).
    pub fn local() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ovm-fs-test-")
            .tempdir()
            .expect("tempdir");
        TestRoot {
            path: std::fs::canonicalize(dir.path()).expect("canonical tempdir"),
            next: AtomicU64::new(0),
            _guard: RootGuard::Temp(dir),
        }
    }

    /// A fresh loop-mounted XFS with reflink, or `None` (with the reason printed) where
    /// this test cannot mount one.
    pub fn xfs(test: &str, size: u64) -> Option<Self> {
        match LoopXfs::mount(size) {
            Ok(xfs) => Some(TestRoot {
                path: xfs.mount.clone(),
                next: AtomicU64::new(0),
                _guard: RootGuard::Xfs(xfs),
            }),
            Err(reason) => {
                println!("SKIP {test}: no loop-mounted XFS: {reason}");
                None
            }
        }
    }

    /// A new, unused location in this root.
    pub fn location(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.path
            .join(format!("repo-{n}"))
            .to_str()
            .expect("utf-8 path")
            .to_string()
    }
}

/// The conformance suite's environment over a `TestRoot`; crash debris is what a process
/// killed while cloning leaves: a half-written data file in `.ovm/tmp/`, the metadata it
/// had already committed, and a half-written metadata file.
impl SuiteEnv for TestRoot {
    fn new_location(&self) -> String {
        self.location()
    }

    fn leave_crash_debris(&self, location: &str) -> bool {
        let layout = Layout::new(PathBuf::from(location));
        let meta = VolumeMeta::new("half-made", None, Origin::Clone);
        meta.write(&layout).expect("write orphan metadata");
        std::fs::write(layout.tmp_disk(meta.id), vec![7u8; MIB as usize]).expect("half data");
        std::fs::write(layout.tmp_dir().join("write-0123.tmp"), b"{\"format_ver").expect("tmp");
        // A commit cut between its two renames: data published, metadata still in tmp.
        let cut = VolumeMeta::new("cut-short", None, Origin::Created);
        std::fs::write(
            layout.tmp_meta(cut.id),
            serde_json::to_vec(&cut).expect("json"),
        )
        .expect("tmp metadata");
        std::fs::write(layout.disk(cut.id), vec![1u8; 4096]).expect("published data");
        true
    }

    fn crash_debris_present(&self, location: &str) -> bool {
        let layout = Layout::new(PathBuf::from(location));
        let tmp_entries = std::fs::read_dir(layout.tmp_dir())
            .map(|d| d.count())
            .unwrap_or(0);
        let orphan = std::fs::read_dir(layout.volumes_dir())
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| VolumeMeta::read(&e.path()).is_ok_and(|m| m.name == "half-made"));
        let unlisted_data = std::fs::read_dir(layout.disks_dir())
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".img")
                    .and_then(|id| id.parse().ok())
                    .is_some_and(|id| !layout.meta(id).exists())
            });
        tmp_entries > 0 || orphan || unlisted_data
    }
}

/// A sparse file formatted as XFS with reflink, loop-mounted; unmounted and removed on drop.
pub struct LoopXfs {
    pub mount: PathBuf,
    dir: tempfile::TempDir,
}

impl LoopXfs {
    pub fn mount(size: u64) -> Result<Self, String> {
        if !rustix::process::geteuid().is_root() {
            return Err("not root (mounting needs root)".into());
        }
        if Command::new("mkfs.xfs").arg("-V").output().is_err() {
            return Err("mkfs.xfs not installed (Debian package xfsprogs)".into());
        }
        let dir = tempfile::Builder::new()
            .prefix("ovm-xfs-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let image = dir.path().join("xfs.img");
        let f = std::fs::File::create(&image).map_err(|e| format!("image: {e}"))?;
        f.set_len(size).map_err(|e| format!("image size: {e}"))?;
        drop(f);
        run("mkfs.xfs", &["-q", "-m", "reflink=1", path_str(&image)])?;
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).map_err(|e| format!("mount point: {e}"))?;
        run("mount", &["-o", "loop", path_str(&image), path_str(&mount)])?;
        Ok(LoopXfs { mount, dir })
    }
}

impl Drop for LoopXfs {
    fn drop(&mut self) {
        let target = path_str(&self.mount).to_string();
        for _ in 0..20 {
            if run("umount", &[&target]).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        eprintln!("umount {target} kept failing; detaching lazily");
        let _ = run("umount", &["-l", &target]);
        let _ = &self.dir;
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Runs a command, returning its stderr as the error.
pub fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// True if `qemu-img` runs; else prints why `test` is skipped.
pub fn have_qemu_img(test: &str) -> bool {
    let ok = Command::new("qemu-img").arg("--version").output().is_ok();
    if !ok {
        println!("SKIP {test}: qemu-img not installed (Debian package qemu-utils)");
    }
    ok
}

/// Writes `len` bytes of a recognisable pattern (seeded by `seed`) at `offset`.
pub fn write_pattern(path: &Path, offset: u64, len: usize, seed: u8) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for writing");
    let block: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect();
    f.write_all_at(&block, offset).expect("write");
    f.sync_all().expect("sync");
}

/// Writes `total` bytes of data spread over a volume: one `chunk` every `stride` bytes.
pub fn spread_data(path: &Path, total: u64, chunk: u64, stride: u64) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for writing");
    let buf: Vec<u8> = (0..chunk).map(|i| (i % 251) as u8 + 1).collect();
    let mut off = 0;
    let mut written = 0;
    while written < total {
        f.write_all_at(&buf, off).expect("write");
        written += chunk;
        off += stride;
    }
    f.sync_all().expect("sync");
}

/// Reads `len` bytes at `offset`.
pub fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let f = std::fs::File::open(path).expect("open");
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset).expect("read");
    buf
}

/// Free bytes of the file system holding `path`.
pub fn free_bytes(path: &Path) -> u64 {
    let s = rustix::fs::statvfs(path).expect("statvfs");
    s.f_bavail * s.f_frsize
}
