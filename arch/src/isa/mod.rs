//! Per-architecture adapters, one folder per arch with the same files in
//! each (Cranelift's `isa/` shape) and one lookup point, [`lookup`].
//!
//! An adapter knows everything arch-specific the checks need and nothing
//! else: the address space and first-chunk flavour the arch's
//! `setup_per_cpu_areas` produces, where the kernel image and modules sit
//! (near to or far from the percpu area), how code finds its CPU's percpu
//! offset (GS base, TPIDR_ELx, thread_info + `__per_cpu_offset[]`, s390x
//! lowcore), and which engine runs it.  The portable core never sees an
//! adapter; adapters never see Unicorn or QEMU, only [`Engine`].

use std::fmt;

use percpu_core::percpu::{Percpu, PercpuConfig, PercpuSetupError};
use percpu_core::{AddressSpace, KernelProfile, Topology};
use serde::Serialize;

use crate::engine::{Cpu, Engine, EngineError, Perms};

pub mod alpha;
pub mod arm64;
pub mod generic;
pub mod km;
pub mod s390x;
pub mod sparc32;
pub mod x86_64;

pub use generic::KernelLayout;

/// Where module sections go relative to the percpu area.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModulePlacement {
    /// Within the arch's reach of the percpu area (the usual layout).
    Near,
    /// More than 4 GiB away: where alpha and s390x modules without weak
    /// percpu must fail at relocation time.
    Far,
}

impl fmt::Display for ModulePlacement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ModulePlacement::Near => "near",
            ModulePlacement::Far => "far",
        })
    }
}

/// How code finds this CPU's percpu offset: the fixture contract's
/// `.percpu_bed.abi` `model` numbers.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OffsetModel {
    /// 1: `%gs:sym`, percpu section linked at 0, GS base = this CPU's area.
    X86ZeroBased,
    /// 2: `%gs:sym(%rip)`, GS base = this CPU's offset (6.15+).
    X86Relative,
    /// 3: `mrs tpidr_el1`.
    TpidrEl1,
    /// 4: `mrs tpidr_el2` (VHE).
    TpidrEl2,
    /// 5: thread_info register (`%g6`, `$8`, `tp`) -> `cpu` -> `__per_cpu_offset[cpu]`.
    ThreadInfo,
    /// 6: s390x lowcore `percpu_offset` at 0x3b8.
    Lowcore,
}

impl OffsetModel {
    /// The model's name in reports (its JSON spelling): `x86-zero-based`.
    pub fn name(self) -> &'static str {
        match self {
            OffsetModel::X86ZeroBased => "x86-zero-based",
            OffsetModel::X86Relative => "x86-relative",
            OffsetModel::TpidrEl1 => "tpidr-el1",
            OffsetModel::TpidrEl2 => "tpidr-el2",
            OffsetModel::ThreadInfo => "thread-info",
            OffsetModel::Lowcore => "lowcore",
        }
    }

    /// The contract's number for this model.
    pub fn contract_id(self) -> u32 {
        match self {
            OffsetModel::X86ZeroBased => 1,
            OffsetModel::X86Relative => 2,
            OffsetModel::TpidrEl1 => 3,
            OffsetModel::TpidrEl2 => 4,
            OffsetModel::ThreadInfo => 5,
            OffsetModel::Lowcore => 6,
        }
    }
}

/// One way an arch's code reaches percpu symbols, for `layout` and docs.
#[derive(Copy, Clone, Debug, Serialize)]
pub struct Reach {
    /// e.g. "adrp + add (ADR_PREL_PG_HI21, ADD_ABS_LO12_NC)".
    pub how: &'static str,
    /// e.g. "+-4 GiB from the code".
    pub limit: &'static str,
}

/// A configured variant of an arch (x86_64 zero-based or relative, arm64
/// EL1 or EL2).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Variant {
    /// Name used on the command line and in reports ("zero-based", "el2").
    pub name: &'static str,
    /// Folder of the shipped fixtures built for it (`fixtures/obj/<dir>`).
    pub fixture_dir: &'static str,
    pub model: OffsetModel,
}

