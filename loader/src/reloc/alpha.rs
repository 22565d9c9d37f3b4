//! Alpha (arch/alpha/kernel/module.c).  LITERAL loads go through a GOT the
//! loader builds at the end of the module (one slot per symbol and addend);
//! GP is the end of the module's core minus 0x8000 so the GOT and small data
//! sit within the 16-bit displacement.  The loader refuses ("Relocation
//! (type N) overflow vs SYM") GPREL32, GPREL16, GPRELHIGH, SREL32, LITERAL,
//! GPDISP and BRADDR values that do not fit.  REFLONG is not in the kernel's
//! switch; it is applied with the psABI's signed 32-bit check.

use super::{lookup, sx, Arch, Cx, Fault, Input, Reach, ReachBase, SymbolOrigin, TableUse};
use crate::elf::{Machine, Rela};

pub const R_ALPHA_NONE: u32 = 0;
pub const R_ALPHA_REFLONG: u32 = 1;
pub const R_ALPHA_REFQUAD: u32 = 2;
pub const R_ALPHA_GPREL32: u32 = 3;
pub const R_ALPHA_LITERAL: u32 = 4;
pub const R_ALPHA_LITUSE: u32 = 5;
pub const R_ALPHA_GPDISP: u32 = 6;
pub const R_ALPHA_BRADDR: u32 = 7;
pub const R_ALPHA_HINT: u32 = 8;
pub const R_ALPHA_SREL32: u32 = 10;
pub const R_ALPHA_SREL64: u32 = 11;
pub const R_ALPHA_GPRELHIGH: u32 = 17;
pub const R_ALPHA_GPRELLOW: u32 = 18;
pub const R_ALPHA_GPREL16: u32 = 19;
pub const R_ALPHA_BRSGP: u32 = 28;

/// st_other bits marking a function whose first 8 bytes load GP.
const STO_ALPHA_STD_GPLOAD: u8 = 0x88;

const NAMES: &[(u32, &str)] = &[
    (0, "R_ALPHA_NONE"),
    (1, "R_ALPHA_REFLONG"),
    (2, "R_ALPHA_REFQUAD"),
    (3, "R_ALPHA_GPREL32"),
    (4, "R_ALPHA_LITERAL"),
    (5, "R_ALPHA_LITUSE"),
    (6, "R_ALPHA_GPDISP"),
    (7, "R_ALPHA_BRADDR"),
    (8, "R_ALPHA_HINT"),
    (9, "R_ALPHA_SREL16"),
    (10, "R_ALPHA_SREL32"),
    (11, "R_ALPHA_SREL64"),
    (17, "R_ALPHA_GPRELHIGH"),
    (18, "R_ALPHA_GPRELLOW"),
    (19, "R_ALPHA_GPREL16"),
    (24, "R_ALPHA_COPY"),
    (25, "R_ALPHA_GLOB_DAT"),
    (26, "R_ALPHA_JMP_SLOT"),
    (27, "R_ALPHA_RELATIVE"),
    (28, "R_ALPHA_BRSGP"),
    (29, "R_ALPHA_TLSGD"),
    (30, "R_ALPHA_TLS_LDM"),
    (31, "R_ALPHA_DTPMOD64"),
    (32, "R_ALPHA_GOTDTPREL"),
    (33, "R_ALPHA_DTPREL64"),
    (34, "R_ALPHA_DTPRELHI"),
    (35, "R_ALPHA_DTPRELLO"),
    (36, "R_ALPHA_DTPREL16"),
    (37, "R_ALPHA_GOTTPREL"),
    (38, "R_ALPHA_TPREL64"),
    (39, "R_ALPHA_TPRELHI"),
    (40, "R_ALPHA_TPRELLO"),
    (41, "R_ALPHA_TPREL16"),
];

pub(crate) const WEAK_RULE: &str = "alpha modules must define percpu variables weak: GP-relative reach is +-2 GiB";

pub(crate) struct Alpha;

