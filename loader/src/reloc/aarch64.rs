//! aarch64 (arch/arm64/kernel/module.c).  Data relocations check ABS32/ABS16
//! as unsigned and PREL32/PREL16 as signed; instruction immediates overflow
//! when the bits above the field are not a sign extension; `_NC` variants,
//! ABS64, PREL64 and MOVW G3 are not checked.  CALL26/JUMP26 out of the
//! ±128 MiB branch range go through a PLT entry (CONFIG_ARM64_MODULE_PLTS).
//! Instructions are little-endian even in a big-endian object.

use super::{lookup, sx, Arch, Cx, Fault, Input, Reach, ReachBase, TableUse};
use crate::elf::{Machine, Rela};

pub const R_AARCH64_NONE: u32 = 256;
pub const R_AARCH64_ABS64: u32 = 257;
pub const R_AARCH64_ABS32: u32 = 258;
pub const R_AARCH64_ABS16: u32 = 259;
pub const R_AARCH64_PREL64: u32 = 260;
pub const R_AARCH64_PREL32: u32 = 261;
pub const R_AARCH64_PREL16: u32 = 262;
pub const R_AARCH64_MOVW_UABS_G0: u32 = 263;
pub const R_AARCH64_MOVW_UABS_G0_NC: u32 = 264;
pub const R_AARCH64_MOVW_UABS_G1: u32 = 265;
pub const R_AARCH64_MOVW_UABS_G1_NC: u32 = 266;
pub const R_AARCH64_MOVW_UABS_G2: u32 = 267;
pub const R_AARCH64_MOVW_UABS_G2_NC: u32 = 268;
pub const R_AARCH64_MOVW_UABS_G3: u32 = 269;
pub const R_AARCH64_MOVW_SABS_G0: u32 = 270;
pub const R_AARCH64_MOVW_SABS_G1: u32 = 271;
pub const R_AARCH64_MOVW_SABS_G2: u32 = 272;
pub const R_AARCH64_LD_PREL_LO19: u32 = 273;
pub const R_AARCH64_ADR_PREL_LO21: u32 = 274;
pub const R_AARCH64_ADR_PREL_PG_HI21: u32 = 275;
pub const R_AARCH64_ADR_PREL_PG_HI21_NC: u32 = 276;
pub const R_AARCH64_ADD_ABS_LO12_NC: u32 = 277;
pub const R_AARCH64_LDST8_ABS_LO12_NC: u32 = 278;
pub const R_AARCH64_TSTBR14: u32 = 279;
pub const R_AARCH64_CONDBR19: u32 = 280;
pub const R_AARCH64_JUMP26: u32 = 282;
pub const R_AARCH64_CALL26: u32 = 283;
pub const R_AARCH64_LDST16_ABS_LO12_NC: u32 = 284;
pub const R_AARCH64_LDST32_ABS_LO12_NC: u32 = 285;
pub const R_AARCH64_LDST64_ABS_LO12_NC: u32 = 286;
pub const R_AARCH64_MOVW_PREL_G0: u32 = 287;
pub const R_AARCH64_MOVW_PREL_G0_NC: u32 = 288;
pub const R_AARCH64_MOVW_PREL_G1: u32 = 289;
pub const R_AARCH64_MOVW_PREL_G1_NC: u32 = 290;
pub const R_AARCH64_MOVW_PREL_G2: u32 = 291;
pub const R_AARCH64_MOVW_PREL_G2_NC: u32 = 292;
pub const R_AARCH64_MOVW_PREL_G3: u32 = 293;
pub const R_AARCH64_LDST128_ABS_LO12_NC: u32 = 299;

