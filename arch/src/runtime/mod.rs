//! The kernel runtime: what a real kernel module built from a real tree
//! needs from "the kernel" to run inside an emulator.
//!
//! percpu-bed does not boot a kernel.  It plays the kernel image's part for
//! the modules it loads, the way a unit-test harness stubs a dependency,
//! but with the real module code and the real percpu allocator model:
//!
//! * **The kernel image** ([`image`]) is an ELF object the runtime writes
//!   for each run: a static percpu area holding the percpu variables the
//!   arch's headers use (x86_64 `__preempt_count`, `this_cpu_off`,
//!   `cpu_number`, `current_task`; arm64 `cpu_number`), padded to the size a
//!   real boot of that arch reports; `__per_cpu_offset[NR_CPUS]` and the
//!   online/present/active masks; a page of *host-call slots*, one per
//!   kernel function a module may import; and small *thunks* of real code
//!   (`__x86_return_thunk`, `__fentry__`).  The bed loads it like any kernel
//!   image, so modules link against it with the loader's usual rules.
//! * **Host calls**: the engine stops before the first instruction of a
//!   slot ([`crate::engine::Outcome::HostCall`]), the runtime reads the
//!   arguments with the arch's C calling convention ([`KernelAbi`]),
//!   implements the function on the host (`__alloc_percpu` is served by
//!   percpu-core and the new chunk's pages are mapped into the engine;
//!   `_printk` formats from guest memory, see [`printk`]), sets the return
//!   value, returns to the caller and resumes.  An import the runtime does
//!   not provide is a load error naming the symbol and the module.
//! * **WARN and BUG**: each module's `__bug_table` ([`bugtable`]) gives the
//!   address, file, line and flags of every trap instruction (x86_64 `ud2`,
//!   arm64 `brk #0x800`, s390x `mc`, riscv `ebreak`); the engine stops
//!   there ([`crate::engine::Outcome::Breakpoint`]), a WARN is recorded with
//!   its message and execution continues after the instruction, a BUG ends
//!   the run.  alpha and sparc32 WARN through `warn_slowpath_fmt`.
//! * **Per-CPU kernel state** ([`KernelAbi::enter_kernel_cpu`]): the
//!   current task and thread_info (`sp_el0`, `tp`, `$8`, `%g6`), the
//!   preempt count where the arch keeps it, the s390x lowcore's `cpu_nr`,
//!   `preempt_count` and `current_task`.  Offsets come from the tree being
//!   tested ([`RtAbi`], computed by the tree's compiler), never from a table
//!   of one version's constants.
//!
//! Where the bed bends real code it says so: alpha's `call_pal swpipl`
//! (privileged, which qemu-alpha's user mode refuses) is emulated on the
//! host at the trap, and the report counts such emulations.

pub mod bugtable;
pub mod image;
pub mod printk;

use std::collections::BTreeMap;
use std::fmt;

use crate::engine::{Engine, EngineError};

/// The facts about a kernel tree the runtime needs, read from the probe
/// module's `.percpu_bed.rtabi` (see `fixtures/kmod/src/pcpubed_rtabi.c`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RtAbi {
    /// `LINUX_VERSION_CODE`.
    pub version_code: u64,
    pub nr_cpus: u32,
    pub page_size: u64,
    pub sizeof_long: u32,
    /// The preempt count of a running, preemptible task (x86_64 and s390x
    /// keep an inverted need-resched bit in it; arm64 in the high word).
    pub preempt_enabled: u64,
    /// Whether preempt_disable() counts (CONFIG_PREEMPT_COUNT).
    pub preempt_counts: bool,
    pub sizeof_task_struct: u64,
    pub sizeof_thread_info: u64,
    /// THREAD_INFO_IN_TASK: offset of thread_info in task_struct.
    pub task_thread_info: Option<u64>,
    /// Otherwise: offset of `task` in thread_info.
    pub ti_task: Option<u64>,
    pub ti_cpu: Option<u64>,
    /// Where the preempt count is in thread_info (not x86_64, s390x), and its size.
    pub ti_preempt_count: Option<(u64, u32)>,
    pub bug: Option<BugLayout>,
    pub lowcore: Option<Lowcore>,
    /// Every record, for reports and arch-specific extras.
    pub records: BTreeMap<String, u64>,
}

