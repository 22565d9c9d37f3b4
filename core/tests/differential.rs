//! Randomized differential test: the bitmap allocator (`Percpu`), the
//! area-map allocator and a reference model run the same request stream;
//! after every step both real allocators verify their own metadata and the
//! reference checks what each handed out.
//!
//! The reference model is deliberately simple: it knows the live
//! allocations of each allocator (pointer, size, alignment, kind) and
//! checks the properties any correct percpu allocator has — areas aligned,
//! disjoint, freed with the size they were allocated with, invalid and
//! double frees refused, atomic areas populated, illegal requests refused,
//! and a reserved request refused only when the reserved chunk truly
//! lacks the bytes.
//!
//! The normal run does 10^6 operations (four geometries x 250 000).  Set
//! `PERCPU_DIFF_OPS` to the operations per geometry for a long run, e.g.
//! `PERCPU_DIFF_OPS=25000000 cargo test --release -p percpu-core --test differential`
//! for 10^8.

use std::collections::BTreeMap;

use percpu_core::areamap::{AreaMapAllocator, AreaMapConfig};
use percpu_core::backend::BackendKind;
use percpu_core::percpu::{Percpu, PercpuConfig};
use percpu_core::{AddressSpace, AllocError, AllocRequest, CpuSet, FreeError, PcpuPtr, PercpuAllocator, Topology};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One allocator's live areas, keyed by pointer, for overlap checks.
#[derive(Default)]
struct Live {
    areas: BTreeMap<u64, usize>,
    reserved_bytes: usize,
}

impl Live {
    fn insert(&mut self, who: &str, ptr: PcpuPtr, size: usize, align: usize, reserved: bool) {
        let size = size.next_multiple_of(4);
        assert_eq!(ptr.0 % align.max(4) as u64, 0, "{who}: {ptr} not aligned to {align}");
        if let Some((&p, &s)) = self.areas.range(..=ptr.0).next_back() {
            assert!(p + s as u64 <= ptr.0, "{who}: {ptr}+{size} overlaps live {p:#x}+{s}");
        }
        if let Some((&p, _)) = self.areas.range(ptr.0..).next() {
            assert!(ptr.0 + size as u64 <= p, "{who}: {ptr}+{size} overlaps live {p:#x}");
        }
        self.areas.insert(ptr.0, size);
        if reserved {
            self.reserved_bytes += size;
        }
    }

    /// Whether `ptr` lies inside a live area.
    fn covers(&self, ptr: PcpuPtr) -> bool {
        self.areas.range(..=ptr.0).next_back().is_some_and(|(&p, &s)| ptr.0 < p + s as u64)
    }
}

struct Entry {
    bitmap: PcpuPtr,
    areamap: PcpuPtr,
    size: usize,
    reserved: bool,
}

struct Harness {
    bitmap: Percpu,
    areamap: AreaMapAllocator,
    live: Vec<Entry>,
    live_bitmap: Live,
    live_areamap: Live,
    freed: Vec<(PcpuPtr, PcpuPtr)>,
    reserved_size: usize,
    page: usize,
}

fn config(kind: &str) -> PercpuConfig {
    let topo4 = Topology::uma(CpuSet::first_n(4));
    match kind {
        "64bit-4k-vm" => PercpuConfig::generic(AddressSpace::generic64(), topo4, 0x4000),
        "32bit-4k-vm-numa" => {
            let space = AddressSpace::new(32, 4096, 0xc000_0000..0xe000_0000, 0xe800_0000..0xff00_0000).unwrap();
            let topo = Topology::blocked(CpuSet::parse_list("0-3,8-11").unwrap(), 2);
            PercpuConfig { per_cpu_start: 0xc100_0000, ..PercpuConfig::generic(space, topo, 0x2400) }
        }
        "64bit-64k-vm" => {
            let space = AddressSpace::new(
                64,
                65536,
                0xffff_0000_0000_0000..0xffff_4000_0000_0000,
                0xffff_8000_0000_0000..0xffff_c000_0000_0000,
            )
            .unwrap();
            PercpuConfig::generic(space, Topology::uma(CpuSet::first_n(2)), 0x9000)
        }
        "64bit-4k-km" => {
            let space = AddressSpace::new(64, 4096, 0x8000_0000..0x1_0000_0000, 0x2_0000_0000..0x3_0000_0000).unwrap();
            PercpuConfig {
                backend: BackendKind::Km,
                per_cpu_start: 0x8000_0000,
                ..PercpuConfig::generic(space, topo4, 0x3000)
            }
        }
        other => panic!("unknown geometry {other}"),
    }
}

