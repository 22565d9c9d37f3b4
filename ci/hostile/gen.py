#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-only
"""ci/hostile/gen.py - build and run the hostile and malformed object corpus.

Called by ci/hostile.sh (see there for the options).  Three classes:

  hostile    C test code that misbehaves on purpose (ci/hostile/hostile.c), one
             object per case and arch, compiled by fixtures/build --compile:
             must end as a finding (exit 1) or an error (exit 2) whose output
             names the cause.  `control` (not hostile) must pass: it shows the
             setup is sound.
  malformed  targeted structural corruptions of the shipped fixtures and
             non-regular inputs: `run` and `inspect --check` must refuse them
             (exit 2, or 1 for a finding).
  random     seeded byte overwrites and truncations of shipped fixtures: only
             panics and hangs are defects; exit 0 is allowed only if
             `inspect --check` accepts the object too (counted as accepted).

Every command runs with a wall-clock limit, in a private TMPDIR and working
directory; afterwards nothing may exist at the sentinel paths, in the private
directories, under /tmp/percpu-bed-*-<pid>-*, and no process of the run may
survive.  Outcome classes: ok, panic, hang, silent (exit 0 where a refusal was
required), unnamed (refused without naming the expected cause), effect (a
host side effect), accepted (random only: exit 0 that inspect --check accepts).
Standard library only.
"""

import argparse
import concurrent.futures
import glob
import json
import os
import random
import re
import shlex
import shutil
import signal
import stat
import struct
import subprocess
import sys
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HOSTILE_C = os.path.join(ROOT, "ci", "hostile", "hostile.c")
FIXTURES = os.path.join(ROOT, "fixtures", "obj")

# fixture directory -> what `run --arch` takes (the directory name itself)
ARCHES = ["x86_64", "x86_64-rel", "arm64", "arm64-vhe", "s390x", "sparc32", "alpha", "riscv64"]

# case -> (arches or None for all, regex the output must match: the cause)
SYSCALL = r"system call|syscall|sysenter|supervisor call|\(svc\)|ecall|software trap|callsys|int 0x80"
FAULT = r"fault|trapped|wrote \d+ bytes|runaway"
CASES = {
    "control": (None, None),
    "loop": (None, r"runaway code"),
    "mkdir": (None, SYSCALL),
    "creat": (None, SYSCALL),
    "int80": (["x86_64", "x86_64-rel"], SYSCALL),
    "sysenter": (["x86_64", "x86_64-rel"], SYSCALL),
    "text_write": (None, r"write fault \(protected\) at \S+ = \S+ section \.text"),
    "jump_null": (None, r"fetch fault"),
    "jump_unmapped": (None, r"fetch fault \(unmapped\)"),
    "jump_data": (None, r"fetch fault \(protected\) at \S+ = the runtime data page"),
    "jump_trampoline": (None, r"trampoline page|trapped"),
    "jump_stub": (None, r"trapped|fault"),
    "jump_syscall_stub": (["alpha"], r"system call stub"),
    "priv1": (None, FAULT),
    "priv2": (None, FAULT),
    "priv3": (None, FAULT),
    "stack_overflow": (None, r"write fault|window overflow|runaway"),
    "other_cpus": (None, r"wrote 8 bytes \(0xdeadbeefdeadbeef\)"),
    "offsets": (None, r"__per_cpu_offset|nr_cpu_ids"),
    "memset": (None, r"write fault|wrote \d+ bytes|runaway"),
    "memset_down": (None, r"write fault|wrote \d+ bytes|runaway"),
    "smc": (None, r"fetch fault|" + SYSCALL),
}

# Corruptions that leave a well-formed ELF file which a general inspector may
# accept: only `run` (which holds objects to the fixture contract and the
# arch) must refuse these; `inspect --check` accepting one counts as accepted.
INSPECT_MAY_ACCEPT = {
    "machine-wrong",  # a valid object of another machine
    "shnum-zero",  # an object without sections (e_shnum 0, sh[0].sh_size 0)
    "abi-section-renamed",  # no .percpu_bed.abi: distribution modules have none either
}

PANIC_RE = re.compile(r"panicked|RUST_BACKTRACE|stack backtrace:|fatal runtime error|SIGSEGV|core dumped")


# ---- ELF helpers ----------------------------------------------------------------


