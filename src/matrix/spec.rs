//! `ci/matrix.toml`: the matrix as data, and its expansion into jobs.
//!
//! A matrix file names arches (with the variants to run: the x86_64
//! offset model, the arm64 TPIDR register), fixture sets (which shipped
//! objects, or a directory of the user's own) and configurations (possible
//! CPUs, NUMA nodes, module placement, CPU sampling, budget).  Every arch
//! variant x fixture set x configuration that applies is one job: one
//! `percpu-bed run`.  Expansion order is the file's order, so job numbers
//! and shards are stable for a given file.

use percpu_core::KernelProfile;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use percpu_arch::check::{RunOn, Scenario};
use percpu_arch::isa::{self, ModulePlacement};
use percpu_core::CpuSet;
use serde::{Deserialize, Serialize};

/// A matrix file that cannot be used, with what is wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read the matrix file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The file as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixFile {
    /// Arches to run, in order.
    #[serde(rename = "arch")]
    pub arches: Vec<ArchEntry>,
    /// Fixture sets; none given means one set, `all`: every shipped object.
    #[serde(rename = "fixtures", default)]
    pub fixture_sets: Vec<FixtureSet>,
    /// Configurations, in order (the columns of the summary table).
    #[serde(rename = "config")]
    pub configs: Vec<ConfigEntry>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchEntry {
    /// Adapter name: x86_64, arm64, sparc32, alpha, s390x, km.
    pub name: String,
    /// Variants to run (default: every variant of the arch).
    pub variants: Option<Vec<String>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureSet {
    pub name: String,
    /// Glob patterns over object file names (`*.o`, `dyn.o`, `bug_*.o`);
    /// `kernel.o` is always loaded as the kernel image.  Default: all.
    #[serde(default)]
    pub objects: Vec<String>,
    /// A directory of your own objects, laid out like `fixtures/obj`: one
    /// subdirectory per fixture dir (`x86_64`, `arm64-vhe`, ...) holding a
    /// `kernel.o` and modules.  Relative paths are relative to the matrix
    /// file.  Default: the shipped fixtures.
    pub dir: Option<PathBuf>,
    /// Real kernel modules instead of fixtures: a `percpu-bed kbuild -o`
    /// directory (one subdirectory per target with its `.ko` files,
    /// expectation files and manifest), run on the kernel runtime.
    /// Relative to the matrix file.  Jobs an arch's build cannot take (no
    /// modules built for it, another variant, more CPUs than its
    /// NR_CPUS) are skipped with the reason.
    pub kbuild: Option<PathBuf>,
    /// Arches (`arch` or `arch/variant`) this set runs on; default all.
    /// Others get no row for it.
    pub only: Option<Vec<String>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigEntry {
    /// Column name in reports (`cpus-4`, `sparse-2node`).
    pub name: String,
    /// What the configuration is for, shown by `--list`.
    #[serde(default)]
    pub about: String,
    /// Possible CPUs 0..N.
    pub cpus: Option<u32>,
    /// Possible CPUs as a cpulist (`0-3,8-11`).
    pub possible: Option<String>,
    /// NUMA nodes the possible CPUs are spread over.
    #[serde(default = "one")]
    pub nodes: u32,
    /// `near`, `far` or `default` (the arch's realistic placement).
    #[serde(default)]
    pub modules: PlacementChoice,
    /// Run each test on at most this many CPUs (see `run --sample-cpus`).
    pub sample_cpus: Option<u32>,
    /// Instruction budget per call.
    pub budget: Option<u64>,
    /// Only these arches (`arch` or `arch/variant`); default all.
    pub only: Option<Vec<String>>,
    /// Arches (`arch` or `arch/variant`) this configuration is skipped on,
    /// with the reason reports give.
    #[serde(default)]
    pub skip: BTreeMap<String, String>,
    /// Planted bugs that are latent in this configuration, `object` or
    /// `object:test` patterns with the reason: a planted bug whose trigger
    /// the configuration removes (a module in reach of the percpu area) is
    /// expected to behave here, and counts as `latent`, not as a failure.
    #[serde(default)]
    pub latent: BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PlacementChoice {
    #[default]
    Default,
    Near,
    Far,
}

/// One cell of the matrix: a `percpu-bed run`.
#[derive(Clone, Debug, Serialize)]
pub struct Job {
    /// `arch/variant:config` (`arch/variant/set:config` with several sets).
    pub id: String,
    /// Its row in the summary table (`arch/variant`, `/set` with several sets).
    pub row: String,
    pub arch: String,
    pub variant: String,
    pub fixture_set: String,
    pub config: String,
    /// The possible mask as a cpulist.
    pub cpus: String,
    pub nodes: u32,
    pub placement: ModulePlacement,
    pub run_on: RunOn,
    pub budget: u64,
    /// The kernel image first, then the modules (real modules only, for
    /// a `kbuild` set).
    pub objects: Vec<PathBuf>,
    /// A `kbuild` set's target directory (its manifest has the runtime
    /// ABI): the objects are real kernel modules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kbuild: Option<PathBuf>,
    /// Report the tests of these objects only (the set picked some objects
    /// or brought its own: the kernel image's tests are not theirs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tests_of: Option<Vec<String>>,
    /// Latent planted bugs: pattern -> reason.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub latent: BTreeMap<String, String>,
    /// Set when the configuration does not apply to this arch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// The kernel whose percpu setup is modelled.
    pub kernel: KernelProfile,
}

impl Job {
    /// The runner's scenario for this job.
    pub fn scenario(&self) -> Result<Scenario, Box<percpu_arch::check::CheckError>> {
        let cpus = CpuSet::parse_list(&self.cpus).expect("validated when the plan was built");
        let mut s = Scenario::for_kernel(&self.arch, Some(&self.variant), cpus, self.kernel.clone())
            .map_err(Box::new)?
            .nodes(self.nodes)
            .placement(self.placement)
            .budget(self.budget)
            .run_on(self.run_on);
        s.only = self.tests_of.clone();
        Ok(s)
    }

    /// The reason a planted bug `object:test` is latent here, if it is.
    pub fn latent_reason(&self, object: &str, test: &str) -> Option<&str> {
        let full = format!("{object}:{test}");
        self.latent.iter().find(|(pat, _)| glob_match(pat, &full) || glob_match(pat, object)).map(|(_, r)| r.as_str())
    }
}

/// The expanded matrix.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub file: PathBuf,
    /// Row labels (`arch/variant`, with `/set` when there are several
    /// sets), in order.
    pub rows: Vec<String>,
    /// Column labels: configuration names, in order.
    pub columns: Vec<String>,
    pub jobs: Vec<Job>,
    /// The kernel whose percpu setup every job models (`--kernel`).
    pub kernel: KernelProfile,
}

impl Plan {
    pub fn load(path: &Path, fixtures_dir: &Path) -> Result<Plan, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read { path: path.into(), source })?;
        Plan::parse(&text, path, fixtures_dir)
    }

    /// Parse and expand `text` (read from `path`, for messages and relative
    /// fixture dirs); shipped objects are looked up under `fixtures_dir`.
    pub fn parse(text: &str, path: &Path, fixtures_dir: &Path) -> Result<Plan, SpecError> {
        let file: MatrixFile =
            toml::from_str(text).map_err(|e| SpecError::Syntax { path: path.into(), message: e.to_string() })?;
        let invalid = |message: String| SpecError::Invalid { path: path.into(), message };
        if file.arches.is_empty() {
            return Err(invalid("no [[arch]] entries".into()));
        }
        if file.configs.is_empty() {
            return Err(invalid("no [[config]] entries".into()));
        }
        let sets = if file.fixture_sets.is_empty() {
            vec![FixtureSet { name: "all".into(), objects: Vec::new(), dir: None, kbuild: None, only: None }]
        } else {
            file.fixture_sets.clone()
        };
        unique(sets.iter().map(|s| s.name.as_str()), "fixture set").map_err(invalid)?;
        unique(file.configs.iter().map(|c| c.name.as_str()), "config").map_err(invalid)?;

        // Arch variants, checked against the adapters.
        let mut variants = Vec::new();
        for a in &file.arches {
            let adapter = isa::lookup(&a.name)
                .ok_or_else(|| invalid(format!("unknown arch `{}` (known: {})", a.name, isa::names().join(", "))))?;
            let names: Vec<&str> = match &a.variants {
                None => adapter.variants().iter().map(|v| v.name).collect(),
                Some(list) => list.iter().map(String::as_str).collect(),
            };
            for v in names {
                let variant = adapter.variant(v).ok_or_else(|| {
                    let known: Vec<&str> = adapter.variants().iter().map(|v| v.name).collect();
                    invalid(format!("unknown variant `{v}` of {} (known: {})", a.name, known.join(", ")))
                })?;
                variants.push((adapter, *variant));
            }
        }
        let arch_names: Vec<String> = variants.iter().map(|(a, v)| format!("{}/{}", a.name(), v.name)).collect();
        // The same variant twice would give two jobs one id.
        for (i, n) in arch_names.iter().enumerate() {
            if arch_names[..i].contains(n) {
                return Err(invalid(format!("arch variant `{n}` is listed twice ([[arch]] entries overlap)")));
            }
        }
        let names_arch = |pat: &str| arch_names.iter().any(|n| n == pat || n.split('/').next() == Some(pat));

        for set in &sets {
            for pat in set.only.iter().flatten() {
                if !names_arch(pat) {
                    return Err(invalid(format!(
                        "fixture set `{}`: `{pat}` names no arch or arch/variant of this matrix",
                        set.name
                    )));
                }
            }
        }

        // Configurations.
        for c in &file.configs {
            let cfg = |m: String| invalid(format!("config `{}`: {m}", c.name));
            match (c.cpus, &c.possible) {
                (Some(_), Some(_)) => return Err(cfg("give either `cpus` or `possible`, not both".into())),
                (None, None) => return Err(cfg("give `cpus` or `possible`".into())),
                (Some(0), _) => return Err(cfg("`cpus` must be at least 1".into())),
                (Some(n), _) if n > percpu_core::cpus::MAX_CPUS => {
                    return Err(cfg(format!("`cpus` {n} is beyond the limit of {}", percpu_core::cpus::MAX_CPUS)))
                }
                (None, Some(list)) => {
                    CpuSet::parse_list(list).map_err(|e| cfg(format!("`possible` = \"{list}\": {e}")))?;
                }
                _ => {}
            }
            if c.nodes == 0 {
                return Err(cfg("`nodes` must be at least 1".into()));
            }
            if c.sample_cpus == Some(0) {
                return Err(cfg("`sample_cpus` must be at least 1".into()));
            }
            for pat in c.only.iter().flatten().chain(c.skip.keys()) {
                if !names_arch(pat) {
                    return Err(cfg(format!("`{pat}` names no arch or arch/variant of this matrix")));
                }
            }
        }

        let several_sets = sets.len() > 1;
        let mut rows = Vec::new();
        let mut jobs = Vec::new();
        // Every missing directory or object at once, not one per run.
        let mut missing = Vec::new();
        for (adapter, variant) in &variants {
            let arch_variant = format!("{}/{}", adapter.name(), variant.name);
            for set in &sets {
                if set.only.as_ref().is_some_and(|o| !o.iter().any(|p| *p == arch_variant || p == adapter.name())) {
                    continue;
                }
                let row = if several_sets { format!("{arch_variant}/{}", set.name) } else { arch_variant.clone() };
                let (objects, tests_of, kbuild, nr_cpus, set_skip) = match &set.kbuild {
                    None => match set_objects(set, variant.fixture_dir, path, fixtures_dir) {
                        Ok((objects, tests_of)) => (objects, tests_of, None, None, None),
                        Err(e) => {
                            if !missing.contains(&e) {
                                missing.push(e);
                            }
                            continue;
                        }
                    },
                    Some(_) => {
                        let k = kbuild_objects(set, adapter.name(), variant.name, path).map_err(&invalid)?;
                        (k.objects, None, k.dir, k.nr_cpus, k.skip)
                    }
                };
                for c in &file.configs {
                    let applies = |pat: &String| *pat == arch_variant || *pat == adapter.name();
                    if c.only.as_ref().is_some_and(|only| !only.iter().any(applies)) {
                        continue;
                    }
                    let cpus = match (c.cpus, &c.possible) {
                        (Some(n), _) => CpuSet::first_n(n),
                        (None, Some(list)) => CpuSet::parse_list(list).expect("checked above"),
                        (None, None) => unreachable!("checked above"),
                    };
                    let placement = match c.modules {
                        PlacementChoice::Default => adapter.default_placement(),
                        PlacementChoice::Near => ModulePlacement::Near,
                        PlacementChoice::Far => ModulePlacement::Far,
                    };
                    let too_many = nr_cpus.filter(|&n| cpus.iter().any(|c| c >= n)).map(|n| {
                        format!(
                            "the tree's {} build has NR_CPUS={n}; this config needs cpu {}",
                            adapter.name(),
                            cpus.iter().last().unwrap_or(0)
                        )
                    });
                    let skipped = c
                        .skip
                        .iter()
                        .find(|(pat, _)| applies(pat))
                        .map(|(_, reason)| reason.clone())
                        .or_else(|| set_skip.clone())
                        .or(too_many);
                    jobs.push(Job {
                        id: format!("{row}:{}", c.name),
                        row: row.clone(),
                        arch: adapter.name().to_string(),
                        variant: variant.name.to_string(),
                        fixture_set: set.name.clone(),
                        config: c.name.clone(),
                        cpus: cpus.to_string(),
                        nodes: c.nodes,
                        placement,
                        run_on: c.sample_cpus.map_or(RunOn::All, RunOn::Sample),
                        budget: c.budget.unwrap_or(percpu_arch::check::DEFAULT_BUDGET),
                        objects: objects.clone(),
                        kbuild: kbuild.clone(),
                        tests_of: tests_of.clone(),
                        latent: c.latent.clone(),
                        skipped,
                        kernel: KernelProfile::default(),
                    });
                }
                rows.push(row);
            }
        }
        match missing.len() {
            0 => {}
            1 => return Err(invalid(missing.remove(0))),
            n => return Err(invalid(format!("{n} problems with fixture sets:\n  {}", missing.join("\n  ")))),
        }
        // A latent entry must name an object some job of its config runs:
        // a misspelt one would silently stop declaring anything.
        for c in &file.configs {
            for pat in c.latent.keys() {
                let object = pat.split(':').next().unwrap_or(pat);
                let named = jobs.iter().filter(|j| j.config == c.name).any(|j| {
                    j.objects.iter().filter_map(|o| o.file_name()).any(|n| glob_match(object, &n.to_string_lossy()))
                });
                if !named && jobs.iter().any(|j| j.config == c.name) {
                    return Err(invalid(format!(
                        "config `{}`: latent entry `{pat}` names no object this config runs",
                        c.name
                    )));
                }
            }
        }
        Ok(Plan {
            file: path.into(),
            rows,
            columns: file.configs.iter().map(|c| c.name.clone()).collect(),
            jobs,
            kernel: KernelProfile::default(),
        })
    }

    /// Model `kernel` in every job.
    pub fn set_kernel(&mut self, kernel: KernelProfile) {
        for j in &mut self.jobs {
            j.kernel = kernel.clone();
        }
        self.kernel = kernel;
    }

    /// Keep the jobs of `arches` (`arch` or `arch/variant`; empty: all)
    /// whose id contains one of `filters` (empty: all).
    ///
    /// Every `--arch` given must select something: one the matrix does not
    /// run is an error, not silently dropped beside the others.
    pub fn select(&mut self, arches: &[String], filters: &[String]) -> Result<(), String> {
        let names_job = |a: &String, j: &Job| *a == j.arch || *a == format!("{}/{}", j.arch, j.variant);
        let unmatched: Vec<&String> = arches.iter().filter(|a| !self.jobs.iter().any(|j| names_job(a, j))).collect();
        if !unmatched.is_empty() {
            let list: Vec<String> = unmatched.iter().map(|a| format!("--arch {a}")).collect();
            return Err(format!(
                "{} {} no job of {} (its rows: {})",
                list.join(", "),
                if unmatched.len() == 1 { "selects" } else { "select" },
                self.file.display(),
                self.rows.join(", ")
            ));
        }
        self.jobs.retain(|j| {
            (arches.is_empty() || arches.iter().any(|a| names_job(a, j)))
                && (filters.is_empty() || filters.iter().any(|f| j.id.contains(f.as_str())))
        });
        Ok(())
    }

    /// Keep shard `index` (1-based) of `count`: job k (in plan order) goes
    /// to shard k mod count + 1, so shards are disjoint, cover the plan and
    /// do not depend on the machine.
    pub fn shard(&mut self, index: usize, count: usize) {
        let mut k = 0usize;
        self.jobs.retain(|_| {
            let keep = k % count + 1 == index;
            k += 1;
            keep
        });
    }
}

