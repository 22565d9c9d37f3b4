#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
#
# ci/hostile.sh - run percpu-bed on a corpus of hostile and malformed objects
# (issue 12): test code that loops, makes host system calls, writes its own
# text, jumps to 0, to unmapped memory or into the harness's pages, runs
# privileged instructions, overflows its stack, writes other CPUs' copies or
# the kernel image's data, memsets 256 MiB, or builds a system call in data
# and runs it; targeted structural corruptions of the shipped fixtures and
# non-regular inputs; seeded random mutations.  Nothing is committed: every
# object is generated under target/hostile/ (ci/hostile/gen.py, hostile.c).
#
#   ci/hostile.sh [--random N] [--seed S] [--timeout SECS] [-j N]
#                 [--arch DIR]... [--class hostile|malformed|random]...
#                 [--json FILE] [--bin PATH]
#
# Needs target/release/percpu-bed (cargo build --release --locked), the
# cross compilers (ci/deps.sh --cross) and qemu-alpha.  Exits 1 if any
# command panicked, hung, passed where it had to be refused (a silent pass),
# refused without naming the cause, or left a host side effect (a sentinel
# file or directory, a scratch directory, a process); prints a table per
# class, arch and category and the first defects with a command to
# reproduce each.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -x target/release/percpu-bed ]]; then
	echo "ci/hostile.sh: target/release/percpu-bed missing; run: cargo build --release --locked" >&2
	exit 2
fi
for cc in x86_64-linux-gnu-gcc aarch64-linux-gnu-gcc sparc64-linux-gnu-gcc alpha-linux-gnu-gcc \
	s390x-linux-gnu-gcc riscv64-linux-gnu-gcc; do
	if ! command -v "$cc" >/dev/null; then
		echo "ci/hostile.sh: $cc missing; run: ci/deps.sh --cross" >&2
		exit 2
	fi
done
exec python3 ci/hostile/gen.py "$@"
