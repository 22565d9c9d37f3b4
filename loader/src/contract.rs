//! The fixture contract (fixtures/CONTRACT.md, version 1): the
//! `.percpu_bed.abi` note and the `.percpu_bed.tests` descriptors, read from
//! the loaded (relocated) image in the object's byte order and pointer width.

use std::collections::HashMap;

use serde::Serialize;

use crate::error::LoadError;
use crate::load::LoadedObject;

pub const ABI_SECTION: &str = ".percpu_bed.abi";
pub const TESTS_SECTION: &str = ".percpu_bed.tests";
pub const ABI_MAGIC: u32 = 0x5043_5042;
/// The newest contract version (fixtures/CONTRACT.md): 2 gives each CPU's
/// copy its own initial value (`init + cpu`); 1 (still read) starts every
/// copy at `init`.
pub const ABI_VERSION: u32 = 2;
/// The oldest contract version the loader reads.
pub const ABI_MIN_VERSION: u32 = 1;
pub const ABI_SIZE: usize = 24;

/// How code finds its CPU's percpu offset (`model` in the ABI note).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PercpuModel {
    /// 1: x86_64 zero-based, `%gs:sym`.
    X86ZeroBased,
    /// 2: x86_64 relative, `%gs:sym(%rip)`.
    X86Relative,
    /// 3: arm64 `TPIDR_EL1`.
    Arm64TpidrEl1,
    /// 4: arm64 `TPIDR_EL2`.
    Arm64TpidrEl2,
    /// 5: thread_info `cpu` + `__per_cpu_offset[]` (sparc32, alpha, km).
    ThreadInfo,
    /// 6: s390x lowcore `percpu_offset`.
    S390Lowcore,
}

impl PercpuModel {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => PercpuModel::X86ZeroBased,
            2 => PercpuModel::X86Relative,
            3 => PercpuModel::Arm64TpidrEl1,
            4 => PercpuModel::Arm64TpidrEl2,
            5 => PercpuModel::ThreadInfo,
            6 => PercpuModel::S390Lowcore,
            _ => return None,
        })
    }
}

/// The `.percpu_bed.abi` note.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AbiNote {
    pub version: u32,
    pub model: PercpuModel,
    pub ti_cpu_offset: u32,
    pub lowcore_percpu_offset: u32,
    pub flags: u32,
}

impl AbiNote {
    pub const FLAG_WEAK_PERCPU: u32 = 1;
    /// Module built with weak percpu (GOT access).
    pub fn weak_percpu(&self) -> bool {
        self.flags & Self::FLAG_WEAK_PERCPU != 0
    }
}

/// `PCPUBED_OP_*`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Op {
    Read,
    Add,
    Write,
    SumAll,
    AddAll,
}

impl Op {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Op::Read,
            1 => Op::Add,
            2 => Op::Write,
            3 => Op::SumAll,
            4 => Op::AddAll,
            _ => return None,
        })
    }
}

/// `PCPUBED_RET_*`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RetKind {
    None,
    Value,
    Old,
    New,
    Sum,
    Cpu,
}

impl RetKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => RetKind::None,
            1 => RetKind::Value,
            2 => RetKind::Old,
            3 => RetKind::New,
            4 => RetKind::Sum,
            5 => RetKind::Cpu,
            _ => return None,
        })
    }
}

/// `PCPUBED_F_*`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default, Serialize)]
pub struct TestFlags(pub u32);

