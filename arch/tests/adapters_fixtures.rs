//! Every shipped fixture object of sparc32, alpha, s390x and km through the
//! runner: good tests pass, planted bugs are caught, at 1, 4 and 64 CPUs, a
//! sparse mask, modules near and far.  alpha runs on real qemu-alpha
//! (~0.3-1 ms per run on the fast path), so it gets fewer scenarios.

use std::path::PathBuf;
use std::time::Instant;

use percpu_arch::check::{self, Scenario, ScenarioReport, Status};
use percpu_arch::isa::{self, ModulePlacement};
use percpu_core::CpuSet;

fn objects(dir: &str) -> Vec<(String, Vec<u8>)> {
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/obj").join(dir);
    let mut names: Vec<String> = std::fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".o"))
        .collect();
    names.sort();
    names.into_iter().map(|n| (n.clone(), std::fs::read(base.join(&n)).unwrap())).collect()
}

fn qemu_alpha_missing() -> bool {
    std::process::Command::new("qemu-alpha").arg("--version").output().is_err()
}

fn scenario(arch: &str, cpus: &str, placement: ModulePlacement) -> ScenarioReport {
    scenario_traced(arch, cpus, placement, false)
}

fn scenario_traced(arch: &str, cpus: &str, placement: ModulePlacement, trace: bool) -> ScenarioReport {
    let isa = isa::lookup(arch).unwrap();
    let objs = objects(isa.variants()[0].fixture_dir);
    let kernel = objs.iter().find(|(n, _)| n == "kernel.o").unwrap();
    let modules: Vec<(&str, &[u8])> =
        objs.iter().filter(|(n, _)| n != "kernel.o").map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    let sc = Scenario::new(arch, None, CpuSet::parse_list(cpus).unwrap()).unwrap().placement(placement).trace(trace);
    let t = Instant::now();
    let r = check::run(&sc, (kernel.0.as_str(), kernel.1.as_slice()), &modules)
        .unwrap_or_else(|e| panic!("{arch} cpus {cpus} {placement}: {e}"));
    eprintln!(
        "{arch} cpus {cpus} modules {placement}: {} pass, {} caught, {} fail, {} error in {:.2} s",
        r.counts.pass,
        r.counts.caught,
        r.counts.fail,
        r.counts.error,
        t.elapsed().as_secs_f64()
    );
    r
}

/// The only tests allowed to end other than as their descriptor says:
/// `bug_noweak_module.o` and `bug_nopic_module.o` with modules near (in
/// reach, so they load and run correctly: the bugs need the realistic far
/// layout).
fn check(r: &ScenarioReport) {
    let tag = format!("{} cpus {} modules {}", r.arch, r.cpus, r.placement);
    for t in r.unexpected() {
        let allowed = ["bug_noweak_module.o", "bug_nopic_module.o"].contains(&t.object.as_str())
            && r.placement == ModulePlacement::Near;
        assert!(allowed, "{tag}: {}:{} is {} (planted bug: {})\n{r}", t.object, t.test, t.status, t.expect_caught);
    }
    assert_eq!(r.counts.error, 0, "{tag}: errors\n{r}");
    let noweak = r.objects.iter().find(|o| o.name == "bug_noweak_module.o");
    if let (Some(o), ModulePlacement::Far) = (noweak, r.placement) {
        let msg = o.rejected.as_deref().unwrap_or_else(|| panic!("{tag}: bug_noweak_module.o was not rejected"));
        assert!(msg.contains("overflow") && msg.contains("must define percpu variables weak"), "{tag}: {msg}");
        for t in r.tests.iter().filter(|t| t.object == "bug_noweak_module.o") {
            assert_eq!(t.status, Status::Caught, "{tag}: {}", t.test);
        }
    }
}

fn caught(r: &ScenarioReport, object: &str, test: &str) {
    let t = r.tests.iter().find(|t| t.object == object && t.test == test).unwrap_or_else(|| {
        panic!("{} has no {object}:{test}", r.arch);
    });
    assert_eq!(t.status, Status::Caught, "{} cpus {}: {object}:{test}", r.arch, r.cpus);
}

fn unicorn_arch(arch: &str) {
    for cpus in ["0", "0-3", "0-63", "0,2,5-7,63"] {
        for placement in [ModulePlacement::Near, ModulePlacement::Far] {
            let r = scenario(arch, cpus, placement);
            check(&r);
            caught(&r, "bug_sub_cast.o", "sc_llong_sub");
            caught(&r, "bug_no_accessor.o", "na_inc");
            match arch {
                "s390x" => {
                    caught(&r, "bug_lowcore_layout.o", "lc_old_inc");
                    caught(&r, "bug_trunc32.o", "tr_offset_far");
                }
                _ => caught(&r, "bug_cpu_off_by_one.o", "ob_inc"),
            }
        }
    }
}

