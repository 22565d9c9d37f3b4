//! # The per-chunk bitmap allocator (mm/percpu.c, 2017 bitmap series and
//! 2019 scan_hint series)
//!
//! [`ChunkMap`] is everything mm/percpu.c keeps *inside* one chunk; chunk
//! slots, chunk creation and the balance work live one level up.
//!
//! ## Maps
//!
//! * `alloc_map`: one bit per `PCPU_MIN_ALLOC_SIZE` (4) bytes of a unit;
//!   set = allocated.  `region_bits = nr_pages * page_size / 4`.
//! * `bound_map` (`region_bits + 1` bits): a set bit at every allocation's
//!   first bit and at the bit just past its end.  Free reads the size from
//!   here, so free never needs the caller to say how big the area was.  Only
//!   allocation writes it; stale bits may remain inside free space, which is
//!   harmless because inside an allocated area only its first bit is set.
//! * `populated`: one bit per page, set once the page is backed in every
//!   unit (`pcpu_chunk_populated` / `pcpu_chunk_depopulated`).
//!
//! ## Metadata blocks and hints
//!
//! The bitmap is cut into blocks of `PCPU_BITMAP_BLOCK_SIZE == PAGE_SIZE`
//! bytes, so block `i` is page `i` and holds `page_size / 4` bits.  Each
//! block keeps a `pcpu_block_md`, and the chunk keeps one more, `chunk_md`,
//! over the whole region (see [`BlockHints`]):
//!
//! * `contig_hint`/`contig_hint_start`: the largest free area known.
//! * `scan_hint`/`scan_hint_start`: the largest free area known *before*
//!   the contig hint (when it equals the contig hint it may sit after it).
//!   An allocation bigger than the scan hint can start searching past it.
//! * `left_free`/`right_free`: free bits touching the block's start/end, so
//!   free areas spanning blocks can be assembled without touching the map.
//! * `first_free`: no free bit lies before it; first-fit starts there.
//!
//! Allocation (`pcpu_find_block_fit` then `pcpu_alloc_area`) walks the
//! blocks' hints to find a block whose contig hint (or a run of
//! `right_free + whole blocks + left_free`) can hold the request, then scans
//! the bitmap from that block's `first_free` (or past its scan hint) for a
//! first fit.  Hint upkeep is lazy on purpose:
//!
//! * **alloc**: a block is rescanned only if the allocation broke its contig
//!   hint, and the rescan starts after the scan hint, which is promoted to
//!   contig hint; the chunk is rescanned (over block hints, not bits) only
//!   if the chunk's contig hint was broken.
//! * **free**: the freed area is extended with a backward/forward scan that
//!   stops at block boundaries (or jumps over a neighbouring contig hint);
//!   the chunk is rescanned only when a whole block became free or the free
//!   crossed blocks.
//!
//! ## What may under-report (never over-report)
//!
//! Every hint describes free space that really is free, but hints may miss
//! free space:
//!
//! * A scan hint is the largest area *known* before the contig hint, not the
//!   largest that exists (an allocation inside it drops it, a later smaller
//!   free may replace it).  Promoting it on the alloc path can therefore
//!   leave a block's contig hint smaller than the block's true largest free
//!   area.  Such a forgotten area lies before the contig hint, until an
//!   equal-sized free area with a better alignment moves the contig hint
//!   back before it: then it lies after.  So a block's contig hint has no
//!   lower bound except that it is 0 only for a full block and nr_bits only
//!   for a wholly free one.  It is corrected when a free touches the
//!   forgotten area or a rescan without scan hint passes it.
//! * The chunk's contig hint is "off by up to a page" on the free path by
//!   design: a free inside one block does not look into the neighbours.
//!   Moreover, in the kernel (from the 2019 series to today) the free path's
//!   chunk update passes a block-relative end with a chunk-relative start,
//!   so a free confined to one block other than block 0 does not raise the
//!   chunk's contig hint at all.  The model reproduces that; see
//!   [`ChunkMap::set_free_path_chunk_hint_fix`] to measure the difference.
//!   The chunk's `left_free`/`right_free` are never maintained by the kernel
//!   (nothing reads them) and are not checked.
//! * A block's `right_free` is zeroed by `pcpu_block_refresh_hint`; when
//!   the promoted scan hint is the area at the block's end, nothing sets it
//!   again, so it reads 0 although the block ends free (until a free or a
//!   rescan reaches that area).
//!
//! `left_free`, `free_bytes`, the populated counters and the "block is
//! wholly free" state are always exact.  [`ChunkMap::verify`]
//! checks all of this against the bitmaps.
//!
//! ## Skipping wholly free blocks (a model-level acceleration)
//!
//! `pcpu_chunk_refresh_hint` rebuilds the chunk's hints by walking
//! `pcpu_for_each_md_free_region` from `first_free` (or from past the scan
//! hint) to the end of the chunk, and `pcpu_next_md_free_region` visits
//! every metadata block on the way, wholly free ones included.  An
//! allocation that breaks the chunk's contig hint (every allocation at the
//! front of a mostly free chunk, e.g. seed 002's 1024-byte workload) pays
//! for a walk over all the free blocks after it, which made the model's
//! allocation as slow as the area map's at 1024 bytes.
//!
//! The model therefore keeps one more bitmap per chunk, `free_blocks`: bit
//! `i` is set exactly when block `i` is wholly free (contig hint ==
//! `PCPU_BITMAP_BLOCK_BITS`).  It is updated where a block's free state can
//! change (`pcpu_block_update_hint_alloc` clears the blocks an allocation
//! touches, `pcpu_block_update_hint_free` sets the blocks a free empties).
//! For a wholly free block the kernel's loop does nothing but add a whole
//! block to the free area it is assembling (or start one at the block's
//! first bit: such a block's contig hint touches its end and its
//! `left_free` and `right_free` are the whole block), so
//! the model's `next_md_free_region` finds the end of a run of free blocks
//! with one word-wise bit search and adds the run in closed form.  A chunk
//! refresh then costs O(blocks that are not wholly free) after its start.
//!
//! This changes no result: the regions found, and so every hint value and
//! every allocation decision, are the kernel's (the unit tests compare the
//! accelerated walk with a block-by-block transcription of the kernel's
//! loop on random states, and the differential test runs the whole model).
//! `free_blocks` is not counted in [`ChunkMap::metadata_bytes`], which
//! reports the kernel's metadata, and [`ChunkMap::verify`] checks it, and
//! what the skip relies on, against the blocks.
//!
//! ## Bounding block rescans (a model-level acceleration)
//!
//! `pcpu_block_refresh_hint` walks the free runs of a block's bitmap from
//! `first_free` (or past the scan hint) to the block's end, and the last
//! `find_next_bit` of that walk searches the free space at the block's end
//! word by word.  Filling a chunk front to back, every allocation breaks
//! the block's contig hint and pays for that search over the rest of the
//! block.
//!
//! The model keeps, per block, `alloc_end`: one past the block's last
//! allocated bit (0 if none), so `[alloc_end, block end)` is known free.  A
//! run that starts at or after it ends at the block end without a search,
//! and a run that starts before it ends before it (bit `alloc_end - 1` is
//! allocated), so its search can stop there.  The runs found, and so every
//! hint, are the kernel's.  `alloc_end` is raised where bits are allocated
//! (`pcpu_block_update_hint_alloc`) and recomputed where a free releases a
//! block's last allocation (`pcpu_block_update_hint_free`, with one
//! backward search); it is exact, derived from `alloc_map`, not counted
//! in [`ChunkMap::metadata_bytes`], and [`ChunkMap::verify`] recomputes it.
//!
//! ## Driving it like `pcpu_alloc` and `free_percpu`
//!
//! ```text
//! bits       = ALIGN(size, 4) / 4;   align_bits = max(align, 4) / 4
//! start      = chunk.find_block_fit(bits, align_bits, atomic)   // None: next chunk
//! bit_off    = chunk.alloc_area(bits, align_bits, start)         // None: next chunk
//! pages      = bit_off*4 / page_size .. ceil((bit_off+bits)*4 / page_size)
//! for run in chunk.unpopulated_runs(pages): populate, then chunk.mark_populated(run)
//! byte offset in the unit = bit_off * 4
//! free: chunk.free_area(byte_off / 4) -> bits freed
//! slot (pcpu_chunk_slot) = 0 if free_bytes < 4 or contig_hint_bytes == 0,
//!        the last slot if contig_hint_bytes == unit size,
//!        else max(fls(contig_hint_bytes) - PCPU_SLOT_BASE_SHIFT + 2, 1)
//! ```
//!
//! Take the slot before and after each alloc/free (`pcpu_chunk_relocate`);
//! `nr_empty_pop_pages` before and after gives the global counter's delta.
//!
//! ## Differences from the kernel
//!
//! * `nr_empty_pop_pages` counts exactly the pages that are populated and
//!   wholly free.  The kernel's counter instead drops when an allocation
//!   lands in a free block whether or not it is populated, and
//!   `pcpu_chunk_populated` adds every newly populated page back, so between
//!   `pcpu_alloc_area` and `pcpu_chunk_populated` the kernel's value is
//!   lower (possibly negative).  Both agree whenever every non-empty page is
//!   populated, which `pcpu_alloc` restores before it returns.
//! * Offsets are bits, not bytes, on both sides of [`ChunkMap::alloc_area`]
//!   and [`ChunkMap::free_area`]; free refuses offsets that are not the
//!   start of a live allocation (and the first chunk's hidden head and tail)
//!   instead of corrupting the maps.

