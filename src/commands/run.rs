use std::path::PathBuf;

use anyhow::{bail, Result};
use percpu_arch::check::{self, Scenario};
use percpu_arch::isa::ModulePlacement;
use percpu_bed::kmod;
use percpu_bed::output::{emit, emit_human, interrupt, Format, Progress, RunObserver};
use percpu_bed::scenario::{arch_and_variant, kernel_and_modules, possible_cpus, read_object, Object};

/// Load a kernel-image object and module objects, run their tests on every
/// possible CPU of an emulated arch, and check every unit's memory.
#[derive(clap::Args)]
pub struct Args {
    /// x86_64, arm64, sparc32, alpha, s390x or km; also ARCH/VARIANT
    /// (`arm64/el2`) or a fixture directory name (x86_64-rel, arm64-vhe,
    /// riscv64 = km).
    #[arg(long)]
    arch: String,
    /// Arch variant (x86_64: zero-based, relative; arm64: el1, el2; the
    /// others: default).  Default: the one the kernel version's code is
    /// built for (x86_64: zero-based up to 6.14, relative from 6.15).
    #[arg(long)]
    variant: Option<String>,
    /// Kernel version modelled, VERSION[+OPTION...] (6.1 to 6.15; options
    /// MEM_ALLOC_PROFILING, RANDOM_KMALLOC_CACHES).
    #[arg(long, default_value = percpu_core::profile::DEFAULT_KERNEL, value_parser = percpu_bed::scenario::parse_kernel)]
    kernel: percpu_core::KernelProfile,
    /// Possible CPUs 0..N (default 4).
    #[arg(long)]
    cpus: Option<u32>,
    /// Possible CPUs as a cpulist, e.g. 0-3,8-11 (sparse masks allowed).
    #[arg(long)]
    possible: Option<String>,
    /// NUMA nodes the possible CPUs are spread over.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    nodes: u32,
    /// Where modules are placed relative to the percpu area (default: the
    /// arch's realistic placement: far for alpha and s390x, near elsewhere).
    #[arg(long, value_enum)]
    modules: Option<Placement>,
    /// Run each test on at most N of the possible CPUs (the first and last,
    /// each node's first, then evenly spread) instead of all; every unit is
    /// still mapped and checked.  For thousands of CPUs.
    #[arg(long, value_name = "N")]
    sample_cpus: Option<u32>,
    /// Instructions per test call before it counts as runaway.
    #[arg(long, default_value_t = check::DEFAULT_BUDGET)]
    budget: u64,
    /// Log every data access, decoded, at debug level (use with -vv): percpu copies, link addresses, lowcore, unmapped memory; the stack at trace level (-vvv)
    #[arg(long)]
    trace: bool,
    /// table: a line per test and the diagnostics of failures; json: every
    /// field of every run and diagnostic.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Also print the full diagnostic of every caught planted bug (the
    /// table shows diagnostics of failures only).
    #[arg(long)]
    explain: bool,
    /// The kernel-image object (default: the shipped one for the arch, or
    /// the given object that defines the static percpu area).  Not used
    /// with real kernel modules, which run on percpu-bed's kernel runtime.
    #[arg(long, value_name = "OBJECT")]
    kernel_image: Option<PathBuf>,
    /// Real kernel modules: the `percpu-bed kbuild` output directory (or
    /// its percpu-bed-kbuild.json) with the runtime ABI of the tree they
    /// were built from (default: the manifest beside the first module).
    #[arg(long, value_name = "DIR")]
    kbuild: Option<PathBuf>,
    /// Only load the objects (relocate, place percpu): an object with
    /// nothing to run is then not an error.
    #[arg(long)]
    load_only: bool,
    /// Objects to load and test (default: every shipped fixture of the arch).
    objects: Vec<PathBuf>,
}

#[derive(Copy, Clone, clap::ValueEnum)]
pub(crate) enum Placement {
    Near,
    Far,
}

