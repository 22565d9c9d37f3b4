//! `inspect`: what an object holds in percpu terms and whether it follows
//! its arch's module percpu rules, without loading it.
//!
//! For every relocation that references percpu data (a symbol defined in a
//! percpu section, or that section's own symbol) the report gives the type,
//! its reach, and a verdict against the arch's rule:
//!
//! | arch | module percpu references must be |
//! |---|---|
//! | x86_64 | `%gs:sym` (32S, sign-extended 32-bit: the percpu pointer within ±2 GiB of 0) or `%gs:sym(%rip)` (PC32: ±2 GiB from the code); 64 in data |
//! | aarch64 | adrp + add/ldr (`ADR_PREL_PG_HI21` ±4 GiB, `*_ABS_LO12_NC`) or MOVW; ABS64/PREL32/PREL64 in data |
//! | alpha | through the GOT (LITERAL), with percpu variables defined weak; never GP-relative |
//! | s390x | through the GOT (GOTENT/GOT*), with percpu variables defined weak; never larl (PC32DBL) |
//! | sparc32 | sethi/or (HI22/LO10) or 32-bit absolute |
//! | riscv64 | auipc pairs (PCREL_HI20/LO12, GOT_HI20) or lui pairs; 64 in data |

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::contract::{self, AbiNote, ABI_SECTION, TESTS_SECTION};
use crate::elf::{self, ElfObject, Machine, SHF_EXECINSTR};
use crate::error::LoadError;
use crate::load::{linked_static_area, module_percpu_section, role_of, static_percpu_sections, ObjectRole};
use crate::reloc::{self, aarch64 as a64, alpha, riscv as rv, s390x as s390, sparc, x86_64 as x86, Reach};

/// A percpu section of the object.
#[derive(Clone, Debug, Serialize)]
pub struct PercpuSection {
    pub index: usize,
    pub name: String,
    pub size: u64,
    pub align: u64,
    /// SHT_NOBITS (no initial data in the file).
    pub nobits: bool,
    /// Named `.data.percpu` (before 2010).
    pub legacy_name: bool,
    /// The section kernel/module.c's `find_pcpusec` would pick.
    pub module_percpu: bool,
}

/// A symbol defined in a percpu section.
#[derive(Clone, Debug, Serialize)]
pub struct PercpuSymbol {
    pub name: String,
    pub section: String,
    pub offset: u64,
    pub size: u64,
    pub bind: &'static str,
    pub kind: &'static str,
    pub weak: bool,
    /// A `__pcpu_unique_<name>` marker exists for it (weak percpu builds).
    pub pcpu_unique: bool,
}

/// Whether one group of percpu references obeys the arch rule.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefVerdict {
    Ok,
    Violation,
}

/// All references to percpu data of one relocation type, from code or data.
#[derive(Clone, Debug, Serialize)]
pub struct PercpuRelocGroup {
    pub r_type: u32,
    pub name: Option<&'static str>,
    /// Whether the places are in executable sections.
    pub from_code: bool,
    pub count: usize,
    pub reach: Option<Reach>,
    pub reach_text: String,
    /// Sections holding the places, with counts.
    pub sections: BTreeMap<String, usize>,
    pub verdict: RefVerdict,
    pub note: String,
}

/// The object's verdict against its arch's module percpu rules.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    /// False for kernel images and objects without percpu data.
    pub applies: bool,
    pub follows: bool,
    pub rule: String,
    pub problems: Vec<String>,
}

/// A linked or relocatable kernel image's static percpu area.
#[derive(Clone, Debug, Serialize)]
pub struct StaticArea {
    /// `__per_cpu_start` (a link address; relative to where the area is placed for ET_REL).
    pub start: u64,
    pub end: u64,
    pub load: u64,
    pub size: u64,
    /// Whether the bounds came from the `__per_cpu_*` symbols.
    pub from_symbols: bool,
}

/// A relocation type the loader cannot apply, with how often it occurs.
#[derive(Clone, Debug, Serialize)]
pub struct UnsupportedReloc {
    pub r_type: u32,
    pub name: Option<&'static str>,
    pub count: usize,
}

