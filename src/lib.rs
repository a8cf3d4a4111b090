//! ovm: run virtual machines on pools of servers.
//!
//! This facade re-exports the workspace's crates and wires the backends this build has:
//! [`backends::local_options`] is what the `ovm` program and the demo use.

pub mod backends;

pub use ovm_backend_kvm as kvm;
pub use ovm_backend_xen as xen;
pub use ovm_core as core;
pub use ovm_core::*;
pub use ovm_manager::{Manager, ManagerOptions, PoolSpec, ServerSpec, job, manager, store};
pub use ovm_ovf as ovf;
pub use ovm_storage_connect as storage_connect;

/// The README's examples, compiled and run as doc tests so they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
