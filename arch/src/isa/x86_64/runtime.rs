//! x86_64's kernel runtime ABI (6.1): the SysV calling convention, the
//! percpu variables `asm/percpu.h`, `asm/preempt.h`, `asm/current.h` and
//! `asm/smp.h` read (`__preempt_count`, `this_cpu_off`, `cpu_number`,
//! `current_task`; 6.2 moved them into `pcpu_hot`, not modelled yet), and
//! the return and retpoline thunks as real code.

use crate::engine::{Engine, EngineError, Reg};
use crate::runtime::{KernelAbi, PercpuInit, PercpuVar, PreemptLoc, RtAbi};

pub struct X86_64Kernel;

/// `jmp *%reg` for `__x86_indirect_thunk_<reg>` (retpolines become plain
/// indirect jumps: there is no speculation to guard against here).
const INDIRECT_THUNKS: [(&str, [u8; 3]); 15] = [
    ("__x86_indirect_thunk_rax", [0x90, 0xff, 0xe0]),
    ("__x86_indirect_thunk_rcx", [0x90, 0xff, 0xe1]),
    ("__x86_indirect_thunk_rdx", [0x90, 0xff, 0xe2]),
    ("__x86_indirect_thunk_rbx", [0x90, 0xff, 0xe3]),
    ("__x86_indirect_thunk_rbp", [0x90, 0xff, 0xe5]),
    ("__x86_indirect_thunk_rsi", [0x90, 0xff, 0xe6]),
    ("__x86_indirect_thunk_rdi", [0x90, 0xff, 0xe7]),
    ("__x86_indirect_thunk_r8", [0x41, 0xff, 0xe0]),
    ("__x86_indirect_thunk_r9", [0x41, 0xff, 0xe1]),
    ("__x86_indirect_thunk_r10", [0x41, 0xff, 0xe2]),
    ("__x86_indirect_thunk_r11", [0x41, 0xff, 0xe3]),
    ("__x86_indirect_thunk_r12", [0x41, 0xff, 0xe4]),
    ("__x86_indirect_thunk_r13", [0x41, 0xff, 0xe5]),
    ("__x86_indirect_thunk_r14", [0x41, 0xff, 0xe6]),
    ("__x86_indirect_thunk_r15", [0x41, 0xff, 0xe7]),
];

impl KernelAbi for X86_64Kernel {
    fn percpu_vars(&self, _abi: &RtAbi) -> Vec<PercpuVar> {
        vec![
            PercpuVar { name: "current_task", size: 8, init: PercpuInit::CurrentTask },
            PercpuVar { name: "this_cpu_off", size: 8, init: PercpuInit::CpuOffset },
            PercpuVar { name: "__preempt_count", size: 4, init: PercpuInit::PreemptEnabled },
            PercpuVar { name: "cpu_number", size: 4, init: PercpuInit::CpuNumber },
        ]
    }
    fn thunks(&self) -> Vec<(&'static str, Vec<u8>)> {
        let mut t = vec![
            // ret; int3 (arch/x86/lib/retpoline.S)
            ("__x86_return_thunk", vec![0xc3, 0xcc]),
            // CONFIG_FUNCTION_TRACER's entry hook: returns at once.
            ("__fentry__", vec![0xc3]),
        ];
        t.extend(INDIRECT_THUNKS.iter().map(|(n, c)| (*n, c.to_vec())));
        t
    }
    fn slot_fill(&self) -> &'static [u8] {
        &[0x0f, 0x0b] // ud2
    }
    fn arg_word(&self, e: &mut dyn Engine, i: usize) -> Result<u64, EngineError> {
        if i < 6 {
            return e.reg(Reg::Arg(i as u8));
        }
        // Stopped at the callee's first instruction: [rsp] is the return address.
        let sp = e.reg(Reg::Sp)?;
        let mut b = [0u8; 8];
        e.read(sp + 8 + 8 * (i as u64 - 6), &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn host_return(&self, e: &mut dyn Engine, value: Option<u64>) -> Result<(), EngineError> {
        if let Some(v) = value {
            e.set_reg(Reg::Ret, v)?;
        }
        let sp = e.reg(Reg::Sp)?;
        let mut b = [0u8; 8];
        e.read(sp, &mut b)?;
        e.set_reg(Reg::Sp, sp + 8)?;
        e.set_reg(Reg::Pc, u64::from_le_bytes(b))
    }
    fn preempt_count(&self) -> PreemptLoc {
        PreemptLoc::PercpuVar("__preempt_count")
    }
    fn bug_insn_len(&self, _insn: &[u8]) -> u64 {
        2 // ud2
    }
    fn typical_static_size(&self) -> u64 {
        // Debian 6.1 amd64 boots print "percpu: Embedded 62 pages/cpu s217088".
        217_088
    }
}
