//! The runner: load a kernel image and modules like the kernel does, map
//! the percpu allocator's chunks into an emulated CPU, run every fixture
//! test on every possible CPU and check every unit's memory.
//!
//! # How a scenario runs
//!
//! [`run`] builds a *bed* (`bed.rs`): the kernel image is loaded at the
//! adapter's [`Isa::kernel_base`] with its static percpu area at the
//! `__per_cpu_start` the adapter's [`Isa::percpu_config`] names, the
//! allocator is set up for that static size, and the engine gets the
//! kernel's sections, the first chunk's backed units (each holding a copy
//! of the static area), a stack, the runtime data page
//! (`__cpu_possible_mask`, `nr_cpu_ids`, `pcpubed_thread_info`), the
//! adapter's [`Isa::fixed_mappings`] and `__per_cpu_offset[]`.  Modules
//! are loaded with their `.data..percpu` in the reserved chunk and their
//! sections at [`Isa::module_base`].  Every [`ChunkEvent`] of the
//! allocator is mirrored into the engine: populated pages are mapped in
//! every unit, depopulated ones unmapped, new allocations zeroed.
//!
//! Then each test descriptor runs (`exec.rs`): DYNAMIC tests get an
//! allocation (FAR ones in a chunk the backend created), `init` goes into
//! every possible CPU's copy, and for each possible CPU (or once) the
//! adapter enters the CPU and the engine calls `fn(index)` under the
//! instruction budget with every data write recorded
//! ([`TraceMode::Writes`](crate::engine::TraceMode): engines may leave out
//! reads, and writes into the stack's mapping, which the checks allow
//! anyway; `--trace` asks for every access, to log them).  A run *behaves*
//! when it returns, its return value is what the descriptor's `ret` kind
//! says, the target's value in every unit is what the op says and every
//! write hit only the bytes the op names (or the stack).  Anything else is
//! a misbehaviour with a [`Diagnostic`] that decodes every address
//! involved (`diag.rs`).  After a misbehaving run every write the engine
//! recorded is undone, newest first, from the bytes it overwrote (engines
//! read them before the store), so a stray write cannot change what a
//! later test sees.  The balance work runs after frees that would
//! schedule it, and its depopulations and chunk destructions are unmapped.
//!
//! [`run_with_map`] runs the same way and also hands back the allocator's
//! final state ([`ChunkMapView`]) for drawing.
//!
//! # Cost
//!
//! Writing `init` into every unit before every run and reading every unit
//! after it would make a test cost O(CPUs²).  Instead `init` is written
//! once per test and afterwards only where a run wrote (the recorded
//! writes say where); values are checked in the running CPU's copy, in
//! every copy a write touched, and in every copy when there are at most
//! [`FULL_CHECK_CPUS`] CPUs or the op is ADD_ALL.  A write anywhere else
//! is a stray write, so no unit can change unseen.  Tests whose own code
//! loops over all CPUs on every CPU (SUM_ALL without ONCE) stay quadratic
//! in guest instructions, as they are on a real machine.
//!
//! On alpha (qemu-alpha over the GDB protocol) a run costs protocol stops,
//! not instructions: without `--trace` each call runs freely and every
//! write is caught by page protection (about 0.3 ms per run plus 0.5 ms
//! per write; the engine does not count instructions then, and the report
//! says so); with `--trace` every instruction is single-stepped (about
//! 0.3 ms each).  See [`crate::engine::qemu_alpha`].
//!
//! [`ChunkEvent`]: percpu_core::percpu::ChunkEvent

mod bed;
mod diag;
mod exec;
mod kernel;
mod module_run;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Instant;

use percpu_core::alloc::AllocError;
use percpu_core::percpu::{ChunkMapView, PercpuSetupError};
use percpu_core::{CpuSet, KernelProfile};
use percpu_loader::LoadError;
use serde::Serialize;

