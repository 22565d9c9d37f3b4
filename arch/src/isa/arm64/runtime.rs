//! arm64's kernel runtime ABI (6.1): AAPCS64 (x0-x7, then the stack;
//! variadic arguments the same way on Linux), `current` in `SP_EL0` (the
//! task, with thread_info and its 64-bit preempt count inside), and the
//! `cpu_number` percpu variable of `smp_processor_id()`.

use crate::engine::{Engine, EngineError, Reg};
use crate::runtime::{reg_then_stack_arg, return_to_link_register, KernelAbi, KernelCpu, PercpuInit, PercpuVar, RtAbi};

pub struct Arm64Kernel;

impl KernelAbi for Arm64Kernel {
    fn percpu_vars(&self, _abi: &RtAbi) -> Vec<PercpuVar> {
        vec![PercpuVar { name: "cpu_number", size: 4, init: PercpuInit::CpuNumber }]
    }
    fn slot_fill(&self) -> &'static [u8] {
        &[0, 0, 0, 0] // udf #0
    }
    fn arg_word(&self, e: &mut dyn Engine, i: usize) -> Result<u64, EngineError> {
        reg_then_stack_arg(e, i, 8, 0, 8, false)
    }
    fn host_return(&self, e: &mut dyn Engine, value: Option<u64>) -> Result<(), EngineError> {
        return_to_link_register(e, value, 0)
    }
    fn enter_kernel_cpu(&self, e: &mut dyn Engine, k: &KernelCpu, _abi: &RtAbi) -> Result<(), EngineError> {
        e.set_reg(Reg::SpEl0, k.task)
    }
    fn typical_static_size(&self) -> u64 {
        // Debian 6.1 arm64 boots print "percpu: Embedded 31 pages/cpu s87272".
        87_272
    }
}
