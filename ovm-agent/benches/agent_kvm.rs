//! The agent on KVM: its memory, and what it adds to a VM start.
//!
//! `cargo bench -p ovm-agent --bench agent_kvm` prints:
//! - `agent_footprint`: the `ovm-agent` process's RSS idle, and with 50 KVM VMs (ovm's
//!   test guest, idle) running; the peer is one VMM process's RSS;
//! - `agent_kvm_start`: `start()` of a defined KVM VM through an agent process over
//!   loopback TLS, median of 30, beside the same on a `KvmHypervisor` in process.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Instant;

use ovm_agent::{AgentClient, Identity, RemoteHypervisor};
use ovm_backends::{BackendKind, LocalBackends};
use ovm_core::hypervisor::VmConfig;
use ovm_core::model::{AgentEndpoint, BootSource, DomainType, HypervisorKind, VmSpec};
use ovm_core::{Hypervisor, VmId};

const PASSWORD: &str = "benchmark password";

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn line(bench: &str, metric: &str, value: f64, unit: &str, peer: &str, peer_value: f64) {
    println!(
        "{}",
        serde_json::json!({"bench": bench, "metric": metric, "value": (value * 100.0).round() / 100.0,
            "unit": unit, "peer": peer, "peer_value": (peer_value * 100.0).round() / 100.0})
    );
}

fn guest(name: &str) -> VmConfig {
    let mut spec = VmSpec::new(name, 1, 32);
    spec.domain_type = DomainType::Pvh;
    spec.boot = BootSource::TestGuest {
        cmdline: "idle".into(),
    };
    VmConfig::new(VmId::new(), spec)
}

/// The agent process, killed however the benchmark ends (its VMMs are killed by it or
/// outlive it only until the temporary directory goes).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if let Err(why) = ovm_backend_kvm::kvm_usable() {
        eprintln!("agent_kvm: skipped: {why}");
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let bin = env!("CARGO_BIN_EXE_ovm-agent");
        let state = dir.path().join("agent");
        let ok = Command::new(bin)
            .args(["init", "--state-dir"])
            .arg(&state)
            .env("OVM_AGENT_PASSWORD", PASSWORD)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success());
        let mut child = Child(
            Command::new(bin)
                .args([
                    "run",
                    "--hypervisor",
                    "kvm",
                    "--listen",
                    "127.0.0.1:0",
                    "--state-dir",
                ])
                .arg(&state)
                .env("OVM_LOG", "warn")
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let mut first = String::new();
        std::io::BufReader::new(child.0.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&first).unwrap();
        let ep = AgentEndpoint {
            url: format!("https://{}", v["address"].as_str().unwrap()),
            fingerprint: v["fingerprint"].as_str().unwrap().into(),
        };
        let identity = Identity::generate("bench").unwrap();
        let client = AgentClient::new(&ep, Some(&identity), "kvm").unwrap();
        client.take_ownership(PASSWORD, "bench").await.unwrap();
        let remote = RemoteHypervisor::connect(client).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let idle = rss_kib(child.0.id());

        // The peer: a KvmHypervisor in this process.
        let local_conn = LocalBackends::private(dir.path().join("local"))
            .only([BackendKind::Kvm])
            .embedded_vmm(bin, vec!["__vmm".into()])
            .build()
            .unwrap()
            .connectors
            .remove(0);
        let server = ovm_core::model::Server::standalone(
            ovm_core::ServerId::new(),
            "local",
            "local",
            HypervisorKind::Kvm,
        );
        let local = local_conn.connect(&server).await.unwrap();

        let (mut through, mut here) = (Vec::new(), Vec::new());
        for i in 0..30 {
            for (hv, out) in [
                (&remote as &dyn Hypervisor, &mut through),
                (&*local, &mut here),
            ] {
                let g = guest(&format!("s{i}"));
                hv.define(&g).await.unwrap();
                let t = Instant::now();
                hv.start(g.id).await.unwrap();
                out.push(t.elapsed().as_secs_f64() * 1e3);
                hv.kill(g.id).await.unwrap();
                hv.undefine(g.id).await.unwrap();
            }
        }
        let (t50, h50) = (median(through), median(here));
        line("agent_kvm_start", "p50_ms", t50, "ms", "in_process", h50);
        line(
            "agent_kvm_start",
            "extra_p50_ms",
            t50 - h50,
            "ms",
            "in_process",
            0.0,
        );

        let mut vms = Vec::new();
        for i in 0..50 {
            let g = guest(&format!("f{i}"));
            remote.define(&g).await.unwrap();
            remote.start(g.id).await.unwrap();
            vms.push(g.id);
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let busy = rss_kib(child.0.id());
        let vmm = ovm_backend_kvm::procfs::processes_mentioning(&state)
            .into_iter()
            .filter(|p| *p != child.0.id() as i32)
            .map(|p| rss_kib(p as u32))
            .max()
            .unwrap_or(0);
        line(
            "agent_footprint",
            "idle_rss_mib",
            idle as f64 / 1024.0,
            "MiB",
            "one_vmm",
            vmm as f64 / 1024.0,
        );
        line(
            "agent_footprint",
            "rss_50_kvm_vms_mib",
            busy as f64 / 1024.0,
            "MiB",
            "one_vmm",
            vmm as f64 / 1024.0,
        );
        for vm in vms {
            let _ = remote.kill(vm).await;
        }
        drop(child);
    });
}
