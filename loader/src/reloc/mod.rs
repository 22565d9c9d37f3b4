//! Per-machine relocation: one module per machine with the same shape
//! (a name table, a reach per type, GOT/PLT needs, and `apply` following
//! that arch's `apply_relocate_add` including its overflow rules), and one
//! lookup point by machine, [`arch_for`].

use std::collections::HashMap;
use std::fmt;

use serde::Serialize;

use crate::elf::{Machine, Rela};

pub mod aarch64;
pub mod alpha;
pub mod riscv;
pub mod s390x;
pub mod sparc;
pub mod x86_64;

/// What a relocated field is measured from.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReachBase {
    /// S + A itself.
    Absolute,
    /// S + A - P.
    Pc,
    /// Page(S + A) - Page(P) (arm64 adrp).
    Page,
    /// S + A - GP (alpha).
    Gp,
    /// The target is reached through a GOT slot the loader builds: any address.
    GotSlot,
    /// The target is reached directly when in range, else through a PLT entry: any address.
    Plt,
    /// An offset into the GOT or between GOT and PLT.
    GotOffset,
    /// The low bits of a pair whose high part carries the reach.
    LowBits,
    /// No field is written.
    None,
}

/// The reach of a relocated field: `bits` wide (after dropping `shift`
/// always-zero low bits), signed or not, measured from `base`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Reach {
    pub base: ReachBase,
    pub bits: u8,
    pub signed: bool,
    pub shift: u8,
}

impl Reach {
    pub const fn new(base: ReachBase, bits: u8, signed: bool, shift: u8) -> Self {
        Reach { base, bits, signed, shift }
    }
    pub const fn abs(bits: u8, signed: bool) -> Self {
        Reach::new(ReachBase::Absolute, bits, signed, 0)
    }
    pub const fn pc(bits: u8, shift: u8) -> Self {
        Reach::new(ReachBase::Pc, bits, true, shift)
    }
    pub const fn none() -> Self {
        Reach::new(ReachBase::None, 0, false, 0)
    }
    pub const fn low() -> Self {
        Reach::new(ReachBase::LowBits, 0, false, 0)
    }
    pub const fn got() -> Self {
        Reach::new(ReachBase::GotSlot, 64, false, 0)
    }
    pub const fn plt() -> Self {
        Reach::new(ReachBase::Plt, 64, false, 0)
    }

    /// Whether the reach is limited (a far target can overflow it).
    pub fn is_limited(&self) -> bool {
        match self.base {
            ReachBase::GotSlot | ReachBase::Plt | ReachBase::LowBits | ReachBase::None => false,
            _ => self.bits < 64,
        }
    }

    /// The smallest and largest value (before the shift is dropped) the field holds.
    pub fn range(&self) -> (i128, i128) {
        let b = self.bits.min(64) as u32 + self.shift as u32;
        if !self.is_limited() {
            return (i64::MIN as i128, u64::MAX as i128);
        }
        if self.signed {
            (-(1i128 << (b - 1)), (1i128 << (b - 1)) - 1)
        } else {
            (0, (1i128 << b) - 1)
        }
    }

    /// Does `v` fit (ignoring alignment of the dropped low bits)?
    pub fn fits(&self, v: i128) -> bool {
        let (lo, hi) = self.range();
        v >= lo && v <= hi
    }

    /// "±2 GiB", "0..4 GiB".
    pub fn span_text(&self) -> String {
        let b = self.bits as u32 + self.shift as u32;
        if self.signed {
            format!("±{}", human_bytes(1u128 << (b - 1)))
        } else {
            format!("0..{}", human_bytes(1u128 << b))
        }
    }
}

fn human_bytes(v: u128) -> String {
    const UNITS: [(&str, u32); 6] = [("EiB", 60), ("PiB", 50), ("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
    for (name, shift) in UNITS {
        if v >= 1u128 << shift && v % (1u128 << shift) == 0 {
            return format!("{} {}", v >> shift, name);
        }
    }
    format!("{v} B")
}

impl fmt::Display for Reach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.base {
            ReachBase::None => f.write_str("no field"),
            ReachBase::LowBits => f.write_str("low bits of a pair (no reach of its own)"),
            ReachBase::GotSlot => f.write_str("any address (through a GOT slot)"),
            ReachBase::Plt => f.write_str("any address (directly or through a PLT entry)"),
            _ if !self.is_limited() => {
                let what = match self.base {
                    ReachBase::Absolute => "absolute",
                    ReachBase::Pc => "pc-relative",
                    _ => "offset",
                };
                write!(f, "{what} {}-bit (any address)", self.bits)
            }
            ReachBase::Absolute if self.signed => write!(f, "absolute sign-extended {}-bit ({} around 0)", self.bits, self.span_text()),
            ReachBase::Absolute => write!(f, "absolute {}-bit ({})", self.bits, self.span_text()),
            ReachBase::Pc => write!(f, "pc-relative {}", self.span_text()),
            ReachBase::Page => write!(f, "page-relative {} (adrp)", self.span_text()),
            ReachBase::Gp => write!(f, "gp-relative {}", self.span_text()),
            ReachBase::GotOffset => write!(f, "GOT offset {}", self.span_text()),
        }
    }
}

