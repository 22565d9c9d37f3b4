//! `percpu-bed bench`: seed 002's evaluation, side by side in one run.
//!
//! Workloads (Dennis Zhou's bitmap-allocator series, 2017):
//! * 2^20 objects of 4, 16, 64, 256 and 1024 bytes, freed in order,
//!   alternating (evens then odds) and in reverse; the table reports the
//!   worst case over the free orders, as the seed did;
//! * the same with every page's second half already allocated ("second
//!   half filled"), freed in order;
//! * 2^20 four-byte objects at 8-byte alignment (52 minutes for the area
//!   map in the kernel, 16 s for the bitmap).
//!
//! Each workload runs on a fresh allocator of each kind: the bitmap model of
//! today's mm/percpu.c, the 2014-2017 area map (`areamap2014`, 3.15 .. 4.13:
//! the allocator seed 002 measured, so its ratios are the targets), the 2009
//! area map (`areamap`, 2.6.30 .. 3.14, kept as a second row), and a bump
//! allocator as the lower bound.  A run that exceeds the time budget stops and is reported as
//! exceeding it, with the operations it completed.

pub mod kernel;

use percpu_core::KernelProfile;
use std::time::{Duration, Instant};

use percpu_core::areamap::{AreaMapAllocator, AreaMapConfig};
use percpu_core::areamap2014::AreaMap2014Allocator;
use percpu_core::bump::BumpAllocator;
use percpu_core::percpu::{Percpu, PercpuConfig};
use percpu_core::{AddressSpace, AllocRequest, CpuSet, PcpuPtr, PercpuAllocator, Topology};
use serde::Serialize;

/// The allocators, by their row names: `areamap2014` is the 2014-2017 map
/// (seed 002's baseline), `areamap` the 2009 one.
pub const ALLOCATORS: [&str; 4] = ["bitmap", "areamap2014", "areamap", "bump"];

/// How to free the objects of a workload.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pattern {
    InOrder,
    Alternating,
    Reverse,
    /// Pages' second halves filled before the run; freed in order.
    SecondHalfFilled,
}

impl Pattern {
    pub fn name(self) -> &'static str {
        match self {
            Pattern::InOrder => "in-order",
            Pattern::Alternating => "alternating",
            Pattern::Reverse => "reverse",
            Pattern::SecondHalfFilled => "second-half-filled",
        }
    }
}

/// Benchmark parameters.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Objects per workload (2^20 in the seed).
    pub objects: usize,
    pub sizes: Vec<usize>,
    /// An allocation or free phase longer than this is stopped.
    pub budget: Duration,
    /// Objects for the utilisation workload.
    pub utilisation_objects: usize,
    /// The kernel whose percpu geometry the bitmap allocator models.
    pub kernel: KernelProfile,
}

impl BenchOptions {
    pub fn full() -> Self {
        BenchOptions {
            objects: 1 << 20,
            sizes: vec![4, 16, 64, 256, 1024],
            budget: Duration::from_secs(60),
            utilisation_objects: 1 << 18,
            kernel: KernelProfile::default(),
        }
    }
    /// A scaled-down run (2^16 objects) that finishes in well under 30 s.
    pub fn quick() -> Self {
        BenchOptions {
            objects: 1 << 16,
            sizes: vec![4, 16, 64, 256, 1024],
            budget: Duration::from_secs(2),
            utilisation_objects: 1 << 15,
            kernel: KernelProfile::default(),
        }
    }
}

/// One allocator on one workload.
#[derive(Clone, Debug, Serialize)]
pub struct BenchRow {
    pub allocator: &'static str,
    pub size: usize,
    pub align: usize,
    pub pattern: &'static str,
    pub objects: usize,
    /// Allocations and frees completed (fewer than `objects` when a phase
    /// ran over budget; per-op figures are over what completed).
    pub alloc_ops: usize,
    pub free_ops: usize,
    pub alloc_ms: f64,
    pub free_ms: f64,
    pub alloc_ns_per_op: f64,
    pub free_ns_per_op: f64,
    pub exceeded_budget: bool,
    pub chunks: usize,
}

