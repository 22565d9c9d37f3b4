//! # The area-map allocator (mm/percpu.c, 2.6.30 .. 3.14)
//!
//! In 2009 Tejun Heo replaced the fixed per-CPU room of the old module
//! allocator with dynamic *chunks*.  Inside a chunk the allocation state
//! was one array of `int`, `chunk->map`: each entry is the size in bytes
//! of one area, positive when the area is free and negative when it is
//! allocated, and the areas follow each other from offset 0, so an
//! area's offset is the sum of the sizes before it.  That representation
//! is what this module models, faithfully and with its costs:
//!
//! * **Allocation** (`pcpu_alloc_area`) walks the map from the start
//!   summing sizes, looks for the first free area that holds the request
//!   after its alignment head, and splits it (`pcpu_split_block`): a head
//!   of at least `sizeof(int)` bytes after an allocated area becomes a free
//!   area of its own, a smaller one is given to the previous area; a tail
//!   of at least `sizeof(int)` bytes is split off, a smaller one stays in
//!   the allocation.  Splitting *moves the rest of the array* up by one
//!   or two entries (`memmove`), so an allocation near the start of a map
//!   with thousands of entries moves thousands of ints.
//! * **Free** (`pcpu_free_area`) finds the area by walking the map again
//!   from offset 0 (there is no index), flips its sign and merges it with
//!   a free neighbour on either side, each merge moving the rest of the
//!   array down.  Freeing a million 4-byte objects in allocation order
//!   costs a walk and a move of the whole map per object.
//! * **Chunk choice**: chunks sit on slot lists by *free size*
//!   (`pcpu_chunk_slot`), and each chunk keeps `contig_hint`, an upper
//!   bound of its largest free area.  `pcpu_alloc` walks the slots from
//!   the request's slot upward and scans every chunk whose hint is not
//!   smaller than the request.  The hint knows sizes, not alignment: a
//!   chunk full of 4-byte holes at offsets 4 mod 8 reports a hint of 4,
//!   so every 4-byte request at 8-byte alignment scans the whole map of
//!   every such chunk, fails, and resets the hint to 4 again.
//!
//! ## Why it is here
//!
//! Seed 002 (the 2017 bitmap series that removed this allocator) measured
//! it against the bitmap allocator: 2^20 frees of 4-byte objects took
//! 4.8 s, and 2^20 allocations of 4-byte objects at 8-byte alignment took
//! 52 minutes against 16 s.  This model is the benchmark's baseline for
//! those numbers, so it keeps the sequential scans, the array moves, the
//! slot-list order (`list_move` vs `list_move_tail`), the restarts after a
//! map extension or a chunk creation, and the contig-hint rules exactly;
//! [`AreaMapStats`] counts the work so tests can assert it without timing.
//!
//! The map with signed sizes lived from 2.6.30 to 3.14; 3.15 switched to
//! offsets with an in-use bit (and 4.14 to the bitmap).  This module models
//! the signed-size version only; where 2.6.3x and 3.0 differ, the choice is
//! named in a comment.
//!
//! ## Facts checked against the source (2.6.31 and 3.0 mm/percpu.c)
//!
//! * `pcpu_alloc` refuses size 0, size > `PCPU_MIN_UNIT_SIZE` and
//!   align > `PAGE_SIZE`, and rounds neither: a 1-byte request takes 1 byte
//!   (plus a kept tail under 4 bytes).  Rounding size and align up to 2
//!   came with the in-use bit of 3.15.
//! * The hint is exact after any scan that reached the last entry (a
//!   failed scan always does) and an upper bound otherwise; `verify`
//!   checks `contig_hint >= largest free area`, not equality.
//! * Slots: `max(fls(size) - 3, 1)`, so sizes 1..=15 share slot 1 (the
//!   source's comment says 1-31); a fully free chunk (free size == unit
//!   size) goes to the extra last slot, which the reaper empties but for
//!   its first chunk.
//! * The first chunk's map is `[-static, free]`, or with a reserved area
//!   two maps over the same pages: `[-static, reserved]` (the reserved
//!   chunk, on no slot) and `[-(static + reserved), dynamic]`.  The model
//!   gives the dynamic part everything after static + reserved (2.6.31's
//!   `dyn_size = -1`).
//! * A chunk whose map lacks two spare entries gets a longer map and the
//!   slot walk restarts from the request's slot, as 3.0 does because the
//!   new map is allocated with `pcpu_lock` dropped.  (2.6.31 meant to do
//!   the same but its `pcpu_extend_area_map` returned 0 after extending,
//!   so the walk went on with the same chunk.)  The restarts show in the
//!   pathology test's visit count: `9j` for chunk `j`.
//!
//! ## Deviations from the kernel
//!
//! * `align` must be a power of two (the kernel only refused
//!   `align > PAGE_SIZE`; `ALIGN()` with another value gives garbage
//!   offsets), so `align == 0` is refused too.
//! * The slot walk remembers the next chunk before scanning one
//!   (`list_for_each_entry_safe`).  In the kernel a chunk whose failed scan
//!   drops its hint below `sizeof(int)` moves to slot 0 in the middle of
//!   `list_for_each_entry`, and the walk would follow it onto the slot-0
//!   list head; in every other case both walks are the same.
//! * `AllocRequest::atomic` is ignored: this era had no atomic percpu
//!   allocation (every request could sleep and create a chunk).
//! * Populating and depopulating only flip bits of the populated bitmap,
//!   there is no memory, and population cannot fail.
//! * Reclaim skips an immutable chunk on the last slot instead of
//!   destroying it after `WARN_ON` (it cannot happen: the first chunk
//!   always holds the static area).
//! * A bad pointer given to `free` is an error here; the kernel would
//!   `BUG()` or free whatever the address happened to hit.  Vm chunks are
//!   found by their unit-0 address range (the kernel went through the
//!   `struct page` of the current CPU's unit), same answer for every valid
//!   pointer.
//! * New chunks take exactly `nr_units * unit_size` bytes of vmalloc space,
//!   page aligned, highest first, without guard pages or atom alignment.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::addr::RangeAllocator;
use crate::alloc::{AllocError, AllocRequest, Footprint, FreeError, PcpuPtr, PercpuAllocator};
use crate::consts::PCPU_MIN_UNIT_SIZE;

