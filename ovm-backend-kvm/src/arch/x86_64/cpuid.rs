//! CPUID for each vCPU: what KVM supports, with the topology filled in per vCPU.

use kvm_bindings::CpuId;

const LEAF_FEATURES: u32 = 0x1;
const LEAF_EXTENDED_TOPOLOGY: u32 = 0xb;
const LEAF_V2_EXTENDED_TOPOLOGY: u32 = 0x1f;
const ECX_HYPERVISOR_BIT: u32 = 1 << 31;

/// Adjusts KVM's supported CPUID for vCPU `index` of `count`: APIC ids, logical CPU
/// count and the hypervisor bit.
pub fn filter_for_vcpu(cpuid: &mut CpuId, index: u8, count: u8) {
    for entry in cpuid.as_mut_slice().iter_mut() {
        match entry.function {
            LEAF_FEATURES => {
                entry.ebx =
                    (entry.ebx & 0x0000_ffff) | (u32::from(count) << 16) | (u32::from(index) << 24);
                entry.ecx |= ECX_HYPERVISOR_BIT;
                // HTT: more than one logical processor.
                if count > 1 {
                    entry.edx |= 1 << 28;
                }
            }
            LEAF_EXTENDED_TOPOLOGY | LEAF_V2_EXTENDED_TOPOLOGY => {
                entry.edx = u32::from(index);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    #[test]
    fn apic_id_and_count_are_per_vcpu() {
        let mut cpuid = CpuId::from_entries(&[
            kvm_cpuid_entry2 {
                function: 1,
                ebx: 0xff00_1234,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                ..Default::default()
            },
        ])
        .unwrap();
        filter_for_vcpu(&mut cpuid, 3, 4);
        let e = cpuid.as_slice();
        assert_eq!(e[0].ebx, 0x0304_1234);
        assert_ne!(e[0].ecx & ECX_HYPERVISOR_BIT, 0);
        assert_eq!(e[1].edx, 3);
    }
}
