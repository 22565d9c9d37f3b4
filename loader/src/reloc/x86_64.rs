//! x86_64 (arch/x86/kernel/module.c).  The module loader refuses R_X86_64_32
//! and R_X86_64_32S values that do not fit ("overflow in relocation type");
//! PC32/PLT32 are written truncated without a check.  Modules are built with
//! -mcmodel=kernel and need no GOT or PLT.

use super::{lookup, sx, Arch, Cx, Fault, Input, Reach};
use crate::elf::Machine;

pub const R_X86_64_NONE: u32 = 0;
pub const R_X86_64_64: u32 = 1;
pub const R_X86_64_PC32: u32 = 2;
pub const R_X86_64_PLT32: u32 = 4;
pub const R_X86_64_32: u32 = 10;
pub const R_X86_64_32S: u32 = 11;
pub const R_X86_64_PC64: u32 = 24;

const NAMES: &[(u32, &str)] = &[
    (0, "R_X86_64_NONE"),
    (1, "R_X86_64_64"),
    (2, "R_X86_64_PC32"),
    (3, "R_X86_64_GOT32"),
    (4, "R_X86_64_PLT32"),
    (5, "R_X86_64_COPY"),
    (6, "R_X86_64_GLOB_DAT"),
    (7, "R_X86_64_JUMP_SLOT"),
    (8, "R_X86_64_RELATIVE"),
    (9, "R_X86_64_GOTPCREL"),
    (10, "R_X86_64_32"),
    (11, "R_X86_64_32S"),
    (12, "R_X86_64_16"),
    (13, "R_X86_64_PC16"),
    (14, "R_X86_64_8"),
    (15, "R_X86_64_PC8"),
    (16, "R_X86_64_DTPMOD64"),
    (17, "R_X86_64_DTPOFF64"),
    (18, "R_X86_64_TPOFF64"),
    (19, "R_X86_64_TLSGD"),
    (20, "R_X86_64_TLSLD"),
    (21, "R_X86_64_DTPOFF32"),
    (22, "R_X86_64_GOTTPOFF"),
    (23, "R_X86_64_TPOFF32"),
    (24, "R_X86_64_PC64"),
    (25, "R_X86_64_GOTOFF64"),
    (26, "R_X86_64_GOTPC32"),
    (27, "R_X86_64_GOT64"),
    (28, "R_X86_64_GOTPCREL64"),
    (29, "R_X86_64_GOTPC64"),
    (30, "R_X86_64_GOTPLT64"),
    (31, "R_X86_64_PLTOFF64"),
    (32, "R_X86_64_SIZE32"),
    (33, "R_X86_64_SIZE64"),
    (34, "R_X86_64_GOTPC32_TLSDESC"),
    (35, "R_X86_64_TLSDESC_CALL"),
    (36, "R_X86_64_TLSDESC"),
    (37, "R_X86_64_IRELATIVE"),
    (38, "R_X86_64_RELATIVE64"),
    (41, "R_X86_64_GOTPCRELX"),
    (42, "R_X86_64_REX_GOTPCRELX"),
];

pub(crate) struct X86_64;

impl Arch for X86_64 {
    fn machine(&self) -> Machine {
        Machine::X86_64
    }
    fn type_name(&self, r_type: u32) -> Option<&'static str> {
        lookup(NAMES, r_type)
    }
    fn reach(&self, r_type: u32) -> Option<Reach> {
        Some(match r_type {
            R_X86_64_NONE => Reach::none(),
            R_X86_64_64 => Reach::abs(64, false),
            R_X86_64_32 => Reach::abs(32, false),
            R_X86_64_32S => Reach::abs(32, true),
            R_X86_64_PC32 | R_X86_64_PLT32 => Reach::pc(32, 0),
            R_X86_64_PC64 => Reach::pc(64, 0),
            _ => return None,
        })
    }
    fn percpu_rule(&self, r_type: u32) -> Option<&'static str> {
        match r_type {
            R_X86_64_32S => Some(
                "x86_64 zero-based percpu: %gs:sym encodes the percpu offset as a sign-extended 32-bit displacement, \
                 so module percpu data must lie within ±2 GiB of 0 (the first chunk's reserved area)",
            ),
            R_X86_64_32 => Some("x86_64: a 32-bit absolute percpu reference needs the percpu offset below 4 GiB"),
            R_X86_64_PC32 | R_X86_64_PLT32 => Some(
                "x86_64 relative percpu: %gs:sym(%rip) reach is ±2 GiB from the code, \
                 so the module must be within ±2 GiB of its percpu data",
            ),
            _ => None,
        }
    }
    fn apply(&self, cx: &mut Cx<'_>, r: &Input) -> Result<(), Fault> {
        let v = r.sa();
        match r.r_type {
            R_X86_64_NONE => Ok(()),
            R_X86_64_64 => cx.w64(v),
            R_X86_64_32 => {
                cx.check(v as i128, Reach::abs(32, false), true)?;
                cx.w32(v)
            }
            R_X86_64_32S => {
                cx.check(sx(v), Reach::abs(32, true), true)?;
                cx.w32(v)
            }
            R_X86_64_PC32 | R_X86_64_PLT32 => {
                let d = v.wrapping_sub(r.p);
                cx.check(sx(d), Reach::pc(32, 0), false)?;
                cx.w32(d)
            }
            R_X86_64_PC64 => cx.w64(v.wrapping_sub(r.p)),
            t => {
                if lookup(NAMES, t).is_some() {
                    Err(Fault::Unsupported(
                        "the x86_64 module loader handles only 64, 32, 32S, PC32, PLT32 and PC64".into(),
                    ))
                } else {
                    Err(Fault::Unknown)
                }
            }
        }
    }
}
