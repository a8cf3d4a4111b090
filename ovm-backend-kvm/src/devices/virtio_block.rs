//! virtio-mmio block device (virtio 1.x, split queue) over a raw image file: read, write,
//! flush and get-id; writes and flushes to a read-only disk fail with `IOERR`, as the
//! read-only feature bit tells the driver.
//!
//! The guest controls every address and length it hands over. A request whose buffers are
//! outside guest memory or the disk completes with `IOERR`; a chain that cannot be parsed at
//! all (descriptor index out of range, a loop, tables outside memory, no writable status
//! byte) sets `DEVICE_NEEDS_RESET` and stops the queue until the driver resets the device.
//! Either way the VMM carries on, and `BlockState::malformed_requests` counts them.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use vm_memory::{Bytes, GuestAddress};

use super::{BusDevice, DeviceAction, Irq, fill_le, le_value};
use crate::arch::x86_64::layout;
use crate::error::{Result, VmmError};
use crate::vstate::memory::GuestMemoryMmap;

/// First disk's interrupt line; disk `i` uses `FIRST_IRQ + i`.
pub const FIRST_IRQ: u32 = 10;

/// Where disk `index` sits: its MMIO window base and its interrupt line (GSI).
pub fn placement(index: usize) -> (u64, u32) {
    (
        layout::VIRTIO_MMIO_START + index as u64 * layout::VIRTIO_MMIO_SIZE,
        FIRST_IRQ + index as u32,
    )
}

/// How Linux (and the test guest) learn about disk `index` without a device tree or ACPI:
/// `virtio_mmio.device=<size>@<base>:<irq>` on the kernel command line.
pub fn cmdline_entry(index: usize) -> String {
    let (base, irq) = placement(index);
    format!(
        "virtio_mmio.device={}K@{base:#x}:{irq}",
        layout::VIRTIO_MMIO_SIZE >> 10
    )
}
/// Queue size offered to the driver.
pub const QUEUE_SIZE: u16 = 256;
const SECTOR: u64 = 512;
const MAGIC: u32 = 0x7472_6976; // "virt"
const DEVICE_ID_BLOCK: u32 = 2;
const VENDOR_ID: u32 = 0x4f56_4d00; // "OVM\0"
const F_RO: u64 = 1 << 5;
const F_FLUSH: u64 = 1 << 9;
const F_VERSION_1: u64 = 1 << 32;
const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;
const STATUS_DRIVER_OK: u32 = 4;
const STATUS_FEATURES_OK: u32 = 8;
const STATUS_NEEDS_RESET: u32 = 0x40;
const INT_USED_BUFFER: u32 = 1;
const INT_CONFIG_CHANGE: u32 = 2;
/// Data moves between the file and guest memory through a buffer of at most this size, so
/// a guest asking for gigabytes does not make the VMM allocate them.
const BOUNCE_BYTES: usize = 64 * 1024;
const ID_BYTES: usize = 20;

/// The split virtqueue's guest-visible registers and our position in it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct QueueState {
    /// Size chosen by the driver.
    pub size: u16,
    /// Driver marked it ready.
    pub ready: bool,
    /// Descriptor table address.
    pub desc: u64,
    /// Available ring address.
    pub avail: u64,
    /// Used ring address.
    pub used: u64,
    /// Next available index to process.
    pub next_avail: u16,
    /// Next used index to fill.
    pub next_used: u16,
}

/// Guest-visible state of the device.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BlockState {
    /// Device features selector.
    pub device_features_sel: u32,
    /// Driver features selector.
    pub driver_features_sel: u32,
    /// Features the driver accepted.
    pub driver_features: u64,
    /// Device status.
    pub status: u32,
    /// Interrupt status (bit 0: used buffer).
    pub interrupt_status: u32,
    /// The one request queue.
    pub queue: QueueState,
    /// Read-only disk.
    pub read_only: bool,
    /// Capacity, sectors.
    pub sectors: u64,
    /// Request chains refused as malformed (the device then needs a reset).
    #[serde(default)]
    pub malformed_requests: u64,
    /// Requests completed with `IOERR`: buffers outside guest memory or the disk, writes to
    /// a read-only disk, failed file I/O.
    #[serde(default)]
    pub io_errors: u64,
}

/// The device.
pub struct VirtioBlock {
    state: BlockState,
    file: File,
    id: String,
    mem: GuestMemoryMmap,
    irq: Option<Irq>,
}

struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

