//! Golden files for `AllocInfo::dump` (the kernel's `pcpu-alloc:` lines)
//! and `FirstChunk::dump_layout` over a set of boot geometries.
//!
//! The files live in `core/tests/golden/<case>.alloc_info.txt` and
//! `<case>.layout.txt`.  To re-bless after an intended change, run
//!
//! ```text
//! PERCPU_BLESS=1 cargo test -p percpu-core --test golden_alloc_info
//! ```
//!
//! With `PERCPU_BLESS` set the test writes the files instead of comparing;
//! review the diff before committing.  Dump lines end in a space exactly
//! as the kernel prints them; the comparison is byte for byte.
//!
//! Two cases are checked by hand as well (see `hand_checked_dumps`), so a
//! careless re-bless cannot silently change what the kernel would print.

use std::path::PathBuf;

use percpu_core::addr::{AddressSpace, RangeAllocator};
use percpu_core::alloc_info::{build_alloc_info, AllocInfo, AllocInfoParams};
use percpu_core::consts::{percpu_dynamic_reserve, PERCPU_MODULE_RESERVE};
use percpu_core::cpus::{CpuSet, Topology};
use percpu_core::first_chunk::{Backend, FirstChunk, FirstChunkKind, FirstChunkParams};

struct Case {
    name: &'static str,
    space: AddressSpace,
    /// RAM the memblock stand-in manages (inside the linear map).
    ram: std::ops::Range<u64>,
    topology: Topology,
    static_size: usize,
    reserved_size: usize,
    dyn_size: usize,
    atom_size: usize,
    use_distance: bool,
    kind: FirstChunkKind,
    backend: Backend,
    per_cpu_start: u64,
    need_page_first_chunk: bool,
}

const GIB: u64 = 1 << 30;

fn x86_64() -> AddressSpace {
    AddressSpace::generic64()
}

fn arm64(page: u64) -> AddressSpace {
    AddressSpace::new(
        64,
        page,
        0xffff_0000_0000_0000..0xffff_8000_0000_0000,
        0xffff_8000_1000_0000..0xffff_fdff_0000_0000,
    )
    .unwrap()
}

/// x86_64 `setup_per_cpu_areas`: reserved PERCPU_FIRST_CHUNK_RESERVE
/// (= PERCPU_MODULE_RESERVE on 64-bit), dyn = 8K + 28K - 8K, atom PMD_SIZE,
/// node distances, zero-based percpu section.
fn x86_case(name: &'static str, topology: Topology, kind: FirstChunkKind) -> Case {
    let space = x86_64();
    let lm = space.linear_map().start;
    Case {
        name,
        ram: lm..lm + 16 * GIB,
        space,
        topology,
        // The static size of a real x86_64 boot (`s173272` in its log).
        static_size: 173272,
        reserved_size: PERCPU_MODULE_RESERVE,
        dyn_size: percpu_dynamic_reserve(64),
        atom_size: if kind == FirstChunkKind::Embed { 2 << 20 } else { 4096 },
        use_distance: kind == FirstChunkKind::Embed,
        kind,
        backend: Backend::Vm,
        per_cpu_start: 0,
        need_page_first_chunk: true,
    }
}

/// Generic `setup_per_cpu_areas` style on arm64: embed with
/// (MODULE_RESERVE, DYNAMIC_RESERVE, PAGE_SIZE) and node distances.
fn arm64_case(name: &'static str, page: u64, topology: Topology, static_size: usize) -> Case {
    let space = arm64(page);
    let lm = space.linear_map().start;
    Case {
        name,
        ram: lm + GIB..lm + 9 * GIB,
        space,
        topology,
        static_size,
        reserved_size: PERCPU_MODULE_RESERVE,
        dyn_size: percpu_dynamic_reserve(64),
        atom_size: page as usize,
        use_distance: true,
        kind: FirstChunkKind::Embed,
        backend: Backend::Vm,
        // __per_cpu_start inside the kernel image.
        per_cpu_start: 0xffff_8000_11d5_0000,
        need_page_first_chunk: true,
    }
}

