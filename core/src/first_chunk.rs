//! The first chunk: `pcpu_embed_first_chunk()`, `pcpu_page_first_chunk()`
//! and `pcpu_setup_first_chunk()` of mm/percpu.c, plus the generic
//! `setup_per_cpu_areas()` derivation of `__per_cpu_offset[]`.
//!
//! Modelled on Linux 5.4 (v5.4.286).  The first chunk is laid out
//! `<static | reserved | dynamic>` in every unit:
//!
//! ```text
//!  base_addr (pcpu_base_addr)
//!  | static (kernel .data..percpu) | reserved (modules) | dynamic | unused tail |
//!  '------------------------ size_sum -------------------'             unit_size
//! ```
//!
//! The reserved and dynamic regions are each served by a chunk whose
//! bitmap starts at the page below the region ("hidden head") and ends at
//! the page above it ("hidden tail"): see [`RegionLayout`].
//!
//! Deviations from the kernel (all deliberate, all small):
//! * memblock allocates top-down by default; the linear-map stand-in here
//!   hands out the lowest fitting address of the node's span (memblock's
//!   bottom-up mode), and it never falls back to another node.
//! * Where the kernel BUGs or panics, [`FirstChunk::setup`] returns a
//!   [`SetupError`] and leaves both range allocators as it found them.
//! * The page first chunk's physical pages are taken from the linear map
//!   (node local) so memory use shows there; only the vm addresses are
//!   recorded as `backed`.

use std::ops::Range;

use serde::Serialize;

use crate::addr::{AddressSpace, RangeAllocator};
use crate::alloc_info::{pcpu_min_unit_size, AllocInfo};
use crate::consts::PCPU_MIN_ALLOC_SIZE;
use crate::cpus::{Topology, MAX_CPUS};

/// Which first-chunk allocator built the chunk (`percpu_alloc=` option).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum FirstChunkKind {
    /// `pcpu_embed_first_chunk`: units live in the linear map.
    Embed,
    /// `pcpu_page_first_chunk`: pages mapped one by one into a vm area.
    Page,
}

/// The chunk backend compiled in (mm/percpu-vm.c or mm/percpu-km.c)
/// decides `pcpu_verify_alloc_info`, the last sanity check of setup.
pub use crate::backend::BackendKind as Backend;

/// Everything `pcpu_{embed,page}_first_chunk` + `pcpu_setup_first_chunk`
/// take from their arguments and from kernel globals.
#[derive(Debug)]
pub struct FirstChunkParams<'a> {
    pub space: &'a AddressSpace,
    /// From [`crate::alloc_info::build_alloc_info`] (or built by hand).
    pub ai: AllocInfo,
    pub kind: FirstChunkKind,
    /// Link address of `__per_cpu_start` (0 for x86_64's zero-based
    /// percpu section).
    pub per_cpu_start: u64,
    pub topology: &'a Topology,
    /// memblock stand-in over the linear map.  It is split into
    /// `topology.nr_nodes()` equal spans; a group's area (or a page-chunk
    /// cpu's pages) comes from the span of its first cpu's node.
    pub linear: &'a mut RangeAllocator,
    /// vmalloc stand-in: the page first chunk's vm area comes from here,
    /// lowest first like `vm_area_register_early`.
    pub vmalloc: &'a mut RangeAllocator,
    pub backend: Backend,
    /// `CONFIG_NEED_PER_CPU_PAGE_FIRST_CHUNK`: the arch has a page first
    /// chunk to fall back to (x86, arm64, powerpc64, sparc64...).  With it,
    /// v5.4's embed *fails* when the groups span more than 3/4 of the
    /// vmalloc space; without it, embed only warns and carries on.
    pub need_page_first_chunk: bool,
    /// `PERCPU_DYNAMIC_EARLY_SIZE` the setup checks `dyn_size` against
    /// ([`crate::profile::KernelProfile::dynamic_early_size`]).
    pub dyn_early_size: usize,
    /// Where each node's memory is.  `None`: `linear` is split into equal
    /// node spans and allocated bottom-up (the model's default).  `Some`:
    /// memblock's default top-down allocation inside the cpu's node,
    /// above the layout's goal, falling back to any node (a memoryless
    /// node), as `pcpu_fc_alloc` -> `memblock_alloc_try_nid` does.  The
    /// caller has already taken everything outside the nodes' memory and
    /// the layout's reservations out of `linear`
    /// ([`MemoryLayout::restrict`]).
    pub memory: Option<&'a MemoryLayout>,
}

/// memblock's view of memory when the first chunk is allocated: each
/// node's RAM and what early boot already reserved, in linear-map
/// addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MemoryLayout {
    /// `(node, range)`; a node with no range is memoryless.
    pub nodes: Vec<(u32, Range<u64>)>,
    /// memblock.reserved before `setup_per_cpu_areas` (the kernel image,
    /// early page tables, NODE_DATA, the memory map...).
    pub reserved: Vec<Range<u64>>,
    /// `pcpu_fc_alloc`'s goal, `__pa(MAX_DMA_ADDRESS)` as a linear
    /// address: nothing below it is used while memory above it is free.
    pub goal: u64,
}

impl MemoryLayout {
    /// Take everything that is not node memory, and every reservation,
    /// out of `linear`.
    pub fn restrict(&self, linear: &mut RangeAllocator) {
        let w = linear.window();
        let mut ranges: Vec<Range<u64>> = self.nodes.iter().map(|(_, r)| r.clone()).collect();
        ranges.sort_by_key(|r| r.start);
        let mut at = w.start;
        for r in &ranges {
            if r.start > at {
                linear.reserve_overlapping(at..r.start.min(w.end));
            }
            at = at.max(r.end);
        }
        if at < w.end {
            linear.reserve_overlapping(at..w.end);
        }
        for r in &self.reserved {
            linear.reserve_overlapping(r.clone());
        }
    }

    /// `memblock_alloc_try_nid(size, align, goal, ACCESSIBLE, node)`:
    /// top-down in `node`'s memory above the goal, then (memoryless or
    /// full node) top-down anywhere; below the goal only if nothing fits
    /// above it.
    fn alloc(&self, linear: &mut RangeAllocator, size: u64, align: u64, node: Option<u32>) -> Option<u64> {
        let mut mine: Vec<Range<u64>> =
            self.nodes.iter().filter(|(n, _)| Some(*n) == node).map(|(_, r)| r.clone()).collect();
        mine.sort_by_key(|r| std::cmp::Reverse(r.start));
        let all = self.goal..u64::MAX;
        let from_goal = |r: &Range<u64>| r.start.max(self.goal)..r.end;
        for r in &mine {
            if let Some(a) = linear.alloc_top_down_within(size, align, from_goal(r)) {
                return Some(a);
            }
        }
        if let Some(a) = linear.alloc_top_down_within(size, align, all) {
            return Some(a);
        }
        // memblock_alloc_internal retries without the lower limit
        for r in &mine {
            if let Some(a) = linear.alloc_top_down_within(size, align, r.clone()) {
                return Some(a);
            }
        }
        linear.alloc_top_down_within(size, align, 0..u64::MAX)
    }
}

/// The part of the first chunk one `pcpu_alloc_first_chunk()` call serves
/// (the reserved region or the dynamic region), as that function lays it
/// out: its bitmap covers whole pages from `base_addr`, with
/// `start_offset` hidden bytes before the region and `end_offset` after.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RegionLayout {
    /// `chunk->base_addr`: the region start rounded down to a page.
    pub base_addr: u64,
    /// Hidden head (`chunk->start_offset`), in bytes.
    pub start_offset: usize,
    /// Bytes the region serves (`map_size`).
    pub map_size: usize,
    /// Hidden tail (`chunk->end_offset`), in bytes.
    pub end_offset: usize,
    /// `chunk->nr_pages`.
    pub nr_pages: usize,
}

