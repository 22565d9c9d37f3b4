//! The Unicorn engine: x86_64, arm64, sparc32, s390x and riscv64 CPUs from
//! the `unicorn-engine` crate (Unicorn 2.1, a QEMU fork).
//!
//! # How a call runs
//!
//! [`UnicornEngine::call`] loads the arguments and return address per the
//! arch's C calling convention (see `abi.rs`) and makes the callee return to
//! the *trampoline*: one 4 KiB page the engine maps itself (read+exec) at a
//! fixed address, [`UnicornConfig::trampoline`], by default
//! [`DEFAULT_TRAMPOLINE_64`] (`0x7fff_ffff_0000`) on the 64-bit arches and
//! [`DEFAULT_TRAMPOLINE_32`] (`0x7fff_0000`) on sparc32.  The page is filled
//! with trapping instructions.  A code hook
//!
//! * stops the CPU *before* the instruction at the trampoline runs (the
//!   callee returned: [`Outcome::Returned`]),
//! * counts instructions and stops before instruction `budget + 1`
//!   ([`Outcome::BudgetExhausted`]),
//! * remembers the address of the instruction being executed, which gives
//!   faults, traps and trace records their `pc`.
//!
//! On sparc32 the code hook covers only the trampoline page (a code hook on
//! a delay slot breaks `jmpl`/`ret`/`retl` in Unicorn 2.1.5); a block hook
//! counts instructions (4 bytes each) and checks the budget before each
//! translation block, so there the budget is enforced per block and `pc`s
//! come from the PC register, which Unicorn syncs before memory hooks.
//! Unicorn's own `until`/`count` are not used to end a call (`count` is a
//! code hook too).
//!
//! # Memory
//!
//! Guest memory is a software page table behind Unicorn's virtual-TLB mode
//! (see `Memory`): `map`/`unmap` cost O(pages) with a handful of Unicorn
//! regions in total, instead of one Unicorn region per mapping, which made
//! mapping 4096 units superlinear (~25 s).  The MMU of the emulated CPU is
//! bypassed: any 64-bit address can be mapped (kernel-like high addresses
//! included); sparc32 addresses are 32-bit.
//!
//! Invalid memory accesses (unmapped or protected) are caught by a
//! memory-invalid hook that records the address and access kind
//! ([`Outcome::Fault`]); CPU exceptions (illegal instruction, trap and
//! system-call instructions, sparc window overflow, ...) by an interrupt
//! hook ([`Outcome::Trap`], the reason names the exception number).
//!
//! # Threads
//!
//! The crate's `Unicorn` handle holds an `Rc` and is neither `Send` nor
//! `Sync`.  The C library keeps all emulator state in the `uc_struct` (no
//! global or thread-local state besides QEMU's guest-random generator, which
//! nothing here uses), so independent engines run in parallel on different
//! threads.  [`UnicornEngine`] owns its handle and every clone of the `Rc`
//! (the hooks hold `Weak`s to it, upgraded only while `emu_start` runs on
//! the calling thread), so moving a whole engine to another thread is sound:
//! it is `Send`, not `Sync`.
//!
//! # Arch notes (found by the tests in `arch/tests/unicorn.rs`)
//!
//! * arm64 runs at EL1 (Unicorn forces `PSTATE = EL1h`).  `TPIDR_EL1` and
//!   `TPIDR_EL2` are reached through the CP-register API.  See
//!   [`UnicornEngine::set_reg`] for what `mrs x0, tpidr_el2` does at EL1.
//! * sparc32 is big-endian `SPARC32`; `PSR` is never read (reading it can
//!   crash the process).  Unicorn 2.1.5 starts with `CWP = 0, WIM = 0` (no
//!   invalid window: deep `save` chains would wrap silently); the engine
//!   sets `WIM = 1` and starts calls in window 7, see [`SPARC_RESET_PSR`].
//!   A per-instruction code hook breaks `jmpl`/`ret`/`retl` delay slots,
//!   so on sparc32 instructions are counted per translation block.
//! * s390x has no prefix register: the lowcore is memory at address 0.  The
//!   PSW mask is set to 64-bit addressing (`EA|BA`) at construction.
//! * riscv64 runs in M-mode without MMU.

mod abi;

use std::collections::HashMap;

use unicorn_engine::{
    uc_error, HookType, MemType, Prot, Query, RegisterARM64, RegisterARM64CP, RegisterSPARC, RegisterX86, TlbEntry,
    TlbType, UcHookId, Unicorn,
};

use self::abi::{Abi, UcReg};
use super::{Access, Cpu, Engine, EngineError, MemAccess, Outcome, Perms, Reg};

const ENGINE: &str = "unicorn";

/// The page size of `map`/`unmap`.  Unicorn's page size is 4 KiB on every
/// arch here (arm64 is set to 4 KiB explicitly); 64 KiB kernel pages are
/// mapped as 16 of these.
pub const GRANULE: u64 = 4096;

/// Default trampoline page on x86_64, arm64, s390x and riscv64: the top
/// 4 KiB page of the first 64 KiB below 2^47, i.e. near the top of the low
/// half of a 48-bit address space (inside arm64's 48-bit physical space,
/// which matters with the MMU off).
pub const DEFAULT_TRAMPOLINE_64: u64 = 0x0000_7fff_ffff_0000;
/// Default trampoline page on sparc32: just below 2 GiB, far from the
/// kernel's 0xf000_0000 and from low user/test layouts.
pub const DEFAULT_TRAMPOLINE_32: u64 = 0x7fff_0000;

/// Value written to sparc32's `PSR` before every call: supervisor (`S`,
/// `PS`), traps disabled (`ET = 0`), `PIL = 0`, `CWP = 7`.
///
/// The engine sets `WIM = 1` (window 0 invalid) once at construction (see
/// `sparc_set_wim`).  Starting every call in window 7 leaves windows 6..1
/// for the callee: six nested `save`s fit, the seventh raises a window
/// overflow (`Outcome::Trap`), and every `restore` returns to a valid
/// window.  Register windows are never read back through `PSR` (reading
/// `PSR` can crash Unicorn).
pub const SPARC_RESET_PSR: u64 = 0x0000_00c7;

/// s390x PSW mask written at construction: extended + basic addressing
/// mode (64-bit), everything else (DAT, interrupts, problem state) off.
pub const S390X_PSW_MASK_64: u64 = 0x0000_0001_8000_0000;

/// Physical layout of guest memory (see `Memory`): slabs from 0, holes for
/// unmapped pages from here.  sparc32 keeps its physical addresses below
/// 4 GiB; slabs are limited to 2 GiB (32-bit) and 1 TiB (64-bit).
const PHYS_HOLES_32: u64 = 0x8000_0000;
const PHYS_HOLES_64: u64 = 1 << 40;
/// Slab sizes: the first is 1 MiB, each next doubles the class's memory,
/// capped at 256 MiB per Unicorn region.
const SLAB_MIN: u64 = 1 << 20;
const SLAB_MAX: u64 = 256 << 20;

