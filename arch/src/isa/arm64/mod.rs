//! arm64: the percpu offset lives in a thread-ID system register.
//!
//! * `el1` (fixtures in `arm64`): the kernel runs at EL1 and keeps this
//!   CPU's offset in `TPIDR_EL1`.
//! * `el2` (fixtures in `arm64-vhe`): a VHE kernel runs at EL2 and keeps it
//!   in `TPIDR_EL2` (the `ALTERNATIVE` in `__my_cpu_offset`).  The code must
//!   really run at EL2: `mrs tpidr_el2` is UNDEFINED at EL1.  Unicorn's
//!   Cortex-A72 model has EL2 and EL3; the engine starts at EL1h, and
//!   [`Arm64::enter_cpu`] writes `PSTATE` = EL2h (0x3c9: DAIF masked, EL2,
//!   SP_EL2) before each call, then writes `TPIDR_EL2` through the
//!   CP-register API (which also rebuilds QEMU's cached hflags, so the new
//!   exception level takes effect).  `TPIDR_EL1` is left alone (zero): a
//!   VHE kernel does not maintain it, which is what a hard-coded
//!   `mrs tpidr_el1` finds.
//!
//! Layout (48-bit VA, 4 KiB pages, `arch/arm64/include/asm/memory.h` of
//! 5.x/6.x): linear map at `0xffff000000000000` with 64 GiB of RAM, the
//! 128 MiB module region at `0xffff800000000000`, the kernel image at
//! `KIMAGE_VADDR` = `0xffff800008000000`, vmalloc above it.  Code reaches
//! percpu symbols with `adrp` + `add` (`ADR_PREL_PG_HI21`,
//! `ADD_ABS_LO12_NC`): +-4 GiB from the code.  The generic
//! `setup_per_cpu_areas` embeds the first chunk with PAGE_SIZE atoms and
//! NUMA distance grouping.
//!
//! The page size is a field so 16 and 64 KiB kernels can be added as
//! further adapters; [`ARM64`] is the 4 KiB one.

pub mod runtime;

use percpu_core::backend::BackendKind;
use percpu_core::first_chunk::FirstChunkKind;
use percpu_core::percpu::PercpuConfig;
use percpu_core::{KernelProfile, Topology};
use unicorn_engine::RegisterARM64;

use super::{CpuContext, Isa, IsaInfo, KernelLayout, ModulePlacement, OffsetModel, Reach, Variant};
use crate::engine::unicorn::UnicornEngine;
use crate::engine::{Cpu, Engine, EngineError, Reg};

/// `PAGE_OFFSET` with 48-bit VAs.
pub const LINEAR_MAP_START: u64 = 0xffff_0000_0000_0000;
/// RAM in the linear map: 64 GiB.
pub const RAM_SIZE: u64 = 64 << 30;
/// `MODULES_VADDR`: the 128 MiB module region just below the kernel image.
pub const MODULES_VADDR: u64 = 0xffff_8000_0000_0000;
/// `KIMAGE_VADDR`: the kernel image.
pub const KIMAGE_VADDR: u64 = 0xffff_8000_0800_0000;
/// vmalloc (above the kernel image, below vmemmap).
pub const VMALLOC_START: u64 = 0xffff_8000_8000_0000;
pub const VMALLOC_END: u64 = 0xffff_fbff_c000_0000;
/// Modules placed "far": 8 GiB above the kernel image (out of `adrp`
/// reach of it), far from the linear map and from the vmalloc chunks the
/// percpu vm backend takes from the top of vmalloc.
pub const MODULES_FAR: u64 = KIMAGE_VADDR + (8 << 30);
/// Link address of `__per_cpu_start` inside the kernel image (32 MiB in).
pub const PERCPU_LINK: u64 = KIMAGE_VADDR + (32 << 20);

/// `PSTATE` values: DAIF masked, AArch64, EL1h / EL2h.
pub const PSTATE_EL1H: u64 = 0x3c5;
pub const PSTATE_EL2H: u64 = 0x3c9;