/// Memory figures after a random-size workload.
#[derive(Clone, Debug, Serialize)]
pub struct UtilisationRow {
    pub allocator: &'static str,
    pub workload: &'static str,
    pub allocated_bytes: u64,
    pub populated_bytes: u64,
    pub metadata_bytes: u64,
    pub utilisation: f64,
    pub metadata_per_allocated_byte: f64,
}

/// A target from the issue, evaluated on this run's numbers.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub name: String,
    pub ratio: f64,
    pub goal: f64,
    pub met: bool,
}

/// Emulated checks: one arch's shipped fixtures on one CPU configuration.
#[derive(Clone, Debug, Serialize)]
pub struct EmulationRow {
    pub arch: &'static str,
    pub variant: &'static str,
    pub objects: String,
    pub cpus: usize,
    /// Test runs (one test on one CPU), each a full emulated check.
    pub runs: usize,
    pub setup_ms: f64,
    pub run_ms: f64,
    pub checks_per_sec: f64,
    /// Whole scenario time divided by the number of CPUs.
    pub us_per_cpu: f64,
    /// Why the scenario could not run (e.g. qemu-alpha missing).
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// The kernel modelled ("Linux 6.1").
    pub kernel: String,
    pub objects: usize,
    pub rows: Vec<BenchRow>,
    pub utilisation: Vec<UtilisationRow>,
    pub emulation: Vec<EmulationRow>,
    pub targets: Vec<Target>,
}

/// The benchmark geometry: an x86_64-like setup (4 KiB pages, 2 MiB atoms,
/// 4 CPUs) whose unit size is what a 4-CPU x86_64 kernel gets.
pub fn bench_config() -> PercpuConfig {
    bench_config_for(&KernelProfile::default())
}

/// [`bench_config`] with the constants of `kernel`.
pub fn bench_config_for(kernel: &KernelProfile) -> PercpuConfig {
    let mut cfg =
        PercpuConfig::generic_for(kernel, AddressSpace::generic64(), Topology::uma(CpuSet::first_n(4)), 0x2c000);
    cfg.atom_size = 2 << 20;
    cfg
}

fn make(name: &str, kernel: &KernelProfile) -> Box<dyn PercpuAllocator> {
    let bitmap = Percpu::new(bench_config_for(kernel)).expect("bench geometry is valid");
    match name {
        "bitmap" => Box::new(bitmap),
        "areamap2014" => Box::new(
            AreaMap2014Allocator::new(AreaMapConfig::matching(&bitmap))
                .expect("bench geometry is valid for the 2014 area map"),
        ),
        "areamap" => Box::new(
            AreaMapAllocator::new(AreaMapConfig::matching(&bitmap)).expect("bench geometry is valid for the area map"),
        ),
        "bump" => Box::new(BumpAllocator::new(0x10_0000, 4096)),
        other => unreachable!("unknown allocator {other}"),
    }
}

/// The order objects are freed in.
/// The order an objects workload frees its `n` objects in.
pub fn free_order(n: usize, pattern: Pattern) -> Vec<usize> {
    match pattern {
        Pattern::InOrder | Pattern::SecondHalfFilled => (0..n).collect(),
        Pattern::Reverse => (0..n).rev().collect(),
        Pattern::Alternating => (0..n).step_by(2).chain((1..n).step_by(2)).collect(),
    }
}

/// Allocate filler so that every page has its first half free and its
/// second half allocated, with room for `bytes` of objects.
fn fill_second_halves(a: &mut dyn PercpuAllocator, bytes: usize) {
    let half = 2048;
    let pairs = bytes.div_ceil(half) + 64;
    let mut firsts = Vec::with_capacity(pairs);
    for _ in 0..pairs {
        firsts.push(a.alloc(AllocRequest::new(half, half)).expect("filler"));
        a.alloc(AllocRequest::new(half, half)).expect("filler");
    }
    for p in firsts {
        a.free(p).expect("filler frees");
    }
}

