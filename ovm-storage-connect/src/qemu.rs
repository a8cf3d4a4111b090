//! `qemu-img` (Debian `qemu-utils`) for importing and exporting qcow2 and VMDK images.
//!
//! The image format is always named with `-f`, never probed: probing lets a guest that
//! wrote a qcow2 header into its raw disk make the host read files it chose. For the same
//! reason images that refer to other files — a backing file, a qcow2 external data file,
//! VMDK extents outside the image itself — are refused before any conversion.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ovm_core::model::VolumeFormat;
use ovm_core::{Error, OpContext, Result};
use serde_json::Value;

use crate::error::{FS_PLUGIN_NAME, FsError};

/// How often a running conversion is checked for an abort.
const POLL: Duration = Duration::from_millis(20);

/// Largest stderr kept for an error message.
const MAX_STDERR: u64 = 16 << 10;

/// CPU seconds `qemu-img info` may use on an untrusted image (as OpenStack allows).
const INFO_CPU_SECONDS: libc::rlim_t = 30;

/// Address space `qemu-img info` may use on an untrusted image: 1 GiB.
const INFO_ADDRESS_SPACE: libc::rlim_t = 1 << 30;

/// Largest `qemu-img info` answer read.
const MAX_INFO: u64 = 1 << 20;

/// What `qemu-img info` says about an image that passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Size the guest sees, bytes.
    pub virtual_size: u64,
}

/// The `qemu-img` program.
#[derive(Debug, Clone)]
pub struct QemuImg {
    program: PathBuf,
}

impl Default for QemuImg {
    fn default() -> Self {
        QemuImg {
            program: PathBuf::from("qemu-img"),
        }
    }
}

/// `qemu-img`'s name for a format.
pub fn format_name(format: VolumeFormat) -> Result<&'static str> {
    match format {
        VolumeFormat::Raw => Ok("raw"),
        VolumeFormat::Qcow2 => Ok("qcow2"),
        VolumeFormat::Vmdk => Ok("vmdk"),
        VolumeFormat::Iso => Err(Error::invalid(
            "format",
            "ISO images are not disk volumes: put them in the repository's ISOs/",
        )),
    }
}

impl QemuImg {
    /// Uses `program` instead of `qemu-img` from `PATH`.
    pub fn with_program(program: impl Into<PathBuf>) -> Self {
        QemuImg {
            program: program.into(),
        }
    }