mod bits;
mod block;
mod hints;
mod import;
mod verify;

#[cfg(test)]
mod tests;

use std::ops::Range;

use crate::consts::PCPU_MIN_ALLOC_SIZE;

pub use block::BlockHints;
pub use import::{ImportError, KernelChunkState};
pub use verify::VerifyError;

use bits::{words_for, WORD_BITS};
use block::BlockMd;

/// `free_area` was given a bit that does not start a live allocation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bit {bit_off} is not the start of an allocation")]
pub struct NotAllocated {
    pub bit_off: usize,
}

/// The allocator state of one chunk (`struct pcpu_chunk` minus the list
/// linkage, base address and backend data).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkMap {
    page_size: usize,
    nr_pages: usize,
    /// Bits per metadata block (`PCPU_BITMAP_BLOCK_BITS`).
    block_bits: usize,
    /// log2(block_bits): block index and offset by shift and mask, not by
    /// division, on the allocation path (block_bits is a power of two).
    block_shift: u32,
    region_bits: usize,
    alloc_map: Vec<u64>,
    bound_map: Vec<u64>,
    md_blocks: Vec<BlockMd>,
    /// Bit `i` set exactly when `md_blocks[i]` is wholly free (its contig
    /// hint is `block_bits`).  Not kernel state: it lets the chunk-hint scans
    /// skip runs of free blocks (see "Skipping wholly free blocks" above).
    free_blocks: Vec<u64>,
    /// Per block, one past its last allocated bit (block-relative; 0 when
    /// the block has none).  Not kernel state: it bounds the bitmap scans
    /// of `pcpu_block_refresh_hint` (see "Bounding block rescans" above).
    alloc_end: Vec<u32>,
    chunk_md: BlockMd,
    populated: Vec<u64>,
    nr_populated: usize,
    nr_empty_pop_pages: usize,
    free_bytes: usize,
    start_offset: usize,
    end_offset: usize,
    /// Use the chunk-relative end in the free path's chunk update (not the
    /// kernel's behaviour; off by default).
    fix_free_chunk_update: bool,
}

