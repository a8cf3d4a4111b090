//! The simulator: in-memory `Hypervisor`, `StoragePlugin` and `NetworkBackend` with
//! capacity accounting and fault injection. The default backend where no /dev/kvm exists,
//! and the load for tests and scale benchmarks.

mod connector;
mod faults;
mod hypervisor;
mod network;
pub mod storage;

pub use connector::{SimAddress, SimConnector};
pub use faults::Faults;
pub use hypervisor::{SimHostConfig, SimHypervisor};
pub use network::{SimNetwork, bridge_name};
