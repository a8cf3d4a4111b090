//! `clone_copy`: clone a 10 GiB volume holding 1 GiB of data on the machine's own file
//! system (ext4 here: no reflink, so a sparse copy); ovm beside `cp --sparse=always` in the
//! same run.
//!
//! Run: `cargo bench -p ovm-storage-connect --bench clone_copy`

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use ovm_storage_connect::{CloneMethod, CloneMode};
use support::clone::{CloneBench, run};

fn main() {
    let root = common::TestRoot::local();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(run(
        &CloneBench {
            bench: "clone_copy",
            fs: "ext4 (local disk)",
            mode: CloneMode::Auto,
            expect: CloneMethod::SparseCopy,
            cp_flag: "--sparse=always",
            runs: 7,
        },
        &root,
    ));
}