/// Everything `percpu-bed inspect` shows for one file.
#[derive(Clone, Debug, Serialize)]
pub struct InspectReport {
    pub file: String,
    pub machine: String,
    pub e_machine: u16,
    pub class: u32,
    pub endianness: &'static str,
    pub elf_type: &'static str,
    pub role: ObjectRole,
    pub percpu_sections: Vec<PercpuSection>,
    pub percpu_symbols: Vec<PercpuSymbol>,
    pub pcpu_unique_markers: Vec<String>,
    pub percpu_relocations: Vec<PercpuRelocGroup>,
    /// Relocations in SHF_ALLOC sections (what a loader applies).
    pub relocation_count: usize,
    pub unsupported_relocations: Vec<UnsupportedReloc>,
    pub verdict: Verdict,
    pub static_area: Option<StaticArea>,
    pub abi: Option<AbiNote>,
    /// Number of `.percpu_bed.tests` descriptors (by size).
    pub test_descriptors: Option<usize>,
}

impl InspectReport {
    pub fn has_percpu(&self) -> bool {
        !self.percpu_sections.is_empty() || self.static_area.is_some()
    }
}

/// Inspect a file on disk (xz- or zstd-compressed too, see [`crate::file`]).
pub fn inspect_path(path: impl AsRef<std::path::Path>) -> Result<InspectReport, LoadError> {
    let path = path.as_ref();
    let name = path.display().to_string();
    let file = crate::file::read_object_file(path)?;
    inspect(&name, &file.bytes)
}

fn bind_name(b: u8) -> &'static str {
    match b {
        elf::STB_LOCAL => "local",
        elf::STB_GLOBAL => "global",
        elf::STB_WEAK => "weak",
        _ => "other",
    }
}

fn kind_name(k: u8) -> &'static str {
    match k {
        0 => "notype",
        1 => "object",
        2 => "func",
        3 => "section",
        4 => "file",
        5 => "common",
        6 => "tls",
        _ => "other",
    }
}

/// The rule text of an arch.
fn rule_of(m: Machine) -> &'static str {
    match m {
        Machine::X86_64 => {
            "x86_64 zero-based percpu: code reaches module percpu as %gs:sym (R_X86_64_32S, percpu pointer within ±2 GiB of 0) \
             or %gs:sym(%rip) (R_X86_64_PC32, ±2 GiB from the code)"
        }
        Machine::Aarch64 => "arm64: code reaches module percpu with adrp+add/ldr (ADR_PREL_PG_HI21 ±4 GiB from the code, *_ABS_LO12_NC)",
        Machine::Alpha => alpha::WEAK_RULE,
        Machine::S390x => s390::WEAK_RULE,
        Machine::Sparc => "sparc32: code reaches percpu with sethi/or (HI22/LO10, full 32-bit reach)",
        Machine::Riscv64 => "riscv64: code reaches percpu with auipc pairs (PCREL_HI20/LO12, ±2 GiB) or through the GOT",
    }
}

