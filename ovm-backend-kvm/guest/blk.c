/*
 * A minimal virtio-mmio (virtio 1.x, "modern", register version 2) block driver and the
 * workloads that exercise the VMM's device from inside the guest. The device is found the
 * way Linux finds it without a device tree or ACPI: "virtio_mmio.device=<size>@<base>:<irq>"
 * on the command line (the VMM appends one per disk). One split virtqueue of QSZ entries;
 * requests are completed while the notify write traps, and the driver polls the used ring
 * (no interrupts).
 *
 *   blk, blk=rw   read sectors 0..N-1 and print their FNV-1a sum; write a known pattern to
 *                 sectors N..2N-1 (two buffers in one chain); flush; read them back and
 *                 verify; get the device id; check a read past the end is refused
 *   blk=ro        the device must offer VIRTIO_BLK_F_RO; reads work, a write must come back
 *                 VIRTIO_BLK_S_IOERR
 *   blk=garbage   malformed requests and descriptor chains (addresses outside RAM, lengths
 *                 past RAM or the disk, loops, bad indices, tables outside RAM) plus random
 *                 chains; each must end in an error status or DEVICE_NEEDS_RESET (then the
 *                 driver resets the device), after which a normal read must still work
 *
 * Each prints one result line, "blk: ok ...", "blk: ro ok ...", "blk: garbage ok ..." or
 * "blk: FAIL <why>", then powers the VM off.
 */
#include "guest.h"

#define N_SECTORS 8 /* per region: 4 KiB */
#define SECTOR 512ul
#define QSZ 8

/* virtio-mmio registers (virtio 1.x, 4.2.2). */
#define R_MAGIC 0x000
#define R_VERSION 0x004
#define R_DEVICE_ID 0x008
#define R_DEVICE_FEATURES 0x010
#define R_DEVICE_FEATURES_SEL 0x014
#define R_DRIVER_FEATURES 0x020
#define R_DRIVER_FEATURES_SEL 0x024
#define R_QUEUE_SEL 0x030
#define R_QUEUE_NUM_MAX 0x034
#define R_QUEUE_NUM 0x038
#define R_QUEUE_READY 0x044
#define R_QUEUE_NOTIFY 0x050
#define R_STATUS 0x070
#define R_QUEUE_DESC 0x080
#define R_QUEUE_AVAIL 0x090
#define R_QUEUE_USED 0x0a0
#define R_CONFIG 0x100

#define MAGIC 0x74726976u /* "virt" */
#define DEVICE_BLOCK 2
#define S_ACKNOWLEDGE 1
#define S_DRIVER 2
#define S_DRIVER_OK 4
#define S_FEATURES_OK 8
#define S_NEEDS_RESET 0x40

#define F_RO (1ul << 5)
#define F_FLUSH (1ul << 9)
#define F_VERSION_1 (1ul << 32)

#define D_NEXT 1
#define D_WRITE 2

#define T_IN 0
#define T_OUT 1
#define T_FLUSH 4
#define T_GET_ID 8
#define ST_OK 0
#define ST_IOERR 1
#define ST_UNSUPP 2
#define NOT_COMPLETED (-1)

struct vq_desc {
	u64 addr;
	u32 len;
	u16 flags, next;
};

struct vq_avail {
	u16 flags, idx, ring[QSZ], used_event;
};

struct vq_used {
	u16 flags, idx;
	struct {
		u32 id, len;
	} ring[QSZ];
	u16 avail_event;
};

struct blk_header {
	u32 type, reserved;
	u64 sector;
};

static struct vq_desc desc[QSZ] __attribute__((aligned(64)));
static struct vq_avail avail __attribute__((aligned(64)));
static struct vq_used used __attribute__((aligned(64)));
static struct blk_header header __attribute__((aligned(64)));
static volatile u8 status_byte __attribute__((aligned(64)));
static u8 buf_in[N_SECTORS * SECTOR] __attribute__((aligned(4096)));
static u8 buf_out[N_SECTORS * SECTOR] __attribute__((aligned(4096)));
static u8 scratch[16384] __attribute__((aligned(4096)));
static char id[21];

