//! ovm: run virtual machines on pools of servers.
//!
//! This facade re-exports the workspace's crates; the `ovm` binary is the command line.

pub use ovm_core as core;
pub use ovm_core::*;
