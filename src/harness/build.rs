//! Building the harness from a kernel tree: extract the chunk allocator
//! from the tree's `mm/percpu.c`, `mm/percpu-internal.h` and
//! `include/linux/percpu.h`, put it between the project's shim
//! (`c/shim.h`, `c/prelude.h`) and driver (`c/driver.c`), compile it with
//! the host's gcc, and cache the binary under
//! `<cache>/harness/<hash of the generated source and the compiler>/`.
//!
//! Nothing from the tree is committed or kept beyond the cache: a developer
//! edits the tree, and the next run extracts the edited functions, hashes
//! differently and rebuilds (about a second).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::extract::{Kind, Source};
use super::HarnessError;
use crate::kbuild::tree::which;
use crate::kbuild::Cache;

/// What is taken from `include/linux/percpu.h`.
const PERCPU_H: &[(Kind, &str)] = &[
    (Kind::Macro, "PCPU_MIN_ALLOC_SHIFT"),
    (Kind::Macro, "PCPU_MIN_ALLOC_SIZE"),
    (Kind::Macro, "PCPU_BITMAP_BLOCK_SIZE"),
    (Kind::Macro, "PCPU_BITMAP_BLOCK_BITS"),
];

/// What is taken from `mm/percpu-internal.h` (both harnesses).
pub(crate) const INTERNAL_H: &[(Kind, &str)] = &[
    (Kind::Struct, "pcpu_block_md"),
    (Kind::Struct, "pcpu_chunk"),
    (Kind::Function, "pcpu_chunk_nr_blocks"),
    (Kind::Function, "pcpu_nr_pages_to_map_bits"),
    (Kind::Function, "pcpu_chunk_map_bits"),
];

/// What is taken from `mm/percpu.c`: the chunk allocator, the hint upkeep
/// it calls, chunk creation and the slot bookkeeping.  Emitted in the
/// file's own order so every static function precedes its callers.
pub const PERCPU_C: &[(Kind, &str)] = &[
    (Kind::Macro, "PCPU_SLOT_BASE_SHIFT"),
    (Kind::Macro, "PCPU_SLOT_FAIL_THRESHOLD"),
    (Kind::Function, "__pcpu_size_to_slot"),
    (Kind::Function, "pcpu_size_to_slot"),
    (Kind::Function, "pcpu_chunk_slot"),
    (Kind::Function, "pcpu_index_alloc_map"),
    (Kind::Function, "pcpu_off_to_block_index"),
    (Kind::Function, "pcpu_off_to_block_off"),
    (Kind::Function, "pcpu_block_off_to_off"),
    (Kind::Function, "pcpu_check_block_hint"),
    (Kind::Function, "pcpu_next_hint"),
    (Kind::Function, "pcpu_next_md_free_region"),
    (Kind::Function, "pcpu_next_fit_region"),
    (Kind::Macro, "pcpu_for_each_md_free_region"),
    (Kind::Macro, "pcpu_for_each_fit_region"),
    (Kind::Function, "pcpu_mem_zalloc"),
    (Kind::Function, "pcpu_mem_free"),
    (Kind::Function, "__pcpu_chunk_move"),
    (Kind::Function, "pcpu_chunk_move"),
    (Kind::Function, "pcpu_chunk_relocate"),
    (Kind::Function, "pcpu_update_empty_pages"),
    (Kind::Function, "pcpu_region_overlap"),
    (Kind::Function, "pcpu_block_update"),
    (Kind::Function, "pcpu_block_update_scan"),
    (Kind::Function, "pcpu_chunk_refresh_hint"),
    (Kind::Function, "pcpu_block_refresh_hint"),
    (Kind::Function, "pcpu_block_update_hint_alloc"),
    (Kind::Function, "pcpu_block_update_hint_free"),
    (Kind::Function, "pcpu_is_populated"),
    (Kind::Function, "pcpu_find_block_fit"),
    (Kind::Function, "pcpu_find_zero_area"),
    (Kind::Function, "pcpu_alloc_area"),
    (Kind::Function, "pcpu_free_area"),
    (Kind::Function, "pcpu_init_md_block"),
    (Kind::Function, "pcpu_init_md_blocks"),
    (Kind::Function, "pcpu_alloc_chunk"),
    (Kind::Function, "pcpu_free_chunk"),
    (Kind::Function, "pcpu_chunk_populated"),
    (Kind::Function, "pcpu_chunk_depopulated"),
];

pub(crate) const SHIM_H: &str = include_str!("c/shim.h");
const PRELUDE_H: &str = include_str!("c/prelude.h");
const DRIVER_C: &str = include_str!("c/driver.c");

/// The files of a tree the harness reads.
pub const TREE_FILES: [&str; 3] = ["include/linux/percpu.h", "mm/percpu-internal.h", "mm/percpu.c"];

/// A built harness.
#[derive(Clone, Debug)]
pub struct Built {
    pub binary: PathBuf,
    /// The generated C file (extracted code between shim and driver).
    pub source: PathBuf,
    /// Whether this run compiled it (false: reused from the cache).
    pub compiled: bool,
    pub compile_seconds: f64,
}

pub(crate) fn read(tree: &Path, rel: &str) -> Result<String, HarnessError> {
    let p = tree.join(rel);
    std::fs::read_to_string(&p).map_err(|e| HarnessError::TreeFile { path: p, reason: e.to_string() })
}

