//! Oracle VM's real shape: the agent inside a real Xen dom0 (Xen 4.17 booted under QEMU
//! by scripts/xen-testbed.sh), QEMU forwarding a port on 127.0.0.1 to it, and a manager
//! on this machine that adds the dom0 as a server and creates, starts, consoles, stops
//! and deletes a PV guest through the agent.
//!
//! Skips, saying why, where the test bed's packages are missing (the Xen backend's own
//! test bed test installs them).

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ovm_agent::Identity;
use ovm_core::model::{AgentEndpoint, BootSource, DomainType, HypervisorKind, VmSpec, VmState};
use ovm_manager::{PoolSpec, ServerSpec};
use support::{PASSWORD, free_port, manager, own};

/// Xen, dom0 and the agent up: a few minutes under TCG on a busy machine.
const AGENT_UP: Duration = Duration::from_secs(900);
/// The PV guest's hello: about a minute under TCG, more when the machine is busy.
const GUEST_UP: Duration = Duration::from_secs(600);
const T: Duration = Duration::from_secs(300);

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("scripts/xen-testbed.sh")
}

/// QEMU and its serial console, killed when dropped.
struct Testbed {
    qemu: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Drop for Testbed {
    fn drop(&mut self) {
        // The script's process group: QEMU and the timeout wrapper.
        let pid = self.qemu.id() as i32;
        // SAFETY: kill(2) on the process group this test started (negative pid).
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
    }
}

impl Testbed {
    fn start(port: u16) -> Testbed {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new("bash");
        cmd.arg(script())
            .args([
                "run",
                "--timeout",
                "1500",
                "--agent",
                env!("CARGO_BIN_EXE_ovm-agent"),
            ])
            .args(["--agent-port", &port.to_string()])
            .arg("--env")
            .arg(format!("OVM_AGENT_PASSWORD={PASSWORD}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .stdin(Stdio::null())
            .process_group(0);
        let mut qemu = cmd.spawn().expect("run the test bed");
        let out = qemu.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Testbed {
            qemu,
            lines,
            log: Vec::new(),
        }
    }

    /// The first serial line containing `what`, within `limit`.
    fn wait_for(&mut self, what: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(what);
                    self.log.push(line.clone());
                    if found {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no {what:?} on the serial console within {limit:?}; last lines:\n{}",
                    self.log[self.log.len().saturating_sub(40)..].join("\n")
                ),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_drives_xen_in_a_real_dom0_through_the_agent() {
    let check = Command::new("bash")
        .arg(script())
        .arg("check")
        .output()
        .unwrap();
    if !check.status.success() {
        println!(
            "skipped: the Xen test bed is not installed ({})",
            String::from_utf8_lossy(&check.stderr).trim()
        );
        return;
    }
    let port = free_port();
    let mut bed = Testbed::start(port);
    let line = bed.wait_for("\"event\":\"listening\"", AGENT_UP);
    let json = &line[line.find('{').unwrap()..];
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    let ep = AgentEndpoint {
        url: format!("https://127.0.0.1:{port}"),
        fingerprint: v["fingerprint"].as_str().unwrap().into(),
    };
    let identity = Identity::generate("test-manager").unwrap();
    own(&ep, &identity).await;

    let dir = tempfile::tempdir().unwrap();
    let mgr = manager(&dir.path().join("ovm.db"), &identity).await;
    mgr.create_pool_now(PoolSpec::new("xen")).await.unwrap();
    let server = mgr
        .add_server(
            "xen",
            ServerSpec::with_agent("dom0", HypervisorKind::Xen, &ep.url, &ep.fingerprint),
        )
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap();
    let info = mgr.find_server(server).unwrap();
    assert!(info.cpus >= 1 && info.memory_mib > 0, "{info:?}");

    let mut spec = VmSpec::new("pv-web", 1, 128);
    spec.max_memory_mib = 128;
    spec.domain_type = DomainType::Pv;
    spec.boot = BootSource::Kernel {
        kernel: "/ovm/guest/vmlinuz".into(),
        initrd: Some("/ovm/guest/initrd.img".into()),
        cmdline: "console=hvc0".into(),
    };
    let vm = mgr
        .create_vm("xen", spec)
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap();
    assert_eq!(
        mgr.vm(vm).start().await.unwrap().wait(T).await.unwrap(),
        server
    );
    assert_eq!(mgr.vm(vm).state().unwrap(), VmState::Running);

    // Its console, read through the agent.
    let deadline = Instant::now() + GUEST_UP;
    loop {
        let console = mgr.vm(vm).console().await.unwrap();
        if String::from_utf8_lossy(&console).contains("OVM-GUEST: hello") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no hello from the guest within {GUEST_UP:?}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    mgr.vm(vm).stop().await.unwrap().wait(T).await.unwrap();
    assert_eq!(mgr.vm(vm).state().unwrap(), VmState::Stopped);
    mgr.vm(vm).delete().await.unwrap().wait(T).await.unwrap();
    assert!(mgr.find_vm(vm).is_err());
}
