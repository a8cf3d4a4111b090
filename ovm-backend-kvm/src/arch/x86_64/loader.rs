//! Loads a kernel image into guest memory and says how to enter it: ELF with a PVH note
//! (our test guest; Linux vmlinux built with CONFIG_PVH) through the PVH entry, a bzImage
//! or a plain 64-bit ELF through the Linux 64-bit boot protocol.

use std::fs::File;
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

/// How a loaded kernel is entered.
#[derive(Debug, Clone, Copy)]
pub enum KernelEntry {
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
            KernelEntry::Pvh { kernel_end, .. } | KernelEntry::Linux64 { kernel_end, .. } => {
                kernel_end
            }
        }
    }
}

/// Loads `path` into `mem`, preferring PVH for an ELF that has the note.
pub fn load_kernel<M: GuestMemoryBackend + GuestMemory>(
    mem: &M,
    path: &Path,
) -> Result<KernelEntry> {
    let fail = |reason: String| VmmError::KernelLoad {
        path: path.display().to_string(),
        reason,
    };
    let mut file = File::open(path).map_err(|e| fail(e.to_string()))?;
    match Elf::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))) {
        Ok(result) => Ok(match result.pvh_boot_cap {
            PvhBootCapability::PvhEntryPresent(entry) => KernelEntry::Pvh {
                entry: entry.0,
                kernel_end: result.kernel_end,
            },
            _ => KernelEntry::Linux64 {
                entry: result.kernel_load.0,
                kernel_end: result.kernel_end,
                header: None,
            },
        }),
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
        let entry = load_kernel(&mem, Path::new(crate::guest::BUILT_TEST_GUEST)).unwrap();
        match entry {
            KernelEntry::Pvh { entry, kernel_end } => {
                assert_eq!(entry, HIMEM_START);
                assert!(kernel_end > HIMEM_START);
            }
            other => panic!("expected a PVH entry, got {other:?}"),
        }
    }

    #[test]
    fn garbage_is_refused_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 8 << 20)]).unwrap();
        let err = load_kernel(&mem, &path).unwrap_err().to_string();
        assert!(err.contains("junk"), "{err}");
    }
}
