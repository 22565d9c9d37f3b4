//! Unit tests for each hint-update case, and a proptest against a plain
//! `Vec<bool>` reference with `verify()` after every step.

use super::*;
use proptest::prelude::*;

const PAGE: usize = 4096;
const BB: usize = PAGE / 4;

/// What `pcpu_alloc` does inside one chunk: find a start, then scan.
fn alloc(c: &mut ChunkMap, bits: usize, align_bits: usize) -> Option<usize> {
    let start = c.find_block_fit(bits, align_bits, false)?;
    c.alloc_area(bits, align_bits, start)
}

fn ok(c: &ChunkMap) {
    if let Err(e) = c.verify() {
        panic!("verify failed: {e}");
    }
}

fn largest_free_run(c: &ChunkMap, range: Range<usize>) -> usize {
    let mut best = 0;
    let mut run = 0;
    for bit in range {
        run = if c.is_bit_allocated(bit) { 0 } else { run + 1 };
        best = best.max(run);
    }
    best
}

#[test]
fn new_chunk_is_free_and_unpopulated() {
    let c = ChunkMap::new(PAGE, 8);
    assert_eq!(c.region_bits(), 8 * BB);
    assert_eq!(c.block_bits(), BB);
    assert_eq!(c.free_bytes(), 8 * PAGE);
    assert_eq!(c.contig_hint_bytes(), 8 * PAGE);
    assert_eq!((c.nr_populated(), c.nr_empty_pop_pages()), (0, 0));
    assert!((0..8).all(|p| c.is_page_empty(p) && !c.is_page_populated(p)));
    assert!(c.is_wholly_free());
    assert_eq!(c.areas().collect::<Vec<_>>(), vec![(0..8 * BB, false)]);
    // 128 words alloc map, 129 bound map, 1 populated, 9 md blocks of 32 bytes
    assert_eq!(c.metadata_bytes(), (128 + 129 + 1) * 8 + 9 * 32);
    ok(&c);
}

#[test]
fn alloc_inside_a_hole_keeps_the_block_contig_hint() {
    let mut c = ChunkMap::new(PAGE, 1);
    assert_eq!(alloc(&mut c, 8, 1), Some(0));
    assert_eq!(alloc(&mut c, 8, 1), Some(8));
    assert_eq!(alloc(&mut c, 8, 1), Some(16));
    assert_eq!(c.free_area(8), Ok(8));
    let b = c.block_hints(0);
    assert_eq!((b.contig_hint_start, b.contig_hint), (24, BB - 24));
    assert_eq!((b.scan_hint_start, b.scan_hint), (8, 8), "the freed hole is the scan hint");
    assert_eq!(b.first_free, 8);

    // first fit goes into the hole; the contig hint is untouched
    assert_eq!(alloc(&mut c, 4, 1), Some(8));
    let b = c.block_hints(0);
    assert_eq!((b.contig_hint_start, b.contig_hint), (24, BB - 24));
    assert_eq!(b.scan_hint, 0, "the allocation broke the scan hint");
    assert_eq!(b.first_free, 12);
    assert_eq!((b.left_free, b.right_free), (0, BB - 24));
    ok(&c);
}

#[test]
fn alloc_breaking_the_contig_hint_promotes_the_scan_hint() {
    let mut c = ChunkMap::new(PAGE, 1);
    for expect in [0, 8, 16] {
        assert_eq!(alloc(&mut c, 8, 1), Some(expect));
    }
    c.free_area(8).unwrap();
    // 100 bits do not fit the 8-bit scan hint: the search starts past it
    assert_eq!(c.find_block_fit(100, 1, false), Some(16));
    assert_eq!(alloc(&mut c, 100, 1), Some(24));
    let b = c.block_hints(0);
    // the old scan hint was promoted, then the rescan found the tail
    assert_eq!((b.contig_hint_start, b.contig_hint), (124, BB - 124));
    assert_eq!((b.scan_hint_start, b.scan_hint), (8, 8));
    assert_eq!(b.right_free, BB - 124);
    let ch = c.chunk_hints();
    assert_eq!((ch.contig_hint_start, ch.contig_hint), (124, BB - 124));
    ok(&c);
}

#[test]
fn free_merges_across_a_block_boundary() {
    let mut c = ChunkMap::new(PAGE, 2);
    assert_eq!(alloc(&mut c, 1000, 1), Some(0));
    assert_eq!(alloc(&mut c, 48, 1), Some(1000));
    assert_eq!(alloc(&mut c, 2 * BB - 1048, 1), Some(1048));
    assert_eq!(c.contig_hint_bytes(), 0);
    assert_eq!(c.find_block_fit(1, 1, false), None);

    // the free crosses blocks: both blocks updated, chunk rescanned
    assert_eq!(c.free_area(1000), Ok(48));
    let (b0, b1) = (c.block_hints(0), c.block_hints(1));
    assert_eq!((b0.right_free, b0.contig_hint_start, b0.contig_hint), (24, 1000, 24));
    assert_eq!((b1.left_free, b1.contig_hint_start, b1.contig_hint), (24, 0, 24));
    let ch = c.chunk_hints();
    assert_eq!((ch.contig_hint_start, ch.contig_hint), (1000, 48));
    ok(&c);

    // freeing the neighbour makes block 0 wholly free: chunk rescanned and
    // the run assembled from block 0 and block 1's left_free
    assert_eq!(c.free_area(0), Ok(1000));
    assert!(c.is_page_empty(0) && !c.is_page_empty(1));
    let ch = c.chunk_hints();
    assert_eq!((ch.contig_hint_start, ch.contig_hint), (0, 1048));
    assert_eq!(c.find_block_fit(1048, 1, false), Some(0));
    assert_eq!(c.find_block_fit(1049, 1, false), None);
    ok(&c);
}