static u64 base;      /* MMIO window */
static u64 features;  /* negotiated */
static u64 capacity;  /* sectors */
static u16 avail_idx; /* next index the driver publishes */

static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }
static inline u32 reg_read(u32 off) { return *(volatile u32 *)(base + off); }
static inline void reg_write(u32 off, u32 v) { *(volatile u32 *)(base + off) = v; }
static void reg_write64(u32 off, u64 v)
{
	reg_write(off, (u32)v);
	reg_write(off + 4, (u32)(v >> 32));
}

static void __attribute__((noreturn)) fail(const char *why, u64 value)
{
	puts("blk: FAIL ");
	puts(why);
	puts(" (");
	put_hex(value);
	puts(")\n");
	poweroff();
}

/* ---- finding the device ---- */

/* An unsigned number, decimal or 0x-hex; advances *p. 0 when there are no digits. */
static int parse_num(const char **p, u64 *out)
{
	const char *s = *p;
	u64 v = 0;
	int digits = 0;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		for (s += 2;; s++, digits++) {
			char c = *s;
			if (c >= '0' && c <= '9')
				v = v * 16 + (u64)(c - '0');
			else if (c >= 'a' && c <= 'f')
				v = v * 16 + (u64)(c - 'a' + 10);
			else if (c >= 'A' && c <= 'F')
				v = v * 16 + (u64)(c - 'A' + 10);
			else
				break;
		}
	} else {
		for (; *s >= '0' && *s <= '9'; s++, digits++)
			v = v * 10 + (u64)(*s - '0');
	}
	*p = s;
	*out = v;
	return digits > 0;
}

/* The first "virtio_mmio.device=<size>[KMG]@<base>:<irq>[:<id>]" on the command line. */
static int find_device(const char *cmdline, u64 *size, u64 *mmio_base, u64 *irq)
{
	static const char key[] = "virtio_mmio.device=";
	for (const char *s = cmdline; *s; s++) {
		if ((s != cmdline && s[-1] != ' ') || !starts_with(s, key))
			continue;
		const char *p = s + sizeof(key) - 1;
		if (!parse_num(&p, size))
			return 0;
		if (*p == 'K' || *p == 'k')
			*size <<= 10, p++;
		else if (*p == 'M' || *p == 'm')
			*size <<= 20, p++;
		else if (*p == 'G' || *p == 'g')
			*size <<= 30, p++;
		if (*p++ != '@' || !parse_num(&p, mmio_base) || *p++ != ':' || !parse_num(&p, irq))
			return 0;
		return *p == 0 || *p == ' ' || *p == ':';
	}
	return 0;
}

/* ---- the device ---- */

/* Resets the device and brings it up with one queue whose tables are at `desc_at`,
 * `avail_at`, `used_at`; returns an error text or 0. */
