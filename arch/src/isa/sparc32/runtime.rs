//! sparc32's kernel runtime ABI (6.1): `%o0`-`%o5` then the caller's
//! argument words from `%sp + 92` (after the 64-byte window save area, the
//! struct-return word and six register-argument homes), 64-bit values in
//! two consecutive words; a leaf return to `%o7 + 8`.  `%g6` is the current
//! thread_info.  Percpu operations call `arch_local_irq_save`/`_restore`
//! (host functions here), WARN calls `warn_slowpath_fmt`, and BUG calls
//! `do_BUG(file, line)` then traps (`ta 5`).

use crate::engine::{Engine, EngineError};
use crate::runtime::{reg_then_stack_arg, return_to_link_register, KernelAbi, TrapAction};

pub struct Sparc32Kernel;

/// `ta 5`, what GCC emits for `__builtin_trap()` on SPARC.
const TA_5: u32 = 0x91d0_2005;

impl KernelAbi for Sparc32Kernel {
    fn slot_fill(&self) -> &'static [u8] {
        &[0, 0, 0, 0] // unimp 0
    }
    fn arg_word(&self, e: &mut dyn Engine, i: usize) -> Result<u64, EngineError> {
        reg_then_stack_arg(e, i, 6, 92, 4, true)
    }
    fn host_return(&self, e: &mut dyn Engine, value: Option<u64>) -> Result<(), EngineError> {
        return_to_link_register(e, value, 8)
    }
    fn handle_trap(
        &self,
        _e: &mut dyn Engine,
        _pc: u64,
        insn: u32,
        _irq: &mut u64,
        _cpu: u32,
    ) -> Result<Option<TrapAction>, EngineError> {
        Ok((insn == TA_5).then(|| TrapAction::Bug { file: None, line: None, what: "BUG() (ta 5)".into() }))
    }
    fn typical_static_size(&self) -> u64 {
        // No real sparc32 SMP boot was measured here (QEMU's sun4m does
        // not boot SMP kernels); a 32-bit kernel's static area is smaller.
        48 << 10
    }
}