pub use bed::KernelImage;
pub use diag::{AddrInfo, CodeLoc, Diagnostic, Finding, FindingKind};
pub use kernel::{KernelLog, KernelWarn, PrintkLine};
pub use module_run::{ModuleExpect, Needs, MODULE_TEST};

use crate::engine::EngineError;
use crate::isa::{self, Isa, ModulePlacement, Variant};

/// Up to this many possible CPUs every unit's copy of the target is read
/// back after every run (beyond it, see the module docs).
pub const FULL_CHECK_CPUS: usize = 64;

/// printk lines of a test shown in the table.
pub const MAX_PRINTK_SHOWN: usize = 12;

/// Default instruction budget per call.
pub const DEFAULT_BUDGET: u64 = 1_000_000;

/// What to run: an arch variant on a set of possible CPUs.
#[derive(Clone)]
pub struct Scenario {
    pub isa: &'static dyn Isa,
    pub variant: Variant,
    /// The possible mask (sparse allowed).
    pub cpus: CpuSet,
    /// NUMA nodes; possible CPUs are spread over them in blocks.
    pub nodes: u32,
    pub placement: ModulePlacement,
    /// Instructions per call before the run counts as runaway.
    pub budget: u64,
    /// Emit every percpu access, decoded, through `tracing::debug!`.
    pub trace: bool,
    /// Run only the tests of these objects (by name); `None`: every
    /// object's tests.  All objects are loaded either way.
    pub only: Option<Vec<String>>,
    /// Which possible CPUs each test runs on.
    pub run_on: RunOn,
    /// Only load the objects: an object with nothing to run is not an error.
    pub load_only: bool,
    /// The kernel version whose percpu setup is modelled.
    pub kernel: KernelProfile,
}

/// Which of the possible CPUs a test (without `ONCE`) runs on.  Every
/// possible CPU's unit is mapped, initialised and checked either way; only
/// the set of CPUs whose code runs changes.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunOn {
    /// Every possible CPU, as the contract says.
    All,
    /// At most this many CPUs chosen by [`sample_cpus`]: the first and last
    /// possible CPU, the first of every NUMA node, then evenly spread.  With
    /// thousands of CPUs, tests that sum over all CPUs on every CPU cost
    /// O(CPUs²) guest instructions; a sample keeps the run linear while
    /// still entering CPUs in every group and at both ends of the mask.
    Sample(u32),
}

impl fmt::Display for RunOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunOn::All => f.write_str("all"),
            RunOn::Sample(n) => write!(f, "sample:{n}"),
        }
    }
}

/// The CPUs a test runs on under `run_on`, in ascending order.  `possible`
/// is ascending; `nodes` blocks as [`percpu_core::Topology::blocked`] makes them.
pub fn sample_cpus(possible: &[u32], nodes: u32, run_on: RunOn) -> Vec<u32> {
    let n = match run_on {
        RunOn::All => return possible.to_vec(),
        RunOn::Sample(n) => (n.max(1) as usize).min(possible.len()),
    };
    if n == possible.len() {
        return possible.to_vec();
    }
    let topology = percpu_core::Topology::blocked(CpuSet::from_cpus(possible.iter().copied()), nodes.max(1));
    let mut picked = std::collections::BTreeSet::new();
    let want = |cpu: u32, picked: &mut std::collections::BTreeSet<u32>| {
        if picked.len() < n {
            picked.insert(cpu);
        }
    };
    want(possible[0], &mut picked);
    want(possible[possible.len() - 1], &mut picked);
    let mut seen_node = std::collections::BTreeSet::new();
    for &c in possible {
        if seen_node.insert(topology.node_of(c)) {
            want(c, &mut picked);
        }
    }
    // Evenly spread over the mask for the rest, then in order if the
    // spread collided with CPUs already taken.
    let spread = (0..n).map(|k| possible[k * (possible.len() - 1) / (n - 1).max(1)]);
    for c in spread.chain(possible.iter().copied()) {
        want(c, &mut picked);
    }
    picked.into_iter().collect()
}

