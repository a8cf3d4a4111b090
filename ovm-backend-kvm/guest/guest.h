/*
 * What the test guest's files share: integer types, the console and a few helpers
 * (defined in main.c).
 */
#ifndef OVM_GUEST_H
#define OVM_GUEST_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;

/* Top of RAM below 4 GiB, from the PVH memory map. */
extern u64 mem_top;

void puts(const char *s);
void put_dec(u64 v);
void put_hex(u64 v);
u64 str_len(const char *s);
int starts_with(const char *s, const char *prefix);
/* s starts with `word`, followed by the end, a space or a comma. */
int word_is(const char *s, const char *word);
/* xorshift64; seeded from the TSC by rng_seed(). */
u64 rng(void);
void rng_seed(void);
void poweroff(void) __attribute__((noreturn));

/* blk.c: the virtio-mmio block workloads ("blk", "blk=rw", "blk=ro", "blk=garbage"). */
void run_blk(const char *cmdline) __attribute__((noreturn));

#endif