/// The trampoline page: the first `STUB_OFFSET` bytes are the stop zone
/// (returning to its first byte is `Returned`, to any other byte a trap);
/// engine-internal setup code lives from here on (sparc32's WIM stub).
const STUB_OFFSET: u64 = 0x800;

/// Construction options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnicornConfig {
    /// Address of the trampoline page (4 KiB aligned); `None` for the arch's
    /// default ([`DEFAULT_TRAMPOLINE_64`] or [`DEFAULT_TRAMPOLINE_32`]).
    /// The page is mapped by the engine at construction: callers must not
    /// map over it.
    pub trampoline: Option<u64>,
}

#[derive(Copy, Clone, Debug)]
enum Stop {
    Returned,
    Budget {
        pc: u64,
    },
    /// Execution reached the trampoline page, but not its first byte.
    StrayTrampoline {
        pc: u64,
    },
    Trap {
        pc: u64,
        intno: u32,
    },
    /// Reached a host-call slot (`set_host_calls`).
    HostCall {
        pc: u64,
    },
    /// Reached a breakpoint (`set_breakpoints`).
    Breakpoint {
        pc: u64,
    },
    /// Reached the host-call page, but not a slot.
    StrayHostPage {
        pc: u64,
    },
    /// Reached an instruction test code must never run here (a system
    /// call, a hypervisor call): stopped before or as it executes.
    Forbidden {
        pc: u64,
        what: &'static str,
    },
}

#[derive(Copy, Clone, Debug)]
struct FaultRec {
    pc: u64,
    addr: u64,
    access: Access,
    unmapped: bool,
}

const PAGE_SHIFT: u32 = 12;

/// One page of the software page table.
#[derive(Copy, Clone, Debug)]
struct Pte {
    /// Physical page number of the backing Unicorn memory.
    ppn: u64,
    class: usize,
}

/// Permission class index: read | write << 1 | exec << 2.
fn class_of(perms: Perms) -> usize {
    perms.read as usize | (perms.write as usize) << 1 | (perms.exec as usize) << 2
}

fn prot_of_class(class: usize) -> Prot {
    prot(Perms { read: class & 1 != 0, write: class & 2 != 0, exec: class & 4 != 0 })
}

/// Guest memory: a software page table over a few large Unicorn regions.
///
/// Every Unicorn memory region costs a rebuild of QEMU's flat memory view
/// when it is added, which makes mapping thousands of regions superlinear
/// (4096 x 32 KiB regions took ~25 s).  Instead the engine switches Unicorn
/// to its *virtual TLB* mode: a TLB-fill hook translates every guest page
/// through this table (a hash map, O(1) per page), and the guest's pages
/// are backed by physical *slabs*, one Unicorn region per permission class,
/// each twice as large as the previous one (so O(log n) regions).
/// Physical regions carry the page permissions, so Unicorn's own
/// protection checks and `*_PROT` hooks still apply.  Unmapped guest pages
/// translate to *hole* pages: unbacked physical addresses, one per guest
/// page, so an access to them fires Unicorn's `*_UNMAPPED` hook with an
/// address that maps back to the exact guest address.
#[derive(Default)]
struct Memory {
    /// Guest page number -> backing.
    pt: HashMap<u64, Pte>,
    /// Backing physical page -> guest page (for hook addresses).
    rev: HashMap<u64, u64>,
    /// Hole physical page <-> unmapped guest page.
    holes: HashMap<u64, u64>,
    hole_of: HashMap<u64, u64>,
    next_hole: u64,
    /// Free physical pages per permission class.
    free: [Vec<u64>; 8],
    /// Bump allocation inside the current slab of each class.
    bump: [(u64, u64); 8],
    /// Bytes of slabs per class (the next slab doubles it).
    slab_total: [u64; 8],
    /// Next free physical address for a new slab.
    next_slab: u64,
    /// Physical layout: slabs below `hole_base`, holes from it.
    hole_base: u64,
    hole_pages: u64,
}

impl Memory {
    /// Guest address of a physical address seen by a hook.
    fn guest_addr(&self, paddr: u64) -> u64 {
        let ppn = paddr >> PAGE_SHIFT;
        let off = paddr & (GRANULE - 1);
        match self.rev.get(&ppn).or_else(|| self.holes.get(&ppn)) {
            Some(vpn) => vpn << PAGE_SHIFT | off,
            None => paddr,
        }
    }

    /// Physical page of a guest page for the TLB: its backing, or its hole.
    fn translate(&mut self, vpn: u64) -> u64 {
        if let Some(pte) = self.pt.get(&vpn) {
            return pte.ppn;
        }
        if let Some(&h) = self.hole_of.get(&vpn) {
            return h;
        }
        if self.next_hole == self.hole_pages {
            // Wrapped: forget old holes (the caller flushes the TLB after
            // every call, so no cached entry refers to them).
            self.holes.clear();
            self.hole_of.clear();
            self.next_hole = 0;
        }
        let h = (self.hole_base >> PAGE_SHIFT) + self.next_hole;
        self.next_hole += 1;
        self.holes.insert(h, vpn);
        self.hole_of.insert(vpn, h);
        h
    }
}

/// State shared with the hooks (the `Unicorn` handle's user data).
#[derive(Default)]
struct State {
    trampoline: u64,
    budget: u64,
    executed: u64,
    /// Address of the instruction executing now (set by the code hook).
    pc: u64,
    stop: Option<Stop>,
    fault: Option<FaultRec>,
    trace: Vec<MemAccess>,
    mem: Memory,
    /// sparc32: the PC register is read in hooks (no per-instruction hook).
    pc_from_register: bool,
    pc_reg: i32,
    /// Host-call slots and the range they span (empty range: none).
    host_calls: std::collections::HashSet<u64>,
    host_range: (u64, u64),
    breakpoints: std::collections::HashSet<u64>,
    /// A breakpoint at the pc a `resume` starts from is not reported again
    /// if the call stopped there (`last_breakpoint`); one reached by
    /// returning from a host call is.
    skip_breakpoint: Option<u64>,
    last_breakpoint: Option<u64>,
    /// Instructions found in written code that must not run (s390x
    /// `diag`, which Unicorn would execute quietly): address -> what.
    forbidden: HashMap<u64, &'static str>,
}

impl State {
    /// Whether the instruction at `addr` must not run: a host call or a
    /// breakpoint.  Called from the code hooks before it executes.
    fn special_stop(&mut self, addr: u64) -> Option<Stop> {
        if addr.wrapping_sub(self.host_range.0) < self.host_range.1.wrapping_sub(self.host_range.0) {
            return Some(if self.host_calls.contains(&addr) {
                Stop::HostCall { pc: addr }
            } else {
                Stop::StrayHostPage { pc: addr }
            });
        }
        if let Some(&what) = self.forbidden.get(&addr) {
            return Some(Stop::Forbidden { pc: addr, what });
        }
        if !self.breakpoints.is_empty() && self.breakpoints.contains(&addr) {
            if self.skip_breakpoint == Some(addr) {
                self.skip_breakpoint = None;
                return None;
            }
            return Some(Stop::Breakpoint { pc: addr });
        }
        self.skip_breakpoint = None;
        None
    }
}

