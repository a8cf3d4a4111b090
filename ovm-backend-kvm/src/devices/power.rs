//! The exit port: a write powers the VM off. It sits where QEMU's `isa-debug-exit` device
//! is usually put (`-device isa-debug-exit,iobase=0xf4,iosize=4`), so the test guest powers
//! off the same way under both.

use serde::{Deserialize, Serialize};

use super::{BusDevice, DeviceAction, le_value};

/// The port.
pub const PORT: u64 = 0xf4;
/// Its width.
pub const LEN: u64 = 4;

/// The exit port; remembers the code the guest wrote.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ExitPort {
    /// The value of the last write.
    pub code: Option<u32>,
}

impl BusDevice for ExitPort {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> DeviceAction {
        if offset != 0 {
            return DeviceAction::None;
        }
        self.code = Some(le_value(data) as u32);
        DeviceAction::PowerOff
    }
}