class Elf:
    """Just enough of an ELF object to corrupt it on purpose."""

    def __init__(self, data):
        self.data = bytearray(data)
        if data[:4] != b"\x7fELF":
            raise ValueError("not ELF")
        self.is64 = data[4] == 2
        self.end = "<" if data[5] == 1 else ">"
        e = self.end
        if self.is64:
            (self.e_type, self.e_machine, _, _, _, self.e_shoff, _, _, _, _, self.e_shentsize, self.e_shnum,
             self.e_shstrndx) = struct.unpack_from(e + "HHIQQQIHHHHHH", data, 16)
        else:
            (self.e_type, self.e_machine, _, _, _, self.e_shoff, _, _, _, _, self.e_shentsize, self.e_shnum,
             self.e_shstrndx) = struct.unpack_from(e + "HHIIIIIHHHHHH", data, 16)
        self.shdrs = [self.shdr(i) for i in range(self.e_shnum)]
        strtab = self.shdrs[self.e_shstrndx]
        self.names = []
        for sh in self.shdrs:
            off = strtab["offset"] + sh["name"]
            self.names.append(bytes(self.data[off:self.data.index(b"\0", off)]).decode())

    # field name -> (offset in a 64-bit header, in a 32-bit one, size 64, size 32)
    EH = {
        "e_type": (16, 16, 2, 2), "e_machine": (18, 18, 2, 2), "e_shoff": (40, 32, 8, 4),
        "e_shentsize": (58, 46, 2, 2), "e_shnum": (60, 48, 2, 2), "e_shstrndx": (62, 50, 2, 2),
    }
    SH = {
        "name": (0, 0, 4, 4), "type": (4, 4, 4, 4), "flags": (8, 8, 8, 4), "addr": (16, 12, 8, 4),
        "offset": (24, 16, 8, 4), "size": (32, 20, 8, 4), "link": (40, 24, 4, 4), "info": (44, 28, 4, 4),
        "addralign": (48, 32, 8, 4), "entsize": (56, 36, 8, 4),
    }

    def _fmt(self, n):
        return self.end + {1: "B", 2: "H", 4: "I", 8: "Q"}[n]

    def _where(self, table, field):
        o64, o32, n64, n32 = table[field]
        return (o64, n64) if self.is64 else (o32, n32)

    def shdr(self, i):
        base = self.e_shoff + i * self.e_shentsize
        out = {}
        for f in self.SH:
            o, n = self._where(self.SH, f)
            out[f] = struct.unpack_from(self._fmt(n), self.data, base + o)[0]
        return out

    def set_eh(self, field, value):
        o, n = self._where(self.EH, field)
        struct.pack_into(self._fmt(n), self.data, o, value & ((1 << (8 * n)) - 1))

    def set_sh(self, i, field, value):
        o, n = self._where(self.SH, field)
        struct.pack_into(self._fmt(n), self.data, self.e_shoff + i * self.e_shentsize + o,
                         value & ((1 << (8 * n)) - 1))

    def index(self, name):
        return self.names.index(name)

    def rela_for(self, target):
        """The relocation section that applies to section `target`."""
        t = self.index(target)
        for i, sh in enumerate(self.shdrs):
            if sh["type"] in (4, 9) and sh["info"] == t:
                return i
        raise KeyError(target)

    def rel_entry(self, ri, k=0):
        sh = self.shdrs[ri]
        ent = sh["entsize"] or ((24 if sh["type"] == 4 else 16) if self.is64 else (12 if sh["type"] == 4 else 8))
        return sh["offset"] + k * ent

    def set_rel(self, ri, k, offset=None, sym=None, rtype=None):
        at = self.rel_entry(ri, k)
        if self.is64:
            r_off, r_info = struct.unpack_from(self.end + "QQ", self.data, at)
            s, t = r_info >> 32, r_info & 0xFFFFFFFF
            if sym is not None:
                s = sym
            if rtype is not None:
                t = rtype
            struct.pack_into(self.end + "QQ", self.data, at, r_off if offset is None else offset & (2**64 - 1),
                             (s << 32) | t)
        else:
            r_off, r_info = struct.unpack_from(self.end + "II", self.data, at)
            s, t = r_info >> 8, r_info & 0xFF
            if sym is not None:
                s = sym & 0xFFFFFF
            if rtype is not None:
                t = rtype & 0xFF
            struct.pack_into(self.end + "II", self.data, at, r_off if offset is None else offset & (2**32 - 1),
                             (s << 8) | t)

    def put_u32(self, off, value):
        struct.pack_into(self.end + "I", self.data, off, value & 0xFFFFFFFF)


