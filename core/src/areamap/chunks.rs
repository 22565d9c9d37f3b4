//! The chunk bookkeeping both area-map models share: chunks by id on the
//! slot lists by free size (`pcpu_slot[]`, `pcpu_chunk_slot`,
//! `pcpu_chunk_relocate`), the first and the reserved chunk, the vm chunks
//! and their vmalloc ranges, the lookup by address, reclaim candidates,
//! the slot walk of `pcpu_alloc` and the checks of all that.  None of this
//! changed between 2.6.30 and 4.13; what a chunk's map holds did, so the
//! chunk type is a parameter and tells its sizes through [`SlotChunk`].

use std::collections::BTreeMap;

use crate::addr::RangeAllocator;
use crate::alloc::{Footprint, FreeError, PcpuPtr};

use super::lists::{size_to_slot_raw, SlotLists};
use super::{AreaMapConfig, PCPU_DFL_MAP_ALLOC};

/// `sizeof(int)`: a chunk whose free size or contig hint is below it sits
/// on slot 0 (`pcpu_chunk_slot`, the same from 2.6.30 to 4.13).
pub(crate) const INT_SIZE: i32 = 4;

/// `pcpu_need_to_extend`'s answer: `None` while the map holds
/// `map_used + margin` entries, else the new `map_alloc`,
/// `PCPU_DFL_MAP_ALLOC` doubled until it does.  The margin is the era's:
/// 2 in 2.6.30-3.14, 3 in 3.15-3.17 (and for atomic requests after),
/// `PCPU_ATOMIC_MAP_MARGIN_HIGH` for normal requests in 3.18-4.13.
pub(crate) fn map_alloc_for(map_alloc: usize, map_used: usize, margin: usize) -> Option<usize> {
    if map_alloc >= map_used + margin {
        return None;
    }
    let mut new_alloc = PCPU_DFL_MAP_ALLOC;
    while new_alloc < map_used + margin {
        new_alloc *= 2;
    }
    Some(new_alloc)
}

/// `pcpu_extend_area_map`: `map` grown to `new_alloc` entries, the old
/// ones kept; returns the entries copied (all `map_alloc` of them, as the
/// kernel's memcpy does), `None` when the map is that long already.
pub(crate) fn extend_map(map: &mut Vec<i32>, new_alloc: usize) -> Option<u64> {
    let copied = map.len() as u64;
    (new_alloc > map.len()).then(|| {
        map.resize(new_alloc, 0);
        copied
    })
}

/// One bit per page of a unit: the `populated` bitmap of `struct
/// pcpu_chunk` (bookkeeping only, there is no memory behind it).
#[derive(Clone, Debug)]
pub(crate) struct PageBits(Vec<u64>);

impl PageBits {
    /// `pages` bits, all set when `full` (the first chunk is populated).
    pub(crate) fn new(pages: usize, full: bool) -> Self {
        let mut bits = PageBits(vec![0; pages.div_ceil(64)]);
        if full {
            (0..pages).for_each(|p| bits.set(p));
        }
        bits
    }
    pub(crate) fn get(&self, p: usize) -> bool {
        self.0[p / 64] >> (p % 64) & 1 != 0
    }
    /// Mark page `p` populated (neither model clears single bits: a
    /// chunk is depopulated only as it is destroyed).
    pub(crate) fn set(&mut self, p: usize) {
        self.0[p / 64] |= 1 << (p % 64);
    }
    pub(crate) fn count(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }
}

/// What the shared bookkeeping needs to know of a chunk of either era.
pub(crate) trait SlotChunk {
    fn free_size(&self) -> i32;
    fn contig_hint(&self) -> i32;
    fn base_addr(&self) -> u64;
    fn immutable(&self) -> bool;
    fn populated(&self) -> &PageBits;
    fn nr_populated(&self) -> usize;
    /// Shares the first chunk's pages with the reserved chunk (its pages
    /// are counted once, with the reserved chunk).
    fn shares_pages(&self) -> bool;
    /// Allocated bytes, the hidden static (or static + reserved) area not
    /// included.
    fn allocated_bytes(&self) -> u64;
    /// `map_alloc`, for the metadata footprint.
    fn map_alloc(&self) -> usize;
    /// The map's first area is the static area (a first-chunk map), which
    /// cannot be freed.
    fn hides_static(&self) -> bool;
}

