//! The parsed view of an ELF object: header facts, sections, symbols and
//! relocation sections, read with goblin and checked for consistency so the
//! rest of the loader can index without panicking.
//!
//! Every index in here has been checked: a symbol's `shndx` (when it is a
//! real section index) is below `sections.len()`, every relocation's `sym` is
//! below `symbols.len()`, every relocation section's `target` is a real
//! section, and every non-NOBITS section's bytes lie inside the file.

use goblin::container::{Container, Ctx, Endian};
use goblin::elf::header as gh;
use goblin::elf::section_header as gs;
use goblin::elf::sym as gsym;
use goblin::elf::{Header, RelocSection as GRelocSection, SectionHeader, Symtab};
use serde::Serialize;

use crate::error::LoadError;

pub const SHF_WRITE: u64 = 0x1;
pub const SHF_ALLOC: u64 = 0x2;
pub const SHF_EXECINSTR: u64 = 0x4;

pub const SHN_UNDEF: u32 = 0;
pub const SHN_LORESERVE: u32 = 0xff00;
pub const SHN_ABS: u32 = 0xfff1;
pub const SHN_COMMON: u32 = 0xfff2;
pub const SHN_XINDEX: u32 = 0xffff;

pub const STB_LOCAL: u8 = 0;
pub const STB_GLOBAL: u8 = 1;
pub const STB_WEAK: u8 = 2;
pub const STT_SECTION: u8 = 3;

/// The target machines this loader relocates for.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Machine {
    X86_64,
    Aarch64,
    /// 32-bit SPARC (EM_SPARC / EM_SPARC32PLUS).
    Sparc,
    Alpha,
    S390x,
    Riscv64,
}

impl Machine {
    pub fn name(self) -> &'static str {
        match self {
            Machine::X86_64 => "x86_64",
            Machine::Aarch64 => "aarch64",
            Machine::Sparc => "sparc32",
            Machine::Alpha => "alpha",
            Machine::S390x => "s390x",
            Machine::Riscv64 => "riscv64",
        }
    }

    /// Map `e_machine` (and the class, which separates sparc32 from sparc64
    /// and s390 from s390x) to a supported machine.
    pub fn from_elf(e_machine: u16, is_64: bool) -> Option<Machine> {
        match (e_machine, is_64) {
            (gh::EM_X86_64, true) => Some(Machine::X86_64),
            (gh::EM_AARCH64, true) => Some(Machine::Aarch64),
            (gh::EM_SPARC, false) | (gh::EM_SPARC32PLUS, false) => Some(Machine::Sparc),
            (EM_ALPHA_STD, true) | (EM_ALPHA_OLD, true) => Some(Machine::Alpha),
            (gh::EM_S390, true) => Some(Machine::S390x),
            (gh::EM_RISCV, true) => Some(Machine::Riscv64),
            _ => None,
        }
    }

    pub fn page_size_hint(self) -> u64 {
        if self == Machine::Alpha {
            8192
        } else {
            4096
        }
    }
}

impl std::fmt::Display for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The unofficial alpha number binutils uses (EM_ALPHA in include/uapi/linux/elf-em.h).
pub const EM_ALPHA_OLD: u16 = 0x9026;
/// The official EM_ALPHA number (41), rarely used by toolchains.
pub const EM_ALPHA_STD: u16 = 41;

/// A name for any `e_machine`, for error messages.
pub fn machine_name(e_machine: u16) -> String {
    match e_machine {
        EM_ALPHA_OLD | EM_ALPHA_STD => "EM_ALPHA".to_string(),
        m => gh::machine_to_str(m).to_string(),
    }
}

#[derive(Clone, Debug)]
pub struct Section {
    pub index: usize,
    pub name: String,
    pub sh_type: u32,
    pub flags: u64,
    pub addr: u64,
    pub offset: u64,
    pub size: u64,
    pub align: u64,
    pub link: u32,
    pub info: u32,
    pub entsize: u64,
}

impl Section {
    pub fn is_alloc(&self) -> bool {
        self.flags & SHF_ALLOC != 0
    }
    pub fn is_nobits(&self) -> bool {
        self.sh_type == gs::SHT_NOBITS
    }
}

#[derive(Clone, Debug)]
pub struct Symbol {
    pub index: usize,
    pub name: String,
    pub value: u64,
    pub size: u64,
    pub bind: u8,
    pub kind: u8,
    pub other: u8,
    /// Raw `st_shndx` (may be SHN_ABS, SHN_COMMON, ...).
    pub shndx: u32,
}