impl ChunkMap {
    /// A dynamic chunk of `nr_pages` pages: all free, none populated
    /// (`pcpu_alloc_chunk`).
    ///
    /// # Panics
    /// If `page_size` is not a power of two of at least 256 bytes (a block
    /// must be whole `u64` words) or `nr_pages` is 0.
    pub fn new(page_size: usize, nr_pages: usize) -> Self {
        assert!(
            page_size.is_power_of_two() && page_size >= WORD_BITS * PCPU_MIN_ALLOC_SIZE,
            "page size {page_size} must be a power of two of at least 256 bytes"
        );
        assert!(nr_pages > 0, "a chunk needs at least one page");
        let block_bits = page_size / PCPU_MIN_ALLOC_SIZE;
        let region_bits = nr_pages * block_bits;
        let mut free_blocks = vec![0; words_for(nr_pages)];
        bits::set_range(&mut free_blocks, 0, nr_pages);
        ChunkMap {
            page_size,
            nr_pages,
            block_bits,
            block_shift: block_bits.trailing_zeros(),
            region_bits,
            alloc_map: vec![0; words_for(region_bits)],
            bound_map: vec![0; words_for(region_bits + 1)],
            md_blocks: vec![BlockMd::new_free(block_bits); nr_pages],
            free_blocks,
            alloc_end: vec![0; nr_pages],
            chunk_md: BlockMd::new_free(region_bits),
            populated: vec![0; words_for(nr_pages)],
            nr_populated: 0,
            nr_empty_pop_pages: 0,
            free_bytes: nr_pages * page_size,
            start_offset: 0,
            end_offset: 0,
            fix_free_chunk_update: false,
        }
    }

