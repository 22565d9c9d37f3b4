//! Behaviour of the allocator as a whole: slots, reserved chunk, atomic
//! requests, chunk creation and reclaim, balance work, lookups.

use super::*;
use crate::alloc::AllocRequest;
use crate::cpus::CpuSet;

fn small() -> Percpu {
    // 4 CPUs, 64-bit, 4 KiB pages, a small static area: unit = 52 KiB.
    Percpu::new(PercpuConfig::generic(AddressSpace::generic64(), Topology::uma(CpuSet::first_n(4)), 0x4000)).unwrap()
}

#[test]
fn setup_splits_first_chunk_into_reserved_and_dynamic() {
    let p = small();
    p.verify().unwrap();
    let first = p.chunk(p.first_chunk_id());
    let reserved = p.chunk(p.reserved_chunk_id().unwrap());
    assert_eq!(first.role, ChunkRole::First);
    assert_eq!(reserved.role, ChunkRole::Reserved);
    assert_eq!(reserved.map.free_bytes(), PERCPU_MODULE_RESERVE);
    assert_eq!(p.slot_of(reserved.id), None, "the reserved chunk is never on a slot");
    assert!(p.slot_of(first.id).is_some());
    // Static area precedes the reserved chunk which precedes the dynamic one.
    let base = p.first_chunk_layout().base_addr;
    assert_eq!(reserved.base_addr + reserved.map.start_offset() as u64, base + 0x4000);
    assert_eq!(p.global_stats().nr_chunks, 1);
}

#[test]
fn pointers_translate_through_per_cpu_offsets() {
    let mut p = small();
    let ptr = p.alloc(AllocRequest::new(64, 8)).unwrap();
    let fc = p.first_chunk_layout().clone();
    for cpu in 0..4 {
        let addr = p.per_cpu_ptr(ptr, cpu).unwrap();
        assert_eq!(addr, ptr.0.wrapping_add(fc.per_cpu_offset[cpu as usize].unwrap()));
        let loc = p.classify(addr).unwrap();
        assert_eq!(loc.cpu, Some(cpu));
        assert_eq!(loc.chunk, p.first_chunk_id());
        assert_eq!(loc.region, Region::Dynamic);
        assert!(loc.populated);
        let alloc = loc.allocation.clone().unwrap();
        assert_eq!(alloc.end - alloc.start, 64);
        assert_eq!(loc.pcpu_ptr, ptr);
    }
    assert_eq!(p.per_cpu_ptr(ptr, 4), None, "cpu 4 is not possible");
}

#[test]
fn reserved_requests_use_only_the_reserved_chunk_and_report_exhaustion() {
    let mut p = small();
    let r = p.reserved_chunk_id().unwrap();
    let a = p.alloc(AllocRequest::new(4096, 64).reserved()).unwrap();
    assert_eq!(p.chunk_addr_search(p.pcpu_ptr_to_addr(a)), Some(r));
    p.alloc(AllocRequest::new(4000, 8).reserved()).unwrap();
    let err = p.alloc(AllocRequest::new(1024, 8).reserved()).unwrap_err();
    match err {
        AllocError::ReservedExhausted { size, align, free_bytes, contig_bytes } => {
            assert_eq!((size, align), (1024, 8));
            assert_eq!(free_bytes, PERCPU_MODULE_RESERVE - 4096 - 4000);
            assert!(contig_bytes < 1024);
        }
        other => panic!("expected reserved exhaustion, got {other}"),
    }
    assert!(err.to_string().contains("alloc from reserved chunk failed"));
    assert_eq!(p.free(a), Ok(4096));
    p.verify().unwrap();
}

#[test]
fn illegal_requests_are_typed_errors() {
    let mut p = small();
    for (size, align) in [(0, 4), (PCPU_MIN_UNIT_SIZE + 4, 4), (8, 12), (8, 8192)] {
        assert!(
            matches!(p.alloc(AllocRequest::new(size, align)), Err(AllocError::IllegalSizeOrAlign { .. })),
            "size {size} align {align}"
        );
    }
    // The largest legal request works and lands in a new chunk.
    let big = p.alloc(AllocRequest::new(PCPU_MIN_UNIT_SIZE, 4096)).unwrap();
    p.free(big).unwrap();
}

