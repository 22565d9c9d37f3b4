use std::path::PathBuf;

use anyhow::Result;
use percpu_arch::check::{self, Scenario};
use percpu_arch::isa::ModulePlacement;
use percpu_bed::output::{emit, Format};
use percpu_bed::scenario::{kernel_and_modules, possible_cpus};

/// Load a kernel-image object and module objects, run their tests on every
/// possible CPU of an emulated arch, and check every unit's memory.
#[derive(clap::Args)]
pub struct Args {
    /// x86_64, arm64, sparc32, alpha, s390x or km.
    #[arg(long)]
    arch: String,
    /// Arch variant (x86_64: zero-based, relative; arm64: el1, el2).
    #[arg(long)]
    variant: Option<String>,
    /// Possible CPUs 0..N (default 4).
    #[arg(long)]
    cpus: Option<u32>,
    /// Possible CPUs as a cpulist, e.g. 0-3,8-11 (sparse masks allowed).
    #[arg(long)]
    possible: Option<String>,
    /// NUMA nodes the possible CPUs are spread over.
    #[arg(long, default_value_t = 1)]
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
    /// Log every percpu access, decoded, at debug level (use with -vv).
    #[arg(long)]
    trace: bool,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Also print the full diagnostic of every caught planted bug (the
    /// table shows diagnostics of failures only).
    #[arg(long)]
    explain: bool,
    /// The kernel-image object (default: the shipped one for the arch, or
    /// the given object that defines the static percpu area).
    #[arg(long)]
    kernel: Option<PathBuf>,
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
    let mut scenario = Scenario::new(&args.arch, args.variant.as_deref(), cpus)?
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

    let (kernel, modules) = kernel_and_modules(scenario.variant.fixture_dir, args.kernel, args.objects)?;
    let module_refs: Vec<(&str, &[u8])> = modules.iter().map(|m| (m.name.as_str(), m.bytes.as_slice())).collect();

    let report = check::run(&scenario, (&kernel.name, &kernel.bytes), &module_refs)?;
    match args.format {
        Format::Table => {
            emit(&report.to_string())?;
            if args.explain {
                for t in report.tests.iter().filter(|t| t.status == check::Status::Caught) {
                    if let Some(d) = &t.diagnostic {
                        emit(&format!("\n{}:{} (planted bug, caught):\n{d}\n", t.object, t.test))?;
                    }
                }
            }
        }
        Format::Json => emit(&(serde_json::to_string_pretty(&report)? + "\n"))?,
    }
    Ok(if report.unexpected().is_empty() { 0 } else { 1 })
}
