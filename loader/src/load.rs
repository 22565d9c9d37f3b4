//! Loading objects the way kernel/module.c does: find the percpu section,
//! allocate it from the reserved chunk, lay out the other SHF_ALLOC sections
//! where the caller chooses, resolve and rebase symbols, build GOT/PLT
//! entries, apply relocations, copy the percpu data into every unit, and read
//! the fixture contract from the result.

use std::collections::HashMap;

use serde::Serialize;

use crate::contract::{self, AbiNote, TestDescriptor, ABI_SECTION, TESTS_SECTION};
use crate::elf::{self, ElfObject, Machine, Section, Symbol, SHF_ALLOC, SHF_EXECINSTR, SHF_WRITE};
use crate::error::{LoadError, OverflowUse, Place, RelocTypeName};
use crate::placement::{PercpuPlacer, PlaceRequest, SectionKind, SectionPlacer};
use crate::reloc::{self, arch_for, Anchor, Arch, Cx, Fault, Input, OverflowPolicy, TableUse, Truncation};
use crate::symbols::{ResolvedSymbol, SymbolResolver, SymbolTable};

/// The largest number of bytes one object may ask us to materialise
/// (sections plus percpu data); beyond it the object is refused, not loaded.
pub const MAX_LOAD_BYTES: u64 = 512 << 20;

/// Knobs for loading.
#[derive(Clone, Debug, Serialize)]
pub struct LoadOptions {
    pub overflow: OverflowPolicy,
    /// Read `.percpu_bed.abi` and `.percpu_bed.tests` after relocation.
    pub contract: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { overflow: OverflowPolicy::Kernel, contract: true }
    }
}

/// What an object is to the test bed.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectRole {
    /// An ET_REL module: `.data..percpu` goes to the reserved chunk.
    Module,
    /// An ET_REL kernel image: its `.data..percpu*` sections are the static area.
    KernelImage,
    /// A linked (ET_EXEC/ET_DYN) vmlinux-style image.
    LinkedImage,
}

/// One section in memory.
#[derive(Clone, Debug, Serialize)]
pub struct LoadedSection {
    /// Index in the object, `None` for the GOT/PLT the loader builds.
    pub index: Option<usize>,
    pub name: String,
    pub kind: SectionKind,
    pub addr: u64,
    pub align: u64,
    pub flags: u64,
    /// SHT_NOBITS in the object (zero-filled here).
    pub nobits: bool,
    #[serde(skip)]
    pub data: Vec<u8>,
    pub size: u64,
}

impl LoadedSection {
    pub fn end(&self) -> u64 {
        self.addr.wrapping_add(self.data.len() as u64)
    }
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.addr && addr - self.addr < self.data.len() as u64
    }
}

/// A module's percpu allocation.
#[derive(Clone, Debug, Serialize)]
pub struct ModulePercpu {
    pub section: String,
    /// The percpu pointer the section's symbols were rebased onto.
    pub ptr: u64,
    pub size: u64,
    /// Alignment used (after clamping to PAGE_SIZE).
    pub align: u64,
    /// Alignment the object asked for.
    pub requested_align: u64,
    /// The initial data copied into every unit.
    #[serde(skip)]
    pub data: Vec<u8>,
}

/// A kernel image's static percpu area (`__per_cpu_start`..`__per_cpu_end`,
/// initial data at `__per_cpu_load`).
#[derive(Clone, Debug, Serialize)]
pub struct StaticPercpu {
    pub start: u64,
    pub end: u64,
    pub load: u64,
    pub align: u64,
    /// The static area's initial bytes (relocated, for an ET_REL image).
    #[serde(skip)]
    pub data: Vec<u8>,
}

/// A symbol with its final value.
#[derive(Clone, Debug, Serialize)]
pub struct LoadedSymbol {
    pub name: String,
    pub value: u64,
    pub size: u64,
    pub bind: u8,
    pub kind: u8,
    pub section: Option<String>,
    pub defined: bool,
    pub percpu: bool,
}

impl LoadedSymbol {
    pub fn is_global(&self) -> bool {
        self.bind == elf::STB_GLOBAL || self.bind == elf::STB_WEAK
    }
}

/// A loaded, relocated object.
#[derive(Clone, Debug, Serialize)]
pub struct LoadedObject {
    pub name: String,
    pub machine: Machine,
    pub e_machine: u16,
    pub e_flags: u32,
    pub is_64: bool,
    pub little_endian: bool,
    pub role: ObjectRole,
    pub sections: Vec<LoadedSection>,
    pub percpu: Option<ModulePercpu>,
    pub static_percpu: Option<StaticPercpu>,
    pub symbols: Vec<LoadedSymbol>,
    /// alpha: the GP the module's code was relocated against.
    pub gp: Option<u64>,
    pub relocations_applied: usize,
    /// Values the arch's loader silently truncated (policy `Kernel`).
    pub truncations: Vec<Truncation>,
    pub warnings: Vec<String>,
    pub abi: Option<AbiNote>,
    pub tests: Vec<TestDescriptor>,
}