/// A Unicorn CPU implementing [`Engine`] for x86_64, arm64, sparc32, s390x
/// and riscv64.
pub struct UnicornEngine {
    cpu: Cpu,
    abi: &'static Abi,
    uc: Unicorn<'static, State>,
    trampoline: u64,
    trace_hook: Option<UcHookId>,
    /// sparc32: code hooks over the host-call range and each breakpoint
    /// (its general code hook covers the trampoline page only).
    sparc_stop_hooks: Vec<UcHookId>,
    /// Code ran since the translation cache was last flushed.
    tb_dirty: bool,
    /// The CPU state `reset_cpu` returns to.
    snapshot: Option<unicorn_engine::Context>,
}

// SAFETY: `Unicorn` is `!Send` only because it holds an `Rc`.  Every clone
// of that `Rc` is owned by this struct: the crate keeps the hooks' boxed
// closures (which hold `Weak`s to the same allocation) inside the `Rc`'s
// own payload, `UnicornEngine` never hands out the handle or a clone, and
// the hook closures capture nothing but plain `Copy` values.  Moving the engine therefore moves
// every reference count together, and they are only touched by the thread
// that owns the engine.  The C library keeps no per-thread state for an
// instance (no TLS besides QEMU's unused guest-random generator).  Not
// `Sync`: `&UnicornEngine` gives no access to the handle anyway.
unsafe impl Send for UnicornEngine {}

fn uc_err(reason: impl std::fmt::Display) -> EngineError {
    EngineError::Engine { engine: ENGINE, reason: reason.to_string() }
}

fn prot(perms: Perms) -> Prot {
    let mut p = Prot::NONE;
    if perms.read {
        p |= Prot::READ;
    }
    if perms.write {
        p |= Prot::WRITE;
    }
    if perms.exec {
        p |= Prot::EXEC;
    }
    p
}

/// Names of common exception numbers, for `Outcome::Trap` reasons.
fn exception_name(cpu: Cpu, intno: u32) -> &'static str {
    match (cpu, intno) {
        (Cpu::X86_64, 3) => "breakpoint (#BP)",
        (Cpu::X86_64, 6) => "invalid opcode (#UD)",
        (Cpu::X86_64, 13) => "general protection (#GP)",
        (Cpu::X86_64, 14) => "page fault (#PF)",
        // the i386 system call gate (Unicorn stops before any kernel runs)
        (Cpu::X86_64, 0x80) => "int 0x80 (a system call from test code; not executed)",
        // QEMU's EXCP_UDEF, EXCP_SWI, EXCP_BKPT
        (Cpu::Arm64, 1) => "undefined instruction",
        (Cpu::Arm64, 2) => "supervisor call (svc)",
        (Cpu::Arm64, 7) => "breakpoint (brk)",
        // EXCP_HVC, EXCP_SMC
        (Cpu::Arm64, 11) => "hypervisor call (hvc)",
        (Cpu::Arm64, 13) => "secure monitor call (smc)",
        // SPARC trap types
        (Cpu::Sparc32, 0x02) => "illegal instruction",
        (Cpu::Sparc32, 0x03) => "privileged instruction",
        (Cpu::Sparc32, 0x05) => "window overflow",
        (Cpu::Sparc32, 0x06) => "window underflow",
        (Cpu::Sparc32, 0x07) => "memory address not aligned",
        (Cpu::Sparc32, n) if n >= 0x80 => "software trap (ta)",
        // RISC-V exception causes
        (Cpu::Riscv64, 0) => "instruction address misaligned",
        (Cpu::Riscv64, 2) => "illegal instruction",
        (Cpu::Riscv64, 3) => "breakpoint (ebreak)",
        (Cpu::Riscv64, 4) => "load address misaligned",
        (Cpu::Riscv64, 6) => "store address misaligned",
        (Cpu::Riscv64, 8..=11) => "environment call (ecall)",
        // QEMU s390x EXCP_EXT, EXCP_SVC, EXCP_PGM (target/s390x/cpu.h)
        (Cpu::S390x, 1) => "external interrupt",
        (Cpu::S390x, 2) => "supervisor call (svc)",
        (Cpu::S390x, 3) => "program interruption (e.g. operation exception)",
        _ => "exception",
    }
}

impl UnicornEngine {
    /// A CPU of `cpu` with the default trampoline address.
    pub fn new(cpu: Cpu) -> Result<Self, EngineError> {
        Self::with_config(cpu, UnicornConfig::default())
    }

