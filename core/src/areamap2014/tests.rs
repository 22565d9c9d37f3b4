//! Tests of the 2014 area map: rounding to 2, the first-chunk maps, splits
//! and merges, `first_free`, the hint rules, map extension (normal and
//! atomic), atomic requests and the balance work, bad frees, a random
//! property run, and the seed-002 workloads counted against the 2009 map.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::areamap::test_util::{alloc, cfg, free, fresh, UNIT};
use crate::areamap::AreaMapAllocator;

fn new(static_size: usize, reserved_size: usize) -> AreaMap2014Allocator {
    fresh(static_size, reserved_size)
}

/// The map up to and including the sentry.
fn map(a: &AreaMap2014Allocator, id: usize) -> Vec<i32> {
    let c = a.chunk(id);
    c.map[..=c.map_used].to_vec()
}

// ---- setup and rounding ----------------------------------------------------

#[test]
fn first_chunk_maps() {
    let a = new(100, 0);
    assert_eq!(map(&a, 0), [1, 100, UNIT as i32 | 1]);
    let c = a.chunk(0);
    assert_eq!((c.map.len(), c.free_size, c.contig_hint, c.first_free), (PERCPU_DYNAMIC_EARLY_SLOTS, 32668, 32668, 0));
    assert!(c.has_reserved && c.immutable);
    // Page 0 holds the static area, pages 1..8 are empty and populated.
    assert_eq!(a.nr_empty_pop_pages(), 7);

    let a = new(0x1000, 0x2000);
    assert_eq!(map(&a, 0), [1, 0x1000, 0x3001]);
    assert_eq!(map(&a, 1), [1, 0x3000, UNIT as i32 | 1]);
    assert_eq!(a.slots.reserved_chunk, Some(0));
    assert_eq!(a.slots.first_chunk, 1);
    // The reserved chunk is on no slot and does not count empty pages.
    assert!((0..a.slots.nr_slots).all(|s| !a.slot_list(s).contains(&0)));
    assert_eq!(a.nr_empty_pop_pages(), 5);
}

#[test]
fn odd_static_or_reserved_sizes_are_refused() {
    let e = AreaMap2014Allocator::new(cfg(101, 0)).unwrap_err();
    assert_eq!(e, AreaMapConfigError::OddArea { what: "static size", size: 101 });
    let e = AreaMap2014Allocator::new(cfg(100, 33)).unwrap_err();
    assert_eq!(e, AreaMapConfigError::OddArea { what: "reserved size", size: 33 });
    // The shared checks still apply.
    let e = AreaMap2014Allocator::new(cfg(0, 0)).unwrap_err();
    assert_eq!(e, AreaMapConfigError::NoStaticArea);
}

#[test]
fn sizes_and_aligns_round_up_to_two() {
    let mut a = new(100, 0);
    let p = alloc(&mut a, 1, 1);
    assert_eq!(p, PcpuPtr(100));
    let q = alloc(&mut a, 3, 1);
    assert_eq!(q, PcpuPtr(102));
    assert_eq!(map(&a, 0), [1, 101, 103, 106, UNIT as i32 | 1]);
    assert_eq!(free(&mut a, p), 2);
    assert_eq!(free(&mut a, q), 4);
    assert_eq!(map(&a, 0), [1, 100, UNIT as i32 | 1]);
    // Illegal requests are refused with the caller's numbers.
    for (size, align) in [(0, 4), (UNIT + 1, 4), (4, 8192), (4, 12)] {
        let e = a.alloc(AllocRequest::new(size, align)).unwrap_err();
        assert!(matches!(e, AllocError::IllegalSizeOrAlign { size: s, align: al, .. } if s == size && al == align));
    }
    // A 31-byte request in a 32668-byte chunk: the 33rd byte starts the tail.
    let r = alloc(&mut a, 31, 2);
    assert_eq!(free(&mut a, r), 32);
}

// ---- split, merge, first_free ---------------------------------------------

