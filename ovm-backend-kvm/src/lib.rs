//! ovm KVM backend: a VMM on /dev/kvm in the style of Firecracker and Cloud Hypervisor,
//! with its own test guest.
//!
//! - `vstate` (VM, memory, vCPUs), `devices` (serial, i8042, boot timer, exit port, guest
//!   channel, virtio-mmio block), `arch::x86_64` (layout, boot protocols, CPU set-up) and
//!   `vmm` (one VM) make the VMM library;
//! - the `ovm-vmm` binary runs one VM per process, controlled over a Unix socket
//!   (`control`: the typed, versioned protocol, its server and its one client);
//! - `KvmHypervisor` implements `ovm_core::Hypervisor` by supervising those processes.
#![warn(missing_docs)]

pub mod arch;
pub mod connector;
pub mod control;
pub mod devices;
pub mod error;
pub mod guest;
pub mod hypervisor;
pub mod pidfd;
pub mod procfs;
pub mod socket_path;
pub mod vmm;
pub mod vmm_process;
pub mod vstate;

pub use connector::{KvmConnector, VmmCommand};
/// The control protocol's types under their earlier module name.
pub use control::protocol as api;
pub use error::{Result, VmmError};
pub use guest::{BUILT_TEST_GUEST, test_guest_path};
pub use hypervisor::{KvmHypervisor, KvmOptions, RebootPolicy, kvm_usable};
pub use vmm::{BootConfig, ExitReason, Vmm, VmmConfig, VmmEvent};
