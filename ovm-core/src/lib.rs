//! ovm-core: the contract — typed ids, errors, the model, the traits every backend
//! implements (`Hypervisor`, `StoragePlugin`, `NetworkBackend`, `Store`, `Connector`) and
//! the pure placement, balance, power and HA policies. No SQLite, no job engine, no
//! manager: those live in `ovm-manager`, so a backend or the per-server agent links the
//! contract alone.
//!
//! With the `testing` feature: the simulator (`sim`: hypervisor, storage and network in
//! memory, with fault injection; also the manager's default backend) and the conformance
//! suites every backend runs against itself.
#![warn(missing_docs)]

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod connector;
pub mod error;
pub mod files;
pub mod hypervisor;
pub mod id;
pub mod model;
pub mod network;
pub mod op;
pub mod policy;
#[cfg(any(test, feature = "testing"))]
pub mod sim;
pub mod storage;
pub mod store;
pub mod sync;

pub use connector::Connector;
pub use error::{Error, Result};
pub use hypervisor::{Capabilities, HostInfo, Hypervisor, VmConfig, VmEvent, VmEventKind};
pub use id::{
    AssemblyId, InstanceId, JobId, NetworkId, PoolId, RepoId, ServerId, TemplateId, Timestamp,
    VmId, VolumeId,
};
pub use network::NetworkBackend;
pub use op::OpContext;
pub use storage::{StoragePlugin, VolumeAccess, VolumeSpec};