/// `I/N` with 1 <= I <= N.
pub fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let (i, n) = s.split_once('/').ok_or_else(|| format!("shard `{s}` is not I/N (e.g. 2/4)"))?;
    let parse = |x: &str| x.trim().parse::<usize>().map_err(|_| format!("shard `{s}` is not I/N (e.g. 2/4)"));
    let (i, n) = (parse(i)?, parse(n)?);
    if n == 0 || i == 0 || i > n {
        return Err(format!("shard `{s}`: need 1 <= I <= N"));
    }
    Ok((i, n))
}

fn unique<'a>(names: impl Iterator<Item = &'a str>, what: &str) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    for n in names {
        if n.is_empty() || n.contains([':', '#', '/']) || n.contains(char::is_whitespace) {
            return Err(format!("{what} name `{n}` must be non-empty without ':', '#', '/' or spaces"));
        }
        if !seen.insert(n) {
            return Err(format!("{what} `{n}` is defined twice"));
        }
    }
    Ok(())
}

/// The objects of a fixture set for one fixture dir, `kernel.o` first, and
/// whose tests to report (None: every object's).  A directory of your own
/// without a `kernel.o` uses the shipped one, and then, like a set that
/// picks objects by pattern, reports the picked objects' tests only.
#[allow(clippy::type_complexity)]
fn set_objects(
    set: &FixtureSet,
    fixture_dir: &str,
    matrix: &Path,
    shipped: &Path,
) -> Result<(Vec<PathBuf>, Option<Vec<String>>), String> {
    let root = match &set.dir {
        Some(d) if d.is_relative() => matrix.parent().unwrap_or(Path::new(".")).join(d),
        Some(d) => d.clone(),
        None => shipped.to_path_buf(),
    };
    let dir = root.join(fixture_dir);
    let what = |m: String| format!("fixture set `{}`: {m}", set.name);
    for pat in &set.objects {
        glob::Pattern::new(pat).map_err(|e| what(format!("bad pattern `{pat}`: {e}")))?;
    }
    let mut all = crate::scenario::objects_in_dir(&dir).map_err(|e| what(format!("{e:#}")))?;
    let kernel = dir.join("kernel.o");
    let own_kernel = all.contains(&kernel);
    if own_kernel {
        all.retain(|p| *p != kernel);
    }
    let kernel = if own_kernel {
        kernel
    } else if set.dir.is_some() {
        let k = shipped.join(fixture_dir).join("kernel.o");
        if !k.is_file() {
            return Err(what(format!("{} has no kernel.o and there is no shipped {}", dir.display(), k.display())));
        }
        k
    } else {
        return Err(what(format!("{} has no kernel.o", dir.display())));
    };
    let name = |p: &PathBuf| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let picked: Vec<PathBuf> = all
        .into_iter()
        .filter(|p| set.objects.is_empty() || set.objects.iter().any(|pat| glob_match(pat, &name(p))))
        .collect();
    if picked.is_empty() && (!set.objects.is_empty() || !own_kernel) {
        let pats: Vec<String> = set.objects.iter().map(|p| format!("`{p}`")).collect();
        return Err(what(if pats.is_empty() {
            format!("no objects in {}", dir.display())
        } else {
            format!("no object in {} matches {}", dir.display(), pats.join(", "))
        }));
    }
    let tests_of = (!set.objects.is_empty() || !own_kernel)
        .then(|| picked.iter().map(|p| percpu_loader::file::object_name(p)).collect());
    let mut objects = vec![kernel];
    objects.extend(picked);
    Ok((objects, tests_of))
}