const NAMES: &[(u32, &str)] = &[
    (0, "R_ARM_NONE"),
    (256, "R_AARCH64_NONE"),
    (257, "R_AARCH64_ABS64"),
    (258, "R_AARCH64_ABS32"),
    (259, "R_AARCH64_ABS16"),
    (260, "R_AARCH64_PREL64"),
    (261, "R_AARCH64_PREL32"),
    (262, "R_AARCH64_PREL16"),
    (263, "R_AARCH64_MOVW_UABS_G0"),
    (264, "R_AARCH64_MOVW_UABS_G0_NC"),
    (265, "R_AARCH64_MOVW_UABS_G1"),
    (266, "R_AARCH64_MOVW_UABS_G1_NC"),
    (267, "R_AARCH64_MOVW_UABS_G2"),
    (268, "R_AARCH64_MOVW_UABS_G2_NC"),
    (269, "R_AARCH64_MOVW_UABS_G3"),
    (270, "R_AARCH64_MOVW_SABS_G0"),
    (271, "R_AARCH64_MOVW_SABS_G1"),
    (272, "R_AARCH64_MOVW_SABS_G2"),
    (273, "R_AARCH64_LD_PREL_LO19"),
    (274, "R_AARCH64_ADR_PREL_LO21"),
    (275, "R_AARCH64_ADR_PREL_PG_HI21"),
    (276, "R_AARCH64_ADR_PREL_PG_HI21_NC"),
    (277, "R_AARCH64_ADD_ABS_LO12_NC"),
    (278, "R_AARCH64_LDST8_ABS_LO12_NC"),
    (279, "R_AARCH64_TSTBR14"),
    (280, "R_AARCH64_CONDBR19"),
    (282, "R_AARCH64_JUMP26"),
    (283, "R_AARCH64_CALL26"),
    (284, "R_AARCH64_LDST16_ABS_LO12_NC"),
    (285, "R_AARCH64_LDST32_ABS_LO12_NC"),
    (286, "R_AARCH64_LDST64_ABS_LO12_NC"),
    (287, "R_AARCH64_MOVW_PREL_G0"),
    (288, "R_AARCH64_MOVW_PREL_G0_NC"),
    (289, "R_AARCH64_MOVW_PREL_G1"),
    (290, "R_AARCH64_MOVW_PREL_G1_NC"),
    (291, "R_AARCH64_MOVW_PREL_G2"),
    (292, "R_AARCH64_MOVW_PREL_G2_NC"),
    (293, "R_AARCH64_MOVW_PREL_G3"),
    (299, "R_AARCH64_LDST128_ABS_LO12_NC"),
    (300, "R_AARCH64_MOVW_GOTOFF_G0"),
    (309, "R_AARCH64_GOT_LD_PREL19"),
    (311, "R_AARCH64_ADR_GOT_PAGE"),
    (312, "R_AARCH64_LD64_GOT_LO12_NC"),
    (1024, "R_AARCH64_COPY"),
    (1025, "R_AARCH64_GLOB_DAT"),
    (1026, "R_AARCH64_JUMP_SLOT"),
    (1027, "R_AARCH64_RELATIVE"),
    (1028, "R_AARCH64_TLS_DTPMOD64"),
    (1029, "R_AARCH64_TLS_DTPREL64"),
    (1030, "R_AARCH64_TLS_TPREL64"),
    (1031, "R_AARCH64_TLSDESC"),
    (1032, "R_AARCH64_IRELATIVE"),
];

#[derive(Copy, Clone, PartialEq, Eq)]
enum Op {
    Abs,
    Prel,
    Page,
}

fn do_reloc(op: Op, p: u64, v: u64) -> u64 {
    match op {
        Op::Abs => v,
        Op::Prel => v.wrapping_sub(p),
        Op::Page => (v & !0xfff).wrapping_sub(p & !0xfff),
    }
}

#[derive(Copy, Clone, PartialEq, Eq)]
enum Imm {
    I26,
    I19,
    I16,
    I14,
    I12,
    Adr,
}

fn encode(kind: Imm, insn: u32, imm: u64) -> u32 {
    let imm = imm as u32;
    match kind {
        Imm::I26 => (insn & !0x03ff_ffff) | (imm & 0x03ff_ffff),
        Imm::I19 => (insn & !(0x7ffff << 5)) | ((imm & 0x7ffff) << 5),
        Imm::I16 => (insn & !(0xffff << 5)) | ((imm & 0xffff) << 5),
        Imm::I14 => (insn & !(0x3fff << 5)) | ((imm & 0x3fff) << 5),
        Imm::I12 => (insn & !(0xfff << 10)) | ((imm & 0xfff) << 10),
        Imm::Adr => {
            let lo = imm & 3;
            let hi = (imm >> 2) & 0x7ffff;
            (insn & !((3 << 29) | (0x7ffff << 5))) | (lo << 29) | (hi << 5)
        }
    }
}

fn insn_read(cx: &mut Cx<'_>) -> Result<u32, Fault> {
    let saved = cx.little;
    cx.little = true;
    let r = cx.r32();
    cx.little = saved;
    r.map(|v| v as u32)
}

