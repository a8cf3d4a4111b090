//! The `StoragePlugin` conformance suite against the `fs` plugin, on the machine's own file
//! system (ext4 here: sparse copies) and on a loop-mounted XFS with reflink.

mod common;

use common::TestRoot;
use ovm_core::conformance::storage::run;
use ovm_storage_connect::{CloneMode, FsConfig, FsPlugin};

fn plugin(root: &TestRoot, clone_mode: CloneMode) -> FsPlugin {
    FsPlugin::new(FsConfig {
        roots: vec![root.path.clone()],
        clone_mode,
        qemu_img: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fs_plugin_passes_conformance_on_the_local_file_system() {
    let root = TestRoot::local();
    let report = run(&plugin(&root, CloneMode::Auto), &root).await;
    println!("{report}");
    assert!(report.skipped.is_empty(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fs_plugin_passes_conformance_on_reflink_xfs() {
    let Some(root) = TestRoot::xfs("fs_plugin_passes_conformance_on_reflink_xfs", 1 << 30) else {
        return;
    };
    let report = run(&plugin(&root, CloneMode::Auto), &root).await;
    println!("{report}");
    assert!(report.skipped.is_empty(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fs_plugin_passes_conformance_copying_only() {
    let root = TestRoot::local();
    let report = run(&plugin(&root, CloneMode::CopyOnly), &root).await;
    println!("{report}");
    assert!(report.skipped.is_empty(), "{report}");
}
