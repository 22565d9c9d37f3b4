//! The parts of the whole-allocator differential that need no kernel tree:
//! operation generation, the driver's reply formats, the comparison, the
//! invariants, the model side and minimisation over allocator operations.

use super::model::{Model, ModelConfig};
use super::real::{parse_chunk, parse_result, parse_state};
use super::*;
use percpu_core::profile::KernelProfile;

fn cfg(cpus: u32) -> ModelConfig {
    ModelConfig { cpus, static_size: 0x3000, reserved_size: None, kernel: KernelProfile::parse("6.1").unwrap() }
}

fn run_model(cfg: &ModelConfig, ops: &[Op]) -> (Model, Vec<(OpResult, State)>) {
    let mut m = Model::new(cfg).unwrap();
    let obs = ops.iter().map(|op| (m.apply(op), m.state())).collect();
    (m, obs)
}

#[test]
fn random_ops_are_reproducible_and_free_only_earlier_allocations_once() {
    let ops = random_ops(7, 20_000);
    assert_eq!(ops, random_ops(7, 20_000));
    assert_ne!(ops, random_ops(8, 20_000));
    let mut allocated = std::collections::HashSet::new();
    let mut freed = std::collections::HashSet::new();
    let (mut reserved, mut atomic, mut illegal, mut balance, mut big) = (0, 0, 0, 0, 0);
    for op in &ops {
        match *op {
            Op::Alloc { id, size, align, reserved: r, atomic: a } => {
                assert!(allocated.insert(id), "id {id} reused");
                assert!(align.is_power_of_two() && align <= 4096);
                reserved += r as usize;
                atomic += a as usize;
                illegal += (size == 0 || size > 32768) as usize;
                big += (size > 4096 && size <= 32768) as usize;
            }
            Op::Free { id } => {
                assert!(allocated.contains(&id), "free of #{id} before its allocation");
                assert!(freed.insert(id), "#{id} freed twice");
            }
            Op::Balance => balance += 1,
        }
    }
    // every kind of request the differential is meant to reach
    assert!(reserved > 100 && atomic > 100 && illegal > 5 && balance > 100 && big > 50, "{ops:?}");
    assert!(freed.len() > ops.len() / 3);
}

#[test]
fn requests_and_descriptions() {
    let a = Op::Alloc { id: 3, size: 10, align: 8, reserved: true, atomic: false };
    assert_eq!(a.request(), "a 3 10 8 1 0");
    assert_eq!(a.to_string(), "#3 = alloc 10 B align 8 reserved");
    assert_eq!(Op::Free { id: 3 }.request(), "f 3");
    assert_eq!(Op::Balance.request(), "b");
    let s = Setup {
        cpus: 4,
        nr_units: 4,
        static_size: 1,
        reserved_size: 2,
        dyn_size: 3,
        unit_size: 4,
        atom_size: 5,
        alloc_size: 6,
    };
    assert_eq!(s.request(), "setup 4 4 1 2 3 4 5 6");
}