impl fmt::Debug for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scenario")
            .field("arch", &self.isa.name())
            .field("variant", &self.variant.name)
            .field("cpus", &self.cpus)
            .field("nodes", &self.nodes)
            .field("placement", &self.placement)
            .field("budget", &self.budget)
            .field("trace", &self.trace)
            .field("only", &self.only)
            .field("run_on", &self.run_on)
            .field("load_only", &self.load_only)
            .field("kernel", &self.kernel)
            .finish()
    }
}

impl Scenario {
    /// `arch`/`variant` by name (`None`: the arch's default variant), one
    /// node, the arch's realistic module placement, [`DEFAULT_BUDGET`], no trace.
    pub fn new(arch: &str, variant: Option<&str>, cpus: CpuSet) -> Result<Self, CheckError> {
        Self::for_kernel(arch, variant, cpus, KernelProfile::default())
    }

    /// [`Scenario::new`] for the percpu setup of `kernel`; the default
    /// variant is the one that kernel's code is built for
    /// ([`Isa::default_variant`]).
    pub fn for_kernel(
        arch: &str,
        variant: Option<&str>,
        cpus: CpuSet,
        kernel: KernelProfile,
    ) -> Result<Self, CheckError> {
        let isa = isa::lookup(arch)
            .ok_or_else(|| CheckError::UnknownArch { arch: arch.to_string(), known: isa::names().join(", ") })?;
        let variant = match variant {
            None => *isa.default_variant(&kernel),
            Some(v) => *isa.variant(v).ok_or_else(|| CheckError::UnknownVariant {
                arch: arch.to_string(),
                variant: v.to_string(),
                known: isa.variants().iter().map(|v| v.name).collect::<Vec<_>>().join(", "),
            })?,
        };
        Ok(Scenario {
            isa,
            variant,
            cpus,
            nodes: 1,
            placement: isa.default_placement(),
            budget: DEFAULT_BUDGET,
            trace: false,
            only: None,
            run_on: RunOn::All,
            load_only: false,
            kernel,
        })
    }
    pub fn nodes(mut self, nodes: u32) -> Self {
        self.nodes = nodes;
        self
    }
    pub fn placement(mut self, placement: ModulePlacement) -> Self {
        self.placement = placement;
        self
    }
    pub fn budget(mut self, budget: u64) -> Self {
        self.budget = budget;
        self
    }
    pub fn trace(mut self, trace: bool) -> Self {
        self.trace = trace;
        self
    }
    pub fn load_only(mut self, load_only: bool) -> Self {
        self.load_only = load_only;
        self
    }
    pub fn run_on(mut self, run_on: RunOn) -> Self {
        self.run_on = run_on;
        self
    }
    /// Run only the tests of the named objects.
    pub fn only(mut self, objects: &[&str]) -> Self {
        self.only = Some(objects.iter().map(|s| s.to_string()).collect());
        self
    }
}

/// The outcome of a test (or of one run of it).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// A good test behaved.
    Pass,
    /// A planted bug (EXPECT_CAUGHT) misbehaved, as expected.
    Caught,
    /// A good test misbehaved, or a planted bug behaved ("not caught").
    Fail,
    /// The harness could not run the test (allocation failure, engine error).
    Error,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Pass => "PASS",
            Status::Caught => "CAUGHT",
            Status::Fail => "FAIL",
            Status::Error => "ERROR",
        })
    }
}

