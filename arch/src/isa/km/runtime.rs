//! riscv64 no-MMU's kernel runtime ABI (6.1): `a0`-`a7` then the stack,
//! return to `ra`; `tp` is the current task with thread_info (preempt
//! count, cpu) at its start.  WARN and BUG are `ebreak` (or `c.ebreak`)
//! with a `__bug_table` entry.

use crate::engine::{Engine, EngineError};
use crate::runtime::{reg_then_stack_arg, return_to_link_register, KernelAbi};

pub struct RiscvKernel;

impl KernelAbi for RiscvKernel {
    fn slot_fill(&self) -> &'static [u8] {
        &[0, 0, 0, 0] // an illegal instruction
    }
    fn arg_word(&self, e: &mut dyn Engine, i: usize) -> Result<u64, EngineError> {
        reg_then_stack_arg(e, i, 8, 0, 8, false)
    }
    fn host_return(&self, e: &mut dyn Engine, value: Option<u64>) -> Result<(), EngineError> {
        return_to_link_register(e, value, 0)
    }
    fn bug_insn_len(&self, insn: &[u8]) -> u64 {
        // Standard instructions have their two low bits set; c.ebreak is 16-bit.
        if insn.first().is_some_and(|b| b & 3 == 3) {
            4
        } else {
            2
        }
    }
    fn typical_static_size(&self) -> u64 {
        // No real riscv64 no-MMU boot was measured here.
        64 << 10
    }
}
