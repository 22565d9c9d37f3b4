//! s390x (arch/s390/kernel/module.c).  Every field goes through the
//! loader's range check (`apply_rela_bits`: misaligned DBL values and values
//! outside the field are refused, "relocation error for symbol").  GOT slots
//! (one per symbol) and PLT entries are built at the end of the module's
//! core; PLT32DBL goes directly to the target when larl/brasl reach it and
//! through the PLT otherwise.  Big-endian.

use super::{lookup, sx, Arch, Cx, Fault, Input, Reach, ReachBase, SymbolOrigin, TableUse};
use crate::elf::{Machine, Rela};

pub const R_390_NONE: u32 = 0;
pub const R_390_8: u32 = 1;
pub const R_390_12: u32 = 2;
pub const R_390_16: u32 = 3;
pub const R_390_32: u32 = 4;
pub const R_390_PC32: u32 = 5;
pub const R_390_GOT12: u32 = 6;
pub const R_390_GOT32: u32 = 7;
pub const R_390_PLT32: u32 = 8;
pub const R_390_GOTOFF32: u32 = 13;
pub const R_390_GOTPC: u32 = 14;
pub const R_390_GOT16: u32 = 15;
pub const R_390_PC16: u32 = 16;
pub const R_390_PC16DBL: u32 = 17;
pub const R_390_PLT16DBL: u32 = 18;
pub const R_390_PC32DBL: u32 = 19;
pub const R_390_PLT32DBL: u32 = 20;
pub const R_390_GOTPCDBL: u32 = 21;
pub const R_390_64: u32 = 22;
pub const R_390_PC64: u32 = 23;
pub const R_390_GOT64: u32 = 24;
pub const R_390_PLT64: u32 = 25;
pub const R_390_GOTENT: u32 = 26;
pub const R_390_GOTOFF16: u32 = 27;
pub const R_390_GOTOFF64: u32 = 28;
pub const R_390_GOTPLT12: u32 = 29;
pub const R_390_GOTPLT16: u32 = 30;
pub const R_390_GOTPLT32: u32 = 31;
pub const R_390_GOTPLT64: u32 = 32;
pub const R_390_GOTPLTENT: u32 = 33;
pub const R_390_PLTOFF16: u32 = 34;
pub const R_390_PLTOFF32: u32 = 35;
pub const R_390_PLTOFF64: u32 = 36;
pub const R_390_20: u32 = 57;
pub const R_390_GOT20: u32 = 58;
pub const R_390_GOTPLT20: u32 = 59;

const NAMES: &[(u32, &str)] = &[
    (0, "R_390_NONE"),
    (1, "R_390_8"),
    (2, "R_390_12"),
    (3, "R_390_16"),
    (4, "R_390_32"),
    (5, "R_390_PC32"),
    (6, "R_390_GOT12"),
    (7, "R_390_GOT32"),
    (8, "R_390_PLT32"),
    (9, "R_390_COPY"),
    (10, "R_390_GLOB_DAT"),
    (11, "R_390_JMP_SLOT"),
    (12, "R_390_RELATIVE"),
    (13, "R_390_GOTOFF32"),
    (14, "R_390_GOTPC"),
    (15, "R_390_GOT16"),
    (16, "R_390_PC16"),
    (17, "R_390_PC16DBL"),
    (18, "R_390_PLT16DBL"),
    (19, "R_390_PC32DBL"),
    (20, "R_390_PLT32DBL"),
    (21, "R_390_GOTPCDBL"),
    (22, "R_390_64"),
    (23, "R_390_PC64"),
    (24, "R_390_GOT64"),
    (25, "R_390_PLT64"),
    (26, "R_390_GOTENT"),
    (27, "R_390_GOTOFF16"),
    (28, "R_390_GOTOFF64"),
    (29, "R_390_GOTPLT12"),
    (30, "R_390_GOTPLT16"),
    (31, "R_390_GOTPLT32"),
    (32, "R_390_GOTPLT64"),
    (33, "R_390_GOTPLTENT"),
    (34, "R_390_PLTOFF16"),
    (35, "R_390_PLTOFF32"),
    (36, "R_390_PLTOFF64"),
    (37, "R_390_TLS_LOAD"),
    (38, "R_390_TLS_GDCALL"),
    (39, "R_390_TLS_LDCALL"),
    (40, "R_390_TLS_GD32"),
    (41, "R_390_TLS_GD64"),
    (42, "R_390_TLS_GOTIE12"),
    (43, "R_390_TLS_GOTIE32"),
    (44, "R_390_TLS_GOTIE64"),
    (45, "R_390_TLS_LDM32"),
    (46, "R_390_TLS_LDM64"),
    (47, "R_390_TLS_IE32"),
    (48, "R_390_TLS_IE64"),
    (49, "R_390_TLS_IEENT"),
    (50, "R_390_TLS_LE32"),
    (51, "R_390_TLS_LE64"),
    (52, "R_390_TLS_LDO32"),
    (53, "R_390_TLS_LDO64"),
    (54, "R_390_TLS_DTPMOD"),
    (55, "R_390_TLS_DTPOFF"),
    (56, "R_390_TLS_TPOFF"),
    (57, "R_390_20"),
    (58, "R_390_GOT20"),
    (59, "R_390_GOTPLT20"),
    (60, "R_390_TLS_GOTIE20"),
    (61, "R_390_IRELATIVE"),
    (62, "R_390_PC12DBL"),
    (63, "R_390_PLT12DBL"),
    (64, "R_390_PC24DBL"),
    (65, "R_390_PLT24DBL"),
];

