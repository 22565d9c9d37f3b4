//! # The area-map allocator of 2014-2017 (mm/percpu.c, 3.15 .. 4.13)
//!
//! In 3.15 Al Viro changed what `chunk->map` holds: instead of signed
//! sizes, each entry is the *offset* where an area starts, with bit 0 set
//! when the area is in use, and a sentry entry `map[map_used]` marks the
//! end of the map (`end | 1`).  For bit 0 to be free, every size and every
//! alignment is rounded up to 2.  Sorted offsets gave the allocator two
//! shortcuts the 2009 map ([`crate::areamap`]) did not have:
//!
//! * **`first_free`**: the index of the first entry that may be free ("no
//!   free below this").  `pcpu_alloc_area` starts its first-fit scan there
//!   instead of at entry 0, and `pcpu_free_area` lowers it to the freed
//!   index.  Allocating in a row therefore scans a handful of entries, not
//!   the whole map.
//! * **Binary search on free**: `pcpu_free_area` finds the area by a binary
//!   search for the pair *(offset, in use)* instead of summing sizes from
//!   entry 0.
//!
//! What stayed: the first fit itself (a scan from `first_free`), the
//! `memmove` of the rest of the array on every split and every merge, the
//! slot lists by free size, and a `contig_hint` that knows sizes but not
//! alignment.  Freeing 2^20 4-byte objects in allocation order still moves
//! the whole map per free (each free merges with its free predecessor),
//! and a chunk full of 4-byte holes at offsets 4 mod 8 still makes every
//! 8-aligned 4-byte request scan all the holes (`first_free` stays on the
//! first hole, which does not fit).  These are the costs seed 002 measured:
//! its "area map allocator" is this one, on a 4.13-rc kernel (a80099a152).
//!
//! 3.18 added atomic allocations to it: `pcpu_alloc_area(..., pop_only)`
//! asks `pcpu_fit_in_area` for a place whose pages are all populated,
//! an atomic request never extends a map or creates a chunk, and a balance
//! work item (`pcpu_balance_workfn`) reclaims free chunks, extends the maps
//! atomic requests asked for, and keeps a few empty populated pages.  The
//! model follows that 3.18 .. 4.13 form; the 3.15 .. 3.17 differences are
//! named below.
//!
//! ## Facts checked against the source
//!
//! Read: a 3.15/3.16-era mm/percpu.c (no atomic support, `pcpu_reclaim`
//! work, `pcpu_mem_free(ptr, size)`), a 4.x-era copy with `pcpu_fit_in_area`
//! and `pcpu_need_to_extend(chunk, is_atomic)` (ported into another
//! kernel, whose atomic failure path was cut), the 4.13 percpu-stats patch
//! (`has_reserved`) and the 2017 patch that replaced this allocator (its
//! removed lines are the 4.13-rc code).
//!
//! * `pcpu_alloc` sets `align = 2` when below 2 and rounds the size up to
//!   even (3.15: `size++` when odd; 4.x: `ALIGN(size, 2)`), then refuses
//!   size 0, size > `PCPU_MIN_UNIT_SIZE`, align > `PAGE_SIZE` and (4.x)
//!   an align that is not a power of two.
//! * `pcpu_alloc_area` scans from `first_free` to `map_used`, skipping
//!   entries with bit 0 set.  A free area that does not fit sets
//!   `first_free` to its index if it is the first free one seen
//!   (`seen_free`) and raises `max_contig` to its size.  On a fit, a head
//!   below `sizeof(int)` or a head after a *free* area is merged backwards
//!   (the entry moves up by `head`; after an allocated area the head bytes
//!   join that area and `free_size` drops by them, after a free area that
//!   area grows and `max_contig` sees it).  A tail below `sizeof(int)`
//!   stays in the allocation.  A head or tail that remains is split off by
//!   moving `map_used - i` entries (the sentry included) up by one or two.
//!   A head that is split off counts as the first free seen.  If nothing
//!   free was seen, `first_free = i + 1`.  The hint becomes `max_contig`
//!   when the allocated entry is the last one (a full scan), else
//!   `max(contig_hint, max_contig)`; a failed scan sets it to `max_contig`.
//! * `pcpu_fit_in_area` (3.18+): `head = ALIGN(cand_off, align) - off`;
//!   fail if `this_size < head + size`; without `pop_only` that is the
//!   answer; with it, the first unpopulated page at or after
//!   `PFN_DOWN(off + head)` (up to `PFN_UP(off + this_size)`) must lie at
//!   or after `PFN_UP(off + head + size)`, else the candidate moves to the
//!   end of that unpopulated run and the check repeats.
//! * `pcpu_free_area`: `freeme |= 1`, binary search over `[0, map_used)`
//!   (`i`, `j`, `k = (i + j) / 2`), `BUG_ON` when not found; lowers
//!   `first_free` to the index; clears bit 0; merges with the next entry
//!   when it is free and with the previous one when it is free, moving
//!   `map_used - i` entries down; the hint becomes
//!   `max(map[i + 1] - map[i] - 1, contig_hint)` (the next entry always has
//!   bit 0 set after the merges, hence the `- 1`).
//! * `pcpu_count_occupied_pages` (3.18+, both paths): the pages an area
//!   covers, widened to the page boundary on a side where a free neighbour
//!   reaches it; allocation subtracts them from `pcpu_nr_empty_pop_pages`,
//!   free adds them, both skipping the reserved chunk.
//! * `pcpu_need_to_extend`: 3.15 asks for 3 spare entries; 3.18+ asks for
//!   `PCPU_ATOMIC_MAP_MARGIN_HIGH` (64) spare entries for a normal request
//!   and 3 for an atomic one, which also queues the chunk on
//!   `pcpu_map_extend_chunks` (once) when fewer than
//!   `PCPU_ATOMIC_MAP_MARGIN_LOW` (32) are spare.  The new length is
//!   `PCPU_DFL_MAP_ALLOC` (16) doubled until it covers `map_used + margin`;
//!   `pcpu_extend_area_map` copies all `map_alloc` old entries.
//! * The slot walk of `pcpu_alloc` skips chunks whose hint is below the
//!   size, skips (atomic) or extends and restarts (normal) when the map
//!   needs extending, and after the walk an atomic request fails; a normal
//!   one creates a chunk only when the last slot (fully free chunks) is
//!   empty, then restarts.  The reserved chunk is tried alone: hint check,
//!   extension (an atomic request fails instead), one `pcpu_alloc_area`.
//! * A normal request populates the unpopulated pages of
//!   `[PFN_DOWN(off), PFN_UP(off + size))` with the rounded request size,
//!   then `pcpu_nr_empty_pop_pages < PCPU_EMPTY_POP_PAGES_LOW` (2) schedules
//!   the balance work.
//! * `pcpu_balance_workfn`: destroys every chunk on the last slot but the
//!   first (depopulating it), serves the map-extension list with the
//!   normal margin, then populates up to `PCPU_EMPTY_POP_PAGES_HIGH` (4)
//!   empty pages (all 4 after a failed atomic request, else
//!   `HIGH - nr_empty_pop_pages`) from the first chunk with unpopulated
//!   pages on each slot from `pcpu_size_to_slot(PAGE_SIZE)` up, creating a
//!   chunk when none is left.
//! * First chunk: `map = {1, static_size, (static_size + free) | 1}`, two
//!   entries, on the `__initdata` `smap[PERCPU_DYNAMIC_EARLY_SLOTS]`; with a
//!   reserved area the dynamic chunk's map is
//!   `{1, static + reserved, (static + reserved + dyn) | 1}` on `dmap[]`.
//!   4.13 marks both `has_reserved` (percpu-stats then skips entry 0); a
//!   new chunk has `{0, unit_size | 1}`, `map_used = 1`, 16 entries and
//!   `has_reserved = false`.
//! * `pcpu_chunk_slot`, `pcpu_size_to_slot`, `pcpu_chunk_relocate`
//!   (`list_move` up, `list_move_tail` down, never the reserved chunk) and
//!   the "more than one free chunk" test of `free_percpu` are unchanged
//!   from 2009 (one implementation for both models, `ChunkSlots` in
//!   `areamap/chunks.rs`).
//!
//! Not seen in the copies read, modelled from the surrounding code:
//! `PERCPU_DYNAMIC_EARLY_SLOTS` = 128 (include/linux/percpu.h of 3.x),
//! the atomic failure path setting `pcpu_atomic_alloc_failed` and
//! scheduling the balance work (cut from the 4.x copy; today's
//! mm/percpu.c, which inherited it, does exactly that), and the first
//! chunk adding its dynamic area's occupied pages to
//! `pcpu_nr_empty_pop_pages` (the model counts the fully free populated
//! pages of the first chunk instead, which is the same number; `verify`
//! recomputes it).
//!
//! ## Deviations from the kernel
//!
//! * `align` must be a power of two; 3.15 .. 4.8 did not check this.
//! * Static and reserved sizes must be even (the kernel's are aligned by
//!   the linker script and `pcpu_build_alloc_info`; an odd one would set
//!   the in-use bit of the first free entry), else `OddArea`.
//! * The dynamic area is everything after static + reserved, as in the
//!   2009 model, so both models and the bitmap allocator serve the same
//!   bytes.
//! * The slot walk remembers the next chunk before scanning one
//!   (`list_for_each_entry_safe`), as in the 2009 model.
//! * An entry at index 0 never merges a head backwards (the kernel would
//!   read `map[-1]`; it cannot happen because page 0 of a chunk is always
//!   populated before an atomic request can reach it).
//! * Bad frees are errors, an odd offset included (the kernel's
//!   `freeme |= 1` would find, and free, the area starting one byte
//!   before it); balance work runs when the caller calls
//!   `balance()`, and [`AreaMap2014Stats::balance_scheduled`] counts the
//!   times the kernel would have scheduled it.  Population never fails.
//! * New chunks take `nr_units * unit_size` bytes of vmalloc space, top
//!   down, without guard pages or atom alignment.