fn insn_write(cx: &mut Cx<'_>, insn: u32) -> Result<(), Fault> {
    let saved = cx.little;
    cx.little = true;
    let r = cx.w32(insn as u64);
    cx.little = saved;
    r
}

/// Patch an immediate field: `lsb` low bits dropped, `len` bits kept; the
/// value fits when the bits above are a sign extension.
#[allow(clippy::too_many_arguments)]
fn insn_imm(cx: &mut Cx<'_>, op: Op, p: u64, v: u64, lsb: u32, len: u32, kind: Imm, check: bool) -> Result<(), Fault> {
    let sval = (do_reloc(op, p, v) as i64) >> lsb;
    let insn = insn_read(cx)?;
    insn_write(cx, encode(kind, insn, sval as u64 & ((1u64 << len) - 1)))?;
    let reach = match op {
        Op::Abs => Reach::new(ReachBase::Absolute, len as u8, true, lsb as u8),
        Op::Prel => Reach::pc(len as u8, lsb as u8),
        Op::Page => Reach::new(ReachBase::Page, len as u8, true, lsb as u8),
    };
    let fits = sval >= -(1i64 << (len - 1)) && sval < (1i64 << (len - 1));
    if !fits && check {
        return Err(Fault::Overflow { value: sx(do_reloc(op, p, v)), reach });
    }
    Ok(())
}

/// MOVZ/MOVK/MOVN 16-bit immediate; `signed` selects MOVZ or MOVN by sign.
fn insn_movw(cx: &mut Cx<'_>, op: Op, p: u64, v: u64, lsb: u32, signed: bool, check: bool) -> Result<(), Fault> {
    let sval = do_reloc(op, p, v) as i64;
    let mut imm = (sval >> lsb) as u64;
    let mut insn = insn_read(cx)?;
    if signed {
        insn &= !(3 << 29);
        if sval >= 0 {
            insn |= 2 << 29;
        } else {
            imm = !imm;
        }
    }
    insn_write(cx, encode(Imm::I16, insn, imm))?;
    if check && imm > 0xffff {
        let base = if op == Op::Abs { ReachBase::Absolute } else { ReachBase::Pc };
        return Err(Fault::Overflow { value: sval as i128, reach: Reach::new(base, 16 + lsb as u8, signed, 0) });
    }
    Ok(())
}

fn data(cx: &mut Cx<'_>, op: Op, p: u64, v: u64, bits: u32) -> Result<(), Fault> {
    let sval = do_reloc(op, p, v) as i64;
    let width = bits as usize / 8;
    cx.write(0, width, sval as u64)?;
    if bits == 64 {
        return Ok(());
    }
    let (fits, reach) = match op {
        Op::Abs => (sval >= 0 && (sval as u64) < (1u64 << bits), Reach::abs(bits as u8, false)),
        _ => (sval >= -(1i64 << (bits - 1)) && sval < (1i64 << (bits - 1)), Reach::pc(bits as u8, 0)),
    };
    if !fits {
        return Err(Fault::Overflow { value: sval as i128, reach });
    }
    Ok(())
}

pub(crate) struct Aarch64;

