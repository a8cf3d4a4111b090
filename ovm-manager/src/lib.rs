//! ovm-manager: the manager of record — the SQLite store, the job engine (steps, undo
//! logs, ownership leases, recovery), and the manager itself: its index of pools,
//! servers and VMs, placement, the monitor, reconciliation, the change feed and the
//! leases that let several processes share one store (docs/concurrency.md).
//!
//! It builds on the contract in `ovm-core` (ids, model, traits, policies); backends do
//! not depend on this crate.
#![warn(missing_docs)]

pub mod job;
pub mod manager;
pub mod store;

// The contract, under the paths the manager's modules use.
use ovm_core::{
    Error, Hypervisor, OpContext, Result, hypervisor, id, model, network, op, policy, sim, storage,
};

pub use manager::{Manager, ManagerOptions, PoolSpec, ServerSpec};
