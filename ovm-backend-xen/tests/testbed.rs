//! Runs the backend's dom0 checks (tests/dom0.rs) on real Xen: boots Xen 4.17 with a PV
//! dom0 under QEMU (TCG) through scripts/xen-testbed.sh, with the checks in dom0's
//! initramfs, and reads their results from the serial console. Fails on any failed check,
//! a missing summary (crash, hang) or a timeout.
//!
//! Skips, saying why, only where the test bed's packages are missing and cannot be
//! installed (scripts/deps/ovm-backend-xen.sh). Set `OVM_XEN_RECORD_FIXTURES=1` to
//! rewrite tests/fixtures/ from the `xl` output recorded in dom0.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Hard limit of the QEMU run (the script kills QEMU after it). A run takes a few minutes
/// on an otherwise idle machine; the limit leaves room for a busy one and still ends a
/// hung Xen.
const QEMU_TIMEOUT: Duration = Duration::from_secs(1200);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives in the workspace")
        .to_path_buf()
}

fn testbed_script() -> PathBuf {
    repo_root().join("scripts/xen-testbed.sh")
}

/// `None` when the test bed can run; otherwise what is missing.
fn testbed_missing() -> Option<String> {
    let out = Command::new("bash")
        .arg(testbed_script())
        .arg("check")
        .output();
    match out {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(String::from_utf8_lossy(&o.stderr).trim().to_string()),
        Err(e) => Some(format!("cannot run bash: {e}")),
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Tries to install the packages (as root); `None` once the test bed can run.
fn ensure_testbed() -> Option<String> {
    let missing = testbed_missing()?;
    if !is_root() {
        return Some(format!("{missing}; not root, cannot install the packages"));
    }
    eprintln!("xen testbed: {missing}; installing the packages");
    let deps = repo_root().join("scripts/deps/ovm-backend-xen.sh");
    let install = || Command::new("bash").arg(&deps).status();
    if !matches!(install(), Ok(s) if s.success()) {
        let _ = Command::new("apt-get").arg("update").status();
        let _ = install();
    }
    testbed_missing().map(|m| format!("{m} (and installing with {} failed)", deps.display()))
}

/// Builds tests/dom0.rs with `cargo test --no-run` and returns the executable.
fn build_dom0_checks() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(repo_root())
        .args([
            "test",
            "--no-run",
            "-p",
            "ovm-backend-xen",
            "--test",
            "dom0",
            "--message-format=json",
        ])
        .stderr(Stdio::inherit())
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "building tests/dom0.rs failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"]["name"] == "dom0")
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .expect("cargo names the dom0 test executable")
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for q in bytes.chunks(4) {
        let pad = q.iter().rev().take_while(|&&b| b == b'=').count();
        let mut n = 0u32;
        for &b in &q[..4 - pad] {
            n = (n << 6) | val(b)?;
        }
        n <<= 6 * pad as u32;
        let full = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&full[..3 - pad]);
    }
    Some(out)
}

/// What the serial console said.
#[derive(Debug, Default)]
struct Outcome {
    passed: Vec<String>,
    failed: Vec<String>,
    summary: Option<String>,
    payload_rc: Option<String>,
    fixtures: Vec<(String, Vec<u8>)>,
    notes: Vec<String>,
}

/// Reads the serial log: marker lines may follow other output on the same line (Xen and
/// the kernel share the console), and lines end in `\r\n`.
fn parse_serial(lines: &[String]) -> Outcome {
    let mut o = Outcome::default();
    let mut fixture: Option<(String, String)> = None;
    for raw in lines {
        let line = raw.replace('\r', "");
        if let Some((name, data)) = fixture.as_mut() {
            if line.contains("OVM-XEN-FIXTURE-END") {
                match base64_decode(data) {
                    Some(bytes) => o.fixtures.push((name.clone(), bytes)),
                    None => o
                        .failed
                        .push(format!("fixture {name}: garbled on the console")),
                }
                fixture = None;
            } else {
                data.push_str(line.trim());
            }
            continue;
        }
        let Some(at) = line.find("OVM-") else {
            continue;
        };
        let m = &line[at..];
        if let Some(rest) = m.strip_prefix("OVM-XEN-CHECK ok ") {
            o.passed.push(rest.to_string());
        } else if let Some(rest) = m.strip_prefix("OVM-XEN-CHECK FAILED ") {
            o.failed.push(rest.to_string());
        } else if let Some(rest) = m.strip_prefix("OVM-XEN-SUMMARY ") {
            o.summary = Some(rest.to_string());
        } else if let Some(rest) = m.strip_prefix("OVM-PAYLOAD-END rc=") {
            o.payload_rc = Some(rest.trim().to_string());
        } else if let Some(rest) = m.strip_prefix("OVM-XEN-FIXTURE-BEGIN ") {
            fixture = Some((rest.trim().to_string(), String::new()));
        } else if let Some(rest) = m.strip_prefix("OVM-XEN-NOTE ") {
            o.notes.push(rest.to_string());
        }
    }
    o
}

