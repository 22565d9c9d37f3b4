//! The allocation and free paths and their hint upkeep: `pcpu_find_block_fit`
//! (with `pcpu_next_fit_region`), `pcpu_find_zero_area`, `pcpu_alloc_area`,
//! `pcpu_free_area`, `pcpu_block_update_scan`, `pcpu_chunk_refresh_hint`
//! (with `pcpu_next_md_free_region`), `pcpu_block_refresh_hint`,
//! `pcpu_block_update_hint_alloc` and `pcpu_block_update_hint_free`.
//!
//! Offsets named `*_off` inside a block are block-relative; `bit_off` and
//! friends are chunk-relative, as in the kernel.
//!
//! One departure in method, not in result: `next_md_free_region` steps
//! over runs of wholly free blocks through the model's `free_blocks` bitmap,
//! which the alloc and free paths keep in step with the blocks (see
//! "Skipping wholly free blocks" in the `bitmap` module header); and
//! `block_refresh_hint` stops its bitmap searches at the model's
//! `alloc_end` (see "Bounding block rescans" there).

use super::bits;
use super::block::{align_up, regions_overlap};
use super::{ChunkMap, NotAllocated};
use crate::consts::PCPU_MIN_ALLOC_SIZE;

impl ChunkMap {
    /// `pcpu_find_block_fit`: the bit offset at which [`Self::alloc_area`]
    /// should start searching for `alloc_bits` bits aligned to `align_bits`,
    /// or `None` if the hints say no area fits.  With `pop_only` (atomic
    /// requests) only fits whose pages are all populated are accepted.
    ///
    /// Not quite first fit: a block whose contig hint cannot hold the
    /// request is skipped even if a smaller, unrecorded hole would do, and
    /// the chunk is refused outright if its contig hint is too small.
    /// `align_bits` must be a power of two no larger than a block; `None` is
    /// also returned for `alloc_bits == 0` or a bad alignment.
    pub fn find_block_fit(&self, alloc_bits: usize, align_bits: usize, pop_only: bool) -> Option<usize> {
        if !self.request_is_sane(alloc_bits, align_bits) {
            return None;
        }
        // If it does not fit the chunk's contig hint, assume memory pressure
        // and let the caller try another chunk (or make one).
        if !self.chunk_md.fits_contig_hint(alloc_bits, align_bits) {
            return None;
        }
        let mut bit_off = self.chunk_md.next_hint(alloc_bits);
        loop {
            let (off, bits) = self.next_fit_region(alloc_bits, align_bits, bit_off);
            if off >= self.region_bits {
                return None;
            }
            if !pop_only {
                return Some(off);
            }
            match self.first_unpopulated_after(off, bits) {
                None => return Some(off),
                Some(next_off) => bit_off = next_off,
            }
        }
    }

    fn request_is_sane(&self, alloc_bits: usize, align_bits: usize) -> bool {
        alloc_bits > 0
            && alloc_bits <= self.region_bits
            && align_bits.is_power_of_two()
            && align_bits <= self.block_bits
    }

    /// `pcpu_is_populated`: `None` if every page under `[bit_off, bit_off +
    /// bits)` is populated, else the first bit after the first unpopulated
    /// run (where the search should resume).
    fn first_unpopulated_after(&self, bit_off: usize, bits: usize) -> Option<usize> {
        // a block is a page: bit / block_bits is its page
        let page_start = bit_off >> self.block_shift;
        let page_end = (bit_off + bits + self.block_bits - 1) >> self.block_shift;
        let rs = bits::next_zero(&self.populated, page_start, page_end);
        if rs >= page_end {
            return None;
        }
        let re = bits::next_set(&self.populated, rs + 1, page_end);
        Some(re * self.block_bits)
    }