use serde::Serialize;

use crate::alloc::{AllocError, AllocRequest, Footprint, FreeError, PcpuPtr, PercpuAllocator};
use crate::areamap::chunks::{extend_map, map_alloc_for, slot_chunk_fields, ChunkSlots, PageBits, SlotChunk, INT_SIZE};
use crate::areamap::lists::align_int;
use crate::areamap::{AreaMapConfig, AreaMapConfigError, AREAMAP_MAX_ALLOC, PCPU_DFL_MAP_ALLOC};

mod verify;

/// `PERCPU_DYNAMIC_EARLY_SLOTS`: entries of the first chunk's static maps.
pub const PERCPU_DYNAMIC_EARLY_SLOTS: usize = 128;
/// Spare entries a normal request wants (3.18+).
pub const PCPU_ATOMIC_MAP_MARGIN_HIGH: usize = 64;
/// Below this many spare entries an atomic request queues an extension.
pub const PCPU_ATOMIC_MAP_MARGIN_LOW: usize = 32;
/// Spare entries an atomic request needs (and every request in 3.15).
pub const ATOMIC_MAP_MARGIN: usize = 3;
pub const PCPU_EMPTY_POP_PAGES_LOW: usize = 2;
pub const PCPU_EMPTY_POP_PAGES_HIGH: usize = 4;