/// Judge one reference to percpu data.
fn judge(m: Machine, t: u32, code: bool) -> (RefVerdict, &'static str) {
    use RefVerdict::*;
    match m {
        Machine::X86_64 => match (t, code) {
            (x86::R_X86_64_32S, _) => (Ok, "%gs:sym: the percpu pointer must fit a sign-extended 32-bit value"),
            (x86::R_X86_64_PC32 | x86::R_X86_64_PLT32, true) => {
                (Ok, "%gs:sym(%rip): the module must be within ±2 GiB of the percpu pointer")
            }
            (x86::R_X86_64_PC32, false) => (Ok, "place-relative 32-bit offset (e.g. __ksymtab): ±2 GiB"),
            (x86::R_X86_64_64 | x86::R_X86_64_PC64, _) => (Ok, "full 64-bit"),
            (x86::R_X86_64_32, _) => (Ok, "unsigned 32-bit: the percpu pointer must be below 4 GiB"),
            _ => (Violation, "not a percpu access form of the x86_64 module ABI"),
        },
        Machine::Aarch64 => match t {
            a64::R_AARCH64_ADR_PREL_PG_HI21 | a64::R_AARCH64_ADR_PREL_PG_HI21_NC => (Ok, "adrp: ±4 GiB from the code"),
            a64::R_AARCH64_ADD_ABS_LO12_NC
            | a64::R_AARCH64_LDST8_ABS_LO12_NC
            | a64::R_AARCH64_LDST16_ABS_LO12_NC
            | a64::R_AARCH64_LDST32_ABS_LO12_NC
            | a64::R_AARCH64_LDST64_ABS_LO12_NC
            | a64::R_AARCH64_LDST128_ABS_LO12_NC => (Ok, "low 12 bits of an adrp pair"),
            a64::R_AARCH64_MOVW_UABS_G0..=a64::R_AARCH64_MOVW_SABS_G2 => (Ok, "movz/movk absolute"),
            a64::R_AARCH64_ABS64 | a64::R_AARCH64_PREL64 => (Ok, "full 64-bit"),
            a64::R_AARCH64_PREL32 => (Ok, "place-relative 32-bit: ±2 GiB"),
            _ => (Violation, "short reach: cannot be relied on to reach the reserved chunk"),
        },
        Machine::Alpha => match (t, code) {
            (alpha::R_ALPHA_LITERAL | alpha::R_ALPHA_LITUSE | alpha::R_ALPHA_HINT, _) => (Ok, "through the GOT"),
            (alpha::R_ALPHA_REFQUAD, false) => (Ok, "full 64-bit pointer in data"),
            _ => (Violation, alpha::WEAK_RULE),
        },
        Machine::S390x => match (t, code) {
            (
                s390::R_390_GOTENT
                | s390::R_390_GOT12
                | s390::R_390_GOT16
                | s390::R_390_GOT20
                | s390::R_390_GOT32
                | s390::R_390_GOT64
                | s390::R_390_GOTPLTENT
                | s390::R_390_GOTPLT12
                | s390::R_390_GOTPLT16
                | s390::R_390_GOTPLT20
                | s390::R_390_GOTPLT32
                | s390::R_390_GOTPLT64,
                _,
            ) => (Ok, "through the GOT"),
            (s390::R_390_64 | s390::R_390_PC64, false) => (Ok, "full 64-bit in data"),
            _ => (Violation, s390::WEAK_RULE),
        },
        Machine::Sparc => match t {
            sparc::R_SPARC_HI22
            | sparc::R_SPARC_LO10
            | sparc::R_SPARC_32
            | sparc::R_SPARC_UA32
            | sparc::R_SPARC_DISP32 => (Ok, "full 32-bit reach"),
            _ => (Violation, "short reach (simm13 or branch displacement)"),
        },
        Machine::Riscv64 => match t {
            rv::R_RISCV_PCREL_HI20 => (Ok, "auipc: ±2 GiB from the code"),
            rv::R_RISCV_PCREL_LO12_I | rv::R_RISCV_PCREL_LO12_S | rv::R_RISCV_LO12_I | rv::R_RISCV_LO12_S => {
                (Ok, "low 12 bits of a pair")
            }
            rv::R_RISCV_GOT_HI20 => (Ok, "through the GOT"),
            rv::R_RISCV_HI20 => (Ok, "lui: the percpu pointer must be within ±2 GiB of 0"),
            rv::R_RISCV_64 | rv::R_RISCV_32_PCREL => (Ok, "data reference"),
            _ => (Violation, "short reach: cannot be relied on to reach the percpu area"),
        },
    }
}