    /// `pcpu_next_fit_region`: starting at `bit_off`, the next place an
    /// aligned `alloc_bits` request fits according to the block hints, as
    /// `(offset, bits)`; offset `region_bits` when there is none.
    ///
    /// When the request fits a block's contig hint the offset returned is
    /// the block's `pcpu_next_hint` (first_free or past the scan hint), so
    /// the bitmap scan can still find an earlier first fit.
    fn next_fit_region(&self, alloc_bits: usize, align: usize, mut bit_off: usize) -> (usize, usize) {
        let bb = self.block_bits;
        let mut i = bit_off >> self.block_shift;
        let mut block_off = bit_off & (bb - 1);
        let mut bits = 0;
        while i < self.md_blocks.len() {
            let block = &self.md_blocks[i];
            let left_free = block.left_free as usize;
            // an area that spilled over from the previous block(s)
            if bits != 0 {
                bits += left_free;
                if bits >= alloc_bits {
                    return (bit_off, bits);
                }
                if left_free == bb {
                    i += 1;
                    continue;
                }
            }

            // does the request fit this block's contig hint (and was that
            // hint not already passed in an earlier round)?
            let (cs, ch) = block.contig();
            bits = align_up(cs, align) - cs;
            if ch != 0 && cs >= block_off && ch >= bits + alloc_bits {
                let start = block.next_hint(alloc_bits);
                bits += alloc_bits + cs - start;
                return (i * bb + start, bits);
            }
            block_off = 0;

            // otherwise start an area from the block's right_free
            let off = align_up(bb - block.right_free as usize, align);
            bits = bb - off;
            bit_off = i * bb + off;
            if bits >= alloc_bits {
                return (bit_off, bits);
            }
            i += 1;
        }
        (self.region_bits, 0)
    }

    /// `pcpu_next_md_free_region`: starting at `bit_off`, the next free area
    /// the block hints know of (a block's contig hint that does not touch
    /// its end, or a run `right_free + whole free blocks + left_free`), as
    /// `(offset, bits)`; offset `>= region_bits` when there is none.
    ///
    /// The kernel visits the blocks one by one; runs of wholly free blocks
    /// are taken here in one step through `free_blocks` (see "Skipping
    /// wholly free blocks" in the module header of `bitmap`), with the same
    /// result.
    pub(super) fn next_md_free_region(&self, mut bit_off: usize) -> (usize, usize) {
        let bb = self.block_bits;
        let nr_blocks = self.md_blocks.len();
        let mut i = bit_off >> self.block_shift;
        let mut block_off = bit_off & (bb - 1);
        let mut bits = 0;
        while i < nr_blocks {
            if bits::test_bit(&self.free_blocks, i) {
                // Blocks [i, run_end) are wholly free: left_free == right_free
                // == bb and contig hint (0, bb), which touches the block end.
                // The kernel adds each one's left_free to the area it is
                // assembling or, with none under way, starts one from the
                // first block's right_free, i.e. at its first bit.
                let run_end = bits::next_zero(&self.free_blocks, i, nr_blocks);
                if bits == 0 {
                    bit_off = i * bb;
                }
                bits += (run_end - i) * bb;
                block_off = 0;
                i = run_end;
                continue;
            }
            let block = &self.md_blocks[i];
            if bits != 0 {
                // not wholly free, so left_free < bb: the area ends here
                return (bit_off, bits + block.left_free as usize);
            }

            // a contig hint inside the block, not seen before and not the
            // right_free area (that one is assembled across blocks)
            let (cs, ch) = block.contig();
            if ch != 0 && cs >= block_off && ch + cs < bb {
                return (i * bb + cs, ch);
            }
            block_off = 0;

            bits = block.right_free as usize;
            bit_off = (i + 1) * bb - bits;
            i += 1;
        }
        (bit_off, bits)
    }

    /// `pcpu_find_zero_area`: first `nr` clear bits in `[start, size)` whose
    /// start is aligned to `align_mask + 1`; returns a value `> size - nr`
    /// if there is none.  Remembers in `largest` the largest area it skipped
    /// because the request did not fit (not those skipped for alignment).
    fn find_zero_area(
        &self,
        size: usize,
        mut start: usize,
        nr: usize,
        align_mask: usize,
        largest: &mut (usize, usize),
    ) -> usize {
        // The kernel aligns up the next zero bit and retries past any busy
        // bit; the only positions where that loop can stop or record a
        // skipped area are successive aligned free bits, so jump straight
        // to those (a busy aligned position records a zero-length area,
        // which never reaches pcpu_block_update_scan).
        loop {
            let index = if align_mask == 0 {
                bits::next_zero(&self.alloc_map, start, size)
            } else {
                bits::next_aligned_zero(&self.alloc_map, start, size, align_mask)
            };
            let end = index + nr;
            if end > size {
                return end;
            }
            let busy = bits::next_set(&self.alloc_map, index, end);
            if busy >= end {
                return index;
            }
            let (area_off, area_bits) = (index, busy - index);
            let (largest_off, largest_bits) = *largest;
            if area_bits > largest_bits
                || (area_bits == largest_bits
                    && largest_off != 0
                    && (area_off == 0 || area_off.trailing_zeros() > largest_off.trailing_zeros()))
            {
                *largest = (area_off, area_bits);
            }
            start = busy + 1;
        }
    }