    /// A `qemu-img` command that dies with the thread that started it, so a killed
    /// manager leaves no conversion writing on. With `limits`, it also runs under the CPU
    /// and memory limits used for reading untrusted image headers (a crafted image must not
    /// make `qemu-img info` spin or eat the host's memory).
    fn command(&self, limits: bool) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.stdin(Stdio::null());
        // SAFETY: the closure runs in the forked child before exec and only makes the
        // prctl and setrlimit system calls (async-signal-safe, no allocation, no locks),
        // on values that live on its own stack.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if limits {
                    for (resource, value) in [
                        (libc::RLIMIT_CPU, INFO_CPU_SECONDS),
                        (libc::RLIMIT_AS, INFO_ADDRESS_SPACE),
                    ] {
                        let limit = libc::rlimit {
                            rlim_cur: value,
                            rlim_max: value,
                        };
                        if libc::setrlimit(resource, &limit) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                }
                Ok(())
            });
        }
        cmd
    }

    fn spawn(&self, cmd: &mut Command, action: &'static str, image: &Path) -> Result<Child> {
        cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::unsupported(
                    format!(
                        "{action} of disk images ({} is not installed: Debian package qemu-utils)",
                        self.program.display()
                    ),
                    FS_PLUGIN_NAME,
                )
            } else {
                FsError::QemuImg {
                    action,
                    path: image.to_path_buf(),
                    message: format!("cannot run {}: {e}", self.program.display()),
                }
                .into()
            }
        })
    }

    /// Reads an image's facts as `format` and refuses images that refer to other files or
    /// are not in that format. `image` should be an absolute, resolved path.
    pub fn info(&self, image: &Path, format: VolumeFormat) -> Result<ImageInfo> {
        let fmt = format_name(format)?;
        let mut cmd = self.command(true);
        cmd.args(["info", "--output=json", "-f", fmt])
            .arg(image)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = self.spawn(&mut cmd, "info", image)?;
        let out = child.wait_with_output().map_err(|e| FsError::QemuImg {
            action: "info",
            path: image.to_path_buf(),
            message: e.to_string(),
        })?;
        if !out.status.success() {
            return Err(Error::invalid(
                "import.source",
                format!(
                    "{} is not a readable {fmt} image: {}",
                    image.display(),
                    trimmed(&out.stderr)
                ),
            ));
        }
        if out.stdout.len() as u64 > MAX_INFO {
            return Err(Error::invalid(
                "import.source",
                format!("{}: qemu-img info answer too large", image.display()),
            ));
        }
        let info: Value = serde_json::from_slice(&out.stdout).map_err(|e| FsError::QemuImg {
            action: "info",
            path: image.to_path_buf(),
            message: format!("unreadable JSON: {e}"),
        })?;
        check_info(image, fmt, &info)
    }

    /// Converts `src` (read as `src_format`) into `dst` (written as `dst_format`), reporting
    /// progress as `(bytes, total)` and killing the conversion when `ctx` is aborted. With
    /// `dst_exists`, `dst` is an existing file of the right size known to read as zeros
    /// (`-n --target-is-zero`), so ovm chooses how it is created.
    #[allow(clippy::too_many_arguments)]
    pub fn convert(
        &self,
        src: &Path,
        src_format: VolumeFormat,
        dst: &Path,
        dst_format: VolumeFormat,
        dst_exists: bool,
        total: u64,
        ctx: &OpContext,
        what: &str,
    ) -> Result<()> {
        ctx.check(what)?;
        let mut cmd = self.command(false);
        cmd.args(["convert", "-p", "-f", format_name(src_format)?])
            .args(["-O", format_name(dst_format)?]);
        if dst_exists {
            cmd.args(["-n", "--target-is-zero"]);
        }
        cmd.arg(src)
            .arg(dst)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self.spawn(&mut cmd, "convert", src)?;
        let progress = child.stdout.take().map(|out| {
            let ctx = ctx.clone();
            std::thread::spawn(move || report_progress(out, total, &ctx))
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_reader = child.stderr.take().map(|err| {
            let sink = stderr.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = err.take(MAX_STDERR).read_to_end(&mut buf);
                *sink.lock().unwrap_or_else(|e| e.into_inner()) = buf;
            })
        });
        let status = loop {
            if ctx.is_aborted() {
                let _ = child.kill();
                let _ = child.wait();
                join(progress);
                join(stderr_reader);
                return Err(Error::Aborted {
                    what: what.to_string(),
                });
            }
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => std::thread::sleep(POLL),
                Err(e) => {
                    let _ = child.kill();
                    return Err(FsError::QemuImg {
                        action: "convert",
                        path: src.to_path_buf(),
                        message: e.to_string(),
                    }
                    .into());
                }
            }
        };
        join(progress);
        join(stderr_reader);
        if !status.success() {
            let err = stderr.lock().unwrap_or_else(|e| e.into_inner()).clone();
            return Err(FsError::QemuImg {
                action: "convert",
                path: src.to_path_buf(),
                message: format!("{status}: {}", trimmed(&err)),
            }
            .into());
        }
        ctx.progress(total, total);
        Ok(())
    }
}

fn join(handle: Option<std::thread::JoinHandle<()>>) {
    if let Some(h) = handle {
        let _ = h.join();
    }
}

/// Parses `qemu-img convert -p` output — `    (12.34/100%)\r` repeated — into progress.
fn report_progress(mut out: impl Read, total: u64, ctx: &OpContext) {
    let mut buf = [0u8; 256];
    let mut line = Vec::new();
    let mut last = 0u64;
    loop {
        let n = match out.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\r' || b == b'\n' {
                if let Some(pct) = parse_percent(&line) {
                    let done = ((pct / 100.0) * total as f64) as u64;
                    let done = done.min(total).max(last);
                    last = done;
                    ctx.progress(done, total);
                }
                line.clear();
            } else if line.len() < 128 {
                line.push(b);
            }
        }
    }
}

