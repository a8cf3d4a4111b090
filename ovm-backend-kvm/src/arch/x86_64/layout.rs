//! Where things live in guest physical memory (the x86 boot protocol's conventional spots,
//! as Firecracker and Cloud Hypervisor use them).

/// The GDT the VMM writes for the boot vCPU.
pub const GDT_START: u64 = 0x500;
/// An empty IDT (the guest installs its own).
pub const IDT_START: u64 = 0x520;
/// PVH `hvm_start_info`.
pub const PVH_INFO_START: u64 = 0x6000;
/// PVH memory map (`hvm_memmap_table_entry` array), right after the start info.
pub const PVH_MEMMAP_START: u64 = 0x6040;
/// Most PVH memory map entries the VMM writes.
pub const PVH_MEMMAP_MAX: usize = 64;
/// Linux `boot_params` (the "zero page").
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack of the boot vCPU in 64-bit Linux boot.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity page tables for 64-bit Linux boot: PML4, PDPT, PD.
pub const PML4_START: u64 = 0x9000;
/// Page directory pointer table.
pub const PDPTE_START: u64 = 0xa000;
/// Page directories (512 × 2 MiB each), one page per GiB mapped, up to 4 (to 0xf000).
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Longest kernel command line, including the NUL.
pub const CMDLINE_MAX_SIZE: usize = 4096;
/// Start of the extended BIOS data area: RAM below it is usable.
pub const EBDA_START: u64 = 0x9fc00;
/// Kernels are loaded here (1 MiB).
pub const HIMEM_START: u64 = 0x10_0000;
/// The hole below 4 GiB for MMIO devices and the APICs.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End of the MMIO hole.
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// First virtio-mmio device; each takes `VIRTIO_MMIO_SIZE`.
pub const VIRTIO_MMIO_START: u64 = 0xd000_0000;
/// Size of one virtio-mmio device window.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// Local APIC MMIO page.
pub const APIC_START: u64 = 0xfee0_0000;
/// I/O APIC MMIO page.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// KVM's TSS (3 pages) just below the I/O APIC.
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;

/// The guest RAM ranges for `size` bytes of memory: below the MMIO hole, and the rest
/// above 4 GiB.
pub fn ram_ranges(size: u64) -> Vec<(u64, u64)> {
    if size <= MMIO_GAP_START {
        vec![(0, size)]
    } else {
        vec![(0, MMIO_GAP_START), (MMIO_GAP_END, size - MMIO_GAP_START)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_is_split_around_the_mmio_hole() {
        assert_eq!(ram_ranges(256 << 20), vec![(0, 256 << 20)]);
        assert_eq!(ram_ranges(MMIO_GAP_START), vec![(0, MMIO_GAP_START)]);
        assert_eq!(
            ram_ranges(4 << 30),
            vec![
                (0, MMIO_GAP_START),
                (MMIO_GAP_END, (4 << 30) - MMIO_GAP_START)
            ]
        );
    }
}
