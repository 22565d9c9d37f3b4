//! The userspace harness on a real kernel tree: Debian's linux-source-6.1
//! as `percpu-bed kbuild` unpacks it into the cache.  Without a cached
//! tree these tests print why they skip (they never download 1.5 GB);
//! `percpu-bed harness build` or `ci/harness.sh` fetches it.  The extractor
//! and minimiser have unit tests that need no tree.
//!
//! Builds go to a fresh temporary cache so the tests never reuse a binary
//! built from different inputs.

use std::path::{Path, PathBuf};

use percpu_bed::harness::{self, diff, Driver, HarnessError};
use percpu_bed::kbuild::Cache;

/// The newest completely unpacked linux-source-6.1 in the user's cache.
fn cached_tree() -> Option<PathBuf> {
    let cache = Cache::from_env().ok()?;
    let mut found: Vec<PathBuf> = std::fs::read_dir(cache.sources())
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.join(".complete").is_file()
                && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("debian-linux-source-6.1_"))
        })
        .collect();
    found.sort();
    Some(found.pop()?.join("linux-source-6.1"))
}

macro_rules! tree_or_skip {
    () => {
        match cached_tree() {
            Some(t) => t,
            None => {
                eprintln!(
                    "SKIP {}: no linux-source-6.1 unpacked in the percpu-bed cache (run `percpu-bed harness build` once)",
                    std::thread::current().name().unwrap_or("harness test")
                );
                return;
            }
        }
    };
}

/// A fresh cache directory, removed when the test ends.
struct TempCache(Cache);

impl std::ops::Deref for TempCache {
    type Target = Cache;
    fn deref(&self) -> &Cache {
        &self.0
    }
}

impl Drop for TempCache {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0.root);
    }
}

