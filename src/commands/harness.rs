//! `percpu-bed harness`: the kernel tree's own mm/percpu.c compiled in
//! userspace and driven beside the model, at chunk level and (`alloc`) as
//! the whole allocator over percpu-km (library: `percpu_bed::harness`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use percpu_bed::bench::{self, BenchOptions, Pattern};
use percpu_bed::harness::{self, diff, Driver};
use percpu_bed::kbuild::{tree, Cache, Progress};
use percpu_bed::output::emit;

/// Compile a kernel tree's own mm/percpu.c allocator in userspace and run
/// it beside the model.
///
/// The functions (pcpu_alloc_area, pcpu_free_area, pcpu_find_block_fit,
/// the block and chunk hint upkeep, pcpu_alloc_chunk, ...; for `alloc` also
/// pcpu_alloc, free_percpu, the balance work, pcpu_setup_first_chunk and
/// mm/percpu-km.c) are extracted by name from the tree at run time,
/// compiled with gcc inside a small stub environment and cached by a hash
/// of the inputs: edit the tree and run the command again.  The default
/// tree is Debian's linux-source-6.1 (the one `percpu-bed kbuild`
/// downloads into the cache).
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Args, Clone)]
struct TreeArgs {
    /// A kernel source tree (only mm/percpu.c, mm/percpu-internal.h and
    /// include/linux/percpu.h are read); default Debian's linux-source-6.1.
    #[arg(long, value_name = "DIR")]
    tree: Option<PathBuf>,
    /// The cache directory (default $PERCPU_BED_CACHE, else
    /// $XDG_CACHE_HOME/percpu-bed, else ~/.cache/percpu-bed).
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
}

#[derive(clap::Args, Clone)]
struct OpsArgs {
    /// Random operations to run.
    #[arg(long, default_value_t = 200_000)]
    ops: usize,
    /// Seed of the operation sequence.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Pages of the chunk.
    #[arg(long, default_value_t = 8)]
    pages: usize,
}

#[derive(clap::Subcommand)]
enum What {
    /// Build (or find in the cache) the harness and print where it is.
    Build(TreeArgs),
    /// Run random operations on the real code and the model, compare offsets, hints and counters after
    /// every one, and print the first divergence minimised.  Exit 1 on a divergence.
    Diff {
        #[command(flatten)]
        tree: TreeArgs,
        #[command(flatten)]
        ops: OpsArgs,
        /// Compare with the model's hint-free fix switched on (ChunkMap::set_free_path_chunk_hint_fix).
        #[arg(long)]
        fix: bool,
    },
    /// Run random operations on the real code and apply the model's verify() to its state.  Exit 1 on a
    /// violation (printed with a minimised sequence).
    Verify {
        #[command(flatten)]
        tree: TreeArgs,
        #[command(flatten)]
        ops: OpsArgs,
        /// Check after every N operations.
        #[arg(long, default_value_t = 1)]
        every: usize,
    },
    /// The whole allocator: the tree's pcpu_alloc, free_percpu, balance work and pcpu_setup_first_chunk over
    /// its mm/percpu-km.c, beside the model's Percpu with the km backend and the same alloc info.  Random
    /// operations; after every one the result (chunk and offset), every chunk's counters and chunk_md, the
    /// slot lists and the global counters are compared, and the real state is checked against the
    /// allocator's invariants (and every --every ops, each chunk's maps against verify()).  The first
    /// divergence is printed minimised.  Exit 1 on a divergence.
    Alloc {
        #[command(flatten)]
        tree: TreeArgs,
        /// Random operations to run.
        #[arg(long, default_value_t = 100_000)]
        ops: usize,
        /// Seed of the operation sequence.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Possible CPUs (units of every chunk).
        #[arg(long, default_value_t = 4)]
        cpus: u32,
        /// Static percpu size of the imagined kernel image (bytes, 0x.., K).
        #[arg(long, default_value = "0x3000", value_parser = size_arg)]
        static_size: usize,
        /// Reserved (module) region size; default the kernel's PERCPU_MODULE_RESERVE, 0 for none.
        #[arg(long, value_parser = size_arg)]
        reserved: Option<usize>,
        /// The kernel the tree is, for the model's profile (PERCPU_DYNAMIC_EARLY_SIZE, reserves).
        #[arg(long, default_value = "6.1")]
        kernel: String,
        /// Instead of the random sequence, one of seed 002's objects workloads as bench names them
        /// (in-order-256, alternating-1024, second-half-filled-4, in-order-4-align-8, ...).
        #[arg(long, value_name = "NAME")]
        workload: Option<String>,
        /// Objects of --workload.
        #[arg(long, default_value_t = 1 << 14)]
        objects: usize,
        /// Verify every real chunk's maps and hints with the model's verify() every N operations (0: never).
        #[arg(long, default_value_t = 1000)]
        every: usize,
    },
    /// Show 6.1's free-path chunk-hint finding on the real code (docs/hint-free.md), and measure the
    /// one-line fix on a patched copy of the tree.
    HintFree {
        #[command(flatten)]
        tree: TreeArgs,
        /// Operations of the differentials run on the fixed and unfixed code.
        #[arg(long, default_value_t = 100_000)]
        ops: usize,
        /// Objects of the random-churn workload.
        #[arg(long, default_value_t = 1 << 16)]
        objects: usize,
    },
    /// Seed 002's workloads on the real code beside the model and the bump allocator.
    Bench {
        #[command(flatten)]
        tree: TreeArgs,
        /// 2^16 objects instead of 2^20.
        #[arg(long)]
        quick: bool,
        /// Objects per workload (overrides --quick).
        #[arg(long)]
        objects: Option<usize>,
    },
}