impl RegionLayout {
    fn new(tmp_addr: u64, map_size: usize, page_size: u64) -> Self {
        let base_addr = tmp_addr & !(page_size - 1);
        let start_offset = (tmp_addr - base_addr) as usize;
        // The end aligns to lcm(PAGE_SIZE, PCPU_BITMAP_BLOCK_SIZE) = PAGE_SIZE.
        let region_size = (start_offset + map_size).div_ceil(page_size as usize) * page_size as usize;
        RegionLayout {
            base_addr,
            start_offset,
            map_size,
            end_offset: region_size - start_offset - map_size,
            nr_pages: region_size / page_size as usize,
        }
    }
}

/// The set-up first chunk and the tables `pcpu_setup_first_chunk` leaves
/// behind (`pcpu_unit_map`, `pcpu_unit_offsets`, `pcpu_group_*`...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FirstChunk {
    pub kind: FirstChunkKind,
    pub backend: Backend,
    /// The alloc info with the real group `base_offset`s.
    pub ai: AllocInfo,
    /// `pcpu_base_addr`.
    pub base_addr: u64,
    /// `__per_cpu_start` the offsets were computed against.
    pub per_cpu_start: u64,
    pub unit_size: usize,
    /// `pcpu_nr_units`: units over all groups, used or not.
    pub nr_units: usize,
    pub unit_pages: usize,
    /// cpu -> unit (`pcpu_unit_map`), length `nr_cpu_ids`.
    pub unit_map: Vec<Option<usize>>,
    /// cpu -> byte offset of its unit from `base_addr` (`pcpu_unit_offsets`).
    pub unit_off: Vec<Option<u64>>,
    /// unit -> cpu, `None` for unused units.
    pub unit_cpu: Vec<Option<u32>>,
    /// `pcpu_group_offsets` / `pcpu_group_sizes`: what the vm backend
    /// replicates for every later chunk.
    pub group_offsets: Vec<u64>,
    pub group_sizes: Vec<u64>,
    /// Node of each group's first cpu (where its memory came from).
    pub group_nodes: Vec<u32>,
    /// `ALIGN(ai->static_size, PCPU_MIN_ALLOC_SIZE)`: where the reserved
    /// (or dynamic) region starts.  `ai.static_size` keeps the raw size.
    pub static_size: usize,
    pub reserved_size: usize,
    /// `ai->dyn_size` shrunk by the static alignment, as setup does.
    pub dyn_size: usize,
    /// The reserved chunk's region (`pcpu_reserved_chunk`), if any.
    pub reserved_region: Option<RegionLayout>,
    /// The dynamic region (`pcpu_first_chunk`).
    pub dyn_region: RegionLayout,
    /// `__per_cpu_offset[cpu]`, length `nr_cpu_ids`; `None` for
    /// impossible cpus.
    pub per_cpu_offset: Vec<Option<u64>>,
    /// Address ranges that hold memory, sorted and merged: for embed, each
    /// used unit's first `size_sum` bytes (unused units and tails went back
    /// to memblock); for page, the mapped units of the vm area.
    pub backed: Vec<Range<u64>>,
    /// The kernel's `pr_info` lines (`Embedded N pages/cpu ...`).
    pub messages: Vec<String>,
    /// The kernel's warnings (`max_distance=... too large ...`,
    /// `wasting N pages per chunk`).
    pub warnings: Vec<String>,
    /// `pcpu_low_unit_cpu` / `pcpu_high_unit_cpu`: cpus whose units have the
    /// lowest / highest offsets (the first one found on ties).
    pub low_unit_cpu: u32,
    pub high_unit_cpu: u32,
}

/// Why the first chunk could not be set up.  The `Setup*`-style variants
/// are `pcpu_setup_first_chunk`'s `PCPU_SETUP_BUG_ON` checks, in the
/// kernel's order (the kernel prints "failed to initialize, <cond>" and
/// BUGs); the others are embed/page failures (-ENOMEM/-EINVAL).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    // ---- pcpu_setup_first_chunk sanity checks, in order ----
    #[error("failed to initialize, ai->nr_groups <= 0 (nr_groups {nr_groups})")]
    NoGroups { nr_groups: usize },
    #[error("failed to initialize, !ai->static_size (static size 0 on SMP)")]
    NoStaticArea,
    #[error("failed to initialize, offset_in_page(__per_cpu_start): {per_cpu_start:#x} is not aligned to the {page_size:#x} page")]
    PerCpuStartUnaligned { per_cpu_start: u64, page_size: u64 },
    #[error("failed to initialize, !base_addr (base address is 0)")]
    NullBase,
    #[error("failed to initialize, offset_in_page(base_addr): {base:#x} is not aligned to the {page_size:#x} page")]
    BaseUnaligned { base: u64, page_size: u64 },
    #[error("failed to initialize, ai->unit_size < size_sum: unit {unit_size:#x} < static {static_size:#x} + reserved {reserved_size:#x} + dynamic {dyn_size:#x} = {size_sum:#x}")]
    UnitSmallerThanSum { unit_size: usize, static_size: usize, reserved_size: usize, dyn_size: usize, size_sum: u128 },
    #[error("failed to initialize, offset_in_page(ai->unit_size): unit size {unit_size:#x} is not a multiple of the {page_size:#x} page")]
    UnitSizeUnaligned { unit_size: usize, page_size: u64 },
    #[error("failed to initialize, ai->unit_size < PCPU_MIN_UNIT_SIZE: {unit_size:#x} < {min_unit_size:#x}")]
    UnitBelowMin { unit_size: usize, min_unit_size: usize },
    #[error("failed to initialize, !IS_ALIGNED(ai->unit_size, PCPU_BITMAP_BLOCK_SIZE): {unit_size:#x} is not a multiple of {block_size:#x}")]
    UnitNotBlockMultiple { unit_size: usize, block_size: u64 },
    #[error("failed to initialize, ai->dyn_size < PERCPU_DYNAMIC_EARLY_SIZE: {dyn_size:#x} < {early_size:#x}")]
    DynBelowEarly { dyn_size: usize, early_size: usize },
    #[error("failed to initialize, !ai->dyn_size (dynamic size 0)")]
    DynZero,
    #[error("failed to initialize, !IS_ALIGNED(ai->reserved_size, PCPU_MIN_ALLOC_SIZE): {reserved_size:#x} is not a multiple of {min_alloc_size}")]
    ReservedUnaligned { reserved_size: usize, min_alloc_size: usize },
    #[error("failed to initialize, PCPU_BITMAP_BLOCK_SIZE {block_size:#x} and PAGE_SIZE {page_size:#x} are not multiples of one another")]
    BlockPageMismatch { block_size: u64, page_size: u64 },
    #[error("failed to initialize, pcpu_verify_alloc_info(ai) < 0: percpu-km can't handle more than one group ({nr_groups} groups)")]
    KmMultipleGroups { nr_groups: usize },
    #[error("failed to initialize: group {group} has nr_units {nr_units} but its cpu_map holds only {len} entries")]
    CpuMapShort { group: usize, nr_units: usize, len: usize },
    #[error(
        "failed to initialize, cpu >= nr_cpu_ids: group {group} unit {unit} maps cpu {cpu}, nr_cpu_ids is {nr_cpu_ids}"
    )]
    CpuBeyondNrCpuIds { cpu: u32, group: usize, unit: usize, nr_cpu_ids: u32 },
    #[error("failed to initialize, !cpu_possible(cpu): group {group} unit {unit} maps impossible cpu {cpu}")]
    CpuNotPossible { cpu: u32, group: usize, unit: usize },
    #[error("failed to initialize, unit_map[cpu] != UINT_MAX: cpu {cpu} mapped twice, to unit {first_unit} and unit {second_unit}")]
    CpuMappedTwice { cpu: u32, first_unit: usize, second_unit: usize },
    #[error("failed to initialize, unit_map[cpu] == UINT_MAX: possible cpu {cpu} has no unit")]
    CpuNotMapped { cpu: u32 },

    // ---- embed / page first chunk ----
    #[error("atom size {atom_size:#x} is not a power of two (memblock alignment)")]
    AtomSize { atom_size: usize },
    #[error("group {group} has no cpu in its {nr_units} units (kernel: BUG_ON(cpu == NR_CPUS))")]
    GroupWithoutCpu { group: usize, nr_units: usize },
    #[error("group {group}: {nr_units} units of {unit_size:#x} bytes overflow the address space")]
    GroupTooLarge { group: usize, nr_units: usize, unit_size: usize },
    #[error("no memory for group {group} (cpu {cpu}): {size:#x} bytes aligned to {align:#x} do not fit node {node}'s span {span_start:#x}..{span_end:#x}")]
    NodeSpanExhausted { group: usize, cpu: u32, node: u32, size: u64, align: u64, span_start: u64, span_end: u64 },
    #[error("max_distance={max_distance:#x} too large for vmalloc space {vmalloc_total:#x} (more than 3/4 of it; failing because a page first chunk fallback exists)")]
    MaxDistanceTooLarge { max_distance: u64, vmalloc_total: u64 },
    #[error("page first chunk needs one group, alloc info has {nr_groups}")]
    PageNeedsOneGroup { nr_groups: usize },
    #[error("page first chunk: group 0 has {nr_units} units, expected roundup({nr_possible} possible cpus, upa {upa}) = {expected}")]
    PageUnitCount { nr_units: usize, expected: usize, nr_possible: usize, upa: usize },
    #[error(
        "failed to allocate {page_kib}K page for cpu{cpu} (node {node} span {span_start:#x}..{span_end:#x} is full)"
    )]
    PageAlloc { cpu: u32, page_kib: u64, node: u32, span_start: u64, span_end: u64 },
    #[error("vmalloc space {vm_start:#x}..{vm_end:#x} has no room for the {size:#x}-byte first chunk area")]
    VmallocExhausted { size: u64, vm_start: u64, vm_end: u64 },
    #[error("contiguous percpu allocation (percpu-km) is incompatible with the paged first chunk")]
    PageWithKm,
}