/// What the two phases of an objects workload did.
struct Phases {
    allocated: usize,
    freed: usize,
    alloc_time: Duration,
    free_time: Duration,
    exceeded: bool,
}

/// An objects workload on any allocator: fill second halves if the pattern
/// says so, allocate `n` objects, then (unless `phase` stops after the
/// allocations) free them in the pattern's order.  Each phase stops once it
/// has run longer than `budget`.
fn objects_workload(
    a: &mut dyn PercpuAllocator,
    size: usize,
    align: usize,
    pattern: Pattern,
    n: usize,
    budget: Duration,
    phase: Phase,
) -> Phases {
    if pattern == Pattern::SecondHalfFilled {
        fill_second_halves(a, n * size);
    }
    let mut ptrs: Vec<PcpuPtr> = Vec::with_capacity(n);
    let req = AllocRequest::new(size, align);
    // Each phase has its own budget, so an allocator stopped while
    // allocating still has its free path measured on what it allocated.
    let mut exceeded = false;
    let start = Instant::now();
    let deadline = start + budget;
    for i in 0..n {
        ptrs.push(a.alloc(req).expect("bench allocation"));
        // Check the clock every 256 operations: cheap, still bounded.
        if i % 256 == 255 && Instant::now() > deadline {
            exceeded = true;
            break;
        }
    }
    let alloc_time = start.elapsed();
    let allocated = ptrs.len();
    let mut freed = 0;
    let start = Instant::now();
    if phase == Phase::End {
        let order: Vec<usize> = free_order(n, pattern).into_iter().filter(|&i| i < allocated).collect();
        let deadline = start + budget;
        for (k, i) in order.into_iter().enumerate() {
            a.free(ptrs[i]).expect("bench free");
            freed += 1;
            if k % 256 == 255 && Instant::now() > deadline {
                exceeded = true;
                break;
            }
        }
    }
    Phases { allocated, freed, alloc_time, free_time: start.elapsed(), exceeded }
}

/// One allocator (`bitmap`, `areamap2014`, `areamap` or `bump`) on one objects workload,
/// as `bench` runs it (the harness puts the real code beside it).
pub fn run_one(name: &'static str, size: usize, align: usize, pattern: Pattern, opts: &BenchOptions) -> BenchRow {
    let mut a = make(name, &opts.kernel);
    let n = opts.objects;
    let ph = objects_workload(a.as_mut(), size, align, pattern, n, opts.budget, Phase::End);
    let chunks = a.footprint().nr_chunks;
    let per = |d: Duration, ops: usize| if ops == 0 { 0.0 } else { d.as_nanos() as f64 / ops as f64 };
    BenchRow {
        allocator: name,
        size,
        align,
        pattern: pattern.name(),
        objects: n,
        alloc_ops: ph.allocated,
        free_ops: ph.freed,
        alloc_ms: ph.alloc_time.as_secs_f64() * 1e3,
        free_ms: ph.free_time.as_secs_f64() * 1e3,
        alloc_ns_per_op: per(ph.alloc_time, ph.allocated),
        free_ns_per_op: per(ph.free_time, ph.freed),
        exceeded_budget: ph.exceeded,
        chunks,
    }
}

/// The utilisation workload's random generator, seeded so runs are
/// comparable (2005: seed 004's year).
fn utilisation_rng() -> rand_chacha::ChaCha8Rng {
    use rand::SeedableRng;
    rand_chacha::ChaCha8Rng::seed_from_u64(2005)
}

