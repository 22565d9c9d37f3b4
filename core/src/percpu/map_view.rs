//! A plain-data snapshot of the allocator for drawing (`percpu-bed map`):
//! every live chunk page by page, what each page's bytes are, and the
//! units every chunk has.
//!
//! As in the kernel, all units of a chunk share its allocation and
//! population state (an allocation is one offset in every unit, a page is
//! populated in every unit at once), so pages are described once per chunk
//! and units once per allocator.
//!
//! The first chunk (`pcpu_first_chunk`) is described from `pcpu_base_addr`
//! (unit offset 0), so the kernel's static area and the reserved region
//! appear in front of the dynamic region it serves, as the first chunk's
//! units are laid out: `<static | reserved | dynamic>`.  The unused tail of
//! its units (given back by embed, never mapped by page) is left out.  The
//! reserved chunk is described over its own pages, and backend chunks over
//! all `unit_pages`.

use serde::Serialize;

use super::{ChunkId, ChunkRole, Percpu};
use crate::backend::BackendKind;
use crate::consts::PCPU_MIN_ALLOC_SIZE;
use crate::first_chunk::FirstChunkKind;

/// The whole allocator as [`Percpu::chunk_map`] sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChunkMapView {
    pub page_size: usize,
    pub unit_size: usize,
    pub unit_pages: usize,
    /// The first chunk's regions, in bytes from the start of a unit: static
    /// `[0, static_size)`, reserved `[static_size, +reserved_size)`, dynamic
    /// `[.., +dyn_size)` (`static_size` aligned as setup aligns it).
    pub static_size: usize,
    pub reserved_size: usize,
    pub dyn_size: usize,
    pub first_chunk_kind: FirstChunkKind,
    pub backend: BackendKind,
    /// `pcpu_nr_populated`: populated pages per unit, all chunks.
    pub nr_populated: usize,
    /// `pcpu_nr_empty_pop_pages`.
    pub nr_empty_pop_pages: usize,
    pub groups: Vec<GroupView>,
    /// Every unit of a chunk, in unit order (the same for every chunk).
    pub units: Vec<UnitView>,
    /// Live chunks in id order.
    pub chunks: Vec<ChunkView>,
}

/// One NUMA group of units (`pcpu_group_offsets` / `pcpu_group_sizes`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupView {
    pub group: usize,
    /// Node of the group's first CPU.
    pub node: u32,
    pub first_unit: usize,
    pub nr_units: usize,
    /// Byte offset of the group's first unit from a chunk's base.
    pub offset: u64,
}

/// One unit of every chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnitView {
    pub unit: usize,
    /// The CPU owning the unit; `None` for an unused unit, which is never
    /// backed (embed gives it back, the vm backend populates possible CPUs
    /// only).
    pub cpu: Option<u32>,
    pub group: usize,
    /// Byte offset of the unit from a chunk's base (`pcpu_unit_offsets`).
    pub offset: u64,
}

/// Which of `pcpu_chunk_lists[]` a chunk is on.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotList {
    /// A size slot (by contig hint), or slot 0.
    Size,
    /// `pcpu_sidelined_slot`.
    Sidelined,
    /// `pcpu_free_slot`: wholly free chunks.
    Free,
    /// `pcpu_to_depopulate_slot`: isolated, waiting for the balance work.
    ToDepopulate,
}

/// One chunk, page by page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChunkView {
    pub id: ChunkId,
    pub role: ChunkRole,
    /// The slot the chunk is listed in; `None` for the reserved chunk.
    pub slot: Option<usize>,
    pub slot_list: Option<SlotList>,
    /// On the to_depopulate or sidelined list, out of the global count.
    pub isolated: bool,
    /// `chunk->base_addr`.
    pub base_addr: u64,
    /// Unit page of `pages[0]`: 0 for the first chunk (drawn from
    /// `pcpu_base_addr`) and backend chunks, the page `base_addr` lies at
    /// for the reserved chunk.
    pub first_page: usize,
    /// Unit page where the chunk's own map starts (`base_addr`); pages
    /// before it (first chunk only) are the static area and the reserved
    /// region.
    pub map_page: usize,
    /// The figures percpu_stats prints for the chunk.
    pub free_bytes: usize,
    pub contig_bytes: usize,
    pub nr_alloc: usize,
    pub max_alloc_size: usize,
    /// Populated pages and populated wholly free pages of the chunk's map.
    pub nr_populated: usize,
    pub nr_empty_pop_pages: usize,
    pub pages: Vec<PageView>,
}