    /// A CPU of `cpu` with explicit options.
    pub fn with_config(cpu: Cpu, config: UnicornConfig) -> Result<Self, EngineError> {
        let abi = abi::abi(cpu).ok_or_else(|| EngineError::Engine {
            engine: ENGINE,
            reason: "Unicorn has no Alpha target; Cpu::Alpha is served by the qemu-alpha engine \
                     (QEMU's alpha CPU over the GDB remote protocol)"
                .into(),
        })?;
        let trampoline = config.trampoline.unwrap_or(abi.default_trampoline);
        if trampoline % GRANULE != 0 {
            return Err(uc_err(format!("trampoline {trampoline:#x} is not {GRANULE}-byte aligned")));
        }
        if abi.reg_bytes == 4 && trampoline + GRANULE > 1 << 32 {
            return Err(uc_err(format!("trampoline {trampoline:#x} is outside sparc32's 4 GiB")));
        }
        let sparc = cpu == Cpu::Sparc32;
        let (hole_base, hole_pages) = if abi.reg_bytes == 4 {
            (PHYS_HOLES_32, PHYS_HOLES_32 >> PAGE_SHIFT)
        } else {
            (PHYS_HOLES_64, PHYS_HOLES_64 >> PAGE_SHIFT)
        };
        let state = State {
            trampoline,
            pc_from_register: sparc,
            pc_reg: abi.pc,
            mem: Memory { hole_base, hole_pages, ..Memory::default() },
            ..State::default()
        };
        let mut uc = Unicorn::new_with_data(abi.arch, abi.mode, state)
            .map_err(|e| uc_err(format!("cannot open a {cpu} CPU: {e} ({e:?})")))?;

        // arm64's target pages default to 1 KiB; the size can only be set
        // before the first use of the instance.  Every other arch here has
        // 4 KiB pages already.
        if abi.arch == unicorn_engine::Arch::ARM64 {
            uc.ctl_set_page_size(GRANULE as u32)
                .map_err(|e| uc_err(format!("cannot set the arm64 page size to {GRANULE}: {e}")))?;
        }
        let page = uc.query(Query::PAGE_SIZE).map_err(uc_err)?;
        if page as u64 != GRANULE {
            return Err(uc_err(format!("{cpu}: Unicorn page size is {page}, expected {GRANULE}")));
        }

        // Guest addresses go through the software page table (see `Memory`).
        uc.ctl_set_tlb_type(TlbType::VIRTUAL).map_err(|e| uc_err(format!("virtual TLB: {e}")))?;
        uc.add_tlb_hook(1, 0, |uc, vaddr, _ty| {
            let ppn = uc.get_data_mut().mem.translate(vaddr >> PAGE_SHIFT);
            Some(TlbEntry { paddr: ppn << PAGE_SHIFT, perms: Prot::ALL })
        })
        .map_err(uc_err)?;

        // Stop at the trampoline, count instructions, remember the pc.
        //
        // sparc32: a code hook on the delay slot of `jmpl`/`ret`/`retl`
        // breaks the return: Unicorn syncs `npc` before calling the hook and
        // stores its translation-time placeholder for a dynamic npc, so the
        // CPU then jumps to address 1 ("memory address not aligned").  On
        // sparc the code hook covers only the trampoline page and a block
        // hook counts instructions (4 bytes each) and checks the budget
        // before each block; hooks read the synced PC register instead.
        let code_range = if sparc { (trampoline, trampoline + GRANULE - 1) } else { (1, 0) };
        let x86 = cpu == Cpu::X86_64;
        uc.add_code_hook(code_range.0, code_range.1, move |uc, addr, size| {
            // x86_64 kernel-mode code may write control registers, which
            // Unicorn does quietly (even to the value they hold): refuse
            // the instructions before they run.
            let privileged = if x86 { x86_privileged(uc, addr, size) } else { None };
            let st = uc.get_data_mut();
            if st.stop.is_none() {
                if let Some(what) = privileged {
                    st.stop = Some(Stop::Forbidden { pc: addr, what });
                } else if addr.wrapping_sub(st.trampoline) < STUB_OFFSET {
                    st.stop =
                        Some(if addr == st.trampoline { Stop::Returned } else { Stop::StrayTrampoline { pc: addr } });
                } else if let Some(stop) = st.special_stop(addr) {
                    st.stop = Some(stop);
                } else if st.executed >= st.budget {
                    st.stop = Some(Stop::Budget { pc: addr });
                } else {
                    st.executed += 1;
                    st.pc = addr;
                    return;
                }
            }
            let _ = uc.emu_stop();
        })
        .map_err(uc_err)?;
        if sparc {
            uc.add_block_hook(1, 0, |uc, addr, size| {
                let st = uc.get_data_mut();
                if st.stop.is_some() {
                    let _ = uc.emu_stop();
                    return;
                }
                if addr.wrapping_sub(st.trampoline) < STUB_OFFSET {
                    return; // the code hook decides
                }
                let n = u64::from(size / 4).max(1);
                if st.executed + n > st.budget {
                    st.stop = Some(Stop::Budget { pc: addr });
                    let _ = uc.emu_stop();
                } else {
                    st.executed += n;
                    st.pc = addr;
                }
            })
            .map_err(uc_err)?;
        }

        uc.add_mem_hook(HookType::MEM_INVALID, 1, 0, |uc, ty, paddr, _size, _value| {
            let pc = current_pc(uc);
            let st = uc.get_data_mut();
            let addr = st.mem.guest_addr(paddr);
            let (access, unmapped) = match ty {
                MemType::READ_UNMAPPED => (Access::Read, true),
                MemType::WRITE_UNMAPPED => (Access::Write, true),
                MemType::FETCH_UNMAPPED => (Access::Fetch, true),
                MemType::READ_PROT => (Access::Read, false),
                MemType::WRITE_PROT => (Access::Write, false),
                MemType::FETCH_PROT => (Access::Fetch, false),
                _ => (Access::Read, true),
            };
            // A fetch fault happens before the instruction's code hook: the
            // faulting pc is the fetch address itself.
            let pc = if access == Access::Fetch { addr } else { pc };
            if st.fault.is_none() {
                st.fault = Some(FaultRec { pc, addr, access, unmapped });
            }
            false
        })
        .map_err(uc_err)?;

        // x86_64 `syscall`/`sysenter` run without a fault in Unicorn
        // (there is no kernel to enter): stop on them.  The hook runs as the
        // instruction executes; the code hook has the pc of its start.
        if cpu == Cpu::X86_64 {
            for (insn, what) in [
                (unicorn_engine::X86Insn::SYSCALL, "syscall (a system call from test code; not executed)"),
                (unicorn_engine::X86Insn::SYSENTER, "sysenter (a system call from test code; not executed)"),
            ] {
                uc.add_insn_sys_hook(insn, 1, 0, move |uc| {
                    let st = uc.get_data_mut();
                    if st.stop.is_none() {
                        st.stop = Some(Stop::Forbidden { pc: st.pc, what });
                    }
                    let _ = uc.emu_stop();
                })
                .map_err(uc_err)?;
            }
        }

        uc.add_intr_hook(move |uc, intno| {
            let mut pc = current_pc(uc);
            // Unicorn moves sparc's pc to npc before calling interrupt hooks.
            if sparc {
                pc = pc.wrapping_sub(4);
            }
            let st = uc.get_data_mut();
            if st.stop.is_none() {
                st.stop = Some(Stop::Trap { pc, intno });
            }
            let _ = uc.emu_stop();
        })
        .map_err(uc_err)?;

        let mut engine = UnicornEngine {
            cpu,
            abi,
            uc,
            trampoline,
            trace_hook: None,
            sparc_stop_hooks: Vec::new(),
            tb_dirty: false,
            snapshot: None,
        };
        // The trampoline page.
        engine.map_pages(trampoline, GRANULE, Perms::RX).map_err(|e| EngineError::Map {
            engine: ENGINE,
            addr: trampoline,
            size: GRANULE,
            reason: format!("trampoline page: {e}"),
        })?;
        let fill: Vec<u8> = abi.trap_fill.iter().copied().cycle().take(GRANULE as usize).collect();
        engine.write(trampoline, &fill)?;
        if cpu == Cpu::S390x {
            engine.set_reg(Reg::PswMask, S390X_PSW_MASK_64)?;
        }
        if sparc {
            engine.sparc_set_wim()?;
        }
        Ok(engine)
    }

    /// sparc32: make window 0 invalid (`WIM = 1`) by running
    /// `wr %g0, 1, %wim` from the trampoline page: Unicorn 2.1.5 leaves
    /// `WIM = 0` (QEMU's reset value 1 is not applied), so nested `save`s
    /// beyond the 8 windows would wrap around silently and corrupt the
    /// caller's registers.  With `WIM = 1` and calls starting in window 7
    /// ([`SPARC_RESET_PSR`]), six nested `save`s fit and the seventh raises
    /// a window-overflow trap, which ends the call as `Outcome::Trap`.
    fn sparc_set_wim(&mut self) -> Result<(), EngineError> {
        let stub = self.trampoline + STUB_OFFSET;
        let words: [u32; 4] = [
            0x81902001, // wr %g0, 1, %wim
            0x01000000, // nop (WIM writes take effect within three instructions)
            0x01000000, // nop
            0x01000000, // nop
        ];
        let code: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
        self.write(stub, &code)?;
        self.set_reg(Reg::Raw(RegisterSPARC::PSR as u32), SPARC_RESET_PSR)?;
        {
            let st = self.uc.get_data_mut();
            st.budget = 100;
            st.executed = 0;
            st.stop = None;
            st.fault = None;
        }
        let end = stub + code.len() as u64;
        let result = self.uc.emu_start(stub, end, 0, 0);
        let st = self.uc.get_data_mut();
        let (stop, fault) = (st.stop.take(), st.fault.take());
        if result.is_err() || stop.is_some() || fault.is_some() {
            return Err(uc_err(format!("sparc32 WIM setup failed: {result:?} {stop:?} {fault:?}")));
        }
        Ok(())
    }