impl TestFlags {
    pub const DYNAMIC: u32 = 1 << 0;
    pub const FAR: u32 = 1 << 1;
    pub const ONCE: u32 = 1 << 2;
    pub const EXPECT_CAUGHT: u32 = 1 << 3;
    /// A stateful test: one call per step on a sequence of CPUs, `fn`
    /// gets `index | step << STEP_SHIFT`, and a DYNAMIC target is replaced
    /// (a new allocation, then `free_percpu` of the old one) between steps.
    pub const STEPS: u32 = 1 << 4;
    /// With EXPECT_CAUGHT: the bug needs two or more possible CPUs to
    /// show (another CPU's copy to get wrong); on one it is latent.
    pub const NEEDS_SMP: u32 = 1 << 5;
    /// Bits 8..=15: the findings that count as catching a planted bug
    /// (`PCPUBED_F_CAUGHT_*`); none set: any finding but a runaway.
    pub const CAUGHT_REJECTED: u32 = 1 << 8;
    pub const CAUGHT_FAULT: u32 = 1 << 9;
    pub const CAUGHT_VALUE: u32 = 1 << 10;
    pub const CAUGHT_STRAY_WRITE: u32 = 1 << 11;
    pub const CAUGHT_STRAY_READ: u32 = 1 << 12;
    pub const CAUGHT_TRAP: u32 = 1 << 13;
    pub const CAUGHT_KERNEL: u32 = 1 << 14;
    pub const CAUGHT_RUNAWAY: u32 = 1 << 15;
    pub const CAUGHT_ANY: u32 = 0xff00;
    pub const ALL: u32 = 0x3f | Self::CAUGHT_ANY;
    /// Where a STEPS test's step number sits in its argument.
    pub const STEP_SHIFT: u32 = 16;
    /// The names of the `CAUGHT_*` bits, in bit order.
    pub const CAUGHT_NAMES: [(u32, &'static str); 8] = [
        (Self::CAUGHT_REJECTED, "rejected by the loader"),
        (Self::CAUGHT_FAULT, "fault"),
        (Self::CAUGHT_VALUE, "wrong value or return"),
        (Self::CAUGHT_STRAY_WRITE, "stray write"),
        (Self::CAUGHT_STRAY_READ, "stray read"),
        (Self::CAUGHT_TRAP, "trap"),
        (Self::CAUGHT_KERNEL, "kernel runtime finding"),
        (Self::CAUGHT_RUNAWAY, "runaway"),
    ];
    pub fn dynamic(self) -> bool {
        self.0 & Self::DYNAMIC != 0
    }
    pub fn far(self) -> bool {
        self.0 & Self::FAR != 0
    }
    pub fn once(self) -> bool {
        self.0 & Self::ONCE != 0
    }
    pub fn steps(self) -> bool {
        self.0 & Self::STEPS != 0
    }
    pub fn needs_smp(self) -> bool {
        self.0 & Self::NEEDS_SMP != 0
    }
    pub fn expect_caught(self) -> bool {
        self.0 & Self::EXPECT_CAUGHT != 0
    }
    /// The `CAUGHT_*` bits a planted bug declares (0: not declared).
    pub fn caught_as(self) -> u32 {
        self.0 & Self::CAUGHT_ANY
    }
    /// "fault or stray write": the declared classes in words.
    pub fn caught_as_names(self) -> String {
        let names: Vec<&str> =
            Self::CAUGHT_NAMES.iter().filter(|(bit, _)| self.0 & bit != 0).map(|(_, n)| *n).collect();
        names.join(" or ")
    }
}

/// One `struct pcpubed_test`, with its strings resolved from the image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TestDescriptor {
    /// The test's index in the object (the argument `fn` receives).
    pub index: usize,
    pub name: String,
    pub fn_addr: u64,
    pub target: u64,
    pub size: u32,
    pub align: u32,
    pub width: u32,
    pub op: Op,
    pub flags: TestFlags,
    pub ret: RetKind,
    pub operand: u64,
    pub init: u64,
    pub expect_ret: u64,
    pub bug: Option<String>,
}

impl TestDescriptor {
    /// The argument `fn` gets: its index, and on a STEPS test the step.
    pub fn arg(&self, step: Option<u32>) -> u64 {
        self.index as u64 | step.map_or(0, |s| u64::from(s) << TestFlags::STEP_SHIFT)
    }
}

/// Field offsets of `struct pcpubed_test` for one pointer width.
struct Layout {
    size: usize,
    name: usize,
    func: usize,
    target: usize,
    size_f: usize,
    align: usize,
    width: usize,
    op: usize,
    flags: usize,
    ret: usize,
    bug: usize,
    ptr: usize,
}

const LAYOUT64: Layout = Layout {
    size: 80,
    name: 24,
    func: 32,
    target: 40,
    size_f: 48,
    align: 52,
    width: 56,
    op: 60,
    flags: 64,
    ret: 68,
    bug: 72,
    ptr: 8,
};
const LAYOUT32: Layout = Layout {
    size: 64,
    name: 24,
    func: 28,
    target: 32,
    size_f: 36,
    align: 40,
    width: 44,
    op: 48,
    flags: 52,
    ret: 56,
    bug: 60,
    ptr: 4,
};

