//! kvm_start_rate: start 100 VMs of 32 MiB through `KvmHypervisor` at once; VMs whose guest
//! reported ready per second (first start call → last ready line).

mod support;

use std::time::{Duration, Instant};

use ovm_backend_kvm::{KvmHypervisor, KvmOptions};
use ovm_core::VmId;
use ovm_core::hypervisor::{Hypervisor, VmConfig};
use ovm_core::model::{BootSource, DomainType, VmSpec};
use support::*;

const VMS: usize = 100;

fn main() {
    if let Some(reason) = skip_reason() {
        println!("{{\"bench\":\"kvm_start_rate\",\"skipped\":{reason:?}}}");
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let hv = KvmHypervisor::with_options(KvmOptions {
            state_dir: dir.path().to_path_buf(),
            vmm_binary: Some(vmm_binary()),
            ..KvmOptions::default()
        })
        .expect("backend");
        let mut ids = Vec::new();
        for i in 0..VMS {
            let mut spec = VmSpec::new(format!("rate{i}"), 1, 32);
            spec.domain_type = DomainType::Pvh;
            spec.boot = BootSource::TestGuest {
                cmdline: "idle".into(),
            };
            let config = VmConfig::new(VmId::new(), spec);
            hv.define(&config).await.expect("define");
            ids.push(config.id);
        }
        let t = Instant::now();
        let starts = ids.iter().map(|&id| {
            let hv = hv.clone();
            tokio::spawn(async move { hv.start(id).await })
        });
        for s in futures::future::join_all(starts).await {
            s.expect("join").expect("start");
        }
        let mut pending: Vec<VmId> = ids.clone();
        let deadline = Instant::now() + Duration::from_secs(120);
        while !pending.is_empty() && Instant::now() < deadline {
            let mut still = Vec::new();
            for id in pending {
                let console = hv.console_buffer(id).await.expect("console");
                if !String::from_utf8_lossy(&console).contains(READY_LINE) {
                    still.push(id);
                }
            }
            pending = still;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elapsed = t.elapsed().as_secs_f64();
        assert!(
            pending.is_empty(),
            "{} VMs never became ready",
            pending.len()
        );
        report(
            "kvm_start_rate",
            "vms_ready_per_s",
            VMS as f64 / elapsed,
            "VMs/s",
            None,
        );
        report(
            "kvm_start_rate",
            "all_100_ready_ms",
            elapsed * 1e3,
            "ms",
            None,
        );
        for id in ids {
            hv.kill(id).await.expect("kill");
        }
    });
}