/// The [`SlotChunk`] methods that read a field of the same name (and
/// `map_alloc`, the length of `map`): the two eras' chunks share them.
macro_rules! slot_chunk_fields {
    () => {
        fn free_size(&self) -> i32 {
            self.free_size
        }
        fn contig_hint(&self) -> i32 {
            self.contig_hint
        }
        fn base_addr(&self) -> u64 {
            self.base_addr
        }
        fn immutable(&self) -> bool {
            self.immutable
        }
        fn populated(&self) -> &$crate::areamap::chunks::PageBits {
            &self.populated
        }
        fn nr_populated(&self) -> usize {
            self.nr_populated
        }
        fn shares_pages(&self) -> bool {
            self.shares_pages
        }
        fn map_alloc(&self) -> usize {
            self.map.len()
        }
    };
}
pub(crate) use slot_chunk_fields;

/// Chunks by id on slot lists by free size.  Chunk 0 holds the static
/// area; with a reserved area it is the reserved chunk (on no slot) and
/// chunk 1 the dynamic part of the first chunk, as
/// `pcpu_setup_first_chunk` built them in both eras.
#[derive(Clone, Debug)]
pub(crate) struct ChunkSlots<C> {
    unit_size: i32,
    /// `pcpu_nr_slots`: the unit size's slot plus one for fully free chunks.
    pub(crate) nr_slots: usize,
    /// Destroyed chunks leave `None` until the id is reused.
    pub(crate) chunks: Vec<Option<C>>,
    free_ids: Vec<usize>,
    lists: SlotLists,
    pub(crate) first_chunk: usize,
    pub(crate) reserved_chunk: Option<usize>,
    /// `pcpu_reserved_chunk_limit`: static + reserved, 0 without reserve.
    pub(crate) reserved_limit: usize,
    first_chunk_base: u64,
    chunk_bytes: u64,
    page_size: u64,
    vm_space: RangeAllocator,
    /// Vm chunks by base address, standing in for the page->index lookup.
    pub(crate) by_base: BTreeMap<u64, usize>,
}

/// Where the slot walk of `pcpu_alloc` stands: a slot and the node to
/// visit next on it (`None`: the slot's first node, read when reached).
pub(crate) struct SlotWalk {
    slot: usize,
    node: Option<usize>,
}

impl<C: SlotChunk> ChunkSlots<C> {
    /// The first chunk as `pcpu_setup_first_chunk` leaves it; `first(hidden,
    /// free, shares_pages)` builds a map of `hidden` used bytes followed by
    /// `free` free ones.  The dynamic area is everything after static +
    /// reserved (2.6.31's "dyn_size = -1, auto"), in both models.
    pub(crate) fn new(cfg: &AreaMapConfig, first: impl Fn(i32, i32, bool) -> C) -> Self {
        let unit_size = cfg.unit_size as i32;
        let nr_slots = size_to_slot_raw(unit_size) + 2;
        let mut s = ChunkSlots {
            unit_size,
            nr_slots,
            chunks: Vec::new(),
            free_ids: Vec::new(),
            lists: SlotLists::new(nr_slots),
            first_chunk: 0,
            reserved_chunk: None,
            reserved_limit: 0,
            first_chunk_base: cfg.first_chunk_base,
            chunk_bytes: cfg.nr_units as u64 * cfg.unit_size as u64,
            page_size: cfg.space.page_size(),
            vm_space: cfg.vm_space(),
            by_base: BTreeMap::new(),
        };
        let (static_size, reserved_size) = (cfg.static_size as i32, cfg.reserved_size as i32);
        let dyn_size = unit_size - static_size - reserved_size;
        if reserved_size > 0 {
            // Two maps over the same pages: the reserved chunk and the
            // dynamic part.
            let rid = s.insert(first(static_size, reserved_size, false));
            s.reserved_chunk = Some(rid);
            s.reserved_limit = (static_size + reserved_size) as usize;
            s.first_chunk = rid;
            if dyn_size > 0 {
                s.first_chunk = s.insert(first(static_size + reserved_size, dyn_size, true));
            }
        } else {
            s.first_chunk = s.insert(first(static_size, dyn_size, false));
        }
        s.relocate(s.first_chunk, None);
        s
    }

    pub(crate) fn chunk(&self, id: usize) -> &C {
        self.chunks[id].as_ref().expect("live chunk id")
    }

    pub(crate) fn chunk_mut(&mut self, id: usize) -> &mut C {
        self.chunks[id].as_mut().expect("live chunk id")
    }

    /// Take chunk `id` out to work on it beside `&self` of its allocator;
    /// [`Self::put`] brings it back.
    pub(crate) fn take(&mut self, id: usize) -> C {
        self.chunks[id].take().expect("live chunk id")
    }

