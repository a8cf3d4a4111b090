//! An 8250/16550 UART as the console on COM1: output goes to a `Console` (ring buffer, log
//! file, listener); input is queued for the guest. Interrupts (IRQ 4) for "transmitter
//! empty" and "data ready" as the guest enables them.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::{BusDevice, DeviceAction, Irq, lock};

/// COM1 base port.
pub const PORT: u64 = 0x3f8;
/// Eight registers.
pub const LEN: u64 = 8;
/// COM1's interrupt line.
pub const IRQ: u32 = 4;

const IER_RX_DATA: u8 = 0x01;
const IER_THR_EMPTY: u8 = 0x02;
const IIR_NONE: u8 = 0x01;
const IIR_THR_EMPTY: u8 = 0x02;
const IIR_RX_DATA: u8 = 0x04;
const IIR_FIFO_ENABLED: u8 = 0xc0;
const LCR_DLAB: u8 = 0x80;
const LSR_DATA_READY: u8 = 0x01;
const LSR_THR_EMPTY: u8 = 0x20;
const LSR_IDLE: u8 = 0x40;
const MSR_CONNECTED: u8 = 0xb0; // DCD, DSR, CTS
const RX_QUEUE_MAX: usize = 4096;

/// Guest-visible UART registers and queued input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SerialState {
    /// Interrupt enable.
    pub ier: u8,
    /// Line control.
    pub lcr: u8,
    /// Modem control.
    pub mcr: u8,
    /// Scratch.
    pub scr: u8,
    /// Divisor latch, low and high.
    pub divisor: u16,
    /// FIFO control as last written.
    pub fcr: u8,
    /// A "transmitter empty" interrupt is pending.
    pub thr_interrupt: bool,
    /// Input not yet read by the guest.
    pub rx: VecDeque<u8>,
}

impl Default for SerialState {
    fn default() -> Self {
        SerialState {
            ier: 0,
            lcr: 0x03,
            mcr: 0x08,
            scr: 0,
            divisor: 1,
            fcr: 0,
            thr_interrupt: false,
            rx: VecDeque::new(),
        }
    }
}

/// Receives console output chunks (a line, or what was there when flushed).
pub type ConsoleListener = Box<dyn FnMut(&[u8]) + Send>;

/// Where console output goes: a bounded ring buffer, an optional log file and a listener
/// that gets whole lines.
pub struct Console {
    inner: Mutex<ConsoleInner>,
}

struct ConsoleInner {
    ring: VecDeque<u8>,
    capacity: usize,
    pending: Vec<u8>,
    log: Option<File>,
    listener: Option<ConsoleListener>,
    total: u64,
}

impl Console {
    /// A console keeping the last `capacity` bytes.
    pub fn new(capacity: usize, log: Option<File>, listener: Option<ConsoleListener>) -> Self {
        Console {
            inner: Mutex::new(ConsoleInner {
                ring: VecDeque::with_capacity(capacity.min(1 << 16)),
                capacity,
                pending: Vec::new(),
                log,
                listener,
                total: 0,
            }),
        }
    }

    /// Appends guest output.
    pub fn push(&self, bytes: &[u8]) {
        let mut c = lock(&self.inner);
        c.total += bytes.len() as u64;
        for &b in bytes {
            if c.ring.len() == c.capacity {
                c.ring.pop_front();
            }
            c.ring.push_back(b);
        }
        c.pending.extend_from_slice(bytes);
        if bytes.contains(&b'\n') || c.pending.len() >= 1024 {
            c.flush();
        }
    }

    /// Hands pending output to the log and listener.
    pub fn flush(&self) {
        lock(&self.inner).flush();
    }

    /// The buffered output (the last `capacity` bytes).
    pub fn contents(&self) -> Vec<u8> {
        lock(&self.inner).ring.iter().copied().collect()
    }

    /// Bytes written since start.
    pub fn total(&self) -> u64 {
        lock(&self.inner).total
    }
}

impl ConsoleInner {
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let chunk = std::mem::take(&mut self.pending);
        if let Some(log) = &mut self.log {
            // A full disk must not stop the guest: the ring buffer still has the output.
            let _ = log.write_all(&chunk);
        }
        if let Some(listener) = &mut self.listener {
            listener(&chunk);
        }
    }
}

/// The UART.
pub struct Serial {
    state: SerialState,
    console: Arc<Console>,
    irq: Option<Irq>,
}

impl Serial {
    /// A UART writing to `console`, interrupting on `irq`.
    pub fn new(console: Arc<Console>, irq: Option<Irq>) -> Self {
        Serial {
            state: SerialState::default(),
            console,
            irq,
        }
    }

    /// The registers, for snapshots.
    pub fn state(&self) -> &SerialState {
        &self.state
    }