#[test]
fn small_head_joins_the_previous_allocation() {
    let mut a = new(100, 0);
    let p = alloc(&mut a, 2, 2);
    let q = alloc(&mut a, 4, 4);
    assert_eq!(q, PcpuPtr(104));
    // The 2-byte head at 102 went to p; no free entry between them.
    assert_eq!(map(&a, 0), [1, 101, 105, 108, UNIT as i32 | 1]);
    assert_eq!(a.chunk(0).free_size, 32668 - 8);
    assert_eq!(free(&mut a, p), 4);
}

#[test]
fn large_head_is_split_off_and_becomes_first_free() {
    let mut a = new(100, 0);
    let moved0 = a.stats().map_entries_moved;
    let p = alloc(&mut a, 4, 64);
    assert_eq!(p, PcpuPtr(128));
    assert_eq!(map(&a, 0), [1, 100, 129, 132, UNIT as i32 | 1]);
    // Head and tail: the sentry moved up by two (map_used - i = 1 entry).
    assert_eq!(a.stats().map_entries_moved - moved0, 1);
    assert_eq!(a.chunk(0).first_free, 1);
    // Not a full scan: the hint stays an upper bound.
    assert_eq!(a.chunk(0).contig_hint, 32668);
    // The next small request starts at first_free and fills the head.
    let scanned0 = a.stats().map_entries_scanned;
    let q = alloc(&mut a, 4, 4);
    assert_eq!(q, PcpuPtr(100));
    assert_eq!(a.stats().map_entries_scanned - scanned0, 1);
    assert_eq!(map(&a, 0), [1, 101, 104, 129, 132, UNIT as i32 | 1]);
    assert_eq!(a.chunk(0).first_free, 2);
}

#[test]
fn head_after_a_free_area_grows_that_area() {
    let mut a = new(100, 0);
    let p = alloc(&mut a, 8, 4);
    let _q = alloc(&mut a, 8, 4);
    free(&mut a, p);
    // [100, 108) is free and too small for 16 bytes at 16.  The hole after
    // q is [116, ..); 16-byte alignment needs a 12-byte head there, which
    // follows an allocated area and is split off.
    let r = alloc(&mut a, 16, 16);
    assert_eq!(r, PcpuPtr(128));
    assert_eq!(map(&a, 0), [1, 100, 109, 116, 129, 144, UNIT as i32 | 1]);
    assert_eq!(a.chunk(0).first_free, 1);
}

#[test]
fn frees_merge_and_lower_first_free() {
    let mut a = new(100, 0);
    let p: Vec<_> = (0..3).map(|_| alloc(&mut a, 4, 4)).collect();
    assert_eq!(map(&a, 0), [1, 101, 105, 109, 112, UNIT as i32 | 1]);
    assert_eq!(a.chunk(0).first_free, 4);
    // Middle: no free neighbour, nothing moves.
    let moved0 = a.stats().map_entries_moved;
    free(&mut a, p[1]);
    assert_eq!(a.stats().map_entries_moved, moved0);
    assert_eq!(a.chunk(0).first_free, 2);
    assert_eq!(map(&a, 0), [1, 101, 104, 109, 112, UNIT as i32 | 1]);
    // First: merges with the next (free) entry; three entries move down.
    free(&mut a, p[0]);
    assert_eq!(a.stats().map_entries_moved - moved0, 3);
    assert_eq!(a.chunk(0).first_free, 1);
    assert_eq!(map(&a, 0), [1, 100, 109, 112, UNIT as i32 | 1]);
    // Last: merges both ways back to the initial map.
    free(&mut a, p[2]);
    assert_eq!(map(&a, 0), [1, 100, UNIT as i32 | 1]);
    assert_eq!(a.chunk(0).contig_hint, 32668);
    // The binary search probed a few entries per free.
    assert!(a.stats().bsearch_probes <= 3 * 3);
}

#[test]
fn failed_scan_sets_the_exact_hint_and_first_free() {
    let mut a = new(100, 0);
    let p: Vec<_> = (0..4).map(|_| alloc(&mut a, 8, 4)).collect();
    // Fill the rest so only the holes remain.
    let rest = a.chunk(0).free_size as usize;
    let big = alloc(&mut a, rest, 4);
    free(&mut a, p[0]);
    free(&mut a, p[2]);
    assert_eq!(a.chunk(0).contig_hint, 8);
    assert_eq!(a.chunk(0).first_free, 1);
    // 8 bytes at 16-byte alignment fit neither hole (100 and 116 are not
    // 16-aligned with room): the scan fails and creates a chunk.
    let q = alloc(&mut a, 8, 16);
    // Three times: the walk restarts after creating the chunk and again
    // after extending its map, and the first chunk is scanned each time.
    assert_eq!(a.stats().alloc_area_failures, 3);
    assert_eq!(a.chunk(0).contig_hint, 8);
    assert_eq!(a.chunk(0).first_free, 1);
    assert_eq!(a.nr_chunks(), 2);
    free(&mut a, q);
    free(&mut a, big);
}

