#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
# Rebuild the loader's test objects from src/ with the Debian cross
# compilers; records the compiler versions in MANIFEST.  Run from anywhere.
set -eu
cd "$(dirname "$0")"
SRC=src
COMMON="-O2 -g0 -ffreestanding -fno-common -fno-asynchronous-unwind-tables -fno-unwind-tables -fno-stack-protector -ffunction-sections -fno-ident"
build() { # out cc flags... file
	out=$1; cc=$2; shift 2
	"$cc" $COMMON "$@" -c -o "$out"
}
# x86_64: -mcmodel=kernel like the kernel; modules reach percpu as %gs:sym.
build x86_64-module.o x86_64-linux-gnu-gcc -mcmodel=kernel -fno-pie -mno-red-zone $SRC/module.c
build x86_64-kernel.o x86_64-linux-gnu-gcc -mcmodel=kernel -fno-pie -mno-red-zone $SRC/kernel.c
x86_64-linux-gnu-ld -m elf_x86_64 -T $SRC/vmlinux.lds -o x86_64-vmlinux x86_64-kernel.o
# arm64: adrp/add, calls with CALL26.
build aarch64-module.o aarch64-linux-gnu-gcc -mcmodel=small -fno-pic -mgeneral-regs-only $SRC/module.c
build aarch64-kernel.o aarch64-linux-gnu-gcc -mcmodel=small -fno-pic -mgeneral-regs-only $SRC/kernel.c
# sparc32: sethi/or; %g6 holds thread_info.
build sparc-module.o sparc64-linux-gnu-gcc -m32 -mcpu=v8 -fno-pic $SRC/module.c
build sparc-kernel.o sparc64-linux-gnu-gcc -m32 -mcpu=v8 -fno-pic $SRC/kernel.c
# alpha: the kernel's -msmall-data; strong percpu is GP-relative, weak goes through the GOT.
build alpha-module-strong.o alpha-linux-gnu-gcc -mno-fp-regs -ffixed-8 -msmall-data $SRC/module.c
build alpha-module.o alpha-linux-gnu-gcc -mno-fp-regs -ffixed-8 -msmall-data -DWEAK_PERCPU $SRC/module.c
build alpha-kernel.o alpha-linux-gnu-gcc -mno-fp-regs -ffixed-8 -msmall-data $SRC/kernel.c
# s390x: modules are -fPIC; strong percpu is larl (PC32DBL), weak goes through the GOT (GOTENT).
build s390x-module-strong.o s390x-linux-gnu-gcc -fPIC -march=z10 -DSTATIC_PERCPU $SRC/module.c
build s390x-module.o s390x-linux-gnu-gcc -fPIC -march=z10 -DWEAK_PERCPU $SRC/module.c
build s390x-kernel.o s390x-linux-gnu-gcc -fno-pic -march=z10 $SRC/kernel.c
# riscv64 (km): auipc pairs, no relaxation.
build riscv64-module.o riscv64-linux-gnu-gcc -mcmodel=medany -mno-relax -fno-pic -march=rv64imac -mabi=lp64 $SRC/module.c
build riscv64-kernel.o riscv64-linux-gnu-gcc -mcmodel=medany -mno-relax -fno-pic -march=rv64imac -mabi=lp64 $SRC/kernel.c
{
	echo "# Built by build.sh from src/; compilers and sha256 of each object below."
	for cc in x86_64-linux-gnu-gcc aarch64-linux-gnu-gcc sparc64-linux-gnu-gcc alpha-linux-gnu-gcc s390x-linux-gnu-gcc riscv64-linux-gnu-gcc x86_64-linux-gnu-ld; do
		echo "$cc: $($cc --version | head -1)"
	done
	sha256sum *.o x86_64-vmlinux
} > MANIFEST
