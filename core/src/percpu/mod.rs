//! The allocator proper: mm/percpu.c's chunk management around the
//! per-chunk bitmap allocator.
//!
//! ## What lives here
//!
//! * Setup (`pcpu_setup_first_chunk`): the first chunk is split into the
//!   static area (not managed), the reserved chunk (module percpu, served
//!   only to reserved requests, never on a slot list) and the first chunk
//!   proper, which serves dynamic allocations like any other chunk.
//! * Slots (`pcpu_chunk_lists[]`): chunks are listed by the slot of their
//!   contig hint; after the size slots come `sidelined`, `free` and
//!   `to_depopulate`.  Allocation walks slots upward from the request's
//!   slot; a chunk that cannot serve a request while in a slot below
//!   `PCPU_SLOT_FAIL_THRESHOLD` is sidelined to slot 0.
//! * Requests (`pcpu_alloc`): atomic ones only use populated pages and
//!   never create chunks; normal ones create a chunk through the backend
//!   when nothing fits and then populate the pages the area needs.
//! * Free (`free_percpu`): the size comes from the bound map; a chunk that
//!   becomes free while another free chunk exists, or that has enough empty
//!   populated pages, schedules the balance work.
//! * Balance work (`pcpu_balance_workfn`) is an explicit [`Percpu::balance`]
//!   step so that tests and emulated runs are deterministic; the kernel's
//!   "schedule" is recorded in [`Percpu::balance_pending`].
//!
//! The global count of empty populated pages (`pcpu_nr_empty_pop_pages`)
//! counts the first chunk and dynamic chunks that are not isolated; every
//! change of a chunk's bitmap state goes through [`Percpu::with_map`] which
//! applies the chunk's delta to it, the way `pcpu_update_empty_pages` does.

mod classify;
mod map_view;
mod slots;
mod stats;

use std::collections::BTreeMap;

use serde::Serialize;

pub use classify::{Location, Region};
pub use map_view::{ChunkMapView, ChunkView, GroupView, PageView, SlotList, UnitView};
pub use slots::SlotLists;
pub use stats::{ChunkStats, GlobalStats, Stats};

use crate::addr::{AddressSpace, RangeAllocator};
use crate::alloc::{AllocError, AllocRequest, Footprint, FreeError, PcpuPtr, PercpuAllocator};
use crate::alloc_info::{build_alloc_info, AllocInfoError, AllocInfoParams};
use crate::backend::{km::KmBackend, vm::VmBackend, BackendError, BackendKind, ChunkBackend, ChunkGeometry};
use crate::bitmap::ChunkMap;
use crate::consts::*;
use crate::cpus::Topology;
use crate::first_chunk::{verify_for_km, FirstChunk, FirstChunkKind, FirstChunkParams, MemoryLayout, SetupError};
use crate::profile::KernelProfile;

/// Everything that decides a percpu setup.
#[derive(Clone, Debug)]
pub struct PercpuConfig {
    pub space: AddressSpace,
    pub topology: Topology,
    /// Size of the kernel image's `.data..percpu` (`__per_cpu_end - __per_cpu_start`).
    pub static_size: usize,
    /// Reserved chunk size (`PERCPU_MODULE_RESERVE` with modules, else 0).
    pub reserved_size: usize,
    /// Requested first-chunk dynamic size (`PERCPU_DYNAMIC_RESERVE`).
    pub dyn_size: usize,
    /// Allocation atom: PAGE_SIZE generically, 2 MiB (PMD) on x86_64.
    pub atom_size: usize,
    pub first_chunk: FirstChunkKind,
    pub backend: BackendKind,
    /// Link address of `__per_cpu_start` (0 for x86_64 zero-based).
    pub per_cpu_start: u64,
    /// Group CPUs by NUMA distance (the arch passes `cpu_distance_fn`).
    pub use_distance: bool,
    /// The arch has a page first chunk to fall back to
    /// (`CONFIG_NEED_PER_CPU_PAGE_FIRST_CHUNK`): embed then refuses groups
    /// spread over more than 3/4 of vmalloc instead of only warning.
    pub need_page_first_chunk: bool,
    /// The kernel version modelled: `PERCPU_DYNAMIC_EARLY_SIZE` and the
    /// free-path hint behaviour come from it.  The sizes above are the
    /// caller's (an arch adapter derives them from the same profile).
    pub kernel: KernelProfile,
    /// memblock's node memory and reservations; `None`: the linear map
    /// split into equal node spans (see [`FirstChunkParams::memory`]).
    pub memory: Option<MemoryLayout>,
}

impl PercpuConfig {
    /// The generic `setup_per_cpu_areas` of the default kernel
    /// ([`crate::profile::DEFAULT_KERNEL`]): embed first chunk, page
    /// atoms, module reserve and the default dynamic reserve, vm backend.
    pub fn generic(space: AddressSpace, topology: Topology, static_size: usize) -> Self {
        Self::generic_for(&KernelProfile::default(), space, topology, static_size)
    }

    /// The generic `setup_per_cpu_areas` of `kernel`.
    pub fn generic_for(kernel: &KernelProfile, space: AddressSpace, topology: Topology, static_size: usize) -> Self {
        let atom = space.page_size() as usize;
        let dyn_size = kernel.dynamic_reserve(space.ptr_bits());
        PercpuConfig {
            space,
            topology,
            static_size,
            reserved_size: kernel.module_reserve,
            dyn_size,
            atom_size: atom,
            first_chunk: FirstChunkKind::Embed,
            backend: BackendKind::Vm,
            per_cpu_start: 0,
            use_distance: true,
            need_page_first_chunk: false,
            kernel: kernel.clone(),
            memory: None,
        }
    }
}

