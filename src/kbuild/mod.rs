//! Building percpu test modules with a real kernel tree's own Kbuild.
//!
//! percpu-bed's shipped fixtures are built against the project's model
//! headers; this module builds the *kernel's* code instead, so that a change
//! to `asm/percpu.h`, `include/linux/percpu*.h` or `mm/percpu.c` can be
//! tested: the tree's `lib/percpu_test.c`, the project's real-API modules
//! (`fixtures/kmod/src`) and any module directory of the user's, for six
//! targets (x86_64, arm64, s390x, alpha, sparc32, riscv64 no-MMU).
//!
//! # Steps, per target
//!
//! 1. **Tree** ([`tree`]): Debian's `linux-source-6.1` unpacked into the
//!    cache (the default), a user's tree (`--tree DIR`), or Debian's
//!    configured header packages (`--debian-headers`, amd64/arm64/s390x).
//! 2. **Configure** (source trees): `make O=<build> <defconfig>`, the
//!    target's fragment (`fixtures/kmod/config/<target>.config`) appended,
//!    `make olddefconfig`, and every fragment setting checked to have
//!    survived.  Skipped when the build directory's stamp says the same
//!    defconfig, fragment and compiler made it.
//! 3. **Prepare**: `make O=<build> modules_prepare` (a no-op of about a
//!    second when nothing changed: the build directory is kept, so Kbuild
//!    rebuilds only what a changed header touches).
//! 4. **Modules**: each module set is synchronised into its own directory
//!    in the cache (files rewritten only when their content changed, so
//!    Kbuild's timestamps stay meaningful) and built with
//!    `make M=<dir> modules`, with `-ffile-prefix-map` so `__FILE__` in WARN
//!    messages names the source as the tree or fixtures do
//!    (`lib/percpu_test.c`), not the cache path.
//! 5. **Outputs**: the `.ko` files, each module's expectation file (see
//!    `percpu-bed run`), and `percpu-bed-kbuild.json` ([`manifest`]) with the
//!    tree, configuration, compiler, per-step times and the tree's runtime
//!    ABI ([`rtabi`]: structure offsets computed by the tree's compiler),
//!    copied into `<cache>/kbuild/<tree>/<target>/out` (or `--out`).
//!
//! A build directory is locked while a run uses it, so concurrent runs wait
//! instead of corrupting it.  `--check-reproducible` cleans every module
//! set and builds it again, and fails naming any `.ko` whose bytes differ.
//!
//! Nothing from a kernel tree is ever written into the checkout.

pub mod manifest;
pub mod modules;
pub mod rtabi;
pub mod target;
pub mod tree;

use std::fs::File;
use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

pub use manifest::{Manifest, ModuleEntry, StepTime};
pub use target::{Target, TARGETS};
pub use tree::{Cache, Tree, TreeKind};

/// Lines of a failed command's log shown in the error.
pub const LOG_TAIL_LINES: usize = 25;

/// Everything that can go wrong building modules.
#[derive(Debug, thiserror::Error)]
pub enum KbuildError {
    #[error("no cache directory: set PERCPU_BED_CACHE, XDG_CACHE_HOME or HOME")]
    NoCache,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a usable kernel tree: {reason}")]
    NotATree { path: PathBuf, reason: String },
    #[error("cannot get {package}: {reason}")]
    Download { package: String, reason: String },
    #[error("unknown kbuild target `{name}` (known: {known})")]
    UnknownTarget { name: String, known: String },
    #[error("{target}: {program} is not installed (Debian package: {package})")]
    MissingCompiler { target: String, program: String, package: String },
    #[error(
        "{program} is not installed (Debian package: {package}); ci/deps.sh --kbuild installs everything kbuild needs"
    )]
    MissingTool { program: String, package: String },
    #[error("{what} failed (exit status {status}); last lines of {log}:\n{tail}")]
    Command { what: String, status: String, log: PathBuf, tail: String },
    #[error("{target}: the config fragment's {symbol}={want} did not survive olddefconfig (the tree's .config has {got}): its dependencies are not met in this tree")]
    Config { target: String, symbol: String, want: String, got: String },
    #[error("{target}: {what}")]
    Module { target: String, what: String },
    #[error("{target}: rebuilds are not byte-identical: {modules}")]
    NotReproducible { target: String, modules: String },
    #[error("{target}: the runtime ABI probe: {reason}")]
    RtAbi { target: String, reason: String },
}