pub(crate) const WEAK_RULE: &str = "s390x modules must define percpu variables weak: larl reach is +-4 GiB";

/// `apply_rela_bits`: check and store `bits` bits of `val` (after `shift`).
fn bits(cx: &mut Cx<'_>, val: u64, signed: bool, nbits: u32, shift: u32, base: ReachBase) -> Result<(), Fault> {
    let reach = Reach::new(base, nbits as u8, signed, shift as u8);
    if shift > 0 && val & ((1u64 << shift) - 1) != 0 {
        return Err(Fault::Bad(format!("value {val:#x} is not a multiple of {}", 1u64 << shift)));
    }
    let v = if signed {
        let s = (val as i64) >> shift;
        if nbits < 64 && (s < -(1i64 << (nbits - 1)) || s > (1i64 << (nbits - 1)) - 1) {
            return Err(Fault::Overflow { value: sx(val), reach });
        }
        s as u64
    } else {
        let u = val >> shift;
        if nbits < 64 && u > (1u64 << nbits) - 1 {
            return Err(Fault::Overflow { value: val as i128, reach });
        }
        u
    };
    match nbits {
        8 => cx.w8(v),
        12 => cx.patch16(0x0fff, v),
        16 => cx.w16(v),
        20 => {
            let old = cx.r32()?;
            cx.w32(((v & 0xfff) << 16) | ((v & 0xff000) >> 4) | (old & 0xf000_00ff))
        }
        32 => cx.w32(v),
        64 => cx.w64(v),
        _ => Err(Fault::Bad(format!("{nbits}-bit field"))),
    }
}

pub(crate) struct S390x;

