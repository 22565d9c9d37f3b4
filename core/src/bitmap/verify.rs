//! [`ChunkMap::verify`]: recompute from the bitmaps what every hint and
//! counter may claim, and check the claims.
//!
//! What is checked is what the kernel's update strategy guarantees, no
//! more (see the module header of `bitmap` for why hints under-report):
//!
//! * exact: per-block `left_free`, "block wholly free" (contig hint ==
//!   nr_bits), `free_bytes`, `nr_populated`, `nr_empty_pop_pages`;
//! * never over-reported: per-block `right_free` (it under-reports after a
//!   scan hint that ends the block is promoted by `pcpu_block_refresh_hint`,
//!   which zeroes `right_free` and scans only after the promoted area);
//!   every contig and scan hint area lies inside its
//!   block (or the region) and is free, a scan hint is no larger than its
//!   contig hint and sits after it only when equal to it, `first_free` is at
//!   or before the first free bit;
//! * per block, the only lower bound the strategy keeps: a contig hint of 0
//!   means the block is full (and nr_bits that it is wholly free).  A larger
//!   free area than the contig hint may exist anywhere in the block, before
//!   or after it, and the chunk's hints have no lower bound (see the
//!   `bitmap` module header);
//! * maps: every run of allocated bits starts and ends at a bound bit; the
//!   first chunk's hidden head and tail are allocated;
//! * the model's `free_blocks` bitmap (not kernel state): bit `i` is set
//!   exactly when block `i` is wholly free, no bit past the last block is
//!   set, and a wholly free block has what the chunk-hint walk assumes when
//!   it skips it: contig hint starting at 0, `left_free` and `right_free`
//!   both the whole block;
//! * the model's `alloc_end` (not kernel state): exactly one past each
//!   block's last allocated bit, 0 for a block with none.

use super::bits;
use super::block::BlockMd;
use super::ChunkMap;
use crate::consts::PCPU_MIN_ALLOC_SIZE;

/// A hint, counter or map bit that disagrees with the bitmaps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A per-page metadata block (offsets block-relative).
    #[error("block {block}: {field} is {stored}, recomputed {recomputed}: {rule}")]
    Block { block: usize, field: &'static str, stored: usize, recomputed: usize, rule: &'static str },
    /// The chunk-wide `chunk_md` (offsets chunk-relative).
    #[error("chunk_md: {field} is {stored}, recomputed {recomputed}: {rule}")]
    ChunkHint { field: &'static str, stored: usize, recomputed: usize, rule: &'static str },
    /// A chunk counter (`free_bytes`, `nr_populated`, `nr_empty_pop_pages`).
    #[error("chunk: {field} is {stored}, recomputed {recomputed}: {rule}")]
    Counter { field: &'static str, stored: usize, recomputed: usize, rule: &'static str },
    /// The model's `alloc_end` of block `block` is not one past its last
    /// allocated bit.
    #[error("alloc_end of block {block} is {stored}, recomputed {recomputed}")]
    AllocEnd { block: usize, stored: usize, recomputed: usize },
    /// The model's `free_blocks` bitmap disagrees with block `block`.
    #[error("free_blocks bit {block} is {stored}: {rule}")]
    FreeBlocks { block: usize, stored: bool, rule: &'static str },
    /// `bound_map` or the hidden areas of `alloc_map`.
    #[error("{map} bit {bit} is {stored}, expected {expected}: {rule}")]
    MapBit { map: &'static str, bit: usize, stored: bool, expected: bool, rule: &'static str },
}

/// Where a hint lives, to build the right error variant.
#[derive(Copy, Clone)]
enum Owner {
    Block(usize),
    Chunk,
}

impl Owner {
    fn err(self, field: &'static str, stored: usize, recomputed: usize, rule: &'static str) -> VerifyError {
        match self {
            Owner::Block(block) => VerifyError::Block { block, field, stored, recomputed, rule },
            Owner::Chunk => VerifyError::ChunkHint { field, stored, recomputed, rule },
        }
    }
}

fn check(ok: bool, err: impl FnOnce() -> VerifyError) -> Result<(), VerifyError> {
    if ok {
        Ok(())
    } else {
        Err(err())
    }
}