/// Inspect an object held in memory (`name` is used in messages).
pub fn inspect(name: &str, bytes: &[u8]) -> Result<InspectReport, LoadError> {
    let obj = ElfObject::parse(name, bytes)?;
    let role = role_of(&obj);
    // What `run` would refuse, refused here too, for the same reason.
    crate::validate::validate(&obj, role, true)?;
    let machine = obj.machine;
    let elf_type = match obj.e_type {
        elf::ET_REL => "relocatable",
        elf::ET_EXEC => "executable",
        _ => "shared",
    };

    // Percpu sections.
    let module_pcpu = if role == ObjectRole::Module { module_percpu_section(&obj) } else { None };
    let pcpu_indices: Vec<usize> = match role {
        ObjectRole::Module => module_pcpu.into_iter().collect(),
        ObjectRole::KernelImage => static_percpu_sections(&obj),
        ObjectRole::LinkedImage => linked_static_area(&obj).and_then(|a| a.3).into_iter().collect(),
    };
    // Percpu-looking sections the module loader would not treat as percpu.
    let mut percpu_sections: Vec<PercpuSection> = Vec::new();
    let mut problems = Vec::new();
    for s in obj.sections.iter().filter(|s| s.name.starts_with(".data..percpu") || s.name.starts_with(".data.percpu")) {
        if s.name.starts_with(".rela") {
            continue;
        }
        let used = pcpu_indices.contains(&s.index);
        if role == ObjectRole::Module && !used && s.is_alloc() {
            problems.push(format!("section {} looks percpu but the module loader only moves .data..percpu: it would be loaded as ordinary data", s.name));
        }
        percpu_sections.push(PercpuSection {
            index: s.index,
            name: s.name.clone(),
            size: s.size,
            align: s.align,
            nobits: s.is_nobits(),
            legacy_name: s.name.starts_with(".data.percpu"),
            module_percpu: Some(s.index) == module_pcpu,
        });
    }

    // Percpu symbols and __pcpu_unique_ markers.
    let markers: Vec<String> =
        obj.symbols.iter().filter_map(|s| s.name.strip_prefix("__pcpu_unique_").map(str::to_string)).collect();
    let mut percpu_symbols = Vec::new();
    for s in &obj.symbols {
        let Some(sec) = s.section() else { continue };
        if !pcpu_indices.contains(&sec) || s.is_section() || s.name.is_empty() || s.name.starts_with('$') {
            continue;
        }
        // A linked image's section symbols outside the section (`__per_cpu_load`) are not percpu.
        let ps = &obj.sections[sec];
        if role == ObjectRole::LinkedImage && (s.value < ps.addr || s.value > ps.addr.wrapping_add(ps.size)) {
            continue;
        }
        percpu_symbols.push(PercpuSymbol {
            name: s.name.clone(),
            section: obj.sections[sec].name.clone(),
            offset: s.value,
            size: s.size,
            bind: bind_name(s.bind),
            kind: kind_name(s.kind),
            weak: s.is_weak(),
            pcpu_unique: markers.iter().any(|m| m == &s.name),
        });
    }

    // Relocations referencing percpu data.
    let mut groups: BTreeMap<(u32, bool), PercpuRelocGroup> = BTreeMap::new();
    let mut unsupported: BTreeMap<u32, usize> = BTreeMap::new();
    let mut relocation_count = 0usize;
    for rs in &obj.relocs {
        let target = &obj.sections[rs.target];
        let in_percpu = pcpu_indices.contains(&rs.target);
        if !target.is_alloc() && target.name != TESTS_SECTION && !in_percpu {
            continue;
        }
        let code = target.flags & SHF_EXECINSTR != 0;
        for r in &rs.entries {
            relocation_count += 1;
            let Some(m) = machine else { continue };
            let arch = reloc::arch_for(m);
            let r_type = if m == Machine::Sparc || m == Machine::Alpha { r.r_type & 0xff } else { r.r_type };
            if arch.reach(r_type).is_none() {
                *unsupported.entry(r.r_type).or_default() += 1;
            }
            let sym = &obj.symbols[r.sym];
            let refs_percpu = sym.section().map(|s| pcpu_indices.contains(&s)).unwrap_or(false);
            if !refs_percpu {
                continue;
            }
            let (verdict, note) = if role == ObjectRole::Module {
                judge(m, r_type, code)
            } else {
                (RefVerdict::Ok, "kernel image: module rules do not apply")
            };
            let g = groups.entry((r_type, code)).or_insert_with(|| {
                let reach = arch.reach(r_type);
                PercpuRelocGroup {
                    r_type,
                    name: arch.type_name(r_type),
                    from_code: code,
                    count: 0,
                    reach,
                    reach_text: reach.map(|r| r.to_string()).unwrap_or_else(|| "unsupported by the loader".into()),
                    sections: BTreeMap::new(),
                    verdict,
                    note: note.to_string(),
                }
            });
            g.count += 1;
            *g.sections.entry(target.name.clone()).or_default() += 1;
        }
    }
    let percpu_relocations: Vec<PercpuRelocGroup> = groups.into_values().collect();

    // The verdict.
    let applies = role == ObjectRole::Module && module_pcpu.is_some() && machine.is_some();
    if applies {
        let m = machine.unwrap();
        for g in percpu_relocations.iter().filter(|g| g.verdict == RefVerdict::Violation) {
            problems.push(format!(
                "{} {} from {} ({}): {}",
                g.count,
                g.name.unwrap_or("unknown type"),
                if g.from_code { "code" } else { "data" },
                g.sections.keys().cloned().collect::<Vec<_>>().join(", "),
                g.note
            ));
        }
        if matches!(m, Machine::Alpha | Machine::S390x) {
            for s in percpu_symbols.iter().filter(|s| !s.weak && s.kind == "object") {
                problems.push(format!("percpu variable `{}` is not weak ({}): {}", s.name, s.bind, rule_of(m)));
            }
        }
        if let Some(rs) = obj.relocs.iter().find(|rs| Some(rs.target) == module_pcpu && !rs.entries.is_empty()) {
            problems.push(format!(
                "{} relocations in {} would not be applied: the module loader clears SHF_ALLOC on the percpu section",
                rs.entries.len(),
                obj.sections[rs.target].name
            ));
        }
    }
    let verdict = Verdict {
        applies,
        follows: problems.is_empty(),
        rule: match (machine, role) {
            (Some(m), ObjectRole::Module) => rule_of(m).to_string(),
            (_, ObjectRole::Module) => "unsupported machine".to_string(),
            _ => "kernel image: the module percpu rules do not apply".to_string(),
        },
        problems,
    };

    // Static area.
    let static_area = match role {
        ObjectRole::LinkedImage => linked_static_area(&obj).map(|(start, end, load, _)| StaticArea {
            start,
            end,
            load,
            size: end.saturating_sub(start),
            from_symbols: obj.symbol_by_name("__per_cpu_start").is_some()
                && obj.symbol_by_name("__per_cpu_end").is_some(),
        }),
        ObjectRole::KernelImage => {
            let secs = static_percpu_sections(&obj);
            let mut off = 0u64;
            for &i in &secs {
                let s = &obj.sections[i];
                off = off.saturating_add(s.align - 1) & !(s.align - 1);
                off = off.saturating_add(s.size);
            }
            (!secs.is_empty()).then_some(StaticArea { start: 0, end: off, load: 0, size: off, from_symbols: false })
        }
        ObjectRole::Module => None,
    };

    // Contract sections (raw: descriptors need relocation to be read in full).
    let abi = match obj.sections.iter().find(|s| s.name == ABI_SECTION) {
        Some(s) if !s.is_nobits() => Some(contract::parse_abi(name, obj.section_data(s.index), obj.little_endian)?),
        _ => None,
    };
    let test_descriptors = obj
        .sections
        .iter()
        .find(|s| s.name == TESTS_SECTION)
        .map(|s| (s.size as usize) / contract::descriptor_size(obj.is_64));

    Ok(InspectReport {
        file: name.to_string(),
        machine: machine.map(|m| m.name().to_string()).unwrap_or_else(|| elf::machine_name(obj.e_machine)),
        e_machine: obj.e_machine,
        class: obj.class_bits(),
        endianness: if obj.little_endian { "little" } else { "big" },
        elf_type,
        role,
        percpu_sections,
        percpu_symbols,
        pcpu_unique_markers: markers,
        percpu_relocations,
        relocation_count,
        unsupported_relocations: unsupported
            .into_iter()
            .map(|(t, count)| UnsupportedReloc { r_type: t, name: machine.and_then(|m| reloc::type_name(m, t)), count })
            .collect(),
        verdict,
        static_area,
        abi,
        test_descriptors,
    })
}