// ---- chunks, extension, slots ---------------------------------------------

#[test]
fn normal_requests_keep_64_spare_entries() {
    let mut a = new(100, 0);
    for k in 1..=63 {
        alloc(&mut a, 4, 4);
        assert_eq!(a.chunk(0).map_used, 2 + k);
    }
    assert_eq!(a.stats().map_extensions, 0);
    // map_used 65 + 64 > 128: extend to 256 and walk again.
    alloc(&mut a, 4, 4);
    let s = a.stats();
    assert_eq!((s.map_extensions, s.map_entries_copied, s.restarts), (1, 128, 1));
    assert_eq!(a.chunk(0).map.len(), 256);
}

#[test]
fn a_new_chunk_is_extended_before_its_first_allocation() {
    let mut a = new(100, 0);
    let big = alloc(&mut a, 32668, 4);
    assert_eq!(a.chunk(0).free_size, 0);
    assert_eq!(a.slot_list(0), [0]);
    let p = alloc(&mut a, 8, 8);
    let id = a.slots.by_base.values().copied().next().unwrap();
    assert_eq!(a.chunk(id).base_addr, a.cfg.ptr_to_addr(p));
    // 16 entries, 1 used: 16 -> 128 (>= 65), after the creation restart
    // and the extension restart.
    let s = a.stats();
    assert_eq!((s.chunks_created, s.map_extensions, s.map_entries_copied, s.restarts), (1, 1, 16, 2));
    assert_eq!(map(&a, id), [1, 8, UNIT as i32 | 1]);
    assert_eq!(a.chunk(id).nr_populated, 1);
    // Freeing the only allocation empties it: last slot, no reclaim (it is
    // the only free chunk).  (The allocations above did schedule the
    // balance work: the full first chunk left no empty populated page.)
    let scheduled = a.stats().balance_scheduled;
    free(&mut a, p);
    assert_eq!(a.slot_list(a.slots.nr_slots - 1), [id]);
    assert_eq!(a.stats().balance_scheduled, scheduled);
    free(&mut a, big);
    a.balance();
    a.verify().unwrap();
    assert_eq!(a.nr_chunks(), 2, "the first free chunk is spared");
}

#[test]
fn reserved_requests_use_the_reserved_chunk() {
    let mut a = new(0x1000, 0x2000);
    let p = a.alloc(AllocRequest::new(24, 8).reserved()).unwrap();
    a.verify().unwrap();
    assert_eq!(p, PcpuPtr(0x1000));
    assert_eq!(map(&a, 0), [1, 0x1001, 0x1018, 0x3001]);
    let e = a.alloc(AllocRequest::new(0x2000, 8).reserved()).unwrap_err();
    assert!(matches!(e, AllocError::ReservedExhausted { free_bytes: 0x1fe8, .. }));
    assert_eq!(free(&mut a, p), 24);
    // Without a reserved chunk, reserved requests are normal ones.
    let mut b = new(100, 0);
    assert_eq!(b.alloc(AllocRequest::new(4, 4).reserved()).unwrap(), PcpuPtr(100));
}

#[test]
fn bad_frees_are_errors_and_change_nothing() {
    let mut a = new(100, 0);
    let p = alloc(&mut a, 8, 4);
    let before = (map(&a, 0), a.chunk(0).first_free, a.nr_empty_pop_pages());
    let cases = [
        (PcpuPtr(p.0 + 2), FreeError::NotAllocated { ptr: p.0 + 2, chunk: 0, offset: 102 }),
        (PcpuPtr(p.0 + 1), FreeError::NotAllocated { ptr: p.0 + 1, chunk: 0, offset: 101 }),
        (PcpuPtr(4), FreeError::Static { ptr: 4, chunk: 0, offset: 4 }),
        (PcpuPtr(0x10_0000), FreeError::NotPercpu { ptr: 0x10_0000 }),
    ];
    for (ptr, want) in cases {
        assert_eq!(a.free(ptr).unwrap_err(), want);
        assert_eq!((map(&a, 0), a.chunk(0).first_free, a.nr_empty_pop_pages()), before);
    }
    free(&mut a, p);
    assert!(matches!(a.free(p), Err(FreeError::NotAllocated { .. })), "double free");
}

// ---- atomic requests and the balance work ----------------------------------

#[test]
fn atomic_requests_need_populated_pages() {
    let mut a = new(100, 0);
    let _big = alloc(&mut a, 32668, 4);
    let _p = alloc(&mut a, 8, 8);
    // The new chunk has page 0 only: a page-aligned page finds nothing.
    let e = a.alloc(AllocRequest::new(4096, 4096).atomic()).unwrap_err();
    assert!(matches!(e, AllocError::AtomicNoSpace { .. }));
    a.verify().unwrap();
    assert_eq!(a.stats().atomic_failures, 1);
    assert!(a.atomic_alloc_failed);
    // A small atomic request fits in page 0.
    let s = a.alloc(AllocRequest::new(16, 8).atomic()).unwrap();
    a.verify().unwrap();
    assert_eq!(a.cfg.ptr_to_addr(s) % 4096, 8);
    // The balance work populates PCPU_EMPTY_POP_PAGES_HIGH pages after the
    // failure: pages 1..5 of that chunk.
    let id = a.slots.by_base.values().copied().next().unwrap();
    a.balance();
    a.verify().unwrap();
    assert_eq!(a.chunk(id).nr_populated, 5);
    assert!(!a.atomic_alloc_failed);
    let q = a.alloc(AllocRequest::new(4096, 4096).atomic()).unwrap();
    a.verify().unwrap();
    assert_eq!(a.cfg.ptr_to_addr(q) - a.chunk(id).base_addr, 4096);
}

#[test]
fn atomic_requests_queue_map_extensions() {
    let mut a = new(100, 0);
    for k in 1..=124 {
        a.alloc(AllocRequest::new(4, 4).atomic()).unwrap();
        // Queued once fewer than 32 entries are spare (map_used 97).
        assert_eq!(a.chunk(0).on_extend_list, 1 + k >= 97, "k = {k}");
    }
    a.verify().unwrap();
    assert_eq!(a.chunk(0).map_used, 126);
    assert_eq!(a.stats().map_extensions, 0);
    // 126 + 3 > 128: the chunk is skipped and nothing else fits.
    assert!(matches!(a.alloc(AllocRequest::new(4, 4).atomic()), Err(AllocError::AtomicNoSpace { .. })));
    a.balance();
    a.verify().unwrap();
    let s = a.stats();
    assert_eq!((s.map_extensions, s.async_map_extensions), (1, 1));
    assert_eq!(a.chunk(0).map.len(), 256);
    a.alloc(AllocRequest::new(4, 4).atomic()).unwrap();
    a.verify().unwrap();
}

#[test]
fn balance_reclaims_all_free_chunks_but_the_first() {
    let mut a = new(100, 0);
    let big = alloc(&mut a, 32668, 4);
    let p: Vec<_> = (0..3).map(|_| alloc(&mut a, 20000, 8)).collect();
    assert_eq!(a.nr_chunks(), 4);
    let scheduled = a.stats().balance_scheduled;
    for &q in &p {
        free(&mut a, q);
    }
    // The second and third free chunk each asked for the reaper.
    assert_eq!(a.stats().balance_scheduled - scheduled, 2);
    let pages = a.stats().pages_populated;
    a.balance();
    a.verify().unwrap();
    assert_eq!(a.nr_chunks(), 2);
    assert_eq!(a.stats().chunks_destroyed, 2);
    assert_eq!(a.stats().pages_depopulated, 2 * 5);
    assert_eq!(a.stats().pages_populated, pages);
    free(&mut a, big);
}

// ---- random operations -----------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Alloc { size: usize, align_log: u32, reserved: bool, atomic: bool },
    Free(usize),
    Balance,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..=64, 0u32..=6, prop::bool::weighted(0.1), prop::bool::weighted(0.2))
            .prop_map(|(size, align_log, reserved, atomic)| Op::Alloc { size, align_log, reserved, atomic }),
        1 => (1usize..=9000, 0u32..=12, Just(false), Just(false))
            .prop_map(|(size, align_log, reserved, atomic)| Op::Alloc { size, align_log, reserved, atomic }),
        5 => any::<usize>().prop_map(Op::Free),
        1 => Just(Op::Balance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_ops_keep_the_invariants(reserved in prop::sample::select(vec![0usize, 0x800]), ops in prop::collection::vec(op(), 1..300)) {
        let mut a = AreaMap2014Allocator::new(cfg(0x400, reserved)).unwrap();
        // Live allocations by pointer: requested size.
        let mut live: BTreeMap<u64, usize> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Alloc { size, align_log, reserved, atomic } => {
                    let align = 1usize << align_log;
                    let mut req = AllocRequest::new(size, align);
                    req.reserved = reserved;
                    req.atomic = atomic;
                    if let Ok(p) = a.alloc(req) {
                        prop_assert_eq!(p.0 % align as u64, 0, "misaligned {:?}", req);
                        if let Some((&q, &qs)) = live.range(..=p.0).next_back() {
                            prop_assert!(q + qs as u64 <= p.0, "{:#x}+{} overlaps {:#x}", q, qs, p.0);
                        }
                        if let Some((&q, _)) = live.range(p.0..).next() {
                            prop_assert!(p.0 + size as u64 <= q, "{:#x}+{} overlaps {:#x}", p.0, size, q);
                        }
                        live.insert(p.0, size);
                    }
                }
                Op::Free(k) => {
                    if !live.is_empty() {
                        let (&p, &size) = live.iter().nth(k % live.len()).unwrap();
                        let got = a.free(PcpuPtr(p)).unwrap();
                        // Rounded to even, plus a kept tail and a later
                        // neighbour's head of 2 bytes each.
                        let even = size.div_ceil(2) * 2;
                        prop_assert!(got >= even && got <= even + 4, "freed {} for {}", got, size);
                        live.remove(&p);
                    }
                }
                Op::Balance => a.balance(),
            }
            if let Err(e) = a.verify() {
                return Err(TestCaseError::fail(e));
            }
        }
        for (&p, _) in live.iter() {
            a.free(PcpuPtr(p)).unwrap();
        }
        a.balance();
        prop_assert!(a.verify().is_ok());
        prop_assert_eq!(a.nr_chunks() <= 2, true);
    }
}

// ---- seed 002: the first_free hint against the 2009 map ---------------------

/// Allocate `n` 4-byte objects, free them in allocation order (or reverse),
/// and return the work of each phase for both maps.
fn seed_objects(n: usize, reverse: bool) -> [(u64, u64, u64); 4] {
    let mut old = AreaMapAllocator::new(cfg(100, 0)).unwrap();
    let mut new = AreaMap2014Allocator::new(cfg(100, 0)).unwrap();
    let po: Vec<_> = (0..n).map(|_| old.alloc(AllocRequest::new(4, 4)).unwrap()).collect();
    let pn: Vec<_> = (0..n).map(|_| new.alloc(AllocRequest::new(4, 4)).unwrap()).collect();
    let (so, sn) = (old.stats(), new.stats());
    let mut order: Vec<usize> = (0..n).collect();
    if reverse {
        order.reverse();
    }
    for &i in &order {
        old.free(po[i]).unwrap();
        new.free(pn[i]).unwrap();
    }
    old.verify().unwrap();
    new.verify().unwrap();
    let (fo, fn_) = (old.stats(), new.stats());
    [
        (so.map_entries_scanned, so.map_entries_moved, 0),
        (sn.map_entries_scanned, sn.map_entries_moved, 0),
        (fo.map_entries_scanned - so.map_entries_scanned, fo.map_entries_moved - so.map_entries_moved, 0),
        (
            fn_.map_entries_scanned - sn.map_entries_scanned,
            fn_.map_entries_moved - sn.map_entries_moved,
            fn_.bsearch_probes - sn.bsearch_probes,
        ),
    ]
}

