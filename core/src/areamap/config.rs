//! The geometry both area-map models are built from, and the checks
//! `pcpu_setup_first_chunk` made on it (the same in 2.6.30 and 4.13 as far
//! as the models need them; the 2014 map adds `OddArea`).

use crate::addr::{AddressSpace, RangeAllocator};
use crate::alloc::PcpuPtr;
use crate::consts::PCPU_MIN_UNIT_SIZE;

/// Geometry of the allocator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AreaMapConfig {
    /// Pointer width, page size, vmalloc range for new chunks.
    pub space: AddressSpace,
    /// Bytes per unit (multiple of the page size, >= `PCPU_MIN_UNIT_SIZE`).
    pub unit_size: usize,
    /// Units per chunk (one per possible CPU).
    pub nr_units: usize,
    /// Hidden at the start of the first chunk.
    pub static_size: usize,
    /// 0 = no reserved chunk.
    pub reserved_size: usize,
    /// Address of unit 0 of the first chunk (`pcpu_base_addr`).
    pub first_chunk_base: u64,
    /// `__per_cpu_start`, for `__addr_to_pcpu_ptr`.
    pub per_cpu_start: u64,
}

impl AreaMapConfig {
    /// The geometry of an already set-up bitmap allocator, so the two
    /// allocators can be compared on the same units and addresses.
    pub fn matching(p: &crate::percpu::Percpu) -> Self {
        let fc = p.first_chunk_layout();
        AreaMapConfig {
            space: p.space().clone(),
            unit_size: fc.unit_size,
            nr_units: fc.nr_units,
            static_size: fc.static_size,
            reserved_size: fc.reserved_size,
            first_chunk_base: fc.base_addr,
            per_cpu_start: p.addr_to_pcpu_ptr(fc.base_addr).0,
        }
    }
}

impl AreaMapConfig {
    /// The checks `pcpu_setup_first_chunk` makes (and the model needs),
    /// shared by the 2009 and the 2014 area map.
    pub(crate) fn check(&self) -> Result<(), AreaMapConfigError> {
        let page = self.space.page_size();
        if self.nr_units == 0 {
            return Err(AreaMapConfigError::NoUnits { nr_units: 0 });
        }
        if self.static_size == 0 {
            return Err(AreaMapConfigError::NoStaticArea);
        }
        if self.unit_size as u64 % page != 0 {
            return Err(AreaMapConfigError::UnitSizeUnaligned { unit_size: self.unit_size, page_size: page });
        }
        if self.unit_size < PCPU_MIN_UNIT_SIZE {
            return Err(AreaMapConfigError::UnitSizeTooSmall { unit_size: self.unit_size, min: PCPU_MIN_UNIT_SIZE });
        }
        // Largest page-aligned int: map entries, free_size and contig_hint
        // are ints.
        let max_unit = (i32::MAX as usize) & !(page as usize - 1);
        if self.unit_size > max_unit {
            return Err(AreaMapConfigError::UnitSizeTooLarge { unit_size: self.unit_size, max: max_unit });
        }
        let sum = self.static_size.saturating_add(self.reserved_size);
        if sum > self.unit_size {
            return Err(AreaMapConfigError::AreasExceedUnit {
                static_size: self.static_size,
                reserved_size: self.reserved_size,
                sum,
                unit_size: self.unit_size,
            });
        }
        // 3.0 checks both on SMP; the model needs them so that aligned
        // offsets give aligned percpu pointers.
        for (what, addr) in [("first chunk base", self.first_chunk_base), ("__per_cpu_start", self.per_cpu_start)] {
            if addr % page != 0 || addr > self.space.mask() {
                return Err(AreaMapConfigError::Unaligned { what, addr, page_size: page });
            }
        }
        let chunk_bytes = (self.nr_units as u64).checked_mul(self.unit_size as u64);
        let fits = chunk_bytes
            .and_then(|b| self.first_chunk_base.checked_add(b))
            .is_some_and(|end| end - 1 <= self.space.mask());
        if !fits {
            return Err(AreaMapConfigError::FirstChunkOutOfRange {
                base: self.first_chunk_base,
                nr_units: self.nr_units,
                unit_size: self.unit_size,
                bits: self.space.ptr_bits(),
            });
        }
        Ok(())
    }

    /// `__addr_to_pcpu_ptr`.
    pub(crate) fn addr_to_ptr(&self, addr: u64) -> PcpuPtr {
        let s = &self.space;
        PcpuPtr(s.wrapping_add(s.wrapping_sub(addr, self.first_chunk_base), self.per_cpu_start))
    }

    /// `__pcpu_ptr_to_addr`.
    pub(crate) fn ptr_to_addr(&self, ptr: PcpuPtr) -> u64 {
        let s = &self.space;
        s.wrapping_add(s.wrapping_sub(ptr.0, self.per_cpu_start), self.first_chunk_base)
    }

    /// The vmalloc range new chunks come from, with the first chunk's
    /// range kept out of it when it lives there (page first chunk).
    pub(crate) fn vm_space(&self) -> RangeAllocator {
        let chunk_bytes = self.nr_units as u64 * self.unit_size as u64;
        let mut vm_space = RangeAllocator::new(self.space.vmalloc());
        let vm = self.space.vmalloc();
        let lo = self.first_chunk_base.max(vm.start);
        let hi = (self.first_chunk_base + chunk_bytes).min(vm.end);
        if lo < hi && vm_space.is_free(lo..hi) {
            vm_space.reserve(lo..hi);
        }
        vm_space
    }
}

/// A geometry `AreaMapAllocator::new` refuses (the kernel's
/// `pcpu_setup_first_chunk` BUGs on these).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AreaMapConfigError {
    #[error("no units: a chunk needs at least one unit (nr_units = {nr_units})")]
    NoUnits { nr_units: usize },
    #[error("static size is 0: the first chunk must hold the kernel's static percpu area")]
    NoStaticArea,
    #[error("unit size {unit_size:#x} is not a multiple of the {page_size:#x} page")]
    UnitSizeUnaligned { unit_size: usize, page_size: u64 },
    #[error("unit size {unit_size:#x} is below PCPU_MIN_UNIT_SIZE ({min:#x})")]
    UnitSizeTooSmall { unit_size: usize, min: usize },
    #[error("unit size {unit_size:#x} does not fit the map's int entries (max {max:#x})")]
    UnitSizeTooLarge { unit_size: usize, max: usize },
    #[error(
        "static ({static_size:#x}) + reserved ({reserved_size:#x}) = {sum:#x} exceeds the unit size {unit_size:#x}"
    )]
    AreasExceedUnit { static_size: usize, reserved_size: usize, sum: usize, unit_size: usize },
    #[error("{what} {addr:#x} is not aligned to the {page_size:#x} page")]
    Unaligned { what: &'static str, addr: u64, page_size: u64 },
    #[error("{what} {size:#x} is odd: bit 0 of the 2014 map's offsets is the in-use flag")]
    OddArea { what: &'static str, size: usize },
    #[error(
        "first chunk {base:#x} + {nr_units} units of {unit_size:#x} bytes does not fit the {bits}-bit address space"
    )]
    FirstChunkOutOfRange { base: u64, nr_units: usize, unit_size: usize, bits: u32 },
}