/// `struct bug_entry` as the tree lays it out.
#[derive(Copy, Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BugLayout {
    pub size: u64,
    /// GENERIC_BUG_RELATIVE_POINTERS: addr and file are 32-bit
    /// displacements from the field itself.
    pub relative: bool,
    pub addr: u64,
    pub file: Option<u64>,
    pub line: Option<u64>,
    pub flags: u64,
    pub flag_warning: u16,
    pub flag_once: u16,
    pub flag_done: u16,
}

/// The s390x lowcore fields the headers read.
#[derive(Copy, Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Lowcore {
    pub size: u64,
    pub percpu_offset: u64,
    pub cpu_nr: u64,
    pub preempt_count: u64,
    pub current_task: u64,
}

/// A missing or inconsistent record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the tree's runtime ABI: {0}")]
pub struct RtAbiError(pub String);

impl RtAbi {
    /// The tree's value of error number `name` (`EAGAIN`), positive.
    pub fn errno(&self, name: &str) -> Option<i64> {
        self.records.get(&format!("errno_{name}")).map(|&v| v as i64)
    }

    /// The name of positive error number `value` in this tree, if the
    /// probe recorded it.
    pub fn errno_name(&self, value: i64) -> Option<&str> {
        self.records
            .iter()
            .find(|(k, &v)| k.starts_with("errno_") && v as i64 == value)
            .map(|(k, _)| &k["errno_".len()..])
    }

    pub fn from_records(records: &BTreeMap<String, u64>) -> Result<RtAbi, RtAbiError> {
        let get = |k: &str| records.get(k).copied();
        let need = |k: &str| get(k).ok_or_else(|| RtAbiError(format!("record `{k}` is missing")));
        let bug = match get("sizeof_bug_entry") {
            Some(size) => Some(BugLayout {
                size,
                relative: get("bug_relative_pointers") == Some(1),
                addr: need("bug_entry_addr")?,
                file: get("bug_entry_file"),
                line: get("bug_entry_line"),
                flags: need("bug_entry_flags")?,
                flag_warning: need("bugflag_warning")? as u16,
                flag_once: need("bugflag_once")? as u16,
                flag_done: need("bugflag_done")? as u16,
            }),
            None => None,
        };
        let lowcore = match get("sizeof_lowcore") {
            Some(size) => Some(Lowcore {
                size,
                percpu_offset: need("lc_percpu_offset")?,
                cpu_nr: need("lc_cpu_nr")?,
                preempt_count: need("lc_preempt_count")?,
                current_task: need("lc_current_task")?,
            }),
            None => None,
        };
        let abi = RtAbi {
            version_code: need("linux_version_code")?,
            nr_cpus: need("nr_cpus")? as u32,
            page_size: need("page_size")?,
            sizeof_long: need("sizeof_long")? as u32,
            preempt_enabled: get("preempt_enabled").unwrap_or(0),
            preempt_counts: get("config_preempt_count") == Some(1),
            sizeof_task_struct: need("sizeof_task_struct")?,
            sizeof_thread_info: need("sizeof_thread_info")?,
            task_thread_info: get("task_thread_info"),
            ti_task: get("ti_task"),
            ti_cpu: get("ti_cpu"),
            ti_preempt_count: get("ti_preempt_count").map(|o| (o, get("sizeof_ti_preempt_count").unwrap_or(4) as u32)),
            bug,
            lowcore,
            records: records.clone(),
        };
        if abi.nr_cpus == 0 || abi.sizeof_long == 0 || abi.page_size == 0 {
            return Err(RtAbiError("nr_cpus, sizeof_long and page_size must be non-zero".into()));
        }
        Ok(abi)
    }

    /// `a.b.c` of the version code.
    pub fn kernel_version(&self) -> String {
        let c = self.version_code;
        format!("{}.{}.{}", c >> 16, (c >> 8) & 0xff, c & 0xff)
    }
    /// `(major, minor)`.
    pub fn version(&self) -> (u64, u64) {
        (self.version_code >> 16, (self.version_code >> 8) & 0xff)
    }
}

