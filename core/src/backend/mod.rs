//! Chunk backends: where a chunk's memory comes from.
//!
//! mm/percpu.c includes one of two backends at build time; we keep both
//! behind [`ChunkBackend`]:
//!
//! * [`vm::VmBackend`] (percpu-vm.c, MMU kernels): each chunk is a set of
//!   *congruent* vmalloc areas, one per NUMA group, at the same offsets from
//!   the chunk base as the first chunk's groups (`pcpu_get_vm_areas`).
//!   Pages are populated lazily, one page index at a time for every unit.
//! * [`km::KmBackend`] (percpu-km.c, no-MMU kernels): each chunk is one
//!   physically contiguous `alloc_pages(order_base_2(nr_pages))` block from
//!   the linear map, fully populated at creation; only one group allowed.
//!
//! The emulation layer wraps a backend (or observes [`crate::percpu::ChunkEvent`]s)
//! to map pages into an emulator as they are populated.

pub mod km;
pub mod vm;

use std::ops::Range;

use serde::Serialize;

/// Which backend a configuration uses.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// percpu-vm: no extra restriction.
    #[default]
    Vm,
    /// percpu-km (`CONFIG_NEED_PER_CPU_KM`, no MMU): one group only, and no
    /// page first chunk.
    Km,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Vm => "vm",
            BackendKind::Km => "km",
        })
    }
}

/// The unit geometry every chunk shares with the first chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChunkGeometry {
    pub page_size: u64,
    pub unit_size: u64,
    pub unit_pages: usize,
    pub nr_units: usize,
    pub atom_size: u64,
    /// `pcpu_group_offsets[]`: each group's offset from the chunk base.
    pub group_offsets: Vec<u64>,
    /// `pcpu_group_sizes[]`: each group's byte size (nr_units * unit_size).
    pub group_sizes: Vec<u64>,
    /// Offset of each unit from the chunk base (unit order).
    pub unit_offsets: Vec<u64>,
}

impl ChunkGeometry {
    /// Address range of `pages` in `unit` of the chunk based at `base`.
    pub fn unit_pages_range(&self, base: u64, unit: usize, pages: Range<usize>) -> Range<u64> {
        let start = base.wrapping_add(self.unit_offsets[unit]);
        start + pages.start as u64 * self.page_size..start + pages.end as u64 * self.page_size
    }

    /// The (offset, size) areas of a chunk, sorted by offset, for congruent
    /// allocation.
    pub fn areas(&self) -> Vec<(u64, u64)> {
        let mut v: Vec<(u64, u64)> = self.group_offsets.iter().copied().zip(self.group_sizes.iter().copied()).collect();
        v.sort_unstable();
        v
    }
}

/// What `create_chunk` hands back.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct CreatedChunk {
    /// `chunk->base_addr`: unit offsets are added to this.
    pub base_addr: u64,
    /// Whether every page is populated from the start (km).
    pub fully_populated: bool,
}

/// A backend could not provide memory or address space.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("vmalloc space exhausted: no congruent areas for {nr_groups} group(s) spanning {span:#x} bytes in {window_start:#x}..{window_end:#x}")]
    VmallocExhausted { nr_groups: usize, span: u64, window_start: u64, window_end: u64 },
    #[error("linear map exhausted: no contiguous {bytes:#x}-byte block (order {order}) left")]
    LinearExhausted { bytes: u64, order: u32 },
    #[error("km backend cannot serve {nr_groups} groups: can't handle more than one group")]
    KmGroups { nr_groups: usize },
}

/// Creates, populates and destroys chunk memory (percpu-vm.c / percpu-km.c).
pub trait ChunkBackend: Send {
    fn kind(&self) -> BackendKind;
    /// `pcpu_create_chunk`: reserve the chunk's address space (and memory).
    fn create_chunk(&mut self, geom: &ChunkGeometry) -> Result<CreatedChunk, BackendError>;
    /// `pcpu_destroy_chunk`.
    fn destroy_chunk(&mut self, geom: &ChunkGeometry, base_addr: u64);
    /// `pcpu_populate_chunk`: back `pages` of every unit with memory.
    fn populate(&mut self, geom: &ChunkGeometry, base_addr: u64, pages: Range<usize>) -> Result<(), BackendError>;
    /// `pcpu_depopulate_chunk`.
    fn depopulate(&mut self, geom: &ChunkGeometry, base_addr: u64, pages: Range<usize>);
    /// Pages of real memory the backend holds for chunks (all units).
    fn backed_pages(&self) -> u64;
    /// Warnings the backend would print (km: "wasting N pages per chunk").
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
}
