//! KVM state of a VM: the VM itself, its memory and its vCPUs.

pub mod memory;
pub mod vcpu;
pub mod vm;
