//! A KVM server behind a real agent process: VMs run by ovm's VMM outlive the agent,
//! and the agent started again adopts them — none stopped, none started twice.

mod support;

use std::time::Duration;

use ovm_agent::protocol::{Call, Reply};
use ovm_agent::{AgentClient, Identity};
use ovm_core::model::{HypervisorKind, VmSpec, VmState};
use ovm_manager::{PoolSpec, ServerSpec};
use support::{AgentProcess, free_port, manager, own};

const T: Duration = Duration::from_secs(60);
const KVM: &[&str] = &["--hypervisor", "kvm"];

/// Kills what VMMs are left under the agent's directory, so a failing test leaks none.
struct KillVmms(std::path::PathBuf);

impl Drop for KillVmms {
    fn drop(&mut self) {
        for pid in ovm_backend_kvm::procfs::processes_mentioning(&self.0) {
            // SAFETY: kill(2) with a pid read from /proc and a valid signal number.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// The VMM processes under the agent's directory (not the agent, whose arguments name it).
fn vmms(agent: &AgentProcess) -> Vec<i32> {
    let me = agent.child.id() as i32;
    ovm_backend_kvm::procfs::processes_mentioning(&agent.dir)
        .into_iter()
        .filter(|p| *p != me)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kvm_vms_outlive_their_agent_and_are_adopted_again() {
    if let Err(why) = ovm_backend_kvm::kvm_usable() {
        println!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let agent_dir = dir.path().join("agent");
    let _cleanup = KillVmms(agent_dir.clone());
    let mut agent = AgentProcess::start_with(&agent_dir, free_port(), KVM);
    let identity = Identity::generate("test-manager").unwrap();
    own(&agent.endpoint, &identity).await;
    let mgr = manager(&dir.path().join("ovm.db"), &identity).await;
    mgr.create_pool_now(PoolSpec::new("p")).await.unwrap();
    let spec = ServerSpec::with_agent(
        "kvm1",
        HypervisorKind::Kvm,
        &agent.endpoint.url,
        &agent.endpoint.fingerprint,
    );
    mgr.add_server("p", spec)
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap();
    let vm = mgr
        .create_vm("p", VmSpec::new("guest", 1, 64))
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap();
    mgr.vm(vm).start().await.unwrap().wait(T).await.unwrap();
    assert_eq!(mgr.vm(vm).state().unwrap(), VmState::Running);
    // The guest channel works across the agent.
    mgr.vm(vm).send_message("ping", b"1").await.unwrap();
    let before = vmms(&agent);
    assert_eq!(before.len(), 1, "one VMM: {before:?}");

    // The agent dies; its VMM does not.
    agent.kill();
    assert_eq!(vmms(&agent), before);
    agent.restart_with(KVM);
    let client = AgentClient::new(&agent.endpoint, Some(&identity), "kvm1").unwrap();
    let Reply::List(listed) = client.call(Call::List).await.unwrap() else {
        panic!("list")
    };
    assert_eq!(
        listed,
        vec![(vm, VmState::Running)],
        "adopted, not restarted"
    );
    assert_eq!(vmms(&agent), before, "the same VMM process, no second one");
    // The manager drives it through the new agent process.
    mgr.vm(vm).stop().await.unwrap().wait(T).await.unwrap();
    assert_eq!(mgr.vm(vm).state().unwrap(), VmState::Stopped);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !vmms(&agent).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the VMM outlived its stop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A VM that dies while its agent is down is recorded as it really is once the agent
    // is back: crashed — not running, and not started again.
    mgr.vm(vm).start().await.unwrap().wait(T).await.unwrap();
    let running = vmms(&agent);
    assert_eq!(running.len(), 1);
    agent.kill();
    // SAFETY: kill(2) on the VMM this test's agent started.
    unsafe { libc::kill(running[0], libc::SIGKILL) };
    agent.restart_with(KVM);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while mgr.vm(vm).state().unwrap() != VmState::Crashed {
        assert!(
            std::time::Instant::now() < deadline,
            "still {:?}",
            mgr.vm(vm).state().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(vmms(&agent).is_empty(), "not started again");
}