impl LoadedObject {
    pub fn symbol(&self, name: &str) -> Option<&LoadedSymbol> {
        self.symbols.iter().find(|s| s.name == name && s.defined)
    }
    pub fn section(&self, name: &str) -> Option<&LoadedSection> {
        self.sections.iter().find(|s| s.name == name)
    }
    /// The loaded section holding `addr`.
    pub fn section_at(&self, addr: u64) -> Option<&LoadedSection> {
        self.sections.iter().find(|s| s.contains(addr))
    }
    /// `len` bytes at `addr`, if they lie inside one loaded section.
    pub fn read(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let s = self.section_at(addr)?;
        let off = (addr - s.addr) as usize;
        s.data.get(off..off.checked_add(len)?)
    }
    /// The NUL-terminated string at `addr` (at most `max` bytes before the NUL).
    pub fn read_cstr(&self, addr: u64, max: usize) -> Option<String> {
        let s = self.section_at(addr)?;
        let rest = &s.data[(addr - s.addr) as usize..];
        let end = rest.iter().take(max + 1).position(|&b| b == 0)?;
        Some(String::from_utf8_lossy(&rest[..end]).into_owned())
    }
    /// A target `unsigned long` at `addr`.
    pub fn read_ulong(&self, addr: u64) -> Option<u64> {
        let w = if self.is_64 { 8 } else { 4 };
        let b = self.read(addr, w)?;
        let mut v = 0u64;
        for i in 0..w {
            let byte = if self.little_endian { b[w - 1 - i] } else { b[i] };
            v = (v << 8) | byte as u64;
        }
        Some(v)
    }
    /// The global and weak symbols this object defines, for resolving the
    /// next object's undefined symbols.
    pub fn exports(&self) -> SymbolTable {
        let mut t = SymbolTable::new();
        for s in self.symbols.iter().filter(|s| s.defined && s.is_global() && !s.name.is_empty()) {
            t.insert(s.name.clone(), ResolvedSymbol { value: s.value, percpu: s.percpu });
        }
        t
    }
}

/// Copy a section's file bytes into its zero-filled memory image (an
/// SHT_NULL section with a size has no bytes: it stays zero).
fn fill(dst: &mut [u8], src: &[u8]) {
    let n = dst.len().min(src.len());
    dst[..n].copy_from_slice(&src[..n]);
}

fn is_percpu_name(name: &str) -> bool {
    name == ".data..percpu" || name == ".data.percpu"
}

/// A kernel image's static percpu input sections, in the linker script's order.
fn static_percpu_rank(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(".data..percpu").or_else(|| name.strip_prefix(".data.percpu"))?;
    Some(match rest {
        "..first" | ".first" => 0,
        "..page_aligned" | ".page_aligned" => 1,
        "..read_mostly" | ".read_mostly" => 2,
        "" => 3,
        "..shared_aligned" | ".shared_aligned" => 4,
        _ if rest.starts_with('.') => 5,
        _ => return None,
    })
}

fn kind_of(s: &Section) -> SectionKind {
    let init = s.name.starts_with(".init");
    let exec = s.flags & SHF_EXECINSTR != 0;
    let write = s.flags & SHF_WRITE != 0;
    match (init, exec, write) {
        (false, true, _) => SectionKind::Text,
        (true, true, _) => SectionKind::InitText,
        (false, false, false) => SectionKind::ReadOnly,
        (true, false, false) => SectionKind::InitReadOnly,
        (false, false, true) if s.name == ".data..ro_after_init" || s.name == "__jump_table" => {
            SectionKind::RoAfterInit
        }
        (false, false, true) => SectionKind::Data,
        (true, false, true) => SectionKind::InitData,
    }
}

fn rtype(arch: &dyn Arch, r_type: u32) -> RelocTypeName {
    RelocTypeName { number: r_type, name: arch.type_name(r_type) }
}

fn fmt_value(v: i128) -> String {
    if v < 0 {
        format!("-{:#x}", -v)
    } else {
        format!("{v:#x}")
    }
}

/// Load a module (ET_REL) into the test bed: `.data..percpu` goes to the
/// reserved chunk through `percpu`, everything else where `placer` says;
/// undefined symbols are resolved through `resolvers` in order.
pub fn load_module(
    name: &str,
    bytes: &[u8],
    opts: &LoadOptions,
    percpu: &mut dyn PercpuPlacer,
    placer: &mut dyn SectionPlacer,
    resolvers: &[&dyn SymbolResolver],
) -> Result<LoadedObject, LoadError> {
    let obj = ElfObject::parse(name, bytes)?;
    if obj.e_type != elf::ET_REL {
        return Err(LoadError::malformed(name, format!("a module must be ET_REL (e_type {})", obj.e_type)));
    }
    load_rel(&obj, ObjectRole::Module, opts, Some(percpu), placer, resolvers)
}

/// Load a kernel image object: an ET_REL image is laid out by `placer` (its
/// static percpu area is requested as [`SectionKind::StaticPercpu`]) and
/// relocated; a linked image is taken at its link addresses.
pub fn load_kernel_image(
    name: &str,
    bytes: &[u8],
    opts: &LoadOptions,
    placer: &mut dyn SectionPlacer,
    resolvers: &[&dyn SymbolResolver],
) -> Result<LoadedObject, LoadError> {
    let obj = ElfObject::parse(name, bytes)?;
    if obj.e_type == elf::ET_REL {
        load_rel(&obj, ObjectRole::KernelImage, opts, None, placer, resolvers)
    } else {
        load_linked(&obj, opts)
    }
}