/// Exit status: 0 every result as expected, 1 a check failed (a good test
/// misbehaved or a planted bug went uncaught), 2 bad input.
pub fn run(args: Args) -> Result<u8> {
    let cpus = possible_cpus(args.cpus, args.possible.as_deref())?;
    let (arch, variant) = arch_and_variant(&args.arch, args.variant.as_deref())?;
    let mut scenario = Scenario::for_kernel(&arch, variant.as_deref(), cpus, args.kernel.clone())?
        .nodes(args.nodes)
        .budget(args.budget)
        .trace(args.trace);
    if let Some(n) = args.sample_cpus {
        anyhow::ensure!(n > 0, "--sample-cpus must be at least 1");
        scenario = scenario.run_on(check::RunOn::Sample(n));
    }
    if let Some(p) = args.modules {
        scenario = scenario.placement(match p {
            Placement::Near => ModulePlacement::Near,
            Placement::Far => ModulePlacement::Far,
        });
        if scenario.placement != scenario.isa.default_placement() {
            // A what-if layout: results are faithful to it, but it is not
            // the arch's usual one, so say so before the first FAIL confuses.
            tracing::warn!(
                "{} normally places modules {} the percpu area; --modules {} departs from that layout \
                 (good tests may fail with truncated relocations, planted bugs may hide)",
                scenario.isa.name(),
                if scenario.isa.default_placement() == ModulePlacement::Near { "near" } else { "far from" },
                scenario.placement
            );
        }
    }

    scenario = scenario.load_only(args.load_only);

    // Real kernel modules (built by a tree's Kbuild) run on the kernel runtime.
    let objects: Vec<(PathBuf, Object)> =
        args.objects.iter().map(|p| read_object(p).map(|o| (p.clone(), o))).collect::<Result<_>>()?;
    let real = objects.iter().filter(|(_, o)| kmod::is_kernel_module(&o.bytes)).count();
    let report = if real > 0 {
        if real != objects.len() {
            let fixtures: Vec<&str> = objects
                .iter()
                .filter(|(_, o)| !kmod::is_kernel_module(&o.bytes))
                .map(|(_, o)| o.name.as_str())
                .collect();
            bail!(
                "real kernel modules (built by a kernel tree's Kbuild) and percpu-bed fixtures cannot run together: \
                 the fixtures ({}) need a fixture kernel image, the modules percpu-bed's kernel runtime",
                fixtures.join(", ")
            );
        }
        if args.kernel_image.is_some() {
            bail!("--kernel-image is for fixtures: real kernel modules run on percpu-bed's kernel runtime");
        }
        let paths: Vec<PathBuf> = objects.iter().map(|(p, _)| p.clone()).collect();
        let rt = kmod::runtime_abi(args.kbuild.as_deref(), &paths)?;
        tracing::info!(
            "runtime ABI of Linux {} from {}: {}",
            rt.abi.kernel_version(),
            rt.from.display(),
            kmod::describe_abi(&rt.abi)
        );
        scenario = real_module_variant(scenario, args.variant.as_deref(), &rt.abi)?;
        let pairs: Vec<(PathBuf, &Object)> = objects.iter().map(|(p, o)| (p.clone(), o)).collect();
        let expects = kmod::expectations(&pairs, &rt.abi)?;
        let module_refs: Vec<(&str, &[u8])> =
            objects.iter().map(|(_, m)| (m.name.as_str(), m.bytes.as_slice())).collect();
        check::run_kernel_modules(&scenario, &rt.abi, &module_refs, &expects)?
    } else {
        let (kernel, modules) = kernel_and_modules(scenario.variant.fixture_dir, args.kernel_image, args.objects)?;
        let module_refs: Vec<(&str, &[u8])> = modules.iter().map(|m| (m.name.as_str(), m.bytes.as_slice())).collect();
        interrupt::install();
        let progress = Progress::new(Some(0));
        progress.message(&format!("loading {} object(s) on {} cpus", module_refs.len() + 1, scenario.cpus.len()));
        let report = check::run_observed(
            &scenario,
            (&kernel.name, &kernel.bytes),
            &module_refs,
            &mut RunObserver { progress: &progress },
        );
        progress.finish();
        report?
    };
    match args.format {
        Format::Table => {
            emit_human(&report.to_string())?;
            if args.explain {
                for t in report.tests.iter().filter(|t| t.status == check::Status::Caught) {
                    if let Some(d) = &t.diagnostic {
                        emit_human(&format!("\n{}:{} (planted bug, caught):\n{d}\n", t.object, t.test))?;
                    }
                }
            }
        }
        Format::Json => emit(&(serde_json::to_string_pretty(&report)? + "\n"))?,
    }
    if report.interrupted {
        eprintln!(
            "percpu-bed: interrupted: {} test(s) ran before Ctrl-C; the results above are partial",
            report.tests.len()
        );
        return Ok(130);
    }
    Ok(if report.unexpected().is_empty() { 0 } else { 1 })
}

/// The variant real modules of a kernel version need: x86_64 code is
/// zero-based until 6.15 and relative from it; arm64 modules read
/// TPIDR_EL1 until the kernel patches their alternatives, which percpu-bed
/// does not apply, so they run at EL1.
fn real_module_variant(scenario: Scenario, asked: Option<&str>, abi: &percpu_arch::runtime::RtAbi) -> Result<Scenario> {
    let mut scenario = scenario;
    scenario.kernel = kmod::profile_for(abi, &scenario.kernel);
    let Some(want) = kmod::variant_for(scenario.isa.name(), abi) else { return Ok(scenario) };
    if let Some(a) = asked {
        if a != want {
            bail!(
                "real {} modules of Linux {} need --variant {want} (their code was built for it), not --variant {a}",
                scenario.isa.name(),
                abi.kernel_version()
            );
        }
    }
    let mut s = scenario;
    s.variant = *s.isa.variant(want).expect("known variant");
    Ok(s)
}