/// `n` allocations of log-uniform sizes in 4..=1024, natural 4-byte alignment.
fn random_alloc(a: &mut dyn PercpuAllocator, n: usize, rng: &mut impl rand::Rng) -> Vec<PcpuPtr> {
    let mut live = Vec::with_capacity(n);
    for _ in 0..n {
        let size = 1usize << rng.random_range(2..=10);
        let size = rng.random_range(size / 2..=size).max(4);
        live.push(a.alloc(AllocRequest::new(size, 4)).expect("utilisation alloc"));
    }
    live
}

/// Free a random half, then let the balance work depopulate.
fn random_free_half(a: &mut dyn PercpuAllocator, mut live: Vec<PcpuPtr>, rng: &mut impl rand::Rng) {
    for i in (0..live.len()).rev() {
        if rng.random_bool(0.5) {
            a.free(live.swap_remove(i)).expect("utilisation free");
        }
    }
    a.balance();
}

/// Random-size workload for utilisation and metadata overhead.
fn utilisation(name: &'static str, opts: &BenchOptions) -> Vec<UtilisationRow> {
    let mut rng = utilisation_rng();
    let mut a = make(name, &opts.kernel);
    let row = |a: &dyn PercpuAllocator, workload: &'static str| {
        let f = a.footprint();
        UtilisationRow {
            allocator: name,
            workload,
            allocated_bytes: f.allocated_bytes,
            populated_bytes: f.populated_bytes,
            metadata_bytes: f.metadata_bytes,
            utilisation: f.allocated_bytes as f64 / f.populated_bytes.max(1) as f64,
            metadata_per_allocated_byte: f.metadata_bytes as f64 / f.allocated_bytes.max(1) as f64,
        }
    };
    let live = random_alloc(a.as_mut(), opts.utilisation_objects, &mut rng);
    let mut rows = vec![row(a.as_ref(), "random-alloc")];
    random_free_half(a.as_mut(), live, &mut rng);
    rows.push(row(a.as_ref(), "random-half-freed"));
    rows
}

/// Where to stop a workload.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// After the allocations, before any free (or balance).
    Allocated,
    /// At the workload's end, as `bench` runs it.
    End,
}

/// A benchmark workload by name, for drawing what it leaves behind
/// (`percpu-bed map --workload`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Workload {
    /// `PATTERN-SIZE`, or `in-order-4-align-8`: objects of `size` bytes
    /// at `align`, freed in `pattern`'s order.
    Objects { size: usize, align: usize, pattern: Pattern },
    /// `random-alloc` / `random-half-freed`: the utilisation workload's
    /// random sizes, then a random half freed and the balance work run.
    Random { half_freed: bool },
}

impl Workload {
    /// Every workload `bench` runs, in its order.
    pub fn all() -> Vec<Workload> {
        let patterns = [Pattern::InOrder, Pattern::Alternating, Pattern::Reverse, Pattern::SecondHalfFilled];
        let mut all = Vec::new();
        for size in BenchOptions::full().sizes {
            for pattern in patterns {
                all.push(Workload::Objects { size, align: 4, pattern });
            }
        }
        all.push(Workload::Objects { size: 4, align: 8, pattern: Pattern::InOrder });
        all.push(Workload::Random { half_freed: false });
        all.push(Workload::Random { half_freed: true });
        all
    }

    pub fn name(&self) -> String {
        match *self {
            Workload::Objects { size, align: 4, pattern } => format!("{}-{size}", pattern.name()),
            Workload::Objects { size, align, pattern } => format!("{}-{size}-align-{align}", pattern.name()),
            Workload::Random { half_freed: false } => "random-alloc".into(),
            Workload::Random { half_freed: true } => "random-half-freed".into(),
        }
    }

    /// The workload called `name`, one of [`Workload::all`]'s names.
    pub fn parse(name: &str) -> Option<Workload> {
        Workload::all().into_iter().find(|w| w.name() == name)
    }

