//! Repositories, volumes and templates through the manager, on the simulated storage
//! plugin.

use std::sync::Arc;
use std::time::Duration;

use ovm_core::model::{DiskSpec, HypervisorKind, JobState, NicSpec, Template, VmSpec, VmState};
use ovm_core::sim::storage::SimStorage;
use ovm_core::storage::VolumeSpec;
use ovm_core::{Error, TemplateId};
use ovm_manager::job::JobSpec;
use ovm_manager::manager::{ImportRecord, SimConnector};
use ovm_manager::{Manager, ManagerOptions, PoolSpec, ServerSpec};

const T: Duration = Duration::from_secs(20);
const GIB: u64 = 1 << 30;

async fn bed() -> (Manager, Arc<SimStorage>) {
    let storage = Arc::new(SimStorage::new());
    let opts = ManagerOptions {
        connectors: vec![Arc::new(SimConnector::new())],
        storage: vec![storage.clone()],
        ..Default::default()
    };
    let mgr = Manager::open_in_memory(opts).await.unwrap();
    mgr.create_pool_now(PoolSpec::new("p")).await.unwrap();
    mgr.add_server(
        "p",
        ServerSpec::new("s", HypervisorKind::Sim, "cpus=8,memory_mib=16384"),
    )
    .await
    .unwrap()
    .wait(T)
    .await
    .unwrap();
    mgr.register_repository("p", "sim", "repo", "/sim/repo", true)
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap();
    (mgr, storage)
}

#[tokio::test]
async fn volumes_live_and_die_through_jobs() {
    let (mgr, _) = bed().await;
    assert_eq!(mgr.find_pool("p").unwrap().repositories.len(), 1);
    let id = mgr
        .create_volume("repo", VolumeSpec::raw("disk", GIB))
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap();
    let clone = mgr
        .clone_volume("repo", "disk", "disk-copy")
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap();
    assert_ne!(id, clone);
    mgr.resize_volume("repo", "disk", 2 * GIB, false)
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap();
    assert_eq!(
        mgr.find_volume("repo", "disk").await.unwrap().size_bytes,
        2 * GIB
    );
    let err = mgr
        .resize_volume("repo", "disk", GIB, false)
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidSpec { .. } | Error::InvalidState { .. }),
        "{err}"
    );
    assert!(matches!(
        mgr.create_volume("repo", VolumeSpec::raw("../x", GIB))
            .await,
        Err(Error::InvalidSpec { .. })
    ));

    // A VM's disk cannot be deleted under it.
    let mut spec = VmSpec::new("v", 1, 512);
    spec.disks.push(DiskSpec {
        volume: id,
        read_only: false,
        device: None,
    });
    mgr.create_vm("p", spec)
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap();
    assert!(matches!(
        mgr.delete_volume("repo", "disk").await,
        Err(Error::InvalidState { .. })
    ));
    mgr.delete_volume("repo", "disk-copy")
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap();
    let names: Vec<String> = mgr
        .volumes("repo")
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(names, ["disk"]);

    // A VM with a disk starts: the hypervisor gets the plugin's access to the volume.
    mgr.start_vm("v").await.unwrap().wait(T).await.unwrap();
}

#[tokio::test]
async fn a_failed_clone_leaves_no_volume() {
    let (mgr, storage) = bed().await;
    mgr.create_volume("repo", VolumeSpec::raw("src", GIB))
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap();
    storage.fail_next(
        ovm_core::sim::storage::SimStorageOp::CloneVolume,
        Error::backend("sim", "disk full"),
    );
    let job = mgr.clone_volume("repo", "src", "dst").await.unwrap();
    assert!(job.wait(T).await.is_err());
    assert_eq!(job.state(), JobState::RolledBack);
    assert_eq!(mgr.volumes("repo").await.unwrap().len(), 1);
}

#[tokio::test]
async fn imports_are_recorded_and_templates_clone_into_vms() {
    let (mgr, _) = bed().await;
    let repo = mgr.find_repository("repo").unwrap();
    let base = mgr
        .create_volume("repo", VolumeSpec::raw("base", GIB))
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap();
    let lan = ovm_core::NetworkId::new();
    let mut spec = VmSpec::new("tmpl", 2, 1024);
    spec.disks.push(DiskSpec {
        volume: base,
        read_only: false,
        device: Some("xvda".into()),
    });
    spec.nics.push(NicSpec {
        network: lan,
        mac: None,
    });
    let template = Template {
        id: TemplateId::new(),
        name: "ol9".into(),
        repo: repo.id,
        spec,
        volumes: vec![base],
        description: "Oracle Linux".into(),
    };
    let pool = mgr.find_pool("p").unwrap().id;
    let rec = ImportRecord {
        pool,
        templates: vec![template],
        assembly: None,
        networks: vec![("lan".into(), lan)],
    };
    let m = mgr.clone();
    let job = mgr
        .run_job(
            JobSpec::new("ovf.import", "import ol9", None, "test", &["record"]),
            move |ctx| async move {
                ctx.step("record", m.record_import(&ctx, "record", rec))
                    .await
            },
        )
        .await
        .unwrap();
    job.wait(T).await.unwrap();
    assert_eq!(mgr.templates().await.unwrap().len(), 1);
    // The network the package named is made as `create_network` makes one: on every
    // server of the pool, so that VMs of the template can be placed.
    assert!(
        mgr.networks()
            .iter()
            .any(|n| n.name == "lan" && n.id == lan)
    );
    let servers = mgr.servers();
    assert!(!servers.is_empty());
    assert!(
        servers.iter().all(|s| s.networks.contains(&lan)),
        "{servers:?}"
    );

    let vm = mgr
        .create_vm_from_template("p", "ol9", "db-01")
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap();
    let rec = mgr.find_vm(vm).unwrap();
    assert_eq!(rec.spec.vcpus, 2);
    assert_eq!(rec.spec.disks.len(), 1);
    assert_ne!(rec.spec.disks[0].volume, base, "the VM got its own clone");
    assert_eq!(rec.spec.disks[0].device.as_deref(), Some("xvda"));
    mgr.start_vm("db-01").await.unwrap().wait(T).await.unwrap();
    assert_eq!(mgr.vm_state(vm).unwrap(), VmState::Running);

    // A name clash rolls the clone back: no extra volume is left.
    let before = mgr.volumes("repo").await.unwrap().len();
    let err = mgr
        .create_vm_from_template("p", "ol9", "db-01")
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    assert_eq!(mgr.volumes("repo").await.unwrap().len(), before);
}
