//! The guest channel: key/value messages between host and guest through a buffer in guest
//! memory, driven by four 32-bit I/O registers (see `guest/ports.h`, the guest's side):
//!
//! | offset | access | meaning |
//! |---|---|---|
//! | 0 | write | buffer address, low 32 bits |
//! | 4 | write | buffer address, high 32 bits |
//! | 8 | write | send: the guest put a frame of this length in the buffer |
//! | 8 | read | status of the last send: 0 accepted, 1 rejected |
//! | 12 | read | receive: the VMM copies its next frame into the buffer, returns its length (0: none) |
//!
//! A frame is `u32 key_len, u32 value_len` (little endian), the key, the value. Keys are
//! 1..=256 bytes of UTF-8 without control characters, values at most 8 KiB (the limits of
//! `ovm_core::hypervisor::guest_message`). Anything else from the guest is reported as
//! misbehaviour and ignored. IRQ 5 tells the guest a frame is waiting.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use ovm_core::hypervisor::guest_message::{MAX_KEY, MAX_VALUE};
use serde::{Deserialize, Serialize};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::{BusDevice, DeviceAction, Irq, fill_le, le_value};
use crate::vstate::memory::GuestMemoryMmap;

/// Base port.
pub const PORT: u64 = 0x0e00;
/// Window size.
pub const LEN: u64 = 16;
/// Interrupt line.
pub const IRQ: u32 = 5;
/// Largest frame.
pub const MAX_FRAME: usize = 8 + MAX_KEY + MAX_VALUE;
/// Most host messages queued for a guest that does not read them.
pub const MAX_QUEUED: usize = 256;
/// Most misbehaviour reports per second (the rest are counted).
const REPORTS_PER_SECOND: u32 = 10;

/// A key/value message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Key.
    pub key: String,
    /// Value.
    pub value: Vec<u8>,
}

/// What the channel tells the VMM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelEvent {
    /// The guest published a message.
    Published(Message),
    /// The guest sent something malformed; `suppressed` earlier reports were dropped.
    Misbehaved {
        /// What was wrong.
        detail: String,
    },
}

/// Guest-visible and host-side channel state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChannelState {
    /// The guest's buffer address.
    pub buffer: u64,
    /// 0: last send accepted, 1: rejected.
    pub last_status: u32,
    /// Host messages the guest has not read.
    pub to_guest: VecDeque<Message>,
    /// The last value the guest published under each key.
    pub published: BTreeMap<String, Vec<u8>>,
    /// Malformed sends so far.
    pub misbehaviour_count: u64,
}

/// Receives channel events (called on a vCPU thread).
pub type ChannelListener = Box<dyn FnMut(ChannelEvent) + Send>;

/// The device.
pub struct GuestChannel {
    state: ChannelState,
    mem: GuestMemoryMmap,
    irq: Option<Irq>,
    listener: Option<ChannelListener>,
    window_start: Instant,
    reports_in_window: u32,
}

/// Checks a key and value against the channel limits.
pub fn validate(key: &[u8], value_len: usize) -> Result<String, String> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(format!(
            "key of {} bytes is outside 1..={MAX_KEY}",
            key.len()
        ));
    }
    if value_len > MAX_VALUE {
        return Err(format!(
            "value of {value_len} bytes is more than {MAX_VALUE}"
        ));
    }
    let key = std::str::from_utf8(key).map_err(|_| "key is not UTF-8".to_string())?;
    if key.chars().any(char::is_control) {
        return Err("key contains a control character".into());
    }
    Ok(key.to_string())
}

/// Decodes a frame.
pub fn decode_frame(frame: &[u8]) -> Result<Message, String> {
    if frame.len() < 8 {
        return Err(format!(
            "frame of {} bytes is shorter than its header",
            frame.len()
        ));
    }
    let key_len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    let value_len = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]) as usize;
    if key_len > MAX_KEY || value_len > MAX_VALUE {
        return Err(format!(
            "header says key {key_len} bytes, value {value_len} bytes: over the limits"
        ));
    }
    if 8 + key_len + value_len != frame.len() {
        return Err(format!(
            "frame of {} bytes does not match its header (key {key_len}, value {value_len})",
            frame.len()
        ));
    }
    let key = validate(&frame[8..8 + key_len], value_len)?;
    Ok(Message {
        key,
        value: frame[8 + key_len..].to_vec(),
    })
}

