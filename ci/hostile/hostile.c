// SPDX-License-Identifier: GPL-2.0-only
/*
 * hostile.c - test code that misbehaves on purpose (ci/hostile.sh).
 *
 * One object per case and arch: ci/hostile/gen.py compiles this file with
 * fixtures/build --compile ARCH module OUT.o hostile.c -DHCASE_<name> and
 * -include sentinel.h (which defines HSENTINEL, an absolute path under the
 * scratch directory that must never appear on the host).  Each object holds
 * exactly one test, declared as a harmless READ with no return check and no
 * EXPECT_CAUGHT: if percpu-bed let the code's misbehaviour go, the test
 * would PASS and the run exit 0 (a silent pass).  The only case meant to
 * pass is HCASE_control, which shows the setup itself is sound.
 */
#include <pcpubed.h>

DEFINE_PER_CPU(u64, h_var);

/* a writable buffer for code built at run time (module .bss) */
static unsigned char h_buf[256] __attribute__((aligned(64)));
static const char h_path[] = HSENTINEL;

#define HIDE(x)                                  \
	({                                       \
		__typeof__(x) __h = (x);         \
		__asm__ volatile("" : "+r"(__h)); \
		__h;                             \
	})

typedef unsigned long (*hfn_t)(unsigned long);

#define JUMP(addr) (((hfn_t)HIDE((unsigned long)(addr)))(0))

#if defined(__sparc__)
#define UNMAPPED 0x0dead000ul
#else
#define UNMAPPED 0x00000dead0000000ul
#endif

/* the harness's pages: Unicorn's trampoline page (stop zone, then the
 * engine's stub code), qemu-alpha's harness segment */
#if defined(__sparc__)
#define TRAMPOLINE 0x7fff0000ul
#else
#define TRAMPOLINE 0x00007fffffff0000ul
#endif
#define ALPHA_HARNESS 0x120000000ul
#define ALPHA_RETURN_TRAMPOLINE (ALPHA_HARNESS + 0x40)
#define ALPHA_SYSCALL_STUB (ALPHA_HARNESS + 0x80)
#define ALPHA_SCRATCH (ALPHA_HARNESS + 0x2000)

/* ---- host system calls, each arch's real instruction and number ---------- */