impl ChunkMap {
    /// Recompute every hint and counter from the bitmaps and check them
    /// (see the `verify` module docs for exactly what is guaranteed).
    pub fn verify(&self) -> Result<(), VerifyError> {
        let bb = self.block_bits;
        let mut empty_pop_pages = 0;
        for (index, block) in self.md_blocks.iter().enumerate() {
            self.verify_block(index, block)?;
            if block.is_wholly_free() && bits::test_bit(&self.populated, index) {
                empty_pop_pages += 1;
            }
        }
        self.verify_hints(Owner::Chunk, &self.chunk_md, 0, self.region_bits, false)?;

        let free_bits = self.region_bits - bits::count_ones(&self.alloc_map, 0, self.region_bits);
        let counter = |field, stored, recomputed, rule| VerifyError::Counter { field, stored, recomputed, rule };
        check(self.free_bytes == free_bits * PCPU_MIN_ALLOC_SIZE, || {
            counter(
                "free_bytes",
                self.free_bytes,
                free_bits * PCPU_MIN_ALLOC_SIZE,
                "must equal 4 * clear bits of alloc_map",
            )
        })?;
        let populated = bits::count_ones(&self.populated, 0, self.nr_pages);
        check(self.nr_populated == populated, || {
            counter("nr_populated", self.nr_populated, populated, "must equal set bits of the populated map")
        })?;
        check(self.nr_empty_pop_pages == empty_pop_pages, || {
            counter(
                "nr_empty_pop_pages",
                self.nr_empty_pop_pages,
                empty_pop_pages,
                "must count populated, wholly free pages",
            )
        })?;
        debug_assert_eq!(self.md_blocks.len() * bb, self.region_bits);
        self.verify_free_blocks()?;
        self.verify_maps()?;
        self.verify_alloc_end()
    }

    /// `alloc_end` is one past each block's last allocated bit.
    fn verify_alloc_end(&self) -> Result<(), VerifyError> {
        check(self.alloc_end.len() == self.md_blocks.len(), || VerifyError::AllocEnd {
            block: self.alloc_end.len(),
            stored: 0,
            recomputed: 0,
        })?;
        for (block, &stored) in self.alloc_end.iter().enumerate() {
            let recomputed = self.recomputed_alloc_end(block);
            check(stored as usize == recomputed, || VerifyError::AllocEnd {
                block,
                stored: stored as usize,
                recomputed,
            })?;
        }
        Ok(())
    }

    /// One past block `index`'s last allocated bit (block-relative), or 0.
    pub(super) fn recomputed_alloc_end(&self, index: usize) -> usize {
        let base = index * self.block_bits;
        bits::prev_set(&self.alloc_map, base, base + self.block_bits).map_or(0, |l| l + 1 - base)
    }

    /// `free_blocks` mirrors "block is wholly free", and a wholly free block
    /// looks the way `next_md_free_region` assumes when it skips it.
    fn verify_free_blocks(&self) -> Result<(), VerifyError> {
        let bb = self.block_bits;
        let nr_blocks = self.md_blocks.len();
        let words = bits::words_for(nr_blocks);
        check(self.free_blocks.len() == words, || VerifyError::FreeBlocks {
            block: self.free_blocks.len() * bits::WORD_BITS,
            stored: false,
            rule: "the bitmap must have one bit per block",
        })?;
        let past = bits::next_set(&self.free_blocks, nr_blocks, words * bits::WORD_BITS);
        check(past == words * bits::WORD_BITS, || VerifyError::FreeBlocks {
            block: past,
            stored: true,
            rule: "no bit past the last block may be set",
        })?;
        for (index, block) in self.md_blocks.iter().enumerate() {
            let stored = bits::test_bit(&self.free_blocks, index);
            check(stored == block.is_wholly_free(), || VerifyError::FreeBlocks {
                block: index,
                stored,
                rule: "must be set exactly when the block's contig hint is nr_bits",
            })?;
            if stored {
                let whole = (block.contig_hint_start, block.left_free, block.right_free) == (0, bb as u32, bb as u32);
                check(whole, || VerifyError::FreeBlocks {
                    block: index,
                    stored,
                    rule: "a wholly free block must have contig hint start 0 and left_free == right_free == nr_bits",
                })?;
            }
        }
        Ok(())
    }