/// `PFN_UP` in units of `page` for a non-negative offset.
fn pfn_up(v: i32, page: i32) -> i32 {
    (v + page - 1) / page
}

/// Work counters, for asserting costs without timing.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AreaMap2014Stats {
    /// Chunks the slot walk looked at, including those skipped by hint.
    pub chunks_walked: u64,
    /// `pcpu_alloc_area` calls.
    pub alloc_area_calls: u64,
    /// `pcpu_alloc_area` calls that found no room.
    pub alloc_area_failures: u64,
    /// Entries stepped over by allocation scans (from `first_free`).
    pub map_entries_scanned: u64,
    /// Entries probed by the binary search of `pcpu_free_area`.
    pub bsearch_probes: u64,
    /// Entries moved by splits and merges (the memmoves).
    pub map_entries_moved: u64,
    /// `pcpu_extend_area_map` calls that grew a map.
    pub map_extensions: u64,
    /// Of those, the ones the balance work did for atomic requests.
    pub async_map_extensions: u64,
    /// Entries copied by the extensions.
    pub map_entries_copied: u64,
    /// Slot walks restarted after a map extension or a chunk creation.
    pub restarts: u64,
    pub chunks_created: u64,
    pub chunks_destroyed: u64,
    pub pages_populated: u64,
    pub pages_depopulated: u64,
    /// Times the kernel would have scheduled `pcpu_balance_work`.
    pub balance_scheduled: u64,
    /// Atomic requests that found no populated room.
    pub atomic_failures: u64,
}

/// One `struct pcpu_chunk` of 3.18 .. 4.13.
#[derive(Clone, Debug)]
struct Chunk {
    /// `map.len()` is `map_alloc`; `map[map_used]` is the sentry, entries
    /// after it are stale.
    map: Vec<i32>,
    map_used: usize,
    free_size: i32,
    contig_hint: i32,
    first_free: usize,
    base_addr: u64,
    populated: PageBits,
    nr_populated: usize,
    immutable: bool,
    /// 4.13: `map[0]` is the static (or static + reserved) area.
    has_reserved: bool,
    /// Shares the first chunk's pages with the reserved chunk.
    shares_pages: bool,
    /// On `pcpu_map_extend_chunks`.
    on_extend_list: bool,
}

