//! The bed: a kernel image and modules loaded into an engine whose memory
//! mirrors the percpu allocator's chunks.

use std::collections::HashSet;
use std::ops::Range;

use percpu_core::alloc::{AllocRequest, PcpuPtr};
use percpu_core::percpu::{ChunkEvent, ChunkRole, Percpu};
use percpu_core::Topology;
use percpu_loader::elf::{machine_name, ElfObject, Machine, ET_REL};
use percpu_loader::load::static_percpu_sections;
use percpu_loader::{
    load_kernel_image, load_module, AbiNote, InMemoryPercpu, LinearLayout, LoadError, LoadOptions, LoadedObject,
    PercpuModel, PercpuPlacer, ReservedExhausted, ResolvedSymbol, SectionKind, SymbolResolver, SymbolTable,
    TestDescriptor, Truncation,
};

use super::{CheckError, ObjectReport, Scenario};
use crate::engine::{Engine, EngineError, Perms, TraceMode};
use crate::isa::{Isa, OffsetModel, Variant};

/// Bytes of the runtime data page given to each runtime symbol.
const RT_MASK_OFF: u64 = 0;
/// Room for 8192 CPUs (the core's MAX_CPUS); the fixtures' NR_CPUS is 4096.
const RT_MASK_BYTES: u64 = 8192 / 8;
const RT_NR_CPU_IDS_OFF: u64 = 0x400;
const RT_THREAD_INFO_OFF: u64 = 0x440;
pub(crate) const RT_THREAD_INFO_BYTES: u64 = 0x200;
/// Stack size (plus one unmapped guard page below it).
const STACK_BYTES: u64 = 64 << 10;

/// The runtime data page: `__cpu_possible_mask`, `nr_cpu_ids`,
/// `pcpubed_thread_info`.
#[derive(Clone, Debug)]
pub(crate) struct Runtime {
    pub base: u64,
    pub size: u64,
    pub mask: u64,
    pub nr_cpu_ids: u64,
    pub thread_info: u64,
}

impl Runtime {
    fn table(&self) -> SymbolTable {
        let mut t = SymbolTable::new();
        t.define("__cpu_possible_mask", self.mask)
            .define("nr_cpu_ids", self.nr_cpu_ids)
            .define("pcpubed_thread_info", self.thread_info);
        t
    }
    /// The runtime symbol holding `addr`, with the offset into it.
    pub fn symbol_at(&self, addr: u64) -> Option<(&'static str, u64)> {
        let within = |start: u64, len: u64| addr >= start && addr - start < len;
        if within(self.mask, RT_MASK_BYTES) {
            Some(("__cpu_possible_mask", addr - self.mask))
        } else if within(self.nr_cpu_ids, 4) {
            Some(("nr_cpu_ids", addr - self.nr_cpu_ids))
        } else if within(self.thread_info, RT_THREAD_INFO_BYTES) {
            Some(("pcpubed_thread_info", addr - self.thread_info))
        } else {
            None
        }
    }
}

/// A symbol kept for decoding addresses.
#[derive(Clone, Debug)]
pub(crate) struct Sym {
    pub name: String,
    pub value: u64,
    pub size: u64,
    pub func: bool,
    pub percpu: bool,
}

/// One object in the bed (loaded or rejected).
#[derive(Clone, Debug)]
pub(crate) struct BedObject {
    pub name: String,
    pub kernel: bool,
    pub loaded: Option<LoadedObject>,
    /// The loader's message when it rejected the object.
    pub rejected: Option<String>,
    pub tests: Vec<TestDescriptor>,
    pub abi: Option<AbiNote>,
    pub syms: Vec<Sym>,
    pub truncations: Vec<Truncation>,
    pub warnings: Vec<String>,
}

impl BedObject {
    fn new(name: &str, kernel: bool, loaded: LoadedObject) -> Self {
        let syms = loaded
            .symbols
            .iter()
            // Not section symbols, nor mapping symbols ($x, $d) or local labels.
            .filter(|s| {
                s.defined
                    && !s.name.is_empty()
                    && s.kind != percpu_loader::elf::STT_SECTION
                    && !s.name.starts_with('$')
                    && !s.name.starts_with(".L")
            })
            .map(|s| Sym { name: s.name.clone(), value: s.value, size: s.size, func: s.kind == 2, percpu: s.percpu })
            .collect();
        BedObject {
            name: name.to_string(),
            kernel,
            tests: loaded.tests.clone(),
            abi: loaded.abi.clone(),
            truncations: loaded.truncations.clone(),
            warnings: loaded.warnings.clone(),
            syms,
            rejected: None,
            loaded: Some(loaded),
        }
    }

    pub fn report(&self) -> ObjectReport {
        ObjectReport {
            name: self.name.clone(),
            role: if self.kernel { "kernel".into() } else { "module".into() },
            rejected: self.rejected.clone(),
            tests: self.tests.len(),
            truncations: self.truncations.len(),
            warnings: self.warnings.clone(),
        }
    }

    /// The percpu symbol whose object holds percpu pointer `ptr`.
    pub fn percpu_symbol(&self, ptr: u64) -> Option<(&Sym, u64)> {
        self.syms
            .iter()
            .filter(|s| s.percpu && ptr >= s.value && ptr - s.value < s.size.max(1))
            .min_by_key(|s| s.size)
            .map(|s| (s, ptr - s.value))
    }

    /// The function holding `pc` (or the nearest one below it in the same section).
    pub fn code_symbol(&self, pc: u64) -> Option<(&Sym, u64)> {
        let loaded = self.loaded.as_ref()?;
        let sec = loaded.section_at(pc)?;
        self.syms
            .iter()
            .filter(|s| s.func && s.value <= pc && sec.contains(s.value))
            .max_by_key(|s| s.value)
            .map(|s| (s, pc - s.value))
    }