/// `pcpu_verify_alloc_info` of mm/percpu-km.c: a km chunk is one
/// `alloc_pages()` block, so there can be only one group.  Returns the
/// pages wasted per chunk when the chunk is not a power-of-two number of
/// pages (the kernel warns "wasting N pages per chunk"), `None` if none.
pub fn verify_for_km(ai: &AllocInfo, page_size: usize) -> Result<Option<usize>, SetupError> {
    if ai.groups.len() != 1 {
        return Err(SetupError::KmMultipleGroups { nr_groups: ai.groups.len() });
    }
    let nr_pages = ai.groups[0].nr_units * ai.unit_size / page_size.max(1);
    let alloc_pages = nr_pages.max(1).next_power_of_two();
    Ok((alloc_pages > nr_pages).then_some(alloc_pages - nr_pages))
}

/// The limits pcpu_setup_first_chunk checks against.  In the kernel they
/// all follow from `PAGE_SIZE`; tests vary them to reach checks that the
/// real constants make unreachable (block size == page size, early size
/// > 0).
#[derive(Clone, Copy, Debug)]
struct Limits {
    page_size: u64,
    block_size: u64,
    min_unit_size: usize,
    dyn_early: usize,
}

impl Limits {
    fn for_page(page_size: u64, dyn_early: usize) -> Self {
        Limits {
            page_size,
            // PCPU_BITMAP_BLOCK_SIZE is PAGE_SIZE.
            block_size: page_size,
            min_unit_size: pcpu_min_unit_size(page_size as usize),
            dyn_early,
        }
    }
}

/// The cpu/unit tables built by pcpu_setup_first_chunk.
struct Maps {
    unit_map: Vec<Option<usize>>,
    unit_off: Vec<Option<u64>>,
    unit_cpu: Vec<Option<u32>>,
    group_offsets: Vec<u64>,
    group_sizes: Vec<u64>,
    nr_units: usize,
    low_unit_cpu: u32,
    high_unit_cpu: u32,
    km_waste: Option<usize>,
}

/// `pcpu_setup_first_chunk`'s checks and table building, in its order.
fn check_and_map(
    ai: &AllocInfo,
    base: u64,
    per_cpu_start: u64,
    space: &AddressSpace,
    topology: &Topology,
    backend: Backend,
    lim: Limits,
) -> Result<Maps, SetupError> {
    use SetupError as E;
    let size_sum = ai.static_size as u128 + ai.reserved_size as u128 + ai.dyn_size as u128;
    let page = lim.page_size;

    if ai.groups.is_empty() {
        return Err(E::NoGroups { nr_groups: 0 });
    }
    if ai.static_size == 0 {
        return Err(E::NoStaticArea);
    }
    if per_cpu_start % page != 0 {
        return Err(E::PerCpuStartUnaligned { per_cpu_start, page_size: page });
    }
    if base == 0 {
        return Err(E::NullBase);
    }
    if base % page != 0 {
        return Err(E::BaseUnaligned { base, page_size: page });
    }
    if (ai.unit_size as u128) < size_sum {
        return Err(E::UnitSmallerThanSum {
            unit_size: ai.unit_size,
            static_size: ai.static_size,
            reserved_size: ai.reserved_size,
            dyn_size: ai.dyn_size,
            size_sum,
        });
    }
    if ai.unit_size as u64 % page != 0 {
        return Err(E::UnitSizeUnaligned { unit_size: ai.unit_size, page_size: page });
    }
    if ai.unit_size < lim.min_unit_size {
        return Err(E::UnitBelowMin { unit_size: ai.unit_size, min_unit_size: lim.min_unit_size });
    }
    if ai.unit_size as u64 % lim.block_size != 0 {
        return Err(E::UnitNotBlockMultiple { unit_size: ai.unit_size, block_size: lim.block_size });
    }
    if ai.dyn_size < lim.dyn_early {
        return Err(E::DynBelowEarly { dyn_size: ai.dyn_size, early_size: lim.dyn_early });
    }
    if ai.dyn_size == 0 {
        return Err(E::DynZero);
    }
    if ai.reserved_size % PCPU_MIN_ALLOC_SIZE != 0 {
        return Err(E::ReservedUnaligned { reserved_size: ai.reserved_size, min_alloc_size: PCPU_MIN_ALLOC_SIZE });
    }
    if lim.block_size % page != 0 && page % lim.block_size != 0 {
        return Err(E::BlockPageMismatch { block_size: lim.block_size, page_size: page });
    }
    let km_waste = match backend {
        Backend::Vm => None,
        Backend::Km => verify_for_km(ai, page as usize)?,
    };

    let possible = topology.possible();
    let nr_cpu_ids = possible.nr_cpu_ids();
    let mut unit_map: Vec<Option<usize>> = vec![None; nr_cpu_ids as usize];
    let mut unit_off: Vec<Option<u64>> = vec![None; nr_cpu_ids as usize];
    let mut unit_cpu = Vec::with_capacity(ai.nr_units());
    let mut group_offsets = Vec::with_capacity(ai.groups.len());
    let mut group_sizes = Vec::with_capacity(ai.groups.len());
    let mut low: Option<(u32, u64)> = None;
    let mut high: Option<(u32, u64)> = None;
    let mut unit = 0usize;
    for (group, gi) in ai.groups.iter().enumerate() {
        group_offsets.push(gi.base_offset);
        group_sizes.push((gi.nr_units as u64).wrapping_mul(ai.unit_size as u64));
        if gi.cpu_map.len() < gi.nr_units {
            return Err(E::CpuMapShort { group, nr_units: gi.nr_units, len: gi.cpu_map.len() });
        }
        for (i, &entry) in gi.cpu_map[..gi.nr_units].iter().enumerate() {
            unit_cpu.push(entry);
            let Some(cpu) = entry else { continue };
            if cpu >= nr_cpu_ids {
                return Err(E::CpuBeyondNrCpuIds { cpu, group, unit: unit + i, nr_cpu_ids });
            }
            if !possible.contains(cpu) {
                return Err(E::CpuNotPossible { cpu, group, unit: unit + i });
            }
            if let Some(first_unit) = unit_map[cpu as usize] {
                return Err(E::CpuMappedTwice { cpu, first_unit, second_unit: unit + i });
            }
            unit_map[cpu as usize] = Some(unit + i);
            let off = space.wrapping_add(gi.base_offset, (i as u64).wrapping_mul(ai.unit_size as u64));
            unit_off[cpu as usize] = Some(off);
            if low.is_none_or(|(_, o)| off < o) {
                low = Some((cpu, off));
            }
            if high.is_none_or(|(_, o)| off > o) {
                high = Some((cpu, off));
            }
        }
        unit += gi.nr_units;
    }
    for cpu in possible.iter() {
        if unit_map[cpu as usize].is_none() {
            return Err(E::CpuNotMapped { cpu });
        }
    }
    Ok(Maps {
        unit_map,
        unit_off,
        unit_cpu,
        group_offsets,
        group_sizes,
        nr_units: unit,
        low_unit_cpu: low.map_or(MAX_CPUS, |(c, _)| c),
        high_unit_cpu: high.map_or(MAX_CPUS, |(c, _)| c),
        km_waste,
    })
}

