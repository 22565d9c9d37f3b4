//! `cargo bench -p percpu-core`: the seed-002 workloads at 2^14 objects per
//! iteration, bitmap vs the 2014 and 2009 area maps vs bump in one criterion group each, so
//! the ratios come from one run.  `percpu-bed bench` runs the full-size
//! version and prints the seed's tables.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use percpu_core::areamap::{AreaMapAllocator, AreaMapConfig};
use percpu_core::areamap2014::AreaMap2014Allocator;
use percpu_core::bump::BumpAllocator;
use percpu_core::percpu::{Percpu, PercpuConfig};
use percpu_core::{AddressSpace, AllocRequest, CpuSet, PercpuAllocator, Topology};

const OBJECTS: usize = 1 << 14;

fn make(name: &str) -> Box<dyn PercpuAllocator> {
    let mut cfg = PercpuConfig::generic(AddressSpace::generic64(), Topology::uma(CpuSet::first_n(4)), 0x2c000);
    cfg.atom_size = 2 << 20;
    let bitmap = Percpu::new(cfg).unwrap();
    match name {
        "bitmap" => Box::new(bitmap),
        "areamap2014" => Box::new(AreaMap2014Allocator::new(AreaMapConfig::matching(&bitmap)).unwrap()),
        "areamap" => Box::new(AreaMapAllocator::new(AreaMapConfig::matching(&bitmap)).unwrap()),
        _ => Box::new(BumpAllocator::new(0x10_0000, 4096)),
    }
}

fn alloc_then_free(c: &mut Criterion) {
    for (size, align) in [(4, 4), (64, 4), (1024, 4), (4, 8)] {
        let mut g = c.benchmark_group(format!("alloc+free {size}B align {align}"));
        g.sample_size(10);
        for name in ["bitmap", "areamap2014", "areamap", "bump"] {
            g.bench_function(name, |b| {
                b.iter_batched(
                    || make(name),
                    |mut a| {
                        let req = AllocRequest::new(size, align);
                        let ptrs: Vec<_> = (0..OBJECTS).map(|_| a.alloc(req).unwrap()).collect();
                        for p in ptrs {
                            black_box(a.free(p).unwrap());
                        }
                        a
                    },
                    BatchSize::LargeInput,
                )
            });
        }
        g.finish();
    }
}

criterion_group!(benches, alloc_then_free);
criterion_main!(benches);