EM_OTHER = {62: 183, 183: 62, 22: 62, 2: 62, 18: 62, 0x9026: 62, 243: 62}  # a real but wrong machine


def malformed_variants(data, fname):
    """(name, bytes) pairs of targeted corruptions of one fixture object."""
    e = Elf(data)
    n = len(data)
    out = []

    def mut(name, f):
        x = Elf(bytes(data))
        f(x)
        out.append((name, bytes(x.data)))

    # truncations: inside the ELF header, before and inside the section table,
    # inside the first PROGBITS section, one byte short
    text = e.index(".text") if ".text" in e.names else 1
    for name, at in [("trunc-0", 0), ("trunc-ident", 10), ("trunc-ehdr", 40 if e.is64 else 30),
                     ("trunc-at-shoff", e.e_shoff), ("trunc-mid-shdrs", e.e_shoff + e.e_shentsize * e.e_shnum // 2),
                     ("trunc-text", e.shdrs[text]["offset"] + max(1, e.shdrs[text]["size"] // 2)),
                     ("trunc-last-byte", n - 1)]:
        if at < n:
            out.append((name, bytes(data[:at])))
    # the ELF header's section table fields
    mut("shoff-past-eof", lambda x: x.set_eh("e_shoff", n + 0x1000))
    mut("shoff-huge", lambda x: x.set_eh("e_shoff", (1 << 63) if x.is64 else 0xFFFFFF00))
    mut("shnum-huge", lambda x: x.set_eh("e_shnum", 0xFFFF))
    mut("shnum-zero", lambda x: x.set_eh("e_shnum", 0))
    mut("shstrndx-out-of-range", lambda x: x.set_eh("e_shstrndx", x.e_shnum))
    mut("shstrndx-ffff", lambda x: x.set_eh("e_shstrndx", 0xFFFE))
    mut("shentsize-wrong", lambda x: x.set_eh("e_shentsize", 16))
    # identification and machine
    mut("bad-magic", lambda x: x.data.__setitem__(3, ord("G")))
    mut("class-flip", lambda x: x.data.__setitem__(4, 1 if x.is64 else 2))
    mut("class-invalid", lambda x: x.data.__setitem__(4, 7))
    mut("endian-flip", lambda x: x.data.__setitem__(5, 2 if x.end == "<" else 1))
    mut("endian-invalid", lambda x: x.data.__setitem__(5, 0))
    mut("machine-wrong", lambda x: x.set_eh("e_machine", EM_OTHER.get(x.e_machine, 62)))
    mut("machine-unknown", lambda x: x.set_eh("e_machine", 0x7777))
    mut("type-core", lambda x: x.set_eh("e_type", 4))
    # section table entries
    mut("text-offset-past-eof", lambda x: x.set_sh(text, "offset", n + 0x1000))
    mut("text-size-past-eof", lambda x: x.set_sh(text, "size", 0x7FFFFFF0))
    shstr = e.e_shstrndx
    mut("shstrtab-offset-past-eof", lambda x: x.set_sh(shstr, "offset", n + 0x1000))
    mut("shstrtab-size-zero", lambda x: x.set_sh(shstr, "size", 0))
    mut("section-name-out-of-range", lambda x: x.set_sh(x.index(".percpu_bed.tests"), "name", 0xFFFFFF))
    symtab = e.names.index(".symtab")
    mut("symtab-link-out-of-range", lambda x: x.set_sh(symtab, "link", x.e_shnum + 5))
    mut("symtab-offset-past-eof", lambda x: x.set_sh(symtab, "offset", n + 0x1000))
    rt = e.rela_for(".percpu_bed.tests")
    mut("rela-link-out-of-range", lambda x: x.set_sh(rt, "link", x.e_shnum + 5))
    mut("rela-link-not-symtab", lambda x: x.set_sh(rt, "link", text))
    mut("rela-info-out-of-range", lambda x: x.set_sh(rt, "info", x.e_shnum + 5))
    mut("rela-size-past-eof", lambda x: x.set_sh(rt, "size", n * 4))
    # relocation entries (the descriptors' pointers: they must be applied)
    mut("reloc-sym-out-of-range", lambda x: x.set_rel(rt, 0, sym=0xFFFFFF))
    mut("reloc-type-unknown", lambda x: x.set_rel(rt, 0, rtype=0xFA))
    tsize = e.shdrs[e.index(".percpu_bed.tests")]["size"]
    mut("reloc-offset-past-section", lambda x: x.set_rel(rt, 0, offset=tsize + 0x100))
    mut("reloc-offset-huge", lambda x: x.set_rel(rt, 0, offset=-16))
    # the contract's sections
    tests = e.index(".percpu_bed.tests")
    mut("tests-size-zero", lambda x: x.set_sh(tests, "size", 0))
    mut("tests-size-partial", lambda x: x.set_sh(tests, "size", tsize - 8))
    mut("tests-size-past-eof", lambda x: x.set_sh(tests, "size", tsize + n))
    abi = e.index(".percpu_bed.abi")
    aoff = e.shdrs[abi]["offset"]
    mut("abi-version-wrong", lambda x: x.put_u32(aoff + 4, 99))
    mut("abi-version-zero", lambda x: x.put_u32(aoff + 4, 0))
    mut("abi-magic-wrong", lambda x: x.put_u32(aoff, 0x42504350))
    mut("abi-model-wrong", lambda x: x.put_u32(aoff + 8, 77))
    mut("abi-size-short", lambda x: x.set_sh(abi, "size", 20))
    mut("abi-section-renamed", lambda x: x.set_sh(abi, "name", x.shdrs[text]["name"]))
    return out


# ---- running one command ------------------------------------------------------------


class Runner:
    def __init__(self, args, scratch):
        self.bin = args.bin
        self.timeout = args.timeout
        self.scratch = scratch
        self.counter = 0
        self.lock = threading.Lock()
        self.pids = []

    def run(self, argv):
        """Run percpu-bed with argv in a private TMPDIR and cwd; return a dict."""
        with self.lock:
            self.counter += 1
            k = self.counter
        tmp = f"/tmp/pbh-{os.getpid()}-{k}"
        cwd = os.path.join(self.scratch, "work", str(k))
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        os.makedirs(cwd)
        env = dict(os.environ, TMPDIR=tmp, NO_COLOR="1", RUST_BACKTRACE="1")
        env.pop("RUST_LOG", None)
        cmd = [self.bin] + argv
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True)
        with self.lock:
            self.pids.append(p.pid)
        hung = False
        try:
            out, err = p.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            hung = True
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
        dt = time.monotonic() - t0
        # survivors: anything left in the process group, or using the private TMPDIR
        survivors = []
        if not hung:
            try:
                os.killpg(p.pid, 0)
                survivors.append(f"process group {p.pid} still has members")
            except ProcessLookupError:
                pass
        survivors += [f"pid {q}: {c}" for q, c in processes_mentioning(tmp)]
        for q, _ in processes_mentioning(tmp):
            try:
                os.kill(q, signal.SIGKILL)
            except OSError:
                pass
        left = sorted(os.listdir(tmp)) if os.path.isdir(tmp) else []
        left_cwd = sorted(os.listdir(cwd))
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(cwd, ignore_errors=True)
        return {
            "cmd": cmd,
            "rc": None if hung else p.returncode,
            "hung": hung,
            "secs": dt,
            "out": out.decode(errors="replace"),
            "err": err.decode(errors="replace"),
            "survivors": survivors,
            "leftovers": [os.path.join(tmp, x) for x in left] + [os.path.join(cwd, x) for x in left_cwd],
            "pid": p.pid,
        }


def processes_mentioning(needle):
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                c = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in c:
            found.append((int(d), c.strip()[:200]))
    return found


# ---- classification ---------------------------------------------------------------


def panicked(r):
    return r["rc"] == 101 or (r["rc"] is not None and r["rc"] < 0) or bool(PANIC_RE.search(r["err"]))


def base_defect(r, sentinel):
    if r["hung"]:
        return "hang", f"no exit within {r['secs']:.0f} s"
    if panicked(r):
        line = next((l for l in r["err"].splitlines() if "panicked" in l), r["err"].strip()[-300:])
        return "panic", f"exit {r['rc']}: {line}"
    effects = []
    if sentinel and os.path.lexists(sentinel):
        effects.append(f"sentinel {sentinel} exists")
    effects += r["survivors"] + [f"left behind: {x}" for x in r["leftovers"]]
    if effects:
        return "effect", "; ".join(effects)
    return None


def classify_hostile(case, r, sentinel):
    d = base_defect(r, sentinel)
    if d:
        return d
    want = CASES[case][1]
    text = r["out"] + r["err"]
    if case == "control":
        return ("ok", "passes") if r["rc"] == 0 else ("broken-setup", f"control exit {r['rc']}")
    if r["rc"] == 0:
        return "silent", "exit 0: the hostile test passed"
    if r["rc"] not in (1, 2):
        return "unexpected-exit", f"exit {r['rc']}"
    if not re.search(want, text):
        return "unnamed", f"exit {r['rc']} but the output does not match /{want}/"
    m = re.search(want, text)
    return "ok", f"exit {r['rc']}: ...{m.group(0)}..."


def classify_refusal(r, may_accept=False):
    d = base_defect(r, None)
    if d:
        return d
    if r["rc"] == 0 and may_accept:
        return "accepted", "exit 0 (well-formed ELF: inspect may accept it)"
    if r["rc"] == 0:
        return "silent", "exit 0: a malformed input was accepted"
    if r["rc"] not in (1, 2):
        return "unexpected-exit", f"exit {r['rc']}"
    if not (r["err"].strip() or r["out"].strip()):
        return "unnamed", f"exit {r['rc']} with no message"
    return "ok", f"exit {r['rc']}: " + (r["err"].strip().splitlines() or r["out"].strip().splitlines())[-1][:160]


# ---- the corpus ---------------------------------------------------------------------


def compile_hostile(scratch, only_arches):
    """Compile every (case, arch); returns [(arch, case, obj, sentinel)]."""
    objdir = os.path.join(scratch, "hostile")
    os.makedirs(objdir, exist_ok=True)
    jobs = []
    for case, (arches, _) in CASES.items():
        for a in arches or ARCHES:
            if only_arches and a not in only_arches:
                continue
            sentinel = os.path.join(scratch, "sentinel", f"{case}-{a}")
            hdr = os.path.join(objdir, f"{a}-{case}.h")
            with open(hdr, "w") as f:
                f.write(f'#define HSENTINEL "{sentinel}"\n')
            obj = os.path.join(objdir, f"{a}-{case}.o")
            jobs.append((a, case, obj, sentinel, hdr))

    def build(j):
        a, case, obj, _, hdr = j
        cmd = [os.path.join(ROOT, "fixtures", "build"), "--compile", a, "module", obj, HOSTILE_C, f"-DHCASE_{case}",
               "-include", hdr]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"hostile.sh: compiling {case} for {a} failed:\n{p.stderr}")

    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 2) as ex:
        list(ex.map(build, jobs))
    return [(a, case, obj, s) for a, case, obj, s, _ in jobs]


