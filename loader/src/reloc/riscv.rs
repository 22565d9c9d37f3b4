//! riscv64 (arch/riscv/kernel/module.c).  auipc-based pairs (PCREL_HI20,
//! CALL, CALL_PLT) are refused beyond [-2^31 - 2^11, 2^31 - 2^11) from the
//! place, except CALL_PLT which goes through a PLT entry; 32 is refused when
//! the value does not fit 32 bits.  PCREL_LO12_I/S carry no value of their
//! own: their symbol labels the auipc, whose PCREL_HI20 (or GOT_HI20)
//! relocation in the same section gives the offset.  Branches and HI20 are
//! masked without a check.  RELAX is ignored, ALIGN refused (no relaxation).

use super::{lookup, sx, Anchor, Arch, Cx, Fault, Input, Reach, ReachBase, TableUse};
use crate::elf::{Machine, Rela};

pub const R_RISCV_NONE: u32 = 0;
pub const R_RISCV_32: u32 = 1;
pub const R_RISCV_64: u32 = 2;
pub const R_RISCV_BRANCH: u32 = 16;
pub const R_RISCV_JAL: u32 = 17;
pub const R_RISCV_CALL: u32 = 18;
pub const R_RISCV_CALL_PLT: u32 = 19;
pub const R_RISCV_GOT_HI20: u32 = 20;
pub const R_RISCV_PCREL_HI20: u32 = 23;
pub const R_RISCV_PCREL_LO12_I: u32 = 24;
pub const R_RISCV_PCREL_LO12_S: u32 = 25;
pub const R_RISCV_HI20: u32 = 26;
pub const R_RISCV_LO12_I: u32 = 27;
pub const R_RISCV_LO12_S: u32 = 28;
pub const R_RISCV_ADD8: u32 = 33;
pub const R_RISCV_ADD16: u32 = 34;
pub const R_RISCV_ADD32: u32 = 35;
pub const R_RISCV_ADD64: u32 = 36;
pub const R_RISCV_SUB8: u32 = 37;
pub const R_RISCV_SUB16: u32 = 38;
pub const R_RISCV_SUB32: u32 = 39;
pub const R_RISCV_SUB64: u32 = 40;
pub const R_RISCV_ALIGN: u32 = 43;
pub const R_RISCV_RVC_BRANCH: u32 = 44;
pub const R_RISCV_RVC_JUMP: u32 = 45;
pub const R_RISCV_RELAX: u32 = 51;
pub const R_RISCV_SUB6: u32 = 52;
pub const R_RISCV_SET6: u32 = 53;
pub const R_RISCV_SET8: u32 = 54;
pub const R_RISCV_SET16: u32 = 55;
pub const R_RISCV_SET32: u32 = 56;
pub const R_RISCV_32_PCREL: u32 = 57;

const NAMES: &[(u32, &str)] = &[
    (0, "R_RISCV_NONE"),
    (1, "R_RISCV_32"),
    (2, "R_RISCV_64"),
    (3, "R_RISCV_RELATIVE"),
    (4, "R_RISCV_COPY"),
    (5, "R_RISCV_JUMP_SLOT"),
    (6, "R_RISCV_TLS_DTPMOD32"),
    (7, "R_RISCV_TLS_DTPMOD64"),
    (8, "R_RISCV_TLS_DTPREL32"),
    (9, "R_RISCV_TLS_DTPREL64"),
    (10, "R_RISCV_TLS_TPREL32"),
    (11, "R_RISCV_TLS_TPREL64"),
    (16, "R_RISCV_BRANCH"),
    (17, "R_RISCV_JAL"),
    (18, "R_RISCV_CALL"),
    (19, "R_RISCV_CALL_PLT"),
    (20, "R_RISCV_GOT_HI20"),
    (21, "R_RISCV_TLS_GOT_HI20"),
    (22, "R_RISCV_TLS_GD_HI20"),
    (23, "R_RISCV_PCREL_HI20"),
    (24, "R_RISCV_PCREL_LO12_I"),
    (25, "R_RISCV_PCREL_LO12_S"),
    (26, "R_RISCV_HI20"),
    (27, "R_RISCV_LO12_I"),
    (28, "R_RISCV_LO12_S"),
    (29, "R_RISCV_TPREL_HI20"),
    (30, "R_RISCV_TPREL_LO12_I"),
    (31, "R_RISCV_TPREL_LO12_S"),
    (32, "R_RISCV_TPREL_ADD"),
    (33, "R_RISCV_ADD8"),
    (34, "R_RISCV_ADD16"),
    (35, "R_RISCV_ADD32"),
    (36, "R_RISCV_ADD64"),
    (37, "R_RISCV_SUB8"),
    (38, "R_RISCV_SUB16"),
    (39, "R_RISCV_SUB32"),
    (40, "R_RISCV_SUB64"),
    (41, "R_RISCV_GNU_VTINHERIT"),
    (42, "R_RISCV_GNU_VTENTRY"),
    (43, "R_RISCV_ALIGN"),
    (44, "R_RISCV_RVC_BRANCH"),
    (45, "R_RISCV_RVC_JUMP"),
    (46, "R_RISCV_RVC_LUI"),
    (47, "R_RISCV_GPREL_I"),
    (48, "R_RISCV_GPREL_S"),
    (49, "R_RISCV_TPREL_I"),
    (50, "R_RISCV_TPREL_S"),
    (51, "R_RISCV_RELAX"),
    (52, "R_RISCV_SUB6"),
    (53, "R_RISCV_SET6"),
    (54, "R_RISCV_SET8"),
    (55, "R_RISCV_SET16"),
    (56, "R_RISCV_SET32"),
    (57, "R_RISCV_32_PCREL"),
    (58, "R_RISCV_IRELATIVE"),
    (59, "R_RISCV_PLT32"),
    (60, "R_RISCV_SET_ULEB128"),
    (61, "R_RISCV_SUB_ULEB128"),
];

