//! Where things go: the percpu placer (module `.data..percpu` in the reserved
//! chunk) and the section placer (every other SHF_ALLOC section), with small
//! in-memory implementations for tests and tools.
//!
//! The loader does not know the allocator: it asks a [`PercpuPlacer`] for
//! `size` bytes at `align` from the reserved chunk and gets back the percpu
//! pointer (`__addr_to_pcpu_ptr` of unit 0's address), exactly what
//! `__alloc_reserved_percpu` returns to kernel/module.c.

use serde::Serialize;

use crate::error::{PlaceError, ReservedExhausted};

/// The reserved-chunk side of module loading.
pub trait PercpuPlacer {
    /// The target's PAGE_SIZE (alignment requests above it are clamped).
    fn page_size(&self) -> u64;
    /// Allocate `size` bytes aligned to `align` from the reserved chunk;
    /// return the percpu pointer (the value symbols in `.data..percpu` get
    /// rebased to, i.e. `__addr_to_pcpu_ptr` of unit 0's address).
    fn alloc_reserved(&mut self, size: u64, align: u64) -> Result<u64, ReservedExhausted>;
    /// Copy the section's initial bytes into every possible CPU's copy at
    /// percpu pointer `ptr` (`percpu_modcopy`).
    fn copy_to_all_units(&mut self, ptr: u64, data: &[u8]);
}

/// What a section is, so a placer can group like the kernel's
/// `layout_sections` (text, read-only, data; core before init).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SectionKind {
    Text,
    ReadOnly,
    /// `.data..ro_after_init`.
    RoAfterInit,
    Data,
    /// The GOT the loader builds (alpha LITERAL, s390x GOTENT, riscv GOT_HI20).
    Got,
    /// The PLT the loader builds (s390x PLT32DBL, arm64 CALL26/JUMP26 veneers, riscv CALL_PLT).
    Plt,
    InitText,
    InitReadOnly,
    InitData,
    /// A kernel image's static percpu area (`__per_cpu_start`).
    StaticPercpu,
}

impl SectionKind {
    pub fn is_init(self) -> bool {
        matches!(self, SectionKind::InitText | SectionKind::InitReadOnly | SectionKind::InitData)
    }
    pub fn is_exec(self) -> bool {
        matches!(self, SectionKind::Text | SectionKind::InitText | SectionKind::Plt)
    }
}

/// One request to the section placer.
#[derive(Clone, Debug)]
pub struct PlaceRequest<'a> {
    pub object: &'a str,
    pub section: &'a str,
    pub kind: SectionKind,
    pub size: u64,
    pub align: u64,
}

/// Chooses the address of every non-percpu SHF_ALLOC section of an object
/// (and, for a relocatable kernel image, of its static percpu area).
pub trait SectionPlacer {
    fn place(&mut self, req: &PlaceRequest<'_>) -> Result<u64, PlaceError>;
}

/// Where a [`LinearLayout`] put one section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Placement {
    pub object: String,
    pub section: String,
    pub kind: SectionKind,
    pub addr: u64,
    pub size: u64,
}

/// A bump placer: sections go one after another from `base`, each at its
/// alignment, with a page boundary whenever the kind changes (the kernel's
/// STRICT_MODULE_RWX layout).  The static percpu area of a kernel image goes
/// to `static_percpu_at` when set (x86_64 zero-based links it at 0).
#[derive(Clone, Debug)]
pub struct LinearLayout {
    base: u64,
    next: u64,
    end: u64,
    page: u64,
    last_kind: Option<SectionKind>,
    pub static_percpu_at: Option<u64>,
    pub placements: Vec<Placement>,
}

/// 1 GiB, the distance [`LinearLayout::near`] keeps from the percpu area.
pub const GIB: u64 = 1 << 30;

impl LinearLayout {
    /// Place from `base` upwards, up to the end of the 64-bit space.
    pub fn at(base: u64) -> Self {
        Self::window(base, u64::MAX)
    }
    /// Place inside `base..end` (exclusive; `u64::MAX` means no limit).
    pub fn window(base: u64, end: u64) -> Self {
        LinearLayout {
            base,
            next: base,
            end,
            page: 4096,
            last_kind: None,
            static_percpu_at: None,
            placements: Vec::new(),
        }
    }
    /// A module area within +-2 GiB of `percpu_addr` (1 GiB below it, like
    /// x86_64's modules at -1 GiB from a zero-based percpu area).
    pub fn near(percpu_addr: u64) -> Self {
        if percpu_addr >= GIB || (percpu_addr as i64) < 0 {
            Self::at(percpu_addr.wrapping_sub(GIB) & !0xfff)
        } else {
            // A low percpu area (s390x, riscv km): put the modules above it.
            Self::at(percpu_addr.wrapping_add(GIB) & !0xfff)
        }
    }
    /// A module area more than 4 GiB away from `percpu_addr` (8 GiB above).
    pub fn far(percpu_addr: u64) -> Self {
        Self::at(percpu_addr.wrapping_add(8 * GIB) & !0xfff)
    }
    pub fn with_page_size(mut self, page: u64) -> Self {
        self.page = page.max(1);
        self
    }
    pub fn base(&self) -> u64 {
        self.base
    }
    /// The first free address after everything placed so far.
    pub fn cursor(&self) -> u64 {
        self.next
    }
    pub fn find(&self, object: &str, section: &str) -> Option<&Placement> {
        self.placements.iter().find(|p| p.object == object && p.section == section)
    }
}

