/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * A minimal stand-in for the fixture contract header (fixtures/CONTRACT.md,
 * version 1), enough to build the loader's own test objects.  The shipped
 * fixtures use the real pcpubed.h.
 */
#ifndef PCPUBED_MINI_H
#define PCPUBED_MINI_H

struct pcpubed_test {
	unsigned long long operand;
	unsigned long long init;
	unsigned long long expect_ret;
	const char *name;
	unsigned long (*fn)(unsigned long arg);
	void *target;
	unsigned int size;
	unsigned int align;
	unsigned int width;
	unsigned int op;
	unsigned int flags;
	unsigned int ret;
	const char *bug;
};

#define PCPUBED_OP_READ 0
#define PCPUBED_OP_ADD 1
#define PCPUBED_OP_WRITE 2
#define PCPUBED_F_DYNAMIC 1
#define PCPUBED_F_EXPECT_CAUGHT 8
#define PCPUBED_RET_NONE 0
#define PCPUBED_RET_OLD 2
#define PCPUBED_RET_NEW 3

#define PCPUBED_ABI(model, ti_cpu, flags)                                      \
	const unsigned int pcpubed_abi[6]                                      \
		__attribute__((section(".percpu_bed.abi"), used, aligned(4))) = { \
			0x50435042, 1, (model), (ti_cpu), 0x3b8, (flags) }

#define PCPUBED_TESTS struct pcpubed_test pcpubed_tests[]               \
	__attribute__((section(".percpu_bed.tests"), used, aligned(8)))

#ifdef WEAK_PERCPU
/* ARCH_MODULE_NEEDS_WEAK_PER_CPU: weak definition plus a uniqueness marker. */
#define DEFINE_PCPU(type, name)                                                \
	__attribute__((section(".discard"), used)) char __pcpu_unique_##name;  \
	__attribute__((section(".data..percpu"), weak)) type name
#elif defined(STATIC_PERCPU)
/* File-local percpu: reached directly (larl, GP-relative), never via the GOT. */
#define DEFINE_PCPU(type, name) static __attribute__((section(".data..percpu"), used)) type name
#else
#define DEFINE_PCPU(type, name) __attribute__((section(".data..percpu"))) type name
#endif

#endif
