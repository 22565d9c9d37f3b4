//! End-to-end smoke test of the sparc32, alpha, s390x and km layouts
//! without the runner: load the shipped `kernel.o` with the loader where
//! the adapter says, set the percpu state up by hand, and run a few of its
//! READ/ADD tests on every CPU; load `bug_noweak_module.o` near and far.
//! The runner (`check/`) does all of this properly; this only proves the
//! layouts are loadable, mappable and runnable on each engine.

use std::path::PathBuf;

use percpu_arch::engine::{Engine, EngineError, Outcome, Perms};
use percpu_arch::isa::{self, CpuContext, Isa, ModulePlacement};
use percpu_core::percpu::Percpu;
use percpu_core::{AllocRequest, CpuSet, PcpuPtr, Topology};
use percpu_loader::contract::Op;
use percpu_loader::error::{LoadError, ReservedExhausted};
use percpu_loader::inspect::inspect_path;
use percpu_loader::load::{load_kernel_image, load_module, LoadOptions, LoadedObject};
use percpu_loader::placement::{LinearLayout, PercpuPlacer};
use percpu_loader::symbols::{SymbolResolver, SymbolTable};

fn fixture(isa: &dyn Isa, object: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/obj").join(isa.variants()[0].fixture_dir).join(object)
}

fn engine(isa: &dyn Isa) -> Option<Box<dyn Engine>> {
    match isa.new_engine() {
        Ok(e) => Some(e),
        Err(e @ EngineError::Missing { .. }) => {
            eprintln!("SKIPPED {}: {e}", isa.name());
            None
        }
        Err(e) => panic!("{}: {e}", isa.name()),
    }
}

struct Env {
    pcpu: Percpu,
    runtime: SymbolTable,
    ti: u64,
    stack_top: u64,
}

fn ulong(isa: &dyn Isa, v: u64) -> Vec<u8> {
    match (isa.ptr_bits(), isa.big_endian()) {
        (32, true) => (v as u32).to_be_bytes().to_vec(),
        (32, false) => (v as u32).to_le_bytes().to_vec(),
        (_, true) => v.to_be_bytes().to_vec(),
        (_, false) => v.to_le_bytes().to_vec(),
    }
}

fn map_range(e: &mut dyn Engine, start: u64, end: u64, perms: Perms) {
    let g = e.map_granule();
    let (s, t) = (start & !(g - 1), end.div_ceil(g) * g);
    for page in (s..t).step_by(g as usize) {
        // Pages shared by two sections may already be mapped.
        let _ = e.map(page, g, perms);
    }
}

/// Runtime symbols and thread_info/stack in the image area between the
/// kernel text and `__per_cpu_start` (4 MiB above the kernel base).
fn runtime(isa: &dyn Isa, e: &mut dyn Engine, possible: &CpuSet) -> (SymbolTable, u64, u64) {
    let v = isa.variants()[0];
    let base = isa.kernel_base(&v) + (4 << 20);
    map_range(e, base, base + (256 << 10), Perms::RW);
    let mask_addr = base;
    let nr_addr = base + 0x1000;
    let ti = base + 0x2000;
    let mut mask = vec![0u8; 4096 / 8];
    for cpu in possible.iter() {
        mask[cpu as usize / 8] |= 1 << (cpu % 8);
    }
    // A bitmap of unsigned longs in target byte order.
    let word = (isa.ptr_bits() / 8) as usize;
    let mut bitmap = Vec::new();
    for chunk in mask.chunks(word) {
        let mut v = 0u64;
        for (i, b) in chunk.iter().enumerate() {
            v |= u64::from(*b) << (8 * i);
        }
        bitmap.extend(ulong(isa, v));
    }
    e.write(mask_addr, &bitmap).unwrap();
    let nr = possible.nr_cpu_ids();
    e.write(nr_addr, &if isa.big_endian() { nr.to_be_bytes() } else { nr.to_le_bytes() }).unwrap();
    let mut t = SymbolTable::new();
    t.define("__cpu_possible_mask", mask_addr).define("nr_cpu_ids", nr_addr).define("pcpubed_thread_info", ti);
    (t, ti, base + (256 << 10) - 256)
}