impl VirtioBlock {
    /// Opens `path` (read-only if asked) as a disk in `mem`.
    pub fn open(
        path: &Path,
        read_only: bool,
        mem: GuestMemoryMmap,
        irq: Option<Irq>,
    ) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(VmmError::io(format!("open disk {}", path.display())))?;
        let len = file
            .metadata()
            .map_err(VmmError::io(format!("stat disk {}", path.display())))?
            .len();
        let id = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(VirtioBlock {
            state: BlockState {
                read_only,
                sectors: len / SECTOR,
                ..Default::default()
            },
            file,
            id,
            mem,
            irq,
        })
    }

    /// The state, for snapshots.
    pub fn state(&self) -> BlockState {
        self.state.clone()
    }

    fn device_features(&self) -> u64 {
        F_VERSION_1 | F_FLUSH | if self.state.read_only { F_RO } else { 0 }
    }

    fn read_desc(&self, index: u16) -> Option<Desc> {
        let q = &self.state.queue;
        if index >= q.size {
            return None;
        }
        let at = u64::from(index) * 16;
        let addr: u64 = self.mem.read_obj(guest_addr(q.desc, at)?).ok()?;
        let len: u32 = self.mem.read_obj(guest_addr(q.desc, at + 8)?).ok()?;
        let flags: u16 = self.mem.read_obj(guest_addr(q.desc, at + 12)?).ok()?;
        let next: u16 = self.mem.read_obj(guest_addr(q.desc, at + 14)?).ok()?;
        Some(Desc {
            addr,
            len,
            flags,
            next,
        })
    }

    /// Processes every available request; returns whether any was completed.
    fn process_queue(&mut self) -> bool {
        let q = self.state.queue.clone();
        if !q.ready
            || q.size == 0
            || self.state.status & STATUS_DRIVER_OK == 0
            || self.state.status & STATUS_NEEDS_RESET != 0
        {
            return false;
        }
        let Some(avail_idx) = guest_addr(q.avail, 2).and_then(|a| self.mem.read_obj::<u16>(a).ok())
        else {
            return self.fail();
        };
        let mut done = false;
        while self.state.queue.next_avail != avail_idx {
            let slot = u64::from(self.state.queue.next_avail % q.size);
            let Some(head) =
                guest_addr(q.avail, 4 + slot * 2).and_then(|a| self.mem.read_obj::<u16>(a).ok())
            else {
                return self.fail();
            };
            let Some(written) = self.handle_request(head) else {
                return self.fail();
            };
            let used_slot = u64::from(self.state.queue.next_used % q.size);
            let next_used = self.state.queue.next_used.wrapping_add(1);
            let published = (|| {
                let at = 4 + used_slot * 8;
                self.mem
                    .write_obj(u32::from(head), guest_addr(q.used, at)?)
                    .ok()?;
                self.mem
                    .write_obj(written, guest_addr(q.used, at + 4)?)
                    .ok()?;
                self.mem.write_obj(next_used, guest_addr(q.used, 2)?).ok()
            })();
            if published.is_none() {
                return self.fail();
            }
            self.state.queue.next_used = next_used;
            self.state.queue.next_avail = self.state.queue.next_avail.wrapping_add(1);
            done = true;
        }
        if done {
            self.state.interrupt_status |= INT_USED_BUFFER;
            if let Some(irq) = &self.irq {
                irq.trigger();
            }
        }
        done
    }

    /// A driver that hands over a chain the device cannot parse gets the device marked as
    /// needing a reset (virtio 1.x 2.1.2: `DEVICE_NEEDS_RESET` and a configuration change
    /// interrupt); the queue stops until it resets the device.
    fn fail(&mut self) -> bool {
        self.state.malformed_requests += 1;
        self.state.status |= STATUS_NEEDS_RESET;
        self.state.interrupt_status |= INT_CONFIG_CHANGE;
        if let Some(irq) = &self.irq {
            irq.trigger();
        }
        false
    }

    /// Runs one request chain; returns bytes written into guest buffers, `None` if the
    /// chain itself is malformed.
    fn handle_request(&mut self, head: u16) -> Option<u32> {
        let mut chain = Vec::new();
        let mut index = head;
        loop {
            let d = self.read_desc(index)?;
            let more = d.flags & DESC_F_NEXT != 0;
            let next = d.next;
            chain.push(d);
            if !more {
                break;
            }
            if chain.len() > usize::from(self.state.queue.size) {
                return None; // a loop
            }
            index = next;
        }
        if chain.len() < 2 {
            return None;
        }
        let header = &chain[0];
        if header.len < 16 {
            return None;
        }
        let kind: u32 = self.mem.read_obj(guest_addr(header.addr, 0)?).ok()?;
        let sector: u64 = self.mem.read_obj(guest_addr(header.addr, 8)?).ok()?;
        let status_desc = chain.last()?;
        if status_desc.flags & DESC_F_WRITE == 0 || status_desc.len < 1 {
            return None;
        }
        let status_addr = GuestAddress(status_desc.addr);
        let data = &chain[1..chain.len() - 1];
        let (status, written) = self.execute(kind, sector, data);
        if status == S_IOERR {
            self.state.io_errors += 1;
        }
        self.mem.write_obj(status, status_addr).ok()?;
        Some(written.saturating_add(1))
    }

    fn execute(&self, kind: u32, sector: u64, data: &[Desc]) -> (u8, u32) {
        let total: u64 = data.iter().map(|d| u64::from(d.len)).sum();
        let in_range = sector
            .checked_mul(SECTOR)
            .and_then(|o| o.checked_add(total))
            .is_some_and(|end| end <= self.state.sectors * SECTOR);
        match kind {
            T_IN | T_OUT if !in_range => (S_IOERR, 0),
            T_IN => {
                let mut offset = sector * SECTOR;
                let mut written = 0u32;
                for d in data {
                    if d.flags & DESC_F_WRITE == 0 || self.file_to_guest(offset, d).is_err() {
                        return (S_IOERR, written);
                    }
                    offset += u64::from(d.len);
                    written = written.saturating_add(d.len);
                }
                (S_OK, written)
            }
            T_OUT if self.state.read_only => (S_IOERR, 0),
            T_OUT => {
                let mut offset = sector * SECTOR;
                for d in data {
                    if self.guest_to_file(d, offset).is_err() {
                        return (S_IOERR, 0);
                    }
                    offset += u64::from(d.len);
                }
                (S_OK, 0)
            }
            T_FLUSH if self.state.read_only => (S_IOERR, 0),
            T_FLUSH => match self.file.sync_data() {
                Ok(()) => (S_OK, 0),
                Err(_) => (S_IOERR, 0),
            },
            T_GET_ID => {
                let Some(d) = data.first() else {
                    return (S_IOERR, 0);
                };
                let mut id = [0u8; ID_BYTES];
                let n = self.id.len().min(ID_BYTES);
                id[..n].copy_from_slice(&self.id.as_bytes()[..n]);
                let n = (d.len as usize).min(ID_BYTES);
                match self.mem.write_slice(&id[..n], GuestAddress(d.addr)) {
                    Ok(()) => (S_OK, n as u32),
                    Err(_) => (S_IOERR, 0),
                }
            }
            _ => (S_UNSUPP, 0),
        }
    }

    /// Copies `d.len` bytes of the file at `offset` into the guest buffer `d`.
    fn file_to_guest(&self, offset: u64, d: &Desc) -> std::result::Result<(), ()> {
        let mut buf = vec![0u8; (d.len as usize).min(BOUNCE_BYTES)];
        let mut done = 0u64;
        while done < u64::from(d.len) {
            let n = (u64::from(d.len) - done).min(buf.len() as u64) as usize;
            let at = d.addr.checked_add(done).ok_or(())?;
            self.file
                .read_exact_at(&mut buf[..n], offset + done)
                .map_err(|_| ())?;
            self.mem
                .write_slice(&buf[..n], GuestAddress(at))
                .map_err(|_| ())?;
            done += n as u64;
        }
        Ok(())
    }

    /// Copies the guest buffer `d` into the file at `offset`.
    fn guest_to_file(&self, d: &Desc, offset: u64) -> std::result::Result<(), ()> {
        let mut buf = vec![0u8; (d.len as usize).min(BOUNCE_BYTES)];
        let mut done = 0u64;
        while done < u64::from(d.len) {
            let n = (u64::from(d.len) - done).min(buf.len() as u64) as usize;
            let at = d.addr.checked_add(done).ok_or(())?;
            self.mem
                .read_slice(&mut buf[..n], GuestAddress(at))
                .map_err(|_| ())?;
            self.file
                .write_all_at(&buf[..n], offset + done)
                .map_err(|_| ())?;
            done += n as u64;
        }
        Ok(())
    }

    /// Driver status write. `FEATURES_OK` sticks only if the driver accepted
    /// `VIRTIO_F_VERSION_1` and nothing the device did not offer (virtio 1.x 3.1.1).
    fn set_status(&mut self, status: u32) {
        let newly_features_ok =
            status & STATUS_FEATURES_OK != 0 && self.state.status & STATUS_FEATURES_OK == 0;
        let acceptable = self.state.driver_features & F_VERSION_1 != 0
            && self.state.driver_features & !self.device_features() == 0;
        let mut status = status & !STATUS_NEEDS_RESET;
        if newly_features_ok && !acceptable {
            status &= !STATUS_FEATURES_OK;
        }
        // NEEDS_RESET is the device's to set and stays until the driver writes 0.
        self.state.status = status | (self.state.status & STATUS_NEEDS_RESET);
    }

    fn reset(&mut self) {
        let old = std::mem::take(&mut self.state);
        self.state = BlockState {
            read_only: old.read_only,
            sectors: old.sectors,
            malformed_requests: old.malformed_requests,
            io_errors: old.io_errors,
            ..Default::default()
        };
    }
}

