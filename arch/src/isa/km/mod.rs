//! km: a no-MMU kernel (riscv64 in M-mode, as on the Kendryte K210) with
//! the percpu-km backend (`CONFIG_NEED_PER_CPU_KM`, mm/percpu-km.c): every
//! chunk is one contiguous power-of-two block of RAM, fully populated at
//! creation; `tp` = current thread_info, `->cpu` indexes
//! `__per_cpu_offset[]`.
//!
//! # Layout
//!
//! No MMU: addresses are physical and everything lives in RAM, which starts
//! at `0x8000_0000` as on the K210 (and QEMU's `virt`).  The K210 has 8 MiB;
//! this layout gives 1 GiB so that thousands of CPUs fit (a km chunk is
//! `nr_units * unit_size` rounded up to a power of two: 4096 CPUs need
//! 256 MiB per chunk).
//!
//! | range | what |
//! |---|---|
//! | `0x8000_0000` | kernel image (loaded at the start of RAM) |
//! | `0x8080_0000` | `__per_cpu_start` (8 MiB into the image) |
//! | `0x8100_0000` .. `0xb000_0000` | memblock (the "linear map"): the first chunk and every km chunk |
//! | `0xb000_0000` | module area (near) |
//! | `0xb800_0000` | module area (far: the top of RAM; no-MMU has nothing farther) |
//! | `0xc000_0000` .. `0x1_0000_0000` | placeholder vmalloc range: no-MMU has no vmalloc and no km chunk uses it |
//!
//! riscv reaches symbols with `auipc` pairs (PCREL_HI20 + PCREL_LO12_I,
//! +-2 GiB); all of RAM is within reach, so modules need no weak percpu and
//! there is no FAR chunk 4 GiB away (no 32-bit truncation bug is planted).
//!
//! # One group
//!
//! percpu-km can serve one group only (`pcpu_verify_alloc_info`: "can't
//! handle more than one group").  The generic `setup_per_cpu_areas` passes
//! no `cpu_distance_fn` and always makes one group; riscv with NUMA uses
//! `GENERIC_ARCH_NUMA`'s setup, which passes `pcpu_cpu_distance`, and a
//! multi-node topology then makes several groups, which the km backend
//! refuses.  [`Isa::setup_percpu`] reproduces that refusal.

pub mod runtime;

use percpu_core::alloc_info::{build_alloc_info, AllocInfoParams};
use percpu_core::backend::BackendKind;
use percpu_core::first_chunk::verify_for_km;
use percpu_core::percpu::{Percpu, PercpuConfig, PercpuSetupError};
use percpu_core::{KernelProfile, Topology};

use super::generic::{self, KernelLayout, MIB};
use super::{CpuContext, Isa, IsaInfo, ModulePlacement, OffsetModel, Reach, Variant};
use crate::engine::unicorn::UnicornEngine;
use crate::engine::{Cpu, Engine, EngineError, Reg};

/// `EM_RISCV`.
pub const EM_RISCV: u16 = 243;
pub const RAM_START: u64 = 0x8000_0000;
pub const RAM_END: u64 = 0xc000_0000;

pub fn layout() -> KernelLayout {
    KernelLayout {
        kernel_base: RAM_START,
        per_cpu_start: RAM_START + 8 * MIB,
        memblock: RAM_START + 16 * MIB..0xb000_0000,
        vmalloc: RAM_END..0x1_0000_0000,
        modules_near: 0xb000_0000,
        modules_far: 0xb800_0000,
    }
}

static VARIANTS: [Variant; 1] = [Variant { name: "default", fixture_dir: "riscv64", model: OffsetModel::ThreadInfo }];

static REACH: [Reach; 1] = [Reach {
    how: "auipc + addi/ld/sd (R_RISCV_PCREL_HI20 + R_RISCV_PCREL_LO12_I/S)",
    limit: "+-2 GiB from the code (all of RAM here)",
}];

/// The km (riscv64 no-MMU) adapter.
pub struct Km;

pub const KM: Km = Km;

static INFO: IsaInfo = IsaInfo {
    name: "km",
    cpu: Cpu::Riscv64,
    variants: &VARIANTS,
    elf_machine: EM_RISCV,
    ptr_bits: 64,
    big_endian: false,
    reach: &REACH,
    default_placement: ModulePlacement::Near,
};

impl Isa for Km {
    fn kernel_abi(&self) -> Option<&'static dyn crate::runtime::KernelAbi> {
        Some(&runtime::RiscvKernel)
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
        generic::generic_config(self, topology, static_size, BackendKind::Km, true, kernel)
    }
    /// [`Percpu::new`] forms a single group for km whatever the topology;
    /// here the groups are first formed as the NUMA-aware setup forms them
    /// (with the distance function) and more than one is refused with the
    /// core's own error, "percpu-km can't handle more than one group".
    fn setup_percpu(&self, cfg: PercpuConfig) -> Result<Percpu, PercpuSetupError> {
        let ai = build_alloc_info(&AllocInfoParams {
            static_size: cfg.static_size,
            reserved_size: cfg.reserved_size,
            dyn_size: cfg.dyn_size,
            atom_size: cfg.atom_size,
            page_size: cfg.space.page_size() as usize,
            topology: &cfg.topology,
            use_distance: cfg.use_distance,
            dyn_early_size: cfg.kernel.dynamic_early_size,
        })?;
        verify_for_km(&ai, cfg.space.page_size() as usize)?;
        Percpu::new(cfg)
    }
    fn new_engine(&self) -> Result<Box<dyn Engine>, EngineError> {
        Ok(Box::new(UnicornEngine::new(Cpu::Riscv64)?))
    }
    fn enter_cpu(&self, engine: &mut dyn Engine, _variant: &Variant, ctx: &CpuContext) -> Result<(), EngineError> {
        generic::enter_thread_info(engine, Reg::Tp, false, ctx)
    }
}
