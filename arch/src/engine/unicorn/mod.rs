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
//! with trapping instructions.  One code hook, the same on every arch:
//!
//! * stops the CPU *before* the instruction at the trampoline runs (the
//!   callee returned: [`Outcome::Returned`]),
//! * counts instructions and stops before instruction `budget + 1`
//!   ([`Outcome::BudgetExhausted`]),
//! * remembers the address of the instruction being executed, which gives
//!   faults, traps and trace records their `pc`.
//!
//! Unicorn's own `until`/`count` parameters are not used to end a call: a
//! code hook is uniform across arches and also works for sparc's
//! `ret; restore` (stopping with `until` at a delay-slot return target does
//! not work reliably there).
//!
//! Invalid memory accesses (unmapped or protected) are caught by a
//! memory-invalid hook that records the address and access kind
//! ([`Outcome::Fault`]); CPU exceptions (illegal instruction, trap and
//! system-call instructions, sparc window overflow/underflow with traps
//! disabled, ...) by an interrupt hook ([`Outcome::Trap`], the reason names
//! the exception number).
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
//!   crash the process).  The register window state at reset is `CWP = 0,
//!   WIM = 1`; see [`SPARC_RESET_PSR`] for how calls get enough windows.
//! * s390x has no prefix register: the lowcore is memory at address 0.  The
//!   PSW mask is set to 64-bit addressing (`EA|BA`) at construction.
//! * riscv64 runs in M-mode without MMU.

mod abi;

use unicorn_engine::{
    HookType, MemType, Prot, Query, RegisterARM64CP, RegisterSPARC, UcHookId, Unicorn, uc_error,
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
/// Unicorn resets sparc32 to `CWP = 0, WIM = 1` (window 0 invalid).  From
/// `CWP = 0` the first `save` goes to window 7, but the matching `restore`
/// back to window 0 hits the invalid window and raises a window-underflow
/// trap.  Starting the call in window 7 leaves windows 6..1 for the callee:
/// six nested `save`s fit, and every `restore` returns to a valid window.
/// The register window is never read back through `PSR` (reading `PSR`
/// can crash Unicorn); `WIM` has no Unicorn register and stays 1.
pub const SPARC_RESET_PSR: u64 = 0x0000_00c7;

/// s390x PSW mask written at construction: extended + basic addressing
/// mode (64-bit), everything else (DAT, interrupts, problem state) off.
pub const S390X_PSW_MASK_64: u64 = 0x0000_0001_8000_0000;

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
    Budget { pc: u64 },
    /// Execution reached the trampoline page, but not its first byte.
    StrayTrampoline { pc: u64 },
    Trap { pc: u64, intno: u32 },
}

#[derive(Copy, Clone, Debug)]
struct FaultRec {
    pc: u64,
    addr: u64,
    access: Access,
    unmapped: bool,
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
}

/// A Unicorn CPU implementing [`Engine`] for x86_64, arm64, sparc32, s390x
/// and riscv64.
pub struct UnicornEngine {
    cpu: Cpu,
    abi: &'static Abi,
    uc: Unicorn<'static, State>,
    trampoline: u64,
    trace_hook: Option<UcHookId>,
}

