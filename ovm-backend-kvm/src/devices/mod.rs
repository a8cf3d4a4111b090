//! Emulated devices and the buses that route guest port and MMIO accesses to them.

pub mod boot_timer;
pub mod guest_channel;
pub mod i8042;
pub mod power;
pub mod serial;
pub mod virtio_block;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

/// What a device access asks of the VM, beyond the access itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceAction {
    /// Nothing.
    None,
    /// The guest reported that it booted (boot-timer port).
    Ready,
    /// The guest powered off.
    PowerOff,
    /// The guest asked for a reset (reboot).
    Reset,
}

/// A device on a bus: reads and writes at an offset into its window.
pub trait BusDevice: Send {
    /// Fills `data` for a read at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Handles a write at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]) -> DeviceAction;
}

/// A shared device.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// An address space (the I/O ports or MMIO) with devices on non-overlapping windows.
#[derive(Default, Clone)]
pub struct Bus {
    devices: BTreeMap<u64, (u64, SharedDevice)>,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts `device` on `[base, base + len)`; refuses overlaps.
    pub fn insert(&mut self, base: u64, len: u64, device: SharedDevice) -> Result<(), String> {
        if len == 0 {
            return Err(format!("device window at {base:#x} is empty"));
        }
        let end = base + len;
        let overlaps = self
            .devices
            .range(..end)
            .next_back()
            .is_some_and(|(&b, &(l, _))| b + l > base);
        if overlaps {
            return Err(format!(
                "device window {base:#x}..{end:#x} overlaps another"
            ));
        }
        self.devices.insert(base, (len, device));
        Ok(())
    }

    fn find(&self, addr: u64) -> Option<(u64, &SharedDevice)> {
        let (&base, (len, device)) = self.devices.range(..=addr).next_back()?;
        (addr < base + len).then_some((addr - base, device))
    }

    /// Routes a read; returns false when no device is there (the data is then all ones).
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((offset, device)) => {
                lock(device).read(offset, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Routes a write; `None` when no device is there.
    pub fn write(&self, addr: u64, data: &[u8]) -> Option<DeviceAction> {
        let (offset, device) = self.find(addr)?;
        Some(lock(device).write(offset, data))
    }
}

/// Locks a device, recovering it if a previous holder panicked (device state stays usable:
/// every device keeps itself consistent between register accesses).
pub use ovm_core::sync::lock;

/// An interrupt line: an eventfd that KVM turns into an edge on a GSI (irqfd).
pub struct Irq {
    fd: EventFd,
    gsi: u32,
}

impl Irq {
    /// A line for `gsi` (register it with `VmFd::register_irqfd`).
    pub fn new(gsi: u32) -> std::io::Result<Self> {
        Ok(Irq {
            fd: EventFd::new(libc::EFD_NONBLOCK)?,
            gsi,
        })
    }

    /// The eventfd.
    pub fn eventfd(&self) -> &EventFd {
        &self.fd
    }

    /// The GSI.
    pub fn gsi(&self) -> u32 {
        self.gsi
    }

    /// Raises the interrupt. A full counter means one is already pending, which is enough.
    pub fn trigger(&self) {
        let _ = self.fd.write(1);
    }

    /// Pending triggers since the last call (for tests).
    pub fn take_count(&self) -> u64 {
        self.fd.read().unwrap_or(0)
    }
}

/// Little-endian value of an access of 1, 2, 4 or 8 bytes.
pub fn le_value(data: &[u8]) -> u64 {
    let mut v = [0u8; 8];
    let n = data.len().min(8);
    v[..n].copy_from_slice(&data[..n]);
    u64::from_le_bytes(v)
}

/// Fills an access of any width with the low bytes of `value`.
pub fn fill_le(data: &mut [u8], value: u64) {
    let bytes = value.to_le_bytes();
    for (i, b) in data.iter_mut().enumerate() {
        *b = bytes.get(i).copied().unwrap_or(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Scratch(u8);
    impl BusDevice for Scratch {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(self.0.wrapping_add(offset as u8));
        }
        fn write(&mut self, _offset: u64, data: &[u8]) -> DeviceAction {
            self.0 = data[0];
            DeviceAction::None
        }
    }

    #[test]
    fn bus_routes_by_window_and_refuses_overlap() {
        let mut bus = Bus::new();
        bus.insert(0x10, 4, Arc::new(Mutex::new(Scratch(1))))
            .unwrap();
        assert!(
            bus.insert(0x12, 4, Arc::new(Mutex::new(Scratch(0))))
                .is_err()
        );
        assert!(
            bus.insert(0x0e, 4, Arc::new(Mutex::new(Scratch(0))))
                .is_err()
        );
        bus.insert(0x14, 1, Arc::new(Mutex::new(Scratch(9))))
            .unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x12, &mut b));
        assert_eq!(b[0], 3);
        assert_eq!(bus.write(0x10, &[7]), Some(DeviceAction::None));
        assert!(bus.read(0x11, &mut b));
        assert_eq!(b[0], 8);
        assert!(!bus.read(0x20, &mut b));
        assert_eq!(b[0], 0xff);
        assert_eq!(bus.write(0x20, &[1]), None);
    }
}
