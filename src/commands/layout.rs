use anyhow::{Context, Result};
use percpu_bed::output::emit_human;
use percpu_bed::scenario::{arch_and_variant, possible_cpus};

/// Print the alloc info, first-chunk layout and __per_cpu_offset[] an arch
/// adapter builds.
#[derive(clap::Args)]
pub struct Args {
    /// x86_64, arm64, sparc32, alpha, s390x or km; also ARCH/VARIANT
    /// (`arm64/el2`) or a fixture directory name (x86_64-rel, arm64-vhe,
    /// riscv64 = km).
    #[arg(long)]
    arch: String,
    /// Arch variant (x86_64: zero-based, relative; arm64: el1, el2; the
    /// others: default).
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
}

pub fn run(args: Args) -> Result<u8> {
    let cpus = possible_cpus(args.cpus, args.possible.as_deref())?;
    let (arch, variant) = arch_and_variant(&args.arch, args.variant.as_deref())?;
    let isa = percpu_arch::isa::lookup(&arch).context("resolved arch")?;
    emit_human(&percpu_arch::layout::render(isa, variant.as_deref(), &cpus, args.nodes)?)?;
    Ok(0)
}
