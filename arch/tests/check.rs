//! The runner on every shipped fixture object of x86_64 (zero-based,
//! relative) and arm64 (EL1, EL2/VHE): every good test passes, every
//! planted bug is caught with a diagnostic that names the cause.

use std::path::PathBuf;
use std::time::Instant;

use percpu_arch::check::{self, CheckError, FindingKind, Scenario, ScenarioReport, Status, TestReport};
use percpu_arch::isa::{self, ModulePlacement};
use percpu_arch::layout;
use percpu_core::CpuSet;

fn obj_dir(dir: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/obj").join(dir)
}

/// kernel.o and every other object of a fixture directory (sorted).
fn fixtures(dir: &str) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    let d = obj_dir(dir);
    let kernel = std::fs::read(d.join("kernel.o")).expect("kernel.o");
    let mut mods: Vec<(String, Vec<u8>)> = std::fs::read_dir(&d)
        .expect("fixture dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "o") && p.file_name().unwrap() != "kernel.o")
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    mods.sort();
    (kernel, mods)
}

fn run(arch: &str, variant: &str, cpus: &str, nodes: u32, placement: ModulePlacement) -> ScenarioReport {
    let sc = Scenario::new(arch, Some(variant), CpuSet::parse_list(cpus).unwrap())
        .unwrap()
        .nodes(nodes)
        .placement(placement);
    let (kernel, mods) = fixtures(sc.variant.fixture_dir);
    let mods: Vec<(&str, &[u8])> = mods.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    let t = Instant::now();
    let r = check::run(&sc, ("kernel.o", &kernel), &mods).unwrap_or_else(|e| panic!("{arch}/{variant} {cpus}: {e}"));
    eprintln!(
        "{arch}/{variant} cpus {cpus} nodes {nodes} {placement}: {} tests, {} runs, {:.0} ms (setup {:.0} ms)",
        r.tests.len(),
        r.runs,
        t.elapsed().as_secs_f64() * 1000.0,
        r.setup_micros as f64 / 1000.0
    );
    r
}

/// One variant of each of the six arches.
const EVERY_ARCH: [(&str, &str); 6] = [
    ("x86_64", "zero-based"),
    ("arm64", "el1"),
    ("sparc32", "default"),
    ("alpha", "default"),
    ("s390x", "default"),
    ("km", "default"),
];

/// Good tests pass and planted bugs are caught (or declared latent here).
fn assert_expected(r: &ScenarioReport) {
    let bad = r.unexpected();
    if !bad.is_empty() {
        eprintln!("{r}");
        for t in &bad {
            if let Some(d) = &t.diagnostic {
                eprintln!("{d}");
            }
        }
        panic!(
            "{}/{} cpus {} {}: unexpected: {:?}",
            r.arch,
            r.variant,
            r.cpus,
            r.placement,
            bad.iter().map(|t| format!("{}:{} {}", t.object, t.test, t.status)).collect::<Vec<_>>()
        );
    }
    assert_eq!(r.counts.error, 0);
    assert!(r.counts.pass > 0);
}

fn test<'a>(r: &'a ScenarioReport, name: &str) -> &'a TestReport {
    r.test(name).unwrap_or_else(|| panic!("{}/{}: no test {name}", r.arch, r.variant))
}

fn diag_text(t: &TestReport) -> String {
    t.diagnostic.as_ref().map(|d| d.to_string()).unwrap_or_default()
}

/// Caught, and the diagnostic contains every `needle`.
fn assert_caught(r: &ScenarioReport, name: &str, needles: &[&str]) {
    let t = test(r, name);
    let text = diag_text(t);
    assert_eq!(t.status, Status::Caught, "{}/{} {name}:\n{text}", r.arch, r.variant);
    for n in needles {
        assert!(text.contains(n), "{}/{} {name}: diagnostic lacks {n:?}:\n{text}", r.arch, r.variant);
    }
}

const CPU_SETS: [(&str, u32); 4] = [("0", 1), ("0-3", 1), ("0-63", 1), ("0-3,8-11", 2)];

fn all_near(arch: &str, variant: &str) -> Vec<ScenarioReport> {
    CPU_SETS
        .iter()
        .map(|&(cpus, nodes)| {
            let r = run(arch, variant, cpus, nodes, ModulePlacement::Near);
            assert_expected(&r);
            r
        })
        .collect()
}

#[test]
fn x86_64_zero_based_near() {
    for r in all_near("x86_64", "zero-based") {
        assert_caught(&r, "tr_ptr_u32_far", &["32-bit truncation", "truncated to u32"]);
        assert_caught(&r, "tr_offset_far", &["32-bit truncation"]);
        assert_caught(&r, "sc_llong_sub", &["low 32 bits"]);
        assert_caught(&r, "na_inc", &["fault"]);
        assert_eq!(test(&r, "tr_ptr_u32_near").status, Status::Pass);
        assert_eq!(test(&r, "zb_inc_module").status, Status::Pass);
    }
}