    /// `pcpu_alloc_first_chunk`: the mapped region starts `start_offset`
    /// bytes into its first page and covers `map_size` bytes; the head
    /// (`start_offset`) and the tail up to the page boundary (`end_offset`)
    /// are hidden as allocated; all pages are populated.
    ///
    /// # Panics
    /// If `start_offset >= page_size`, `map_size` is 0, or either is not a
    /// multiple of 4 (the kernel guarantees these through
    /// `pcpu_setup_first_chunk`'s alignment checks).
    pub fn new_first_chunk(page_size: usize, start_offset: usize, map_size: usize) -> Self {
        assert!(start_offset < page_size, "start_offset {start_offset} must lie in the first page");
        assert!(map_size > 0, "the first chunk must map something");
        assert!(
            start_offset % PCPU_MIN_ALLOC_SIZE == 0 && map_size % PCPU_MIN_ALLOC_SIZE == 0,
            "start_offset {start_offset} and map_size {map_size} must be multiples of {PCPU_MIN_ALLOC_SIZE}"
        );
        let region_size = (start_offset + map_size).div_ceil(page_size) * page_size;
        let mut chunk = ChunkMap::new(page_size, region_size / page_size);
        chunk.start_offset = start_offset;
        chunk.end_offset = region_size - start_offset - map_size;

        // the first chunk is mapped from the start (immutable in the kernel)
        bits::set_range(&mut chunk.populated, 0, chunk.nr_pages);
        chunk.nr_populated = chunk.nr_pages;
        chunk.nr_empty_pop_pages = chunk.nr_pages;
        chunk.free_bytes = map_size;

        if start_offset != 0 {
            // hide the head: the static (and reserved) area before us
            let head_bits = start_offset / PCPU_MIN_ALLOC_SIZE;
            bits::set_range(&mut chunk.alloc_map, 0, head_bits);
            bits::set_bit(&mut chunk.bound_map, 0);
            bits::set_bit(&mut chunk.bound_map, head_bits);
            chunk.chunk_md.first_free = head_bits as u32;
            chunk.block_update_hint_alloc(0, head_bits);
        }
        if chunk.end_offset != 0 {
            // hide the tail up to the page boundary
            let tail_bits = chunk.end_offset / PCPU_MIN_ALLOC_SIZE;
            let tail_start = chunk.region_bits - tail_bits;
            bits::set_range(&mut chunk.alloc_map, tail_start, tail_bits);
            bits::set_bit(&mut chunk.bound_map, (start_offset + map_size) / PCPU_MIN_ALLOC_SIZE);
            bits::set_bit(&mut chunk.bound_map, chunk.region_bits);
            chunk.block_update_hint_alloc(tail_start, tail_bits);
        }
        chunk
    }

    /// Opt into a corrected free path: the kernel updates `chunk_md` after a
    /// free inside one block with `pcpu_block_update(chunk_md, chunk_off(start),
    /// end)` where `end` is block-relative, so for any block but the first
    /// the chunk's contig hint is not raised.  With the fix the end is made
    /// chunk-relative.  Off by default (the model follows the kernel).
    pub fn set_free_path_chunk_hint_fix(&mut self, fix: bool) {
        self.fix_free_chunk_update = fix;
    }