    /// The ordinary (non-percpu) data symbol holding `addr`, and the section.
    pub fn data_symbol(&self, addr: u64) -> Option<(String, Option<(&Sym, u64)>)> {
        let loaded = self.loaded.as_ref()?;
        let sec = loaded.section_at(addr)?;
        let sym = self
            .syms
            .iter()
            .filter(|s| !s.percpu && addr >= s.value && addr - s.value < s.size.max(1))
            .min_by_key(|s| s.size)
            .map(|s| (s, addr - s.value));
        Some((sec.name.clone(), sym))
    }
}

/// A dynamic allocation made for a test (for naming addresses).
#[derive(Clone, Debug)]
pub(crate) struct DynAlloc {
    pub ptr: u64,
    pub size: u64,
    pub test: String,
}

/// A dynamic allocation that was freed, kept so that a later access to
/// its memory can be named as a use after free with both call sites.
#[derive(Clone, Debug)]
pub(crate) struct FreedAlloc {
    pub ptr: u64,
    pub size: u64,
    /// Who allocated it (as [`DynAlloc::test`]).
    pub allocated_by: String,
    /// Who freed it: "free_percpu in <caller>", or the harness between
    /// the steps of a STEPS test.
    pub freed_at: String,
}

/// How many freed allocations [`Bed::freed_allocs`] remembers.
const FREED_HISTORY: usize = 4096;

pub(crate) struct Bed<'s> {
    pub sc: &'s Scenario,
    /// The object whose real-module code is running (for the rule that a
    /// module reaches another's static percpu only through its imports).
    pub running: Option<usize>,
    pub isa: &'static dyn Isa,
    pub variant: Variant,
    pub percpu: Percpu,
    pub engine: Box<dyn Engine>,
    pub objects: Vec<BedObject>,
    pub possible: Vec<u32>,
    /// `__per_cpu_offset[]` as written into the kernel image.
    pub offsets: Vec<Option<u64>>,
    pub per_cpu_start: u64,
    /// The static area's link range (`__per_cpu_start`..`__per_cpu_end`).
    pub static_link: Range<u64>,
    pub runtime: Runtime,
    pub stack: Range<u64>,
    pub ptr_bytes: usize,
    pub big_endian: bool,
    /// Other named areas (fixed mappings).
    pub regions: Vec<(Range<u64>, String)>,
    /// Where the running CPU's offset sits in memory (s390x lowcore), as
    /// the last [`Bed::enter`] left it.
    pub offset_word: Option<crate::isa::OffsetWord>,
    pub dyn_allocs: Vec<DynAlloc>,
    /// The most recently freed dynamic allocations, oldest first.
    pub freed_allocs: std::collections::VecDeque<FreedAlloc>,
    /// Units that belong to a CPU (others are never mapped).
    pub used_units: Vec<usize>,
    /// The kernel runtime, when the bed runs real kernel modules.
    pub kernel: Option<super::kernel::KernelRt>,
    mapped: HashSet<u64>,
    granule: u64,
}

fn engine_err(sc: &Scenario, what: impl Into<String>) -> impl FnOnce(EngineError) -> CheckError {
    let (arch, variant, what) = (sc.isa.name().to_string(), sc.variant.name.to_string(), what.into());
    move |source| CheckError::Engine { arch, variant, what, source }
}

fn em_name(e_machine: u16) -> String {
    let n = machine_name(e_machine);
    if n.starts_with("EM_") {
        n
    } else {
        format!("EM_{n}")
    }
}

/// Parse `bytes` and check it is an object of `isa`'s machine.
pub(crate) fn check_machine<'a>(isa: &dyn Isa, name: &str, bytes: &'a [u8]) -> Result<ElfObject<'a>, CheckError> {
    let obj = ElfObject::parse(name, bytes)
        .map_err(|source| CheckError::Load { object: name.to_string(), source: Box::new(source) })?;
    let want = Machine::from_elf(isa.elf_machine(), isa.ptr_bits() == 64);
    let got = Machine::from_elf(obj.e_machine, obj.is_64);
    if got.is_none() || got != want {
        return Err(CheckError::WrongMachine {
            object: name.to_string(),
            found: format!("{} ({}-bit)", em_name(obj.e_machine), if obj.is_64 { 64 } else { 32 }),
            arch: isa.name().to_string(),
            expected: format!("{} ({}-bit)", em_name(isa.elf_machine()), isa.ptr_bits()),
        });
    }
    Ok(obj)
}

fn model_id(m: PercpuModel) -> u32 {
    match m {
        PercpuModel::X86ZeroBased => 1,
        PercpuModel::X86Relative => 2,
        PercpuModel::Arm64TpidrEl1 => 3,
        PercpuModel::Arm64TpidrEl2 => 4,
        PercpuModel::ThreadInfo => 5,
        PercpuModel::S390Lowcore => 6,
    }
}

fn model_name(id: u32) -> &'static str {
    match id {
        1 => "x86_64 zero-based %gs:sym",
        2 => "x86_64 relative %gs:sym(%rip)",
        3 => "arm64 TPIDR_EL1",
        4 => "arm64 TPIDR_EL2 (VHE)",
        5 => "thread_info cpu + __per_cpu_offset[]",
        6 => "s390x lowcore",
        _ => "unknown",
    }
}

/// The object's `.percpu_bed.abi` note names the scenario's model.  An
/// object without one (a real module, a vmlinux) is fine as long as it has
/// no test descriptors: descriptors without a note were not built against
/// the contract, so nothing says which percpu model their code uses.
fn check_model(sc: &Scenario, name: &str, abi: Option<&AbiNote>, tests: &[TestDescriptor]) -> Result<(), CheckError> {
    let Some(abi) = abi else {
        if !tests.is_empty() {
            return Err(CheckError::MissingAbiNote { object: name.to_string(), tests: tests.len() });
        }
        return Ok(());
    };
    let found = model_id(abi.model);
    let expected = sc.variant.model.contract_id();
    if found != expected {
        return Err(CheckError::WrongModel {
            object: name.to_string(),
            found,
            found_name: model_name(found).into(),
            arch: sc.isa.name().into(),
            variant: sc.variant.name.into(),
            expected,
            expected_name: model_name(expected).into(),
            fixture_dir: sc.variant.fixture_dir.into(),
        });
    }
    Ok(())
}

