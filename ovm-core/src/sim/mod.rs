//! The simulator: in-memory `Hypervisor`, `StoragePlugin` and `NetworkBackend` with
//! capacity accounting and fault injection. The default backend where no /dev/kvm exists,
//! and the load for tests and scale benchmarks.

pub mod storage;