/// Load any object by what it is: ET_EXEC/ET_DYN as a linked image, an
/// ET_REL defining `__per_cpu_offset` as a kernel image, else as a module.
pub fn load_object(
    name: &str,
    bytes: &[u8],
    opts: &LoadOptions,
    percpu: &mut dyn PercpuPlacer,
    placer: &mut dyn SectionPlacer,
    resolvers: &[&dyn SymbolResolver],
) -> Result<LoadedObject, LoadError> {
    let obj = ElfObject::parse(name, bytes)?;
    match role_of(&obj) {
        ObjectRole::LinkedImage => load_linked(&obj, opts),
        ObjectRole::KernelImage => load_rel(&obj, ObjectRole::KernelImage, opts, None, placer, resolvers),
        ObjectRole::Module => load_rel(&obj, ObjectRole::Module, opts, Some(percpu), placer, resolvers),
    }
}

/// How [`load_object`] and `inspect` classify an object.
pub fn role_of(obj: &ElfObject<'_>) -> ObjectRole {
    if obj.e_type != elf::ET_REL {
        ObjectRole::LinkedImage
    } else if obj.symbol_by_name("__per_cpu_offset").is_some() {
        ObjectRole::KernelImage
    } else {
        ObjectRole::Module
    }
}

/// The module loader's percpu section (`find_pcpusec`): SHF_ALLOC and named
/// `.data..percpu` (or the pre-2010 `.data.percpu`).
pub fn module_percpu_section(obj: &ElfObject<'_>) -> Option<usize> {
    let find = |n: &str| obj.sections.iter().position(|s| s.is_alloc() && s.name == n);
    find(".data..percpu").or_else(|| find(".data.percpu"))
}

/// A kernel image's static percpu sections, in link order.
pub fn static_percpu_sections(obj: &ElfObject<'_>) -> Vec<usize> {
    let mut v: Vec<(u32, usize)> = obj
        .sections
        .iter()
        .filter(|s| s.is_alloc())
        .filter_map(|s| static_percpu_rank(&s.name).map(|r| (r, s.index)))
        .collect();
    v.sort();
    v.into_iter().map(|(_, i)| i).collect()
}

struct Budget<'a> {
    object: &'a str,
    used: u64,
}

impl Budget<'_> {
    fn take(&mut self, what: &str, n: u64) -> Result<(), LoadError> {
        self.used = self.used.saturating_add(n);
        if self.used > MAX_LOAD_BYTES {
            return Err(LoadError::SizeOverflow {
                object: self.object.to_string(),
                what: what.to_string(),
                detail: format!("the object needs more than {} MiB of memory", MAX_LOAD_BYTES >> 20),
            });
        }
        Ok(())
    }
}

fn check_addr(obj: &ElfObject<'_>, what: &str, addr: u64, size: u64) -> Result<(), LoadError> {
    let limit: u128 = if obj.is_64 { 1 << 64 } else { 1 << 32 };
    if addr as u128 + size as u128 > limit {
        return Err(LoadError::SizeOverflow {
            object: obj.name.clone(),
            what: what.to_string(),
            detail: format!("{addr:#x} + {size:#x} leaves the {}-bit address space", obj.class_bits()),
        });
    }
    Ok(())
}

/// Where a section's bytes ended up.
#[derive(Copy, Clone, Debug)]
enum Home {
    /// Index into `LoadedObject::sections`.
    Loaded(usize),
    /// The module's percpu allocation (ptr).
    ModulePercpu(u64),
    /// Offset into the static percpu area.
    StaticPercpu(u64),
    NotLoaded,
}