mod config;
pub(crate) mod lists;
pub use config::{AreaMapConfig, AreaMapConfigError};
use lists::{align_int, size_to_slot_raw, SlotLists};

/// `PCPU_DFL_MAP_ALLOC`: a new chunk's map starts with 16 entries.
pub const PCPU_DFL_MAP_ALLOC: usize = 16;

/// Entries of the first chunk's static maps (`smap[2]`, `dmap[2]` in
/// 2.6.30-2.6.32; 3.0 used `PERCPU_DYNAMIC_EARLY_SLOTS` = 128).  The first
/// allocation there extends them to `PCPU_DFL_MAP_ALLOC`.
pub const FIRST_CHUNK_MAP_ALLOC: usize = 2;

/// `sizeof(int)`: heads and tails below it are not split off, and a chunk
/// whose free size or contig hint is below it sits on slot 0.
const INT_SIZE: i32 = 4;

/// Largest single allocation.  The kernel compared with
/// `PCPU_MIN_UNIT_SIZE`, which was 64 KiB in the 2009 headers
/// ([`crate::consts::PCPU_MIN_UNIT_SIZE_2009`]) and 32 KiB by 3.0; the
/// model uses 32 KiB so every allocator model accepts the same sizes.
pub const AREAMAP_MAX_ALLOC: usize = PCPU_MIN_UNIT_SIZE;

/// Work counters, for asserting costs without timing and for the
/// benchmark's per-operation figures.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AreaMapStats {
    /// Chunks the slot walk looked at, including those skipped by hint.
    pub chunks_walked: u64,
    /// `pcpu_alloc_area` calls: chunks whose map was scanned.
    pub alloc_area_calls: u64,
    /// `pcpu_alloc_area` calls that found no room.
    pub alloc_area_failures: u64,
    /// Map entries stepped over by allocation and free scans.
    pub map_entries_scanned: u64,
    /// Map entries moved by splits and merges (the memmoves).
    pub map_entries_moved: u64,
    /// `pcpu_extend_area_map` calls that grew a map.
    pub map_extensions: u64,
    /// Map entries copied by those extensions.
    pub map_entries_copied: u64,
    /// Slot walks restarted after a map extension or a chunk creation.
    pub restarts: u64,
    pub chunks_created: u64,
    pub chunks_destroyed: u64,
    pub pages_populated: u64,
    pub pages_depopulated: u64,
    /// Frees that would have scheduled `pcpu_reclaim_work`.
    pub reclaims_scheduled: u64,
}

