//! Boot timer: the guest writes `READY_VALUE` to this port once it has booted, so the VMM
//! measures boot time itself (Firecracker's magic port 0x3f0 and value 123).

use serde::{Deserialize, Serialize};

use super::{BusDevice, DeviceAction};

/// The port.
pub const PORT: u64 = 0x3f0;
/// The byte meaning "ready".
pub const READY_VALUE: u8 = 123;

/// Whether the guest has said it is ready.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct BootTimer {
    /// Set once the guest wrote the ready value.
    pub ready: bool,
}

impl BusDevice for BootTimer {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) -> DeviceAction {
        if data.first() == Some(&READY_VALUE) && !self.ready {
            self.ready = true;
            DeviceAction::Ready
        } else {
            DeviceAction::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_is_reported_once() {
        let mut t = BootTimer::default();
        assert_eq!(t.write(0, &[1]), DeviceAction::None);
        assert_eq!(t.write(0, &[READY_VALUE]), DeviceAction::Ready);
        assert_eq!(t.write(0, &[READY_VALUE]), DeviceAction::None);
    }
}