#[test]
fn x86_64_relative_near() {
    for r in all_near("x86_64", "relative") {
        assert_caught(&r, "zb_inc_module", &["rejected", "R_X86_64_32"]);
        assert_caught(&r, "zb_read_kernel", &["rejected"]);
        assert_caught(&r, "tr_offset_far", &["32-bit truncation"]);
        assert_caught(&r, "na_inc", &["no per-CPU offset was applied"]);
    }
}

#[test]
fn arm64_el1_near() {
    for r in all_near("arm64", "el1") {
        assert_caught(&r, "ws_inc", &["trapped", "UNDEFINED"]);
        assert_caught(&r, "nv_shifted_inc", &["shifted by +0x20"]);
        assert_caught(&r, "tr_offset_far", &["32-bit truncation"]);
        assert_caught(&r, "na_inc", &["no per-CPU offset was applied"]);
    }
}

#[test]
fn arm64_el2_near() {
    for r in all_near("arm64", "el2") {
        // TPIDR_EL1 is not maintained by a VHE kernel: no offset at all.
        assert_caught(&r, "ws_inc", &["no per-CPU offset was applied"]);
        assert_eq!(test(&r, "ws_inc_control").status, Status::Pass);
        assert_eq!(test(&r, "k_cpu_id").status, Status::Pass);
    }
}

/// Modules far from the kernel image and the first chunk: kernel tests are
/// unaffected; module code that reaches percpu symbols PC-relatively
/// cannot work there (x86_64 PC32 is silently truncated by the module
/// loader, arm64 ADR_PREL_PG_HI21 overflows): those tests fail with a
/// diagnostic that says so, they never pass silently.
#[test]
fn far_modules() {
    for (arch, variant) in [("x86_64", "zero-based"), ("x86_64", "relative"), ("arm64", "el1"), ("arm64", "el2")] {
        for (cpus, nodes) in [("0-3", 1), ("0-3,8-11", 2)] {
            let r = run(arch, variant, cpus, nodes, ModulePlacement::Far);
            for t in &r.tests {
                let text = diag_text(t);
                if t.object == "kernel.o" {
                    assert_eq!(t.status, Status::Pass, "{arch}/{variant} far {}:\n{text}", t.test);
                    continue;
                }
                match (t.expect_caught, t.status) {
                    (true, Status::Caught) | (false, Status::Pass) => {}
                    // A planted bug whose own code the far placement broke
                    // (a truncated reference to a kernel symbol): caught
                    // for another reason, and saying which.
                    (true, Status::Fail) => assert!(
                        text.contains("caught for another reason")
                            && (text.contains("truncated") || text.contains("overflow")),
                        "{arch}/{variant} far {}:{}: fails without naming the relocation:\n{text}",
                        t.object,
                        t.test
                    ),
                    (false, Status::Fail) => assert!(
                        text.contains("truncated") || text.contains("overflow"),
                        "{arch}/{variant} far {}:{}: fails without naming the relocation:\n{text}",
                        t.object,
                        t.test
                    ),
                    _ => panic!("{arch}/{variant} far {}:{} {}:\n{text}", t.object, t.test, t.status),
                }
            }
        }
    }
}

#[test]
fn diagnostics_serialize_and_name_the_place() {
    let r = run("arm64", "el1", "0-3", 1, ModulePlacement::Near);
    let t = test(&r, "nv_shifted_inc");
    let d = t.diagnostic.as_ref().unwrap();
    assert_eq!(d.arch, "arm64");
    assert_eq!(d.variant, "el1");
    assert!(d.cpu.is_some());
    assert!(d.findings.iter().any(|f| f.kind == FindingKind::StrayWrite || f.kind == FindingKind::WrongValue));
    let text = d.to_string();
    assert!(text.contains("chunk 1 unit 0 (cpu 0)"), "{text}");
    assert!(text.contains("nv_block"), "{text}");
    assert!(text.contains("nv_shifted_inc_fn+"), "{text}");
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.contains("\"status\":\"caught\""));
    eprintln!("{text}");
    eprintln!("{}", diag_text(test(&r, "tr_offset_far")));
    eprintln!("{}", diag_text(test(&r, "ws_inc")));
    let r = run("x86_64", "zero-based", "0-3", 1, ModulePlacement::Near);
    eprintln!("{}", diag_text(test(&r, "tr_ptr_u32_far")));
    eprintln!("{}", diag_text(test(&r, "sc_llong_sub")));
}

/// 4096 possible CPUs: the setup and every run stay linear in the CPU count.
#[test]
fn four_thousand_cpus() {
    let (kernel, mods) = fixtures("x86_64");
    let pt = mods.iter().find(|(n, _)| n == "percpu_test.o").unwrap();
    for n in [64u32, 1024, 4096] {
        let sc = Scenario::new("x86_64", Some("zero-based"), CpuSet::first_n(n)).unwrap().only(&["percpu_test.o"]);
        let t = Instant::now();
        let r = check::run(&sc, ("kernel.o", &kernel), &[(pt.0.as_str(), pt.1.as_slice())]).unwrap();
        eprintln!(
            "x86_64 zero-based, {n} cpus, percpu_test.o: {} runs in {:.0} ms (setup {:.0} ms, runs {:.0} ms, {:.1} us/run)",
            r.runs,
            t.elapsed().as_secs_f64() * 1000.0,
            r.setup_micros as f64 / 1000.0,
            r.run_micros as f64 / 1000.0,
            r.run_micros as f64 / r.runs.max(1) as f64
        );
        assert_expected(&r);
        assert_eq!(r.runs, 10 * n as usize);
    }
}

