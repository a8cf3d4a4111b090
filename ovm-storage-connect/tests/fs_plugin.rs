//! The `fs` plugin beyond the common contract: Oracle VM layout and identity, pool
//! ownership, the repository lock, path checks, discovery, thin sizes, reflink versus
//! sparse copy, abort, and qcow2/VMDK import and export through qemu-img.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use common::{GIB, MIB, TestRoot, free_bytes, have_qemu_img, read_at, spread_data, write_pattern};
use ovm_core::id::PoolId;
use ovm_core::model::VolumeFormat;
use ovm_core::storage::{StoragePlugin, VolumeAccess, VolumeSpec};
use ovm_core::{OpContext, RepoId};
use ovm_storage_connect::{CloneMethod, FsConfig, FsPlugin};

fn plugin(root: &TestRoot) -> FsPlugin {
    FsPlugin::new(FsConfig::with_roots([root.path.clone()]))
}

async fn repo(p: &FsPlugin, root: &TestRoot) -> (RepoId, String, PoolId) {
    let pool = PoolId::new();
    let location = root.location();
    let r = p
        .create_repository("test", &location, Some(pool))
        .await
        .expect("create repository");
    (r.id, location, pool)
}

async fn raw_path(p: &FsPlugin, repo: RepoId, vol: ovm_core::VolumeId) -> PathBuf {
    match p.volume_access(repo, vol).await.expect("access") {
        VolumeAccess::Path {
            path,
            format: VolumeFormat::Raw,
        } => path,
        other => panic!("fs volumes are raw files, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repository_has_the_oracle_vm_layout_and_an_identity_file() {
    let root = TestRoot::local();
    let p = plugin(&root);
    let (id, location, pool) = repo(&p, &root).await;
    for dir in [
        "VirtualDisks",
        "VirtualMachines",
        "Templates",
        "Assemblies",
        "ISOs",
    ] {
        assert!(Path::new(&location).join(dir).is_dir(), "{dir} missing");
    }
    let identity: serde_json::Value = serde_json::from_slice(
        &std::fs::read(Path::new(&location).join(".ovsrepo")).expect("identity file"),
    )
    .expect("identity is JSON");
    assert_eq!(identity["uuid"], id.to_string());
    assert_eq!(identity["pool"], pool.to_string());
    assert_eq!(identity["format_version"], 1);
    assert_eq!(identity["name"], "test");

    let vol = p
        .create_volume(id, &VolumeSpec::raw("disk0", GIB))
        .await
        .expect("create");
    let data = Path::new(&location)
        .join("VirtualDisks")
        .join(format!("{}.img", vol.id));
    assert_eq!(vol.path.as_deref(), Some(data.as_path()));
    assert_eq!(std::fs::metadata(&data).expect("data file").len(), GIB);
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            Path::new(&location)
                .join(".ovm/volumes")
                .join(format!("{}.json", vol.id)),
        )
        .expect("metadata file"),
    )
    .expect("metadata is JSON");
    assert_eq!(meta["name"], "disk0");
    assert_eq!(meta["origin"]["kind"], "created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_owned_by_one_pool_is_refused_by_another() {
    let root = TestRoot::local();
    let p = plugin(&root);
    let (id, location, owner) = repo(&p, &root).await;
    p.close_repository(id).await.expect("close");

    let err = p
        .open_repository(&location, Some(PoolId::new()))
        .await
        .expect_err("another pool");
    assert_eq!(err.code(), "invalid_state");
    assert!(
        err.to_string().contains(&format!("owned by pool {owner}")),
        "{err}"
    );
    let err = p
        .open_repository(&location, None)
        .await
        .expect_err("no pool");
    assert_eq!(err.code(), "invalid_state");
    p.open_repository(&location, Some(owner))
        .await
        .expect("the owner opens it");

    // An unowned repository is taken by the first pool that opens it, for good.
    let free_loc = root.location();
    let free = p
        .create_repository("unowned", &free_loc, None)
        .await
        .expect("create unowned");
    p.close_repository(free.id).await.expect("close");
    let taker = PoolId::new();
    let taken = p
        .open_repository(&free_loc, Some(taker))
        .await
        .expect("take");
    assert_eq!(taken.pool, Some(taker));
    p.close_repository(taken.id).await.expect("close");
    let err = p
        .open_repository(&free_loc, Some(PoolId::new()))
        .await
        .expect_err("taken");
    assert!(err.to_string().contains("owned by pool"), "{err}");
    let seen = p.inspect(&free_loc).await.expect("inspect");
    assert_eq!(seen.pool, Some(taker), "ownership is on disk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_managers_in_one_process_cannot_take_the_same_repository() {
    let root = TestRoot::local();
    let first = plugin(&root);
    let second = plugin(&root);
    let (id, location, pool) = repo(&first, &root).await;
    let err = second
        .open_repository(&location, Some(pool))
        .await
        .expect_err("held by the first");
    assert_eq!(err.code(), "invalid_state");
    assert!(
        err.to_string().contains("in use by another manager"),
        "{err}"
    );
    // Inspecting needs no lock.
    assert_eq!(
        second.inspect(&location).await.expect("inspect").id,
        id,
        "inspect reads a held repository"
    );
    first.close_repository(id).await.expect("close");
    second
        .open_repository(&location, Some(pool))
        .await
        .expect("free once closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_repository_paths_are_refused() {
    let root = TestRoot::local();
    let outside = TestRoot::local();
    let p = plugin(&root);

    // A real repository outside the root, reached through a symlink inside it.
    let unrestricted = FsPlugin::new(FsConfig::default());
    let out_loc = outside.location();
    let r = unrestricted
        .create_repository("outside", &out_loc, Some(PoolId::new()))
        .await
        .expect("create outside");
    unrestricted.close_repository(r.id).await.expect("close");
    let link = root.path.join("escape");
    std::os::unix::fs::symlink(&out_loc, &link).expect("symlink");
    let link = link.to_str().expect("utf-8");
    let err = p
        .open_repository(link, r.pool)
        .await
        .expect_err("symlink out of the root");
    assert_eq!(err.code(), "invalid_spec");
    assert!(
        err.to_string().contains("outside the configured roots"),
        "{err}"
    );
    let err = p
        .create_repository("x", &format!("{link}/new"), None)
        .await
        .expect_err("create through the symlink");
    assert!(
        err.to_string().contains("outside the configured roots"),
        "{err}"
    );
    assert!(
        p.inspect(link).await.is_err(),
        "inspect through the symlink"
    );

    let rel = p.create_repository("x", "relative/repo", None).await;
    assert_eq!(rel.expect_err("relative").code(), "invalid_spec");
    let dotdot = format!("{}/a/../b", root.path.display());
    let err = p
        .create_repository("x", &dotdot, None)
        .await
        .expect_err("..");
    assert!(err.to_string().contains(".."), "{err}");
    let nul = format!("{}/a\0b", root.path.display());
    assert_eq!(
        p.create_repository("x", &nul, None)
            .await
            .expect_err("NUL")
            .code(),
        "invalid_spec"
    );
    let err = p
        .create_repository("bad/name", &root.location(), None)
        .await
        .expect_err("bad name");
    assert_eq!(err.code(), "invalid_spec");

    let busy = root.path.join("busy");
    std::fs::create_dir(&busy).expect("mkdir");
    std::fs::write(busy.join("someone-elses-file"), b"data").expect("write");
    let err = p
        .create_repository("x", busy.to_str().expect("utf-8"), None)
        .await
        .expect_err("non-empty directory");
    assert_eq!(err.code(), "invalid_state");
    assert!(
        busy.join("someone-elses-file").exists(),
        "nothing of theirs touched"
    );
    assert!(!busy.join(".ovsrepo").exists());
    let file = root.path.join("plain-file");
    std::fs::write(&file, b"x").expect("write");
    let err = p
        .create_repository("x", file.to_str().expect("utf-8"), None)
        .await
        .expect_err("a file");
    assert_eq!(err.code(), "invalid_spec");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlinked_virtual_disks_directory_is_refused() {
    let root = TestRoot::local();
    let elsewhere = TestRoot::local();
    let p = plugin(&root);
    let (id, location, pool) = repo(&p, &root).await;
    p.close_repository(id).await.expect("close");
    let disks = Path::new(&location).join("VirtualDisks");
    std::fs::remove_dir(&disks).expect("rmdir");
    std::os::unix::fs::symlink(&elsewhere.path, &disks).expect("symlink");
    let err = p
        .open_repository(&location, Some(pool))
        .await
        .expect_err("symlinked VirtualDisks");
    assert!(err.to_string().contains("VirtualDisks"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_lists_repositories_under_the_roots_with_space() {
    let root = TestRoot::local();
    let outside = TestRoot::local();
    let p = plugin(&root);
    let (a, _, _) = repo(&p, &root).await;
    let (b, _, _) = repo(&p, &root).await;
    let unrestricted = FsPlugin::new(FsConfig::default());
    let out_loc = outside.location();
    let hidden = unrestricted
        .create_repository("outside", &out_loc, None)
        .await
        .expect("outside");
    std::os::unix::fs::symlink(&out_loc, root.path.join("link-out")).expect("symlink");

    let found = p.discover().await.expect("discover");
    let ids: Vec<RepoId> = found.iter().map(|r| r.id).collect();
    assert!(ids.contains(&a) && ids.contains(&b), "{found:?}");
    assert!(
        !ids.contains(&hidden.id),
        "symlinks out of the root are not followed"
    );
    for r in &found {
        assert_eq!(r.plugin, "fs");
        assert!(r.capacity_bytes > 0, "{r:?}");
        assert!(r.free_bytes <= r.capacity_bytes, "{r:?}");
    }
    assert!(
        FsPlugin::new(FsConfig::default())
            .discover()
            .await
            .expect("no roots")
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_are_thin_and_report_virtual_and_allocated_sizes() {
    let root = TestRoot::local();
    let p = plugin(&root);
    let (id, _, _) = repo(&p, &root).await;
    let before = free_bytes(&root.path);
    let vol = p
        .create_volume(id, &VolumeSpec::raw("thin", 10 * GIB))
        .await
        .expect("create");
    assert_eq!(vol.size_bytes, 10 * GIB);
    assert!(vol.allocated_bytes < MIB, "{vol:?}");
    assert!(
        before.saturating_sub(free_bytes(&root.path)) < 64 * MIB,
        "a thin volume took space"
    );
    let path = raw_path(&p, id, vol.id).await;
    write_pattern(&path, 5 * GIB, 4 * MIB as usize, 9);
    let vol = p.volume(id, vol.id).await.expect("volume");
    assert!(
        (4 * MIB..=5 * MIB).contains(&vol.allocated_bytes),
        "allocated {} after writing 4 MiB",
        vol.allocated_bytes
    );
    let grown = p
        .resize_volume(id, vol.id, 20 * GIB, false)
        .await
        .expect("grow");
    assert_eq!(grown.size_bytes, 20 * GIB);
    assert_eq!(
        grown.allocated_bytes, vol.allocated_bytes,
        "growing allocates nothing"
    );
    let err = p
        .create_volume(
            id,
            &VolumeSpec {
                format: VolumeFormat::Qcow2,
                ..VolumeSpec::raw("q", GIB)
            },
        )
        .await
        .expect_err("qcow2 create");
    assert_eq!(err.code(), "invalid_spec");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_clone_reports_progress_and_an_abort_leaves_nothing() {
    let root = TestRoot::local();
    let p = plugin(&root);
    let (id, location, _) = repo(&p, &root).await;
    assert!(
        !p.supports_reflink(id).await.expect("probe"),
        "ext4 has no reflink"
    );
    let src = p
        .create_volume(id, &VolumeSpec::raw("golden", 4 * GIB))
        .await
        .expect("create");
    let src_path = raw_path(&p, id, src.id).await;
    spread_data(&src_path, 256 * MIB, MIB, 16 * MIB);

    let last = Arc::new(AtomicU64::new(0));
    let last2 = last.clone();
    let ctx = OpContext::with_progress(Arc::new(move |done, total| {
        assert_eq!(total, 4 * GIB);
        last2.fetch_max(done, Ordering::Relaxed);
    }));
    let (clone, method) = p
        .clone_volume_with_method(id, src.id, "copy", &ctx)
        .await
        .expect("clone");
    assert_eq!(method, CloneMethod::SparseCopy);
    assert_eq!(
        last.load(Ordering::Relaxed),
        4 * GIB,
        "progress reached the end"
    );
    assert!(
        clone.allocated_bytes <= src.allocated_bytes.max(256 * MIB) + 16 * MIB,
        "the copy is sparse: {} allocated",
        clone.allocated_bytes
    );
    let clone_path = raw_path(&p, id, clone.id).await;
    for off in [0, 16 * MIB, 160 * MIB, 255 * 16 * MIB] {
        assert_eq!(
            read_at(&clone_path, off, 4096),
            read_at(&src_path, off, 4096)
        );
    }

    // Abort half-way: progress past a quarter cancels the copy.
    let token = ovm_core::op::CancellationToken::new();
    let t2 = token.clone();
    let ctx = OpContext::with_progress(Arc::new(move |done, total| {
        if done > total / 4 {
            t2.cancel();
        }
    }))
    .with_cancel(token);
    let err = p
        .clone_volume(id, src.id, "aborted", &ctx)
        .await
        .expect_err("aborted");
    assert_eq!(err.code(), "aborted");
    let names: Vec<String> = p
        .list_volumes(id)
        .await
        .expect("list")
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(names, vec!["copy".to_string(), "golden".into()]);
    assert_eq!(
        std::fs::read_dir(Path::new(&location).join(".ovm/tmp"))
            .expect("tmp")
            .count(),
        0,
        "an aborted copy leaves no temporary file"
    );
    p.create_volume(id, &VolumeSpec::raw("aborted", MIB))
        .await
        .expect("the name is free again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_on_reflink_xfs_is_instant_and_shares_blocks() {
    let Some(root) = TestRoot::xfs(
        "a_clone_on_reflink_xfs_is_instant_and_shares_blocks",
        2 * GIB,
    ) else {
        return;
    };
    let p = plugin(&root);
    let (id, _, _) = repo(&p, &root).await;
    assert!(
        p.supports_reflink(id).await.expect("probe"),
        "XFS with reflink=1"
    );
    let src = p
        .create_volume(id, &VolumeSpec::raw("golden", 10 * GIB))
        .await
        .expect("create");
    let src_path = raw_path(&p, id, src.id).await;
    spread_data(&src_path, 256 * MIB, MIB, 32 * MIB);
    let free_before = free_bytes(&root.path);
    let started = Instant::now();
    let (clone, method) = p
        .clone_volume_with_method(id, src.id, "instant", &OpContext::none())
        .await
        .expect("clone");
    let took = started.elapsed();
    assert_eq!(method, CloneMethod::Reflink);
    assert!(took.as_millis() < 1000, "a reflink clone took {took:?}");
    let used = free_before.saturating_sub(free_bytes(&root.path));
    assert!(
        used < 32 * MIB,
        "a reflink clone used {used} bytes of space"
    );
    let clone_path = raw_path(&p, id, clone.id).await;
    for off in [0, 32 * MIB, 255 * 32 * MIB] {
        assert_eq!(
            read_at(&clone_path, off, 4096),
            read_at(&src_path, off, 4096)
        );
    }
    write_pattern(&clone_path, 0, 4096, 77);
    assert_ne!(read_at(&clone_path, 0, 4096), read_at(&src_path, 0, 4096));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qcow2_and_vmdk_images_import_and_export_with_the_format_named() {
    if !have_qemu_img("qcow2_and_vmdk_images_import_and_export_with_the_format_named") {
        return;
    }
    let root = TestRoot::local();
    let work = tempfile::tempdir().expect("work dir");
    let p = plugin(&root);
    let (id, _, _) = repo(&p, &root).await;

    let raw = work.path().join("source.raw");
    std::fs::File::create(&raw)
        .and_then(|f| f.set_len(64 * MIB))
        .expect("raw image");
    write_pattern(&raw, 0, 65536, 1);
    write_pattern(&raw, 40 * MIB, 65536, 2);
    for (format, ext) in [(VolumeFormat::Qcow2, "qcow2"), (VolumeFormat::Vmdk, "vmdk")] {
        let image = work.path().join(format!("source.{ext}"));
        common::run(
            "qemu-img",
            &[
                "convert",
                "-f",
                "raw",
                "-O",
                ext,
                raw.to_str().expect("utf-8"),
                image.to_str().expect("utf-8"),
            ],
        )
        .expect("make image");
        let seen = Arc::new(AtomicU64::new(0));
        let seen2 = seen.clone();
        let ctx = OpContext::with_progress(Arc::new(move |done, _| {
            seen2.fetch_max(done, Ordering::Relaxed);
        }));
        let vol = p
            .import_volume(id, &format!("from-{ext}"), &image, format, &ctx)
            .await
            .expect("import");
        assert_eq!(vol.size_bytes, 64 * MIB);
        assert_eq!(vol.format, VolumeFormat::Raw, "imports become raw volumes");
        assert_eq!(
            seen.load(Ordering::Relaxed),
            64 * MIB,
            "import progress reached the end"
        );
        let path = raw_path(&p, id, vol.id).await;
        assert_eq!(read_at(&path, 0, 65536), read_at(&raw, 0, 65536));
        assert_eq!(
            read_at(&path, 40 * MIB, 65536),
            read_at(&raw, 40 * MIB, 65536)
        );
        assert!(vol.allocated_bytes < 8 * MIB, "import kept holes: {vol:?}");

        let out = work.path().join(format!("export.{ext}"));
        p.export_volume(id, vol.id, &out, format, &OpContext::none())
            .await
            .expect("export");
        let info = Command::new("qemu-img")
            .args(["info", "--output=json", "-f", ext])
            .arg(&out)
            .output()
            .expect("qemu-img info");
        let info: serde_json::Value = serde_json::from_slice(&info.stdout).expect("json");
        assert_eq!(info["virtual-size"], 64 * MIB);
        let err = p
            .export_volume(id, vol.id, &out, format, &OpContext::none())
            .await
            .expect_err("never replaces a file");
        assert_eq!(err.code(), "already_exists");
    }

    // Raw import and export: sparse copies.
    let vol = p
        .import_volume(id, "from-raw", &raw, VolumeFormat::Raw, &OpContext::none())
        .await
        .expect("raw import");
    let out = work.path().join("export.raw");
    p.export_volume(id, vol.id, &out, VolumeFormat::Raw, &OpContext::none())
        .await
        .expect("raw export");
    assert_eq!(
        read_at(&out, 40 * MIB, 65536),
        read_at(&raw, 40 * MIB, 65536)
    );
    let nowhere = work.path().join("no-such-dir").join("x.qcow2");
    let err = p
        .export_volume(
            id,
            vol.id,
            &nowhere,
            VolumeFormat::Qcow2,
            &OpContext::none(),
        )
        .await
        .expect_err("no directory to export into");
    assert_eq!(err.code(), "invalid_spec");

    // The format is named, never probed: a qcow2 file named as VMDK is refused.
    let qcow2 = work.path().join("source.qcow2");
    let err = p
        .import_volume(id, "wrong", &qcow2, VolumeFormat::Vmdk, &OpContext::none())
        .await
        .expect_err("wrong format");
    assert_eq!(err.code(), "invalid_spec");
    let err = p
        .import_volume(id, "iso", &qcow2, VolumeFormat::Iso, &OpContext::none())
        .await
        .expect_err("ISO is no volume");
    assert_eq!(err.code(), "invalid_spec");

    // Backing files are refused before anything is read through them.
    let overlay = work.path().join("overlay.qcow2");
    common::run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            qcow2.to_str().expect("utf-8"),
            "-F",
            "qcow2",
            overlay.to_str().expect("utf-8"),
        ],
    )
    .expect("overlay");
    let err = p
        .import_volume(
            id,
            "overlay",
            &overlay,
            VolumeFormat::Qcow2,
            &OpContext::none(),
        )
        .await
        .expect_err("backing file");
    assert_eq!(err.code(), "invalid_spec");
    assert!(err.to_string().contains("backing file"), "{err}");

    let err = p
        .import_volume(
            id,
            "dir",
            work.path(),
            VolumeFormat::Qcow2,
            &OpContext::none(),
        )
        .await
        .expect_err("a directory");
    assert_eq!(err.code(), "invalid_spec");
    let names: Vec<String> = p
        .list_volumes(id)
        .await
        .expect("list")
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(names, vec!["from-qcow2", "from-raw", "from-vmdk"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_import_or_export_leaves_nothing() {
    if !have_qemu_img("an_aborted_import_or_export_leaves_nothing") {
        return;
    }
    let root = TestRoot::local();
    let work = tempfile::tempdir().expect("work dir");
    let p = plugin(&root);
    let (id, location, _) = repo(&p, &root).await;
    let vol = p
        .create_volume(id, &VolumeSpec::raw("big", 2 * GIB))
        .await
        .expect("create");
    let path = raw_path(&p, id, vol.id).await;
    spread_data(&path, 512 * MIB, 4 * MIB, 4 * MIB);

    let aborting = || {
        let token = ovm_core::op::CancellationToken::new();
        let t2 = token.clone();
        OpContext::with_progress(Arc::new(move |done, _| {
            if done > 0 {
                t2.cancel();
            }
        }))
        .with_cancel(token)
    };
    let out = work.path().join("big.qcow2");
    let err = p
        .export_volume(id, vol.id, &out, VolumeFormat::Qcow2, &aborting())
        .await
        .expect_err("aborted export");
    assert_eq!(err.code(), "aborted");
    assert!(!out.exists(), "an aborted export leaves no file");
    assert_eq!(
        std::fs::read_dir(work.path()).expect("ls").count(),
        0,
        "nor a temporary one"
    );

    common::run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            path.to_str().expect("utf-8"),
            out.to_str().expect("utf-8"),
        ],
    )
    .expect("make a big qcow2");
    let err = p
        .import_volume(id, "half", &out, VolumeFormat::Qcow2, &aborting())
        .await
        .expect_err("aborted import");
    assert_eq!(err.code(), "aborted");
    assert_eq!(p.list_volumes(id).await.expect("list").len(), 1);
    assert_eq!(
        std::fs::read_dir(Path::new(&location).join(".ovm/tmp"))
            .expect("tmp")
            .count(),
        0
    );
}