impl KbuildError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        KbuildError::Io { path: path.to_path_buf(), source }
    }
}

/// Progress on a terminal (a spinner naming the target and step) and a
/// line per finished step with its time, on stderr either way.
pub struct Progress {
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl Progress {
    /// A spinner when stderr is a terminal; `quiet` drops the step lines.
    pub fn new(quiet: bool) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new_spinner()
                .with_style(ProgressStyle::with_template("{spinner} [{elapsed}] {msg}").expect("valid template"));
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Progress { bar, quiet }
    }
    /// A progress reporter that says nothing (tests, library callers).
    pub fn silent() -> Self {
        Progress { bar: None, quiet: true }
    }
    /// `what` is running for `who` (a target name, or "sources").
    pub fn step(&self, who: &str, what: &str) {
        tracing::info!("{who}: {what}");
        if let Some(b) = &self.bar {
            b.set_message(format!("{who}: {what}"));
        }
    }
    /// A step finished: print it with its time.
    pub fn done(&self, who: &str, what: &str, took: Duration) {
        if self.quiet {
            return;
        }
        let line = format!("  {who:<8} {what:<40} {:>7.1} s", took.as_secs_f64());
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Run `cmd` with stdout and stderr appended to `log`; on failure an error
/// with the log's last [`LOG_TAIL_LINES`] lines and its path.
pub fn run_logged(cmd: &mut Command, log: &Path, what: &str) -> Result<(), KbuildError> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(|e| KbuildError::io(dir, e))?;
    }
    let out = File::options().create(true).append(true).open(log).map_err(|e| KbuildError::io(log, e))?;
    let err = out.try_clone().map_err(|e| KbuildError::io(log, e))?;
    {
        use std::io::Write;
        let mut w = &out;
        let _ = writeln!(w, "\n$ {cmd:?}");
    }
    tracing::debug!("running {cmd:?} (log {})", log.display());
    let status = cmd.stdin(Stdio::null()).stdout(out).stderr(err).status().map_err(|e| {
        let program = cmd.get_program().to_string_lossy().into_owned();
        if e.kind() == std::io::ErrorKind::NotFound {
            KbuildError::MissingTool { package: tool_package(&program).into(), program }
        } else {
            KbuildError::io(Path::new(&program), e)
        }
    })?;
    if status.success() {
        return Ok(());
    }
    Err(KbuildError::Command {
        what: what.to_string(),
        status: status.code().map_or_else(|| "killed by a signal".into(), |c| c.to_string()),
        log: log.to_path_buf(),
        tail: log_tail(log, LOG_TAIL_LINES),
    })
}

/// The last `n` lines of a log, indented.
pub fn log_tail(log: &Path, n: usize) -> String {
    let Ok(f) = File::open(log) else { return "  (no log)".into() };
    let lines: Vec<String> = std::io::BufReader::new(f).lines().map_while(Result::ok).collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].iter().map(|l| format!("  | {l}")).collect::<Vec<_>>().join("\n")
}

/// The Debian package of a host tool the kernel build needs.
pub fn tool_package(program: &str) -> &'static str {
    match program {
        "make" => "make",
        "flex" => "flex",
        "bison" => "bison",
        "bc" => "bc",
        "gcc" | "cc" => "gcc",
        "perl" => "perl",
        "apt-get" | "apt-cache" => "apt",
        "dpkg" | "dpkg-deb" => "dpkg",
        "tar" => "tar",
        "xz" => "xz-utils",
        _ => "the package that provides it",
    }
}