#[test]
fn whole_block_free_refreshes_and_counts_an_empty_page() {
    let mut c = ChunkMap::new(PAGE, 3);
    c.mark_populated(0, 3);
    assert_eq!(c.nr_empty_pop_pages(), 3);
    let a = alloc(&mut c, 2 * BB + 10, 1).unwrap();
    assert_eq!(a, 0);
    assert_eq!(c.nr_empty_pop_pages(), 0, "pages 0, 1 and 2 are all in use");
    let b = alloc(&mut c, 10, 1).unwrap();
    assert_eq!(b, 2 * BB + 10);
    ok(&c);
    c.free_area(a).unwrap();
    assert_eq!(c.nr_empty_pop_pages(), 2, "pages 0 and 1 are empty again, page 2 is not");
    assert!(c.is_page_empty(0) && c.is_page_empty(1) && !c.is_page_empty(2));
    assert_eq!(c.contig_hint_bytes(), (2 * BB + 10) * 4);
    c.free_area(b).unwrap();
    assert_eq!(c.nr_empty_pop_pages(), 3);
    assert!(c.is_wholly_free());
    assert_eq!(c.contig_hint_bytes(), 3 * PAGE);
    ok(&c);
}

#[test]
fn kernel_free_path_does_not_raise_the_chunk_hint_outside_block_0() {
    for fix in [false, true] {
        let mut c = ChunkMap::new(PAGE, 2);
        c.set_free_path_chunk_hint_fix(fix);
        assert_eq!(alloc(&mut c, BB, 1), Some(0));
        assert_eq!(alloc(&mut c, 100, 1), Some(BB));
        assert_eq!(alloc(&mut c, BB - 200, 1), Some(BB + 100));
        assert_eq!(alloc(&mut c, 100, 1), Some(2 * BB - 100));
        assert_eq!(c.contig_hint_bytes(), 0);

        // a free confined to block 1
        c.free_area(BB + 100).unwrap();
        assert_eq!(c.block_hints(1).contig_hint, BB - 200, "the block knows");
        ok(&c);
        if fix {
            assert_eq!(c.contig_hint_bytes(), (BB - 200) * 4);
            assert_eq!(c.find_block_fit(10, 1, false), Some(BB + 100));
        } else {
            // the kernel's chunk update gets a block-relative end: no-op
            assert_eq!(c.contig_hint_bytes(), 0);
            assert_eq!(c.find_block_fit(10, 1, false), None);
            assert_eq!(c.chunk_hints().first_free, BB + 100, "only first_free moved");
        }
    }
}

#[test]
fn block_contig_hint_may_under_report_after_scan_hint_promotion() {
    // Layout of one block, allocated in order, then selectively freed.
    let sizes = [12, 88, 20, 80, 5, 295, 50, BB - 550];
    let mut c = ChunkMap::new(PAGE, 1);
    let offs: Vec<usize> = sizes.iter().map(|&s| alloc(&mut c, s, 1).unwrap()).collect();
    assert_eq!(offs, vec![0, 12, 100, 120, 200, 205, 500, 550]);
    c.free_area(500).unwrap(); // contig hint 50@500
    c.free_area(100).unwrap(); // scan hint 20@100
    c.free_area(0).unwrap(); // 12@0: smaller than the scan hint, not recorded
    let b = c.block_hints(0);
    assert_eq!((b.contig_hint_start, b.contig_hint, b.scan_hint_start, b.scan_hint), (500, 50, 100, 20));

    // 15 bits skip 0..12 (too small) and land in the scan hint, dropping it
    assert_eq!(alloc(&mut c, 15, 1), Some(100));
    assert_eq!(c.block_hints(0).scan_hint, 0);
    c.free_area(200).unwrap(); // 5@200 becomes the scan hint
    assert_eq!(c.block_hints(0).scan_hint_start, 200);

    // 48 bits break the contig hint; the rescan promotes 5@200 and only
    // looks after it, so 12@0 is forgotten
    assert_eq!(alloc(&mut c, 48, 1), Some(500));
    let b = c.block_hints(0);
    assert_eq!((b.contig_hint_start, b.contig_hint), (200, 5));
    assert_eq!(largest_free_run(&c, 0..BB), 12);
    assert_eq!(c.find_block_fit(10, 1, false), None, "12 free bits exist but are not known");
    ok(&c); // the kernel guarantees no more than this: verify accepts it

    // freeing next to the forgotten area reports it again
    c.free_area(12).unwrap();
    assert_eq!(c.block_hints(0).contig_hint, 100);
    ok(&c);
}