/// `base + offset` as a guest address, `None` past the end of the address space (both are
/// the guest's numbers).
fn guest_addr(base: u64, offset: u64) -> Option<GuestAddress> {
    base.checked_add(offset).map(GuestAddress)
}

fn set_low(v: &mut u64, low: u64) {
    *v = (*v & !0xffff_ffff) | (low & 0xffff_ffff);
}

fn set_high(v: &mut u64, high: u64) {
    *v = (*v & 0xffff_ffff) | (high << 32);
}

impl BusDevice for VirtioBlock {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= 0x100 {
            // Config space: capacity (u64) at 0.
            let cfg = self.state.sectors.to_le_bytes();
            let start = (offset - 0x100) as usize;
            for (i, b) in data.iter_mut().enumerate() {
                *b = cfg.get(start + i).copied().unwrap_or(0);
            }
            return;
        }
        let s = &self.state;
        let value: u64 = match offset {
            0x000 => u64::from(MAGIC),
            0x004 => 2,
            0x008 => u64::from(DEVICE_ID_BLOCK),
            0x00c => u64::from(VENDOR_ID),
            0x010 => match s.device_features_sel {
                0 => self.device_features() & 0xffff_ffff,
                1 => self.device_features() >> 32,
                _ => 0,
            },
            0x034 => u64::from(QUEUE_SIZE),
            0x044 => u64::from(s.queue.ready),
            0x060 => u64::from(s.interrupt_status),
            0x070 => u64::from(s.status),
            0x0fc => 0,
            _ => 0,
        };
        fill_le(data, value);
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> DeviceAction {
        let v = le_value(data);
        let q = &mut self.state.queue;
        match offset {
            0x014 => self.state.device_features_sel = v as u32,
            0x020 => match self.state.driver_features_sel {
                0 => set_low(&mut self.state.driver_features, v),
                1 => set_high(&mut self.state.driver_features, v),
                _ => {}
            },
            0x024 => self.state.driver_features_sel = v as u32,
            0x030 => {} // one queue: selecting any other leaves queue 0 registers
            0x038 => q.size = (v as u16).min(QUEUE_SIZE),
            0x044 => q.ready = v & 1 == 1,
            0x050 => {
                self.process_queue();
            }
            0x064 => self.state.interrupt_status &= !(v as u32),
            0x070 => {
                if v == 0 {
                    self.reset();
                } else {
                    self.set_status(v as u32);
                }
            }
            0x080 => set_low(&mut q.desc, v),
            0x084 => set_high(&mut q.desc, v),
            0x090 => set_low(&mut q.avail, v),
            0x094 => set_high(&mut q.avail, v),
            0x0a0 => set_low(&mut q.used, v),
            0x0a4 => set_high(&mut q.used, v),
            _ => {}
        }
        DeviceAction::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Address;

    const DESC: u64 = 0x1000;
    const AVAIL: u64 = 0x2000;
    const USED: u64 = 0x3000;
    const HDR: u64 = 0x4000;
    const DATA: u64 = 0x5000;
    const STATUS: u64 = 0x6000;

    fn device(read_only: bool) -> (VirtioBlock, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        let mut image = vec![0u8; 64 * 1024];
        image[512..1024].fill(0xab);
        std::fs::write(&path, image).unwrap();
        let mem = crate::vstate::memory::create(&[(0, 1 << 20)]).unwrap();
        let mut d =
            VirtioBlock::open(&path, read_only, mem, Some(Irq::new(FIRST_IRQ).unwrap())).unwrap();
        for (off, val) in [
            (0x070u64, 1u64),
            (0x070, 3),
            (0x038, 16),
            (0x080, DESC),
            (0x090, AVAIL),
            (0x0a0, USED),
            (0x044, 1),
            (0x070, 7),
        ] {
            d.write(off, &(val as u32).to_le_bytes());
        }
        (d, dir)
    }

    fn desc(d: &VirtioBlock, i: u64, addr: u64, len: u32, flags: u16, next: u16) {
        let at = GuestAddress(DESC + i * 16);
        d.mem.write_obj(addr, at).unwrap();
        d.mem.write_obj(len, at.unchecked_add(8)).unwrap();
        d.mem.write_obj(flags, at.unchecked_add(12)).unwrap();
        d.mem.write_obj(next, at.unchecked_add(14)).unwrap();
    }

    /// Submits one request (header, one data buffer, status) and returns its status byte.
    fn submit(d: &mut VirtioBlock, kind: u32, sector: u64, data_flags: u16, round: u16) -> u8 {
        d.mem.write_obj(kind, GuestAddress(HDR)).unwrap();
        d.mem.write_obj(sector, GuestAddress(HDR + 8)).unwrap();
        desc(d, 0, HDR, 16, DESC_F_NEXT, 1);
        desc(d, 1, DATA, 512, data_flags | DESC_F_NEXT, 2);
        desc(d, 2, STATUS, 1, DESC_F_WRITE, 0);
        d.mem
            .write_obj(0u16, GuestAddress(AVAIL + 4 + u64::from(round % 16) * 2))
            .unwrap();
        d.mem.write_obj(round + 1, GuestAddress(AVAIL + 2)).unwrap();
        d.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        d.write(0x050, &0u32.to_le_bytes());
        let used: u16 = d.mem.read_obj(GuestAddress(USED + 2)).unwrap();
        assert_eq!(used, round + 1, "request completed");
        d.mem.read_obj(GuestAddress(STATUS)).unwrap()
    }

    #[test]
    fn identifies_itself_with_capacity() {
        let (mut d, _dir) = device(false);
        let mut b = [0u8; 4];
        d.read(0, &mut b);
        assert_eq!(u32::from_le_bytes(b), MAGIC);
        d.read(0x008, &mut b);
        assert_eq!(u32::from_le_bytes(b), DEVICE_ID_BLOCK);
        let mut cap = [0u8; 8];
        d.read(0x100, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 128);
    }

    #[test]
    fn reads_writes_and_flushes() {
        let (mut d, _dir) = device(false);
        assert_eq!(submit(&mut d, T_IN, 1, DESC_F_WRITE, 0), S_OK);
        let mut buf = [0u8; 512];
        d.mem.read_slice(&mut buf, GuestAddress(DATA)).unwrap();
        assert!(buf.iter().all(|&b| b == 0xab));
        assert!(d.irq.as_ref().unwrap().take_count() > 0);

        d.mem.write_slice(&[0x5a; 512], GuestAddress(DATA)).unwrap();
        assert_eq!(submit(&mut d, T_OUT, 3, 0, 1), S_OK);
        let mut back = [0u8; 512];
        d.file.read_exact_at(&mut back, 3 * 512).unwrap();
        assert!(back.iter().all(|&b| b == 0x5a));
        assert_eq!(submit(&mut d, T_FLUSH, 0, 0, 2), S_OK);
        assert_eq!(
            submit(&mut d, T_IN, 1000, DESC_F_WRITE, 3),
            S_IOERR,
            "past the end"
        );
        assert_eq!(submit(&mut d, 77, 0, 0, 4), S_UNSUPP);
    }

    #[test]
    fn read_only_disks_refuse_writes() {
        let (mut d, _dir) = device(true);
        let mut f = [0u8; 4];
        d.read(0x010, &mut f);
        assert_ne!(u32::from_le_bytes(f) as u64 & F_RO, 0);
        assert_eq!(submit(&mut d, T_OUT, 0, 0, 0), S_IOERR);
        assert_eq!(submit(&mut d, T_IN, 1, DESC_F_WRITE, 1), S_OK);
    }

    #[test]
    fn a_looping_chain_fails_the_device_not_the_vmm() {
        let (mut d, _dir) = device(false);
        desc(&d, 0, HDR, 16, DESC_F_NEXT, 1);
        desc(&d, 1, DATA, 16, DESC_F_NEXT, 0);
        d.mem.write_obj(0u16, GuestAddress(AVAIL + 4)).unwrap();
        d.mem.write_obj(1u16, GuestAddress(AVAIL + 2)).unwrap();
        d.write(0x050, &0u32.to_le_bytes());
        let mut s = [0u8; 4];
        d.read(0x070, &mut s);
        assert_ne!(u32::from_le_bytes(s) & STATUS_NEEDS_RESET, 0);
        assert_eq!(d.state().malformed_requests, 1);
        // The queue stays stopped until a reset; after one the device works again.
        d.write(0x050, &0u32.to_le_bytes());
        assert_eq!(d.state().malformed_requests, 1);
        d.write(0x070, &0u32.to_le_bytes());
        d.read(0x070, &mut s);
        assert_eq!(u32::from_le_bytes(s), 0);
    }

    #[test]
    fn tables_at_the_top_of_the_address_space_fail_the_device() {
        let (mut d, _dir) = device(false);
        d.write(0x070, &0u32.to_le_bytes());
        for (off, val) in [
            (0x070u64, 3u64),
            (0x038, 16),
            (0x080, u64::MAX - 7),
            (0x084, u64::MAX >> 32),
            (0x090, AVAIL),
            (0x0a0, USED),
            (0x044, 1),
            (0x070, 7),
        ] {
            d.write(off, &(val as u32).to_le_bytes());
        }
        d.mem.write_obj(0u16, GuestAddress(AVAIL + 4)).unwrap();
        d.mem.write_obj(1u16, GuestAddress(AVAIL + 2)).unwrap();
        d.write(0x050, &0u32.to_le_bytes());
        assert_eq!(d.state().malformed_requests, 1);
        assert_ne!(d.state().status & STATUS_NEEDS_RESET, 0);
    }

    #[test]
    fn features_ok_needs_version_1_and_only_offered_bits() {
        let (mut d, _dir) = device(false);
        let mut s = [0u8; 4];
        for (features_hi, features_lo, accepted) in [
            (0u32, F_FLUSH as u32, false),
            (1, F_FLUSH as u32, true),
            (1 | 2, 0, false),
        ] {
            d.write(0x070, &0u32.to_le_bytes());
            d.write(0x070, &3u32.to_le_bytes());
            d.write(0x024, &0u32.to_le_bytes());
            d.write(0x020, &features_lo.to_le_bytes());
            d.write(0x024, &1u32.to_le_bytes());
            d.write(0x020, &features_hi.to_le_bytes());
            d.write(0x070, &(3 | STATUS_FEATURES_OK).to_le_bytes());
            d.read(0x070, &mut s);
            assert_eq!(
                u32::from_le_bytes(s) & STATUS_FEATURES_OK != 0,
                accepted,
                "features {features_hi:#x}:{features_lo:#x}"
            );
        }
    }

    #[test]
    fn buffers_outside_guest_memory_are_io_errors_not_allocations() {
        let (mut d, _dir) = device(false);
        d.mem.write_obj(T_IN, GuestAddress(HDR)).unwrap();
        d.mem.write_obj(0u64, GuestAddress(HDR + 8)).unwrap();
        desc(&d, 0, HDR, 16, DESC_F_NEXT, 1);
        // 64 KiB (the whole disk) into the last page of guest memory and beyond.
        desc(
            &d,
            1,
            (1 << 20) - 4096,
            64 * 1024,
            DESC_F_WRITE | DESC_F_NEXT,
            2,
        );
        desc(&d, 2, STATUS, 1, DESC_F_WRITE, 0);
        d.mem.write_obj(0u16, GuestAddress(AVAIL + 4)).unwrap();
        d.mem.write_obj(1u16, GuestAddress(AVAIL + 2)).unwrap();
        d.write(0x050, &0u32.to_le_bytes());
        assert_eq!(d.mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(), S_IOERR);
        // A length past the end of the disk is refused before any copy.
        desc(&d, 1, DATA, u32::MAX, DESC_F_WRITE | DESC_F_NEXT, 2);
        d.mem.write_obj(0u16, GuestAddress(AVAIL + 6)).unwrap();
        d.mem.write_obj(2u16, GuestAddress(AVAIL + 2)).unwrap();
        d.write(0x050, &0u32.to_le_bytes());
        assert_eq!(d.mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(), S_IOERR);
        assert_eq!(d.state().io_errors, 2);
        assert_eq!(d.state().malformed_requests, 0);
    }
}