impl Chunk {
    /// A chunk over `map[..=map_used]` (the sentry included), its hint
    /// exact (one free area at most).  A first chunk is immutable, fully
    /// populated and 4.13's `has_reserved`; a vm chunk starts unpopulated.
    fn new(map: Vec<i32>, map_used: usize, base_addr: u64, unit_pages: usize, first: bool, shares_pages: bool) -> Self {
        let free = (0..map_used).filter(|&i| map[i] & 1 == 0).map(|i| (map[i + 1] & !1) - map[i]).sum();
        Chunk {
            map,
            map_used,
            free_size: free,
            contig_hint: free,
            first_free: 0,
            base_addr,
            populated: PageBits::new(unit_pages, first),
            nr_populated: if first { unit_pages } else { 0 },
            immutable: first,
            has_reserved: first,
            shares_pages,
            on_extend_list: false,
        }
    }

    fn start(&self, i: usize) -> i32 {
        self.map[i] & !1
    }
    fn in_use(&self, i: usize) -> bool {
        self.map[i] & 1 != 0
    }
    fn end(&self) -> i32 {
        self.start(self.map_used)
    }
    /// `find_next_zero_bit` / `find_next_bit` over the populated bitmap.
    fn next_unpop(&self, from: usize, end: usize) -> (usize, usize) {
        let rs = (from..end).find(|&p| !self.populated.get(p)).unwrap_or(end);
        let re = (rs.min(end)..end).find(|&p| self.populated.get(p)).unwrap_or(end);
        (rs, re)
    }
}

impl SlotChunk for Chunk {
    slot_chunk_fields!();
    fn hides_static(&self) -> bool {
        self.has_reserved
    }
    /// 2014: the hidden area ends at `map[1]`.
    fn allocated_bytes(&self) -> u64 {
        let hidden = if self.has_reserved { self.start(1) } else { 0 };
        (self.end() - self.free_size - hidden) as u64
    }
}

/// The 3.18 .. 4.13 percpu allocator: the chunks on their slot lists
/// (`ChunkSlots` of `areamap/chunks.rs`, shared with the 2009 map), the
/// atomic-allocation state of 3.18 and the work counters.
#[derive(Clone, Debug)]
pub struct AreaMap2014Allocator {
    cfg: AreaMapConfig,
    unit_size: i32,
    unit_pages: usize,
    page_shift: u32,
    slots: ChunkSlots<Chunk>,
    /// `pcpu_map_extend_chunks`, in order.
    extend_list: Vec<usize>,
    /// `pcpu_nr_empty_pop_pages`.
    nr_empty_pop_pages: i64,
    /// `pcpu_atomic_alloc_failed`.
    atomic_alloc_failed: bool,
    stats: AreaMap2014Stats,
}

impl AreaMap2014Allocator {
    /// `pcpu_setup_first_chunk`: the same checks as the 2009 model, then
    /// the first chunk's two-entry maps.
    pub fn new(cfg: AreaMapConfig) -> Result<Self, AreaMapConfigError> {
        cfg.check()?;
        for (what, size) in [("static size", cfg.static_size), ("reserved size", cfg.reserved_size)] {
            if size % 2 != 0 {
                return Err(AreaMapConfigError::OddArea { what, size });
            }
        }
        let unit_pages = cfg.unit_size >> cfg.space.page_shift();
        let slots = ChunkSlots::new(&cfg, |hidden, free, shares_pages| {
            first_chunk_struct(&cfg, unit_pages, hidden, free, shares_pages)
        });
        let mut a = AreaMap2014Allocator {
            unit_size: cfg.unit_size as i32,
            unit_pages,
            page_shift: cfg.space.page_shift(),
            slots,
            extend_list: Vec::new(),
            nr_empty_pop_pages: 0,
            atomic_alloc_failed: false,
            stats: AreaMap2014Stats::default(),
            cfg,
        };
        a.nr_empty_pop_pages = a.empty_pop_pages_of(a.slots.first_chunk) as i64;
        Ok(a)
    }

    /// Work counters since creation.
    pub fn stats(&self) -> AreaMap2014Stats {
        self.stats
    }

    /// The first chunk (once) plus the vm chunks.
    pub fn nr_chunks(&self) -> usize {
        self.slots.nr_chunks()
    }

    pub fn config(&self) -> &AreaMapConfig {
        &self.cfg
    }

    /// `pcpu_nr_empty_pop_pages`.
    pub fn nr_empty_pop_pages(&self) -> i64 {
        self.nr_empty_pop_pages
    }

    fn chunk(&self, id: usize) -> &Chunk {
        self.slots.chunk(id)
    }