/// Why a percpu setup was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PercpuSetupError {
    #[error(transparent)]
    AllocInfo(#[from] AllocInfoError),
    #[error(transparent)]
    FirstChunk(#[from] SetupError),
}

/// Which part of the first chunk (or which kind of chunk) a chunk is.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChunkRole {
    /// The dynamic region of the first chunk (`pcpu_first_chunk`).
    First,
    /// The reserved region of the first chunk (`pcpu_reserved_chunk`).
    Reserved,
    /// A chunk created by the backend.
    Dynamic,
}

/// Stable chunk number used in diagnostics: 0 is the first chunk, 1 the
/// reserved chunk when there is one, then backend chunks in creation order.
pub type ChunkId = usize;

/// One chunk: its bitmap state plus what mm/percpu.c keeps beside it.
#[derive(Clone, Debug)]
pub struct Chunk {
    pub id: ChunkId,
    pub role: ChunkRole,
    /// `chunk->base_addr`: adding a unit's offset gives that unit's copy.
    pub base_addr: u64,
    pub map: ChunkMap,
    /// First-chunk parts are immutable: never (de)populated.
    pub immutable: bool,
    /// On the to_depopulate or sidelined list, out of the global count.
    pub isolated: bool,
    /// percpu_stats per-chunk counters.
    pub nr_alloc: usize,
    pub max_alloc_size: usize,
}

/// Something an observer (an emulator) must mirror.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ChunkEvent {
    Created {
        chunk: ChunkId,
        base_addr: u64,
    },
    Populated {
        chunk: ChunkId,
        base_addr: u64,
        page_start: usize,
        page_end: usize,
    },
    Depopulated {
        chunk: ChunkId,
        base_addr: u64,
        page_start: usize,
        page_end: usize,
    },
    Destroyed {
        chunk: ChunkId,
        base_addr: u64,
    },
    /// An allocation's area (in every unit) must read as zero.
    Cleared {
        chunk: ChunkId,
        base_addr: u64,
        offset: usize,
        size: usize,
    },
}

/// What one balance step did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BalanceReport {
    pub chunks_destroyed: usize,
    pub chunks_created: usize,
    pub pages_populated: usize,
    pub pages_depopulated: usize,
}

/// The modern percpu allocator (bitmap chunks, slots, balance work).
pub struct Percpu {
    space: AddressSpace,
    first: FirstChunk,
    geom: ChunkGeometry,
    backend: Box<dyn ChunkBackend>,
    chunks: Vec<Option<Chunk>>,
    first_chunk: ChunkId,
    reserved_chunk: Option<ChunkId>,
    slots: SlotLists,
    sidelined_slot: usize,
    free_slot: usize,
    to_depopulate_slot: usize,
    /// Backend chunks by `base_addr + ref_unit_off` (the page lookup).
    by_addr: BTreeMap<u64, ChunkId>,
    ref_unit_off: u64,
    nr_empty_pop_pages: usize,
    nr_populated: usize,
    atomic_alloc_failed: bool,
    balance_pending: bool,
    allocated_bytes: u64,
    stats: GlobalStats,
    events: Option<Vec<ChunkEvent>>,
    /// Applied to every chunk's map ([`ChunkMap::set_free_path_chunk_hint_fix`]).
    free_path_chunk_hint_fix: bool,
}

impl std::fmt::Debug for Percpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Percpu")
            .field("base_addr", &format_args!("{:#x}", self.first.base_addr))
            .field("nr_chunks", &self.nr_chunks())
            .field("backend", &self.backend.kind())
            .finish_non_exhaustive()
    }
}

/// `fls()`: one-based index of the highest set bit, 0 for 0.
fn fls(x: usize) -> usize {
    (usize::BITS - x.leading_zeros()) as usize
}

/// `__pcpu_size_to_slot`.
fn size_to_slot_raw(size: usize) -> usize {
    (fls(size) as isize - PCPU_SLOT_BASE_SHIFT as isize + 2).max(1) as usize
}

impl Percpu {
    /// Set up with the backend the configuration names.
    pub fn new(cfg: PercpuConfig) -> Result<Self, PercpuSetupError> {
        Self::with_backend(cfg, |kind, vmalloc, linear, wasted| -> Box<dyn ChunkBackend> {
            match kind {
                BackendKind::Vm => Box::new(VmBackend::new(vmalloc)),
                BackendKind::Km => Box::new(KmBackend::new(linear, wasted)),
            }
        })
    }