#[test]
fn bad_input_is_a_specific_error() {
    let (kernel, _) = fixtures("x86_64");
    let (arm_kernel, _) = fixtures("arm64");
    let sc = Scenario::new("x86_64", None, CpuSet::first_n(2)).unwrap();

    let e = check::run(&sc, ("kernel.o", &kernel[..200]), &[]).unwrap_err();
    assert!(matches!(e, CheckError::Load { .. }), "{e}");
    assert!(e.to_string().contains("truncated"), "{e}");

    let e = check::run(&sc, ("kernel.o", &arm_kernel), &[]).unwrap_err();
    assert!(matches!(e, CheckError::WrongMachine { .. }), "{e}");
    assert!(e.to_string().contains("EM_AARCH64") && e.to_string().contains("--arch x86_64"), "{e}");

    let e = check::run(&sc, ("kernel.o", &kernel), &[("m.o", &arm_kernel)]).unwrap_err();
    assert!(e.to_string().starts_with("object m.o is EM_AARCH64"), "{e}");

    let e = Scenario::new("x86_64", Some("flat"), CpuSet::first_n(2)).unwrap_err();
    assert!(matches!(e, CheckError::UnknownVariant { .. }), "{e}");
    assert!(e.to_string().contains("zero-based, relative"), "{e}");
    let e = Scenario::new("vax", None, CpuSet::first_n(2)).unwrap_err();
    assert!(matches!(e, CheckError::UnknownArch { .. }), "{e}");

    // The relative variant with zero-based objects: a model mismatch.
    let rel = Scenario::new("x86_64", Some("relative"), CpuSet::first_n(2)).unwrap();
    let e = check::run(&rel, ("kernel.o", &kernel), &[]).unwrap_err();
    assert!(matches!(e, CheckError::WrongModel { .. }), "{e}");

    // Test descriptors without an ABI note (ci/hostile.sh, abi-section-renamed):
    // refused, for a module and for the kernel image.
    let unnote = |b: &[u8]| {
        let (from, to) = (b".percpu_bed.abi\0", b".percpu_bed.xyz\0");
        let at = b.windows(from.len()).position(|w| w == from).expect("section name");
        let mut b = b.to_vec();
        b[at..at + to.len()].copy_from_slice(to);
        b
    };
    let (_, xmods) = fixtures("x86_64");
    let basic = unnote(&xmods.iter().find(|(n, _)| n == "mod_basic.o").unwrap().1);
    let e = check::run(&sc, ("kernel.o", &kernel), &[("mod_basic.o", &basic)]).unwrap_err();
    assert!(matches!(e, CheckError::MissingAbiNote { ref object, tests: 11 } if object == "mod_basic.o"), "{e}");
    let e = check::run(&sc, ("kernel.o", &unnote(&kernel)), &[]).unwrap_err();
    assert!(matches!(e, CheckError::MissingAbiNote { .. }), "{e}");

    // A module is not a kernel image.
    let (_, mods) = fixtures("x86_64");
    let dynobj = &mods.iter().find(|(n, _)| n == "dyn.o").unwrap().1;
    let e = check::run(&sc, ("dyn.o", dynobj), &[]).unwrap_err();
    assert!(matches!(e, CheckError::NotKernelImage { .. }), "{e}");
}

#[test]
fn layout_renders() {
    for isa in isa::all() {
        for v in isa.variants() {
            let cpus = CpuSet::parse_list("0-3,8-11").unwrap();
            if isa.name() == "km" {
                // percpu-km takes one group: layout refuses NUMA as run does.
                let e = layout::render(*isa, Some(v.name), &cpus, 2).unwrap_err().to_string();
                assert!(e.contains("percpu-km can't handle more than one group"), "{e}");
            }
            let nodes = if isa.name() == "km" { 1 } else { 2 };
            let s = layout::render(*isa, Some(v.name), &cpus, nodes).unwrap();
            assert!(s.contains("pcpu-alloc:"), "{s}");
            assert!(s.contains("__per_cpu_offset"), "{s}");
            assert!(s.contains("reach"), "{s}");
        }
    }
    let s = layout::render(&isa::x86_64::X86_64, None, &CpuSet::first_n(4), 1).unwrap();
    eprintln!("{s}");
    assert!(s.contains("atom 0x200000"), "{s}");
}

/// Run `f` with tracing captured at debug level: its result and the text.
fn traced<T>(f: impl FnOnce() -> T) -> (T, String) {
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let r = tracing::subscriber::with_default(subscriber, f);
    let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    (r, out)
}