fn parse_percent(line: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(line).ok()?.trim();
    let s = s.strip_prefix('(')?;
    let (pct, _) = s.split_once('/')?;
    pct.parse::<f64>()
        .ok()
        .filter(|p| (0.0..=100.0).contains(p))
}

/// Refuses what `qemu-img info` reveals as unsafe or wrong; returns the size.
fn check_info(image: &Path, fmt: &str, info: &Value) -> Result<ImageInfo> {
    let refuse = |reason: String| {
        Err(Error::invalid(
            "import.source",
            format!("{}: {reason}", image.display()),
        ))
    };
    if info.get("format").and_then(Value::as_str) != Some(fmt) {
        return refuse(format!("qemu-img does not read it as {fmt}"));
    }
    for key in ["backing-filename", "full-backing-filename"] {
        if let Some(backing) = info.get(key).and_then(Value::as_str) {
            return refuse(format!(
                "has a backing file ({backing}); images referring to other files are refused \
                 (flatten it first: qemu-img convert)"
            ));
        }
    }
    let data = info.pointer("/format-specific/data");
    if let Some(file) = data
        .and_then(|d| d.get("data-file"))
        .and_then(Value::as_str)
    {
        return refuse(format!("has an external data file ({file}); refused"));
    }
    if let Some(extents) = data
        .and_then(|d| d.get("extents"))
        .and_then(Value::as_array)
    {
        let own = image.to_string_lossy();
        for extent in extents {
            let file = extent.get("filename").and_then(Value::as_str).unwrap_or("");
            if file != own {
                return refuse(format!(
                    "has an extent in another file ({file}); only single-file images are accepted"
                ));
            }
        }
    }
    let Some(virtual_size) = info.get("virtual-size").and_then(Value::as_u64) else {
        return refuse("qemu-img reports no virtual size".into());
    };
    ovm_core::storage::validate_size(virtual_size)?;
    Ok(ImageInfo { virtual_size })
}

fn trimmed(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let s = s.trim();
    if s.is_empty() {
        "no message".to_string()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn progress_lines_parse() {
        assert_eq!(parse_percent(b"    (12.50/100%)"), Some(12.5));
        assert_eq!(parse_percent(b"(100.00/100%)"), Some(100.0));
        assert_eq!(parse_percent(b"garbage"), None);
        assert_eq!(parse_percent(b"(250/100%)"), None);
    }

    #[test]
    fn images_referring_to_other_files_are_refused() {
        let image = Path::new("/img/disk.qcow2");
        let base = json!({"format": "qcow2", "virtual-size": 1048576});
        assert_eq!(
            check_info(image, "qcow2", &base).expect("plain image"),
            ImageInfo {
                virtual_size: 1 << 20
            }
        );
        let mut backed = base.clone();
        backed["backing-filename"] = json!("/etc/shadow");
        let err = check_info(image, "qcow2", &backed).expect_err("backing file");
        assert!(err.to_string().contains("backing file"), "{err}");
        let mut data_file = base.clone();
        data_file["format-specific"] = json!({"type": "qcow2", "data": {"data-file": "/dev/sda"}});
        assert!(check_info(image, "qcow2", &data_file).is_err());
        let vmdk = json!({
            "format": "vmdk", "virtual-size": 1048576,
            "format-specific": {"type": "vmdk", "data": {"extents": [{"filename": "/other-flat.vmdk"}]}}
        });
        let err = check_info(Path::new("/img/d.vmdk"), "vmdk", &vmdk).expect_err("extent");
        assert!(err.to_string().contains("another file"), "{err}");
        let wrong = json!({"format": "raw", "virtual-size": 1048576});
        assert!(check_info(image, "qcow2", &wrong).is_err());
        let huge = json!({"format": "qcow2", "virtual-size": u64::MAX});
        assert_eq!(
            check_info(image, "qcow2", &huge).expect_err("size").code(),
            "invalid_spec"
        );
    }
}
