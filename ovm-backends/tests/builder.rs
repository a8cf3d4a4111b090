//! The shared backend builder, through a manager as the CLI and Python use it.

use std::sync::Arc;
use std::time::Duration;

use ovm_backend_xen::fake::FakeXl;
use ovm_backends::{BackendKind, LocalBackends};
use ovm_core::model::{BootSource, DomainType, HypervisorKind, VmSpec, VmState};
use ovm_manager::{Manager, ManagerOptions, PoolSpec, ServerSpec};

const T: Duration = Duration::from_secs(20);

async fn manager(db: &std::path::Path, backends: ovm_backends::Backends) -> Manager {
    let opts = ManagerOptions {
        initiator: "test".into(),
        connectors: backends.connectors,
        storage: backends.storage,
        ..ManagerOptions::default()
    };
    Manager::open(db, opts).await.unwrap()
}

#[tokio::test]
async fn shared_backends_show_every_process_the_same_simulated_vms() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ovm.db");
    let first = manager(&db, LocalBackends::shared(dir.path()).build().unwrap()).await;
    first.create_pool_now(PoolSpec::new("p")).await.unwrap();
    first
        .add_server(
            "p",
            ServerSpec::new("s1", HypervisorKind::Sim, "cpus=4,memory_mib=4096"),
        )
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap();
    let vm = first
        .create_vm("p", VmSpec::new("web", 1, 512))
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap();
    first.vm(vm).start().await.unwrap().wait(T).await.unwrap();

    // A second manager on the same directory, as a second `ovm` process would be.
    let second = manager(&db, LocalBackends::shared(dir.path()).build().unwrap()).await;
    second.refresh().await.unwrap();
    assert_eq!(second.vm(vm).state().unwrap(), VmState::Running);
}

#[tokio::test]
async fn a_backend_asked_for_but_unusable_is_refused_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    for kind in [BackendKind::Kvm, BackendKind::Xen] {
        let built = LocalBackends::private(dir.path()).only([kind]).build();
        match kind.unavailable_reason() {
            Some(reason) => {
                let err = built.unwrap_err().to_string();
                assert!(err.contains(kind.name()) && err.contains(&reason), "{err}");
            }
            None => {
                let b = built.unwrap();
                assert_eq!(b.kinds, vec![kind]);
                assert_eq!(b.connectors.len(), 1);
            }
        }
    }
    // Not asked for: simply left out where unusable.
    let all = LocalBackends::private(dir.path()).build().unwrap();
    assert_eq!(all.kinds, ovm_backends::available());
    assert_eq!(all.connectors.len(), all.kinds.len());
}

/// Where an `xl` answers (a dom0; here a stand-in), the same builder gives the manager Xen
/// servers: a PV VM is defined and started through `xl`.
#[tokio::test]
async fn xen_servers_run_vms_through_the_builders_connector() {
    let dir = tempfile::tempdir().unwrap();
    let xl = Arc::new(FakeXl::new());
    let backends = LocalBackends::shared(dir.path())
        .only([BackendKind::Sim, BackendKind::Xen])
        .xl_runner(xl.clone())
        .build()
        .unwrap();
    assert_eq!(backends.kinds, vec![BackendKind::Sim, BackendKind::Xen]);
    let mgr = manager(&dir.path().join("ovm.db"), backends).await;
    mgr.create_pool_now(PoolSpec::new("p")).await.unwrap();
    mgr.add_server("p", ServerSpec::new("dom0", HypervisorKind::Xen, "local"))
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap();
    let kernel = dir.path().join("vmlinuz");
    std::fs::write(&kernel, b"a PV kernel").unwrap();
    let mut spec = VmSpec::new("pv", 1, 128);
    spec.domain_type = DomainType::Pv;
    spec.boot = BootSource::Kernel {
        kernel,
        initrd: None,
        cmdline: "console=hvc0".into(),
    };
    let vm = mgr
        .create_vm("p", spec)
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap();
    mgr.vm(vm).start().await.unwrap().wait(T).await.unwrap();
    assert_eq!(mgr.vm(vm).state().unwrap(), VmState::Running);
    let calls = xl.calls();
    assert!(
        calls.iter().any(|c| c.starts_with("xl create")),
        "{calls:?}"
    );
}