    /// Run the workload with `objects` objects on the bitmap allocator in
    /// the bench geometry ([`bench_config`]), stopping at `phase`, and hand
    /// the allocator back.  Same code paths as `bench`, without its time
    /// budget.
    pub fn run(&self, objects: usize, phase: Phase) -> Percpu {
        let mut p = Percpu::new(bench_config()).expect("bench geometry is valid");
        match *self {
            Workload::Objects { size, align, pattern } => {
                let no_budget = Duration::from_secs(365 * 24 * 3600);
                objects_workload(&mut p, size, align, pattern, objects, no_budget, phase);
            }
            Workload::Random { half_freed } => {
                let mut rng = utilisation_rng();
                let live = random_alloc(&mut p, objects, &mut rng);
                if half_freed && phase == Phase::End {
                    random_free_half(&mut p, live, &mut rng);
                }
            }
        }
        p
    }
}

/// Run every workload; `progress` is told what starts next.
pub fn run(opts: &BenchOptions, mut progress: impl FnMut(&str)) -> BenchReport {
    let mut rows = Vec::new();
    let patterns = [Pattern::InOrder, Pattern::Alternating, Pattern::Reverse, Pattern::SecondHalfFilled];
    for &size in &opts.sizes {
        for pattern in patterns {
            for name in ALLOCATORS {
                progress(&format!("{name} {size}B {}", pattern.name()));
                rows.push(run_one(name, size, 4, pattern, opts));
            }
        }
    }
    for name in ALLOCATORS {
        progress(&format!("{name} 4B align 8"));
        rows.push(run_one(name, 4, 8, Pattern::InOrder, opts));
    }
    let mut util = Vec::new();
    for name in ALLOCATORS {
        progress(&format!("{name} utilisation"));
        util.extend(utilisation(name, opts));
    }
    progress("emulated checks");
    let emulation = emulation(&opts.kernel);
    let targets = targets(&rows, &util);
    BenchReport { kernel: opts.kernel.to_string(), objects: opts.objects, rows, utilisation: util, emulation, targets }
}

/// One scenario as a benchmark row.
fn emulation_row(arch: &'static str, cpus: u32, only: Option<&str>, kernel: &KernelProfile) -> EmulationRow {
    use percpu_arch::check::{self, Scenario};
    let mut row = EmulationRow {
        arch,
        variant: "",
        objects: only.unwrap_or("all shipped").to_string(),
        cpus: cpus as usize,
        runs: 0,
        setup_ms: 0.0,
        run_ms: 0.0,
        checks_per_sec: 0.0,
        us_per_cpu: 0.0,
        error: None,
    };
    let result = (|| -> anyhow::Result<check::ScenarioReport> {
        let mut sc = Scenario::for_kernel(arch, None, percpu_core::CpuSet::first_n(cpus), kernel.clone())?;
        row.variant = sc.variant.name;
        if let Some(o) = only {
            sc = sc.only(&[o]);
        }
        let paths = crate::scenario::shipped_objects(sc.variant.fixture_dir)?;
        let objs = paths.iter().map(|p| crate::scenario::read_object(p)).collect::<anyhow::Result<Vec<_>>>()?;
        let modules: Vec<(&str, &[u8])> = objs[1..].iter().map(|o| (o.name.as_str(), o.bytes.as_slice())).collect();
        Ok(check::run(&sc, (&objs[0].name, &objs[0].bytes), &modules)?)
    })();
    match result {
        Ok(r) => {
            row.runs = r.runs;
            row.setup_ms = r.setup_micros as f64 / 1e3;
            row.run_ms = r.run_micros as f64 / 1e3;
            row.checks_per_sec = r.runs as f64 / (r.run_micros.max(1) as f64 / 1e6);
            row.us_per_cpu = r.total_micros as f64 / cpus as f64;
        }
        Err(e) => row.error = Some(format!("{e:#}")),
    }
    row
}

