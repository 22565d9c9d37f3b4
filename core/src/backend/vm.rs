//! percpu-vm.c: chunks as congruent vmalloc areas, populated page by page.

use std::ops::Range;

use super::{BackendError, BackendKind, ChunkBackend, ChunkGeometry, CreatedChunk};
use crate::addr::RangeAllocator;

/// The MMU backend.  Address space comes from the vmalloc stand-in shared
/// with the page first chunk; population only counts pages (the core holds
/// no memory: an emulator wrapper maps them).
#[derive(Debug)]
pub struct VmBackend {
    vmalloc: RangeAllocator,
    backed_pages: u64,
}

impl VmBackend {
    pub fn new(vmalloc: RangeAllocator) -> Self {
        VmBackend { vmalloc, backed_pages: 0 }
    }
    pub fn vmalloc(&self) -> &RangeAllocator {
        &self.vmalloc
    }
}

impl ChunkBackend for VmBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Vm
    }

    fn create_chunk(&mut self, geom: &ChunkGeometry) -> Result<CreatedChunk, BackendError> {
        let areas = geom.areas();
        // pcpu_get_vm_areas aligns the areas to the atom size; `areas` is
        // relative to the lowest group, so shift offsets to start at 0.
        let low = areas[0].0;
        let rel: Vec<(u64, u64)> = areas.iter().map(|&(o, s)| (o - low, s)).collect();
        let align = geom.atom_size.max(geom.page_size);
        let window = self.vmalloc.window();
        let span = rel.last().map_or(0, |&(o, s)| o + s);
        let start = self.vmalloc.alloc_congruent(&rel, align).ok_or(BackendError::VmallocExhausted {
            nr_groups: geom.group_offsets.len(),
            span,
            window_start: window.start,
            window_end: window.end,
        })?;
        Ok(CreatedChunk { base_addr: start.wrapping_sub(low), fully_populated: false })
    }

    fn destroy_chunk(&mut self, geom: &ChunkGeometry, base_addr: u64) {
        for (&off, &size) in geom.group_offsets.iter().zip(&geom.group_sizes) {
            let a = base_addr.wrapping_add(off);
            self.vmalloc.release(a..a + size);
        }
    }

    fn populate(&mut self, geom: &ChunkGeometry, _base: u64, pages: Range<usize>) -> Result<(), BackendError> {
        self.backed_pages += (pages.len() * geom.nr_units) as u64;
        Ok(())
    }

    fn depopulate(&mut self, geom: &ChunkGeometry, _base: u64, pages: Range<usize>) {
        self.backed_pages -= (pages.len() * geom.nr_units) as u64;
    }

    fn backed_pages(&self) -> u64 {
        self.backed_pages
    }
}