fn cases() -> Vec<Case> {
    let uma = |n| Topology::uma(CpuSet::first_n(n));
    let blocked = |n, nodes| Topology::blocked(CpuSet::first_n(n), nodes);
    let sparse = Topology::blocked(CpuSet::parse_list("0-3,8-11,64").unwrap(), 2);
    let i386 = AddressSpace::new(32, 4096, 0xc000_0000..0xf800_0000, 0xf800_0000..0xff00_0000).unwrap();
    let k210 = AddressSpace::new(64, 4096, 0x8000_0000..0x8080_0000, 0x4000_0000..0x4010_0000).unwrap();
    vec![
        x86_case("x86_64_1cpu_embed", uma(1), FirstChunkKind::Embed),
        x86_case("x86_64_4cpu_embed", uma(4), FirstChunkKind::Embed),
        x86_case("x86_64_64cpu_4node_embed", blocked(64, 4), FirstChunkKind::Embed),
        x86_case("x86_64_4096cpu_4node_embed", blocked(4096, 4), FirstChunkKind::Embed),
        x86_case("x86_64_sparse_2node_embed", sparse, FirstChunkKind::Embed),
        x86_case("x86_64_4cpu_page", uma(4), FirstChunkKind::Page),
        arm64_case("arm64_4k_4cpu_embed", 4096, uma(4), 86104),
        arm64_case("arm64_64k_64cpu_2node_embed", 64 << 10, blocked(64, 2), 86104),
        // i386 with percpu_alloc=page: PERCPU_FIRST_CHUNK_RESERVE is 0 on
        // 32-bit and the page allocator asks for no dynamic space (it gets
        // PERCPU_DYNAMIC_EARLY_SIZE); offsets wrap at 2^32.
        Case {
            name: "i386_2cpu_page",
            ram: 0xc000_0000..0xe000_0000,
            space: i386,
            topology: uma(2),
            static_size: 0x6a40,
            reserved_size: 0,
            dyn_size: 0,
            atom_size: 4096,
            use_distance: false,
            kind: FirstChunkKind::Page,
            backend: Backend::Vm,
            per_cpu_start: 0xc1a0_0000,
            need_page_first_chunk: true,
        },
        // No-MMU riscv64 (K210-like, 8 MiB SRAM): km backend, no modules.
        Case {
            name: "riscv64_nommu_2cpu_km",
            ram: 0x8000_0000..0x8080_0000,
            space: k210,
            topology: uma(2),
            static_size: 0x2f40,
            reserved_size: 0,
            dyn_size: percpu_dynamic_reserve(64),
            atom_size: 4096,
            use_distance: false,
            kind: FirstChunkKind::Embed,
            backend: Backend::Km,
            per_cpu_start: 0x8021_4000,
            need_page_first_chunk: false,
        },
    ]
}

/// Every case models the default kernel (6.1: PERCPU_DYNAMIC_EARLY_SIZE
/// 12 KiB, which only the page-first-chunk cases asking for no dynamic
/// space see).
fn build(case: &Case) -> (AllocInfo, FirstChunk) {
    let early = percpu_core::KernelProfile::default().dynamic_early_size;
    let ai = build_alloc_info(&AllocInfoParams {
        static_size: case.static_size,
        reserved_size: case.reserved_size,
        dyn_size: case.dyn_size,
        atom_size: case.atom_size,
        page_size: case.space.page_size() as usize,
        topology: &case.topology,
        use_distance: case.use_distance,
        dyn_early_size: early,
    })
    .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    let mut linear = RangeAllocator::new(case.ram.clone());
    let mut vmalloc = RangeAllocator::new(case.space.vmalloc());
    let fc = FirstChunk::setup(FirstChunkParams {
        space: &case.space,
        ai: ai.clone(),
        kind: case.kind,
        per_cpu_start: case.per_cpu_start,
        topology: &case.topology,
        linear: &mut linear,
        vmalloc: &mut vmalloc,
        backend: case.backend,
        need_page_first_chunk: case.need_page_first_chunk,
        dyn_early_size: early,
        memory: None,
    })
    .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    (ai, fc)
}

fn golden_path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(file)
}

/// Compare with (or, under PERCPU_BLESS, write) one golden file.
fn check_golden(file: &str, actual: &str) -> Result<(), String> {
    let path = golden_path(file);
    if std::env::var_os("PERCPU_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return Ok(());
    }
    let expected = std::fs::read_to_string(&path)
        .map_err(|e| format!("{}: {e} (run with PERCPU_BLESS=1 to create it)", path.display()))?;
    if expected == actual {
        return Ok(());
    }
    let (n, (want, got)) = expected
        .lines()
        .chain(std::iter::repeat(""))
        .zip(actual.lines().chain(std::iter::repeat("")))
        .enumerate()
        .find(|(_, (a, b))| a != b)
        .unwrap_or((0, ("<trailing newline>", "<differs>")));
    Err(format!(
        "{}: line {} differs\n  golden: {want:?}\n  actual: {got:?}\n(re-bless with PERCPU_BLESS=1 if intended)",
        path.display(),
        n + 1
    ))
}

