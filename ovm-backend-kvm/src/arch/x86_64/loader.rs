//! Loads a kernel image into guest memory and says how to enter it: ELF with a PVH note
//! (our test guest; Linux vmlinux built with CONFIG_PVH) through the PVH entry, a bzImage
//! or a plain 64-bit ELF through the Linux 64-bit boot protocol.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{
    BzImage, Elf, Error as LoaderError, KernelLoader, PvhBootCapability, elf::Error as ElfError,
};
use vm_memory::{GuestAddress, GuestMemory, GuestMemoryBackend};

use super::layout::HIMEM_START;
use crate::error::{Result, VmmError};

/// 64-bit entry point offset in a bzImage's protected-mode code.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;

/// Name of ovm's ELF note.
pub const OVM_NOTE_NAME: &[u8] = b"OVM\0";
/// ovm note type: a 64-bit entry (long mode, first 4 GiB identity mapped, RBX = PVH start
/// info). The test guest has it next to its PVH note.
pub const OVM_ELFNOTE_ENTRY64: u32 = 1;
const PT_NOTE: u32 = 4;

/// How a loaded kernel is entered.
#[derive(Debug, Clone, Copy)]
pub enum KernelEntry {
    /// ovm's 64-bit entry with PVH start info (see `OVM_ELFNOTE_ENTRY64`).
    Direct64 {
        /// Entry address.
        entry: u64,
        /// First byte after the kernel.
        kernel_end: u64,
    },
    /// PVH 32-bit entry at this physical address.
    Pvh {
        /// Entry address.
        entry: u64,
        /// First byte after the kernel.
        kernel_end: u64,
    },
    /// Linux 64-bit boot protocol.
    Linux64 {
        /// Entry address.
        entry: u64,
        /// First byte after the kernel.
        kernel_end: u64,
        /// The bzImage setup header (none for an ELF).
        header: Option<setup_header>,
    },
}

impl KernelEntry {
    /// First byte after the kernel image.
    pub fn kernel_end(&self) -> u64 {
        match *self {
            KernelEntry::Pvh { kernel_end, .. }
            | KernelEntry::Linux64 { kernel_end, .. }
            | KernelEntry::Direct64 { kernel_end, .. } => kernel_end,
        }
    }
}

