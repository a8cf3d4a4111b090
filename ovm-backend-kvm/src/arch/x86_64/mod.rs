//! x86-64: memory layout, boot protocols (Linux 64-bit, PVH), CPU set-up.

pub mod boot;
pub mod cpuid;
pub mod gdt;
pub mod layout;
pub mod loader;
pub mod mptable;
pub mod msr;
pub mod paging;
pub mod regs;