/// Encodes a frame (the caller has validated the sizes).
pub fn encode_frame(m: &Message) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + m.key.len() + m.value.len());
    f.extend_from_slice(&(m.key.len() as u32).to_le_bytes());
    f.extend_from_slice(&(m.value.len() as u32).to_le_bytes());
    f.extend_from_slice(m.key.as_bytes());
    f.extend_from_slice(&m.value);
    f
}

impl GuestChannel {
    /// A channel over `mem`, interrupting on `irq`, reporting to `listener`.
    pub fn new(mem: GuestMemoryMmap, irq: Option<Irq>, listener: Option<ChannelListener>) -> Self {
        GuestChannel {
            state: ChannelState::default(),
            mem,
            irq,
            listener,
            window_start: Instant::now(),
            reports_in_window: 0,
        }
    }

    /// The state, for snapshots and reads.
    pub fn state(&self) -> &ChannelState {
        &self.state
    }

    /// Queues a message for the guest and raises its interrupt.
    pub fn send_to_guest(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
        let key = validate(key.as_bytes(), value.len())?;
        if self.state.to_guest.len() >= MAX_QUEUED {
            return Err(format!(
                "the guest has not read its last {MAX_QUEUED} messages"
            ));
        }
        self.state.to_guest.push_back(Message {
            key,
            value: value.to_vec(),
        });
        if let Some(irq) = &self.irq {
            irq.trigger();
        }
        Ok(())
    }

    /// The value the guest last published under `key`.
    pub fn published(&self, key: &str) -> Option<&[u8]> {
        self.state.published.get(key).map(Vec::as_slice)
    }

    fn emit(&mut self, event: ChannelEvent) {
        if let Some(listener) = &mut self.listener {
            listener(event);
        }
    }

    fn misbehaved(&mut self, detail: String) {
        self.state.misbehaviour_count += 1;
        self.state.last_status = 1;
        if self.window_start.elapsed() >= Duration::from_secs(1) {
            self.window_start = Instant::now();
            self.reports_in_window = 0;
        }
        if self.reports_in_window < REPORTS_PER_SECOND {
            self.reports_in_window += 1;
            let total = self.state.misbehaviour_count;
            self.emit(ChannelEvent::Misbehaved {
                detail: format!("guest channel: {detail} (ignored; {total} so far)"),
            });
        }
    }

    fn guest_send(&mut self, len: u64) {
        let len = len as usize;
        if len > MAX_FRAME {
            return self.misbehaved(format!("send of {len} bytes is over {MAX_FRAME}"));
        }
        let mut frame = vec![0u8; len];
        if let Err(e) = self
            .mem
            .read_slice(&mut frame, GuestAddress(self.state.buffer))
        {
            return self.misbehaved(format!(
                "buffer {:#x}+{len} is not guest RAM: {e}",
                self.state.buffer
            ));
        }
        match decode_frame(&frame) {
            Ok(message) => {
                self.state.last_status = 0;
                self.state
                    .published
                    .insert(message.key.clone(), message.value.clone());
                self.emit(ChannelEvent::Published(message));
            }
            Err(detail) => self.misbehaved(detail),
        }
    }

    fn guest_receive(&mut self) -> u32 {
        let Some(message) = self.state.to_guest.front() else {
            return 0;
        };
        let frame = encode_frame(message);
        let buffer = GuestAddress(self.state.buffer);
        if !self
            .mem
            .check_range(buffer, MAX_FRAME, vm_memory::Permissions::Write)
        {
            self.misbehaved(format!(
                "receive buffer {:#x} does not have {MAX_FRAME} bytes of guest RAM",
                self.state.buffer
            ));
            return 0;
        }
        match self.mem.write_slice(&frame, buffer) {
            Ok(()) => {
                self.state.to_guest.pop_front();
                frame.len() as u32
            }
            Err(e) => {
                self.misbehaved(format!("receive buffer unwritable: {e}"));
                0
            }
        }
    }
}