#[test]
fn backend_passes_its_checks_inside_a_real_xen_dom0() {
    if let Some(reason) = ensure_testbed() {
        eprintln!("skipped: the Xen test bed cannot run here: {reason}");
        return;
    }
    let exe = build_dom0_checks();
    let work = repo_root().join("target/xen-testbed");
    std::fs::create_dir_all(&work).expect("create target/xen-testbed");
    let log = work.join("serial.log");
    let t0 = Instant::now();
    let mut child = Command::new("bash")
        .arg(testbed_script())
        .arg("run")
        .arg("--payload")
        .arg(&exe)
        .arg("--timeout")
        .arg(QEMU_TIMEOUT.as_secs().to_string())
        .arg("--log")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run scripts/xen-testbed.sh");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).split(b'\n') {
        let Ok(line) = line else { break };
        let line = String::from_utf8_lossy(&line).into_owned();
        if line.contains("OVM-XEN-CHECK") || line.contains("OVM-XEN-SUMMARY") {
            eprintln!(
                "[{:>5.1} s] {}",
                t0.elapsed().as_secs_f64(),
                line.trim_end()
            );
        }
        lines.push(line);
    }
    let status = child.wait().expect("wait for the test bed");
    let o = parse_serial(&lines);
    for note in &o.notes {
        eprintln!("note: {note}");
    }
    eprintln!(
        "xen testbed: {} checks passed, {} failed, QEMU {status}, {:.0} s (serial log: {})",
        o.passed.len(),
        o.failed.len(),
        t0.elapsed().as_secs_f64(),
        log.display()
    );

    let fixture_dir = if std::env::var_os("OVM_XEN_RECORD_FIXTURES").is_some() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    } else {
        work.join("fixtures")
    };
    std::fs::create_dir_all(&fixture_dir).expect("create the fixture dir");
    for (name, bytes) in &o.fixtures {
        std::fs::write(fixture_dir.join(name), bytes).expect("write a fixture");
    }

    let tail = || {
        let n = lines.len().saturating_sub(40);
        lines[n..]
            .iter()
            .map(|l| l.replace('\r', ""))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        o.failed.is_empty(),
        "checks failed in dom0:\n  {}",
        o.failed.join("\n  ")
    );
    let Some(summary) = &o.summary else {
        panic!(
            "no result summary from dom0 (QEMU {status}, timeout {QEMU_TIMEOUT:?}); console ends:\n{}",
            tail()
        );
    };
    assert_eq!(
        o.payload_rc.as_deref(),
        Some("0"),
        "dom0 checks exited badly ({summary})"
    );
    assert!(
        status.success(),
        "QEMU ended with {status} after the checks ({summary}); console ends:\n{}",
        tail()
    );
    assert!(
        o.passed.len() >= 12,
        "only {} checks ran: {:?}",
        o.passed.len(),
        o.passed
    );
}

#[test]
fn serial_parsing_finds_markers_amid_console_noise() {
    let lines: Vec<String> = [
        "(XEN) something\r\r",
        "[   1.0] kernel noise OVM-XEN-CHECK ok host_info (12 ms)\r",
        "OVM-XEN-CHECK FAILED pause_and_unpause: stays running (3 ms)\r",
        "OVM-XEN-FIXTURE-BEGIN a.txt\r",
        "aGVs\r",
        "bG8K\r",
        "OVM-XEN-FIXTURE-END\r",
        "OVM-XEN-SUMMARY passed=1 failed=1 seconds=2.0\r",
        "OVM-PAYLOAD-END rc=1\r",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let o = parse_serial(&lines);
    assert_eq!(o.passed, vec!["host_info (12 ms)"]);
    assert_eq!(o.failed, vec!["pause_and_unpause: stays running (3 ms)"]);
    assert_eq!(o.fixtures, vec![("a.txt".to_string(), b"hello\n".to_vec())]);
    assert_eq!(o.payload_rc.as_deref(), Some("1"));
    assert!(o.summary.unwrap().starts_with("passed=1"));
    assert_eq!(base64_decode("YQ==").unwrap(), b"a");
    assert_eq!(base64_decode("YWI=").unwrap(), b"ab");
    assert!(base64_decode("Y").is_none());
}