/// Reads the ELF notes of `file` and returns the descriptor of the note `name`/`kind`.
/// Anything malformed reads as "no such note": the note is an optimisation, not required.
pub fn find_elf_note(file: &mut File, name: &[u8], kind: u32) -> Option<Vec<u8>> {
    let mut ehdr = [0u8; 64];
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_exact(&mut ehdr).ok()?;
    if &ehdr[..4] != b"\x7fELF" || ehdr[4] != 2 || ehdr[5] != 1 {
        return None; // not a little-endian ELF64
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let u64_at = |b: &[u8], o: usize| {
        let mut v = [0u8; 8];
        v.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(v)
    };
    let phoff = u64_at(&ehdr, 32);
    let phentsize = usize::from(u16_at(&ehdr, 54));
    let phnum = usize::from(u16_at(&ehdr, 56));
    if phentsize < 56 || phnum > 256 {
        return None;
    }
    let mut phdrs = vec![0u8; phentsize * phnum];
    file.seek(SeekFrom::Start(phoff)).ok()?;
    file.read_exact(&mut phdrs).ok()?;
    for ph in phdrs.chunks_exact(phentsize) {
        if u32_at(ph, 0) != PT_NOTE {
            continue;
        }
        let (offset, size) = (u64_at(ph, 8), u64_at(ph, 32));
        if size > 1 << 20 {
            continue;
        }
        let mut notes = vec![0u8; size as usize];
        file.seek(SeekFrom::Start(offset)).ok()?;
        file.read_exact(&mut notes).ok()?;
        let mut at = 0usize;
        let align = |n: usize| (n + 3) & !3;
        while at + 12 <= notes.len() {
            let namesz = u32_at(&notes, at) as usize;
            let descsz = u32_at(&notes, at + 4) as usize;
            let note_kind = u32_at(&notes, at + 8);
            let name_at = at + 12;
            let desc_at = name_at.checked_add(align(namesz))?;
            let end = desc_at.checked_add(align(descsz))?;
            if desc_at.checked_add(descsz)? > notes.len() {
                break;
            }
            if note_kind == kind && notes.get(name_at..name_at + namesz) == Some(name) {
                return Some(notes[desc_at..desc_at + descsz].to_vec());
            }
            at = end;
        }
    }
    None
}

/// Loads `path` into `mem` and says how to enter it: for an ELF, ovm's 64-bit entry if it
/// has that note (unless `prefer_pvh`), else its PVH entry, else its ELF entry by the Linux
/// 64-bit protocol; otherwise as a bzImage.
pub fn load_kernel<M: GuestMemoryBackend + GuestMemory>(
    mem: &M,
    path: &Path,
    prefer_pvh: bool,
) -> Result<KernelEntry> {
    let fail = |reason: String| VmmError::KernelLoad {
        path: path.display().to_string(),
        reason,
    };
    let mut file = File::open(path).map_err(|e| fail(e.to_string()))?;
    match Elf::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))) {
        Ok(result) => {
            let direct64 = if prefer_pvh {
                None
            } else {
                find_elf_note(&mut file, OVM_NOTE_NAME, OVM_ELFNOTE_ENTRY64)
                    .and_then(|d| <[u8; 8]>::try_from(d.as_slice()).ok())
                    .map(u64::from_le_bytes)
            };
            let kernel_end = result.kernel_end;
            Ok(match (direct64, result.pvh_boot_cap) {
                (Some(entry), PvhBootCapability::PvhEntryPresent(_)) => {
                    KernelEntry::Direct64 { entry, kernel_end }
                }
                (_, PvhBootCapability::PvhEntryPresent(entry)) => KernelEntry::Pvh {
                    entry: entry.0,
                    kernel_end,
                },
                _ => KernelEntry::Linux64 {
                    entry: result.kernel_load.0,
                    kernel_end,
                    header: None,
                },
            })
        }
        Err(LoaderError::Elf(ElfError::InvalidElfMagicNumber)) => {
            let result = BzImage::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START)))
                .map_err(|e| fail(format!("neither an ELF nor a bzImage: {e}")))?;
            Ok(KernelEntry::Linux64 {
                entry: result.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET,
                kernel_end: result.kernel_end,
                header: result.setup_header,
            })
        }
        Err(e) => Err(fail(e.to_string())),
    }
}

/// Loads an initrd file at `addr`; returns its size.
pub fn load_initrd<M: GuestMemory>(mem: &M, path: &Path, addr: u64) -> Result<u64> {
    let data =
        std::fs::read(path).map_err(VmmError::io(format!("read initrd {}", path.display())))?;
    vm_memory::Bytes::write_slice(mem, &data, GuestAddress(addr))
        .map_err(|e| VmmError::Memory(format!("initrd at {addr:#x}: {e}")))?;
    Ok(data.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    #[test]
    fn the_test_guest_loads_through_its_pvh_note() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 8 << 20)]).unwrap();
        let entry = load_kernel(&mem, Path::new(crate::guest::BUILT_TEST_GUEST), true).unwrap();
        match entry {
            KernelEntry::Pvh { entry, kernel_end } => {
                assert_eq!(entry, HIMEM_START);
                assert!(kernel_end > HIMEM_START);
            }
            other => panic!("expected a PVH entry, got {other:?}"),
        }
    }

    #[test]
    fn the_test_guest_has_a_64_bit_entry_note() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 8 << 20)]).unwrap();
        let path = Path::new(crate::guest::BUILT_TEST_GUEST);
        match load_kernel(&mem, path, false).unwrap() {
            KernelEntry::Direct64 { entry, .. } => {
                assert!(
                    entry > HIMEM_START && entry < HIMEM_START + (1 << 20),
                    "{entry:#x}"
                )
            }
            other => panic!("expected the 64-bit entry, got {other:?}"),
        }
        let mut f = File::open(path).unwrap();
        assert!(
            find_elf_note(&mut f, b"Xen\0", 18).is_some(),
            "the PVH note is found too"
        );
        assert!(find_elf_note(&mut f, b"Xen\0", 99).is_none());
    }

    #[test]
    fn garbage_is_refused_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 8 << 20)]).unwrap();
        let err = load_kernel(&mem, &path, false).unwrap_err().to_string();
        assert!(err.contains("junk"), "{err}");
    }
}