static const char *bring_up(u64 desc_at, u64 avail_at, u64 used_at)
{
	reg_write(R_STATUS, 0);
	if (reg_read(R_STATUS) != 0)
		return "device did not reset";
	reg_write(R_STATUS, S_ACKNOWLEDGE);
	reg_write(R_STATUS, S_ACKNOWLEDGE | S_DRIVER);
	reg_write(R_DEVICE_FEATURES_SEL, 0);
	u64 offered = reg_read(R_DEVICE_FEATURES);
	reg_write(R_DEVICE_FEATURES_SEL, 1);
	offered |= (u64)reg_read(R_DEVICE_FEATURES) << 32;
	if (!(offered & F_VERSION_1))
		return "device does not offer VIRTIO_F_VERSION_1";
	features = offered & (F_VERSION_1 | F_RO | F_FLUSH);
	reg_write(R_DRIVER_FEATURES_SEL, 0);
	reg_write(R_DRIVER_FEATURES, (u32)features);
	reg_write(R_DRIVER_FEATURES_SEL, 1);
	reg_write(R_DRIVER_FEATURES, (u32)(features >> 32));
	reg_write(R_STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK);
	if (!(reg_read(R_STATUS) & S_FEATURES_OK))
		return "device refused the features";

	reg_write(R_QUEUE_SEL, 0);
	if (reg_read(R_QUEUE_READY))
		return "queue 0 already live after reset";
	if (reg_read(R_QUEUE_NUM_MAX) < QSZ)
		return "queue 0 is too small";
	/* Fresh rings: the device starts again at index 0. */
	for (u64 i = 0; i < sizeof(avail); i++)
		((volatile u8 *)&avail)[i] = 0;
	for (u64 i = 0; i < sizeof(used); i++)
		((volatile u8 *)&used)[i] = 0;
	avail_idx = 0;
	reg_write(R_QUEUE_NUM, QSZ);
	reg_write64(R_QUEUE_DESC, desc_at);
	reg_write64(R_QUEUE_AVAIL, avail_at);
	reg_write64(R_QUEUE_USED, used_at);
	reg_write(R_QUEUE_READY, 1);
	reg_write(R_STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
	capacity = reg_read(R_CONFIG) | (u64)reg_read(R_CONFIG + 4) << 32;
	return 0;
}

static void bring_up_or_fail(void)
{
	const char *err = bring_up((u64)desc, (u64)&avail, (u64)&used);
	if (err)
		fail(err, reg_read(R_STATUS));
}

/* Publishes the chain at `head` and notifies; 1 when the device put it in the used ring. */
static int submit(u16 head)
{
	avail.ring[avail_idx % QSZ] = head;
	barrier();
	avail_idx++;
	*(volatile u16 *)&avail.idx = avail_idx;
	barrier();
	reg_write(R_QUEUE_NOTIFY, 0);
	/* ovm's device completes requests while the notify write traps; others (QEMU) may
	 * finish them asynchronously. Poll the used ring, then keep polling while reading the
	 * status register (each read traps, ~2-3 s in all) until the request completes or the
	 * device asks for a reset. */
	for (int i = 0; i < 1000; i++) {
		if (*(volatile u16 *)&used.idx == avail_idx)
			return 1;
		__asm__ volatile("pause");
	}
	for (int i = 0; i < 100000; i++) {
		if (*(volatile u16 *)&used.idx == avail_idx)
			return 1;
		if (reg_read(R_STATUS) & S_NEEDS_RESET)
			return 0;
	}
	return 0;
}

struct seg {
	u64 addr;
	u32 len;
	int device_writes;
};

/* One request: header, `n` data buffers, status byte. Returns the status byte, or
 * NOT_COMPLETED. */
static int request(u32 type, u64 sector, const struct seg *segs, int n)
{
	header.type = type;
	header.reserved = 0;
	header.sector = sector;
	status_byte = 0xff;
	desc[0] = (struct vq_desc){(u64)&header, sizeof(header), D_NEXT, 1};
	for (int i = 0; i < n; i++)
		desc[1 + i] = (struct vq_desc){segs[i].addr, segs[i].len,
					       (u16)(D_NEXT | (segs[i].device_writes ? D_WRITE : 0)), (u16)(2 + i)};
	desc[1 + n] = (struct vq_desc){(u64)&status_byte, 1, D_WRITE, 0};
	barrier();
	if (!submit(0))
		return NOT_COMPLETED;
	return status_byte;
}

static int read_sectors(u64 sector, u8 *buf, u32 count)
{
	struct seg s = {(u64)buf, count * (u32)SECTOR, 1};
	return request(T_IN, sector, &s, 1);
}

static u64 fnv1a(const u8 *p, u64 n)
{
	u64 h = 0xcbf29ce484222325ul;
	while (n--) {
		h ^= *p++;
		h *= 0x100000001b3ul;
	}
	return h;
}

/* The byte the rw workload writes at disk offset `o` (the host test checks the same). */
static u8 pattern(u64 o) { return (u8)((o * 7) ^ (o >> 9) ^ 0xa5); }

static void find_and_bring_up(const char *cmdline)
{
	u64 size, irq;
	if (!find_device(cmdline, &size, &base, &irq))
		fail("no virtio_mmio.device=<size>@<base>:<irq> on the command line", 0);
	if (size < 0x200 || base < mem_top || base >= (4ul << 30))
		fail("virtio_mmio.device window is not in the MMIO hole", base);
	if (reg_read(R_MAGIC) != MAGIC)
		fail("no virtio-mmio magic at the base", reg_read(R_MAGIC));
	if (reg_read(R_VERSION) != 2)
		fail("not a virtio 1.x (version 2) virtio-mmio device", reg_read(R_VERSION));
	if (reg_read(R_DEVICE_ID) != DEVICE_BLOCK)
		fail("not a block device", reg_read(R_DEVICE_ID));
	bring_up_or_fail();
	puts("blk: device at ");
	put_hex(base);
	puts(" irq ");
	put_dec(irq);
	puts(", ");
	put_dec(capacity);
	puts(" sectors");
	puts(features & F_RO ? ", read-only" : "");
	puts(features & F_FLUSH ? ", flush" : "");
	puts("\n");
	if (capacity < 2 * N_SECTORS)
		fail("disk smaller than 16 sectors", capacity);
}

/* ---- workloads ---- */

static void run_rw(void)
{
	int st = read_sectors(0, buf_in, N_SECTORS);
	if (st != ST_OK)
		fail("read of sectors 0..7", (u64)st);
	u64 sum = fnv1a(buf_in, sizeof(buf_in));

	for (u64 i = 0; i < sizeof(buf_out); i++)
		buf_out[i] = pattern(N_SECTORS * SECTOR + i);
	/* Two buffers in one chain: the device must join them. */
	struct seg halves[2] = {{(u64)buf_out, sizeof(buf_out) / 2, 0},
				{(u64)buf_out + sizeof(buf_out) / 2, sizeof(buf_out) / 2, 0}};
	st = request(T_OUT, N_SECTORS, halves, 2);
	if (st != ST_OK)
		fail("write of sectors 8..15", (u64)st);

	const char *flush = "none";
	if (features & F_FLUSH) {
		st = request(T_FLUSH, 0, 0, 0);
		if (st != ST_OK)
			fail("flush", (u64)st);
		flush = "ok";
	}

	st = read_sectors(N_SECTORS, buf_in, N_SECTORS);
	if (st != ST_OK)
		fail("read back of sectors 8..15", (u64)st);
	u64 verified = 0;
	for (u64 s = 0; s < N_SECTORS; s++) {
		u64 i = 0;
		while (i < SECTOR && buf_in[s * SECTOR + i] == pattern((N_SECTORS + s) * SECTOR + i))
			i++;
		if (i != SECTOR)
			fail("read back differs in sector", N_SECTORS + s);
		verified++;
	}

	struct seg id_seg = {(u64)id, 20, 1};
	st = request(T_GET_ID, 0, &id_seg, 1);
	if (st != ST_OK)
		fail("get id", (u64)st);

	st = read_sectors(capacity, buf_in, 1);
	if (st != ST_IOERR)
		fail("read past the end was not refused", (u64)st);

	puts("blk: ok sectors=");
	put_dec(N_SECTORS);
	puts(" sum=");
	put_hex(sum);
	puts(" written=");
	put_dec(N_SECTORS);
	puts(" flush=");
	puts(flush);
	puts(" verified=");
	put_dec(verified);
	puts(" id=");
	puts(id);
	puts("\n");
}

static void run_ro(void)
{
	if (!(features & F_RO))
		fail("device does not offer VIRTIO_BLK_F_RO", features);
	int st = read_sectors(0, buf_in, N_SECTORS);
	if (st != ST_OK)
		fail("read of sectors 0..7", (u64)st);
	u64 sum = fnv1a(buf_in, sizeof(buf_in));
	for (u64 i = 0; i < SECTOR; i++)
		buf_out[i] = pattern(i);
	struct seg s = {(u64)buf_out, SECTOR, 0};
	st = request(T_OUT, 0, &s, 1);
	if (st != ST_IOERR)
		fail("write to the read-only disk was not refused with IOERR", (u64)st);
	puts("blk: ro ok sectors=");
	put_dec(N_SECTORS);
	puts(" sum=");
	put_hex(sum);
	puts(" write=ioerr\n");
}

/* ---- garbage ---- */

struct tally {
	u64 cases, ioerr, unsupp, resets;
};

/* Classifies what the device did with the last submission; a device that neither
 * completed it nor asked for a reset has hung the queue, which fails the workload. */
static void judge(struct tally *t, const char *name, int st, int want_reset)
{
	t->cases++;
	if (st == NOT_COMPLETED) {
		if (!(reg_read(R_STATUS) & S_NEEDS_RESET))
			fail(name, 0xdead);
		t->resets++;
		bring_up_or_fail();
		return;
	}
	if (want_reset)
		fail(name, (u64)st); /* completed a chain it cannot have parsed */
	if (st == ST_IOERR)
		t->ioerr++;
	else if (st == ST_UNSUPP)
		t->unsupp++;
	else
		fail(name, (u64)st);
}

/* A chain built by hand from desc[0..n), published at `head`. */
static int raw(u16 head)
{
	barrier();
	return submit(head) ? status_byte : NOT_COMPLETED;
}

static void chain_header(u32 type)
{
	header.type = type;
	header.sector = 0;
	status_byte = 0xff;
}

static void run_garbage(void)
{
	struct tally t = {0, 0, 0, 0};
	int st = read_sectors(0, buf_in, N_SECTORS);
	if (st != ST_OK)
		fail("read of sectors 0..7", (u64)st);
	u64 sum = fnv1a(buf_in, sizeof(buf_in));

	/* Buffers the device cannot reach: error statuses. */
	struct seg s = {0x1000000000ul, SECTOR, 1}; /* 64 GiB: beyond RAM */
	judge(&t, "data buffer beyond RAM", request(T_IN, 0, &s, 1), 0);
	s = (struct seg){mem_top - SECTOR, 4096, 1}; /* straddles the end of RAM */
	judge(&t, "data buffer across the end of RAM", request(T_IN, 0, &s, 1), 0);
	s = (struct seg){(u64)scratch, 0xfffff000u, 1}; /* past RAM and the disk */
	judge(&t, "4 GiB data buffer", request(T_IN, 0, &s, 1), 0);
	s = (struct seg){(u64)scratch, SECTOR, 0};
	judge(&t, "read into a device-readable buffer", request(T_IN, 0, &s, 1), 0);
	s = (struct seg){(u64)scratch, SECTOR, 1};
	judge(&t, "sector past the end", request(T_IN, capacity, &s, 1), 0);
	judge(&t, "sector overflowing 64 bits", request(T_IN, ~0ul / 2, &s, 1), 0);
	judge(&t, "unknown request type", request(0x77, 0, &s, 1), 0);
	s = (struct seg){0xfffffffffffff000ul, 8192, 0};
	judge(&t, "write from the top of the address space", request(T_OUT, 0, &s, 1), 0);

	/* Chains the device cannot parse: DEVICE_NEEDS_RESET. */
	chain_header(T_IN);
	desc[0] = (struct vq_desc){(u64)&header, 16, D_NEXT, 1};
	desc[1] = (struct vq_desc){(u64)scratch, SECTOR, D_NEXT | D_WRITE, 0}; /* back to 0 */
	judge(&t, "descriptor loop", raw(0), 1);
	desc[1] = (struct vq_desc){(u64)scratch, SECTOR, D_NEXT | D_WRITE, 200};
	judge(&t, "next index out of range", raw(0), 1);
	judge(&t, "head index out of range", raw(QSZ + 3), 1);
	desc[0] = (struct vq_desc){0xfffffffffffffff8ul, 16, D_NEXT, 1};
	desc[1] = (struct vq_desc){(u64)&status_byte, 1, D_WRITE, 0};
	judge(&t, "header at the top of the address space", raw(0), 1);
	desc[0] = (struct vq_desc){(u64)&header, 16, D_NEXT, 1};
	desc[1] = (struct vq_desc){(u64)&status_byte, 1, 0, 0};
	judge(&t, "status byte not device-writable", raw(0), 1);
	desc[0] = (struct vq_desc){(u64)&header, 16, 0, 0};
	judge(&t, "header without data or status", raw(0), 1);
	desc[0] = (struct vq_desc){(u64)&header, 4, D_NEXT, 1};
	desc[1] = (struct vq_desc){(u64)&status_byte, 1, D_WRITE, 0};
	judge(&t, "header shorter than 16 bytes", raw(0), 1);

	/* Queue tables the device cannot reach. */
	const char *err = bring_up(0xfffffffffffff000ul, (u64)&avail, (u64)&used);
	if (err)
		fail(err, 0);
	judge(&t, "descriptor table at the top of the address space", read_sectors(0, scratch, 1), 1);
	err = bring_up((u64)desc, (u64)&avail, 0x4000000000ul);
	if (err)
		fail(err, 0);
	judge(&t, "used ring beyond RAM", read_sectors(0, scratch, 1), 1);

	/* Random chains over a scratch area, the end of RAM and random addresses. */
	rng_seed();
	u64 fuzz = 0;
	for (; fuzz < 64; fuzz++) {
		struct blk_header *h = (struct blk_header *)scratch;
		h->type = (u32)(rng() % 10);
		/* Past the sectors the final check reads, so random writes cannot change them. */
		h->sector = 2 * N_SECTORS + rng() % (capacity - 2 * N_SECTORS + 4);
		for (int i = 0; i < QSZ; i++) {
			u64 r = rng();
			u64 addr;
			switch (r & 3) {
			case 0: addr = (u64)scratch + 64 + (rng() % 4096); break;
			case 1: addr = mem_top - (rng() % 8192); break;
			case 2: addr = rng(); break;
			default: addr = (u64)scratch; break;
			}
			u32 len = (r >> 8) & 1 ? (u32)(rng() % 8192) : (u32)rng();
			/* Mostly the next slot, so chains get long; sometimes anywhere (or out of range). */
			u16 next = (r >> 24) & 3 ? (u16)(i + 1) : (u16)((r >> 26) % (QSZ + 2));
			desc[i] = (struct vq_desc){addr, len, (u16)((r >> 16) & 3), next};
		}
		int got = raw((u16)(rng() % (QSZ + 1)));
		if (got == NOT_COMPLETED) {
			if (!(reg_read(R_STATUS) & S_NEEDS_RESET))
				fail("random chain hung the queue", fuzz);
			t.resets++;
			bring_up_or_fail();
		}
	}

	/* The device still works. */
	bring_up_or_fail();
	st = read_sectors(0, buf_in, N_SECTORS);
	if (st != ST_OK || fnv1a(buf_in, sizeof(buf_in)) != sum)
		fail("read after the garbage differs or failed", (u64)st);
	puts("blk: garbage ok cases=");
	put_dec(t.cases);
	puts(" ioerr=");
	put_dec(t.ioerr);
	puts(" unsupp=");
	put_dec(t.unsupp);
	puts(" resets=");
	put_dec(t.resets);
	puts(" fuzz=");
	put_dec(fuzz);
	puts(" sum=");
	put_hex(sum);
	puts("\n");
}

void run_blk(const char *cmdline)
{
	const char *mode = cmdline[3] == '=' ? cmdline + 4 : "rw";
	find_and_bring_up(cmdline);
	if (word_is(mode, "rw"))
		run_rw();
	else if (word_is(mode, "ro"))
		run_ro();
	else if (word_is(mode, "garbage"))
		run_garbage();
	else
		fail("unknown blk mode (rw, ro, garbage)", 0);
	poweroff();
}