/// What a kernel function the runtime provides does.  The names are the
/// 6.1 exports real percpu code reaches (the union over six arches,
/// defconfig and Debian configs), and their older and newer spellings.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum HostFn {
    /// `_printk(fmt, ...)` (and `printk` before 5.15).
    Printk,
    /// `__warn_printk(fmt, ...)`: the message of a WARN whose trap follows.
    WarnPrintk,
    /// `warn_slowpath_fmt(file, line, taint, fmt, ...)`: a whole WARN.
    WarnSlowpath,
    /// `__alloc_percpu(size, align)`.
    AllocPercpu,
    /// `__alloc_percpu_gfp(size, align, gfp)`.
    AllocPercpuGfp,
    /// `free_percpu(ptr)`.
    FreePercpu,
    /// `preempt_schedule()` and friends: a reschedule point, nothing to do.
    PreemptSchedule,
    /// sparc32 `arch_local_irq_save()`.
    IrqSave,
    /// sparc32 `arch_local_irq_restore(flags)`.
    IrqRestore,
    /// `_find_next_bit(addr, size, offset)`.
    FindNextBit,
    /// `_find_next_zero_bit(addr, size, offset)`.
    FindNextZeroBit,
    /// `_find_next_and_bit(addr1, addr2, size, offset)`.
    FindNextAndBit,
    /// `_find_first_bit(addr, size)`.
    FindFirstBit,
    /// `_find_first_zero_bit(addr, size)`.
    FindFirstZeroBit,
    /// `_find_last_bit(addr, size)`.
    FindLastBit,
    /// `__bitmap_weight(addr, bits)`.
    BitmapWeight,
    /// `debug_smp_processor_id()` (CONFIG_DEBUG_PREEMPT).
    DebugSmpProcessorId,
    /// `memset(s, c, n)`.
    Memset,
    /// `memcpy(d, s, n)` and `memmove`.
    Memcpy,
    /// `__stack_chk_fail()`: the stack protector caught an overwrite.
    StackChkFail,
    /// sparc32 `do_BUG(file, line)`: the location of the BUG trap that follows.
    DoBug,
    /// Referenced only from `.altinstructions` (arm64 `alt_cb_patch_nops`):
    /// the runtime applies no alternatives, so a call is a finding.
    NeverCalled,
}

/// Every kernel function the runtime provides, by the name modules import.
pub const HOST_FUNCTIONS: &[(&str, HostFn)] = &[
    ("_printk", HostFn::Printk),
    ("printk", HostFn::Printk),
    ("__warn_printk", HostFn::WarnPrintk),
    ("warn_slowpath_fmt", HostFn::WarnSlowpath),
    ("__alloc_percpu", HostFn::AllocPercpu),
    ("__alloc_percpu_gfp", HostFn::AllocPercpuGfp),
    ("free_percpu", HostFn::FreePercpu),
    ("preempt_schedule", HostFn::PreemptSchedule),
    ("preempt_schedule_notrace", HostFn::PreemptSchedule),
    ("__SCT__preempt_schedule", HostFn::PreemptSchedule),
    ("__SCT__preempt_schedule_notrace", HostFn::PreemptSchedule),
    ("preempt_schedule_thunk", HostFn::PreemptSchedule),
    ("arch_local_irq_save", HostFn::IrqSave),
    ("arch_local_irq_restore", HostFn::IrqRestore),
    ("_find_next_bit", HostFn::FindNextBit),
    ("_find_next_zero_bit", HostFn::FindNextZeroBit),
    ("_find_next_and_bit", HostFn::FindNextAndBit),
    ("_find_first_bit", HostFn::FindFirstBit),
    ("_find_first_zero_bit", HostFn::FindFirstZeroBit),
    ("_find_last_bit", HostFn::FindLastBit),
    ("__bitmap_weight", HostFn::BitmapWeight),
    ("debug_smp_processor_id", HostFn::DebugSmpProcessorId),
    ("memset", HostFn::Memset),
    ("memcpy", HostFn::Memcpy),
    ("memmove", HostFn::Memcpy),
    ("__memcpy", HostFn::Memcpy),
    ("__memset", HostFn::Memset),
    ("__stack_chk_fail", HostFn::StackChkFail),
    ("do_BUG", HostFn::DoBug),
    ("alt_cb_patch_nops", HostFn::NeverCalled),
];