/// What the bytes of one page (of every unit) are.  The five counts add up
/// to the page size; they say how much, not where.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PageView {
    /// Backed in every unit (of a CPU).
    pub populated: bool,
    /// Allocated in this chunk's region (allocated bits × 4).
    pub allocated_bytes: usize,
    /// Free in this chunk's region.
    pub free_bytes: usize,
    /// The kernel image's static percpu area (first-chunk parts only).
    pub static_bytes: usize,
    /// The reserved region, seen from the first chunk (the reserved chunk
    /// serves it).
    pub reserved_bytes: usize,
    /// Neither this chunk's region nor static nor reserved: the first
    /// chunk's dynamic region seen from the reserved chunk, or the unused
    /// tail of a first-chunk unit.
    pub other_bytes: usize,
}

impl PageView {
    /// Is the page populated and wholly free (it counts in
    /// `nr_empty_pop_pages`)?
    pub fn is_empty_populated(&self) -> bool {
        self.populated && self.free_bytes > 0 && self.free_bytes == self.total()
    }
    /// The page size.
    pub fn total(&self) -> usize {
        self.allocated_bytes + self.free_bytes + self.static_bytes + self.reserved_bytes + self.other_bytes
    }
}

/// Bytes of `[a, b)` inside `[lo, hi)`.
fn overlap(a: usize, b: usize, lo: usize, hi: usize) -> usize {
    b.min(hi).saturating_sub(a.max(lo))
}

impl Percpu {
    /// A snapshot of every live chunk for drawing (`percpu-bed map`).  The
    /// first chunk is described from `pcpu_base_addr`, so its static area
    /// and reserved region come first (see [`ChunkView::map_page`]).
    pub fn chunk_map(&self) -> ChunkMapView {
        let page = self.geom.page_size as usize;
        let first = &self.first;

        let mut groups = Vec::new();
        let mut units = Vec::new();
        for (g, info) in first.ai.groups.iter().enumerate() {
            groups.push(GroupView {
                group: g,
                node: first.group_nodes.get(g).copied().unwrap_or(0),
                first_unit: units.len(),
                nr_units: info.nr_units,
                offset: self.geom.group_offsets.get(g).copied().unwrap_or(info.base_offset),
            });
            for _ in 0..info.nr_units {
                let unit = units.len();
                units.push(UnitView {
                    unit,
                    cpu: first.unit_cpu.get(unit).copied().flatten(),
                    group: g,
                    offset: self.geom.unit_offsets[unit],
                });
            }
        }

        let chunks = self.chunks().map(|c| self.chunk_view(c.id)).collect();
        ChunkMapView {
            page_size: page,
            unit_size: first.unit_size,
            unit_pages: first.unit_pages,
            static_size: first.static_size,
            reserved_size: first.reserved_size,
            dyn_size: first.dyn_size,
            first_chunk_kind: first.kind,
            backend: self.backend.kind(),
            nr_populated: self.nr_populated,
            nr_empty_pop_pages: self.nr_empty_pop_pages,
            groups,
            units,
            chunks,
        }
    }