/// A `kbuild` set's modules for one arch variant, or why it has none.
struct KbuildObjects {
    objects: Vec<PathBuf>,
    dir: Option<PathBuf>,
    nr_cpus: Option<u32>,
    skip: Option<String>,
}

fn kbuild_objects(set: &FixtureSet, arch: &str, variant: &str, matrix: &Path) -> Result<KbuildObjects, String> {
    let root = set.kbuild.as_ref().expect("a kbuild set");
    let root = if root.is_relative() { matrix.parent().unwrap_or(Path::new(".")).join(root) } else { root.clone() };
    let fail = |m: String| format!("fixture set `{}`: {m}", set.name);
    if set.dir.is_some() {
        return Err(fail("give `dir` (fixtures) or `kbuild` (real modules), not both".into()));
    }
    if !root.is_dir() {
        return Err(fail(format!(
            "{} is not a directory: build it with `percpu-bed kbuild -o {}`",
            root.display(),
            root.display()
        )));
    }
    let skip = |reason: String| Ok(KbuildObjects { objects: Vec::new(), dir: None, nr_cpus: None, skip: Some(reason) });
    let Some(target) = crate::kbuild::target::lookup(arch) else {
        return skip(format!("kbuild has no target for {arch}"));
    };
    let dir = root.join(target.name);
    if !dir.join(crate::kbuild::manifest::MANIFEST_FILE).is_file() {
        return skip(format!(
            "no modules built for {} in {} (percpu-bed kbuild --arch {})",
            target.name,
            root.display(),
            target.name
        ));
    }
    let abi = crate::kmod::runtime_abi(Some(&dir), &[]).map_err(|e| fail(format!("{e:#}")))?.abi;
    if let Some(want) = crate::kmod::variant_for(arch, &abi) {
        if want != variant {
            return skip(format!("real modules of Linux {} are built for {arch}/{want}", abi.kernel_version()));
        }
    }
    let mut objects: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| fail(format!("cannot list {}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "ko"))
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            set.objects.is_empty() || set.objects.iter().any(|pat| glob_match(pat, &name))
        })
        .collect();
    objects.sort();
    if objects.is_empty() {
        return Err(fail(format!("no module in {} matches {:?}", dir.display(), set.objects)));
    }
    Ok(KbuildObjects { objects, dir: Some(dir), nr_cpus: Some(abi.nr_cpus), skip: None })
}