    pub(crate) fn put(&mut self, id: usize, c: C) {
        debug_assert!(self.chunks[id].is_none());
        self.chunks[id] = Some(c);
    }

    /// An id for `c` (the last one freed, else a new one), not on
    /// any list yet.
    fn insert(&mut self, c: C) -> usize {
        let id = self.free_ids.pop().unwrap_or_else(|| {
            self.chunks.push(None);
            self.chunks.len() - 1
        });
        self.lists.ensure_chunk(id);
        self.chunks[id] = Some(c);
        id
    }

    /// The first chunk (once, even when a reserved area splits it into two
    /// maps) plus the vm chunks.
    pub(crate) fn nr_chunks(&self) -> usize {
        1 + self.by_base.len()
    }

    /// `pcpu_size_to_slot`.
    pub(crate) fn size_to_slot(&self, size: i32) -> usize {
        if size == self.unit_size {
            self.nr_slots - 1
        } else {
            size_to_slot_raw(size)
        }
    }

    /// `pcpu_chunk_slot`.
    pub(crate) fn chunk_slot(&self, id: usize) -> usize {
        let c = self.chunk(id);
        if c.free_size() < INT_SIZE || c.contig_hint() < INT_SIZE {
            0
        } else {
            self.size_to_slot(c.free_size())
        }
    }

    /// `pcpu_chunk_relocate`; `oslot == None` is the kernel's -1 (a new
    /// chunk, which therefore goes to the head of its list).  The reserved
    /// chunk is never on a list.
    pub(crate) fn relocate(&mut self, id: usize, oslot: Option<usize>) {
        if Some(id) != self.reserved_chunk {
            let nslot = self.chunk_slot(id);
            self.lists.relocate(id, oslot, nslot);
        }
    }

    /// Chunk ids on slot `slot`, head first.
    pub(crate) fn list(&self, slot: usize) -> Vec<usize> {
        self.lists.list(slot)
    }

    /// The slot walk of `pcpu_alloc` from `slot` up.
    pub(crate) fn walk(&self, slot: usize) -> SlotWalk {
        SlotWalk { slot, node: None }
    }

    /// The next chunk of the walk.  The node after it is remembered before
    /// the caller works on it (`list_for_each_entry_safe`; see the
    /// deviations in [`crate::areamap`]).
    pub(crate) fn walk_next(&self, w: &mut SlotWalk) -> Option<usize> {
        while w.slot < self.nr_slots {
            let n = w.node.unwrap_or_else(|| self.lists.next(w.slot));
            if n == w.slot {
                w.slot += 1;
                w.node = None;
                continue;
            }
            w.node = Some(self.lists.next(n));
            return self.lists.chunk_of(n);
        }
        None
    }

    /// Whether freeing made chunk `id` fully free while another fully free
    /// chunk exists: `free_percpu` then wakes the reaper (2.6.30-3.17
    /// `pcpu_reclaim_work`, 3.18-4.13 `pcpu_balance_work`).
    pub(crate) fn another_free_chunk(&self, id: usize) -> bool {
        self.chunk(id).free_size() == self.unit_size && self.list(self.nr_slots - 1).iter().any(|&o| o != id)
    }

    /// The chunks the reaper destroys: every fully free chunk but the first
    /// on the last slot.  An immutable one is skipped with a warning (the
    /// kernel would `WARN_ON` and destroy it; it cannot happen, the first
    /// chunk always holds the static area).
    pub(crate) fn reclaimable(&self) -> Vec<usize> {
        let skip_immutable = |&id: &usize| {
            let immutable = self.chunk(id).immutable();
            if immutable {
                tracing::warn!(chunk = id, "immutable percpu chunk on the free slot");
            }
            !immutable
        };
        self.list(self.nr_slots - 1).into_iter().skip(1).filter(skip_immutable).collect()
    }

    /// `pcpu_create_chunk` for the vm backend: `build(base)` on a new range
    /// of `nr_units * unit_size` bytes of vmalloc space, page aligned,
    /// highest first; the caller relocates the chunk.
    pub(crate) fn create_vm(&mut self, build: impl FnOnce(u64) -> C) -> Result<usize, String> {
        let base = self.vm_space.alloc_top_down(self.chunk_bytes, self.page_size).ok_or_else(|| {
            let w = self.vm_space.window();
            format!(
                "no {:#x}-byte range left in vmalloc space {:#x}..{:#x} ({:#x} bytes free)",
                self.chunk_bytes,
                w.start,
                w.end,
                self.vm_space.free_bytes()
            )
        })?;
        let id = self.insert(build(base));
        self.by_base.insert(base, id);
        Ok(id)
    }