impl Arch for Aarch64 {
    fn machine(&self) -> Machine {
        Machine::Aarch64
    }
    fn type_name(&self, r_type: u32) -> Option<&'static str> {
        lookup(NAMES, r_type)
    }
    fn reach(&self, r_type: u32) -> Option<Reach> {
        Some(match r_type {
            0 | R_AARCH64_NONE => Reach::none(),
            R_AARCH64_ABS64 => Reach::abs(64, false),
            R_AARCH64_ABS32 => Reach::abs(32, false),
            R_AARCH64_ABS16 => Reach::abs(16, false),
            R_AARCH64_PREL64 => Reach::pc(64, 0),
            R_AARCH64_PREL32 => Reach::pc(32, 0),
            R_AARCH64_PREL16 => Reach::pc(16, 0),
            R_AARCH64_MOVW_UABS_G0 => Reach::abs(16, false),
            R_AARCH64_MOVW_UABS_G1 => Reach::abs(32, false),
            R_AARCH64_MOVW_UABS_G2 => Reach::abs(48, false),
            R_AARCH64_MOVW_UABS_G3 => Reach::abs(64, false),
            R_AARCH64_MOVW_SABS_G0 => Reach::abs(17, true),
            R_AARCH64_MOVW_SABS_G1 => Reach::abs(33, true),
            R_AARCH64_MOVW_SABS_G2 => Reach::abs(49, true),
            R_AARCH64_MOVW_PREL_G0 => Reach::pc(17, 0),
            R_AARCH64_MOVW_PREL_G1 => Reach::pc(33, 0),
            R_AARCH64_MOVW_PREL_G2 => Reach::pc(49, 0),
            R_AARCH64_MOVW_PREL_G3 => Reach::pc(64, 0),
            R_AARCH64_MOVW_UABS_G0_NC
            | R_AARCH64_MOVW_UABS_G1_NC
            | R_AARCH64_MOVW_UABS_G2_NC
            | R_AARCH64_MOVW_PREL_G0_NC
            | R_AARCH64_MOVW_PREL_G1_NC
            | R_AARCH64_MOVW_PREL_G2_NC => Reach::low(),
            R_AARCH64_LD_PREL_LO19 | R_AARCH64_CONDBR19 => Reach::pc(19, 2),
            R_AARCH64_TSTBR14 => Reach::pc(14, 2),
            R_AARCH64_ADR_PREL_LO21 => Reach::pc(21, 0),
            R_AARCH64_ADR_PREL_PG_HI21 | R_AARCH64_ADR_PREL_PG_HI21_NC => Reach::new(ReachBase::Page, 21, true, 12),
            R_AARCH64_ADD_ABS_LO12_NC
            | R_AARCH64_LDST8_ABS_LO12_NC
            | R_AARCH64_LDST16_ABS_LO12_NC
            | R_AARCH64_LDST32_ABS_LO12_NC
            | R_AARCH64_LDST64_ABS_LO12_NC
            | R_AARCH64_LDST128_ABS_LO12_NC => Reach::low(),
            R_AARCH64_JUMP26 | R_AARCH64_CALL26 => Reach::plt(),
            _ => return None,
        })
    }
    fn percpu_rule(&self, r_type: u32) -> Option<&'static str> {
        match r_type {
            R_AARCH64_ADR_PREL_PG_HI21 | R_AARCH64_ADR_PREL_PG_HI21_NC => Some(
                "arm64 modules reach percpu variables with adrp+add: adrp reach is ±4 GiB from the code, \
                 so the module must be within ±4 GiB of its percpu data",
            ),
            R_AARCH64_PREL32 => Some("arm64: a PREL32 reference to percpu data reaches ±2 GiB from the place"),
            R_AARCH64_ABS32 => Some("arm64: an ABS32 reference to percpu data needs the percpu pointer below 4 GiB"),
            _ => None,
        }
    }
    fn table_use(&self, r: &Rela) -> TableUse {
        match r.r_type {
            R_AARCH64_JUMP26 | R_AARCH64_CALL26 => TableUse::PltPerAddend,
            _ => TableUse::None,
        }
    }
    fn plt_entry_size(&self) -> u64 {
        16
    }
    fn plt_entry(&self, _at: u64, target: u64) -> Vec<u8> {
        // ldr x16, #8 ; br x16 ; .quad target
        let mut e = Vec::with_capacity(16);
        e.extend_from_slice(&0x5800_0050u32.to_le_bytes());
        e.extend_from_slice(&0xd61f_0200u32.to_le_bytes());
        e.extend_from_slice(&target.to_le_bytes());
        e
    }
    fn apply(&self, cx: &mut Cx<'_>, r: &Input) -> Result<(), Fault> {
        let v = r.sa();
        let p = r.p;
        match r.r_type {
            0 | R_AARCH64_NONE => Ok(()),
            R_AARCH64_ABS64 => data(cx, Op::Abs, p, v, 64),
            R_AARCH64_ABS32 => data(cx, Op::Abs, p, v, 32),
            R_AARCH64_ABS16 => data(cx, Op::Abs, p, v, 16),
            R_AARCH64_PREL64 => data(cx, Op::Prel, p, v, 64),
            R_AARCH64_PREL32 => data(cx, Op::Prel, p, v, 32),
            R_AARCH64_PREL16 => data(cx, Op::Prel, p, v, 16),
            R_AARCH64_MOVW_UABS_G0_NC => insn_movw(cx, Op::Abs, p, v, 0, false, false),
            R_AARCH64_MOVW_UABS_G0 => insn_movw(cx, Op::Abs, p, v, 0, false, true),
            R_AARCH64_MOVW_UABS_G1_NC => insn_movw(cx, Op::Abs, p, v, 16, false, false),
            R_AARCH64_MOVW_UABS_G1 => insn_movw(cx, Op::Abs, p, v, 16, false, true),
            R_AARCH64_MOVW_UABS_G2_NC => insn_movw(cx, Op::Abs, p, v, 32, false, false),
            R_AARCH64_MOVW_UABS_G2 => insn_movw(cx, Op::Abs, p, v, 32, false, true),
            R_AARCH64_MOVW_UABS_G3 => insn_movw(cx, Op::Abs, p, v, 48, false, false),
            R_AARCH64_MOVW_SABS_G0 => insn_movw(cx, Op::Abs, p, v, 0, true, true),
            R_AARCH64_MOVW_SABS_G1 => insn_movw(cx, Op::Abs, p, v, 16, true, true),
            R_AARCH64_MOVW_SABS_G2 => insn_movw(cx, Op::Abs, p, v, 32, true, true),
            R_AARCH64_MOVW_PREL_G0_NC => insn_movw(cx, Op::Prel, p, v, 0, false, false),
            R_AARCH64_MOVW_PREL_G0 => insn_movw(cx, Op::Prel, p, v, 0, true, true),
            R_AARCH64_MOVW_PREL_G1_NC => insn_movw(cx, Op::Prel, p, v, 16, false, false),
            R_AARCH64_MOVW_PREL_G1 => insn_movw(cx, Op::Prel, p, v, 16, true, true),
            R_AARCH64_MOVW_PREL_G2_NC => insn_movw(cx, Op::Prel, p, v, 32, false, false),
            R_AARCH64_MOVW_PREL_G2 => insn_movw(cx, Op::Prel, p, v, 32, true, true),
            R_AARCH64_MOVW_PREL_G3 => insn_movw(cx, Op::Prel, p, v, 48, true, false),
            R_AARCH64_LD_PREL_LO19 | R_AARCH64_CONDBR19 => insn_imm(cx, Op::Prel, p, v, 2, 19, Imm::I19, true),
            R_AARCH64_ADR_PREL_LO21 => insn_imm(cx, Op::Prel, p, v, 0, 21, Imm::Adr, true),
            R_AARCH64_ADR_PREL_PG_HI21_NC => insn_imm(cx, Op::Page, p, v, 12, 21, Imm::Adr, false),
            R_AARCH64_ADR_PREL_PG_HI21 => insn_imm(cx, Op::Page, p, v, 12, 21, Imm::Adr, true),
            R_AARCH64_ADD_ABS_LO12_NC | R_AARCH64_LDST8_ABS_LO12_NC => {
                insn_imm(cx, Op::Abs, p, v, 0, 12, Imm::I12, false)
            }
            R_AARCH64_LDST16_ABS_LO12_NC => insn_imm(cx, Op::Abs, p, v, 1, 11, Imm::I12, false),
            R_AARCH64_LDST32_ABS_LO12_NC => insn_imm(cx, Op::Abs, p, v, 2, 10, Imm::I12, false),
            R_AARCH64_LDST64_ABS_LO12_NC => insn_imm(cx, Op::Abs, p, v, 3, 9, Imm::I12, false),
            R_AARCH64_LDST128_ABS_LO12_NC => insn_imm(cx, Op::Abs, p, v, 4, 8, Imm::I12, false),
            R_AARCH64_TSTBR14 => insn_imm(cx, Op::Prel, p, v, 2, 14, Imm::I14, true),
            R_AARCH64_JUMP26 | R_AARCH64_CALL26 => {
                let d = sx(v.wrapping_sub(p));
                if Reach::pc(26, 2).fits(d) {
                    insn_imm(cx, Op::Prel, p, v, 2, 26, Imm::I26, true)
                } else {
                    let plt = cx.plt_entry((r.sym, r.a))?;
                    insn_imm(cx, Op::Prel, p, plt, 2, 26, Imm::I26, true)
                }
            }
            t => {
                if lookup(NAMES, t).is_some() {
                    Err(Fault::Unsupported("not handled by the arm64 module loader".into()))
                } else {
                    Err(Fault::Unknown)
                }
            }
        }
    }
}
