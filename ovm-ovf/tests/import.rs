//! Importing packages as templates and assemblies through a StoragePlugin: the in-memory
//! simulator (fault paths) and the `fs` plugin (real data).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use ovm_core::model::VmSpec;
use ovm_core::sim::storage::SimStorage;
use ovm_core::storage::{StoragePlugin, VolumeAccess};
use ovm_ovf::OvfVersion;
use ovm_ovf::export::{DiskExportFormat, ExportDisk, write_ova};
use ovm_ovf::import::{ImportOptions, import};
use ovm_ovf::mapping::envelope_for_spec;
use ovm_ovf::model::{Content, StartupItem, StartupSection, VirtualSystemCollection};
use ovm_ovf::xml::{NS_OVF1, NS_OVM, XmlElement};

const CAP: u64 = 2 << 20;

fn raw(dir: &Path, name: &str, seed: u8) -> PathBuf {
    let mut data = vec![0u8; CAP as usize];
    for (i, b) in data.iter_mut().enumerate().take(200_000) {
        *b = (i as u8).wrapping_mul(seed) | 1;
    }
    let p = dir.join(name);
    std::fs::write(&p, &data).unwrap();
    p
}

fn single_vm_ova(dir: &Path) -> PathBuf {
    let src = raw(dir, "a.raw", 3);
    let env = envelope_for_spec(
        &VmSpec::new("web", 2, 768),
        &[("disk1".into(), CAP)],
        &["VM Network".into()],
        "a web server",
    );
    let ova = dir.join("web.ova");
    write_ova(
        &ova,
        &env,
        &[ExportDisk {
            disk_id: "disk1".into(),
            source: src,
            capacity_bytes: CAP,
        }],
        DiskExportFormat::StreamOptimizedVmdk,
        OvfVersion::V1,
    )
    .unwrap();
    ova
}

/// Two systems in a collection, db first, with Oracle VM scaling on the web tier.
fn assembly_ova(dir: &Path) -> PathBuf {
    let web = envelope_for_spec(
        &VmSpec::new("web", 2, 512),
        &[("web-disk".into(), CAP)],
        &["front".into(), "back".into()],
        "",
    );
    let db = envelope_for_spec(
        &VmSpec::new("db", 4, 2048),
        &[("db-disk".into(), CAP)],
        &["back".into()],
        "",
    );
    let mut env = web.clone();
    let Content::System(mut web_vs) = web.content else {
        unreachable!()
    };
    let Content::System(db_vs) = db.content else {
        unreachable!()
    };
    let mut scaling =
        XmlElement::new(Some(NS_OVM), "ScalingSection").attr(Some(NS_OVF1), "required", "false");
    scaling.push(XmlElement::with_text(Some(NS_OVF1), "Info", "scaling"));
    scaling.push(XmlElement::with_text(Some(NS_OVM), "InstanceCount", "2"));
    scaling.push(XmlElement::with_text(Some(NS_OVM), "MinInstanceCount", "1"));
    scaling.push(XmlElement::with_text(Some(NS_OVM), "MaxInstanceCount", "8"));
    web_vs.extra.elements.push(scaling);
    env.disk_section
        .as_mut()
        .unwrap()
        .disks
        .extend(db.disk_section.unwrap().disks);
    let startup = |id: &str, order| StartupItem {
        id: id.into(),
        order: Some(order),
        start_delay: Some(0),
        waiting_for_guest: Some(true),
        stop_delay: None,
        start_action: Some("powerOn".into()),
        stop_action: None,
        extra_attrs: Vec::new(),
    };
    env.content = Content::Collection(Box::new(VirtualSystemCollection {
        id: "shop".into(),
        info: "A two-tier shop".into(),
        name: Some("shop".into()),
        startup: Some(StartupSection {
            required: true,
            info: "Startup order".into(),
            items: vec![startup("web", 2), startup("db", 1)],
            extra: Default::default(),
        }),
        products: Vec::new(),
        eulas: Vec::new(),
        annotation: None,
        resource_allocation: None,
        members: vec![Content::System(web_vs), Content::System(db_vs)],
        extra: Default::default(),
    }));
    let ova = dir.join("shop.ova");
    write_ova(
        &ova,
        &env,
        &[
            ExportDisk {
                disk_id: "web-disk".into(),
                source: raw(dir, "w.raw", 5),
                capacity_bytes: CAP,
            },
            ExportDisk {
                disk_id: "db-disk".into(),
                source: raw(dir, "d.raw", 7),
                capacity_bytes: CAP,
            },
        ],
        DiskExportFormat::StreamOptimizedVmdk,
        OvfVersion::V2,
    )
    .unwrap();
    ova
}