fn load_kernel(isa: &dyn Isa, e: &mut dyn Engine, env: &Env) -> LoadedObject {
    let v = isa.variants()[0];
    let fc = env.pcpu.first_chunk_layout().clone();
    let mut placer =
        LinearLayout::window(isa.kernel_base(&v), isa.kernel_base(&v) + (4 << 20)).with_page_size(isa.page_size());
    placer.static_percpu_at = Some(fc.per_cpu_start);
    let bytes = std::fs::read(fixture(isa, "kernel.o")).unwrap();
    let resolvers: [&dyn SymbolResolver; 1] = [&env.runtime];
    let k = load_kernel_image("kernel.o", &bytes, &LoadOptions::default(), &mut placer, &resolvers)
        .unwrap_or_else(|err| panic!("{}: kernel.o: {err}", isa.name()));
    for s in &k.sections {
        if s.data.is_empty() {
            continue;
        }
        map_range(e, s.addr, s.end(), Perms::RWX);
        e.write(s.addr, &s.data).unwrap();
    }
    let sp = k.static_percpu.as_ref().expect("static area");
    assert_eq!(sp.start, fc.per_cpu_start, "{}: static area at __per_cpu_start", isa.name());
    // The load image, then every CPU's copy of the static area.
    map_range(e, sp.start, sp.end, Perms::RW);
    e.write(sp.start, &sp.data).unwrap();
    for r in &fc.backed {
        map_range(e, r.start, r.end, Perms::RW);
    }
    let space = env.pcpu.space().clone();
    let offs = env.pcpu.per_cpu_offsets();
    let array = k.symbol("__per_cpu_offset").expect("__per_cpu_offset").value;
    for (cpu, off) in offs.iter().enumerate() {
        if let Some(off) = off {
            e.write(space.wrapping_add(sp.start, *off), &sp.data).unwrap();
            e.write(array + (cpu * (isa.ptr_bits() / 8) as usize) as u64, &ulong(isa, *off)).unwrap();
        }
    }
    k
}

fn run_kernel_tests(name: &str, want: &[&str]) {
    let isa = isa::lookup(name).unwrap();
    let Some(mut e) = engine(isa) else { return };
    let e = e.as_mut();
    let v = isa.variants()[0];
    let possible = CpuSet::first_n(4);
    let static_size = inspect_path(fixture(isa, "kernel.o")).unwrap().static_area.unwrap().size as usize;
    let pcpu = isa.setup_percpu(isa.percpu_config(&v, Topology::uma(possible.clone()), static_size)).unwrap();
    let (runtime, ti, stack_top) = runtime(isa, e, &possible);
    let env = Env { pcpu, runtime, ti, stack_top };
    for m in isa.fixed_mappings(&v) {
        e.map(m.addr, m.size, m.perms).unwrap();
    }
    let k = load_kernel(isa, e, &env);
    let abi = k.abi.clone().unwrap();
    let space = env.pcpu.space().clone();
    let width_bytes = |v: u64, w: u32| -> Vec<u8> {
        let b = if isa.big_endian() { v.to_be_bytes() } else { v.to_le_bytes() };
        if isa.big_endian() {
            b[8 - w as usize..].to_vec()
        } else {
            b[..w as usize].to_vec()
        }
    };
    let mut ran = 0;
    for t in k.tests.iter().filter(|t| want.contains(&t.name.as_str())) {
        for cpu in possible.iter() {
            let off = |c: u32| env.pcpu.per_cpu_offsets()[c as usize].unwrap();
            for c in possible.iter() {
                e.write(space.wrapping_add(t.target, off(c)), &width_bytes(t.init, t.width)).unwrap();
            }
            let ctx = CpuContext {
                cpu,
                per_cpu_offset: off(cpu),
                percpu_area: space.wrapping_add(k.static_percpu.as_ref().unwrap().start, off(cpu)),
                thread_info: env.ti,
                ti_cpu_offset: abi.ti_cpu_offset,
                lowcore_percpu_offset: abi.lowcore_percpu_offset,
            };
            isa.enter_cpu(e, &v, &ctx).unwrap();
            let out = e.call(t.fn_addr, &[t.index as u64], env.stack_top, 100_000).unwrap();
            let Outcome::Returned { value, .. } = out else { panic!("{name}: {} on cpu {cpu}: {out:?}", t.name) };
            let mask = if t.width >= 8 { u64::MAX } else { (1u64 << (8 * t.width)) - 1 } & space.mask();
            let expect = match t.op {
                Op::Add => t.init.wrapping_add(t.operand),
                _ => t.init,
            };
            let mut got = vec![0u8; t.width as usize];
            e.read(space.wrapping_add(t.target, off(cpu)), &mut got).unwrap();
            assert_eq!(got, width_bytes(expect, t.width), "{name}: {} on cpu {cpu}: memory", t.name);
            if t.op == Op::Read {
                assert_eq!(value & mask, t.init & mask, "{name}: {} on cpu {cpu}: return", t.name);
            }
            ran += 1;
        }
    }
    assert_eq!(ran, want.len() * possible.len(), "{name}: ran every wanted test");
}

