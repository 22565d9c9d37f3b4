use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use percpu_arch::check::Scenario;
use percpu_arch::isa::ModulePlacement;
use percpu_bed::bench::{Phase, Workload};
use percpu_bed::map::{self, DEFAULT_MAX_UNITS};
use percpu_bed::output::{emit, Progress, RunObserver};
use percpu_bed::scenario::{arch_and_variant, kernel_and_modules, possible_cpus};

use super::run::Placement;

/// Draw a chunk map as SVG (chunks x units x pages: allocated, free,
/// unpopulated, reserved, static) after a run or a benchmark workload.
#[derive(clap::Args)]
#[command(after_help = workloads_help())]
pub struct Args {
    /// Run the fixtures on this arch (x86_64, arm64, sparc32, alpha, s390x
    /// or km; also ARCH/VARIANT or a fixture directory name, as in `run`)
    /// like `run` and draw the allocator's final state.
    #[arg(long, required_unless_present = "workload", conflicts_with = "workload")]
    arch: Option<String>,
    /// Arch variant (x86_64: zero-based, relative; arm64: el1, el2).
    #[arg(long, conflicts_with = "workload")]
    variant: Option<String>,
    /// Possible CPUs 0..N (default 4).
    #[arg(long, conflicts_with = "workload")]
    cpus: Option<u32>,
    /// Possible CPUs as a cpulist, e.g. 0-3,8-11 (sparse masks allowed).
    #[arg(long, conflicts_with = "workload")]
    possible: Option<String>,
    /// NUMA nodes the possible CPUs are spread over.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "workload")]
    nodes: u32,
    /// Where modules are placed relative to the percpu area (default: the
    /// arch's realistic placement).
    #[arg(long, value_enum, conflicts_with = "workload")]
    modules: Option<Placement>,
    /// The kernel-image object (default: the shipped one for the arch).
    #[arg(long, value_name = "OBJECT", conflicts_with = "workload")]
    kernel_image: Option<PathBuf>,
    /// Kernel version modelled, VERSION[+OPTION...] (6.1 to 6.15).
    #[arg(long, default_value = percpu_core::profile::DEFAULT_KERNEL, value_parser = percpu_bed::scenario::parse_kernel, conflicts_with = "workload")]
    kernel: percpu_core::KernelProfile,
    /// Objects to load and test (default: every shipped fixture of the arch).
    #[arg(conflicts_with = "workload")]
    objects: Vec<PathBuf>,
    /// Draw what a benchmark workload leaves in the bitmap allocator
    /// instead (names below).
    #[arg(long, value_name = "NAME")]
    workload: Option<String>,
    /// Objects the workload allocates.
    #[arg(long = "objects", id = "nr_objects", value_name = "N", default_value_t = 4096, conflicts_with = "arch")]
    nr_objects: usize,
    /// Where to stop the workload: at its end (as `bench` runs it), or
    /// after its allocations, before any free.
    #[arg(long, value_enum, default_value = "end", conflicts_with = "arch")]
    phase: PhaseArg,
    /// Units drawn per chunk; the rest are counted under each chunk.
    #[arg(long, default_value_t = DEFAULT_MAX_UNITS)]
    max_units: usize,
    /// svg: the picture; json: the snapshot it is drawn from (chunks,
    /// units, pages, allocations).
    #[arg(long, value_enum, default_value = "svg")]
    format: MapFormat,
    /// Write to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Copy, Clone, clap::ValueEnum)]
enum PhaseArg {
    End,
    Allocated,
}

#[derive(Copy, Clone, clap::ValueEnum)]
enum MapFormat {
    Svg,
    Json,
}

fn workload_names() -> String {
    Workload::all().iter().map(Workload::name).collect::<Vec<_>>().join(", ")
}

fn workloads_help() -> String {
    format!(
        "Workloads (those of `percpu-bed bench`, on its geometry: x86_64-like, 4 CPUs, 4 KiB pages, 2 MiB atoms):\n  {}",
        workload_names()
    )
}

/// Exit status: 0 drawn, 1 drawn but a check of the run failed, 2 bad input.
pub fn run(args: Args) -> Result<u8> {
    anyhow::ensure!(args.max_units > 0, "--max-units must be at least 1");
    let (view, mut opts, code) = match (&args.workload, &args.arch) {
        (Some(name), _) => {
            let Some(w) = Workload::parse(name) else {
                bail!("unknown workload `{name}` (known: {})", workload_names());
            };
            anyhow::ensure!(args.nr_objects > 0, "--objects must be at least 1");
            let phase = match args.phase {
                PhaseArg::End => Phase::End,
                PhaseArg::Allocated => Phase::Allocated,
            };
            let (view, opts) = map::workload_map(w, args.nr_objects, phase);
            (view, opts, 0)
        }
        (None, Some(arch)) => {
            let cpus = possible_cpus(args.cpus, args.possible.as_deref())?;
            let (arch, variant) = arch_and_variant(arch, args.variant.as_deref())?;
            let mut scenario =
                Scenario::for_kernel(&arch, variant.as_deref(), cpus, args.kernel.clone())?.nodes(args.nodes);
            if let Some(p) = args.modules {
                scenario = scenario.placement(match p {
                    Placement::Near => ModulePlacement::Near,
                    Placement::Far => ModulePlacement::Far,
                });
            }
            let (kernel, modules) = kernel_and_modules(scenario.variant.fixture_dir, args.kernel_image, args.objects)?;
            let progress = Progress::new(Some(0));
            let drawn = map::run_map_observed(&scenario, &kernel, &modules, &mut RunObserver { progress: &progress });
            progress.finish();
            let (view, opts, report) = drawn?;
            let unexpected = report.unexpected().len();
            if unexpected > 0 {
                eprintln!(
                    "percpu-bed: {unexpected} test(s) did not behave as expected (see `percpu-bed run`); drawn anyway"
                );
            }
            (view, opts, u8::from(unexpected > 0))
        }
        (None, None) => bail!("give --arch ARCH (draw after a run) or --workload NAME"),
    };
    opts.max_units = args.max_units;
    let text = match args.format {
        MapFormat::Svg => map::render(&view, &opts),
        MapFormat::Json => serde_json::to_string_pretty(&view)? + "\n",
    };
    match &args.output {
        Some(path) => std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?,
        None => emit(&text)?,
    }
    Ok(code)
}
