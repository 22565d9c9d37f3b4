//! [`ChunkMap::from_kernel_state`]: build a `ChunkMap` from a chunk's state
//! as the kernel keeps it (`struct pcpu_chunk`'s maps, `md_blocks`,
//! `chunk_md` and counters), so that [`ChunkMap::verify`] can check state
//! the model did not produce: the userspace harness runs the tree's own
//! mm/percpu.c and imports what it left behind after every operation.
//!
//! The model's own `free_blocks` bitmap is derived from the blocks and its
//! `alloc_end` array from `alloc_map` (neither is kernel state); nothing
//! else is recomputed, so every claim the
//! imported hints and counters make is checked as stored.

use super::bits::{self, words_for};
use super::block::{BlockHints, BlockMd};
use super::ChunkMap;
use crate::consts::PCPU_MIN_ALLOC_SIZE;

/// A chunk's allocator state in the kernel's representation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelChunkState {
    pub page_size: usize,
    pub nr_pages: usize,
    /// `alloc_map`, `bound_map` (`region_bits + 1` bits) and `populated`,
    /// as 64-bit words.
    pub alloc_map: Vec<u64>,
    pub bound_map: Vec<u64>,
    pub populated: Vec<u64>,
    pub chunk_md: BlockHints,
    pub md_blocks: Vec<BlockHints>,
    pub free_bytes: usize,
    pub nr_populated: usize,
    pub nr_empty_pop_pages: usize,
    /// The first chunk's hidden head and tail (0 for a dynamic chunk).
    pub start_offset: usize,
    pub end_offset: usize,
}

/// A kernel state whose shape does not fit its geometry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kernel chunk state: {what} has {got}, expected {expected}")]
pub struct ImportError {
    pub what: &'static str,
    pub got: usize,
    pub expected: usize,
}

impl ChunkMap {
    /// Import a chunk's state from the kernel's representation (see the
    /// module docs); then [`ChunkMap::verify`] checks it.
    ///
    /// # Panics
    /// As [`ChunkMap::new`] for a bad page size or zero pages.
    pub fn from_kernel_state(s: &KernelChunkState) -> Result<ChunkMap, ImportError> {
        let mut c = ChunkMap::new(s.page_size, s.nr_pages);
        let shape =
            |what, got, expected| if got == expected { Ok(()) } else { Err(ImportError { what, got, expected }) };
        shape("alloc_map (words)", s.alloc_map.len(), words_for(c.region_bits))?;
        shape("bound_map (words)", s.bound_map.len(), words_for(c.region_bits + 1))?;
        shape("populated (words)", s.populated.len(), words_for(c.nr_pages))?;
        shape("md_blocks", s.md_blocks.len(), c.nr_pages)?;
        if !s.start_offset.is_multiple_of(PCPU_MIN_ALLOC_SIZE) || s.start_offset >= s.page_size {
            return Err(ImportError { what: "start_offset", got: s.start_offset, expected: 0 });
        }
        c.alloc_map.clone_from(&s.alloc_map);
        c.bound_map.clone_from(&s.bound_map);
        c.populated.clone_from(&s.populated);
        c.chunk_md = BlockMd::from(&s.chunk_md);
        c.md_blocks = s.md_blocks.iter().map(BlockMd::from).collect();
        c.free_bytes = s.free_bytes;
        c.nr_populated = s.nr_populated;
        c.nr_empty_pop_pages = s.nr_empty_pop_pages;
        c.start_offset = s.start_offset;
        c.end_offset = s.end_offset;
        c.free_blocks = vec![0; words_for(c.nr_pages)];
        for (i, b) in c.md_blocks.iter().enumerate() {
            if b.is_wholly_free() {
                bits::set_bit(&mut c.free_blocks, i);
            }
        }
        c.alloc_end = (0..c.nr_pages).map(|i| c.recomputed_alloc_end(i) as u32).collect();
        Ok(c)
    }

    /// This chunk's state in the kernel's representation (the inverse of
    /// [`ChunkMap::from_kernel_state`]).
    pub fn kernel_state(&self) -> KernelChunkState {
        KernelChunkState {
            page_size: self.page_size,
            nr_pages: self.nr_pages,
            alloc_map: self.alloc_map.clone(),
            bound_map: self.bound_map.clone(),
            populated: self.populated.clone(),
            chunk_md: self.chunk_hints(),
            md_blocks: (0..self.nr_pages).map(|i| self.block_hints(i)).collect(),
            free_bytes: self.free_bytes,
            nr_populated: self.nr_populated,
            nr_empty_pop_pages: self.nr_empty_pop_pages,
            start_offset: self.start_offset,
            end_offset: self.end_offset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy_chunk() -> ChunkMap {
        let mut c = ChunkMap::new(4096, 4);
        for bits in [3usize, 700, 9, 1024, 40] {
            let start = c.find_block_fit(bits, 1, false).unwrap();
            c.alloc_area(bits, 1, start).unwrap();
        }
        c.mark_populated(0, 3);
        c.free_area(3).unwrap();
        c
    }

    #[test]
    fn a_round_trip_is_the_same_chunk_and_verifies() {
        let c = busy_chunk();
        let back = ChunkMap::from_kernel_state(&c.kernel_state()).unwrap();
        assert_eq!(back, c);
        back.verify().unwrap();
    }

    #[test]
    fn an_imported_hint_that_over_reports_fails_verify() {
        let mut s = busy_chunk().kernel_state();
        s.md_blocks[0].contig_hint += 1;
        let c = ChunkMap::from_kernel_state(&s).unwrap();
        assert!(c.verify().is_err());
    }

    #[test]
    fn a_wrong_shape_is_refused() {
        let mut s = busy_chunk().kernel_state();
        s.md_blocks.pop();
        let e = ChunkMap::from_kernel_state(&s).unwrap_err();
        assert_eq!(e.what, "md_blocks");
    }
}
