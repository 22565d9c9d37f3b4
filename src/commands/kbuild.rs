use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use percpu_bed::kbuild::{self, target, tree, Cache, Progress, Request};
use percpu_bed::output::{emit, Format};

/// Build percpu test modules with a real kernel tree's own Kbuild: the
/// tree's lib/percpu_test.c, percpu-bed's real-API modules and your own
/// module directories, for x86_64, arm64, s390x, alpha, sparc32 and
/// riscv64 (no-MMU).
///
/// The default tree is Debian's linux-source-6.1, downloaded with apt-get
/// and unpacked into the cache on first use (about 140 MB, 1.5 GB
/// unpacked).  Build directories are kept in the cache, so a second run
/// with nothing changed takes seconds and a changed header rebuilds only
/// what depends on it.  Run the results with
/// `percpu-bed run --arch ARCH <out>/<target>/*.ko`.
///
/// Cache: $PERCPU_BED_CACHE, else $XDG_CACHE_HOME/percpu-bed, else
/// ~/.cache/percpu-bed.
#[derive(clap::Args)]
pub struct Args {
    /// Targets to build (repeatable; default: all six, or the three Debian
    /// builds kernels for with --debian-headers): x86_64, arm64, s390x,
    /// alpha, sparc32, riscv64 (also accepted: km, amd64, s390).
    #[arg(long = "arch", value_name = "TARGET")]
    arch: Vec<String>,
    /// Your kernel source tree instead of Debian's linux-source-6.1 (it
    /// must be clean: built only with O=, never in the tree).
    #[arg(long, value_name = "DIR", conflicts_with = "debian_headers")]
    tree: Option<PathBuf>,
    /// Build against Debian's configured header packages
    /// (linux-headers-<abi>-{amd64,arm64,s390x}, -common, linux-kbuild-6.1)
    /// instead of a defconfig: the distribution's own configuration
    /// (__fentry__, z10 compare-and-swap loops).  Needs root for foreign
    /// architectures (dpkg --add-architecture).
    #[arg(long)]
    debian_headers: bool,
    /// Also build this module directory (a Kbuild file with obj-m; repeatable).
    /// `<module>.expect.toml` files in it are copied beside the .ko.
    #[arg(long = "module", value_name = "DIR")]
    modules: Vec<PathBuf>,
    /// Copy every target's .ko files, expectation files and manifest to
    /// DIR/<target>/ as well (they are always in the cache).
    #[arg(long, short = 'o', value_name = "DIR")]
    out: Option<PathBuf>,
    /// The cache directory (default: see above).
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Clean every module set, build it again and fail if any .ko differs.
    #[arg(long)]
    check_reproducible: bool,
    /// Ask apt for the current linux-source-6.1 even if one is unpacked.
    #[arg(long)]
    refresh: bool,
    /// make -j (default: the number of CPUs).
    #[arg(long, short = 'j')]
    jobs: Option<usize>,
    /// table: a human summary per target; json: the build manifests.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

/// Exit status: 0 built, 2 anything failed (with the cause and log).
pub fn run(args: Args) -> Result<u8> {
    let t0 = Instant::now();
    let cache = match &args.cache {
        Some(d) => Cache::at(d),
        None => Cache::from_env()?,
    };
    let mut targets = Vec::new();
    for name in &args.arch {
        for n in name.split(',').filter(|n| !n.is_empty()) {
            let t = target::lookup(n)
                .ok_or_else(|| kbuild::KbuildError::UnknownTarget { name: n.to_string(), known: target::names() })?;
            if !targets.iter().any(|x: &&target::Target| std::ptr::eq(*x, t)) {
                targets.push(t);
            }
        }
    }
    if targets.is_empty() {
        targets = kbuild::TARGETS.iter().filter(|t| !args.debian_headers || t.debian_arch.is_some()).collect();
    }
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let progress = Progress::new(args.format == Format::Json);
    let mut built = Vec::new();
    if args.debian_headers {
        if let Some(t) = targets.iter().find(|t| t.debian_arch.is_none()) {
            bail!("Debian builds no {} kernels, so it has no header packages for it (--debian-headers covers amd64, arm64, s390x)", t.name);
        }
        // percpu_test.c is not in the header packages: take it from the source package.
        let source = tree::debian_source(&cache, args.refresh, &progress)?;
        for t in &targets {
            let headers = tree::debian_headers(&cache, t.debian_arch.expect("checked"), &progress)?;
            let req = Request {
                targets: vec![t],
                user_modules: args.modules.clone(),
                test_source: Some(source.path.clone()),
                out: args.out.clone(),
                check_reproducible: args.check_reproducible,
                jobs,
            };
            built.extend(kbuild::build(&cache, &headers, &req, &progress).with_context(|| headers.describe())?);
        }
    } else {
        let tree = match &args.tree {
            Some(d) => tree::user_tree(d)?,
            None => tree::debian_source(&cache, args.refresh, &progress)?,
        };
        let req = Request {
            targets,
            user_modules: args.modules.clone(),
            test_source: None,
            out: args.out.clone(),
            check_reproducible: args.check_reproducible,
            jobs,
        };
        built = kbuild::build(&cache, &tree, &req, &progress).with_context(|| tree.describe())?;
    }
    progress.finish();
    match args.format {
        Format::Json => {
            let manifests: Vec<_> = built.iter().map(|b| &b.manifest).collect();
            emit(&(serde_json::to_string_pretty(&manifests)? + "\n"))?;
        }
        Format::Table => {
            let mut s = String::new();
            for b in &built {
                let m = &b.manifest;
                let tree = m.tree.get("key").and_then(|k| k.as_str()).unwrap_or("?");
                let dir = match &args.out {
                    Some(o) => o.join(b.target.name),
                    None => b.out_dir.clone(),
                };
                s += &format!(
                    "{:<8} Linux {} ({tree}), run with --arch {}: {}\n",
                    b.target.name,
                    m.kernel_version(),
                    m.bed_arch,
                    dir.display()
                );
                for md in &m.modules {
                    s += &format!("    {:<28} {}\n", md.file, md.set);
                }
            }
            let check = if args.check_reproducible { ", every rebuild byte-identical" } else { "" };
            s += &format!("{} target(s) built in {:.1} s{check}\n", built.len(), t0.elapsed().as_secs_f64());
            emit(&s)?;
        }
    }
    Ok(0)
}
