use std::time::Duration;

use anyhow::Result;
use percpu_bed::bench::{self, BenchOptions};
use percpu_bed::output::{emit, Format, Progress};

/// Reproduce seed 002's allocator evaluation (bitmap vs area map vs bump).
#[derive(clap::Args)]
pub struct Args {
    /// Scaled-down run: 2^16 objects, 2 s budget per run (under 30 s in all).
    #[arg(long)]
    quick: bool,
    /// Objects per workload (default 2^20, or 2^16 with --quick).
    #[arg(long)]
    objects: Option<usize>,
    /// Time budget per allocator run, in seconds; longer runs are stopped
    /// and reported as exceeding it.
    #[arg(long)]
    budget: Option<f64>,
    /// table: the evaluation's tables; json: every row, for programs.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

pub fn run(args: Args) -> Result<()> {
    let mut opts = if args.quick { BenchOptions::quick() } else { BenchOptions::full() };
    if let Some(n) = args.objects {
        anyhow::ensure!(n > 0, "--objects must be at least 1");
        opts.objects = n;
    }
    if let Some(b) = args.budget {
        anyhow::ensure!(b > 0.0 && b.is_finite(), "--budget must be a positive number of seconds");
        opts.budget = Duration::from_secs_f64(b);
    }
    let runs = (opts.sizes.len() * 4 + 2) * bench::ALLOCATORS.len() + 1;
    let progress = Progress::new(Some(runs as u64));
    let report = bench::run(&opts, |what| progress.step(what));
    progress.finish();
    match args.format {
        Format::Table => emit(&report.to_string())?,
        Format::Json => emit(&(serde_json::to_string_pretty(&report)? + "\n"))?,
    }
    Ok(())
}