/// Size of a relocatable kernel image's static area, laid out like
/// `PERCPU_INPUT` (what the loader does).
fn static_area_size(obj: &ElfObject<'_>) -> u64 {
    let mut off = 0u64;
    for i in static_percpu_sections(obj) {
        let s = &obj.sections[i];
        let a = s.align.max(1);
        off = off.div_ceil(a) * a + s.size;
    }
    off
}

fn perms_of(kind: SectionKind) -> Perms {
    match kind {
        SectionKind::Text | SectionKind::InitText | SectionKind::Plt => Perms::RX,
        SectionKind::ReadOnly | SectionKind::InitReadOnly => Perms { read: true, write: false, exec: false },
        _ => Perms::RW,
    }
}

/// The reserved-chunk side of module loading, over the bed's allocator.
/// Copies are done by the bed after the load (they need the engine).
struct ReservedPlacer<'a> {
    percpu: &'a mut Percpu,
    page: u64,
    allocated: Vec<u64>,
    copies: Vec<(u64, Vec<u8>)>,
}

impl PercpuPlacer for ReservedPlacer<'_> {
    fn page_size(&self) -> u64 {
        self.page
    }
    fn alloc_reserved(&mut self, size: u64, align: u64) -> Result<u64, ReservedExhausted> {
        let fail = |free| ReservedExhausted { size, align, free };
        let Some(r) = self.percpu.reserved_chunk_id() else {
            return Err(fail(0));
        };
        let req = AllocRequest::new(size as usize, align as usize).reserved();
        match self.percpu.alloc(req) {
            Ok(p) => {
                self.allocated.push(p.0);
                Ok(p.0)
            }
            Err(_) => Err(fail(self.percpu.chunk(r).map.free_bytes() as u64)),
        }
    }
    fn copy_to_all_units(&mut self, ptr: u64, data: &[u8]) {
        self.copies.push((ptr, data.to_vec()));
    }
}

/// Resolves every undefined symbol to a small dummy address: used only to
/// read a rejected object's test descriptors.
struct DummyResolver;
impl SymbolResolver for DummyResolver {
    fn resolve(&self, _name: &str) -> Option<ResolvedSymbol> {
        Some(ResolvedSymbol { value: 0x0100_0000, percpu: false })
    }
}

/// The test descriptors of an object the loader rejected: load it again
/// where nothing can overflow (everything below 64 MiB, undefined symbols
/// at a dummy address) just to read `.percpu_bed.tests`.
///
/// If even that fails the object's tests cannot be known, and the run must
/// not go on as if it had none (a rejected object's tests are its
/// findings): the error says why.
fn descriptors_of_rejected(
    name: &str,
    bytes: &[u8],
    page: u64,
) -> Result<(Vec<TestDescriptor>, Option<AbiNote>), LoadError> {
    let mut pl = InMemoryPercpu::new(1, 0x1000, 1 << 20, 0x0200_0000, 0x0200_0000).with_page_size(page);
    let mut layout = LinearLayout::at(0x0040_0000).with_page_size(page);
    let obj = load_module(name, bytes, &LoadOptions::default(), &mut pl, &mut layout, &[&DummyResolver])?;
    Ok((obj.tests, obj.abi))
}

/// The symbols a real module exports: those with a `__ksymtab_<name>`
/// entry (EXPORT_SYMBOL, EXPORT_PER_CPU_SYMBOL and their _GPL forms).
fn ksymtab_exports(l: &LoadedObject) -> SymbolTable {
    let names: HashSet<&str> = l.symbols.iter().filter_map(|s| s.name.strip_prefix("__ksymtab_")).collect();
    let mut t = SymbolTable::new();
    for s in l.symbols.iter().filter(|s| s.defined && s.is_global() && names.contains(s.name.as_str())) {
        t.insert(s.name.clone(), ResolvedSymbol { value: s.value, percpu: s.percpu });
    }
    t
}

/// Name of the runtime's kernel image in reports.
pub(crate) const RUNTIME_IMAGE_NAME: &str = "kernel-runtime";

/// The kernel image of a bed.
#[derive(Clone, Copy)]
pub enum KernelImage<'a> {
    /// A kernel-image object (the shipped fixtures' `kernel.o`, your own).
    Object { name: &'a str, bytes: &'a [u8] },
    /// The kernel runtime, for real modules built from the tree with this ABI.
    Runtime(&'a crate::runtime::RtAbi),
}

/// The runtime's kernel image for `sc`'s arch and the tree's ABI.
fn runtime_kernel_image(sc: &Scenario, abi: &crate::runtime::RtAbi) -> Result<Vec<u8>, CheckError> {
    let isa = sc.isa;
    let karch = isa.kernel_abi().ok_or_else(|| CheckError::Layout {
        arch: isa.name().into(),
        variant: sc.variant.name.into(),
        reason: "this arch has no kernel runtime".into(),
    })?;
    if abi.sizeof_long * 8 != isa.ptr_bits() {
        return Err(CheckError::Layout {
            arch: isa.name().into(),
            variant: sc.variant.name.into(),
            reason: format!(
                "the modules' tree has {}-bit longs but {} is {}-bit: modules of another arch?",
                abi.sizeof_long * 8,
                isa.name(),
                isa.ptr_bits()
            ),
        });
    }
    // The x86_64 zero-based area starts with a page the bed adds itself.
    let probe = isa.percpu_config_for(&sc.variant, Topology::uma(sc.cpus.clone()), 0, &sc.kernel);
    let first_page = if probe.per_cpu_start == 0 { isa.page_size() } else { 0 };
    let spec = crate::runtime::image::ImageSpec {
        e_machine: isa.elf_machine(),
        is_64: isa.ptr_bits() == 64,
        little_endian: !isa.big_endian(),
        abi,
        percpu_vars: karch.percpu_vars(abi),
        static_bytes: karch.typical_static_size().saturating_sub(first_page),
        thunks: karch.thunks(),
        slot_fill: karch.slot_fill(),
    };
    Ok(crate::runtime::image::write(&spec))
}

