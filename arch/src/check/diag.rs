//! Diagnostics: every address decoded through the allocator
//! ([`Percpu::classify`](percpu_core::percpu::Percpu::classify)) and the
//! loaded objects' symbols, plus heuristics that name the usual causes of a
//! wrong percpu address (another CPU's offset, no offset, a 32-bit
//! truncation, a constant shift, an unpopulated page).

use std::fmt;

use percpu_core::percpu::Location;
use serde::Serialize;

use super::bed::Bed;
use super::Status;

/// One address, decoded.
#[derive(Clone, Debug, Serialize)]
pub struct AddrInfo {
    pub addr: u64,
    /// Where it is, in words: "chunk 2 unit 0 (cpu 0) offset 0x1a0 page 0
    /// [chunk, populated, in allocation 0x1a0..0x1a8]", "the stack", ...
    pub text: String,
    /// The allocator's classification when it lies in a chunk's units.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// The symbol holding it: "kernel.o:pcpubed_anchor+0x8",
    /// "dynamic allocation of `dyn_inc_u64`+0x0", "__cpu_possible_mask+0x0".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
    pub mapped: bool,
}

impl fmt::Display for AddrInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x} = {}", self.addr, self.text)?;
        if let Some(s) = &self.symbol {
            write!(f, " = {s}")?;
        }
        Ok(())
    }
}

/// A code address with its nearest function symbol.
#[derive(Clone, Debug, Serialize)]
pub struct CodeLoc {
    pub pc: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
}

impl fmt::Display for CodeLoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pc {:#x}", self.pc)?;
        if let Some(s) = &self.symbol {
            write!(f, " ({s})")?;
        }
        Ok(())
    }
}

/// What went wrong in one respect.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// The loader rejected the object (relocation overflow).
    Rejected,
    /// An access to unmapped or protected memory.
    Fault,
    /// The instruction budget ran out.
    Runaway,
    /// The CPU trapped (UNDEFINED instruction, ...).
    Trap,
    WrongReturn,
    /// A copy of the target does not hold what the op says.
    WrongValue,
    /// A write outside the bytes the op names (and outside the stack).
    StrayWrite,
    /// A read of percpu memory no correct code reads (freed memory, the
    /// load image, an impossible CPU's offset).
    StrayRead,
    /// A planted bug behaved on every CPU.
    NotCaught,
    /// The harness could not run the test.
    Harness,
    /// A WARN in kernel code (the `__bug_table` or `warn_slowpath_fmt`).
    Warn,
    /// A BUG in kernel code: the run stopped there.
    Bug,
    /// The kernel runtime caught something (a bad free_percpu, a preempt
    /// count left raised, the stack protector).
    Kernel,
    /// The module's init/exit did not do what its expectation file says
    /// (return value, printk lines).
    Expectation,
}

/// One finding, with its decoded address, pc and explanations.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<AddrInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pc: Option<CodeLoc>,
    /// Likely causes ("the offset applied was __per_cpu_offset[0]").
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hints: Vec<String>,
}

impl Finding {
    pub fn new(kind: FindingKind, text: impl Into<String>) -> Self {
        Finding { kind, text: text.into(), addr: None, pc: None, hints: Vec::new() }
    }
}

/// Why a test run misbehaved (or a planted bug did not): the product.
#[derive(Clone, Debug, Serialize)]
pub struct Diagnostic {
    pub arch: String,
    pub variant: String,
    pub object: String,
    pub test: String,
    /// The CPU the run was on (None for object-level findings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    /// The step of a STEPS test the run was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
    pub status: Status,
    /// The descriptor's `bug` string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bug: Option<String>,
    /// One line: the first finding.
    pub summary: String,
    pub findings: Vec<Finding>,
    /// Context: loader truncations, the test's target, ...
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} test `{}` ({})", self.arch, self.variant, self.test, self.object)?;
        if let Some(c) = self.cpu {
            write!(f, " on cpu {c}")?;
        }
        if let Some(s) = self.step {
            write!(f, ", step {s}")?;
        }
        writeln!(f, ": {}: {}", self.status, self.summary)?;
        for fi in &self.findings {
            writeln!(f, "  - {}", fi.text)?;
            if let Some(pc) = &fi.pc {
                writeln!(f, "    at {pc}")?;
            }
            for h in &fi.hints {
                writeln!(f, "    hint: {h}")?;
            }
        }
        for n in &self.notes {
            writeln!(f, "  note: {n}")?;
        }
        if let Some(b) = &self.bug {
            writeln!(f, "  planted bug: {b}")?;
        }
        Ok(())
    }
}