/// The host function a module import names, if the runtime provides it.
pub fn host_fn(name: &str) -> Option<HostFn> {
    HOST_FUNCTIONS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// What a runtime percpu variable holds in each CPU's copy.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PercpuInit {
    /// The CPU's number (`cpu_number`).
    CpuNumber,
    /// `__per_cpu_offset[cpu]` (x86_64 `this_cpu_off`).
    CpuOffset,
    /// The preempt count of a running preemptible task (x86_64 `__preempt_count`).
    PreemptEnabled,
    /// The CPU's current task (x86_64 `current_task`).
    CurrentTask,
}

/// A percpu variable of the runtime's kernel image.
#[derive(Copy, Clone, Debug)]
pub struct PercpuVar {
    pub name: &'static str,
    pub size: u32,
    pub init: PercpuInit,
}

/// Where an arch keeps the preempt count.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PreemptLoc {
    /// A runtime percpu variable (x86_64 `__preempt_count`).
    PercpuVar(&'static str),
    /// In thread_info ([`RtAbi::ti_preempt_count`]).
    ThreadInfo,
    /// In the s390x lowcore.
    Lowcore,
}

/// The kernel state of one CPU the runtime installs before a call.
#[derive(Copy, Clone, Debug)]
pub struct KernelCpu {
    pub cpu: u32,
    pub per_cpu_offset: u64,
    /// The CPU's current task (a zeroed `task_struct`).
    pub task: u64,
    /// Its thread_info (inside the task with THREAD_INFO_IN_TASK).
    pub thread_info: u64,
}

/// How a trap the runtime handles continues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrapAction {
    /// Emulated: resume at the next instruction (the runtime counts it).
    Emulated { what: &'static str },
    /// A BUG: the run ends with this finding.
    Bug { file: Option<String>, line: Option<u32>, what: String },
}

/// One arch's half of the kernel runtime: its C calling convention for
/// host calls, the kernel state its headers read, the percpu variables and
/// thunks its modules link against.  Implemented in `isa/<arch>/runtime.rs`.
pub trait KernelAbi: Sync {
    /// Percpu variables the arch's headers expect in the kernel image.
    fn percpu_vars(&self, _abi: &RtAbi) -> Vec<PercpuVar> {
        Vec::new()
    }
    /// Functions that are real code in the runtime image (not host calls):
    /// (name, machine code).
    fn thunks(&self) -> Vec<(&'static str, Vec<u8>)> {
        Vec::new()
    }
    /// Bytes a host-call slot is filled with (a trapping instruction: the
    /// engine stops before it runs).
    fn slot_fill(&self) -> &'static [u8];
    /// The integer argument word `i` of a call stopped at a function's
    /// first instruction (registers first, then the stack).  32-bit arches
    /// pass 64-bit values in two consecutive words.
    fn arg_word(&self, e: &mut dyn Engine, i: usize) -> Result<u64, EngineError>;
    /// Return from that call with `value` (`None`: a void function).
    fn host_return(&self, e: &mut dyn Engine, value: Option<u64>) -> Result<(), EngineError>;
    /// Install the kernel state of `k` (besides the percpu offset register,
    /// which [`crate::isa::Isa::enter_cpu`] sets): current task registers,
    /// s390x lowcore fields.
    fn enter_kernel_cpu(&self, _e: &mut dyn Engine, _k: &KernelCpu, _abi: &RtAbi) -> Result<(), EngineError> {
        Ok(())
    }
    /// Where the preempt count lives.
    fn preempt_count(&self) -> PreemptLoc {
        PreemptLoc::ThreadInfo
    }
    /// Bytes of the WARN/BUG trap instruction that starts with `insn`.
    fn bug_insn_len(&self, _insn: &[u8]) -> u64 {
        4
    }
    /// A trap the runtime handles itself (alpha PAL calls), or `None`.
    fn handle_trap(
        &self,
        _e: &mut dyn Engine,
        _pc: u64,
        _insn: u32,
        _irq: &mut u64,
        _cpu: u32,
    ) -> Result<Option<TrapAction>, EngineError> {
        Ok(None)
    }
    /// How many bytes of the static percpu area a real boot of this arch
    /// reports (`percpu: ... s<N>`), so runtime geometry looks like a
    /// kernel's.
    fn typical_static_size(&self) -> u64;
}