#[test]
fn a_better_aligned_equal_area_moves_the_contig_hint_before_a_forgotten_area() {
    // U = 16..28 is the area the block will forget
    let sizes = [5, 11, 12, 72, 20, 80, 5, 295, 50, BB - 550];
    let mut c = ChunkMap::new(PAGE, 1);
    let offs: Vec<usize> = sizes.iter().map(|&s| alloc(&mut c, s, 1).unwrap()).collect();
    assert_eq!(offs, vec![0, 5, 16, 28, 100, 120, 200, 205, 500, 550]);
    c.free_area(500).unwrap(); // contig hint 50@500
    c.free_area(100).unwrap(); // scan hint 20@100
    c.free_area(16).unwrap(); // U: smaller than the scan hint
    assert_eq!(alloc(&mut c, 15, 1), Some(100), "skips U, drops the scan hint");
    c.free_area(200).unwrap(); // scan hint 5@200
    assert_eq!(alloc(&mut c, 48, 1), Some(500), "promotes 5@200, forgets U");
    let b = c.block_hints(0);
    assert_eq!((b.contig_hint_start, b.contig_hint), (200, 5));
    ok(&c);

    // an equal area at bit 0 is better aligned than 200: the hint moves
    // back and U (12 bits) now lies after a 5-bit contig hint
    c.free_area(0).unwrap();
    let b = c.block_hints(0);
    assert_eq!((b.contig_hint_start, b.contig_hint), (0, 5));
    assert_eq!(largest_free_run(&c, 5..BB), 12);
    ok(&c);
    assert_eq!(c.find_block_fit(6, 1, false), None);
}

#[test]
fn right_free_under_reports_after_promoting_a_tail_scan_hint() {
    let mut c = ChunkMap::new(PAGE, 1);
    for (size, expect) in [(100, 0), (100, 100), (724, 200), (100, 924)] {
        assert_eq!(alloc(&mut c, size, 1), Some(expect));
    }
    c.free_area(100).unwrap(); // contig hint 100@100
    c.free_area(924).unwrap(); // equal, worse aligned: scan hint 100@924
    let b = c.block_hints(0);
    assert_eq!((b.contig_hint_start, b.scan_hint_start, b.scan_hint, b.right_free), (100, 924, 100, 100));

    // breaking the contig hint promotes the tail area; right_free is lost
    assert_eq!(alloc(&mut c, 50, 1), Some(100));
    let b = c.block_hints(0);
    assert_eq!((b.contig_hint_start, b.contig_hint), (924, 100));
    assert_eq!(b.right_free, 0, "the kernel forgets the free block end");
    assert!(!c.is_bit_allocated(BB - 1));
    ok(&c);
    // a free reaching the block end restores it
    c.free_area(200).unwrap();
    assert_eq!(c.block_hints(0).right_free, BB - 150);
    ok(&c);
}

#[test]
fn first_chunk_hides_head_and_tail() {
    // start 0x5a4 (bit 361, odd), 5000 bytes: region 6444 -> 2 pages
    let mut c = ChunkMap::new_first_chunk(PAGE, 0x5a4, 5000);
    assert_eq!((c.nr_pages(), c.region_bits()), (2, 2 * BB));
    assert_eq!((c.start_offset(), c.end_offset()), (0x5a4, 2 * PAGE - 0x5a4 - 5000));
    assert_eq!(c.free_bytes(), 5000);
    assert_eq!((c.nr_populated(), c.nr_empty_pop_pages()), (2, 0));
    assert_eq!(c.allocation_containing(0), Some(0..361));
    assert_eq!(c.allocation_containing(360), Some(0..361));
    assert_eq!(c.allocation_containing(361), None);
    let tail = (0x5a4 + 5000) / 4;
    assert_eq!(c.allocation_containing(2 * BB - 1), Some(tail..2 * BB));
    assert_eq!(c.contig_hint_bytes(), 5000);
    assert_eq!(c.chunk_hints().first_free, 361);
    assert_eq!(c.areas().collect::<Vec<_>>(), vec![(0..361, true), (361..tail, false), (tail..2 * BB, true)]);
    ok(&c);

    // the hidden areas cannot be freed
    let before = c.clone();
    assert_eq!(c.free_area(0), Err(NotAllocated { bit_off: 0 }));
    assert_eq!(c.free_area(tail), Err(NotAllocated { bit_off: tail }));
    assert_eq!(c, before);

    // 8-byte alignment skips the odd bit 361; a 4-byte request fills it
    assert_eq!(alloc(&mut c, 2, 2), Some(362));
    assert_eq!(alloc(&mut c, 1, 1), Some(361));
    ok(&c);
    // the whole dynamic area can be used, and no more
    assert_eq!(alloc(&mut c, tail - 364, 1), Some(364));
    assert_eq!(c.free_bytes(), 0);
    assert_eq!(c.find_block_fit(1, 1, false), None);
    ok(&c);
}

#[test]
fn first_chunk_without_head_or_tail_is_all_empty_pages() {
    let c = ChunkMap::new_first_chunk(PAGE, 0, 3 * PAGE);
    assert_eq!((c.nr_pages(), c.start_offset(), c.end_offset()), (3, 0, 0));
    assert_eq!((c.nr_populated(), c.nr_empty_pop_pages()), (3, 3));
    assert_eq!(c.contig_hint_bytes(), 3 * PAGE);
    ok(&c);
    // a page-aligned head leaves page 1 empty
    let c = ChunkMap::new_first_chunk(PAGE, 2048, PAGE + 2048);
    assert_eq!((c.nr_pages(), c.end_offset()), (2, 0));
    assert_eq!(c.nr_empty_pop_pages(), 1);
    assert!(!c.is_page_empty(0) && c.is_page_empty(1));
    ok(&c);
}