    /// Set up, letting the caller build (or wrap) the backend.  The factory
    /// gets the backend kind, the vmalloc and linear-map allocators as the
    /// first chunk left them, and the km waste figure.
    pub fn with_backend(
        cfg: PercpuConfig,
        make_backend: impl FnOnce(BackendKind, RangeAllocator, RangeAllocator, usize) -> Box<dyn ChunkBackend>,
    ) -> Result<Self, PercpuSetupError> {
        let page = cfg.space.page_size() as usize;
        // pcpu_page_first_chunk builds its alloc info itself: no dynamic
        // space asked for (it gets PERCPU_DYNAMIC_EARLY_SIZE), page atoms,
        // no cpu_distance_fn (one group).
        let page_fc = cfg.first_chunk == FirstChunkKind::Page;
        let ai = build_alloc_info(&AllocInfoParams {
            static_size: cfg.static_size,
            reserved_size: cfg.reserved_size,
            dyn_size: if page_fc { 0 } else { cfg.dyn_size },
            atom_size: if page_fc { page } else { cfg.atom_size },
            page_size: page,
            topology: &cfg.topology,
            use_distance: cfg.use_distance && cfg.backend == BackendKind::Vm && !page_fc,
            dyn_early_size: cfg.kernel.dynamic_early_size,
        })?;
        let wasted = match cfg.backend {
            BackendKind::Km => verify_for_km(&ai, page)?.unwrap_or(0),
            BackendKind::Vm => 0,
        };
        let mut linear = RangeAllocator::new(cfg.space.linear_map());
        if let Some(mem) = &cfg.memory {
            mem.restrict(&mut linear);
        }
        let mut vmalloc = RangeAllocator::new(cfg.space.vmalloc());
        let first = FirstChunk::setup(FirstChunkParams {
            space: &cfg.space,
            ai,
            kind: cfg.first_chunk,
            per_cpu_start: cfg.per_cpu_start,
            topology: &cfg.topology,
            linear: &mut linear,
            vmalloc: &mut vmalloc,
            backend: cfg.backend,
            need_page_first_chunk: cfg.need_page_first_chunk,
            dyn_early_size: cfg.kernel.dynamic_early_size,
            memory: cfg.memory.as_ref(),
        })?;
        let backend = make_backend(cfg.backend, vmalloc, linear, wasted);
        let mut this = Self::from_first_chunk(cfg.space, first, backend);
        this.free_path_chunk_hint_fix = cfg.kernel.free_path_chunk_hint_fix;
        for chunk in this.chunks.iter_mut().flatten() {
            chunk.map.set_free_path_chunk_hint_fix(this.free_path_chunk_hint_fix);
        }
        Ok(this)
    }

    fn from_first_chunk(space: AddressSpace, first: FirstChunk, backend: Box<dyn ChunkBackend>) -> Self {
        let page = space.page_size() as usize;
        let mut unit_offsets = Vec::with_capacity(first.nr_units);
        for g in &first.ai.groups {
            for i in 0..g.nr_units {
                unit_offsets.push(g.base_offset + (i * first.unit_size) as u64);
            }
        }
        let geom = ChunkGeometry {
            page_size: page as u64,
            unit_size: first.unit_size as u64,
            unit_pages: first.unit_pages,
            nr_units: first.nr_units,
            atom_size: first.ai.atom_size as u64,
            group_offsets: first.group_offsets.clone(),
            group_sizes: first.group_sizes.clone(),
            unit_offsets,
        };
        let sidelined_slot = size_to_slot_raw(first.unit_size) + 1;
        let free_slot = sidelined_slot + 1;
        let to_depopulate_slot = free_slot + 1;
        let ref_cpu = first.low_unit_cpu;
        let ref_unit_off = first.unit_off[ref_cpu as usize].expect("low unit cpu is possible");

        // The reserved and dynamic regions each get a chunk whose bitmap
        // covers whole pages, hiding the bytes before and after the region
        // (pcpu_alloc_first_chunk); chunk 0 is always the first chunk.
        let mut chunks = Vec::new();
        let mut first_part = |role: ChunkRole, r: &crate::first_chunk::RegionLayout| {
            let id = chunks.len();
            chunks.push(Some(Chunk {
                id,
                role,
                base_addr: r.base_addr,
                map: ChunkMap::new_first_chunk(page, r.start_offset, r.map_size),
                immutable: true,
                isolated: false,
                nr_alloc: 0,
                max_alloc_size: 0,
            }));
            id
        };
        let first_chunk = first_part(ChunkRole::First, &first.dyn_region);
        let reserved_chunk = first.reserved_region.as_ref().map(|r| first_part(ChunkRole::Reserved, r));

        let mut this = Percpu {
            space,
            geom,
            backend,
            chunks,
            first_chunk,
            reserved_chunk,
            slots: SlotLists::new(to_depopulate_slot + 1),
            sidelined_slot,
            free_slot,
            to_depopulate_slot,
            by_addr: BTreeMap::new(),
            ref_unit_off,
            nr_empty_pop_pages: 0,
            nr_populated: (first.static_size + first.reserved_size + first.dyn_size).div_ceil(page),
            atomic_alloc_failed: false,
            balance_pending: false,
            allocated_bytes: 0,
            stats: GlobalStats::new(first.unit_size),
            events: None,
            free_path_chunk_hint_fix: false,
            first,
        };
        this.stats.chunk_created();
        this.nr_empty_pop_pages = this.chunk(first_chunk).map.nr_empty_pop_pages();
        this.relocate(first_chunk, None);
        this
    }

    // ----- accessors -------------------------------------------------