#[test]
fn sparc32_fixtures() {
    unicorn_arch("sparc32");
}

#[test]
fn s390x_fixtures() {
    unicorn_arch("s390x");
}

#[test]
fn km_fixtures() {
    unicorn_arch("km");
}

/// km with two NUMA nodes: refused like percpu-km, with a clear error.
#[test]
fn km_numa_is_refused() {
    let objs = objects("riscv64");
    let kernel = objs.iter().find(|(n, _)| n == "kernel.o").unwrap();
    let sc = Scenario::new("km", None, CpuSet::first_n(4)).unwrap().nodes(2);
    let err = check::run(&sc, (kernel.0.as_str(), kernel.1.as_slice()), &[]).unwrap_err().to_string();
    assert!(err.contains("can't handle more than one group"), "{err}");
}

#[test]
fn alpha_fixtures() {
    if qemu_alpha_missing() {
        eprintln!("SKIPPED: qemu-alpha is not installed (Debian package qemu-user)");
        return;
    }
    for (cpus, placement) in [
        ("0", ModulePlacement::Far),
        ("0-3", ModulePlacement::Near),
        ("0-3", ModulePlacement::Far),
        ("1,6", ModulePlacement::Far),
    ] {
        let r = scenario("alpha", cpus, placement);
        check(&r);
        caught(&r, "bug_sub_cast.o", "sc_llong_sub");
        caught(&r, "bug_no_accessor.o", "na_inc");
        caught(&r, "bug_cpu_off_by_one.o", "ob_inc");
        caught(&r, "bug_trunc32.o", "tr_offset_far");
    }
}

/// alpha's fast path (calls run freely, writes caught by page protection)
/// and its traced path (`--trace`: every instruction single-stepped and
/// every access decoded) reach the same verdicts with the same diagnostics
/// (findings, addresses, code locations, hints), run by run; only the
/// traced path counts instructions, and only it records reads (its stray
/// reads are left out of the comparison).
#[test]
fn alpha_fast_path_diagnoses_like_the_traced_path() {
    if qemu_alpha_missing() {
        eprintln!("SKIPPED: qemu-alpha is not installed (Debian package qemu-user)");
        return;
    }
    let fast = scenario_traced("alpha", "0-3", ModulePlacement::Far, false);
    let traced = scenario_traced("alpha", "0-3", ModulePlacement::Far, true);
    check(&fast);
    check(&traced);
    assert_eq!(fast.tests.len(), traced.tests.len());
    for (f, t) in fast.tests.iter().zip(&traced.tests) {
        let name = format!("{}:{}", f.object, f.test);
        assert_eq!((&f.object, &f.test, f.status), (&t.object, &t.test, t.status), "{name}");
        let json = |d| {
            let mut v = serde_json::to_value(d).unwrap();
            if let Some(fs) = v.get_mut("findings").and_then(|f| f.as_array_mut()) {
                fs.retain(|f| f["kind"] != "stray_read");
            }
            v
        };
        assert_eq!(json(&f.diagnostic), json(&t.diagnostic), "{name}: diagnostics differ");
        assert_eq!(f.runs.len(), t.runs.len(), "{name}");
        for (fr, tr) in f.runs.iter().zip(&t.runs) {
            assert_eq!((fr.cpu, fr.status), (tr.cpu, tr.status), "{name}");
            assert_eq!(json(&fr.diagnostic), json(&tr.diagnostic), "{name} cpu {}", fr.cpu);
            assert_eq!(fr.instructions, None, "{name}: the fast path does not count");
            if fr.status == Status::Pass {
                assert!(tr.instructions.is_some_and(|n| n > 0), "{name}: the traced path counts");
            }
        }
    }
    assert!(fast.tests.iter().any(|t| t.status == Status::Caught
        && t.diagnostic.as_ref().is_some_and(|d| {
            d.findings.iter().any(|f| f.kind == check::FindingKind::StrayWrite && f.pc.is_some())
        })));
    assert_eq!(fast.uncounted_runs, fast.runs);
    assert!(traced.instructions > 0);
}

/// alpha at 64 CPUs: a few seconds (was ~145 s when every instruction
/// was single-stepped; SUM_ALL tests are still quadratic in guest
/// instructions, but those run at QEMU's speed now).
#[test]
fn alpha_fixtures_64_cpus() {
    if qemu_alpha_missing() {
        eprintln!("SKIPPED: qemu-alpha is not installed (Debian package qemu-user)");
        return;
    }
    let r = scenario("alpha", "0-63", ModulePlacement::Far);
    check(&r);
    caught(&r, "bug_cpu_off_by_one.o", "ob_inc");
    caught(&r, "bug_trunc32.o", "tr_offset_far");
}