    /// `pcpu_alloc_area`: allocate `alloc_bits` bits aligned to
    /// `align_bits`, first fit from `start` (which should come from
    /// [`Self::find_block_fit`]: the hints are only kept right for starts
    /// the kernel would use).  Searches at most one block past the request.
    /// Returns the bit offset, or `None` (state unchanged) if nothing fits.
    pub fn alloc_area(&mut self, alloc_bits: usize, align_bits: usize, start: usize) -> Option<usize> {
        if !self.request_is_sane(alloc_bits, align_bits) || start >= self.region_bits {
            return None;
        }
        let end = (start + alloc_bits + self.block_bits).min(self.region_bits);
        let mut largest = (0, 0);
        let bit_off = self.find_zero_area(end, start, alloc_bits, align_bits - 1, &mut largest);
        if bit_off >= end {
            return None;
        }
        if largest.1 != 0 {
            self.block_update_scan(largest.0, largest.1);
        }

        bits::set_range(&mut self.alloc_map, bit_off, alloc_bits);
        bits::set_bit(&mut self.bound_map, bit_off);
        bits::clear_range(&mut self.bound_map, bit_off + 1, alloc_bits - 1);
        bits::set_bit(&mut self.bound_map, bit_off + alloc_bits);

        self.free_bytes -= alloc_bits * PCPU_MIN_ALLOC_SIZE;

        if bit_off == self.chunk_md.first_free as usize {
            self.chunk_md.first_free = bits::next_zero(&self.alloc_map, bit_off + alloc_bits, self.region_bits) as u32;
        }
        self.block_update_hint_alloc(bit_off, alloc_bits);
        Some(bit_off)
    }

    /// `pcpu_free_area`: free the allocation starting at `bit_off`; returns
    /// its size in bits.  A bit that does not start a live allocation (or
    /// starts the first chunk's hidden head or tail) is refused and leaves
    /// the state unchanged.
    pub fn free_area(&mut self, bit_off: usize) -> Result<usize, NotAllocated> {
        let err = NotAllocated { bit_off };
        if bit_off >= self.region_bits
            || !bits::test_bit(&self.bound_map, bit_off)
            || !bits::test_bit(&self.alloc_map, bit_off)
            || self.is_hidden(bit_off)
        {
            return Err(err);
        }
        let end = bits::next_set(&self.bound_map, bit_off + 1, self.region_bits);
        let nr = end - bit_off;
        bits::clear_range(&mut self.alloc_map, bit_off, nr);
        self.free_bytes += nr * PCPU_MIN_ALLOC_SIZE;
        self.chunk_md.first_free = self.chunk_md.first_free.min(bit_off as u32);
        self.block_update_hint_free(bit_off, nr);
        Ok(nr)
    }

    /// Is `bit` inside the first chunk's hidden head or tail?
    fn is_hidden(&self, bit: usize) -> bool {
        bit < self.start_offset / PCPU_MIN_ALLOC_SIZE || bit >= self.region_bits - self.end_offset / PCPU_MIN_ALLOC_SIZE
    }

    /// `pcpu_block_update_scan`: report a free area the allocation scan
    /// skipped.  Alignment may have hidden free bits before it, so extend it
    /// backwards first.  Areas crossing a block end are not reported.
    fn block_update_scan(&mut self, bit_off: usize, bits: usize) {
        let bb = self.block_bits;
        let index = bit_off >> self.block_shift;
        let s_off = bit_off & (bb - 1);
        let e_off = s_off + bits;
        if e_off > bb {
            return;
        }
        let base = index * bb;
        let s_off = bits::prev_set(&self.alloc_map, base, base + s_off).map_or(0, |l| l + 1 - base);
        self.md_blocks[index].update(s_off, e_off);
        // the area ends at a busy bit or the block end and was skipped, so
        // the block's free state does not change; kept in step regardless
        self.sync_free_block(index);
    }