// SAFETY: `Unicorn` is `!Send` only because it holds an `Rc`.  Every clone
// of that `Rc` is owned by this struct: the crate keeps the hooks' boxed
// closures (which hold `Weak`s to the same allocation) inside the `Rc`'s
// own payload, `UnicornEngine` never hands out the handle or a clone, and
// the hook closures capture nothing.  Moving the engine therefore moves
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
        // QEMU's EXCP_UDEF, EXCP_SWI, EXCP_BKPT
        (Cpu::Arm64, 1) => "undefined instruction",
        (Cpu::Arm64, 2) => "supervisor call (svc)",
        (Cpu::Arm64, 7) => "breakpoint (brk)",
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
        // QEMU s390x EXCP_PGM, EXCP_SVC
        (Cpu::S390x, 1) => "program interruption (e.g. operation exception)",
        (Cpu::S390x, 2) => "supervisor call (svc)",
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
        let state = State { trampoline, ..State::default() };
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

        // The trampoline page.
        uc.mem_map(trampoline, GRANULE, Prot::READ | Prot::EXEC)
            .map_err(|e| EngineError::Map {
                engine: ENGINE,
                addr: trampoline,
                size: GRANULE,
                reason: format!("trampoline page: {e}"),
            })?;
        let fill: Vec<u8> = abi.trap_fill.iter().copied().cycle().take(GRANULE as usize).collect();
        uc.mem_write(trampoline, &fill).map_err(uc_err)?;

        uc.add_code_hook(1, 0, |uc, addr, _size| {
            let st = uc.get_data_mut();
            if st.stop.is_none() {
                if addr & !(GRANULE - 1) == st.trampoline {
                    st.stop = Some(if addr == st.trampoline {
                        Stop::Returned
                    } else {
                        Stop::StrayTrampoline { pc: addr }
                    });
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

        uc.add_mem_hook(HookType::MEM_INVALID, 1, 0, |uc, ty, addr, _size, _value| {
            let st = uc.get_data_mut();
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
            let pc = if access == Access::Fetch { addr } else { st.pc };
            if st.fault.is_none() {
                st.fault = Some(FaultRec { pc, addr, access, unmapped });
            }
            false
        })
        .map_err(uc_err)?;

        uc.add_intr_hook(|uc, intno| {
            let st = uc.get_data_mut();
            if st.stop.is_none() {
                st.stop = Some(Stop::Trap { pc: st.pc, intno });
            }
            let _ = uc.emu_stop();
        })
        .map_err(uc_err)?;

        let mut engine = UnicornEngine { cpu, abi, uc, trampoline, trace_hook: None };
        if cpu == Cpu::S390x {
            engine.set_reg(Reg::PswMask, S390X_PSW_MASK_64)?;
        }
        Ok(engine)
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
        if self.trampoline < end && addr < self.trampoline + GRANULE {
            return Err(err(format!("overlaps the engine's trampoline page {:#x}", self.trampoline)));
        }
        self.uc.mem_map(addr, size, prot(perms)).map_err(|e| {
            let why = if e == uc_error::MAP { "overlaps an existing mapping".to_string() } else { e.to_string() };
            err(format!("{why} ({e:?})"))
        })
    }

    fn unmap(&mut self, addr: u64, size: u64) -> Result<(), EngineError> {
        let err = |reason: String| EngineError::Map { engine: ENGINE, addr, size, reason };
        if size == 0 || addr % GRANULE != 0 || size % GRANULE != 0 {
            return Err(err(format!("address and size must be non-zero multiples of {GRANULE}")));
        }
        self.uc.mem_unmap(addr, size).map_err(|e| err(format!("unmap: {e} ({e:?})")))
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), EngineError> {
        self.uc.mem_write(addr, data).map_err(|e| EngineError::Memory {
            engine: ENGINE,
            op: "write",
            addr,
            len: data.len(),
            reason: format!("{e} ({e:?})"),
        })
    }

    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), EngineError> {
        let len = buf.len();
        self.uc.mem_read(addr, buf).map_err(|e| EngineError::Memory {
            engine: ENGINE,
            op: "read",
            addr,
            len,
            reason: format!("{e} ({e:?})"),
        })
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

        {
            let st = self.uc.get_data_mut();
            st.budget = budget;
            st.executed = 0;
            st.pc = entry;
            st.stop = None;
            st.fault = None;
        }
        // `until` is inside the trampoline page, past its first instruction:
        // the code hook always stops first; it only guards against Unicorn
        // treating some other address (0) as the exit.
        let until = self.trampoline + GRANULE / 2;
        let result = self.uc.emu_start(entry, until, 0, 0);

        let (stop, fault, executed, last_pc) = {
            let st = self.uc.get_data_mut();
            (st.stop.take(), st.fault.take(), st.executed, st.pc)
        };
        if let Some(f) = fault {
            return Ok(Outcome::Fault { pc: f.pc, addr: f.addr, access: f.access, unmapped: f.unmapped });
        }
        let outcome = match stop {
            Some(Stop::Returned) => Outcome::Returned { value: self.reg(Reg::Ret)?, instructions: executed },
            Some(Stop::Budget { pc }) => Outcome::BudgetExhausted { pc, budget },
            Some(Stop::StrayTrampoline { pc }) => Outcome::Trap {
                pc,
                reason: format!("jumped into the trampoline page at {pc:#x} instead of its start"),
            },
            Some(Stop::Trap { pc, intno }) => Outcome::Trap {
                pc,
                reason: format!("{} (exception {intno:#x})", exception_name(self.cpu, intno)),
            },
            None => match result {
                Err(uc_error::INSN_INVALID) => Outcome::Trap { pc: last_pc, reason: "invalid instruction".into() },
                Err(e) => Outcome::Trap { pc: last_pc, reason: format!("emulation stopped: {e} ({e:?})") },
                Ok(()) => {
                    let pc = self.reg(Reg::Pc)?;
                    Outcome::Trap { pc, reason: "emulation stopped without a return, fault or trap".into() }
                }
            },
        };
        Ok(outcome)
    }

    fn set_trace(&mut self, on: bool) {
        match (on, self.trace_hook) {
            (true, None) => {
                let hook = self.uc.add_mem_hook(HookType::MEM_READ | HookType::MEM_WRITE, 1, 0, |uc, ty, addr, size, value| {
                    let st = uc.get_data_mut();
                    let (access, value) = match ty {
                        MemType::WRITE => (Access::Write, Some(value as u64)),
                        _ => (Access::Read, None),
                    };
                    let value = value.map(|v| if size < 8 { v & ((1u64 << (8 * size)) - 1) } else { v });
                    st.trace.push(MemAccess { pc: st.pc, addr, size: size as u8, access, value });
                    true
                });
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
            _ => {}
        }
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