/// One `struct pcpu_chunk`.
#[derive(Clone, Debug)]
struct Chunk {
    /// The area map; `map.len()` is `map_alloc`, entries past `map_used`
    /// are stale as in the kernel.
    map: Vec<i32>,
    map_used: usize,
    /// Bytes the map covers: the unit size, or static + reserved for the
    /// reserved chunk.
    extent: i32,
    free_size: i32,
    contig_hint: i32,
    base_addr: u64,
    /// One bit per page of a unit.
    populated: Vec<u64>,
    nr_populated: usize,
    immutable: bool,
    /// `map[0]` is the hidden static (or static + reserved) area.
    hidden_head: bool,
    /// Shares the first chunk's pages with the static chunk (the dynamic
    /// half of a first chunk split by a reserved area).
    shares_pages: bool,
}

impl Chunk {
    fn areas(&self) -> &[i32] {
        &self.map[..self.map_used]
    }
    fn page_populated(&self, p: usize) -> bool {
        self.populated[p / 64] >> (p % 64) & 1 != 0
    }
    fn set_populated(&mut self, p: usize, on: bool) {
        if on {
            self.populated[p / 64] |= 1 << (p % 64);
        } else {
            self.populated[p / 64] &= !(1 << (p % 64));
        }
    }
}

/// The 2009-2014 percpu allocator.  Chunk 0 holds the static area; when a
/// reserved area exists it is the reserved chunk and chunk 1 the dynamic
/// part of the first chunk (both sharing its pages), as
/// `pcpu_setup_first_chunk` built them.
#[derive(Clone, Debug)]
pub struct AreaMapAllocator {
    cfg: AreaMapConfig,
    unit_size: i32,
    unit_pages: usize,
    page_shift: u32,
    nr_slots: usize,
    /// Chunks by id; destroyed chunks leave `None` until the id is reused.
    chunks: Vec<Option<Chunk>>,
    free_ids: Vec<usize>,
    /// The slot lists (`pcpu_slot[]`).
    lists: SlotLists,
    first_chunk: usize,
    reserved_chunk: Option<usize>,
    /// `pcpu_reserved_chunk_limit`: static + reserved, 0 without reserve.
    reserved_limit: usize,
    vm_space: RangeAllocator,
    /// Vm chunks by base address, standing in for the page->index lookup.
    by_base: BTreeMap<u64, usize>,
    stats: AreaMapStats,
}

impl AreaMapAllocator {
    /// `pcpu_setup_first_chunk`: validate the geometry and build the first
    /// chunk with the static area hidden at its start.
    pub fn new(cfg: AreaMapConfig) -> Result<Self, AreaMapConfigError> {
        cfg.check()?;
        let chunk_bytes = cfg.nr_units as u64 * cfg.unit_size as u64;

        let unit_size = cfg.unit_size as i32;
        let page_shift = cfg.space.page_shift();
        let unit_pages = cfg.unit_size >> page_shift;
        // One more slot than the unit size's own for fully free chunks.
        let nr_slots = size_to_slot_raw(unit_size) + 2;

        let _ = chunk_bytes;
        let vm_space = cfg.vm_space();

        let mut a = AreaMapAllocator {
            unit_size,
            unit_pages,
            page_shift,
            nr_slots,
            chunks: Vec::new(),
            free_ids: Vec::new(),
            lists: SlotLists::new(nr_slots),
            first_chunk: 0,
            reserved_chunk: None,
            reserved_limit: 0,
            vm_space,
            by_base: BTreeMap::new(),
            stats: AreaMapStats::default(),
            cfg,
        };

        // The dynamic area is everything after static + reserved (the
        // "dyn_size = -1, auto" case of 2.6.31).
        let static_size = a.cfg.static_size as i32;
        let reserved_size = a.cfg.reserved_size as i32;
        let mut dyn_size = unit_size - static_size - reserved_size;
        let schunk_free = if reserved_size > 0 {
            reserved_size
        } else {
            let d = dyn_size;
            dyn_size = 0; // the static chunk covers the dynamic area
            d
        };
        let schunk = a.first_chunk_struct(-static_size, schunk_free, false);
        let sid = a.insert_chunk(schunk);
        let mut first = sid;
        if reserved_size > 0 {
            a.reserved_chunk = Some(sid);
            a.reserved_limit = (static_size + reserved_size) as usize;
        }
        if dyn_size > 0 {
            let dchunk = a.first_chunk_struct(-(static_size + reserved_size), dyn_size, true);
            first = a.insert_chunk(dchunk);
        }
        a.first_chunk = first;
        a.relocate(first, None);
        Ok(a)
    }

