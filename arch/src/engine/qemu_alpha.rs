//! The Alpha engine: QEMU's real alpha target (`qemu-alpha`, user mode)
//! driven over the GDB remote protocol ([`super::gdb_remote`]).
//!
//! Unicorn has no Alpha, so percpu-bed runs Alpha code in `qemu-alpha`
//! (Debian package `qemu-user`), a Linux *user-mode* emulator: the guest is
//! an ordinary Linux process whose address space starts as the segments of
//! a small harness ELF that this module writes ([`harness_elf`]).  QEMU
//! executes every instruction; this module only sets registers, reads and
//! writes memory, plants breakpoints and classifies stops.
//!
//! # Harness
//!
//! One read-only, executable `PT_LOAD` at [`HARNESS_BASE`] (64 KiB) holds the entry point
//! (`bpt; br .-4`, never run: the gdbstub stops before the first
//! instruction), the [`RETURN_TRAMPOLINE`] (a `Z0` breakpoint that callees
//! return to), a system call stub (`callsys` followed by a breakpoint) and
//! a free scratch area ([`SCRATCH_BASE`], [`SCRATCH_SIZE`]) the host may
//! write code into.  A second, RW `PT_LOAD` is a 64 KiB stack
//! ([`HARNESS_STACK_TOP`]).  Adapters should
//! keep their own layout clear of `HARNESS_BASE..HARNESS_END`.
//!
//! # Memory
//!
//! `map`/`unmap` make the guest call `mmap`/`munmap` (alpha syscall
//! numbers 71/73; `mprotect` is 74) through the stub: `$0` = number, args
//! in `$16..$21`, `callsys`, result in `$0` with `$19` (a3) = 1 on error
//! (then `$0` is the positive errno).  Mappings use
//! `MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE|MAP_FIXED_NOREPLACE` with
//! alpha's values (0x2, 0x10, 0x10000, 0x200000; MAP_FIXED itself is 0x100
//! on alpha, 0x10 on x86), never plain `MAP_FIXED`: QEMU 7.2 does not know
//! `MAP_FIXED_NOREPLACE` and drops it, so the address is a hint that QEMU
//! honours when the range is free; when it is not, QEMU places the mapping
//! elsewhere and the engine unmaps it and fails.  Either way a map over an
//! existing mapping fails (like Unicorn's) instead of clobbering it, and
//! in particular can never clobber QEMU's own host mappings (plain
//! `MAP_FIXED` would: guest addresses are host addresses, see below).  The
//! granule is alpha's 8 KiB page.  A map + unmap pair costs about 0.5 ms.
//!
//! QEMU 7.2 runs the guest with guest_base 0, so guest addresses are host
//! addresses: every page-aligned range below 2^47 (0x8000_0000_0000) that
//! is not already taken can be mapped (checked: 0x1_0000,
//! 0x1_0000_0000, 0x10_0000_0000, 0x200_0000_0000, 0x4000_0000_0000,
//! 0x7fff_0000_0000).  Nothing at or above 2^47 can be mapped (ENOMEM):
//! not the alpha kernel's 0xfffffc00_00000000 linear map nor any other
//! "kernel-like" address, so adapters must relocate kernel addresses
//! below 2^47.  Measured bounds: the lowest mappable page is 0x1_0000
//! (QEMU rounds `mmap_min_addr` up to 64 KiB), the highest is
//! 0x7fff_ffff_c000 (the host's last user page is not available).  Sizes
//! are bounded by QEMU's per-page bookkeeping rather than memory (mappings
//! are `MAP_NORESERVE`, pages are allocated on touch): 1 GiB maps in
//! ~3 ms, 64 GiB in ~0.3 s, 1 TiB takes ~5 s and ~3 GiB of QEMU memory, so
//! map what a test touches (a few GiB at most).  Ranges to avoid: the harness, QEMU's guest stack and mmap
//! area (from 0x40_0000_0000 up), and the host's own mappings (QEMU's
//! binary near 0x55xx_xxxx_xxxx..0x56xx_xxxx_xxxx, libraries near
//! 0x7fxx_xxxx_xxxx); a map that hits any of them fails cleanly.
//!
//! Data mappings (every `map` without exec permission) are *shared
//! memory*: a memfd the engine creates and maps once into its own process
//! (a [`SHARED_WINDOW`] of address space; offsets are handed out in
//! order and never reused, `unmap` punches the range out), which the guest
//! opens as `/proc/<engine pid>/fd/<n>` at start and maps `MAP_SHARED` at
//! the requested address.  `read`/`write` of data are then plain memory
//! copies in the engine's process, with no protocol round trip; that is
//! safe because the guest is stopped whenever the engine runs, and data
//! pages hold no translated code.  Code mappings stay private anonymous
//! memory written and read with `M`/`m`, so QEMU invalidates what it
//! translated from them, and mappings beyond the window fall back to the
//! same.  QEMU's debug accesses honour the guest page protection, and a
//! page holding translated code is write-protected internally, so when a
//! write is refused on a page the engine mapped (or the target page is not
//! writable/readable by its perms) the engine `mprotect`s the pages open,
//! retries, and restores the protection: host-side writes always work, as
//! with Unicorn, while the guest still faults on them.
//! (`QemuAlphaConfig::shared_memory = false` turns all of this off:
//! every access goes over gdb, and write tracing steps.)
//!
//! # Calls and the budget
//!
//! `call` sets `$16..$21` = args (at most six), `$26` (ra) =
//! [`RETURN_TRAMPOLINE`], `$27` (pv) = `$pc` = entry (callees compute `$gp`
//! with `ldgp` from pv), `$30` = stack_top.  GDB remote has no instruction
//! counter, so the budget is a hybrid:
//!
//! * the first `min(budget, window)` instructions are single-stepped and
//!   counted exactly, where the window is `step_window` (default 0) in
//!   trace modes `Off` and `Writes` and `max(trace_window, step_window)`
//!   in mode `All`: a function that returns within the window reports
//!   `instructions: Some(exact)`; a budget that is not larger than the
//!   window is enforced exactly (`BudgetExhausted { pc }` is the PC of the
//!   next, unexecuted instruction);
//! * beyond the window (so, by default, from the first instruction) the
//!   guest runs freely under a wall-clock watchdog of
//!   `remaining / insns_per_ms` milliseconds (default rate 10 000
//!   instructions per ms, a deliberately low estimate of QEMU's speed),
//!   clamped to `[min_watchdog, max_watchdog]` (100 ms, 10 s).  When it
//!   fires the engine interrupts QEMU and reports `BudgetExhausted` with
//!   the PC where the guest stopped.  A function that returns in this
//!   phase reports `instructions: None`: not counted (QEMU 7.2 user mode
//!   has no instruction counter the debugger can read).  A watched store
//!   (see Trace) stops the guest for a few hundred microseconds that are
//!   not guest execution: that time (up to `store_refund`, 2 ms) is not
//!   charged to the watchdog; the store is charged `store_charge` (128)
//!   instructions of the budget instead (a call may make at least 64
//!   stores, or its budget if smaller), so an ADD_ALL over 4096 CPUs fits
//!   the default budget and a loop that stores forever still runs out.
//!
//!   QEMU 7.2's user-mode gdbstub does not read the socket while the guest
//!   runs, so the protocol's `0x03` interrupt is never seen; the engine
//!   sends the QEMU process a host SIGINT instead, which QEMU queues for
//!   the guest and reports to the debugger as a SIGINT stop before the
//!   guest sees it (and drops when the debugger continues with `c`).
//!
//! # Stops
//!
//! * the trampoline breakpoint: `Returned { value: $0 }`;
//! * SIGSEGV from a store to a *watched* page (see Trace): not a fault;
//!   the engine records the store and executes it (below), then resumes;
//! * SIGSEGV/SIGBUS otherwise: `Fault`.  QEMU's stop reply carries no fault address
//!   (no `qXfer:siginfo` in 7.2), but the PC is that of the faulting
//!   instruction, so the engine decodes it: for a memory-format load or
//!   store (`ldq`, `stl`, `ldq_u`, ...) the address is `Rb + disp16`
//!   (`& !7` for the `_u` forms) and the access is read or write; if the
//!   instruction cannot be read, or its page is not executable, the fault
//!   is a fetch at the PC.  `unmapped` is true when no mapping the engine
//!   knows (harness + `map`) covers the address;
//! * SIGILL, SIGFPE, SIGTRAP not at the trampoline (e.g. `call_pal bpt`,
//!   whose PC is reported after the instruction), other signals: `Trap`;
//! * the guest exiting (an `exit` syscall in guest code): `Trap`, and the
//!   engine is dead from then on (every later operation is an error).
//!
//! Guest code never makes a system call that would disturb the harness:
//! while single-stepping, `call_pal` instructions other than the harmless
//! user ones (`rduniq`, `wruniq`, `imb`) are reported as `Trap` before
//! they execute, and for free runs the engine plants a breakpoint on every
//! `callsys` word the host writes into executable memory (a `Trap` "not
//! executed" when reached).  Code the guest writes itself is not scanned.
//!
//! # Sandbox
//!
//! Nothing guest code does may reach the host.  The guest is a Linux
//! process, so the only way out is a system call, and every route to one
//! is closed: `callsys` words the host writes into executable memory get
//! breakpoints (free runs) or are refused before they execute (stepping);
//! the harness's own stub at [`SYSCALL_STUB`] carries a breakpoint the
//! engine lifts only around its own system calls, so a jump into it stops
//! as a `Trap` before the `callsys`; and no page is both writable and
//! executable for the guest (the harness segment is RX, data mappings are
//! never executable), so the guest cannot write itself a `callsys`.
//!
//! # Trace
//!
//! [`TraceMode::All`] (`set_trace(true)`, the runner's `--trace`) single-steps a
//! call for up to `max(trace_window, step_window)` instructions (default
//! 16384) and records every memory-format load/store from the instruction
//! word and the registers before it executes (address, size,
//! read/write, value for integer stores; raw register bits for `sts`/`stt`
//! /`stf`/`stg`, which QEMU would convert to memory format).  Loads to
//! `$31`/`$f31` (prefetches) and `ldq_u $31` (unop) access nothing and are
//! not recorded.  A call that outlives the window runs on freely with
//! only its writes recorded (as in `Writes`; logged as a warning).
//!
//! [`TraceMode::Writes`] (what the runner's checks use) records every
//! write without single-stepping: while it (or `All`) is on, every shared
//! writable mapping except the one holding the call's stack is read-only
//! to the guest (`mprotect`, only when that changes).  A store to such a
//! *watched* page stops with SIGSEGV before it happens; the engine decodes
//! it exactly as the stepping trace does (pc, address, size, value), then
//! has QEMU execute it: the store's base register is moved by the distance
//! to the page's writable second view at `ALIAS_BASE + offset` (the same
//! shared memory, mapped on a region's first watched store), the one
//! instruction is single-stepped and the register put back.  A store
//! whose base register is also its data register, and `stl_c`/`stq_c`
//! (whose lock is on the real address), are stepped with the page opened
//! by `mprotect` instead.  Stores to the stack's mapping are neither
//! stopped nor recorded, and nor are stores into the harness's own
//! segments (neither is shared memory).
//!
//! # Costs (measured on the development machine: 2 cores, shared)
//!
//! QEMU 7.2's user-mode gdbstub flushes every translated block at every
//! stop (`tb_flush` in `gdb_handlesig`), so what costs is *stops*: a `c`
//! or `s` round trip up to the next stop takes 170-330 us (code after a
//! stop is translated again), while a query (`g`, `G`, `m`, `M`) takes
//! 25-60 us (unacknowledged mode is not supported, so every packet is
//! acked both ways).  Starting an engine takes about 20 ms.
//!
//! * Fast path (`Writes`/`Off`, `step_window` 0): a call is `G` + `c` +
//!   `g` (about 0.3 ms) plus, per store to a watched page, a trap stop, a
//!   step and two register round trips (about 0.5 ms); host reads and
//!   writes of data are memory copies.  All shipped alpha fixtures: 265
//!   runs at 4 CPUs in ~0.3 s (1.8-2.7 s before), 1045 at 16 in ~1.1 s
//!   (12.9 s before), 4165 at 64 in ~3.4 s (minutes before).
//! * Stepped (`All`, or a `step_window`): ~0.25 ms per stop plus a `g` per
//!   instruction, about 0.3 ms per instruction; a 10-instruction accessor
//!   ~3 ms.  The 4-CPU fixtures traced (`--trace`) take ~2.5 s.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::gdb_remote::{gdb_signal, GdbClient, StopReply};
use super::scratch::ScratchDir;
use super::{Access, Cpu, Engine, EngineError, MemAccess, Outcome, Perms, Reg, TraceMode};

