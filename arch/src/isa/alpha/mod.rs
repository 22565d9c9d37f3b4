//! alpha (64-bit little-endian, 8 KiB pages): the generic
//! `setup_per_cpu_areas`, `$8` = current thread_info, `->cpu` indexes
//! `__per_cpu_offset[]`.  Runs on QEMU's alpha CPU in user mode
//! (`qemu-alpha`, see [`crate::engine::qemu_alpha`]).
//!
//! # Layout: the real one, relocated
//!
//! The real kernel addresses (KSEG linear map at `0xfffffc00_00000000`,
//! vmalloc near the top of the 64-bit space) cannot be mapped in
//! `qemu-alpha` user mode, where guest addresses are host addresses below
//! 2^47.  The layout is the real one shifted down by a constant, so every
//! *distance* is the kernel's:
//!
//! relocated = real - (`0xfffffc00_00000000` - [`KSEG_RELOCATED`]),
//! [`KSEG_RELOCATED`] = `0x1000_0000_0000` (16 TiB: clear of the harness at
//! `0x1_2000_0000`, of QEMU's guest mmap area from `0x40_0000_0000`, and of
//! the host's own mappings at `0x55..`/`0x56..` and `0x7f..`).
//!
//! | relocated | real | what |
//! |---|---|---|
//! | `0x1000_0000_0000` | `0xfffffc00_00000000` | KSEG (`PAGE_OFFSET`, the linear map) |
//! | `0x1000_0031_0000` | `0xfffffc00_00310000` | kernel text (the legacy link address) |
//! | `0x1000_0080_0000` | `0xfffffc00_00800000` | `__per_cpu_start` (8 MiB into the image) |
//! | `0x1000_0100_0000` .. `0x1000_4000_0000` | | memblock: 1 GiB of RAM after the 16 MiB image; the first chunk |
//! | `0x1000_4000_0000` | | module area within GP reach (near: 1 GiB above `__per_cpu_start`) |
//! | `0x13fc_0000_0000` .. `0x13fe_0000_0000` | `0xfffffffc_00000000` .. `0xfffffffe_00000000` | vmalloc (`-2*PGDIR_SIZE` .. `-PGDIR_SIZE`, 8 GiB) |
//! | `0x13fc_0000_0000` | `VMALLOC_START` | modules (far, the realistic placement: alpha vmallocs modules) |
//! | `0x13fc_4000_0000` .. `0x13fe_0000_0000` | | percpu vm chunks (vmalloc minus a 1 GiB module area) |
//!
//! Modules therefore sit ~4 TiB from the kernel's percpu section, as on a
//! real alpha: a module reaching its percpu variables GP-relatively
//! (GPRELHIGH/GPRELLOW, +-2 GiB of its GP) fails to relocate ("Linux bug
//! #10926"), which is why alpha modules use weak percpu (GOT loads,
//! LITERAL).  FAR dynamic chunks are ~4 TiB from the first chunk.
//!
//! Only touched pages are mapped by the runner; `qemu-alpha` maps lazily
//! anyway (1 GiB costs ~3 ms).

pub mod runtime;

use percpu_core::backend::BackendKind;
use percpu_core::percpu::PercpuConfig;
use percpu_core::{KernelProfile, Topology};

use super::generic::{self, KernelLayout, GIB, MIB};
use super::{CpuContext, Isa, IsaInfo, ModulePlacement, OffsetModel, Reach, Variant};
use crate::engine::qemu_alpha::QemuAlphaEngine;
use crate::engine::{Cpu, Engine, EngineError, Reg};

/// binutils' `EM_ALPHA` (the fixtures carry it; the official 41 is rare).
pub const EM_ALPHA: u16 = 0x9026;
/// alpha PAGE_SIZE.
pub const PAGE_SIZE: u64 = 8192;

/// The real KSEG base (`PAGE_OFFSET`).
pub const KSEG_REAL: u64 = 0xffff_fc00_0000_0000;
/// Where this layout puts KSEG.
pub const KSEG_RELOCATED: u64 = 0x1000_0000_0000;
/// real - relocated.
pub const RELOCATION: u64 = KSEG_REAL - KSEG_RELOCATED;
/// `PGDIR_SIZE` with 8 KiB pages and three levels: 1 << (13 + 2 * 10).
pub const PGDIR_SIZE: u64 = 1 << 33;
/// Real `VMALLOC_START` (`-2 * PGDIR_SIZE`) and `VMALLOC_END` (`-PGDIR_SIZE`).
pub const VMALLOC_START_REAL: u64 = 0u64.wrapping_sub(2 * PGDIR_SIZE);
pub const VMALLOC_END_REAL: u64 = 0u64.wrapping_sub(PGDIR_SIZE);

/// A real kernel address in this layout.
pub const fn relocate(real: u64) -> u64 {
    real.wrapping_sub(RELOCATION)
}

pub fn layout() -> KernelLayout {
    let kseg = KSEG_RELOCATED;
    let vm_start = relocate(VMALLOC_START_REAL);
    KernelLayout {
        kernel_base: kseg + 0x31_0000,
        per_cpu_start: kseg + 8 * MIB,
        memblock: kseg + 16 * MIB..kseg + GIB,
        vmalloc: vm_start + GIB..relocate(VMALLOC_END_REAL),
        modules_near: kseg + GIB,
        modules_far: vm_start,
    }
}

static VARIANTS: [Variant; 1] = [Variant { name: "default", fixture_dir: "alpha", model: OffsetModel::ThreadInfo }];

static REACH: [Reach; 2] = [
    Reach {
        how: "GP-relative ldah/lda or ldq (R_ALPHA_GPRELHIGH + R_ALPHA_GPRELLOW): the kernel image",
        limit: "+-2 GiB from the object's GP; modules without weak percpu overflow",
    },
    Reach { how: "GOT load (R_ALPHA_LITERAL): modules, weak percpu", limit: "any 64-bit address" },
];

/// The alpha adapter.
pub struct Alpha;

pub const ALPHA: Alpha = Alpha;

static INFO: IsaInfo = IsaInfo {
    name: "alpha",
    cpu: Cpu::Alpha,
    variants: &VARIANTS,
    elf_machine: EM_ALPHA,
    ptr_bits: 64,
    big_endian: false,
    reach: &REACH,
    // Far: modules live in vmalloc, terabytes from the KSEG percpu area: beyond GP-relative reach.
    default_placement: ModulePlacement::Far,
};

impl Isa for Alpha {
    fn kernel_abi(&self) -> Option<&'static dyn crate::runtime::KernelAbi> {
        Some(&runtime::AlphaKernel)
    }
    fn info(&self) -> &'static IsaInfo {
        &INFO
    }

    fn page_size(&self) -> u64 {
        PAGE_SIZE
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
        Ok(Box::new(QemuAlphaEngine::new()?))
    }
    fn enter_cpu(&self, engine: &mut dyn Engine, _variant: &Variant, ctx: &CpuContext) -> Result<(), EngineError> {
        generic::enter_thread_info(engine, Reg::ThreadPointer, false, ctx)
    }
}
