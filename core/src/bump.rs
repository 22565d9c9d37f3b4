//! A bump allocator: the lower bound the benchmark measures both real
//! allocators against.  Allocation is an align-and-add; free only looks the
//! allocation up (binary search over the starts, which are sorted because
//! they only grow) and marks it dead.  Space is never reused.

use crate::addr::align_up;
use crate::alloc::{AllocError, AllocRequest, Footprint, FreeError, PcpuPtr, PercpuAllocator};
use crate::consts::{PCPU_MIN_ALLOC_SIZE, PCPU_MIN_UNIT_SIZE};

#[derive(Clone, Debug)]
pub struct BumpAllocator {
    base: u64,
    cursor: u64,
    page_size: u64,
    starts: Vec<u64>,
    sizes: Vec<u32>,
    live_bytes: u64,
}

impl BumpAllocator {
    /// Hand out percpu pointers from `base` upward.
    pub fn new(base: u64, page_size: u64) -> Self {
        BumpAllocator { base, cursor: base, page_size, starts: Vec::new(), sizes: Vec::new(), live_bytes: 0 }
    }
}

impl PercpuAllocator for BumpAllocator {
    fn name(&self) -> &'static str {
        "bump"
    }

    fn alloc(&mut self, req: AllocRequest) -> Result<PcpuPtr, AllocError> {
        let align = req.align.max(PCPU_MIN_ALLOC_SIZE);
        let size = req.size.next_multiple_of(PCPU_MIN_ALLOC_SIZE);
        if size == 0 || size > PCPU_MIN_UNIT_SIZE || align as u64 > self.page_size || !align.is_power_of_two() {
            return Err(AllocError::IllegalSizeOrAlign {
                size: req.size,
                align: req.align,
                max_size: PCPU_MIN_UNIT_SIZE,
                max_align: self.page_size as usize,
            });
        }
        let at = align_up(self.cursor, align as u64);
        self.cursor = at + size as u64;
        self.starts.push(at);
        self.sizes.push(size as u32);
        self.live_bytes += size as u64;
        Ok(PcpuPtr(at))
    }

    fn free(&mut self, ptr: PcpuPtr) -> Result<usize, FreeError> {
        if ptr.0 < self.base || ptr.0 >= self.cursor {
            return Err(FreeError::NotPercpu { ptr: ptr.0 });
        }
        let not_allocated = FreeError::NotAllocated { ptr: ptr.0, chunk: 0, offset: (ptr.0 - self.base) as usize };
        let i = self.starts.binary_search(&ptr.0).map_err(|_| not_allocated.clone())?;
        let size = std::mem::take(&mut self.sizes[i]);
        if size == 0 {
            return Err(not_allocated);
        }
        self.live_bytes -= size as u64;
        Ok(size as usize)
    }

    fn balance(&mut self) {}

    fn footprint(&self) -> Footprint {
        Footprint {
            allocated_bytes: self.live_bytes,
            populated_bytes: self.cursor - self.base,
            metadata_bytes: (self.starts.capacity() * 8 + self.sizes.capacity() * 4) as u64,
            nr_chunks: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bump_aligns_and_detects_double_free() {
        let mut b = BumpAllocator::new(0x1000, 4096);
        let a = b.alloc(AllocRequest::new(4, 4)).unwrap();
        let c = b.alloc(AllocRequest::new(4, 8)).unwrap();
        assert_eq!((a.0, c.0), (0x1000, 0x1008));
        assert_eq!(b.free(c), Ok(4));
        assert!(matches!(b.free(c), Err(FreeError::NotAllocated { .. })));
        assert!(matches!(b.free(PcpuPtr(0x10)), Err(FreeError::NotPercpu { .. })));
        assert!(matches!(b.alloc(AllocRequest::new(0, 4)), Err(AllocError::IllegalSizeOrAlign { .. })));
    }
}