#[test]
fn invalid_and_double_free_are_refused_without_damage() {
    let mut p = small();
    let a = p.alloc(AllocRequest::new(16, 4)).unwrap();
    assert!(matches!(p.free(PcpuPtr(a.0 + 4)), Err(FreeError::NotAllocated { .. })));
    assert!(matches!(p.free(PcpuPtr(a.0 + 2)), Err(FreeError::NotAllocated { .. })));
    assert_eq!(p.free(a), Ok(16));
    assert!(matches!(p.free(a), Err(FreeError::NotAllocated { .. })));
    assert!(matches!(p.free(PcpuPtr(0x7000_0000_0000)), Err(FreeError::NotPercpu { .. })));
    let static_ptr = p.addr_to_pcpu_ptr(p.first_chunk_layout().base_addr + 8);
    assert!(matches!(p.free(static_ptr), Err(FreeError::Static { .. })));
    p.verify().unwrap();
}

#[test]
fn chunks_are_created_on_demand_and_reclaimed_by_balance() {
    let mut p = small();
    p.record_events();
    let unit = p.unit_size();
    let mut ptrs = Vec::new();
    // Fill well past the first chunk: several backend chunks appear.
    for _ in 0..(3 * unit / 4096) {
        ptrs.push(p.alloc(AllocRequest::new(4096, 4096)).unwrap());
    }
    assert!(p.nr_chunks() >= 4, "{} chunks", p.nr_chunks());
    let events = p.take_events();
    assert!(events.iter().any(|e| matches!(e, ChunkEvent::Created { .. })));
    assert!(events.iter().any(|e| matches!(e, ChunkEvent::Populated { .. })));
    // A pointer into a backend chunk classifies as such.
    let last = *ptrs.last().unwrap();
    let loc = p.classify(p.per_cpu_ptr(last, 3).unwrap()).unwrap();
    assert_eq!(loc.region, Region::Chunk);
    assert_eq!(loc.cpu, Some(3));
    p.verify().unwrap();

    for ptr in ptrs {
        p.free(ptr).unwrap();
        p.verify().unwrap();
    }
    assert!(p.balance_pending(), "a second free chunk schedules the balance work");
    let report = p.balance();
    p.verify().unwrap();
    assert!(report.chunks_destroyed >= 2, "{report:?}");
    // At most one fully free chunk survives, plus the first chunk (and the
    // reserved chunk, which is not a backend chunk).
    let free_dynamic = p.chunks().filter(|c| c.role == ChunkRole::Dynamic).count();
    assert!(free_dynamic <= 1, "{free_dynamic} free backend chunks kept");
    assert!(p.take_events().iter().any(|e| matches!(e, ChunkEvent::Destroyed { .. })));
}

#[test]
fn atomic_requests_never_create_chunks_and_balance_repopulates() {
    let mut p = small();
    let before = p.nr_chunks();
    let mut n = 0;
    // Exhaust the populated first chunk with atomic requests.
    loop {
        match p.alloc(AllocRequest::new(1024, 4).atomic()) {
            Ok(_) => n += 1,
            Err(AllocError::AtomicNoSpace { size, .. }) => {
                assert_eq!(size, 1024);
                break;
            }
            Err(e) => panic!("{e}"),
        }
        assert!(n < 10_000);
    }
    assert_eq!(p.nr_chunks(), before, "atomic allocation created a chunk");
    assert!(p.balance_pending());
    let report = p.balance();
    assert!(report.pages_populated >= PCPU_EMPTY_POP_PAGES_HIGH, "{report:?}");
    assert!(p.nr_empty_pop_pages() >= PCPU_EMPTY_POP_PAGES_HIGH);
    p.alloc(AllocRequest::new(1024, 4).atomic()).expect("populated pages serve atomic requests again");
    p.verify().unwrap();
}