/// `--trace`: every percpu access of every run, decoded, at debug level.
#[test]
fn trace_decodes_percpu_accesses() {
    let (kernel, _) = fixtures("arm64");
    let sc = Scenario::new("arm64", Some("el1"), CpuSet::parse_list("0,2").unwrap()).unwrap().trace(true);
    let (r, out) = traced(|| check::run(&sc, ("kernel.o", &kernel), &[]).unwrap());
    assert_expected(&r);
    assert!(out.contains("percpu_bed::trace"), "{out}");
    assert!(out.contains("k_inc_u16 cpu 2: write 2 bytes"), "{out}");
    assert!(out.contains("(cpu 2) offset"), "{out}");
    assert!(out.contains("kernel.o:k_u16+0x0"), "{out}");
}

#[test]
fn run_with_map_hands_back_the_final_allocator_state() {
    let sc = Scenario::new("x86_64", None, CpuSet::first_n(4)).unwrap();
    let (kernel, mods) = fixtures(sc.variant.fixture_dir);
    let mods: Vec<(&str, &[u8])> = mods.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    let (report, map) = check::run_with_map(&sc, ("kernel.o", &kernel), &mods).unwrap();
    assert_expected(&report);
    assert_eq!(map.units.iter().filter(|u| u.cpu.is_some()).count(), 4);
    let reserved = map.chunks.iter().find(|c| c.role == percpu_core::percpu::ChunkRole::Reserved).unwrap();
    // Loaded modules keep their percpu in the reserved chunk.
    assert!(reserved.pages.iter().any(|p| p.allocated_bytes > 0), "{reserved:?}");
    // Tests free their dynamic allocations: nothing is left in the first chunk.
    assert_eq!(map.chunks[0].pages.iter().map(|p| p.allocated_bytes).sum::<usize>(), 0);
}

/// A misbehaving run's writes are undone before the next run: a planted
/// bug that increments the neighbouring CPU's copy (CPU number off by
/// one) writes that copy's start value + 1 there on every CPU, never + 2, because cpu k's
/// stray write into cpu k+1's copy is gone when cpu k+1 runs.  Big-endian
/// (sparc32) and little-endian (riscv64 km) engines read the old bytes in
/// their own byte order.  (The static area's load image, which such bugs
/// also reach, is not mapped: the kernel frees it after boot.)
#[test]
fn writes_of_a_misbehaving_run_are_undone() {
    for (arch, variant) in [("sparc32", "default"), ("km", "default")] {
        let sc = Scenario::new(arch, Some(variant), CpuSet::first_n(4)).unwrap();
        let (kernel, mods) = fixtures(sc.variant.fixture_dir);
        let bug = mods.iter().find(|(n, _)| n == "bug_cpu_off_by_one.o").expect("bug_cpu_off_by_one.o");
        let r = check::run(&sc, ("kernel.o", &kernel), &[(bug.0.as_str(), bug.1.as_slice())]).unwrap();
        let t = test(&r, "ob_inc");
        assert_eq!(t.status, Status::Caught);
        assert_eq!(t.runs.len(), 4);
        for run in &t.runs[..3] {
            let s = run.summary.as_deref().unwrap_or("");
            let next = format!("(cpu {})", run.cpu + 1);
            // cpu k+1's copy starts at init + k + 1 (contract version 2).
            let wrote = format!("wrote 8 bytes ({:#x}) at ", 0x77 + run.cpu + 2);
            assert!(s.starts_with(&wrote) && s.contains(&next), "{arch} cpu {}: {s}", run.cpu);
        }
    }
}

/// Issue 12 item 13: reads are checked.  A sum over `0..=nr_cpu_ids`
/// reads the static area through an impossible CPU's unset offset; the
/// load image there held the link-time zero, so the sum came out right and
/// the test passed.  The image is now unmapped, as after boot: the read
/// faults and names the load image on every arch.
#[test]
fn reads_through_impossible_cpus_are_caught() {
    for (arch, variant) in EVERY_ARCH {
        for cpus in ["0-3", "0-3,8-11"] {
            let sc = Scenario::new(arch, Some(variant), CpuSet::parse_list(cpus).unwrap()).unwrap();
            let (kernel, mods) = fixtures(sc.variant.fixture_dir);
            let bug = mods.iter().find(|(n, _)| n == "bug_impossible_cpu.o").expect("bug_impossible_cpu.o");
            let r = check::run(&sc, ("kernel.o", &kernel), &[(bug.0.as_str(), bug.1.as_slice())]).unwrap();
            let t = test(&r, "ic_sum");
            assert_eq!(t.status, Status::Caught, "{arch} {cpus}");
            let d = diag_text(t);
            assert!(d.contains("read fault") && d.contains("load image"), "{arch} {cpus}: {d}");
            assert!(d.contains("not possible"), "{arch} {cpus}: {d}");
        }
    }
}