#[test]
fn alignment_up_to_page_size() {
    let mut c = ChunkMap::new(PAGE, 3);
    assert_eq!(alloc(&mut c, 1, 1), Some(0));
    assert_eq!(alloc(&mut c, 1, BB), Some(BB));
    assert_eq!(alloc(&mut c, BB / 2, BB), Some(2 * BB));
    assert_eq!(c.find_block_fit(1, BB, false), None, "no page-aligned bit is free");
    // the hole left before the aligned allocation is still usable
    assert_eq!(alloc(&mut c, BB - 1, 1), Some(1));
    for align in [2, 4, 8, 16, 32, 64, 128, 256, 512] {
        let off = alloc(&mut c, 3, align).unwrap();
        assert_eq!(off % align, 0, "align {align}");
        ok(&c);
    }
    // bad requests are refused, not panicked on
    assert_eq!(c.find_block_fit(1, 3, false), None);
    assert_eq!(c.find_block_fit(1, 2 * BB, false), None);
    assert_eq!(c.find_block_fit(0, 1, false), None);
    assert_eq!(c.alloc_area(1, 3, 0), None);
    assert_eq!(c.alloc_area(1, 1, 3 * BB), None);
    ok(&c);
}

#[test]
fn populated_and_empty_page_accounting() {
    let mut c = ChunkMap::new(PAGE, 4);
    c.mark_populated(0, 2);
    assert_eq!((c.nr_populated(), c.nr_empty_pop_pages()), (2, 2));
    assert_eq!(c.unpopulated_runs(0, 4).collect::<Vec<_>>(), vec![2..4]);
    assert_eq!(c.populated_runs(0, 4).collect::<Vec<_>>(), vec![0..2]);
    assert_eq!(alloc(&mut c, 10, 1), Some(0));
    assert_eq!(c.nr_empty_pop_pages(), 1);
    // an allocation over unpopulated pages does not touch the count...
    let off = c.alloc_area(40, 1, 2 * BB + 1000).unwrap();
    assert_eq!(off, 2 * BB + 1000);
    assert_eq!(c.nr_empty_pop_pages(), 1);
    ok(&c);
    // ...and populating non-empty pages adds no empty page
    c.mark_populated(2, 4);
    assert_eq!((c.nr_populated(), c.nr_empty_pop_pages()), (4, 1));
    c.mark_populated(0, 4); // idempotent
    assert_eq!((c.nr_populated(), c.nr_empty_pop_pages()), (4, 1));
    c.mark_depopulated(1, 2);
    assert_eq!((c.nr_populated(), c.nr_empty_pop_pages()), (3, 0));
    assert_eq!(c.unpopulated_runs(0, 4).collect::<Vec<_>>(), vec![1..2]);
    assert_eq!(c.populated_runs(0, 4).collect::<Vec<_>>(), vec![0..1, 2..4]);
    assert_eq!(c.populated_runs(1, 2).count(), 0);
    // the allocation path's shortcut is the iterator's first run
    for (s, e) in [(0, 4), (0, 1), (1, 2), (1, 4), (2, 4), (2, 2)] {
        assert_eq!(c.first_unpopulated_run(s, e), c.unpopulated_runs(s, e).next(), "{s}..{e}");
    }
    ok(&c);
    // freeing into an unpopulated page does not count it as empty-populated
    c.free_area(0).unwrap();
    assert_eq!(c.nr_empty_pop_pages(), 1);
    c.free_area(off).unwrap();
    assert_eq!(c.nr_empty_pop_pages(), 3);
    c.mark_depopulated(0, 4);
    assert_eq!((c.nr_populated(), c.nr_empty_pop_pages()), (0, 0));
    ok(&c);
}

#[test]
fn pop_only_fits_skip_unpopulated_pages() {
    let mut c = ChunkMap::new(PAGE, 3);
    c.mark_populated(2, 3);
    assert_eq!(c.find_block_fit(10, 1, false), Some(0));
    assert_eq!(c.find_block_fit(10, 1, true), Some(2 * BB));
    assert_eq!(c.find_block_fit(BB + 1, 1, true), None, "needs two populated pages");
    c.mark_populated(1, 2);
    assert_eq!(c.find_block_fit(BB + 1, 1, true), Some(BB));
    let off = c.alloc_area(BB + 1, 1, BB).unwrap();
    assert_eq!(off, BB);
    ok(&c);
}

#[test]
fn bad_frees_are_errors_and_change_nothing() {
    let mut c = ChunkMap::new(PAGE, 2);
    let a = alloc(&mut c, 30, 1).unwrap();
    let b = alloc(&mut c, 1100, 1).unwrap();
    let before = c.clone();
    for bad in [a + 1, b + 29, b + 1099, 2000, 2 * BB, usize::MAX] {
        assert_eq!(c.free_area(bad), Err(NotAllocated { bit_off: bad }), "bit {bad}");
        assert_eq!(c, before, "bit {bad} changed the state");
    }
    assert_eq!(NotAllocated { bit_off: 7 }.to_string(), "bit 7 is not the start of an allocation");
    assert_eq!(c.free_area(a), Ok(30));
    let after_free = c.clone();
    assert_eq!(c.free_area(a), Err(NotAllocated { bit_off: a }), "double free");
    assert_eq!(c, after_free);
    ok(&c);
    // a stale bound bit inside a later, larger allocation is cleared
    let d = alloc(&mut c, 20, 1).unwrap();
    assert_eq!(d, a);
    assert_eq!(c.allocation_containing(d + 19), Some(d..d + 20));
    assert_eq!(c.free_area(d + 10), Err(NotAllocated { bit_off: d + 10 }));
    assert_eq!(c.free_area(d), Ok(20));
    ok(&c);
}

