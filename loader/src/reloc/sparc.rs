//! 32-bit SPARC (arch/sparc/kernel/module.c).  The module loader masks every
//! field without an overflow check: 32/UA32 byte by byte, DISP32, WDISP30,
//! WDISP22, HI22, LO10.  R_SPARC_13 is not in the kernel's table; it is
//! applied with the psABI's signed 13-bit check.  Big-endian, 32-bit
//! addresses: everything wraps at 2^32.

use super::{lookup, Arch, Cx, Fault, Input, Reach};
use crate::elf::Machine;

pub const R_SPARC_NONE: u32 = 0;
pub const R_SPARC_32: u32 = 3;
pub const R_SPARC_DISP32: u32 = 6;
pub const R_SPARC_WDISP30: u32 = 7;
pub const R_SPARC_WDISP22: u32 = 8;
pub const R_SPARC_HI22: u32 = 9;
pub const R_SPARC_13: u32 = 11;
pub const R_SPARC_LO10: u32 = 12;
pub const R_SPARC_UA32: u32 = 23;

const NAMES: &[(u32, &str)] = &[
    (0, "R_SPARC_NONE"),
    (1, "R_SPARC_8"),
    (2, "R_SPARC_16"),
    (3, "R_SPARC_32"),
    (4, "R_SPARC_DISP8"),
    (5, "R_SPARC_DISP16"),
    (6, "R_SPARC_DISP32"),
    (7, "R_SPARC_WDISP30"),
    (8, "R_SPARC_WDISP22"),
    (9, "R_SPARC_HI22"),
    (10, "R_SPARC_22"),
    (11, "R_SPARC_13"),
    (12, "R_SPARC_LO10"),
    (13, "R_SPARC_GOT10"),
    (14, "R_SPARC_GOT13"),
    (15, "R_SPARC_GOT22"),
    (16, "R_SPARC_PC10"),
    (17, "R_SPARC_PC22"),
    (18, "R_SPARC_WPLT30"),
    (19, "R_SPARC_COPY"),
    (20, "R_SPARC_GLOB_DAT"),
    (21, "R_SPARC_JMP_SLOT"),
    (22, "R_SPARC_RELATIVE"),
    (23, "R_SPARC_UA32"),
    (24, "R_SPARC_PLT32"),
    (32, "R_SPARC_64"),
    (33, "R_SPARC_OLO10"),
    (34, "R_SPARC_HH22"),
    (35, "R_SPARC_HM10"),
    (36, "R_SPARC_LM22"),
    (40, "R_SPARC_WDISP16"),
    (41, "R_SPARC_WDISP19"),
    (54, "R_SPARC_UA64"),
];

pub(crate) struct Sparc;

impl Arch for Sparc {
    fn machine(&self) -> Machine {
        Machine::Sparc
    }
    fn type_name(&self, r_type: u32) -> Option<&'static str> {
        lookup(NAMES, r_type)
    }
    fn reach(&self, r_type: u32) -> Option<Reach> {
        Some(match r_type {
            R_SPARC_NONE => Reach::none(),
            R_SPARC_32 | R_SPARC_UA32 => Reach::abs(32, false),
            R_SPARC_DISP32 => Reach::pc(32, 0),
            R_SPARC_WDISP30 => Reach::pc(30, 2),
            R_SPARC_WDISP22 => Reach::pc(22, 2),
            R_SPARC_HI22 => Reach::abs(32, false),
            R_SPARC_LO10 => Reach::low(),
            R_SPARC_13 => Reach::abs(13, true),
            _ => return None,
        })
    }
    fn percpu_rule(&self, r_type: u32) -> Option<&'static str> {
        match r_type {
            R_SPARC_13 => Some("sparc32: a simm13 reference to percpu data reaches only ±4 KiB around 0"),
            R_SPARC_WDISP22 => Some("sparc32: a WDISP22 branch reaches ±8 MiB from the place"),
            _ => None,
        }
    }
    fn apply(&self, cx: &mut Cx<'_>, r: &Input) -> Result<(), Fault> {
        // The kernel's switch looks at the low 8 bits of the type only.
        let v = r.sa() & 0xffff_ffff;
        let p = r.p & 0xffff_ffff;
        let d = v.wrapping_sub(p) & 0xffff_ffff;
        let sd = d as u32 as i32 as i128;
        match r.r_type & 0xff {
            R_SPARC_NONE => Ok(()),
            R_SPARC_DISP32 => cx.w32(d),
            R_SPARC_32 | R_SPARC_UA32 => {
                cx.check(r.sa() as i128, Reach::abs(32, false), false)?;
                cx.w32(v)
            }
            R_SPARC_WDISP30 => cx.patch32(0x3fff_ffff, d >> 2),
            R_SPARC_WDISP22 => {
                cx.check(sd, Reach::pc(22, 2), false)?;
                cx.patch32(0x3f_ffff, d >> 2)
            }
            R_SPARC_LO10 => cx.patch32(0x3ff, v),
            R_SPARC_HI22 => cx.patch32(0x3f_ffff, v >> 10),
            R_SPARC_13 => {
                cx.check(v as u32 as i32 as i128, Reach::abs(13, true), true)?;
                cx.patch32(0x1fff, v)
            }
            t => {
                if lookup(NAMES, t).is_some() {
                    Err(Fault::Unsupported("the sparc32 module loader handles only 32, UA32, DISP32, WDISP30, WDISP22, HI22, LO10 (and 13)".into()))
                } else {
                    Err(Fault::Unknown)
                }
            }
        }
    }
}