const ENGINE: &str = "qemu-alpha";

/// Alpha page size (the `map` granule).
pub const PAGE_SIZE: u64 = 0x2000;

/// Start of the harness's read-only, executable segment (the conventional
/// alpha text base).
pub const HARNESS_BASE: u64 = 0x1_2000_0000;
/// Size of the harness segment.
pub const HARNESS_CODE_SIZE: u64 = 0x1_0000;
/// The entry point (never executed).
pub const HARNESS_ENTRY: u64 = HARNESS_BASE;
/// Callees return here; a permanent `Z0` breakpoint (backed by a `bpt`).
pub const RETURN_TRAMPOLINE: u64 = HARNESS_BASE + 0x40;
/// `callsys`, followed by the breakpoint at `SYSCALL_STUB + 4`.
pub const SYSCALL_STUB: u64 = HARNESS_BASE + 0x80;
const SYSCALL_LANDING: u64 = SYSCALL_STUB + 4;
/// Where the engine writes the path the guest opens the shared memory by.
const PATH_BUF: u64 = HARNESS_STACK_BASE;
/// Free space for adapters and tests (code, or read-only data: the
/// guest cannot write the harness segment; the host can).
pub const SCRATCH_BASE: u64 = HARNESS_BASE + 0x2000;
pub const SCRATCH_SIZE: u64 = HARNESS_CODE_SIZE - 0x2000;
/// The harness stack segment (RW).
pub const HARNESS_STACK_BASE: u64 = HARNESS_BASE + HARNESS_CODE_SIZE;
pub const HARNESS_STACK_SIZE: u64 = 0x1_0000;
pub const HARNESS_STACK_TOP: u64 = HARNESS_STACK_BASE + HARNESS_STACK_SIZE;
/// End of everything the harness occupies.
pub const HARNESS_END: u64 = HARNESS_STACK_TOP;

/// Highest guest address + 1 that qemu-alpha 7.2 on an x86_64 host can map.
pub const USER_ADDRESS_LIMIT: u64 = 0x8000_0000_0000;

/// Guest addresses `ALIAS_BASE + offset` are the engine's writable second
/// views of shared data mappings (offset: in the shared memory file), used
/// to execute a store to a watched page.  Adapters must not map at
/// `ALIAS_BASE..ALIAS_BASE + SHARED_WINDOW`.
pub const ALIAS_BASE: u64 = 0x6000_0000_0000;
/// Bytes of shared memory (data mappings) one engine can hand out; larger
/// or later mappings fall back to private guest memory.
pub const SHARED_WINDOW: u64 = 64 << 30;

/// Alpha Linux system call numbers (arch/alpha/include/uapi/asm/unistd.h).
pub mod sys {
    pub const NR_EXIT: u64 = 1;
    pub const NR_OPEN: u64 = 45;
    /// Alpha's value.
    pub const O_RDWR: u64 = 2;
    pub const MAP_SHARED: u64 = 0x01;
    pub const NR_MMAP: u64 = 71;
    pub const NR_MUNMAP: u64 = 73;
    pub const NR_MPROTECT: u64 = 74;
    pub const NR_EXIT_GROUP: u64 = 405;
    pub const PROT_READ: u64 = 0x1;
    pub const PROT_WRITE: u64 = 0x2;
    pub const PROT_EXEC: u64 = 0x4;
    pub const MAP_PRIVATE: u64 = 0x02;
    pub const MAP_ANONYMOUS: u64 = 0x10;
    /// Alpha's value (x86: 0x10).
    pub const MAP_FIXED: u64 = 0x100;
    /// Alpha's value (generic: 0x100000).
    pub const MAP_FIXED_NOREPLACE: u64 = 0x200000;
    /// Alpha's value (x86: 0x4000).
    pub const MAP_NORESERVE: u64 = 0x10000;
}

/// GDB register numbers of qemu-alpha's `g` packet (67 registers of 8
/// bytes: 0-30 integer, 31 zero, 32-62 `$f0..$f30`, 63 fpcr, 64 pc, 65
/// unused, 66 unique).
pub mod regnum {
    pub const V0: usize = 0;
    pub const T7_THREAD_INFO: usize = 8;
    pub const A0: usize = 16;
    pub const A3: usize = 19;
    pub const RA: usize = 26;
    pub const PV: usize = 27;
    pub const GP: usize = 29;
    pub const SP: usize = 30;
    pub const ZERO: usize = 31;
    pub const F0: usize = 32;
    pub const FPCR: usize = 63;
    pub const PC: usize = 64;
    pub const UNIQUE: usize = 66;
    pub const COUNT: usize = 67;
}

/// Instruction words used by the harness.
mod insn {
    pub const BPT: u32 = 0x0000_0080;
    pub const CALLSYS: u32 = 0x0000_0083;
    /// `br $31, .-4` (branch displacement -2 words from the next pc).
    pub const BR_BACK: u32 = 0xc3ff_fffe;
}

/// Engine settings.
#[derive(Clone, Debug)]
pub struct QemuAlphaConfig {
    /// The emulator binary (looked up in PATH when relative).
    pub qemu: PathBuf,
    /// Bound on every wait for one protocol reply.
    pub timeout: Duration,
    /// Bound on waiting for QEMU's gdb socket to accept a connection.
    pub connect_timeout: Duration,
    /// Instructions single-stepped (and counted exactly) before a call
    /// runs freely under the watchdog, when the trace mode is `Off` or
    /// `Writes` (default 0: run freely at once; each stepped instruction
    /// costs a stop, ~0.25 ms).
    pub step_window: u64,
    /// Instructions single-stepped and traced in trace mode `All`.
    pub trace_window: u64,
    /// Back data mappings with shared memory the engine reads and writes
    /// directly, and watch writes with page protection (default).  Off:
    /// every access goes over the protocol, and trace mode `Writes` steps
    /// like `All` (slow; for comparison and as a fallback).
    pub shared_memory: bool,
    /// Assumed lower bound on QEMU's speed, to turn the rest of a budget
    /// into watchdog time.
    pub insns_per_ms: u64,
    pub min_watchdog: Duration,
    pub max_watchdog: Duration,
    /// Instructions a free run is charged per watched store it makes.  A
    /// watched store stops the guest (a few hundred microseconds of stop
    /// and retranslation that are not guest execution), so the stop's time
    /// is given back to the watchdog, up to `store_refund`, and the store
    /// counts against the budget instead: code that stores in a loop
    /// forever still runs out, after `budget / store_charge` stores (at
    /// least 64, or the budget if smaller).
    pub store_charge: u64,
    pub store_refund: Duration,
}

impl Default for QemuAlphaConfig {
    fn default() -> Self {
        QemuAlphaConfig {
            qemu: PathBuf::from("qemu-alpha"),
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            step_window: 0,
            trace_window: 16_384,
            shared_memory: true,
            insns_per_ms: 10_000,
            min_watchdog: Duration::from_millis(100),
            max_watchdog: Duration::from_secs(10),
            store_charge: 128,
            store_refund: Duration::from_millis(2),
        }
    }
}

impl QemuAlphaConfig {
    /// Watchdog time for `remaining` instructions beyond the step window.
    pub fn watchdog(&self, remaining: u64) -> Duration {
        let ms = remaining / self.insns_per_ms.max(1);
        Duration::from_millis(ms).clamp(self.min_watchdog, self.max_watchdog.max(self.min_watchdog))
    }
}

/// A mapping the engine knows about.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Region {
    start: u64,
    end: u64,
    perms: Perms,
    /// Offset of `start` in the shared memory file, for shared mappings.
    shared: Option<u64>,
    /// The protection the guest has now (`prot(perms)` without
    /// `PROT_WRITE` while writes are watched).
    guest_prot: u64,
    /// The alias view `ALIAS_BASE + offset` is mapped.
    alias: bool,
}

impl Region {
    fn private(start: u64, end: u64, perms: Perms) -> Region {
        Region { start, end, perms, shared: None, guest_prot: prot(perms), alias: false }
    }

    /// The part `[start, end)` of this region (clipped), offsets adjusted.
    fn piece(&self, start: u64, end: u64) -> Region {
        let (start, end) = (start.max(self.start), end.min(self.end));
        Region { start, end, shared: self.shared.map(|o| o + (start - self.start)), ..*self }
    }

    fn contains(&self, addr: u64, len: u64) -> bool {
        self.start <= addr && addr.checked_add(len).is_some_and(|e| e <= self.end)
    }

    /// Guest stores into it fault and are recorded and redone by the engine.
    fn watched(&self) -> bool {
        self.shared.is_some() && self.perms.write && self.guest_prot & sys::PROT_WRITE == 0
    }
}

