/*
 * ovm test guest: a freestanding 64-bit program booted by the PVH protocol. It prints a
 * banner and its command line on COM1, reports "ready" on the boot-timer port and runs the
 * workload its command line names:
 *
 *   idle                    halt, answering guest-channel commands
 *   dirty=<MiB/s>,span=<MiB> rewrite a verifiable pattern over span MiB at that rate
 *   checksum[,span=<MiB>]   write the pattern once, verify it and print the result
 *   kv                      echo key/value messages from the host
 *   poweroff | reboot       power off (exit port) | reset (i8042)
 *   crash                   triple fault
 *   garbage                 random writes to random I/O ports and MMIO addresses
 *   spin                    loop forever with interrupts off
 *   blk[=rw|ro|garbage]     drive the first virtio-mmio block device (blk.c), then power off
 *
 * Every workload except spin, crash and garbage also obeys the channel key "ovm.cmd":
 * "poweroff" powers off, "checksum" verifies the pattern and publishes "ovm.checksum".
 */
#include "guest.h"
#include "ports.h"

#define PVH_MAGIC 0x336ec578u
#define PATTERN_BASE (16ul << 20) /* the dirty/checksum span starts at 16 MiB */
#define PAGE 4096ul

struct hvm_start_info {
	u32 magic, version, flags, nr_modules;
	u64 modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
	u32 memmap_entries, reserved;
};

struct hvm_memmap_entry {
	u64 addr, size;
	u32 type, reserved;
};

struct idt_entry {
	u16 offset_low, selector;
	u8 ist, type_attr;
	u16 offset_mid;
	u32 offset_high, zero;
} __attribute__((packed));

struct idt_ptr {
	u16 limit;
	u64 base;
} __attribute__((packed));

extern const u64 isr_table[48];

static struct idt_entry idt[48];
static volatile u64 ticks;
static volatile int chan_pending;
static u8 chan_buf[CHAN_MAX_FRAME] __attribute__((aligned(16)));
u64 mem_top = 32ul << 20;
static u64 span_bytes = 16ul << 20;
static u64 generation;

/* ---- port I/O ---- */

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outw(u16 port, u16 v) { __asm__ volatile("outw %0, %1" ::"a"(v), "Nd"(port)); }
static inline u8 inb(u16 port)
{
	u8 v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}
static inline u32 inl(u16 port)
{
	u32 v;
	__asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}
static inline u64 rdtsc(void)
{
	u32 lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((u64)hi << 32) | lo;
}

/* ---- strings ---- */

u64 str_len(const char *s)
{
	u64 n = 0;
	while (s[n])
		n++;
	return n;
}

int starts_with(const char *s, const char *prefix)
{
	while (*prefix)
		if (*s++ != *prefix++)
			return 0;
	return 1;
}

int word_is(const char *s, const char *word)
{
	u64 n = str_len(word);
	return starts_with(s, word) && (s[n] == 0 || s[n] == ' ' || s[n] == ',');
}

static void mem_copy(void *dst, const void *src, u64 n)
{
	u8 *d = dst;
	const u8 *s = src;
	while (n--)
		*d++ = *s++;
}

/* Parses the decimal number after "name=" anywhere in s; `fallback` if absent. */
static u64 param(const char *s, const char *name, u64 fallback)
{
	u64 n = str_len(name);
	for (const char *start = s; *s; s++) {
		int at_word = s == start || s[-1] == ' ' || s[-1] == ',';
		if (at_word && starts_with(s, name) && s[n] == '=') {
			u64 v = 0;
			const char *p = s + n + 1;
			if (*p < '0' || *p > '9')
				return fallback;
			while (*p >= '0' && *p <= '9')
				v = v * 10 + (u64)(*p++ - '0');
			return v;
		}
	}
	return fallback;
}

/* ---- serial console ---- */

static void serial_init(void)
{
	outb(PORT_COM1 + 1, 0x00); /* no interrupts */
	outb(PORT_COM1 + 3, 0x80); /* DLAB */
	outb(PORT_COM1 + 0, 0x01); /* 115200 baud */
	outb(PORT_COM1 + 1, 0x00);
	outb(PORT_COM1 + 3, 0x03); /* 8N1 */
	outb(PORT_COM1 + 2, 0xc7); /* FIFO on */
}