    fn verify_block(&self, index: usize, block: &BlockMd) -> Result<(), VerifyError> {
        let bb = self.block_bits;
        let base = index * bb;
        let owner = Owner::Block(index);
        let map = &self.alloc_map;

        check(block.nr_bits as usize == bb, || {
            owner.err("nr_bits", block.nr_bits as usize, bb, "must equal the block size")
        })?;
        let left = bits::next_set(map, base, base + bb) - base;
        check(block.left_free as usize == left, || {
            owner.err("left_free", block.left_free as usize, left, "must be exact")
        })?;
        let right = bits::prev_set(map, base, base + bb).map_or(bb, |l| base + bb - 1 - l);
        // right_free is not exact: promoting a scan hint that ends the block
        // (pcpu_block_refresh_hint) zeroes it and never rescans that area
        check(block.right_free as usize <= right, || {
            owner.err("right_free", block.right_free as usize, right, "must not exceed the free bits at the block end")
        })?;
        let wholly_free = left == bb;
        check(block.is_wholly_free() == wholly_free, || {
            owner.err(
                "contig_hint",
                block.contig_hint as usize,
                if wholly_free { bb } else { 0 },
                "equals nr_bits exactly when the block is wholly free",
            )
        })?;
        self.verify_hints(owner, block, base, bb, true)
    }

    /// Checks shared by blocks and the chunk: hints inside `[base, base +
    /// len)` of `alloc_map`, offsets relative to `base`.  `lower_bounds`
    /// adds the guarantees only blocks have.
    fn verify_hints(
        &self,
        owner: Owner,
        md: &BlockMd,
        base: usize,
        len: usize,
        lower_bounds: bool,
    ) -> Result<(), VerifyError> {
        let map = &self.alloc_map;
        let (cs, ch) = md.contig();
        let (ss, sh) = md.scan();
        let first_free = bits::next_zero(map, base, base + len) - base;
        let largest = bits::runs(map, base, base + len, false).map(|r| r.len()).max().unwrap_or(0);

        check(md.nr_bits as usize == len, || {
            owner.err("nr_bits", md.nr_bits as usize, len, "must equal the bits covered")
        })?;
        check(md.first_free as usize <= first_free, || {
            owner.err("first_free", md.first_free as usize, first_free, "must not lie after the first free bit")
        })?;
        check(ch <= largest, || owner.err("contig_hint", ch, largest, "must not exceed the largest free area"))?;
        if ch != 0 {
            check(cs + ch <= len, || owner.err("contig_hint_start", cs, len - ch, "contig hint area must lie inside"))?;
            let busy = bits::next_set(map, base + cs, base + cs + ch) - base;
            check(busy == cs + ch, || {
                owner.err(
                    "contig_hint_start",
                    cs,
                    busy,
                    "contig hint area must be free (first allocated bit recomputed)",
                )
            })?;
        }
        if sh != 0 {
            check(sh <= ch, || owner.err("scan_hint", sh, ch, "must not exceed the contig hint"))?;
            check(ss + sh <= len, || owner.err("scan_hint_start", ss, len - sh, "scan hint area must lie inside"))?;
            let busy = bits::next_set(map, base + ss, base + ss + sh) - base;
            check(busy == ss + sh, || {
                owner.err("scan_hint_start", ss, busy, "scan hint area must be free (first allocated bit recomputed)")
            })?;
            check(ss <= cs || sh == ch, || {
                owner.err("scan_hint", sh, ch, "a scan hint after the contig hint must equal it")
            })?;
        }
        if !lower_bounds {
            return Ok(());
        }

        // The only lower bound the strategy keeps.  Nothing bounds where a
        // larger unknown area may sit: scan hint promotion forgets areas
        // before the new contig hint, and an equal area with a better
        // alignment moves the contig hint back before areas never seen.
        check(ch != 0 || largest == 0, || owner.err("contig_hint", 0, largest, "is 0 but the block has free space"))?;
        Ok(())
    }

    fn verify_maps(&self) -> Result<(), VerifyError> {
        let bound = |bit, stored, expected, rule| VerifyError::MapBit { map: "bound_map", bit, stored, expected, rule };
        for run in bits::runs(&self.alloc_map, 0, self.region_bits, true) {
            check(bits::test_bit(&self.bound_map, run.start), || {
                bound(run.start, false, true, "an allocated run must start at a bound bit")
            })?;
            check(bits::test_bit(&self.bound_map, run.end), || {
                bound(run.end, false, true, "an allocated run must end at a bound bit")
            })?;
        }
        let head = self.start_offset / PCPU_MIN_ALLOC_SIZE;
        let tail = self.region_bits - self.end_offset / PCPU_MIN_ALLOC_SIZE;
        for (lo, hi, rule) in [
            (0, head, "the hidden head must stay allocated"),
            (tail, self.region_bits, "the hidden tail must stay allocated"),
        ] {
            let hole = bits::next_zero(&self.alloc_map, lo, hi);
            check(hole == hi, || VerifyError::MapBit {
                map: "alloc_map",
                bit: hole,
                stored: false,
                expected: true,
                rule,
            })?;
        }
        Ok(())
    }
}
