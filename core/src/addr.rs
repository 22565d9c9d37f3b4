//! The caller-described address space and simple range allocators over it.
//!
//! The core never touches memory: addresses are integers in an address space
//! of a given pointer width.  Percpu pointer arithmetic (`per_cpu_ptr`,
//! `__addr_to_pcpu_ptr`) wraps in that width exactly as `RELOC_HIDE` does on
//! the target, so a 32-bit target's offsets wrap at 2^32.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Serialize;

/// Why an address space description was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressSpaceError {
    #[error("pointer width {0} is not supported (32 or 64)")]
    PointerWidth(u32),
    #[error("page size {0:#x} is not supported (4, 8, 16 or 64 KiB)")]
    PageSize(u64),
    #[error("{what} range {start:#x}..{end:#x} is empty, unaligned to the {page:#x} page or beyond the {bits}-bit address space")]
    BadRange { what: &'static str, start: u64, end: u64, page: u64, bits: u32 },
    #[error("linear map {lm_start:#x}..{lm_end:#x} overlaps vmalloc range {vm_start:#x}..{vm_end:#x}")]
    Overlap { lm_start: u64, lm_end: u64, vm_start: u64, vm_end: u64 },
}

/// Pointer width, page size, and where the linear map and vmalloc area sit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AddressSpace {
    ptr_bits: u32,
    page_size: u64,
    linear_map: Range<u64>,
    vmalloc: Range<u64>,
}

impl AddressSpace {
    pub fn new(
        ptr_bits: u32,
        page_size: u64,
        linear_map: Range<u64>,
        vmalloc: Range<u64>,
    ) -> Result<Self, AddressSpaceError> {
        if ptr_bits != 32 && ptr_bits != 64 {
            return Err(AddressSpaceError::PointerWidth(ptr_bits));
        }
        if ![4 << 10, 8 << 10, 16 << 10, 64 << 10].contains(&page_size) {
            return Err(AddressSpaceError::PageSize(page_size));
        }
        let max = if ptr_bits == 64 { u64::MAX } else { u32::MAX as u64 };
        for (what, r) in [("linear map", &linear_map), ("vmalloc", &vmalloc)] {
            // `end` may be max+1 for a range reaching the top: we store it
            // exclusive, so a 64-bit range ending at the top uses end = 0
            // is not allowed; callers stop one page short.
            if r.start >= r.end || r.start % page_size != 0 || r.end % page_size != 0 || r.end - 1 > max {
                return Err(AddressSpaceError::BadRange {
                    what,
                    start: r.start,
                    end: r.end,
                    page: page_size,
                    bits: ptr_bits,
                });
            }
        }
        if linear_map.start < vmalloc.end && vmalloc.start < linear_map.end {
            return Err(AddressSpaceError::Overlap {
                lm_start: linear_map.start,
                lm_end: linear_map.end,
                vm_start: vmalloc.start,
                vm_end: vmalloc.end,
            });
        }
        Ok(AddressSpace { ptr_bits, page_size, linear_map, vmalloc })
    }

    /// A generic 64-bit layout with 4 KiB pages (x86_64-like: 64 GiB of RAM
    /// in the linear map at
    /// `0xffff888000000000`, vmalloc at `0xffffc90000000000`).
    pub fn generic64() -> Self {
        Self::new(64, 4096, 0xffff_8880_0000_0000..0xffff_8890_0000_0000, 0xffff_c900_0000_0000..0xffff_e900_0000_0000)
            .expect("generic64 layout is valid")
    }

    pub fn ptr_bits(&self) -> u32 {
        self.ptr_bits
    }
    pub fn page_size(&self) -> u64 {
        self.page_size
    }
    pub fn page_shift(&self) -> u32 {
        self.page_size.trailing_zeros()
    }
    pub fn linear_map(&self) -> Range<u64> {
        self.linear_map.clone()
    }
    pub fn vmalloc(&self) -> Range<u64> {
        self.vmalloc.clone()
    }
    /// All-ones in the pointer width.
    pub fn mask(&self) -> u64 {
        if self.ptr_bits == 64 {
            u64::MAX
        } else {
            (1u64 << self.ptr_bits) - 1
        }
    }
    /// `a + b` as `unsigned long` arithmetic on the target.
    pub fn wrapping_add(&self, a: u64, b: u64) -> u64 {
        a.wrapping_add(b) & self.mask()
    }
    /// `a - b` as `unsigned long` arithmetic on the target.
    pub fn wrapping_sub(&self, a: u64, b: u64) -> u64 {
        a.wrapping_sub(b) & self.mask()
    }
    /// Interpret a target `unsigned long` as signed (`long`).
    pub fn as_signed(&self, v: u64) -> i64 {
        let shift = 64 - self.ptr_bits;
        ((v << shift) as i64) >> shift
    }
    pub fn page_align_up(&self, v: u64) -> u64 {
        align_up(v, self.page_size)
    }
    pub fn page_align_down(&self, v: u64) -> u64 {
        v & !(self.page_size - 1)
    }
}

