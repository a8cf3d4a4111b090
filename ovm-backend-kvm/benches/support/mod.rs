//! Shared by the KVM benchmarks: starting `ovm-vmm` and QEMU on the test guest, waiting for
//! its "ready" line, statistics, JSON-lines output.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const READY_LINE: &str = "ovm-guest: ready";
pub const QEMU: &str = "qemu-system-x86_64";

/// Why the benchmark cannot run here, if it cannot.
pub fn skip_reason() -> Option<String> {
    ovm_backend_kvm::kvm_usable().err()
}

pub fn qemu_available() -> bool {
    Command::new(QEMU)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn guest() -> PathBuf {
    ovm_backend_kvm::test_guest_path().expect("test guest")
}

pub fn vmm_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ovm-vmm"))
}

/// A running VM process and a channel of its console text.
pub struct Vm {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub socket: Option<PathBuf>,
}

impl Vm {
    /// Waits for a console line containing `text`.
    pub fn wait_for(&self, text: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return Ok(()),
                Ok(_) => {}
                Err(_) => return Err(format!("no {text:?} within {timeout:?}")),
            }
        }
    }

    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pump(stdout: impl Read + Send + 'static, decode_events: bool) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let text = if decode_events {
                match serde_json::from_str::<serde_json::Value>(&line) {
                    Ok(v) if v["event"] == "console" => {
                        let bytes: Vec<u8> =
                            serde_json::from_value(v["data"].clone()).unwrap_or_default();
                        String::from_utf8_lossy(&bytes).into_owned()
                    }
                    _ => line,
                }
            } else {
                line
            };
            if tx.send(text).is_err() {
                return;
            }
        }
    });
    rx
}

/// Starts `ovm-vmm` on the test guest.
pub fn spawn_ovm(dir: &Path, name: &str, memory_mib: u64, cmdline: &str) -> Vm {
    let config = serde_json::json!({
        "vcpus": 1,
        "memory_mib": memory_mib,
        "boot": {"type": "kernel", "kernel": guest(), "cmdline": cmdline},
    });
    let config_path = dir.join(format!("{name}.json"));
    std::fs::write(&config_path, config.to_string()).expect("write config");
    let socket = dir.join(format!("{name}.sock"));
    let mut child = Command::new(vmm_binary())
        .arg("--config")
        .arg(&config_path)
        .arg("--api-sock")
        .arg(&socket)
        .arg("--die-with-parent")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn ovm-vmm");
    let stdout = child.stdout.take().expect("stdout");
    Vm {
        child,
        lines: pump(stdout, true),
        socket: Some(socket),
    }
}

/// Starts QEMU microvm on the same guest, console on stdout.
pub fn spawn_qemu(memory_mib: u64, cmdline: &str) -> Vm {
    let mut child = Command::new(QEMU)
        .args([
            "-M",
            "microvm,x-option-roms=off",
            "-enable-kvm",
            "-cpu",
            "host",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=4",
            "-m",
        ])
        .arg(format!("{memory_mib}M"))
        .arg("-kernel")
        .arg(guest())
        .arg("-append")
        .arg(cmdline)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn qemu");
    let stdout = child.stdout.take().expect("stdout");
    Vm {
        child,
        lines: pump(stdout, false),
        socket: None,
    }
}

pub fn median(v: &mut [f64]) -> f64 {
    percentile(v, 50.0)
}

pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[rank.min(v.len() - 1)]
}

/// Prints one figure as a JSON line.
pub fn report(bench: &str, metric: &str, value: f64, unit: &str, peer: Option<(&str, f64)>) {
    let mut line = serde_json::json!({
        "bench": bench, "metric": metric, "value": round(value), "unit": unit,
    });
    if let Some((name, v)) = peer {
        line["peer"] = name.into();
        line["peer_value"] = round(v).into();
        if value > 0.0 {
            line["peer_ratio"] = round(v / value).into();
        }
    }
    println!("{line}");
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Resident bytes of a process, and of its largest anonymous mapping of at least
/// `guest_bytes` (the guest RAM), from /proc/PID/smaps.
pub fn rss_split(pid: u32, guest_bytes: u64) -> Option<(u64, u64)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let mut total = 0u64;
    let mut guest = 0u64;
    let mut size = 0u64;
    for line in smaps.lines() {
        let mut parts = line.split_whitespace();
        match parts.next() {
            Some("Size:") => size = parts.next()?.parse::<u64>().ok()? * 1024,
            Some("Rss:") => {
                let rss = parts.next()?.parse::<u64>().ok()? * 1024;
                total += rss;
                if size >= guest_bytes {
                    guest = guest.max(rss);
                }
            }
            _ => {}
        }
    }
    Some((total, guest))
}