fn load_rel(
    obj: &ElfObject<'_>,
    role: ObjectRole,
    opts: &LoadOptions,
    mut percpu: Option<&mut dyn PercpuPlacer>,
    placer: &mut dyn SectionPlacer,
    resolvers: &[&dyn SymbolResolver],
) -> Result<LoadedObject, LoadError> {
    let name = obj.name.as_str();
    let machine = obj.require_machine()?;
    let arch = arch_for(machine);
    crate::validate::validate(obj, role, opts.contract)?;
    let mut budget = Budget { object: name, used: 0 };
    let mut warnings = Vec::new();
    let mut homes = vec![Home::NotLoaded; obj.sections.len()];

    // Percpu sections.
    let pcpu_index = if role == ObjectRole::Module { module_percpu_section(obj) } else { None };
    let static_secs = if role == ObjectRole::KernelImage { static_percpu_sections(obj) } else { Vec::new() };

    // The GOT and PLT the arch needs, sized from every RELA section like
    // module_frob_arch_sections does.
    let mut got_keys: Vec<(usize, i64)> = Vec::new();
    let mut plt_keys: Vec<(usize, i64)> = Vec::new();
    {
        let mut seen_got = std::collections::HashSet::new();
        let mut seen_plt = std::collections::HashSet::new();
        for rs in &obj.relocs {
            for r in &rs.entries {
                let (key, got) = match arch.table_use(r) {
                    TableUse::None => continue,
                    TableUse::GotPerAddend => ((r.sym, r.addend), true),
                    TableUse::GotPerSymbol => ((r.sym, 0), true),
                    TableUse::PltPerAddend => ((r.sym, r.addend), false),
                    TableUse::PltPerSymbol => ((r.sym, 0), false),
                };
                if got {
                    if seen_got.insert(key) {
                        got_keys.push(key);
                    }
                } else if seen_plt.insert(key) {
                    plt_keys.push(key);
                }
            }
        }
    }
    let want_got = !got_keys.is_empty() || matches!(machine, Machine::Alpha | Machine::S390x);
    let want_plt = !plt_keys.is_empty();

    // Lay out the SHF_ALLOC sections like layout_sections: core text,
    // read-only, ro_after_init, data, then the GOT and PLT at the end of the
    // core, then init.
    let mut order: Vec<(SectionKind, usize)> = Vec::new();
    for s in &obj.sections {
        let forced = s.name == TESTS_SECTION && s.sh_type != goblin::elf::section_header::SHT_NULL;
        if !(s.is_alloc() || forced) {
            continue;
        }
        if Some(s.index) == pcpu_index || static_secs.contains(&s.index) {
            continue;
        }
        // kernel/module.c clears SHF_ALLOC on these.
        if s.name == ".modinfo" || s.name == "__versions" {
            continue;
        }
        if (want_got && s.name == ".got") || (want_plt && s.name == ".plt") {
            continue;
        }
        order.push((kind_of(s), s.index));
    }
    order.sort();
    let mut sections: Vec<LoadedSection> = Vec::new();
    let place = |placer: &mut dyn SectionPlacer, sname: &str, kind: SectionKind, size: u64, align: u64| {
        placer
            .place(&PlaceRequest { object: name, section: sname, kind, size, align })
            .map_err(|source| LoadError::Place { object: name.to_string(), section: sname.to_string(), source })
    };
    let mut got_index = None;
    let mut plt_index = None;
    let core: Vec<_> = order.iter().filter(|(k, _)| !k.is_init()).copied().collect();
    let init: Vec<_> = order.iter().filter(|(k, _)| k.is_init()).copied().collect();
    for (kind, i) in core {
        load_section(obj, i, kind, placer, &mut sections, &mut homes, &mut budget)?;
    }
    if want_got {
        let size = got_keys.len() as u64 * arch.got_entry_size();
        budget.take("GOT", size)?;
        let addr = place(placer, ".got", SectionKind::Got, size, 8)?;
        check_addr(obj, "GOT", addr, size)?;
        got_index = Some(sections.len());
        sections.push(LoadedSection {
            index: None,
            name: ".got".into(),
            kind: SectionKind::Got,
            addr,
            align: 8,
            flags: SHF_ALLOC | SHF_WRITE,
            nobits: false,
            size,
            data: vec![0; size as usize],
        });
    }
    if want_plt {
        let size = plt_keys.len() as u64 * arch.plt_entry_size();
        budget.take("PLT", size)?;
        let addr = place(placer, ".plt", SectionKind::Plt, size, 8)?;
        check_addr(obj, "PLT", addr, size)?;
        plt_index = Some(sections.len());
        sections.push(LoadedSection {
            index: None,
            name: ".plt".into(),
            kind: SectionKind::Plt,
            addr,
            align: 8,
            flags: SHF_ALLOC | SHF_EXECINSTR,
            nobits: false,
            size,
            data: vec![0; size as usize],
        });
    }
    for (kind, i) in init {
        load_section(obj, i, kind, placer, &mut sections, &mut homes, &mut budget)?;
    }

    // alpha: GP sits 0x8000 below the end of the core (the GOT is last).
    let gp = if arch.uses_gp() {
        let end = got_index
            .map(|g| sections[g].end())
            .unwrap_or_else(|| sections.iter().filter(|s| !s.kind.is_init()).map(|s| s.end()).max().unwrap_or(0));
        Some(end.wrapping_sub(0x8000))
    } else {
        None
    };

    // percpu_modalloc.
    let mut module_percpu = None;
    if let Some(pi) = pcpu_index {
        let s = &obj.sections[pi];
        if s.size > 0 {
            let pl = percpu.as_deref_mut().expect("modules get a percpu placer");
            let page = pl.page_size().max(1);
            let mut align = s.align.max(1);
            if align > page {
                tracing::warn!("{}: per-cpu alignment {} > {}", name, align, page);
                warnings.push(format!("per-cpu alignment {align} > {page}: clamped to {page}"));
                align = page;
            }
            budget.take("percpu section", s.size)?;
            let ptr = pl.alloc_reserved(s.size, align).map_err(|source| {
                tracing::warn!("{}: Could not allocate {} bytes percpu data", name, s.size);
                LoadError::PercpuAlloc { object: name.to_string(), size: s.size, align, source }
            })?;
            check_addr(obj, "percpu allocation", ptr, s.size)?;
            let mut data = vec![0u8; s.size as usize];
            if !s.is_nobits() {
                fill(&mut data, obj.section_data(pi));
            }
            homes[pi] = Home::ModulePercpu(ptr);
            module_percpu = Some(ModulePercpu {
                section: s.name.clone(),
                ptr,
                size: s.size,
                align,
                requested_align: s.align,
                data,
            });
        } else {
            homes[pi] = Home::ModulePercpu(0);
        }
    }

    // The static area of a relocatable kernel image.
    let mut static_percpu = None;
    if !static_secs.is_empty() {
        let mut off = 0u64;
        let mut max_align = 1u64;
        let mut offsets = Vec::new();
        for &i in &static_secs {
            let s = &obj.sections[i];
            max_align = max_align.max(s.align);
            off = off.checked_add(s.align - 1).map(|x| x & !(s.align - 1)).ok_or_else(|| LoadError::SizeOverflow {
                object: name.to_string(),
                what: "static percpu area".into(),
                detail: "alignment".into(),
            })?;
            offsets.push(off);
            off = off.checked_add(s.size).ok_or_else(|| LoadError::SizeOverflow {
                object: name.to_string(),
                what: "static percpu area".into(),
                detail: format!("section {} size {:#x}", s.name, s.size),
            })?;
        }
        budget.take("static percpu area", off)?;
        let start = place(placer, ".data..percpu", SectionKind::StaticPercpu, off, max_align)?;
        check_addr(obj, "static percpu area", start, off)?;
        let mut data = vec![0u8; off as usize];
        for (&i, &o) in static_secs.iter().zip(&offsets) {
            let s = &obj.sections[i];
            if !s.is_nobits() {
                fill(&mut data[o as usize..(o + s.size) as usize], obj.section_data(i));
            }
            homes[i] = Home::StaticPercpu(o);
        }
        static_percpu = Some(StaticPercpu { start, end: start.wrapping_add(off), load: start, align: max_align, data });
    }

    // simplify_symbols.
    let got_base = got_index.map(|g| sections[g].addr).unwrap_or(0);
    let mut values = vec![0u64; obj.symbols.len()];
    let mut symbols = Vec::with_capacity(obj.symbols.len());
    for sym in &obj.symbols {
        let (value, defined, percpu_sym, section) = resolve_symbol(
            obj,
            sym,
            &homes,
            &sections,
            static_percpu.as_ref(),
            got_index.map(|_| got_base),
            resolvers,
        )?;
        values[sym.index] = value;
        symbols.push(LoadedSymbol {
            name: sym.name.clone(),
            value,
            size: sym.size,
            bind: sym.bind,
            kind: sym.kind,
            section,
            defined,
            percpu: percpu_sym,
        });
    }

    // GOT slots and PLT entries.
    let mut got_map = HashMap::new();
    if let Some(g) = got_index {
        let esz = arch.got_entry_size();
        for (n, key) in got_keys.iter().enumerate() {
            let at = sections[g].addr + n as u64 * esz;
            got_map.insert(*key, at);
            let v = values[key.0].wrapping_add(key.1 as u64);
            let bytes = if obj.little_endian { v.to_le_bytes() } else { v.to_be_bytes() };
            let o = (n as u64 * esz) as usize;
            sections[g].data[o..o + 8].copy_from_slice(&bytes);
        }
    }
    let mut plt_map = HashMap::new();
    if let Some(p) = plt_index {
        let esz = arch.plt_entry_size();
        for (n, key) in plt_keys.iter().enumerate() {
            let at = sections[p].addr + n as u64 * esz;
            plt_map.insert(*key, at);
            let target = values[key.0].wrapping_add(key.1 as u64);
            let e = arch.plt_entry(at, target);
            let o = (n as u64 * esz) as usize;
            sections[p].data[o..o + e.len()].copy_from_slice(&e);
        }
    }

    // apply_relocations.
    let mut truncations = Vec::new();
    let mut applied = 0usize;
    let mut first_overflow: Option<LoadError> = None;
    let mut overflow_uses: Vec<OverflowUse> = Vec::new();
    let mut static_data = static_percpu.as_mut().map(|s| std::mem::take(&mut s.data));
    let mut percpu_reloc_warned = false;
    for rs in &obj.relocs {
        let target = &obj.sections[rs.target];
        let (base_addr, data_ref): (u64, &mut [u8]) = match homes[rs.target] {
            Home::Loaded(li) => {
                let s = &mut sections[li];
                (s.addr, &mut s.data[..])
            }
            Home::StaticPercpu(o) => {
                let sp = static_percpu.as_ref().map(|s| s.start).unwrap_or(0);
                let buf = static_data.as_mut().expect("static area exists");
                let sz = target.size as usize;
                (sp.wrapping_add(o), &mut buf[o as usize..o as usize + sz])
            }
            Home::ModulePercpu(_) => {
                if !rs.entries.is_empty() && !percpu_reloc_warned {
                    percpu_reloc_warned = true;
                    let w = format!(
                        "{} relocations in {} are not applied: kernel/module.c clears SHF_ALLOC on the percpu section and skips them",
                        rs.entries.len(),
                        target.name
                    );
                    tracing::warn!("{name}: {w}");
                    warnings.push(w);
                }
                continue;
            }
            Home::NotLoaded => continue,
        };
        if !rs.is_rela && !rs.entries.is_empty() {
            return Err(LoadError::RelNotSupported {
                object: name.to_string(),
                section: rs.name.clone(),
                machine: machine.to_string(),
            });
        }
        // riscv: where each high part of a pair sits and what it points to.
        let mut anchors = HashMap::new();
        for r in &rs.entries {
            if let Some(kind) = arch.anchor(r.r_type) {
                let t = match kind {
                    Anchor::Direct => values[r.sym].wrapping_add(r.addend as u64),
                    Anchor::Got => got_map.get(&(r.sym, r.addend)).copied().unwrap_or(0),
                };
                anchors.insert(base_addr.wrapping_add(r.offset), t);
            }
        }
        let mut cx = Cx {
            data: data_ref,
            off: 0,
            little: obj.little_endian,
            policy: opts.overflow,
            got: &got_map,
            got_base,
            plt: &plt_map,
            gp: gp.unwrap_or(0),
            anchors: &anchors,
            truncated: None,
        };
        for r in &rs.entries {
            let sym = &obj.symbols[r.sym];
            let place = || Place { section: target.name.clone(), offset: r.offset };
            let sec_len = cx.data.len() as u64;
            if r.offset >= sec_len
                && !(sec_len == 0 && arch.reach(r.r_type).map(|x| x.base) == Some(reloc::ReachBase::None))
            {
                return Err(LoadError::RelocOutOfSection {
                    object: name.to_string(),
                    rtype: rtype(arch, r.r_type),
                    place: place(),
                    offset: r.offset,
                    size: sec_len,
                });
            }
            cx.off = r.offset as usize;
            let input = Input {
                r_type: r.r_type,
                s: values[r.sym],
                a: r.addend,
                p: base_addr.wrapping_add(r.offset),
                sym: r.sym,
                sym_undefined: sym.is_undefined(),
                sym_other: sym.other,
            };
            let sym_percpu = symbols[r.sym].percpu;
            let origin = if sym.is_undefined() {
                reloc::SymbolOrigin::Imported
            } else if sym.is_weak() {
                reloc::SymbolOrigin::OwnWeak
            } else {
                reloc::SymbolOrigin::Own
            };
            match arch.apply(&mut cx, &input) {
                Ok(()) => {}
                // Go on: the error names every reference out of reach.
                Err(f @ Fault::Overflow { .. }) => {
                    let e = fault_to_error(name, arch, r.r_type, place(), &sym.name, sym_percpu, origin, f, sec_len);
                    if let LoadError::Overflow { place, rtype, value, rule, .. } = &e {
                        overflow_uses.push(OverflowUse {
                            place: place.clone(),
                            function: function_at(obj, target.index, r.offset),
                            rtype: rtype.clone(),
                            variable: variable_named(
                                obj,
                                sym,
                                r.addend,
                                arch.reach(r.r_type).is_some_and(|x| x.base == reloc::ReachBase::Pc),
                            ),
                            value: value.clone(),
                            rule: rule.clone(),
                        });
                    }
                    first_overflow.get_or_insert(e);
                    continue;
                }
                Err(f) => {
                    return Err(fault_to_error(
                        name,
                        arch,
                        r.r_type,
                        place(),
                        &sym.name,
                        sym_percpu,
                        origin,
                        f,
                        sec_len,
                    ))
                }
            }
            if let Some((value, reach)) = cx.truncated.take() {
                tracing::debug!("{name}: {}: {} against {} truncated", place(), rtype(arch, r.r_type), sym.name);
                truncations.push(Truncation {
                    section: target.name.clone(),
                    offset: r.offset,
                    r_type: r.r_type,
                    type_name: arch.type_name(r.r_type),
                    symbol: sym.name.clone(),
                    percpu: sym_percpu,
                    value,
                    reach,
                });
            }
            applied += 1;
        }
    }
    if let Some(mut e) = first_overflow {
        if let LoadError::Overflow { uses, .. } = &mut e {
            *uses = overflow_uses;
        }
        return Err(e);
    }
    if let (Some(sp), Some(d)) = (static_percpu.as_mut(), static_data) {
        sp.data = d;
    }

    // percpu_modcopy.
    if let (Some(mp), Some(pl)) = (module_percpu.as_ref(), percpu) {
        pl.copy_to_all_units(mp.ptr, &mp.data);
    }

    let mut loaded = LoadedObject {
        name: name.to_string(),
        machine,
        e_machine: obj.e_machine,
        e_flags: obj.e_flags,
        is_64: obj.is_64,
        little_endian: obj.little_endian,
        role,
        sections,
        percpu: module_percpu,
        static_percpu,
        symbols,
        gp,
        relocations_applied: applied,
        truncations,
        warnings,
        abi: None,
        tests: Vec::new(),
    };
    if opts.contract {
        let abi_raw = abi_sections(obj, &loaded);
        let (abi, tests) = contract::parse(&loaded, &abi_raw)?;
        loaded.abi = abi;
        loaded.tests = tests;
    }
    Ok(loaded)
}