#[test]
fn parses_replies_and_refuses_malformed_ones() {
    let a = Op::Alloc { id: 0, size: 4, align: 4, reserved: false, atomic: false };
    assert_eq!(parse_result(&a, "a 2 4096"), Some(OpResult::Alloc(Some((2, 4096)))));
    assert_eq!(parse_result(&a, "a -1 -1"), Some(OpResult::Alloc(None)));
    assert_eq!(parse_result(&a, "a 2"), None);
    assert_eq!(parse_result(&a, "f ok"), None, "a reply to another request");
    assert_eq!(parse_result(&Op::Free { id: 0 }, "f skip"), Some(OpResult::Free(false)));
    assert_eq!(parse_result(&Op::Balance, "b ok"), Some(OpResult::Balance));

    let line = "s 7 20 1 17 3 L 5 0 L 15 2 C 0 100 1 2 3 4 5 6 7 8 9 10 0 C 1 8192 0 0 2048 0 2048 2048 0 2048 2 2 0 \
                C 2 49152 0 0 12288 0 12288 12288 0 12288 12 12 1";
    let s = parse_state(line).unwrap();
    assert_eq!(
        (s.nr_empty_pop_pages, s.nr_populated, s.balance_scheduled, s.nr_slots, s.nr_chunks),
        (7, 20, true, 17, 3)
    );
    assert_eq!(s.slots, vec![(5, vec![0]), (15, vec![2])]);
    assert_eq!(s.chunks[0].md, [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!((s.chunks[0].nr_populated, s.chunks[0].nr_empty_pop_pages), (9, 10));
    assert!(s.chunks[2].isolated && !s.chunks[1].isolated);
    assert_eq!(parse_state("s 1 2 3"), None);
    assert_eq!(parse_state(&line.replace(" C 2 ", " X 2 ")), None);
    assert_eq!(parse_state(&line[..line.len() - 4]), None, "a truncated chunk");

    // one page: 1024 bits, 16 words of alloc_map, 17 of bound_map
    let v = format!(
        "v 1 0 0 4096 1 1 0 0 1024 0 1024 1024 0 1024 0 0 1024 0 1024 1024 0 1024 |{} |{} | 1",
        " 0".repeat(16),
        " 0".repeat(17)
    );
    let st = parse_chunk(&v).unwrap();
    assert_eq!((st.nr_pages, st.free_bytes, st.alloc_map.len(), st.bound_map.len()), (1, 4096, 16, 17));
    assert_eq!(st.md_blocks[0].contig_hint, 1024);
    assert!(percpu_core::bitmap::ChunkMap::from_kernel_state(&st).unwrap().verify().is_ok());
    assert_eq!(parse_chunk("v 2 0 0 | 0 | 0 | 0"), None, "too few hints for two pages");
}

#[test]
fn the_model_side_is_one_km_group_with_the_profiles_sizes() {
    let m = Model::new(&cfg(4)).unwrap();
    let s = m.setup(&cfg(4)).unwrap();
    assert_eq!((s.cpus, s.nr_units, s.static_size, s.reserved_size), (4, 4, 0x3000, 8 << 10));
    assert_eq!(s.dyn_size, 28 << 10);
    assert_eq!(s.unit_size, 48 << 10, "PFN_ALIGN(12K + 8K + 28K), above the 32 KiB minimum");
    assert_eq!(m.reserved_ord(), Some(1));
    let none = ModelConfig { reserved_size: Some(0), ..cfg(1) };
    assert_eq!(Model::new(&none).unwrap().reserved_ord(), None);
}

#[test]
fn model_states_satisfy_the_invariants_the_real_side_is_held_to() {
    let c = cfg(4);
    let ops = random_ops(3, 6000);
    let (m, obs) = run_model(&c, &ops);
    let setup = m.setup(&c).unwrap();
    for (i, (_, s)) in obs.iter().enumerate() {
        check_invariants(s, &setup, m.reserved_ord()).unwrap_or_else(|e| panic!("after op {}: {e}", i + 1));
    }
    assert!(obs.iter().any(|(_, s)| s.nr_chunks > 4), "the sequence grows over several chunks");
}

#[test]
fn the_invariant_check_rejects_broken_states() {
    let c = cfg(4);
    let (m, obs) = run_model(&c, &random_ops(5, 3000));
    let setup = m.setup(&c).unwrap();
    let r = m.reserved_ord();
    let good = obs.iter().map(|(_, s)| s).find(|s| s.nr_chunks >= 4).unwrap().clone();
    check_invariants(&good, &setup, r).unwrap();

    let mut s = good.clone();
    s.nr_empty_pop_pages += 1;
    assert!(check_invariants(&s, &setup, r).unwrap_err().contains("pcpu_nr_empty_pop_pages"));
    let mut s = good.clone();
    s.nr_populated -= 1;
    assert!(check_invariants(&s, &setup, r).unwrap_err().contains("pcpu_nr_populated"));
    let mut s = good.clone();
    s.slots[0].1.push(1); // the reserved chunk on a list
    assert!(check_invariants(&s, &setup, r).unwrap_err().contains("reserved"));
    let mut s = good.clone();
    let dup = s.chunks[2].ord;
    s.slots.push((s.nr_slots - 3, vec![dup]));
    assert!(check_invariants(&s, &setup, r).unwrap_err().contains("slot lists"));
    let mut s = good.clone();
    let wrong = (1..s.nr_slots - 3).find(|&n| n != s.slots.iter().find(|(_, l)| l.contains(&0)).unwrap().0).unwrap();
    for (_, l) in &mut s.slots {
        l.retain(|&o| o != 0);
    }
    s.slots.push((wrong, vec![0]));
    assert!(check_invariants(&s, &setup, r).unwrap_err().contains("contig hint"));
}

#[test]
fn first_difference_names_the_field() {
    let (_, obs) = run_model(&cfg(2), &random_ops(9, 2000));
    let a = obs.iter().map(|(_, s)| s).find(|s| s.chunks.len() >= 3 && s.slots.iter().any(|(_, l)| l.len() >= 2));
    let a = a.expect("some state with a slot list of two").clone();
    assert_eq!(a.first_difference(&a.clone()), None);
    let field = |f: &dyn Fn(&mut State)| {
        let mut b = a.clone();
        f(&mut b);
        a.first_difference(&b).map(|(name, _, _)| name)
    };
    assert_eq!(field(&|b| b.nr_chunks += 1).as_deref(), Some("number of chunks"));
    assert_eq!(field(&|b| b.balance_scheduled ^= true).as_deref(), Some("balance work scheduled"));
    assert_eq!(field(&|b| b.chunks[2].md[2] += 1), Some(format!("chunk {} chunk_md.contig_hint", a.chunks[2].ord)));
    assert_eq!(field(&|b| b.chunks[1].isolated ^= true), Some(format!("chunk {} isolated", a.chunks[1].ord)));
    // the same chunks in another order on a list
    let (slot, _) = a.slots.iter().find(|(_, l)| l.len() >= 2).unwrap().clone();
    let got = field(&|b| b.slots.iter_mut().find(|(n, _)| *n == slot).unwrap().1.reverse());
    assert_eq!(got, Some(format!("slot {slot} list")));
}

#[test]
fn coverage_counts_what_the_model_run_did() {
    let c = cfg(4);
    let ops = random_ops(1, 8000);
    let mut m = Model::new(&c).unwrap();
    let mut cov = Coverage::default();
    let mut before = m.state();
    for op in &ops {
        let r = m.apply(op);
        let after = m.state();
        cov.count(op, &r, &before, &after, 2);
        before = after;
    }
    assert_eq!(cov.allocs + cov.alloc_failures, ops.iter().filter(|o| matches!(o, Op::Alloc { .. })).count());
    assert_eq!(cov.balances, ops.iter().filter(|o| matches!(o, Op::Balance)).count());
    assert!(cov.chunks_created > 5 && cov.chunks_destroyed > 0 && cov.atomic_failures > 0, "{cov}");
    assert_eq!(cov.chunks_created - cov.chunks_destroyed + 2, m.p.nr_chunks());
}

#[test]
fn minimising_allocator_sequences_keeps_the_failure() {
    // a stand-in for a divergence: the model ends up with a chunk past the
    // fourth; the minimal sequence still does, and no op can go
    let c = cfg(1);
    let fails = |ops: &[Op]| run_model(&c, ops).0.p.chunks().any(|ch| ch.id >= 4);
    let ops = random_ops(11, 3000);
    let prefix = &ops[..ops.iter().enumerate().position(|(i, _)| fails(&ops[..=i])).unwrap() + 1];
    let small = ddmin(prefix, 5000, fails);
    assert!(fails(&small) && small.len() < prefix.len());
    for i in 0..small.len() {
        let mut fewer = small.clone();
        fewer.remove(i);
        assert!(!fails(&fewer), "op {} of {small:?} is not needed", i + 1);
    }
}

#[test]
fn generating_from_a_tree_names_what_is_missing() {
    let dir = std::env::temp_dir().join(format!("percpu-bed-alloc-src-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let err = source::build(&dir, &crate::kbuild::Cache::at(&dir.join("cache"))).unwrap_err();
    assert!(err.to_string().contains("mm/percpu-km.c"), "{err}");
    for f in source::TREE_FILES {
        std::fs::create_dir_all(dir.join(f).parent().unwrap()).unwrap();
        std::fs::write(dir.join(f), "/* empty */\n").unwrap();
    }
    let err = source::generate(&dir).unwrap_err();
    assert!(err.to_string().contains("`PCPU_MIN_UNIT_SIZE` not found in the tree's include/linux/percpu.h"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn named_workloads_become_bench_ordered_operations() {
    let ops = workload_ops("alternating-256", 6).unwrap();
    let frees: Vec<u32> = ops.iter().filter_map(|o| if let Op::Free { id } = o { Some(*id) } else { None }).collect();
    assert_eq!(frees, vec![0, 2, 4, 1, 3, 5], "bench's alternating order");
    assert!(ops.iter().all(|o| !matches!(o, Op::Alloc { size, align, .. } if (*size, *align) != (256, 4))));
    assert_eq!(ops.last(), Some(&Op::Balance));

    // the filler: pairs of 2 KiB at 2 KiB, the first of each freed, before the objects
    let ops = workload_ops("second-half-filled-4", 1024).unwrap();
    let pairs = (1024 * 4usize).div_ceil(2048) + 64;
    let fillers = ops.iter().filter(|o| matches!(o, Op::Alloc { size: 2048, align: 2048, .. })).count();
    assert_eq!(fillers, 2 * pairs);
    let first_object = ops.iter().position(|o| matches!(o, Op::Alloc { size: 4, .. })).unwrap();
    let filler_frees = ops[..first_object].iter().filter(|o| matches!(o, Op::Free { .. })).count();
    assert_eq!(filler_frees, pairs);
    // the balance work every WORKLOAD_BALANCE_EVERY operations
    let balances = ops.iter().filter(|o| matches!(o, Op::Balance)).count();
    let plain = ops.len() - balances;
    assert_eq!(balances, plain / WORKLOAD_BALANCE_EVERY + 1);

    assert!(workload_ops("random-alloc", 10).unwrap_err().contains("random sequence"));
    assert!(workload_ops("nonsense", 10).unwrap_err().contains("in-order-256"));
}
