//! The Intel MultiProcessor table, so a Linux guest finds its CPUs and the I/O APIC without
//! ACPI (as Firecracker does): floating pointer at the start of the EBDA, then the config
//! table with one processor entry per vCPU, the ISA bus, the I/O APIC, its 24 interrupt
//! inputs and the LAPIC LINT0/LINT1 wiring.

use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::layout::{APIC_START, EBDA_START, IOAPIC_START};
use crate::error::{Result, VmmError};

/// I/O APIC inputs.
pub const IOAPIC_PINS: u8 = 24;
const SPEC_REV: u8 = 4;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BSP: u8 = 2;
const CPU_SIGNATURE: u32 = 0x600; // family 6
const CPU_FEATURES: u32 = 0x201; // FPU, APIC
const INT_VECTORED: u8 = 0;
const INT_NMI: u8 = 1;
const INT_EXTINT: u8 = 3;

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |s, &b| s.wrapping_add(b))
        .wrapping_neg()
}

/// The MP floating pointer and config table for `vcpus` CPUs, as bytes to place at
/// `base`.
pub fn build(vcpus: u8, base: u64) -> Result<Vec<u8>> {
    if vcpus == 0 || vcpus == u8::MAX {
        return Err(VmmError::invalid(
            "vcpus",
            format!("{vcpus} does not fit an MP table"),
        ));
    }
    let ioapic_id = vcpus; // APIC ids 0..vcpus are the CPUs
    let mut entries = Vec::new();
    let mut count = 0u16;
    for cpu in 0..vcpus {
        entries.extend_from_slice(&[
            0,
            cpu,
            APIC_VERSION,
            CPU_ENABLED | if cpu == 0 { CPU_BSP } else { 0 },
        ]);
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[1, 0]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[2, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&(IOAPIC_START as u32).to_le_bytes());
    count += 1;
    for pin in 0..IOAPIC_PINS {
        let kind = if pin == 0 { INT_EXTINT } else { INT_VECTORED };
        entries.extend_from_slice(&[3, kind, 0, 0, 0, pin, ioapic_id, pin]);
        count += 1;
    }
    entries.extend_from_slice(&[4, INT_EXTINT, 0, 0, 0, 0, 0, 0]);
    entries.extend_from_slice(&[4, INT_NMI, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let table_addr = base + 16;
    let mut table = Vec::with_capacity(44 + entries.len());
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&((44 + entries.len()) as u16).to_le_bytes());
    table.push(SPEC_REV);
    table.push(0); // checksum, below
    table.extend_from_slice(b"OVM     ");
    table.extend_from_slice(b"ovm-vmm     ");
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table
    table.extend_from_slice(&0u16.to_le_bytes());
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&(APIC_START as u32).to_le_bytes());
    table.extend_from_slice(&0u16.to_le_bytes()); // extended table
    table.push(0);
    table.push(0);
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut out = Vec::with_capacity(16 + table.len());
    out.extend_from_slice(b"_MP_");
    out.extend_from_slice(&(table_addr as u32).to_le_bytes());
    out.extend_from_slice(&[1, SPEC_REV, 0, 0, 0, 0, 0, 0]);
    out[10] = checksum(&out);
    out.extend_from_slice(&table);
    Ok(out)
}

/// Writes the MP table at the start of the EBDA.
pub fn write<M: GuestMemory>(mem: &M, vcpus: u8) -> Result<()> {
    let bytes = build(vcpus, EBDA_START)?;
    mem.write_slice(&bytes, GuestAddress(EBDA_START))
        .map_err(|e| VmmError::Memory(format!("MP table: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_sizes_and_entries_are_right() {
        let t = build(4, EBDA_START).unwrap();
        assert_eq!(&t[..4], b"_MP_");
        assert_eq!(t[..16].iter().fold(0u8, |s, &b| s.wrapping_add(b)), 0);
        let ptr = u32::from_le_bytes([t[4], t[5], t[6], t[7]]) as u64;
        assert_eq!(ptr, EBDA_START + 16);
        let table = &t[16..];
        assert_eq!(&table[..4], b"PCMP");
        let len = u16::from_le_bytes([table[4], table[5]]) as usize;
        assert_eq!(len, table.len());
        assert_eq!(table.iter().fold(0u8, |s, &b| s.wrapping_add(b)), 0);
        let count = u16::from_le_bytes([table[34], table[35]]);
        assert_eq!(count, 4 + 1 + 1 + u16::from(IOAPIC_PINS) + 2);
        // The first processor is the enabled BSP, the second only enabled.
        assert_eq!(&table[44..48], &[0, 0, APIC_VERSION, CPU_ENABLED | CPU_BSP]);
        assert_eq!(&table[64..68], &[0, 1, APIC_VERSION, CPU_ENABLED]);
        assert!(build(0, EBDA_START).is_err());
    }
}