#[test]
fn areas_and_allocation_containing_walk_the_maps() {
    let mut c = ChunkMap::new(PAGE, 1);
    let a = alloc(&mut c, 5, 1).unwrap();
    let b = alloc(&mut c, 7, 1).unwrap();
    let d = alloc(&mut c, 3, 1).unwrap();
    c.free_area(b).unwrap();
    assert_eq!(c.areas().collect::<Vec<_>>(), vec![(0..5, true), (5..12, false), (12..15, true), (15..BB, false)]);
    assert_eq!((a, d), (0, 12));
    assert_eq!(c.allocation_containing(4), Some(0..5));
    assert_eq!(c.allocation_containing(5), None);
    assert_eq!(c.allocation_containing(14), Some(12..15));
    assert_eq!(c.allocation_containing(BB), None);
}

#[test]
fn verify_reports_corruption() {
    let mut c = ChunkMap::new(PAGE, 2);
    alloc(&mut c, 100, 1).unwrap();
    let mut bad = c.clone();
    bad.md_blocks[0].contig_hint += 1;
    assert!(matches!(bad.verify(), Err(VerifyError::Block { block: 0, field: "contig_hint", .. })));
    let mut bad = c.clone();
    bad.md_blocks[1].left_free -= 1;
    assert!(matches!(bad.verify(), Err(VerifyError::Block { block: 1, field: "left_free", .. })));
    let mut bad = c.clone();
    bad.chunk_md.contig_hint_start = 50;
    assert!(matches!(bad.verify(), Err(VerifyError::ChunkHint { field: "contig_hint_start", .. })));
    let mut bad = c.clone();
    bad.free_bytes += 4;
    let err = bad.verify().unwrap_err();
    assert!(matches!(err, VerifyError::Counter { field: "free_bytes", .. }));
    assert!(err.to_string().contains("free_bytes"), "{err}");
    let mut bad = c.clone();
    bits::clear_bit(&mut bad.bound_map, 100);
    assert!(matches!(bad.verify(), Err(VerifyError::MapBit { bit: 100, .. })));
    let mut bad = c.clone();
    bad.nr_empty_pop_pages = 1;
    assert!(matches!(bad.verify(), Err(VerifyError::Counter { field: "nr_empty_pop_pages", .. })));
    // the model's free_blocks bitmap
    let mut bad = c.clone();
    bits::set_bit(&mut bad.free_blocks, 0);
    assert!(matches!(bad.verify(), Err(VerifyError::FreeBlocks { block: 0, stored: true, .. })));
    let mut bad = c.clone();
    bits::clear_bit(&mut bad.free_blocks, 1);
    assert!(matches!(bad.verify(), Err(VerifyError::FreeBlocks { block: 1, stored: false, .. })));
    let mut bad = c.clone();
    bits::set_bit(&mut bad.free_blocks, 2);
    assert!(matches!(bad.verify(), Err(VerifyError::FreeBlocks { block: 2, stored: true, .. })));
    let mut bad = c.clone();
    bad.md_blocks[1].right_free -= 1;
    let err = bad.verify().unwrap_err();
    assert!(matches!(err, VerifyError::FreeBlocks { block: 1, .. }), "{err}");
    // the model's alloc_end: 100 bits allocated from bit 0, block 1 empty
    assert_eq!(c.alloc_end, vec![100, 0]);
    let mut bad = c.clone();
    bad.alloc_end[0] = 99;
    assert!(matches!(bad.verify(), Err(VerifyError::AllocEnd { block: 0, stored: 99, recomputed: 100 })));
    let mut bad = c.clone();
    bad.alloc_end[1] = 1;
    assert!(matches!(bad.verify(), Err(VerifyError::AllocEnd { block: 1, stored: 1, recomputed: 0 })));
}

// ---------------------------------------------------------------------------
// The skip over wholly free blocks against the kernel's block-by-block walk.

/// `pcpu_next_md_free_region` transcribed block by block, as the kernel
/// runs it (no `free_blocks`): the reference for the accelerated walk.
fn naive_next_md_free_region(c: &ChunkMap, mut bit_off: usize) -> (usize, usize) {
    let bb = c.block_bits;
    let mut i = bit_off / bb;
    let mut block_off = bit_off % bb;
    let mut bits = 0;
    while i < c.md_blocks.len() {
        let block = &c.md_blocks[i];
        if bits != 0 {
            bits += block.left_free as usize;
            if block.left_free as usize == bb {
                i += 1;
                continue;
            }
            return (bit_off, bits);
        }
        bits = block.contig_hint as usize;
        if bits != 0 && block.contig_hint_start as usize >= block_off && bits + (block.contig_hint_start as usize) < bb
        {
            return (i * bb + block.contig_hint_start as usize, bits);
        }
        block_off = 0;
        bits = block.right_free as usize;
        bit_off = (i + 1) * bb - bits;
        i += 1;
    }
    (bit_off, bits)
}

/// Every region `pcpu_for_each_md_free_region` visits from `bit_off`.
fn md_free_regions(
    c: &ChunkMap,
    mut bit_off: usize,
    next: fn(&ChunkMap, usize) -> (usize, usize),
) -> Vec<(usize, usize)> {
    let mut regions = Vec::new();
    loop {
        let (off, bits) = next(c, bit_off);
        if off >= c.region_bits {
            return regions;
        }
        regions.push((off, bits));
        bit_off = off + bits + 1;
    }
}