impl Harness {
    fn new(kind: &str) -> Self {
        let cfg = config(kind);
        let space = cfg.space.clone();
        let bitmap = Percpu::new(cfg).expect("geometry sets up");
        let fc = bitmap.first_chunk_layout();
        let areamap =
            AreaMapAllocator::new(AreaMapConfig::matching(&bitmap)).expect("area map accepts the same geometry");
        let reserved_size = fc.reserved_size;
        Harness {
            bitmap,
            areamap,
            live: Vec::new(),
            live_bitmap: Live::default(),
            live_areamap: Live::default(),
            freed: Vec::new(),
            reserved_size,
            page: space.page_size() as usize,
        }
    }

    fn random_request(&self, rng: &mut ChaCha8Rng) -> AllocRequest {
        let size = match rng.random_range(0..100) {
            0..=59 => 4 * rng.random_range(1..=16),
            60..=89 => rng.random_range(1..=512),
            90..=98 => rng.random_range(513..=4096),
            _ => rng.random_range(4097..=32768),
        };
        let align = match rng.random_range(0..100) {
            0..=49 => 4,
            50..=74 => 8,
            75..=89 => 1 << rng.random_range(4..=7),
            90..=98 => 1 << rng.random_range(8..=11),
            _ => self.page,
        };
        AllocRequest::new(size, align)
    }

    fn alloc(&mut self, req: AllocRequest) {
        let b = self.bitmap.alloc(req);
        let a = self.areamap.alloc(req);
        if req.atomic || req.reserved {
            // Their fit policies differ, so only check each result on its own.
            if req.reserved {
                let rounded = req.size.next_multiple_of(4);
                for (who, r, live) in [("bitmap", &b, &self.live_bitmap), ("areamap", &a, &self.live_areamap)] {
                    if let Err(e) = r {
                        assert!(
                            matches!(e, AllocError::ReservedExhausted { .. }),
                            "{who}: reserved {req:?} failed with {e}"
                        );
                    } else {
                        assert!(
                            live.reserved_bytes + rounded <= self.reserved_size,
                            "{who}: reserved chunk handed out more than its {} bytes",
                            self.reserved_size
                        );
                    }
                }
            }
            if let Err(e) = &b {
                assert!(
                    matches!(e, AllocError::AtomicNoSpace { .. } | AllocError::ReservedExhausted { .. }),
                    "bitmap: {req:?} failed with {e}"
                );
            }
        }
        match (b, a) {
            (Ok(bp), Ok(ap)) => {
                self.live_bitmap.insert("bitmap", bp, req.size, req.align, req.reserved);
                self.live_areamap.insert("areamap", ap, req.size, req.align, req.reserved);
                if req.atomic && !req.reserved {
                    self.check_populated(bp, req.size);
                }
                self.live.push(Entry { bitmap: bp, areamap: ap, size: req.size, reserved: req.reserved });
            }
            (Ok(bp), Err(_)) => {
                // Keep the bitmap's area live so it is freed later.
                self.live_bitmap.insert("bitmap", bp, req.size, req.align, req.reserved);
                assert!(req.atomic || req.reserved, "areamap refused a legal normal request {req:?}");
                self.bitmap.free(bp).expect("fresh bitmap area frees");
                self.live_bitmap.areas.remove(&bp.0);
                if req.reserved {
                    self.live_bitmap.reserved_bytes -= req.size.next_multiple_of(4);
                }
            }
            (Err(e), Ok(ap)) => {
                assert!(req.atomic || req.reserved, "bitmap refused a legal normal request {req:?}: {e}");
                self.areamap.free(ap).expect("fresh areamap area frees");
            }
            (Err(_), Err(_)) => {}
        }
    }