fn glob_match(pattern: &str, text: &str) -> bool {
    glob::Pattern::new(pattern).is_ok_and(|p| p.matches(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/obj")
    }

    fn plan(text: &str) -> Result<Plan, SpecError> {
        Plan::parse(text, Path::new("test-matrix.toml"), &shipped())
    }

    const SMALL: &str = r#"
        [[arch]]
        name = "x86_64"
        [[arch]]
        name = "arm64"
        variants = ["el2"]
        [[config]]
        name = "cpus-1"
        cpus = 1
        [[config]]
        name = "sparse"
        possible = "0-3,8-11"
        nodes = 2
        skip = { "arm64" = "not today" }
        [[config]]
        name = "big"
        cpus = 4096
        sample_cpus = 8
        only = ["x86_64/relative"]
    "#;

    #[test]
    fn expands_arches_variants_and_configs_in_file_order() {
        let p = plan(SMALL).unwrap();
        let ids: Vec<&str> = p.jobs.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "x86_64/zero-based:cpus-1",
                "x86_64/zero-based:sparse",
                "x86_64/relative:cpus-1",
                "x86_64/relative:sparse",
                "x86_64/relative:big",
                "arm64/el2:cpus-1",
                "arm64/el2:sparse",
            ]
        );
        assert_eq!(p.rows, ["x86_64/zero-based", "x86_64/relative", "arm64/el2"]);
        assert_eq!(p.columns, ["cpus-1", "sparse", "big"]);
        let sparse = &p.jobs[1];
        assert_eq!((sparse.cpus.as_str(), sparse.nodes), ("0-3,8-11", 2));
        assert_eq!(p.jobs[6].skipped.as_deref(), Some("not today"));
        assert_eq!(p.jobs[4].run_on, RunOn::Sample(8));
        assert!(p.jobs[0].objects[0].ends_with("x86_64/kernel.o"));
        assert!(p.jobs[5].objects[0].ends_with("arm64-vhe/kernel.o"));
    }

    #[test]
    fn shards_are_disjoint_and_cover_the_plan() {
        let full = plan(SMALL).unwrap();
        let mut seen = Vec::new();
        for i in 1..=3 {
            let mut p = full.clone();
            p.shard(i, 3);
            seen.extend(p.jobs.into_iter().map(|j| j.id));
        }
        seen.sort();
        let mut all: Vec<String> = full.jobs.into_iter().map(|j| j.id).collect();
        all.sort();
        assert_eq!(seen, all);
        assert_eq!(parse_shard("2/4"), Ok((2, 4)));
        assert!(parse_shard("0/4").is_err() && parse_shard("5/4").is_err() && parse_shard("x").is_err());
    }

    #[test]
    fn select_by_arch_and_filter() {
        let mut p = plan(SMALL).unwrap();
        p.select(&["x86_64/relative".into()], &["sparse".into(), "big".into()]).unwrap();
        let ids: Vec<&str> = p.jobs.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, ["x86_64/relative:sparse", "x86_64/relative:big"]);
    }

    /// Issue 12 item 25: an `--arch` this matrix does not run, beside one
    /// it does, is refused rather than dropped.
    #[test]
    fn select_refuses_an_arch_the_matrix_does_not_run() {
        let mut p = plan(SMALL).unwrap();
        let e = p.select(&["x86_64".into(), "sparc32".into(), "arm64/el1".into()], &[]).unwrap_err();
        assert!(e.contains("--arch sparc32, --arch arm64/el1 select no job"), "{e}");
        assert_eq!(p.jobs.len(), plan(SMALL).unwrap().jobs.len(), "nothing is dropped on error");
    }

    /// Issue 12 item 25: entries that would make two jobs one id, or
    /// declare nothing, are refused.
    #[test]
    fn overlapping_arches_and_latent_entries_naming_nothing_are_refused() {
        let dup = "[[arch]]\nname = \"arm64\"\n[[arch]]\nname = \"arm64\"\nvariants = [\"el2\"]\n[[config]]\nname = \"c\"\ncpus = 1\n";
        let e = plan(dup).unwrap_err().to_string();
        assert!(e.contains("arch variant `arm64/el2` is listed twice"), "{e}");
        let latent = "[[arch]]\nname = \"s390x\"\n[[config]]\nname = \"c\"\ncpus = 1\nlatent = { \"bug_nowaek_module.o\" = \"typo\" }\n";
        let e = plan(latent).unwrap_err().to_string();
        assert!(e.contains("latent entry `bug_nowaek_module.o` names no object"), "{e}");
        let good = latent.replace("nowaek", "noweak");
        plan(&good).unwrap();
        let with_test = latent.replace("bug_nowaek_module.o", "bug_noweak_module.o:nw_inc");
        plan(&with_test).unwrap();
    }

    #[test]
    fn fixture_sets_pick_objects_by_pattern() {
        let p = plan(
            r#"
            [[arch]]
            name = "s390x"
            [[fixtures]]
            name = "dyn"
            objects = ["dyn*.o"]
            [[fixtures]]
            name = "all"
            [[config]]
            name = "c"
            cpus = 2
            latent = { "bug_noweak_module.o" = "modules in reach" }
            "#,
        )
        .unwrap();
        assert_eq!(p.rows, ["s390x/default/dyn", "s390x/default/all"]);
        let names: Vec<String> =
            p.jobs[0].objects.iter().map(|o| o.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names[0], "kernel.o");
        assert!(names[1..].iter().all(|n| n.starts_with("dyn")), "{names:?}");
        assert!(p.jobs[1].objects.len() > names.len());
        assert_eq!(p.jobs[1].latent_reason("bug_noweak_module.o", "nw_inc"), Some("modules in reach"));
        assert_eq!(p.jobs[1].latent_reason("dyn.o", "dyn_inc"), None);
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let cases = [
            ("[[arch]]\nname = \"vax\"\n[[config]]\nname = \"c\"\ncpus = 1\n", "unknown arch `vax`"),
            ("[[arch]]\nname = \"arm64\"\nvariants = [\"el3\"]\n[[config]]\nname = \"c\"\ncpus = 1\n", "unknown variant `el3`"),
            ("[[arch]]\nname = \"km\"\n[[config]]\nname = \"c\"\n", "give `cpus` or `possible`"),
            ("[[arch]]\nname = \"km\"\n[[config]]\nname = \"c\"\npossible = \"3-1\"\n", "`possible`"),
            ("[[arch]]\nname = \"km\"\n[[config]]\nname = \"c\"\ncpus = 1\ncolour = 1\n", "unknown field `colour`"),
            ("[[arch]]\nname = \"km\"\n[[config]]\nname = \"c\"\ncpus = 1\n[[config]]\nname = \"c\"\ncpus = 2\n", "defined twice"),
            ("[[arch]]\nname = \"km\"\n[[config]]\nname = \"c\"\ncpus = 1\nonly = [\"alpha\"]\n", "names no arch"),
            ("[[arch]]\nname = \"km\"\n[[fixtures]]\nname = \"x\"\nobjects = [\"nothing*.o\"]\n[[config]]\nname = \"c\"\ncpus = 1\n", "no object"),
            ("[[arch]]\nname = \"km\"\n", "missing field `config`"),
        ];
        for (text, want) in cases {
            let e = plan(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: got {e:?}, want {want:?}");
            assert!(e.starts_with("test-matrix.toml"), "{e}");
        }
    }

    #[test]
    fn own_fixture_dirs_reuse_the_shipped_kernel_and_say_all_that_is_missing() {
        let root = std::env::temp_dir().join(format!("percpu-bed-spec-own-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("mine/x86_64")).unwrap();
        std::fs::copy(shipped().join("x86_64/dyn.o"), root.join("mine/x86_64/my_dyn.o")).unwrap();
        let file = root.join("m.toml");
        let text =
            "[[arch]]\nname = \"x86_64\"\n[[arch]]\nname = \"arm64\"\n[[fixtures]]\nname = \"mine\"\ndir = \"mine\"\n\
                    [[fixtures]]\nname = \"gone\"\ndir = \"gone\"\n[[config]]\nname = \"c\"\ncpus = 1\n";
        let e = Plan::parse(text, &file, &shipped()).unwrap_err().to_string();
        // x86_64-rel, arm64 and arm64-vhe are missing from `mine`, and all four from `gone`: one error.
        assert!(e.contains("7 problems with fixture sets"), "{e}");
        for want in ["mine/x86_64-rel", "mine/arm64", "mine/arm64-vhe", "gone/x86_64", "gone/arm64-vhe"] {
            assert!(e.contains(want), "{want}: {e}");
        }
        let text =
            "[[arch]]\nname = \"x86_64\"\nvariants = [\"zero-based\"]\n[[fixtures]]\nname = \"mine\"\ndir = \"mine\"\n\
                    [[fixtures]]\nname = \"dyn\"\nobjects = [\"dyn.o\"]\n[[config]]\nname = \"c\"\ncpus = 1\n";
        let p = Plan::parse(text, &file, &shipped()).unwrap();
        let mine = &p.jobs[0];
        assert_eq!(mine.objects[0], shipped().join("x86_64/kernel.o"));
        assert_eq!(mine.tests_of.as_deref(), Some(&["my_dyn.o".to_string()][..]));
        assert_eq!(p.jobs[1].tests_of.as_deref(), Some(&["dyn.o".to_string()][..]));
        // Only the picked objects' tests are reported.
        let r = crate::matrix::run(&p, 1, None);
        for j in &r.jobs {
            assert_eq!(j.status, crate::matrix::JobStatus::Ok, "{:?}", j.error);
            assert!(!j.tests.is_empty());
            assert!(
                j.tests.iter().all(|t| t.object != "kernel.o"),
                "{:?}",
                j.tests.iter().map(|t| t.name()).collect::<Vec<_>>()
            );
        }
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn the_shipped_matrix_is_valid() {
        let p = Plan::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("ci/matrix.toml"), &shipped()).unwrap();
        assert!(p.jobs.iter().filter(|j| j.skipped.is_none()).count() >= 40, "{} jobs", p.jobs.len());
        for arch in percpu_arch::isa::names() {
            assert!(p.jobs.iter().any(|j| j.arch == *arch), "{arch} is not in the shipped matrix");
        }
    }
    /// A `percpu-bed kbuild -o` directory with an x86_64 and a sparc32
    /// target (manifests only; the modules are empty files: planning never
    /// reads them).
    fn kbuild_dir(root: &Path) {
        for (target, bed_arch, nr_cpus) in [("x86_64", "x86_64", 64u64), ("sparc32", "sparc32", 32)] {
            let d = root.join(target);
            std::fs::create_dir_all(&d).unwrap();
            let rtabi = serde_json::json!({
                "linux_version_code": 0x601c0, "nr_cpus": nr_cpus, "page_size": 4096, "sizeof_long": 8,
                "sizeof_task_struct": 0x1000, "sizeof_thread_info": 0x20, "ti_cpu": 0x10,
            });
            let m = serde_json::json!({
                "format": 1, "generator": "test", "tree": {}, "target": target, "bed_arch": bed_arch,
                "kbuild_arch": target, "cross_compile": "", "compiler": "", "defconfig": "",
                "rtabi": rtabi, "steps": [], "modules": [],
            });
            std::fs::write(d.join(crate::kbuild::manifest::MANIFEST_FILE), m.to_string()).unwrap();
            std::fs::write(d.join("percpu_test.ko"), b"").unwrap();
        }
    }

    #[test]
    fn kbuild_sets_run_real_modules_and_skip_what_a_build_cannot_take() {
        let dir = std::env::temp_dir().join(format!("percpu-bed-kbuild-set-{}", std::process::id()));
        kbuild_dir(&dir.join("out"));
        let matrix = dir.join("m.toml");
        let text = r#"
            [[arch]]
            name = "x86_64"
            [[arch]]
            name = "sparc32"
            [[arch]]
            name = "s390x"
            [[fixtures]]
            name = "real"
            kbuild = "out"
            [[fixtures]]
            name = "real-x86"
            kbuild = "out"
            only = ["x86_64/zero-based"]
            [[config]]
            name = "cpus-4"
            cpus = 4
            [[config]]
            name = "cpus-64"
            cpus = 64
        "#;
        let p = Plan::parse(text, &matrix, &shipped()).unwrap();
        let job = |id: &str| p.jobs.iter().find(|j| j.id == id).unwrap_or_else(|| panic!("no job {id}"));
        let ok = job("x86_64/zero-based/real:cpus-4");
        assert!(ok.skipped.is_none() && ok.kbuild.as_ref().unwrap().ends_with("out/x86_64"));
        assert!(ok.objects.len() == 1 && ok.objects[0].ends_with("percpu_test.ko"));
        let why = |id: &str| job(id).skipped.clone().unwrap_or_default();
        assert!(why("x86_64/relative/real:cpus-4").contains("built for x86_64/zero-based"));
        assert!(why("sparc32/default/real:cpus-64").contains("NR_CPUS=32"));
        assert!(job("sparc32/default/real:cpus-4").skipped.is_none());
        assert!(why("s390x/default/real:cpus-4").contains("no modules built for s390x"));
        assert!(p.rows.contains(&"x86_64/zero-based/real-x86".to_string()));
        assert!(!p.rows.iter().any(|r| r.ends_with("relative/real-x86") || r.starts_with("sparc32/default/real-x86")));

        let e = Plan::parse(&text.replace("kbuild = \"out\"", "kbuild = \"missing\""), &matrix, &shipped());
        assert!(e.unwrap_err().to_string().contains("percpu-bed kbuild -o"));
        let e = Plan::parse(&text.replace("only = [\"x86_64/zero-based\"]", "only = [\"vax\"]"), &matrix, &shipped());
        assert!(e.unwrap_err().to_string().contains("`vax` names no arch"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