/// `pcpu_chunk_refresh_hint` on the naive walk: the chunk hints it leaves.
fn naive_chunk_refresh(c: &ChunkMap, full_scan: bool) -> BlockMd {
    let mut md = c.chunk_md;
    let bit_off;
    if !full_scan && md.scan_hint != 0 {
        bit_off = (md.scan_hint_start + md.scan_hint) as usize;
        md.contig_hint_start = md.scan_hint_start;
        md.contig_hint = md.scan_hint;
        md.scan_hint = 0;
    } else {
        bit_off = md.first_free as usize;
        md.contig_hint = 0;
    }
    for (off, bits) in md_free_regions(c, bit_off, naive_next_md_free_region) {
        md.update(off, off + bits);
    }
    md
}

/// The accelerated walk and refresh equal the naive ones on `c`: from every
/// block boundary, the middle and last bit of every block, the chunk's
/// first_free and scan hint end, and the `extra` offsets.
fn scans_agree(c: &ChunkMap, extra: &[usize]) -> Result<(), TestCaseError> {
    let bb = c.block_bits;
    let md = c.chunk_md;
    let mut starts: Vec<usize> =
        (0..c.md_blocks.len()).flat_map(|i| [i * bb, i * bb + bb / 2, i * bb + bb - 1]).collect();
    starts.extend([md.first_free as usize, (md.scan_hint_start + md.scan_hint) as usize, c.region_bits]);
    starts.extend(extra.iter().map(|&x| x % (c.region_bits + 1)));
    for start in starts {
        let fast = md_free_regions(c, start, ChunkMap::next_md_free_region);
        let naive = md_free_regions(c, start, naive_next_md_free_region);
        prop_assert_eq!(fast, naive, "regions from bit {}", start);
    }
    for full_scan in [false, true] {
        let mut fast = c.clone();
        fast.chunk_refresh_hint(full_scan);
        prop_assert_eq!(fast.chunk_md, naive_chunk_refresh(c, full_scan), "refresh, full_scan {}", full_scan);
    }
    Ok(())
}

#[test]
fn md_free_region_walk_takes_free_runs_whole() {
    let mut c = ChunkMap::new(PAGE, 16);
    // partial blocks 2 (a hole the walk does not see: it is block 2's scan
    // hint) and 9 (busy at both ends); block 12 full; the rest wholly free
    assert_eq!(c.alloc_area(10, 1, 2 * BB), Some(2 * BB));
    assert_eq!(c.alloc_area(10, 1, 2 * BB + 20), Some(2 * BB + 20));
    assert_eq!(c.alloc_area(1, 1, 9 * BB), Some(9 * BB));
    assert_eq!(c.alloc_area(1, 1, 10 * BB - 1), Some(10 * BB - 1));
    assert_eq!(c.alloc_area(BB, 1, 12 * BB), Some(12 * BB));
    ok(&c);
    let expect = vec![
        (0, 2 * BB),                     // blocks 0-1, left_free(2) = 0
        (2 * BB + 30, 6 * BB + BB - 30), // right_free(2) + blocks 3-8
        (9 * BB + 1, BB - 2),            // block 9's contig hint
        (10 * BB, 2 * BB),               // blocks 10-11 up to the full block 12
        (13 * BB, 3 * BB),               // blocks 13-15 to the chunk end
    ];
    assert_eq!(md_free_regions(&c, 0, ChunkMap::next_md_free_region), expect);
    assert_eq!(md_free_regions(&c, 0, naive_next_md_free_region), expect);
    // starting inside a wholly free block starts the area at its first bit
    assert_eq!(c.next_md_free_region(4 * BB + 7), (4 * BB, 5 * BB));
    assert_eq!(naive_next_md_free_region(&c, 4 * BB + 7), (4 * BB, 5 * BB));
    scans_agree(&c, &[]).unwrap();
}

// ---------------------------------------------------------------------------
// Random sequences against a trivial reference.

#[derive(Clone, Debug)]
enum Op {
    /// bits, log2 of alignment in bits, populated pages only
    Alloc(usize, u32, bool),
    /// free the n-th live allocation (modulo their number)
    Free(usize),
    /// free an arbitrary bit (usually invalid)
    FreeBit(usize),
    Populate(usize, usize),
    Depopulate(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (prop_oneof![3 => 1usize..8, 2 => 8usize..64, 1 => 64usize..1500], 0u32..11, prop::bool::weighted(0.2))
            .prop_map(|(b, a, p)| Op::Alloc(b, a, p)),
        4 => any::<usize>().prop_map(Op::Free),
        1 => any::<usize>().prop_map(Op::FreeBit),
        1 => (any::<usize>(), 1usize..4).prop_map(|(s, n)| Op::Populate(s, n)),
        1 => (any::<usize>(), 1usize..3).prop_map(|(s, n)| Op::Depopulate(s, n)),
    ]
}

/// Which chunk to start from: a dynamic chunk, or a first chunk.
fn chunk() -> impl Strategy<Value = ChunkMap> {
    prop_oneof![
        3 => (1usize..6).prop_map(|n| ChunkMap::new(PAGE, n)),
        1 => (0usize..BB, 1usize..3 * BB).prop_map(|(s, m)| ChunkMap::new_first_chunk(PAGE, s * 4, m * 4)),
        1 => Just(ChunkMap::new(4 * PAGE, 2)),
    ]
}