    /// An atomic area must sit on populated pages in every unit.
    fn check_populated(&self, ptr: PcpuPtr, size: usize) {
        for off in [0, size.saturating_sub(1)] {
            for cpu in self.bitmap.first_chunk_layout().unit_cpu.iter().flatten().copied().take(2) {
                let addr = self.bitmap.per_cpu_ptr(PcpuPtr(ptr.0 + off as u64), cpu).unwrap();
                let loc = self.bitmap.classify(addr).expect("atomic area classifies");
                assert!(loc.populated, "atomic area {ptr} byte {off} on cpu {cpu} unpopulated: {loc}");
                assert_eq!(loc.cpu, Some(cpu));
            }
        }
    }

    fn free(&mut self, idx: usize) {
        let e = self.live.swap_remove(idx);
        let rounded = e.size.next_multiple_of(4);
        assert_eq!(self.bitmap.free(e.bitmap), Ok(rounded), "bitmap free of {}", e.bitmap);
        // The 2009 allocator neither rounds sizes nor splits off tails or
        // alignment heads smaller than an int: such bytes stay in (or join)
        // the area, so it may give back up to 3 + 3 bytes more.
        let freed = self.areamap.free(e.areamap).unwrap_or_else(|err| panic!("areamap free of {}: {err}", e.areamap));
        assert!((e.size..=e.size + 6).contains(&freed), "areamap freed {freed} bytes for a {}-byte area", e.size);
        self.live_bitmap.areas.remove(&e.bitmap.0);
        self.live_areamap.areas.remove(&e.areamap.0);
        if e.reserved {
            self.live_bitmap.reserved_bytes -= rounded;
            self.live_areamap.reserved_bytes -= rounded;
        }
        self.freed.push((e.bitmap, e.areamap));
        if self.freed.len() > 64 {
            self.freed.remove(0);
        }
    }

    fn invalid_free(&mut self, rng: &mut ChaCha8Rng) {
        if let Some(&(bp, ap)) = self.freed.get(rng.random_range(0..self.freed.len().max(1))) {
            if !self.live_bitmap.covers(bp) {
                assert!(self.bitmap.free(bp).is_err(), "bitmap accepted a double free of {bp}");
            }
            if !self.live_areamap.covers(ap) {
                assert!(self.areamap.free(ap).is_err(), "areamap accepted a double free of {ap}");
            }
        }
        // A pointer into the middle of a live area is never an allocation start.
        if let Some(e) = self.live.first() {
            if e.size > 4 {
                let inner = PcpuPtr(e.bitmap.0 + 4);
                assert!(matches!(self.bitmap.free(inner), Err(FreeError::NotAllocated { .. })));
                let inner = PcpuPtr(e.areamap.0 + 4);
                assert!(self.areamap.free(inner).is_err());
            }
        }
    }

    fn step(&mut self, rng: &mut ChaCha8Rng) {
        let roll = rng.random_range(0..1000);
        let crowded = self.live.len() > 1500;
        match roll {
            _ if crowded && roll < 600 => {
                let i = rng.random_range(0..self.live.len());
                self.free(i);
            }
            0..=449 => {
                let req = self.random_request(rng);
                self.alloc(req);
            }
            450..=849 if !self.live.is_empty() => {
                let i = rng.random_range(0..self.live.len());
                self.free(i);
            }
            850..=899 => {
                let req = AllocRequest::new(4 * rng.random_range(1..=64), 1 << rng.random_range(2..=6)).reserved();
                self.alloc(req);
            }
            900..=969 => {
                let req = self.random_request(rng).atomic();
                self.alloc(req);
            }
            970..=979 => {
                self.bitmap.balance();
                self.areamap.balance();
            }
            980..=989 => {
                let bad = [
                    AllocRequest::new(0, 4),
                    AllocRequest::new(32772, 4),
                    AllocRequest::new(8, 12),
                    AllocRequest::new(8, self.page * 2),
                ][rng.random_range(0..4)];
                let b = self.bitmap.alloc(bad);
                let a = self.areamap.alloc(bad);
                assert!(matches!(b, Err(AllocError::IllegalSizeOrAlign { .. })), "bitmap accepted {bad:?}: {b:?}");
                assert!(matches!(a, Err(AllocError::IllegalSizeOrAlign { .. })), "areamap accepted {bad:?}: {a:?}");
            }
            _ => self.invalid_free(rng),
        }
        if let Err(e) = self.bitmap.verify() {
            panic!("bitmap verify after roll {roll}: {e}");
        }
        if let Err(e) = self.areamap.verify() {
            panic!("areamap verify after roll {roll}: {e}");
        }
        assert_eq!(self.bitmap.global_stats().nr_cur_alloc as usize, self.live.len());
    }
}