    #[cfg(test)]
    fn slot_list(&self, slot: usize) -> Vec<usize> {
        self.slots.list(slot)
    }

    fn schedule_balance(&mut self) {
        self.stats.balance_scheduled += 1;
    }

    // ---- the map ------------------------------------------------------

    /// `pcpu_need_to_extend(chunk, is_atomic)`.
    fn need_to_extend(&mut self, id: usize, is_atomic: bool) -> Option<usize> {
        let c = self.chunk(id);
        let (map_alloc, map_used) = (c.map.len(), c.map_used);
        let margin = if is_atomic {
            if map_alloc < map_used + PCPU_ATOMIC_MAP_MARGIN_LOW && !c.on_extend_list {
                self.slots.chunk_mut(id).on_extend_list = true;
                self.extend_list.push(id);
                self.schedule_balance();
            }
            ATOMIC_MAP_MARGIN
        } else {
            PCPU_ATOMIC_MAP_MARGIN_HIGH
        };
        map_alloc_for(map_alloc, map_used, margin)
    }

    /// `pcpu_extend_area_map`.
    fn extend_area_map(&mut self, id: usize, new_alloc: usize) {
        if let Some(copied) = extend_map(&mut self.slots.chunk_mut(id).map, new_alloc) {
            self.stats.map_extensions += 1;
            self.stats.map_entries_copied += copied;
        }
    }

    /// `pcpu_fit_in_area`: the head to pad after `off`, or `None`.
    fn fit_in_area(&self, c: &Chunk, off: i32, this_size: i32, size: i32, align: i32, pop_only: bool) -> Option<i32> {
        let page = 1i32 << self.page_shift;
        let mut cand_off = off;
        loop {
            let head = align_int(cand_off, align) - off;
            if this_size < head + size {
                return None;
            }
            if !pop_only {
                return Some(head);
            }
            let page_start = ((head + off) / page) as usize;
            let page_end = pfn_up(head + off + size, page) as usize;
            let (rs, re) = c.next_unpop(page_start, pfn_up(off + this_size, page) as usize);
            if rs >= page_end {
                return Some(head);
            }
            cand_off = re as i32 * page;
        }
    }

    /// `pcpu_count_occupied_pages`.
    fn count_occupied_pages(&self, c: &Chunk, i: usize) -> usize {
        let page = 1i32 << self.page_shift;
        let mut off = c.start(i);
        let mut end = c.start(i + 1);
        if off % page != 0 && i > 0 {
            let prev = c.map[i - 1];
            if prev & 1 == 0 && prev <= off / page * page {
                off = off / page * page;
            }
        }
        if end % page != 0 && i + 1 < c.map_used {
            let next = c.map[i + 1];
            let nend = c.start(i + 2);
            if next & 1 == 0 && nend >= pfn_up(end, page) * page {
                end = pfn_up(end, page) * page;
            }
        }
        (end / page - pfn_up(off, page)).max(0) as usize
    }

    /// `pcpu_alloc_area`: first fit from `first_free`.  Returns the offset
    /// and the pages the area occupies.
    fn alloc_area(&mut self, id: usize, size: i32, align: i32, pop_only: bool) -> Option<(i32, usize)> {
        let oslot = self.slots.chunk_slot(id);
        self.stats.alloc_area_calls += 1;
        let mut c = self.slots.take(id);
        let mut max_contig = 0;
        let mut seen_free = false;
        let mut found = None;
        let mut i = c.first_free;
        while i < c.map_used {
            self.stats.map_entries_scanned += 1;
            let mut off = c.map[i];
            if off & 1 != 0 {
                i += 1;
                continue;
            }
            let mut this_size = c.start(i + 1) - off;
            let Some(mut head) = self.fit_in_area(&c, off, this_size, size, align, pop_only) else {
                if !seen_free {
                    c.first_free = i;
                    seen_free = true;
                }
                max_contig = max_contig.max(this_size);
                i += 1;
                continue;
            };
            // A small head, or one after a free area, merges backwards.
            if head != 0 && i > 0 && (head < INT_SIZE || c.map[i - 1] & 1 == 0) {
                off += head;
                c.map[i] = off;
                if c.map[i - 1] & 1 != 0 {
                    c.free_size -= head;
                } else {
                    max_contig = max_contig.max(c.map[i] - c.map[i - 1]);
                }
                this_size -= head;
                head = 0;
            }
            // A small tail stays with the allocation.
            let mut size = size;
            let mut tail = this_size - head - size;
            if tail < INT_SIZE {
                tail = 0;
                size = this_size - head;
            }
            if head != 0 || tail != 0 {
                let nr_extra = usize::from(head != 0) + usize::from(tail != 0);
                c.map.copy_within(i + 1..=c.map_used, i + 1 + nr_extra);
                self.stats.map_entries_moved += (c.map_used - i) as u64;
                c.map_used += nr_extra;
                if head != 0 {
                    if !seen_free {
                        c.first_free = i;
                        seen_free = true;
                    }
                    i += 1;
                    off += head;
                    c.map[i] = off;
                    max_contig = max_contig.max(head);
                }
                if tail != 0 {
                    c.map[i + 1] = off + size;
                    max_contig = max_contig.max(tail);
                }
            }
            if !seen_free {
                c.first_free = i + 1;
            }
            c.contig_hint = if i + 1 == c.map_used { max_contig } else { c.contig_hint.max(max_contig) };
            c.free_size -= size;
            c.map[i] |= 1;
            found = Some((off, self.count_occupied_pages(&c, i)));
            break;
        }
        if found.is_none() {
            c.contig_hint = max_contig;
            self.stats.alloc_area_failures += 1;
        }
        self.slots.put(id, c);
        self.slots.relocate(id, Some(oslot));
        found
    }