#[test]
fn sparse_chunks_are_isolated_and_depopulated() {
    let mut p = small();
    let page = 4096;
    let mut ptrs = Vec::new();
    for _ in 0..(3 * p.unit_size() / page) {
        ptrs.push(p.alloc(AllocRequest::new(page, page)).unwrap());
    }
    // Free all but one object of each backend chunk: pages go empty while
    // the chunks stay in use, so they are isolated and depopulated.
    let mut kept = Vec::new();
    for (i, ptr) in ptrs.into_iter().enumerate() {
        if i % 13 == 0 {
            kept.push(ptr);
        } else {
            p.free(ptr).unwrap();
        }
    }
    p.verify().unwrap();
    let report = p.balance();
    p.verify().unwrap();
    assert!(report.pages_depopulated > 0, "{report:?}");
    assert!(p.nr_empty_pop_pages() <= PCPU_EMPTY_POP_PAGES_HIGH + p.unit_size() / page);
    for ptr in kept {
        // The kept objects are still there and populated.
        let loc = p.classify(p.per_cpu_ptr(ptr, 0).unwrap()).unwrap();
        assert!(loc.populated, "{loc}");
        p.free(ptr).unwrap();
    }
    p.balance();
    p.verify().unwrap();
}

#[test]
fn km_backend_chunks_are_contiguous_and_fully_populated() {
    let space = AddressSpace::new(64, 4096, 0x8000_0000..0x1_0000_0000, 0x2_0000_0000..0x3_0000_0000).unwrap();
    let mut cfg = PercpuConfig::generic(space, Topology::uma(CpuSet::first_n(3)), 0x3000);
    cfg.backend = BackendKind::Km;
    let mut p = Percpu::new(cfg.clone()).unwrap();
    let mut ptrs = Vec::new();
    while p.nr_chunks() < 3 {
        ptrs.push(p.alloc(AllocRequest::new(2048, 8)).unwrap());
    }
    let c = p.chunks().find(|c| c.role == ChunkRole::Dynamic).unwrap();
    assert_eq!(c.map.nr_populated(), c.map.nr_pages());
    // One group: unit u of the chunk sits right after unit u-1.
    let g = p.geometry();
    assert_eq!(g.group_offsets.len(), 1);
    assert!(p.backend_warnings().iter().all(|w| w.starts_with("wasting")));
    for ptr in ptrs {
        p.free(ptr).unwrap();
    }
    p.verify().unwrap();

    // Page first chunk and km are incompatible, like the #error in percpu-km.c.
    cfg.first_chunk = FirstChunkKind::Page;
    assert!(matches!(Percpu::new(cfg), Err(PercpuSetupError::FirstChunk(SetupError::PageWithKm))));
}

#[test]
fn numa_groups_make_congruent_chunks() {
    let topo = Topology::blocked(CpuSet::first_n(8), 2);
    let mut p = Percpu::new(PercpuConfig::generic(AddressSpace::generic64(), topo, 0x5000)).unwrap();
    assert_eq!(p.geometry().group_offsets.len(), 2);
    let mut last = None;
    while p.nr_chunks() < 3 {
        last = Some(p.alloc(AllocRequest::new(8192, 4096)).unwrap());
    }
    let ptr = last.unwrap();
    // Every CPU's copy is in its own unit of the same chunk.
    let mut units = std::collections::BTreeSet::new();
    let mut chunk = None;
    for cpu in 0..8 {
        let loc = p.classify(p.per_cpu_ptr(ptr, cpu).unwrap()).unwrap();
        assert_eq!(loc.cpu, Some(cpu));
        assert!(chunk.is_none() || chunk == Some(loc.chunk));
        chunk = Some(loc.chunk);
        units.insert(loc.unit);
    }
    assert_eq!(units.len(), 8);
}

#[test]
fn stats_layout_matches_percpu_stats() {
    let mut p = small();
    let a = p.alloc(AllocRequest::new(12, 4)).unwrap();
    let _b = p.alloc(AllocRequest::new(100, 4)).unwrap();
    p.free(a).unwrap();
    let dump = p.stats().dump();
    assert!(dump.starts_with("Percpu Memory Statistics\nAllocation Info:\n"));
    assert!(dump.contains("\n  nr_alloc            :            2\n"), "{dump}");
    assert!(dump.contains("\n  nr_cur_alloc        :            1\n"), "{dump}");
    assert!(dump.contains("Chunk: <- Reserved Chunk\n"));
    assert!(dump.contains("Chunk: <- First Chunk\n"));
    // The freed 12 bytes before the live 100 are a fragment.
    let first = p.stats().chunks.into_iter().find(|c| c.label.contains("First")).unwrap();
    assert_eq!(first.sum_frag, 12);
    assert_eq!(first.cur_max_alloc, 100);
}

