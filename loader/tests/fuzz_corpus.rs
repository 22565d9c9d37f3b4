//! The `load_and_relocate` fuzz target's body run as a plain test: over the
//! test objects, the regression inputs the fuzzer found (tests/data/fuzz-regressions)
//! and proptest mutations of the test objects (byte overwrites, truncation,
//! header-field rewrites), so stable toolchains exercise it too.

use percpu_loader::fuzzing::load_and_relocate;
use proptest::prelude::*;

fn corpus() -> Vec<Vec<u8>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
    let mut v = Vec::new();
    for sub in ["", "fuzz-regressions"] {
        let Ok(rd) = std::fs::read_dir(format!("{dir}/{sub}")) else {
            continue;
        };
        let mut paths: Vec<_> = rd.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
        paths.sort();
        for p in paths {
            let n = p.file_name().unwrap().to_string_lossy().to_string();
            if n.ends_with(".o") || n.ends_with("vmlinux") || sub == "fuzz-regressions" {
                v.push(std::fs::read(&p).unwrap());
            }
        }
    }
    v
}

#[test]
fn corpus_and_regressions() {
    let c = corpus();
    assert!(c.len() >= 15);
    for input in &c {
        load_and_relocate(input);
    }
}

/// A mutation: overwrite `len` bytes at a position with a value.
fn mutate(mut b: Vec<u8>, muts: &[(usize, u64, u8)], cut: Option<usize>) -> Vec<u8> {
    for &(pos, val, len) in muts {
        if b.is_empty() {
            break;
        }
        let at = pos % b.len();
        for i in 0..len as usize {
            if at + i < b.len() {
                b[at + i] = (val >> (8 * i)) as u8;
            }
        }
    }
    if let Some(c) = cut {
        let l = b.len();
        b.truncate(c % (l + 1));
    }
    b
}

/// Interesting values: small, boundary and huge.
fn value() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        Just(0u64),
        Just(0xffff_ffff_ffff_ffff),
        Just(0x7fff_ffff),
        Just(0x8000_0000),
        Just(0xffff),
        (0u64..64),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, .. ProptestConfig::default() })]
    #[test]
    fn mutated_objects_never_panic(
        which in 0usize..64,
        muts in prop::collection::vec((any::<usize>(), value(), prop_oneof![Just(1u8), Just(2), Just(4), Just(8)]), 1..6),
        cut in prop::option::weighted(0.2, any::<usize>()),
        header in any::<bool>(),
    ) {
        let c = corpus();
        let base = c[which % c.len()].clone();
        // Half the time aim at the ELF and section headers, where the damage is most interesting.
        let muts: Vec<_> = if header {
            muts.iter().map(|&(p, v, l)| (p % 64, v, l)).collect()
        } else {
            muts
        };
        load_and_relocate(&mutate(base, &muts, cut));
    }
}