    /// A first-chunk map `[hidden, free]`, immutable and fully populated.
    fn first_chunk_struct(&self, hidden: i32, free: i32, shares_pages: bool) -> Chunk {
        let mut map = vec![0; FIRST_CHUNK_MAP_ALLOC];
        map[0] = hidden;
        let mut map_used = 1;
        if free > 0 {
            map[1] = free;
            map_used = 2;
        }
        let mut populated = vec![0u64; self.unit_pages.div_ceil(64)];
        for p in 0..self.unit_pages {
            populated[p / 64] |= 1 << (p % 64);
        }
        Chunk {
            map,
            map_used,
            extent: -hidden + free,
            free_size: free,
            contig_hint: free,
            base_addr: self.cfg.first_chunk_base,
            populated,
            nr_populated: self.unit_pages,
            immutable: true,
            hidden_head: true,
            shares_pages,
        }
    }

    /// Work counters since creation.
    pub fn stats(&self) -> AreaMapStats {
        self.stats
    }

    /// Chunks alive: the first chunk (once, even when a reserved area
    /// splits it into two maps) plus the vm chunks.
    pub fn nr_chunks(&self) -> usize {
        1 + self.by_base.len()
    }

    pub fn config(&self) -> &AreaMapConfig {
        &self.cfg
    }

    // ---- ids and slot lists -------------------------------------------

    fn chunk(&self, id: usize) -> &Chunk {
        self.chunks[id].as_ref().expect("live chunk id")
    }
    #[cfg(test)]
    fn chunk_mut(&mut self, id: usize) -> &mut Chunk {
        self.chunks[id].as_mut().expect("live chunk id")
    }

    fn insert_chunk(&mut self, c: Chunk) -> usize {
        let id = match self.free_ids.pop() {
            Some(id) => id,
            None => {
                let id = self.chunks.len();
                self.chunks.push(None);
                self.lists.ensure_chunk(id);
                id
            }
        };
        self.chunks[id] = Some(c);
        id
    }

    /// `pcpu_size_to_slot`.
    fn size_to_slot(&self, size: i32) -> usize {
        if size == self.unit_size {
            self.nr_slots - 1
        } else {
            size_to_slot_raw(size)
        }
    }

    /// `pcpu_chunk_slot`.
    fn chunk_slot(&self, id: usize) -> usize {
        let c = self.chunk(id);
        if c.free_size < INT_SIZE || c.contig_hint < INT_SIZE {
            0
        } else {
            self.size_to_slot(c.free_size)
        }
    }

    /// `pcpu_chunk_relocate`; `oslot == None` is the kernel's -1 (a new
    /// chunk, which therefore goes to the head of its list).
    fn relocate(&mut self, id: usize, oslot: Option<usize>) {
        let nslot = self.chunk_slot(id);
        if Some(id) == self.reserved_chunk {
            return;
        }
        self.lists.relocate(id, oslot, nslot);
    }

    /// Chunk ids on slot `slot`, head first.
    fn slot_list(&self, slot: usize) -> Vec<usize> {
        self.lists.list(slot)
    }

    // ---- the area map -------------------------------------------------

    /// `pcpu_need_to_extend`: the new map length when fewer than two
    /// entries are spare (one allocation can add a head and a tail).
    fn need_to_extend(&self, id: usize) -> Option<usize> {
        let c = self.chunk(id);
        if c.map.len() >= c.map_used + 2 {
            return None;
        }
        let mut new_alloc = PCPU_DFL_MAP_ALLOC;
        while new_alloc < c.map_used + 2 {
            new_alloc *= 2;
        }
        Some(new_alloc)
    }

    /// `pcpu_extend_area_map`: allocate the longer map and copy the old
    /// one (all `map_alloc` entries, as the kernel's memcpy does).
    fn extend_area_map(&mut self, id: usize, new_alloc: usize) {
        let c = self.chunks[id].as_mut().expect("live chunk id");
        if new_alloc <= c.map.len() {
            return;
        }
        let mut new = vec![0i32; new_alloc];
        new[..c.map.len()].copy_from_slice(&c.map);
        self.stats.map_extensions += 1;
        self.stats.map_entries_copied += c.map.len() as u64;
        c.map = new;
    }

    /// `pcpu_split_block`: turn entry `i` into head/target/tail entries by
    /// moving the rest of the array up.  Returns the entries moved.
    fn split_block(c: &mut Chunk, mut i: usize, head: i32, tail: i32) -> u64 {
        let nr_extra = usize::from(head != 0) + usize::from(tail != 0);
        debug_assert!(c.map.len() >= c.map_used + nr_extra, "map not extended before split");
        c.map.copy_within(i..c.map_used, i + nr_extra);
        let moved = (c.map_used - i) as u64;
        c.map_used += nr_extra;
        if head != 0 {
            c.map[i + 1] = c.map[i] - head;
            c.map[i] = head;
            i += 1;
        }
        if tail != 0 {
            c.map[i] -= tail;
            c.map[i + 1] = tail;
        }
        moved
    }