    /// The trampoline page's address (callees return to its first byte).
    pub fn trampoline(&self) -> u64 {
        self.trampoline
    }

    fn uc_reg(&self, reg: Reg) -> Result<UcReg, EngineError> {
        abi::reg(self.cpu, self.abi, reg).ok_or(EngineError::NoRegister { engine: ENGINE, cpu: self.cpu, reg })
    }

    /// Narrow a value for a 32-bit register: accept zero- and sign-extended
    /// 32-bit values, reject anything else.
    fn narrow(&self, reg: Reg, value: u64) -> Result<u64, EngineError> {
        if self.abi.reg_bytes == 8 {
            return Ok(value);
        }
        let high = value >> 32;
        if high == 0 || (high == 0xffff_ffff && value & 0x8000_0000 != 0) {
            Ok(value & 0xffff_ffff)
        } else {
            Err(uc_err(format!("{value:#x} does not fit {}'s 32-bit register {reg:?}", self.cpu)))
        }
    }

    fn write_u64_le(&mut self, addr: u64, value: u64) -> Result<(), EngineError> {
        self.write(addr, &value.to_le_bytes())
    }

    /// Back `[addr, addr + size)` with fresh zeroed physical pages.  The
    /// range must be unmapped.  Cost: O(pages), plus one Unicorn region per
    /// doubling of a permission class's memory.
    fn map_pages(&mut self, addr: u64, size: u64, perms: Perms) -> Result<(), String> {
        let class = class_of(perms);
        let first = addr >> PAGE_SHIFT;
        let pages = size >> PAGE_SHIFT;
        {
            let mem = &self.uc.get_data().mem;
            if let Some(vpn) = (first..first + pages).find(|v| mem.pt.contains_key(v)) {
                return Err(format!("page {:#x} is already mapped", vpn << PAGE_SHIFT));
            }
        }
        let mut had_hole = false;
        for vpn in first..first + pages {
            let ppn = self.alloc_page(class)?;
            let mem = &mut self.uc.get_data_mut().mem;
            mem.pt.insert(vpn, Pte { ppn, class });
            mem.rev.insert(ppn, vpn);
            if let Some(h) = mem.hole_of.remove(&vpn) {
                mem.holes.remove(&h);
                had_hole = true;
            }
        }
        if had_hole {
            // The TLB may still translate these pages to their holes.
            let _ = self.uc.ctl_flush_tlb();
        }
        Ok(())
    }

    /// A zeroed physical page of `class`.
    fn alloc_page(&mut self, class: usize) -> Result<u64, String> {
        let recycled = self.uc.get_data_mut().mem.free[class].pop();
        if let Some(ppn) = recycled {
            let zero = [0u8; GRANULE as usize];
            self.uc.mem_write(ppn << PAGE_SHIFT, &zero).map_err(|e| format!("zeroing: {e}"))?;
            return Ok(ppn);
        }
        let (next, end) = self.uc.get_data().mem.bump[class];
        if next < end {
            self.uc.get_data_mut().mem.bump[class].0 = next + GRANULE;
            return Ok(next >> PAGE_SHIFT);
        }
        // A new slab, as large as everything this class has so far.
        let mem = &self.uc.get_data().mem;
        let size = mem.slab_total[class].clamp(SLAB_MIN, SLAB_MAX);
        let base = mem.next_slab;
        if base + size > mem.hole_base {
            return Err(format!("out of physical space for guest memory ({:#x} bytes)", mem.hole_base));
        }
        self.uc
            .mem_map(base, size, prot_of_class(class))
            .map_err(|e| format!("physical slab {base:#x}+{size:#x}: {e} ({e:?})"))?;
        let mem = &mut self.uc.get_data_mut().mem;
        mem.next_slab = base + size;
        mem.slab_total[class] += size;
        mem.bump[class] = (base + GRANULE, base + size);
        Ok(base >> PAGE_SHIFT)
    }

    /// Split a guest range into per-page physical pieces: (guest offset,
    /// physical address, length).
    fn pieces(&self, addr: u64, len: usize, op: &'static str) -> Result<Vec<(usize, u64, usize)>, EngineError> {
        let mem = &self.uc.get_data().mem;
        let mut out = Vec::new();
        let mut done = 0usize;
        while done < len {
            let a = addr.wrapping_add(done as u64);
            let off = a & (GRANULE - 1);
            let n = ((GRANULE - off) as usize).min(len - done);
            let pte = mem.pt.get(&(a >> PAGE_SHIFT)).ok_or_else(|| EngineError::Memory {
                engine: ENGINE,
                op,
                addr,
                len,
                reason: format!("{a:#x} is not mapped"),
            })?;
            out.push((done, pte.ppn << PAGE_SHIFT | off, n));
            done += n;
        }
        Ok(out)
    }
}

/// The privileged x86_64 instruction at `addr` (`size` bytes), if it is
/// one that changes system state: mov to a control or debug register,
/// wrmsr, lgdt/lidt/lldt/ltr, invd/wbinvd.  Legacy and REX prefixes are
/// skipped.
fn x86_privileged(uc: &Unicorn<'_, State>, addr: u64, size: u32) -> Option<&'static str> {
    let st = uc.get_data();
    let pte = st.mem.pt.get(&(addr >> PAGE_SHIFT))?;
    let off = addr & (GRANULE - 1);
    let n = (size as u64).min(GRANULE - off).min(15) as usize;
    let mut b = [0u8; 15];
    uc.mem_read(pte.ppn << PAGE_SHIFT | off, &mut b[..n]).ok()?;
    let b = &b[..n];
    let i = b
        .iter()
        .position(|&x| !matches!(x, 0x26 | 0x2e | 0x36 | 0x3e | 0x64..=0x67 | 0xf0 | 0xf2 | 0xf3 | 0x40..=0x4f))?;
    if b.get(i) != Some(&0x0f) {
        return None;
    }
    let reg = b.get(i + 2).map(|m| (m >> 3) & 7);
    let memory = b.get(i + 2).is_some_and(|m| m >> 6 != 3);
    Some(match (b.get(i + 1)?, reg) {
        (0x22, _) => "mov to a control register (from test code; not executed)",
        (0x23, _) => "mov to a debug register (from test code; not executed)",
        (0x30, _) => "wrmsr (from test code; not executed)",
        (0x08, _) => "invd (from test code; not executed)",
        (0x09, _) => "wbinvd (from test code; not executed)",
        (0x01, Some(2 | 3)) if memory => "lgdt/lidt (from test code; not executed)",
        (0x00, Some(2 | 3)) => "lldt/ltr (from test code; not executed)",
        _ => return None,
    })
}

/// Offsets of sparc32 `wr` to %wim or %tbr in big-endian code at `addr`
/// (op 2, op3 0x32/0x33, on 4-byte boundaries): the window invalid mask
/// and the trap base, which Unicorn executes quietly in supervisor mode
/// and cannot read back.  (`wr %psr` stays allowed: the kernel's irq
/// save/restore writes it.)
fn sparc_forbidden_offsets(addr: u64, code: &[u8]) -> Vec<(usize, &'static str)> {
    let skip = ((4 - (addr & 3)) & 3) as usize;
    let mut out = Vec::new();
    let mut off = skip;
    while off + 4 <= code.len() {
        let w = u32::from_be_bytes(code[off..off + 4].try_into().expect("4 bytes"));
        if w >> 30 == 2 {
            match (w >> 19) & 0x3f {
                0x32 => out.push((off, "wr %wim (the register window mask, from test code; not executed)")),
                0x33 => out.push((off, "wr %tbr (the trap table base, from test code; not executed)")),
                _ => {}
            }
        }
        off += 4;
    }
    out
}

/// Offsets of the `diag` instructions (opcode 0x83, RS format) in s390x
/// code, decoded linearly from its start: an instruction's length is in
/// the top two bits of its first byte (00: 2 bytes, 01/10: 4, 11: 6).
/// Sections start on an instruction, and the kernel's code has no data in
/// its text (z10 and later address literals relatively).
fn s390x_diag_offsets(code: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        while off + 2 <= code.len() {
            let op = code[off];
            let at = off;
            off += match op >> 6 {
                0 => 2,
                1 | 2 => 4,
                _ => 6,
            };
            if op == 0x83 && at + 4 <= code.len() {
                return Some(at);
            }
        }
        None
    })
}