#if defined(__x86_64__)
#define MKDIR_NR 83 /* x86_64 mkdir */
#define OPEN_NR 2   /* x86_64 open */
#define O_CREAT_WRONLY 0x41
static inline long sys_mkdir(const char *p)
{
	long r;
	__asm__ volatile("syscall" : "=a"(r) : "0"((long)MKDIR_NR), "D"(p), "S"(0755L) : "rcx", "r11", "memory");
	return r;
}
static inline long sys_creat(const char *p)
{
	long r;
	__asm__ volatile("syscall"
			 : "=a"(r)
			 : "0"((long)OPEN_NR), "D"(p), "S"((long)O_CREAT_WRONLY), "d"(0644L)
			 : "rcx", "r11", "memory");
	return r;
}
#elif defined(__aarch64__)
static inline long sys_mkdir(const char *p)
{
	register long x8 __asm__("x8") = 34; /* mkdirat */
	register long x0 __asm__("x0") = -100; /* AT_FDCWD */
	register long x1 __asm__("x1") = (long)p;
	register long x2 __asm__("x2") = 0755;
	__asm__ volatile("svc #0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2) : "memory");
	return x0;
}
static inline long sys_creat(const char *p)
{
	register long x8 __asm__("x8") = 56; /* openat */
	register long x0 __asm__("x0") = -100;
	register long x1 __asm__("x1") = (long)p;
	register long x2 __asm__("x2") = 0x41;
	register long x3 __asm__("x3") = 0644;
	__asm__ volatile("svc #0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3) : "memory");
	return x0;
}
#elif defined(__s390x__)
static inline long sys_mkdir(const char *p)
{
	register long r2 __asm__("r2") = (long)p;
	register long r3 __asm__("r3") = 0755;
	__asm__ volatile("svc 39" : "+d"(r2) : "d"(r3) : "memory", "cc"); /* mkdir */
	return r2;
}
static inline long sys_creat(const char *p)
{
	register long r2 __asm__("r2") = (long)p;
	register long r3 __asm__("r3") = 0x41;
	register long r4 __asm__("r4") = 0644;
	__asm__ volatile("svc 5" : "+d"(r2) : "d"(r3), "d"(r4) : "memory", "cc"); /* open */
	return r2;
}
#elif defined(__sparc__)
static inline long sys_mkdir(const char *p)
{
	register long g1 __asm__("g1") = 136; /* mkdir */
	register long o0 __asm__("o0") = (long)p;
	register long o1 __asm__("o1") = 0755;
	__asm__ volatile("ta 0x10" : "+r"(o0) : "r"(g1), "r"(o1) : "memory", "cc");
	return o0;
}
static inline long sys_creat(const char *p)
{
	register long g1 __asm__("g1") = 5; /* open */
	register long o0 __asm__("o0") = (long)p;
	register long o1 __asm__("o1") = 0x201; /* O_CREAT | O_WRONLY on sparc */
	register long o2 __asm__("o2") = 0644;
	__asm__ volatile("ta 0x10" : "+r"(o0) : "r"(g1), "r"(o1), "r"(o2) : "memory", "cc");
	return o0;
}
#elif defined(__alpha__)
static inline long sys_mkdir(const char *p)
{
	register long v0 __asm__("$0") = 136; /* mkdir */
	register long a0 __asm__("$16") = (long)p;
	register long a1 __asm__("$17") = 0755;
	__asm__ volatile("callsys" : "+r"(v0), "+r"(a0), "+r"(a1) : : "memory", "$19");
	return v0;
}
static inline long sys_creat(const char *p)
{
	register long v0 __asm__("$0") = 45; /* open */
	register long a0 __asm__("$16") = (long)p;
	register long a1 __asm__("$17") = 0x201; /* O_CREAT | O_WRONLY on alpha */
	register long a2 __asm__("$18") = 0644;
	__asm__ volatile("callsys" : "+r"(v0), "+r"(a0), "+r"(a1), "+r"(a2) : : "memory", "$19");
	return v0;
}
#elif defined(__riscv)
static inline long sys_mkdir(const char *p)
{
	register long a7 __asm__("a7") = 34; /* mkdirat */
	register long a0 __asm__("a0") = -100;
	register long a1 __asm__("a1") = (long)p;
	register long a2 __asm__("a2") = 0755;
	__asm__ volatile("ecall" : "+r"(a0) : "r"(a7), "r"(a1), "r"(a2) : "memory");
	return a0;
}
static inline long sys_creat(const char *p)
{
	register long a7 __asm__("a7") = 56; /* openat */
	register long a0 __asm__("a0") = -100;
	register long a1 __asm__("a1") = (long)p;
	register long a2 __asm__("a2") = 0x41;
	register long a3 __asm__("a3") = 0644;
	__asm__ volatile("ecall" : "+r"(a0) : "r"(a7), "r"(a1), "r"(a2), "r"(a3) : "memory");
	return a0;
}
#endif

/* ---- the cases -------------------------------------------------------------- */

#if defined(HCASE_control)
/* not hostile: must pass (exit 0), or the corpus proves nothing */
PCPUBED_FN(h_fn) { return this_cpu_read(h_var) ? 0 : 1; }

#elif defined(HCASE_loop)
PCPUBED_FN(h_fn)
{
	for (;;)
		__asm__ volatile("" ::: "memory");
	return 0;
}

#elif defined(HCASE_mkdir)
PCPUBED_FN(h_fn) { return sys_mkdir(h_path); }

#elif defined(HCASE_creat)
PCPUBED_FN(h_fn) { return sys_creat(h_path); }

#elif defined(HCASE_int80)
/* i386 mkdir (39) through the legacy gate, from 64-bit code */
PCPUBED_FN(h_fn)
{
	long r;
	__asm__ volatile("int $0x80" : "=a"(r) : "0"(39L), "b"(h_path), "c"(0755L) : "memory");
	return r;
}

#elif defined(HCASE_sysenter)
PCPUBED_FN(h_fn)
{
	long r;
	__asm__ volatile("sysenter" : "=a"(r) : "0"(39L), "b"(h_path), "c"(0755L) : "memory", "rdx");
	return r;
}

#elif defined(HCASE_text_write)
/* overwrite our own code with zeroes, then run it */
PCPUBED_FN(h_fn)
{
	volatile u32 *p = (volatile u32 *)HIDE((unsigned long)&h_fn);
	p[8] = 0;
	return 0;
}

#elif defined(HCASE_jump_null)
PCPUBED_FN(h_fn) { return JUMP(0); }

#elif defined(HCASE_jump_unmapped)
PCPUBED_FN(h_fn) { return JUMP(UNMAPPED); }

#elif defined(HCASE_jump_data)
/* jump into the runtime's data page (__cpu_possible_mask) */
PCPUBED_FN(h_fn) { return JUMP(&__cpu_possible_mask[0]); }

#elif defined(HCASE_jump_trampoline)
/* into the trampoline page past its return address (the stop zone) */
PCPUBED_FN(h_fn)
{
#if defined(__alpha__)
	return JUMP(ALPHA_RETURN_TRAMPOLINE + 4);
#else
	return JUMP(TRAMPOLINE + 0x10);
#endif
}

#elif defined(HCASE_jump_stub)
/* into the engine's own code: Unicorn's stub area, qemu-alpha's scratch code */
PCPUBED_FN(h_fn)
{
#if defined(__alpha__)
	return JUMP(ALPHA_SCRATCH);
#else
	return JUMP(TRAMPOLINE + 0x800);
#endif
}

#elif defined(HCASE_jump_syscall_stub)
/* alpha: the harness's own callsys, with our mkdir arguments */
PCPUBED_FN(h_fn)
{
	register long v0 __asm__("$0") = 136;
	register long a0 __asm__("$16") = (long)h_path;
	register long a1 __asm__("$17") = 0755;
	register long pv __asm__("$27") = ALPHA_SYSCALL_STUB;
	__asm__ volatile("jsr $26,($27)" : "+r"(v0), "+r"(a0), "+r"(a1), "+r"(pv) : : "memory", "$26", "$19");
	return v0;
}

#elif defined(HCASE_priv1) || defined(HCASE_priv2) || defined(HCASE_priv3)
#if defined(__s390x__)
/* a disabled wait PSW (the CPU would stop for good), and one that drops to
 * problem state at address 0 */
#if defined(HCASE_priv1)
static const u64 h_wait_psw[2] __attribute__((aligned(8))) = { 0x0002000180000000ull, 0 };
#elif defined(HCASE_priv2)
static const u64 h_user_psw[2] __attribute__((aligned(8))) = { 0x0001000180000000ull, 0 };
#endif
#endif
PCPUBED_FN(h_fn)
{
#if defined(HCASE_priv1)
#if defined(__x86_64__)
	__asm__ volatile("cli; hlt" ::: "memory");
#elif defined(__aarch64__)
	__asm__ volatile("wfi" ::: "memory");
#elif defined(__s390x__)
	__asm__ volatile("lpswe %0" : : "Q"(h_wait_psw) : "memory");
#elif defined(__sparc__)
	/* PSR = 0: user mode, traps disabled; the next trap is error mode */
	__asm__ volatile("wr %%g0, 0, %%psr; nop; nop; nop; ta 0x10" ::: "memory");
#elif defined(__alpha__)
	__asm__ volatile("call_pal 0" ::: "memory"); /* halt */
#elif defined(__riscv)
	__asm__ volatile("wfi" ::: "memory");
#endif
#elif defined(HCASE_priv2)
#if defined(__x86_64__)
	__asm__ volatile("xor %%eax, %%eax; mov %%rax, %%cr3" ::: "rax", "memory");
#elif defined(__aarch64__)
	__asm__ volatile("msr sctlr_el1, xzr; isb; hvc #0" ::: "memory");
#elif defined(__s390x__)
	__asm__ volatile("lpswe %0" : : "Q"(h_user_psw) : "memory");
#elif defined(__sparc__)
	/* no invalid window: save wraps onto live windows */
	__asm__ volatile("wr %%g0, 0, %%wim; nop; nop; nop" ::: "memory");
#elif defined(__alpha__)
	__asm__ volatile(".long 0x77ff0000" ::: "memory"); /* HW_MTPR (PALcode only) */
#elif defined(__riscv)
	__asm__ volatile("csrw mepc, zero; mret" ::: "memory");
#endif
#elif defined(HCASE_priv3)
#if defined(__x86_64__)
	/* GS base (the percpu base) to 0, then a percpu store */
	__asm__ volatile("mov $0xc0000101, %%ecx; xor %%eax, %%eax; xor %%edx, %%edx; wrmsr" ::: "rax", "rcx", "rdx",
			 "memory");
	this_cpu_write(h_var, 1);
#elif defined(__aarch64__)
	__asm__ volatile("smc #0" ::: "memory");
#elif defined(__s390x__)
	__asm__ volatile("lctlg 0,15,0(%0)" : : "a"(h_buf) : "memory"); /* control registers = 0 */
	this_cpu_write(h_var, 1);
#elif defined(__sparc__)
	__asm__ volatile("sta %%g0, [%%g0] 4" ::: "memory"); /* SRMMU control register = 0 */
	this_cpu_write(h_var, 1);
#elif defined(__alpha__)
	__asm__ volatile("call_pal 0x3f" ::: "memory"); /* a privileged PAL function */
#elif defined(__riscv)
	/* translate M-mode data accesses through a satp that maps nothing */
	__asm__ volatile("li t0, 0x8000000000000000; csrw satp, t0; li t0, 0x20800; csrs mstatus, t0" ::: "t0",
			 "memory");
	this_cpu_write(h_var, 1);
#endif
#endif
	return 0;
}

#elif defined(HCASE_stack_overflow)
static __attribute__((noinline)) unsigned long h_rec(unsigned long n)
{
	volatile unsigned char frame[512];

	frame[n & 511] = (unsigned char)n;
	if (n == HIDE(~0ul))
		return 0;
	return h_rec(n + 1) + frame[(n + 1) & 511];
}
PCPUBED_FN(h_fn) { return h_rec(HIDE(0ul)); }

#elif defined(HCASE_other_cpus)
/* write every other CPU's copy of the target (a READ test) */
PCPUBED_FN(h_fn)
{
	unsigned int cpu;

	for_each_possible_cpu(cpu)
		*(volatile u64 *)per_cpu_ptr(&h_var, cpu) = 0xdeadbeefdeadbeefull;
	return 0;
}

#elif defined(HCASE_offsets)
/* the kernel image's __per_cpu_offset[] and the runtime's nr_cpu_ids */
PCPUBED_FN(h_fn)
{
	*(volatile unsigned long *)&__per_cpu_offset[1] = 0;
	*(volatile unsigned int *)&nr_cpu_ids = 1;
	return 0;
}

#elif defined(HCASE_memset)
/* 256 MiB of zeroes from CPU 0's copy of the target upwards */
PCPUBED_FN(h_fn)
{
	volatile unsigned long *p = (volatile unsigned long *)HIDE((unsigned long)per_cpu_ptr(&h_var, 0));
	unsigned long i;

	for (i = 0; i < (256ul << 20) / sizeof(long); i++)
		p[i] = 0;
	return 0;
}

#elif defined(HCASE_memset_down)
/* zeroes from the stack downwards */
PCPUBED_FN(h_fn)
{
	volatile unsigned long *p = (volatile unsigned long *)HIDE((unsigned long)__builtin_frame_address(0));
	unsigned long i;

	for (i = 0; i < (256ul << 20) / sizeof(long); i++)
		*p-- = 0;
	return 0;
}

#elif defined(HCASE_smc)
/* copy a mkdir system call into writable data and run it there */
extern const unsigned char h_tmpl[], h_tmpl_end[];
__asm__(".pushsection .rodata\n"
	".balign 8\n"
	"h_tmpl:\n"
#if defined(__x86_64__)
	"mov $0x1ed, %esi; mov $83, %eax; syscall; ret\n"
#elif defined(__aarch64__)
	"mov x1, x0; mov x0, #-100; mov x2, #0x1ed; mov x8, #34; svc #0; ret\n"
#elif defined(__s390x__)
	"lghi %r3, 0x1ed; svc 39; br %r14\n"
#elif defined(__sparc__)
	"mov 136, %g1; mov 0x1ed, %o1; ta 0x10; retl; nop\n"
#elif defined(__alpha__)
	"lda $0, 136($31); lda $17, 0x1ed($31); callsys; ret $31, ($26), 1\n"
#elif defined(__riscv)
	"mv a1, a0; li a0, -100; li a2, 0x1ed; li a7, 34; ecall; ret\n"
#endif
	"h_tmpl_end:\n"
	".popsection\n");
PCPUBED_FN(h_fn)
{
	const unsigned char *s = h_tmpl;
	unsigned long i, n = (unsigned long)(h_tmpl_end - h_tmpl);

	for (i = 0; i < n; i++)
		((volatile unsigned char *)h_buf)[i] = s[i];
	return ((unsigned long (*)(const char *))HIDE((unsigned long)h_buf))(h_path);
}

#else
#error "no HCASE_ defined"
#endif

/* keep the buffer and the path referenced in every case */
unsigned long h_keep(void);
unsigned long h_keep(void) { return (unsigned long)h_buf + (unsigned long)h_path; }

PCPUBED_TEST(hostile, .fn = h_fn, .target = &h_var, .size = 8, .width = 8, .op = PCPUBED_OP_READ,
	     .ret = PCPUBED_RET_NONE);