    /// `pcpu_alloc_area`: first fit from the start of the map.  The map
    /// must have two spare entries.  Returns the offset, or `None` after
    /// setting the hint to the largest free area seen (a full scan).
    fn alloc_area(&mut self, id: usize, size: i32, align: i32) -> Option<i32> {
        let oslot = self.chunk_slot(id);
        let c = self.chunks[id].as_mut().expect("live chunk id");
        let mut max_contig = 0;
        let mut off = 0;
        let mut i = 0;
        let mut scanned = 0u64;
        let mut moved = 0u64;
        let mut found = None;
        while i < c.map_used {
            scanned += 1;
            let is_last = i + 1 == c.map_used;
            // Extra for the alignment requirement.
            let mut head = align_int(off, align) - off;
            debug_assert!(i != 0 || head == 0);
            let area = c.map[i];
            if area < 0 {
                off -= area;
                i += 1;
                continue;
            }
            if area < head + size {
                max_contig = max_contig.max(area);
                off += area;
                i += 1;
                continue;
            }
            // A head smaller than an int, or any head after a free area,
            // goes to the previous area instead of becoming one.  (With
            // free areas always merged the second case cannot happen.)
            if head != 0 && (head < INT_SIZE || c.map[i - 1] > 0) {
                if c.map[i - 1] > 0 {
                    c.map[i - 1] += head;
                } else {
                    c.map[i - 1] -= head;
                    c.free_size -= head;
                }
                c.map[i] -= head;
                off += head;
                head = 0;
            }
            // A tail smaller than an int stays in the allocation.
            let mut tail = c.map[i] - head - size;
            if tail < INT_SIZE {
                tail = 0;
            }
            if head != 0 || tail != 0 {
                moved += Self::split_block(c, i, head, tail);
                if head != 0 {
                    i += 1;
                    off += head;
                    max_contig = max_contig.max(c.map[i - 1]);
                }
                if tail != 0 {
                    max_contig = max_contig.max(c.map[i + 1]);
                }
            }
            // Only a scan that reached the last entry knows the largest
            // free area; otherwise the old hint still bounds the rest.
            c.contig_hint = if is_last { max_contig } else { c.contig_hint.max(max_contig) };
            c.free_size -= c.map[i];
            c.map[i] = -c.map[i];
            found = Some(off);
            break;
        }
        if found.is_none() {
            c.contig_hint = max_contig; // fully scanned
            self.stats.alloc_area_failures += 1;
        }
        self.stats.alloc_area_calls += 1;
        self.stats.map_entries_scanned += scanned;
        self.stats.map_entries_moved += moved;
        self.relocate(id, Some(oslot));
        found
    }

    /// The scan half of `pcpu_free_area`: index of the allocated area at
    /// `freeme`, walking and summing from offset 0.
    fn find_area(&mut self, id: usize, freeme: i32) -> Option<usize> {
        let c = self.chunks[id].as_ref().expect("live chunk id");
        let mut off = 0;
        let mut i = 0;
        while i < c.map_used && off < freeme {
            off += c.map[i].abs();
            i += 1;
        }
        self.stats.map_entries_scanned += i as u64 + 1;
        (off == freeme && i < c.map_used && c.map[i] < 0).then_some(i)
    }

    /// The rest of `pcpu_free_area`: free entry `i` and merge it with free
    /// neighbours, moving the rest of the array down for each merge.
    fn free_area_at(&mut self, id: usize, mut i: usize) {
        let oslot = self.chunk_slot(id);
        let c = self.chunks[id].as_mut().expect("live chunk id");
        let mut moved = 0u64;
        c.map[i] = -c.map[i];
        c.free_size += c.map[i];
        // Merge with the previous area?
        if i > 0 && c.map[i - 1] >= 0 {
            c.map[i - 1] += c.map[i];
            c.map_used -= 1;
            c.map.copy_within(i + 1..c.map_used + 1, i);
            moved += (c.map_used - i) as u64;
            i -= 1;
        }
        // Merge with the next area?
        if i + 1 < c.map_used && c.map[i + 1] >= 0 {
            c.map[i] += c.map[i + 1];
            c.map_used -= 1;
            c.map.copy_within(i + 2..c.map_used + 1, i + 1);
            moved += (c.map_used - (i + 1)) as u64;
        }
        c.contig_hint = c.contig_hint.max(c.map[i]);
        self.stats.map_entries_moved += moved;
        self.relocate(id, Some(oslot));
    }