impl<'s> Bed<'s> {
    pub fn build(sc: &'s Scenario, kernel: KernelImage<'_>, modules: &[(&str, &[u8])]) -> Result<Self, CheckError> {
        let isa = sc.isa;
        let variant = sc.variant;
        let page = isa.page_size();
        let runtime_image;
        let (kname, kbytes, rt_abi) = match kernel {
            KernelImage::Object { name, bytes } => (name, bytes, None),
            KernelImage::Runtime(abi) => {
                runtime_image = runtime_kernel_image(sc, abi)?;
                (RUNTIME_IMAGE_NAME, &runtime_image[..], Some(abi))
            }
        };
        let kobj = check_machine(isa, kname, kbytes)?;
        if percpu_loader::load::role_of(&kobj) == percpu_loader::ObjectRole::Module {
            return Err(CheckError::NotKernelImage {
                object: kname.into(),
                reason: "defines no __per_cpu_offset[]: it is a module, not a kernel image (pass it as a module)"
                    .into(),
            });
        }
        for (name, bytes) in modules {
            check_machine(isa, name, bytes)?;
        }
        let layout_err =
            |reason: String| CheckError::Layout { arch: isa.name().into(), variant: variant.name.into(), reason };

        // The runtime data page sits at the kernel base, the image after it.
        let kbase = isa.kernel_base(&variant);
        let runtime = Runtime {
            base: kbase,
            size: page.max(4096),
            mask: kbase + RT_MASK_OFF,
            nr_cpu_ids: kbase + RT_NR_CPU_IDS_OFF,
            thread_info: kbase + RT_THREAD_INFO_OFF,
        };
        let rt_table = runtime.table();

        // Static size first: the allocator's geometry depends on it.
        let topology =
            if sc.nodes > 1 { Topology::blocked(sc.cpus.clone(), sc.nodes) } else { Topology::uma(sc.cpus.clone()) };
        let opts = LoadOptions::default();
        // A static area linked at 0 (x86_64 zero-based) starts with one page
        // of `.data..percpu..first` (fixed_percpu_data on x86_64), so no
        // percpu symbol has the NULL pointer value; the page is part of
        // every unit's static copy.
        let mut first_pad = 0u64;
        let (kernel_obj, mut cfg, kernel_end) = if kobj.e_type == ET_REL {
            let static_size = static_area_size(&kobj);
            let probe = isa.percpu_config_for(&variant, topology.clone(), static_size as usize, &sc.kernel);
            if probe.per_cpu_start == 0 {
                first_pad = page;
            }
            let cfg = isa.percpu_config_for(&variant, topology, (static_size + first_pad) as usize, &sc.kernel);
            let limit = if cfg.per_cpu_start > kbase { cfg.per_cpu_start } else { u64::MAX };
            let mut layout = LinearLayout::window(kbase + runtime.size, limit).with_page_size(page);
            layout.static_percpu_at = Some(cfg.per_cpu_start + first_pad);
            let k = load_kernel_image(kname, kbytes, &opts, &mut layout, &[&rt_table])
                .map_err(|source| CheckError::Load { object: kname.to_string(), source: Box::new(source) })?;
            (k, cfg, layout.cursor())
        } else {
            let k = load_kernel_image(kname, kbytes, &opts, &mut LinearLayout::at(kbase), &[&rt_table])
                .map_err(|source| CheckError::Load { object: kname.to_string(), source: Box::new(source) })?;
            let sp = k.static_percpu.as_ref().ok_or_else(|| CheckError::NotKernelImage {
                object: kname.into(),
                reason: "no static percpu area (__per_cpu_start/__per_cpu_end or .data..percpu)".into(),
            })?;
            let mut cfg = isa.percpu_config_for(&variant, topology, (sp.end - sp.start) as usize, &sc.kernel);
            cfg.per_cpu_start = sp.start;
            let end = k.sections.iter().map(|s| s.end()).max().unwrap_or(kbase);
            (k, cfg, end)
        };
        let sp = kernel_obj.static_percpu.clone().ok_or_else(|| CheckError::NotKernelImage {
            object: kname.into(),
            reason: "has no .data..percpu* sections: not a kernel image (no static percpu area)".into(),
        })?;
        let mut sp = sp;
        if first_pad > 0 {
            let mut data = vec![0u8; first_pad as usize];
            data.extend_from_slice(&sp.data);
            sp.data = data;
            sp.start -= first_pad;
        }
        let pco = kernel_obj.symbol("__per_cpu_offset").cloned().ok_or_else(|| CheckError::NotKernelImage {
            object: kname.into(),
            reason: "does not define __per_cpu_offset[]: not a kernel image".into(),
        })?;
        check_model(sc, kname, kernel_obj.abi.as_ref(), &kernel_obj.tests)?;
        let ptr_bytes = (isa.ptr_bits() / 8) as usize;
        let nr_cpus_array = if pco.size > 0 { pco.size / ptr_bytes as u64 } else { 4096 };
        if let Some(c) = sc.cpus.iter().find(|&c| c as u64 >= nr_cpus_array) {
            return Err(CheckError::TooManyCpus { cpu: c, nr_cpus: nr_cpus_array });
        }
        cfg.static_size = (sp.end - sp.start) as usize;
        let per_cpu_start = cfg.per_cpu_start;

        let mut percpu = isa.setup_percpu(cfg).map_err(|source| CheckError::Setup {
            arch: isa.name().into(),
            variant: variant.name.into(),
            source,
        })?;
        percpu.record_events();
        let engine = isa.new_engine().map_err(engine_err(sc, "creating the engine"))?;
        let granule = engine.map_granule().max(1);
        let first = percpu.first_chunk_layout().clone();
        let used_units = first.unit_cpu.iter().enumerate().filter(|(_, c)| c.is_some()).map(|(u, _)| u).collect();

        // The stack: after the kernel image, above one guard page.
        let stack_base = kernel_end.div_ceil(page) * page + page;
        let stack = stack_base..stack_base + STACK_BYTES.div_ceil(page) * page;
        if per_cpu_start > kbase && stack.end > per_cpu_start {
            return Err(layout_err(format!(
                "the kernel image and stack ({kbase:#x}..{:#x}) run into __per_cpu_start {per_cpu_start:#x}",
                stack.end
            )));
        }

        let mut bed = Bed {
            sc,
            running: None,
            isa,
            variant,
            percpu,
            engine,
            objects: Vec::new(),
            possible: sc.cpus.iter().collect(),
            offsets: first.per_cpu_offset.clone(),
            per_cpu_start,
            static_link: sp.start..sp.end,
            runtime,
            stack,
            ptr_bytes,
            big_endian: isa.big_endian(),
            regions: Vec::new(),
            offset_word: None,
            dyn_allocs: Vec::new(),
            freed_allocs: Default::default(),
            used_units,
            kernel: None,
            mapped: HashSet::new(),
            granule,
        };

        // Runtime page, kernel sections, stack, the adapter's pages.
        let rt = bed.runtime.clone();
        bed.map(rt.base, rt.size, Perms::RW, "runtime data page")?;
        bed.map_object_sections(&kernel_obj)?;
        let st = bed.stack.clone();
        bed.map(st.start, st.end - st.start, Perms::RW, "stack")?;
        for m in isa.fixed_mappings(&variant) {
            bed.map(m.addr, m.size, m.perms, m.what)?;
            bed.regions.push((m.addr..m.addr + m.size, m.what.to_string()));
        }

        // The static area's load image is not mapped: it lies in the init
        // section, which the kernel frees after boot (arm64 and x86_64 also
        // unmap it), so code that reaches it (no percpu offset applied, or
        // per_cpu_ptr of an impossible CPU, whose __per_cpu_offset is 0 or
        // __per_cpu_load) faults there, reads included, on every engine.

        // The first chunk: every backed unit, each with the static data.
        for r in &first.backed {
            bed.map(r.start, r.end - r.start, Perms::RW, "first chunk")?;
        }
        for &cpu in &bed.possible.clone() {
            let at = bed.cpu_ptr(per_cpu_start, cpu).expect("possible cpu has an offset");
            bed.write(at, &sp.data, "static percpu copy")?;
        }

        // Runtime symbols and __per_cpu_offset[].
        let mut mask = vec![0u8; RT_MASK_BYTES as usize];
        let bits = ptr_bytes as u32 * 8;
        for cpu in sc.cpus.iter() {
            let word = (cpu / bits) as usize;
            let bit = cpu % bits;
            let byte_in_word = (bit / 8) as usize;
            let idx = if bed.big_endian {
                word * ptr_bytes + ptr_bytes - 1 - byte_in_word
            } else {
                word * ptr_bytes + byte_in_word
            };
            mask[idx] |= 1 << (bit % 8);
        }
        bed.write(rt.mask, &mask, "__cpu_possible_mask")?;
        let nr = bed.uint_bytes(sc.cpus.nr_cpu_ids() as u64, 4);
        bed.write(rt.nr_cpu_ids, &nr, "nr_cpu_ids")?;
        let mut arr = Vec::with_capacity(bed.offsets.len() * ptr_bytes);
        for o in bed.offsets.clone() {
            arr.extend(bed.uint_bytes(o.unwrap_or(0), ptr_bytes));
        }
        bed.write(pco.value, &arr, "__per_cpu_offset[]")?;
        bed.sync_events()?;
        bed.objects.push(BedObject::new(kname, true, kernel_obj));
        if let Some(abi) = rt_abi {
            bed.setup_kernel_runtime(abi.clone(), &mask)?;
        }

        // Modules, each with the exports of the kernel and earlier modules.
        let mbase = isa.module_base(&variant, sc.placement, first.base_addr);
        let mut layout = LinearLayout::at(mbase).with_page_size(page);
        for (name, bytes) in modules {
            bed.load_one_module(name, bytes, &mut layout, &rt_table)?;
        }
        // Writes are what the checks need; reads only for --trace's log.
        bed.engine.set_trace_mode(if sc.trace { TraceMode::All } else { TraceMode::Writes });
        bed.engine.snapshot_cpu().map_err(engine_err(sc, "saving the CPU state"))?;
        Ok(bed)
    }

