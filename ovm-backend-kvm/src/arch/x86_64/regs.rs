//! Boot register state of the first vCPU: 32-bit protected mode for PVH, 64-bit long mode
//! for the Linux boot protocol.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::gdt::{GDT_LONG_MODE, GDT_PROTECTED_MODE, segment_from_gdt};
use super::layout::{BOOT_STACK_POINTER, GDT_START, IDT_START, PVH_INFO_START, ZERO_PAGE_START};
use crate::error::{Result, VmmError};

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

/// How the boot vCPU enters the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryMode {
    /// PVH: 32-bit protected mode, paging off, EBX = start info.
    Pvh {
        /// Physical entry address from the ELF note.
        entry: u64,
    },
    /// ovm's 64-bit entry: long mode, RBX = PVH start info.
    Direct64 {
        /// Entry address (from the ovm ELF note).
        entry: u64,
        /// CR3 of the identity page tables (4 GiB).
        cr3: u64,
    },
    /// Linux 64-bit boot protocol: long mode, RSI = boot params.
    Linux64 {
        /// 64-bit entry (load address + 0x200 for a bzImage).
        entry: u64,
        /// CR3 of the identity page tables.
        cr3: u64,
    },
}

/// General-purpose registers at entry.
pub fn boot_regs(mode: EntryMode) -> kvm_regs {
    match mode {
        EntryMode::Pvh { entry } => kvm_regs {
            rflags: 0x2,
            rip: entry,
            rbx: PVH_INFO_START,
            ..Default::default()
        },
        EntryMode::Direct64 { entry, .. } => kvm_regs {
            rflags: 0x2,
            rip: entry,
            rbx: PVH_INFO_START,
            rsp: BOOT_STACK_POINTER,
            ..Default::default()
        },
        EntryMode::Linux64 { entry, .. } => kvm_regs {
            rflags: 0x2,
            rip: entry,
            rsp: BOOT_STACK_POINTER,
            rbp: BOOT_STACK_POINTER,
            rsi: ZERO_PAGE_START,
            ..Default::default()
        },
    }
}

/// Writes the boot GDT and an empty IDT, and fills the segment and control registers.
pub fn setup_sregs<M: GuestMemory>(mem: &M, mode: EntryMode, sregs: &mut kvm_sregs) -> Result<()> {
    let gdt = match mode {
        EntryMode::Pvh { .. } => &GDT_PROTECTED_MODE,
        EntryMode::Linux64 { .. } | EntryMode::Direct64 { .. } => &GDT_LONG_MODE,
    };
    for (i, entry) in gdt.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(GDT_START + i as u64 * 8))
            .map_err(|e| VmmError::Memory(format!("GDT: {e}")))?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_START))
        .map_err(|e| VmmError::Memory(format!("IDT: {e}")))?;
    sregs.gdt.base = GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(gdt) - 1) as u16;
    sregs.idt.base = IDT_START;
    sregs.idt.limit = 7;

    let code = segment_from_gdt(gdt[1], 1);
    let data = segment_from_gdt(gdt[2], 2);
    let tss = segment_from_gdt(gdt[3], 3);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;

    match mode {
        EntryMode::Pvh { .. } => {
            sregs.cr0 = X86_CR0_PE;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
        EntryMode::Linux64 { cr3, .. } | EntryMode::Direct64 { cr3, .. } => {
            sregs.cr0 |= X86_CR0_PE | X86_CR0_PG;
            sregs.cr3 = cr3;
            sregs.cr4 |= X86_CR4_PAE;
            sregs.efer |= EFER_LME | EFER_LMA;
        }
    }
    Ok(())
}

/// FPU state at entry (x87 control word and MXCSR as after FNINIT).
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn mem() -> GuestMemoryMmap<()> {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
    }

    #[test]
    fn pvh_entry_is_flat_32_bit_protected_mode() {
        let m = mem();
        let mode = EntryMode::Pvh { entry: 0x10_0000 };
        let mut s = kvm_sregs::default();
        setup_sregs(&m, mode, &mut s).unwrap();
        assert_eq!(s.cr0 & (X86_CR0_PE | X86_CR0_PG), X86_CR0_PE);
        assert_eq!((s.cs.db, s.cs.l, s.cs.selector), (1, 0, 0x08));
        assert_eq!(s.efer, 0);
        let r = boot_regs(mode);
        assert_eq!((r.rip, r.rbx), (0x10_0000, PVH_INFO_START));
        let gdt1: u64 = m.read_obj(GuestAddress(GDT_START + 8)).unwrap();
        assert_eq!(gdt1, GDT_PROTECTED_MODE[1]);
    }

    #[test]
    fn linux_entry_is_long_mode_with_boot_params_in_rsi() {
        let m = mem();
        let mode = EntryMode::Linux64 {
            entry: 0x10_0200,
            cr3: 0x9000,
        };
        let mut s = kvm_sregs::default();
        setup_sregs(&m, mode, &mut s).unwrap();
        assert_eq!(s.cr0 & X86_CR0_PG, X86_CR0_PG);
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!((s.cs.l, s.cr3), (1, 0x9000));
        let r = boot_regs(mode);
        assert_eq!((r.rip, r.rsi), (0x10_0200, ZERO_PAGE_START));
    }
}