const KERNEL_TESTS: [&str; 3] = ["k_read_u64", "k_read_u32", "k_inc_u16"];

#[test]
fn sparc32_runs_kernel_tests() {
    run_kernel_tests("sparc32", &KERNEL_TESTS);
}

#[test]
fn alpha_runs_kernel_tests() {
    run_kernel_tests("alpha", &KERNEL_TESTS[..2]);
}

#[test]
fn s390x_runs_kernel_tests() {
    run_kernel_tests("s390x", &KERNEL_TESTS);
}

#[test]
fn km_runs_kernel_tests() {
    run_kernel_tests("km", &KERNEL_TESTS);
}

/// Reserved-chunk placement for module loading straight from the core.
struct Reserved<'a>(&'a mut Percpu);

impl PercpuPlacer for Reserved<'_> {
    fn page_size(&self) -> u64 {
        self.0.space().page_size()
    }
    fn alloc_reserved(&mut self, size: u64, align: u64) -> Result<u64, ReservedExhausted> {
        self.0
            .alloc(AllocRequest::new(size as usize, align as usize).reserved())
            .map(|p: PcpuPtr| p.0)
            .map_err(|_| ReservedExhausted { size, align, free: 0 })
    }
    fn copy_to_all_units(&mut self, _ptr: u64, _data: &[u8]) {}
}

/// alpha and s390x modules without weak percpu are rejected at relocation
/// time in the realistic (far) layout, with the arch's rule in the error,
/// and load when the module area is near; weak-percpu modules load in both.
#[test]
fn noweak_modules_overflow_only_far() {
    for name in ["alpha", "s390x"] {
        let isa = isa::lookup(name).unwrap();
        let v = isa.variants()[0];
        let static_size = inspect_path(fixture(isa, "kernel.o")).unwrap().static_area.unwrap().size as usize;
        let mut pcpu = isa.setup_percpu(isa.percpu_config(&v, Topology::uma(CpuSet::first_n(4)), static_size)).unwrap();
        let mut runtime = SymbolTable::new();
        runtime.define("__cpu_possible_mask", 0x10_0000).define("nr_cpu_ids", 0x10_1000);
        runtime.define("pcpubed_thread_info", 0x10_2000);
        let mut kp = LinearLayout::at(isa.kernel_base(&v)).with_page_size(isa.page_size());
        kp.static_percpu_at = Some(pcpu.first_chunk_layout().per_cpu_start);
        let kbytes = std::fs::read(fixture(isa, "kernel.o")).unwrap();
        let k = load_kernel_image("kernel.o", &kbytes, &LoadOptions::default(), &mut kp, &[&runtime]).unwrap();
        let exports = k.exports();
        let first = pcpu.first_chunk_layout().base_addr;
        for object in ["bug_noweak_module.o", "mod_basic.o"] {
            let bytes = std::fs::read(fixture(isa, object)).unwrap();
            for placement in [ModulePlacement::Near, ModulePlacement::Far] {
                let mut mp = LinearLayout::at(isa.module_base(&v, placement, first)).with_page_size(isa.page_size());
                let resolvers: [&dyn SymbolResolver; 2] = [&exports, &runtime];
                let r =
                    load_module(object, &bytes, &LoadOptions::default(), &mut Reserved(&mut pcpu), &mut mp, &resolvers);
                match (object, placement, r) {
                    ("bug_noweak_module.o", ModulePlacement::Far, Err(err @ LoadError::Overflow { .. })) => {
                        let msg = err.to_string();
                        eprintln!("{name}: {msg}");
                        assert!(msg.contains("overflow"), "{name}: {msg}");
                    }
                    (_, ModulePlacement::Far, Ok(_)) if object == "bug_noweak_module.o" => {
                        panic!("{name}: bug_noweak_module.o loaded far")
                    }
                    (_, _, Ok(_)) => {}
                    (_, p, Err(err)) => panic!("{name}: {object} {p}: {err}"),
                }
            }
        }
    }
}
