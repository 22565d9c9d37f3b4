use std::path::PathBuf;

use anyhow::{Context, Result};
use percpu_bed::matrix::{self, spec, Plan};
use percpu_bed::output::emit;
use percpu_bed::scenario::{arch_and_variant, fixtures_dir};

/// Run every arch x fixture set x configuration of a matrix file across
/// the machine's cores and report it as a table, JSON, JUnit XML or KTAP.
#[derive(clap::Args)]
#[command(after_long_help = SCHEMA)]
pub struct Args {
    /// The matrix file (default: the shipped ci/matrix.toml, built into the binary).
    #[arg(long, value_name = "FILE")]
    matrix: Option<PathBuf>,
    /// Only these arches (`x86_64`, or `arm64/el2` or `arm64-vhe` for one variant); repeatable.
    #[arg(long)]
    arch: Vec<String>,
    /// Only jobs whose id (`arch/variant:config`) contains this; repeatable.
    #[arg(long)]
    filter: Vec<String>,
    /// Run shard I of N (1-based): a deterministic split for CI runners.
    #[arg(long, value_name = "I/N", value_parser = spec::parse_shard)]
    shard: Option<(usize, usize)>,
    /// Worker threads (default: the machine's cores).
    #[arg(long, short = 'j')]
    jobs: Option<usize>,
    /// The report on stdout (or -o FILE).
    #[arg(long, value_enum, default_value = "table")]
    format: MatrixFormat,
    /// Write the report there instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// Also write JUnit XML there (for CI result pages).
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Also write the JSON summary there (see --format json-summary).
    #[arg(long, value_name = "FILE")]
    summary: Option<PathBuf>,
    /// Also write KTAP there.
    #[arg(long, value_name = "FILE")]
    ktap: Option<PathBuf>,
    /// List the selected jobs and exit without running them.
    #[arg(long)]
    list: bool,
    /// Kernel version modelled, VERSION[+OPTION...] (6.1 to 6.15; options
    /// MEM_ALLOC_PROFILING, RANDOM_KMALLOC_CACHES).
    #[arg(long, default_value = percpu_core::profile::DEFAULT_KERNEL, value_parser = percpu_bed::scenario::parse_kernel)]
    kernel: percpu_core::KernelProfile,
}

const SCHEMA: &str = "\
The matrix file (TOML).  Every [[arch]] variant x [[fixtures]] set x [[config]] is a job,
one `percpu-bed run`; reports put arch variants in rows, configs in columns, in file order.

  [[arch]]                  one per arch, in row order
  name = \"x86_64\"           x86_64, arm64, sparc32, alpha, s390x, km
  variants = [\"relative\"]   optional, default all: x86_64 zero-based, relative;
                            arm64 el1, el2; the others default

  [[fixtures]]              optional, default one set `all` of every shipped object
  name = \"dyn\"
  objects = [\"dyn*.o\"]      globs over object names (default all); kernel.o is the image
  dir = \"my-objects\"        optional: your objects, laid out like fixtures/obj
                            (<dir>/x86_64/, <dir>/arm64-vhe/, ...), relative to the
                            matrix file; a directory without kernel.o uses the shipped one

  [[config]]                one per column
  name = \"cpus-4\"
  about = \"...\"             optional, shown by --list
  cpus = 4                  possible CPUs 0..N, or
  possible = \"0-3,8-11\"     a cpulist (sparse masks allowed)
  nodes = 2                 NUMA nodes (default 1)
  modules = \"near\"          default (the arch's realistic placement), near or far
  sample_cpus = 8           run each test on N CPUs only (all units still checked)
  budget = 1000000          instructions per call
  only = [\"s390x\"]          only these arches (arch or arch/variant)
  skip = { km = \"why\" }     arches it does not apply to, with the reason reports give
  latent = { \"bug_x.o\" = \"why\" }
                            planted bugs (object or object:test globs) this config cannot
                            trigger: expected to behave here, counted as latent

The shipped matrix is ci/matrix.toml (built into the binary).";

#[derive(Copy, Clone, PartialEq, Eq, clap::ValueEnum)]
enum MatrixFormat {
    /// A row per arch variant, a column per configuration, then every
    /// unexpected result with its diagnostic.
    Table,
    /// Every field of every job, test and diagnostic (large: ~14 MB for the default matrix).
    Json,
    /// The tally, a line per job and the unexpected tests with their diagnostics (a few KB).
    JsonSummary,
    /// JUnit XML: a testsuite per job, a testcase per test (CI result pages).
    Junit,
    /// The kernel's KTAP version 1: a subtest per arch, job and test.
    Ktap,
}

/// Exit status: 0 every result as expected, 1 some result unexpected or a
/// job could not run, 2 bad input.
pub fn run(args: Args) -> Result<u8> {
    let fixtures = fixtures_dir()?;
    let (path, mut plan) = match args.matrix {
        Some(path) => {
            let plan = Plan::load(&path, &fixtures)?;
            (path, plan)
        }
        None => {
            let path = PathBuf::from(percpu_bed::shipped::MATRIX_NAME);
            (path.clone(), Plan::parse(percpu_bed::shipped::matrix_toml(), &path, &fixtures)?)
        }
    };
    let arches = args
        .arch
        .iter()
        .map(|a| {
            // Any spelling `run` takes: arm64-vhe is arm64/el2.
            let (arch, variant) = arch_and_variant(a, None)?;
            Ok(match variant {
                Some(v) => format!("{arch}/{v}"),
                None => arch,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    plan.set_kernel(args.kernel);
    plan.select(&arches, &args.filter).map_err(anyhow::Error::msg)?;
    if let Some((i, n)) = args.shard {
        plan.shard(i, n);
    }
    if plan.jobs.is_empty() {
        let mut sel: Vec<String> = args.arch.iter().map(|a| format!("--arch {a}")).collect();
        sel.extend(args.filter.iter().map(|f| format!("--filter {f}")));
        if let Some((i, n)) = args.shard {
            sel.push(format!("--shard {i}/{n}"));
        }
        anyhow::bail!("no job of {} matches {}", path.display(), sel.join(" "));
    }
    if args.list {
        let mut out = String::new();
        for j in &plan.jobs {
            out += &format!(
                "{:<36} cpus {:<10} nodes {} modules {:<4} tests on {:<9} {} objects{}\n",
                j.id,
                j.cpus,
                j.nodes,
                j.placement.to_string(),
                j.run_on.to_string(),
                j.objects.len(),
                j.skipped.as_ref().map(|s| format!("  (skipped: {s})")).unwrap_or_default()
            );
        }
        emit(&out)?;
        return Ok(0);
    }
    let threads = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    anyhow::ensure!(threads > 0, "--jobs must be at least 1");
    percpu_bed::output::interrupt::install();
    let report = matrix::run(&plan, threads, args.shard.map(|(i, n)| format!("{i}/{n}")));
    let text = match args.format {
        MatrixFormat::Table => {
            percpu_bed::output::human(&matrix::table::render_width(&report, percpu_bed::output::terminal().width))
        }
        MatrixFormat::Json => serde_json::to_string_pretty(&report)? + "\n",
        MatrixFormat::JsonSummary => serde_json::to_string_pretty(&report.summary())? + "\n",
        MatrixFormat::Junit => matrix::junit::render(&report),
        MatrixFormat::Ktap => matrix::ktap::render(&report),
    };
    match &args.output {
        Some(f) => std::fs::write(f, text).with_context(|| format!("cannot write {}", f.display()))?,
        None => emit(&text)?,
    }
    let also = [
        (&args.junit, matrix::junit::render as fn(&matrix::MatrixReport) -> String),
        (&args.ktap, matrix::ktap::render),
    ];
    for (file, render) in also {
        if let Some(f) = file {
            std::fs::write(f, render(&report)).with_context(|| format!("cannot write {}", f.display()))?;
        }
    }
    if let Some(f) = &args.summary {
        std::fs::write(f, serde_json::to_string_pretty(&report.summary())? + "\n")
            .with_context(|| format!("cannot write {}", f.display()))?;
    }
    if report.interrupted {
        let done = report.jobs.iter().filter(|j| j.job.skipped.as_deref() != Some(matrix::INTERRUPTED_REASON)).count();
        eprintln!(
            "percpu-bed: interrupted: {done} of {} job(s) finished before Ctrl-C; the report is partial",
            report.jobs.len()
        );
        return Ok(130);
    }
    Ok(if report.ok() { 0 } else { 1 })
}