def make_malformed(scratch, only_arches):
    """[(arch, name, path)] of corruptions and non-regular inputs."""
    d = os.path.join(scratch, "malformed")
    os.makedirs(d, exist_ok=True)
    out = []
    bases = ["mod_basic.o", "kernel.o"]
    for a in ARCHES:
        if only_arches and a not in only_arches:
            continue
        for b in bases:
            src = os.path.join(FIXTURES, a, b)
            with open(src, "rb") as f:
                data = f.read()
            # the kernel image: three arches (its corruptions go the same paths)
            if b == "kernel.o" and a not in ("x86_64", "sparc32", "s390x"):
                continue
            variants = malformed_variants(data, b)
            for name, blob in variants:
                p = os.path.join(d, f"{a}-{b[:-2]}-{name}.o")
                with open(p, "wb") as f:
                    f.write(blob)
                out.append((a, f"{b[:-2]}:{name}", p, b == "kernel.o"))
    # non-regular and odd inputs (arch x86_64)
    special = os.path.join(d, "special")
    os.makedirs(special, exist_ok=True)
    fifo = os.path.join(special, "fifo.o")
    os.mkfifo(fifo)
    empty = os.path.join(special, "empty.o")
    open(empty, "wb").close()
    sparse = os.path.join(special, "sparse-2g.o")
    with open(sparse, "wb") as f:
        f.seek((2 << 30) - 1)
        f.write(b"\0")
    with open(os.path.join(FIXTURES, "x86_64", "mod_basic.o"), "rb") as f:
        good = f.read()
    big = os.path.join(special, "elf-then-sparse-2g.o")
    with open(big, "wb") as f:
        f.write(good)
        f.seek((2 << 30) + 7)
        f.write(b"\0")
    lnk = os.path.join(special, "link-to-dev-zero.o")
    os.symlink("/dev/zero", lnk)
    notelf = os.path.join(special, "text.o")
    with open(notelf, "w") as f:
        f.write("this is not an ELF object\n")
    xz = os.path.join(special, "fake.ko.xz")
    with open(xz, "wb") as f:
        f.write(b"\xfd7zXZ\x00" + bytes(64))
    zst = os.path.join(special, "fake.ko.zst")
    with open(zst, "wb") as f:
        f.write(b"\x28\xb5\x2f\xfd" + bytes(64))
    for name, p in [("fifo", fifo), ("dev-zero", "/dev/zero"), ("dev-null", "/dev/null"), ("directory", special),
                    ("empty-file", empty), ("missing-path", os.path.join(special, "missing.o")),
                    ("sparse-2GiB", sparse), ("elf-plus-2GiB", big), ("symlink-dev-zero", lnk),
                    ("text-file", notelf), ("truncated-xz", xz), ("truncated-zstd", zst)]:
        for a in ["x86_64"] if not only_arches else only_arches[:1]:
            out.append((a, f"special:{name}", p, False))
    return out