    /// The binary search of `pcpu_free_area` for `(freeme, in use)`.
    fn find_area(&mut self, id: usize, freeme: i32) -> Option<usize> {
        let c = self.chunk(id);
        let key = freeme | 1;
        let (mut i, mut j) = (0, c.map_used);
        let mut probes = 0;
        let mut hit = None;
        while i != j {
            let k = (i + j) / 2;
            probes += 1;
            match c.map[k].cmp(&key) {
                std::cmp::Ordering::Less => i = k + 1,
                std::cmp::Ordering::Greater => j = k,
                std::cmp::Ordering::Equal => {
                    hit = Some(k);
                    break;
                }
            }
        }
        self.stats.bsearch_probes += probes;
        hit
    }

    /// The rest of `pcpu_free_area`: entry `i` (in use) becomes free and
    /// merges.  Returns the pages it occupied.
    fn free_area_at(&mut self, id: usize, mut i: usize) -> usize {
        let oslot = self.slots.chunk_slot(id);
        let mut c = self.slots.take(id);
        c.first_free = c.first_free.min(i);
        c.map[i] &= !1;
        c.free_size += c.start(i + 1) - c.map[i];
        let occ = self.count_occupied_pages(&c, i);
        let mut to_free = 0;
        if c.map[i + 1] & 1 == 0 {
            to_free += 1;
        }
        if i > 0 && c.map[i - 1] & 1 == 0 {
            to_free += 1;
            i -= 1;
        }
        if to_free > 0 {
            c.map_used -= to_free;
            c.map.copy_within(i + 1 + to_free..=c.map_used + to_free, i + 1);
            self.stats.map_entries_moved += (c.map_used - i) as u64;
        }
        c.contig_hint = c.contig_hint.max(c.map[i + 1] - c.map[i] - 1);
        self.slots.put(id, c);
        self.slots.relocate(id, Some(oslot));
        occ
    }

    // ---- pages and chunks ---------------------------------------------

    /// `pcpu_populate_chunk` + `pcpu_chunk_populated` on every unpopulated
    /// run of `[start, end)`.
    fn populate_pages(&mut self, id: usize, start: usize, end: usize) {
        let c = self.slots.chunk_mut(id);
        let mut added = 0;
        for p in start..end {
            if !c.populated.get(p) {
                if c.immutable {
                    tracing::warn!(chunk = id, "populating an immutable percpu chunk");
                }
                c.populated.set(p);
                added += 1;
            }
        }
        c.nr_populated += added;
        self.stats.pages_populated += added as u64;
        self.nr_empty_pop_pages += added as i64;
    }

    /// `pcpu_create_chunk` (vm backend): `{0, unit_size | 1}`, nothing
    /// populated.
    fn create_chunk(&mut self) -> Result<usize, String> {
        let mut map = vec![0; PCPU_DFL_MAP_ALLOC];
        map[1] = self.unit_size | 1;
        let id = self.slots.create_vm(|base| Chunk::new(map, 1, base, self.unit_pages, false, false))?;
        self.stats.chunks_created += 1;
        Ok(id)
    }

    /// Depopulate (`pcpu_chunk_depopulated`) and `pcpu_destroy_chunk`.
    fn destroy_chunk(&mut self, id: usize) {
        self.extend_list.retain(|&x| x != id);
        let c = self.slots.remove_vm(id);
        self.stats.pages_depopulated += c.nr_populated as u64;
        self.nr_empty_pop_pages -= c.nr_populated as i64;
        self.stats.chunks_destroyed += 1;
    }