/// What the loader does when a value does not fit its field.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OverflowPolicy {
    /// Refuse exactly where the arch's module loader refuses; where it masks
    /// silently (x86_64 PC32, sparc, riscv branches) truncate like it and
    /// record a [`Truncation`].
    #[default]
    Kernel,
    /// Refuse every value that does not fit its field's reach.
    Strict,
}

/// A value the arch's module loader would silently truncate.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Truncation {
    pub section: String,
    pub offset: u64,
    pub r_type: u32,
    pub type_name: Option<&'static str>,
    pub symbol: String,
    pub percpu: bool,
    pub value: i128,
    pub reach: Reach,
}

/// How a relocation uses a loader-built table.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum TableUse {
    None,
    /// A GOT slot keyed by (symbol, addend) holding S + A (alpha LITERAL, riscv GOT_HI20).
    GotPerAddend,
    /// A GOT slot keyed by symbol holding S (s390x).
    GotPerSymbol,
    /// A PLT entry keyed by (symbol, addend) jumping to S + A (arm64, riscv).
    PltPerAddend,
    /// A PLT entry keyed by symbol jumping to S (s390x).
    PltPerSymbol,
}

/// Which kind of "high part" a riscv PCREL_LO12 pairs with.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Anchor {
    Direct,
    Got,
}

/// One relocation with its resolved symbol.
#[derive(Clone, Debug)]
pub(crate) struct Input {
    pub r_type: u32,
    pub s: u64,
    pub a: i64,
    pub p: u64,
    pub sym: usize,
    pub sym_undefined: bool,
    pub sym_other: u8,
}

impl Input {
    pub fn sa(&self) -> u64 {
        self.s.wrapping_add(self.a as u64)
    }
}

/// Why one relocation could not be applied.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Fault {
    Unknown,
    Unsupported(String),
    OutOfSection { width: usize },
    Overflow { value: i128, reach: Reach },
    Bad(String),
}

/// What an arch's `apply` may touch.
pub(crate) struct Cx<'a> {
    pub data: &'a mut [u8],
    pub off: usize,
    pub little: bool,
    pub policy: OverflowPolicy,
    /// GOT slot address by key (symbol, addend-or-0).
    pub got: &'a HashMap<(usize, i64), u64>,
    pub got_base: u64,
    /// PLT entry address by key.
    pub plt: &'a HashMap<(usize, i64), u64>,
    pub gp: u64,
    /// riscv: high-part relocations of this section by their P, with the
    /// value their offset is measured to.
    pub anchors: &'a HashMap<u64, u64>,
    /// A silently truncated value, reported by the driver with context.
    pub truncated: Option<(i128, Reach)>,
}