/// Emulated checks per second per arch (shipped fixtures at 4 CPUs), and
/// how the cost grows with CPUs (x86_64 `percpu_test.o` at 4, 64, 4096).
fn emulation(kernel: &KernelProfile) -> Vec<EmulationRow> {
    let mut rows: Vec<EmulationRow> =
        percpu_arch::isa::all().iter().map(|isa| emulation_row(isa.name(), 4, None, kernel)).collect();
    for cpus in [4, 64, 4096] {
        rows.push(emulation_row("x86_64", cpus, Some("percpu_test.o"), kernel));
    }
    rows
}

/// Worst case over the free orders seed 002 used (not second-half-filled).
fn worst(rows: &[BenchRow], allocator: &str, size: usize, align: usize) -> Option<(f64, f64)> {
    let sel: Vec<_> = rows
        .iter()
        .filter(|r| r.allocator == allocator && r.size == size && r.align == align)
        .filter(|r| ["in-order", "alternating", "reverse"].contains(&r.pattern))
        .collect();
    if sel.is_empty() {
        return None;
    }
    let a = sel.iter().map(|r| r.alloc_ns_per_op).fold(0.0, f64::max);
    let f = sel.iter().map(|r| r.free_ns_per_op).fold(0.0, f64::max);
    Some((a, f))
}

fn targets(rows: &[BenchRow], util: &[UtilisationRow]) -> Vec<Target> {
    let mut t = Vec::new();
    let mut push = |name: String, ratio: f64, goal: f64, higher_is_better: bool| {
        let met = if higher_is_better { ratio >= goal } else { ratio <= goal };
        t.push(Target { name, ratio, goal, met });
    };
    // The seed's ratios are against the 2014-2017 map it measured; the 2009
    // map's follow as a reference (named "2009 map").
    for (map, label) in [("areamap2014", "areamap2014"), ("areamap", "areamap (2009 map, reference)")] {
        if let (Some((_, bf)), Some((_, af))) = (worst(rows, "bitmap", 4, 4), worst(rows, map, 4, 4)) {
            push(format!("free of 4-byte objects: {label} / bitmap (goal >= 50x, seed 68x)"), af / bf, 50.0, true);
        }
        let find = |alloc: &str| rows.iter().find(|r| r.allocator == alloc && r.align == 8);
        if let (Some(b), Some(a)) = (find("bitmap"), find(map)) {
            let total = |r: &BenchRow| {
                // Over budget: project the full run from the rates achieved.
                (r.alloc_ns_per_op + r.free_ns_per_op) * r.objects as f64 / 1e6
            };
            push(
                format!("4-byte objects at 8-byte alignment: {label} / bitmap (goal >= 100x, seed ~195x)"),
                total(a) / total(b),
                100.0,
                true,
            );
        }
    }
    for size in [4, 16, 64, 256, 1024] {
        if let (Some((ba, _)), Some((aa, _))) = (worst(rows, "bitmap", size, 4), worst(rows, "areamap2014", size, 4)) {
            push(format!("alloc {size}B: bitmap / areamap2014 (goal <= 1.0, kernel 1.06-1.58)"), ba / aa, 1.0, false);
        }
    }
    if let (Some((ba, _)), Some((bu, _))) = (worst(rows, "bitmap", 4, 4), worst(rows, "bump", 4, 4)) {
        push("alloc 4B: bitmap / bump (goal <= 30x)".into(), ba / bu, 30.0, false);
    }
    if let Some(u) = util.iter().find(|u| u.allocator == "bitmap" && u.workload == "random-alloc") {
        push(
            "bitmap utilisation after random-size allocation (goal >= 0.98, seed 004)".into(),
            u.utilisation,
            0.98,
            true,
        );
    }
    t
}