/// Round `v` up to a power-of-two `align`.
pub fn align_up(v: u64, align: u64) -> u64 {
    debug_assert!(align.is_power_of_two());
    (v + align - 1) & !(align - 1)
}

/// Round `v` up to a power-of-two `align` (usize flavour).
pub fn align_up_usize(v: usize, align: usize) -> usize {
    debug_assert!(align.is_power_of_two());
    (v + align - 1) & !(align - 1)
}

/// A first-fit allocator of address ranges inside one window, standing in
/// for memblock (linear map) and the vmalloc area allocator.  Free ranges are
/// kept in a map from start to end; `alloc_top_down` mimics how vmalloc and
/// `pcpu_get_vm_areas` hand out the highest free addresses first.
#[derive(Clone, Debug)]
pub struct RangeAllocator {
    window: Range<u64>,
    free: BTreeMap<u64, u64>,
}

impl RangeAllocator {
    pub fn new(window: Range<u64>) -> Self {
        let mut free = BTreeMap::new();
        if window.start < window.end {
            free.insert(window.start, window.end);
        }
        RangeAllocator { window, free }
    }

    pub fn window(&self) -> Range<u64> {
        self.window.clone()
    }

    /// Lowest free `size` bytes aligned to `align`, at or above `min`.
    pub fn alloc_bottom_up(&mut self, size: u64, align: u64, min: u64) -> Option<u64> {
        let found = self.free.iter().find_map(|(&s, &e)| {
            let start = align_up(s.max(min), align);
            (start < e && e - start >= size).then_some(start)
        })?;
        self.reserve(found..found + size);
        Some(found)
    }

    /// Highest free `size` bytes aligned to `align`.
    pub fn alloc_top_down(&mut self, size: u64, align: u64) -> Option<u64> {
        let found = self.free.iter().rev().find_map(|(&s, &e)| {
            let start = e.checked_sub(size)? & !(align - 1);
            (start >= s).then_some(start)
        })?;
        self.reserve(found..found + size);
        Some(found)
    }

    /// Highest free `size` bytes aligned to `align` inside `within`
    /// (memblock's default top-down search limited to one node's range).
    pub fn alloc_top_down_within(&mut self, size: u64, align: u64, within: Range<u64>) -> Option<u64> {
        let found = self.free.range(..within.end).rev().find_map(|(&s, &e)| {
            let (s, e) = (s.max(within.start), e.min(within.end));
            let start = e.checked_sub(size)? & !(align - 1);
            (e > s && start >= s).then_some(start)
        })?;
        self.reserve(found..found + size);
        Some(found)
    }

    /// Take whatever part of `r` is free out of the free ranges (memblock
    /// reservations may overlap one another or lie outside memory).
    pub fn reserve_overlapping(&mut self, r: Range<u64>) {
        if r.start >= r.end {
            return;
        }
        let hits: Vec<(u64, u64)> = self
            .free
            .range(..r.end)
            .filter(|&(_, &e)| e > r.start)
            .map(|(&s, &e)| (s.max(r.start), e.min(r.end)))
            .collect();
        for (s, e) in hits {
            self.reserve(s..e);
        }
    }

