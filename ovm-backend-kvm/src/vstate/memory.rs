//! Guest memory: anonymous mmaps with a dirty bitmap for VMM writes (vm-memory), and their
//! registration as KVM memory slots.

use kvm_bindings::{KVM_MEM_LOG_DIRTY_PAGES, kvm_userspace_memory_region};
use kvm_ioctls::VmFd;
use vm_memory::bitmap::AtomicBitmap;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::error::{Result, VmmError};

/// Guest memory with a dirty bitmap of what the VMM wrote.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<AtomicBitmap>;

/// Maps `(start, size)` ranges of guest RAM.
pub fn create(ranges: &[(u64, u64)]) -> Result<GuestMemoryMmap> {
    let ranges: Vec<(GuestAddress, usize)> = ranges
        .iter()
        .map(|&(start, size)| {
            usize::try_from(size)
                .map(|s| (GuestAddress(start), s))
                .map_err(|_| VmmError::Memory(format!("{size} bytes do not fit this host")))
        })
        .collect::<Result<_>>()?;
    GuestMemoryMmap::from_ranges(&ranges).map_err(|e| VmmError::Memory(e.to_string()))
}

/// Registers every region as a KVM memory slot, with KVM dirty logging if asked.
pub fn register(vm: &VmFd, mem: &GuestMemoryMmap, log_dirty: bool) -> Result<()> {
    for (slot, region) in mem.iter().enumerate() {
        let host = mem
            .get_host_address(region.start_addr())
            .map_err(|e| VmmError::Memory(e.to_string()))?;
        let desc = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: if log_dirty {
                KVM_MEM_LOG_DIRTY_PAGES
            } else {
                0
            },
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the host range belongs to `mem`, which the VM keeps alive (it owns a
        // clone) for as long as the slot exists; it is not unmapped while the VM runs.
        unsafe { vm.set_user_memory_region(desc) }
            .map_err(VmmError::kvm("KVM_SET_USER_MEMORY_REGION"))?;
    }
    Ok(())
}

/// Total size of guest RAM, bytes.
pub fn size(mem: &GuestMemoryMmap) -> u64 {
    mem.iter().map(|r| r.len()).sum()
}