/* Bytes the transmit FIFO still takes: "transmitter empty" means 16 free places, so the
 * line status is read once per 16 bytes, not per byte (each read is a VM exit). */
static int tx_room;

static void putc(char c)
{
	if (tx_room == 0) {
		for (int i = 0; i < 100000 && !(inb(PORT_COM1 + 5) & 0x20); i++)
			;
		tx_room = 16;
	}
	outb(PORT_COM1, (u8)c);
	tx_room--;
}

void puts(const char *s)
{
	while (*s) {
		if (*s == '\n')
			putc('\r');
		putc(*s++);
	}
}

void put_dec(u64 v)
{
	char buf[21];
	int i = 20;
	buf[i] = 0;
	do {
		buf[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	puts(&buf[i]);
}

void put_hex(u64 v)
{
	char buf[19];
	buf[0] = '0';
	buf[1] = 'x';
	for (int i = 0; i < 16; i++)
		buf[2 + i] = "0123456789abcdef"[(v >> (60 - 4 * i)) & 0xf];
	buf[18] = 0;
	puts(buf);
}

/* ---- power ---- */

static void triple_fault(void)
{
	struct idt_ptr none = {0, 0};
	__asm__ volatile("cli; lidt %0; ud2" ::"m"(none));
	for (;;)
		;
}

void poweroff(void)
{
	puts("ovm-guest: poweroff\n");
	outl(PORT_EXIT, EXIT_POWEROFF);
	for (;;)
		__asm__ volatile("cli; hlt");
}

static void reboot(void)
{
	puts("ovm-guest: reboot\n");
	outb(PORT_I8042_CMD, I8042_RESET);
	/* No i8042 (e.g. a machine without one): a triple fault resets too. */
	triple_fault();
}

/* ---- interrupts ---- */

static void pic_eoi(u64 irq)
{
	if (irq >= 8)
		outb(0xa0, 0x20);
	outb(0x20, 0x20);
}

void guest_interrupt(u64 vector, u64 *frame)
{
	if (vector < 32) {
		puts("ovm-guest: exception ");
		put_dec(vector);
		/* After the saved registers and the vector: [error code,] rip. */
		int has_error = vector == 8 || (vector >= 10 && vector <= 14) || vector == 17 || vector == 21;
		puts(" at rip ");
		put_hex(frame[has_error ? 11 : 10]);
		if (has_error) {
			puts(" error ");
			put_hex(frame[10]);
		}
		puts(", crashing\n");
		triple_fault();
	}
	u64 irq = vector - 32;
	if (irq == 0)
		ticks++;
	else if (irq == CHAN_IRQ)
		chan_pending = 1;
	pic_eoi(irq);
}

static void interrupts_init(int timer)
{
	for (int v = 0; v < 48; v++) {
		u64 a = isr_table[v];
		idt[v].offset_low = (u16)a;
		idt[v].selector = 0x08;
		idt[v].ist = 0;
		idt[v].type_attr = 0x8e; /* present, ring 0, interrupt gate */
		idt[v].offset_mid = (u16)(a >> 16);
		idt[v].offset_high = (u32)(a >> 32);
		idt[v].zero = 0;
	}
	struct idt_ptr p = {sizeof(idt) - 1, (u64)idt};
	__asm__ volatile("lidt %0" ::"m"(p));

	/* Local APIC on (spurious vector 47) with LINT0 in ExtINT mode, so the 8259 reaches us. */
	volatile u32 *lapic = (volatile u32 *)0xfee00000ul;
	lapic[0xf0 / 4] = 0x100 | 47;
	lapic[0x350 / 4] = 0x700;

	/* 8259 pair: vectors 32..47, only the channel line (and the timer if asked) open. */
	outb(0x20, 0x11);
	outb(0xa0, 0x11);
	outb(0x21, 32);
	outb(0xa1, 40);
	outb(0x21, 0x04);
	outb(0xa1, 0x02);
	outb(0x21, 0x01);
	outb(0xa1, 0x01);
	u8 mask = (u8)~((1u << CHAN_IRQ) | (1u << 2) | (timer ? 1u : 0u));
	outb(0x21, mask);
	outb(0xa1, 0xff);

	if (timer) {
		/* PIT channel 0, rate generator, 100 Hz. */
		u32 divisor = 1193182 / 100;
		outb(0x43, 0x34);
		outb(0x40, (u8)divisor);
		outb(0x40, (u8)(divisor >> 8));
	}
	__asm__ volatile("sti");
}

/* Sleeps until an interrupt arrives. */
static void wait_for_interrupt(void) { __asm__ volatile("sti; hlt"); }

/* ---- guest channel ---- */

static void chan_init(void)
{
	u64 a = (u64)chan_buf;
	outl(PORT_CHAN + 0, (u32)a);
	outl(PORT_CHAN + 4, (u32)(a >> 32));
}

static void chan_send(const char *key, const u8 *value, u32 value_len)
{
	u32 key_len = (u32)str_len(key);
	if (key_len > CHAN_MAX_KEY)
		key_len = CHAN_MAX_KEY;
	if (value_len > CHAN_MAX_VALUE)
		value_len = CHAN_MAX_VALUE;
	mem_copy(chan_buf, &key_len, 4);
	mem_copy(chan_buf + 4, &value_len, 4);
	mem_copy(chan_buf + 8, key, key_len);
	mem_copy(chan_buf + 8 + key_len, value, value_len);
	outl(PORT_CHAN + 8, 8 + key_len + value_len);
}

/* Receives one frame: returns 1 and points key/value into a copy, 0 when none. */
static char recv_key[CHAN_MAX_KEY + 1];
static u8 recv_value[CHAN_MAX_VALUE];
static u32 recv_value_len;

static int chan_recv(void)
{
	u32 len = inl(PORT_CHAN + 12);
	if (len < 8 || len > CHAN_MAX_FRAME)
		return 0;
	u32 key_len, value_len;
	mem_copy(&key_len, chan_buf, 4);
	mem_copy(&value_len, chan_buf + 4, 4);
	if (key_len > CHAN_MAX_KEY || value_len > CHAN_MAX_VALUE || 8 + key_len + value_len != len)
		return 0;
	mem_copy(recv_key, chan_buf + 8, key_len);
	recv_key[key_len] = 0;
	mem_copy(recv_value, chan_buf + 8 + key_len, value_len);
	recv_value_len = value_len;
	return 1;
}

/* ---- the memory pattern ---- */

static inline u64 pattern_word(u64 addr, u64 gen) { return (addr * 0x9e3779b97f4a7c15ul) ^ (gen << 32) ^ gen; }

/* Writes one page of the pattern: word 0 holds the generation, the rest derive from it. */
static void pattern_write_page(u64 page, u64 gen)
{
	volatile u64 *w = (volatile u64 *)page;
	w[0] = gen;
	for (u64 i = 1; i < PAGE / 8; i++)
		w[i] = pattern_word(page + i * 8, gen);
}

struct checksum {
	u64 pages, written, bad, sum;
};

static struct checksum pattern_verify(void)
{
	struct checksum c = {0, 0, 0, 0};
	for (u64 page = PATTERN_BASE; page < PATTERN_BASE + span_bytes; page += PAGE) {
		volatile u64 *w = (volatile u64 *)page;
		u64 gen = w[0];
		c.pages++;
		c.sum = c.sum * 31 + gen;
		if (gen == 0)
			continue;
		c.written++;
		for (u64 i = 1; i < PAGE / 8; i++)
			if (w[i] != pattern_word(page + i * 8, gen)) {
				c.bad++;
				break;
			}
	}
	return c;
}

static u32 format_checksum(char *out, struct checksum c)
{
	/* "ok|bad pages=N written=N bad=N sum=0x..." */
	static const char digits[] = "0123456789abcdef";
	u32 n = 0;
	const char *head = c.bad ? "bad" : "ok";
	while (*head)
		out[n++] = *head++;
	const char *names[3] = {" pages=", " written=", " bad="};
	u64 values[3] = {c.pages, c.written, c.bad};
	for (int k = 0; k < 3; k++) {
		for (const char *p = names[k]; *p; p++)
			out[n++] = *p;
		char tmp[21];
		int i = 20;
		u64 v = values[k];
		do {
			tmp[--i] = (char)('0' + v % 10);
			v /= 10;
		} while (v);
		while (i < 20)
			out[n++] = tmp[i++];
	}
	for (const char *p = " sum=0x"; *p; p++)
		out[n++] = *p;
	for (int i = 0; i < 16; i++)
		out[n++] = digits[(c.sum >> (60 - 4 * i)) & 0xf];
	out[n] = 0;
	return n;
}

static void report_checksum(void)
{
	char text[128];
	struct checksum c = pattern_verify();
	u32 n = format_checksum(text, c);
	puts("ovm-guest: checksum ");
	puts(text);
	puts("\n");
	chan_send("ovm.checksum", (const u8 *)text, n);
}

/* Handles pending host messages; `echo` answers every other key (the kv workload). */
static void serve_channel(int echo)
{
	chan_pending = 0;
	while (chan_recv()) {
		if (word_is(recv_key, "ovm.cmd") && recv_key[7] == 0) {
			if (recv_value_len == 8 && starts_with((const char *)recv_value, "poweroff"))
				poweroff();
			else if (recv_value_len == 8 && starts_with((const char *)recv_value, "checksum"))
				report_checksum();
			else if (recv_value_len == 6 && starts_with((const char *)recv_value, "reboot"))
				reboot();
		} else if (echo) {
			/* Answer under the same key with "echo:" + value. */
			static u8 reply[CHAN_MAX_VALUE];
			u32 n = 5;
			mem_copy(reply, "echo:", 5);
			u32 take = recv_value_len;
			if (take > CHAN_MAX_VALUE - 5)
				take = CHAN_MAX_VALUE - 5;
			mem_copy(reply + 5, recv_value, take);
			n += take;
			chan_send(recv_key, reply, n);
		}
	}
}

/* ---- workloads ---- */

static void run_idle(int echo)
{
	interrupts_init(0);
	for (;;) {
		serve_channel(echo);
		__asm__ volatile("cli");
		if (!chan_pending)
			wait_for_interrupt();
		__asm__ volatile("sti");
	}
}

static void run_dirty(u64 rate_mib)
{
	interrupts_init(1);
	u64 per_tick = (rate_mib << 20) / 100;
	u64 page = PATTERN_BASE, carry = 0, last_report = 0, pages_since_report = 0;
	generation = 1;
	puts("ovm-guest: dirty rate=");
	put_dec(rate_mib);
	puts("MiB/s span=");
	put_dec(span_bytes >> 20);
	puts("MiB\n");
	for (;;) {
		carry += per_tick;
		while (carry >= PAGE) {
			pattern_write_page(page, generation);
			pages_since_report++;
			carry -= PAGE;
			page += PAGE;
			if (page >= PATTERN_BASE + span_bytes) {
				page = PATTERN_BASE;
				generation++;
			}
		}
		if (ticks - last_report >= 100) {
			/* The rate reached: lower than asked where the CPU cannot keep up. */
			u64 kib_per_s = pages_since_report * 4 * 100 / (ticks - last_report);
			last_report = ticks;
			pages_since_report = 0;
			puts("ovm-guest: dirty pass ");
			put_dec(generation);
			puts(", ");
			put_dec(kib_per_s);
			puts(" KiB/s\n");
		}
		serve_channel(0);
		u64 t = ticks;
		while (ticks == t && !chan_pending)
			wait_for_interrupt();
	}
}

static void run_checksum(void)
{
	generation = 1;
	for (u64 page = PATTERN_BASE; page < PATTERN_BASE + span_bytes; page += PAGE)
		pattern_write_page(page, generation);
	report_checksum();
	run_idle(0);
}

static u64 rng_state;

void rng_seed(void) { rng_state = rdtsc() | 1; }

u64 rng(void)
{
	u64 x = rng_state;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	rng_state = x;
	return x;
}

static int port_is_spared(u16 port)
{
	/* Keep the console readable and the VM alive: no exit, reset, COM1 or channel ports. */
	return port == PORT_EXIT || (port >= PORT_EXIT && port < PORT_EXIT + 4) || port == PORT_I8042_CMD ||
	       (port >= PORT_COM1 && port < PORT_COM1 + 8) || (port >= PORT_CHAN && port < PORT_CHAN + 16) ||
	       port == 0xcf9 /* PCI reset control */ || port == 0x92 /* fast A20/reset */;
}

static void run_garbage(void)
{
	rng_seed();
	puts("ovm-guest: garbage\n");
	for (u64 round = 1;; round++) {
		for (int i = 0; i < 256; i++) {
			u64 r = rng();
			u16 port = (u16)(r >> 16);
			if (!port_is_spared(port)) {
				switch (r & 3) {
				case 0: outb(port, (u8)(r >> 40)); break;
				case 1: outw(port, (u16)(r >> 40)); break;
				case 2: outl(port, (u32)(r >> 32)); break;
				default: (void)inb(port); break;
				}
			}
			/* MMIO in the hole below 4 GiB, above guest RAM, sparing the APICs. */
			u64 addr = 0xc0000000ul + ((rng() & 0x3effffff) & ~7ul);
			if (addr >= mem_top && addr < 0xfec00000ul) {
				if (r & 4)
					*(volatile u32 *)addr = (u32)rng();
				else
					(void)*(volatile u32 *)addr;
			}
		}
		/* A malformed frame on the channel: it must be reported and ignored. */
		u32 bogus[2] = {(u32)rng() | 0x10000, (u32)rng()};
		mem_copy(chan_buf, bogus, sizeof(bogus));
		outl(PORT_CHAN + 8, 8 + (u32)(rng() & 0xff));
		if (round % 64 == 0) {
			puts("ovm-guest: garbage round ");
			put_dec(round);
			puts("\n");
		}
	}
}

/* ---- entry ---- */

static const char *cmdline_of(const struct hvm_start_info *si)
{
	if (!si || si->magic != PVH_MAGIC || !si->cmdline_paddr)
		return "";
	return (const char *)si->cmdline_paddr;
}

static void find_memory(const struct hvm_start_info *si)
{
	if (!si || si->magic != PVH_MAGIC || si->version < 1 || !si->memmap_paddr)
		return;
	const struct hvm_memmap_entry *e = (const struct hvm_memmap_entry *)si->memmap_paddr;
	u64 top = 0;
	for (u32 i = 0; i < si->memmap_entries && i < 128; i++)
		if (e[i].type == 1 && e[i].addr < (4ul << 30) && e[i].addr + e[i].size > top)
			top = e[i].addr + e[i].size;
	if (top)
		mem_top = top > (4ul << 30) ? (4ul << 30) : top;
}

void guest_main(const struct hvm_start_info *si)
{
	serial_init();
	const char *cmdline = cmdline_of(si);
	find_memory(si);
	puts("ovm-guest: hello from the ovm test guest\n");
	puts("ovm-guest: cmdline: ");
	puts(cmdline);
	puts("\n");
	puts("ovm-guest: memory ");
	put_dec(mem_top >> 20);
	puts(" MiB\n");

	u64 room = mem_top > PATTERN_BASE + PAGE ? mem_top - PATTERN_BASE : 0;
	span_bytes = param(cmdline, "span", 16) << 20;
	if (span_bytes > room)
		span_bytes = room & ~(PAGE - 1);

	chan_init();
	outb(PORT_BOOT_TIMER, BOOT_READY_VALUE);
	puts("ovm-guest: ready\n");

	if (word_is(cmdline, "idle") || cmdline[0] == 0)
		run_idle(0);
	else if (starts_with(cmdline, "dirty"))
		run_dirty(param(cmdline, "dirty", 16));
	else if (word_is(cmdline, "checksum"))
		run_checksum();
	else if (word_is(cmdline, "kv"))
		run_idle(1);
	else if (word_is(cmdline, "poweroff"))
		poweroff();
	else if (word_is(cmdline, "reboot"))
		reboot();
	else if (word_is(cmdline, "crash")) {
		puts("ovm-guest: crash: triple fault\n");
		triple_fault();
	} else if (word_is(cmdline, "garbage"))
		run_garbage();
	else if (word_is(cmdline, "blk") || starts_with(cmdline, "blk="))
		run_blk(cmdline);
	else if (word_is(cmdline, "spin")) {
		puts("ovm-guest: spin\n");
		__asm__ volatile("cli");
		for (;;)
			__asm__ volatile("pause");
	} else {
		puts("ovm-guest: unknown workload, idling\n");
		run_idle(0);
	}
}
