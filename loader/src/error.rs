//! Typed errors.  Every way an object can be refused has its own variant that
//! names the object and the place (section, symbol, offset) so a developer
//! can find it with `readelf`/`objdump` without re-running anything.

use std::fmt;

/// Where in an object a relocation sits: `.text+0x24`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Place {
    pub section: String,
    pub offset: u64,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}+{:#x}", self.section, self.offset)
    }
}

/// One relocation that does not fit, as a reader of the source sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct OverflowUse {
    pub place: Place,
    /// `function+0x2` when the place is in a function the symbol table names.
    pub function: Option<String>,
    pub rtype: RelocTypeName,
    /// The variable: the symbol, or for a section symbol the variable its
    /// addend points into (`.data..percpu+0x2` -> `nw_counter`).
    pub variable: String,
    pub value: String,
    pub rule: Option<String>,
}

impl OverflowUse {
    /// "; every reference out of reach (2): ...", then the rules other
    /// references break besides the headline's.
    fn list(uses: &[OverflowUse], headline_rule: Option<&str>) -> String {
        if uses.is_empty() {
            return String::new();
        }
        let each: Vec<String> = uses
            .iter()
            .map(|u| {
                let at = match &u.function {
                    Some(f) => format!("{f} ({})", u.place),
                    None => u.place.to_string(),
                };
                format!("`{}` from {at} by {}", u.variable, u.rtype)
            })
            .collect();
        let mut rules: Vec<&str> = Vec::new();
        for r in uses.iter().filter_map(|u| u.rule.as_deref()) {
            if Some(r) != headline_rule && !rules.contains(&r) {
                rules.push(r);
            }
        }
        let mut out = format!("; every reference out of reach ({}): {}", uses.len(), each.join(", "));
        if !rules.is_empty() {
            out.push_str(&format!(" (also: {})", rules.join("; ")));
        }
        out
    }
}

/// A relocation type as the error reports it: number, and name when known.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RelocTypeName {
    pub number: u32,
    pub name: Option<&'static str>,
}

impl fmt::Display for RelocTypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name {
            Some(n) => write!(f, "{} ({})", n, self.number),
            None => write!(f, "type {} (unknown name)", self.number),
        }
    }
}

/// The percpu placer could not serve a request from the reserved chunk.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("reserved chunk exhausted: {size} bytes at alignment {align} requested, {free} bytes free")]
pub struct ReservedExhausted {
    pub size: u64,
    pub align: u64,
    /// Free bytes left in the reserved chunk (as far as the placer knows).
    pub free: u64,
}

/// A section placer refused to place a section.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot place {size} bytes at alignment {align}: {reason}")]
pub struct PlaceError {
    pub size: u64,
    pub align: u64,
    pub reason: String,
}