impl Symbol {
    pub fn is_undefined(&self) -> bool {
        self.shndx == SHN_UNDEF
    }
    pub fn is_weak(&self) -> bool {
        self.bind == STB_WEAK
    }
    pub fn is_section(&self) -> bool {
        self.kind == STT_SECTION
    }
    /// A real section index, if `shndx` names one.
    pub fn section(&self) -> Option<usize> {
        if self.shndx != SHN_UNDEF && self.shndx < SHN_LORESERVE {
            Some(self.shndx as usize)
        } else {
            None
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rela {
    pub offset: u64,
    pub r_type: u32,
    pub sym: usize,
    pub addend: i64,
}

#[derive(Clone, Debug)]
pub struct RelocSection {
    /// Index of the SHT_RELA/SHT_REL section itself.
    pub index: usize,
    pub name: String,
    /// The section the relocations apply to (`sh_info`).
    pub target: usize,
    pub is_rela: bool,
    pub entries: Vec<Rela>,
}

/// A parsed and validated ELF object.
#[derive(Clone, Debug)]
pub struct ElfObject<'a> {
    pub name: String,
    pub bytes: &'a [u8],
    pub e_machine: u16,
    pub e_flags: u32,
    pub e_type: u16,
    pub is_64: bool,
    pub little_endian: bool,
    pub machine: Option<Machine>,
    pub sections: Vec<Section>,
    pub symbols: Vec<Symbol>,
    pub symtab: Option<usize>,
    pub relocs: Vec<RelocSection>,
}

pub const ET_REL: u16 = 1;
pub const ET_EXEC: u16 = 2;
pub const ET_DYN: u16 = 3;

fn trunc(object: &str, what: impl Into<String>, start: u64, end: u64, len: usize) -> LoadError {
    LoadError::Truncated { object: object.to_string(), what: what.into(), start, end, len: len as u64 }
}

/// Bounds-check `offset..offset+size` against the file.
fn file_range(
    object: &str,
    what: &str,
    offset: u64,
    size: u64,
    len: usize,
) -> Result<std::ops::Range<usize>, LoadError> {
    let end = offset.checked_add(size).ok_or_else(|| LoadError::SizeOverflow {
        object: object.to_string(),
        what: what.to_string(),
        detail: format!("offset {offset:#x} + size {size:#x}"),
    })?;
    if end > len as u64 {
        return Err(trunc(object, what, offset, end, len));
    }
    Ok(offset as usize..end as usize)
}

impl<'a> ElfObject<'a> {
    /// Parse `bytes` (named `name` in errors).
    pub fn parse(name: &str, bytes: &'a [u8]) -> Result<Self, LoadError> {
        let object = name;
        if bytes.len() < 4 || &bytes[..4] != b"\x7fELF" {
            return Err(LoadError::BadMagic {
                object: object.to_string(),
                magic: bytes.iter().take(4).copied().collect(),
            });
        }
        if bytes.len() < 16 {
            return Err(trunc(object, "ELF identification", 0, 16, bytes.len()));
        }
        let class = bytes[gh::EI_CLASS];
        let data = bytes[gh::EI_DATA];
        let is_64 = match class {
            gh::ELFCLASS32 => false,
            gh::ELFCLASS64 => true,
            c => return Err(LoadError::malformed(object, format!("bad EI_CLASS {c}"))),
        };
        let little_endian = match data {
            gh::ELFDATA2LSB => true,
            gh::ELFDATA2MSB => false,
            d => return Err(LoadError::malformed(object, format!("bad EI_DATA {d}"))),
        };
        let ehsize = if is_64 { 64 } else { 52 };
        if bytes.len() < ehsize {
            return Err(trunc(object, "ELF header", 0, ehsize as u64, bytes.len()));
        }
        let header: Header = goblin::elf::Elf::parse_header(bytes)
            .map_err(|e| LoadError::malformed(object, format!("ELF header: {e}")))?;
        let ctx = Ctx::new(
            if is_64 { Container::Big } else { Container::Little },
            if little_endian { Endian::Little } else { Endian::Big },
        );
        let e_type = header.e_type;
        if !matches!(e_type, ET_REL | ET_EXEC | ET_DYN) {
            return Err(LoadError::UnsupportedType { object: object.to_string(), e_type });
        }
        // Before anything machine-specific is read: relocation entries'
        // r_info layout differs per machine (mips64el's is not ELF64_R_INFO).
        if Machine::from_elf(header.e_machine, is_64).is_none() {
            return Err(LoadError::UnsupportedMachine {
                object: object.to_string(),
                machine: header.e_machine,
                name: format!("{}, {}-bit", machine_name(header.e_machine), if is_64 { 64 } else { 32 }),
            });
        }

        // Section headers.
        let shentsize: u64 = if is_64 { 64 } else { 40 };
        let mut sections_raw: Vec<SectionHeader> = Vec::new();
        if header.e_shoff != 0 {
            if header.e_shentsize as u64 != shentsize {
                return Err(LoadError::malformed(
                    object,
                    format!("e_shentsize {} (want {shentsize})", header.e_shentsize),
                ));
            }
            // The count may live in section 0's sh_size (e_shnum == 0).
            file_range(object, "section header 0", header.e_shoff, shentsize, bytes.len())?;
            let mut count = header.e_shnum as u64;
            let first = SectionHeader::parse(bytes, header.e_shoff as usize, 1, ctx)
                .map_err(|e| LoadError::malformed(object, format!("section header 0: {e}")))?;
            if count == 0 {
                count = first.first().map(|s| s.sh_size).unwrap_or(0);
            }
            let table = count.checked_mul(shentsize).ok_or_else(|| LoadError::SizeOverflow {
                object: object.to_string(),
                what: "section header table".into(),
                detail: format!("{count} entries"),
            })?;
            file_range(object, "section header table", header.e_shoff, table, bytes.len())?;
            if count > 0 {
                sections_raw = SectionHeader::parse(bytes, header.e_shoff as usize, count as usize, ctx)
                    .map_err(|e| LoadError::malformed(object, format!("section headers: {e}")))?;
            }
        }
        let nsec = sections_raw.len();

        // Section names.
        let mut shstrndx = header.e_shstrndx as u32;
        if shstrndx == SHN_XINDEX {
            shstrndx = sections_raw.first().map(|s| s.sh_link).unwrap_or(0);
        }
        let shstr: Option<&[u8]> = if nsec > 0 && shstrndx != 0 {
            let s = sections_raw.get(shstrndx as usize).ok_or_else(|| LoadError::SectionIndex {
                object: object.to_string(),
                what: "e_shstrndx".into(),
                index: shstrndx as u64,
                count: nsec as u64,
            })?;
            let r = file_range(object, "section name string table", s.sh_offset, s.sh_size, bytes.len())?;
            Some(&bytes[r])
        } else {
            None
        };

        let mut sections = Vec::with_capacity(nsec);
        for (i, s) in sections_raw.iter().enumerate() {
            if let Some(t) = shstr {
                if s.sh_name >= t.len() && s.sh_type != gs::SHT_NULL {
                    return Err(LoadError::malformed(
                        object,
                        format!(
                            "section [{i}]: name offset {:#x} is beyond the {}-byte section name table",
                            s.sh_name,
                            t.len()
                        ),
                    ));
                }
            }
            let name = shstr.map(|t| cstr_at(t, s.sh_name)).unwrap_or_default();
            if s.sh_type != gs::SHT_NOBITS && s.sh_type != gs::SHT_NULL {
                file_range(object, &format!("section {name} [{i}]"), s.sh_offset, s.sh_size, bytes.len())?;
            }
            if s.sh_addralign > 1 && !s.sh_addralign.is_power_of_two() {
                return Err(LoadError::malformed(
                    object,
                    format!("section {name} [{i}]: alignment {:#x} is not a power of two", s.sh_addralign),
                ));
            }
            sections.push(Section {
                index: i,
                name,
                sh_type: s.sh_type,
                flags: s.sh_flags,
                addr: s.sh_addr,
                offset: s.sh_offset,
                size: s.sh_size,
                align: s.sh_addralign.max(1),
                link: s.sh_link,
                info: s.sh_info,
                entsize: s.sh_entsize,
            });
        }

        // The symbol table (the last SHT_SYMTAB, like the kernel).
        let symtab = sections.iter().rposition(|s| s.sh_type == gs::SHT_SYMTAB);
        let mut symbols = Vec::new();
        if let Some(si) = symtab {
            let s = &sections[si];
            let entsize: u64 = if is_64 { 24 } else { 16 };
            let count = s.size / entsize;
            let strsec = sections.get(s.link as usize).ok_or_else(|| LoadError::SectionIndex {
                object: object.to_string(),
                what: format!("symbol table {} sh_link (string table)", s.name),
                index: s.link as u64,
                count: nsec as u64,
            })?;
            if strsec.sh_type == gs::SHT_NOBITS {
                return Err(LoadError::malformed(object, "symbol string table has no bytes (SHT_NOBITS)"));
            }
            let sr = file_range(object, "symbol string table", strsec.offset, strsec.size, bytes.len())?;
            let strtab = &bytes[sr];
            if count > 0 {
                let table = Symtab::parse(bytes, s.offset as usize, count as usize, ctx)
                    .map_err(|e| LoadError::malformed(object, format!("symbol table: {e}")))?;
                symbols.reserve(count as usize);
                for (i, sym) in table.iter().enumerate() {
                    let name = cstr_at(strtab, sym.st_name);
                    let shndx = sym.st_shndx as u32;
                    if shndx != SHN_UNDEF && shndx < SHN_LORESERVE && shndx as usize >= nsec {
                        return Err(LoadError::SectionIndex {
                            object: object.to_string(),
                            what: format!("symbol `{name}` [{i}]"),
                            index: shndx as u64,
                            count: nsec as u64,
                        });
                    }
                    symbols.push(Symbol {
                        index: i,
                        name,
                        value: sym.st_value,
                        size: sym.st_size,
                        bind: gsym::st_bind(sym.st_info),
                        kind: gsym::st_type(sym.st_info),
                        other: sym.st_other,
                        shndx,
                    });
                }
            }
        }
        // Section symbols have no name of their own: give them the section's.
        for sym in symbols.iter_mut() {
            if sym.is_section() && sym.name.is_empty() {
                if let Some(sec) = sym.section() {
                    sym.name = sections[sec].name.clone();
                }
            }
        }

        // Relocation sections.
        let mut relocs = Vec::new();
        for s in &sections {
            let is_rela = s.sh_type == gs::SHT_RELA;
            if !is_rela && s.sh_type != gs::SHT_REL {
                continue;
            }
            // Linked images may carry dynamic relocations: those are not ours.
            if e_type != ET_REL && s.flags & SHF_ALLOC != 0 {
                continue;
            }
            let target = s.info as usize;
            if target == 0 || target >= nsec {
                return Err(LoadError::BadRelocTarget {
                    object: object.to_string(),
                    section: s.name.clone(),
                    target: s.info as u64,
                    reason: format!("does not exist (the object has {nsec} sections)"),
                });
            }
            if symtab.is_none() || s.link as usize != symtab.unwrap() {
                if s.size == 0 {
                    continue;
                }
                return Err(LoadError::malformed(
                    object,
                    format!("relocation section {} links to section {} which is not the symbol table", s.name, s.link),
                ));
            }
            let entsize: u64 = match (is_64, is_rela) {
                (true, true) => 24,
                (true, false) => 16,
                (false, true) => 12,
                (false, false) => 8,
            };
            let count = s.size / entsize;
            let mut entries = Vec::with_capacity(count as usize);
            if count > 0 {
                let rs = GRelocSection::parse(bytes, s.offset as usize, (count * entsize) as usize, is_rela, ctx)
                    .map_err(|e| LoadError::malformed(object, format!("relocation section {}: {e}", s.name)))?;
                for (k, r) in rs.iter().enumerate() {
                    if r.r_sym >= symbols.len() {
                        return Err(LoadError::SymbolIndex {
                            object: object.to_string(),
                            what: format!("relocation {k} in {}", s.name),
                            index: r.r_sym as u64,
                            count: symbols.len() as u64,
                        });
                    }
                    entries.push(Rela {
                        offset: r.r_offset,
                        r_type: r.r_type,
                        sym: r.r_sym,
                        addend: r.r_addend.unwrap_or(0),
                    });
                }
            }
            relocs.push(RelocSection { index: s.index, name: s.name.clone(), target, is_rela, entries });
        }

        Ok(ElfObject {
            name: name.to_string(),
            bytes,
            e_machine: header.e_machine,
            e_flags: header.e_flags,
            e_type,
            is_64,
            little_endian,
            machine: Machine::from_elf(header.e_machine, is_64),
            sections,
            symbols,
            symtab,
            relocs,
        })
    }

    /// The file bytes of a section (empty for NOBITS).
    pub fn section_data(&self, index: usize) -> &'a [u8] {
        let s = &self.sections[index];
        if s.is_nobits() || s.sh_type == gs::SHT_NULL {
            return &[];
        }
        // Checked in parse().
        &self.bytes[s.offset as usize..(s.offset + s.size) as usize]
    }

    pub fn section_by_name(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    pub fn symbol_by_name(&self, name: &str) -> Option<&Symbol> {
        self.symbols.iter().find(|s| s.name == name && !s.is_undefined())
    }

    pub fn class_bits(&self) -> u32 {
        if self.is_64 {
            64
        } else {
            32
        }
    }

    pub fn require_machine(&self) -> Result<Machine, LoadError> {
        self.machine.ok_or_else(|| LoadError::UnsupportedMachine {
            object: self.name.clone(),
            machine: self.e_machine,
            name: format!("{}, {}-bit", machine_name(self.e_machine), self.class_bits()),
        })
    }
}

/// The NUL-terminated string at `off` (lossy UTF-8; empty when out of range).
pub fn cstr_at(table: &[u8], off: usize) -> String {
    match table.get(off..) {
        Some(rest) => {
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            String::from_utf8_lossy(&rest[..end]).into_owned()
        }
        None => String::new(),
    }
}
