//! The whole allocator's translation unit: `pcpu_alloc`, `free_percpu`,
//! the balance work and `pcpu_setup_first_chunk` with everything they call
//! in the tree's `mm/percpu.c`, and `mm/percpu-km.c`'s backend, between the
//! project's stub environment (`c/shim.h`, `c/kernel.h`,
//! `c/alloc_prelude.h`) and driver (`c/alloc_driver.c`).

use std::path::Path;

use crate::harness::build::{check_tree, compile_cached, read, take, take_parts, Built, INTERNAL_H, SHIM_H};
use crate::harness::extract::{Kind, Source};
use crate::harness::HarnessError;
use crate::kbuild::Cache;

/// The files of a tree this mode reads.
pub const TREE_FILES: [&str; 4] = ["include/linux/percpu.h", "mm/percpu-internal.h", "mm/percpu.c", "mm/percpu-km.c"];

/// From `include/linux/percpu.h`: the constants and the alloc info.
const PERCPU_H: &[(Kind, &str)] = &[
    (Kind::Macro, "PCPU_MIN_UNIT_SIZE"),
    (Kind::Macro, "PCPU_MIN_ALLOC_SHIFT"),
    (Kind::Macro, "PCPU_MIN_ALLOC_SIZE"),
    (Kind::Macro, "PCPU_BITMAP_BLOCK_SIZE"),
    (Kind::Macro, "PCPU_BITMAP_BLOCK_BITS"),
    (Kind::Macro, "PERCPU_DYNAMIC_EARLY_SIZE"),
    (Kind::Struct, "pcpu_group_info"),
    (Kind::Struct, "pcpu_alloc_info"),
];

/// Taken from `include/linux/percpu.h` when the tree has it (6.2+:
/// `PERCPU_DYNAMIC_EARLY_SIZE` is written with it).
const PERCPU_H_OPTIONAL: &[(Kind, &str)] = &[(Kind::Macro, "PERCPU_DYNAMIC_SIZE_SHIFT")];

/// From `mm/percpu.c`, emitted in the file's order; the backend goes where
/// the file includes it.  The memcg hooks, stats and the alloc-info dump are
/// the prelude's (off in this configuration).
pub const PERCPU_C: &[(Kind, &str)] = &[
    (Kind::Macro, "PCPU_SLOT_BASE_SHIFT"),
    (Kind::Macro, "PCPU_SLOT_FAIL_THRESHOLD"),
    (Kind::Macro, "PCPU_EMPTY_POP_PAGES_LOW"),
    (Kind::Macro, "PCPU_EMPTY_POP_PAGES_HIGH"),
    (Kind::Macro, "__addr_to_pcpu_ptr"),
    (Kind::Macro, "__pcpu_ptr_to_addr"),
    (Kind::Function, "pcpu_schedule_balance_work"),
    (Kind::Function, "pcpu_addr_in_chunk"),
    (Kind::Function, "__pcpu_size_to_slot"),
    (Kind::Function, "pcpu_size_to_slot"),
    (Kind::Function, "pcpu_chunk_slot"),
    (Kind::Function, "pcpu_set_page_chunk"),
    (Kind::Function, "pcpu_get_page_chunk"),
    (Kind::Function, "pcpu_unit_page_offset"),
    (Kind::Function, "pcpu_chunk_addr"),
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
    (Kind::Function, "pcpu_isolate_chunk"),
    (Kind::Function, "pcpu_reintegrate_chunk"),
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
    (Kind::Function, "pcpu_alloc_first_chunk"),
    (Kind::Function, "pcpu_alloc_chunk"),
    (Kind::Function, "pcpu_free_chunk"),
    (Kind::Function, "pcpu_chunk_populated"),
    (Kind::Function, "pcpu_chunk_depopulated"),
    (Kind::Function, "pcpu_chunk_addr_search"),
    (Kind::Function, "pcpu_alloc"),
    (Kind::Function, "pcpu_balance_free"),
    (Kind::Function, "pcpu_balance_populated"),
    (Kind::Function, "pcpu_reclaim_populated"),
    (Kind::Function, "pcpu_balance_workfn"),
    (Kind::Function, "free_percpu"),
    (Kind::Function, "pcpu_alloc_alloc_info"),
    (Kind::Function, "pcpu_free_alloc_info"),
    (Kind::Function, "pcpu_setup_first_chunk"),
];