    fn load_one_module(
        &mut self,
        name: &str,
        bytes: &[u8],
        layout: &mut LinearLayout,
        rt_table: &SymbolTable,
    ) -> Result<(), CheckError> {
        // Real modules export only what EXPORT_SYMBOL put in their
        // __ksymtab (kernel/module.c resolves nothing else); fixtures and
        // kernel images every global.
        let real = self.kernel.is_some();
        let exports: Vec<SymbolTable> = self
            .objects
            .iter()
            .filter_map(|o| o.loaded.as_ref().map(|l| (o.kernel, l)))
            .map(|(kernel, l)| if real && !kernel { ksymtab_exports(l) } else { l.exports() })
            .collect();
        let mut resolvers: Vec<&dyn SymbolResolver> = exports.iter().map(|t| t as &dyn SymbolResolver).collect();
        resolvers.push(rt_table);
        let page = self.isa.page_size();
        let mut placer = ReservedPlacer { percpu: &mut self.percpu, page, allocated: Vec::new(), copies: Vec::new() };
        let result = load_module(name, bytes, &LoadOptions::default(), &mut placer, layout, &resolvers);
        let (allocated, copies) = (placer.allocated, placer.copies);
        // Start the next module on a fresh page.
        let next = layout.cursor().div_ceil(page) * page;
        *layout = LinearLayout::at(next).with_page_size(page);
        match result {
            Ok(obj) => {
                check_model(self.sc, name, obj.abi.as_ref(), &obj.tests)?;
                self.sync_events()?;
                for (ptr, data) in copies {
                    for cpu in self.possible.clone() {
                        let at = self.cpu_ptr(ptr, cpu).expect("possible cpu");
                        self.write(at, &data, "module percpu copy")?;
                    }
                }
                self.map_object_sections(&obj)?;
                if self.kernel.is_some() {
                    self.add_bug_table(&obj)?;
                }
                self.objects.push(BedObject::new(name, false, obj));
                Ok(())
            }
            Err(e) => {
                // kernel/module.c frees the module's percpu on failure.
                for p in allocated {
                    let _ = self.percpu.free(PcpuPtr(p));
                }
                self.sync_events()?;
                match e {
                    // kernel/module.c refuses the module ("Could not
                    // allocate N bytes percpu data", -ENOMEM); the rest of
                    // the run goes on, as the rest of the system would.
                    LoadError::Overflow { .. } | LoadError::PercpuAlloc { .. } => {
                        let msg = e.to_string();
                        tracing::info!("{name}: rejected by the loader: {msg}");
                        let (tests, abi) = descriptors_of_rejected(name, bytes, page).map_err(|source| {
                            CheckError::RejectedUnreadable {
                                object: name.to_string(),
                                rejection: msg.clone(),
                                source: Box::new(source),
                            }
                        })?;
                        check_model(self.sc, name, abi.as_ref(), &tests)?;
                        self.objects.push(BedObject {
                            name: name.to_string(),
                            kernel: false,
                            loaded: None,
                            rejected: Some(msg),
                            tests,
                            abi,
                            syms: Vec::new(),
                            truncations: Vec::new(),
                            warnings: Vec::new(),
                        });
                        Ok(())
                    }
                    LoadError::UnknownSymbol { symbol, .. } if self.kernel.is_some() => {
                        Err(CheckError::UnknownImport { object: name.to_string(), symbol })
                    }
                    source => Err(CheckError::Load { object: name.to_string(), source: Box::new(source) }),
                }
            }
        }
    }