fn current_pc(uc: &Unicorn<'_, State>) -> u64 {
    let st = uc.get_data();
    if st.pc_from_register {
        let reg = st.pc_reg;
        uc.reg_read(reg).unwrap_or(0)
    } else {
        st.pc
    }
}

impl Engine for UnicornEngine {
    fn cpu(&self) -> Cpu {
        self.cpu
    }

    fn name(&self) -> &'static str {
        ENGINE
    }

    fn map_granule(&self) -> u64 {
        GRANULE
    }

    fn map(&mut self, addr: u64, size: u64, perms: Perms) -> Result<(), EngineError> {
        let err = |reason: String| EngineError::Map { engine: ENGINE, addr, size, reason };
        if size == 0 || addr % GRANULE != 0 || size % GRANULE != 0 {
            return Err(err(format!("address and size must be non-zero multiples of {GRANULE}")));
        }
        let end = addr.checked_add(size).ok_or_else(|| err("wraps around".into()))?;
        if self.abi.reg_bytes == 4 && end > 1 << 32 {
            return Err(err("beyond sparc32's 4 GiB address space".into()));
        }
        if self.trampoline < end && addr < self.trampoline + GRANULE {
            return Err(err(format!("overlaps the engine's trampoline page {:#x}", self.trampoline)));
        }
        self.map_pages(addr, size, perms).map_err(err)
    }

    fn unmap(&mut self, addr: u64, size: u64) -> Result<(), EngineError> {
        let err = |reason: String| EngineError::Map { engine: ENGINE, addr, size, reason };
        if size == 0 || addr % GRANULE != 0 || size % GRANULE != 0 {
            return Err(err(format!("address and size must be non-zero multiples of {GRANULE}")));
        }
        if self.trampoline < addr.saturating_add(size) && addr < self.trampoline + GRANULE {
            return Err(err(format!("overlaps the engine's trampoline page {:#x}", self.trampoline)));
        }
        let first = addr >> PAGE_SHIFT;
        let pages = size >> PAGE_SHIFT;
        let mem = &mut self.uc.get_data_mut().mem;
        if let Some(vpn) = (first..first + pages).find(|v| !mem.pt.contains_key(v)) {
            return Err(err(format!("page {:#x} is not mapped", vpn << PAGE_SHIFT)));
        }
        let mut exec = false;
        for vpn in first..first + pages {
            let pte = mem.pt.remove(&vpn).expect("checked above");
            mem.rev.remove(&pte.ppn);
            mem.free[pte.class].push(pte.ppn);
            exec |= pte.class & 4 != 0;
        }
        let _ = self.uc.ctl_flush_tlb();
        if exec {
            // Translated code is keyed by physical page, which is recycled.
            let _ = self.uc.ctl_flush_tb();
        }
        Ok(())
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), EngineError> {
        let pieces = self.pieces(addr, data.len(), "write")?;
        let mut code = false;
        for (off, paddr, n) in pieces {
            code |=
                self.uc.get_data().mem.pt.get(&((addr + off as u64) >> PAGE_SHIFT)).is_some_and(|p| p.class & 4 != 0);
            self.uc.mem_write(paddr, &data[off..off + n]).map_err(|e| EngineError::Memory {
                engine: ENGINE,
                op: "write",
                addr,
                len: data.len(),
                reason: format!("{e} ({e:?})"),
            })?;
        }
        if code && self.cpu == Cpu::S390x {
            let st = self.uc.get_data_mut();
            st.forbidden.retain(|a, _| a.wrapping_sub(addr) >= data.len() as u64);
            for off in s390x_diag_offsets(data) {
                st.forbidden.insert(addr + off as u64, "diag (a hypervisor call from test code; not executed)");
            }
        }
        // (The engine's own trampoline page sets %wim once, at creation.)
        let own_page = addr.wrapping_sub(self.trampoline) < GRANULE;
        if code && self.cpu == Cpu::Sparc32 && !own_page {
            let st = self.uc.get_data_mut();
            let before = st.forbidden.len();
            st.forbidden.retain(|a, _| a.wrapping_sub(addr) >= data.len() as u64);
            let mut changed = st.forbidden.len() != before;
            for (off, what) in sparc_forbidden_offsets(addr, data) {
                st.forbidden.insert(addr + off as u64, what);
                changed = true;
            }
            if changed {
                self.sparc_refresh_stop_hooks()?;
            }
        }
        if code && self.tb_dirty {
            // New code over code that may have been translated already.
            let _ = self.uc.ctl_flush_tb();
            self.tb_dirty = false;
        }
        Ok(())
    }

    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), EngineError> {
        let len = buf.len();
        for (off, paddr, n) in self.pieces(addr, len, "read")? {
            self.uc.mem_read(paddr, &mut buf[off..off + n]).map_err(|e| EngineError::Memory {
                engine: ENGINE,
                op: "read",
                addr,
                len,
                reason: format!("{e} ({e:?})"),
            })?;
        }
        Ok(())
    }

    /// Write a register by role.
    ///
    /// arm64 `TpidrEl2` is written through the CP-register API and reads
    /// back; code running at EL1 (Unicorn's start level) cannot read it:
    /// `mrs x0, tpidr_el2` at EL1 is UNDEFINED and ends the call with
    /// `Outcome::Trap` ("undefined instruction").
    fn set_reg(&mut self, reg: Reg, value: u64) -> Result<(), EngineError> {
        let value = self.narrow(reg, value)?;
        let fail = |e: uc_error| uc_err(format!("cannot write {reg:?} = {value:#x}: {e} ({e:?})"));
        match self.uc_reg(reg)? {
            UcReg::Plain(id) => self.uc.reg_write(id, value).map_err(fail),
            UcReg::Arm64Sys { op0, op1, crn, crm, op2 } => {
                let cp = RegisterARM64CP { crn, crm, op0, op1, op2, val: value };
                self.uc.reg_write_arm64_coproc(&cp).map_err(fail)
            }
        }
    }

    fn reg(&mut self, reg: Reg) -> Result<u64, EngineError> {
        let uc_reg = self.uc_reg(reg)?;
        if self.cpu == Cpu::Sparc32 && uc_reg == UcReg::Plain(RegisterSPARC::PSR as i32) {
            return Err(uc_err("reading sparc32 PSR is refused: it can crash Unicorn 2.1"));
        }
        let fail = |e: uc_error| uc_err(format!("cannot read {reg:?}: {e} ({e:?})"));
        let value = match uc_reg {
            UcReg::Plain(id) => self.uc.reg_read(id).map_err(fail)?,
            UcReg::Arm64Sys { op0, op1, crn, crm, op2 } => {
                let mut cp = RegisterARM64CP { crn, crm, op0, op1, op2, val: 0 };
                self.uc.reg_read_arm64_coproc(&mut cp).map_err(fail)?;
                cp.val
            }
        };
        Ok(if self.abi.reg_bytes == 4 { value & 0xffff_ffff } else { value })
    }

    fn call(&mut self, entry: u64, args: &[u64], stack_top: u64, budget: u64) -> Result<Outcome, EngineError> {
        let abi = self.abi;
        if args.len() > abi.args.len() {
            return Err(uc_err(format!(
                "{} takes at most {} register arguments, got {}",
                self.cpu,
                abi.args.len(),
                args.len()
            )));
        }
        if self.cpu == Cpu::Sparc32 {
            // Before the argument registers: changing CWP switches windows.
            self.set_reg(Reg::Raw(RegisterSPARC::PSR as u32), SPARC_RESET_PSR)?;
        }
        for (i, &a) in args.iter().enumerate() {
            self.set_reg(Reg::Arg(i as u8), a)?;
        }
        let ret_to = self.trampoline - abi.return_bias;
        let mut sp = stack_top - abi.stack_reserve;
        match abi.return_address {
            Some(_) => self.set_reg(Reg::ReturnAddress, ret_to)?,
            None => {
                sp -= 8;
                self.write_u64_le(sp, ret_to)?;
            }
        }
        self.set_reg(Reg::Sp, sp)?;
        let st = self.uc.get_data_mut();
        (st.skip_breakpoint, st.last_breakpoint) = (None, None);
        let before = self.system_state();
        let outcome = self.run_from(entry, budget)?;
        // Unicorn runs kernel-mode code at the highest privilege, so a
        // write to a control register just happens: compare them after the
        // call (reset_cpu puts them back for the next one).
        let after = self.system_state();
        if let Some(((name, was), (_, now))) = before.iter().zip(&after).find(|(b, a)| b.1 != a.1) {
            if matches!(outcome, Outcome::Returned { .. } | Outcome::BudgetExhausted { .. }) {
                return Ok(Outcome::Trap {
                    pc: entry,
                    reason: format!(
                        "test code changed {name} ({was:#x} -> {now:#x}): a write to a system register no percpu code \
                         makes (the call's own; undone before the next run)"
                    ),
                });
            }
        }
        Ok(outcome)
    }

    fn snapshot_cpu(&mut self) -> Result<(), EngineError> {
        let mut c = self.uc.context_alloc().map_err(|e| uc_err(format!("context_alloc: {e:?}")))?;
        self.uc.context_save(&mut c).map_err(|e| uc_err(format!("context_save: {e:?}")))?;
        self.snapshot = Some(c);
        Ok(())
    }

    fn reset_cpu(&mut self) -> Result<(), EngineError> {
        match &self.snapshot {
            Some(c) => self.uc.context_restore(c).map_err(|e| uc_err(format!("context_restore: {e:?}"))),
            None => Ok(()),
        }
    }

    fn resume(&mut self, budget: u64) -> Result<Outcome, EngineError> {
        let pc = self.reg(Reg::Pc)?;
        let st = self.uc.get_data_mut();
        st.skip_breakpoint = st.last_breakpoint.take().filter(|&b| b == pc);
        self.run_from(pc, budget)
    }

    fn set_host_calls(&mut self, addrs: &[u64]) -> Result<(), EngineError> {
        let range = match (addrs.iter().min(), addrs.iter().max()) {
            (Some(&lo), Some(&hi)) => (lo, hi + 1),
            _ => (0, 0),
        };
        if range.0 < self.trampoline + GRANULE && self.trampoline < range.1 {
            return Err(uc_err("host-call slots overlap the trampoline page"));
        }
        let st = self.uc.get_data_mut();
        st.host_calls = addrs.iter().copied().collect();
        st.host_range = range;
        self.sparc_refresh_stop_hooks()
    }

    fn set_breakpoints(&mut self, addrs: &[u64]) -> Result<(), EngineError> {
        self.uc.get_data_mut().breakpoints = addrs.iter().copied().collect();
        self.sparc_refresh_stop_hooks()
    }
    fn set_trace(&mut self, on: bool) {
        // The only capture: a Copy flag (see the SAFETY note on Send).
        let big_endian = matches!(self.cpu, Cpu::Sparc32 | Cpu::S390x);
        match (on, self.trace_hook) {
            (true, None) => {
                let hook = self.uc.add_mem_hook(
                    HookType::MEM_READ | HookType::MEM_WRITE,
                    1,
                    0,
                    move |uc, ty, paddr, size, value| {
                        let pc = current_pc(uc);
                        let addr = uc.get_data().mem.guest_addr(paddr);
                        let (access, value) = match ty {
                            MemType::WRITE => (Access::Write, Some(value as u64)),
                            _ => (Access::Read, None),
                        };
                        let value = value.map(|v| if size < 8 { v & ((1u64 << (8 * size)) - 1) } else { v });
                        // The hook runs before the store: read what it overwrites.
                        let old = match access {
                            Access::Write if size <= 8 => {
                                let mut b = [0u8; 8];
                                uc.mem_read(paddr, &mut b[..size]).ok().map(|()| match big_endian {
                                    true => b[..size].iter().fold(0u64, |v, &x| v << 8 | x as u64),
                                    false => b[..size].iter().rev().fold(0u64, |v, &x| v << 8 | x as u64),
                                })
                            }
                            _ => None,
                        };
                        let st = uc.get_data_mut();
                        st.trace.push(MemAccess { pc, addr, size: size as u8, access, value, old });
                        true
                    },
                );
                match hook {
                    Ok(id) => self.trace_hook = Some(id),
                    Err(e) => tracing::warn!("unicorn: cannot add the trace hook: {e}"),
                }
            }
            (false, Some(id)) => {
                if let Err(e) = self.uc.remove_hook(id) {
                    tracing::warn!("unicorn: cannot remove the trace hook: {e}");
                }
                self.trace_hook = None;
            }
            _ => return,
        }
        // Cached TLB entries and translations were made without (or with)
        // the hook: drop them so every access sees the new setting.
        let _ = self.uc.ctl_flush_tlb();
        let _ = self.uc.ctl_flush_tb();
    }

    fn take_trace(&mut self) -> Vec<MemAccess> {
        std::mem::take(&mut self.uc.get_data_mut().trace)
    }
}

