//! ovm-core: the model, the traits every backend implements, the job engine, the store,
//! the manager, the policies, the simulator and the conformance suites.
//!
//! Backends (`ovm-backend-kvm`, `ovm-backend-xen`), storage plugins
//! (`ovm-storage-connect`), `ovm-ovf` and the bindings depend on this crate; it depends on
//! none of them.
#![warn(missing_docs)]

pub mod conformance;
pub mod error;
pub mod hypervisor;
pub mod id;
pub mod job;
pub mod manager;
pub mod model;
pub mod network;
pub mod op;
pub mod policy;
pub mod sim;
pub mod storage;
pub mod store;

pub use error::{Error, Result};
pub use hypervisor::{Capabilities, HostInfo, Hypervisor, VmConfig, VmEvent, VmEventKind};
pub use id::{
    AssemblyId, InstanceId, JobId, NetworkId, PoolId, RepoId, ServerId, TemplateId, Timestamp,
    VmId, VolumeId,
};
pub use manager::{Manager, ManagerOptions, PoolSpec, ServerSpec};
pub use network::NetworkBackend;
pub use op::OpContext;
pub use storage::{StoragePlugin, VolumeAccess, VolumeSpec};