/// From `mm/percpu-km.c`: the whole backend.
pub const PERCPU_KM_C: &[(Kind, &str)] = &[
    (Kind::Function, "pcpu_post_unmap_tlb_flush"),
    (Kind::Function, "pcpu_populate_chunk"),
    (Kind::Function, "pcpu_depopulate_chunk"),
    (Kind::Function, "pcpu_create_chunk"),
    (Kind::Function, "pcpu_destroy_chunk"),
    (Kind::Function, "pcpu_addr_to_page"),
    (Kind::Function, "pcpu_verify_alloc_info"),
    (Kind::Function, "pcpu_should_reclaim_chunk"),
];

const KERNEL_H: &str = include_str!("../c/kernel.h");
const ALLOC_PRELUDE_H: &str = include_str!("../c/alloc_prelude.h");
const ALLOC_DRIVER_C: &str = include_str!("../c/alloc_driver.c");

/// Where `mm/percpu.c` pulls its backend in.
const KM_INCLUDE: &str = "#include \"percpu-km.c\"";

/// The generated translation unit for `tree`.
pub fn generate(tree: &Path) -> Result<String, HarnessError> {
    let mut out = String::from(
        "/* Generated by percpu-bed harness alloc from a kernel tree: never commit. */\n#include \"shim.h\"\n#include \"kernel.h\"\n\n",
    );
    let percpu_h = read(tree, TREE_FILES[0])?;
    let src = Source::new(&percpu_h);
    let mut items: Vec<(Kind, &str)> =
        PERCPU_H_OPTIONAL.iter().copied().filter(|&(k, n)| src.find(k, n).is_ok()).collect();
    items.extend_from_slice(PERCPU_H);
    out.push_str(&take(&percpu_h, TREE_FILES[0], &items)?);
    out.push_str(&take(&read(tree, TREE_FILES[1])?, TREE_FILES[1], INTERNAL_H)?);
    out.push_str("#include \"alloc_prelude.h\"\n\n");
    let percpu_c = read(tree, TREE_FILES[2])?;
    let at = percpu_c.find(KM_INCLUDE).ok_or_else(|| HarnessError::TreeFile {
        path: tree.join(TREE_FILES[2]),
        reason: format!("no `{KM_INCLUDE}` line: the harness puts the km backend where the file includes it"),
    })?;
    let km = take(&read(tree, TREE_FILES[3])?, TREE_FILES[3], PERCPU_KM_C)?;
    let mut km = Some(km);
    for (start, part) in take_parts(&percpu_c, TREE_FILES[2], PERCPU_C)? {
        if start > at {
            if let Some(km) = km.take() {
                out.push_str(&km);
            }
        }
        out.push_str(&part);
    }
    if let Some(km) = km {
        out.push_str(&km);
    }
    out.push_str("#line 1 \"alloc_driver.c\"\n#include \"alloc_driver.c\"\n");
    Ok(out)
}

/// Build (or reuse) the whole-allocator harness for `tree` under `cache`.
pub fn build(tree: &Path, cache: &Cache) -> Result<Built, HarnessError> {
    check_tree(tree, &TREE_FILES)?;
    let generated = generate(tree)?;
    compile_cached(
        cache,
        &generated,
        &[
            ("shim.h", SHIM_H),
            ("kernel.h", KERNEL_H),
            ("alloc_prelude.h", ALLOC_PRELUDE_H),
            ("alloc_driver.c", ALLOC_DRIVER_C),
        ],
    )
}