    /// Populated pages of chunk `id` that no in-use area touches.
    fn empty_pop_pages_of(&self, id: usize) -> usize {
        let c = self.chunk(id);
        let page = 1usize << self.page_shift;
        let mut used = vec![false; self.unit_pages];
        for i in (0..c.map_used).filter(|&i| c.in_use(i)) {
            let (s, e) = (c.start(i) as usize, c.start(i + 1) as usize);
            for u in used.iter_mut().take(e.div_ceil(page)).skip(s / page) {
                *u = true;
            }
        }
        (0..self.unit_pages).filter(|&p| c.populated.get(p) && !used[p]).count()
    }
}

impl PercpuAllocator for AreaMap2014Allocator {
    fn name(&self) -> &'static str {
        "areamap2014"
    }

    /// `pcpu_alloc`: size and align rounded up to 2.
    fn alloc(&mut self, req: AllocRequest) -> Result<PcpuPtr, AllocError> {
        let page = self.cfg.space.page_size() as usize;
        let (size, align) = (req.size.div_ceil(2) * 2, req.align.max(2));
        if size == 0 || size > AREAMAP_MAX_ALLOC || align > page || !align.is_power_of_two() {
            return Err(AllocError::IllegalSizeOrAlign {
                size: req.size,
                align: req.align,
                max_size: AREAMAP_MAX_ALLOC,
                max_align: page,
            });
        }
        let (isize, ialign, atomic) = (size as i32, align as i32, req.atomic);
        let found = if let (true, Some(rid)) = (req.reserved, self.slots.reserved_chunk) {
            self.alloc_reserved(rid, isize, ialign, atomic).map_err(|()| {
                let c = self.chunk(rid);
                AllocError::ReservedExhausted {
                    size: req.size,
                    align: req.align,
                    free_bytes: c.free_size as usize,
                    contig_bytes: c.contig_hint as usize,
                }
            })?
        } else {
            self.alloc_normal(isize, ialign, atomic).map_err(|e| match e {
                None => {
                    self.atomic_alloc_failed = true;
                    self.stats.atomic_failures += 1;
                    self.schedule_balance();
                    AllocError::AtomicNoSpace {
                        size: req.size,
                        align: req.align,
                        empty_pop_pages: self.nr_empty_pop_pages.max(0) as usize,
                    }
                }
                Some(reason) => AllocError::ChunkCreation { size: req.size, align: req.align, reason },
            })?
        };
        let (id, off, occ) = found;
        if !atomic {
            let start = off as usize >> self.page_shift;
            let end = (off as usize + size).div_ceil(1 << self.page_shift);
            self.populate_pages(id, start, end);
        }
        if Some(id) != self.slots.reserved_chunk {
            self.nr_empty_pop_pages -= occ as i64;
        }
        if self.nr_empty_pop_pages < PCPU_EMPTY_POP_PAGES_LOW as i64 {
            self.schedule_balance();
        }
        Ok(self.slots.ptr_at(&self.cfg, id, off))
    }

    /// `free_percpu`; returns the area's size as the map records it.
    fn free(&mut self, ptr: PcpuPtr) -> Result<usize, FreeError> {
        let (id, offset) = self.slots.free_target(&self.cfg, ptr)?;
        let bad = FreeError::NotAllocated { ptr: ptr.0, chunk: id, offset };
        if offset % 2 != 0 {
            return Err(bad);
        }
        let i = self.find_area(id, offset as i32).ok_or(bad)?;
        let c = self.chunk(id);
        let size = (c.start(i + 1) - c.start(i)) as usize;
        let occ = self.free_area_at(id, i);
        if Some(id) != self.slots.reserved_chunk {
            self.nr_empty_pop_pages += occ as i64;
        }
        if self.slots.another_free_chunk(id) {
            self.schedule_balance();
        }
        Ok(size)
    }

    /// `pcpu_balance_workfn`.
    fn balance(&mut self) {
        // Reclaim every fully free chunk but the first.
        for id in self.slots.reclaimable() {
            self.destroy_chunk(id);
        }
        // Serve the map extensions atomic requests asked for.
        for id in std::mem::take(&mut self.extend_list) {
            self.slots.chunk_mut(id).on_extend_list = false;
            if let Some(n) = self.need_to_extend(id, false) {
                self.extend_area_map(id, n);
                self.stats.async_map_extensions += 1;
            }
        }
        // Keep a few empty populated pages for atomic requests.
        let high = PCPU_EMPTY_POP_PAGES_HIGH as i64;
        let mut nr_to_pop = if std::mem::take(&mut self.atomic_alloc_failed) {
            high
        } else {
            (high - self.nr_empty_pop_pages).clamp(0, high)
        } as usize;
        while nr_to_pop > 0 {
            for slot in self.slots.size_to_slot(1 << self.page_shift)..self.slots.nr_slots {
                if nr_to_pop == 0 {
                    break;
                }
                let Some(id) =
                    self.slots.list(slot).into_iter().find(|&id| self.chunk(id).nr_populated < self.unit_pages)
                else {
                    continue;
                };
                let mut rs = 0;
                while nr_to_pop > 0 && rs < self.unit_pages {
                    let (s, e) = self.chunk(id).next_unpop(rs, self.unit_pages);
                    if s >= e {
                        break;
                    }
                    let nr = (e - s).min(nr_to_pop);
                    self.populate_pages(id, s, s + nr);
                    nr_to_pop -= nr;
                    rs = e + 1;
                }
            }
            if nr_to_pop == 0 {
                break;
            }
            // Ran out of chunks to populate: create one and retry.
            let Ok(id) = self.create_chunk() else { break };
            self.slots.relocate(id, None);
        }
    }

    fn footprint(&self) -> Footprint {
        let ptr = (self.cfg.space.ptr_bits() / 8) as u64;
        // struct pcpu_chunk of 4.13: list, free_size, contig_hint,
        // base_addr, map_used, map_alloc, map, map_extend_list, data,
        // first_free, immutable, has_reserved, nr_populated, populated[].
        let fields = 2 * ptr + 4 + 4 + ptr + 4 + 4 + ptr + 2 * ptr + ptr + 4 + 1 + 1 + 4;
        let bitmap = (self.unit_pages as u64).div_ceil(8 * ptr) * ptr;
        self.slots.footprint(ptr, fields.div_ceil(ptr) * ptr + bitmap)
    }
}