    /// `pcpu_populate_chunk`: populate the pages `[off, off + size)` covers
    /// that are not populated yet (bookkeeping only).
    fn populate(&mut self, id: usize, off: i32, size: i32) {
        let page = 1usize << self.page_shift;
        let start = off as usize >> self.page_shift;
        let end = (off as usize + size as usize).div_ceil(page);
        let c = self.chunks[id].as_mut().expect("live chunk id");
        // Quick path: everything is there already.
        if (start..end).all(|p| c.page_populated(p)) {
            return;
        }
        if c.immutable {
            tracing::warn!(chunk = id, "populating an immutable percpu chunk");
        }
        for p in start..end {
            if !c.page_populated(p) {
                c.set_populated(p, true);
                c.nr_populated += 1;
                self.stats.pages_populated += 1;
            }
        }
    }

    /// `pcpu_create_chunk` for the vm backend: a fresh map of one free
    /// area and `nr_units * unit_size` bytes of vmalloc space, top-down.
    fn create_chunk(&mut self) -> Result<usize, String> {
        let bytes = self.cfg.nr_units as u64 * self.cfg.unit_size as u64;
        let page = self.cfg.space.page_size();
        let base = self.vm_space.alloc_top_down(bytes, page).ok_or_else(|| {
            let w = self.vm_space.window();
            format!(
                "no {bytes:#x}-byte range left in vmalloc space {:#x}..{:#x} ({:#x} bytes free)",
                w.start,
                w.end,
                self.vm_space.free_bytes()
            )
        })?;
        let mut map = vec![0; PCPU_DFL_MAP_ALLOC];
        map[0] = self.unit_size;
        let chunk = Chunk {
            map,
            map_used: 1,
            extent: self.unit_size,
            free_size: self.unit_size,
            contig_hint: self.unit_size,
            base_addr: base,
            populated: vec![0; self.unit_pages.div_ceil(64)],
            nr_populated: 0,
            immutable: false,
            hidden_head: false,
            shares_pages: false,
        };
        let id = self.insert_chunk(chunk);
        self.by_base.insert(base, id);
        self.stats.chunks_created += 1;
        Ok(id)
    }

    /// `pcpu_depopulate_chunk(chunk, 0, unit_size)` + `pcpu_destroy_chunk`.
    fn destroy_chunk(&mut self, id: usize) {
        self.lists.del_init(id);
        let c = self.chunks[id].take().expect("live chunk id");
        self.stats.pages_depopulated += c.nr_populated as u64;
        self.stats.chunks_destroyed += 1;
        let bytes = self.cfg.nr_units as u64 * self.cfg.unit_size as u64;
        self.vm_space.release(c.base_addr..c.base_addr + bytes);
        self.by_base.remove(&c.base_addr);
        self.free_ids.push(id);
    }

    // ---- addresses ----------------------------------------------------

    /// `__addr_to_pcpu_ptr`.
    fn addr_to_ptr(&self, addr: u64) -> PcpuPtr {
        self.cfg.addr_to_ptr(addr)
    }

    /// `__pcpu_ptr_to_addr`.
    fn ptr_to_addr(&self, ptr: PcpuPtr) -> u64 {
        self.cfg.ptr_to_addr(ptr)
    }

    /// `pcpu_chunk_addr_search`, by unit-0 address.
    fn addr_search(&self, addr: u64) -> Option<usize> {
        let first = self.cfg.first_chunk_base;
        let unit = self.cfg.unit_size as u64;
        if addr >= first && addr - first < unit {
            if ((addr - first) as usize) < self.reserved_limit {
                return self.reserved_chunk;
            }
            return Some(self.first_chunk);
        }
        let (&base, &id) = self.by_base.range(..=addr).next_back()?;
        (addr - base < unit).then_some(id)
    }

    // ---- checking -----------------------------------------------------

