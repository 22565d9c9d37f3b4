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
            ReachBase::Absolute if self.signed => {
                write!(f, "absolute sign-extended {}-bit ({} around 0)", self.bits, self.span_text())
            }
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

/// Who defines the symbol a relocation names, for the rule it breaks.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum SymbolOrigin {
    /// Defined by the object, with local or global binding.
    Own,
    /// Defined by the object, weak (the weak-percpu scheme).
    OwnWeak,
    /// Undefined here: the kernel's or another module's export.
    Imported,
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
    /// The rule for one reference, knowing whether the module defines the
    /// symbol (and weak) or imports it: a variable the kernel exports is
    /// not fixed by defining anything weak.  Default: [`Arch::percpu_rule`].
    fn percpu_rule_for(&self, r_type: u32, symbol: SymbolOrigin) -> Option<String> {
        let _ = symbol;
        self.percpu_rule(r_type).map(str::to_string)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Apply one relocation to `bytes` at offset 0 (place `p`).
    fn run(
        m: Machine,
        r_type: u32,
        bytes: &[u8],
        s: u64,
        a: i64,
        p: u64,
        policy: OverflowPolicy,
    ) -> Result<Vec<u8>, Fault> {
        let mut data = bytes.to_vec();
        let empty = HashMap::new();
        let mut cx = Cx {
            data: &mut data,
            off: 0,
            little: !matches!(m, Machine::Sparc | Machine::S390x),
            policy,
            got: &empty,
            got_base: 0,
            plt: &empty,
            gp: 0x1000_0000,
            anchors: &HashMap::new(),
            truncated: None,
        };
        let input = Input { r_type, s, a, p, sym: 1, sym_undefined: false, sym_other: 0 };
        arch_for(m).apply(&mut cx, &input)?;
        Ok(data)
    }

    fn le32(b: &[u8]) -> u32 {
        u32::from_le_bytes(b[..4].try_into().unwrap())
    }
    fn be32(b: &[u8]) -> u32 {
        u32::from_be_bytes(b[..4].try_into().unwrap())
    }
    const K: OverflowPolicy = OverflowPolicy::Kernel;

    #[test]
    fn reach_ranges_and_text() {
        assert_eq!(Reach::pc(32, 1).span_text(), "±4 GiB");
        assert_eq!(Reach::abs(32, false).to_string(), "absolute 32-bit (0..4 GiB)");
        assert_eq!(Reach::new(ReachBase::Gp, 16, true, 0).to_string(), "gp-relative ±32 KiB");
        assert_eq!(Reach::pc(26, 2).to_string(), "pc-relative ±128 MiB");
        assert!(Reach::pc(32, 0).fits(-(1 << 31)) && !Reach::pc(32, 0).fits(1 << 31));
        assert!(Reach::got().fits(i64::MIN as i128) && !Reach::got().is_limited());
        assert_eq!(Reach::got().to_string(), "any address (through a GOT slot)");
    }

    #[test]
    fn aarch64_movw_and_ldst128() {
        use aarch64::*;
        let movz = 0xd280_0000u32.to_le_bytes();
        let v = 0x1234_5678_9abc_def0u64;
        for (t, imm) in [
            (R_AARCH64_MOVW_UABS_G0_NC, 0xdef0),
            (R_AARCH64_MOVW_UABS_G1_NC, 0x9abc),
            (R_AARCH64_MOVW_UABS_G2_NC, 0x5678),
            (R_AARCH64_MOVW_UABS_G3, 0x1234),
        ] {
            let out = run(Machine::Aarch64, t, &movz, v, 0, 0, K).unwrap();
            assert_eq!(le32(&out), 0xd280_0000 | (imm << 5), "type {t}");
        }
        assert!(matches!(
            run(Machine::Aarch64, R_AARCH64_MOVW_UABS_G0, &movz, 0x1_0000, 0, 0, K),
            Err(Fault::Overflow { .. })
        ));
        // Signed: a negative value turns the instruction into MOVN of the inverted immediate.
        let out = run(Machine::Aarch64, R_AARCH64_MOVW_SABS_G0, &movz, (-2i64) as u64, 0, 0, K).unwrap();
        assert_eq!(le32(&out), 0x9280_0000 | (1 << 5));
        let ldr_q = 0x3dc0_0000u32.to_le_bytes();
        let out = run(Machine::Aarch64, R_AARCH64_LDST128_ABS_LO12_NC, &ldr_q, 0xffff_0000_0000_0ab0, 0, 0, K).unwrap();
        assert_eq!((le32(&out) >> 10) & 0xfff, 0xab);
        let b = 0x1400_0000u32.to_le_bytes();
        let out = run(Machine::Aarch64, R_AARCH64_JUMP26, &b, 0x1000, 0, 0x2000, K).unwrap();
        assert_eq!(le32(&out), 0x1400_0000 | ((-0x1000i32 >> 2) as u32 & 0x3ff_ffff));
        let e = run(Machine::Aarch64, R_AARCH64_PREL32, &[0; 4], 0xffff_0001_0000_0000, 0, 0xffff_0000_0000_0000, K)
            .unwrap_err();
        assert!(matches!(e, Fault::Overflow { value, .. } if value == 1 << 32));
    }

    #[test]
    fn riscv_branch_encodings_match_the_assembler() {
        use riscv::*;
        // beq zero,zero,-4
        let out = run(Machine::Riscv64, R_RISCV_BRANCH, &0x63u32.to_le_bytes(), 0x1000 - 4, 0, 0x1000, K).unwrap();
        assert_eq!(le32(&out), 0xfe00_0ee3);
        // jal zero,+2048
        let out = run(Machine::Riscv64, R_RISCV_JAL, &0x6fu32.to_le_bytes(), 0x1800, 0, 0x1000, K).unwrap();
        assert_eq!(le32(&out), 0x0010_006f);
        // c.j -2
        let out = run(Machine::Riscv64, R_RISCV_RVC_JUMP, &0xa001u16.to_le_bytes(), 0xffe, 0, 0x1000, K).unwrap();
        assert_eq!(u16::from_le_bytes([out[0], out[1]]), 0xbffd);
        // A branch out of reach is truncated like the kernel (recorded), refused when strict.
        assert!(run(Machine::Riscv64, R_RISCV_BRANCH, &[0; 4], 0x10_0000, 0, 0, K).is_ok());
        assert!(matches!(
            run(Machine::Riscv64, R_RISCV_BRANCH, &[0; 4], 0x10_0000, 0, 0, OverflowPolicy::Strict),
            Err(Fault::Overflow { .. })
        ));
        // lui+addi of 0x12345fff: hi 0x12346000, lo -1.
        let out = run(Machine::Riscv64, R_RISCV_HI20, &0x37u32.to_le_bytes(), 0x1234_5fff, 0, 0, K).unwrap();
        assert_eq!(le32(&out), 0x1234_6037);
        let out = run(Machine::Riscv64, R_RISCV_LO12_I, &0x13u32.to_le_bytes(), 0x1234_5fff, 0, 0, K).unwrap();
        assert_eq!(le32(&out) >> 20, 0xfff);
        let out = run(Machine::Riscv64, R_RISCV_ADD32, &5u32.to_le_bytes(), 7, 0, 0, K).unwrap();
        assert_eq!(le32(&out), 12);
        let out = run(Machine::Riscv64, R_RISCV_SUB6, &[0xc5], 7, 0, 0, K).unwrap();
        assert_eq!(out[0], 0xc0 | ((5u8.wrapping_sub(7)) & 0x3f));
        assert!(matches!(run(Machine::Riscv64, R_RISCV_ALIGN, &[0; 4], 0, 0, 0, K), Err(Fault::Unsupported(_))));
        assert!(run(Machine::Riscv64, R_RISCV_RELAX, &[0; 4], 0, 0, 0, K).is_ok());
    }

    #[test]
    fn s390x_fields() {
        use s390x::*;
        let out =
            run(Machine::S390x, R_390_20, &[0xe3, 0x00, 0x00, 0x00, 0x00, 0x04], (-1i64) as u64, 0, 0, K).unwrap();
        // B2 nibble kept, DL = 0xfff, DH = 0xff, the opcode byte kept.
        assert_eq!(be32(&out), 0xefff_ff00);
        assert!(matches!(run(Machine::S390x, R_390_20, &[0; 4], 0x8_0000, 0, 0, K), Err(Fault::Overflow { .. })));
        let out = run(Machine::S390x, R_390_12, &[0xa0, 0x00], 0x123, 0, 0, K).unwrap();
        assert_eq!(out, [0xa1, 0x23]);
        assert!(matches!(run(Machine::S390x, R_390_PC32DBL, &[0; 4], 0x1001, 0, 0, K), Err(Fault::Bad(_))));
        assert!(matches!(
            run(Machine::S390x, R_390_PC32DBL, &[0; 4], 0x2_0000_0000, 0, 0, K),
            Err(Fault::Overflow { .. })
        ));
        let out = run(Machine::S390x, R_390_PC32DBL, &[0; 4], 0x1_0000_0000 - 2, 0, 0, K).unwrap();
        assert_eq!(be32(&out), 0x7fff_ffff);
    }

    #[test]
    fn sparc_alpha_x86_checks() {
        assert!(matches!(
            run(Machine::Sparc, sparc::R_SPARC_13, &[0; 4], 0x1000, 0, 0, K),
            Err(Fault::Overflow { .. })
        ));
        let out = run(Machine::Sparc, sparc::R_SPARC_13, &[0x82, 0x10, 0x20, 0x00], (-1i64) as u64, 0, 0, K).unwrap();
        assert_eq!(be32(&out), 0x8210_3fff);
        // WDISP22 masks like the kernel; its truncation is recorded only.
        assert!(run(Machine::Sparc, sparc::R_SPARC_WDISP22, &[0x10, 0x80, 0, 0], 0x4000_0000, 0, 0, K).is_ok());
        let out = run(Machine::Alpha, alpha::R_ALPHA_GPREL16, &[0; 2], 0x1000_0000 - 8, 0, 0, K).unwrap();
        assert_eq!(out, [0xf8, 0xff]);
        assert!(matches!(
            run(Machine::Alpha, alpha::R_ALPHA_GPREL16, &[0; 2], 0x1001_0000, 0, 0, K),
            Err(Fault::Overflow { .. })
        ));
        assert!(matches!(
            run(Machine::Alpha, alpha::R_ALPHA_BRADDR, &[0; 4], 0x1002, 0, 0x1000, K),
            Err(Fault::Bad(_))
        ));
        assert!(matches!(
            run(Machine::Alpha, alpha::R_ALPHA_BRADDR, &[0; 4], 0x100_0000, 0, 0, K),
            Err(Fault::Overflow { .. })
        ));
        let out = run(Machine::Alpha, alpha::R_ALPHA_BRADDR, &0xc3e0_0000u32.to_le_bytes(), 0x1000, 0, 0x1000 - 8, K)
            .unwrap();
        assert_eq!(le32(&out), 0xc3e0_0001);
        assert!(matches!(
            run(Machine::X86_64, x86_64::R_X86_64_32, &[0; 4], 0x1_0000_0000, 0, 0, K),
            Err(Fault::Overflow { .. })
        ));
        let out = run(Machine::X86_64, x86_64::R_X86_64_PC64, &[0; 8], 0x10, 0, 0x20, K).unwrap();
        assert_eq!(u64::from_le_bytes(out[..8].try_into().unwrap()), (-0x10i64) as u64);
        assert!(matches!(run(Machine::X86_64, 200, &[0; 8], 0, 0, 0, K), Err(Fault::Unknown)));
        assert!(matches!(run(Machine::X86_64, 9, &[0; 8], 0, 0, 0, K), Err(Fault::Unsupported(_))));
        assert!(matches!(run(Machine::X86_64, 1, &[0; 4], 0, 0, 0, K), Err(Fault::OutOfSection { .. })));
    }
}
