//! x86_64: `%gs`-based percpu, in its two flavours.
//!
//! * `zero-based` (up to 6.14, fixtures in `x86_64`): the kernel image's
//!   `.data..percpu` is linked at address 0, so `__per_cpu_start` is 0, a
//!   percpu pointer of the first chunk is a small offset, and the GS base
//!   holds this CPU's *area* (`per_cpu_ptr(__per_cpu_start, cpu)`, which
//!   equals `__per_cpu_offset[cpu]`).  Code reaches percpu symbols with
//!   `%gs:sym` (`R_X86_64_32S`) and, since 6.x, `%gs:sym(%rip)`
//!   (`R_X86_64_PC32`); the latter works from the top-2-GiB kernel and
//!   module areas because the low percpu offsets are within +-2 GiB of them
//!   through wrap-around.
//! * `relative` (6.15+, fixtures in `x86_64-rel`): the percpu section stays
//!   at its link address inside the kernel image in the top 2 GiB
//!   (`-mcmodel=kernel`), the GS base holds this CPU's *offset*, and code
//!   uses `%gs:sym(%rip)`.
//!
//! Layout (`arch/x86/include/asm/page_64_types.h`, `pgtable_64_types.h`,
//! 4-level paging): linear map at `0xffff888000000000` with 64 GiB of RAM,
//! vmalloc at `0xffffc90000000000` (32 TiB), kernel text at
//! `0xffffffff81000000`, modules at `0xffffffffa0000000`.  `setup_per_cpu_areas`
//! embeds the first chunk with 2 MiB (PMD) atoms, groups CPUs by NUMA
//! distance and asks for `PERCPU_FIRST_CHUNK_RESERVE` (the 8 KiB module
//! reserve) plus `PERCPU_MODULE_RESERVE + PERCPU_DYNAMIC_RESERVE -
//! PERCPU_FIRST_CHUNK_RESERVE` (28 KiB in 6.1) of dynamic space.

pub mod runtime;

use percpu_core::backend::BackendKind;
use percpu_core::first_chunk::FirstChunkKind;
use percpu_core::percpu::PercpuConfig;
use percpu_core::{KernelProfile, Topology};

use super::{CpuContext, Isa, IsaInfo, KernelLayout, ModulePlacement, OffsetModel, Reach, Variant};
use crate::engine::unicorn::UnicornEngine;
use crate::engine::{Cpu, Engine, EngineError, Reg};

/// `PAGE_OFFSET` (`__PAGE_OFFSET_BASE_L4`): start of the linear map.
pub const LINEAR_MAP_START: u64 = 0xffff_8880_0000_0000;
/// RAM in the linear map: 64 GiB.
pub const RAM_SIZE: u64 = 64 << 30;
/// `VMALLOC_START` with 4-level paging.
pub const VMALLOC_START: u64 = 0xffff_c900_0000_0000;
/// `VMALLOC_SIZE_TB_L4` = 32 TiB.
pub const VMALLOC_END: u64 = VMALLOC_START + (32 << 40);
/// `__START_KERNEL_map + 16 MiB`: where kernel text is linked.
pub const KERNEL_TEXT: u64 = 0xffff_ffff_8100_0000;
/// `MODULES_VADDR` (without KASLR): 1.5 GiB above `__START_KERNEL_map`.
pub const MODULES_VADDR: u64 = 0xffff_ffff_a000_0000;
/// Modules placed "far": 1 GiB into vmalloc, tens of TiB from the kernel
/// and from the first chunk (linear map), and far below the vmalloc chunks
/// the percpu vm backend takes from the top of vmalloc.
pub const MODULES_FAR: u64 = VMALLOC_START + (1 << 30);
/// Relative model: link address of `__per_cpu_start` inside the kernel
/// image (32 MiB above the text, page aligned).
pub const PERCPU_LINK_RELATIVE: u64 = KERNEL_TEXT + (32 << 20);
/// x86_64's first-chunk atom: a PMD (2 MiB).
pub const ATOM_SIZE: usize = 2 << 20;