/// percpu-km.c's `pcpu_should_reclaim_chunk` returns false: km chunks are
/// never isolated, however many empty pages they have (found by the
/// userspace harness's differential at pcpu_alloc level; checked in 6.1).
#[test]
fn km_chunks_are_never_isolated_for_reclaim() {
    let make = |backend| {
        let space = AddressSpace::new(64, 4096, 0x8000_0000..0x1_0000_0000, 0x2_0000_0000..0x3_0000_0000).unwrap();
        let mut cfg = PercpuConfig::generic(space, Topology::uma(CpuSet::first_n(3)), 0x3000);
        cfg.backend = backend;
        Percpu::new(cfg).unwrap()
    };
    let isolates = |backend| {
        let mut p = make(backend);
        let mut ptrs = Vec::new();
        while p.nr_chunks() < 5 {
            ptrs.push(p.alloc(AllocRequest::new(2048, 8)).unwrap());
        }
        // populate whatever vm left unpopulated, so both backends have the
        // same empty populated pages
        p.balance();
        let mut isolated = false;
        // free the objects of the dynamic chunks but the last of each: the
        // empty pages of the earlier chunks count against a later one's, so
        // percpu-vm isolates it while it is still in use
        for ptr in ptrs {
            let chunk = p.classify(p.per_cpu_ptr(ptr, 0).unwrap()).unwrap().chunk;
            if p.chunk(chunk).role != ChunkRole::Dynamic || p.chunk(chunk).nr_alloc == 1 {
                continue;
            }
            p.free(ptr).unwrap();
            isolated |= p.chunks().any(|c| c.isolated);
        }
        p.verify().unwrap();
        isolated
    };
    assert!(isolates(BackendKind::Vm), "the scenario reaches isolation with percpu-vm");
    assert!(!isolates(BackendKind::Km), "percpu-km never isolates a chunk");
}

/// Every failed atomic request goes through pcpu_alloc's `fail:` label,
/// which sets pcpu_atomic_alloc_failed and schedules the balance work: the
/// reserved chunk's failures too.
#[test]
fn a_failed_atomic_reserved_request_schedules_balance_work() {
    let mut p = small();
    p.balance();
    assert!(!p.balance_pending());
    let big = AllocRequest::new(PERCPU_MODULE_RESERVE + 4, 4).reserved().atomic();
    assert!(matches!(p.alloc(big), Err(AllocError::ReservedExhausted { .. })));
    assert!(p.balance_pending(), "pcpu_schedule_balance_work() after the atomic failure");
    // and the balance work then populates as after any atomic failure
    assert!(p.atomic_alloc_failed);
    // a non-atomic reserved failure schedules nothing
    let mut p = small();
    p.balance();
    let big = AllocRequest::new(PERCPU_MODULE_RESERVE + 4, 4).reserved();
    assert!(p.alloc(big).is_err());
    assert!(!p.balance_pending());
}

#[test]
fn slot_lists_are_observable_in_list_order() {
    let mut p = small();
    assert_eq!(p.nr_slots(), p.to_depopulate_slot() + 1);
    let first = p.first_chunk_id();
    let listed: Vec<_> = (0..p.nr_slots()).flat_map(|s| p.slot_list(s).map(move |c| (s, c))).collect();
    assert_eq!(listed, vec![(p.slot_of(first).unwrap(), first)], "only the first chunk is listed");
    // fill past the first chunk: new chunks join the lists, each once, where slot_of says
    let mut ptrs = Vec::new();
    while p.nr_chunks() < 4 {
        ptrs.push(p.alloc(AllocRequest::new(4096, 4096)).unwrap());
    }
    for c in p.chunks().filter(|c| c.role != ChunkRole::Reserved) {
        let on: Vec<_> = (0..p.nr_slots()).filter(|&s| p.slot_list(s).any(|id| id == c.id)).collect();
        assert_eq!(on, vec![p.slot_of(c.id).unwrap()], "chunk {}", c.id);
    }
}