/// Everything that can go wrong while parsing, loading, relocating or
/// inspecting an object.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LoadError {
    #[error("{object}: cannot read file: {reason}")]
    Io { object: String, reason: String },

    #[error(transparent)]
    Read(#[from] crate::file::ReadError),

    #[error("{object}: not an ELF file (it starts with {}; an ELF object starts with 7f 45 4c 46)", hex_bytes(magic))]
    BadMagic { object: String, magic: Vec<u8> },

    #[error("{object}: truncated: {what} needs bytes {start:#x}..{end:#x} but the file has {len:#x}")]
    Truncated { object: String, what: String, start: u64, end: u64, len: u64 },

    #[error("{object}: malformed ELF: {reason}")]
    Malformed { object: String, reason: String },

    #[error("{object}: unsupported machine {machine} ({name}); supported: x86_64, aarch64, sparc (32-bit), alpha, s390x, riscv64")]
    UnsupportedMachine { object: String, machine: u16, name: String },

    #[error("{object}: unsupported ELF type {e_type} (want ET_REL, ET_EXEC or ET_DYN)")]
    UnsupportedType { object: String, e_type: u16 },

    #[error("{object}: {what}: section index {index} out of range (the object has {count} sections)")]
    SectionIndex { object: String, what: String, index: u64, count: u64 },

    #[error("{object}: {what}: symbol index {index} out of range (the symbol table has {count} entries)")]
    SymbolIndex { object: String, what: String, index: u64, count: u64 },

    #[error("{object}: relocation section {section} applies to section {target} which {reason}")]
    BadRelocTarget { object: String, section: String, target: u64, reason: String },

    #[error("{object}: relocation section {section} uses REL entries (implicit addends); only RELA is supported for {machine}")]
    RelNotSupported { object: String, section: String, machine: String },

    #[error("{object}: {what}: size or address overflows ({detail})")]
    SizeOverflow { object: String, what: String, detail: String },

    #[error("{object}: symbol `{symbol}` is a common symbol (SHN_COMMON): please compile with -fno-common")]
    CommonSymbol { object: String, symbol: String },

    #[error("{object}: symbol `{symbol}` uses extended section index SHN_XINDEX, not supported")]
    ExtendedIndex { object: String, symbol: String },

    #[error("{object}: Unknown symbol {symbol} (not in the kernel image or the runtime symbol table)")]
    UnknownSymbol { object: String, symbol: String },

    #[error("{object}: Could not allocate {size} bytes percpu data (alignment {align}): {source}")]
    PercpuAlloc {
        object: String,
        size: u64,
        align: u64,
        #[source]
        source: ReservedExhausted,
    },

    #[error("{object}: section {section}: {source}")]
    Place {
        object: String,
        section: String,
        #[source]
        source: PlaceError,
    },

    #[error("{object}: {place}: unknown relocation {rtype} for {machine}")]
    UnknownRelocation { object: String, machine: String, rtype: RelocTypeName, place: Place },

    #[error("{object}: {place}: relocation {rtype} against `{symbol}` is not supported by the {machine} module loader: {reason}")]
    UnsupportedRelocation {
        object: String,
        machine: String,
        rtype: RelocTypeName,
        place: Place,
        symbol: String,
        reason: String,
    },

    #[error(
        "{object}: {place}: relocation {rtype} at offset {offset:#x} runs past the end of the section (size {size:#x})"
    )]
    RelocOutOfSection { object: String, rtype: RelocTypeName, place: Place, offset: u64, size: u64 },

    #[error("{object}: {place}: overflow in relocation {rtype} against `{symbol}`: value {value} does not fit {reach}{}{}", rule.as_ref().map(|r| format!("; {r}")).unwrap_or_default(), OverflowUse::list(uses, rule.as_deref()))]
    Overflow {
        object: String,
        place: Place,
        rtype: RelocTypeName,
        symbol: String,
        /// The computed field value (hex, signed when negative).
        value: String,
        /// The reach of the field, e.g. "pc-relative ±2 GiB".
        reach: String,
        /// When the symbol is percpu: the arch rule that was broken.
        rule: Option<String>,
        /// Every reference of the object that does not fit (this one
        /// first), named by variable and function.
        uses: Vec<OverflowUse>,
    },

    #[error("{object}: {place}: relocation {rtype} against `{symbol}`: {reason}")]
    BadRelocation { object: String, place: Place, rtype: RelocTypeName, symbol: String, reason: String },

    #[error("{object}: .percpu_bed.abi: {reason}")]
    BadAbiNote { object: String, reason: String },

    #[error("{object}: .percpu_bed.tests: test {index}{}: field `{field}`: {reason}", name.as_ref().map(|n| format!(" ({n})")).unwrap_or_default())]
    BadDescriptor { object: String, index: usize, name: Option<String>, field: &'static str, reason: String },

    #[error("{object}: .percpu_bed.tests: {reason}")]
    BadTestsSection { object: String, reason: String },
}

impl LoadError {
    pub(crate) fn malformed(object: &str, reason: impl Into<String>) -> Self {
        LoadError::Malformed { object: object.to_string(), reason: reason.into() }
    }
}

/// `7f 45 4c 46`: bytes as a reader of `xxd` output expects them.
fn hex_bytes(b: &[u8]) -> String {
    if b.is_empty() {
        return "nothing (the file is empty)".into();
    }
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ")
}
