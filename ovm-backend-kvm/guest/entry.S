/*
 * ovm test guest: PVH entry (32-bit protected mode, paging off, EBX = hvm_start_info),
 * switch to long mode with an identity map of the first 4 GiB (2 MiB pages), then call
 * guest_main(start_info). Also the interrupt stubs the C code installs in its IDT.
 */

#define XEN_ELFNOTE_PHYS32_ENTRY 18

	.section .note.Xen, "a", @note
	.balign 4
	.long 4                 /* name size: "Xen\0" */
	.long 4                 /* descriptor size: a 32-bit physical address */
	.long XEN_ELFNOTE_PHYS32_ENTRY
	.asciz "Xen"
	.balign 4
	.long pvh_start
	.balign 4

/* ovm's own note (name "OVM", type OVM_ELFNOTE_ENTRY64): a 64-bit entry for VMMs that
 * start the vCPU in long mode with the first 4 GiB identity mapped and RBX = the PVH
 * start info. It skips the 32-bit mode switch, which costs tens of milliseconds where
 * the hypervisor emulates guest ring-0 code. Other loaders ignore it. */
#define OVM_ELFNOTE_ENTRY64 1
	.balign 4
	.long 4                 /* name size: "OVM\0" */
	.long 8                 /* descriptor size: a 64-bit physical address */
	.long OVM_ELFNOTE_ENTRY64
	.asciz "OVM"
	.balign 4
	.quad entry64
	.balign 4

	.section .text.entry, "ax"
	.code32
	.globl pvh_start
pvh_start:
	cli
	cld
	mov %ebx, %esi                  /* keep the start_info address */
	mov $stack_top, %esp

	/* PML4[0] -> PDPT; PDPT[0..4] -> PD0..PD3; PDn[i] -> 2 MiB page (n*1G + i*2M). */
	mov $pdpt, %eax
	or $0x3, %eax
	mov %eax, pml4
	movl $0, pml4 + 4

	/* With 1 GiB pages (CPUID 0x80000001 EDX bit 26) four PDPT entries map 4 GiB; writing
	 * 2048 page directory entries instead costs tens of milliseconds where ring-0 guest
	 * code is emulated. */
	mov $0x80000001, %eax
	cpuid
	bt $26, %edx
	jnc 6f
	xor %ecx, %ecx
7:	mov %ecx, %eax
	shl $30, %eax
	or $0x83, %eax                  /* present | writable | 1 GiB page */
	mov %eax, pdpt(,%ecx,8)
	movl $0, pdpt + 4(,%ecx,8)
	inc %ecx
	cmp $4, %ecx
	jne 7b
	jmp 3f

6:	xor %ecx, %ecx
1:	mov %ecx, %eax
	shl $12, %eax
	add $pd, %eax
	or $0x3, %eax
	mov %eax, pdpt(,%ecx,8)
	movl $0, pdpt + 4(,%ecx,8)
	inc %ecx
	cmp $4, %ecx
	jne 1b

	xor %ecx, %ecx
2:	mov %ecx, %eax
	shl $21, %eax
	or $0x83, %eax                  /* present | writable | 2 MiB page */
	mov %eax, pd(,%ecx,8)
	mov %ecx, %eax
	shr $11, %eax                   /* high bits of (ecx << 21) */
	mov %eax, pd + 4(,%ecx,8)
	inc %ecx
	cmp $2048, %ecx
	jne 2b

3:
	mov %cr4, %eax
	or $0x20, %eax                  /* PAE */
	mov %eax, %cr4
	mov $pml4, %eax
	mov %eax, %cr3
	mov $0xC0000080, %ecx           /* EFER */
	rdmsr
	or $0x100, %eax                 /* LME */
	wrmsr
	mov %cr0, %eax
	or $0x80000001, %eax            /* PG | PE */
	and $0x9FFFFFFF, %eax           /* caches on: clear CD, NW */
	mov %eax, %cr0

	lgdt gdt_ptr
	ljmp $0x08, $long_mode

	.code64
	.globl entry64
entry64:
	cli
	cld
	mov %ebx, %esi                  /* the start_info address, as on the PVH path */
	lgdt gdt_ptr
	pushq $0x08
	pushq $long_mode
	lretq

long_mode:
	mov $0x10, %ax
	mov %ax, %ds
	mov %ax, %es
	mov %ax, %ss
	xor %ax, %ax
	mov %ax, %fs
	mov %ax, %gs
	mov $stack_top, %rsp
	mov %esi, %edi                  /* first argument: start_info (zero-extended) */
	call guest_main
3:	cli
	hlt
	jmp 3b

/* Interrupt stubs: vectors 0..47, each pushes its number and jumps to a common path. */
	.text
	.globl isr_table
isr_common:
	push %rax
	push %rcx
	push %rdx
	push %rsi
	push %rdi
	push %r8
	push %r9
	push %r10
	push %r11
	mov 72(%rsp), %rdi              /* the vector number */
	mov %rsp, %rsi
	call guest_interrupt            /* returns only for interrupts, not exceptions */
	pop %r11
	pop %r10
	pop %r9
	pop %r8
	pop %rdi
	pop %rsi
	pop %rdx
	pop %rcx
	pop %rax
	add $8, %rsp                    /* the vector number */
	iretq

	.macro isr_stub n
isr_\n:
	push $\n
	jmp isr_common
	.endm

	.altmacro
	.set i, 0
	.rept 48
	isr_stub %i
	.set i, i + 1
	.endr

	.macro isr_addr n
	.quad isr_\n
	.endm

	.section .rodata
	.balign 8
isr_table:
	.set i, 0
	.rept 48
	isr_addr %i
	.set i, i + 1
	.endr

	.balign 8
gdt:
	.quad 0
	.quad 0x00AF9A000000FFFF        /* 0x08: 64-bit code */
	.quad 0x00CF92000000FFFF        /* 0x10: data */
gdt_end:
gdt_ptr:
	.word gdt_end - gdt - 1
	.quad gdt

	.section .bss
	.balign 4096
pml4:	.skip 4096
pdpt:	.skip 4096
pd:	.skip 4096 * 4
	.skip 16384
stack_top:
