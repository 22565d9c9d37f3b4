//! Constants of mm/percpu.c and include/linux/percpu.h, named as the kernel
//! names them so the model can be read side by side with the source.

/// One bit of the allocation bitmap stands for this many bytes.
pub const PCPU_MIN_ALLOC_SHIFT: u32 = 2;
/// Smallest allocation and the bitmap granule (4 bytes).
pub const PCPU_MIN_ALLOC_SIZE: usize = 1 << PCPU_MIN_ALLOC_SHIFT;
/// Smallest unit size, and also the largest single allocation.
pub const PCPU_MIN_UNIT_SIZE: usize = 32 << 10;
/// The 2009 allocator's minimum unit size (and its allocation limit).
pub const PCPU_MIN_UNIT_SIZE_2009: usize = 64 << 10;
// `PERCPU_DYNAMIC_EARLY_SIZE` changed between versions (12 KiB in 6.1,
// 20 KiB from 6.2): it lives in [`crate::profile::KernelProfile`].
/// Reserved (module static percpu) space when modules are configured, in
/// 6.1 and in later kernels without `CONFIG_MEM_ALLOC_PROFILING` (see
/// [`crate::profile::KernelProfile::module_reserve`]).
pub const PERCPU_MODULE_RESERVE: usize = 8 << 10;
/// Chunks whose contig hint has at most `2^(SHIFT)` bytes share slot 1.
pub const PCPU_SLOT_BASE_SHIFT: u32 = 5;
/// A chunk that fails an allocation while in a slot below this is sidelined.
pub const PCPU_SLOT_FAIL_THRESHOLD: usize = 3;
/// Balance work keeps at least this many empty populated pages...
pub const PCPU_EMPTY_POP_PAGES_LOW: usize = 2;
/// ...and tops up to this many.
pub const PCPU_EMPTY_POP_PAGES_HIGH: usize = 4;
/// Before 2009 modules shared a fixed per-CPU room of this size (seed 001).
pub const PERCPU_ENOUGH_ROOM: usize = 32 << 10;
/// `LOCAL_DISTANCE` of the NUMA distance table.
pub const LOCAL_DISTANCE: u32 = 10;
/// `REMOTE_DISTANCE` of the NUMA distance table.
pub const REMOTE_DISTANCE: u32 = 20;

/// `PERCPU_DYNAMIC_RESERVE`: the dynamic space generic arches ask for
/// (28 KiB on 64-bit, 20 KiB on 32-bit kernels; larger with
/// `CONFIG_RANDOM_KMALLOC_CACHES`, see
/// [`crate::profile::KernelProfile::dynamic_reserve`]).
pub const fn percpu_dynamic_reserve(ptr_bits: u32) -> usize {
    if ptr_bits > 32 {
        28 << 10
    } else {
        20 << 10
    }
}