/// One run of a test on one CPU.
#[derive(Clone, Debug, Serialize)]
pub struct CpuRun {
    pub cpu: u32,
    /// The step, for a STEPS test (its runs are steps, in order).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
    /// `Pass` if the run behaved, `Caught`/`Fail` if it misbehaved (as
    /// expected / not), `Error` if it could not run.
    pub status: Status,
    pub instructions: Option<u64>,
    pub micros: u64,
    /// Set when the run misbehaved or could not run.  Only the first few
    /// misbehaving runs of a test carry a full diagnostic
    /// ([`MAX_DIAGNOSED_RUNS`]); later ones carry `summary` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnostic: Option<Diagnostic>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// What the kernel printed during the run (real modules).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub printk: Vec<String>,
}

/// Full diagnostics per test (later misbehaving runs get a summary line).
pub const MAX_DIAGNOSED_RUNS: usize = 4;

/// One test descriptor's result over all its runs.
#[derive(Clone, Debug, Serialize)]
pub struct TestReport {
    pub object: String,
    pub test: String,
    pub index: usize,
    pub status: Status,
    pub expect_caught: bool,
    /// The descriptor's `bug` string (why it must be caught).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bug: Option<String>,
    /// Why the test did not pass: the first misbehaving run's diagnostic,
    /// the loader's rejection, or "planted bug not caught".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnostic: Option<Diagnostic>,
    pub runs: Vec<CpuRun>,
    pub micros: u64,
    /// The first run's printk output, `[cpu N] text` (real modules).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub printk: Vec<String>,
    /// Where the bed bent real code to run it, over all runs (alpha's
    /// privileged PAL calls emulated on the host), with counts.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub emulated: BTreeMap<String, u64>,
    /// A planted bug not caught because this configuration cannot show it
    /// (what it needs and lacks): latent here, still not a pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latent: Option<String>,
}

/// An object that was loaded (or rejected).
#[derive(Clone, Debug, Serialize)]
pub struct ObjectReport {
    pub name: String,
    pub role: String,
    /// The loader's message when the object was rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
    pub tests: usize,
    /// Relocations the arch's module loader silently truncated.
    pub truncations: usize,
    pub warnings: Vec<String>,
}

/// Counts of test statuses.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub pass: usize,
    pub caught: usize,
    /// Planted bugs not caught where their own declaration says this
    /// configuration cannot show them ([`TestReport::latent`]).
    pub latent: usize,
    pub fail: usize,
    pub error: usize,
}

impl Counts {
    fn add(&mut self, t: &TestReport) {
        match t.status {
            _ if t.declared_latent() => self.latent += 1,
            Status::Pass => self.pass += 1,
            Status::Caught => self.caught += 1,
            Status::Fail => self.fail += 1,
            Status::Error => self.error += 1,
        }
    }
    pub fn total(&self) -> usize {
        self.pass + self.caught + self.latent + self.fail + self.error
    }
}

impl TestReport {
    /// A planted bug not caught because its own declaration (a real
    /// module's `needs`, a descriptor's `NEEDS_SMP`) says this
    /// configuration cannot show it: expected, reported, not a pass.
    pub fn declared_latent(&self) -> bool {
        self.expect_caught && self.status == Status::Fail && self.latent.is_some()
    }
}

/// Everything a scenario produced.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioReport {
    /// The kernel profile modelled ("Linux 6.1").
    pub kernel: String,
    pub arch: String,
    pub variant: String,
    pub model: crate::isa::OffsetModel,
    /// The possible mask in cpulist format.
    pub cpus: String,
    pub nr_possible: usize,
    pub nodes: u32,
    pub placement: ModulePlacement,
    pub budget: u64,
    pub run_on: RunOn,
    pub objects: Vec<ObjectReport>,
    pub tests: Vec<TestReport>,
    pub counts: Counts,
    /// Building the bed: loading, percpu setup, mapping units.
    pub setup_micros: u64,
    pub run_micros: u64,
    pub total_micros: u64,
    /// Guest instructions executed over the runs that counted them.
    pub instructions: u64,
    /// Runs whose instructions were not counted: runs that faulted or
    /// trapped, and every run of an engine that runs calls freely
    /// (qemu-alpha without `--trace`).
    pub uncounted_runs: usize,
    pub runs: usize,
    /// The run was stopped (an [`Observer`] asked, e.g. on Ctrl-C): `tests`
    /// holds the tests that ran before.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

