//! sparc32 (SRMMU, 32-bit big-endian): the generic `setup_per_cpu_areas`,
//! `%g6` = current thread_info, `->cpu` indexes `__per_cpu_offset[]`.
//!
//! # Layout (the real sparc32 kernel's, unrelocated)
//!
//! | range | what |
//! |---|---|
//! | `0xf000_0000` (KERNBASE = PAGE_OFFSET) .. `0xfc00_0000` | lowmem linear map, `SRMMU_MAXMEM` = 192 MiB |
//! | `0xf000_4000` | kernel text (`KERNBASE + 0x4000`, after the trap table page) |
//! | `0xf080_0000` | `__per_cpu_start` (the image's percpu section, 8 MiB into it) |
//! | `0xf100_0000` .. `0xfc00_0000` | memblock: RAM after the 16 MiB kernel image, where the embedded first chunk goes |
//! | `0xfe60_0000` .. `0xffc0_0000` | `VMALLOC_START` .. `VMALLOC_END`; modules are vmalloc'ed (`MODULES_VADDR` = `VMALLOC_START`) |
//! | `0xfe60_0000` .. `0xfe80_0000` | module area (near, the realistic placement) |
//! | `0xfe80_0000` .. `0xffc0_0000` | percpu vm chunks (20 MiB) |
//! | `0x1000_0000` | module area far from the percpu area (3.5 GiB below it) |
//!
//! sparc32 reaches percpu symbols with `sethi %hi(sym)` + `%lo(sym)`
//! (R_SPARC_HI22 + R_SPARC_LO10), which covers the whole 32-bit space and
//! which the module loader applies without an overflow check: modules work
//! at any distance, so "far" is only a demonstration of that.  32-bit
//! pointers make FAR chunks at most ~200 MiB from the first chunk, and the
//! 20 MiB of vmalloc hold only small chunks (NR_CPUS is 32 on a real
//! sparc32; with thousands of CPUs the first chunk still fits lowmem but a
//! vm chunk does not fit vmalloc).

pub mod runtime;

use percpu_core::backend::BackendKind;
use percpu_core::percpu::PercpuConfig;
use percpu_core::{KernelProfile, Topology};

use super::generic::{self, KernelLayout};
use super::{CpuContext, Isa, IsaInfo, ModulePlacement, OffsetModel, Reach, Variant};
use crate::engine::unicorn::UnicornEngine;
use crate::engine::{Cpu, Engine, EngineError, Reg};

/// `EM_SPARC`: what `sparc64-linux-gnu-gcc -m32 -mcpu=v8` emits (the
/// fixtures carry 2, not `EM_SPARC32PLUS` 18).
pub const EM_SPARC: u16 = 2;

pub const KERNBASE: u64 = 0xf000_0000;
/// `SRMMU_MAXMEM`: lowmem size.
pub const LOWMEM_SIZE: u64 = 0x0c00_0000;
pub const VMALLOC_START: u64 = 0xfe60_0000;
pub const VMALLOC_END: u64 = 0xffc0_0000;
/// Module area carved out of the bottom of vmalloc.
pub const MODULE_AREA: u64 = 2 << 20;

pub fn layout() -> KernelLayout {
    KernelLayout {
        kernel_base: KERNBASE + 0x4000,
        per_cpu_start: KERNBASE + 8 * generic::MIB,
        memblock: KERNBASE + 16 * generic::MIB..KERNBASE + LOWMEM_SIZE,
        vmalloc: VMALLOC_START + MODULE_AREA..VMALLOC_END,
        modules_near: VMALLOC_START,
        modules_far: 0x1000_0000,
    }
}

static VARIANTS: [Variant; 1] = [Variant { name: "default", fixture_dir: "sparc32", model: OffsetModel::ThreadInfo }];

static REACH: [Reach; 1] = [Reach {
    how: "sethi %hi(sym) + or/ld %lo(sym) (R_SPARC_HI22 + R_SPARC_LO10)",
    limit: "the whole 32-bit address space (applied without an overflow check)",
}];

/// The sparc32 adapter.
pub struct Sparc32;

pub const SPARC32: Sparc32 = Sparc32;

static INFO: IsaInfo = IsaInfo {
    name: "sparc32",
    cpu: Cpu::Sparc32,
    variants: &VARIANTS,
    elf_machine: EM_SPARC,
    ptr_bits: 32,
    big_endian: true,
    reach: &REACH,
    default_placement: ModulePlacement::Near,
};

impl Isa for Sparc32 {
    fn kernel_abi(&self) -> Option<&'static dyn crate::runtime::KernelAbi> {
        Some(&runtime::Sparc32Kernel)
    }
    fn info(&self) -> &'static IsaInfo {
        &INFO
    }
    fn page_size(&self) -> u64 {
        4096
    }
    fn layout(&self) -> KernelLayout {
        layout()
    }
    fn percpu_config_for(
        &self,
        _variant: &Variant,
        topology: Topology,
        static_size: usize,
        kernel: &KernelProfile,
    ) -> PercpuConfig {
        generic::generic_config(self, topology, static_size, BackendKind::Vm, false, kernel)
    }
    fn new_engine(&self) -> Result<Box<dyn Engine>, EngineError> {
        Ok(Box::new(UnicornEngine::new(Cpu::Sparc32)?))
    }
    fn enter_cpu(&self, engine: &mut dyn Engine, _variant: &Variant, ctx: &CpuContext) -> Result<(), EngineError> {
        generic::enter_thread_info(engine, Reg::G6, true, ctx)
    }
}