/// Issue 12 items 2 and 3: a module the loader rejects is reported through
/// its tests; when those cannot be read either, the run is an error, never
/// a run with nothing in it that exits 0.
#[test]
fn a_rejected_object_whose_tests_cannot_be_read_is_an_error() {
    use percpu_loader::elf::ElfObject;
    let mut bytes = std::fs::read(obj_dir("s390x").join("bug_noweak_module.o")).unwrap();
    let tests = ElfObject::parse("x", &bytes).unwrap().section_by_name(".percpu_bed.tests").unwrap().offset as usize;
    bytes[tests + 56..tests + 60].copy_from_slice(&3u32.to_be_bytes()); // descriptor 0: width 3
    let kernel = std::fs::read(obj_dir("s390x").join("kernel.o")).unwrap();
    let sc = Scenario::new("s390x", None, CpuSet::first_n(2)).unwrap();
    let e = check::run(&sc, ("kernel.o", &kernel), &[("bug_noweak_module.o", &bytes)]).unwrap_err();
    assert!(matches!(e, CheckError::RejectedUnreadable { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("overflow in relocation R_390_PC32DBL") && text.contains("width"), "{text}");
}

/// Issue 12 item 23: a module whose percpu section (size and alignment)
/// the reserved chunk cannot take is refused alone, with the kernel's
/// message, and the other modules of the run still run and pass.
#[test]
fn a_module_exhausting_the_reserved_chunk_is_rejected_alone() {
    use percpu_loader::elf::ElfObject;
    let mut big = std::fs::read(obj_dir("x86_64").join("mod_aligned.o")).unwrap();
    let (shoff, index) = {
        let o = ElfObject::parse("x", &big).unwrap();
        let i = o.sections.iter().position(|s| s.name == ".data..percpu").unwrap();
        (u64::from_le_bytes(big[0x28..0x30].try_into().unwrap()) as usize, i)
    };
    let sh = shoff + index * 64;
    big[sh + 4..sh + 8].copy_from_slice(&8u32.to_le_bytes()); // SHT_NOBITS
    big[sh + 32..sh + 40].copy_from_slice(&0x1800u64.to_le_bytes()); // 6 KiB
    big[sh + 48..sh + 56].copy_from_slice(&4096u64.to_le_bytes()); // page aligned
    let basic = std::fs::read(obj_dir("x86_64").join("mod_basic.o")).unwrap();
    let kernel = std::fs::read(obj_dir("x86_64").join("kernel.o")).unwrap();
    let sc = Scenario::new("x86_64", None, CpuSet::first_n(2)).unwrap();
    let r = check::run(&sc, ("kernel.o", &kernel), &[("big.o", &big), ("mod_basic.o", &basic)]).unwrap();
    let big_tests: Vec<&TestReport> = r.tests.iter().filter(|t| t.object == "big.o").collect();
    assert!(!big_tests.is_empty());
    for t in &big_tests {
        assert_eq!(t.status, Status::Fail, "{}", t.test);
        assert!(diag_text(t).contains("Could not allocate 6144 bytes percpu data"), "{}", diag_text(t));
    }
    let basic_tests: Vec<&TestReport> = r.tests.iter().filter(|t| t.object == "mod_basic.o").collect();
    assert!(!basic_tests.is_empty() && basic_tests.iter().all(|t| t.status == Status::Pass), "{r}");
}

/// Issue 12 item 14: contract version 2 starts each CPU's copy at its own
/// value, so a read of the neighbour's copy is wrong on every CPU (with one
/// `init` for all it passed on all but the last), and the hint names the
/// copy that was read.
#[test]
fn reads_of_another_cpus_copy_are_caught_on_every_cpu() {
    for (arch, variant) in [("sparc32", "default"), ("km", "default"), ("alpha", "default")] {
        let sc = Scenario::new(arch, Some(variant), CpuSet::first_n(4)).unwrap();
        let (kernel, mods) = fixtures(sc.variant.fixture_dir);
        let bug = mods.iter().find(|(n, _)| n == "bug_cpu_off_by_one.o").expect("bug_cpu_off_by_one.o");
        let r = check::run(&sc, ("kernel.o", &kernel), &[(bug.0.as_str(), bug.1.as_slice())]).unwrap();
        let t = test(&r, "ob_read");
        assert_eq!(t.status, Status::Caught, "{arch}");
        assert_eq!(t.runs.len(), 4, "{arch}");
        for run in &t.runs[..3] {
            let s = run.summary.as_deref().unwrap_or("");
            let want = format!("returned {:#x}, expected {:#x}", 0x1001 + run.cpu, 0x1000 + run.cpu);
            assert!(s.starts_with(&want), "{arch} cpu {}: {s}", run.cpu);
        }
        let d = diag_text(t);
        assert!(d.contains("is cpu 1's initial value"), "{arch}: {d}");
    }
}

/// One planted-bug object of a fixture directory, run alone beside kernel.o.
fn run_bug(arch: &str, variant: &str, cpus: &str, object: &str, placement: Option<ModulePlacement>) -> ScenarioReport {
    let mut sc = Scenario::new(arch, Some(variant), CpuSet::parse_list(cpus).unwrap()).unwrap();
    if let Some(p) = placement {
        sc = sc.placement(p);
    }
    let (kernel, mods) = fixtures(sc.variant.fixture_dir);
    let bug = mods.iter().find(|(n, _)| n == object).unwrap_or_else(|| panic!("{arch}: no {object}"));
    check::run(&sc, ("kernel.o", &kernel), &[(bug.0.as_str(), bug.1.as_slice())])
        .unwrap_or_else(|e| panic!("{arch}/{variant} {object}: {e}"))
}

/// Issue 12 item 13: an ADD whose code also reads cpu 1's copy of its
/// target returns the right value and leaves every copy right; only the
/// read shows the bug (every arch whose engine records reads).  On one
/// CPU, cpu 1 is impossible and the read faults in the load image.
#[test]
fn this_cpu_code_reading_another_cpus_copy_is_caught() {
    for (arch, variant) in
        [("x86_64", "zero-based"), ("arm64", "el1"), ("sparc32", "default"), ("s390x", "default"), ("km", "default")]
    {
        let r = run_bug(arch, variant, "0-3", "bug_peek_other_cpu.o", None);
        assert_eq!(test(&r, "pk_limited_inc_control").status, Status::Pass, "{arch}");
        let t = test(&r, "pk_limited_inc");
        assert_eq!(t.status, Status::Caught, "{arch}");
        for run in &t.runs {
            let want = if run.cpu == 1 { Status::Pass } else { Status::Caught };
            assert_eq!(run.status, want, "{arch} cpu {}: {:?}", run.cpu, run.summary);
        }
        let d = diag_text(t);
        assert!(d.contains("read 8 bytes of cpu 1's copy of the target"), "{arch}: {d}");
        assert!(d.contains("while running on cpu 0"), "{arch}: {d}");
        assert!(d.contains("bug_peek_other_cpu.o:pk_count+0x0"), "{arch}: {d}");
        assert!(d.contains("pk_limited_inc_fn+0x"), "{arch}: {d}");
        let r = run_bug(arch, variant, "0", "bug_peek_other_cpu.o", None);
        let d = diag_text(test(&r, "pk_limited_inc"));
        assert_eq!(test(&r, "pk_limited_inc").status, Status::Caught, "{arch}: {d}");
        assert!(d.contains("read fault") && d.contains("load image"), "{arch}: {d}");
    }
}

/// Issue 12 items 16 and 21: a pointer kept in 16 bits is named as such
/// (only 32-bit truncations were), and the finding names the unit, chunk
/// and allocation the access was meant for.
#[test]
fn truncations_of_any_width_name_the_copy_they_were_meant_for() {
    for (arch, variant) in
        [("x86_64", "zero-based"), ("arm64", "el1"), ("sparc32", "default"), ("alpha", "default"), ("s390x", "default")]
    {
        let r = run_bug(arch, variant, "0-3", "bug_trunc16.o", None);
        let t = test(&r, "t16_offset_far");
        let d = diag_text(t);
        assert_eq!(t.status, Status::Caught, "{arch}: {d}");
        assert!(d.contains("16-bit truncation"), "{arch}: {d}");
        assert!(d.contains("a multiple of 2^16"), "{arch}: {d}");
        assert!(!d.contains("32-bit truncation"), "{arch}: {d}");
    }
    // The fault through a u32-truncated pointer: what it was meant to reach.
    let r = run_bug("x86_64", "zero-based", "0-3", "bug_trunc32.o", None);
    let d = diag_text(test(&r, "tr_ptr_u32_far"));
    assert!(d.contains("the access was meant for this CPU's copy of the target"), "{d}");
    assert!(d.contains("chunk 2 unit 0 (cpu 0)") && d.contains("dynamic allocation of `tr_ptr_u32_far`"), "{d}");
    assert!(d.contains("32-bit truncation"), "{d}");
}

/// Issue 12 item 19: a 4-byte this_cpu_add on an 8-byte variable (a
/// declaration with the wrong type) is a narrow store, not a widening.
#[test]
fn a_narrow_store_on_a_wide_value_is_named() {
    for (arch, variant, half) in [
        ("x86_64", "zero-based", "its low half on this little-endian CPU"),
        ("arm64", "el1", "its low half on this little-endian CPU"),
        ("alpha", "default", "its low half on this little-endian CPU"),
        ("s390x", "default", "its high half on this big-endian CPU"),
        ("km", "default", "its low half on this little-endian CPU"),
    ] {
        let r = run_bug(arch, variant, "0-3", "bug_type_mismatch.o", None);
        let t = test(&r, "tm_add");
        let d = diag_text(t);
        assert_eq!(t.status, Status::Caught, "{arch}: {d}");
        assert!(d.contains("a 4-byte store hit the 8-byte value at byte +0x0"), "{arch}: {d}");
        assert!(d.contains(half), "{arch}: {d}");
        assert!(!d.contains("widened wrongly"), "{arch}: {d}");
    }
}

/// Issue 12 item 18: the offset read from the wrong lowcore word names
/// the word and where the layout keeps percpu_offset.
#[test]
fn a_stale_lowcore_offset_names_the_word_read() {
    let r = run_bug("s390x", "default", "0-3", "bug_lowcore_layout.o", None);
    let d = diag_text(test(&r, "lc_old_inc"));
    assert!(d.contains("the code read lowcore word 0x378 (holding 0x0) as its percpu offset"), "{d}");
    assert!(d.contains("never lowcore's percpu_offset at 0x3b8"), "{d}");
    assert_eq!(test(&r, "lc_inc_control").status, Status::Pass);
    assert!(diag_text(test(&r, "lc_inc_control")).is_empty());
}

/// Issue 12 items 17 and 20: a relocation overflow names every reference
/// out of reach by variable and function, and for a variable the kernel
/// exports it says to go through the GOT, not to define it weak.
#[test]
fn relocation_overflows_name_every_use_and_the_fix() {
    let r = run_bug("s390x", "default", "0-3", "bug_noweak_module.o", Some(ModulePlacement::Far));
    let d = diag_text(test(&r, "nw_inc"));
    assert!(d.contains("every reference out of reach (2)"), "{d}");
    assert!(d.contains("`nw_counter` from nw_inc_fn+0x2 (.text+0x2)"), "{d}");
    assert!(d.contains("`nw_word` from nw_read_fn+0x2"), "{d}");
    assert!(d.contains("must define percpu variables weak"), "{d}");
    let r = run_bug("alpha", "default", "0-3", "bug_noweak_module.o", Some(ModulePlacement::Far));
    let d = diag_text(test(&r, "nw_read"));
    assert!(d.contains("`nw_counter` from nw_inc_fn+0x") && d.contains("`nw_word` from nw_read_fn+0x"), "{d}");

    let r = run_bug("s390x", "default", "0-3", "bug_nopic_module.o", Some(ModulePlacement::Far));
    for name in ["np_export_add", "np_inc"] {
        let t = test(&r, name);
        assert_eq!(t.status, Status::Caught, "{name}");
    }
    let d = diag_text(test(&r, "np_export_add"));
    assert!(d.contains("against `pcpubed_exported_counter`"), "{d}");
    assert!(d.contains("the variable is not the module's") && d.contains("through the GOT (R_390_GOTENT)"), "{d}");
    assert!(d.contains("`np_counter` from np_inc_fn+0x2"), "{d}");
    assert!(d.contains("the variable is weak, as s390x module percpu must be, yet reached with larl"), "{d}");
    assert!(!d.contains("must define percpu variables weak"), "{d}");
}

/// Issue 12 item 22: `--trace` logs the accesses outside every unit (the
/// lowcore word a stale layout reads, the link address it then uses) at
/// the same level as percpu accesses.
#[test]
fn trace_logs_accesses_outside_the_units() {
    let sc = Scenario::new("s390x", Some("default"), CpuSet::parse_list("0").unwrap()).unwrap().trace(true);
    let (kernel, mods) = fixtures(sc.variant.fixture_dir);
    let bug = mods.iter().find(|(n, _)| n == "bug_lowcore_layout.o").unwrap();
    let (r, out) = traced(|| check::run(&sc, ("kernel.o", &kernel), &[(bug.0.as_str(), bug.1.as_slice())]).unwrap());
    assert_eq!(test(&r, "lc_old_inc").status, Status::Caught);
    let line = |needle: &str| out.lines().find(|l| l.contains("lc_old_inc cpu 0") && l.contains(needle));
    assert!(line("read 8 bytes at 0x378 = lowcore+0x378").is_some(), "{out}");
    assert!(line("DEBUG").is_some(), "{out}");
}

/// Issue 12 item 7: a planted bug counts as caught only by the findings
/// its descriptor declares.  With no instruction budget every run ends as
/// a runaway and leaves every copy unmodified: no planted bug may count
/// as caught (they all did), and each says why.
#[test]
fn planted_bugs_are_caught_only_for_their_kind_of_finding() {
    let sc = Scenario::new("x86_64", Some("zero-based"), CpuSet::first_n(2)).unwrap().budget(0);
    let (kernel, mods) = fixtures(sc.variant.fixture_dir);
    let mods: Vec<(&str, &[u8])> = mods.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    let r = check::run(&sc, ("kernel.o", &kernel), &mods).unwrap();
    let planted: Vec<&TestReport> = r.tests.iter().filter(|t| t.expect_caught).collect();
    assert!(planted.len() >= 8);
    for t in planted {
        let d = diag_text(t);
        if t.object == "bug_zero_based_imm32.o" {
            // Rejected by the loader before anything runs: caught as declared.
            assert_eq!(t.status, Status::Caught, "{d}");
            continue;
        }
        assert_eq!(t.status, Status::Fail, "{}:{}: {d}", t.object, t.test);
        assert!(d.contains("planted bug not judged: the run ran out of its instruction budget"), "{d}");
    }

    // A rejection where the descriptor declares a wrong value: caught for
    // another reason.  (The shipped object, its first descriptor's flags
    // patched: EXPECT_CAUGHT | CAUGHT_VALUE.)
    use percpu_loader::elf::ElfObject;
    let sc = Scenario::new("s390x", Some("default"), CpuSet::first_n(2)).unwrap().placement(ModulePlacement::Far);
    let (kernel, mods) = fixtures(sc.variant.fixture_dir);
    let mut bytes = mods.iter().find(|(n, _)| n == "bug_noweak_module.o").unwrap().1.clone();
    let at = {
        let obj = ElfObject::parse("bug_noweak_module.o", &bytes).unwrap();
        let sec = obj.section_by_name(".percpu_bed.tests").unwrap();
        sec.offset as usize + 64 // struct pcpubed_test.flags, 64-bit layout
    };
    let flags = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    assert_eq!(flags, 0x8 | 0x100, "EXPECT_CAUGHT | CAUGHT_REJECTED as built");
    bytes[at..at + 4].copy_from_slice(&(0x8u32 | 0x400).to_be_bytes());
    let r = check::run(&sc, ("kernel.o", &kernel), &[("bug_noweak_module.o", &bytes)]).unwrap();
    let statuses: Vec<Status> =
        r.tests.iter().filter(|t| t.object == "bug_noweak_module.o").map(|t| t.status).collect();
    assert!(statuses.contains(&Status::Fail) && statuses.contains(&Status::Caught), "{statuses:?}");
    let t = r.tests.iter().find(|t| t.object == "bug_noweak_module.o" && t.status == Status::Fail).unwrap();
    let d = diag_text(t);
    assert!(
        d.contains("planted bug caught for another reason: it is caught by wrong value or return; this run found rejected by the loader"),
        "{d}"
    );
}

/// Issue 12 item 15: stateful tests.  A STEPS test is one call per step
/// on a CPU sequence with the step in its argument; a DYNAMIC target is
/// replaced between steps.  Correct code that reloads its pointer passes
/// on every arch; a pointer kept past free_percpu is named as a use after
/// free on the step that uses it, and a this_cpu_ptr() kept across calls
/// as the earlier step's CPU, on every arch that has this_cpu_ptr() in the
/// fixture headers (not x86).  On one CPU the steps still run twice.
#[test]
fn stateful_tests_run_in_steps_and_catch_kept_pointers() {
    for (arch, variant) in EVERY_ARCH {
        let r = run_bug(arch, variant, "0-3", "steps.o", None);
        assert_expected(&r);
        let t = test(&r, "st_in_order");
        assert_eq!(t.status, Status::Pass, "{arch}: {}", diag_text(t));
        let seq: Vec<(u32, Option<u32>)> = t.runs.iter().map(|run| (run.cpu, run.step)).collect();
        assert_eq!(seq, [(0, Some(0)), (1, Some(1)), (2, Some(2)), (3, Some(3))], "{arch}");
        assert_eq!(test(&r, "st_dyn_reload_far").status, Status::Pass, "{arch}");

        let r = run_bug(arch, variant, "0-3", "bug_stale_pointer.o", None);
        let t = test(&r, "sp_use_after_free");
        assert_eq!(t.status, Status::Caught, "{arch}: {}", diag_text(t));
        assert_eq!(t.runs[0].status, Status::Pass, "{arch}: step 0 uses the pointer it was given");
        assert!(t.runs[1..].iter().any(|run| run.status == Status::Caught), "{arch}");
        let d = diag_text(t);
        assert!(d.contains("step 1: CAUGHT: wrote 8 bytes"), "{arch}: {d}");
        assert!(d.contains("into freed percpu memory"), "{arch}: {d}");
        assert!(d.contains("freed by the harness after step 0 (cpu 0), before step 1"), "{arch}: {d}");
        if arch != "alpha" {
            // qemu-alpha's fast path records writes only.
            assert!(d.contains("read 8 bytes of freed percpu memory"), "{arch}: {d}");
        }
        if arch != "x86_64" {
            let t = test(&r, "sp_kept_this_cpu_ptr");
            assert_eq!(t.status, Status::Caught, "{arch}: {}", diag_text(t));
            let d = diag_text(t);
            assert!(d.contains("on cpu 1, step 1"), "{arch}: {d}");
            assert!(d.contains("step 0 of this test ran on cpu 0: a this_cpu_ptr() taken there"), "{arch}: {d}");
            assert!(!d.contains("off-by-one"), "{arch}: a kept pointer is no offset arithmetic: {d}");
        }

        // Uniprocessor: two steps on cpu 0.  The freed object is still
        // freed; the kept this_cpu_ptr() is right there (NEEDS_SMP: latent).
        let r = run_bug(arch, variant, "0", "bug_stale_pointer.o", None);
        let t = test(&r, "sp_use_after_free");
        assert_eq!(t.status, Status::Caught, "{arch} UP: {}", diag_text(t));
        assert_eq!(t.runs.iter().map(|run| (run.cpu, run.step)).collect::<Vec<_>>(), [(0, Some(0)), (0, Some(1))]);
        if arch != "x86_64" {
            let t = test(&r, "sp_kept_this_cpu_ptr");
            assert!(t.declared_latent(), "{arch} UP: NEEDS_SMP");
            assert_eq!(
                t.latent.as_deref(),
                Some("latent in this configuration: the bug needs two or more possible CPUs")
            );
            assert!(diag_text(t).contains("the test behaved in all 2 steps (on CPU(s) 0)"), "{arch}: {}", diag_text(t));
            assert_eq!((r.counts.latent, r.counts.fail), (1, 0), "{arch} UP");
            assert!(r.unexpected().is_empty(), "{arch} UP");
        }
    }
}