/// The low `bits` bits.
fn low_mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// `v` truncated to `bits` bits and sign-extended back.
fn sext(v: u64, bits: u32) -> u64 {
    let shift = 64 - bits;
    (((v << shift) as i64) >> shift) as u64
}

/// A relocation value, signed.
pub(crate) fn hex_i128(v: i128) -> String {
    if v < 0 {
        format!("-{:#x}", v.unsigned_abs())
    } else {
        format!("{v:#x}")
    }
}

fn signed_hex(v: i64) -> String {
    if v < 0 {
        format!("-{:#x}", v.unsigned_abs())
    } else {
        format!("+{v:#x}")
    }
}

impl Bed<'_> {
    /// Decode any address.
    pub(crate) fn decode(&self, addr: u64) -> AddrInfo {
        let mapped = self.is_mapped(addr);
        let mk = |text: String, location: Option<Location>, symbol: Option<String>| AddrInfo {
            addr,
            text,
            location,
            symbol,
            mapped,
        };
        if let Some(loc) = self.percpu.classify(addr) {
            let symbol = self.name_percpu_ptr(loc.pcpu_ptr.0);
            return mk(loc.to_string(), Some(loc), symbol);
        }
        if self.static_link.contains(&addr) {
            return mk(
                format!(
                    "the static percpu area's load image (__per_cpu_start+{:#x}, freed after boot), not any CPU's copy",
                    addr - self.static_link.start
                ),
                None,
                self.name_percpu_ptr(addr),
            );
        }
        if let Some(sym) = self.name_percpu_ptr(addr) {
            return mk(
                "a percpu pointer's own value (the link-address space of percpu symbols), not any CPU's copy"
                    .to_string(),
                None,
                Some(sym),
            );
        }
        if self.stack.contains(&addr) {
            return mk(format!("the stack (top-{:#x})", self.stack.end - addr), None, None);
        }
        if let Some((sym, off)) = self.runtime.symbol_at(addr) {
            return mk("the runtime data page".into(), None, Some(format!("{sym}+{off:#x}")));
        }
        for o in &self.objects {
            if let Some((sec, sym)) = o.data_symbol(addr) {
                let symbol = sym.map(|(s, off)| format!("{}:{}+{off:#x}", o.name, s.name));
                return mk(format!("{} section {sec}", o.name), None, symbol);
            }
        }
        for (r, what) in &self.regions {
            if r.contains(&addr) {
                return mk(format!("{what}+{:#x}", addr - r.start), None, None);
            }
        }
        let text = if mapped {
            "mapped memory outside every chunk, object and stack".to_string()
        } else {
            "unmapped: in no chunk's units, object, stack or runtime page".to_string()
        };
        mk(text, None, None)
    }

    /// The symbol or dynamic allocation a percpu pointer names.
    pub(crate) fn name_percpu_ptr(&self, ptr: u64) -> Option<String> {
        for d in &self.dyn_allocs {
            if ptr >= d.ptr && ptr - d.ptr < d.size {
                return Some(format!("dynamic allocation of `{}`+{:#x}", d.test, ptr - d.ptr));
            }
        }
        for o in &self.objects {
            if let Some((s, off)) = o.percpu_symbol(ptr) {
                return Some(format!("{}:{}+{off:#x}", o.name, s.name));
            }
        }
        None
    }

    pub(crate) fn code_loc(&self, pc: u64) -> CodeLoc {
        let symbol = self
            .objects
            .iter()
            .find_map(|o| o.code_symbol(pc).map(|(s, off)| format!("{}+{off:#x} in {}", s.name, o.name)));
        CodeLoc { pc, symbol }
    }

    /// Why `a` may have been accessed instead of this CPU's copy of the
    /// target (percpu pointer `t`, `size` bytes, value `width` bytes).
    pub(crate) fn explain_addr(&self, cpu: u32, t: u64, size: u64, width: u64, a: u64) -> Vec<String> {
        let mut h = Vec::new();
        let own = self.offsets.get(cpu as usize).copied().flatten().unwrap_or(0);
        let e = t.wrapping_add(own);
        let rel = a.wrapping_sub(t);
        // Whose offset was applied?
        for &k in &self.possible {
            let Some(off) = self.offsets.get(k as usize).copied().flatten() else { continue };
            let j = rel.wrapping_sub(off);
            if j < size {
                if k != cpu {
                    let why = if k == cpu + 1 {
                        ": cpu + 1, an off-by-one CPU number (a 1-based or physical id used as the logical one)"
                    } else if k + 1 == cpu {
                        ": cpu - 1, an off-by-one CPU number"
                    } else {
                        ""
                    };
                    h.push(format!(
                        "the offset applied was __per_cpu_offset[{k}] ({off:#x}, cpu {k}'s) instead of \
                         __per_cpu_offset[{cpu}] ({own:#x}){why}; the access landed in cpu {k}'s copy of the target{}",
                        if j > 0 { format!(" at +{j:#x}") } else { String::new() }
                    ));
                } else if j >= width {
                    h.push(format!(
                        "this CPU's copy of the target, but byte +{j:#x} of the {size}-byte object, past the \
                         {width}-byte value"
                    ));
                }
                break;
            }
        }
        if rel < size {
            h.push(format!(
                "no per-CPU offset was applied: {a:#x} is the percpu pointer {t:#x}{} itself (the link address / \
                 load image, which is no CPU's copy); per_cpu_ptr() of a CPU that is not possible lands here too, \
                 its __per_cpu_offset[] entry never set (loop with for_each_possible_cpu)",
                if rel > 0 { format!("+{rel:#x}") } else { String::new() }
            ));
        }
        let d = a.wrapping_sub(e);
        let named_cpu = h.iter().any(|x| x.starts_with("the offset applied was"));
        // The widest truncation that explains the distance: a multiple of
        // 2^bits (plus a byte inside the object).
        let mut truncation_named = false;
        for bits in [32u32, 16] {
            let m = low_mask(bits);
            if named_cpu || rel < size || d < size || (d & m) >= size || bits >= 8 * self.ptr_bytes as u32 {
                continue;
            }
            let form = if a == e & m {
                format!(" (the upper {} bits were cleared)", 8 * self.ptr_bytes as u32 - bits)
            } else if a == sext(e, bits) {
                format!(" (sign-extended from bit {})", bits - 1)
            } else {
                String::new()
            };
            h.push(format!(
                "{bits}-bit truncation: {a:#x} equals this CPU's copy {e:#x} in its low {bits} bits but differs by \
                 {d:#x}, a multiple of 2^{bits}{form}: an address, percpu pointer or offset was kept in {bits} bits"
            ));
            let used = a.wrapping_sub(own).wrapping_sub(d & m);
            if used != t {
                let how = if used == t & m {
                    format!("truncated to u{bits} (zero-extended)")
                } else if used == sext(t, bits) {
                    format!("truncated to {bits} bits and sign-extended")
                } else {
                    format!("rebuilt from a {bits}-bit offset")
                };
                h.push(format!(
                    "with this CPU's offset, the percpu pointer used was {used:#x} instead of {t:#x}: {how}"
                ));
            }
            truncation_named = true;
            break;
        }
        // Not a truncation of the copy it was meant for: maybe of another
        // live percpu address (outside every chunk only).
        if !truncation_named {
            h.extend(self.truncation_hint(a));
        }
        let ds = d as i64;
        if d >= width && ds.unsigned_abs() < 0x1000 && ds != 0 && !(0..width as i64).contains(&ds) {
            h.push(format!(
                "shifted by {} bytes from this CPU's copy of the target {e:#x}: a constant displacement (a \
                 misaligned section, a wrong offset constant)",
                signed_hex(ds)
            ));
        }
        match self.percpu.classify(a) {
            Some(loc) if !loc.populated => h.push(format!(
                "page {} of chunk {} is not populated: no memory backs that part of the unit",
                loc.page, loc.chunk
            )),
            _ => {}
        }
        h
    }

    /// What `a`, an address in no chunk's units, may be a truncation of:
    /// the live percpu bytes (an allocation or the static area) whose
    /// address shares its low 32 (then 16) bits, when `a` is a zero- or
    /// sign-extended value of that width.  For faults through a pointer
    /// whose intended target the runner does not know (real modules).
    pub(crate) fn truncation_hint(&self, a: u64) -> Option<String> {
        if self.percpu.classify(a).is_some() {
            return None;
        }
        let geom = self.percpu.geometry();
        let mut bases: Vec<u64> = self.percpu.chunks().map(|c| c.base_addr).collect();
        bases.sort_unstable();
        bases.dedup();
        for bits in [32u32, 16] {
            if bits >= 8 * self.ptr_bytes as u32 {
                continue;
            }
            let m = low_mask(bits);
            let form = if a <= m {
                "zero-extended"
            } else if a == sext(a, bits) {
                "sign-extended"
            } else {
                continue;
            };
            let mut found: Vec<(u64, Location)> = Vec::new();
            let mut count = 0usize;
            for &base in &bases {
                for &uo in &geom.unit_offsets {
                    let start = base.wrapping_add(uo);
                    let end = start.saturating_add(geom.unit_size);
                    let mut x = (start & !m) | (a & m);
                    if x < start {
                        x = x.wrapping_add(m + 1);
                    }
                    while x >= start && x < end {
                        if let Some(loc) = self.percpu.classify(x) {
                            let live = loc.allocation.is_some() || loc.region == percpu_core::percpu::Region::Static;
                            if live && loc.populated {
                                count += 1;
                                if found.len() < 3 {
                                    found.push((x, loc));
                                }
                            }
                        }
                        x = match x.checked_add(m + 1) {
                            Some(n) => n,
                            None => break,
                        };
                    }
                }
            }
            if count == 0 {
                continue;
            }
            let name = |x: u64| {
                let d = self.decode(x);
                format!("{x:#x} = {}{}", d.text, d.symbol.map(|s| format!(" = {s}")).unwrap_or_default())
            };
            return Some(if count == 1 {
                format!(
                    "{a:#x} is {} truncated to {bits} bits ({form}): the pointer was meant to reach that copy, and \
                     was kept in {bits} bits on the way",
                    name(found[0].0)
                )
            } else {
                let listed: Vec<String> = found.iter().map(|(x, _)| name(*x)).collect();
                format!(
                    "{a:#x} ({form} from {bits} bits) shares its low {bits} bits with {count} live percpu \
                     addresses, e.g. {}: a pointer kept in {bits} bits loses which one it was",
                    listed.join("; ")
                )
            });
        }
        None
    }

    /// A relocation the loader truncated inside the instruction at `pc`.
    pub(crate) fn reloc_hint(&self, pc: u64) -> Option<String> {
        for o in &self.objects {
            let Some(sec) = o.loaded.as_ref().and_then(|l| l.section_at(pc)) else { continue };
            let off = pc - sec.addr;
            if let Some(t) =
                o.truncations.iter().find(|t| t.section == sec.name && t.offset >= off && t.offset < off + 16)
            {
                return Some(format!(
                    "the instruction at {pc:#x} holds {} against `{}` ({}+{:#x}) which the loader truncated: value \
                     {} does not fit {}; {} is out of reach of that symbol",
                    t.type_name.unwrap_or("a relocation"),
                    t.symbol,
                    t.section,
                    t.offset,
                    hex_i128(t.value),
                    t.reach,
                    o.name
                ));
            }
        }
        None
    }
}

/// Explanations of a wrong value (`width` bytes): old value `init`, the op's
/// `operand`, what was expected and what was found.
pub(crate) fn explain_value(op_add: bool, init: u64, operand: u64, width: u32, want: u64, got: u64) -> Vec<String> {
    let mask = if width >= 8 { u64::MAX } else { (1u64 << (8 * width)) - 1 };
    let mut h = Vec::new();
    if got == init & mask && want != got {
        h.push("the value was not modified at all: no write reached this copy".to_string());
        return h;
    }
    if op_add {
        let delta = got.wrapping_sub(init) & mask;
        let want_delta = operand & mask;
        if width == 8 && delta != want_delta && (delta & 0xffff_ffff) == (want_delta & 0xffff_ffff) {
            h.push(format!(
                "the value changed by {delta:#x} instead of {want_delta:#x}: equal in the low 32 bits, so a 32-bit \
                 operand was widened wrongly (zero- instead of sign-extended, or negated before widening)"
            ));
        } else if delta != want_delta {
            h.push(format!("the value changed by {delta:#x} instead of {want_delta:#x}"));
        }
    }
    h
}