    /// Check every invariant the kernel relies on; the message names the
    /// chunk and the numbers.
    pub fn verify(&self) -> Result<(), String> {
        let page = 1usize << self.page_shift;
        // Slot lists: integrity, and where each chunk sits.
        let on_slot = self.lists.check(self.chunks.len(), |id| self.chunks[id].is_some())?;
        let mut vm_chunks = 0;
        for (id, c) in self.chunks.iter().enumerate() {
            let Some(c) = c else {
                continue;
            };
            let areas = c.areas();
            if c.map_used == 0 || c.map_used > c.map.len() {
                return Err(format!("chunk {id}: map_used {} with map_alloc {}", c.map_used, c.map.len()));
            }
            let mut sum: i64 = 0;
            let mut free: i64 = 0;
            let mut largest = 0;
            let mut off = 0usize;
            for (i, &e) in areas.iter().enumerate() {
                if e == 0 {
                    return Err(format!("chunk {id}: empty area at entry {i}"));
                }
                if e > 0 {
                    if i > 0 && areas[i - 1] > 0 {
                        return Err(format!("chunk {id}: free areas {} and {i} are not merged", i - 1));
                    }
                    free += e as i64;
                    largest = largest.max(e);
                } else if !(c.immutable || c.hidden_head && i == 0) {
                    // The kernel populated the requested bytes; up to 3
                    // tail bytes and 3 later head bytes may sit beyond them.
                    let len = (-e) as usize;
                    let end = off + len.saturating_sub(6).max(1);
                    for p in off / page..end.div_ceil(page) {
                        if !c.page_populated(p) {
                            return Err(format!(
                                "chunk {id}: area at offset {off:#x} ({len} bytes) has page {p} unpopulated"
                            ));
                        }
                    }
                }
                sum += e.unsigned_abs() as i64;
                off += e.unsigned_abs() as usize;
            }
            if sum != c.extent as i64 {
                return Err(format!("chunk {id}: areas sum to {sum:#x}, the map covers {:#x}", c.extent));
            }
            if free != c.free_size as i64 {
                return Err(format!("chunk {id}: free_size {} but free areas sum to {free}", c.free_size));
            }
            // The hint is an upper bound (it may over-report after an
            // allocation that did not scan to the end), never below.
            if c.contig_hint < largest {
                return Err(format!("chunk {id}: contig_hint {} below the largest free area {largest}", c.contig_hint));
            }
            if c.hidden_head && areas[0] >= 0 {
                return Err(format!("chunk {id}: hidden static area is free ({})", areas[0]));
            }
            let pop = c.populated.iter().map(|w| w.count_ones() as usize).sum::<usize>();
            if pop != c.nr_populated {
                return Err(format!("chunk {id}: {pop} populated bits, nr_populated {}", c.nr_populated));
            }
            let want = if Some(id) == self.reserved_chunk { None } else { Some(self.chunk_slot(id)) };
            if on_slot[id] != want {
                return Err(format!("chunk {id}: on slot {:?}, pcpu_chunk_slot says {want:?}", on_slot[id]));
            }
            if !c.immutable {
                vm_chunks += 1;
                if self.by_base.get(&c.base_addr) != Some(&id) {
                    return Err(format!("chunk {id}: base {:#x} missing from the lookup", c.base_addr));
                }
            }
        }
        if vm_chunks != self.by_base.len() {
            return Err(format!("{} lookup entries for {vm_chunks} vm chunks", self.by_base.len()));
        }
        Ok(())
    }
}