/// The few Linux calls the shared memory needs (x86_64/aarch64 glibc).
mod ffi {
    use std::ffi::{c_char, c_int, c_uint, c_void};
    pub type OffT = i64;
    pub const PROT_READ: c_int = 1;
    pub const PROT_WRITE: c_int = 2;
    pub const MAP_SHARED: c_int = 0x01;
    pub const MAP_NORESERVE: c_int = 0x4000;
    pub const MAP_FAILED: *mut c_void = !0usize as *mut c_void;
    pub const MFD_CLOEXEC: c_uint = 1;
    pub const FALLOC_FL_KEEP_SIZE: c_int = 1;
    pub const FALLOC_FL_PUNCH_HOLE: c_int = 2;
    extern "C" {
        pub fn memfd_create(name: *const c_char, flags: c_uint) -> c_int;
        pub fn ftruncate(fd: c_int, len: OffT) -> c_int;
        pub fn fallocate(fd: c_int, mode: c_int, off: OffT, len: OffT) -> c_int;
        pub fn mmap(addr: *mut c_void, len: usize, prot: c_int, flags: c_int, fd: c_int, off: OffT) -> *mut c_void;
        pub fn munmap(addr: *mut c_void, len: usize) -> c_int;
    }
}

/// The shared memory behind data mappings: a memfd the engine maps once
/// (a window of [`SHARED_WINDOW`] bytes) and the guest maps piecewise
/// (`MAP_SHARED` through a descriptor it opened as `/proc/<pid>/fd/<n>`).
struct SharedMem {
    fd: std::os::fd::OwnedFd,
    /// The host window's address.
    host: usize,
    /// Next free file offset (offsets are never reused).
    next: u64,
    /// The guest's descriptor of the same file.
    guest_fd: u64,
}

impl SharedMem {
    fn new() -> io::Result<SharedMem> {
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: memfd_create with a NUL-terminated name; the result is a
        // new descriptor we own (or -1).
        let raw = unsafe { ffi::memfd_create(c"percpu-bed-alpha".as_ptr(), ffi::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor owned by nothing else.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        // SAFETY: a new shared mapping of our own memfd at an address the
        // kernel picks; nothing else refers to that range.  Pages past the
        // file size are never touched (see `alloc`).
        let host = unsafe {
            ffi::mmap(
                std::ptr::null_mut(),
                SHARED_WINDOW as usize,
                ffi::PROT_READ | ffi::PROT_WRITE,
                ffi::MAP_SHARED | ffi::MAP_NORESERVE,
                fd.as_raw_fd(),
                0,
            )
        };
        if host == ffi::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(SharedMem { fd, host: host as usize, next: 0, guest_fd: u64::MAX })
    }

    fn raw_fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.fd.as_raw_fd()
    }

    /// A fresh zeroed range of the file, or `None` when the window is full.
    fn alloc(&mut self, size: u64) -> io::Result<Option<u64>> {
        let off = self.next;
        let end = match off.checked_add(size) {
            Some(e) if e <= SHARED_WINDOW => e,
            _ => return Ok(None),
        };
        // SAFETY: ftruncate on our own descriptor.
        if unsafe { ffi::ftruncate(self.raw_fd(), end as ffi::OffT) } != 0 {
            return Err(io::Error::last_os_error());
        }
        self.next = end;
        Ok(Some(off))
    }

    /// Give a range's memory back (it reads as zeros afterwards).
    fn release(&self, off: u64, len: u64) {
        // SAFETY: fallocate on our own descriptor; failure only keeps memory.
        unsafe {
            ffi::fallocate(
                self.raw_fd(),
                ffi::FALLOC_FL_PUNCH_HOLE | ffi::FALLOC_FL_KEEP_SIZE,
                off as ffi::OffT,
                len as ffi::OffT,
            );
        }
    }

    fn read(&self, off: u64, buf: &mut [u8]) {
        debug_assert!(off + buf.len() as u64 <= self.next);
        // SAFETY: `off..off+len` lies below `next`, inside the window and
        // the file, so the source is mapped and readable; the guest is
        // stopped while the engine runs, and the buffers cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping((self.host + off as usize) as *const u8, buf.as_mut_ptr(), buf.len()) }
    }

    fn write(&self, off: u64, data: &[u8]) {
        debug_assert!(off + data.len() as u64 <= self.next);
        // SAFETY: as in `read`; the window is mapped writable.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), (self.host + off as usize) as *mut u8, data.len()) }
    }
}

impl Drop for SharedMem {
    fn drop(&mut self) {
        // SAFETY: unmapping the window this struct mapped; no references
        // into it outlive the struct.
        unsafe {
            ffi::munmap(self.host as *mut std::ffi::c_void, SHARED_WINDOW as usize);
        }
    }
}

fn prot(p: Perms) -> u64 {
    (if p.read { sys::PROT_READ } else { 0 })
        | (if p.write { sys::PROT_WRITE } else { 0 })
        | (if p.exec { sys::PROT_EXEC } else { 0 })
}

/// A short name for an alpha errno value.
fn errno_name(e: u64) -> String {
    let name = match e {
        1 => "EPERM",
        9 => "EBADF",
        12 => "ENOMEM",
        13 => "EACCES",
        14 => "EFAULT",
        16 => "EBUSY",
        17 => "EEXIST",
        22 => "EINVAL",
        _ => return format!("errno {e}"),
    };
    format!("{name} ({e})")
}

/// A decoded alpha memory-format load or store.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct MemOp {
    pub access: Access,
    pub size: u8,
    /// Data register (integer, or floating point when `fp`).
    pub ra: u8,
    /// Base register.
    pub rb: u8,
    pub disp: i16,
    pub fp: bool,
    /// `ldq_u`/`stq_u`: the address is aligned down to 8.
    pub unaligned: bool,
    /// `ldl_l`/`ldq_l`/`stl_c`/`stq_c`: load-locked / store-conditional.
    pub locked: bool,
}

impl MemOp {
    /// Effective address given the base register's value.
    pub fn address(&self, base: u64) -> u64 {
        let a = base.wrapping_add(self.disp as i64 as u64);
        if self.unaligned {
            a & !7
        } else {
            a
        }
    }

    /// True if the instruction touches memory at all (loads into the zero
    /// registers are prefetches / `unop`).
    pub fn touches_memory(&self) -> bool {
        !(self.access == Access::Read && self.ra == 31)
    }
}

/// Decode an alpha memory-format load/store (`None` for anything else,
/// including `lda`/`ldah`, which compute addresses without accessing).
pub fn decode_mem_op(word: u32) -> Option<MemOp> {
    let opcode = word >> 26;
    let (access, size, fp, unaligned) = match opcode {
        0x0a => (Access::Read, 1, false, false),  // ldbu
        0x0b => (Access::Read, 8, false, true),   // ldq_u
        0x0c => (Access::Read, 2, false, false),  // ldwu
        0x0d => (Access::Write, 2, false, false), // stw
        0x0e => (Access::Write, 1, false, false), // stb
        0x0f => (Access::Write, 8, false, true),  // stq_u
        0x20 => (Access::Read, 4, true, false),   // ldf
        0x21 => (Access::Read, 8, true, false),   // ldg
        0x22 => (Access::Read, 4, true, false),   // lds
        0x23 => (Access::Read, 8, true, false),   // ldt
        0x24 => (Access::Write, 4, true, false),  // stf
        0x25 => (Access::Write, 8, true, false),  // stg
        0x26 => (Access::Write, 4, true, false),  // sts
        0x27 => (Access::Write, 8, true, false),  // stt
        0x28 => (Access::Read, 4, false, false),  // ldl
        0x29 => (Access::Read, 8, false, false),  // ldq
        0x2a => (Access::Read, 4, false, false),  // ldl_l
        0x2b => (Access::Read, 8, false, false),  // ldq_l
        0x2c => (Access::Write, 4, false, false), // stl
        0x2d => (Access::Write, 8, false, false), // stq
        0x2e => (Access::Write, 4, false, false), // stl_c
        0x2f => (Access::Write, 8, false, false), // stq_c
        _ => return None,
    };
    Some(MemOp {
        access,
        size,
        ra: ((word >> 21) & 31) as u8,
        rb: ((word >> 16) & 31) as u8,
        disp: (word & 0xffff) as u16 as i16,
        fp,
        unaligned,
        locked: matches!(opcode, 0x2a | 0x2b | 0x2e | 0x2f),
    })
}

/// `call_pal` functions that must not run under the engine (everything but
/// the harmless unprivileged `imb`, `rduniq`, `wruniq`), with a reason.
fn forbidden_pal(word: u32) -> Option<String> {
    if word >> 26 != 0 {
        return None;
    }
    let func = word & 0x03ff_ffff;
    match func {
        0x86 | 0x9e | 0x9f => None,
        0x80 => Some("call_pal bpt (breakpoint trap)".into()),
        0x81 => Some("call_pal bugchk".into()),
        0x83 => Some("call_pal callsys (system call from guest code)".into()),
        0xaa => Some("call_pal gentrap".into()),
        f => Some(format!("call_pal {f:#x} (privileged or unsupported PALcode call)")),
    }
}

/// The harness ELF: a static alpha executable (ELF64, little endian,
/// EM_ALPHA 0x9026) with an RX segment at [`HARNESS_BASE`] and an RW stack
/// segment.  Written by hand: it is two program headers and a few words.
pub fn harness_elf() -> Vec<u8> {
    const EM_ALPHA: u16 = 0x9026;
    const CODE_OFFSET: u64 = 0x2000;
    let mut code = vec![0u8; (SYSCALL_STUB - HARNESS_BASE + 0x10) as usize];
    let mut put = |at: u64, words: &[u32]| {
        let mut o = (at - HARNESS_BASE) as usize;
        for w in words {
            code[o..o + 4].copy_from_slice(&w.to_le_bytes());
            o += 4;
        }
    };
    put(HARNESS_ENTRY, &[insn::BPT, insn::BR_BACK]);
    // Two traps: a jump past the breakpoint (to +4) must not look like a
    // return (a branch back to it would).
    put(RETURN_TRAMPOLINE, &[insn::BPT, insn::BPT]);
    put(SYSCALL_STUB, &[insn::CALLSYS, insn::BPT, insn::BR_BACK]);

    let mut f = Vec::with_capacity(CODE_OFFSET as usize + code.len());
    // e_ident: magic, ELFCLASS64, ELFDATA2LSB, EV_CURRENT, ELFOSABI_SYSV.
    f.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f.extend_from_slice(&EM_ALPHA.to_le_bytes());
    f.extend_from_slice(&1u32.to_le_bytes()); // e_version
    f.extend_from_slice(&HARNESS_ENTRY.to_le_bytes());
    f.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    f.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
    f.extend_from_slice(&56u16.to_le_bytes()); // e_phentsize
    f.extend_from_slice(&2u16.to_le_bytes()); // e_phnum
    f.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
    f.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    f.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    let mut phdr = |flags: u32, offset: u64, vaddr: u64, filesz: u64, memsz: u64| {
        f.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        f.extend_from_slice(&flags.to_le_bytes());
        f.extend_from_slice(&offset.to_le_bytes());
        f.extend_from_slice(&vaddr.to_le_bytes());
        f.extend_from_slice(&vaddr.to_le_bytes());
        f.extend_from_slice(&filesz.to_le_bytes());
        f.extend_from_slice(&memsz.to_le_bytes());
        f.extend_from_slice(&PAGE_SIZE.to_le_bytes());
    };
    const PF_X: u32 = 1;
    const PF_W: u32 = 2;
    const PF_R: u32 = 4;
    // Never writable by the guest: code the guest wrote itself would not
    // be scanned for `callsys` (see the module docs, Sandbox).
    // The whole segment is in the file: QEMU's loader zero-fills a
    // segment's tail past its file size in place, which faults (QEMU
    // itself dies) when the segment is not writable.
    phdr(PF_R | PF_X, CODE_OFFSET, HARNESS_BASE, HARNESS_CODE_SIZE, HARNESS_CODE_SIZE);
    phdr(PF_R | PF_W, 0, HARNESS_STACK_BASE, 0, HARNESS_STACK_SIZE);
    f.resize(CODE_OFFSET as usize, 0);
    f.extend_from_slice(&code);
    f.resize((CODE_OFFSET + HARNESS_CODE_SIZE) as usize, 0);
    f
}