#[tokio::test]
async fn single_system_becomes_a_template_in_the_fs_plugin_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let ova = single_vm_ova(dir.path());
    let plugin = ovm_storage_connect::FsPlugin::new(ovm_storage_connect::FsConfig::default());
    let repo_dir = dir.path().join("repo");
    std::fs::create_dir(&repo_dir).unwrap();
    let repo = plugin
        .create_repository("r1", repo_dir.to_str().unwrap(), None)
        .await
        .unwrap();
    let r = import(&plugin, repo.id, &ova, &ImportOptions::default(), |_, _| {})
        .await
        .unwrap();
    assert!(r.assembly.is_none());
    let t = &r.templates[0].template;
    assert_eq!(t.name, "web");
    assert_eq!(t.spec.vcpus, 2);
    assert_eq!(t.spec.memory_mib, 768);
    assert_eq!(t.spec.nics.len(), 1);
    assert_eq!(r.networks[0].0, "VM Network");
    assert_eq!(t.description, "a web server");
    let VolumeAccess::Path { path, .. } =
        plugin.volume_access(repo.id, t.volumes[0]).await.unwrap()
    else {
        panic!("fs plugin gives paths")
    };
    assert_eq!(
        std::fs::read(path).unwrap(),
        std::fs::read(dir.path().join("a.raw")).unwrap()
    );
    assert!(
        r.templates[0]
            .not_honoured
            .iter()
            .any(|n| n.item.contains("SCSI"))
    );
}

#[tokio::test]
async fn collection_becomes_an_assembly_with_start_order_networks_and_scaling() {
    let dir = tempfile::tempdir().unwrap();
    let ova = assembly_ova(dir.path());
    let sim = SimStorage::new();
    let repo = sim.create_repository("r", "/sim/r", None).await.unwrap();
    let r = import(&sim, repo.id, &ova, &ImportOptions::default(), |_, _| {})
        .await
        .unwrap();
    let a = r.assembly.as_ref().expect("assembly");
    assert_eq!(a.name, "shop");
    assert_eq!(a.templates.len(), 2);
    // db starts first.
    assert_eq!(r.templates[0].template.name, "db");
    assert_eq!(r.templates[0].start_order, Some(1));
    assert_eq!(r.templates[1].template.name, "web");
    assert_eq!(
        r.templates[1].scaling.map(|s| (s.default, s.min, s.max)),
        Some((2, 1, 8))
    );
    let names: Vec<&str> = r.networks.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, vec!["front", "back"]);
    assert_eq!(a.networks.len(), 2);
    // The web template's second NIC and the db's NIC share the "back" network id.
    assert_eq!(
        r.templates[1].template.spec.nics[1].network,
        r.templates[0].template.spec.nics[0].network
    );
    assert_eq!(sim.list_volumes(repo.id).await.unwrap().len(), 2);
    assert!(r.warnings.iter().any(|w| w.contains("simulated storage")));
}

#[tokio::test]
async fn failed_import_deletes_every_volume_it_created() {
    let dir = tempfile::tempdir().unwrap();
    let ova = assembly_ova(dir.path());
    // Corrupt the last disk's data: the failure comes after both volumes exist.
    let mut bytes = std::fs::read(&ova).unwrap();
    let n = bytes.len();
    bytes[n - 1024 - 700] ^= 0x55;
    std::fs::write(&ova, &bytes).unwrap();
    let sim = SimStorage::new();
    let repo = sim.create_repository("r", "/sim/r", None).await.unwrap();
    let err = import(&sim, repo.id, &ova, &ImportOptions::default(), |_, _| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, ovm_ovf::OvfError::DigestMismatch { .. }),
        "{err}"
    );
    assert!(sim.list_volumes(repo.id).await.unwrap().is_empty());

    // A storage failure half-way (the second volume) also leaves nothing.
    let ova = assembly_ova(&dir.path().join("again").tap_create());
    let flaky = FailSecondCreate {
        inner: sim,
        creates: AtomicU32::new(0),
    };
    let err = import(&flaky, repo.id, &ova, &ImportOptions::default(), |_, _| {})
        .await
        .unwrap_err();
    assert!(matches!(err, ovm_ovf::OvfError::Core(_)), "{err}");
    assert_eq!(flaky.creates.load(Ordering::SeqCst), 2);
    assert!(flaky.inner.list_volumes(repo.id).await.unwrap().is_empty());
}