fn cache(t: &TreeArgs) -> Result<Cache> {
    Ok(match &t.cache {
        Some(d) => Cache::at(d),
        None => Cache::from_env()?,
    })
}

/// The tree's directory and a description of it.
fn tree_dir(t: &TreeArgs, cache: &Cache) -> Result<(PathBuf, String)> {
    match &t.tree {
        Some(d) => {
            let abs = d.canonicalize().with_context(|| format!("--tree {}", d.display()))?;
            Ok((abs.clone(), format!("tree {}", abs.display())))
        }
        None => {
            let t = tree::debian_source(cache, false, &Progress::new(false))?;
            Ok((t.path.clone(), t.describe()))
        }
    }
}

fn start(dir: &Path, cache: &Cache, what: &str) -> Result<(Driver, harness::Built)> {
    let built = harness::build(dir, cache).with_context(|| format!("building the harness from {what}"))?;
    if built.compiled {
        eprintln!("harness: compiled {} in {:.2} s", built.source.display(), built.compile_seconds);
    }
    Ok((Driver::start(&built.binary)?, built))
}

fn print_ops(ops: &[impl std::fmt::Display]) -> String {
    let mut s = String::new();
    harness::minimise::write_ops(&mut s, ops).expect("formatting into a String cannot fail");
    s
}

pub fn run(args: Args) -> Result<u8> {
    match args.what {
        What::Build(t) => {
            let cache = cache(&t)?;
            let (dir, what) = tree_dir(&t, &cache)?;
            let mut s = String::new();
            for (mode, build) in [
                ("chunk level", harness::build as fn(&Path, &Cache) -> Result<harness::Built, harness::HarnessError>),
                ("whole allocator, percpu-km", harness::alloc::source::build),
            ] {
                let t0 = Instant::now();
                let built = build(&dir, &cache).with_context(|| format!("building the {mode} harness from {what}"))?;
                let how = if built.compiled {
                    format!("compiled in {:.2} s", built.compile_seconds)
                } else {
                    format!("cached ({:.2} s to extract and hash)", t0.elapsed().as_secs_f64())
                };
                s += &format!(
                    "{} ({mode})\n  from {what}, {how}\n  source {}\n",
                    built.binary.display(),
                    built.source.display()
                );
            }
            emit(&s)?;
            Ok(0)
        }
        What::Diff { tree, ops, fix } => {
            let cache = cache(&tree)?;
            let (dir, what) = tree_dir(&tree, &cache)?;
            let (mut d, _) = start(&dir, &cache, &what)?;
            let seq = diff::random_ops(ops.seed, ops.ops, ops.pages);
            let t0 = Instant::now();
            let out = diff::diff(&mut d, ops.pages, fix, &seq)?;
            let model = if fix { "model with the hint-free fix" } else { "model" };
            let mut s = format!("real mm/percpu.c ({what}) vs {model}: {}-page chunk, seed {}\n", ops.pages, ops.seed);
            let code = match &out.divergence {
                None => {
                    s += &format!("{} ops, 0 divergences ({:.1} s)\n", out.ops_run, t0.elapsed().as_secs_f64());
                    0
                }
                Some(m) => {
                    s += &m.to_string();
                    1
                }
            };
            emit(&s)?;
            Ok(code)
        }
        What::Verify { tree, ops, every } => {
            let cache = cache(&tree)?;
            let (dir, what) = tree_dir(&tree, &cache)?;
            let (mut d, _) = start(&dir, &cache, &what)?;
            let seq = diff::random_ops(ops.seed, ops.ops, ops.pages);
            let t0 = Instant::now();
            let out = diff::verify(&mut d, ops.pages, &seq, every)?;
            let mut s = format!("verify() on real mm/percpu.c ({what}): {}-page chunk, seed {}\n", ops.pages, ops.seed);
            let code = match out {
                None => {
                    s += &format!(
                        "{} ops, state checked every {every}: no violation ({:.1} s)\n",
                        seq.len(),
                        t0.elapsed().as_secs_f64()
                    );
                    0
                }
                Some(f) => {
                    s += &format!("VIOLATION after op {} ({}): {}\n", f.index + 1, f.op, f.error);
                    s += &format!("minimised to {} ops:\n{}", f.ops.len(), print_ops(&f.ops));
                    1
                }
            };
            emit(&s)?;
            Ok(code)
        }
        What::Alloc { tree, ops, seed, cpus, static_size, reserved, kernel, workload, objects, every } => {
            let kernel =
                percpu_core::profile::KernelProfile::parse(&kernel).with_context(|| format!("--kernel {kernel}"))?;
            let cfg = harness::alloc::model::ModelConfig { cpus, static_size, reserved_size: reserved, kernel };
            let seq = match &workload {
                Some(name) => harness::alloc::workload_ops(name, objects).map_err(anyhow::Error::msg)?,
                None => harness::alloc::random_ops(seed, ops),
            };
            let what = match &workload {
                Some(name) => format!("workload {name}, {objects} objects"),
                None => format!("seed {seed}"),
            };
            alloc_cmd(&tree, &seq, &what, &cfg, every)
        }
        What::HintFree { tree, ops, objects } => hint_free(&tree, ops, objects),
        What::Bench { tree, quick, objects } => bench_cmd(&tree, quick, objects),
    }
}

