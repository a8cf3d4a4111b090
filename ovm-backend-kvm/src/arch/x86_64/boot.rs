//! What the VMM writes for the guest before it runs: the e820 memory map, the command
//! line, the PVH start info and the Linux boot parameters (the "zero page").

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use serde::{Deserialize, Serialize};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::layout::{
    CMDLINE_MAX_SIZE, CMDLINE_START, EBDA_START, HIMEM_START, MMIO_GAP_END, MMIO_GAP_START,
    PVH_INFO_START, PVH_MEMMAP_MAX, PVH_MEMMAP_START, ZERO_PAGE_START,
};
use crate::error::{Result, VmmError};

/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type of reserved memory.
pub const E820_RESERVED: u32 = 2;
/// `hvm_start_info.magic`.
pub const PVH_MAGIC: u32 = 0x336e_c578;
/// Where the PVH module list (the initrd) goes.
pub const PVH_MODLIST_START: u64 = 0x6800;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x0100_0000;

/// One e820 memory map entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct E820Entry {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// `E820_RAM` or `E820_RESERVED`.
    pub kind: u32,
}

/// The memory map for `mem_size` bytes of guest RAM: low RAM below the EBDA, RAM from
/// 1 MiB up to the MMIO hole, the hole itself reserved, and the rest above 4 GiB.
pub fn e820_map(mem_size: u64) -> Vec<E820Entry> {
    let mut map = vec![E820Entry {
        addr: 0,
        size: EBDA_START,
        kind: E820_RAM,
    }];
    let low_end = mem_size.min(MMIO_GAP_START);
    if low_end > HIMEM_START {
        map.push(E820Entry {
            addr: HIMEM_START,
            size: low_end - HIMEM_START,
            kind: E820_RAM,
        });
    }
    map.push(E820Entry {
        addr: MMIO_GAP_START,
        size: MMIO_GAP_END - MMIO_GAP_START,
        kind: E820_RESERVED,
    });
    if mem_size > MMIO_GAP_START {
        map.push(E820Entry {
            addr: MMIO_GAP_END,
            size: mem_size - MMIO_GAP_START,
            kind: E820_RAM,
        });
    }
    map
}

fn mem_err(what: &str) -> impl FnOnce(vm_memory::GuestMemoryError) -> VmmError + '_ {
    move |e| VmmError::Memory(format!("{what}: {e}"))
}

/// Writes the command line, NUL-terminated, at `CMDLINE_START`; returns its length
/// without the NUL.
pub fn write_cmdline<M: GuestMemory>(mem: &M, cmdline: &str) -> Result<usize> {
    if cmdline.len() >= CMDLINE_MAX_SIZE {
        return Err(VmmError::invalid(
            "cmdline",
            format!(
                "{} bytes is longer than {} (with the NUL)",
                cmdline.len(),
                CMDLINE_MAX_SIZE
            ),
        ));
    }
    if cmdline.bytes().any(|b| b == 0) {
        return Err(VmmError::invalid("cmdline", "contains a NUL byte"));
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(CMDLINE_START))
        .map_err(mem_err("command line"))?;
    Ok(cmdline.len())
}