impl AreaMap2014Allocator {
    /// The reserved-chunk path of `pcpu_alloc`.
    fn alloc_reserved(&mut self, rid: usize, size: i32, align: i32, atomic: bool) -> Result<(usize, i32, usize), ()> {
        if size > self.chunk(rid).contig_hint {
            return Err(());
        }
        while let Some(n) = self.need_to_extend(rid, atomic) {
            if atomic {
                return Err(());
            }
            self.extend_area_map(rid, n);
        }
        self.alloc_area(rid, size, align, atomic).map(|(off, occ)| (rid, off, occ)).ok_or(())
    }

    /// The slot walk of `pcpu_alloc`.  `Err(None)`: an atomic request
    /// found nothing; `Err(Some(reason))`: no chunk could be created.
    fn alloc_normal(&mut self, size: i32, align: i32, atomic: bool) -> Result<(usize, i32, usize), Option<String>> {
        'restart: loop {
            let mut walk = self.slots.walk(self.slots.size_to_slot(size));
            while let Some(id) = self.slots.walk_next(&mut walk) {
                self.stats.chunks_walked += 1;
                if size > self.chunk(id).contig_hint {
                    continue;
                }
                if let Some(new_alloc) = self.need_to_extend(id, atomic) {
                    if atomic {
                        continue;
                    }
                    self.extend_area_map(id, new_alloc);
                    self.stats.restarts += 1;
                    continue 'restart;
                }
                if let Some((off, occ)) = self.alloc_area(id, size, align, atomic) {
                    return Ok((id, off, occ));
                }
            }
            if atomic {
                return Err(None);
            }
            // 3.18+: create a chunk only when no fully free one exists.
            if self.slots.list(self.slots.nr_slots - 1).is_empty() {
                let id = self.create_chunk().map_err(Some)?;
                self.slots.relocate(id, None);
            }
            self.stats.restarts += 1;
        }
    }
}

/// `{1, hidden, (hidden + free) | 1}` (or `{1, hidden | 1}` without free
/// bytes), immutable, fully populated.
fn first_chunk_struct(cfg: &AreaMapConfig, unit_pages: usize, hidden: i32, free: i32, shares_pages: bool) -> Chunk {
    let mut map = vec![0; PERCPU_DYNAMIC_EARLY_SLOTS];
    map[0] = 1;
    map[1] = hidden;
    let mut map_used = 1;
    if free > 0 {
        map_used = 2;
        map[2] = hidden + free;
    }
    map[map_used] |= 1;
    Chunk::new(map, map_used, cfg.first_chunk_base, unit_pages, true, shares_pages)
}

#[cfg(test)]
mod tests;
