//! The clone benchmarks: a 10 GiB volume holding 1 GiB of data, cloned by ovm and by `cp`
//! in alternating runs on one file system.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ovm_core::OpContext;
use ovm_core::id::PoolId;
use ovm_core::storage::{StoragePlugin, VolumeAccess, VolumeSpec};
use ovm_storage_connect::{CloneMethod, CloneMode, FsConfig, FsPlugin};
use serde_json::json;

use super::{emit, median, ms, settle, time_command};
use crate::common::{GIB, MIB, TestRoot, spread_data};

/// What to compare.
pub struct CloneBench {
    pub bench: &'static str,
    pub fs: &'static str,
    pub mode: CloneMode,
    pub expect: CloneMethod,
    /// `cp`'s option naming the kind of copy (`--reflink=always`, `--sparse=always`).
    pub cp_flag: &'static str,
    pub runs: usize,
}

pub async fn run(b: &CloneBench, root: &TestRoot) {
    let p = FsPlugin::new(FsConfig {
        roots: vec![root.path.clone()],
        clone_mode: b.mode,
        qemu_img: None,
    });
    let repo = p
        .create_repository("bench", &root.location(), Some(PoolId::new()))
        .await
        .expect("create repository");
    let src = p
        .create_volume(repo.id, &VolumeSpec::raw("golden", 10 * GIB))
        .await
        .expect("create volume");
    let VolumeAccess::Path { path: src_path, .. } =
        p.volume_access(repo.id, src.id).await.expect("access")
    else {
        panic!("fs volumes are files");
    };
    // 1 GiB of data: 1 MiB every 10 MiB across the 10 GiB.
    spread_data(&src_path, GIB, MIB, 10 * MIB);
    let peer_dir = root.path.join("peer");
    std::fs::create_dir(&peer_dir).expect("peer dir");
    let src_str = src_path.to_str().expect("utf-8");

    let (mut ovm, mut cp, mut cp_sync) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..b.runs {
        let dst: PathBuf = peer_dir.join(format!("clone-{i}.img"));
        let dst_str = dst.to_str().expect("utf-8");
        let ovm_first = i % 2 == 0;
        if ovm_first {
            ovm.push(ovm_clone(&p, repo.id, src.id, i, b.expect).await);
        }
        settle();
        cp.push(time_command("cp", &[b.cp_flag, src_str, dst_str]));
        remove(&dst);
        settle();
        cp_sync.push(
            time_command("cp", &[b.cp_flag, src_str, dst_str]) + time_command("sync", &[dst_str]),
        );
        remove(&dst);
        if !ovm_first {
            ovm.push(ovm_clone(&p, repo.id, src.id, i, b.expect).await);
        }
        settle();
    }
    let (ovm, cp, cp_sync) = (median(&mut ovm), median(&mut cp), median(&mut cp_sync));
    let commit = journal_commit(&peer_dir);
    let extra = json!({
        "fs": b.fs,
        "volume_gib": 10,
        "data_gib": 1,
        "runs": b.runs,
        "method": format!("{:?}", b.expect),
    });
    emit(
        b.bench,
        "median_ms",
        ms(ovm),
        "ms",
        &format!("cp {}", b.cp_flag),
        ms(cp),
        extra.clone(),
    );
    emit(
        b.bench,
        "median_ms_vs_durable_peer",
        ms(ovm),
        "ms",
        &format!("cp {} && sync FILE", b.cp_flag),
        ms(cp_sync),
        extra,
    );
    // What one durable step costs here: ovm's clone is the copy plus two of these.
    super::emit_alone(
        b.bench,
        "fsync_new_file_median_ms",
        ms(commit),
        "ms",
        json!({"fs": b.fs, "runs": FSYNC_RUNS}),
    );
}

const FSYNC_RUNS: usize = 21;

/// Median time to create, write and fsync a small file: one journal commit.
fn journal_commit(dir: &Path) -> Duration {
    use std::io::Write;
    let mut samples = Vec::with_capacity(FSYNC_RUNS);
    for i in 0..FSYNC_RUNS {
        let path = dir.join(format!("fsync-{i}"));
        let started = Instant::now();
        let mut f = std::fs::File::create(&path).expect("create");
        f.write_all(&[0u8; 512]).expect("write");
        f.sync_all().expect("fsync");
        samples.push(started.elapsed());
        remove(&path);
    }
    median(&mut samples)
}

async fn ovm_clone(
    p: &FsPlugin,
    repo: ovm_core::RepoId,
    src: ovm_core::VolumeId,
    i: usize,
    expect: CloneMethod,
) -> Duration {
    settle();
    let started = Instant::now();
    let (vol, method) = p
        .clone_volume_with_method(repo, src, &format!("clone-{i}"), &OpContext::none())
        .await
        .expect("clone");
    let took = started.elapsed();
    assert_eq!(method, expect, "clone method");
    p.delete_volume(repo, vol.id).await.expect("delete");
    took
}

fn remove(path: &Path) {
    std::fs::remove_file(path).expect("remove peer copy");
}
