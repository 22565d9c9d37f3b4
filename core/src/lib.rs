//! # percpu-core: a portable model of the Linux percpu allocator
//!
//! This crate models mm/percpu.c without any emulator: addresses are plain
//! integers in an [`addr::AddressSpace`] the caller describes (pointer
//! width, page size, linear map, vmalloc range).
//!
//! ## Shape of the model
//!
//! A *chunk* holds one *unit* per possible CPU; an allocation is an offset
//! inside a unit and exists in every unit at once:
//!
//! ```text
//!  c0 (first chunk)              c1 (vm chunk)
//!  ----------------------        ---------------------
//! | u0 | u1 | u2 | u3 |  ...    | u0 | u1 | u2 | u3 |
//!  ----------------------        ---------------------
//! ```
//!
//! * [`alloc_info`] decides the geometry (`pcpu_build_alloc_info`): unit
//!   size, units per allocation, NUMA groups; [`first_chunk`] lays out the
//!   first chunk `<static | reserved | dynamic>` (embed or page flavour) and
//!   derives `__per_cpu_offset[]`.
//! * [`bitmap`] is the allocator inside a chunk: one bit per 4 bytes, a
//!   bound map marking allocation starts, and one metadata block per page
//!   carrying hints (contig, scan, left/right free, first free) so that
//!   allocation rarely scans and free never moves memory.
//! * [`backend`] creates and populates chunks: `vm` (congruent vmalloc
//!   areas, lazy page population) and `km` (one contiguous power-of-two
//!   block per chunk for no-MMU targets).
//! * [`percpu`] ties it together like mm/percpu.c: chunk slots by contig
//!   hint, reserved chunk, atomic vs normal requests, explicit balance work,
//!   lookups ([`classify`]) and [`stats`].
//! * [`areamap`] is the 2009-2014 allocator (sorted signed area sizes,
//!   memmove on split and merge), [`areamap2014`] its 2014-2017 form
//!   (offsets with an in-use bit, `first_free`, binary-search free), the
//!   benchmark's baseline for seed 002, and
//!   [`bump`] the lower bound.  All four implement [`alloc::PercpuAllocator`].

pub mod addr;
pub mod alloc;
pub mod alloc_info;
pub mod areamap;
pub mod areamap2014;
pub mod backend;
pub mod bitmap;
pub mod bump;
pub mod consts;
pub mod cpus;
pub mod first_chunk;
pub mod percpu;
pub mod profile;

pub use addr::AddressSpace;
pub use alloc::{AllocError, AllocRequest, FreeError, PcpuPtr, PercpuAllocator};
pub use cpus::{CpuSet, Topology};
pub use profile::KernelProfile;