static VARIANTS: [Variant; 2] = [
    Variant { name: "zero-based", fixture_dir: "x86_64", model: OffsetModel::X86ZeroBased },
    Variant { name: "relative", fixture_dir: "x86_64-rel", model: OffsetModel::X86Relative },
];

static REACH: [Reach; 3] = [
    Reach {
        how: "%gs:sym, R_X86_64_32S (zero-based: the percpu section is linked at 0)",
        limit: "sym must fit a sign-extended 32-bit value: static and module percpu stay in the first chunk",
    },
    Reach {
        how: "%gs:sym(%rip), R_X86_64_PC32 (relative; zero-based since 6.x)",
        limit: "+-2 GiB from the code (zero-based: the top-2-GiB kernel reaches the low offsets through wrap-around)",
    },
    Reach {
        how: "movl $sym / R_X86_64_32 (zero-extended 32-bit immediate)",
        limit: "sym < 4 GiB: only valid with zero-based percpu (the 2025 BPF JIT breakage)",
    },
];

/// The x86_64 adapter.
#[derive(Debug)]
pub struct X86_64;

static INFO: IsaInfo = IsaInfo {
    name: "x86_64",
    cpu: Cpu::X86_64,
    variants: &VARIANTS,
    elf_machine: 62, // EM_X86_64
    ptr_bits: 64,
    big_endian: false,
    reach: &REACH,
    default_placement: ModulePlacement::Near,
};

impl Isa for X86_64 {
    fn kernel_abi(&self) -> Option<&'static dyn crate::runtime::KernelAbi> {
        Some(&runtime::X86_64Kernel)
    }
    fn info(&self) -> &'static IsaInfo {
        &INFO
    }
    fn page_size(&self) -> u64 {
        4096
    }
    fn layout(&self) -> KernelLayout {
        KernelLayout {
            kernel_base: KERNEL_TEXT,
            // the relative variant's; zero-based links the section at 0
            // (see percpu_config_for)
            per_cpu_start: PERCPU_LINK_RELATIVE,
            memblock: LINEAR_MAP_START..LINEAR_MAP_START + RAM_SIZE,
            vmalloc: VMALLOC_START..VMALLOC_END,
            modules_near: MODULES_VADDR,
            modules_far: MODULES_FAR,
        }
    }
    fn percpu_config_for(
        &self,
        variant: &Variant,
        topology: Topology,
        static_size: usize,
        kernel: &KernelProfile,
    ) -> PercpuConfig {
        PercpuConfig {
            space: self.address_space(),
            topology,
            static_size,
            // PERCPU_FIRST_CHUNK_RESERVE is the module reserve on x86_64;
            // dyn = MODULE_RESERVE + DYNAMIC_RESERVE - FIRST_CHUNK_RESERVE.
            reserved_size: kernel.x86_64_first_chunk_reserve(),
            dyn_size: kernel.x86_64_embed_dyn_size(),
            atom_size: ATOM_SIZE,
            first_chunk: FirstChunkKind::Embed,
            backend: BackendKind::Vm,
            per_cpu_start: match variant.model {
                OffsetModel::X86ZeroBased => 0,
                _ => self.layout().per_cpu_start,
            },
            use_distance: true,
            need_page_first_chunk: true,
            kernel: kernel.clone(),
            memory: None,
        }
    }
    fn default_variant(&self, kernel: &KernelProfile) -> &'static Variant {
        &VARIANTS[usize::from(kernel.x86_64_relative_percpu)]
    }
    fn new_engine(&self) -> Result<Box<dyn Engine>, EngineError> {
        Ok(Box::new(UnicornEngine::new(Cpu::X86_64)?))
    }
    fn enter_cpu(&self, engine: &mut dyn Engine, variant: &Variant, ctx: &CpuContext) -> Result<(), EngineError> {
        let gs = match variant.model {
            // this CPU's area: per_cpu_ptr(__per_cpu_start = 0, cpu)
            OffsetModel::X86ZeroBased => ctx.percpu_area,
            // this CPU's offset
            _ => ctx.per_cpu_offset,
        };
        engine.set_reg(Reg::GsBase, gs)
    }
}
