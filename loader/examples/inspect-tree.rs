//! Inspect (and optionally load) every `.ko` under a directory tree.
//!
//! ```text
//! cargo run -p percpu-loader --example inspect-tree -- DIR [--load] [--json FILE] [--expect-weak-got]
//! ```
//!
//! Prints counts (modules, modules with percpu data, verdicts) and exits
//! non-zero when any module fails to parse, inspect or (with `--load`) load,
//! or when a module with percpu data breaks its arch's percpu rules.
//! `--expect-weak-got` additionally requires every module percpu variable to
//! be weak and every code reference to it to go through the GOT (s390x,
//! alpha).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use percpu_loader::inspect::{inspect, RefVerdict};
use percpu_loader::{load_module, InMemoryPercpu, LinearLayout, LoadOptions, Machine, ResolvedSymbol, SymbolResolver};

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.flatten().collect();
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let p = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            walk(&p, out);
        } else if ft.is_file() && p.extension().map(|x| x == "ko").unwrap_or(false) {
            out.push(p);
        }
    }
}

/// Where the fake kernel lives, per machine: (kernel text, percpu start).
fn fake_kernel(m: Machine) -> (u64, u64) {
    match m {
        Machine::X86_64 => (0xffff_ffff_8100_0000, 0),
        Machine::Aarch64 => (0xffff_8000_0800_0000, 0xffff_8000_0a00_0000),
        Machine::S390x => (0x10_0000, 0x140_0000),
        Machine::Riscv64 => (0x8020_0000, 0x8100_0000),
        Machine::Alpha => (0xffff_fc00_0031_0000, 0xffff_fc00_0100_0000),
        Machine::Sparc => (0xf000_4000, 0xf010_0000),
    }
}

struct FakeKernel(u64);

impl SymbolResolver for FakeKernel {
    fn resolve(&self, name: &str) -> Option<ResolvedSymbol> {
        // A stable, 16-byte aligned address inside a 16 MiB kernel text.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        Some(ResolvedSymbol { value: self.0 + ((h % (16 << 20)) & !0xf), percpu: false })
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut dir = None;
    let mut load = false;
    let mut json = None;
    let mut expect_weak_got = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--load" => load = true,
            "--json" => json = args.next(),
            "--expect-weak-got" => expect_weak_got = true,
            _ => dir = Some(PathBuf::from(a)),
        }
    }
    let Some(dir) = dir else {
        eprintln!("usage: inspect-tree DIR [--load] [--json FILE] [--expect-weak-got]");
        return ExitCode::from(2);
    };
    let mut files = Vec::new();
    walk(&dir, &mut files);
    let mut n = 0usize;
    let mut with_percpu = 0usize;
    let mut follows = 0usize;
    let mut breaks = 0usize;
    let mut errors = 0usize;
    let mut loaded = 0usize;
    let mut machines: BTreeMap<String, usize> = BTreeMap::new();
    let mut percpu_types: BTreeMap<String, usize> = BTreeMap::new();
    let mut reports = Vec::new();
    for f in &files {
        n += 1;
        let bytes = match std::fs::read(f) {
            Ok(b) => b,
            Err(e) => {
                errors += 1;
                eprintln!("ERROR {}: {e}", f.display());
                continue;
            }
        };
        let name = f.display().to_string();
        let rep = match inspect(&name, &bytes) {
            Ok(r) => r,
            Err(e) => {
                errors += 1;
                eprintln!("ERROR {e}");
                continue;
            }
        };
        *machines.entry(rep.machine.clone()).or_default() += 1;
        if !rep.unsupported_relocations.is_empty() {
            errors += 1;
            eprintln!("ERROR {name}: relocation types the loader cannot apply: {:?}", rep.unsupported_relocations);
        }
        if rep.verdict.applies {
            with_percpu += 1;
            let mut ok = rep.verdict.follows;
            if expect_weak_got {
                let weak = rep.percpu_symbols.iter().filter(|s| s.kind == "object").all(|s| s.weak);
                let got = rep.percpu_relocations.iter().filter(|g| g.from_code).all(|g| {
                    g.name.map(|n| n.contains("GOT") || n.contains("LITERAL") || n.contains("LITUSE")).unwrap_or(false)
                });
                if !(weak && got) {
                    ok = false;
                    eprintln!("WRONG VERDICT {name}: expected weak percpu reached through the GOT");
                }
            }
            if ok {
                follows += 1;
            } else {
                breaks += 1;
                eprintln!("BREAKS {name}: {:?}", rep.verdict.problems);
            }
            for g in &rep.percpu_relocations {
                debug_assert!(g.verdict == RefVerdict::Ok || !rep.verdict.follows);
                *percpu_types
                    .entry(format!("{} ({})", g.name.unwrap_or("?"), if g.from_code { "code" } else { "data" }))
                    .or_default() += g.count;
            }
        }
        if load {
            let Some(m) = Machine::from_elf(rep.e_machine, rep.class == 64) else {
                continue;
            };
            let (ktext, pstart) = fake_kernel(m);
            let mut pcpu = InMemoryPercpu::new(2, 0x2_0000, 8 << 10, pstart, pstart);
            let mut layout = LinearLayout::near(pstart.wrapping_add(0x2_0000));
            if m == Machine::X86_64 {
                layout = LinearLayout::at(0xffff_ffff_c000_0000);
            }
            let fake = FakeKernel(ktext);
            match load_module(&name, &bytes, &LoadOptions::default(), &mut pcpu, &mut layout, &[&fake]) {
                Ok(_) => loaded += 1,
                Err(e) => {
                    errors += 1;
                    eprintln!("LOAD ERROR {e}");
                }
            }
        }
        if json.is_some() && rep.verdict.applies {
            reports.push(rep);
        }
    }
    if let Some(j) = json {
        let s = serde_json::to_string_pretty(&reports).expect("serialise");
        if let Err(e) = std::fs::write(&j, s) {
            eprintln!("cannot write {j}: {e}");
            return ExitCode::FAILURE;
        }
    }
    println!("directory: {}", dir.display());
    println!("machines: {machines:?}");
    println!("modules: {n}");
    println!("modules with percpu data: {with_percpu}");
    println!("verdict follows: {follows}");
    println!("verdict breaks: {breaks}");
    println!("percpu references by type: {percpu_types:?}");
    if load {
        println!("loaded (near layout, fake kernel): {loaded}");
    }
    println!("errors: {errors}");
    if errors > 0 || breaks > 0 || n == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
