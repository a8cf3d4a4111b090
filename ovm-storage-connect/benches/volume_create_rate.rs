//! `volume_create_rate`: create 1,000 thin (sparse raw) volumes in one repository on the
//! machine's own file system, one after another and 16 at a time; volumes per second.
//! Beside it, the same number of `qemu-img create -f raw` runs (what a script would do),
//! measured in the same run. Every ovm create is durable (fsynced) and atomic; the peer's
//! are neither.
//!
//! Run: `cargo bench -p ovm-storage-connect --bench volume_create_rate`

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::time::{Duration, Instant};

use futures::future::join_all;
use ovm_core::id::PoolId;
use ovm_core::storage::{StoragePlugin, VolumeSpec};
use ovm_storage_connect::{FsConfig, FsPlugin};
use serde_json::json;

const VOLUMES: usize = 1000;
const PARALLEL: usize = 16;
const PEER_VOLUMES: usize = 200;

fn main() {
    let root = common::TestRoot::local();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let p = FsPlugin::new(FsConfig::with_roots([root.path.clone()]));

    let sequential = rt.block_on(async {
        let repo = p
            .create_repository("seq", &root.location(), Some(PoolId::new()))
            .await
            .expect("repository");
        support::settle();
        let started = Instant::now();
        for i in 0..VOLUMES {
            p.create_volume(repo.id, &VolumeSpec::raw(format!("vol-{i:04}"), 10 << 30))
                .await
                .expect("create");
        }
        let took = started.elapsed();
        assert_eq!(p.list_volumes(repo.id).await.expect("list").len(), VOLUMES);
        took
    });

    let parallel = rt.block_on(async {
        let repo = p
            .create_repository("par", &root.location(), Some(PoolId::new()))
            .await
            .expect("repository");
        support::settle();
        let started = Instant::now();
        for batch in 0..VOLUMES / PARALLEL + 1 {
            let names: Vec<String> = (batch * PARALLEL..((batch + 1) * PARALLEL).min(VOLUMES))
                .map(|i| format!("vol-{i:04}"))
                .collect();
            let specs: Vec<VolumeSpec> =
                names.iter().map(|n| VolumeSpec::raw(n, 10 << 30)).collect();
            for r in join_all(specs.iter().map(|s| p.create_volume(repo.id, s))).await {
                r.expect("create");
            }
        }
        let took = started.elapsed();
        assert_eq!(p.list_volumes(repo.id).await.expect("list").len(), VOLUMES);
        took
    });

    let peer_dir = root.path.join("peer");
    std::fs::create_dir(&peer_dir).expect("peer dir");
    support::settle();
    let mut peer = Duration::ZERO;
    for i in 0..PEER_VOLUMES {
        let path = peer_dir.join(format!("vol-{i:04}.img"));
        peer += support::time_command(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "raw",
                path.to_str().expect("utf-8"),
                "10G",
            ],
        );
    }

    let rate = |n: usize, d: Duration| (n as f64 / d.as_secs_f64()).round();
    let peer_rate = rate(PEER_VOLUMES, peer);
    support::emit(
        "volume_create_rate",
        "volumes_per_s",
        rate(VOLUMES, sequential),
        "volumes/s",
        "qemu-img create -f raw",
        peer_rate,
        json!({"volumes": VOLUMES, "volume_gib": 10, "concurrency": 1, "peer_volumes": PEER_VOLUMES}),
    );
    support::emit(
        "volume_create_rate",
        "volumes_per_s_parallel",
        rate(VOLUMES, parallel),
        "volumes/s",
        "qemu-img create -f raw",
        peer_rate,
        json!({"volumes": VOLUMES, "volume_gib": 10, "concurrency": PARALLEL, "peer_volumes": PEER_VOLUMES}),
    );
}