/// Host tools a source-tree build needs, with their packages (checked up
/// front so a missing one is named before any make runs).
pub fn check_host_tools(headers_only: bool) -> Result<(), KbuildError> {
    let mut need = vec!["make", "gcc", "perl"];
    if !headers_only {
        need.extend(["flex", "bison", "bc"]);
    }
    for p in need {
        if tree::which(p).is_none() {
            return Err(KbuildError::MissingTool { program: p.into(), package: tool_package(p).into() });
        }
    }
    if !headers_only && !Path::new("/usr/include/gelf.h").is_file() && !Path::new("/usr/include/libelf.h").is_file() {
        return Err(KbuildError::MissingTool {
            program: "libelf headers (gelf.h)".into(),
            package: "libelf-dev".into(),
        });
    }
    Ok(())
}

/// `sha256` of `data` as lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// What to build and where.
#[derive(Clone, Debug)]
pub struct Request {
    pub targets: Vec<&'static Target>,
    /// Extra module directories of the user's (each its own Kbuild `M=` set).
    pub user_modules: Vec<PathBuf>,
    /// The source tree to take `lib/percpu_test.c` from, when `tree` has
    /// none (header packages): Debian's matching source package.
    pub test_source: Option<PathBuf>,
    /// Copy the outputs to `<out>/<target>/` as well.
    pub out: Option<PathBuf>,
    /// Clean and rebuild every module set and compare the bytes.
    pub check_reproducible: bool,
    /// `make -j`.
    pub jobs: usize,
}

/// The outputs of one target.
#[derive(Clone, Debug)]
pub struct Built {
    pub target: &'static Target,
    /// Where the `.ko` files and the manifest are.
    pub out_dir: PathBuf,
    pub manifest: Manifest,
}

/// The directories of one target's build in the cache.
#[derive(Clone, Debug)]
pub struct TargetDirs {
    /// `O=` (source trees only).
    pub build: PathBuf,
    /// Module set directories (`M=`).
    pub modules: PathBuf,
    pub out: PathBuf,
    pub logs: PathBuf,
}

impl TargetDirs {
    pub fn new(cache: &Cache, tree: &Tree, target: &Target) -> Self {
        let base = cache.kbuild().join(&tree.key).join(target.name);
        TargetDirs {
            build: base.join("build"),
            modules: base.join("mod"),
            out: base.join("out"),
            logs: base.join("logs"),
        }
    }
}

/// Build every requested target against `tree`.
pub fn build(cache: &Cache, tree: &Tree, req: &Request, progress: &Progress) -> Result<Vec<Built>, KbuildError> {
    check_host_tools(tree.is_headers())?;
    let mut built = Vec::new();
    for &target in &req.targets {
        built.push(build_target(cache, tree, target, req, progress)?);
    }
    Ok(built)
}

/// The compiler's first `--version` line (recorded in manifests and
/// configuration stamps: a new compiler reconfigures).
pub fn compiler_version(target: &Target) -> Result<String, KbuildError> {
    let gcc = format!("{}gcc", target.cross_compile);
    let out = Command::new(&gcc).arg("--version").output().map_err(|_| KbuildError::MissingCompiler {
        target: target.name.into(),
        program: gcc.clone(),
        package: target.compiler_package.into(),
    })?;
    Ok(String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("").to_string())
}