/// Watches a run test by test: for progress bars and for stopping early.
pub trait Observer {
    /// Before the first test: how many tests (and module inits) will run.
    fn planned(&mut self, _tests: usize) {}
    /// After each test; return false to stop the run (the report then has
    /// the tests so far and `interrupted` set).
    fn finished(&mut self, _test: &TestReport) -> bool {
        true
    }
}

/// Watches nothing, stops nothing.
impl Observer for () {}

impl ScenarioReport {
    /// The report of one test by name (first match over objects).
    pub fn test(&self, name: &str) -> Option<&TestReport> {
        self.tests.iter().find(|t| t.test == name)
    }
    /// Tests whose status is not what their descriptor expects
    /// (good tests not passing, planted bugs not caught).
    pub fn unexpected(&self) -> Vec<&TestReport> {
        self.tests
            .iter()
            .filter(|t| !matches!((t.expect_caught, t.status), (false, Status::Pass) | (true, Status::Caught)))
            .filter(|t| !t.declared_latent())
            .collect()
    }
}

impl fmt::Display for ScenarioReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}/{} on cpus {} ({} possible, {} node{}), modules {}{}, {}",
            self.arch,
            self.variant,
            self.cpus,
            self.nr_possible,
            self.nodes,
            if self.nodes == 1 { "" } else { "s" },
            self.placement,
            match self.run_on {
                RunOn::All => String::new(),
                r @ RunOn::Sample(_) => format!(", tests run on {r} cpus"),
            },
            self.kernel
        )?;
        for o in &self.objects {
            if let Some(r) = &o.rejected {
                writeln!(f, "  {}: rejected by the loader: {r}", o.name)?;
            }
        }
        for t in &self.tests {
            let bug = if t.expect_caught { " (planted bug)" } else { "" };
            let status = if t.declared_latent() { "LATENT".to_string() } else { t.status.to_string() };
            writeln!(f, "  {status:<7} {}:{}{bug}", t.object, t.test)?;
            if let (true, Some(why)) = (t.declared_latent(), &t.latent) {
                writeln!(f, "          {why}")?;
            }
            for line in t.printk.iter().take(MAX_PRINTK_SHOWN) {
                writeln!(f, "          | {line}")?;
            }
            if t.printk.len() > MAX_PRINTK_SHOWN {
                writeln!(
                    f,
                    "          | ... {} more lines (--format json has them all)",
                    t.printk.len() - MAX_PRINTK_SHOWN
                )?;
            }
            if !t.emulated.is_empty() {
                let what: Vec<String> = t.emulated.iter().map(|(k, n)| format!("{k} x{n}")).collect();
                writeln!(f, "          ~ emulated on the host (privileged in the emulator): {}", what.join(", "))?;
            }
            if let (Some(d), Status::Fail | Status::Error, false) = (&t.diagnostic, t.status, t.declared_latent()) {
                for line in d.to_string().lines() {
                    writeln!(f, "          {line}")?;
                }
            }
        }
        writeln!(
            f,
            "{} pass, {} caught, {}{} fail, {} error; {} runs, {}; setup {:.1} ms, runs {:.1} ms",
            self.counts.pass,
            self.counts.caught,
            if self.counts.latent > 0 { format!("{} latent, ", self.counts.latent) } else { String::new() },
            self.counts.fail,
            self.counts.error,
            self.runs,
            if self.uncounted_runs == 0 {
                format!("{} instructions", self.instructions)
            } else if self.uncounted_runs == self.runs {
                "instructions not counted".to_string()
            } else {
                format!("{} instructions ({} runs not counted)", self.instructions, self.uncounted_runs)
            },
            self.setup_micros as f64 / 1000.0,
            self.run_micros as f64 / 1000.0
        )
    }
}