/// `topology.nr_nodes()` equal, page-aligned spans of the linear map; the
/// last one takes the remainder.
fn node_spans(window: &Range<u64>, nr_nodes: u32, page: u64) -> Vec<Range<u64>> {
    let nr = nr_nodes.max(1) as u64;
    let len = window.end - window.start;
    let per = (len / nr) & !(page - 1);
    (0..nr)
        .map(|n| {
            let start = window.start + n * per;
            let end = if n + 1 == nr { window.end } else { start + per };
            start..end
        })
        .collect()
}

fn merge_ranges(mut v: Vec<Range<u64>>) -> Vec<Range<u64>> {
    v.retain(|r| r.start < r.end);
    v.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(last) if last.end >= r.start => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

fn first_cpu(gi: &crate::alloc_info::GroupInfo) -> Option<u32> {
    gi.cpu_map.iter().take(gi.nr_units).flatten().copied().next()
}

/// What the flavour-specific half hands to setup.
struct Placed {
    base: u64,
    backed: Vec<Range<u64>>,
}

fn embed(
    p: &mut FirstChunkParams,
    ai: &mut AllocInfo,
    warnings: &mut Vec<String>,
    messages: &mut Vec<String>,
) -> Result<Placed, SetupError> {
    use SetupError as E;
    let page = p.space.page_size();
    let atom = ai.atom_size;
    if !atom.is_power_of_two() {
        return Err(E::AtomSize { atom_size: atom });
    }
    if ai.groups.is_empty() {
        return Err(E::NoGroups { nr_groups: 0 });
    }
    let unit = ai.unit_size as u64;
    let size_sum = ai.size_sum() as u64;
    let spans = node_spans(&p.linear.window(), p.topology.nr_nodes(), page);

    // Allocate every group's area first, then free what is unused, so that
    // groups cannot overlap (the kernel's comment).
    let mut areas: Vec<u64> = Vec::with_capacity(ai.groups.len());
    for (group, gi) in ai.groups.iter().enumerate() {
        let cpu = first_cpu(gi).ok_or(E::GroupWithoutCpu { group, nr_units: gi.nr_units })?;
        let size = (gi.nr_units as u64).checked_mul(unit).ok_or(E::GroupTooLarge {
            group,
            nr_units: gi.nr_units,
            unit_size: ai.unit_size,
        })?;
        // An impossible cpu is reported by the setup checks; place it on node 0.
        let node = p.topology.node_of(cpu).unwrap_or(0).min(spans.len() as u32 - 1);
        let span = &spans[node as usize];
        let exhausted = E::NodeSpanExhausted {
            group,
            cpu,
            node,
            size,
            align: atom as u64,
            span_start: span.start,
            span_end: span.end,
        };
        let ptr = match p.memory {
            Some(mem) => mem.alloc(p.linear, size, atom as u64, p.topology.node_of(cpu)).ok_or(exhausted)?,
            None => {
                let ptr = p.linear.alloc_bottom_up(size, atom as u64, span.start).ok_or(exhausted.clone())?;
                if ptr.checked_add(size).is_none_or(|end| end > span.end) {
                    return Err(exhausted);
                }
                ptr
            }
        };
        areas.push(ptr);
    }
    let base = *areas.iter().min().expect("at least one group");
    // The highest area; the first one on ties, like the kernel's `>`.
    let mut highest = 0;
    for (g, &a) in areas.iter().enumerate() {
        if a > areas[highest] {
            highest = g;
        }
    }
    let max_distance = areas[highest] - base + unit * ai.groups[highest].nr_units as u64;
    let vm = p.space.vmalloc();
    let vmalloc_total = vm.end - vm.start;
    if max_distance as u128 > vmalloc_total as u128 * 3 / 4 {
        warnings.push(format!("max_distance={max_distance:#x} too large for vmalloc space {vmalloc_total:#x}"));
        if p.need_page_first_chunk {
            return Err(E::MaxDistanceTooLarge { max_distance, vmalloc_total });
        }
    }

    // Copy happens here in the kernel; give back unused units and tails.
    let mut backed = Vec::new();
    for (gi, &area) in ai.groups.iter().zip(&areas) {
        for i in 0..gi.nr_units {
            let start = area + i as u64 * unit;
            if gi.cpu_map.get(i).copied().flatten().is_none() {
                p.linear.release(start..start + unit);
                continue;
            }
            let used = size_sum.min(unit);
            backed.push(start..start + used);
            p.linear.release(start + used..start + unit);
        }
    }
    for (gi, &area) in ai.groups.iter_mut().zip(&areas) {
        gi.base_offset = area - base;
    }
    messages.push(format!(
        "Embedded {} pages/cpu s{} r{} d{} u{}",
        size_sum / page,
        ai.static_size,
        ai.reserved_size,
        ai.dyn_size,
        ai.unit_size
    ));
    Ok(Placed { base, backed: merge_ranges(backed) })
}

fn page_chunk(p: &mut FirstChunkParams, ai: &AllocInfo, messages: &mut Vec<String>) -> Result<Placed, SetupError> {
    use SetupError as E;
    let page = p.space.page_size();
    if ai.groups.len() != 1 {
        return Err(E::PageNeedsOneGroup { nr_groups: ai.groups.len() });
    }
    let upa = ai.upa();
    let nr_possible = p.topology.possible().len();
    let expected = nr_possible.div_ceil(upa) * upa;
    let g0 = &ai.groups[0];
    if g0.nr_units != expected {
        return Err(E::PageUnitCount { nr_units: g0.nr_units, expected, nr_possible, upa });
    }
    let unit_pages = ai.unit_size as u64 / page;
    let spans = node_spans(&p.linear.window(), p.topology.nr_nodes(), page);

    // One page at a time from the cpu's node, like alloc_fn(cpu, PAGE_SIZE).
    for unit in 0..nr_possible {
        let cpu = g0.cpu_map.get(unit).copied().flatten();
        let node = cpu.and_then(|c| p.topology.node_of(c)).unwrap_or(0).min(spans.len() as u32 - 1);
        let span = &spans[node as usize];
        for _ in 0..unit_pages {
            let got = match p.memory {
                Some(mem) => mem.alloc(p.linear, page, page, cpu.and_then(|c| p.topology.node_of(c))),
                None => p.linear.alloc_bottom_up(page, page, span.start).filter(|&a| a + page <= span.end),
            };
            if got.is_none() {
                return Err(E::PageAlloc {
                    cpu: cpu.unwrap_or(MAX_CPUS),
                    page_kib: page >> 10,
                    node,
                    span_start: span.start,
                    span_end: span.end,
                });
            }
        }
    }

    // vm.size = num_possible_cpus() * unit_size, registered early (lowest
    // free vmalloc address, page aligned).
    let size = (nr_possible as u64).checked_mul(ai.unit_size as u64);
    let vm = p.vmalloc.window();
    let exhausted = E::VmallocExhausted { size: size.unwrap_or(u64::MAX), vm_start: vm.start, vm_end: vm.end };
    let size = size.ok_or(exhausted.clone())?;
    let addr = p.vmalloc.alloc_bottom_up(size, page, vm.start).ok_or(exhausted)?;
    messages.push(format!(
        "{} {}K pages/cpu s{} r{} d{}",
        unit_pages,
        page >> 10,
        ai.static_size,
        ai.reserved_size,
        ai.dyn_size
    ));
    Ok(Placed { base: addr, backed: std::iter::once(addr..addr + size).collect() })
}

impl FirstChunk {
    /// Build the first chunk: `pcpu_embed_first_chunk` or
    /// `pcpu_page_first_chunk` (placement), then `pcpu_setup_first_chunk`
    /// (checks and tables), then the generic `setup_per_cpu_areas` offsets.
    /// On error `linear` and `vmalloc` are restored to their state on entry.
    pub fn setup(p: FirstChunkParams) -> Result<FirstChunk, SetupError> {
        let limits = Limits::for_page(p.space.page_size(), p.dyn_early_size);
        Self::setup_with(p, limits)
    }

    fn setup_with(mut p: FirstChunkParams, limits: Limits) -> Result<FirstChunk, SetupError> {
        let saved_linear = p.linear.clone();
        let saved_vmalloc = p.vmalloc.clone();
        let r = Self::setup_inner(&mut p, limits);
        if r.is_err() {
            *p.linear = saved_linear;
            *p.vmalloc = saved_vmalloc;
        }
        r
    }

    fn setup_inner(p: &mut FirstChunkParams, limits: Limits) -> Result<FirstChunk, SetupError> {
        let mut ai = p.ai.clone();
        let mut warnings = Vec::new();
        let mut messages = Vec::new();
        if p.backend == Backend::Km && p.kind == FirstChunkKind::Page {
            return Err(SetupError::PageWithKm);
        }
        let placed = match p.kind {
            FirstChunkKind::Embed => embed(p, &mut ai, &mut warnings, &mut messages)?,
            FirstChunkKind::Page => page_chunk(p, &ai, &mut messages)?,
        };
        let space = p.space;
        let base = placed.base;
        let maps = check_and_map(&ai, base, p.per_cpu_start, space, p.topology, p.backend, limits)?;
        if let Some(w) = maps.km_waste {
            warnings.push(format!("wasting {w} pages per chunk"));
        }

        let page = limits.page_size;
        let static_size = ai.static_size.next_multiple_of(PCPU_MIN_ALLOC_SIZE);
        let dyn_size = ai.dyn_size - (static_size - ai.static_size);
        let reserved_start = space.wrapping_add(base, static_size as u64);
        let (reserved_region, dyn_region) = if ai.reserved_size > 0 {
            let dyn_start = space.wrapping_add(reserved_start, ai.reserved_size as u64);
            (
                Some(RegionLayout::new(reserved_start, ai.reserved_size, page)),
                RegionLayout::new(dyn_start, dyn_size, page),
            )
        } else {
            (None, RegionLayout::new(reserved_start, dyn_size, page))
        };

        // setup_per_cpu_areas: delta = pcpu_base_addr - __per_cpu_start.
        let delta = space.wrapping_sub(base, p.per_cpu_start);
        let per_cpu_offset = maps.unit_off.iter().map(|o| o.map(|o| space.wrapping_add(delta, o))).collect();
        let group_nodes =
            ai.groups.iter().map(|g| first_cpu(g).and_then(|c| p.topology.node_of(c)).unwrap_or(0)).collect();

        Ok(FirstChunk {
            kind: p.kind,
            backend: p.backend,
            base_addr: base,
            per_cpu_start: p.per_cpu_start,
            unit_size: ai.unit_size,
            nr_units: maps.nr_units,
            unit_pages: ai.unit_size / page as usize,
            unit_map: maps.unit_map,
            unit_off: maps.unit_off,
            unit_cpu: maps.unit_cpu,
            group_offsets: maps.group_offsets,
            group_sizes: maps.group_sizes,
            group_nodes,
            static_size,
            reserved_size: ai.reserved_size,
            dyn_size,
            reserved_region,
            dyn_region,
            per_cpu_offset,
            backed: placed.backed,
            messages,
            warnings,
            low_unit_cpu: maps.low_unit_cpu,
            high_unit_cpu: maps.high_unit_cpu,
            ai,
        })
    }

    /// `__addr_to_pcpu_ptr`: `addr - pcpu_base_addr + __per_cpu_start`.
    pub fn addr_to_pcpu_ptr(&self, space: &AddressSpace, addr: u64) -> u64 {
        space.wrapping_add(space.wrapping_sub(addr, self.base_addr), self.per_cpu_start)
    }

    /// `__pcpu_ptr_to_addr`: `ptr + pcpu_base_addr - __per_cpu_start`.
    pub fn pcpu_ptr_to_addr(&self, space: &AddressSpace, ptr: u64) -> u64 {
        space.wrapping_sub(space.wrapping_add(ptr, self.base_addr), self.per_cpu_start)
    }

    /// `per_cpu_ptr(ptr, cpu)`: `RELOC_HIDE(ptr, __per_cpu_offset[cpu])`,
    /// an add in the target's pointer width.  `None` for an impossible cpu.
    pub fn per_cpu_ptr(&self, space: &AddressSpace, ptr: u64, cpu: u32) -> Option<u64> {
        let off = (*self.per_cpu_offset.get(cpu as usize)?)?;
        Some(space.wrapping_add(ptr, off))
    }

    /// Number of possible cpus (those with an offset).
    pub fn nr_possible(&self) -> usize {
        self.per_cpu_offset.iter().flatten().count()
    }

    /// Human-readable layout: the kernel's boot lines (`percpu: Embedded
    /// ...` and the `pcpu-alloc:` dump), then the unit layout with hidden
    /// heads and tails, each group with its units, and `__per_cpu_offset[]`.
    pub fn dump_layout(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        for m in &self.messages {
            let _ = writeln!(o, "percpu: {m}");
        }
        o.push_str(&self.ai.dump(self.nr_possible()));
        let kind = match self.kind {
            FirstChunkKind::Embed => "embed",
            FirstChunkKind::Page => "page",
        };
        let backend = match self.backend {
            Backend::Vm => "vm",
            Backend::Km => "km",
        };
        let ai = &self.ai;
        let _ = writeln!(
            o,
            "first chunk: {kind} ({backend} backend), base_addr {:#x}, __per_cpu_start {:#x}",
            self.base_addr, self.per_cpu_start
        );
        let _ = writeln!(
            o,
            "  unit_size {:#x} ({} pages), {} units in {} groups, atom {:#x}, alloc {:#x} ({} units), low_unit_cpu {}, high_unit_cpu {}",
            self.unit_size,
            self.unit_pages,
            self.nr_units,
            ai.groups.len(),
            ai.atom_size,
            ai.alloc_size,
            ai.upa(),
            self.low_unit_cpu,
            self.high_unit_cpu
        );
        let s_end = ai.static_size;
        let r_start = self.static_size;
        let d_start = r_start + self.reserved_size;
        let d_end = d_start + self.dyn_size;
        let _ = write!(o, "  unit: <static {:#x}..{:#x}", 0, s_end);
        if r_start > s_end {
            let _ = write!(o, " | align pad {s_end:#x}..{r_start:#x}");
        }
        let _ = writeln!(
            o,
            " | reserved {r_start:#x}..{d_start:#x} | dynamic {d_start:#x}..{d_end:#x} | unused tail {d_end:#x}..{:#x}>",
            self.unit_size
        );
        let region = |o: &mut String, name: &str, r: &RegionLayout| {
            let _ = writeln!(
                o,
                "  {name} chunk: base_addr {:#x}, hidden head {:#x}, serves {:#x}, hidden tail {:#x}, {} pages",
                r.base_addr, r.start_offset, r.map_size, r.end_offset, r.nr_pages
            );
        };
        match &self.reserved_region {
            Some(r) => region(&mut o, "reserved", r),
            None => o.push_str("  reserved chunk: none\n"),
        }
        region(&mut o, "dynamic", &self.dyn_region);

        let nr_possible = self.nr_possible() as u64;
        let mut unit = 0usize;
        for (g, gi) in ai.groups.iter().enumerate() {
            let _ = writeln!(
                o,
                "group {g}: base_offset {:#x}, size {:#x}, node {}",
                self.group_offsets[g], self.group_sizes[g], self.group_nodes[g]
            );
            for i in 0..gi.nr_units {
                let start = self.base_addr.wrapping_add(gi.base_offset).wrapping_add((i * self.unit_size) as u64);
                let end = start.wrapping_add(self.unit_size as u64);
                let what = match (self.kind, gi.cpu_map[i]) {
                    (FirstChunkKind::Embed, Some(_)) => {
                        format!("backed {:#x}..{:#x}", start, start + (ai.size_sum().min(self.unit_size)) as u64)
                    }
                    (FirstChunkKind::Embed, None) => "unused, freed".to_string(),
                    (FirstChunkKind::Page, _) if (unit as u64) < nr_possible => "mapped".to_string(),
                    (FirstChunkKind::Page, _) => "not mapped".to_string(),
                };
                let cpu = gi.cpu_map[i].map_or("-".to_string(), |c| c.to_string());
                let _ = writeln!(o, "  unit {unit} cpu {cpu}: {start:#x}..{end:#x} {what}");
                unit += 1;
            }
        }
        o.push_str("__per_cpu_offset:\n");
        for (cpu, off) in self.per_cpu_offset.iter().enumerate() {
            if let Some(off) = off {
                let _ = writeln!(o, "  cpu {cpu}: {off:#x}");
            }
        }
        for w in &self.warnings {
            let _ = writeln!(o, "warning: {w}");
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc_info::{build_alloc_info, AllocInfoParams};
    use crate::consts::{percpu_dynamic_reserve, PERCPU_MODULE_RESERVE};
    use crate::cpus::CpuSet;
    use SetupError as E;

    /// Static size of a real x86_64 boot (`s173272` in its dmesg).
    const X86_STATIC: usize = 173272;

    /// PERCPU_DYNAMIC_EARLY_SIZE from 6.2 on.
    const EARLY_6_2: usize = 20 << 10;

    struct Fx {
        space: AddressSpace,
        topo: Topology,
        linear: RangeAllocator,
        vmalloc: RangeAllocator,
        backend: Backend,
        need_page: bool,
        per_cpu_start: u64,
    }

    impl Fx {
        fn new(space: AddressSpace, topo: Topology) -> Self {
            let linear = RangeAllocator::new(space.linear_map());
            let vmalloc = RangeAllocator::new(space.vmalloc());
            Fx { space, topo, linear, vmalloc, backend: Backend::Vm, need_page: true, per_cpu_start: 0 }
        }
        /// x86_64 layout with 16 GiB of RAM at the start of the linear map
        /// (memblock only knows real memory, not the whole 64 TiB window).
        fn x86(topo: Topology) -> Self {
            let mut fx = Self::new(AddressSpace::generic64(), topo);
            let lm = fx.space.linear_map().start;
            fx.linear = RangeAllocator::new(lm..lm + (16 << 30));
            fx
        }
        fn ai(&self, static_size: usize, atom: usize, dist: bool) -> AllocInfo {
            build_alloc_info(&AllocInfoParams {
                static_size,
                reserved_size: PERCPU_MODULE_RESERVE,
                dyn_size: percpu_dynamic_reserve(self.space.ptr_bits()),
                atom_size: atom,
                page_size: self.space.page_size() as usize,
                topology: &self.topo,
                use_distance: dist,
                // these tests were written against 6.2+'s 20 KiB
                dyn_early_size: EARLY_6_2,
            })
            .unwrap()
        }
        fn run_with(&mut self, ai: AllocInfo, kind: FirstChunkKind, lim: Limits) -> Result<FirstChunk, SetupError> {
            let before = (self.linear.free_bytes(), self.vmalloc.free_bytes());
            let r = FirstChunk::setup_with(
                FirstChunkParams {
                    space: &self.space,
                    ai,
                    kind,
                    per_cpu_start: self.per_cpu_start,
                    topology: &self.topo,
                    linear: &mut self.linear,
                    vmalloc: &mut self.vmalloc,
                    backend: self.backend,
                    need_page_first_chunk: self.need_page,
                    dyn_early_size: lim.dyn_early,
                    memory: None,
                },
                lim,
            );
            if r.is_err() {
                assert_eq!(before, (self.linear.free_bytes(), self.vmalloc.free_bytes()), "allocators restored");
            }
            r
        }
        fn run(&mut self, ai: AllocInfo, kind: FirstChunkKind) -> Result<FirstChunk, SetupError> {
            let lim = Limits::for_page(self.space.page_size(), EARLY_6_2);
            self.run_with(ai, kind, lim)
        }
    }

    fn uma(n: u32) -> Topology {
        Topology::uma(CpuSet::first_n(n))
    }

    fn assert_offsets_agree(fc: &FirstChunk, space: &AddressSpace) {
        for (cpu, off) in fc.per_cpu_offset.iter().enumerate() {
            match (off, fc.unit_off[cpu], fc.unit_map[cpu]) {
                (Some(off), Some(uo), Some(unit)) => {
                    assert_eq!(*off, space.wrapping_add(space.wrapping_sub(fc.base_addr, fc.per_cpu_start), uo));
                    assert_eq!(fc.unit_cpu[unit], Some(cpu as u32));
                }
                (None, None, None) => {}
                other => panic!("cpu {cpu}: inconsistent {other:?}"),
            }
        }
    }

    #[test]
    fn x86_64_embed_four_cpus() {
        let mut fx = Fx::x86(uma(4));
        let total = fx.linear.free_bytes();
        let ai = fx.ai(X86_STATIC, 2 << 20, true);
        let fc = fx.run(ai, FirstChunkKind::Embed).unwrap();
        let lm = fx.space.linear_map().start;
        assert_eq!(fc.base_addr, lm);
        assert_eq!(fc.unit_size, 524288);
        assert_eq!(fc.unit_pages, 128);
        assert_eq!(fc.messages, vec!["Embedded 52 pages/cpu s173272 r8192 d31528 u524288".to_string()]);
        for cpu in 0..4u64 {
            assert_eq!(fc.per_cpu_offset[cpu as usize], Some(lm + cpu * 524288));
        }
        assert_eq!(fc.backed.len(), 4);
        assert_eq!(fc.backed[1], lm + 524288..lm + 524288 + 212992);
        // Only the used heads stay allocated.
        assert_eq!(fx.linear.free_bytes(), total - 4 * 212992);
        assert_eq!((fc.low_unit_cpu, fc.high_unit_cpu), (0, 3));
        // static 173272 is 4-aligned; reserved starts there.
        let r = fc.reserved_region.as_ref().unwrap();
        assert_eq!(r.base_addr, lm + 0x2a000);
        assert_eq!(r.start_offset, 173272 - 0x2a000);
        assert_eq!(r.map_size, 8192);
        assert_eq!(fc.dyn_region.base_addr + fc.dyn_region.start_offset as u64, lm + 173272 + 8192);
        assert_eq!((fc.dyn_region.start_offset + fc.dyn_region.map_size + fc.dyn_region.end_offset) % 4096, 0);
        assert_offsets_agree(&fc, &fx.space);
        // The static area round-trips through the pcpu pointer mapping.
        let ptr = fc.addr_to_pcpu_ptr(&fx.space, lm + 0x100);
        assert_eq!(ptr, 0x100);
        assert_eq!(fc.pcpu_ptr_to_addr(&fx.space, ptr), lm + 0x100);
        assert_eq!(fc.per_cpu_ptr(&fx.space, 0x100, 2), Some(lm + 2 * 524288 + 0x100));
        assert_eq!(fc.per_cpu_ptr(&fx.space, 0x100, 4), None);
    }

    #[test]
    fn static_size_is_aligned_and_dyn_shrinks() {
        let mut fx = Fx::x86(uma(2));
        let ai = fx.ai(0x1001, 4096, false);
        let fc = fx.run(ai.clone(), FirstChunkKind::Embed).unwrap();
        assert_eq!(fc.static_size, 0x1004);
        assert_eq!(fc.dyn_size, ai.dyn_size - 3);
        assert_eq!(fc.ai.static_size, 0x1001);
    }

    #[test]
    fn numa_sparse_embed_offsets_agree() {
        let possible = CpuSet::parse_list("0-3,8-11,64").unwrap();
        let topo = Topology::blocked(possible, 3);
        let mut fx = Fx::x86(topo);
        let ai = fx.ai(X86_STATIC, 2 << 20, true);
        assert_eq!(ai.groups.len(), 3);
        let fc = fx.run(ai, FirstChunkKind::Embed).unwrap();
        assert_eq!(fc.unit_map.len(), 65);
        assert_eq!(fc.per_cpu_offset[5], None);
        assert_eq!(fc.group_nodes, vec![0, 1, 2]);
        // Each group sits in its node's span of the linear map.
        let spans = node_spans(&fx.linear.window(), 3, 4096);
        for (g, off) in fc.group_offsets.iter().enumerate() {
            assert!(spans[g].contains(&(fc.base_addr + off)));
        }
        assert_eq!(fc.high_unit_cpu, 64);
        assert_offsets_agree(&fc, &fx.space);
        assert!(fc.warnings.is_empty());
    }

    #[test]
    fn max_distance_warns_or_fails() {
        // 1 GiB vmalloc, 4 GiB linear map over 2 nodes: groups 2 GiB apart.
        let space = AddressSpace::new(64, 4096, 0x1_0000_0000..0x2_0000_0000, 0x4_0000_0000..0x4_4000_0000).unwrap();
        let topo = Topology::blocked(CpuSet::first_n(4), 2);
        let mut fx = Fx::new(space, topo);
        let ai = fx.ai(X86_STATIC, 2 << 20, true);
        let err = fx.run(ai.clone(), FirstChunkKind::Embed).unwrap_err();
        assert_eq!(err, E::MaxDistanceTooLarge { max_distance: 0x8020_0000, vmalloc_total: 0x4000_0000 });
        fx.need_page = false;
        let fc = fx.run(ai, FirstChunkKind::Embed).unwrap();
        assert_eq!(fc.warnings, vec!["max_distance=0x80200000 too large for vmalloc space 0x40000000".to_string()]);
    }

    #[test]
    fn page_first_chunk() {
        let mut fx = Fx::x86(Topology::blocked(CpuSet::first_n(4), 2));
        let lin0 = fx.linear.free_bytes();
        let ai = fx.ai(X86_STATIC, 4096, false);
        let fc = fx.run(ai, FirstChunkKind::Page).unwrap();
        let vm = fx.space.vmalloc().start;
        assert_eq!(fc.base_addr, vm);
        assert_eq!(fc.unit_size, 212992);
        assert_eq!(fc.backed, vec![vm..vm + 4 * 212992]);
        assert_eq!(fc.messages, vec!["52 4K pages/cpu s173272 r8192 d31528".to_string()]);
        for cpu in 0..4 {
            assert_eq!(fc.unit_off[cpu], Some(cpu as u64 * 212992));
        }
        assert_eq!(lin0 - fx.linear.free_bytes(), 4 * 212992);
        assert_offsets_agree(&fc, &fx.space);
    }

    #[test]
    fn per_cpu_ptr_wraps_on_32_bit() {
        // i386-like: .data..percpu linked at 0xc1000000, units below it.
        let space = AddressSpace::new(32, 4096, 0xc000_0000..0xf000_0000, 0xf000_0000..0xff00_0000).unwrap();
        let mut fx = Fx::new(space, uma(2));
        fx.linear = RangeAllocator::new(0xc040_0000..0xc080_0000);
        fx.per_cpu_start = 0xc100_0000;
        let ai = fx.ai(0x8000, 4096, false);
        let fc = fx.run(ai, FirstChunkKind::Embed).unwrap();
        assert_eq!(fc.base_addr, 0xc040_0000);
        let off0 = fc.per_cpu_offset[0].unwrap();
        assert_eq!(off0, 0xff40_0000, "base - __per_cpu_start wraps at 2^32");
        let var = 0xc100_0010;
        assert_eq!(fc.per_cpu_ptr(&fx.space, var, 0), Some(0xc040_0010));
        assert_eq!(fc.per_cpu_ptr(&fx.space, var, 1), Some(0xc040_0010 + fc.unit_size as u64));
        assert_eq!(fc.addr_to_pcpu_ptr(&fx.space, 0xc040_0010), var);
        assert_eq!(fc.pcpu_ptr_to_addr(&fx.space, var), 0xc040_0010);
        assert_offsets_agree(&fc, &fx.space);
    }

    #[test]
    fn km_backend() {
        let mut fx = Fx::x86(uma(3));
        fx.backend = Backend::Km;
        let ai = fx.ai(0x8000, 4096, false);
        // 3 units of 52 KiB... check the waste the kernel warns about.
        let pages = 3 * ai.unit_size / 4096;
        let waste = pages.next_power_of_two() - pages;
        assert_eq!(verify_for_km(&ai, 4096), Ok(Some(waste)));
        let fc = fx.run(ai.clone(), FirstChunkKind::Embed).unwrap();
        assert_eq!(fc.warnings, vec![format!("wasting {waste} pages per chunk")]);
        assert_eq!(fx.run(ai, FirstChunkKind::Page), Err(E::PageWithKm));
        let mut fx = Fx::x86(Topology::blocked(CpuSet::first_n(4), 2));
        fx.backend = Backend::Km;
        let ai = fx.ai(0x8000, 4096, true);
        assert_eq!(fx.run(ai.clone(), FirstChunkKind::Embed), Err(E::KmMultipleGroups { nr_groups: 2 }));
        assert_eq!(verify_for_km(&ai, 4096), Err(E::KmMultipleGroups { nr_groups: 2 }));
        let one = AllocInfo { groups: vec![ai.groups[0].clone()], unit_size: 0x8000, ..ai };
        assert_eq!(
            verify_for_km(
                &AllocInfo {
                    groups: vec![crate::alloc_info::GroupInfo { nr_units: 4, ..one.groups[0].clone() }],
                    ..one
                },
                4096
            ),
            Ok(None)
        );
    }

    /// One test per `PCPU_SETUP_BUG_ON`, in the kernel's order.
    #[test]
    fn setup_bug_on_checks() {
        let mut fx = Fx::x86(uma(4));
        let good = fx.ai(0x8000, 4096, false);
        let emb = FirstChunkKind::Embed;
        let run = |fx: &mut Fx, f: &dyn Fn(&mut AllocInfo)| {
            let mut ai = good.clone();
            f(&mut ai);
            fx.run(ai, emb).unwrap_err()
        };
        assert_eq!(run(&mut fx, &|ai| ai.groups.clear()), E::NoGroups { nr_groups: 0 });
        assert_eq!(run(&mut fx, &|ai| ai.static_size = 0), E::NoStaticArea);
        fx.per_cpu_start = 0x123;
        assert_eq!(run(&mut fx, &|_| {}), E::PerCpuStartUnaligned { per_cpu_start: 0x123, page_size: 4096 });
        fx.per_cpu_start = 0;
        // Base unaligned: a 1 KiB atom and a hole in front.
        let lm = fx.space.linear_map().start;
        fx.linear.reserve(lm..lm + 0x400);
        assert_eq!(run(&mut fx, &|ai| ai.atom_size = 0x400), E::BaseUnaligned { base: lm + 0x400, page_size: 4096 });
        fx.linear.release(lm..lm + 0x400);
        let e = run(&mut fx, &|ai| ai.dyn_size += ai.unit_size);
        assert!(matches!(e, E::UnitSmallerThanSum { .. }), "{e}");
        assert!(e.to_string().contains(&format!("{:#x}", good.unit_size)), "{e}");
        assert_eq!(
            run(&mut fx, &|ai| {
                ai.unit_size += 0x100;
                ai.alloc_size = ai.unit_size
            }),
            E::UnitSizeUnaligned { unit_size: good.unit_size + 0x100, page_size: 4096 }
        );
        let small = |ai: &mut AllocInfo| {
            ai.static_size = 0x1000;
            ai.reserved_size = 0;
            ai.dyn_size = 0x5000;
            ai.unit_size = 0x6000;
            ai.alloc_size = 0x6000;
        };
        assert_eq!(run(&mut fx, &small), E::UnitBelowMin { unit_size: 0x6000, min_unit_size: 0x8000 });
        assert_eq!(
            run(&mut fx, &|ai| ai.dyn_size = 0x1000),
            E::DynBelowEarly { dyn_size: 0x1000, early_size: 20 << 10 }
        );
        assert_eq!(
            run(&mut fx, &|ai| ai.reserved_size = 8190),
            E::ReservedUnaligned { reserved_size: 8190, min_alloc_size: 4 }
        );

        // The checks the real constants make unreachable, with other limits.
        let lim = Limits::for_page(4096, EARLY_6_2);
        let unit = |u: usize| AllocInfo { unit_size: u, alloc_size: u, ..good.clone() };
        let r = fx.run_with(unit(0x13000), emb, Limits { block_size: 0x2000, ..lim });
        assert_eq!(r.unwrap_err(), E::UnitNotBlockMultiple { unit_size: 0x13000, block_size: 0x2000 });
        let r = fx.run_with(unit(0x12000), emb, Limits { block_size: 0x1800, ..lim });
        assert_eq!(r.unwrap_err(), E::BlockPageMismatch { block_size: 0x1800, page_size: 0x1000 });
        let nodyn = AllocInfo { dyn_size: 0, ..good.clone() };
        assert_eq!(fx.run_with(nodyn, emb, Limits { dyn_early: 0, ..lim }).unwrap_err(), E::DynZero);
        fx.run_with(unit(0x13000), emb, lim).unwrap();

        // The cpu map checks.
        assert_eq!(
            run(&mut fx, &|ai| ai.groups[0].cpu_map.truncate(2)),
            E::CpuMapShort { group: 0, nr_units: 4, len: 2 }
        );
        assert_eq!(
            run(&mut fx, &|ai| ai.groups[0].cpu_map[1] = Some(99)),
            E::CpuBeyondNrCpuIds { cpu: 99, group: 0, unit: 1, nr_cpu_ids: 4 }
        );
        assert_eq!(
            run(&mut fx, &|ai| ai.groups[0].cpu_map[2] = Some(0)),
            E::CpuMappedTwice { cpu: 0, first_unit: 0, second_unit: 2 }
        );
        assert_eq!(run(&mut fx, &|ai| ai.groups[0].cpu_map[3] = None), E::CpuNotMapped { cpu: 3 });
        let mut sparse = Fx::x86(Topology::uma(CpuSet::parse_list("0-3,8-11").unwrap()));
        let mut ai = sparse.ai(0x8000, 4096, false);
        ai.groups[0].cpu_map[5] = Some(5);
        assert_eq!(sparse.run(ai, emb), Err(E::CpuNotPossible { cpu: 5, group: 0, unit: 5 }));
    }

    #[test]
    fn null_base() {
        let space = AddressSpace::new(64, 4096, 0..0x4000_0000, 0x8000_0000..0xc000_0000).unwrap();
        let mut fx = Fx::new(space, uma(2));
        let ai = fx.ai(0x8000, 4096, false);
        assert_eq!(fx.run(ai, FirstChunkKind::Embed), Err(E::NullBase));
    }

    #[test]
    fn embed_and_page_failures() {
        let emb = FirstChunkKind::Embed;
        let mut fx = Fx::x86(uma(4));
        let good = fx.ai(X86_STATIC, 2 << 20, false);
        assert_eq!(fx.run(AllocInfo { atom_size: 3000, ..good.clone() }, emb), Err(E::AtomSize { atom_size: 3000 }));
        let mut ai = good.clone();
        ai.groups[0].cpu_map.iter_mut().for_each(|c| *c = None);
        assert_eq!(fx.run(ai, emb), Err(E::GroupWithoutCpu { group: 0, nr_units: 4 }));
        let mut ai = good.clone();
        ai.groups[0].nr_units = usize::MAX / 2;
        assert!(matches!(fx.run(ai, emb), Err(E::GroupTooLarge { group: 0, .. })));

        // 1 MiB of linear map cannot hold a 2 MiB group.
        fx.linear = RangeAllocator::new(0xffff_8880_0000_0000..0xffff_8880_0010_0000);
        let e = fx.run(good.clone(), emb).unwrap_err();
        assert!(matches!(e, E::NodeSpanExhausted { group: 0, cpu: 0, node: 0, size: 0x200000, .. }), "{e}");

        // Page first chunk.
        let mut fx = Fx::x86(Topology::blocked(CpuSet::first_n(4), 2));
        let two = fx.ai(X86_STATIC, 4096, true);
        assert_eq!(fx.run(two, FirstChunkKind::Page), Err(E::PageNeedsOneGroup { nr_groups: 2 }));
        let mut ai = fx.ai(X86_STATIC, 4096, false);
        ai.groups[0].nr_units = 5;
        ai.groups[0].cpu_map.push(None);
        assert_eq!(
            fx.run(ai, FirstChunkKind::Page),
            Err(E::PageUnitCount { nr_units: 5, expected: 4, nr_possible: 4, upa: 1 })
        );
        let ai = fx.ai(X86_STATIC, 4096, false);
        let lin = fx.linear.window();
        fx.linear = RangeAllocator::new(lin.start..lin.start + 0x40000);
        let e = fx.run(ai.clone(), FirstChunkKind::Page).unwrap_err();
        assert!(matches!(e, E::PageAlloc { cpu: 0, page_kib: 4, node: 0, .. }), "{e}");
        assert!(e.to_string().starts_with("failed to allocate 4K page for cpu0"), "{e}");
        fx.linear = RangeAllocator::new(lin);
        let vm = fx.vmalloc.window();
        fx.vmalloc = RangeAllocator::new(vm.start..vm.start + 0x10000);
        assert!(matches!(fx.run(ai, FirstChunkKind::Page), Err(E::VmallocExhausted { size: 0xd0000, .. })));
    }

    #[test]
    fn many_cpus_are_fast() {
        let start = std::time::Instant::now();
        let mut fx = Fx::x86(Topology::blocked(CpuSet::first_n(4096), 64));
        let ai = fx.ai(X86_STATIC, 2 << 20, true);
        assert_eq!(ai.groups.len(), 64);
        let build = start.elapsed();
        let fc = fx.run(ai, FirstChunkKind::Embed).unwrap();
        assert_eq!(fc.nr_possible(), 4096);
        assert_offsets_agree(&fc, &fx.space);
        assert!(build.as_millis() < 100, "build_alloc_info took {build:?}");
        assert!(start.elapsed().as_millis() < 1000, "setup took {:?}", start.elapsed());
    }
}