impl BusDevice for GuestChannel {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            8 => self.state.last_status,
            12 if data.len() == 4 => self.guest_receive(),
            _ => 0,
        };
        fill_le(data, u64::from(value));
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> DeviceAction {
        let value = le_value(data);
        match (offset, data.len()) {
            (0, 4) => self.state.buffer = (self.state.buffer & !0xffff_ffff) | value,
            (4, 4) => self.state.buffer = (self.state.buffer & 0xffff_ffff) | (value << 32),
            (8, 4) => self.guest_send(value),
            _ => self.misbehaved(format!(
                "{}-byte write at register offset {offset}",
                data.len()
            )),
        }
        DeviceAction::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn channel() -> (GuestChannel, Arc<Mutex<Vec<ChannelEvent>>>) {
        let mem = crate::vstate::memory::create(&[(0, 1 << 20)]).unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let mut c = GuestChannel::new(
            mem,
            Some(Irq::new(IRQ).unwrap()),
            Some(Box::new(move |e| sink.lock().unwrap().push(e))),
        );
        c.write(0, &0x1000u32.to_le_bytes());
        c.write(4, &0u32.to_le_bytes());
        (c, events)
    }

    #[test]
    fn frames_round_trip() {
        let m = Message {
            key: "k".into(),
            value: b"v".to_vec(),
        };
        assert_eq!(decode_frame(&encode_frame(&m)).unwrap(), m);
    }

    #[test]
    fn guest_publishes_and_receives() {
        let (mut c, events) = channel();
        let frame = encode_frame(&Message {
            key: "status".into(),
            value: b"up".to_vec(),
        });
        c.mem.write_slice(&frame, GuestAddress(0x1000)).unwrap();
        c.write(8, &(frame.len() as u32).to_le_bytes());
        assert_eq!(c.published("status"), Some(&b"up"[..]));
        assert!(
            matches!(&events.lock().unwrap()[0], ChannelEvent::Published(m) if m.key == "status")
        );

        c.send_to_guest("ping", b"1").unwrap();
        assert!(c.irq.as_ref().unwrap().take_count() > 0);
        let mut len = [0u8; 4];
        c.read(12, &mut len);
        assert_eq!(u32::from_le_bytes(len) as usize, 8 + 4 + 1);
        let mut back = vec![0u8; 13];
        c.mem.read_slice(&mut back, GuestAddress(0x1000)).unwrap();
        assert_eq!(decode_frame(&back).unwrap().key, "ping");
        c.read(12, &mut len);
        assert_eq!(u32::from_le_bytes(len), 0, "queue drained");
    }

    #[test]
    fn garbage_is_reported_and_ignored() {
        let (mut c, events) = channel();
        let mut bad = vec![0u8; 16];
        bad[..4].copy_from_slice(&5000u32.to_le_bytes());
        c.mem.write_slice(&bad, GuestAddress(0x1000)).unwrap();
        c.write(8, &16u32.to_le_bytes());
        c.write(8, &(1u32 << 30).to_le_bytes());
        c.write(2, &[1]);
        c.write(0, &0xffff_0000u32.to_le_bytes());
        c.write(8, &16u32.to_le_bytes());
        let mut status = [0u8; 4];
        c.read(8, &mut status);
        assert_eq!(u32::from_le_bytes(status), 1);
        assert_eq!(c.state().misbehaviour_count, 4);
        assert!(c.state().published.is_empty());
        let events = events.lock().unwrap();
        assert_eq!(events.len(), 4);
        assert!(
            events
                .iter()
                .all(|e| matches!(e, ChannelEvent::Misbehaved { .. }))
        );
    }

    #[test]
    fn host_sends_are_checked() {
        let (mut c, _) = channel();
        assert!(c.send_to_guest("", b"").is_err());
        assert!(c.send_to_guest(&"k".repeat(MAX_KEY + 1), b"").is_err());
        assert!(c.send_to_guest("k", &vec![0; MAX_VALUE + 1]).is_err());
        assert!(c.send_to_guest("a\nb", b"").is_err());
        for _ in 0..MAX_QUEUED {
            c.send_to_guest("k", b"v").unwrap();
        }
        assert!(c.send_to_guest("k", b"v").is_err(), "queue bound");
    }
}