/// The per-CPU state an adapter installs before running code on `cpu`.
#[derive(Copy, Clone, Debug, Serialize)]
pub struct CpuContext {
    pub cpu: u32,
    /// `__per_cpu_offset[cpu]`.
    pub per_cpu_offset: u64,
    /// The address of this CPU's copy of the static area's start
    /// (`per_cpu_ptr(__per_cpu_start, cpu)`), what a zero-based GS base holds.
    pub percpu_area: u64,
    /// Address of the current thread_info (model 5).
    pub thread_info: u64,
    /// Offset of `int cpu` in thread_info (from the object's ABI note).
    pub ti_cpu_offset: u32,
    /// Offset of `percpu_offset` in the lowcore (from the ABI note).
    pub lowcore_percpu_offset: u32,
}

/// Memory an adapter needs mapped besides what every arch gets (kernel and
/// module sections, the first chunk's units, a stack, the runtime data page):
/// s390x's lowcore page at 0, for example.  The runner maps each one
/// zero-filled before the first [`Isa::enter_cpu`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FixedMapping {
    pub addr: u64,
    pub size: u64,
    pub perms: Perms,
    /// What it is, for diagnostics and `layout` ("lowcore").
    pub what: &'static str,
}

/// A CPU's percpu offset as a word of a per-CPU structure in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetWord {
    /// The word's bytes.
    pub slot: std::ops::Range<u64>,
    /// The structure holding it ("lowcore") and its extent.
    pub area: std::ops::Range<u64>,
    pub area_name: &'static str,
    /// The field's name ("percpu_offset").
    pub field: &'static str,
}

/// The facts about an arch that are plain data, one `static` per adapter.
#[derive(Debug)]
pub struct IsaInfo {
    /// Name on the command line: x86_64, arm64, sparc32, alpha, s390x, km.
    pub name: &'static str,
    pub cpu: Cpu,
    /// Variants, the default first.
    pub variants: &'static [Variant],
    /// ELF `e_machine` of this arch's objects.
    pub elf_machine: u16,
    pub ptr_bits: u32,
    pub big_endian: bool,
    /// How code reaches percpu symbols and how far.
    pub reach: &'static [Reach],
    /// The realistic module placement, the default of a run: near for
    /// most arches, far for alpha and s390x, whose modules really sit more
    /// than their GP/larl reach away from the percpu area (that is why their
    /// modules must use weak percpu).
    pub default_placement: ModulePlacement,
}