/// What auipc+jalr/addi reach: [-2^31 - 2^11, 2^31 - 2^11).
fn auipc_fits(off: i128) -> bool {
    (-(1i128 << 31) - (1 << 11)..(1i128 << 31) - (1 << 11)).contains(&off)
}

fn hi20(off: u64) -> u64 {
    off.wrapping_add(0x800) & 0xffff_f000
}

fn lo12_i(cx: &mut Cx<'_>, lo: u64) -> Result<(), Fault> {
    cx.patch32(0xfff0_0000, (lo & 0xfff) << 20)
}

fn lo12_s(cx: &mut Cx<'_>, lo: u64) -> Result<(), Fault> {
    cx.patch32(0xfe00_0f80, ((lo & 0xfe0) << 20) | ((lo & 0x1f) << 7))
}

pub(crate) struct Riscv64;

impl Arch for Riscv64 {
    fn machine(&self) -> Machine {
        Machine::Riscv64
    }
    fn type_name(&self, r_type: u32) -> Option<&'static str> {
        lookup(NAMES, r_type)
    }
    fn reach(&self, r_type: u32) -> Option<Reach> {
        Some(match r_type {
            R_RISCV_NONE | R_RISCV_RELAX => Reach::none(),
            R_RISCV_32 => Reach::abs(32, false),
            R_RISCV_64 => Reach::abs(64, false),
            R_RISCV_BRANCH => Reach::pc(12, 1),
            R_RISCV_JAL => Reach::pc(20, 1),
            R_RISCV_RVC_BRANCH => Reach::pc(8, 1),
            R_RISCV_RVC_JUMP => Reach::pc(11, 1),
            R_RISCV_PCREL_HI20 | R_RISCV_CALL => Reach::pc(32, 0),
            R_RISCV_CALL_PLT => Reach::plt(),
            R_RISCV_GOT_HI20 => Reach::got(),
            R_RISCV_HI20 => Reach::abs(32, true),
            R_RISCV_PCREL_LO12_I | R_RISCV_PCREL_LO12_S | R_RISCV_LO12_I | R_RISCV_LO12_S => Reach::low(),
            R_RISCV_ADD8 | R_RISCV_ADD16 | R_RISCV_ADD32 | R_RISCV_ADD64 | R_RISCV_SUB6 | R_RISCV_SUB8
            | R_RISCV_SUB16 | R_RISCV_SUB32 | R_RISCV_SUB64 | R_RISCV_SET6 | R_RISCV_SET8 | R_RISCV_SET16
            | R_RISCV_SET32 => Reach::low(),
            R_RISCV_32_PCREL => Reach::pc(32, 0),
            _ => return None,
        })
    }
    fn percpu_rule(&self, r_type: u32) -> Option<&'static str> {
        match r_type {
            R_RISCV_PCREL_HI20 | R_RISCV_CALL => Some(
                "riscv64 reaches percpu variables with auipc pairs: reach is ±2 GiB from the code, \
                 so the module must be within ±2 GiB of its percpu data",
            ),
            R_RISCV_HI20 => Some("riscv64: lui-based absolute addressing of percpu data reaches only ±2 GiB around 0"),
            R_RISCV_32 => Some("riscv64: a 32-bit absolute percpu reference needs the percpu pointer below 4 GiB"),
            _ => None,
        }
    }
    fn table_use(&self, r: &Rela) -> TableUse {
        match r.r_type {
            R_RISCV_GOT_HI20 => TableUse::GotPerAddend,
            R_RISCV_CALL_PLT => TableUse::PltPerAddend,
            _ => TableUse::None,
        }
    }
    fn plt_entry_size(&self) -> u64 {
        24
    }
    fn plt_entry(&self, _at: u64, target: u64) -> Vec<u8> {
        // auipc t0,0 ; ld t1,16(t0) ; jr t1 ; nop ; .quad target
        let mut e = Vec::with_capacity(24);
        for w in [0x0000_0297u32, 0x0102_b303, 0x0003_0067, 0x0000_0013] {
            e.extend_from_slice(&w.to_le_bytes());
        }
        e.extend_from_slice(&target.to_le_bytes());
        e
    }
    fn anchor(&self, r_type: u32) -> Option<Anchor> {
        match r_type {
            R_RISCV_PCREL_HI20 => Some(Anchor::Direct),
            R_RISCV_GOT_HI20 => Some(Anchor::Got),
            _ => None,
        }
    }
    fn apply(&self, cx: &mut Cx<'_>, r: &Input) -> Result<(), Fault> {
        let v = r.sa();
        let p = r.p;
        let off = v.wrapping_sub(p);
        match r.r_type {
            R_RISCV_NONE | R_RISCV_RELAX => Ok(()),
            R_RISCV_32 => {
                cx.check(v as i128, Reach::abs(32, false), true)?;
                cx.w32(v)
            }
            R_RISCV_64 => cx.w64(v),
            R_RISCV_BRANCH => {
                cx.check(sx(off), Reach::pc(12, 1), false)?;
                let bits = ((off & 0x1000) << 19) | ((off & 0x800) >> 4) | ((off & 0x7e0) << 20) | ((off & 0x1e) << 7);
                cx.patch32(0xfe00_0f80, bits)
            }
            R_RISCV_JAL => {
                cx.check(sx(off), Reach::pc(20, 1), false)?;
                let bits = ((off & 0x10_0000) << 11) | (off & 0xf_f000) | ((off & 0x800) << 9) | ((off & 0x7fe) << 20);
                cx.patch32(0xffff_f000, bits)
            }
            R_RISCV_RVC_BRANCH => {
                cx.check(sx(off), Reach::pc(8, 1), false)?;
                let bits = ((off & 0x100) << 4) | ((off & 0xc0) >> 1) | ((off & 0x20) >> 3) | ((off & 0x18) << 7) | ((off & 0x6) << 2);
                cx.patch16(!0xe383 & 0xffff, bits)
            }
            R_RISCV_RVC_JUMP => {
                cx.check(sx(off), Reach::pc(11, 1), false)?;
                let bits = ((off & 0x800) << 1)
                    | ((off & 0x400) >> 2)
                    | ((off & 0x300) << 1)
                    | ((off & 0x80) >> 1)
                    | ((off & 0x40) << 1)
                    | ((off & 0x20) >> 3)
                    | ((off & 0x10) << 7)
                    | ((off & 0xe) << 2);
                cx.patch16(!0xe003 & 0xffff, bits)
            }
            R_RISCV_PCREL_HI20 => {
                if !auipc_fits(sx(off)) {
                    return Err(Fault::Overflow { value: sx(off), reach: Reach::pc(32, 0) });
                }
                cx.patch32(0xffff_f000, hi20(off))
            }
            R_RISCV_GOT_HI20 => {
                let slot = cx.got_slot((r.sym, r.a))?;
                let off = slot.wrapping_sub(p);
                if !auipc_fits(sx(off)) {
                    return Err(Fault::Overflow { value: sx(off), reach: Reach::pc(32, 0) });
                }
                cx.patch32(0xffff_f000, hi20(off))
            }
            R_RISCV_PCREL_LO12_I | R_RISCV_PCREL_LO12_S => {
                // The symbol labels the auipc; its high part gives the offset.
                let target = *cx
                    .anchors
                    .get(&r.s)
                    .ok_or_else(|| Fault::Bad(format!("Can not find HI20 relocation information (no PCREL_HI20/GOT_HI20 at {:#x} in this section)", r.s)))?;
                let off = target.wrapping_sub(r.s);
                let lo = off.wrapping_sub(hi20(off) as u32 as i32 as i64 as u64);
                if r.r_type == R_RISCV_PCREL_LO12_I {
                    lo12_i(cx, lo)
                } else {
                    lo12_s(cx, lo)
                }
            }
            R_RISCV_HI20 => {
                // lui+addi reach [-2^31 - 2^11, 2^31 - 2^11) around 0; the
                // kernel masks without a check (it refuses HI20 only under
                // CONFIG_CMODEL_MEDLOW).
                if !auipc_fits(sx(v)) {
                    cx.fail(sx(v), Reach::abs(32, true), false)?;
                }
                cx.patch32(0xffff_f000, hi20(v))
            }
            R_RISCV_LO12_I | R_RISCV_LO12_S => {
                let lo = v.wrapping_sub(hi20(v) as u32 as i32 as i64 as u64);
                if r.r_type == R_RISCV_LO12_I {
                    lo12_i(cx, lo)
                } else {
                    lo12_s(cx, lo)
                }
            }
            R_RISCV_CALL | R_RISCV_CALL_PLT => {
                let mut off = off;
                if !auipc_fits(sx(off)) {
                    if r.r_type == R_RISCV_CALL {
                        return Err(Fault::Overflow { value: sx(off), reach: Reach::pc(32, 0) });
                    }
                    off = cx.plt_entry((r.sym, r.a))?.wrapping_sub(p);
                    if !auipc_fits(sx(off)) {
                        return Err(Fault::Overflow { value: sx(off), reach: Reach::pc(32, 0) });
                    }
                }
                let hi = hi20(off);
                let lo = off.wrapping_sub(hi) & 0xfff;
                cx.patch32(0xffff_f000, hi)?;
                let w = cx.read(4, 4)?;
                cx.write(4, 4, (w & 0x000f_ffff) | (lo << 20))
            }
            R_RISCV_ADD8 => {
                let o = cx.read(0, 1)?;
                cx.write(0, 1, o.wrapping_add(v))
            }
            R_RISCV_ADD16 => {
                let o = cx.read(0, 2)?;
                cx.write(0, 2, o.wrapping_add(v))
            }
            R_RISCV_ADD32 => {
                let o = cx.read(0, 4)?;
                cx.write(0, 4, o.wrapping_add(v))
            }
            R_RISCV_ADD64 => {
                let o = cx.read(0, 8)?;
                cx.write(0, 8, o.wrapping_add(v))
            }
            R_RISCV_SUB6 => {
                let o = cx.read(0, 1)?;
                cx.write(0, 1, (o & 0xc0) | (o.wrapping_sub(v) & 0x3f))
            }
            R_RISCV_SUB8 => {
                let o = cx.read(0, 1)?;
                cx.write(0, 1, o.wrapping_sub(v))
            }
            R_RISCV_SUB16 => {
                let o = cx.read(0, 2)?;
                cx.write(0, 2, o.wrapping_sub(v))
            }
            R_RISCV_SUB32 => {
                let o = cx.read(0, 4)?;
                cx.write(0, 4, o.wrapping_sub(v))
            }
            R_RISCV_SUB64 => {
                let o = cx.read(0, 8)?;
                cx.write(0, 8, o.wrapping_sub(v))
            }
            R_RISCV_SET6 => {
                let o = cx.read(0, 1)?;
                cx.write(0, 1, (o & 0xc0) | (v & 0x3f))
            }
            R_RISCV_SET8 => cx.write(0, 1, v),
            R_RISCV_SET16 => cx.write(0, 2, v),
            R_RISCV_SET32 => cx.write(0, 4, v),
            R_RISCV_32_PCREL => {
                cx.check(sx(off), Reach::new(ReachBase::Pc, 32, true, 0), true)?;
                cx.w32(off)
            }
            R_RISCV_ALIGN => Err(Fault::Unsupported(
                "The unexpected relocation type 'R_RISCV_ALIGN': the module loader does no relaxation (build with -mno-relax)".into(),
            )),
            t => {
                if lookup(NAMES, t).is_some() {
                    Err(Fault::Unsupported("not handled by the riscv module loader".into()))
                } else {
                    Err(Fault::Unknown)
                }
            }
        }
    }
}