impl Arch for Alpha {
    fn machine(&self) -> Machine {
        Machine::Alpha
    }
    fn type_name(&self, r_type: u32) -> Option<&'static str> {
        lookup(NAMES, r_type)
    }
    fn reach(&self, r_type: u32) -> Option<Reach> {
        Some(match r_type {
            R_ALPHA_NONE | R_ALPHA_LITUSE | R_ALPHA_HINT => Reach::none(),
            R_ALPHA_REFQUAD => Reach::abs(64, false),
            R_ALPHA_REFLONG => Reach::abs(32, true),
            R_ALPHA_GPREL32 | R_ALPHA_GPRELHIGH => Reach::new(ReachBase::Gp, 32, true, 0),
            R_ALPHA_GPRELLOW => Reach::low(),
            R_ALPHA_GPREL16 => Reach::new(ReachBase::Gp, 16, true, 0),
            R_ALPHA_LITERAL => Reach::got(),
            R_ALPHA_GPDISP => Reach::pc(32, 0),
            R_ALPHA_BRADDR | R_ALPHA_BRSGP => Reach::pc(21, 2),
            R_ALPHA_SREL32 => Reach::pc(32, 0),
            R_ALPHA_SREL64 => Reach::pc(64, 0),
            _ => return None,
        })
    }
    fn percpu_rule(&self, r_type: u32) -> Option<&'static str> {
        match r_type {
            R_ALPHA_GPREL32 | R_ALPHA_GPRELHIGH | R_ALPHA_GPRELLOW | R_ALPHA_GPREL16 => Some(WEAK_RULE),
            R_ALPHA_SREL32 => Some("alpha: an SREL32 reference to percpu data reaches ±2 GiB from the place"),
            R_ALPHA_REFLONG => {
                Some("alpha: a REFLONG reference to percpu data needs the percpu pointer within ±2 GiB of 0")
            }
            _ => None,
        }
    }
    fn percpu_rule_for(&self, r_type: u32, symbol: SymbolOrigin) -> Option<String> {
        let gp_relative = matches!(r_type, R_ALPHA_GPREL32 | R_ALPHA_GPRELHIGH | R_ALPHA_GPRELLOW | R_ALPHA_GPREL16);
        match symbol {
            SymbolOrigin::Imported if gp_relative => Some(
                "the variable is not the module's (the kernel or another module exports it): alpha code reaches \
                 symbols it does not define through the GOT (R_ALPHA_LITERAL); a GP-relative reference (+-2 GiB) \
                 means it was declared hidden or placed in small data"
                    .into(),
            ),
            _ => self.percpu_rule(r_type).map(str::to_string),
        }
    }
    fn table_use(&self, r: &Rela) -> TableUse {
        if r.r_type & 0xff == R_ALPHA_LITERAL {
            TableUse::GotPerAddend
        } else {
            TableUse::None
        }
    }
    fn uses_gp(&self) -> bool {
        true
    }
    fn apply(&self, cx: &mut Cx<'_>, r: &Input) -> Result<(), Fault> {
        let v = r.sa();
        let gp = cx.gp;
        let p = r.p;
        match r.r_type & 0xff {
            R_ALPHA_NONE | R_ALPHA_LITUSE | R_ALPHA_HINT => Ok(()),
            R_ALPHA_REFQUAD => cx.w64(v),
            R_ALPHA_REFLONG => {
                cx.check(sx(v), Reach::abs(32, true), true)?;
                cx.w32(v)
            }
            R_ALPHA_GPREL32 => {
                let d = v.wrapping_sub(gp);
                cx.check(sx(d), Reach::new(ReachBase::Gp, 32, true, 0), true)?;
                cx.w32(d)
            }
            R_ALPHA_LITERAL => {
                let slot = cx.got_slot((r.sym, r.a))?;
                let lo = slot.wrapping_sub(gp);
                cx.check(sx(lo), Reach::new(ReachBase::Gp, 16, true, 0), true)?;
                cx.w16(lo)
            }
            R_ALPHA_GPDISP => {
                let value = gp.wrapping_sub(p);
                let lo = value as i16 as i64 as u64;
                let hi = value.wrapping_sub(lo) as i32 as i64 as u64;
                if hi.wrapping_add(lo) != value {
                    return Err(Fault::Overflow { value: sx(value), reach: Reach::pc(32, 0) });
                }
                cx.w16(hi >> 16)?;
                let delta =
                    usize::try_from(r.a).map_err(|_| Fault::Bad(format!("GPDISP addend {} is negative", r.a)))?;
                cx.write(delta, 2, lo)
            }
            R_ALPHA_BRSGP | R_ALPHA_BRADDR => {
                let mut v = v;
                if r.r_type & 0xff == R_ALPHA_BRSGP {
                    if r.sym_undefined {
                        return Err(Fault::Bad("BRSGP may only bind to a local symbol".into()));
                    }
                    if r.sym_other & STO_ALPHA_STD_GPLOAD == STO_ALPHA_STD_GPLOAD {
                        v = v.wrapping_add(8);
                    }
                }
                let d = v.wrapping_sub(p.wrapping_add(4));
                if d & 3 != 0 {
                    return Err(Fault::Bad(format!("branch displacement {:#x} is not a multiple of 4", d)));
                }
                cx.check(sx(d), Reach::pc(21, 2), true)?;
                cx.patch32(0x1f_ffff, (d as i64 >> 2) as u64)
            }
            R_ALPHA_SREL32 => {
                let d = v.wrapping_sub(p);
                cx.check(sx(d), Reach::pc(32, 0), true)?;
                cx.w32(d)
            }
            R_ALPHA_SREL64 => cx.w64(v.wrapping_sub(p)),
            R_ALPHA_GPRELHIGH => {
                let hi = (v.wrapping_sub(gp).wrapping_add(0x8000) as i64) >> 16;
                if hi != hi as i16 as i64 {
                    return Err(Fault::Overflow {
                        value: sx(v.wrapping_sub(gp)),
                        reach: Reach::new(ReachBase::Gp, 32, true, 0),
                    });
                }
                cx.w16(hi as u64)
            }
            R_ALPHA_GPRELLOW => cx.w16(v.wrapping_sub(gp)),
            R_ALPHA_GPREL16 => {
                let d = v.wrapping_sub(gp);
                cx.check(sx(d), Reach::new(ReachBase::Gp, 16, true, 0), true)?;
                cx.w16(d)
            }
            t => {
                if lookup(NAMES, t).is_some() {
                    Err(Fault::Unsupported("not handled by the alpha module loader".into()))
                } else {
                    Err(Fault::Unknown)
                }
            }
        }
    }
}