struct Reference {
    allocated: Vec<bool>,
    populated: Vec<bool>,
    live: Vec<(usize, usize)>,
}

impl Reference {
    fn new(c: &ChunkMap) -> Self {
        let allocated = (0..c.region_bits()).map(|b| c.is_bit_allocated(b)).collect();
        Reference {
            allocated,
            populated: (0..c.nr_pages()).map(|p| c.is_page_populated(p)).collect(),
            live: Vec::new(),
        }
    }

    /// First `align`-aligned offset at or after `start` with `bits` free
    /// bits, searching no further than `pcpu_alloc_area` does.
    fn first_fit(&self, bits: usize, align: usize, start: usize) -> Option<usize> {
        let block_bits = self.allocated.len() / self.populated.len();
        let end = (start + bits + block_bits).min(self.allocated.len());
        let mut busy_before = vec![0usize; end + 1];
        for i in 0..end {
            busy_before[i + 1] = busy_before[i] + self.allocated[i] as usize;
        }
        (start.next_multiple_of(align)..end)
            .step_by(align)
            .find(|&q| q + bits <= end && busy_before[q + bits] == busy_before[q])
    }

    fn agrees(&self, c: &ChunkMap) -> Result<(), TestCaseError> {
        let free = self.allocated.iter().filter(|&&a| !a).count();
        prop_assert_eq!(c.free_bytes(), free * 4);
        for (bit, &a) in self.allocated.iter().enumerate() {
            prop_assert_eq!(c.is_bit_allocated(bit), a, "bit {}", bit);
        }
        for &(off, len) in &self.live {
            prop_assert_eq!(c.allocation_containing(off + len / 2), Some(off..off + len));
        }
        let pop = self.populated.iter().filter(|&&p| p).count();
        prop_assert_eq!(c.nr_populated(), pop);
        let page_bits = c.block_bits();
        let empty_pop = (0..c.nr_pages())
            .filter(|&p| self.populated[p] && !self.allocated[p * page_bits..(p + 1) * page_bits].contains(&true))
            .count();
        prop_assert_eq!(c.nr_empty_pop_pages(), empty_pop);
        Ok(())
    }
}

/// Apply `ops` with `verify()` and the reference checked after each, and
/// the accelerated chunk-hint walk compared with the kernel's (also from
/// the `extra` bit offsets).
fn run_ops(c: ChunkMap, ops: Vec<Op>, fix: bool) -> Result<(), TestCaseError> {
    run_ops_with(c, ops, fix, &[])
}

