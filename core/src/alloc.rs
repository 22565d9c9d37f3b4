//! The allocation interface shared by the bitmap allocator (the model of
//! today's mm/percpu.c), the 2009-2017 area-map allocator and the bump
//! allocator, so tests and the benchmark drive them through one door.

use serde::Serialize;

/// A percpu pointer as the kernel hands it out: an address in the target's
/// pointer width that is *not* dereferenceable until `per_cpu_ptr` adds a
/// CPU's offset (for the first chunk it equals a static variable's link
/// address, e.g. inside `.data..percpu`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PcpuPtr(pub u64);

impl std::fmt::Display for PcpuPtr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// One `__alloc_percpu_gfp`-style request.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AllocRequest {
    pub size: usize,
    pub align: usize,
    /// Serve from the reserved chunk only (module static percpu).
    pub reserved: bool,
    /// GFP_ATOMIC/GFP_NOWAIT: no chunk creation, populated pages only.
    pub atomic: bool,
}

impl AllocRequest {
    pub const fn new(size: usize, align: usize) -> Self {
        AllocRequest { size, align, reserved: false, atomic: false }
    }
    pub const fn reserved(mut self) -> Self {
        self.reserved = true;
        self
    }
    pub const fn atomic(mut self) -> Self {
        self.atomic = true;
        self
    }
}

/// Why an allocation was refused.  Each variant carries the numbers a
/// developer needs; the messages follow the kernel's `pcpu_alloc` warnings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("illegal size ({size}) or align ({align}) for percpu allocation (size 1..={max_size}, align a power of two <= {max_align})")]
    IllegalSizeOrAlign { size: usize, align: usize, max_size: usize, max_align: usize },
    #[error("allocation failed, size={size} align={align}: alloc from reserved chunk failed ({free_bytes} bytes free, largest free area {contig_bytes} bytes)")]
    ReservedExhausted { size: usize, align: usize, free_bytes: usize, contig_bytes: usize },
    #[error("allocation failed, size={size} align={align} atomic=1: atomic alloc failed, no space left ({empty_pop_pages} empty populated pages)")]
    AtomicNoSpace { size: usize, align: usize, empty_pop_pages: usize },
    #[error("allocation failed, size={size} align={align}: failed to allocate new chunk: {reason}")]
    ChunkCreation { size: usize, align: usize, reason: String },
    #[error("allocation failed, size={size} align={align}: failed to populate pages {page_start}..{page_end} of chunk {chunk}: {reason}")]
    Populate { size: usize, align: usize, chunk: usize, page_start: usize, page_end: usize, reason: String },
}

/// Why a free was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FreeError {
    #[error("free of {ptr:#x}: not a percpu pointer of any chunk")]
    NotPercpu { ptr: u64 },
    #[error(
        "free of {ptr:#x}: chunk {chunk} offset {offset:#x} is not the start of an allocation (invalid or double free)"
    )]
    NotAllocated { ptr: u64, chunk: usize, offset: usize },
    #[error("free of {ptr:#x}: chunk {chunk} offset {offset:#x} lies in the static percpu area, which is never freed")]
    Static { ptr: u64, chunk: usize, offset: usize },
}

/// Memory accounting common to every allocator, for the benchmark's
/// metadata-per-byte and utilisation figures.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Footprint {
    /// Bytes handed out (per unit: an allocation exists once per unit).
    pub allocated_bytes: u64,
    /// Bytes of populated chunk space (per unit).
    pub populated_bytes: u64,
    /// Bytes of allocator metadata (maps, hints, chunk structs).
    pub metadata_bytes: u64,
    pub nr_chunks: usize,
}

/// The door every allocator model is driven through.
pub trait PercpuAllocator {
    /// Short name used in benchmark rows (`bitmap`, `areamap`, `bump`).
    fn name(&self) -> &'static str;
    fn alloc(&mut self, req: AllocRequest) -> Result<PcpuPtr, AllocError>;
    /// Free an allocation; returns its size in bytes.
    fn free(&mut self, ptr: PcpuPtr) -> Result<usize, FreeError>;
    /// Run the deferred balance/reclaim work now.
    fn balance(&mut self);
    fn footprint(&self) -> Footprint;
}