impl fmt::Display for HostFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn the_x86_64_probe_of_6_1_reads_back() {
        let r = records(&[
            ("rtabi_version", 1),
            ("linux_version_code", 0x601c0),
            ("nr_cpus", 64),
            ("page_size", 4096),
            ("sizeof_long", 8),
            ("preempt_enabled", 0x8000_0000),
            ("config_preempt_count", 1),
            ("sizeof_task_struct", 0x1c80),
            ("sizeof_thread_info", 0x18),
            ("task_thread_info", 0),
            ("ti_cpu", 0x14),
            ("sizeof_bug_entry", 12),
            ("bug_relative_pointers", 1),
            ("bug_entry_addr", 0),
            ("bug_entry_file", 4),
            ("bug_entry_line", 8),
            ("bug_entry_flags", 10),
            ("bugflag_warning", 1),
            ("bugflag_once", 2),
            ("bugflag_done", 4),
        ]);
        let a = RtAbi::from_records(&r).unwrap();
        assert_eq!(a.kernel_version(), "6.1.192");
        assert_eq!(a.version(), (6, 1));
        assert!(a.preempt_counts);
        assert_eq!(a.bug.unwrap().line, Some(8));
        assert!(a.lowcore.is_none() && a.ti_preempt_count.is_none());
        let mut bad = r.clone();
        bad.remove("bug_entry_flags");
        assert!(RtAbi::from_records(&bad).unwrap_err().to_string().contains("bug_entry_flags"));
    }

    #[test]
    fn host_functions_have_unique_names() {
        let mut names: Vec<_> = HOST_FUNCTIONS.iter().map(|(n, _)| *n).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
        assert_eq!(host_fn("_printk"), Some(HostFn::Printk));
        assert_eq!(host_fn("kmalloc"), None);
    }
}

/// The argument word `i` of a call with `nregs` register arguments and the
/// rest on the stack from `sp + stack_skip`, one `word`-byte slot each: the
/// convention of every arch here but x86_64 (whose stack arguments sit
/// above the pushed return address).
pub fn reg_then_stack_arg(
    e: &mut dyn Engine,
    i: usize,
    nregs: usize,
    stack_skip: u64,
    word: u32,
    big_endian: bool,
) -> Result<u64, EngineError> {
    if i < nregs {
        return e.reg(crate::engine::Reg::Arg(i as u8));
    }
    let sp = e.reg(crate::engine::Reg::Sp)?;
    let at = sp.wrapping_add(stack_skip).wrapping_add(((i - nregs) as u64) * word as u64);
    let mut b = [0u8; 8];
    e.read(at, &mut b[..word as usize])?;
    let b = &b[..word as usize];
    Ok(if big_endian {
        b.iter().fold(0u64, |v, &x| v << 8 | x as u64)
    } else {
        b.iter().rev().fold(0u64, |v, &x| v << 8 | x as u64)
    })
}

/// Return from a call stopped at a function's first instruction to the
/// return-address register plus `bias` (sparc's `%o7 + 8`), with `value`
/// in the return register.
pub fn return_to_link_register(e: &mut dyn Engine, value: Option<u64>, bias: u64) -> Result<(), EngineError> {
    if let Some(v) = value {
        e.set_reg(crate::engine::Reg::Ret, v)?;
    }
    let ra = e.reg(crate::engine::Reg::ReturnAddress)?;
    e.set_reg(crate::engine::Reg::Pc, ra.wrapping_add(bias))
}