fn describe_steps(s: &diff::HintFreeSteps) -> String {
    format!(
        "block 1 contig_hint {} at {}, chunk contig_hint {} at {}; 1 KiB request: {}",
        s.block1_after_free.contig_hint,
        s.block1_after_free.contig_hint_start,
        s.chunk_after_free.contig_hint,
        s.chunk_after_free.contig_hint_start,
        match s.last {
            Some(off) => format!("offset {off}"),
            None => "REFUSED".to_string(),
        }
    )
}

/// Exit 0 when the real code shows the finding, the fixed copy does not,
/// and the differentials come out as the write-up says.
fn hint_free(t: &TreeArgs, ops: usize, objects: usize) -> Result<u8> {
    let cache = cache(t)?;
    let (dir, what) = tree_dir(t, &cache)?;
    let fixed_dir = harness::fixed_copy(&dir, &cache)?;
    let (mut real, _) = start(&dir, &cache, &what)?;
    let (mut fixed, _) = start(&fixed_dir, &cache, "the fixed copy")?;
    let mut s = format!("hint-free on {what}\nfixed copy: {}\n\n", fixed_dir.display());
    s += "sequence (4-page chunk, 4-byte units):\n";
    s += &print_ops(&diff::hint_free_ops());
    let r = diff::hint_free_real(&mut real)?;
    let f = diff::hint_free_real(&mut fixed)?;
    s += &format!("\nafter the free (op 9), all offsets in 4-byte bits:\n  real:          {}\n", describe_steps(&r));
    s += &format!("  real, fixed:   {}\n", describe_steps(&f));
    s += &format!("  model:         {}\n", describe_steps(&diff::hint_free_model(false)));
    s += &format!("  model, fix on: {}\n", describe_steps(&diff::hint_free_model(true)));

    let seq = diff::random_ops(1, ops, 8);
    s += &format!("\ndifferential, {ops} random ops on an 8-page chunk:\n");
    let mut verdicts = Vec::new();
    // both against the fixed model: the unpatched code is the seeded divergence
    for (name, d) in [("real fixed vs model with fix", &mut fixed), ("real unpatched vs model with fix", &mut real)] {
        let out = diff::diff(d, 8, true, &seq)?;
        match &out.divergence {
            None => s += &format!("  {name}: {} ops, 0 divergences\n", out.ops_run),
            Some(m) => {
                s += &format!(
                    "  {name}: diverged after op {}; minimised to {} ops, {}:\n{}",
                    m.first.index + 1,
                    m.ops.len(),
                    m.divergence,
                    print_ops(&m.ops).replace("\n  ", "\n      ").replacen("  ", "      ", 1)
                );
            }
        }
        verdicts.push(out.divergence.is_some());
    }

    s += &format!("\nrandom-churn ({objects} objects of 4..1024 B, then {objects} times one freed at random and a new one allocated):\n");
    let mut refused = Vec::new();
    for (name, d) in [("unpatched", &mut real), ("fixed", &mut fixed)] {
        let b = harness::real_bench(d, 4, 4, objects, "random-churn", 44)?;
        s += &format!(
            "  {name:<9} second phase: {} refusals by a hint of a request the chunk could hold, {} new chunks made with room elsewhere, {} chunks at the end\n",
            b.refused, b.missed, b.chunks
        );
        refused.push(b.refused);
    }
    let shown = r.last.is_none() && f.last.is_some() && !verdicts[0] && verdicts[1];
    s += &format!(
        "\n{}\n",
        if shown {
            "as documented: the real code refuses the request, the fixed copy serves it"
        } else {
            "NOT as documented in docs/hint-free.md"
        }
    );
    emit(&s)?;
    Ok(if shown { 0 } else { 1 })
}