/// Bad input or a broken harness: the scenario cannot run at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CheckError {
    #[error("unknown arch `{arch}` (known: {known})")]
    UnknownArch { arch: String, known: String },
    #[error("unknown variant `{variant}` of {arch} (known: {known})")]
    UnknownVariant { arch: String, variant: String, known: String },
    #[error("the possible CPU mask is empty")]
    NoCpus,
    #[error("--nodes 0: a machine has at least one NUMA node")]
    NoNodes,
    #[error("{object}: the loader rejected it ({rejection}), and its tests cannot be read to report them: {source}")]
    RejectedUnreadable { object: String, rejection: String, source: Box<percpu_loader::LoadError> },
    #[error("object {object} is {found} but --arch {arch} (expects {expected})")]
    WrongMachine { object: String, found: String, arch: String, expected: String },
    #[error("object {object} was built for percpu model {found} ({found_name}) but {arch}/{variant} uses model {expected} ({expected_name}); use the objects in fixtures/obj/{fixture_dir}")]
    WrongModel {
        object: String,
        found: u32,
        found_name: String,
        arch: String,
        variant: String,
        expected: u32,
        expected_name: String,
        fixture_dir: String,
    },
    #[error("object {object} has {tests} test descriptor(s) in .percpu_bed.tests but no .percpu_bed.abi note: the fixture contract wants exactly one (include fixtures/include/pcpubed.h)")]
    MissingAbiNote { object: String, tests: usize },
    #[error("{object}: {reason}")]
    NotKernelImage { object: String, reason: String },
    #[error("cpu {cpu} is possible but the kernel image's __per_cpu_offset[] has only {nr_cpus} entries (NR_CPUS)")]
    TooManyCpus { cpu: u32, nr_cpus: u64 },
    #[error("cannot load {object}: {source}")]
    Load {
        object: String,
        #[source]
        source: Box<LoadError>,
    },
    #[error("{object}: Unknown symbol {symbol}: neither the percpu-bed kernel runtime nor a module loaded before it provides it (a symbol another module exports needs that module earlier on the command line, as modprobe loads dependencies first; the runtime provides the percpu, printk, WARN, preempt and bitmap functions real percpu code imports; see `percpu-bed run --help`)")]
    UnknownImport { object: String, symbol: String },
    #[error("{object} has nothing to run: no test descriptors (.percpu_bed.tests) and no init_module; pass --load-only to only load it")]
    NothingToRun { object: String },
    #[error("cannot load {object}: the reserved chunk is exhausted: {reason}")]
    ReservedExhausted { object: String, reason: String },
    #[error("percpu setup for {arch}/{variant}: {source}")]
    Setup {
        arch: String,
        variant: String,
        #[source]
        source: PercpuSetupError,
    },
    #[error("{arch}/{variant}: {what}: {source}")]
    Engine {
        arch: String,
        variant: String,
        what: String,
        #[source]
        source: EngineError,
    },
    #[error("{arch}/{variant}: cannot allocate {what}: {source}")]
    Alloc {
        arch: String,
        variant: String,
        what: String,
        #[source]
        source: AllocError,
    },
    #[error("{arch}/{variant}: layout: {reason}")]
    Layout { arch: String, variant: String, reason: String },
}

/// Run every test of `kernel` and `modules` (name, ELF bytes) in
/// `scenario`.  Planted bugs that are caught, good tests that fail and
/// objects the loader rejects for relocation overflow are results in the
/// report; bad input and harness failures are [`CheckError`]s.
pub fn run(
    scenario: &Scenario,
    kernel: (&str, &[u8]),
    modules: &[(&str, &[u8])],
) -> Result<ScenarioReport, CheckError> {
    run_observed(scenario, kernel, modules, &mut ())
}