impl Cx<'_> {
    fn slice(&mut self, delta: usize, width: usize) -> Result<&mut [u8], Fault> {
        let start = self.off.checked_add(delta).ok_or(Fault::OutOfSection { width })?;
        let end = start.checked_add(width).ok_or(Fault::OutOfSection { width })?;
        self.data.get_mut(start..end).ok_or(Fault::OutOfSection { width: delta + width })
    }
    pub fn read(&mut self, delta: usize, width: usize) -> Result<u64, Fault> {
        let little = self.little;
        let s = self.slice(delta, width)?;
        let mut v = 0u64;
        for i in 0..width {
            let b = if little { s[width - 1 - i] } else { s[i] };
            v = (v << 8) | b as u64;
        }
        Ok(v)
    }
    pub fn write(&mut self, delta: usize, width: usize, v: u64) -> Result<(), Fault> {
        let little = self.little;
        let s = self.slice(delta, width)?;
        for i in 0..width {
            let b = (v >> (8 * i)) as u8;
            if little {
                s[i] = b;
            } else {
                s[width - 1 - i] = b;
            }
        }
        Ok(())
    }
    pub fn r16(&mut self) -> Result<u64, Fault> {
        self.read(0, 2)
    }
    pub fn r32(&mut self) -> Result<u64, Fault> {
        self.read(0, 4)
    }
    pub fn w8(&mut self, v: u64) -> Result<(), Fault> {
        self.write(0, 1, v)
    }
    pub fn w16(&mut self, v: u64) -> Result<(), Fault> {
        self.write(0, 2, v)
    }
    pub fn w32(&mut self, v: u64) -> Result<(), Fault> {
        self.write(0, 4, v)
    }
    pub fn w64(&mut self, v: u64) -> Result<(), Fault> {
        self.write(0, 8, v)
    }
    /// Replace the bits of `mask` in the 32-bit word at the place.
    pub fn patch32(&mut self, mask: u64, bits: u64) -> Result<(), Fault> {
        let w = self.r32()?;
        self.w32((w & !mask) | (bits & mask))
    }
    pub fn patch16(&mut self, mask: u64, bits: u64) -> Result<(), Fault> {
        let w = self.r16()?;
        self.w16((w & !mask) | (bits & mask))
    }

    /// Check `value` against `reach`.  `kernel_checks` says whether the
    /// arch's module loader refuses this overflow; if it does not, the value
    /// is truncated (and recorded) unless the policy is strict.
    pub fn check(&mut self, value: i128, reach: Reach, kernel_checks: bool) -> Result<(), Fault> {
        if reach.fits(value) {
            return Ok(());
        }
        self.fail(value, reach, kernel_checks)
    }

    /// `value` does not fit `reach`: refuse or truncate (see [`Cx::check`]).
    pub fn fail(&mut self, value: i128, reach: Reach, kernel_checks: bool) -> Result<(), Fault> {
        if kernel_checks || self.policy == OverflowPolicy::Strict {
            return Err(Fault::Overflow { value, reach });
        }
        self.truncated = Some((value, reach));
        Ok(())
    }

    pub fn got_slot(&self, key: (usize, i64)) -> Result<u64, Fault> {
        self.got.get(&key).copied().ok_or_else(|| Fault::Bad("no GOT slot was reserved".into()))
    }
    pub fn plt_entry(&self, key: (usize, i64)) -> Result<u64, Fault> {
        self.plt.get(&key).copied().ok_or_else(|| Fault::Bad("no PLT entry was reserved".into()))
    }
}

/// Signed view of a 64-bit two's complement value.
pub(crate) fn sx(v: u64) -> i128 {
    v as i64 as i128
}

/// The shape every machine module has.
pub(crate) trait Arch: Sync {
    fn machine(&self) -> Machine;
    /// The ELF name of a relocation type, when known (even if unsupported).
    fn type_name(&self, r_type: u32) -> Option<&'static str>;
    /// The reach of the field a supported type writes.
    fn reach(&self, r_type: u32) -> Option<Reach>;
    /// The percpu rule a type breaks when it cannot reach a percpu symbol.
    fn percpu_rule(&self, r_type: u32) -> Option<&'static str>;
    /// Whether the type uses a GOT slot or PLT entry the loader builds.
    fn table_use(&self, _r: &Rela) -> TableUse {
        TableUse::None
    }
    fn got_entry_size(&self) -> u64 {
        8
    }
    fn plt_entry_size(&self) -> u64 {
        0
    }
    /// The bytes of a PLT entry at `at` jumping to `target`.
    fn plt_entry(&self, _at: u64, _target: u64) -> Vec<u8> {
        Vec::new()
    }
    /// riscv: whether the type is a high part a PCREL_LO12 can pair with.
    fn anchor(&self, _r_type: u32) -> Option<Anchor> {
        None
    }
    /// Whether the arch addresses data relative to a GP the loader sets (alpha).
    fn uses_gp(&self) -> bool {
        false
    }
    fn apply(&self, cx: &mut Cx<'_>, r: &Input) -> Result<(), Fault>;
}

/// The one lookup point: the relocation table of a machine.
pub(crate) fn arch_for(m: Machine) -> &'static dyn Arch {
    match m {
        Machine::X86_64 => &x86_64::X86_64,
        Machine::Aarch64 => &aarch64::Aarch64,
        Machine::Sparc => &sparc::Sparc,
        Machine::Alpha => &alpha::Alpha,
        Machine::S390x => &s390x::S390x,
        Machine::Riscv64 => &riscv::Riscv64,
    }
}

/// The ELF name of relocation `r_type` on `machine`, if known.
pub fn type_name(machine: Machine, r_type: u32) -> Option<&'static str> {
    arch_for(machine).type_name(r_type)
}

/// The reach of relocation `r_type` on `machine`, if the loader supports it.
pub fn reach(machine: Machine, r_type: u32) -> Option<Reach> {
    arch_for(machine).reach(r_type)
}

/// Look a name up in a sorted-or-not (number, name) table.
pub(crate) fn lookup(table: &[(u32, &'static str)], r_type: u32) -> Option<&'static str> {
    table.iter().find(|(n, _)| *n == r_type).map(|(_, s)| *s)
}