    /// Set `free_blocks` bit `index` from block `index`'s contig hint.
    #[inline]
    fn sync_free_block(&mut self, index: usize) {
        if self.md_blocks[index].is_wholly_free() {
            bits::set_bit(&mut self.free_blocks, index);
        } else {
            bits::clear_bit(&mut self.free_blocks, index);
        }
    }

    /// `pcpu_chunk_refresh_hint`: recompute the chunk's hints from the block
    /// hints.  Without `full_scan` (alloc path) the scan hint is promoted to
    /// contig hint and only what lies after it is looked at.
    pub(super) fn chunk_refresh_hint(&mut self, full_scan: bool) {
        let md = &mut self.chunk_md;
        let mut bit_off;
        if !full_scan && md.scan_hint != 0 {
            bit_off = (md.scan_hint_start + md.scan_hint) as usize;
            md.contig_hint_start = md.scan_hint_start;
            md.contig_hint = md.scan_hint;
            md.scan_hint = 0;
        } else {
            bit_off = md.first_free as usize;
            md.contig_hint = 0;
        }
        loop {
            let (off, bits) = self.next_md_free_region(bit_off);
            if off >= self.region_bits {
                break;
            }
            self.chunk_md.update(off, off + bits);
            bit_off = off + bits + 1;
            // the next region would start past the end: stop without
            // another call (the kernel's loop finds nothing there)
            if bit_off >= self.region_bits {
                break;
            }
        }
    }

    /// `pcpu_block_refresh_hint`: rescan block `index`'s bitmap.  If a scan
    /// hint is known it becomes the contig hint and only what lies after it
    /// is scanned; otherwise the scan starts at first_free.
    fn block_refresh_hint(&mut self, index: usize) {
        let bb = self.block_bits;
        let block = &mut self.md_blocks[index];
        let start;
        if block.scan_hint != 0 {
            start = (block.scan_hint_start + block.scan_hint) as usize;
            block.contig_hint_start = block.scan_hint_start;
            block.contig_hint = block.scan_hint;
            block.scan_hint = 0;
        } else {
            start = block.first_free as usize;
            block.contig_hint = 0;
        }
        block.right_free = 0;

        // every maximal free run in [start, bb), as bits::runs yields them,
        // without the iterator's extra search past the last run
        let (base, end) = (index * bb, (index + 1) * bb);
        // [used_end, end) is free and bit used_end - 1 is allocated, so a
        // run ends at the block end or before used_end (see "Bounding block
        // rescans" in the module header)
        let used_end = base + self.alloc_end[index] as usize;
        // checked builds also run the unbounded walk and compare
        #[cfg(any(test, debug_assertions))]
        let mut reference = *block;
        let mut pos = base + start.min(bb);
        while pos < end {
            let rs = bits::next_zero(&self.alloc_map, pos, end);
            if rs >= end {
                break;
            }
            let re = if rs >= used_end { end } else { bits::next_set(&self.alloc_map, rs, used_end) };
            block.update(rs - base, re - base);
            pos = re;
        }
        #[cfg(any(test, debug_assertions))]
        {
            for run in bits::runs(&self.alloc_map, base + start.min(bb), end, false) {
                reference.update(run.start - base, run.end - base);
            }
            assert_eq!(*block, reference, "bounded rescan of block {index} differs from the full walk");
        }
    }

    /// 1 if page `index` is populated: an empty block only counts in
    /// `nr_empty_pop_pages` when its page is populated (see the module
    /// header).
    #[inline]
    fn populated_count(&self, index: usize) -> usize {
        bits::test_bit(&self.populated, index) as usize
    }