    fn map_object_sections(&mut self, obj: &LoadedObject) -> Result<(), CheckError> {
        for s in obj.sections.iter().filter(|s| s.size > 0) {
            let what = format!("{} {}", obj.name, s.name);
            self.map(s.addr, s.size, perms_of(s.kind), &what)?;
            self.write(s.addr, &s.data, &what)?;
        }
        Ok(())
    }

    // ----- memory ---------------------------------------------------------

    /// Map `addr..addr+size` (rounded out to the engine's granule), skipping
    /// pages already mapped.
    pub fn map(&mut self, addr: u64, size: u64, perms: Perms, what: &str) -> Result<(), CheckError> {
        if size == 0 {
            return Ok(());
        }
        let g = self.granule;
        let first = addr / g;
        let last = (addr + size - 1) / g;
        let mut p = first;
        while p <= last {
            if self.mapped.contains(&p) {
                p += 1;
                continue;
            }
            let start = p;
            while p <= last && !self.mapped.contains(&p) {
                p += 1;
            }
            self.engine
                .map(start * g, (p - start) * g, perms)
                .map_err(engine_err(self.sc, format!("mapping {what}")))?;
            self.mapped.extend(start..p);
        }
        Ok(())
    }

    pub fn unmap(&mut self, addr: u64, size: u64, what: &str) -> Result<(), CheckError> {
        if size == 0 {
            return Ok(());
        }
        let g = self.granule;
        let first = addr / g;
        let last = (addr + size - 1) / g;
        let mut p = first;
        while p <= last {
            if !self.mapped.contains(&p) {
                p += 1;
                continue;
            }
            let start = p;
            while p <= last && self.mapped.contains(&p) {
                p += 1;
            }
            self.engine.unmap(start * g, (p - start) * g).map_err(engine_err(self.sc, format!("unmapping {what}")))?;
            for q in start..p {
                self.mapped.remove(&q);
            }
        }
        Ok(())
    }

    pub fn is_mapped(&self, addr: u64) -> bool {
        self.mapped.contains(&(addr / self.granule))
    }

    pub fn write(&mut self, addr: u64, data: &[u8], what: &str) -> Result<(), CheckError> {
        self.engine.write(addr, data).map_err(engine_err(self.sc, format!("writing {what}")))
    }

    pub fn read(&mut self, addr: u64, len: usize, what: &str) -> Result<Vec<u8>, CheckError> {
        let mut buf = vec![0u8; len];
        self.engine.read(addr, &mut buf).map_err(engine_err(self.sc, format!("reading {what}")))?;
        Ok(buf)
    }

    /// `value` as `width` bytes in the target's byte order.
    pub fn uint_bytes(&self, value: u64, width: usize) -> Vec<u8> {
        let le = value.to_le_bytes();
        let mut v = le[..width].to_vec();
        if self.big_endian {
            v.reverse();
        }
        v
    }

    pub fn uint_of(&self, bytes: &[u8]) -> u64 {
        let mut v = 0u64;
        if self.big_endian {
            for &b in bytes {
                v = v << 8 | b as u64;
            }
        } else {
            for &b in bytes.iter().rev() {
                v = v << 8 | b as u64;
            }
        }
        v
    }

