//! s390x (64-bit big-endian, 4 KiB pages): the generic
//! `setup_per_cpu_areas`; code reads this CPU's offset from the lowcore
//! (`lg %r, 0x3b8`), the per-CPU prefix page the CPU sees at address 0.
//!
//! # Layout (the real one: identity map from 0, 3-level kernel space)
//!
//! | range | what |
//! |---|---|
//! | `0x0` .. `0x2000` | lowcore (8 KiB; per CPU through the prefix register; here one page rewritten by [`Isa::enter_cpu`]) |
//! | `0x10_0000` | kernel text (`_stext` at 1 MiB) |
//! | `0x80_0000` | `__per_cpu_start` (8 MiB, in the image) |
//! | `0x0` .. `0x1_0000_0000` | identity-mapped RAM (4 GiB) |
//! | `0x4000_0000` | module area within larl reach (near: 1 GiB) |
//! | `0x8000_0000` .. `0x1_0000_0000` | memblock above `MAX_DMA_ADDRESS` (2 GiB, asm/dma.h): the generic `pcpu_fc_alloc` asks memblock for memory from `__pa(MAX_DMA_ADDRESS)` up, so the first chunk lands here |
//! | `0x380_0000_0000` .. `0x3ff_8000_0000` | `VMALLOC_START` .. `VMALLOC_END`: 510 GiB (`VMALLOC_DEFAULT_SIZE` = 512 GiB - `MODULES_LEN`) below the module area: percpu vm chunks |
//! | `0x3ff_8000_0000` .. `0x400_0000_0000` | `MODULES_VADDR` .. `MODULES_END` = vmax = `_REGION2_SIZE` (4 TiB): modules (far, the realistic placement) |
//!
//! Modules at `MODULES_VADDR` are ~4 TiB from the kernel's percpu section,
//! so a module reaching its percpu variables with `larl` (R_390_PC32DBL,
//! +-4 GiB) fails to relocate; s390 modules use weak percpu (GOT, GOTENT)
//! for that reason.  FAR dynamic chunks (top of vmalloc) are ~4 TiB from
//! the first chunk.

pub mod runtime;

use percpu_core::backend::BackendKind;
use percpu_core::percpu::PercpuConfig;
use percpu_core::{KernelProfile, Topology};

use super::generic::{self, KernelLayout, GIB, MIB};
use super::{CpuContext, FixedMapping, Isa, IsaInfo, ModulePlacement, OffsetModel, OffsetWord, Reach, Variant};
use crate::engine::unicorn::UnicornEngine;
use crate::engine::{Cpu, Engine, EngineError, Perms};

/// `EM_S390` (s390x is its 64-bit class).
pub const EM_S390: u16 = 22;
/// Offset of `percpu_offset` in the lowcore of current kernels.
pub const LC_PERCPU_OFFSET: u32 = 0x3b8;
/// Lowcore size on 64-bit (two pages).
pub const LOWCORE_SIZE: u64 = 0x2000;
/// asm/dma.h: the 2 GiB zone split of the 31-bit heritage.
pub const MAX_DMA_ADDRESS: u64 = 0x8000_0000;
pub const RAM_SIZE: u64 = 4 * GIB;
/// `_REGION2_SIZE`: the top of a 3-level kernel address space.
pub const VMAX: u64 = 1 << 42;
pub const MODULES_LEN: u64 = 2 * GIB;
pub const MODULES_VADDR: u64 = VMAX - MODULES_LEN;
pub const VMALLOC_END: u64 = MODULES_VADDR;
pub const VMALLOC_START: u64 = VMALLOC_END - (512 * GIB - MODULES_LEN);

pub fn layout() -> KernelLayout {
    KernelLayout {
        kernel_base: MIB,
        per_cpu_start: 8 * MIB,
        memblock: MAX_DMA_ADDRESS..RAM_SIZE,
        vmalloc: VMALLOC_START..VMALLOC_END,
        modules_near: GIB,
        modules_far: MODULES_VADDR,
    }
}

static VARIANTS: [Variant; 1] = [Variant { name: "default", fixture_dir: "s390x", model: OffsetModel::Lowcore }];

static REACH: [Reach; 2] = [
    Reach {
        how: "larl (R_390_PC32DBL): the kernel image",
        limit: "+-4 GiB from the code; modules without weak percpu overflow",
    },
    Reach { how: "GOT load (R_390_GOTENT): modules, weak percpu (-fPIC)", limit: "any 64-bit address" },
];

/// The s390x adapter.
pub struct S390x;

pub const S390X: S390x = S390x;

static INFO: IsaInfo = IsaInfo {
    name: "s390x",
    cpu: Cpu::S390x,
    variants: &VARIANTS,
    elf_machine: EM_S390,
    ptr_bits: 64,
    big_endian: true,
    reach: &REACH,
    // Far: modules sit below 4 TiB, far above the identity-mapped percpu area: beyond larl reach.
    default_placement: ModulePlacement::Far,
};

impl Isa for S390x {
    fn kernel_abi(&self) -> Option<&'static dyn crate::runtime::KernelAbi> {
        Some(&runtime::S390xKernel)
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
        Ok(Box::new(UnicornEngine::new(Cpu::S390x)?))
    }
    /// Store `per_cpu_offset` (8 bytes, big-endian) at the lowcore's
    /// `percpu_offset` (`ctx.lowcore_percpu_offset`, 0x3b8 when the note
    /// says 0).  The lowcore ([`Isa::fixed_mappings`]) is mapped here if the
    /// runner has not mapped it.
    fn enter_cpu(&self, engine: &mut dyn Engine, _variant: &Variant, ctx: &CpuContext) -> Result<(), EngineError> {
        let off = self.offset_word(ctx).expect("s390x keeps the offset in the lowcore").slot.start;
        let bytes = ctx.per_cpu_offset.to_be_bytes();
        if engine.write(off, &bytes).is_err() {
            engine.map(0, LOWCORE_SIZE, Perms::RW)?;
            engine.write(off, &bytes)?;
        }
        Ok(())
    }
    fn fixed_mappings(&self, _variant: &Variant) -> Vec<FixedMapping> {
        vec![FixedMapping { addr: 0, size: LOWCORE_SIZE, perms: Perms::RW, what: "lowcore" }]
    }
    fn offset_word(&self, ctx: &CpuContext) -> Option<OffsetWord> {
        let off = u64::from(match ctx.lowcore_percpu_offset {
            0 => LC_PERCPU_OFFSET,
            o => o,
        });
        Some(OffsetWord { slot: off..off + 8, area: 0..LOWCORE_SIZE, area_name: "lowcore", field: "percpu_offset" })
    }
}
