//! percpu-km.c: one physically contiguous block per chunk (no-MMU).

use std::collections::HashMap;
use std::ops::Range;

use super::{BackendError, BackendKind, ChunkBackend, ChunkGeometry, CreatedChunk};
use crate::addr::RangeAllocator;

/// The no-MMU backend.  Each chunk is `alloc_pages(order_base_2(nr_pages))`
/// from the linear map: a power-of-two block, so a chunk whose page count is
/// not a power of two wastes the difference (the kernel warns about it).
/// Chunks are created fully populated; populate/depopulate do nothing.
#[derive(Debug)]
pub struct KmBackend {
    linear: RangeAllocator,
    /// Block start and size per chunk base, to free exactly what was taken.
    blocks: HashMap<u64, (u64, u64)>,
    backed_pages: u64,
    wasted_pages_per_chunk: usize,
}

impl KmBackend {
    /// `wasted_pages_per_chunk` comes from the setup-time check
    /// (`pcpu_verify_alloc_info` in percpu-km.c).
    pub fn new(linear: RangeAllocator, wasted_pages_per_chunk: usize) -> Self {
        KmBackend { linear, blocks: HashMap::new(), backed_pages: 0, wasted_pages_per_chunk }
    }

    pub fn wasted_pages_per_chunk(&self) -> usize {
        self.wasted_pages_per_chunk
    }
}

impl ChunkBackend for KmBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Km
    }

    fn create_chunk(&mut self, geom: &ChunkGeometry) -> Result<CreatedChunk, BackendError> {
        if geom.group_sizes.len() != 1 {
            return Err(BackendError::KmGroups { nr_groups: geom.group_sizes.len() });
        }
        let nr_pages = (geom.group_sizes[0] / geom.page_size).max(1);
        let alloc_pages = nr_pages.next_power_of_two();
        let bytes = alloc_pages * geom.page_size;
        // The buddy allocator aligns a block to its own size.
        let block = self
            .linear
            .alloc_bottom_up(bytes, bytes, 0)
            .ok_or(BackendError::LinearExhausted { bytes, order: alloc_pages.trailing_zeros() })?;
        let base_addr = block.wrapping_sub(geom.group_offsets[0]);
        self.blocks.insert(base_addr, (block, bytes));
        self.backed_pages += alloc_pages;
        Ok(CreatedChunk { base_addr, fully_populated: true })
    }

    fn destroy_chunk(&mut self, geom: &ChunkGeometry, base_addr: u64) {
        if let Some((block, bytes)) = self.blocks.remove(&base_addr) {
            self.linear.release(block..block + bytes);
            self.backed_pages -= bytes / geom.page_size;
        }
    }

    fn populate(&mut self, _: &ChunkGeometry, _: u64, _: Range<usize>) -> Result<(), BackendError> {
        Ok(())
    }

    fn depopulate(&mut self, _: &ChunkGeometry, _: u64, _: Range<usize>) {}

    fn backed_pages(&self) -> u64 {
        self.backed_pages
    }

    fn warnings(&self) -> Vec<String> {
        if self.wasted_pages_per_chunk > 0 {
            vec![format!("wasting {} pages per chunk", self.wasted_pages_per_chunk)]
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geom(nr_units: usize, unit_pages: usize) -> ChunkGeometry {
        let unit_size = unit_pages as u64 * 4096;
        ChunkGeometry {
            page_size: 4096,
            unit_size,
            unit_pages,
            nr_units,
            atom_size: 4096,
            group_offsets: vec![0],
            group_sizes: vec![nr_units as u64 * unit_size],
            unit_offsets: (0..nr_units as u64).map(|u| u * unit_size).collect(),
        }
    }

    #[test]
    fn km_blocks_are_power_of_two_and_freed() {
        let mut km = KmBackend::new(RangeAllocator::new(0x8000_0000..0x9000_0000), 0);
        let g = geom(3, 8); // 24 pages -> a 32-page block
        let c = km.create_chunk(&g).unwrap();
        assert!(c.fully_populated);
        assert_eq!(c.base_addr % (32 * 4096), 0);
        assert_eq!(km.backed_pages(), 32);
        km.destroy_chunk(&g, c.base_addr);
        assert_eq!(km.backed_pages(), 0);
    }

    #[test]
    fn km_refuses_groups_and_exhaustion_is_typed() {
        let mut km = KmBackend::new(RangeAllocator::new(0x8000_0000..0x8001_0000), 0);
        let mut g = geom(2, 8);
        g.group_offsets.push(0x10_0000);
        g.group_sizes.push(g.group_sizes[0]);
        assert_eq!(km.create_chunk(&g), Err(BackendError::KmGroups { nr_groups: 2 }));
        let g = geom(4, 8); // 32 pages = 128 KiB > 64 KiB window
        assert!(matches!(km.create_chunk(&g), Err(BackendError::LinearExhausted { .. })));
    }

    #[test]
    fn vm_chunks_are_congruent_and_disjoint() {
        let mut g = geom(2, 8);
        // Two groups 1 MiB apart, as a 2-node embed first chunk would have.
        g.group_offsets = vec![0, 0x10_0000];
        g.group_sizes = vec![0x8000, 0x8000];
        let mut vm = super::super::vm::VmBackend::new(RangeAllocator::new(0x1000_0000..0x2000_0000));
        let a = vm.create_chunk(&g).unwrap().base_addr;
        let b = vm.create_chunk(&g).unwrap().base_addr;
        for base in [a, b] {
            assert_eq!(base % 4096, 0);
        }
        // b's group areas avoid a's.
        for &oa in &g.group_offsets {
            for &ob in &g.group_offsets {
                let (ra, rb) = (a + oa..a + oa + 0x8000, b + ob..b + ob + 0x8000);
                assert!(ra.end <= rb.start || rb.end <= ra.start, "{ra:x?} {rb:x?}");
            }
        }
        vm.destroy_chunk(&g, a);
        assert_eq!(vm.create_chunk(&g).unwrap().base_addr, a, "freed space is reused");
    }
}
