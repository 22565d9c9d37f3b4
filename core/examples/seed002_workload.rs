//! One seed-002 workload on one allocator, for profilers: `valgrind
//! --tool=callgrind target/release/examples/seed002_workload bitmap 1024 4
//! 65536 reverse` counts instructions, which the machine's load does not
//! change (unlike `percpu-bed bench`'s wall-clock times).
//!
//! Arguments: allocator (bitmap, areamap2014, areamap, bump), size, align, objects, free
//! order (in-order, alternating, reverse, or none: no free phase, so that
//! profiling allocation does not wait for the 2014 map's slow frees; add
//! `--toggle-collect='*PercpuAllocator>::alloc'` to count allocation only).
//! Prints the chunks used and the wall-clock time of each phase (take the
//! minimum over repeated runs on a loaded machine).

use std::hint::black_box;
use std::time::Instant;

use percpu_core::areamap::{AreaMapAllocator, AreaMapConfig};
use percpu_core::areamap2014::AreaMap2014Allocator;
use percpu_core::bump::BumpAllocator;
use percpu_core::percpu::{Percpu, PercpuConfig};
use percpu_core::{AddressSpace, AllocRequest, CpuSet, PercpuAllocator, Topology};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_string());
    let name = arg(0, "bitmap");
    let size: usize = arg(1, "1024").parse().expect("size");
    let align: usize = arg(2, "4").parse().expect("align");
    let n: usize = arg(3, "65536").parse().expect("objects");
    let order = arg(4, "in-order");

    // the geometry of `percpu-bed bench` (src/bench.rs: bench_config)
    let mut cfg = PercpuConfig::generic(AddressSpace::generic64(), Topology::uma(CpuSet::first_n(4)), 0x2c000);
    cfg.atom_size = 2 << 20;
    let bitmap = Percpu::new(cfg).expect("bench geometry");
    let mut a: Box<dyn PercpuAllocator> = match name.as_str() {
        "bitmap" => Box::new(bitmap),
        "areamap2014" => {
            Box::new(AreaMap2014Allocator::new(AreaMapConfig::matching(&bitmap)).expect("2014 area map geometry"))
        }
        "areamap" => Box::new(AreaMapAllocator::new(AreaMapConfig::matching(&bitmap)).expect("area map geometry")),
        "bump" => Box::new(BumpAllocator::new(0x10_0000, 4096)),
        other => panic!("unknown allocator {other}"),
    };
    let req = AllocRequest::new(size, align);
    let start = Instant::now();
    let ptrs: Vec<_> = (0..n).map(|_| a.alloc(req).expect("alloc")).collect();
    let alloc_time = start.elapsed();
    let idx: Vec<usize> = match order.as_str() {
        "in-order" => (0..n).collect(),
        "reverse" => (0..n).rev().collect(),
        "alternating" => (0..n).step_by(2).chain((1..n).step_by(2)).collect(),
        "none" => Vec::new(),
        other => panic!("unknown free order {other}"),
    };
    let start = Instant::now();
    for i in idx {
        black_box(a.free(ptrs[i]).expect("free"));
    }
    let free_time = start.elapsed();
    println!(
        "{name} {size}B align {align}: {n} objects, {} chunks, alloc {:.1} ms, free {:.1} ms",
        a.footprint().nr_chunks,
        alloc_time.as_secs_f64() * 1e3,
        free_time.as_secs_f64() * 1e3
    );
}