    pub fn page_size(&self) -> usize {
        self.page_size
    }

    pub fn nr_pages(&self) -> usize {
        self.nr_pages
    }

    /// Bits of the allocation map (`pcpu_chunk_map_bits`).
    pub fn region_bits(&self) -> usize {
        self.region_bits
    }

    /// Bits per metadata block (`PCPU_BITMAP_BLOCK_BITS`, page_size / 4).
    pub fn block_bits(&self) -> usize {
        self.block_bits
    }

    /// Bytes hidden at the start of the first page (first chunk only).
    pub fn start_offset(&self) -> usize {
        self.start_offset
    }

    /// Bytes hidden at the end of the last page (first chunk only).
    pub fn end_offset(&self) -> usize {
        self.end_offset
    }

    pub fn free_bytes(&self) -> usize {
        self.free_bytes
    }

    /// `chunk_md.contig_hint` in bytes; `pcpu_chunk_slot` sorts chunks by
    /// it (slot 0 when it is 0 or `free_bytes < 4`).
    pub fn contig_hint_bytes(&self) -> usize {
        self.chunk_md.contig_hint as usize * PCPU_MIN_ALLOC_SIZE
    }

    pub fn nr_populated(&self) -> usize {
        self.nr_populated
    }

    /// Pages that are populated and wholly free.
    pub fn nr_empty_pop_pages(&self) -> usize {
        self.nr_empty_pop_pages
    }

    /// Is every page of the chunk free (the chunk could be destroyed)?
    pub fn is_wholly_free(&self) -> bool {
        self.free_bytes == self.nr_pages * self.page_size
    }

    pub fn is_page_populated(&self, page: usize) -> bool {
        assert!(page < self.nr_pages, "page {page} beyond chunk of {} pages", self.nr_pages);
        bits::test_bit(&self.populated, page)
    }

    /// Is the page's block wholly free (its contig hint covers it all)?
    pub fn is_page_empty(&self, page: usize) -> bool {
        self.md_blocks[page].is_wholly_free()
    }

    /// The chunk-wide hints (`chunk_md`).  Only `contig_hint*`, `scan_hint*`
    /// and `first_free` mean anything at chunk level.
    pub fn chunk_hints(&self) -> BlockHints {
        BlockHints::from(&self.chunk_md)
    }

    /// The hints of block (page) `block`, offsets relative to the block.
    pub fn block_hints(&self, block: usize) -> BlockHints {
        BlockHints::from(&self.md_blocks[block])
    }

    /// Is bit `bit` allocated in `alloc_map`?
    pub fn is_bit_allocated(&self, bit: usize) -> bool {
        bits::test_bit(&self.alloc_map, bit)
    }

    /// How many bits of `alloc_map` in `range` are allocated (the first
    /// chunk's hidden head and tail count as allocated).
    ///
    /// # Panics
    /// If the range is not within the region.
    pub fn allocated_bits_in(&self, range: Range<usize>) -> usize {
        assert!(
            range.start <= range.end && range.end <= self.region_bits,
            "bit range {range:?} is not within the region's {} bits",
            self.region_bits
        );
        bits::count_ones(&self.alloc_map, range.start, range.end)
    }

    /// `pcpu_chunk_populated`: pages `[page_start, page_end)` are now backed
    /// in every unit.  Already populated pages in the range are left alone.
    ///
    /// # Panics
    /// If the range is not within the chunk.
    pub fn mark_populated(&mut self, page_start: usize, page_end: usize) {
        self.check_page_range(page_start, page_end);
        let mut pos = page_start;
        while pos < page_end {
            let rs = bits::next_zero(&self.populated, pos, page_end);
            let re = bits::next_set(&self.populated, rs, page_end);
            if rs >= re {
                break;
            }
            bits::set_range(&mut self.populated, rs, re - rs);
            self.nr_populated += re - rs;
            self.nr_empty_pop_pages += bits::count_ones(&self.free_blocks, rs, re);
            pos = re;
        }
    }