/// [`run`], telling `observer` about every test as it finishes.
pub fn run_observed(
    scenario: &Scenario,
    kernel: (&str, &[u8]),
    modules: &[(&str, &[u8])],
    observer: &mut dyn Observer,
) -> Result<ScenarioReport, CheckError> {
    let kernel = KernelImage::Object { name: kernel.0, bytes: kernel.1 };
    run_bed(scenario, kernel, modules, &HashMap::new(), observer, |_| ()).map(|(report, ())| report)
}

/// Run real kernel modules (built from a kernel tree whose runtime ABI is
/// `abi`) on the kernel runtime: each module's init and exit on every
/// possible CPU (checked against `expects`, by object name; the default
/// expectation is init returning 0), then its test descriptors if it has
/// any.
pub fn run_kernel_modules(
    scenario: &Scenario,
    abi: &crate::runtime::RtAbi,
    modules: &[(&str, &[u8])],
    expects: &HashMap<String, ModuleExpect>,
) -> Result<ScenarioReport, CheckError> {
    run_bed(scenario, KernelImage::Runtime(abi), modules, expects, &mut (), |_| ()).map(|(report, ())| report)
}

/// [`run`], also handing back the allocator's final state, after every
/// test ran and freed its dynamic allocations, for `percpu-bed map`.
pub fn run_with_map(
    scenario: &Scenario,
    kernel: (&str, &[u8]),
    modules: &[(&str, &[u8])],
) -> Result<(ScenarioReport, ChunkMapView), CheckError> {
    run_with_map_observed(scenario, kernel, modules, &mut ())
}

/// [`run_with_map`], telling `observer` about every test as it finishes.
pub fn run_with_map_observed(
    scenario: &Scenario,
    kernel: (&str, &[u8]),
    modules: &[(&str, &[u8])],
    observer: &mut dyn Observer,
) -> Result<(ScenarioReport, ChunkMapView), CheckError> {
    let kernel = KernelImage::Object { name: kernel.0, bytes: kernel.1 };
    run_bed(scenario, kernel, modules, &HashMap::new(), observer, |bed| bed.percpu.chunk_map())
}