fn run_ops_with(mut c: ChunkMap, ops: Vec<Op>, fix: bool, extra: &[usize]) -> Result<(), TestCaseError> {
    let extra = extra.to_vec();
    c.set_free_path_chunk_hint_fix(fix);
    let mut r = Reference::new(&c);
    let bb = c.block_bits();
    let trace = std::env::var_os("BITMAP_TRACE").is_some();
    for op in ops {
        if trace {
            eprintln!("{op:?}");
        }
        match op {
            Op::Alloc(bits, align_log, pop_only) => {
                let align = 1usize << align_log.min(bb.trailing_zeros());
                let fit = c.find_block_fit(bits, align, pop_only);
                if let Some(start) = fit {
                    // Hints never over-report, so the area the fit was based
                    // on is really free and the scan must find it.
                    let Some(off) = c.alloc_area(bits, align, start) else {
                        return Err(TestCaseError::fail(format!(
                            "alloc_area({bits}, {align}, {start}) failed after find_block_fit"
                        )));
                    };
                    if trace {
                        eprintln!("  fit {start} -> {off}");
                    }
                    prop_assert_eq!(off % align, 0);
                    prop_assert!(off >= start);
                    prop_assert!(!r.allocated[off..off + bits].contains(&true), "overlap at {}", off);
                    // first fit from start: no earlier aligned spot fits
                    let first = r.first_fit(bits, align, start);
                    prop_assert_eq!(Some(off), first, "not the first fit from {}", start);
                    if pop_only {
                        for p in off / bb..=(off + bits - 1) / bb {
                            prop_assert!(r.populated[p], "atomic alloc on unpopulated page {}", p);
                        }
                    }
                    r.allocated[off..off + bits].iter_mut().for_each(|a| *a = true);
                    r.live.push((off, bits));
                } else if r.live.is_empty()
                    && c.start_offset() == 0
                    && c.end_offset() == 0
                    && bits <= c.region_bits()
                    && !pop_only
                {
                    // an empty chunk's hints are exact
                    prop_assert!(false, "empty chunk refused {} bits", bits);
                }
            }
            Op::Free(n) => {
                if r.live.is_empty() {
                    continue;
                }
                let (off, len) = r.live.swap_remove(n % r.live.len());
                prop_assert_eq!(c.free_area(off), Ok(len));
                r.allocated[off..off + len].iter_mut().for_each(|a| *a = false);
            }
            Op::FreeBit(bit) => {
                let bit = bit % (c.region_bits() + 2);
                if let Some(i) = r.live.iter().position(|&(off, _)| off == bit) {
                    let (off, len) = r.live.swap_remove(i);
                    prop_assert_eq!(c.free_area(off), Ok(len));
                    r.allocated[off..off + len].iter_mut().for_each(|a| *a = false);
                } else {
                    let before = c.clone();
                    prop_assert_eq!(c.free_area(bit), Err(NotAllocated { bit_off: bit }));
                    prop_assert_eq!(&c, &before);
                }
            }
            Op::Populate(s, n) => {
                let s = s % c.nr_pages();
                let e = (s + n).min(c.nr_pages());
                c.mark_populated(s, e);
                r.populated[s..e].iter_mut().for_each(|p| *p = true);
            }
            Op::Depopulate(s, n) => {
                // like the balance work: only wholly free pages go away
                let s = s % c.nr_pages();
                let e = (s + n).min(c.nr_pages());
                if (s..e).all(|p| c.is_page_empty(p)) {
                    c.mark_depopulated(s, e);
                    r.populated[s..e].iter_mut().for_each(|p| *p = false);
                }
            }
        }
        if trace {
            for b in 0..c.nr_pages() {
                eprintln!("  b{b} {:?}", c.block_hints(b));
            }
            eprintln!("  areas {:?}", c.areas().collect::<Vec<_>>());
        }
        if let Err(e) = c.verify() {
            return Err(TestCaseError::fail(format!("verify after {op:?}: {e}")));
        }
        r.agrees(&c)?;
        scans_agree(&c, &extra)?;
    }
    // everything freed: the chunk is whole again and its hints exact
    for (off, len) in r.live.drain(..) {
        prop_assert_eq!(c.free_area(off), Ok(len));
    }
    c.verify().map_err(|e| TestCaseError::fail(format!("verify after draining: {e}")))?;
    let dynamic = c.region_bits() * 4 - c.start_offset() - c.end_offset();
    prop_assert_eq!(c.free_bytes(), dynamic);
    if c.start_offset() == 0 && c.end_offset() == 0 {
        // the last free emptied a block, so the chunk was fully rescanned
        prop_assert_eq!(c.contig_hint_bytes(), dynamic);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_match_reference_and_verify(c in chunk(), ops in prop::collection::vec(op(), 1..160)) {
        run_ops(c, ops, false)?;
    }

    #[test]
    fn random_sequences_with_free_path_fix(c in chunk(), ops in prop::collection::vec(op(), 1..80)) {
        run_ops(c, ops, true)?;
    }

    /// Larger chunks and allocations up to several blocks, so runs of wholly
    /// free blocks sit between partial and full ones; the skip must give
    /// the kernel's walk from any bit.
    #[test]
    fn free_block_skip_matches_the_kernel_walk(
        c in prop_oneof![
            4 => (6usize..40).prop_map(|n| ChunkMap::new(PAGE, n)),
            1 => (0usize..BB, 4 * BB..24 * BB).prop_map(|(s, m)| ChunkMap::new_first_chunk(PAGE, s * 4, m * 4)),
        ],
        ops in prop::collection::vec(
            prop_oneof![
                3 => (prop_oneof![2 => 1usize..64, 2 => 64usize..BB, 2 => BB..4 * BB], 0u32..11, Just(false))
                    .prop_map(|(b, a, p)| Op::Alloc(b, a, p)),
                2 => any::<usize>().prop_map(Op::Free),
            ],
            1..120,
        ),
        extra in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        run_ops_with(c, ops, false, &extra)?;
    }
}

/// Throughput smoke test for the benchmark's shapes (run with
/// `cargo test -p percpu-core bitmap::tests::throughput -- --ignored --nocapture`).
#[test]
#[ignore]
fn throughput() {
    use std::time::Instant;
    let pages = 64;
    // 2^20 4-byte objects, then free them all in allocation order
    let t = Instant::now();
    let mut chunks: Vec<ChunkMap> = Vec::new();
    let mut live = Vec::with_capacity(1 << 20);
    for _ in 0..1 << 20 {
        let hit = chunks.iter_mut().enumerate().rev().find_map(|(i, c)| alloc(c, 1, 1).map(|o| (i, o)));
        let (i, o) = hit.unwrap_or_else(|| {
            let mut c = ChunkMap::new(PAGE, pages);
            c.mark_populated(0, pages);
            let o = alloc(&mut c, 1, 1).unwrap();
            chunks.push(c);
            (chunks.len() - 1, o)
        });
        live.push((i, o));
    }
    let t_alloc = t.elapsed();
    let t = Instant::now();
    for &(i, o) in &live {
        chunks[i].free_area(o).unwrap();
    }
    eprintln!("4-byte x 2^20: alloc {t_alloc:?}, free {:?}, {} chunks", t.elapsed(), chunks.len());
    assert!(chunks.iter().all(|c| c.is_wholly_free()));

    // 2^20 allocations of 4..1024 bytes (pseudo-random), alignment 4..32
    let mut chunks: Vec<ChunkMap> = Vec::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let t = Instant::now();
    for _ in 0..1 << 20 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let bits = (seed % 256) as usize + 1;
        let align = 1 << ((seed >> 20) % 4);
        // like the slot search: the last chunks are the emptiest
        let ok = chunks.iter_mut().rev().take(4).any(|c| alloc(c, bits, align).is_some());
        if !ok {
            let mut c = ChunkMap::new(PAGE, pages);
            c.mark_populated(0, pages);
            alloc(&mut c, bits, align).unwrap();
            chunks.push(c);
        }
    }
    eprintln!("4..1024 bytes x 2^20: alloc {:?}, {} chunks", t.elapsed(), chunks.len());
}