fn bench_cmd(t: &TreeArgs, quick: bool, objects: Option<usize>) -> Result<u8> {
    let cache = cache(t)?;
    let (dir, what) = tree_dir(t, &cache)?;
    let (mut d, _) = start(&dir, &cache, &what)?;
    let mut opts = if quick { BenchOptions::quick() } else { BenchOptions::full() };
    if let Some(n) = objects {
        opts.objects = n;
    }
    opts.budget = Duration::from_secs(600);
    let unit_pages = percpu_core::percpu::Percpu::new(bench::bench_config())?.unit_size() / 4096;
    let mut s = format!(
        "seed 002 workloads, {} objects, {unit_pages}-page chunks: ns per operation (alloc / free)\n",
        opts.objects
    );
    s += &format!("{:<20} {:>5}  {:>22}  {:>22}  {:>22}\n", "workload", "size", "real mm/percpu.c", "model", "bump");
    let patterns = [Pattern::InOrder, Pattern::Alternating, Pattern::Reverse, Pattern::SecondHalfFilled];
    let mut cases: Vec<(usize, usize, Pattern)> =
        opts.sizes.iter().flat_map(|&sz| patterns.iter().map(move |&p| (sz, 4, p))).collect();
    cases.push((4, 8, Pattern::InOrder));
    for (size, align, pattern) in cases {
        let r = harness::real_bench(&mut d, size, align, opts.objects, pattern.name(), unit_pages)?;
        let m = bench::run_one("bitmap", size, align, pattern, &opts);
        let b = bench::run_one("bump", size, align, pattern, &opts);
        let cell = |a: f64, f: f64, chunks: usize| format!("{a:>7.0} / {f:>5.0} ({chunks:>3}c)");
        let name = if align == 4 { pattern.name().to_string() } else { format!("{}-align-{align}", pattern.name()) };
        s += &format!(
            "{name:<20} {size:>5}  {:>22}  {:>22}  {:>22}\n",
            cell(r.alloc_ns_per_op, r.free_ns_per_op, r.chunks),
            cell(m.alloc_ns_per_op, m.free_ns_per_op, m.chunks),
            cell(b.alloc_ns_per_op, b.free_ns_per_op, b.chunks)
        );
    }
    s += "c: chunks at the end of the allocations; real: the tree's functions under pcpu_alloc's slot search (driver.c)\n";
    emit(&s)?;
    Ok(0)
}

fn size_arg(s: &str) -> Result<usize> {
    Ok(usize::try_from(super::layout::parse_size(s)?)?)
}

fn alloc_cmd(
    t: &TreeArgs,
    seq: &[harness::alloc::Op],
    sequence: &str,
    cfg: &harness::alloc::model::ModelConfig,
    every: usize,
) -> Result<u8> {
    use harness::alloc;
    let cpus = cfg.cpus;
    if cpus == 0 || cpus > 1024 {
        anyhow::bail!("--cpus {cpus}: give 1 to 1024 CPUs");
    }
    let cache = cache(t)?;
    let (dir, what) = tree_dir(t, &cache)?;
    let built = alloc::source::build(&dir, &cache)
        .with_context(|| format!("building the whole-allocator harness from {what}"))?;
    if built.compiled {
        eprintln!("harness: compiled {} in {:.2} s", built.source.display(), built.compile_seconds);
    }
    let model = alloc::model::Model::new(cfg).context("setting the model up")?;
    let setup = model.setup(cfg).map_err(anyhow::Error::msg)?;
    let t0 = Instant::now();
    let out = alloc::diff(&built.binary, cfg, seq, every)?;
    let mut s = format!(
        "real pcpu_alloc/free_percpu + percpu-km ({what}) vs model (km backend, {}): {cpus} CPUs, {sequence}\n",
        cfg.kernel
    );
    s += &format!(
        "alloc info: static {} reserved {} dyn {} unit {} ({} units), atom {}\n",
        setup.static_size, setup.reserved_size, setup.dyn_size, setup.unit_size, setup.nr_units, setup.atom_size
    );
    let code = match &out.divergence {
        None => {
            s += &format!(
                "{} ops, 0 divergences, invariants held, chunk maps verified {} times ({:.1} s)\n",
                out.ops_run,
                out.states_verified,
                t0.elapsed().as_secs_f64()
            );
            s += &format!("exercised: {}\n", out.coverage);
            0
        }
        Some(m) => {
            s += &m.to_string();
            1
        }
    };
    emit(&s)?;
    Ok(code)
}