/// Build the bed, run every test, and let `last` look at the bed before it
/// is dropped.
fn run_bed<T>(
    scenario: &Scenario,
    kernel: KernelImage<'_>,
    modules: &[(&str, &[u8])],
    expects: &HashMap<String, ModuleExpect>,
    observer: &mut dyn Observer,
    last: impl FnOnce(&bed::Bed) -> T,
) -> Result<(ScenarioReport, T), CheckError> {
    let t0 = Instant::now();
    if scenario.cpus.is_empty() {
        return Err(CheckError::NoCpus);
    }
    if scenario.nodes == 0 {
        return Err(CheckError::NoNodes);
    }
    if !scenario.isa.variants().contains(&scenario.variant) {
        return Err(CheckError::UnknownVariant {
            arch: scenario.isa.name().to_string(),
            variant: scenario.variant.name.to_string(),
            known: scenario.isa.variants().iter().map(|v| v.name).collect::<Vec<_>>().join(", "),
        });
    }
    let mut bed = bed::Bed::build(scenario, kernel, modules)?;
    if !scenario.load_only {
        for o in bed.objects.iter().filter(|o| !o.kernel && o.rejected.is_none()) {
            let init = o.loaded.as_ref().is_some_and(|l| l.symbol("init_module").is_some());
            if o.tests.is_empty() && !init {
                return Err(CheckError::NothingToRun { object: o.name.clone() });
            }
        }
    }
    let setup_micros = t0.elapsed().as_micros() as u64;
    let t1 = Instant::now();
    let mut tests = Vec::new();
    let mut counts = Counts::default();
    let mut instructions = 0u64;
    let mut uncounted_runs = 0usize;
    let mut runs = 0usize;
    let selected = |o: &bed::BedObject| scenario.only.as_ref().is_none_or(|only| only.iter().any(|n| *n == o.name));
    observer.planned(
        bed.objects
            .iter()
            .enumerate()
            .filter(|(_, o)| selected(o))
            .map(|(oi, o)| {
                let init =
                    !o.kernel && bed.kernel.is_some() && (module_run::has_init(&bed, oi) || o.rejected.is_some());
                o.tests.len() + usize::from(init)
            })
            .sum(),
    );
    let mut interrupted = false;
    'objects: for oi in 0..bed.objects.len() {
        if !selected(&bed.objects[oi]) {
            continue;
        }
        // A real module's init (or its refusal) first, then its descriptors.
        let is_module = !bed.objects[oi].kernel;
        let rejected = bed.objects[oi].rejected.is_some();
        let init = is_module && bed.kernel.is_some() && (module_run::has_init(&bed, oi) || rejected);
        let descriptors = if init && rejected { 0 } else { bed.objects[oi].tests.len() };
        for step in (!init as usize)..=descriptors {
            let report = match step {
                0 => {
                    let default = ModuleExpect::default();
                    let expect = expects.get(&bed.objects[oi].name).unwrap_or(&default);
                    module_run::run_module(&mut bed, oi, expect)?
                }
                n => exec::run_test(&mut bed, oi, n - 1)?,
            };
            counts.add(&report);
            instructions += report.runs.iter().filter_map(|r| r.instructions).sum::<u64>();
            uncounted_runs += report.runs.iter().filter(|r| r.instructions.is_none()).count();
            runs += report.runs.len();
            let go_on = observer.finished(&report);
            tests.push(report);
            if !go_on {
                interrupted = true;
                break 'objects;
            }
        }
    }
    let objects = bed.objects.iter().map(|o| o.report()).collect();
    let run_micros = t1.elapsed().as_micros() as u64;
    let extra = last(&bed);
    let report = ScenarioReport {
        kernel: scenario.kernel.to_string(),
        arch: scenario.isa.name().to_string(),
        variant: scenario.variant.name.to_string(),
        model: scenario.variant.model,
        cpus: scenario.cpus.to_string(),
        nr_possible: scenario.cpus.len(),
        nodes: scenario.nodes,
        placement: scenario.placement,
        budget: scenario.budget,
        run_on: scenario.run_on,
        objects,
        tests,
        counts,
        setup_micros,
        run_micros,
        total_micros: t0.elapsed().as_micros() as u64,
        instructions,
        uncounted_runs,
        runs,
        interrupted,
    };
    Ok((report, extra))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_keeps_ends_and_one_cpu_per_node() {
        let possible: Vec<u32> = (0..4096).collect();
        let s = sample_cpus(&possible, 4, RunOn::Sample(8));
        assert_eq!(s.len(), 8);
        assert!(s.windows(2).all(|w| w[0] < w[1]), "ascending, no duplicates: {s:?}");
        for must in [0, 1024, 2048, 3072, 4095] {
            assert!(s.contains(&must), "{must} missing from {s:?}");
        }
    }

    #[test]
    fn sample_of_a_sparse_mask_stays_in_the_mask() {
        let possible: Vec<u32> = [0, 1, 2, 3, 8, 9, 10, 11].into();
        let s = sample_cpus(&possible, 2, RunOn::Sample(3));
        assert_eq!(s, vec![0, 8, 11]);
        assert_eq!(sample_cpus(&possible, 1, RunOn::Sample(100)), possible);
        assert_eq!(sample_cpus(&possible, 1, RunOn::All), possible);
        assert_eq!(sample_cpus(&possible, 1, RunOn::Sample(0)), vec![0]);
    }

    #[test]
    fn sample_fills_up_when_the_spread_collides() {
        let possible: Vec<u32> = (0..5).collect();
        assert_eq!(sample_cpus(&possible, 1, RunOn::Sample(4)).len(), 4);
    }
}