/// Cut `items` out of `text` (the tree's `file`): each with its byte
/// offset in the file, sorted by it.
pub(crate) fn take_parts(text: &str, file: &str, items: &[(Kind, &str)]) -> Result<Vec<(usize, String)>, HarnessError> {
    let src = Source::new(text);
    let mut found = Vec::new();
    for &(kind, name) in items {
        let r = src.find(kind, name).map_err(|e| HarnessError::NotFound { what: e, file: file.to_string() })?;
        found.push(r);
    }
    found.sort_by_key(|r| r.start);
    Ok(found
        .into_iter()
        .map(|r| {
            let line = text[..r.start].matches('\n').count() + 1;
            (r.start, format!("#line {line} \"{file}\"\n{}\n\n", &text[r]))
        })
        .collect())
}

/// Cut `items` out of `text` (the tree's `file`), in the file's order.
pub(crate) fn take(text: &str, file: &str, items: &[(Kind, &str)]) -> Result<String, HarnessError> {
    Ok(take_parts(text, file, items)?.into_iter().map(|(_, s)| s).collect())
}

/// The generated translation unit for `tree`.
pub fn generate(tree: &Path) -> Result<String, HarnessError> {
    let mut out = String::from(
        "/* Generated by percpu-bed harness from a kernel tree: never commit. */\n#include \"shim.h\"\n\n",
    );
    out.push_str(&take(&read(tree, TREE_FILES[0])?, TREE_FILES[0], PERCPU_H)?);
    out.push_str(&take(&read(tree, TREE_FILES[1])?, TREE_FILES[1], INTERNAL_H)?);
    out.push_str("#include \"prelude.h\"\n\n");
    out.push_str(&take(&read(tree, TREE_FILES[2])?, TREE_FILES[2], PERCPU_C)?);
    out.push_str("#line 1 \"driver.c\"\n#include \"driver.c\"\n");
    Ok(out)
}

fn gcc_version(gcc: &Path) -> String {
    Command::new(gcc)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_string())
        .unwrap_or_default()
}

/// Build (or reuse) the harness for `tree` under `cache`.
pub fn build(tree: &Path, cache: &Cache) -> Result<Built, HarnessError> {
    check_tree(tree, &TREE_FILES)?;
    let generated = generate(tree)?;
    compile_cached(cache, &generated, &[("shim.h", SHIM_H), ("prelude.h", PRELUDE_H), ("driver.c", DRIVER_C)])
}

/// Refuse a directory that lacks one of `files`.
pub(crate) fn check_tree(tree: &Path, files: &[&str]) -> Result<(), HarnessError> {
    for f in files {
        if !tree.join(f).is_file() {
            return Err(HarnessError::TreeFile {
                path: tree.join(f),
                reason: format!("missing: not a Linux source tree (the harness needs {})", files.join(", ")),
            });
        }
    }
    Ok(())
}

/// Compile `generated` (as `harness.c`, beside the `support` files it
/// includes) into `<cache>/harness/<hash>/percpu-harness`, or reuse the
/// binary a previous run built from the same inputs and compiler.
pub(crate) fn compile_cached(cache: &Cache, generated: &str, support: &[(&str, &str)]) -> Result<Built, HarnessError> {
    let gcc = which("gcc").ok_or(HarnessError::NoCompiler)?;
    let mut key = Vec::new();
    let version = gcc_version(&gcc);
    let parts = [generated, version.as_str()].into_iter().chain(support.iter().flat_map(|(n, t)| [*n, *t]));
    for part in parts {
        key.extend_from_slice(part.as_bytes());
        key.push(0);
    }
    let hash = &crate::kbuild::sha256_hex(&key)[..16];
    let dir = cache.root.join("harness").join(hash);
    let binary = dir.join("percpu-harness");
    let source = dir.join("harness.c");
    if binary.is_file() {
        return Ok(Built { binary, source, compiled: false, compile_seconds: 0.0 });
    }
    // build next to the final place and rename, so a half-built directory
    // never looks complete
    let tmp = cache.root.join("harness").join(format!(".{hash}-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| HarnessError::io(&tmp, e))?;
    for (name, text) in [("harness.c", generated)].into_iter().chain(support.iter().copied()) {
        std::fs::write(tmp.join(name), text).map_err(|e| HarnessError::io(&tmp.join(name), e))?;
    }
    let log = tmp.join("build.log");
    let t0 = std::time::Instant::now();
    let out = Command::new(&gcc)
        .args(["-std=gnu11", "-O2", "-g", "-Wall", "-Wno-unused-function", "-o", "percpu-harness", "harness.c"])
        .current_dir(&tmp)
        .output()
        .map_err(|e| HarnessError::io(&gcc, e))?;
    let compile_seconds = t0.elapsed().as_secs_f64();
    let mut text = out.stdout;
    text.extend_from_slice(&out.stderr);
    std::fs::write(&log, &text).map_err(|e| HarnessError::io(&log, e))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        return Err(HarnessError::Compile { log, tail });
    }
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => {}
        // another run built the same inputs meanwhile: use theirs
        Err(_) if binary.is_file() => {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        Err(e) => return Err(HarnessError::io(&dir, e)),
    }
    Ok(Built { binary, source, compiled: true, compile_seconds })
}