fn temp_cache(name: &str) -> TempCache {
    let dir = std::env::temp_dir().join(format!("percpu-bed-harness-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempCache(Cache::at(dir))
}

fn driver(tree: &Path, cache: &Cache) -> Driver {
    let built = harness::build(tree, cache).unwrap_or_else(|e| panic!("building the harness: {e}"));
    Driver::start(&built.binary).unwrap()
}

/// A copy of the harness's three files of `tree`, `percpu.c` edited by `edit`.
fn edited_copy(tree: &Path, cache: &Cache, mut edit: impl FnMut(String) -> String) -> PathBuf {
    let dir = cache.root.join("tree");
    for f in harness::build::TREE_FILES {
        std::fs::create_dir_all(dir.join(f).parent().unwrap()).unwrap();
        let text = std::fs::read_to_string(tree.join(f)).unwrap();
        let text = if f == "mm/percpu.c" { edit(text) } else { text };
        std::fs::write(dir.join(f), text).unwrap();
    }
    dir
}

#[test]
fn the_real_code_and_the_model_agree_op_by_op() {
    let tree = tree_or_skip!();
    let cache = temp_cache("agree");
    let mut d = driver(&tree, &cache);
    for (seed, pages) in [(11, 8), (12, 4), (13, 16)] {
        let ops = diff::random_ops(seed, 20_000, pages);
        let out = diff::diff(&mut d, pages, false, &ops).unwrap();
        assert!(out.divergence.is_none(), "seed {seed}, {pages} pages: {:?}", out.divergence);
    }
}

#[test]
fn the_fix_switch_is_a_divergence_minimised_to_a_few_ops() {
    let tree = tree_or_skip!();
    let cache = temp_cache("fixswitch");
    let mut d = driver(&tree, &cache);
    let ops = diff::random_ops(1, 20_000, 8);
    let out = diff::diff(&mut d, 8, true, &ops).unwrap();
    let m = out.divergence.expect("the unpatched tree diverges from the model with the fix");
    assert!(m.ops.len() <= 10, "minimised to {} ops", m.ops.len());
    assert!(m.divergence.field.starts_with("chunk_md."), "{}", m.divergence);
    // the minimised sequence ends with the free whose chunk update differs
    assert!(matches!(m.ops.last(), Some(diff::Op::Free { .. })), "{:?}", m.ops);
}

#[test]
fn a_patched_copy_matches_the_model_with_the_fix_and_serves_the_request() {
    let tree = tree_or_skip!();
    let cache = temp_cache("patched");
    let fixed = harness::fixed_copy(&tree, &cache).unwrap();
    let mut real = driver(&tree, &cache);
    let mut f = driver(&fixed, &cache);
    let r = diff::hint_free_real(&mut real).unwrap();
    assert_eq!(r.chunk_after_free.contig_hint, 0);
    assert_eq!(r.last, None, "6.1 refuses the 1 KiB request");
    let s = diff::hint_free_real(&mut f).unwrap();
    assert_eq!(s.chunk_after_free.contig_hint, 512);
    assert_eq!(s.last, Some(4096));
    let ops = diff::random_ops(5, 20_000, 8);
    assert!(diff::diff(&mut f, 8, true, &ops).unwrap().divergence.is_none());
    assert!(diff::diff(&mut f, 8, false, &ops).unwrap().divergence.is_some());
}

#[test]
fn verify_holds_on_the_real_codes_state() {
    let tree = tree_or_skip!();
    let cache = temp_cache("verify");
    let mut d = driver(&tree, &cache);
    let ops = diff::random_ops(21, 5_000, 8);
    assert!(diff::verify(&mut d, 8, &ops, 1).unwrap().is_none());
}

#[test]
fn verify_catches_a_tree_that_breaks_an_invariant() {
    let tree = tree_or_skip!();
    let cache = temp_cache("broken");
    // pcpu_free_area forgets to give the bytes back
    let broken = edited_copy(&tree, &cache, |t| {
        let r = t.replacen("chunk->free_bytes += freed;", "chunk->free_bytes += freed - 4;", 1);
        assert_ne!(r, t, "the line to break is in 6.1's pcpu_free_area");
        r
    });
    let mut d = driver(&broken, &cache);
    let ops = diff::random_ops(21, 2_000, 8);
    let f = diff::verify(&mut d, 8, &ops, 1).unwrap().expect("the broken tree is caught");
    assert!(f.error.contains("free_bytes"), "{}", f.error);
    assert!(f.ops.len() <= 3, "{:?}", f.ops);
}

#[test]
fn a_missing_function_and_a_compile_error_are_named() {
    let tree = tree_or_skip!();
    let cache = temp_cache("errors");
    let renamed = edited_copy(&tree, &cache, |t| t.replace("pcpu_block_update_scan", "pcpu_block_scan_update"));
    match harness::build(&renamed, &cache) {
        Err(HarnessError::NotFound { what, file }) => {
            assert_eq!(what.name, "pcpu_block_update_scan");
            assert_eq!(file, "mm/percpu.c");
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    let broken = edited_copy(&tree, &cache, |t| {
        t.replacen("chunk->free_bytes -= alloc_bits * PCPU_MIN_ALLOC_SIZE;", "chunk->free_bytes -= ;", 1)
    });
    match harness::build(&broken, &cache) {
        Err(e @ HarnessError::Compile { .. }) => {
            let HarnessError::Compile { log, tail } = &e else { unreachable!() };
            assert!(log.is_file());
            assert!(tail.contains("mm/percpu.c:"), "the error names the tree's file and line: {tail}");
        }
        other => panic!("expected a compile error, got {other:?}"),
    }
}

#[test]
fn a_directory_that_is_not_a_tree_is_refused_without_gcc_running() {
    let cache = temp_cache("notatree");
    let e = harness::build(&cache.root, &cache).unwrap_err();
    assert!(e.to_string().contains("include/linux/percpu.h"), "{e}");
}

// ----- the whole allocator over percpu-km (`harness alloc`) -----

use percpu_bed::harness::alloc::{self, model::ModelConfig};

fn km_config(cpus: u32) -> ModelConfig {
    ModelConfig {
        cpus,
        static_size: 0x3000,
        reserved_size: None,
        kernel: percpu_core::profile::KernelProfile::parse("6.1").unwrap(),
    }
}

/// A copy of the whole-allocator harness's files of `tree`, each edited by
/// `edit(path, text)`.
fn alloc_copy(tree: &Path, cache: &Cache, edit: impl Fn(&str, String) -> String) -> PathBuf {
    let dir = cache.root.join("alloc-tree");
    for f in alloc::source::TREE_FILES {
        std::fs::create_dir_all(dir.join(f).parent().unwrap()).unwrap();
        let text = std::fs::read_to_string(tree.join(f)).unwrap();
        std::fs::write(dir.join(f), edit(f, text)).unwrap();
    }
    dir
}

#[test]
fn the_whole_allocator_agrees_with_the_model_over_many_chunks() {
    let tree = tree_or_skip!();
    let cache = temp_cache("alloc-agree");
    let built = alloc::source::build(&tree, &cache).unwrap_or_else(|e| panic!("building: {e}"));
    for (seed, cpus) in [(21, 4), (22, 1)] {
        let ops = alloc::random_ops(seed, 20_000);
        let out = alloc::diff(&built.binary, &km_config(cpus), &ops, 500).unwrap();
        assert!(out.divergence.is_none(), "seed {seed}, {cpus} cpus: {:?}", out.divergence);
        let c = &out.coverage;
        assert!(c.chunks_created > 20 && c.chunks_destroyed > 10 && c.atomic_failures > 0, "{c}");
        assert!(out.states_verified >= 40);
    }
}

#[test]
fn a_changed_constant_in_the_whole_allocator_diverges_in_a_few_ops() {
    let tree = tree_or_skip!();
    let cache = temp_cache("alloc-mutant");
    let mutant = alloc_copy(&tree, &cache, |f, t| {
        if f == "mm/percpu.c" {
            let m = t.replacen("#define PCPU_EMPTY_POP_PAGES_HIGH\t4", "#define PCPU_EMPTY_POP_PAGES_HIGH\t5", 1);
            assert_ne!(m, t, "the constant is in the tree");
            m
        } else {
            t
        }
    });
    let built = alloc::source::build(&mutant, &cache).unwrap();
    let out = alloc::diff(&built.binary, &km_config(4), &alloc::random_ops(1, 20_000), 0).unwrap();
    let m = out.divergence.expect("one more empty page to keep shows");
    assert!(m.ops.len() <= 6, "{:?}", m.ops);
    assert!(m.ops.iter().any(|op| matches!(op, alloc::Op::Balance)), "the balance work decides it: {:?}", m.ops);
}

#[test]
fn the_whole_allocator_names_a_missing_backend_function_and_reports_a_crash() {
    let tree = tree_or_skip!();
    let cache = temp_cache("alloc-errors");
    let renamed = alloc_copy(&tree, &cache, |f, t| {
        if f == "mm/percpu-km.c" {
            t.replace("pcpu_create_chunk", "pcpu_make_chunk")
        } else {
            t
        }
    });
    match alloc::source::build(&renamed, &cache) {
        Err(HarnessError::NotFound { what, file }) => {
            assert_eq!((what.name.as_str(), file.as_str()), ("pcpu_create_chunk", "mm/percpu-km.c"));
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    // a BUG in the backend's destroy path: the driver dies on the first
    // chunk the balance work frees
    let crashing = alloc_copy(&tree, &cache, |f, t| {
        if f == "mm/percpu-km.c" {
            t.replacen("pcpu_stats_chunk_dealloc();", "pcpu_stats_chunk_dealloc();\n\tBUG_ON(1);", 1)
        } else {
            t
        }
    });
    let built = alloc::source::build(&crashing, &cache).unwrap();
    let e = alloc::diff(&built.binary, &km_config(4), &alloc::random_ops(1, 20_000), 0).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("signal 6") && msg.contains("BUG_ON(1) at mm/percpu-km.c:"), "{msg}");
}

#[test]
fn verify_on_the_whole_allocators_chunks_catches_what_the_counters_hide() {
    let tree = tree_or_skip!();
    let cache = temp_cache("alloc-verify");
    // the populated bitmap one page short while nr_populated counts it
    let broken = alloc_copy(&tree, &cache, |f, t| {
        if f == "mm/percpu.c" {
            let m = t.replacen(
                "\tbitmap_set(chunk->populated, page_start, nr);",
                "\tbitmap_set(chunk->populated, page_start, nr > 1 ? nr - 1 : nr);",
                1,
            );
            assert_ne!(m, t, "pcpu_chunk_populated is as expected");
            m
        } else {
            t
        }
    });
    let built = alloc::source::build(&broken, &cache).unwrap();
    let out = alloc::diff(&built.binary, &km_config(4), &alloc::random_ops(1, 5000), 1).unwrap();
    let m = out.divergence.expect("verify() sees the populated map disagree with nr_populated");
    assert!(m.divergence.field.starts_with("verify()") && m.divergence.real.contains("populated"), "{}", m.divergence);
    assert!(m.ops.len() <= 10, "{:?}", m.ops);
}
