//! `clone_reflink`: clone a 10 GiB volume holding 1 GiB of data on a loop-mounted XFS with
//! reflink; ovm beside `cp --reflink=always` in the same run. Needs root and mkfs.xfs.
//!
//! Run: `cargo bench -p ovm-storage-connect --bench clone_reflink`

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use ovm_storage_connect::{CloneMethod, CloneMode};
use support::clone::{CloneBench, run};

fn main() {
    let Some(root) = common::TestRoot::xfs("clone_reflink", 4 << 30) else {
        support::skip(
            "clone_reflink",
            "no loop-mounted XFS (needs root and xfsprogs)",
        );
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(run(
        &CloneBench {
            bench: "clone_reflink",
            fs: "xfs (loop, reflink=1)",
            mode: CloneMode::Auto,
            expect: CloneMethod::Reflink,
            cp_flag: "--reflink=always",
            runs: 31,
        },
        &root,
    ));
}