    /// `pcpu_block_update_hint_alloc`: `[bit_off, bit_off + bits)` was just
    /// allocated.  A block is rescanned only if its contig hint was broken,
    /// the chunk only if the chunk's contig hint was.
    pub(super) fn block_update_hint_alloc(&mut self, bit_off: usize, bits: usize) {
        let bb = self.block_bits;
        let s_index = bit_off >> self.block_shift;
        let e_index = (bit_off + bits - 1) >> self.block_shift;
        let s_off = bit_off & (bb - 1);
        let e_off = ((bit_off + bits - 1) & (bb - 1)) + 1;
        let mut emptied_pages = 0;
        // every block the allocation touches now holds allocated bits
        if s_index == e_index {
            bits::clear_bit(&mut self.free_blocks, s_index);
        } else {
            bits::clear_range(&mut self.free_blocks, s_index, e_index + 1 - s_index);
        }
        self.raise_alloc_end(s_index, e_index, e_off);

        // the start block
        if self.md_blocks[s_index].is_wholly_free() {
            emptied_pages += self.populated_count(s_index);
        }
        let s_base = s_index * bb;
        if s_off == self.md_blocks[s_index].first_free as usize {
            let next = bits::next_zero(&self.alloc_map, (s_base + s_off + bits).min(s_base + bb), s_base + bb);
            self.md_blocks[s_index].first_free = (next - s_base) as u32;
        }
        let s_block = &mut self.md_blocks[s_index];
        let (ss, sh) = s_block.scan();
        if regions_overlap(ss, ss + sh, s_off, s_off + bits) {
            s_block.scan_hint = 0;
        }
        let (cs, ch) = s_block.contig();
        if regions_overlap(cs, cs + ch, s_off, s_off + bits) {
            // contig hint broken: rescan the block
            if s_off == 0 {
                s_block.left_free = 0;
            }
            self.block_refresh_hint(s_index);
        } else {
            s_block.left_free = s_block.left_free.min(s_off as u32);
            s_block.right_free = if s_index == e_index { s_block.right_free.min((bb - e_off) as u32) } else { 0 };
        }

        if s_index != e_index {
            // the end block: the allocation covers its left part [0, e_off)
            if self.md_blocks[e_index].is_wholly_free() {
                emptied_pages += self.populated_count(e_index);
            }
            let e_base = e_index * bb;
            let next = bits::next_zero(&self.alloc_map, e_base + e_off, e_base + bb);
            self.md_blocks[e_index].first_free = (next - e_base) as u32;

            // blocks in [s_index + 1, full_end) are now wholly allocated
            let full_end = if e_off == bb {
                e_index + 1
            } else {
                let e_block = &mut self.md_blocks[e_index];
                if e_off > e_block.scan_hint_start as usize {
                    e_block.scan_hint = 0;
                }
                e_block.left_free = 0;
                if e_off > e_block.contig_hint_start as usize {
                    self.block_refresh_hint(e_index);
                } else {
                    e_block.right_free = e_block.right_free.min((bb - e_off) as u32);
                }
                e_index
            };

            // the blocks in between were wholly free
            emptied_pages += bits::count_ones(&self.populated, s_index + 1, e_index);
            for block in &mut self.md_blocks[s_index + 1..full_end] {
                block.scan_hint = 0;
                block.contig_hint = 0;
                block.left_free = 0;
                block.right_free = 0;
            }
        }
        self.nr_empty_pop_pages -= emptied_pages;

        let md = &mut self.chunk_md;
        let (ss, sh) = md.scan();
        if regions_overlap(ss, ss + sh, bit_off, bit_off + bits) {
            md.scan_hint = 0;
        }
        // Only a broken chunk contig hint needs a chunk rescan; otherwise a
        // smaller area was used and the hint still holds.
        let (cs, ch) = md.contig();
        if regions_overlap(cs, cs + ch, bit_off, bit_off + bits) {
            self.chunk_refresh_hint(false);
        }
    }

    /// The model's `alloc_end` after allocating up to block-relative
    /// `e_off` of block `e_index`, from block `s_index` on: the blocks
    /// before `e_index` are allocated to their end.
    #[inline]
    fn raise_alloc_end(&mut self, s_index: usize, e_index: usize, e_off: usize) {
        let bb = self.block_bits as u32;
        for end in &mut self.alloc_end[s_index..e_index] {
            *end = bb;
        }
        let end = &mut self.alloc_end[e_index];
        *end = (*end).max(e_off as u32);
    }