BOUNDARY = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\x01", b"\xfe", b"\x00\x00\x00\x00", b"\xff\xff\xff\xff",
            b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00", b"\x00\x00\x00\x80", b"\xff\xff\xff\x7f",
            b"\xff" * 8, b"\x00" * 8, b"\x00\x00\x00\x00\x00\x00\x00\x80"]


def make_random(scratch, n, seed, only_arches):
    rng = random.Random(seed)
    d = os.path.join(scratch, "random")
    os.makedirs(d, exist_ok=True)
    bases = sorted(glob.glob(os.path.join(FIXTURES, "*", "*.o")))
    if only_arches:
        bases = [b for b in bases if os.path.basename(os.path.dirname(b)) in only_arches]
    out = []
    for i in range(n):
        base = rng.choice(bases)
        a = os.path.basename(os.path.dirname(base))
        with open(base, "rb") as f:
            data = bytearray(f.read())
        try:
            e = Elf(bytes(data))
        except ValueError:
            e = None
        what = []
        if rng.random() < 0.2:
            at = rng.randrange(len(data))
            data = data[:at]
            what.append(f"truncate@{at}")
        else:
            for _ in range(rng.randint(1, 4)):
                v = rng.choice(BOUNDARY)
                zone = rng.random()
                if zone < 0.3 or e is None:
                    at = rng.randrange(0, 64)  # the ELF header
                elif zone < 0.6:
                    at = rng.randrange(e.e_shoff, min(len(data), e.e_shoff + e.e_shnum * e.e_shentsize))
                elif zone < 0.8:  # relocation, symbol and contract sections
                    picks = [s for s, nm in zip(e.shdrs, e.names)
                             if s["type"] in (2, 4, 9) or nm.startswith(".percpu_bed")]
                    s = rng.choice(picks)
                    at = s["offset"] + rng.randrange(max(1, s["size"]))
                else:
                    at = rng.randrange(len(data))
                at = min(at, max(0, len(data) - len(v)))
                data[at:at + len(v)] = v
                what.append(f"{v.hex()}@{at}")
        p = os.path.join(d, f"{i:04d}-{a}-{os.path.basename(base)[:-2]}.o")
        with open(p, "wb") as f:
            f.write(data)
        out.append((a, f"{os.path.basename(base)}:{','.join(what)}", p, os.path.basename(base) == "kernel.o", base))
    return out


