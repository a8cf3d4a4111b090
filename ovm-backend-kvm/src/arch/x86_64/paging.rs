//! Identity page tables for 64-bit entry: the first `gib` GiB mapped with 2 MiB pages.
//! Linux's early code expects the first GiB; ovm's 64-bit entry gets 4 GiB (RAM below the
//! hole, the hole, the APICs).

use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::layout::{PDE_START, PDPTE_START, PML4_START};
use crate::error::{Result, VmmError};

const PRESENT_WRITABLE: u64 = 0x3;
const PAGE_SIZE_2M: u64 = 0x80;

/// Most GiB the tables map (one page directory each, from `PDE_START`).
pub const MAX_IDENTITY_GIB: u64 = 4;

/// Writes PML4 → PDPT → `gib` PDs (512 × 2 MiB each) and returns the value for CR3.
pub fn write_identity_tables<M: GuestMemory>(mem: &M, gib: u64) -> Result<u64> {
    if gib == 0 || gib > MAX_IDENTITY_GIB {
        return Err(VmmError::invalid(
            "identity map",
            format!("{gib} GiB is outside 1..={MAX_IDENTITY_GIB}"),
        ));
    }
    let w = |addr: u64, value: u64| {
        mem.write_obj(value, GuestAddress(addr))
            .map_err(|e| VmmError::Memory(format!("page table at {addr:#x}: {e}")))
    };
    w(PML4_START, PDPTE_START | PRESENT_WRITABLE)?;
    for g in 0..gib {
        let pd = PDE_START + g * 0x1000;
        w(PDPTE_START + g * 8, pd | PRESENT_WRITABLE)?;
        for i in 0..512u64 {
            let page = (g << 30) | (i << 21);
            w(pd + i * 8, page | PAGE_SIZE_2M | PRESENT_WRITABLE)?;
        }
    }
    Ok(PML4_START)
}

/// Walks the identity tables the way the MMU would, for tests: virtual → physical.
pub fn translate<M: GuestMemory>(mem: &M, cr3: u64, va: u64) -> Option<u64> {
    let read = |a: u64| mem.read_obj::<u64>(GuestAddress(a)).ok();
    let pml4e = read((cr3 & !0xfff) + ((va >> 39) & 0x1ff) * 8)?;
    if pml4e & 1 == 0 {
        return None;
    }
    let pdpte = read((pml4e & !0xfff) + ((va >> 30) & 0x1ff) * 8)?;
    if pdpte & 1 == 0 {
        return None;
    }
    let pde = read((pdpte & !0xfff) + ((va >> 21) & 0x1ff) * 8)?;
    if pde & 1 == 0 || pde & PAGE_SIZE_2M == 0 {
        return None;
    }
    Some((pde & !0x1f_ffff & 0x000f_ffff_ffff_ffff) | (va & 0x1f_ffff))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    #[test]
    fn first_gib_is_identity_mapped_and_nothing_more() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        let cr3 = write_identity_tables(&mem, 1).unwrap();
        for va in [0u64, 0x1000, 0x20_0000 + 0x123, 0x3fff_ffff, 0x1234_5678] {
            assert_eq!(translate(&mem, cr3, va), Some(va), "va {va:#x}");
        }
        assert_eq!(
            translate(&mem, cr3, 1 << 30),
            None,
            "second GiB is unmapped"
        );
        assert!(write_identity_tables(&mem, 5).is_err());
    }

    #[test]
    fn four_gib_reach_the_apics() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        let cr3 = write_identity_tables(&mem, 4).unwrap();
        for va in [
            0u64,
            0x4000_0000,
            0xc000_0000,
            0xfec0_0000,
            0xfee0_0000 + 0x350,
        ] {
            assert_eq!(translate(&mem, cr3, va), Some(va), "va {va:#x}");
        }
        assert_eq!(translate(&mem, cr3, 4 << 30), None);
    }
}
