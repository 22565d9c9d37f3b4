//! alpha's kernel runtime ABI (6.1): arguments in `$16`-`$21` then the
//! stack, return to `$26`; `$8` is the current thread_info (with `cpu`,
//! `preempt_count` and the task pointer in it).  WARN is a call to
//! `warn_slowpath_fmt`; BUG is `call_pal bugchk` followed by the line
//! (`.long`) and the file (`.8byte`).
//!
//! Every percpu operation in 6.1 is bracketed by `call_pal swpipl` (raise
//! and restore the interrupt priority level), which is privileged:
//! qemu-alpha's user mode stops with SIGILL there.  The runtime emulates
//! it on the host at that stop (the old IPL in `$0`, the new one from
//! `$16`), as PALcode would, and resumes after it; `rdps` and `whami` the
//! same way.  The report counts these emulations.

use crate::engine::{Engine, EngineError, Reg};
use crate::runtime::{reg_then_stack_arg, return_to_link_register, KernelAbi, TrapAction};

pub struct AlphaKernel;

/// PAL function codes (arch/alpha/include/uapi/asm/pal.h).
const PAL_SWPIPL: u32 = 0x35;
const PAL_RDPS: u32 = 0x36;
const PAL_WHAMI: u32 = 0x3c;
const PAL_BUGCHK: u32 = 0x81;

/// The PAL function of a `call_pal` word.
fn pal_function(word: u32) -> Option<u32> {
    (word >> 26 == 0).then_some(word & 0x03ff_ffff)
}

impl KernelAbi for AlphaKernel {
    fn slot_fill(&self) -> &'static [u8] {
        &[0x80, 0, 0, 0] // call_pal bpt
    }
    fn arg_word(&self, e: &mut dyn Engine, i: usize) -> Result<u64, EngineError> {
        reg_then_stack_arg(e, i, 6, 0, 8, false)
    }
    fn host_return(&self, e: &mut dyn Engine, value: Option<u64>) -> Result<(), EngineError> {
        return_to_link_register(e, value, 0)
    }
    fn handle_trap(
        &self,
        e: &mut dyn Engine,
        pc: u64,
        _insn: u32,
        irq: &mut u64,
        cpu: u32,
    ) -> Result<Option<TrapAction>, EngineError> {
        // qemu reports some PAL traps at the instruction, some after it.
        for at in [pc, pc.wrapping_sub(4)] {
            let mut b = [0u8; 4];
            if e.read(at, &mut b).is_err() {
                continue;
            }
            let Some(func) = pal_function(u32::from_le_bytes(b)) else { continue };
            let what = match func {
                PAL_SWPIPL => {
                    let new = e.reg(Reg::Arg(0))? & 7;
                    e.set_reg(Reg::Ret, *irq)?;
                    *irq = new;
                    "call_pal swpipl"
                }
                PAL_RDPS => {
                    e.set_reg(Reg::Ret, *irq)?;
                    "call_pal rdps"
                }
                PAL_WHAMI => {
                    e.set_reg(Reg::Ret, u64::from(cpu))?;
                    "call_pal whami"
                }
                PAL_BUGCHK => {
                    let mut l = [0u8; 4];
                    let mut f = [0u8; 8];
                    let line = e.read(at + 4, &mut l).ok().map(|()| u32::from_le_bytes(l));
                    let file = e.read(at + 8, &mut f).ok().map(|()| u64::from_le_bytes(f));
                    let file = file.and_then(|p| read_cstr(e, p));
                    return Ok(Some(TrapAction::Bug { file, line, what: "BUG() (call_pal bugchk)".into() }));
                }
                _ => continue,
            };
            e.set_reg(Reg::Pc, at + 4)?;
            return Ok(Some(TrapAction::Emulated { what }));
        }
        Ok(None)
    }
    fn typical_static_size(&self) -> u64 {
        // No real alpha boot was measured here; a size in the range of
        // the other 64-bit arches' (87-217 KiB) defconfig kernels.
        96 << 10
    }
}

/// A NUL-terminated string of guest memory (at most 256 bytes).
pub(crate) fn read_cstr(e: &mut dyn Engine, addr: u64) -> Option<String> {
    let mut out = Vec::new();
    for i in 0..256u64 {
        let mut b = [0u8; 1];
        e.read(addr + i, &mut b).ok()?;
        if b[0] == 0 {
            break;
        }
        out.push(b[0]);
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}