impl fmt::Display for InspectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.file)?;
        writeln!(
            f,
            "  machine {} ({}-bit, {} endian), {} ({})",
            self.machine,
            self.class,
            self.endianness,
            self.elf_type,
            match self.role {
                ObjectRole::Module => "module",
                ObjectRole::KernelImage => "kernel image",
                ObjectRole::LinkedImage => "linked image",
            }
        )?;
        if let Some(a) = &self.static_area {
            writeln!(
                f,
                "  static percpu area: __per_cpu_start {:#x}  __per_cpu_end {:#x}  __per_cpu_load {:#x}  ({} bytes{})",
                a.start,
                a.end,
                a.load,
                a.size,
                if a.from_symbols { "" } else { ", from the sections" }
            )?;
        }
        if self.percpu_sections.is_empty() {
            writeln!(f, "  no percpu section")?;
        } else {
            writeln!(f, "  percpu sections:")?;
            writeln!(f, "    {:>4}  {:<32} {:>10} {:>6}  notes", "idx", "name", "size", "align")?;
            for s in &self.percpu_sections {
                let mut notes = Vec::new();
                if s.module_percpu {
                    notes.push("module percpu (reserved chunk)");
                } else if self.role != ObjectRole::Module {
                    notes.push("static percpu area");
                }
                if s.legacy_name {
                    notes.push("pre-2010 name");
                }
                if s.nobits {
                    notes.push("NOBITS");
                }
                writeln!(f, "    {:>4}  {:<32} {:>10} {:>6}  {}", s.index, s.name, s.size, s.align, notes.join(", "))?;
            }
        }
        if !self.percpu_symbols.is_empty() {
            writeln!(f, "  percpu symbols:")?;
            writeln!(f, "    {:<40} {:>10} {:>6}  {:<7} {:<7} markers", "name", "offset", "size", "bind", "type")?;
            for s in &self.percpu_symbols {
                let mut m = Vec::new();
                if s.weak {
                    m.push("weak");
                }
                if s.pcpu_unique {
                    m.push("__pcpu_unique_");
                }
                writeln!(
                    f,
                    "    {:<40} {:>#10x} {:>6}  {:<7} {:<7} {}",
                    s.name,
                    s.offset,
                    s.size,
                    s.bind,
                    s.kind,
                    m.join(" ")
                )?;
            }
        }
        if !self.pcpu_unique_markers.is_empty() {
            writeln!(f, "  __pcpu_unique_ markers: {}", self.pcpu_unique_markers.join(", "))?;
        }
        if !self.percpu_relocations.is_empty() {
            writeln!(f, "  relocations referencing percpu data:")?;
            writeln!(f, "    {:<32} {:<5} {:>6}  {:<48} verdict", "type", "from", "count", "reach")?;
            for g in &self.percpu_relocations {
                let ty = match g.name {
                    Some(n) => n.to_string(),
                    None => format!("type {}", g.r_type),
                };
                writeln!(
                    f,
                    "    {:<32} {:<5} {:>6}  {:<48} {}{}",
                    ty,
                    if g.from_code { "code" } else { "data" },
                    g.count,
                    g.reach_text,
                    match g.verdict {
                        RefVerdict::Ok => "ok",
                        RefVerdict::Violation => "VIOLATION",
                    },
                    if g.note.is_empty() { String::new() } else { format!(" ({})", g.note) }
                )?;
            }
        }
        writeln!(f, "  relocations in loaded sections: {}", self.relocation_count)?;
        for u in &self.unsupported_relocations {
            writeln!(f, "  UNSUPPORTED relocation {} ({}): {} times", u.name.unwrap_or("unknown"), u.r_type, u.count)?;
        }
        if let Some(a) = &self.abi {
            writeln!(
                f,
                "  .percpu_bed.abi: version {} model {:?} ti_cpu_offset {} lowcore_percpu_offset {:#x} flags {:#x}{}",
                a.version,
                a.model,
                a.ti_cpu_offset,
                a.lowcore_percpu_offset,
                a.flags,
                if a.weak_percpu() { " (weak percpu)" } else { "" }
            )?;
        }
        if let Some(n) = self.test_descriptors {
            writeln!(f, "  .percpu_bed.tests: {n} descriptors")?;
        }
        let v = &self.verdict;
        if v.applies {
            writeln!(f, "  rule: {}", v.rule)?;
            writeln!(
                f,
                "  verdict: {}",
                if v.follows { "follows the module percpu rules" } else { "BREAKS the module percpu rules" }
            )?;
        } else {
            writeln!(
                f,
                "  verdict: n/a ({})",
                if self.role == ObjectRole::Module { "no module percpu data" } else { v.rule.as_str() }
            )?;
        }
        for p in &v.problems {
            writeln!(f, "    - {p}")?;
        }
        Ok(())
    }
}