impl PercpuAllocator for AreaMapAllocator {
    fn name(&self) -> &'static str {
        "areamap"
    }

    /// `pcpu_alloc`.  The size is not rounded: 2.6.30-3.14 took it as is
    /// (tails under 4 bytes stay in the allocation instead); 3.15 started
    /// rounding it (and the alignment) to 2 for its in-use bit.
    fn alloc(&mut self, req: AllocRequest) -> Result<PcpuPtr, AllocError> {
        let (size, align) = (req.size, req.align);
        let page = self.cfg.space.page_size() as usize;
        if size == 0 || size > AREAMAP_MAX_ALLOC || align > page || !align.is_power_of_two() {
            return Err(AllocError::IllegalSizeOrAlign { size, align, max_size: AREAMAP_MAX_ALLOC, max_align: page });
        }
        let (isize, ialign) = (size as i32, align as i32);

        // Reserved requests use the reserved chunk when there is one, and
        // the normal chunks otherwise (__alloc_reserved_percpu).
        let (id, off) = if let (true, Some(rid)) = (req.reserved, self.reserved_chunk) {
            let exhausted = |a: &Self| {
                let c = a.chunk(rid);
                AllocError::ReservedExhausted {
                    size,
                    align,
                    free_bytes: c.free_size as usize,
                    contig_bytes: c.contig_hint as usize,
                }
            };
            if isize > self.chunk(rid).contig_hint {
                return Err(exhausted(self));
            }
            while let Some(n) = self.need_to_extend(rid) {
                self.extend_area_map(rid, n);
            }
            match self.alloc_area(rid, isize, ialign) {
                Some(off) => (rid, off),
                None => return Err(exhausted(self)),
            }
        } else {
            self.alloc_normal(size, align)?
        };

        self.populate(id, off, isize);
        let addr = self.cfg.space.wrapping_add(self.chunk(id).base_addr, off as u64);
        Ok(self.addr_to_ptr(addr))
    }

    /// `free_percpu`; returns the size of the area as the map records it
    /// (the request plus any tail under 4 bytes kept with it and any head
    /// under 4 bytes a later neighbour gave it).
    fn free(&mut self, ptr: PcpuPtr) -> Result<usize, FreeError> {
        if ptr.0 > self.cfg.space.mask() {
            return Err(FreeError::NotPercpu { ptr: ptr.0 });
        }
        let addr = self.ptr_to_addr(ptr);
        let id = self.addr_search(addr).ok_or(FreeError::NotPercpu { ptr: ptr.0 })?;
        let offset = (addr - self.chunk(id).base_addr) as usize;
        if self.chunk(id).hidden_head && offset < self.cfg.static_size {
            return Err(FreeError::Static { ptr: ptr.0, chunk: id, offset });
        }
        let i = self.find_area(id, offset as i32).ok_or(FreeError::NotAllocated { ptr: ptr.0, chunk: id, offset })?;
        let size = -self.chunk(id).map[i] as usize;
        self.free_area_at(id, i);
        // More than one fully free chunk: the kernel wakes the reaper.
        if self.chunk(id).free_size == self.unit_size {
            let last = self.nr_slots - 1;
            if self.slot_list(last).iter().any(|&o| o != id) {
                self.stats.reclaims_scheduled += 1;
            }
        }
        Ok(size)
    }

    /// `pcpu_reclaim`: destroy every fully free chunk but the first on the
    /// last slot.
    fn balance(&mut self) {
        let head = self.nr_slots - 1;
        let list = self.slot_list(head);
        for &id in list.iter().skip(1) {
            if self.chunk(id).immutable {
                tracing::warn!(chunk = id, "immutable percpu chunk on the free slot");
                continue;
            }
            self.destroy_chunk(id);
        }
    }

    fn footprint(&self) -> Footprint {
        let ptr = (self.cfg.space.ptr_bits() / 8) as u64;
        // struct pcpu_chunk of 3.0: list_head, free_size, contig_hint,
        // base_addr, map_used, map_alloc, map, data, immutable, then the
        // populated bitmap in longs.
        let fields = 2 * ptr + 4 + 4 + ptr + 4 + 4 + ptr + ptr + 1;
        let bitmap = (self.unit_pages as u64).div_ceil(8 * ptr) * ptr;
        let chunk_struct = fields.div_ceil(ptr) * ptr + bitmap;
        let page = self.cfg.space.page_size();
        let mut f = Footprint {
            metadata_bytes: self.nr_slots as u64 * 2 * ptr,
            nr_chunks: self.nr_chunks(),
            ..Footprint::default()
        };
        for c in self.chunks.iter().flatten() {
            let hidden = if c.hidden_head { -c.map[0] } else { 0 };
            f.allocated_bytes += (c.extent - c.free_size - hidden) as u64;
            if !c.shares_pages {
                f.populated_bytes += c.nr_populated as u64 * page;
            }
            f.metadata_bytes += chunk_struct + 4 * c.map.len() as u64;
        }
        f
    }
}

impl AreaMapAllocator {
    /// The slot walk of `pcpu_alloc` for normal requests, creating a chunk
    /// when nothing fits.  Returns `(chunk, offset)`.
    fn alloc_normal(&mut self, size: usize, align: usize) -> Result<(usize, i32), AllocError> {
        let (isize, ialign) = (size as i32, align as i32);
        'restart: loop {
            for slot in self.size_to_slot(isize)..self.nr_slots {
                let mut n = self.lists.next(slot);
                while n != slot {
                    let id = self.lists.chunk_of(n).expect("chunk node");
                    let after = self.lists.next(n);
                    self.stats.chunks_walked += 1;
                    if isize > self.chunk(id).contig_hint {
                        n = after;
                        continue;
                    }
                    if let Some(new_alloc) = self.need_to_extend(id) {
                        // The kernel drops pcpu_lock to allocate the new
                        // map, so it walks the slots again.
                        self.extend_area_map(id, new_alloc);
                        self.stats.restarts += 1;
                        continue 'restart;
                    }
                    if let Some(off) = self.alloc_area(id, isize, ialign) {
                        return Ok((id, off));
                    }
                    n = after;
                }
            }
            // No space left: create a new chunk and walk again.
            let id = self.create_chunk().map_err(|reason| AllocError::ChunkCreation { size, align, reason })?;
            self.relocate(id, None);
            self.stats.restarts += 1;
        }
    }
}

#[cfg(test)]
mod tests;