def run_argv(arch, obj, is_kernel):
    if is_kernel:
        return ["run", "--arch", arch, "--kernel-image", obj]
    return ["run", "--arch", arch, obj]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "percpu-bed"))
    ap.add_argument("--scratch", default=os.path.join(ROOT, "target", "hostile"))
    ap.add_argument("--random", type=int, default=500, help="random mutants (default 500)")
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--timeout", type=float, default=60.0, help="wall-clock limit per command (s)")
    ap.add_argument("-j", "--jobs", type=int, default=2)
    ap.add_argument("--arch", action="append", help="only these fixture directories (repeatable)")
    ap.add_argument("--class", dest="classes", action="append", choices=["hostile", "malformed", "random"])
    ap.add_argument("--json", help="write every outcome here")
    ap.add_argument("--show", type=int, default=8, help="defect cases shown in full (default 8)")
    args = ap.parse_args()
    classes = args.classes or ["hostile", "malformed", "random"]
    if not os.access(args.bin, os.X_OK):
        sys.exit(f"hostile.sh: {args.bin} missing: cargo build --release --locked")
    scratch = os.path.abspath(args.scratch)
    shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(os.path.join(scratch, "sentinel"))
    os.makedirs(os.path.join(scratch, "work"))
    t_start = time.monotonic()
    before_tmp = set(glob.glob("/tmp/percpu-bed-*"))

    # (class, arch, category, name, argv, sentinel, kind)
    items = []
    if "hostile" in classes:
        for a, case, obj, s in compile_hostile(scratch, args.arch):
            items.append(("hostile", a, case, case, ["run", "--arch", a, obj], s, "hostile"))
    if "malformed" in classes:
        for a, name, p, k in make_malformed(scratch, args.arch):
            cat = name.split(":")[1].split("-")[0] if not name.startswith("special:") else "non-regular"
            items.append(("malformed", a, cat, name, run_argv(a, p, k), None, "refuse"))
            lenient = name.split(":")[1] in INSPECT_MAY_ACCEPT
            items.append(("malformed", a, cat, name + " (inspect)", ["inspect", "--check", p], None,
                          "refuse-lenient" if lenient else "refuse"))
    if "random" in classes:
        for a, name, p, k, base in make_random(scratch, args.random, args.seed, args.arch):
            cat = "truncate" if "truncate@" in name else "overwrite"
            items.append(("random", a, cat, name, run_argv(a, p, k), None, "random:" + base))
    t_gen = time.monotonic() - t_start

    runner = Runner(args, scratch)
    # what inspect --check says of each unmodified fixture: planted bugs that
    # break the module rules (bug_noweak_module) fail it by design, so a
    # mutant of one is "accepted" when inspect --check agrees with its base
    base_check = {}
    for b in sorted({it[6][len("random:"):] for it in items if it[6].startswith("random:")}):
        base_check[b] = subprocess.run([args.bin, "inspect", "--check", b], capture_output=True).returncode

    def do(item):
        cls, a, cat, name, argv, sentinel, kind = item
        r = runner.run(argv)
        if kind == "hostile":
            verdict, why = classify_hostile(cat, r, sentinel)
        elif kind.startswith("refuse"):
            verdict, why = classify_refusal(r, kind == "refuse-lenient")
        else:
            d = base_defect(r, None)
            if d:
                verdict, why = d
            elif r["rc"] == 0:
                r2 = runner.run(["inspect", "--check", argv[-1]])
                d2 = base_defect(r2, None)
                if d2:
                    verdict, why = d2[0], "inspect --check: " + d2[1]
                    r = r2
                elif r2["rc"] == 0:
                    verdict, why = "accepted", "run and inspect --check accept it"
                elif r2["rc"] == base_check[kind[len("random:"):]]:
                    verdict, why = "accepted", f"run exit 0, inspect --check exit {r2['rc']} as for the unmodified fixture"
                else:
                    verdict, why = "silent", f"run exit 0 but inspect --check exit {r2['rc']}"
            elif r["rc"] in (1, 2):
                verdict, why = "ok", f"exit {r['rc']}"
            else:
                verdict, why = "unexpected-exit", f"exit {r['rc']}"
        return {"class": cls, "arch": a, "category": cat, "name": name, "cmd": r["cmd"], "rc": r["rc"],
                "secs": round(r["secs"], 3), "verdict": verdict, "why": why,
                "stderr_tail": r["err"][-2000:] if verdict not in ("ok", "accepted") else ""}

    done = []
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as ex:
        futs = [ex.submit(do, it) for it in items]
        for i, f in enumerate(concurrent.futures.as_completed(futs), 1):
            done.append(f.result())
            if sys.stderr.isatty():
                print(f"\r{i}/{len(items)}", end="", file=sys.stderr, flush=True)
    if sys.stderr.isatty():
        print(file=sys.stderr)

    # leftovers anywhere under /tmp made by one of our runs (TMPDIR ignored?)
    ours = set(runner.pids)
    stray_tmp = []
    for p in set(glob.glob("/tmp/percpu-bed-*")) - before_tmp:
        m = re.search(r"-(\d+)-\d+-[0-9a-f]+$", p)
        if m and int(m.group(1)) in ours:
            stray_tmp.append(p)
    for s in glob.glob(os.path.join(scratch, "sentinel", "*")):
        stray_tmp.append(s)  # already counted per case; listed again for the summary
    elapsed = time.monotonic() - t_start

    # ---- report ----------------------------------------------------------------
    defects = ["panic", "hang", "silent", "effect", "unnamed", "unexpected-exit", "broken-setup"]
    print(f"hostile corpus: {len(done)} commands on {args.jobs} jobs, {elapsed:.0f} s "
          f"(generation {t_gen:.0f} s), seed {args.seed}, per-command limit {args.timeout:.0f} s")
    for cls in classes:
        rows = [d for d in done if d["class"] == cls]
        if not rows:
            continue
        print(f"\n{cls}:")
        hdr = f"  {'arch':<11} {'category':<18} {'count':>5} {'ok':>5} {'accepted':>8} " + " ".join(
            f"{x:>7}" for x in ["panic", "hang", "silent", "effect", "unnamed", "other"])
        print(hdr)
        keys = sorted({(d["arch"], d["category"]) for d in rows})
        by_arch = sorted({d["arch"] for d in rows})
        # per arch x category for malformed/random would be long: per arch, then per category
        groups = [("arch", a, [d for d in rows if d["arch"] == a]) for a in by_arch]
        groups += [("category", c, [d for d in rows if d["category"] == c]) for c in sorted({k[1] for k in keys})]
        groups += [("total", "", rows)]
        for kind, key, g in groups:
            cnt = {v: sum(1 for d in g if d["verdict"] == v) for v in ["ok", "accepted"] + defects}
            other = cnt["unexpected-exit"] + cnt["broken-setup"]
            label = (key, "") if kind == "arch" else ("", key) if kind == "category" else ("all", "all")
            print(f"  {label[0]:<11} {label[1]:<18} {len(g):>5} {cnt['ok']:>5} {cnt['accepted']:>8} "
                  + " ".join(f"{cnt[x]:>7}" for x in ["panic", "hang", "silent", "effect", "unnamed"])
                  + f" {other:>7}")
    bad = [d for d in done if d["verdict"] in defects]
    totals = {v: sum(1 for d in done if d["verdict"] == v) for v in ["ok", "accepted"] + defects}
    print(f"\ntotal: {len(done)} commands ({sum(1 for d in done if d['class'] == 'hostile')} hostile, "
          f"{sum(1 for d in done if d['class'] == 'malformed')} malformed, "
          f"{sum(1 for d in done if d['class'] == 'random')} random): "
          + ", ".join(f"{totals[v]} {v}" for v in ["ok", "accepted"] + defects))
    if stray_tmp:
        print("host side effects after the whole run:")
        for s in sorted(stray_tmp):
            print(f"  {s}")
    if bad:
        print(f"\n{len(bad)} defect(s); the first {min(len(bad), args.show)}:")
        order = {v: i for i, v in enumerate(defects)}
        for d in sorted(bad, key=lambda d: (order[d["verdict"]], d["class"], d["arch"], d["name"]))[:args.show]:
            print(f"  [{d['verdict']}] {d['class']} {d['arch']} {d['name']}: {d['why']}")
            print(f"      reproduce: {' '.join(shlex.quote(c) for c in d['cmd'])}")
            for line in d["stderr_tail"].strip().splitlines()[-3:]:
                print(f"      | {line[:200]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"elapsed": elapsed, "seed": args.seed, "totals": totals, "outcomes": done}, f, indent=1)
    sys.exit(1 if bad or stray_tmp else 0)


if __name__ == "__main__":
    main()