/// Delegates to the simulator, failing the second volume creation.
struct FailSecondCreate {
    inner: SimStorage,
    creates: AtomicU32,
}

#[async_trait::async_trait]
impl StoragePlugin for FailSecondCreate {
    fn info(&self) -> ovm_core::storage::PluginInfo {
        self.inner.info()
    }
    async fn discover(&self) -> ovm_core::Result<Vec<ovm_core::model::Repository>> {
        self.inner.discover().await
    }
    async fn create_repository(
        &self,
        n: &str,
        l: &str,
        p: Option<ovm_core::PoolId>,
    ) -> ovm_core::Result<ovm_core::model::Repository> {
        self.inner.create_repository(n, l, p).await
    }
    async fn open_repository(
        &self,
        l: &str,
        p: Option<ovm_core::PoolId>,
    ) -> ovm_core::Result<ovm_core::model::Repository> {
        self.inner.open_repository(l, p).await
    }
    async fn close_repository(&self, r: ovm_core::RepoId) -> ovm_core::Result<()> {
        self.inner.close_repository(r).await
    }
    async fn list_volumes(
        &self,
        r: ovm_core::RepoId,
    ) -> ovm_core::Result<Vec<ovm_core::model::Volume>> {
        self.inner.list_volumes(r).await
    }
    async fn create_volume(
        &self,
        r: ovm_core::RepoId,
        s: &ovm_core::VolumeSpec,
    ) -> ovm_core::Result<ovm_core::model::Volume> {
        if self.creates.fetch_add(1, Ordering::SeqCst) == 1 {
            return Err(ovm_core::Error::backend("sim", "injected failure"));
        }
        self.inner.create_volume(r, s).await
    }
    async fn delete_volume(
        &self,
        r: ovm_core::RepoId,
        v: ovm_core::VolumeId,
    ) -> ovm_core::Result<()> {
        self.inner.delete_volume(r, v).await
    }
    async fn volume_access(
        &self,
        r: ovm_core::RepoId,
        v: ovm_core::VolumeId,
    ) -> ovm_core::Result<VolumeAccess> {
        self.inner.volume_access(r, v).await
    }
}

#[tokio::test]
async fn unknown_required_items_fail_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let spec = VmSpec::new("odd", 1, 256);
    let mut env = envelope_for_spec(&spec, &[], &[], "");
    let Content::System(vs) = &mut env.content else {
        unreachable!()
    };
    let mut item = vs.hardware[0].items[0].clone();
    for p in &mut item.properties {
        if p.name == "ResourceType" {
            p.value = "32768".into();
        }
    }
    vs.hardware[0].items.push(item);
    let ova = dir.path().join("odd.ova");
    write_ova(&ova, &env, &[], DiskExportFormat::Raw, OvfVersion::V1).unwrap();
    let sim = SimStorage::new();
    let repo = sim.create_repository("r", "/sim/r", None).await.unwrap();
    let err = import(&sim, repo.id, &ova, &ImportOptions::default(), |_, _| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, ovm_ovf::OvfError::Unhonoured { ref item, .. } if item.contains("32768")),
        "{err}"
    );
    // inspect still summarises it, saying the import would fail.
    let v = ovm_ovf::inspect::summary_json(&ova, &Default::default()).unwrap();
    assert!(
        v["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("import will fail"))
    );
}

trait TapCreate {
    fn tap_create(self) -> Self;
}

impl TapCreate for PathBuf {
    fn tap_create(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}