fn build_target(
    cache: &Cache,
    tree: &Tree,
    target: &'static Target,
    req: &Request,
    progress: &Progress,
) -> Result<Built, KbuildError> {
    let compiler = compiler_version(target)?;
    let dirs = TargetDirs::new(cache, tree, target);
    for d in [&dirs.build, &dirs.modules, &dirs.out, &dirs.logs] {
        std::fs::create_dir_all(d).map_err(|e| KbuildError::io(d, e))?;
    }
    // One run at a time per build directory.
    let lock_path = dirs.logs.join(".lock");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| KbuildError::io(&lock_path, e))?;
    if lock.try_lock().is_err() {
        progress.step(target.name, "waiting for another percpu-bed kbuild using this build directory");
        lock.lock().map_err(|e| KbuildError::io(&lock_path, e))?;
    }
    let mut steps = Vec::new();
    let mut timed = |what: &str, f: &mut dyn FnMut() -> Result<bool, KbuildError>| -> Result<(), KbuildError> {
        progress.step(target.name, what);
        let t = Instant::now();
        let ran = f()?;
        let took = t.elapsed();
        let label = if ran { what.to_string() } else { format!("{what} (cached)") };
        progress.done(target.name, &label, took);
        steps.push(StepTime { step: label, seconds: took.as_secs_f64() });
        Ok(())
    };
    let make = |extra: &[&str]| -> Command {
        let mut c = Command::new("make");
        c.arg("-C").arg(&tree.path);
        if !tree.is_headers() {
            c.arg(format!("O={}", dirs.build.display())).arg(format!("ARCH={}", target.kbuild_arch));
        }
        c.arg(format!("CROSS_COMPILE={}", target.cross_compile)).arg(format!("-j{}", req.jobs.max(1)));
        // Deterministic metadata (only vmlinux uses these, but a kernel
        // developer's environment must not leak into what we build).
        c.env("KBUILD_BUILD_TIMESTAMP", "1970-01-01")
            .env("KBUILD_BUILD_USER", "percpu-bed")
            .env("KBUILD_BUILD_HOST", "percpu-bed")
            .env("SOURCE_DATE_EPOCH", "0")
            .env("LC_ALL", "C");
        c.args(extra);
        c
    };

    if !tree.is_headers() {
        let stamp_text = format!(
            "tree {}\ndefconfig {}\ncompiler {compiler}\nfragment sha256 {}\n",
            tree.path.display(),
            target.defconfig,
            sha256_hex(target.fragment.as_bytes())
        );
        let stamp = dirs.build.join(".percpu-bed-config");
        let configured =
            dirs.build.join(".config").is_file() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == stamp_text);
        let log = dirs.logs.join("configure.log");
        timed("configure", &mut || {
            if configured {
                return Ok(false);
            }
            let _ = std::fs::remove_file(&log);
            run_logged(&mut make(&[target.defconfig]), &log, &format!("{}: make {}", target.name, target.defconfig))?;
            let cfg = dirs.build.join(".config");
            let mut text = std::fs::read_to_string(&cfg).map_err(|e| KbuildError::io(&cfg, e))?;
            text.push_str("\n# ---- percpu-bed fragment ----\n");
            text.push_str(target.fragment);
            std::fs::write(&cfg, text).map_err(|e| KbuildError::io(&cfg, e))?;
            run_logged(&mut make(&["olddefconfig"]), &log, &format!("{}: make olddefconfig", target.name))?;
            check_fragment(target, &cfg)?;
            std::fs::write(&stamp, &stamp_text).map_err(|e| KbuildError::io(&stamp, e))?;
            Ok(true)
        })?;
        let log = dirs.logs.join("modules_prepare.log");
        timed("modules_prepare", &mut || {
            let _ = std::fs::remove_file(&log);
            run_logged(&mut make(&["modules_prepare"]), &log, &format!("{}: make modules_prepare", target.name))?;
            Ok(true)
        })?;
    }

    let sets = modules::module_sets(tree, req.test_source.as_deref(), &req.user_modules)?;
    let mut entries = Vec::new();
    let mut rt = None;
    for set in &sets {
        let dir = dirs.modules.join(&set.name);
        let log = dirs.logs.join(format!("modules-{}.log", set.name));
        let mut result = Vec::new();
        timed(&format!("modules: {}", set.name), &mut || {
            let changed = set.sync_into(&dir)?;
            let _ = std::fs::remove_file(&log);
            let kcflags = format!("KCFLAGS=-ffile-prefix-map={}={}", dir.display(), set.file_prefix);
            run_logged(
                &mut make(&[&format!("M={}", dir.display()), &kcflags, "modules"]),
                &log,
                &format!("{}: make M=... modules ({})", target.name, set.name),
            )?;
            result = modules::collect(&dir, set)?;
            Ok(changed)
        })?;
        if req.check_reproducible {
            let log = dirs.logs.join(format!("reproducible-{}.log", set.name));
            timed(&format!("rebuild check: {}", set.name), &mut || {
                let _ = std::fs::remove_file(&log);
                run_logged(&mut make(&[&format!("M={}", dir.display()), "clean"]), &log, "make M=... clean")?;
                let kcflags = format!("KCFLAGS=-ffile-prefix-map={}={}", dir.display(), set.file_prefix);
                run_logged(
                    &mut make(&[&format!("M={}", dir.display()), &kcflags, "modules"]),
                    &log,
                    &format!("{}: rebuilding {}", target.name, set.name),
                )?;
                let again = modules::collect(&dir, set)?;
                let differ: Vec<String> = result
                    .iter()
                    .filter(|m| again.iter().find(|a| a.name == m.name).is_none_or(|a| a.sha256 != m.sha256))
                    .map(|m| m.name.clone())
                    .collect();
                if !differ.is_empty() {
                    return Err(KbuildError::NotReproducible {
                        target: target.name.into(),
                        modules: differ.join(", "),
                    });
                }
                Ok(true)
            })?;
        }
        if set.name == modules::PROJECT_SET {
            let probe = dir.join(format!("{}.ko", rtabi::PROBE_MODULE));
            rt = Some(rtabi::read_probe(target, &probe)?);
        }
        // The probe is data for the manifest, not a module to run.
        entries.extend(result.into_iter().filter(|m| m.name != rtabi::PROBE_MODULE));
    }
    let rt =
        rt.ok_or_else(|| KbuildError::RtAbi { target: target.name.into(), reason: "the probe was not built".into() })?;

    // Outputs: fresh each run, so a module removed from a set disappears.
    let mut manifest = Manifest::new(tree, target, &compiler, rt, steps);
    let out_dir = dirs.out.clone();
    let copy_to = |dest: &Path, manifest: &mut Manifest| -> Result<(), KbuildError> {
        if dest.exists() {
            std::fs::remove_dir_all(dest).map_err(|e| KbuildError::io(dest, e))?;
        }
        std::fs::create_dir_all(dest).map_err(|e| KbuildError::io(dest, e))?;
        for m in &entries {
            let to = dest.join(&m.file);
            std::fs::copy(&m.built, &to).map_err(|e| KbuildError::io(&to, e))?;
            if let Some(exp) = &m.expect {
                let to = dest.join(modules::expect_file_name(&m.name));
                std::fs::write(&to, exp).map_err(|e| KbuildError::io(&to, e))?;
            }
        }
        manifest.modules = entries.iter().map(|m| m.entry()).collect();
        manifest.write(&dest.join(manifest::MANIFEST_FILE))
    };
    copy_to(&out_dir, &mut manifest)?;
    if let Some(out) = &req.out {
        copy_to(&out.join(target.name), &mut manifest)?;
    }
    drop(lock);
    Ok(Built { target, out_dir, manifest })
}

/// Every `CONFIG_X=v` of the fragment must be in the final `.config`.
fn check_fragment(target: &Target, config: &Path) -> Result<(), KbuildError> {
    let text = std::fs::read_to_string(config).map_err(|e| KbuildError::io(config, e))?;
    for (sym, want) in target::fragment_settings(target.fragment) {
        let got = text
            .lines()
            .find_map(|l| {
                if l == format!("# {sym} is not set") {
                    Some("n".to_string())
                } else {
                    l.strip_prefix(&format!("{sym}=")).map(str::to_string)
                }
            })
            .unwrap_or_else(|| "n".into());
        if got != want {
            return Err(KbuildError::Config { target: target.name.into(), symbol: sym, want, got });
        }
    }
    Ok(())
}