/// The QEMU child process; killed and reaped on drop.  Declared after the
/// client in [`QemuAlphaEngine`] so the socket closes first.
struct QemuProcess {
    child: Child,
    stderr_path: PathBuf,
}

impl QemuProcess {
    fn stderr(&self) -> String {
        let s = fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let s = s.trim();
        if s.is_empty() {
            "no output".into()
        } else {
            s.chars().take(2000).collect()
        }
    }

    /// Send the host SIGINT QEMU turns into a guest stop.
    fn interrupt(&self) -> io::Result<()> {
        extern "C" {
            fn kill(pid: i32, sig: i32) -> i32;
        }
        const SIGINT: i32 = 2;
        let pid = i32::try_from(self.child.id()).map_err(|_| io::Error::other("pid out of range"))?;
        // SAFETY: kill(2) on our own child's pid with a constant signal; no
        // memory is passed.  The child is not reaped while we hold it, so the
        // pid cannot have been reused.
        if unsafe { kill(pid, SIGINT) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl Drop for QemuProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `qemu-alpha` driven over GDB remote.  See the module documentation.
pub struct QemuAlphaEngine {
    client: GdbClient<UnixStream>,
    process: QemuProcess,
    _dir: ScratchDir,
    cfg: QemuAlphaConfig,
    regs: Option<Vec<u64>>,
    dirty: bool,
    regions: Vec<Region>,
    mode: TraceMode,
    trace: Vec<MemAccess>,
    /// Shared memory behind data mappings (`None`: disabled or unavailable).
    shm: Option<SharedMem>,
    /// Instruction words read so far, by address (dropped when the host
    /// writes or unmaps code).
    code_cache: HashMap<u64, u32>,
    /// Breakpoints the engine planted on `callsys` words in host-written
    /// code, so free-running guest code cannot make system calls.
    syscall_traps: Vec<u64>,
    /// Why the guest is gone, once it is.
    dead: Option<String>,
    /// Host SIGINTs sent whose guest stop has not been seen yet.
    pending_interrupts: u32,
    /// Last known PC (for reports after the guest died).
    last_pc: u64,
    /// `Z0` breakpoints on the kernel runtime's host-call slots and on
    /// a module's WARN/BUG sites ([`Engine::set_host_calls`],
    /// [`Engine::set_breakpoints`]).
    host_calls: Vec<u64>,
    breakpoints: Vec<u64>,
    /// The stack of the call in progress (for [`Engine::resume`]).
    call_stack_top: u64,
    /// The breakpoint the call last stopped at, to step off on resume.
    last_breakpoint: Option<u64>,
    /// A breakpoint guards the system call stub against guest code.
    stub_guard: bool,
    /// The registers `reset_cpu` returns to.
    snapshot: Option<Vec<u64>>,
}

impl QemuAlphaEngine {
    /// Start `qemu-alpha` on a fresh harness with default settings.
    pub fn new() -> Result<Self, EngineError> {
        Self::with_config(QemuAlphaConfig::default())
    }

    pub fn with_config(cfg: QemuAlphaConfig) -> Result<Self, EngineError> {
        let engine_err = |reason: String| EngineError::Engine { engine: ENGINE, reason };
        let dir = ScratchDir::new("percpu-bed-alpha")
            .map_err(|e| engine_err(format!("cannot create a private temp dir: {e}")))?;
        let elf = dir.path().join("harness.elf");
        // qemu-user refuses files without execute permission (EACCES).
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o700)
            .open(&elf)
            .and_then(|mut f| f.write_all(&harness_elf()))
            .map_err(|e| engine_err(format!("cannot write {}: {e}", elf.display())))?;
        let sock = dir.path().join("gdb.sock");
        let stderr_path = dir.path().join("qemu.stderr");
        let stderr = File::create(&stderr_path)
            .map_err(|e| engine_err(format!("cannot create {}: {e}", stderr_path.display())))?;
        let child = Command::new(&cfg.qemu)
            .arg("-g")
            .arg(&sock)
            .arg(&elf)
            .stdin(Stdio::null())
            // qemu-user prints load errors with printf() and then _exit()s,
            // so they are often lost; keep whatever reaches the file.
            .stdout(stderr.try_clone().map(Stdio::from).unwrap_or_else(|_| Stdio::null()))
            .stderr(stderr)
            .spawn()
            .map_err(|e| missing_or_error(&cfg.qemu, e))?;
        dir.set_owner_process(child.id());
        let mut process = QemuProcess { child, stderr_path };
        let stream = connect(&mut process, &sock, cfg.connect_timeout)?;
        let mut client = GdbClient::new(stream, ENGINE, cfg.timeout);
        client.handshake()?;
        match client.halt_reason()? {
            StopReply::Signal { signal: gdb_signal::SIGTRAP, .. } => {}
            other => {
                return Err(EngineError::Protocol {
                    engine: ENGINE,
                    reason: format!("expected the initial SIGTRAP stop, got {other:?}"),
                })
            }
        }
        client.insert_breakpoint(RETURN_TRAMPOLINE, 4)?;
        client.insert_breakpoint(SYSCALL_LANDING, 4)?;
        let mut e = QemuAlphaEngine {
            client,
            process,
            _dir: dir,
            cfg,
            regs: None,
            dirty: false,
            regions: vec![
                Region::private(HARNESS_BASE, HARNESS_BASE + HARNESS_CODE_SIZE, Perms::RX),
                Region::private(HARNESS_STACK_BASE, HARNESS_STACK_TOP, Perms::RW),
            ],
            mode: TraceMode::Off,
            trace: Vec::new(),
            shm: None,
            code_cache: HashMap::new(),
            syscall_traps: Vec::new(),
            dead: None,
            pending_interrupts: 0,
            last_pc: HARNESS_ENTRY,
            host_calls: Vec::new(),
            breakpoints: Vec::new(),
            call_stack_top: HARNESS_STACK_TOP,
            last_breakpoint: None,
            stub_guard: false,
            snapshot: None,
        };
        let pc = e.raw_reg(regnum::PC)?;
        if pc != HARNESS_ENTRY {
            return Err(engine_err(format!("harness stopped at {pc:#x}, expected the entry {HARNESS_ENTRY:#x}")));
        }
        if e.cfg.shared_memory {
            match e.open_shared() {
                Ok(shm) => e.shm = Some(shm),
                Err(why) => tracing::warn!("qemu-alpha: no shared memory ({why}); every access goes over gdb"),
            }
        }
        // Guest code that jumps into the stub would make a real system
        // call with its own registers: a breakpoint stops it there; the
        // engine lifts it only for its own calls.
        let r = e.client.insert_breakpoint(SYSCALL_STUB, 4);
        e.poison(r)?;
        e.stub_guard = true;
        Ok(e)
    }

    /// Create the shared memory and have the guest open it.
    fn open_shared(&mut self) -> Result<SharedMem, String> {
        let mut shm = SharedMem::new().map_err(|e| format!("memfd: {e}"))?;
        let path = format!("/proc/{}/fd/{}\0", std::process::id(), shm.raw_fd());
        let r = self.client.write_memory(PATH_BUF, path.as_bytes());
        self.poison(r).map_err(|e| e.to_string())?;
        match self.syscall(sys::NR_OPEN, [PATH_BUF, sys::O_RDWR, 0, 0, 0, 0]).map_err(|e| e.to_string())? {
            Ok(fd) => shm.guest_fd = fd,
            Err(errno) => {
                return Err(format!("the guest cannot open {}: {}", path.trim_end_matches('\0'), errno_name(errno)))
            }
        }
        Ok(shm)
    }

    /// True when data mappings are shared memory (the fast path).
    pub fn uses_shared_memory(&self) -> bool {
        self.shm.is_some()
    }

    pub fn config(&self) -> &QemuAlphaConfig {
        &self.cfg
    }

    /// The GDB round trips so far, by command, with their times.
    pub fn protocol_stats(&self) -> &super::gdb_remote::Stats {
        self.client.stats()
    }

    /// The QEMU process id (diagnostics, tests).
    pub fn qemu_pid(&self) -> u32 {
        self.process.child.id()
    }

    fn err(&self, reason: impl Into<String>) -> EngineError {
        EngineError::Engine { engine: ENGINE, reason: reason.into() }
    }

    fn alive(&self) -> Result<(), EngineError> {
        match &self.dead {
            Some(why) => Err(self.err(format!("the guest is gone ({why}); create a new engine"))),
            None => Ok(()),
        }
    }

    /// Mark the engine dead after a transport error (the state is unknown).
    fn poison<T>(&mut self, r: Result<T, EngineError>) -> Result<T, EngineError> {
        if let Err(e) = &r {
            if matches!(e, EngineError::Protocol { .. } | EngineError::Timeout { .. }) && self.dead.is_none() {
                self.dead = Some(format!("lost the gdb connection: {e}; qemu stderr: {}", self.process.stderr()));
            }
        }
        r
    }

    // -- registers ---------------------------------------------------------

    fn load_regs(&mut self) -> Result<&mut Vec<u64>, EngineError> {
        if self.regs.is_none() {
            let raw = self.client.read_registers();
            let raw = self.poison(raw)?;
            if raw.len() != regnum::COUNT * 8 {
                return Err(EngineError::Protocol {
                    engine: ENGINE,
                    reason: format!("`g` returned {} bytes, expected {} (67 registers)", raw.len(), regnum::COUNT * 8),
                });
            }
            let regs: Vec<u64> =
                raw.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect();
            self.last_pc = regs[regnum::PC];
            self.regs = Some(regs);
        }
        Ok(self.regs.as_mut().expect("loaded above"))
    }

    fn raw_reg(&mut self, n: usize) -> Result<u64, EngineError> {
        Ok(self.load_regs()?[n])
    }

    fn set_raw_reg(&mut self, n: usize, v: u64) -> Result<(), EngineError> {
        if n == regnum::ZERO || n == 65 {
            // $31 reads as zero and 65 does not exist: QEMU ignores writes.
            return Ok(());
        }
        self.load_regs()?[n] = v;
        self.dirty = true;
        Ok(())
    }

    fn flush_regs(&mut self) -> Result<(), EngineError> {
        if self.dirty {
            let bytes: Vec<u8> =
                self.regs.as_ref().map(|r| r.iter().flat_map(|v| v.to_le_bytes()).collect()).unwrap_or_default();
            let r = self.client.write_registers(&bytes);
            self.poison(r)?;
            self.dirty = false;
        }
        Ok(())
    }

    fn regnum(&self, reg: Reg) -> Result<usize, EngineError> {
        let n = match reg {
            Reg::Pc => regnum::PC,
            Reg::Sp => regnum::SP,
            Reg::Arg(n) if n < 6 => regnum::A0 + n as usize,
            Reg::Ret => regnum::V0,
            Reg::ReturnAddress => regnum::RA,
            Reg::Gp => regnum::GP,
            Reg::ThreadPointer => regnum::T7_THREAD_INFO,
            Reg::Raw(n) if (n as usize) < regnum::COUNT => n as usize,
            _ => return Err(EngineError::NoRegister { engine: ENGINE, cpu: Cpu::Alpha, reg }),
        };
        Ok(n)
    }

    // -- running -----------------------------------------------------------

    /// Flush registers, resume (`c` or `s`), wait up to `within`.
    fn resume_guest(&mut self, step: bool, within: Duration) -> Result<Option<StopReply>, EngineError> {
        self.flush_regs()?;
        self.regs = None;
        let r = if step { self.client.resume_step() } else { self.client.resume_continue() };
        self.poison(r)?;
        let r = self.client.wait_stop(within);
        let stop = self.poison(r)?;
        if let Some(StopReply::Exited { status }) = &stop {
            self.dead = Some(format!("the guest process exited with status {status}"));
        }
        if let Some(StopReply::Terminated { signal }) = &stop {
            self.dead = Some(format!("the guest process was killed by {}", gdb_signal::name(*signal)));
        }
        Ok(stop)
    }

    /// Is this a SIGINT stop left over from an earlier interrupt?
    fn stale_interrupt(&mut self, stop: &StopReply) -> bool {
        if matches!(stop, StopReply::Signal { signal: gdb_signal::SIGINT, .. }) && self.pending_interrupts > 0 {
            self.pending_interrupts -= 1;
            true
        } else {
            false
        }
    }

    /// Continue until a stop, bounded by the reply timeout (for the
    /// engine's own stubs, which stop after one instruction).
    fn run_stub(&mut self) -> Result<StopReply, EngineError> {
        for _ in 0..4 {
            match self.resume_guest(false, self.cfg.timeout)? {
                Some(s) if self.stale_interrupt(&s) => continue,
                Some(s) => return Ok(s),
                None => {
                    let e = EngineError::Timeout {
                        engine: ENGINE,
                        what: "the harness stub to stop".into(),
                        millis: self.cfg.timeout.as_millis() as u64,
                    };
                    return self.poison(Err(e));
                }
            }
        }
        Err(self.err("too many stale interrupt stops"))
    }

    /// Make the guest execute system call `nr`; `Ok(Err(errno))` when the
    /// call failed.  All registers are preserved.
    pub fn syscall(&mut self, nr: u64, args: [u64; 6]) -> Result<Result<u64, u64>, EngineError> {
        self.alive()?;
        let saved = self.load_regs()?.clone();
        {
            let r = self.load_regs()?;
            r[regnum::V0] = nr;
            r[regnum::A0..regnum::A0 + 6].copy_from_slice(&args);
            r[regnum::PC] = SYSCALL_STUB;
        }
        self.dirty = true;
        let guarded = self.stub_guard;
        if guarded {
            let r = self.client.remove_breakpoint(SYSCALL_STUB, 4);
            self.poison(r)?;
        }
        let stop = self.run_stub();
        if guarded {
            let r = self.client.insert_breakpoint(SYSCALL_STUB, 4);
            self.poison(r)?;
        }
        let stop = stop?;
        let pc = self.raw_reg(regnum::PC)?;
        let (v0, a3) = (self.raw_reg(regnum::V0)?, self.raw_reg(regnum::A3)?);
        match stop {
            StopReply::Signal { signal: gdb_signal::SIGTRAP, .. } if pc == SYSCALL_LANDING => {}
            other => {
                return Err(self.err(format!("system call {nr} stub stopped with {other:?} at {pc:#x}")));
            }
        }
        self.regs = Some(saved);
        self.dirty = true;
        Ok(if a3 == 0 { Ok(v0) } else { Err(v0) })
    }

    fn mprotect(&mut self, start: u64, end: u64, prot: u64) -> Result<(), EngineError> {
        match self.syscall(sys::NR_MPROTECT, [start, end - start, prot, 0, 0, 0])? {
            Ok(_) => Ok(()),
            Err(e) => {
                Err(self.err(format!("mprotect({start:#x}, {:#x}, {prot:#x}) failed: {}", end - start, errno_name(e))))
            }
        }
    }

    /// Tracked regions overlapping `[addr, addr+len)`, clipped to it and
    /// widened to pages.
    fn overlaps(&self, addr: u64, len: u64) -> Vec<Region> {
        let end = addr.saturating_add(len);
        let (lo, hi) = (addr & !(PAGE_SIZE - 1), end.saturating_add(PAGE_SIZE - 1) & !(PAGE_SIZE - 1));
        self.regions.iter().filter(|r| r.start < end && addr < r.end).map(|r| r.piece(lo, hi)).collect()
    }

    fn covered(&self, addr: u64, len: u64) -> bool {
        let mut at = addr;
        let end = addr.saturating_add(len);
        while at < end {
            match self.regions.iter().find(|r| r.start <= at && at < r.end) {
                Some(r) => at = r.end,
                None => return false,
            }
        }
        true
    }

    fn find_region(&self, addr: u64) -> Option<Region> {
        self.regions.iter().copied().find(|r| r.start <= addr && addr < r.end)
    }

    /// The shared-memory pieces of `[addr, addr+len)` as (file offset,
    /// position in the range, length), if shared mappings cover all of it.
    fn shared_pieces(&self, addr: u64, len: u64) -> Option<Vec<(u64, usize, usize)>> {
        self.shm.as_ref()?;
        let end = addr.checked_add(len)?;
        let mut at = addr;
        let mut out = Vec::new();
        while at < end {
            let r = self.regions.iter().find(|r| r.start <= at && at < r.end)?;
            let off = r.shared?;
            let n = r.end.min(end) - at;
            out.push((off + (at - r.start), (at - addr) as usize, n as usize));
            at += n;
        }
        Some(out)
    }

    /// Run `op` with the tracked pages of the range temporarily opened to
    /// `need` (read or write), when `force` or when their guest protection
    /// lacks it; the protection is restored afterwards.
    fn with_opened<T>(
        &mut self,
        addr: u64,
        len: u64,
        write: bool,
        force: bool,
        op: impl FnOnce(&mut Self) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        let need = if write { sys::PROT_WRITE } else { sys::PROT_READ };
        let lacking: Vec<Region> =
            self.overlaps(addr, len).into_iter().filter(|r| force || r.guest_prot & need == 0).collect();
        for r in &lacking {
            self.mprotect(r.start, r.end, r.guest_prot | sys::PROT_READ | if write { sys::PROT_WRITE } else { 0 })?;
        }
        let result = op(self);
        for r in &lacking {
            self.mprotect(r.start, r.end, r.guest_prot)?;
        }
        result
    }

    /// Give the guest protection `want` (by region) to every region, one
    /// `mprotect` per run of adjacent regions that need the same change.
    fn set_guest_prot(&mut self, want: impl Fn(&Region) -> u64) -> Result<(), EngineError> {
        let mut order: Vec<usize> = (0..self.regions.len()).collect();
        order.sort_by_key(|&i| self.regions[i].start);
        let mut run: Option<(u64, u64, u64)> = None;
        let mut todo = Vec::new();
        for i in order {
            let r = self.regions[i];
            let w = want(&r);
            if w == r.guest_prot {
                continue;
            }
            self.regions[i].guest_prot = w;
            run = match run {
                Some((s, e, p)) if e == r.start && p == w => Some((s, r.end, p)),
                Some(prev) => {
                    todo.push(prev);
                    Some((r.start, r.end, w))
                }
                None => Some((r.start, r.end, w)),
            };
        }
        todo.extend(run);
        for (s, e, p) in todo {
            self.mprotect(s, e, p)?;
        }
        Ok(())
    }

    /// Watch writes (trace modes `Writes`, `All`): every shared writable
    /// region except the one holding the stack is read-only to the guest.
    fn sync_watch(&mut self, stack_top: u64) -> Result<(), EngineError> {
        let watch = self.mode != TraceMode::Off;
        let sp = stack_top.wrapping_sub(1);
        self.set_guest_prot(|r| {
            let full = prot(r.perms);
            if watch && r.shared.is_some() && r.perms.write && !(r.start <= sp && sp < r.end) {
                full & !sys::PROT_WRITE
            } else {
                full
            }
        })
    }

    /// Read and decode the instruction at `pc`; `None` if unreadable.
    fn fetch_insn(&mut self, pc: u64) -> Result<Option<u32>, EngineError> {
        if let Some(w) = self.code_cache.get(&pc) {
            return Ok(Some(*w));
        }
        if pc % 4 != 0 {
            return Ok(None);
        }
        let mut b = [0u8; 4];
        if let Some(p) = self.shared_pieces(pc, 4) {
            // Data pages are never executable; reading them is still right.
            let shm = self.shm.as_ref().expect("pieces imply shm");
            for (off, at, n) in p {
                shm.read(off, &mut b[at..at + n]);
            }
        } else {
            match self.client.read_memory(pc, 4) {
                Ok(r) if r.len() == 4 => b.copy_from_slice(&r),
                Ok(_) | Err(EngineError::Memory { .. }) => return Ok(None),
                Err(e) => return self.poison(Err(e)),
            }
        }
        let w = u32::from_le_bytes(b);
        self.code_cache.insert(pc, w);
        Ok(Some(w))
    }

    /// Forget cached instruction words in `[addr, addr+len)`.
    fn forget_code(&mut self, addr: u64, len: u64) {
        if self.code_cache.is_empty() {
            return;
        }
        let end = addr.saturating_add(len);
        if len <= 64 {
            let mut a = addr & !3;
            while a < end {
                self.code_cache.remove(&a);
                a += 4;
            }
        } else {
            self.code_cache.retain(|&a, _| a < addr || a >= end);
        }
    }

    /// Plant a breakpoint on every `callsys` word of host-written code in
    /// an executable region, so that free-running guest code stops before
    /// making a system call (stepping refuses them anyway).
    fn trap_syscalls(&mut self, addr: u64, data: &[u8]) -> Result<(), EngineError> {
        let start = (addr + 3) & !3;
        let skip = (start - addr) as usize;
        if skip >= data.len() {
            return Ok(());
        }
        for (i, c) in data[skip..].chunks_exact(4).enumerate() {
            let at = start + 4 * i as u64;
            let word = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            let planted = self.syscall_traps.contains(&at);
            if word == insn::CALLSYS && !planted && self.find_region(at).is_some_and(|r| r.perms.exec) {
                let r = self.client.insert_breakpoint(at, 4);
                self.poison(r)?;
                self.syscall_traps.push(at);
            } else if word != insn::CALLSYS && planted {
                let r = self.client.remove_breakpoint(at, 4);
                self.poison(r)?;
                self.syscall_traps.retain(|&a| a != at);
            }
        }
        Ok(())
    }

    /// Turn a SIGSEGV/SIGBUS stop into a `Fault`.
    fn fault(&mut self, signal: u8) -> Result<Outcome, EngineError> {
        let pc = self.raw_reg(regnum::PC)?;
        let fetch = |e: &Self| Outcome::Fault { pc, addr: pc, access: Access::Fetch, unmapped: !e.covered(pc, 4) };
        let executable = self.find_region(pc).map(|r| r.perms.exec).unwrap_or(true);
        if !executable {
            return Ok(fetch(self));
        }
        let word = match self.fetch_insn(pc)? {
            Some(w) => w,
            None => return Ok(fetch(self)),
        };
        match decode_mem_op(word) {
            Some(op) => {
                let base = if op.rb == 31 { 0 } else { self.raw_reg(op.rb as usize)? };
                let addr = op.address(base);
                Ok(Outcome::Fault { pc, addr, access: op.access, unmapped: !self.covered(addr, u64::from(op.size)) })
            }
            None => {
                tracing::debug!(pc, word, signal, "alpha fault at a non-memory instruction; reporting a fetch");
                Ok(fetch(self))
            }
        }
    }

    /// Classify a stop of a call.
    fn classify(&mut self, stop: StopReply, instructions: Option<u64>) -> Result<Outcome, EngineError> {
        let signal = match stop {
            StopReply::Signal { signal, .. } => signal,
            StopReply::Exited { .. } | StopReply::Terminated { .. } => {
                let reason = self.dead.clone().unwrap_or_else(|| "the guest process ended".into());
                return Ok(Outcome::Trap { pc: self.last_pc, reason });
            }
        };
        let pc = self.raw_reg(regnum::PC)?;
        Ok(match signal {
            gdb_signal::SIGTRAP if pc == RETURN_TRAMPOLINE => {
                Outcome::Returned { value: self.raw_reg(regnum::V0)?, instructions }
            }
            gdb_signal::SIGTRAP if pc == SYSCALL_STUB => Outcome::Trap {
                pc,
                reason: "jumped into the harness's system call stub (a system call from guest code; not executed)"
                    .into(),
            },
            // call_pal bpt reports the pc after it: the second trap word.
            gdb_signal::SIGTRAP if pc == RETURN_TRAMPOLINE + 8 => Outcome::Trap {
                pc: RETURN_TRAMPOLINE + 4,
                reason: "jumped into the harness's return trampoline past its breakpoint (not a return)".into(),
            },
            gdb_signal::SIGTRAP if self.host_calls.contains(&pc) => Outcome::HostCall { pc, instructions },
            gdb_signal::SIGTRAP if self.breakpoints.contains(&pc) => Outcome::Breakpoint { pc, instructions },
            gdb_signal::SIGTRAP if self.syscall_traps.contains(&pc) => {
                Outcome::Trap { pc, reason: "call_pal callsys (system call from guest code) (not executed)".into() }
            }
            gdb_signal::SIGTRAP => Outcome::Trap {
                pc,
                reason: "SIGTRAP: a trap instruction (bpt/gentrap; pc is after it) or a stray breakpoint".into(),
            },
            gdb_signal::SIGSEGV | gdb_signal::SIGBUS => self.fault(signal)?,
            gdb_signal::SIGILL => Outcome::Trap { pc, reason: "SIGILL: illegal or privileged instruction".into() },
            gdb_signal::SIGFPE => Outcome::Trap { pc, reason: "SIGFPE: arithmetic trap".into() },
            s => Outcome::Trap { pc, reason: format!("stopped by {}", gdb_signal::name(s)) },
        })
    }

    /// Resume for one instruction; a stale SIGINT stop (nothing ran) is
    /// retried.
    fn step_once(&mut self, pc: u64) -> Result<StopReply, EngineError> {
        loop {
            let stop = match self.resume_guest(true, self.cfg.timeout)? {
                Some(s) => s,
                None => {
                    let e = EngineError::Timeout {
                        engine: ENGINE,
                        what: format!("the stop after single-stepping {pc:#x}"),
                        millis: self.cfg.timeout.as_millis() as u64,
                    };
                    return self.poison(Err(e));
                }
            };
            if self.stale_interrupt(&stop) {
                // Taken before the instruction if the pc did not move.
                if self.raw_reg(regnum::PC)? == pc {
                    continue;
                }
                return Ok(StopReply::Signal { signal: gdb_signal::SIGTRAP, info: Vec::new() });
            }
            return Ok(stop);
        }
    }

    /// The instruction `word` (at the pc) if it is a store to a watched
    /// page: its decoded form, address and region index.
    fn watched_store(&mut self, word: Option<u32>) -> Result<Option<(MemOp, u64, usize)>, EngineError> {
        let Some(op) = word.and_then(decode_mem_op).filter(|op| op.access == Access::Write) else {
            return Ok(None);
        };
        let base = if op.rb == 31 { 0 } else { self.raw_reg(op.rb as usize)? };
        let addr = op.address(base);
        Ok(self.regions.iter().position(|r| r.watched() && r.contains(addr, u64::from(op.size))).map(|i| (op, addr, i)))
    }

    /// Execute the store at `pc` to watched page `addr` on QEMU: through the
    /// region's writable alias (its base register moved there for the one
    /// step, then restored), or, when the base register is also the data
    /// register or the store is conditional (its lock is on the real
    /// address), with the page opened for the step.  Returns the step's stop.
    fn step_watched_store(&mut self, pc: u64, op: MemOp, addr: u64, idx: usize) -> Result<StopReply, EngineError> {
        let redirect = (op.fp || op.ra != op.rb) && !op.locked && op.rb != 31;
        if !redirect {
            let page = addr & !(PAGE_SIZE - 1);
            let r = self.regions[idx];
            self.mprotect(page, page + PAGE_SIZE, r.guest_prot | sys::PROT_WRITE)?;
            let stop = self.step_once(pc)?;
            self.mprotect(page, page + PAGE_SIZE, r.guest_prot)?;
            return Ok(stop);
        }
        if !self.regions[idx].alias {
            let r = self.regions[idx];
            let (off, gfd) = (r.shared.expect("watched regions are shared"), self.shm.as_ref().map(|s| s.guest_fd));
            let alias = ALIAS_BASE + off;
            let flags = sys::MAP_SHARED | sys::MAP_NORESERVE | sys::MAP_FIXED_NOREPLACE;
            let args = [alias, r.end - r.start, sys::PROT_READ | sys::PROT_WRITE, flags, gfd.unwrap_or(u64::MAX), off];
            match self.syscall(sys::NR_MMAP, args)? {
                Ok(got) if got == alias => {}
                other => {
                    if let Ok(got) = other {
                        let _ = self.syscall(sys::NR_MUNMAP, [got, r.end - r.start, 0, 0, 0, 0])?;
                    }
                    return Err(self.err(format!("cannot map the alias of {:#x}..{:#x} at {alias:#x}", r.start, r.end)));
                }
            }
            self.regions[idx].alias = true;
        }
        let r = self.regions[idx];
        let delta = (ALIAS_BASE + r.shared.expect("shared")).wrapping_sub(r.start);
        let base = self.raw_reg(op.rb as usize)?;
        self.set_raw_reg(op.rb as usize, base.wrapping_add(delta))?;
        let stop = self.step_once(pc)?;
        // A store never writes its base register: put it back.
        self.set_raw_reg(op.rb as usize, base)?;
        Ok(stop)
    }

    fn run_call(&mut self, budget: u64, stack_top: u64) -> Result<Outcome, EngineError> {
        if self.shm.is_some() {
            self.sync_watch(stack_top)?;
        }
        let mut executed: u64 = 0;
        // Without shared memory, writes can only be traced by stepping.
        let step_all = self.mode == TraceMode::All || (self.mode == TraceMode::Writes && self.shm.is_none());
        let window = if step_all { self.cfg.trace_window.max(self.cfg.step_window) } else { self.cfg.step_window };
        let stepped = budget.min(window);
        while executed < stepped {
            let pc = self.raw_reg(regnum::PC)?;
            if pc == RETURN_TRAMPOLINE {
                return Ok(Outcome::Returned { value: self.raw_reg(regnum::V0)?, instructions: Some(executed) });
            }
            if let Some(stop) = self.runtime_stop(pc, Some(executed)) {
                return Ok(stop);
            }
            if pc == SYSCALL_STUB {
                let reason = "jumped into the harness's system call stub (a system call from guest code; not executed)";
                return Ok(Outcome::Trap { pc, reason: reason.into() });
            }
            let word = self.fetch_insn(pc)?;
            if let Some(reason) = word.and_then(forbidden_pal) {
                return Ok(Outcome::Trap { pc, reason: format!("{reason} (not executed)") });
            }
            let access = match (self.mode, word.and_then(decode_mem_op)) {
                (TraceMode::All, Some(op)) if op.touches_memory() => Some(self.describe_access(pc, op)?),
                (TraceMode::Writes, Some(op)) if op.access == Access::Write => Some(self.describe_access(pc, op)?),
                _ => None,
            };
            let stop = match self.watched_store(word)? {
                Some((op, addr, idx)) => self.step_watched_store(pc, op, addr, idx)?,
                None => self.step_once(pc)?,
            };
            match stop {
                StopReply::Signal { signal: gdb_signal::SIGTRAP, .. } => {
                    executed += 1;
                    if let Some(a) = access {
                        self.trace.push(a);
                    }
                }
                other => return self.classify(other, Some(executed)),
            }
        }
        let pc = self.raw_reg(regnum::PC)?;
        if pc == RETURN_TRAMPOLINE {
            return Ok(Outcome::Returned { value: self.raw_reg(regnum::V0)?, instructions: Some(executed) });
        }
        if executed >= budget {
            return Ok(Outcome::BudgetExhausted { pc, budget });
        }
        if self.mode == TraceMode::All || (self.mode == TraceMode::Writes && self.shm.is_none()) {
            let what = if self.shm.is_some() { "reads are no longer traced" } else { "the rest runs untraced" };
            tracing::warn!(executed, budget, "qemu-alpha: call outlived the trace window; {what}");
        }
        self.run_free(budget - executed, budget)
    }

    /// Let the guest run under the watchdog; record and redo stores to
    /// watched pages as they fault.
    fn run_free(&mut self, remaining: u64, budget: u64) -> Result<Outcome, EngineError> {
        // Guest time left, and budget left for watched stores (see
        // `QemuAlphaConfig::store_charge`).
        let mut left = self.cfg.watchdog(remaining);
        let mut stores_left = (remaining / self.cfg.store_charge.max(1)).max(remaining.min(64));
        loop {
            let t = Instant::now();
            let stop = match self.resume_guest(false, left)? {
                Some(s) if self.stale_interrupt(&s) => {
                    left = left.saturating_sub(t.elapsed());
                    continue;
                }
                Some(s) => s,
                None => break,
            };
            let ran = t.elapsed();
            if let StopReply::Signal { signal: gdb_signal::SIGSEGV, .. } = stop {
                let pc = self.raw_reg(regnum::PC)?;
                let word = self.fetch_insn(pc)?;
                if let Some((op, addr, idx)) = self.watched_store(word)? {
                    left = left.saturating_sub(ran.saturating_sub(self.cfg.store_refund));
                    if stores_left == 0 || left.is_zero() {
                        // Stopped before the store: it did not happen.
                        return Ok(Outcome::BudgetExhausted { pc, budget });
                    }
                    stores_left -= 1;
                    if self.mode != TraceMode::Off {
                        let a = self.describe_access(pc, op)?;
                        self.trace.push(a);
                    }
                    match self.step_watched_store(pc, op, addr, idx)? {
                        StopReply::Signal { signal: gdb_signal::SIGTRAP, .. } => continue,
                        other => return self.classify(other, None),
                    }
                }
            }
            return self.classify(stop, None);
        }
        self.process.interrupt().map_err(|e| self.err(format!("cannot interrupt qemu-alpha: {e}")))?;
        self.pending_interrupts += 1;
        let r = self.client.wait_stop(self.cfg.timeout);
        match self.poison(r)? {
            Some(s) if self.stale_interrupt(&s) => {
                let pc = self.raw_reg(regnum::PC)?;
                Ok(Outcome::BudgetExhausted { pc, budget })
            }
            // It stopped by itself just as the watchdog fired; the SIGINT
            // stays pending and is skipped at the next resume.
            Some(s) => self.classify(s, None),
            None => {
                let e = EngineError::Timeout {
                    engine: ENGINE,
                    what: "the guest to stop after SIGINT".into(),
                    millis: self.cfg.timeout.as_millis() as u64,
                };
                self.poison(Err(e))
            }
        }
    }

    /// The stop a call makes before executing the instruction at `pc`, if
    /// it is a host-call slot or a breakpoint (the stepping path checks
    /// before each step: a step onto a `Z0` stops without executing).
    fn runtime_stop(&self, pc: u64, instructions: Option<u64>) -> Option<Outcome> {
        if self.host_calls.contains(&pc) {
            Some(Outcome::HostCall { pc, instructions })
        } else if self.breakpoints.contains(&pc) {
            Some(Outcome::Breakpoint { pc, instructions })
        } else {
            None
        }
    }

    /// Remember a runtime stop's pc, so that resume steps off it.
    fn note_stop(&mut self, out: &Outcome) {
        self.last_breakpoint = match *out {
            Outcome::HostCall { pc, .. } | Outcome::Breakpoint { pc, .. } => Some(pc),
            _ => None,
        };
    }

    /// Replace the set of runtime `Z0` breakpoints in `which` by `addrs`.
    fn replace_breakpoints(&mut self, host_calls: bool, addrs: &[u64]) -> Result<(), EngineError> {
        self.alive()?;
        let old = if host_calls { std::mem::take(&mut self.host_calls) } else { std::mem::take(&mut self.breakpoints) };
        let others: Vec<u64> = if host_calls { self.breakpoints.clone() } else { self.host_calls.clone() };
        let keep = |a: &u64| others.contains(a) || self.syscall_traps.contains(a);
        let lift: Vec<u64> = old.iter().copied().filter(|a| !addrs.contains(a) && !keep(a)).collect();
        let plant: Vec<u64> = addrs.iter().copied().filter(|a| !old.contains(a) && !keep(a)).collect();
        for a in lift {
            let r = self.client.remove_breakpoint(a, 4);
            self.poison(r)?;
        }
        for a in plant {
            if a % 4 != 0 {
                return Err(self.err(format!("breakpoint address {a:#x} is not instruction aligned")));
            }
            let r = self.client.insert_breakpoint(a, 4);
            self.poison(r)?;
        }
        let mut new = addrs.to_vec();
        new.sort_unstable();
        new.dedup();
        if host_calls {
            self.host_calls = new;
        } else {
            self.breakpoints = new;
        }
        Ok(())
    }

    fn describe_access(&mut self, pc: u64, op: MemOp) -> Result<MemAccess, EngineError> {
        let base = if op.rb == 31 { 0 } else { self.raw_reg(op.rb as usize)? };
        let value = if op.access == Access::Write {
            let raw = match (op.fp, op.ra) {
                (_, 31) => 0,
                (false, r) => self.raw_reg(r as usize)?,
                (true, r) => self.raw_reg(regnum::F0 + r as usize)?,
            };
            let mask = if op.size >= 8 { u64::MAX } else { (1u64 << (8 * op.size)) - 1 };
            Some(raw & mask)
        } else {
            None
        };
        let addr = op.address(base);
        // Called before the store executes: read what it overwrites
        // (little endian), a memory copy for shared data.
        let old = match op.access {
            Access::Write if op.size <= 8 => {
                let mut b = [0u8; 8];
                self.read(addr, &mut b[..op.size as usize])
                    .ok()
                    .map(|()| b[..op.size as usize].iter().rev().fold(0u64, |v, &x| v << 8 | x as u64))
            }
            _ => None,
        };
        Ok(MemAccess { pc, addr, size: op.size, access: op.access, value, old })
    }

    fn check_range(&self, addr: u64, size: u64) -> Result<(), String> {
        if addr % PAGE_SIZE != 0 || size % PAGE_SIZE != 0 {
            return Err(format!("address and size must be multiples of the {PAGE_SIZE:#x}-byte alpha page"));
        }
        if size == 0 {
            return Err("empty range".into());
        }
        match addr.checked_add(size) {
            Some(end) if end <= USER_ADDRESS_LIMIT => Ok(()),
            _ => Err(format!(
                "qemu-alpha user mode can only map below {USER_ADDRESS_LIMIT:#x} (guest address = host address)"
            )),
        }
    }
}

fn missing_or_error(qemu: &Path, e: io::Error) -> EngineError {
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied => EngineError::Missing {
            engine: ENGINE,
            what: qemu.display().to_string(),
            reason: e.to_string(),
            install: "Debian package `qemu-user`: apt-get install qemu-user".into(),
        },
        _ => EngineError::Engine { engine: ENGINE, reason: format!("cannot start {}: {e}", qemu.display()) },
    }
}

/// Connect to QEMU's gdb socket, retrying until it appears (bounded).
fn connect(process: &mut QemuProcess, sock: &Path, within: Duration) -> Result<UnixStream, EngineError> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(status)) = process.child.try_wait() {
            return Err(EngineError::Engine {
                engine: ENGINE,
                reason: format!("qemu-alpha exited ({status}) before serving gdb: {}", process.stderr()),
            });
        }
        match UnixStream::connect(sock) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => {
                return Err(EngineError::Timeout {
                    engine: ENGINE,
                    what: format!("qemu-alpha's gdb socket {} ({e}; qemu: {})", sock.display(), process.stderr()),
                    millis: within.as_millis() as u64,
                })
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

impl Drop for QemuAlphaEngine {
    fn drop(&mut self) {
        tracing::debug!("qemu-alpha round trips: {}", self.client.stats());
        if self.dead.is_none() {
            self.client.kill();
        }
        // `process` kills and reaps QEMU, `_dir` removes the socket and ELF.
    }
}

impl Engine for QemuAlphaEngine {
    fn cpu(&self) -> Cpu {
        Cpu::Alpha
    }

    fn name(&self) -> &'static str {
        ENGINE
    }

    fn map_granule(&self) -> u64 {
        PAGE_SIZE
    }

    fn map(&mut self, addr: u64, size: u64, perms: Perms) -> Result<(), EngineError> {
        let map_err = |reason: String| EngineError::Map { engine: ENGINE, addr, size, reason };
        self.check_range(addr, size).map_err(map_err)?;
        self.alive()?;
        // Data goes into shared memory; code stays private, written over
        // gdb so QEMU sees every change to it.
        let shared = match self.shm.as_mut() {
            Some(shm) if !perms.exec => {
                shm.alloc(size).map_err(|e| map_err(format!("cannot grow the shared memory: {e}")))?
            }
            _ => None,
        };
        // Watched from the start when writes are traced (`sync_watch`
        // opens the stack's region at the call).
        let guest_prot = if shared.is_some() && perms.write && self.mode != TraceMode::Off {
            prot(perms) & !sys::PROT_WRITE
        } else {
            prot(perms)
        };
        // NORESERVE: large sparse areas (vmalloc-like percpu chunks) must not
        // hit the host's overcommit heuristic; pages are allocated on touch.
        let (kind, fd, off) = match (shared, &self.shm) {
            (Some(off), Some(shm)) => (sys::MAP_SHARED, shm.guest_fd, off),
            _ => (sys::MAP_PRIVATE | sys::MAP_ANONYMOUS, u64::MAX, 0),
        };
        let flags = kind | sys::MAP_NORESERVE | sys::MAP_FIXED_NOREPLACE;
        let failed = match self.syscall(sys::NR_MMAP, [addr, size, guest_prot, flags, fd, off])? {
            Ok(got) if got == addr => None,
            Ok(got) => {
                // A kernel/QEMU without MAP_FIXED_NOREPLACE took it as a hint.
                let _ = self.syscall(sys::NR_MUNMAP, [got, size, 0, 0, 0, 0])?;
                Some(format!("mmap placed it at {got:#x} instead (range occupied?)"))
            }
            Err(e) => {
                let hint = if e == 17 { ": the range overlaps an existing mapping" } else { "" };
                Some(format!("guest mmap failed: {}{hint}", errno_name(e)))
            }
        };
        if let Some(why) = failed {
            if let (Some(off), Some(shm)) = (shared, &self.shm) {
                shm.release(off, size);
            }
            return Err(map_err(why));
        }
        self.regions.push(Region { start: addr, end: addr + size, perms, shared, guest_prot, alias: false });
        Ok(())
    }

    fn unmap(&mut self, addr: u64, size: u64) -> Result<(), EngineError> {
        let map_err = |reason: String| EngineError::Map { engine: ENGINE, addr, size, reason };
        self.check_range(addr, size).map_err(map_err)?;
        self.alive()?;
        let end = addr + size;
        if addr < HARNESS_END && HARNESS_BASE < end {
            return Err(map_err("the range overlaps the engine's harness".into()));
        }
        if let Err(e) = self.syscall(sys::NR_MUNMAP, [addr, size, 0, 0, 0, 0])? {
            return Err(map_err(format!("guest munmap failed: {}", errno_name(e))));
        }
        let mut kept = Vec::with_capacity(self.regions.len() + 1);
        let mut gone = Vec::new();
        for r in std::mem::take(&mut self.regions) {
            if r.end <= addr || end <= r.start {
                kept.push(r);
                continue;
            }
            if r.start < addr {
                kept.push(r.piece(r.start, addr));
            }
            if end < r.end {
                kept.push(r.piece(end, r.end));
            }
            gone.push(r.piece(addr, end));
        }
        self.regions = kept;
        for g in gone {
            if let Some(off) = g.shared {
                if g.alias {
                    let _ = self.syscall(sys::NR_MUNMAP, [ALIAS_BASE + off, g.end - g.start, 0, 0, 0, 0])?;
                }
                if let Some(shm) = &self.shm {
                    shm.release(off, g.end - g.start);
                }
            }
        }
        self.forget_code(addr, size);
        self.syscall_traps.retain(|&a| a < addr || a >= end);
        Ok(())
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), EngineError> {
        self.alive()?;
        if data.is_empty() {
            return Ok(());
        }
        let len = data.len() as u64;
        if let Some(pieces) = self.shared_pieces(addr, len) {
            let shm = self.shm.as_ref().expect("pieces imply shm");
            for (off, at, n) in pieces {
                shm.write(off, &data[at..at + n]);
            }
            return Ok(());
        }
        self.forget_code(addr, len);
        let first = self.with_opened(addr, len, true, false, |e| {
            let r = e.client.write_memory(addr, data);
            e.poison(r)
        });
        match first {
            // QEMU write-protects pages holding translated code; reopening
            // them with mprotect invalidates that code and allows the write.
            Err(EngineError::Memory { .. }) if self.covered(addr, len) => {
                self.with_opened(addr, len, true, true, |e| {
                    let r = e.client.write_memory(addr, data);
                    e.poison(r)
                })?;
            }
            other => other?,
        }
        self.trap_syscalls(addr, data)
    }

    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), EngineError> {
        self.alive()?;
        if buf.is_empty() {
            return Ok(());
        }
        let len = buf.len();
        if let Some(pieces) = self.shared_pieces(addr, len as u64) {
            let shm = self.shm.as_ref().expect("pieces imply shm");
            for (off, at, n) in pieces {
                shm.read(off, &mut buf[at..at + n]);
            }
            return Ok(());
        }
        let data = self.with_opened(addr, len as u64, false, false, |e| {
            let r = e.client.read_memory(addr, len);
            e.poison(r)
        })?;
        buf.copy_from_slice(&data);
        Ok(())
    }

    fn set_reg(&mut self, reg: Reg, value: u64) -> Result<(), EngineError> {
        let n = self.regnum(reg)?;
        self.alive()?;
        self.set_raw_reg(n, value)
    }

    fn reg(&mut self, reg: Reg) -> Result<u64, EngineError> {
        let n = self.regnum(reg)?;
        self.alive()?;
        self.raw_reg(n)
    }

    fn call(&mut self, entry: u64, args: &[u64], stack_top: u64, budget: u64) -> Result<Outcome, EngineError> {
        self.alive()?;
        if args.len() > 6 {
            return Err(self.err(format!("{} arguments: the alpha engine passes at most six, in $16..$21", args.len())));
        }
        {
            let r = self.load_regs()?;
            for (i, a) in args.iter().enumerate() {
                r[regnum::A0 + i] = *a;
            }
            r[regnum::RA] = RETURN_TRAMPOLINE;
            r[regnum::PV] = entry;
            r[regnum::SP] = stack_top;
            r[regnum::PC] = entry;
        }
        self.dirty = true;
        self.call_stack_top = stack_top;
        self.last_breakpoint = None;
        let out = self.run_call(budget, stack_top)?;
        self.note_stop(&out);
        if let Outcome::Fault { pc, .. } | Outcome::Trap { pc, .. } | Outcome::BudgetExhausted { pc, .. } = out {
            self.last_pc = pc;
        }
        Ok(out)
    }

    fn set_trace(&mut self, on: bool) {
        self.mode = if on { TraceMode::All } else { TraceMode::Off };
    }

    fn set_trace_mode(&mut self, mode: TraceMode) {
        self.mode = mode;
    }

    fn take_trace(&mut self) -> Vec<MemAccess> {
        std::mem::take(&mut self.trace)
    }

    fn snapshot_cpu(&mut self) -> Result<(), EngineError> {
        self.alive()?;
        self.snapshot = Some(self.load_regs()?.clone());
        Ok(())
    }

    fn reset_cpu(&mut self) -> Result<(), EngineError> {
        if let Some(r) = &self.snapshot {
            self.alive()?;
            self.regs = Some(r.clone());
            self.dirty = true;
        }
        Ok(())
    }

    fn set_host_calls(&mut self, addrs: &[u64]) -> Result<(), EngineError> {
        self.replace_breakpoints(true, addrs)
    }

    fn set_breakpoints(&mut self, addrs: &[u64]) -> Result<(), EngineError> {
        self.replace_breakpoints(false, addrs)
    }

    fn resume(&mut self, budget: u64) -> Result<Outcome, EngineError> {
        self.alive()?;
        let pc = self.raw_reg(regnum::PC)?;
        let mut budget = budget;
        // A `Z0` the call stopped at would stop it again before the
        // instruction: lift it for one step (as a debugger steps off a
        // breakpoint).
        if self.last_breakpoint.take() == Some(pc) && budget > 0 {
            let r = self.client.remove_breakpoint(pc, 4);
            self.poison(r)?;
            let stop = self.step_once(pc);
            let r = self.client.insert_breakpoint(pc, 4);
            self.poison(r)?;
            match stop? {
                StopReply::Signal { signal: gdb_signal::SIGTRAP, .. } => budget -= 1,
                other => return self.classify(other, Some(0)),
            }
        }
        let out = self.run_call(budget, self.call_stack_top)?;
        self.note_stop(&out);
        if let Outcome::Fault { pc, .. } | Outcome::Trap { pc, .. } | Outcome::BudgetExhausted { pc, .. } = out {
            self.last_pc = pc;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_memory_format() {
        // stq $1, 0($2)
        let op = decode_mem_op(0xb422_0000).unwrap();
        assert_eq!((op.access, op.size, op.ra, op.rb, op.disp), (Access::Write, 8, 1, 2, 0));
        // ldl $1, -8($8): opcode 0x28, ra 1, rb 8, disp 0xfff8
        let op = decode_mem_op(0x28 << 26 | 1 << 21 | 8 << 16 | 0xfff8).unwrap();
        assert_eq!((op.access, op.size, op.disp), (Access::Read, 4, -8));
        assert_eq!(op.address(0x1000), 0xff8);
        // ldq_u aligns down.
        let op = decode_mem_op(0x0b << 26 | 1 << 21 | 2 << 16 | 5).unwrap();
        assert_eq!(op.address(0x1000), 0x1000);
        // unop = ldq_u $31, 0($30): no access.
        assert!(!decode_mem_op(0x2ffe_0000).unwrap().touches_memory());
        // lda/ldah/br/callsys are not memory operations.
        assert_eq!(decode_mem_op(0x08 << 26), None);
        assert_eq!(decode_mem_op(0x09 << 26), None);
        assert_eq!(decode_mem_op(insn::BR_BACK), None);
        assert_eq!(decode_mem_op(insn::CALLSYS), None);
        // stq_c $1, 0($2) is a store-conditional (never redirected).
        let op = decode_mem_op(0x2f << 26 | 1 << 21 | 2 << 16).unwrap();
        assert!(op.locked && op.access == Access::Write);
        assert!(!decode_mem_op(0xb422_0000).unwrap().locked);
    }

    #[test]
    fn region_pieces_keep_their_shared_offsets() {
        let r = Region {
            start: 0x10_0000,
            end: 0x10_8000,
            perms: Perms::RW,
            shared: Some(0x4000),
            guest_prot: sys::PROT_READ,
            alias: true,
        };
        assert!(r.watched());
        let p = r.piece(0x10_2000, 0x20_0000);
        assert_eq!((p.start, p.end, p.shared, p.alias), (0x10_2000, 0x10_8000, Some(0x6000), true));
        assert!(r.contains(0x10_7ff8, 8) && !r.contains(0x10_7ff8, 9) && !r.contains(u64::MAX, 2));
        let private = Region::private(0, 0x2000, Perms::RW);
        assert!(!private.watched() && private.piece(0x1000, 0x2000).shared.is_none());
        let open = Region { guest_prot: sys::PROT_READ | sys::PROT_WRITE, ..r };
        assert!(!open.watched());
    }

    #[test]
    fn pal_filter() {
        assert!(forbidden_pal(insn::BPT).is_some());
        assert!(forbidden_pal(insn::CALLSYS).is_some());
        assert!(forbidden_pal(0x9e).is_none()); // rduniq
        assert!(forbidden_pal(0x0000_0000).is_some()); // halt
        assert!(forbidden_pal(0x47ff_041f).is_none()); // nop
    }

    #[test]
    fn elf_shape() {
        let f = harness_elf();
        assert_eq!(&f[..4], b"\x7fELF");
        assert_eq!(u16::from_le_bytes([f[18], f[19]]), 0x9026);
        assert_eq!(u64::from_le_bytes(f[24..32].try_into().unwrap()), HARNESS_ENTRY);
        let code = &f[0x2000..];
        assert_eq!(&code[0x80..0x84], &insn::CALLSYS.to_le_bytes());
    }

    #[test]
    fn shared_memory_hands_out_fresh_ranges() {
        let mut shm = SharedMem::new().unwrap();
        let a = shm.alloc(0x4000).unwrap().unwrap();
        let b = shm.alloc(0x2000).unwrap().unwrap();
        assert_eq!((a, b), (0, 0x4000));
        shm.write(a + 8, b"percpu");
        let mut back = [0u8; 6];
        shm.read(a + 8, &mut back);
        assert_eq!(&back, b"percpu");
        shm.release(a, 0x4000);
        shm.read(a + 8, &mut back);
        assert_eq!(back, [0; 6], "released memory reads as zero");
        assert_eq!(shm.alloc(SHARED_WINDOW).unwrap(), None, "the window is bounded");
    }

    #[test]
    fn watchdog_is_clamped() {
        let c = QemuAlphaConfig::default();
        assert_eq!(c.watchdog(0), c.min_watchdog);
        assert_eq!(c.watchdog(u64::MAX), c.max_watchdog);
        assert_eq!(c.watchdog(5_000_000), Duration::from_millis(500));
    }

    #[test]
    fn missing_binary_is_reported_with_install_hint() {
        let cfg = QemuAlphaConfig { qemu: PathBuf::from("/nonexistent/qemu-alpha"), ..Default::default() };
        match QemuAlphaEngine::with_config(cfg) {
            Err(EngineError::Missing { install, .. }) => {
                assert!(install.contains("qemu-user"), "{install}")
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("started a nonexistent binary"),
        }
    }
}