/// Compile-time check of the `Send` claim above.
const _: () = {
    const fn is_send<T: Send>() {}
    is_send::<UnicornEngine>();
};

impl UnicornEngine {
    /// The instruction that ended emulation without a stop of ours: a
    /// halt-like one (`hlt`, `wfi`; `wfe` runs as a hint) Unicorn treats as the end of
    /// the run.  `last_pc` is where the code hook saw it start.
    fn stopping_instruction(&mut self, pc: u64, last_pc: u64) -> (u64, Option<&'static str>) {
        let mut b = [0u8; 4];
        if self.read(last_pc, &mut b).is_err() {
            return (pc, None);
        }
        let word = u32::from_le_bytes(b);
        let what = match self.cpu {
            Cpu::X86_64 if b[0] == 0xf4 => Some("hlt"),
            Cpu::Arm64 if word == 0xd503_207f => Some("wfi"),
            Cpu::Riscv64 if word == 0x1050_0073 => Some("wfi"),
            _ => None,
        };
        (if what.is_some() { last_pc } else { pc }, what)
    }
}

impl UnicornEngine {
    /// Run from `pc` until the trampoline, a stop, a fault or `budget`
    /// more instructions.
    fn run_from(&mut self, pc: u64, budget: u64) -> Result<Outcome, EngineError> {
        {
            let st = self.uc.get_data_mut();
            st.budget = budget;
            st.executed = 0;
            st.pc = pc;
            st.stop = None;
            st.fault = None;
        }
        self.tb_dirty = true;
        // `until` is inside the trampoline page, past its first instruction:
        // the code hook always stops first; it only keeps Unicorn from
        // treating some other address (0) as the exit.
        let until = self.trampoline + STUB_OFFSET / 2;
        let result = self.uc.emu_start(pc, until, 0, 0);

        let (stop, fault, executed, last_pc) = {
            let st = self.uc.get_data_mut();
            (st.stop.take(), st.fault.take(), st.executed, st.pc)
        };
        if let Some(f) = fault {
            return Ok(Outcome::Fault { pc: f.pc, addr: f.addr, access: f.access, unmapped: f.unmapped });
        }
        let outcome = match stop {
            Some(Stop::Returned) => Outcome::Returned { value: self.reg(Reg::Ret)?, instructions: Some(executed) },
            Some(Stop::HostCall { pc }) => {
                // Stopped before the slot's first instruction: make sure the
                // pc says so (the hook ran before Unicorn synced it).
                self.set_reg(Reg::Pc, pc)?;
                Outcome::HostCall { pc, instructions: Some(executed) }
            }
            Some(Stop::Breakpoint { pc }) => {
                self.set_reg(Reg::Pc, pc)?;
                self.uc.get_data_mut().last_breakpoint = Some(pc);
                Outcome::Breakpoint { pc, instructions: Some(executed) }
            }
            Some(Stop::StrayHostPage { pc }) => Outcome::Trap {
                pc,
                reason: format!("jumped into the kernel runtime's function page at {pc:#x}, not to a function"),
            },
            Some(Stop::Budget { pc }) => Outcome::BudgetExhausted { pc, budget },
            Some(Stop::Forbidden { pc, what }) => Outcome::Trap { pc, reason: what.to_string() },
            Some(Stop::StrayTrampoline { pc }) => {
                Outcome::Trap { pc, reason: format!("jumped into the trampoline page at {pc:#x} instead of its start") }
            }
            Some(Stop::Trap { pc, intno }) => {
                Outcome::Trap { pc, reason: format!("{} (exception {intno:#x})", exception_name(self.cpu, intno)) }
            }
            None => match result {
                Err(uc_error::INSN_INVALID) => Outcome::Trap { pc: last_pc, reason: "invalid instruction".into() },
                Err(e) => Outcome::Trap { pc: last_pc, reason: format!("emulation stopped: {e} ({e:?})") },
                Ok(()) => {
                    let pc = self.reg(Reg::Pc)?;
                    let (at, what) = self.stopping_instruction(pc, last_pc);
                    match what {
                        Some(insn) => Outcome::Trap {
                            pc: at,
                            reason: format!("emulation stopped at `{insn}` without a return, fault or trap"),
                        },
                        None => {
                            Outcome::Trap { pc, reason: "emulation stopped without a return, fault or trap".into() }
                        }
                    }
                }
            },
        };
        Ok(outcome)
    }