/// Writes the PVH `hvm_start_info` (version 1, with memory map) and, for an initrd, a
/// one-entry module list.
pub fn write_pvh_start_info<M: GuestMemory>(
    mem: &M,
    mem_size: u64,
    initrd: Option<(u64, u64)>,
) -> Result<()> {
    let map = e820_map(mem_size);
    if map.len() > PVH_MEMMAP_MAX {
        return Err(VmmError::Memory("PVH memory map too long".into()));
    }
    for (i, e) in map.iter().enumerate() {
        let at = PVH_MEMMAP_START + i as u64 * 24;
        mem.write_obj(e.addr, GuestAddress(at))
            .and_then(|_| mem.write_obj(e.size, GuestAddress(at + 8)))
            .and_then(|_| mem.write_obj(e.kind, GuestAddress(at + 16)))
            .and_then(|_| mem.write_obj(0u32, GuestAddress(at + 20)))
            .map_err(mem_err("PVH memory map"))?;
    }
    let (nr_modules, modlist) = match initrd {
        Some((addr, size)) => {
            mem.write_obj(addr, GuestAddress(PVH_MODLIST_START))
                .and_then(|_| mem.write_obj(size, GuestAddress(PVH_MODLIST_START + 8)))
                .and_then(|_| mem.write_obj(0u64, GuestAddress(PVH_MODLIST_START + 16)))
                .and_then(|_| mem.write_obj(0u64, GuestAddress(PVH_MODLIST_START + 24)))
                .map_err(mem_err("PVH module list"))?;
            (1u32, PVH_MODLIST_START)
        }
        None => (0, 0),
    };
    let at = |off: u64| GuestAddress(PVH_INFO_START + off);
    mem.write_obj(PVH_MAGIC, at(0))
        .and_then(|_| mem.write_obj(1u32, at(4))) // version
        .and_then(|_| mem.write_obj(0u32, at(8))) // flags
        .and_then(|_| mem.write_obj(nr_modules, at(12)))
        .and_then(|_| mem.write_obj(modlist, at(16)))
        .and_then(|_| mem.write_obj(CMDLINE_START, at(24)))
        .and_then(|_| mem.write_obj(0u64, at(32))) // rsdp
        .and_then(|_| mem.write_obj(PVH_MEMMAP_START, at(40)))
        .and_then(|_| mem.write_obj(map.len() as u32, at(48)))
        .and_then(|_| mem.write_obj(0u32, at(52)))
        .map_err(mem_err("PVH start info"))
}

/// The Linux boot parameters for a kernel with `header` (from its bzImage; default for a
/// vmlinux), `mem_size` bytes of RAM, a command line of `cmdline_len` bytes and an
/// optional initrd `(address, size)`.
pub fn linux_boot_params(
    header: Option<setup_header>,
    mem_size: u64,
    cmdline_len: usize,
    initrd: Option<(u64, u64)>,
) -> Result<boot_params> {
    let mut params = boot_params::default();
    if let Some(h) = header {
        params.hdr = h;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = (cmdline_len + 1) as u32;
    params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    if let Some((addr, size)) = initrd {
        params.hdr.ramdisk_image = u32::try_from(addr)
            .map_err(|_| VmmError::invalid("initrd", "must be loaded below 4 GiB"))?;
        params.hdr.ramdisk_size =
            u32::try_from(size).map_err(|_| VmmError::invalid("initrd", "larger than 4 GiB"))?;
    }
    let map = e820_map(mem_size);
    if map.len() > params.e820_table.len() {
        return Err(VmmError::Memory("e820 map too long".into()));
    }
    for (slot, e) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind,
        };
    }
    params.e820_entries = map.len() as u8;
    Ok(params)
}

/// Writes the boot parameters at `ZERO_PAGE_START`.
pub fn write_boot_params<M: GuestMemory>(mem: &M, params: &boot_params) -> Result<()> {
    mem.write_obj(*params, GuestAddress(ZERO_PAGE_START))
        .map_err(mem_err("boot params"))
}