/// The size of one descriptor for a pointer width.
pub fn descriptor_size(is_64: bool) -> usize {
    if is_64 {
        LAYOUT64.size
    } else {
        LAYOUT32.size
    }
}

fn rd(bytes: &[u8], off: usize, width: usize, little: bool) -> u64 {
    let s = &bytes[off..off + width];
    let mut v = 0u64;
    for i in 0..width {
        let b = if little { s[width - 1 - i] } else { s[i] };
        v = (v << 8) | b as u64;
    }
    v
}

/// Longest name or bug string we accept (a missing NUL runs to the end of the section otherwise).
const MAX_STRING: usize = 4096;

/// Parse the ABI note from raw section bytes.
pub fn parse_abi(object: &str, bytes: &[u8], little: bool) -> Result<AbiNote, LoadError> {
    let bad = |reason: String| LoadError::BadAbiNote { object: object.to_string(), reason };
    if bytes.len() != ABI_SIZE {
        return Err(bad(format!("size {} (want {ABI_SIZE})", bytes.len())));
    }
    let w = |i: usize| rd(bytes, i * 4, 4, little) as u32;
    if w(0) != ABI_MAGIC {
        return Err(bad(format!("magic {:#010x} (want {ABI_MAGIC:#010x} \"PCPB\"; wrong byte order?)", w(0))));
    }
    if !(ABI_MIN_VERSION..=ABI_VERSION).contains(&w(1)) {
        return Err(bad(format!("version {} (this loader reads versions {ABI_MIN_VERSION} to {ABI_VERSION})", w(1))));
    }
    let model = PercpuModel::from_u32(w(2)).ok_or_else(|| bad(format!("unknown model {} (1..=6)", w(2))))?;
    let flags = w(5);
    if flags & !AbiNote::FLAG_WEAK_PERCPU != 0 {
        return Err(bad(format!("unknown flag bits {:#x}", flags & !AbiNote::FLAG_WEAK_PERCPU)));
    }
    Ok(AbiNote { version: w(1), model, ti_cpu_offset: w(3), lowcore_percpu_offset: w(4), flags })
}