fn ops_per_geometry() -> usize {
    std::env::var("PERCPU_DIFF_OPS").ok().and_then(|v| v.parse().ok()).unwrap_or(250_000)
}

fn run(kind: &str, seed: u64) {
    let mut h = Harness::new(kind);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for _ in 0..ops_per_geometry() {
        h.step(&mut rng);
    }
    // Drain everything: both allocators must return to an empty state.
    while !h.live.is_empty() {
        h.free(h.live.len() - 1);
    }
    // One balance pass may reintegrate chunks after its first free-chunk
    // sweep (pcpu_balance_workfn relies on being scheduled again), so run
    // the work until it has nothing left to do.
    for _ in 0..4 {
        let r = h.bitmap.balance();
        if r.chunks_destroyed == 0 && r.pages_depopulated == 0 {
            break;
        }
    }
    h.areamap.balance();
    h.bitmap.verify().unwrap();
    h.areamap.verify().unwrap();
    assert_eq!(h.bitmap.footprint().allocated_bytes, 0);
    assert_eq!(h.areamap.footprint().allocated_bytes, 0);
    let left: Vec<String> = h
        .bitmap
        .chunks()
        .map(|c| {
            format!(
                "chunk {} {:?} slot {:?} isolated {} free {} populated {} empty {}",
                c.id,
                c.role,
                h.bitmap.slot_of(c.id),
                c.isolated,
                c.map.free_bytes(),
                c.map.nr_populated(),
                c.map.nr_empty_pop_pages()
            )
        })
        .collect();
    // What may stay: one spare free chunk (pcpu_balance_free keeps one),
    // plus as many chunks as it takes to hold PCPU_EMPTY_POP_PAGES_HIGH
    // empty populated pages (pcpu_balance_populated creates them), all empty.
    let unit_pages = h.bitmap.geometry().unit_pages;
    let allowed = 1 + percpu_core::consts::PCPU_EMPTY_POP_PAGES_HIGH.div_ceil(unit_pages);
    let dynamic: Vec<_> = h.bitmap.chunks().filter(|c| c.role == percpu_core::percpu::ChunkRole::Dynamic).collect();
    assert!(
        dynamic.len() <= allowed && dynamic.iter().all(|c| c.map.free_bytes() == h.bitmap.unit_size()),
        "{kind}: more than {allowed} backend chunks, or a non-empty one, left after draining:\n{}",
        left.join("\n")
    );
}

#[test]
fn differential_64bit_4k_vm() {
    run("64bit-4k-vm", 0x5eed_0001);
}

#[test]
fn differential_32bit_4k_vm_numa_sparse() {
    run("32bit-4k-vm-numa", 0x5eed_0002);
}

#[test]
fn differential_64bit_64k_vm() {
    run("64bit-64k-vm", 0x5eed_0003);
}

#[test]
fn differential_64bit_4k_km() {
    run("64bit-4k-km", 0x5eed_0004);
}

mod shrinking {
    //! The same harness under proptest, on short sequences, so a failure
    //! shrinks to a minimal seed and length.
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn short_sequences_agree(seed in any::<u64>(), len in 1usize..400, geom in 0usize..4) {
            let kind = ["64bit-4k-vm", "32bit-4k-vm-numa", "64bit-64k-vm", "64bit-4k-km"][geom];
            let mut h = Harness::new(kind);
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            for _ in 0..len {
                h.step(&mut rng);
            }
        }
    }
}
