//! The model-specific registers set at boot (as Firecracker does).

use kvm_bindings::{Msrs, kvm_msr_entry};

use crate::error::{Result, VmmError};

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MISC_ENABLE_FAST_STRING: u64 = 1;
/// MTRR default type register: enabled, write-back. Without it all memory is uncached.
pub const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MTRR_ENABLE_WB: u64 = (1 << 11) | 6;

/// The boot MSR values.
pub fn boot_msr_entries() -> Vec<(u32, u64)> {
    vec![
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WB),
    ]
}

/// Packs `(index, value)` pairs for `KVM_SET_MSRS` / `KVM_GET_MSRS`.
pub fn to_kvm_msrs(entries: &[(u32, u64)]) -> Result<Msrs> {
    let raw: Vec<kvm_msr_entry> = entries
        .iter()
        .map(|&(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    Msrs::from_entries(&raw).map_err(|e| VmmError::invalid("msrs", format!("{e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_msrs_enable_write_back_mtrrs() {
        let entries = boot_msr_entries();
        assert!(entries.contains(&(MSR_MTRR_DEF_TYPE, (1 << 11) | 6)));
        let msrs = to_kvm_msrs(&entries).unwrap();
        assert_eq!(msrs.as_slice().len(), entries.len());
    }
}
