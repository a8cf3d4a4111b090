//! A real crash: a child process running a job is killed with SIGKILL; reopening the store
//! shows the job rolled back, the VM as it was, and nothing left defined on the server.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use ovm_core::Hypervisor;
use ovm_core::model::{HypervisorKind, JobState, VmSpec, VmState};
use ovm_core::sim::{SimHostConfig, SimHypervisor};
use ovm_manager::manager::SimConnector;
use ovm_manager::{Manager, ManagerOptions, PoolSpec, ServerSpec};

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

const CHILD_ENV: &str = "OVM_CRASH_CHILD_DIR";
const T: Duration = Duration::from_secs(20);

fn options(dir: &std::path::Path) -> ManagerOptions {
    ManagerOptions {
        connectors: vec![Arc::new(SimConnector::persistent(dir.join("sim")))],
        ..Default::default()
    }
}

/// The child's part: set up, start a VM whose start hangs, say READY, wait to be killed.
async fn child(dir: &std::path::Path) {
    let sim = Arc::new(SimConnector::persistent(dir.join("sim")));
    let opts = ManagerOptions {
        connectors: vec![sim.clone()],
        ..Default::default()
    };
    let mgr = Manager::open(dir.join("ovm.db"), opts).await.unwrap();
    mgr.create_pool_now(PoolSpec::new("p")).await.unwrap();
    let server = mgr
        .add_server(
            "p",
            ServerSpec::new("s", HypervisorKind::Sim, "cpus=4,memory_mib=4096"),
        )
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap();
    mgr.create_vm("p", VmSpec::new("v", 1, 1024))
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap();
    sim.host(server)
        .unwrap()
        .faults()
        .delay("start", Duration::from_secs(3600));
    let job = mgr.start_vm("v").await.unwrap();
    // place and define are done (and persisted, with their undos); start hangs.
    while job.progress().steps_done < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("READY {}", job.id());
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

#[test]
fn sigkill_mid_job_is_rolled_back_on_reopen() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        // We are the child.
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(child(std::path::Path::new(&dir)));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sigkill_mid_job_is_rolled_back_on_reopen",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Never hang: if the child does not get there in time, kill it (the read then ends).
    let pid = child.id();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watching = done.clone();
    std::thread::spawn(move || {
        for _ in 0..600 {
            std::thread::sleep(Duration::from_millis(100));
            if watching.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
        }
        // The child is still ours (not yet reaped), so the pid cannot have been reused.
        // SAFETY: kill(2) with a pid and a signal number has no memory effects.
        unsafe { libc_kill(pid as i32, 9) };
    });
    let mut job_id = None;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        // libtest prints "test NAME ... " before the child's own output on the same line.
        if let Some((_, id)) = line.split_once("READY ") {
            job_id = Some(id.trim().to_string());
            break;
        }
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let job_id = job_id.expect("child never reached the hanging step");
    // SIGKILL: no destructor, no cleanup, exactly a crash.
    child.kill().unwrap();
    child.wait().unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mgr = Manager::open(dir.path().join("ovm.db"), options(dir.path()))
            .await
            .unwrap();
        let job = mgr.job(&job_id).await.unwrap();
        assert_eq!(job.state, JobState::RolledBack, "{job:?}");
        assert!(
            job.error
                .as_deref()
                .unwrap_or_default()
                .contains("interrupted")
        );
        let vm = mgr.find_vm("v").unwrap();
        assert_eq!(vm.state, VmState::Stopped);
        assert_eq!(vm.server, None);
        // Nothing half-created on the server.
        let server = mgr.find_server("s").unwrap();
        let host = SimHypervisor::with_state_file(
            SimHostConfig {
                hostname: "s".into(),
                cpus: 4,
                memory_mib: 4096,
            },
            dir.path()
                .join("sim")
                .join(format!("sim-{}.json", server.id)),
        )
        .unwrap();
        assert!(
            host.list().await.unwrap().is_empty(),
            "the VM definition was undone"
        );
        // No job stays running forever, and the VM starts normally now.
        assert!(
            mgr.jobs()
                .await
                .unwrap()
                .iter()
                .all(|j| j.state.is_finished())
        );
        mgr.start_vm("v").await.unwrap().wait(T).await.unwrap();
    });
}
