//! `inspect` on the test objects: percpu sections, symbols, reference groups
//! with reach and verdicts, static areas, JSON and the human table.

#![allow(clippy::result_large_err)]

mod common;

use common::data;
use percpu_loader::inspect::{inspect, RefVerdict};
use percpu_loader::{ObjectRole, PercpuModel};

#[test]
fn modules_that_follow_their_arch_rules() {
    for f in [
        "x86_64-module.o",
        "aarch64-module.o",
        "sparc-module.o",
        "alpha-module.o",
        "s390x-module.o",
        "riscv64-module.o",
    ] {
        let r = inspect(f, &data(f)).unwrap();
        assert_eq!(r.role, ObjectRole::Module, "{f}");
        assert!(r.verdict.applies && r.verdict.follows, "{f}: {:?}", r.verdict.problems);
        assert_eq!(r.percpu_sections.len(), 1);
        assert!(r.percpu_sections[0].module_percpu);
        assert!(r.percpu_symbols.iter().any(|s| s.name == "pcpu_counter"), "{f}");
        assert!(!r.percpu_relocations.is_empty(), "{f}");
        assert!(r.unsupported_relocations.is_empty(), "{f}: {:?}", r.unsupported_relocations);
        assert_eq!(r.test_descriptors, Some(4));
        assert!(r.abi.is_some());
    }
}

#[test]
fn weak_percpu_markers_and_got_references() {
    let r = inspect("s390x-module.o", &data("s390x-module.o")).unwrap();
    assert_eq!((r.machine.as_str(), r.class, r.endianness), ("s390x", 64, "big"));
    let c = r.percpu_symbols.iter().find(|s| s.name == "pcpu_counter").unwrap();
    assert!(c.weak && c.pcpu_unique);
    assert!(r.pcpu_unique_markers.contains(&"pcpu_counter".to_string()));
    let code: Vec<_> = r.percpu_relocations.iter().filter(|g| g.from_code).collect();
    assert!(code.iter().all(|g| g.name == Some("R_390_GOTENT")), "{code:?}");
    assert_eq!(r.abi.as_ref().unwrap().model, PercpuModel::S390Lowcore);
}

#[test]
fn strong_percpu_on_alpha_and_s390x_breaks_the_rules() {
    for (f, ty) in [("alpha-module-strong.o", "R_ALPHA_GPRELHIGH"), ("s390x-module-strong.o", "R_390_PC32DBL")] {
        let r = inspect(f, &data(f)).unwrap();
        assert!(r.verdict.applies && !r.verdict.follows, "{f}");
        let g = r.percpu_relocations.iter().find(|g| g.name == Some(ty)).unwrap_or_else(|| panic!("{f}: {ty}"));
        assert_eq!(g.verdict, RefVerdict::Violation);
        assert!(g.from_code);
        assert!(
            r.verdict.problems.iter().any(|p| p.contains(ty) && p.contains("must define percpu variables weak")),
            "{:?}",
            r.verdict.problems
        );
        let text = r.to_string();
        assert!(text.contains("VIOLATION") && text.contains("BREAKS the module percpu rules"), "{text}");
    }
}

#[test]
fn reach_is_reported_per_group() {
    let r = inspect("aarch64-module.o", &data("aarch64-module.o")).unwrap();
    let adrp = r.percpu_relocations.iter().find(|g| g.name == Some("R_AARCH64_ADR_PREL_PG_HI21")).unwrap();
    assert_eq!(adrp.reach_text, "page-relative ±4 GiB (adrp)");
    let r = inspect("x86_64-module.o", &data("x86_64-module.o")).unwrap();
    let s = r.percpu_relocations.iter().find(|g| g.name == Some("R_X86_64_32S")).unwrap();
    assert_eq!(s.reach_text, "absolute sign-extended 32-bit (±2 GiB around 0)");
    let pc = r.percpu_relocations.iter().find(|g| g.name == Some("R_X86_64_PC32")).unwrap();
    assert_eq!(pc.reach_text, "pc-relative ±2 GiB");
}

#[test]
fn kernel_images_report_their_static_area() {
    let r = inspect("x86_64-vmlinux", &data("x86_64-vmlinux")).unwrap();
    assert_eq!(r.role, ObjectRole::LinkedImage);
    let a = r.static_area.as_ref().unwrap();
    assert!(a.from_symbols && a.start == 0 && a.size == 0x80 && a.load >= 0xffff_ffff_8100_0000, "{a:?}");
    assert!(!r.verdict.applies);
    assert!(r.percpu_symbols.iter().any(|s| s.name == "kernel_pcpu_var"));
    let text = r.to_string();
    assert!(text.contains("__per_cpu_start 0x0  __per_cpu_end 0x80"), "{text}");
    let r = inspect("aarch64-kernel.o", &data("aarch64-kernel.o")).unwrap();
    assert_eq!(r.role, ObjectRole::KernelImage);
    assert_eq!(r.percpu_sections.len(), 2);
    assert_eq!(r.static_area.as_ref().unwrap().size, 128);
}

#[test]
fn json_has_the_whole_report() {
    let r = inspect("alpha-module.o", &data("alpha-module.o")).unwrap();
    let v: serde_json::Value = serde_json::to_value(&r).unwrap();
    assert_eq!(v["machine"], "alpha");
    assert_eq!(v["endianness"], "little");
    assert_eq!(v["verdict"]["follows"], true);
    assert_eq!(v["role"], "module");
    assert!(v["percpu_relocations"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["name"] == "R_ALPHA_LITERAL" && g["reach"]["base"] == "got_slot"));
    assert!(v["percpu_symbols"][0]["offset"].is_u64());
    assert_eq!(v["abi"]["model"], "thread_info");
}
