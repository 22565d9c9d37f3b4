/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The loader's test kernel image: the static percpu area (two input
 * sections, like the linker script's PERCPU_INPUT), __per_cpu_offset[] and
 * an exported percpu variable and function.
 */
__attribute__((section(".data..percpu..shared_aligned"), aligned(64))) unsigned long kernel_shared[8];
__attribute__((section(".data..percpu"))) unsigned long kernel_pcpu_var = 42;
__attribute__((section(".data..percpu"))) unsigned long *kernel_pcpu_self = &kernel_pcpu_var;

unsigned long __per_cpu_offset[4];

void kernel_helper(void)
{
}