    /// Queues input for the guest; returns how many bytes were taken.
    pub fn queue_input(&mut self, input: &[u8]) -> usize {
        let room = RX_QUEUE_MAX.saturating_sub(self.state.rx.len());
        let n = input.len().min(room);
        self.state.rx.extend(&input[..n]);
        if n > 0 && self.state.ier & IER_RX_DATA != 0 {
            self.interrupt();
        }
        n
    }

    fn interrupt(&self) {
        if let Some(irq) = &self.irq {
            irq.trigger();
        }
    }

    fn iir(&mut self) -> u8 {
        let s = &mut self.state;
        let id = if s.ier & IER_RX_DATA != 0 && !s.rx.is_empty() {
            IIR_RX_DATA
        } else if s.ier & IER_THR_EMPTY != 0 && s.thr_interrupt {
            // Reading IIR acknowledges the "transmitter empty" interrupt.
            s.thr_interrupt = false;
            IIR_THR_EMPTY
        } else {
            IIR_NONE
        };
        let fifo = if s.fcr & 1 != 0 { IIR_FIFO_ENABLED } else { 0 };
        id | fifo
    }
}

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let dlab = self.state.lcr & LCR_DLAB != 0;
        let value = match offset {
            0 if dlab => self.state.divisor as u8,
            0 => self.state.rx.pop_front().unwrap_or(0),
            1 if dlab => (self.state.divisor >> 8) as u8,
            1 => self.state.ier,
            2 => self.iir(),
            3 => self.state.lcr,
            4 => self.state.mcr,
            5 => {
                let ready = if self.state.rx.is_empty() {
                    0
                } else {
                    LSR_DATA_READY
                };
                LSR_THR_EMPTY | LSR_IDLE | ready
            }
            6 => MSR_CONNECTED,
            7 => self.state.scr,
            _ => 0,
        };
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> DeviceAction {
        let Some(&value) = data.first() else {
            return DeviceAction::None;
        };
        let dlab = self.state.lcr & LCR_DLAB != 0;
        match offset {
            0 if dlab => self.state.divisor = (self.state.divisor & 0xff00) | u16::from(value),
            0 => {
                self.console.push(&[value]);
                if self.state.ier & IER_THR_EMPTY != 0 {
                    self.state.thr_interrupt = true;
                    self.interrupt();
                }
            }
            1 if dlab => {
                self.state.divisor = (self.state.divisor & 0x00ff) | (u16::from(value) << 8)
            }
            1 => {
                let enabling_thr =
                    value & IER_THR_EMPTY != 0 && self.state.ier & IER_THR_EMPTY == 0;
                self.state.ier = value & 0x0f;
                if enabling_thr {
                    self.state.thr_interrupt = true;
                    self.interrupt();
                }
            }
            2 => self.state.fcr = value,
            3 => self.state.lcr = value,
            4 => self.state.mcr = value,
            7 => self.state.scr = value,
            _ => {}
        }
        DeviceAction::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serial() -> (Serial, Arc<Console>, Arc<Mutex<Vec<u8>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let console = Arc::new(Console::new(
            8,
            None,
            Some(Box::new(move |b: &[u8]| {
                sink.lock().unwrap().extend_from_slice(b)
            })),
        ));
        (
            Serial::new(console.clone(), Some(Irq::new(4).unwrap())),
            console,
            seen,
        )
    }

    #[test]
    fn output_reaches_ring_and_listener_by_line() {
        let (mut s, console, seen) = serial();
        for &b in b"hello, world\n" {
            s.write(0, &[b]);
        }
        assert_eq!(console.contents().len(), 8, "ring keeps the last 8 bytes");
        assert_eq!(&console.contents()[..], b", world\n");
        assert_eq!(&seen.lock().unwrap()[..], b"hello, world\n");
        assert_eq!(console.total(), 13);
    }

    #[test]
    fn divisor_latch_and_input_with_interrupts() {
        let (mut s, _, _) = serial();
        s.write(3, &[LCR_DLAB]);
        s.write(0, &[0x0c]);
        s.write(1, &[0x00]);
        let mut b = [0u8];
        s.read(0, &mut b);
        assert_eq!(b[0], 0x0c);
        s.write(3, &[0x03]);
        s.write(1, &[IER_RX_DATA]);
        assert_eq!(s.queue_input(b"ab"), 2);
        assert!(s.irq.as_ref().unwrap().take_count() > 0);
        s.read(5, &mut b);
        assert_eq!(b[0] & LSR_DATA_READY, LSR_DATA_READY);
        s.read(2, &mut b);
        assert_eq!(b[0] & 0x0f, IIR_RX_DATA);
        s.read(0, &mut b);
        assert_eq!(b[0], b'a');
        s.read(0, &mut b);
        s.read(5, &mut b);
        assert_eq!(b[0] & LSR_DATA_READY, 0);
    }
}
