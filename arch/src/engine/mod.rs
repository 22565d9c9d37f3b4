//! The boundary between arch adapters and execution engines.
//!
//! An [`Engine`] is a CPU of one architecture with a sparse memory map.
//! Adapters never see Unicorn or QEMU: they map the percpu chunks' pages,
//! load code and data, set the per-CPU state registers, and [`Engine::call`]
//! a function under an instruction budget.  Two implementations exist:
//! Unicorn (x86_64, arm64, sparc32, s390x, riscv64) and QEMU's real alpha
//! target driven over the GDB remote protocol (Unicorn has no Alpha).

use std::fmt;

use serde::Serialize;

/// The CPU architectures percpu-bed emulates.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cpu {
    X86_64,
    Arm64,
    Sparc32,
    Alpha,
    S390x,
    Riscv64,
}

impl fmt::Display for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cpu::X86_64 => "x86_64",
            Cpu::Arm64 => "arm64",
            Cpu::Sparc32 => "sparc32",
            Cpu::Alpha => "alpha",
            Cpu::S390x => "s390x",
            Cpu::Riscv64 => "riscv64",
        })
    }
}

/// Memory permissions of a mapping.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Perms {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
}

impl Perms {
    pub const RW: Perms = Perms { read: true, write: true, exec: false };
    pub const RX: Perms = Perms { read: true, write: false, exec: true };
    pub const RWX: Perms = Perms { read: true, write: true, exec: true };
}

/// Registers adapters need, named by role; each engine maps them to its
/// arch's real register (x86_64 `GsBase` = MSR GS_BASE, arm64 `TpidrEl1`,
/// sparc32 `G6`, alpha `ThreadPointer` = `$8`, riscv64 `Tp`, s390x has its
/// offset in the lowcore, i.e. memory at address 0).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Reg {
    Pc,
    Sp,
    /// Integer argument `n` of the C calling convention.
    Arg(u8),
    /// The integer return value register.
    Ret,
    /// The return address register where the arch has one.
    ReturnAddress,
    /// Global pointer (alpha `$29`, riscv `gp`).
    Gp,
    GsBase,
    TpidrEl1,
    TpidrEl2,
    /// sparc32 `%g6` (current thread_info).
    G6,
    /// alpha `$8` (current thread_info).
    ThreadPointer,
    /// riscv64 `tp` (current task / thread_info).
    Tp,
    /// s390x PSW mask.
    PswMask,
    /// arm64 `SP_EL0` (the kernel keeps `current` there).
    SpEl0,
    /// Any other register by the engine's own number (debugging).
    Raw(u32),
}

/// What kind of access faulted.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Read,
    Write,
    Fetch,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Fetch => "fetch",
        })
    }
}

/// One data access, recorded when tracing is on.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemAccess {
    pub pc: u64,
    pub addr: u64,
    pub size: u8,
    pub access: Access,
    /// Value written (writes only).
    pub value: Option<u64>,
    /// What the written bytes held just before the write (writes only,
    /// when the engine could read them): lets the runner undo the writes
    /// of a misbehaving run so later tests start from clean memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<u64>,
}

/// How a call ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// The function returned to the trampoline with this return value.
    /// `instructions` is the exact number executed, or `None` when the
    /// engine ran the call freely without counting (qemu-alpha's fast
    /// path: see [`qemu_alpha`]).
    Returned { value: u64, instructions: Option<u64> },
    /// An access to unmapped or protected memory.
    Fault { pc: u64, addr: u64, access: Access, unmapped: bool },
    /// The instruction budget ran out (runaway code).
    BudgetExhausted { pc: u64, budget: u64 },
    /// The CPU trapped (illegal instruction, breakpoint trap, privileged op).
    Trap { pc: u64, reason: String },
    /// Execution reached one of the [`Engine::set_host_calls`] addresses:
    /// the kernel runtime implements the function there on the host and
    /// [`Engine::resume`]s.  Nothing at `pc` has executed.
    HostCall { pc: u64, instructions: Option<u64> },
    /// Execution reached one of the [`Engine::set_breakpoints`] addresses
    /// (a WARN/BUG trap instruction from a module's `__bug_table`); the
    /// instruction at `pc` has not executed.
    Breakpoint { pc: u64, instructions: Option<u64> },
}

impl Outcome {
    /// Instructions the call (or the part since the last resume) executed,
    /// where the engine counted them.
    pub fn instructions(&self) -> Option<u64> {
        match *self {
            Outcome::Returned { instructions, .. }
            | Outcome::HostCall { instructions, .. }
            | Outcome::Breakpoint { instructions, .. } => instructions,
            Outcome::BudgetExhausted { budget, .. } => Some(budget),
            Outcome::Fault { .. } | Outcome::Trap { .. } => None,
        }
    }
}

