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

use serde::Serialize;

use crate::alloc::{AllocError, AllocRequest, Footprint, FreeError, PcpuPtr, PercpuAllocator};
use crate::consts::PCPU_MIN_UNIT_SIZE;

pub(crate) mod chunks;
mod config;
pub(crate) mod lists;
#[cfg(test)]
pub(crate) mod test_util;
mod verify;
use chunks::{extend_map, map_alloc_for, slot_chunk_fields, ChunkSlots, PageBits, SlotChunk, INT_SIZE};
pub use config::{AreaMapConfig, AreaMapConfigError};
use lists::align_int;

/// `PCPU_DFL_MAP_ALLOC`: a new chunk's map starts with 16 entries.
pub const PCPU_DFL_MAP_ALLOC: usize = 16;

/// Entries of the first chunk's static maps (`smap[2]`, `dmap[2]` in
/// 2.6.30-2.6.32; 3.0 used `PERCPU_DYNAMIC_EARLY_SLOTS` = 128).  The first
/// allocation there extends them to `PCPU_DFL_MAP_ALLOC`.
pub const FIRST_CHUNK_MAP_ALLOC: usize = 2;

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
    populated: PageBits,
    nr_populated: usize,
    immutable: bool,
    /// `map[0]` is the hidden static (or static + reserved) area.
    hidden_head: bool,
    /// Shares the first chunk's pages with the static chunk (the dynamic
    /// half of a first chunk split by a reserved area).
    shares_pages: bool,
}

impl Chunk {
    /// A chunk over `map[..map_used]`, its hint exact (one free area at
    /// most).  A first chunk is immutable, fully populated and hides its
    /// first area; a vm chunk starts unpopulated.
    fn new(map: Vec<i32>, map_used: usize, base_addr: u64, unit_pages: usize, first: bool, shares_pages: bool) -> Self {
        let extent = map[..map_used].iter().map(|e| e.abs()).sum();
        let free = map[..map_used].iter().filter(|&&e| e > 0).sum();
        Chunk {
            map,
            map_used,
            extent,
            free_size: free,
            contig_hint: free,
            base_addr,
            populated: PageBits::new(unit_pages, first),
            nr_populated: if first { unit_pages } else { 0 },
            immutable: first,
            hidden_head: first,
            shares_pages,
        }
    }

    fn areas(&self) -> &[i32] {
        &self.map[..self.map_used]
    }
}

impl SlotChunk for Chunk {
    slot_chunk_fields!();
    fn hides_static(&self) -> bool {
        self.hidden_head
    }
    /// 2009: the hidden area is `-map[0]` bytes.
    fn allocated_bytes(&self) -> u64 {
        let hidden = if self.hidden_head { -self.map[0] } else { 0 };
        (self.extent - self.free_size - hidden) as u64
    }
}

/// The 2009-2014 percpu allocator: the chunks on their slot lists
/// (`ChunkSlots` of `areamap/chunks.rs`, shared with the 2014 map) and the
/// work counters.
#[derive(Clone, Debug)]
pub struct AreaMapAllocator {
    cfg: AreaMapConfig,
    unit_size: i32,
    unit_pages: usize,
    page_shift: u32,
    slots: ChunkSlots<Chunk>,
    stats: AreaMapStats,
}

impl AreaMapAllocator {
    /// `pcpu_setup_first_chunk`: validate the geometry and build the first
    /// chunk with the static area hidden at its start.
    pub fn new(cfg: AreaMapConfig) -> Result<Self, AreaMapConfigError> {
        cfg.check()?;
        let unit_pages = cfg.unit_size >> cfg.space.page_shift();
        let slots = ChunkSlots::new(&cfg, |hidden, free, shares_pages| {
            first_chunk_struct(&cfg, unit_pages, hidden, free, shares_pages)
        });
        Ok(AreaMapAllocator {
            unit_size: cfg.unit_size as i32,
            unit_pages,
            page_shift: cfg.space.page_shift(),
            slots,
            stats: AreaMapStats::default(),
            cfg,
        })
    }

    /// Work counters since creation.
    pub fn stats(&self) -> AreaMapStats {
        self.stats
    }

    /// Chunks alive: the first chunk (once, even when a reserved area
    /// splits it into two maps) plus the vm chunks.
    pub fn nr_chunks(&self) -> usize {
        self.slots.nr_chunks()
    }

    pub fn config(&self) -> &AreaMapConfig {
        &self.cfg
    }

    fn chunk(&self, id: usize) -> &Chunk {
        self.slots.chunk(id)
    }

    #[cfg(test)]
    fn slot_list(&self, slot: usize) -> Vec<usize> {
        self.slots.list(slot)
    }

    // ---- the area map -------------------------------------------------

    /// `pcpu_need_to_extend`: the new map length when fewer than two
    /// entries are spare (one allocation can add a head and a tail).
    fn need_to_extend(&self, id: usize) -> Option<usize> {
        let c = self.chunk(id);
        map_alloc_for(c.map.len(), c.map_used, 2)
    }

    /// `pcpu_extend_area_map`: allocate the longer map and copy the old
    /// one (all `map_alloc` entries, as the kernel's memcpy does).
    fn extend_area_map(&mut self, id: usize, new_alloc: usize) {
        if let Some(copied) = extend_map(&mut self.slots.chunk_mut(id).map, new_alloc) {
            self.stats.map_extensions += 1;
            self.stats.map_entries_copied += copied;
        }
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
        let oslot = self.slots.chunk_slot(id);
        let c = self.slots.chunk_mut(id);
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
        self.slots.relocate(id, Some(oslot));
        found
    }

