//! GDT entries and the KVM segment registers they describe.

use kvm_bindings::kvm_segment;

/// A GDT entry from its flags (access byte and granularity nibble as in the Intel manual,
/// `0xc09b` style), base and limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

fn base(entry: u64) -> u64 {
    ((entry & 0xff00_0000_0000_0000) >> 32)
        | ((entry & 0x0000_00ff_0000_0000) >> 16)
        | ((entry & 0x0000_0000_ffff_0000) >> 16)
}

fn limit(entry: u64) -> u32 {
    let raw = (((entry & 0x000f_0000_0000_0000) >> 32) | (entry & 0x0000_0000_0000_ffff)) as u32;
    // With 4 KiB granularity the limit counts pages.
    if (entry >> 55) & 1 == 1 {
        (raw << 12) | 0xfff
    } else {
        raw
    }
}

/// The segment register KVM needs for GDT entry `entry` at index `table_index`.
pub fn segment_from_gdt(entry: u64, table_index: u8) -> kvm_segment {
    kvm_segment {
        base: base(entry),
        limit: limit(entry),
        selector: u16::from(table_index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g: ((entry >> 55) & 1) as u8,
        avl: ((entry >> 52) & 1) as u8,
        padding: 0,
        unusable: u8::from((entry >> 47) & 1 == 0),
    }
}

/// The boot GDT for 64-bit entry: null, 64-bit code, data, TSS.
pub const GDT_LONG_MODE: [u64; 4] = [
    gdt_entry(0, 0, 0),
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
];

/// The boot GDT for the PVH 32-bit entry: null, 32-bit code, data, TSS.
pub const GDT_PROTECTED_MODE: [u64; 4] = [
    gdt_entry(0, 0, 0),
    gdt_entry(0xc09b, 0, 0xffff_ffff),
    gdt_entry(0xc093, 0, 0xffff_ffff),
    gdt_entry(0x008b, 0, 0x67),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_code_segment_round_trips() {
        let code = segment_from_gdt(GDT_LONG_MODE[1], 1);
        assert_eq!(code.selector, 0x08);
        assert_eq!(code.base, 0);
        assert_eq!(code.limit, 0xffff_ffff);
        assert_eq!(code.l, 1, "64-bit code");
        assert_eq!(code.db, 0);
        assert_eq!(code.type_, 0xb);
        assert_eq!(code.present, 1);
        let data = segment_from_gdt(GDT_PROTECTED_MODE[2], 2);
        assert_eq!(
            (data.selector, data.db, data.l, data.type_),
            (0x10, 1, 0, 0x3)
        );
        let tss = segment_from_gdt(GDT_PROTECTED_MODE[3], 3);
        assert_eq!((tss.limit, tss.g, tss.type_), (0x67, 0, 0xb));
        let null = segment_from_gdt(0, 0);
        assert_eq!(null.unusable, 1);
    }
}