    fn chunk_view(&self, id: ChunkId) -> ChunkView {
        let page = self.geom.page_size as usize;
        let c = self.chunk(id);
        let m = &c.map;
        let static_end = self.first.static_size;
        let reserved_end = static_end + self.first.reserved_size;
        // Where the chunk's map lies in a unit, and the part it serves.
        let map_off = match c.role {
            ChunkRole::Dynamic => 0,
            _ => c.base_addr.wrapping_sub(self.first.base_addr) as usize,
        };
        let served = (map_off + m.start_offset(), map_off + m.nr_pages() * page - m.end_offset());
        let map_page = map_off / page;
        let (first_page, nr_pages) = match c.role {
            ChunkRole::First => (0, map_page + m.nr_pages()),
            _ => (map_page, m.nr_pages()),
        };

        let pages = (first_page..first_page + nr_pages)
            .map(|q| {
                let (a, b) = (q * page, (q + 1) * page);
                let mut v = PageView::default();
                if c.role != ChunkRole::Dynamic {
                    v.static_bytes = overlap(a, b, 0, static_end);
                }
                if c.role == ChunkRole::First {
                    v.reserved_bytes = overlap(a, b, static_end, reserved_end);
                }
                let (s, e) = (a.max(served.0), b.min(served.1));
                if s < e {
                    let bits = (s - map_off) / PCPU_MIN_ALLOC_SIZE..(e - map_off) / PCPU_MIN_ALLOC_SIZE;
                    v.allocated_bytes = m.allocated_bits_in(bits) * PCPU_MIN_ALLOC_SIZE;
                    v.free_bytes = e - s - v.allocated_bytes;
                }
                v.other_bytes = page - v.static_bytes - v.reserved_bytes - v.allocated_bytes - v.free_bytes;
                // Pages in front of the map (the first chunk's static area
                // and reserved region) are backed from setup on.
                v.populated = q < map_page || m.is_page_populated(q - map_page);
                v
            })
            .collect();

        let slot = self.slots.slot_of(id);
        let slot_list = slot.map(|s| match s {
            s if s == self.free_slot => SlotList::Free,
            s if s == self.sidelined_slot => SlotList::Sidelined,
            s if s == self.to_depopulate_slot => SlotList::ToDepopulate,
            _ => SlotList::Size,
        });
        ChunkView {
            id,
            role: c.role,
            slot,
            slot_list,
            isolated: c.isolated,
            base_addr: c.base_addr,
            first_page,
            map_page,
            free_bytes: m.free_bytes(),
            contig_bytes: m.contig_hint_bytes(),
            nr_alloc: c.nr_alloc,
            max_alloc_size: c.max_alloc_size,
            nr_populated: m.nr_populated(),
            nr_empty_pop_pages: m.nr_empty_pop_pages(),
            pages,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc::{AllocRequest, PercpuAllocator};
    use crate::cpus::{CpuSet, Topology};
    use crate::percpu::PercpuConfig;
    use crate::AddressSpace;

    fn small() -> Percpu {
        // 4 CPUs, 4 KiB pages, a 16 KiB static area (as percpu/tests.rs).
        Percpu::new(PercpuConfig::generic(AddressSpace::generic64(), Topology::uma(CpuSet::first_n(4)), 0x4000))
            .unwrap()
    }

    fn sum(c: &ChunkView, f: impl Fn(&PageView) -> usize) -> usize {
        c.pages.iter().map(f).sum()
    }

    /// Every page adds up, and the per-chunk figures agree with the pages.
    fn check_consistent(p: &Percpu, v: &ChunkMapView) {
        assert_eq!(v.chunks.len(), p.nr_chunks());
        for c in &v.chunks {
            for (i, pg) in c.pages.iter().enumerate() {
                assert_eq!(pg.total(), v.page_size, "chunk {} page {i}: {pg:?}", c.id);
            }
            let empty = c.pages.iter().filter(|pg| pg.is_empty_populated()).count();
            assert_eq!(empty, c.nr_empty_pop_pages, "chunk {}", c.id);
            let populated = c.pages[c.map_page - c.first_page..].iter().filter(|pg| pg.populated).count();
            assert_eq!(populated, c.nr_populated, "chunk {}", c.id);
            assert_eq!(sum(c, |pg| pg.free_bytes), c.free_bytes, "chunk {}", c.id);
            for pg in c.pages.iter().filter(|pg| !pg.populated) {
                assert_eq!(pg.allocated_bytes, 0, "chunk {}: allocated bytes in an unpopulated page", c.id);
            }
        }
        let allocated: usize = v.chunks.iter().map(|c| sum(c, |pg| pg.allocated_bytes)).sum();
        assert_eq!(allocated as u64, p.footprint().allocated_bytes);
    }

    #[test]
    fn first_chunk_is_drawn_static_reserved_dynamic() {
        let p = small();
        let v = p.chunk_map();
        check_consistent(&p, &v);
        let fc = p.first_chunk_layout();
        let page = v.page_size;
        assert_eq!((v.unit_size, v.static_size, v.reserved_size), (fc.unit_size, 0x4000, fc.reserved_size));
        let size_sum = fc.static_size + fc.reserved_size + fc.dyn_size;

        let first = &v.chunks[0];
        assert_eq!((first.id, first.role, first.first_page), (0, ChunkRole::First, 0));
        assert_eq!(first.pages.len(), size_sum.div_ceil(page));
        assert_eq!(first.map_page, (fc.static_size + fc.reserved_size) / page);
        assert_eq!(sum(first, |pg| pg.static_bytes), fc.static_size);
        assert_eq!(sum(first, |pg| pg.reserved_bytes), fc.reserved_size);
        assert_eq!(sum(first, |pg| pg.free_bytes), fc.dyn_size);
        assert_eq!(sum(first, |pg| pg.allocated_bytes), 0);
        assert_eq!(first.pages[0].static_bytes, page, "the static area fills the first pages");
        assert!(first.pages.iter().all(|pg| pg.populated));
        assert_eq!(first.slot_list, Some(SlotList::Size));
        assert_eq!(first.slot, p.slot_of(0));

        let reserved = &v.chunks[1];
        assert_eq!(reserved.role, ChunkRole::Reserved);
        assert_eq!((reserved.slot, reserved.slot_list), (None, None));
        assert_eq!(reserved.first_page, fc.static_size / page);
        assert_eq!(reserved.first_page, reserved.map_page);
        assert_eq!(sum(reserved, |pg| pg.free_bytes), fc.reserved_size);
        assert_eq!(sum(reserved, |pg| pg.static_bytes), fc.static_size % page);
        assert_eq!(sum(reserved, |pg| pg.reserved_bytes), 0, "its own region is free or allocated");
        assert_eq!(
            sum(reserved, |pg| pg.other_bytes),
            reserved.pages.len() * page - fc.static_size % page - fc.reserved_size,
            "the tail is the first chunk's dynamic region"
        );

        let cpus: Vec<_> = v.units.iter().map(|u| u.cpu).collect();
        assert_eq!(cpus, [Some(0), Some(1), Some(2), Some(3)]);
        assert_eq!(v.groups.len(), 1);
        assert_eq!((v.groups[0].first_unit, v.groups[0].nr_units), (0, 4));
    }

    #[test]
    fn allocations_land_in_the_page_they_use() {
        let mut p = small();
        let before = p.chunk_map();
        let ptr = p.alloc(AllocRequest::new(4096, 4096)).unwrap();
        let after = p.chunk_map();
        check_consistent(&p, &after);
        // The page-aligned page is wholly allocated, nothing else changed.
        let addr = p.pcpu_ptr_to_addr(ptr);
        let q = ((addr - p.first_chunk_layout().base_addr) / 4096) as usize;
        let (b, a) = (&before.chunks[0].pages, &after.chunks[0].pages);
        assert_eq!((b[q].allocated_bytes, b[q].free_bytes), (0, 4096));
        assert_eq!((a[q].allocated_bytes, a[q].free_bytes), (4096, 0));
        for i in (0..a.len()).filter(|&i| i != q) {
            assert_eq!(a[i], b[i], "page {i}");
        }
        // A partly used page: 100 bytes round up to 100 (a multiple of 4).
        p.alloc(AllocRequest::new(100, 4)).unwrap();
        p.alloc(AllocRequest::new(1200, 64).reserved()).unwrap();
        let v = p.chunk_map();
        check_consistent(&p, &v);
        assert_eq!(sum(&v.chunks[0], |pg| pg.allocated_bytes), 4096 + 100);
        assert_eq!(sum(&v.chunks[1], |pg| pg.allocated_bytes), 1200);
        assert_eq!(v.chunks[1].nr_alloc, 1);
    }

    #[test]
    fn backend_chunks_show_population_and_lists() {
        let mut p = small();
        let mut live = Vec::new();
        while p.nr_chunks() < 4 {
            live.push(p.alloc(AllocRequest::new(3000, 8)).unwrap());
        }
        let v = p.chunk_map();
        check_consistent(&p, &v);
        let dynamic = &v.chunks[2];
        assert_eq!((dynamic.role, dynamic.first_page, dynamic.map_page), (ChunkRole::Dynamic, 0, 0));
        assert_eq!(dynamic.pages.len(), v.unit_pages);
        assert_eq!(sum(dynamic, |pg| pg.static_bytes + pg.reserved_bytes + pg.other_bytes), 0);
        let newest = v.chunks.last().unwrap();
        assert!(newest.pages.iter().any(|pg| !pg.populated), "a new vm chunk is populated lazily");

        for ptr in live {
            p.free(ptr).unwrap();
        }
        let v = p.chunk_map();
        check_consistent(&p, &v);
        assert!(v.chunks[2..].iter().any(|c| c.slot_list == Some(SlotList::Free)));
        p.balance();
        let v = p.chunk_map();
        check_consistent(&p, &v);
        assert_eq!(v.nr_populated, p.nr_populated());
        assert_eq!(v.nr_empty_pop_pages, p.nr_empty_pop_pages());
    }

    #[test]
    fn units_without_a_cpu_are_listed() {
        // Three CPUs in 2 MiB atoms of four 512 KiB units: one unit is unused.
        let mut cfg = PercpuConfig::generic(AddressSpace::generic64(), Topology::uma(CpuSet::first_n(3)), 0x2c000);
        cfg.atom_size = 2 << 20;
        let p = Percpu::new(cfg).unwrap();
        let v = p.chunk_map();
        check_consistent(&p, &v);
        assert_eq!(v.units.len(), 4);
        assert_eq!(v.units.iter().filter(|u| u.cpu.is_none()).count(), 1);
        assert!(v.units.windows(2).all(|w| w[1].offset == w[0].offset + v.unit_size as u64));
    }
}
