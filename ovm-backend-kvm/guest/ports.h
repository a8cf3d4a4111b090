/*
 * The I/O ports the ovm test guest uses. The VMM (ovm-backend-kvm/src/devices) implements
 * the same numbers; docs/kvm.md lists them.
 */
#ifndef OVM_GUEST_PORTS_H
#define OVM_GUEST_PORTS_H

/* 8250 UART, COM1: console. IRQ 4. */
#define PORT_COM1 0x3f8

/* Boot timer: writing BOOT_READY_VALUE (a byte) marks "guest ready" (Firecracker's magic
 * port and value). */
#define PORT_BOOT_TIMER 0x3f0
#define BOOT_READY_VALUE 123

/* Exit port (QEMU isa-debug-exit compatible, iobase 0xf4, 4 bytes): a 32-bit write of
 * EXIT_POWEROFF powers the VM off. QEMU exits with status (value << 1) | 1. */
#define PORT_EXIT 0xf4
#define EXIT_POWEROFF 0

/* i8042 command port: writing 0xfe pulses the CPU reset line (reboot). */
#define PORT_I8042_CMD 0x64
#define I8042_RESET 0xfe

/* Guest channel: framed key/value messages both ways, exchanged through a guest buffer.
 *   +0  (32-bit write) buffer guest-physical address, low half
 *   +4  (32-bit write) buffer guest-physical address, high half
 *   +8  (32-bit write) send the frame of this length that is in the buffer
 *       (32-bit read)  status of the last send: 0 accepted, 1 rejected
 *   +12 (32-bit read)  receive: the VMM copies its next frame into the buffer (which must
 *                      hold CHAN_MAX_FRAME bytes) and returns its length, 0 when none
 * Frame: u32 key length, u32 value length (little endian), key bytes, value bytes.
 * Key 1..=256 bytes of UTF-8 without control characters, value at most 8192 bytes.
 * IRQ 5 is raised when the VMM queues a frame for the guest. */
#define PORT_CHAN 0x0e00
#define CHAN_IRQ 5
#define CHAN_MAX_KEY 256
#define CHAN_MAX_VALUE 8192
#define CHAN_MAX_FRAME (8 + CHAN_MAX_KEY + CHAN_MAX_VALUE)

#endif