#[allow(clippy::too_many_arguments)]
fn load_section(
    obj: &ElfObject<'_>,
    i: usize,
    kind: SectionKind,
    placer: &mut dyn SectionPlacer,
    sections: &mut Vec<LoadedSection>,
    homes: &mut [Home],
    budget: &mut Budget<'_>,
) -> Result<(), LoadError> {
    let s = &obj.sections[i];
    budget.take(&format!("section {}", s.name), s.size)?;
    let addr = placer
        .place(&PlaceRequest { object: &obj.name, section: &s.name, kind, size: s.size, align: s.align })
        .map_err(|source| LoadError::Place { object: obj.name.clone(), section: s.name.clone(), source })?;
    check_addr(obj, &format!("section {}", s.name), addr, s.size)?;
    let mut data = vec![0u8; s.size as usize];
    if !s.is_nobits() {
        fill(&mut data, obj.section_data(i));
    }
    homes[i] = Home::Loaded(sections.len());
    sections.push(LoadedSection {
        index: Some(i),
        name: s.name.clone(),
        kind,
        addr,
        align: s.align,
        flags: s.flags,
        nobits: s.is_nobits(),
        size: s.size,
        data,
    });
    Ok(())
}

fn abi_sections(obj: &ElfObject<'_>, loaded: &LoadedObject) -> Vec<Vec<u8>> {
    obj.sections
        .iter()
        .filter(|s| s.name == ABI_SECTION)
        .map(|s| match loaded.sections.iter().find(|l| l.index == Some(s.index)) {
            Some(l) => l.data.clone(),
            None if s.is_nobits() => vec![0; (s.size as usize).min(4096)],
            None => obj.section_data(s.index).to_vec(),
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn resolve_symbol(
    obj: &ElfObject<'_>,
    sym: &Symbol,
    homes: &[Home],
    sections: &[LoadedSection],
    static_percpu: Option<&StaticPercpu>,
    got_base: Option<u64>,
    resolvers: &[&dyn SymbolResolver],
) -> Result<(u64, bool, bool, Option<String>), LoadError> {
    let name = obj.name.as_str();
    if sym.index == 0 {
        return Ok((0, false, false, None));
    }
    match sym.shndx {
        elf::SHN_COMMON => return Err(LoadError::CommonSymbol { object: name.to_string(), symbol: sym.name.clone() }),
        elf::SHN_XINDEX => return Err(LoadError::ExtendedIndex { object: name.to_string(), symbol: sym.name.clone() }),
        elf::SHN_ABS => return Ok((sym.value, true, false, None)),
        elf::SHN_UNDEF => {
            if sym.name.is_empty() {
                return Ok((0, false, false, None));
            }
            if sym.name == "_GLOBAL_OFFSET_TABLE_" {
                if let Some(g) = got_base {
                    return Ok((g, false, false, None));
                }
            }
            for r in resolvers {
                if let Some(rs) = r.resolve(&sym.name) {
                    return Ok((rs.value, false, rs.percpu, None));
                }
            }
            if sym.is_weak() {
                return Ok((0, false, false, None));
            }
            return Err(LoadError::UnknownSymbol { object: name.to_string(), symbol: sym.name.clone() });
        }
        _ => {}
    }
    let Some(sec) = sym.section() else {
        // Other reserved indices (SHN_LOPROC..): take the value as is.
        return Ok((sym.value, true, false, None));
    };
    let sname = Some(obj.sections[sec].name.clone());
    Ok(match homes[sec] {
        Home::Loaded(li) => (sections[li].addr.wrapping_add(sym.value), true, false, sname),
        Home::ModulePercpu(ptr) => (ptr.wrapping_add(sym.value), true, true, sname),
        Home::StaticPercpu(o) => {
            (static_percpu.map(|s| s.start).unwrap_or(0).wrapping_add(o).wrapping_add(sym.value), true, true, sname)
        }
        Home::NotLoaded => (sym.value, true, false, sname),
    })
}

/// `function+0x2`: the function symbol of section `sec` holding `offset`.
fn function_at(obj: &ElfObject<'_>, sec: usize, offset: u64) -> Option<String> {
    obj.symbols
        .iter()
        .filter(|s| s.kind == goblin::elf::sym::STT_FUNC && s.section() == Some(sec))
        .find(|s| offset >= s.value && offset - s.value < s.size.max(1))
        .map(|s| format!("{}+{:#x}", s.name, offset - s.value))
}

/// The variable a relocation names: the symbol itself, or for a section
/// symbol the object its addend points at.  Pc-relative addends carry the
/// distance from the place to the instruction (+2 for s390x larl, -4 for
/// x86_64 disp32), so for those an object starting within 8 bytes of the
/// addend is taken first.
fn variable_named(obj: &ElfObject<'_>, sym: &Symbol, addend: i64, pc_relative: bool) -> String {
    let Some(sec) = sym.section().filter(|_| sym.is_section()) else { return sym.name.clone() };
    let objects =
        || obj.symbols.iter().filter(move |s| s.section() == Some(sec) && !s.is_section() && !s.name.is_empty());
    let starting = |at: i64| objects().find(|s| at >= 0 && s.value == at as u64);
    let biased = pc_relative.then(|| (1..=8i64).flat_map(|d| [addend - d, addend + d]).find_map(starting)).flatten();
    if let Some(s) = starting(addend).or(biased) {
        return s.name.clone();
    }
    match objects().find(|s| addend >= 0 && (addend as u64) >= s.value && (addend as u64) - s.value < s.size.max(1)) {
        Some(s) => format!("{}+{:#x}", s.name, addend as u64 - s.value),
        None => format!("{}{:+#x}", sym.name, addend),
    }
}

#[allow(clippy::too_many_arguments)]
fn fault_to_error(
    object: &str,
    arch: &dyn Arch,
    r_type: u32,
    place: Place,
    symbol: &str,
    percpu: bool,
    origin: reloc::SymbolOrigin,
    f: Fault,
    sec_len: u64,
) -> LoadError {
    let machine = arch.machine().to_string();
    let rt = rtype(arch, r_type);
    match f {
        Fault::Unknown => LoadError::UnknownRelocation { object: object.to_string(), machine, rtype: rt, place },
        Fault::Unsupported(reason) => LoadError::UnsupportedRelocation {
            object: object.to_string(),
            machine,
            rtype: rt,
            place,
            symbol: symbol.to_string(),
            reason,
        },
        Fault::OutOfSection { .. } => LoadError::RelocOutOfSection {
            object: object.to_string(),
            rtype: rt,
            offset: place.offset,
            place,
            size: sec_len,
        },
        Fault::Overflow { value, reach } => LoadError::Overflow {
            object: object.to_string(),
            place,
            rtype: rt,
            symbol: symbol.to_string(),
            value: fmt_value(value),
            reach: reach.to_string(),
            rule: if percpu { arch.percpu_rule_for(r_type, origin) } else { None },
            uses: Vec::new(),
        },
        Fault::Bad(reason) => LoadError::BadRelocation {
            object: object.to_string(),
            place,
            rtype: rt,
            symbol: symbol.to_string(),
            reason,
        },
    }
}

/// The static percpu area of a linked image: symbols first, the section as
/// a fallback.
pub(crate) fn linked_static_area(obj: &ElfObject<'_>) -> Option<(u64, u64, u64, Option<usize>)> {
    let sym = |n: &str| obj.symbol_by_name(n).map(|s| s.value);
    let sec = obj.sections.iter().position(|s| s.is_alloc() && is_percpu_name(&s.name)).or_else(|| {
        sym("__per_cpu_start").and_then(|a| obj.sections.iter().position(|s| s.is_alloc() && s.addr == a && s.size > 0))
    });
    match (sym("__per_cpu_start"), sym("__per_cpu_end")) {
        (Some(start), Some(end)) if end >= start => Some((start, end, sym("__per_cpu_load").unwrap_or(start), sec)),
        _ => sec.and_then(|i| {
            let s = &obj.sections[i];
            // A section running past the top of the address space has no bounds.
            s.addr.checked_add(s.size).map(|end| (s.addr, end, s.addr, Some(i)))
        }),
    }
}

fn load_linked(obj: &ElfObject<'_>, opts: &LoadOptions) -> Result<LoadedObject, LoadError> {
    let name = obj.name.as_str();
    let machine = obj.require_machine()?;
    let mut budget = Budget { object: name, used: 0 };
    let area = linked_static_area(obj);
    let pcpu_sec = area.and_then(|a| a.3);
    let mut sections = Vec::new();
    for s in obj.sections.iter().filter(|s| s.is_alloc() || s.name == TESTS_SECTION) {
        if Some(s.index) == pcpu_sec || s.sh_type == goblin::elf::section_header::SHT_NULL {
            continue;
        }
        check_addr(obj, &format!("section {}", s.name), s.addr, s.size)?;
        budget.take(&format!("section {}", s.name), s.size)?;
        let mut data = vec![0u8; s.size as usize];
        if !s.is_nobits() {
            fill(&mut data, obj.section_data(s.index));
        }
        sections.push(LoadedSection {
            index: Some(s.index),
            name: s.name.clone(),
            kind: kind_of(s),
            addr: s.addr,
            align: s.align,
            flags: s.flags,
            nobits: s.is_nobits(),
            size: s.size,
            data,
        });
    }
    let static_percpu = match area {
        Some((start, end, load, sec)) => {
            let size = end.saturating_sub(start);
            budget.take("static percpu area", size)?;
            let mut data = vec![0u8; size as usize];
            if let Some(i) = sec {
                let s = &obj.sections[i];
                if !s.is_nobits() {
                    let src = obj.section_data(i);
                    // The area starts where the section does unless the symbols say otherwise.
                    let skip = start.saturating_sub(s.addr) as usize;
                    let n = src.len().saturating_sub(skip).min(data.len());
                    data[..n].copy_from_slice(&src[skip.min(src.len())..skip.min(src.len()) + n]);
                }
            }
            Some(StaticPercpu { start, end, load, align: sec.map(|i| obj.sections[i].align).unwrap_or(1), data })
        }
        None => None,
    };
    let symbols = obj
        .symbols
        .iter()
        .map(|s| {
            let sec = s.section();
            let percpu =
                sec.is_some() && sec == pcpu_sec && area.map(|a| s.value >= a.0 && s.value <= a.1).unwrap_or(false);
            LoadedSymbol {
                name: s.name.clone(),
                value: s.value,
                size: s.size,
                bind: s.bind,
                kind: s.kind,
                section: sec.map(|i| obj.sections[i].name.clone()),
                defined: !s.is_undefined() && s.index != 0,
                percpu,
            }
        })
        .collect();
    let mut loaded = LoadedObject {
        name: name.to_string(),
        machine,
        e_machine: obj.e_machine,
        e_flags: obj.e_flags,
        is_64: obj.is_64,
        little_endian: obj.little_endian,
        role: ObjectRole::LinkedImage,
        sections,
        percpu: None,
        static_percpu,
        symbols,
        gp: None,
        relocations_applied: 0,
        truncations: Vec::new(),
        warnings: Vec::new(),
        abi: None,
        tests: Vec::new(),
    };
    if opts.contract {
        let abi_raw = abi_sections(obj, &loaded);
        let (abi, tests) = contract::parse(&loaded, &abi_raw)?;
        loaded.abi = abi;
        loaded.tests = tests;
    }
    Ok(loaded)
}