fn align_up(v: u64, align: u64) -> Option<u64> {
    let a = align.max(1);
    v.checked_add(a - 1).map(|x| x & !(a - 1))
}

impl SectionPlacer for LinearLayout {
    fn place(&mut self, req: &PlaceRequest<'_>) -> Result<u64, PlaceError> {
        let err = |reason: String| PlaceError { size: req.size, align: req.align, reason };
        if !req.align.max(1).is_power_of_two() {
            return Err(err("alignment is not a power of two".into()));
        }
        if req.kind == SectionKind::StaticPercpu {
            if let Some(at) = self.static_percpu_at {
                self.placements.push(Placement {
                    object: req.object.into(),
                    section: req.section.into(),
                    kind: req.kind,
                    addr: at,
                    size: req.size,
                });
                return Ok(at);
            }
        }
        let mut start = self.next;
        if self.last_kind.is_some() && self.last_kind != Some(req.kind) {
            start = align_up(start, self.page).ok_or_else(|| err("address space exhausted".into()))?;
        }
        let start = align_up(start, req.align).ok_or_else(|| err("address space exhausted".into()))?;
        let end = start.checked_add(req.size).ok_or_else(|| err("address space exhausted".into()))?;
        if end > self.end {
            return Err(err(format!("window {:#x}..{:#x} is full", self.base, self.end)));
        }
        self.next = end;
        self.last_kind = Some(req.kind);
        self.placements.push(Placement {
            object: req.object.into(),
            section: req.section.into(),
            kind: req.kind,
            addr: start,
            size: req.size,
        });
        Ok(start)
    }
}

/// A first chunk in memory: `nr_units` units of `unit_size` bytes, unit 0 at
/// `base_addr`; the static area is `static_size` bytes at the start of each
/// unit, followed by `reserved_size` bytes of reserved chunk.  Percpu
/// pointers follow `__addr_to_pcpu_ptr(a) = a - base_addr + per_cpu_start`.
#[derive(Clone, Debug)]
pub struct InMemoryPercpu {
    pub page_size: u64,
    pub base_addr: u64,
    pub per_cpu_start: u64,
    pub static_size: u64,
    pub reserved_size: u64,
    pub unit_size: u64,
    units: Vec<Vec<u8>>,
    next: u64,
    /// (percpu pointer, size) of every reserved allocation, in order.
    pub allocations: Vec<(u64, u64)>,
}

impl InMemoryPercpu {
    pub fn new(nr_units: usize, static_size: u64, reserved_size: u64, base_addr: u64, per_cpu_start: u64) -> Self {
        let unit_size = (static_size + reserved_size + 4095) & !4095;
        InMemoryPercpu {
            page_size: 4096,
            base_addr,
            per_cpu_start,
            static_size,
            reserved_size,
            unit_size,
            units: vec![vec![0; unit_size as usize]; nr_units],
            next: static_size,
            allocations: Vec::new(),
        }
    }
    pub fn with_page_size(mut self, page: u64) -> Self {
        self.page_size = page;
        self
    }
    /// The percpu pointer of offset `off` inside a unit.
    pub fn ptr_of_offset(&self, off: u64) -> u64 {
        self.per_cpu_start.wrapping_add(off)
    }
    /// The unit offset a percpu pointer names.
    pub fn offset_of_ptr(&self, ptr: u64) -> u64 {
        ptr.wrapping_sub(self.per_cpu_start)
    }
    pub fn nr_units(&self) -> usize {
        self.units.len()
    }
    /// `len` bytes of CPU `cpu`'s copy at percpu pointer `ptr`.
    pub fn read(&self, cpu: usize, ptr: u64, len: usize) -> Option<&[u8]> {
        let off = self.offset_of_ptr(ptr) as usize;
        self.units.get(cpu)?.get(off..off.checked_add(len)?)
    }
    pub fn reserved_free(&self) -> u64 {
        (self.static_size + self.reserved_size).saturating_sub(self.next)
    }
}

impl PercpuPlacer for InMemoryPercpu {
    fn page_size(&self) -> u64 {
        self.page_size
    }
    fn alloc_reserved(&mut self, size: u64, align: u64) -> Result<u64, ReservedExhausted> {
        let fail = || ReservedExhausted { size, align, free: self.reserved_free() };
        let align = align.max(4);
        let size4 = size.checked_add(3).ok_or_else(fail)? & !3;
        let start = align_up(self.next, align).ok_or_else(fail)?;
        let end = start.checked_add(size4).ok_or_else(fail)?;
        if size == 0 || end > self.static_size + self.reserved_size {
            return Err(fail());
        }
        self.next = end;
        let ptr = self.ptr_of_offset(start);
        self.allocations.push((ptr, size));
        Ok(ptr)
    }
    fn copy_to_all_units(&mut self, ptr: u64, data: &[u8]) {
        let off = self.offset_of_ptr(ptr) as usize;
        for u in &mut self.units {
            if let Some(dst) = off.checked_add(data.len()).and_then(|end| u.get_mut(off..end)) {
                dst.copy_from_slice(data);
            }
        }
    }
}