    /// `pcpu_chunk_depopulated`: pages `[page_start, page_end)` lost their
    /// backing.  Already unpopulated pages in the range are left alone.
    ///
    /// # Panics
    /// If the range is not within the chunk.
    pub fn mark_depopulated(&mut self, page_start: usize, page_end: usize) {
        self.check_page_range(page_start, page_end);
        let mut pos = page_start;
        while pos < page_end {
            let rs = bits::next_set(&self.populated, pos, page_end);
            let re = bits::next_zero(&self.populated, rs, page_end);
            if rs >= re {
                break;
            }
            bits::clear_range(&mut self.populated, rs, re - rs);
            self.nr_populated -= re - rs;
            self.nr_empty_pop_pages -= bits::count_ones(&self.free_blocks, rs, re);
            pos = re;
        }
    }

    fn check_page_range(&self, page_start: usize, page_end: usize) {
        assert!(
            page_start <= page_end && page_end <= self.nr_pages,
            "page range {page_start}..{page_end} is not within the chunk's {} pages",
            self.nr_pages
        );
    }

    /// `pcpu_for_each_unpop_region`: maximal runs of unpopulated pages in
    /// `[page_start, page_end)`.
    pub fn unpopulated_runs(&self, page_start: usize, page_end: usize) -> impl Iterator<Item = Range<usize>> + '_ {
        self.check_page_range(page_start, page_end);
        bits::runs(&self.populated, page_start, page_end, false)
    }

    /// The first run [`Self::unpopulated_runs`] would yield, without the
    /// iterator: the allocation path's check after every allocation.
    #[inline]
    pub fn first_unpopulated_run(&self, page_start: usize, page_end: usize) -> Option<Range<usize>> {
        self.check_page_range(page_start, page_end);
        let rs = bits::next_zero(&self.populated, page_start, page_end);
        (rs < page_end).then(|| rs..bits::next_set(&self.populated, rs, page_end))
    }

    /// `pcpu_for_each_pop_region`: maximal runs of populated pages in
    /// `[page_start, page_end)`.
    pub fn populated_runs(&self, page_start: usize, page_end: usize) -> impl Iterator<Item = Range<usize>> + '_ {
        self.check_page_range(page_start, page_end);
        bits::runs(&self.populated, page_start, page_end, true)
    }

    /// The allocated area (in bits) holding `bit`, or `None` if the bit is
    /// free or outside the region.  The first chunk's hidden head and tail
    /// count as allocations.
    pub fn allocation_containing(&self, bit: usize) -> Option<Range<usize>> {
        if bit >= self.region_bits || !bits::test_bit(&self.alloc_map, bit) {
            return None;
        }
        // inside an allocated area only its first bit is set in bound_map
        let start = bits::prev_set(&self.bound_map, 0, bit + 1)?;
        let end = bits::next_set(&self.bound_map, start + 1, self.region_bits + 1);
        Some(start..end)
    }

    /// Every area in address order as `(bits, allocated)`: each allocation
    /// on its own, each maximal free run as one area (the walk of
    /// `chunk_map_stats`).
    pub fn areas(&self) -> impl Iterator<Item = (Range<usize>, bool)> + '_ {
        let mut pos = 0;
        std::iter::from_fn(move || {
            if pos >= self.region_bits {
                return None;
            }
            let start = pos;
            if bits::test_bit(&self.alloc_map, start) {
                let end = bits::next_set(&self.bound_map, start + 1, self.region_bits + 1);
                // never run past the allocated run even if the maps disagree
                let alloc_end = bits::next_zero(&self.alloc_map, start, self.region_bits);
                pos = end.min(alloc_end);
                Some((start..pos, true))
            } else {
                pos = bits::next_set(&self.alloc_map, start, self.region_bits);
                Some((start..pos, false))
            }
        })
    }

    /// Bytes of allocator metadata: alloc, bound and populated maps, the
    /// metadata blocks and the chunk block (what `pcpu_alloc_chunk`
    /// allocates besides the chunk struct).  The model's own `free_blocks`
    /// bitmap and `alloc_end` array are not kernel metadata and are not
    /// counted.
    pub fn metadata_bytes(&self) -> usize {
        let word = std::mem::size_of::<u64>();
        (self.alloc_map.len() + self.bound_map.len() + self.populated.len()) * word
            + (self.md_blocks.len() + 1) * std::mem::size_of::<BlockMd>()
    }
}