    /// sparc32's general code hook covers only the trampoline page (see
    /// the module docs): host-call slots and breakpoints get hooks of
    /// their own, rebuilt whenever either set changes.
    /// The system registers test code has no business writing, as far as
    /// Unicorn lets them be read: x86_64 CR0/CR3/CR4, arm64 TTBR0/1_EL1.
    /// (sparc32 %wim and %tbr cannot be read; their writes are refused as
    /// code is written, see `sparc_forbidden_offsets`.)
    fn system_state(&mut self) -> Vec<(&'static str, u64)> {
        let regs: &[(&'static str, i32)] = match self.cpu {
            Cpu::X86_64 => {
                &[("cr0", RegisterX86::CR0 as i32), ("cr3", RegisterX86::CR3 as i32), ("cr4", RegisterX86::CR4 as i32)]
            }
            Cpu::Arm64 => {
                &[("ttbr0_el1", RegisterARM64::TTBR0_EL1 as i32), ("ttbr1_el1", RegisterARM64::TTBR1_EL1 as i32)]
            }
            _ => &[],
        };
        regs.iter().filter_map(|&(n, id)| self.uc.reg_read(id).ok().map(|v| (n, v))).collect()
    }

    fn sparc_refresh_stop_hooks(&mut self) -> Result<(), EngineError> {
        if self.cpu != Cpu::Sparc32 {
            return Ok(());
        }
        for id in self.sparc_stop_hooks.drain(..) {
            let _ = self.uc.remove_hook(id);
        }
        let st = self.uc.get_data();
        let mut ranges: Vec<(u64, u64)> = st.breakpoints.iter().chain(st.forbidden.keys()).map(|&a| (a, a)).collect();
        if st.host_range.1 > st.host_range.0 {
            ranges.push((st.host_range.0, st.host_range.1 - 1));
        }
        for (lo, hi) in ranges {
            let id = self
                .uc
                .add_code_hook(lo, hi, |uc, addr, _size| {
                    let st = uc.get_data_mut();
                    if st.stop.is_none() {
                        if let Some(stop) = st.special_stop(addr) {
                            st.stop = Some(stop);
                            let _ = uc.emu_stop();
                        }
                    }
                })
                .map_err(uc_err)?;
            self.sparc_stop_hooks.push(id);
        }
        let _ = self.uc.ctl_flush_tb();
        Ok(())
    }
}
