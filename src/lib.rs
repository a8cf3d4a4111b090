//! ovm: run virtual machines on pools of servers.
//!
//! This facade re-exports the workspace's crates and wires the backends this build has:
//! [`backends::local_options`] is what the `ovm` program and the demo use.

pub mod backends;

pub use ovm_backend_kvm as kvm;
pub use ovm_backend_xen as xen;
pub use ovm_core as core;
pub use ovm_core::*;
pub use ovm_ovf as ovf;
pub use ovm_storage_connect as storage_connect;