/// One architecture adapter: its data ([`IsaInfo`]) and what it computes.
pub trait Isa: Sync {
    fn info(&self) -> &'static IsaInfo;
    fn name(&self) -> &'static str {
        self.info().name
    }
    fn cpu(&self) -> Cpu {
        self.info().cpu
    }
    fn variants(&self) -> &'static [Variant] {
        self.info().variants
    }
    fn elf_machine(&self) -> u16 {
        self.info().elf_machine
    }
    fn ptr_bits(&self) -> u32 {
        self.info().ptr_bits
    }
    fn big_endian(&self) -> bool {
        self.info().big_endian
    }
    fn page_size(&self) -> u64;
    /// Where this arch's kernel puts the image, its percpu section, the
    /// first chunk, vm chunks and modules (addresses the engine can map).
    fn layout(&self) -> KernelLayout;
    /// Linear map and vmalloc range, placed where the engine can map them.
    fn address_space(&self) -> AddressSpace {
        self.layout().address_space(self.ptr_bits(), self.page_size())
    }
    /// The percpu setup this arch's `setup_per_cpu_areas` makes for a
    /// kernel image with `static_size` bytes of static percpu data: first
    /// chunk flavour (embed/page), atom size (x86_64: 2 MiB), backend (km
    /// for the no-MMU target), `__per_cpu_start`, reserved size.
    ///
    /// The sizes (module reserve, dynamic reserve) and the first chunk's
    /// early-size check follow the kernel profile `kernel`.
    fn percpu_config_for(
        &self,
        variant: &Variant,
        topology: Topology,
        static_size: usize,
        kernel: &KernelProfile,
    ) -> PercpuConfig;
    /// [`Isa::percpu_config_for`] the default kernel
    /// ([`percpu_core::profile::DEFAULT_KERNEL`]).
    fn percpu_config(&self, variant: &Variant, topology: Topology, static_size: usize) -> PercpuConfig {
        self.percpu_config_for(variant, topology, static_size, &KernelProfile::default())
    }
    /// The variant a kernel's own code is built for, the default of a run
    /// for that kernel: x86_64 is zero-based up to 6.14 and relative from
    /// 6.15; other arches have their first variant.
    fn default_variant(&self, kernel: &KernelProfile) -> &'static Variant {
        let _ = kernel;
        &self.variants()[0]
    }
    /// Link address of the kernel image's text/data (the percpu section's
    /// own link address comes from `percpu_config().per_cpu_start`).
    fn kernel_base(&self, _variant: &Variant) -> u64 {
        self.layout().kernel_base
    }
    /// Base address for module sections: near to or far from the first
    /// chunk at `first_chunk_base`.
    fn module_base(&self, _variant: &Variant, placement: ModulePlacement, _first_chunk_base: u64) -> u64 {
        self.layout().module_base(placement)
    }
    fn default_placement(&self) -> ModulePlacement {
        self.info().default_placement
    }
    fn reach(&self) -> &'static [Reach] {
        self.info().reach
    }
    /// A fresh engine for this arch.
    fn new_engine(&self) -> Result<Box<dyn Engine>, EngineError>;
    /// Make `ctx.cpu` the running CPU: GS base, TPIDR_ELx, thread_info
    /// register (the caller writes `cpu` into thread_info memory), or the
    /// lowcore's percpu_offset (memory at address 0).
    fn enter_cpu(&self, engine: &mut dyn Engine, variant: &Variant, ctx: &CpuContext) -> Result<(), EngineError>;

    /// The arch's half of the kernel runtime that runs real kernel modules
    /// (see [`crate::runtime`]).
    fn kernel_abi(&self) -> Option<&'static dyn crate::runtime::KernelAbi> {
        None
    }

    /// Where [`Isa::enter_cpu`] put this CPU's percpu offset in memory
    /// for `ctx`, when the arch keeps it in a structure code reads (s390x:
    /// the lowcore's `percpu_offset` word).  Diagnostics name the word a
    /// misbehaving call read instead.  Default: none (a register, or
    /// `__per_cpu_offset[]`, which the runner decodes itself).
    fn offset_word(&self, _ctx: &CpuContext) -> Option<OffsetWord> {
        None
    }

    /// Extra pages to map before anything runs (default: none).  s390x
    /// returns its lowcore page at address 0 here.
    fn fixed_mappings(&self, _variant: &Variant) -> Vec<FixedMapping> {
        Vec::new()
    }

    /// A variant by name.
    fn variant(&self, name: &str) -> Option<&'static Variant> {
        self.variants().iter().find(|v| v.name == name)
    }

    /// The percpu allocator as this arch's `setup_per_cpu_areas` leaves
    /// it for `cfg` (normally [`Isa::percpu_config`], possibly adjusted by
    /// the runner): [`Percpu::new`], plus any check the arch makes that the
    /// portable configuration cannot express (km: a NUMA topology is refused
    /// with "can't handle more than one group", which `Percpu::new` never
    /// reports because it forms one group for the km backend).  Runners
    /// should build the allocator through this.
    fn setup_percpu(&self, cfg: PercpuConfig) -> Result<Percpu, PercpuSetupError> {
        Percpu::new(cfg)
    }
}

/// Every adapter, in report order.
pub fn all() -> &'static [&'static dyn Isa] {
    static ALL: [&dyn Isa; 6] =
        [&x86_64::X86_64, &arm64::ARM64, &sparc32::SPARC32, &alpha::ALPHA, &s390x::S390X, &km::KM];
    &ALL
}

/// The one lookup point: an adapter by name.
pub fn lookup(name: &str) -> Option<&'static dyn Isa> {
    all().iter().copied().find(|i| i.name() == name)
}

/// Names of every adapter, for error messages.
pub fn names() -> Vec<&'static str> {
    all().iter().map(|i| i.name()).collect()
}
