use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use percpu_bed::bench::{self, BenchOptions};
use percpu_bed::output::{emit, Format, Progress};

/// Reproduce seed 002's allocator evaluation (bitmap vs the 2014 and 2009 area maps vs bump).
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
    /// Instead of the allocator workloads: time lib/percpu_test.c on every
    /// target of this `percpu-bed kbuild -o` directory, on the kernel runtime.
    #[arg(long, value_name = "DIR")]
    kbuild: Option<PathBuf>,
    /// With --kbuild: every module of each target, not only percpu_test.ko.
    #[arg(long, requires = "kbuild")]
    all_modules: bool,
    /// With --kbuild: possible CPUs of each run.
    #[arg(long, default_value_t = 4, requires = "kbuild")]
    kernel_cpus: u32,
    /// With --kbuild: also time a QEMU TCG system boot of a real kernel
    /// image to its `percpu:` line (x86_64 or arm64; repeatable), the
    /// anchor without percpu-bed: `--boot x86_64=/boot/vmlinuz-6.1.0-28-amd64`.
    #[arg(long, value_name = "ARCH=IMAGE", requires = "kbuild")]
    boot: Vec<String>,
    /// Seconds a boot may take to print its `percpu:` line.
    #[arg(long, default_value_t = 180, requires = "kbuild")]
    boot_timeout: u64,
    /// Kernel version modelled, VERSION[+OPTION...] (6.1 to 6.15; options
    /// MEM_ALLOC_PROFILING, RANDOM_KMALLOC_CACHES).
    #[arg(long, default_value = percpu_core::profile::DEFAULT_KERNEL, value_parser = percpu_bed::scenario::parse_kernel)]
    kernel: percpu_core::KernelProfile,
    /// table: the evaluation's tables; json: every row, for programs.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

pub fn run(args: Args) -> Result<()> {
    if let Some(dir) = &args.kbuild {
        return kernel(&args, dir);
    }
    let mut opts = if args.quick { BenchOptions::quick() } else { BenchOptions::full() };
    if let Some(n) = args.objects {
        anyhow::ensure!(n > 0, "--objects must be at least 1");
        opts.objects = n;
    }
    if let Some(b) = args.budget {
        anyhow::ensure!(b > 0.0 && b.is_finite(), "--budget must be a positive number of seconds");
        opts.budget = Duration::from_secs_f64(b);
    }
    opts.kernel = args.kernel;
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

fn kernel(args: &Args, dir: &Path) -> Result<()> {
    anyhow::ensure!(args.kernel_cpus > 0, "--kernel-cpus must be at least 1");
    let boots: Vec<(String, PathBuf)> = args
        .boot
        .iter()
        .map(|b| {
            let (arch, image) = b.split_once('=').with_context(|| format!("--boot {b}: expected ARCH=IMAGE"))?;
            Ok((arch.to_string(), PathBuf::from(image)))
        })
        .collect::<Result<_>>()?;
    let modules = bench::kernel::run_modules(dir, args.kernel_cpus, args.all_modules)?;
    let progress = Progress::new(Some(boots.len() as u64));
    let boots = boots
        .iter()
        .map(|(arch, image)| {
            progress.step(&format!("booting {arch} under QEMU TCG"));
            bench::kernel::boot(arch, image, args.kernel_cpus, Duration::from_secs(args.boot_timeout))
        })
        .collect();
    progress.finish();
    let report = bench::kernel::KernelBench { modules, boots };
    match args.format {
        Format::Table => emit(&report.to_string())?,
        Format::Json => emit(&(serde_json::to_string_pretty(&report)? + "\n"))?,
    }
    let failed = report.modules.iter().any(|m| m.error.is_some()) || report.boots.iter().any(|b| b.error.is_some());
    anyhow::ensure!(!failed, "some measurements could not be made (see the table)");
    Ok(())
}