static VARIANTS: [Variant; 2] = [
    Variant { name: "el1", fixture_dir: "arm64", model: OffsetModel::TpidrEl1 },
    Variant { name: "el2", fixture_dir: "arm64-vhe", model: OffsetModel::TpidrEl2 },
];

static REACH: [Reach; 1] = [Reach {
    how: "adrp + add (R_AARCH64_ADR_PREL_PG_HI21 + R_AARCH64_ADD_ABS_LO12_NC), offset from TPIDR_EL1/TPIDR_EL2",
    limit: "+-4 GiB from the code (the page of the symbol)",
}];

/// The arm64 adapter (one per kernel page size).
#[derive(Debug)]
pub struct Arm64 {
    pub page_size: u64,
}

/// arm64 with 4 KiB pages.
pub static ARM64: Arm64 = Arm64 { page_size: 4096 };

static INFO: IsaInfo = IsaInfo {
    name: "arm64",
    cpu: Cpu::Arm64,
    variants: &VARIANTS,
    elf_machine: 183, // EM_AARCH64
    ptr_bits: 64,
    big_endian: false,
    reach: &REACH,
    default_placement: ModulePlacement::Near,
};

impl Isa for Arm64 {
    fn kernel_abi(&self) -> Option<&'static dyn crate::runtime::KernelAbi> {
        Some(&runtime::Arm64Kernel)
    }
    fn info(&self) -> &'static IsaInfo {
        &INFO
    }
    fn page_size(&self) -> u64 {
        self.page_size
    }
    fn layout(&self) -> KernelLayout {
        KernelLayout {
            kernel_base: KIMAGE_VADDR,
            per_cpu_start: PERCPU_LINK,
            memblock: LINEAR_MAP_START..LINEAR_MAP_START + RAM_SIZE,
            vmalloc: VMALLOC_START..VMALLOC_END,
            modules_near: MODULES_VADDR,
            modules_far: MODULES_FAR,
        }
    }
    fn percpu_config_for(
        &self,
        _variant: &Variant,
        topology: Topology,
        static_size: usize,
        kernel: &KernelProfile,
    ) -> PercpuConfig {
        PercpuConfig {
            space: self.address_space(),
            topology,
            static_size,
            reserved_size: kernel.module_reserve,
            dyn_size: kernel.dynamic_reserve(64),
            atom_size: self.page_size as usize,
            first_chunk: FirstChunkKind::Embed,
            backend: BackendKind::Vm,
            per_cpu_start: self.layout().per_cpu_start,
            use_distance: true,
            need_page_first_chunk: true,
            kernel: kernel.clone(),
            memory: None,
        }
    }
    fn new_engine(&self) -> Result<Box<dyn Engine>, EngineError> {
        Ok(Box::new(UnicornEngine::new(Cpu::Arm64)?))
    }
    fn enter_cpu(&self, engine: &mut dyn Engine, variant: &Variant, ctx: &CpuContext) -> Result<(), EngineError> {
        let (pstate, reg) = match variant.model {
            OffsetModel::TpidrEl2 => (PSTATE_EL2H, Reg::TpidrEl2),
            _ => (PSTATE_EL1H, Reg::TpidrEl1),
        };
        set_exception_level(engine, pstate)?;
        // After PSTATE: a CP-register write makes Unicorn rebuild the
        // cached hflags, so the exception level takes effect.
        engine.set_reg(reg, ctx.per_cpu_offset)
    }
}

/// Put the CPU at the exception level `pstate` names.  Only Unicorn is
/// known to run arm64 here; its `PSTATE` register is reached by number.
fn set_exception_level(engine: &mut dyn Engine, pstate: u64) -> Result<(), EngineError> {
    if engine.name() != "unicorn" {
        return Err(EngineError::Engine {
            engine: engine.name(),
            reason: "the arm64 adapter can only set the exception level on the Unicorn engine".into(),
        });
    }
    engine.set_reg(Reg::Raw(RegisterARM64::PSTATE as u32), pstate)
}