/// Engine failures that are not the guest's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("{engine}: cannot map {addr:#x}+{size:#x}: {reason}")]
    Map { engine: &'static str, addr: u64, size: u64, reason: String },
    #[error("{engine}: cannot {op} memory at {addr:#x}+{len:#x}: {reason}")]
    Memory { engine: &'static str, op: &'static str, addr: u64, len: usize, reason: String },
    #[error("{engine}: register {reg:?} is not available on {cpu}")]
    NoRegister { engine: &'static str, cpu: Cpu, reg: Reg },
    #[error("{engine}: {reason}")]
    Engine { engine: &'static str, reason: String },
    #[error("{engine}: {what} is not installed or not runnable: {reason} (install: {install})")]
    Missing { engine: &'static str, what: String, reason: String, install: String },
    #[error("{engine}: protocol error: {reason}")]
    Protocol { engine: &'static str, reason: String },
    #[error("{engine}: timed out after {millis} ms waiting for {what}")]
    Timeout { engine: &'static str, what: String, millis: u64 },
}

/// What the trace of a call records.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceMode {
    /// Nothing.
    Off,
    /// Every data write, except writes into the mapping that holds the
    /// call's stack (an engine may leave those out); reads may be left
    /// out.  What the runner's checks need: engines that can record
    /// writes more cheaply than every access use this.
    Writes,
    /// Every data access.
    All,
}

/// A CPU with memory, as adapters drive it.
pub trait Engine {
    fn cpu(&self) -> Cpu;
    /// Engine name for diagnostics (`unicorn`, `qemu-alpha`).
    fn name(&self) -> &'static str;
    /// Page granularity of `map`/`unmap` (addresses and sizes must be multiples).
    fn map_granule(&self) -> u64;
    fn map(&mut self, addr: u64, size: u64, perms: Perms) -> Result<(), EngineError>;
    fn unmap(&mut self, addr: u64, size: u64) -> Result<(), EngineError>;
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), EngineError>;
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), EngineError>;
    fn set_reg(&mut self, reg: Reg, value: u64) -> Result<(), EngineError>;
    fn reg(&mut self, reg: Reg) -> Result<u64, EngineError>;
    /// Call `entry(args...)` with the C calling convention on a stack at
    /// `stack_top` (mapped by the caller), stop when it returns, or at a
    /// fault, trap or after `budget` instructions.
    fn call(&mut self, entry: u64, args: &[u64], stack_top: u64, budget: u64) -> Result<Outcome, EngineError>;
    /// Record every data access of subsequent calls (for `--trace`):
    /// [`TraceMode::All`] when `on`, [`TraceMode::Off`] otherwise.
    fn set_trace(&mut self, on: bool);
    /// Choose what subsequent calls record.  The default records
    /// everything for `Writes` (a superset), for engines where that is
    /// as cheap.
    fn set_trace_mode(&mut self, mode: TraceMode) {
        self.set_trace(mode != TraceMode::Off);
    }
    /// Take the accesses recorded since the last call to this.
    fn take_trace(&mut self) -> Vec<MemAccess>;

    /// Remember the CPU's whole architectural state (every register, the
    /// s390x PSW, system registers) for [`Engine::reset_cpu`].  The runner
    /// takes it once the bed is built.
    fn snapshot_cpu(&mut self) -> Result<(), EngineError> {
        Ok(())
    }
    /// Return the CPU to the [`Engine::snapshot_cpu`] state (nothing if
    /// none was taken).  The runner resets before every run, so no run's
    /// CPU state (an s390x `lpswe`, an arm64 `msr`, a sparc window) leaks
    /// into later, innocent runs.  Memory is not touched.
    fn reset_cpu(&mut self) -> Result<(), EngineError> {
        Ok(())
    }

    /// Stop with [`Outcome::HostCall`] whenever execution reaches one of
    /// `addrs` (the kernel runtime's function slots; replaces any earlier
    /// set).  The slots must be in memory the caller mapped executable.
    fn set_host_calls(&mut self, _addrs: &[u64]) -> Result<(), EngineError> {
        Err(EngineError::Engine { engine: self.name(), reason: "host calls are not supported".into() })
    }
    /// Stop with [`Outcome::Breakpoint`] whenever execution reaches one of
    /// `addrs` (replaces any earlier set).
    fn set_breakpoints(&mut self, _addrs: &[u64]) -> Result<(), EngineError> {
        Err(EngineError::Engine { engine: self.name(), reason: "breakpoints are not supported".into() })
    }
    /// Continue the stopped call from the current pc (which the caller may
    /// have moved) for at most `budget` more instructions; it ends as
    /// [`Engine::call`]'s does (returning to the same trampoline).  A
    /// breakpoint at the pc resumed from is not reported again before the
    /// instruction there executes if the call stopped at that breakpoint;
    /// one the pc reaches otherwise (a host call returning onto a WARN's
    /// `ud2`) is reported.
    fn resume(&mut self, _budget: u64) -> Result<Outcome, EngineError> {
        Err(EngineError::Engine { engine: self.name(), reason: "resuming a call is not supported".into() })
    }
}

pub mod gdb_remote;
pub mod qemu_alpha;
pub mod scratch;
pub mod unicorn;