    /// The scan half of `pcpu_free_area`: index of the allocated area at
    /// `freeme`, walking and summing from offset 0.
    fn find_area(&mut self, id: usize, freeme: i32) -> Option<usize> {
        let c = self.slots.chunk(id);
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
        let oslot = self.slots.chunk_slot(id);
        let c = self.slots.chunk_mut(id);
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
        self.slots.relocate(id, Some(oslot));
    }

    /// `pcpu_populate_chunk`: populate the pages `[off, off + size)` covers
    /// that are not populated yet (bookkeeping only).
    fn populate(&mut self, id: usize, off: i32, size: i32) {
        let page = 1usize << self.page_shift;
        let start = off as usize >> self.page_shift;
        let end = (off as usize + size as usize).div_ceil(page);
        let c = self.slots.chunk_mut(id);
        // Quick path: everything is there already.
        if (start..end).all(|p| c.populated.get(p)) {
            return;
        }
        if c.immutable {
            tracing::warn!(chunk = id, "populating an immutable percpu chunk");
        }
        for p in start..end {
            if !c.populated.get(p) {
                c.populated.set(p);
                c.nr_populated += 1;
                self.stats.pages_populated += 1;
            }
        }
    }

    /// `pcpu_create_chunk` for the vm backend: a fresh map of one free
    /// area and `nr_units * unit_size` bytes of vmalloc space, top-down.
    fn create_chunk(&mut self) -> Result<usize, String> {
        let mut map = vec![0; PCPU_DFL_MAP_ALLOC];
        map[0] = self.unit_size;
        let id = self.slots.create_vm(|base| Chunk::new(map, 1, base, self.unit_pages, false, false))?;
        self.stats.chunks_created += 1;
        Ok(id)
    }

    /// `pcpu_depopulate_chunk(chunk, 0, unit_size)` + `pcpu_destroy_chunk`.
    fn destroy_chunk(&mut self, id: usize) {
        let c = self.slots.remove_vm(id);
        self.stats.pages_depopulated += c.nr_populated as u64;
        self.stats.chunks_destroyed += 1;
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
        let (id, off) = if let (true, Some(rid)) = (req.reserved, self.slots.reserved_chunk) {
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
        Ok(self.slots.ptr_at(&self.cfg, id, off))
    }

    /// `free_percpu`; returns the size of the area as the map records it
    /// (the request plus any tail under 4 bytes kept with it and any head
    /// under 4 bytes a later neighbour gave it).
    fn free(&mut self, ptr: PcpuPtr) -> Result<usize, FreeError> {
        let (id, offset) = self.slots.free_target(&self.cfg, ptr)?;
        let i = self.find_area(id, offset as i32).ok_or(FreeError::NotAllocated { ptr: ptr.0, chunk: id, offset })?;
        let size = -self.chunk(id).map[i] as usize;
        self.free_area_at(id, i);
        // More than one fully free chunk: the kernel wakes the reaper.
        if self.slots.another_free_chunk(id) {
            self.stats.reclaims_scheduled += 1;
        }
        Ok(size)
    }

    /// `pcpu_reclaim`: destroy every fully free chunk but the first on the
    /// last slot.
    fn balance(&mut self) {
        for id in self.slots.reclaimable() {
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
        self.slots.footprint(ptr, fields.div_ceil(ptr) * ptr + bitmap)
    }
}

impl AreaMapAllocator {
    /// The slot walk of `pcpu_alloc` for normal requests, creating a chunk
    /// when nothing fits.  Returns `(chunk, offset)`.
    fn alloc_normal(&mut self, size: usize, align: usize) -> Result<(usize, i32), AllocError> {
        let (isize, ialign) = (size as i32, align as i32);
        'restart: loop {
            let mut walk = self.slots.walk(self.slots.size_to_slot(isize));
            while let Some(id) = self.slots.walk_next(&mut walk) {
                self.stats.chunks_walked += 1;
                if isize > self.chunk(id).contig_hint {
                    continue;
                }
                if let Some(new_alloc) = self.need_to_extend(id) {
                    // The kernel drops pcpu_lock to allocate the new map,
                    // so it walks the slots again.
                    self.extend_area_map(id, new_alloc);
                    self.stats.restarts += 1;
                    continue 'restart;
                }
                if let Some(off) = self.alloc_area(id, isize, ialign) {
                    return Ok((id, off));
                }
            }
            // No space left: create a new chunk and walk again.
            let id = self.create_chunk().map_err(|reason| AllocError::ChunkCreation { size, align, reason })?;
            self.slots.relocate(id, None);
            self.stats.restarts += 1;
        }
    }
}

/// A first-chunk map `[-hidden, free]` (or `[-hidden]` without free bytes),
/// immutable and fully populated.
fn first_chunk_struct(cfg: &AreaMapConfig, unit_pages: usize, hidden: i32, free: i32, shares_pages: bool) -> Chunk {
    let mut map = vec![0; FIRST_CHUNK_MAP_ALLOC];
    map[0] = -hidden;
    let mut map_used = 1;
    if free > 0 {
        map[1] = free;
        map_used = 2;
    }
    Chunk::new(map, map_used, cfg.first_chunk_base, unit_pages, true, shares_pages)
}

#[cfg(test)]
mod tests;