    pub fn space(&self) -> &AddressSpace {
        &self.space
    }
    /// Whether chunks use the fixed free-path chunk hint update (from the
    /// kernel profile; `false` models every released kernel).
    pub fn free_path_chunk_hint_fix(&self) -> bool {
        self.free_path_chunk_hint_fix
    }
    pub fn first_chunk_layout(&self) -> &FirstChunk {
        &self.first
    }
    pub fn geometry(&self) -> &ChunkGeometry {
        &self.geom
    }
    pub fn backend_kind(&self) -> BackendKind {
        self.backend.kind()
    }
    pub fn backend_warnings(&self) -> Vec<String> {
        self.backend.warnings()
    }
    pub fn unit_size(&self) -> usize {
        self.first.unit_size
    }
    /// `pcpu_nr_empty_pop_pages`.
    pub fn nr_empty_pop_pages(&self) -> usize {
        self.nr_empty_pop_pages
    }
    /// `pcpu_nr_populated` (pages per unit, all chunks).
    pub fn nr_populated(&self) -> usize {
        self.nr_populated
    }
    /// Whether the kernel would have scheduled the balance work by now.
    pub fn balance_pending(&self) -> bool {
        self.balance_pending
    }
    pub fn chunk(&self, id: ChunkId) -> &Chunk {
        self.chunks[id].as_ref().expect("live chunk id")
    }
    pub fn chunk_opt(&self, id: ChunkId) -> Option<&Chunk> {
        self.chunks.get(id).and_then(Option::as_ref)
    }
    pub fn first_chunk_id(&self) -> ChunkId {
        self.first_chunk
    }
    pub fn reserved_chunk_id(&self) -> Option<ChunkId> {
        self.reserved_chunk
    }
    /// Live chunks in id order.
    pub fn chunks(&self) -> impl Iterator<Item = &Chunk> {
        self.chunks.iter().flatten()
    }
    pub fn nr_chunks(&self) -> usize {
        self.chunks().count()
    }
    /// The slot a chunk is listed in (None for the reserved chunk).
    pub fn slot_of(&self, id: ChunkId) -> Option<usize> {
        self.slots.slot_of(id)
    }
    pub fn free_slot(&self) -> usize {
        self.free_slot
    }
    /// `pcpu_nr_slots`: the size slots, then sidelined, free, to_depopulate.
    pub fn nr_slots(&self) -> usize {
        self.slots.nr_slots()
    }
    /// The chunks on one slot list, head first (the order `pcpu_alloc`
    /// tries them in).
    pub fn slot_list(&self, slot: usize) -> impl Iterator<Item = ChunkId> + '_ {
        self.slots.iter(slot)
    }
    pub fn sidelined_slot(&self) -> usize {
        self.sidelined_slot
    }
    pub fn to_depopulate_slot(&self) -> usize {
        self.to_depopulate_slot
    }
    pub fn global_stats(&self) -> &GlobalStats {
        &self.stats
    }

    /// Start recording [`ChunkEvent`]s (for an emulator to mirror).
    pub fn record_events(&mut self) {
        self.events.get_or_insert_with(Vec::new);
    }
    /// Take the events recorded since the last call.
    pub fn take_events(&mut self) -> Vec<ChunkEvent> {
        self.events.as_mut().map(std::mem::take).unwrap_or_default()
    }
    fn emit(&mut self, ev: impl FnOnce() -> ChunkEvent) {
        if let Some(events) = &mut self.events {
            events.push(ev());
        }
    }

    // ----- address translation ------------------------------------------

    /// `__addr_to_pcpu_ptr`.
    pub fn addr_to_pcpu_ptr(&self, addr: u64) -> PcpuPtr {
        PcpuPtr(self.first.addr_to_pcpu_ptr(&self.space, addr))
    }
    /// `__pcpu_ptr_to_addr`.
    pub fn pcpu_ptr_to_addr(&self, ptr: PcpuPtr) -> u64 {
        self.first.pcpu_ptr_to_addr(&self.space, ptr.0)
    }
    /// `per_cpu_ptr(ptr, cpu)`: RELOC_HIDE(ptr, __per_cpu_offset[cpu]).
    pub fn per_cpu_ptr(&self, ptr: PcpuPtr, cpu: u32) -> Option<u64> {
        self.first.per_cpu_ptr(&self.space, ptr.0, cpu)
    }
    /// `__per_cpu_offset[]`, indexed by CPU (None for impossible CPUs).
    pub fn per_cpu_offsets(&self) -> &[Option<u64>] {
        &self.first.per_cpu_offset
    }

    /// `pcpu_chunk_addr_search`: the chunk serving a (unit-0-relative)
    /// address, as used by `free_percpu`.
    pub fn chunk_addr_search(&self, addr: u64) -> Option<ChunkId> {
        let in_first_part = |id: ChunkId| {
            let c = self.chunk(id);
            let start = c.base_addr.wrapping_add(c.map.start_offset() as u64);
            let end = c.base_addr.wrapping_add((c.map.nr_pages() * c.map.page_size() - c.map.end_offset()) as u64);
            addr >= start && addr < end
        };
        if in_first_part(self.first_chunk) {
            return Some(self.first_chunk);
        }
        if let Some(r) = self.reserved_chunk.filter(|&r| in_first_part(r)) {
            return Some(r);
        }
        // Offset into a possible CPU's unit and look the page up.
        let a = addr.wrapping_add(self.ref_unit_off);
        let (&key, &id) = self.by_addr.range(..=a).next_back()?;
        (a.wrapping_sub(key) < self.geom.unit_size).then_some(id)
    }

    // ----- slot bookkeeping ---------------------------------------------

    /// `pcpu_size_to_slot`.
    fn size_to_slot(&self, size: usize) -> usize {
        if size == self.first.unit_size {
            self.free_slot
        } else {
            size_to_slot_raw(size)
        }
    }

    /// `pcpu_chunk_slot`.
    fn chunk_slot(&self, c: &Chunk) -> usize {
        if c.map.free_bytes() < PCPU_MIN_ALLOC_SIZE || c.map.contig_hint_bytes() == 0 {
            0
        } else {
            self.size_to_slot(c.map.contig_hint_bytes())
        }
    }

    /// `pcpu_chunk_relocate`; `old_slot` None stands for the kernel's -1.
    #[inline]
    fn relocate(&mut self, id: ChunkId, old_slot: Option<usize>) {
        let c = self.chunk(id);
        if c.role == ChunkRole::Reserved || c.isolated {
            return;
        }
        let new_slot = self.chunk_slot(c);
        if old_slot != Some(new_slot) {
            if old_slot.is_none_or(|o| o < new_slot) {
                self.slots.move_front(id, new_slot);
            } else {
                self.slots.move_tail(id, new_slot);
            }
        }
    }

    /// `pcpu_isolate_chunk`.
    fn isolate(&mut self, id: ChunkId) {
        let c = self.chunks[id].as_mut().expect("live chunk");
        if !c.isolated {
            c.isolated = true;
            self.nr_empty_pop_pages -= c.map.nr_empty_pop_pages();
        }
        self.slots.move_front(id, self.to_depopulate_slot);
    }

    /// `pcpu_reintegrate_chunk`.
    #[inline]
    fn reintegrate(&mut self, id: ChunkId) {
        let c = self.chunks[id].as_mut().expect("live chunk");
        if c.isolated {
            c.isolated = false;
            self.nr_empty_pop_pages += c.map.nr_empty_pop_pages();
            self.relocate(id, None);
        }
    }

    /// Run `f` on a chunk's bitmap state and carry the change of its empty
    /// populated pages into the global count (`pcpu_update_empty_pages`).
    fn with_map<R>(&mut self, id: ChunkId, f: impl FnOnce(&mut ChunkMap) -> R) -> R {
        let c = self.chunks[id].as_mut().expect("live chunk");
        let counted = c.role != ChunkRole::Reserved && !c.isolated;
        let before = c.map.nr_empty_pop_pages();
        let r = f(&mut c.map);
        if counted {
            let after = c.map.nr_empty_pop_pages();
            self.nr_empty_pop_pages = self.nr_empty_pop_pages + after - before;
        }
        r
    }

    /// `pcpu_alloc_area` plus the relocation it ends with.
    fn alloc_area(&mut self, id: ChunkId, bits: usize, align: usize, start: usize) -> Option<usize> {
        let old_slot = self.chunk_slot(self.chunk(id));
        let off = self.with_map(id, |m| m.alloc_area(bits, align, start))?;
        self.relocate(id, Some(old_slot));
        Some(off)
    }

    // ----- chunk lifetime -------------------------------------------------

    /// `pcpu_create_chunk` + `pcpu_chunk_relocate(chunk, -1)`.
    fn create_chunk(&mut self) -> Result<ChunkId, BackendError> {
        let created = self.backend.create_chunk(&self.geom)?;
        let id = self.chunks.len();
        let mut map = ChunkMap::new(self.geom.page_size as usize, self.geom.unit_pages);
        map.set_free_path_chunk_hint_fix(self.free_path_chunk_hint_fix);
        self.chunks.push(Some(Chunk {
            id,
            role: ChunkRole::Dynamic,
            base_addr: created.base_addr,
            map,
            immutable: false,
            isolated: false,
            nr_alloc: 0,
            max_alloc_size: 0,
        }));
        self.by_addr.insert(created.base_addr.wrapping_add(self.ref_unit_off), id);
        self.stats.chunk_created();
        self.emit(|| ChunkEvent::Created { chunk: id, base_addr: created.base_addr });
        tracing::debug!(chunk = id, base = format_args!("{:#x}", created.base_addr), "created chunk");
        if created.fully_populated {
            let pages = self.geom.unit_pages;
            self.mark_populated(id, 0, pages);
        }
        self.relocate(id, None);
        Ok(id)
    }

    /// `pcpu_chunk_populated` (after the backend populated the pages).
    fn mark_populated(&mut self, id: ChunkId, start: usize, end: usize) {
        self.with_map(id, |m| m.mark_populated(start, end));
        self.nr_populated += end - start;
        let base = self.chunk(id).base_addr;
        self.emit(|| ChunkEvent::Populated { chunk: id, base_addr: base, page_start: start, page_end: end });
    }

    /// `pcpu_populate_chunk` + `pcpu_chunk_populated`.
    fn populate(&mut self, id: ChunkId, start: usize, end: usize) -> Result<(), BackendError> {
        let base = self.chunk(id).base_addr;
        self.backend.populate(&self.geom, base, start..end)?;
        self.mark_populated(id, start, end);
        Ok(())
    }

    /// `pcpu_depopulate_chunk` + `pcpu_chunk_depopulated`.
    fn depopulate(&mut self, id: ChunkId, start: usize, end: usize) {
        let base = self.chunk(id).base_addr;
        self.backend.depopulate(&self.geom, base, start..end);
        self.with_map(id, |m| m.mark_depopulated(start, end));
        self.nr_populated -= end - start;
        self.emit(|| ChunkEvent::Depopulated { chunk: id, base_addr: base, page_start: start, page_end: end });
    }

    /// `pcpu_destroy_chunk` for a chunk with nothing populated left.
    fn destroy_chunk(&mut self, id: ChunkId) {
        let populated: Vec<_> = {
            let c = self.chunk(id);
            c.map.populated_runs(0, c.map.nr_pages()).collect()
        };
        for r in populated {
            self.depopulate(id, r.start, r.end);
        }
        self.slots.remove(id);
        let c = self.chunks[id].take().expect("live chunk");
        if !c.isolated {
            self.nr_empty_pop_pages -= c.map.nr_empty_pop_pages();
        }
        self.by_addr.remove(&c.base_addr.wrapping_add(self.ref_unit_off));
        self.backend.destroy_chunk(&self.geom, c.base_addr);
        self.stats.chunk_destroyed();
        self.emit(|| ChunkEvent::Destroyed { chunk: id, base_addr: c.base_addr });
        tracing::debug!(chunk = id, "destroyed chunk");
    }

    // ----- the allocator ---------------------------------------------------

    /// `pcpu_alloc`.
    pub fn alloc(&mut self, req: AllocRequest) -> Result<PcpuPtr, AllocError> {
        let page = self.geom.page_size as usize;
        let align = req.align.max(PCPU_MIN_ALLOC_SIZE);
        let size = req.size.next_multiple_of(PCPU_MIN_ALLOC_SIZE);
        if size == 0 || size > PCPU_MIN_UNIT_SIZE || align > page || !align.is_power_of_two() {
            return Err(AllocError::IllegalSizeOrAlign {
                size: req.size,
                align: req.align,
                max_size: PCPU_MIN_UNIT_SIZE,
                max_align: page,
            });
        }
        let bits = size >> PCPU_MIN_ALLOC_SHIFT;
        let bit_align = align >> PCPU_MIN_ALLOC_SHIFT;
        let atomic = req.atomic;

        let (id, bit_off) = match self.reserved_chunk.filter(|_| req.reserved) {
            Some(r) => {
                let found = self
                    .chunk(r)
                    .map
                    .find_block_fit(bits, bit_align, atomic)
                    .and_then(|start| self.alloc_area(r, bits, bit_align, start));
                match found {
                    Some(off) => (r, off),
                    None => {
                        // pcpu_alloc's fail: label, reached by every failed
                        // atomic request, the reserved chunk's included
                        if atomic {
                            self.atomic_alloc_failed = true;
                            self.balance_pending = true;
                        }
                        let m = &self.chunk(r).map;
                        return Err(AllocError::ReservedExhausted {
                            size,
                            align,
                            free_bytes: m.free_bytes(),
                            contig_bytes: m.contig_hint_bytes(),
                        });
                    }
                }
            }
            None => self.alloc_from_slots(size, bits, bit_align, atomic)?,
        };

        // area_found:
        let c = self.chunks[id].as_mut().expect("live chunk");
        c.nr_alloc += 1;
        c.max_alloc_size = c.max_alloc_size.max(size);
        self.stats.area_allocated(size);
        self.allocated_bytes += size as u64;
        if self.nr_empty_pop_pages < PCPU_EMPTY_POP_PAGES_LOW {
            self.balance_pending = true;
        }

        let off = bit_off << PCPU_MIN_ALLOC_SHIFT;
        if !atomic {
            // page sizes are powers of two (ChunkMap::new checks): shift, not divide
            let shift = page.trailing_zeros();
            let (page_start, page_end) = (off >> shift, (off + size + page - 1) >> shift);
            // Walk the holes one at a time: no allocation on this hot path.
            loop {
                let next_hole = self.chunk(id).map.first_unpopulated_run(page_start, page_end);
                let Some(r) = next_hole else { break };
                if let Err(e) = self.populate(id, r.start, r.end) {
                    self.free_area(id, bit_off).expect("area just allocated");
                    self.stats.area_freed();
                    self.allocated_bytes -= size as u64;
                    return Err(AllocError::Populate {
                        size,
                        align,
                        chunk: id,
                        page_start: r.start,
                        page_end: r.end,
                        reason: e.to_string(),
                    });
                }
            }
        }
        let base = self.chunk(id).base_addr;
        self.emit(|| ChunkEvent::Cleared { chunk: id, base_addr: base, offset: off, size });
        Ok(self.addr_to_pcpu_ptr(base.wrapping_add(off as u64)))
    }

    /// The `restart:` loop of `pcpu_alloc` over the slot lists.
    fn alloc_from_slots(
        &mut self,
        size: usize,
        bits: usize,
        bit_align: usize,
        atomic: bool,
    ) -> Result<(ChunkId, usize), AllocError> {
        // A new chunk always fits a legal request, so a second restart
        // would mean a broken invariant; fail instead of spinning.
        for _restart in 0..3 {
            // Empty slots are skipped by the non-empty bitmap; the next one
            // is looked up on arriving there, so the kernel's order holds.
            let mut next_slot = self.size_to_slot(size);
            while let Some(slot) = self.slots.next_nonempty(next_slot, self.free_slot) {
                next_slot = slot + 1;
                let mut cursor = self.slots.first(slot);
                while let Some(id) = cursor {
                    cursor = self.slots.next(id);
                    match self.chunk(id).map.find_block_fit(bits, bit_align, atomic) {
                        None => {
                            if slot < PCPU_SLOT_FAIL_THRESHOLD {
                                self.slots.move_front(id, 0);
                            }
                        }
                        Some(start) => {
                            if let Some(off) = self.alloc_area(id, bits, bit_align, start) {
                                self.reintegrate(id);
                                return Ok((id, off));
                            }
                        }
                    }
                }
            }
            if atomic {
                self.atomic_alloc_failed = true;
                self.balance_pending = true;
                return Err(AllocError::AtomicNoSpace {
                    size,
                    align: bit_align << PCPU_MIN_ALLOC_SHIFT,
                    empty_pop_pages: self.nr_empty_pop_pages,
                });
            }
            if self.slots.is_empty(self.free_slot) {
                self.create_chunk().map_err(|e| AllocError::ChunkCreation {
                    size,
                    align: bit_align << PCPU_MIN_ALLOC_SHIFT,
                    reason: e.to_string(),
                })?;
            }
        }
        Err(AllocError::ChunkCreation {
            size,
            align: bit_align << PCPU_MIN_ALLOC_SHIFT,
            reason: "a fresh chunk could not serve the request (allocator invariant broken)".into(),
        })
    }

    /// `pcpu_free_area` plus the relocation it ends with.
    fn free_area(&mut self, id: ChunkId, bit_off: usize) -> Result<usize, crate::bitmap::NotAllocated> {
        let old_slot = self.chunk_slot(self.chunk(id));
        let bits = self.with_map(id, |m| m.free_area(bit_off))?;
        self.relocate(id, Some(old_slot));
        Ok(bits)
    }

    /// `pcpu_should_reclaim_chunk`: percpu-vm's rule; percpu-km's says no
    /// to every chunk (a km chunk is one contiguous allocation, populated
    /// whole at creation, so there is nothing to depopulate page by page).
    fn should_reclaim(&self, id: ChunkId) -> bool {
        let c = self.chunk(id);
        if c.role != ChunkRole::Dynamic || self.backend.kind() == BackendKind::Km {
            return false;
        }
        let empty = c.map.nr_empty_pop_pages();
        (c.isolated && empty > 0)
            || (self.nr_empty_pop_pages > PCPU_EMPTY_POP_PAGES_HIGH + empty && empty >= c.map.nr_pages() / 4)
    }

    /// `free_percpu`.  Returns the freed size in bytes.
    pub fn free(&mut self, ptr: PcpuPtr) -> Result<usize, FreeError> {
        let addr = self.pcpu_ptr_to_addr(ptr);
        let static_end = self.first.base_addr + self.first.static_size as u64;
        if addr >= self.first.base_addr && addr < static_end {
            return Err(FreeError::Static {
                ptr: ptr.0,
                chunk: self.first_chunk,
                offset: (addr - self.first.base_addr) as usize,
            });
        }
        let id = self.chunk_addr_search(addr).ok_or(FreeError::NotPercpu { ptr: ptr.0 })?;
        let off = addr.wrapping_sub(self.chunk(id).base_addr) as usize;
        let not_allocated = FreeError::NotAllocated { ptr: ptr.0, chunk: id, offset: off };
        if off % PCPU_MIN_ALLOC_SIZE != 0 {
            return Err(not_allocated);
        }
        let bits = self.free_area(id, off >> PCPU_MIN_ALLOC_SHIFT).map_err(|_| not_allocated)?;
        let size = bits << PCPU_MIN_ALLOC_SHIFT;
        self.chunks[id].as_mut().expect("live chunk").nr_alloc -= 1;
        self.stats.area_freed();
        self.allocated_bytes -= size as u64;

        let c = self.chunk(id);
        if !c.isolated && c.map.free_bytes() == self.first.unit_size {
            if self.slots.iter(self.free_slot).any(|other| other != id) {
                self.balance_pending = true;
            }
        } else if self.should_reclaim(id) {
            self.isolate(id);
            self.balance_pending = true;
        }
        Ok(size)
    }

    // ----- balance work ------------------------------------------------------

    /// `pcpu_balance_workfn`: free surplus free chunks, depopulate isolated
    /// chunks' empty pages, keep LOW..HIGH empty populated pages.
    pub fn balance(&mut self) -> BalanceReport {
        let mut report = BalanceReport::default();
        self.balance_free(false, &mut report);
        self.reclaim_populated(&mut report);
        self.balance_populated(&mut report);
        self.balance_free(true, &mut report);
        self.balance_pending = false;
        report
    }

    /// `pcpu_balance_free`: keep the first chunk of the free list, destroy
    /// the others (with `empty_only`, only those without populated pages).
    fn balance_free(&mut self, empty_only: bool, report: &mut BalanceReport) {
        let victims: Vec<ChunkId> = self
            .slots
            .iter(self.free_slot)
            .skip(1)
            .filter(|&id| !empty_only || self.chunk(id).map.nr_empty_pop_pages() == 0)
            .collect();
        for id in victims {
            report.pages_depopulated += self.chunk(id).map.nr_populated();
            self.destroy_chunk(id);
            report.chunks_destroyed += 1;
        }
    }

    /// `pcpu_reclaim_populated`: walk isolated chunks back to front and
    /// depopulate runs of empty populated pages.
    fn reclaim_populated(&mut self, report: &mut BalanceReport) {
        while let Some(id) = self.slots.first(self.to_depopulate_slot) {
            let nr_pages = self.chunk(id).map.nr_pages() as isize;
            let mut reintegrate = false;
            let mut end: Option<isize> = None;
            let mut i = nr_pages - 1;
            while i >= 0 {
                if self.chunk(id).map.nr_empty_pop_pages() == 0 {
                    break;
                }
                if self.nr_empty_pop_pages < PCPU_EMPTY_POP_PAGES_HIGH {
                    reintegrate = true;
                    break;
                }
                let m = &self.chunk(id).map;
                if m.is_page_empty(i as usize) && m.is_page_populated(i as usize) {
                    end.get_or_insert(i);
                    if i > 0 {
                        i -= 1;
                        continue;
                    }
                    i -= 1;
                }
                if let Some(e) = end.take() {
                    let (s, e) = ((i + 1) as usize, (e + 1) as usize);
                    self.depopulate(id, s, e);
                    report.pages_depopulated += e - s;
                }
                i -= 1;
            }
            if reintegrate || self.chunk(id).map.free_bytes() == self.first.unit_size {
                self.reintegrate(id);
            } else {
                self.slots.move_tail(id, self.sidelined_slot);
            }
        }
    }

    /// `pcpu_balance_populated`: top the empty populated pages up to HIGH,
    /// filling the most packed chunks first, creating a chunk if needed.
    fn balance_populated(&mut self, report: &mut BalanceReport) {
        let page = self.geom.page_size as usize;
        loop {
            let mut nr_to_pop = if self.atomic_alloc_failed {
                self.atomic_alloc_failed = false;
                PCPU_EMPTY_POP_PAGES_HIGH
            } else {
                PCPU_EMPTY_POP_PAGES_HIGH.saturating_sub(self.nr_empty_pop_pages)
            };
            for slot in self.size_to_slot(page)..=self.free_slot {
                if nr_to_pop == 0 {
                    break;
                }
                let Some(id) = self.slots.iter(slot).find(|&id| {
                    let m = &self.chunk(id).map;
                    m.nr_pages() > m.nr_populated()
                }) else {
                    continue;
                };
                let runs: Vec<_> = {
                    let m = &self.chunk(id).map;
                    m.unpopulated_runs(0, m.nr_pages()).collect()
                };
                for r in runs {
                    let nr = r.len().min(nr_to_pop);
                    match self.populate(id, r.start, r.start + nr) {
                        Ok(()) => {
                            nr_to_pop -= nr;
                            report.pages_populated += nr;
                        }
                        Err(_) => nr_to_pop = 0,
                    }
                    if nr_to_pop == 0 {
                        break;
                    }
                }
            }
            if nr_to_pop == 0 || self.create_chunk().is_err() {
                return;
            }
            report.chunks_created += 1;
        }
    }

    // ----- verification -------------------------------------------------------

    /// Check every chunk's hints ([`ChunkMap::verify`]) and the allocator's
    /// own bookkeeping: slots, global counters, address index.
    pub fn verify(&self) -> Result<(), String> {
        let mut empty = 0;
        let mut populated = self.first.static_size + self.first.reserved_size + self.first.dyn_size;
        populated = populated.div_ceil(self.geom.page_size as usize);
        for c in self.chunks() {
            c.map.verify().map_err(|e| format!("chunk {}: {e}", c.id))?;
            if c.role != ChunkRole::Reserved && !c.isolated {
                empty += c.map.nr_empty_pop_pages();
            }
            if c.role == ChunkRole::Dynamic {
                populated += c.map.nr_populated();
                if self.by_addr.get(&c.base_addr.wrapping_add(self.ref_unit_off)) != Some(&c.id) {
                    return Err(format!("chunk {} missing from the address index", c.id));
                }
            }
            let listed = self.slots.slot_of(c.id);
            match (c.role, c.isolated) {
                (ChunkRole::Reserved, _) => {
                    if listed.is_some() {
                        return Err(format!("reserved chunk {} is on slot {listed:?}", c.id));
                    }
                }
                (_, true) => {
                    if listed != Some(self.to_depopulate_slot) && listed != Some(self.sidelined_slot) {
                        return Err(format!("isolated chunk {} is on slot {listed:?}", c.id));
                    }
                }
                (_, false) => {
                    let want = self.chunk_slot(c);
                    // A chunk may sit in slot 0 (sidelined on a failed fit)
                    // or the sidelined slot; otherwise it must be in its slot.
                    if listed != Some(want) && listed != Some(0) && listed != Some(self.sidelined_slot) {
                        return Err(format!("chunk {} is on slot {listed:?}, its contig hint says {want}", c.id));
                    }
                }
            }
        }
        if empty != self.nr_empty_pop_pages {
            return Err(format!("pcpu_nr_empty_pop_pages is {}, chunks sum to {empty}", self.nr_empty_pop_pages));
        }
        if populated != self.nr_populated {
            return Err(format!("pcpu_nr_populated is {}, chunks sum to {populated}", self.nr_populated));
        }
        if self.by_addr.len() != self.chunks().filter(|c| c.role == ChunkRole::Dynamic).count() {
            return Err("address index holds destroyed chunks".into());
        }
        Ok(())
    }
}

impl PercpuAllocator for Percpu {
    fn name(&self) -> &'static str {
        "bitmap"
    }
    fn alloc(&mut self, req: AllocRequest) -> Result<PcpuPtr, AllocError> {
        Percpu::alloc(self, req)
    }
    fn free(&mut self, ptr: PcpuPtr) -> Result<usize, FreeError> {
        Percpu::free(self, ptr)
    }
    fn balance(&mut self) {
        Percpu::balance(self);
    }
    fn footprint(&self) -> Footprint {
        let page = self.geom.page_size;
        let mut populated = self.first.dyn_size as u64;
        let mut metadata = 0;
        for c in self.chunks() {
            metadata += (c.map.metadata_bytes() + std::mem::size_of::<Chunk>()) as u64;
            if c.role == ChunkRole::Dynamic {
                populated += c.map.nr_populated() as u64 * page;
            }
        }
        Footprint {
            allocated_bytes: self.allocated_bytes,
            populated_bytes: populated,
            metadata_bytes: metadata,
            nr_chunks: self.nr_chunks(),
        }
    }
}

#[cfg(test)]
mod tests;