#[test]
fn first_free_makes_allocation_cheap_but_in_order_frees_still_move_the_map() {
    let n = 4096;
    let [alloc_old, alloc_new, free_old, free_new] = seed_objects(n, false);
    // Allocation: the 2009 map walks from entry 0 (about n^2/2 entries),
    // the 2014 one starts at first_free (two entries per request).
    assert!(alloc_old.0 >= (n * n / 2) as u64, "{alloc_old:?}");
    assert!(alloc_new.0 <= 2 * n as u64 + 4, "{alloc_new:?}");
    // Frees in allocation order: each merges with the free run before it
    // and moves the rest of the map down -- in both maps, n^2/2 entries.
    // This is the memmove that cost seed 002 its 4.8 s.
    let nn = (n * n / 2) as u64;
    assert!(free_old.1 >= nn - 2 * n as u64 && free_old.1 <= nn + 2 * n as u64, "{free_old:?}");
    assert!(free_new.1 >= nn - 2 * n as u64 && free_new.1 <= nn + 2 * n as u64, "{free_new:?}");
    // Finding the area: the 2009 map walks to it (a short walk here: the
    // freed prefix is one merged entry), the 2014 one binary-searches.
    assert_eq!(free_new.0, 0);
    assert!(free_new.2 <= (n * 13) as u64, "{free_new:?}");
    assert!(free_old.0 <= 3 * n as u64, "{free_old:?}");
}

#[test]
fn reverse_frees_are_cheap_for_2014_and_a_walk_for_2009() {
    let n = 4096;
    let [_, _, free_old, free_new] = seed_objects(n, true);
    // Reverse order: each free merges with the free tail, few moves.
    assert!(free_new.1 <= 2 * n as u64, "{free_new:?}");
    assert!(free_old.1 <= 2 * n as u64, "{free_old:?}");
    // The 2009 map walks to the end of the live objects for each free.
    assert!(free_old.0 >= (n * n / 2) as u64, "{free_old:?}");
    assert!(free_new.2 <= (n * 13) as u64, "{free_new:?}");
}

#[test]
fn misaligned_holes_still_scan_the_whole_map() {
    // Fill the first chunk with 4-byte objects, free those at 4 mod 8: the
    // hint says 4, so every 8-aligned 4-byte request scans all entries of
    // the chunk and fails there, in both maps.
    let mut new = new(100, 0);
    let mut old = AreaMapAllocator::new(cfg(100, 0)).unwrap();
    let per_chunk = 32668 / 4;
    let pn: Vec<_> = (0..per_chunk).map(|_| new.alloc(AllocRequest::new(4, 4)).unwrap()).collect();
    let po: Vec<_> = (0..per_chunk).map(|_| old.alloc(AllocRequest::new(4, 4)).unwrap()).collect();
    for i in (0..per_chunk).step_by(2) {
        new.free(pn[i]).unwrap();
        old.free(po[i]).unwrap();
    }
    new.verify().unwrap();
    assert_eq!(new.chunk(0).contig_hint, 4);
    assert_eq!(new.chunk(0).first_free, 1, "the first hole does not fit and stays the hint");
    let (sn, so) = (new.stats(), old.stats());
    let reqs = 16;
    for _ in 0..reqs {
        new.alloc(AllocRequest::new(4, 8)).unwrap();
        old.alloc(AllocRequest::new(4, 8)).unwrap();
    }
    new.verify().unwrap();
    let entries = new.chunk(0).map_used as u64;
    let scanned_new = new.stats().map_entries_scanned - sn.map_entries_scanned;
    let scanned_old = old.stats().map_entries_scanned - so.map_entries_scanned;
    // The first request fails there three times (restarts after the chunk
    // creation and after the new chunk's map extension).
    assert_eq!(new.stats().alloc_area_failures - sn.alloc_area_failures, reqs + 2);
    assert!(scanned_new >= reqs * (entries - 2), "{scanned_new} for {entries} entries");
    // first_free saves only the entries before the first hole.
    assert!(scanned_old >= scanned_new && scanned_old <= scanned_new + 4 * reqs, "{scanned_old} vs {scanned_new}");
}