#[test]
fn golden_dumps() {
    let mut failures = Vec::new();
    for case in cases() {
        let (ai, fc) = build(&case);
        let nr_possible = case.topology.possible().len();
        for (file, text) in [
            (format!("{}.alloc_info.txt", case.name), ai.dump(nr_possible)),
            (format!("{}.layout.txt", case.name), fc.dump_layout()),
        ] {
            if let Err(e) = check_golden(&file, &text) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Worked out by hand from pcpu_build_alloc_info / pcpu_dump_alloc_info
/// (v5.4), independently of the golden files.
#[test]
fn hand_checked_dumps() {
    let all = cases();
    let get = |name| build(all.iter().find(|c| c.name == name).unwrap());

    // x86_64, 4 cpus, s173272: matches a real QEMU boot log.
    // size_sum = PFN_ALIGN(173272 + 8192 + 28672) = 212992 (52 pages),
    // d = 212992 - 173272 - 8192 = 31528.  alloc = roundup(212992, 2M) =
    // 2M; max_upa = 2M / 212992 = 9, lowered to 8 (9 does not divide 2M).
    // upa 8 wastes 4 units > 4/3: rejected; 7, 6, 5 do not divide 2M;
    // upa 4: 1 alloc, no waste; upa 2: 2 allocs > 1: stop.  u = 2M/4.
    // Widths: 1 group -> 1, 4 cpus -> 1; width = 4*2 + 1 + 3 = 12,
    // apl = rounddown_pow_of_two(60/12 = 5) = 4.
    let (ai, fc) = get("x86_64_4cpu_embed");
    assert_eq!(ai.dump(4), "pcpu-alloc: s173272 r8192 d31528 u524288 alloc=1*2097152\npcpu-alloc: [0] 0 1 2 3 \n");
    assert!(fc.dump_layout().starts_with("percpu: Embedded 52 pages/cpu s173272 r8192 d31528 u524288\n"));

    // arm64, 4 KiB pages, 4 cpus, s86104 (a real arm64 boot log prints
    // `Embedded 31 pages/cpu s86104 r8192 d32680 u126976`, then
    // `pcpu-alloc: s86104 r8192 d32680 u126976 alloc=31*4096` and
    // `pcpu-alloc: [0] 0 [0] 1 [0] 2 [0] 3`).  size_sum = PFN_ALIGN(86104 +
    // 8192 + 28672 = 122968) = 126976, d = 32680; atom = PAGE_SIZE so
    // alloc = 126976 and upa = 1.  width = 1*2 + 1 + 3 = 6, apl =
    // rounddown_pow_of_two(10) = 8: all four allocations on one line.
    let (ai, fc) = get("arm64_4k_4cpu_embed");
    assert_eq!(
        ai.dump(4),
        "pcpu-alloc: s86104 r8192 d32680 u126976 alloc=31*4096\npcpu-alloc: [0] 0 [0] 1 [0] 2 [0] 3 \n"
    );
    assert!(fc.dump_layout().starts_with("percpu: Embedded 31 pages/cpu s86104 r8192 d32680 u126976\n"));

    // x86_64, 64 cpus on 4 nodes: 16 per group; upa 8 wastes nothing
    // (2 allocs per group, 8 in all), upa 4 needs 16: stop.  u = 2M/8.
    // cpu width 2 (64 possible), width = 8*3 + 1 + 3 = 28, apl =
    // rounddown_pow_of_two(60/28 = 2) = 2 allocations a line, so each
    // group fills exactly one line.
    let (ai, _) = get("x86_64_64cpu_4node_embed");
    let dump = ai.dump(64);
    let lines: Vec<&str> = dump.lines().collect();
    assert_eq!(lines[0], "pcpu-alloc: s173272 r8192 d31528 u262144 alloc=1*2097152");
    assert_eq!(lines[1], "pcpu-alloc: [0] 00 01 02 03 04 05 06 07 [0] 08 09 10 11 12 13 14 15 ");
    assert_eq!(lines[4], "pcpu-alloc: [3] 48 49 50 51 52 53 54 55 [3] 56 57 58 59 60 61 62 63 ");
    assert_eq!(lines.len(), 5);

    // Sparse 0-3,8-11,64 on 2 blocked nodes: {0-3,8} and {9-11,64}.  upa 8
    // wastes 3 + 4 = 7 > 9/3: rejected; upa 4: 2 + 1 = 3 allocs, wastes 3:
    // accepted; upa 2: 5 allocs > 3: stop.  9 possible cpus -> cpu width 1
    // (cpu 64 prints wider) and empty units print "-".
    let (ai, _) = get("x86_64_sparse_2node_embed");
    assert_eq!(
        ai.dump(9),
        "pcpu-alloc: s173272 r8192 d31528 u524288 alloc=1*2097152\npcpu-alloc: [0] 0 1 2 3 [0] 8 - - - [1] 9 10 11 64 \n"
    );
}
