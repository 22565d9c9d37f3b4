//! s390x's kernel runtime ABI (6.1): r2-r6 then the stack above the
//! 160-byte register save area, return to r14; the lowcore (the page at
//! address 0, per CPU through the prefix register) holds `percpu_offset`,
//! `cpu_nr`, `preempt_count` and `current_task` at the offsets the tree's
//! `struct lowcore` has.  The expoline thunks `__s390_indirect_jump_rN` are
//! real `exrl` code, for kernels that export them (EXPOLINE_EXTERN).

use crate::engine::{Engine, EngineError};
use crate::runtime::{reg_then_stack_arg, return_to_link_register, KernelAbi, KernelCpu, PreemptLoc, RtAbi};

pub struct S390xKernel;

const THUNK_NAMES: [&str; 15] = [
    "__s390_indirect_jump_r0",
    "__s390_indirect_jump_r1",
    "__s390_indirect_jump_r2",
    "__s390_indirect_jump_r3",
    "__s390_indirect_jump_r4",
    "__s390_indirect_jump_r5",
    "__s390_indirect_jump_r6",
    "__s390_indirect_jump_r7",
    "__s390_indirect_jump_r8",
    "__s390_indirect_jump_r9",
    "__s390_indirect_jump_r10",
    "__s390_indirect_jump_r11",
    "__s390_indirect_jump_r12",
    "__s390_indirect_jump_r13",
    "__s390_indirect_jump_r14",
];

impl KernelAbi for S390xKernel {
    fn thunks(&self) -> Vec<(&'static str, Vec<u8>)> {
        THUNK_NAMES
            .iter()
            .enumerate()
            .skip(1)
            .map(|(r, n)| {
                // exrl %r0,0f; j .; 0: br %rN  (arch/s390/lib/expoline)
                (*n, vec![0xc6, 0x00, 0x00, 0x00, 0x00, 0x04, 0xa7, 0xf4, 0x00, 0x00, 0x07, 0xf0 | r as u8])
            })
            .collect()
    }
    fn slot_fill(&self) -> &'static [u8] {
        &[0, 0] // opcode 0x00: an operation exception
    }
    fn arg_word(&self, e: &mut dyn Engine, i: usize) -> Result<u64, EngineError> {
        reg_then_stack_arg(e, i, 5, 160, 8, true)
    }
    fn host_return(&self, e: &mut dyn Engine, value: Option<u64>) -> Result<(), EngineError> {
        return_to_link_register(e, value, 0)
    }
    fn enter_kernel_cpu(&self, e: &mut dyn Engine, k: &KernelCpu, abi: &RtAbi) -> Result<(), EngineError> {
        let Some(lc) = abi.lowcore else { return Ok(()) };
        e.write(lc.cpu_nr, &k.cpu.to_be_bytes())?;
        e.write(lc.preempt_count, &(abi.preempt_enabled as u32).to_be_bytes())?;
        e.write(lc.current_task, &k.task.to_be_bytes())
    }
    fn preempt_count(&self) -> PreemptLoc {
        PreemptLoc::Lowcore
    }
    fn bug_insn_len(&self, _insn: &[u8]) -> u64 {
        4 // mc 0,0
    }
    fn typical_static_size(&self) -> u64 {
        // Debian 6.1 s390x boots print "percpu: Embedded 32 pages/cpu s90624".
        90_624
    }
}