    /// The model's `alloc_end` after freeing `[bit_off, bit_off + bits)`
    /// (already cleared in `alloc_map`): a block whose last allocation was
    /// freed searches back for the one before it.
    fn lower_alloc_end(&mut self, s_index: usize, e_index: usize, s_off: usize, e_off: usize) {
        let bb = self.block_bits;
        // the part freed in block s_index ends at s_end; bit s_end - 1 was
        // allocated, so alloc_end was at least s_end
        let s_end = if s_index == e_index { e_off } else { bb };
        if self.alloc_end[s_index] as usize <= s_end {
            let base = s_index * bb;
            let last = bits::prev_set(&self.alloc_map, base, base + s_off);
            self.alloc_end[s_index] = last.map_or(0, |l| l + 1 - base) as u32;
        }
        if s_index != e_index {
            // the blocks after s_index were freed from their first bit
            for end in &mut self.alloc_end[s_index + 1..e_index] {
                *end = 0;
            }
            let end = &mut self.alloc_end[e_index];
            if *end as usize <= e_off {
                *end = 0;
            }
        }
    }

    /// `pcpu_block_update_hint_free`: `[bit_off, bit_off + bits)` was just
    /// freed.  The free area is grown to its full extent inside the start
    /// and end blocks (jumping over an adjacent contig hint instead of
    /// scanning when possible).  The chunk is rescanned only if a whole
    /// block became free or the free crossed blocks.
    fn block_update_hint_free(&mut self, bit_off: usize, bits: usize) {
        let bb = self.block_bits;
        let s_index = bit_off >> self.block_shift;
        let e_index = (bit_off + bits - 1) >> self.block_shift;
        let s_off = bit_off & (bb - 1);
        let e_off = ((bit_off + bits - 1) & (bb - 1)) + 1;
        let (s_base, e_base) = (s_index * bb, e_index * bb);
        let mut emptied_pages = 0;
        self.lower_alloc_end(s_index, e_index, s_off, e_off);

        // start of the whole free area within the start block
        let (cs, ch) = self.md_blocks[s_index].contig();
        let start = if s_off == cs + ch {
            cs
        } else {
            bits::prev_set(&self.alloc_map, s_base, s_base + s_off).map_or(0, |l| l + 1 - s_base)
        };
        // end of the whole free area within the end block
        let (cs, ch) = self.md_blocks[e_index].contig();
        let end =
            if e_off == cs { cs + ch } else { bits::next_set(&self.alloc_map, e_base + e_off, e_base + bb) - e_base };

        let s_end = if s_index == e_index { end } else { bb };
        if start == 0 && s_end == bb {
            emptied_pages += self.populated_count(s_index);
            bits::set_bit(&mut self.free_blocks, s_index);
        }
        self.md_blocks[s_index].update(start, s_end);

        if s_index != e_index {
            if end == bb {
                emptied_pages += self.populated_count(e_index);
                bits::set_bit(&mut self.free_blocks, e_index);
            }
            self.md_blocks[e_index].update(0, end);

            // blocks in between are now wholly free
            emptied_pages += bits::count_ones(&self.populated, s_index + 1, e_index);
            bits::set_range(&mut self.free_blocks, s_index + 1, e_index - s_index - 1);
            for block in &mut self.md_blocks[s_index + 1..e_index] {
                block.first_free = 0;
                block.scan_hint = 0;
                block.contig_hint_start = 0;
                block.contig_hint = bb as u32;
                block.left_free = bb as u32;
                block.right_free = bb as u32;
            }
        }
        self.nr_empty_pop_pages += emptied_pages;

        // (block-relative `end - start` only means something in one block)
        if s_index != e_index || end - start >= bb {
            self.chunk_refresh_hint(true);
        } else if self.fix_free_chunk_update {
            self.chunk_md.update(s_base + start, s_base + end);
        } else {
            // The kernel passes the block-relative end here; for any block
            // but the first this is an empty (negative) area that only
            // lowers first_free.  Kept to model the kernel.
            self.chunk_md.update(s_base + start, end);
        }
    }
}
