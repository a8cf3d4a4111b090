//! `KvmHypervisor` against the shared `Hypervisor` conformance suite.

mod common;

use ovm_backend_kvm::RebootPolicy;
use ovm_core::conformance::hypervisor::{SuiteConfig, run};

#[tokio::test(flavor = "multi_thread")]
async fn kvm_backend_conforms() {
    let Some((hv, _dir)) = common::backend(RebootPolicy::Restart) else {
        return;
    };
    run(&hv, &SuiteConfig::default()).await;
}