impl Arch for S390x {
    fn machine(&self) -> Machine {
        Machine::S390x
    }
    fn type_name(&self, r_type: u32) -> Option<&'static str> {
        lookup(NAMES, r_type)
    }
    fn reach(&self, r_type: u32) -> Option<Reach> {
        Some(match r_type {
            R_390_NONE => Reach::none(),
            R_390_8 => Reach::abs(8, false),
            R_390_12 => Reach::abs(12, false),
            R_390_16 => Reach::abs(16, false),
            R_390_20 => Reach::abs(20, true),
            R_390_32 => Reach::abs(32, false),
            R_390_64 => Reach::abs(64, false),
            R_390_PC16 => Reach::pc(16, 0),
            R_390_PC16DBL => Reach::pc(16, 1),
            R_390_PC32 => Reach::pc(32, 0),
            R_390_PC32DBL => Reach::pc(32, 1),
            R_390_PC64 => Reach::pc(64, 0),
            R_390_GOT12 | R_390_GOT16 | R_390_GOT20 | R_390_GOT32 | R_390_GOT64 | R_390_GOTENT | R_390_GOTPLT12
            | R_390_GOTPLT16 | R_390_GOTPLT20 | R_390_GOTPLT32 | R_390_GOTPLT64 | R_390_GOTPLTENT => Reach::got(),
            R_390_PLT16DBL | R_390_PLT32DBL | R_390_PLT32 | R_390_PLT64 => Reach::plt(),
            R_390_PLTOFF16 | R_390_GOTOFF16 => Reach::new(ReachBase::GotOffset, 16, false, 0),
            R_390_PLTOFF32 | R_390_GOTOFF32 => Reach::new(ReachBase::GotOffset, 32, false, 0),
            R_390_PLTOFF64 | R_390_GOTOFF64 => Reach::new(ReachBase::GotOffset, 64, false, 0),
            R_390_GOTPC => Reach::pc(32, 0),
            R_390_GOTPCDBL => Reach::pc(32, 1),
            _ => return None,
        })
    }
    fn percpu_rule(&self, r_type: u32) -> Option<&'static str> {
        match r_type {
            R_390_PC32DBL | R_390_PC32 | R_390_PC16DBL | R_390_PC16 => Some(WEAK_RULE),
            R_390_32 | R_390_20 | R_390_16 | R_390_12 | R_390_8 => {
                Some("s390x: a short absolute reference to percpu data needs a small percpu pointer; modules must use weak percpu (GOT)")
            }
            _ => None,
        }
    }
    fn percpu_rule_for(&self, r_type: u32, symbol: SymbolOrigin) -> Option<String> {
        let pc_relative = matches!(r_type, R_390_PC32DBL | R_390_PC32 | R_390_PC16DBL | R_390_PC16);
        match symbol {
            SymbolOrigin::Imported if pc_relative => Some(
                "the variable is not the module's (the kernel or another module exports it): s390x modules reach \
                 symbols they do not define through the GOT (R_390_GOTENT), which kbuild's -fPIC gives; larl \
                 (pc-relative, +-4 GiB) means the module was built without -fPIC"
                    .into(),
            ),
            SymbolOrigin::OwnWeak if pc_relative => Some(
                "the variable is weak, as s390x module percpu must be, yet reached with larl (+-4 GiB): the module \
                 was built without -fPIC, which kbuild uses for s390x modules so that weak percpu goes through the GOT"
                    .into(),
            ),
            _ => self.percpu_rule(r_type).map(str::to_string),
        }
    }
    fn table_use(&self, r: &Rela) -> TableUse {
        match r.r_type {
            R_390_GOT12 | R_390_GOT16 | R_390_GOT20 | R_390_GOT32 | R_390_GOT64 | R_390_GOTENT | R_390_GOTPLT12
            | R_390_GOTPLT16 | R_390_GOTPLT20 | R_390_GOTPLT32 | R_390_GOTPLT64 | R_390_GOTPLTENT => {
                TableUse::GotPerSymbol
            }
            R_390_PLT16DBL | R_390_PLT32DBL | R_390_PLT32 | R_390_PLT64 | R_390_PLTOFF16 | R_390_PLTOFF32
            | R_390_PLTOFF64 => TableUse::PltPerSymbol,
            _ => TableUse::None,
        }
    }
    fn plt_entry_size(&self) -> u64 {
        20
    }
    fn plt_entry(&self, _at: u64, target: u64) -> Vec<u8> {
        // basr %r1,0 ; lg %r1,10(%r1) ; br %r1 ; (pad) ; .quad target
        let mut e = vec![0x0d, 0x10, 0xe3, 0x10, 0x10, 0x0a, 0x00, 0x04, 0x07, 0xf1, 0x00, 0x00];
        e.extend_from_slice(&target.to_be_bytes());
        e
    }
    fn apply(&self, cx: &mut Cx<'_>, r: &Input) -> Result<(), Fault> {
        use ReachBase::*;
        let p = r.p;
        let a = r.a as u64;
        match r.r_type {
            R_390_NONE => Ok(()),
            R_390_8 => bits(cx, r.sa(), false, 8, 0, Absolute),
            R_390_12 => bits(cx, r.sa(), false, 12, 0, Absolute),
            R_390_16 => bits(cx, r.sa(), false, 16, 0, Absolute),
            R_390_20 => bits(cx, r.sa(), true, 20, 0, Absolute),
            R_390_32 => bits(cx, r.sa(), false, 32, 0, Absolute),
            R_390_64 => bits(cx, r.sa(), false, 64, 0, Absolute),
            R_390_PC16 => bits(cx, r.sa().wrapping_sub(p), true, 16, 0, Pc),
            R_390_PC16DBL => bits(cx, r.sa().wrapping_sub(p), true, 16, 1, Pc),
            R_390_PC32DBL => bits(cx, r.sa().wrapping_sub(p), true, 32, 1, Pc),
            R_390_PC32 => bits(cx, r.sa().wrapping_sub(p), true, 32, 0, Pc),
            R_390_PC64 => bits(cx, r.sa().wrapping_sub(p), true, 64, 0, Pc),
            R_390_GOT12 | R_390_GOT16 | R_390_GOT20 | R_390_GOT32 | R_390_GOT64 | R_390_GOTENT | R_390_GOTPLT12
            | R_390_GOTPLT16 | R_390_GOTPLT20 | R_390_GOTPLT32 | R_390_GOTPLT64 | R_390_GOTPLTENT => {
                let slot = cx.got_slot((r.sym, 0))?;
                let off = slot.wrapping_sub(cx.got_base).wrapping_add(a);
                match r.r_type {
                    R_390_GOT12 | R_390_GOTPLT12 => bits(cx, off, false, 12, 0, GotOffset),
                    R_390_GOT16 | R_390_GOTPLT16 => bits(cx, off, false, 16, 0, GotOffset),
                    R_390_GOT20 | R_390_GOTPLT20 => bits(cx, off, true, 20, 0, GotOffset),
                    R_390_GOT32 | R_390_GOTPLT32 => bits(cx, off, false, 32, 0, GotOffset),
                    R_390_GOT64 | R_390_GOTPLT64 => bits(cx, off, false, 64, 0, GotOffset),
                    _ => bits(cx, slot.wrapping_add(a).wrapping_sub(p), true, 32, 1, Pc),
                }
            }
            R_390_PLT16DBL | R_390_PLT32DBL | R_390_PLT32 | R_390_PLT64 => {
                let entry = cx.plt_entry((r.sym, 0))?;
                let direct = r.s.wrapping_sub(p);
                let near = (r.r_type == R_390_PLT16DBL && direct.wrapping_add(0xffff) < 0x1fffe)
                    || (r.r_type == R_390_PLT32DBL && direct.wrapping_add(0xffff_ffff) < 0x1_ffff_fffe);
                let target = if near { r.s } else { entry };
                let val = target.wrapping_add(a).wrapping_sub(p);
                match r.r_type {
                    R_390_PLT16DBL => bits(cx, val, true, 16, 1, Pc),
                    R_390_PLT32DBL => bits(cx, val, true, 32, 1, Pc),
                    R_390_PLT32 => bits(cx, val, false, 32, 0, Pc),
                    _ => bits(cx, val, false, 64, 0, Pc),
                }
            }
            R_390_PLTOFF16 | R_390_PLTOFF32 | R_390_PLTOFF64 => {
                let entry = cx.plt_entry((r.sym, 0))?;
                let val = entry.wrapping_sub(cx.got_base).wrapping_add(a);
                let n = match r.r_type {
                    R_390_PLTOFF16 => 16,
                    R_390_PLTOFF32 => 32,
                    _ => 64,
                };
                bits(cx, val, false, n, 0, GotOffset)
            }
            R_390_GOTOFF16 | R_390_GOTOFF32 | R_390_GOTOFF64 => {
                let val = r.sa().wrapping_sub(cx.got_base);
                let n = match r.r_type {
                    R_390_GOTOFF16 => 16,
                    R_390_GOTOFF32 => 32,
                    _ => 64,
                };
                bits(cx, val, false, n, 0, GotOffset)
            }
            R_390_GOTPC => bits(cx, cx.got_base.wrapping_add(a).wrapping_sub(p), true, 32, 0, Pc),
            R_390_GOTPCDBL => bits(cx, cx.got_base.wrapping_add(a).wrapping_sub(p), true, 32, 1, Pc),
            t => {
                if lookup(NAMES, t).is_some() {
                    Err(Fault::Unsupported("not handled by the s390 module loader".into()))
                } else {
                    Err(Fault::Unknown)
                }
            }
        }
    }
}
