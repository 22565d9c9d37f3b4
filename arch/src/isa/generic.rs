//! What the adapters of arches using the generic `setup_per_cpu_areas`
//! (mm/percpu.c: sparc32, alpha, s390x, riscv64 no-MMU) share: the kernel
//! address layout they describe, the embed-first-chunk configuration, and
//! entering a CPU through a thread_info register (offset model 5).
//!
//! The generic setup is `pcpu_embed_first_chunk(PERCPU_MODULE_RESERVE,
//! PERCPU_DYNAMIC_RESERVE, PAGE_SIZE, NULL, ...)`: embed flavour, page-sized
//! atoms, 8 KiB module reserve, 20/28 KiB dynamic reserve (32/64-bit), and
//! no `cpu_distance_fn`, so every CPU is in one group whatever the NUMA
//! topology; `__per_cpu_offset[cpu] = pcpu_base_addr - __per_cpu_start +
//! unit_off[cpu]`.

use std::ops::Range;

use percpu_core::backend::BackendKind;
use percpu_core::percpu::PercpuConfig;
use percpu_core::{AddressSpace, KernelProfile, Topology};

use super::{CpuContext, Isa, ModulePlacement};
use crate::engine::{Engine, EngineError, Reg};

/// Where an adapter puts everything, as addresses the engine can map.
///
/// The runner lays the kernel image's sections out upwards from
/// `kernel_base` and links its percpu section at `per_cpu_start`, so the
/// image proper must fit in `kernel_base..per_cpu_start`; the static area
/// (`__per_cpu_start`..`__per_cpu_end`, also the load image, which is no
/// CPU's unit) must end before `memblock.start`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelLayout {
    /// Link address of the image's text.
    pub kernel_base: u64,
    /// Link address of `__per_cpu_start` (page aligned).
    pub per_cpu_start: u64,
    /// The part of the linear map that memblock hands the first chunk
    /// (RAM after the kernel image): [`AddressSpace::linear_map`].
    pub memblock: Range<u64>,
    /// The part of the vmalloc area that holds percpu vm chunks
    /// ([`AddressSpace::vmalloc`]); module areas are kept out of it so that
    /// module sections and chunks never overlap.
    pub vmalloc: Range<u64>,
    /// Module area within the arch's reach of the percpu area.
    pub modules_near: u64,
    /// Module area the arch's real layout uses when that is out of reach,
    /// else the farthest mappable place.
    pub modules_far: u64,
}

impl KernelLayout {
    pub fn address_space(&self, ptr_bits: u32, page_size: u64) -> AddressSpace {
        AddressSpace::new(ptr_bits, page_size, self.memblock.clone(), self.vmalloc.clone())
            .expect("adapter layouts are valid address spaces")
    }

    pub fn module_base(&self, placement: ModulePlacement) -> u64 {
        match placement {
            ModulePlacement::Near => self.modules_near,
            ModulePlacement::Far => self.modules_far,
        }
    }
}

/// The generic `setup_per_cpu_areas` configuration.  `use_distance`:
/// whether the arch's setup passes a `cpu_distance_fn` (the generic one
/// does not; riscv's `GENERIC_ARCH_NUMA` one does).
pub fn generic_config(
    isa: &impl Isa,
    topology: Topology,
    static_size: usize,
    backend: BackendKind,
    use_distance: bool,
    kernel: &KernelProfile,
) -> PercpuConfig {
    let mut cfg = PercpuConfig::generic_for(kernel, isa.address_space(), topology, static_size);
    cfg.per_cpu_start = isa.layout().per_cpu_start;
    cfg.backend = backend;
    cfg.use_distance = use_distance;
    cfg.need_page_first_chunk = false;
    cfg
}

/// Offset model 5: point the arch's thread_info register at
/// `ctx.thread_info` and store `ctx.cpu` as the 4-byte `int cpu` at
/// `ti_cpu_offset` in target byte order (the runner may write it too; the
/// two writes agree).
pub fn enter_thread_info(
    engine: &mut dyn Engine,
    reg: Reg,
    big_endian: bool,
    ctx: &CpuContext,
) -> Result<(), EngineError> {
    let cpu = if big_endian { ctx.cpu.to_be_bytes() } else { ctx.cpu.to_le_bytes() };
    engine.write(ctx.thread_info.wrapping_add(u64::from(ctx.ti_cpu_offset)), &cpu)?;
    engine.set_reg(reg, ctx.thread_info)
}

/// 1 MiB, 1 GiB, for layouts.
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;