impl BenchRow {
    /// Alloc and free time for all objects: measured, or projected from the
    /// per-op rate when a phase stopped at the budget.
    fn full_ms(&self) -> (f64, f64) {
        let n = self.objects as f64;
        (self.alloc_ns_per_op * n / 1e6, self.free_ns_per_op * n / 1e6)
    }
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |v: f64, projected: bool| if projected { format!("~{v:.0}*") } else { format!("{v:.0}") };
        writeln!(
            f,
            "Seed 002 workloads on the {} percpu geometry, {} objects each (worst case over in-order, alternating, reverse):",
            self.kernel, self.objects
        )?;
        for (title, pat) in [("", false), (" -- second half filled, freed in order", true)] {
            for name in ALLOCATORS {
                writeln!(f, "\n{name} allocator{title}:")?;
                writeln!(f, "Object Size | Alloc Time (ms) | Free Time (ms) | Alloc ns/op | Free ns/op")?;
                writeln!(f, "---------------------------------------------------------------------")?;
                for &size in &[4usize, 16, 64, 256, 1024] {
                    let sel: Vec<&BenchRow> = self
                        .rows
                        .iter()
                        .filter(|r| r.allocator == name && r.size == size && r.align == 4)
                        .filter(|r| (r.pattern == "second-half-filled") == pat)
                        .collect();
                    let Some(a) = sel.iter().max_by(|x, y| x.alloc_ns_per_op.total_cmp(&y.alloc_ns_per_op)) else {
                        continue;
                    };
                    let fr = sel.iter().max_by(|x, y| x.free_ns_per_op.total_cmp(&y.free_ns_per_op)).unwrap();
                    writeln!(
                        f,
                        "{:>10}B | {:>15} | {:>14} | {:>11.1} | {:>10.1}",
                        size,
                        ms(a.full_ms().0, a.alloc_ops < a.objects),
                        ms(fr.full_ms().1, fr.free_ops < fr.objects),
                        a.alloc_ns_per_op,
                        fr.free_ns_per_op
                    )?;
                }
            }
        }
        writeln!(f, "\n4-byte objects at 8-byte alignment, freed in order:")?;
        for r in self.rows.iter().filter(|r| r.align == 8) {
            let (am, fm) = r.full_ms();
            write!(
                f,
                "  {:<8} alloc {:>10} ms  free {:>8} ms  {:>9.1} ns/alloc",
                r.allocator,
                ms(am, r.alloc_ops < r.objects),
                ms(fm, r.free_ops < r.objects),
                r.alloc_ns_per_op
            )?;
            if r.exceeded_budget {
                write!(f, "  (stopped at the budget after {} allocs, {} frees)", r.alloc_ops, r.free_ops)?;
            }
            writeln!(f)?;
        }
        writeln!(f, "\nMemory after a random-size workload (sizes 2..1024 B):")?;
        for u in &self.utilisation {
            writeln!(
                f,
                "  {:<8} {:<18} utilisation {:>6.2}%  metadata {:.4} B per allocated byte",
                u.allocator,
                u.workload,
                u.utilisation * 100.0,
                u.metadata_per_allocated_byte
            )?;
        }
        writeln!(f, "\nEmulated checks (one test run on one CPU, memory of every unit checked):")?;
        for e in &self.emulation {
            match &e.error {
                Some(err) => writeln!(f, "  {:<8} {:<10} {:>5} cpus  could not run: {err}", e.arch, e.variant, e.cpus)?,
                None => writeln!(
                    f,
                    "  {:<8} {:<10} {:>5} cpus  {:<16} {:>6} runs  setup {:>7.1} ms  runs {:>8.1} ms  {:>9.0} checks/s  {:>8.1} us/cpu",
                    e.arch, e.variant, e.cpus, e.objects, e.runs, e.setup_ms, e.run_ms, e.checks_per_sec, e.us_per_cpu
                )?,
            }
        }
        writeln!(f, "\nTargets (ratios measured side by side in this run):")?;
        for t in &self.targets {
            writeln!(f, "  [{}] {}: {:.2}", if t.met { "met" } else { "MISSED" }, t.name, t.ratio)?;
        }
        writeln!(f, "\n* a phase stopped at the time budget: time projected from its per-op rate")
    }
}