    pub fn write_uint(&mut self, addr: u64, value: u64, width: usize, what: &str) -> Result<(), CheckError> {
        let b = self.uint_bytes(value, width);
        self.write(addr, &b, what)
    }

    /// `per_cpu_ptr(ptr, cpu)`.
    pub fn cpu_ptr(&self, ptr: u64, cpu: u32) -> Option<u64> {
        self.percpu.per_cpu_ptr(PcpuPtr(ptr), cpu)
    }

    /// Mirror the allocator's chunk events into the engine.
    pub fn sync_events(&mut self) -> Result<(), CheckError> {
        let events = self.percpu.take_events();
        for ev in events {
            match ev {
                ChunkEvent::Created { chunk, base_addr } => {
                    tracing::debug!(chunk, "percpu: created chunk at {base_addr:#x}");
                }
                ChunkEvent::Destroyed { chunk, base_addr } => {
                    tracing::debug!(chunk, "percpu: destroyed chunk at {base_addr:#x}");
                }
                ChunkEvent::Populated { chunk, base_addr, page_start, page_end } => {
                    tracing::debug!(chunk, "percpu: populated pages {page_start}..{page_end}");
                    for u in self.used_units.clone() {
                        let r = self.percpu.geometry().unit_pages_range(base_addr, u, page_start..page_end);
                        self.map(r.start, r.end - r.start, Perms::RW, "populated chunk pages")?;
                    }
                }
                ChunkEvent::Depopulated { chunk, base_addr, page_start, page_end } => {
                    tracing::debug!(chunk, "percpu: depopulated pages {page_start}..{page_end}");
                    for u in self.used_units.clone() {
                        let r = self.percpu.geometry().unit_pages_range(base_addr, u, page_start..page_end);
                        self.unmap(r.start, r.end - r.start, "depopulated chunk pages")?;
                    }
                }
                ChunkEvent::Cleared { base_addr, offset, size, .. } => {
                    let zeros = vec![0u8; size];
                    for u in self.used_units.clone() {
                        let at =
                            base_addr.wrapping_add(self.percpu.geometry().unit_offsets[u]).wrapping_add(offset as u64);
                        self.write(at, &zeros, "a new allocation (zeroing)")?;
                    }
                }
            }
        }
        Ok(())
    }

    /// A DYNAMIC test's allocation.  FAR: in a chunk the backend created:
    /// the first chunk's free space is filled first (deterministically:
    /// the largest free area, repeatedly) and the fillers freed afterwards.
    pub fn alloc_dynamic(&mut self, size: usize, align: usize, far: bool, test: &str) -> Result<u64, CheckError> {
        let alloc_err = |source| CheckError::Alloc {
            arch: self.isa.name().into(),
            variant: self.variant.name.into(),
            what: format!("{size} bytes at alignment {align} for test `{test}`"),
            source,
        };
        let mut fillers = Vec::new();
        let result = loop {
            let p = match self.percpu.alloc(AllocRequest::new(size, align.max(1))) {
                Ok(p) => p,
                Err(e) => break Err(alloc_err(e)),
            };
            let loc = self.percpu.classify_ptr(p);
            let role = loc.as_ref().map(|l| l.role);
            if !far || role == Some(ChunkRole::Dynamic) {
                break Ok(p);
            }
            fillers.push(p);
            if let Some(l) = loc {
                let contig = self.percpu.chunk(l.chunk).map.contig_hint_bytes();
                if contig >= 4 {
                    if let Ok(f) = self.percpu.alloc(AllocRequest::new(contig.min(32 << 10), 4)) {
                        fillers.push(f);
                    }
                }
            }
            if fillers.len() > 100_000 {
                break Err(CheckError::Layout {
                    arch: self.isa.name().into(),
                    variant: self.variant.name.into(),
                    reason: format!("could not force a backend chunk for FAR test `{test}`"),
                });
            }
        };
        for f in fillers {
            let _ = self.percpu.free(f);
        }
        self.run_balance_work();
        let p = result?;
        self.sync_events()?;
        self.dyn_allocs.push(DynAlloc { ptr: p.0, size: size as u64, test: test.to_string() });
        Ok(p.0)
    }

    pub fn free_dynamic(&mut self, ptr: u64) -> Result<(), CheckError> {
        self.free_dynamic_at(ptr, None)
    }

    /// Free a dynamic allocation, remembering it (with `freed_at`, the
    /// caller of `free_percpu`) for [`Self::freed_allocation_at`].
    pub fn free_dynamic_at(&mut self, ptr: u64, freed_at: Option<String>) -> Result<(), CheckError> {
        let _ = self.percpu.free(PcpuPtr(ptr));
        if let Some(i) = self.dyn_allocs.iter().position(|d| d.ptr == ptr) {
            let d = self.dyn_allocs.remove(i);
            if let Some(freed_at) = freed_at {
                if self.freed_allocs.len() == FREED_HISTORY {
                    self.freed_allocs.pop_front();
                }
                self.freed_allocs.push_back(FreedAlloc { ptr, size: d.size, allocated_by: d.test, freed_at });
            }
        }
        self.run_balance_work();
        self.sync_events()
    }

    /// The most recently freed allocation that held percpu pointer `ptr`
    /// (the allocator may have reused the memory since: then the access is
    /// to a live allocation and this is not asked).
    pub fn freed_allocation_at(&self, ptr: u64) -> Option<&FreedAlloc> {
        self.freed_allocs.iter().rev().find(|f| ptr >= f.ptr && ptr - f.ptr < f.size.max(1))
    }

