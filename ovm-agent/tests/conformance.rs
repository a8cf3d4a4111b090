//! A server's hypervisor through its agent against the shared `Hypervisor` conformance
//! suite: what the manager relies on from a local backend holds through an agent too.

mod support;

use ovm_agent::{AgentClient, Identity, RemoteHypervisor};
use ovm_core::conformance::hypervisor::{SuiteConfig, run};
use support::{AgentProcess, free_port, in_process, own};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_host_through_its_agent_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let (_agent, ep, identity) = in_process(dir.path(), |_| {}).await;
    let hv = RemoteHypervisor::connect(AgentClient::new(&ep, Some(&identity), "sim1").unwrap())
        .await
        .unwrap();
    run(&hv, &SuiteConfig::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kvm_host_through_an_agent_process_conforms() {
    if let Err(why) = ovm_backend_kvm::kvm_usable() {
        println!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let agent = AgentProcess::start_with(
        &dir.path().join("agent"),
        free_port(),
        &["--hypervisor", "kvm"],
    );
    let identity = Identity::generate("test-manager").unwrap();
    own(&agent.endpoint, &identity).await;
    let hv = RemoteHypervisor::connect(
        AgentClient::new(&agent.endpoint, Some(&identity), "kvm1").unwrap(),
    )
    .await
    .unwrap();
    run(&hv, &SuiteConfig::default()).await;
}