    /// Unlink vm chunk `id`, give back its range and its id.
    pub(crate) fn remove_vm(&mut self, id: usize) -> C {
        self.lists.del_init(id);
        let c = self.take(id);
        let base = c.base_addr();
        self.vm_space.release(base..base + self.chunk_bytes);
        self.by_base.remove(&base);
        self.free_ids.push(id);
        c
    }

    /// `pcpu_chunk_addr_search`, by unit-0 address.
    pub(crate) fn addr_search(&self, addr: u64) -> Option<usize> {
        let first = self.first_chunk_base;
        let unit = self.unit_size as u64;
        if addr >= first && addr - first < unit {
            if ((addr - first) as usize) < self.reserved_limit {
                return self.reserved_chunk;
            }
            return Some(self.first_chunk);
        }
        let (&base, &id) = self.by_base.range(..=addr).next_back()?;
        (addr - base < unit).then_some(id)
    }

    /// The percpu pointer of offset `off` in chunk `id`
    /// (`__addr_to_pcpu_ptr(chunk->base_addr + off)`).
    pub(crate) fn ptr_at(&self, cfg: &AreaMapConfig, id: usize, off: i32) -> PcpuPtr {
        cfg.addr_to_ptr(cfg.space.wrapping_add(self.chunk(id).base_addr(), off as u64))
    }

    /// The first half of `free_percpu`: the chunk and the offset `ptr`
    /// points at, refusing what is no percpu pointer and the static area.
    pub(crate) fn free_target(&self, cfg: &AreaMapConfig, ptr: PcpuPtr) -> Result<(usize, usize), FreeError> {
        if ptr.0 > cfg.space.mask() {
            return Err(FreeError::NotPercpu { ptr: ptr.0 });
        }
        let addr = cfg.ptr_to_addr(ptr);
        let id = self.addr_search(addr).ok_or(FreeError::NotPercpu { ptr: ptr.0 })?;
        let offset = (addr - self.chunk(id).base_addr()) as usize;
        if self.chunk(id).hides_static() && offset < cfg.static_size {
            return Err(FreeError::Static { ptr: ptr.0, chunk: id, offset });
        }
        Ok((id, offset))
    }

    /// The footprint: `chunk_struct` bytes per chunk besides its map of
    /// ints, and the slot heads.
    pub(crate) fn footprint(&self, ptr: u64, chunk_struct: u64) -> Footprint {
        let mut f = Footprint {
            metadata_bytes: self.nr_slots as u64 * 2 * ptr,
            nr_chunks: self.nr_chunks(),
            ..Footprint::default()
        };
        for c in self.chunks.iter().flatten() {
            f.allocated_bytes += c.allocated_bytes();
            if !c.shares_pages() {
                f.populated_bytes += c.nr_populated() as u64 * self.page_size;
            }
            f.metadata_bytes += chunk_struct + 4 * c.map_alloc() as u64;
        }
        f
    }

    /// Check the lists, each chunk's slot, the vm lookup and the populated
    /// counts; the maps are the caller's to check.
    pub(crate) fn check(&self) -> Result<(), String> {
        let on_slot = self.lists.check(self.chunks.len(), |id| self.chunks[id].is_some())?;
        let mut vm_chunks = 0;
        for (id, c) in self.chunks.iter().enumerate() {
            let Some(c) = c else { continue };
            let pop = c.populated().count();
            if pop != c.nr_populated() {
                return Err(format!("chunk {id}: {pop} populated bits, nr_populated {}", c.nr_populated()));
            }
            let want = if Some(id) == self.reserved_chunk { None } else { Some(self.chunk_slot(id)) };
            if on_slot[id] != want {
                return Err(format!("chunk {id}: on slot {:?}, pcpu_chunk_slot says {want:?}", on_slot[id]));
            }
            if !c.immutable() {
                vm_chunks += 1;
                if self.by_base.get(&c.base_addr()) != Some(&id) {
                    return Err(format!("chunk {id}: base {:#x} missing from the lookup", c.base_addr()));
                }
            }
        }
        if vm_chunks != self.by_base.len() {
            return Err(format!("{} lookup entries for {vm_chunks} vm chunks", self.by_base.len()));
        }
        Ok(())
    }
}