    /// Highest base such that `base + off .. base + off + size` is free for
    /// every `(off, size)` area: `pcpu_get_vm_areas`' congruent allocation.
    /// `areas` must be sorted by offset and not overlap.
    pub fn alloc_congruent(&mut self, areas: &[(u64, u64)], align: u64) -> Option<u64> {
        let &(first_off, _) = areas.first()?;
        let span_end = areas.iter().map(|&(o, s)| o + s).max()?;
        let mut base = self.window.end.checked_sub(span_end)? & !(align - 1);
        'candidate: loop {
            if base.checked_add(first_off)? < self.window.start {
                return None;
            }
            for &(off, size) in areas {
                let a = base + off;
                if self.is_free(a..a + size) {
                    continue;
                }
                // Lower the base so this area ends at or below the end of
                // the nearest free range at or before `a`; each step moves
                // strictly down, so the walk terminates.
                let (_, &e) = self.free.range(..=a).next_back()?;
                let limit = e.checked_sub(size)?.checked_sub(off)? & !(align - 1);
                base = if limit < base { limit } else { base.checked_sub(align)? };
                continue 'candidate;
            }
            break;
        }
        for &(off, size) in areas {
            self.reserve(base + off..base + off + size);
        }
        Some(base)
    }

    /// Whether every byte of `r` is free.
    pub fn is_free(&self, r: Range<u64>) -> bool {
        match self.free.range(..=r.start).next_back() {
            Some((&s, &e)) => s <= r.start && r.end <= e,
            None => false,
        }
    }

    /// Take `r` out of the free ranges (it must be free).
    pub fn reserve(&mut self, r: Range<u64>) {
        let (&s, &e) = self.free.range(..=r.start).next_back().expect("reserve of a free range");
        debug_assert!(s <= r.start && r.end <= e, "reserve {r:x?} outside free {s:#x}..{e:#x}");
        self.free.remove(&s);
        if s < r.start {
            self.free.insert(s, r.start);
        }
        if r.end < e {
            self.free.insert(r.end, e);
        }
    }

    /// Give `r` back, merging with free neighbours.
    pub fn release(&mut self, r: Range<u64>) {
        if r.start >= r.end {
            return;
        }
        let mut start = r.start;
        let mut end = r.end;
        if let Some((&s, &e)) = self.free.range(..start).next_back() {
            if e == start {
                start = s;
                self.free.remove(&s);
            }
        }
        if let Some(&e) = self.free.get(&end) {
            self.free.remove(&end);
            end = e;
        }
        self.free.insert(start, end);
    }

    /// Free bytes left.
    pub fn free_bytes(&self) -> u64 {
        self.free.iter().map(|(s, e)| e - s).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_down_within_a_node_and_overlapping_reservations() {
        let mut r = RangeAllocator::new(0..0x1000_0000);
        r.reserve_overlapping(0x0f00_0000..0x2000_0000); // past the end: clipped
        r.reserve_overlapping(0x0e00_0000..0x0e10_0000);
        r.reserve_overlapping(0x0e08_0000..0x0e20_0000); // overlaps the last one
        assert!(!r.is_free(0x0e1f_f000..0x0e20_0000));
        // the highest 2 MiB below 0x0f00_0000, above the reservations
        assert_eq!(r.alloc_top_down_within(0x20_0000, 0x20_0000, 0..0x0f00_0000), Some(0x0ee0_0000));
        // 0xe0_0000 bytes no longer fit above the reservations
        assert_eq!(r.alloc_top_down_within(0xe0_0000, 0x20_0000, 0..0x0f00_0000), Some(0x0d20_0000));
        // limited to a lower node
        assert_eq!(r.alloc_top_down_within(0x1000, 0x1000, 0x100_0000..0x200_0000), Some(0x1ff_f000));
        assert_eq!(r.alloc_top_down_within(0x1000, 0x1000, 0x0f00_0000..0x1000_0000), None);
    }

    #[test]
    fn wrapping_is_in_pointer_width() {
        let s32 = AddressSpace::new(32, 4096, 0xc000_0000..0xe000_0000, 0xf000_0000..0xff00_0000).unwrap();
        assert_eq!(s32.wrapping_add(0xffff_fff0, 0x20), 0x10);
        assert_eq!(s32.wrapping_sub(0x10, 0x20), 0xffff_fff0);
        assert_eq!(s32.as_signed(0xffff_fff0), -16);
        let s64 = AddressSpace::generic64();
        assert_eq!(s64.wrapping_add(u64::MAX, 2), 1);
    }

    #[test]
    fn bad_spaces_are_refused() {
        assert!(matches!(AddressSpace::new(48, 4096, 0..4096, 8192..16384), Err(AddressSpaceError::PointerWidth(48))));
        assert!(matches!(AddressSpace::new(64, 12288, 0..4096, 8192..16384), Err(AddressSpaceError::PageSize(_))));
        assert!(matches!(AddressSpace::new(32, 4096, 0..0x1_0000_1000, 0..1), Err(AddressSpaceError::BadRange { .. })));
        assert!(matches!(
            AddressSpace::new(64, 4096, 0..0x4000, 0x2000..0x8000),
            Err(AddressSpaceError::Overlap { .. })
        ));
    }

    #[test]
    fn range_allocator_top_down_and_merge() {
        let mut a = RangeAllocator::new(0x1000..0x10000);
        let x = a.alloc_top_down(0x2000, 0x1000).unwrap();
        assert_eq!(x, 0xe000);
        let y = a.alloc_bottom_up(0x1000, 0x1000, 0).unwrap();
        assert_eq!(y, 0x1000);
        a.release(x..x + 0x2000);
        a.release(y..y + 0x1000);
        assert_eq!(a.free_bytes(), 0xf000);
        assert!(a.is_free(0x1000..0x10000));
    }

    #[test]
    fn congruent_areas_skip_collisions() {
        let mut a = RangeAllocator::new(0x0..0x100000);
        // Block a page where the highest candidate's second area would go.
        a.reserve(0xf8000..0xf9000);
        let areas = [(0u64, 0x4000u64), (0x8000, 0x4000)];
        let base = a.alloc_congruent(&areas, 0x1000).unwrap();
        for &(off, size) in &areas {
            let r = base + off..base + off + size;
            assert!(!(r.start < 0xf9000 && 0xf8000 < r.end), "{r:x?}");
        }
        assert!(base + 0xc000 <= 0x100000);
        // The areas are now taken.
        assert!(!a.is_free(base..base + 0x4000));
    }
}
