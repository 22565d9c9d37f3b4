/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The loader's test module: two percpu variables in .data..percpu (weak
 * with -DWEAK_PERCPU), references to a kernel-image percpu variable, the
 * kernel's __per_cpu_offset[] and a runtime symbol, reached the way each
 * arch's kernel code reaches percpu data, plus the fixture contract
 * sections.
 */
#include "pcpubed_mini.h"

DEFINE_PCPU(unsigned long, pcpu_counter) = 5;
DEFINE_PCPU(unsigned int, pcpu_small) = 7;

extern unsigned long __per_cpu_offset[];
extern unsigned long kernel_pcpu_var;	/* percpu, defined by the kernel image */
extern unsigned int nr_cpu_ids;		/* runtime symbol table */
extern void kernel_helper(void);	/* kernel text */

void *percpu_slot;			/* DYNAMIC target */

#if defined(__x86_64__)
#define MODEL 1
/* %gs:sym, absolute (R_X86_64_32S) */
static inline unsigned long read_abs(unsigned long *p)
{
	unsigned long v;
	asm volatile("movq %%gs:%c1, %0" : "=r"(v) : "i"(p));
	return v;
}
unsigned long test_read(unsigned long arg)
{
	(void)arg;
	return read_abs(&pcpu_counter);
}
/* %gs:sym(%rip), place-relative (R_X86_64_PC32) */
unsigned long test_add(unsigned long arg)
{
	(void)arg;
	asm volatile("addq $3, %%gs:%0" : "+m"(pcpu_counter));
	return read_abs(&pcpu_counter) + read_abs(&kernel_pcpu_var) * 0;
}
#define THIS_CPU_OFF() ({ unsigned long o; asm volatile("movq %%gs:0, %0" : "=r"(o)); o; })
#elif defined(__aarch64__)
#define MODEL 3
#define THIS_CPU_OFF() ({ unsigned long o; asm volatile("mrs %0, tpidr_el1" : "=r"(o)); o; })
#elif defined(__s390x__)
#define MODEL 6
#define THIS_CPU_OFF() (*(volatile unsigned long *)0x3b8)
#else
#define MODEL 5
#if defined(__sparc__)
register struct { int pad[4]; int cpu; } *current_ti asm("g6");
#elif defined(__alpha__)
register struct { int pad[4]; int cpu; } *current_ti asm("$8");
#else
register struct { int pad[4]; int cpu; } *current_ti asm("tp");
#endif
#define THIS_CPU_OFF() (__per_cpu_offset[current_ti->cpu])
#endif

#ifndef __x86_64__
#define THIS_CPU_PTR(p) ((__typeof__(p))((unsigned long)(p) + THIS_CPU_OFF()))
unsigned long test_read(unsigned long arg)
{
	(void)arg;
	return *THIS_CPU_PTR(&pcpu_counter);
}
unsigned long test_add(unsigned long arg)
{
	(void)arg;
	*THIS_CPU_PTR(&pcpu_counter) += 3;
	kernel_helper();
	return *THIS_CPU_PTR(&pcpu_counter) + *THIS_CPU_PTR(&kernel_pcpu_var) * 0;
}
#endif

unsigned long test_small(unsigned long arg)
{
	(void)arg;
	return nr_cpu_ids + (unsigned long)&pcpu_small * 0 + __per_cpu_offset[0] * 0;
}

unsigned long test_dyn(unsigned long arg)
{
	return arg + (unsigned long)percpu_slot * 0;
}

#ifdef WEAK_PERCPU
PCPUBED_ABI(MODEL, 16, 1);
#else
PCPUBED_ABI(MODEL, 16, 0);
#endif

PCPUBED_TESTS = {
	{ .operand = 0, .init = 5, .expect_ret = 5, .name = "read", .fn = test_read,
	  .target = &pcpu_counter, .size = 8, .align = 8, .width = 8,
	  .op = PCPUBED_OP_READ, .ret = PCPUBED_RET_OLD },
	{ .operand = 3, .init = 5, .name = "add", .fn = test_add,
	  .target = &pcpu_counter, .size = 8, .align = 8, .width = 8,
	  .op = PCPUBED_OP_ADD, .ret = PCPUBED_RET_NEW },
	{ .name = "small", .fn = test_small, .target = &pcpu_small, .size = 4,
	  .align = 4, .width = 4, .op = PCPUBED_OP_READ },
	{ .operand = 1, .name = "dynamic", .fn = test_dyn, .target = &percpu_slot,
	  .size = 16, .align = 8, .width = 8, .op = PCPUBED_OP_WRITE,
	  .flags = PCPUBED_F_DYNAMIC | PCPUBED_F_EXPECT_CAUGHT,
	  .bug = "offset truncated to 32 bits" },
};
