//! The i8042 keyboard controller, only as far as guests use it to reboot: command 0xfe on
//! port 0x64 pulses the reset line.

use serde::{Deserialize, Serialize};

use super::{BusDevice, DeviceAction};

/// First port (data, 0x60); the command/status port is 0x64.
pub const PORT: u64 = 0x60;
/// The window: 0x60..=0x64.
pub const LEN: u64 = 5;
const COMMAND_OFFSET: u64 = 4;
const CMD_RESET_CPU: u8 = 0xfe;

/// Controller state.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct I8042 {
    /// Last command byte written.
    pub last_command: u8,
}

impl BusDevice for I8042 {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Status 0: output buffer empty, input buffer empty. Data 0.
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> DeviceAction {
        if offset != COMMAND_OFFSET {
            return DeviceAction::None;
        }
        let Some(&command) = data.first() else {
            return DeviceAction::None;
        };
        self.last_command = command;
        if command == CMD_RESET_CPU {
            DeviceAction::Reset
        } else {
            DeviceAction::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_reboots() {
        let mut k = I8042::default();
        assert_eq!(k.write(0, &[0xfe]), DeviceAction::None, "data port");
        assert_eq!(k.write(4, &[0xaa]), DeviceAction::None);
        assert_eq!(k.write(4, &[0xfe]), DeviceAction::Reset);
    }
}