/// Read the ABI note and test descriptors of a loaded object.
pub(crate) fn parse(
    obj: &LoadedObject,
    abi_raw: &[Vec<u8>],
) -> Result<(Option<AbiNote>, Vec<TestDescriptor>), LoadError> {
    let object = obj.name.as_str();
    let abi = match abi_raw {
        [] => None,
        [one] => Some(parse_abi(object, one, obj.little_endian)?),
        more => {
            return Err(LoadError::BadAbiNote {
                object: object.to_string(),
                reason: format!("{} sections named {ABI_SECTION} (want exactly one)", more.len()),
            })
        }
    };
    let mut secs = obj.sections.iter().filter(|s| s.name == TESTS_SECTION);
    let Some(sec) = secs.next() else {
        return Ok((abi, Vec::new()));
    };
    if secs.next().is_some() {
        return Err(LoadError::BadTestsSection {
            object: object.to_string(),
            reason: "more than one section of that name".into(),
        });
    }
    let l = if obj.is_64 { &LAYOUT64 } else { &LAYOUT32 };
    if sec.data.len() % l.size != 0 {
        return Err(LoadError::BadTestsSection {
            object: object.to_string(),
            reason: format!(
                "size {} is not a multiple of the {}-byte descriptor ({}-bit)",
                sec.data.len(),
                l.size,
                if obj.is_64 { 64 } else { 32 }
            ),
        });
    }
    let little = obj.little_endian;
    let mut tests = Vec::with_capacity(sec.data.len() / l.size);
    let mut names: HashMap<String, usize> = HashMap::new();
    for (index, d) in sec.data.chunks_exact(l.size).enumerate() {
        let u32f = |off: usize| rd(d, off, 4, little) as u32;
        let ptr = |off: usize| rd(d, off, l.ptr, little);
        let name_ptr = ptr(l.name);
        let err = |name: Option<String>, field: &'static str, reason: String| LoadError::BadDescriptor {
            object: object.to_string(),
            index,
            name,
            field,
            reason,
        };
        if name_ptr == 0 {
            return Err(err(None, "name", "NULL".into()));
        }
        let name = obj.read_cstr(name_ptr, MAX_STRING).ok_or_else(|| {
            err(None, "name", format!("pointer {name_ptr:#x} is outside the loaded image (or the string has no NUL)"))
        })?;
        let nm = Some(name.clone());
        if let Some(prev) = names.insert(name.clone(), index) {
            return Err(err(nm, "name", format!("duplicate of test {prev}")));
        }
        let width = u32f(l.width);
        if ![1, 2, 4, 8].contains(&width) {
            return Err(err(nm, "width", format!("{width} (want 1, 2, 4 or 8)")));
        }
        let op =
            Op::from_u32(u32f(l.op)).ok_or_else(|| err(nm.clone(), "op", format!("{} (want 0..=4)", u32f(l.op))))?;
        let ret = RetKind::from_u32(u32f(l.ret))
            .ok_or_else(|| err(nm.clone(), "ret", format!("{} (want 0..=5)", u32f(l.ret))))?;
        let flags = TestFlags(u32f(l.flags));
        if flags.0 & !TestFlags::ALL != 0 {
            return Err(err(nm, "flags", format!("unknown bits {:#x}", flags.0 & !TestFlags::ALL)));
        }
        if flags.far() && !flags.dynamic() {
            return Err(err(nm, "flags", "FAR without DYNAMIC".into()));
        }
        if flags.steps() && flags.once() {
            return Err(err(nm, "flags", "STEPS with ONCE (steps run on a sequence of CPUs)".into()));
        }
        if flags.steps() && index >> TestFlags::STEP_SHIFT != 0 {
            return Err(err(
                nm,
                "flags",
                format!(
                    "STEPS on test {index}: the step number shares the argument, so only tests 0..=65535 take steps"
                ),
            ));
        }
        if flags.needs_smp() && !flags.expect_caught() {
            return Err(err(nm, "flags", "NEEDS_SMP without EXPECT_CAUGHT (only a planted bug is latent)".into()));
        }
        if flags.caught_as() != 0 && !flags.expect_caught() {
            return Err(err(nm, "flags", "CAUGHT_* without EXPECT_CAUGHT (only a planted bug is caught)".into()));
        }
        let size = u32f(l.size_f);
        if size < width {
            return Err(err(nm, "size", format!("{size} is smaller than the width {width}")));
        }
        let align = u32f(l.align);
        if flags.dynamic() && !(align.is_power_of_two()) {
            return Err(err(nm, "align", format!("{align} is not a power of two")));
        }
        let fn_addr = ptr(l.func);
        if fn_addr == 0 || obj.section_at(fn_addr).is_none() {
            return Err(err(nm, "fn", format!("pointer {fn_addr:#x} is outside the loaded image")));
        }
        let target = ptr(l.target);
        if target == 0 {
            return Err(err(nm, "target", "NULL".into()));
        }
        if flags.dynamic() {
            let slot_ok =
                obj.section_at(target).map(|s| target - s.addr + l.ptr as u64 <= s.data.len() as u64).unwrap_or(false);
            if !slot_ok {
                return Err(err(
                    nm,
                    "target",
                    format!("DYNAMIC slot {target:#x} is not a pointer-sized place in the loaded image"),
                ));
            }
        }
        let bug_ptr = ptr(l.bug);
        let bug = if bug_ptr == 0 {
            None
        } else {
            Some(obj.read_cstr(bug_ptr, MAX_STRING).ok_or_else(|| {
                err(
                    nm.clone(),
                    "bug",
                    format!("pointer {bug_ptr:#x} is outside the loaded image (or the string has no NUL)"),
                )
            })?)
        };
        tests.push(TestDescriptor {
            index,
            name,
            fn_addr,
            target,
            size,
            align,
            width,
            op,
            flags,
            ret,
            operand: rd(d, 0, 8, little),
            init: rd(d, 8, 8, little),
            expect_ret: rd(d, 16, 8, little),
            bug,
        });
    }
    Ok((abi, tests))
}