    /// An address in freed percpu memory, named: "byte 0x8 of the 16-byte
    /// allocation made by A and freed by B".  None when the memory is in
    /// a live allocation again, static, or was never allocated.
    pub fn freed_memory(&self, addr: u64) -> Option<String> {
        if self.freed_allocs.is_empty() {
            return None;
        }
        let loc = self.percpu.classify(addr)?;
        if loc.allocation.is_some() || loc.region == percpu_core::percpu::Region::Static {
            return None;
        }
        let f = self.freed_allocation_at(loc.pcpu_ptr.0)?;
        Some(format!(
            "byte {:#x} of the {}-byte allocation made by {} and freed by {}",
            loc.pcpu_ptr.0 - f.ptr,
            f.size,
            f.allocated_by,
            f.freed_at
        ))
    }

    /// `free_percpu` schedules `pcpu_balance_workfn` when a free leaves a
    /// surplus empty chunk or isolates one; the work runs soon after, so
    /// the bed runs it before the next test.  Its depopulations and chunk
    /// destructions reach the engine through [`Self::sync_events`]: pages
    /// it frees are unmapped, and a stale pointer into them faults.
    fn run_balance_work(&mut self) {
        if self.percpu.balance_pending() {
            let r = self.percpu.balance();
            tracing::debug!(?r, "percpu: balance work");
        }
    }

    /// The model's CPU context for `cpu`: the percpu offset register, and
    /// in kernel mode the current task, thread_info and preempt count.
    pub fn enter(&mut self, cpu: u32, abi: Option<&AbiNote>) -> Result<(), CheckError> {
        // Whatever the last run did to the CPU, this one starts clean.
        self.engine.reset_cpu().map_err(engine_err(self.sc, format!("resetting the CPU state for cpu {cpu}")))?;
        let off = self.offsets.get(cpu as usize).copied().flatten().unwrap_or(0);
        let mut ctx = crate::isa::CpuContext {
            cpu,
            per_cpu_offset: off,
            percpu_area: self.cpu_ptr(self.per_cpu_start, cpu).unwrap_or(0),
            thread_info: self.runtime.thread_info,
            ti_cpu_offset: abi.map(|a| a.ti_cpu_offset).unwrap_or(0),
            lowcore_percpu_offset: abi.map(|a| a.lowcore_percpu_offset).unwrap_or(0),
        };
        if let Some(k) = &self.kernel {
            ctx.thread_info = k.thread_info;
            ctx.ti_cpu_offset = k.abi.ti_cpu.unwrap_or(0) as u32;
            ctx.lowcore_percpu_offset = k.abi.lowcore.map_or(0, |l| l.percpu_offset as u32);
            self.enter_kernel(cpu, off)?;
        }
        if self.variant.model == OffsetModel::ThreadInfo && self.kernel.is_none() {
            let at = self.runtime.thread_info + ctx.ti_cpu_offset as u64;
            self.write_uint(at, cpu as u64, 4, "thread_info cpu")?;
        }
        let isa = self.isa;
        let variant = self.variant;
        self.offset_word = isa.offset_word(&ctx);
        isa.enter_cpu(self.engine.as_mut(), &variant, &ctx).map_err(engine_err(self.sc, format!("entering cpu {cpu}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Scenario;

    fn shipped(dir: &str, name: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/obj").join(dir).join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// Two backend chunks freed: the balance work destroys the surplus
    /// one and depopulates it, and the engine loses its pages (a stale
    /// pointer faults) while the kept chunk stays as the model says.
    #[test]
    fn balance_work_unmaps_what_it_depopulates_and_destroys() {
        let sc = Scenario::new("x86_64", None, percpu_core::CpuSet::first_n(4)).unwrap();
        let kernel = shipped("x86_64", "kernel.o");
        let mut bed = Bed::build(&sc, KernelImage::Object { name: "kernel.o", bytes: &kernel }, &[]).unwrap();
        let a = bed.alloc_dynamic(16, 8, true, "a").unwrap();
        // Fill a's chunk so the next FAR allocation needs another chunk.
        let chunk_a = bed.percpu.classify_ptr(PcpuPtr(a)).unwrap().chunk;
        let mut fill = Vec::new();
        while bed.percpu.classify_ptr(PcpuPtr(a)).is_some() {
            let contig = bed.percpu.chunk(chunk_a).map.contig_hint_bytes();
            if contig < 8 {
                break;
            }
            fill.push(bed.alloc_dynamic(contig.min(32 << 10) & !7, 8, true, "fill").unwrap());
        }
        let b = bed.alloc_dynamic(16, 8, true, "b").unwrap();
        let chunk_b = bed.percpu.classify_ptr(PcpuPtr(b)).unwrap().chunk;
        assert_ne!(chunk_a, chunk_b, "b needed a second backend chunk");
        let copy_b = bed.cpu_ptr(b, 1).unwrap();
        let copy_a = bed.cpu_ptr(a, 1).unwrap();
        assert!(bed.is_mapped(copy_b) && bed.read(copy_b, 8, "b").is_ok());

        for f in fill {
            bed.free_dynamic(f).unwrap();
        }
        bed.free_dynamic(a).unwrap();
        bed.free_dynamic(b).unwrap();
        // One of the two now-empty chunks is kept, the other destroyed.
        let live = |bed: &Bed<'_>, id| bed.percpu.chunk_opt(id).is_some();
        assert!(live(&bed, chunk_a) != live(&bed, chunk_b), "exactly one empty chunk survives the balance work");
        let (gone, kept) = if live(&bed, chunk_a) { (copy_b, copy_a) } else { (copy_a, copy_b) };
        assert!(!bed.is_mapped(gone), "a destroyed chunk's pages are unmapped");
        assert!(bed.read(gone, 8, "stale").is_err(), "the engine faults on a destroyed chunk");
        let kept_id = bed.percpu.classify(kept).map(|l| l.chunk);
        assert!(kept_id.is_some(), "the kept chunk still classifies");
        assert!(!bed.percpu.balance_pending());
    }
}
