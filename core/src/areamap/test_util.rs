//! Set-up shared by the tests of both area maps: one geometry, and
//! allocation and free helpers that verify the whole allocator after each
//! call.

use super::AreaMapConfig;
use crate::addr::AddressSpace;
use crate::alloc::{AllocRequest, PcpuPtr, PercpuAllocator};

pub(crate) const UNIT: usize = 32 << 10;
pub(crate) const FIRST_BASE: u64 = 0xffff_8880_0200_0000;

pub(crate) fn cfg(static_size: usize, reserved_size: usize) -> AreaMapConfig {
    AreaMapConfig {
        space: AddressSpace::generic64(),
        unit_size: UNIT,
        nr_units: 4,
        static_size,
        reserved_size,
        first_chunk_base: FIRST_BASE,
        // Zero-based percpu pointers as on x86_64: ptr == offset in the
        // first chunk.
        per_cpu_start: 0,
    }
}

/// An area-map model the helpers can build and verify.
pub(crate) trait Model: PercpuAllocator + Sized {
    fn build(cfg: AreaMapConfig) -> Self;
    fn check(&self) -> Result<(), String>;
}

impl Model for super::AreaMapAllocator {
    fn build(cfg: AreaMapConfig) -> Self {
        Self::new(cfg).unwrap()
    }
    fn check(&self) -> Result<(), String> {
        self.verify()
    }
}

impl Model for crate::areamap2014::AreaMap2014Allocator {
    fn build(cfg: AreaMapConfig) -> Self {
        Self::new(cfg).unwrap()
    }
    fn check(&self) -> Result<(), String> {
        self.verify()
    }
}

/// A verified allocator on [`cfg`].
pub(crate) fn fresh<A: Model>(static_size: usize, reserved_size: usize) -> A {
    let a = A::build(cfg(static_size, reserved_size));
    a.check().unwrap();
    a
}

pub(crate) fn alloc<A: Model>(a: &mut A, size: usize, align: usize) -> PcpuPtr {
    let p = a.alloc(AllocRequest::new(size, align)).unwrap();
    a.check().unwrap();
    p
}

pub(crate) fn free<A: Model>(a: &mut A, p: PcpuPtr) -> usize {
    let n = a.free(p).unwrap();
    a.check().unwrap();
    n
}