/// Where an initrd of `size` bytes goes: the highest page-aligned spot that ends below
/// both the low RAM end and `addr_max` (the kernel's `initrd_addr_max`), above `kernel_end`.
pub fn initrd_address(mem_size: u64, addr_max: u64, kernel_end: u64, size: u64) -> Result<u64> {
    let top = mem_size.min(MMIO_GAP_START).min(addr_max.saturating_add(1));
    let start = top
        .checked_sub(size)
        .map(|a| a & !0xfff)
        .filter(|&a| a >= kernel_end)
        .ok_or_else(|| {
            VmmError::invalid(
                "initrd",
                format!("{size} bytes do not fit in guest memory after the kernel"),
            )
        })?;
    Ok(start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn mem(size: usize) -> GuestMemoryMmap<()> {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).unwrap()
    }

    #[test]
    fn e820_covers_ram_and_reserves_the_hole() {
        let map = e820_map(256 << 20);
        assert_eq!(
            map[0],
            E820Entry {
                addr: 0,
                size: EBDA_START,
                kind: E820_RAM
            }
        );
        assert_eq!(map[1].addr, HIMEM_START);
        assert_eq!(map[1].addr + map[1].size, 256 << 20);
        assert_eq!(map[2].kind, E820_RESERVED);
        assert_eq!(map.len(), 3);
        let big = e820_map(6 << 30);
        let high = big.last().unwrap();
        assert_eq!(
            (high.addr, high.size),
            (MMIO_GAP_END, (6 << 30) - MMIO_GAP_START)
        );
        let ram: u64 = big
            .iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum();
        assert_eq!(ram, (6 << 30) - (HIMEM_START - EBDA_START));
    }

    #[test]
    fn cmdline_is_nul_terminated_and_bounded() {
        let m = mem(1 << 20);
        assert_eq!(write_cmdline(&m, "console=ttyS0 idle").unwrap(), 18);
        let mut buf = [0u8; 19];
        m.read_slice(&mut buf, GuestAddress(CMDLINE_START)).unwrap();
        assert_eq!(&buf, b"console=ttyS0 idle\0");
        assert!(write_cmdline(&m, &"x".repeat(CMDLINE_MAX_SIZE)).is_err());
        assert!(write_cmdline(&m, "a\0b").is_err());
    }

    #[test]
    fn pvh_start_info_points_at_cmdline_and_memory_map() {
        let m = mem(2 << 20);
        write_pvh_start_info(&m, 2 << 20, Some((0x10_0000, 0x1000))).unwrap();
        let r32 = |o: u64| m.read_obj::<u32>(GuestAddress(PVH_INFO_START + o)).unwrap();
        let r64 = |o: u64| m.read_obj::<u64>(GuestAddress(PVH_INFO_START + o)).unwrap();
        assert_eq!(r32(0), PVH_MAGIC);
        assert_eq!(r32(4), 1);
        assert_eq!((r32(12), r64(16)), (1, PVH_MODLIST_START));
        assert_eq!(r64(24), CMDLINE_START);
        assert_eq!((r64(40), r32(48)), (PVH_MEMMAP_START, 3));
        let second_addr: u64 = m.read_obj(GuestAddress(PVH_MEMMAP_START + 24)).unwrap();
        let second_type: u32 = m
            .read_obj(GuestAddress(PVH_MEMMAP_START + 24 + 16))
            .unwrap();
        assert_eq!((second_addr, second_type), (HIMEM_START, E820_RAM));
    }

    #[test]
    fn boot_params_carry_cmdline_initrd_and_e820() {
        let p = linux_boot_params(None, 512 << 20, 11, Some((0x1000_0000, 0x2000))).unwrap();
        let hdr = p.hdr;
        assert_eq!({ hdr.boot_flag }, KERNEL_BOOT_FLAG_MAGIC);
        assert_eq!({ hdr.header }, KERNEL_HDR_MAGIC);
        assert_eq!({ hdr.cmd_line_ptr }, CMDLINE_START as u32);
        assert_eq!({ hdr.cmdline_size }, 12);
        assert_eq!(
            ({ hdr.ramdisk_image }, { hdr.ramdisk_size }),
            (0x1000_0000, 0x2000)
        );
        assert_eq!(p.e820_entries, 3);
        let e1 = p.e820_table[1];
        assert_eq!(
            ({ e1.addr }, { e1.size }),
            (HIMEM_START, (512 << 20) - HIMEM_START)
        );
        let m = mem(1 << 20);
        write_boot_params(&m, &p).unwrap();
        let flag: u16 = m.read_obj(GuestAddress(ZERO_PAGE_START + 0x1fe)).unwrap();
        assert_eq!(flag, KERNEL_BOOT_FLAG_MAGIC);
        let entries: u8 = m.read_obj(GuestAddress(ZERO_PAGE_START + 0x1e8)).unwrap();
        assert_eq!(entries, 3);
    }

    #[test]
    fn initrd_goes_high_and_refuses_what_does_not_fit() {
        let a = initrd_address(256 << 20, 0x37ff_ffff, 16 << 20, 0x1800).unwrap();
        assert_eq!(a, (256 << 20) - 0x2000);
        assert!(initrd_address(32 << 20, u64::MAX, 30 << 20, 4 << 20).is_err());
    }
}
