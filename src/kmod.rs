//! Real kernel modules on the command line: telling them from fixtures,
//! finding the tree's runtime ABI (the `percpu-bed kbuild` manifest beside
//! them, or a build directory), and their expectation files.
//!
//! # Expectation files
//!
//! `<module>.expect.toml` beside `<module>.ko` says what the module's init
//! must do (every key is optional):
//!
//! ```toml
//! [init]
//! returns = "-EAGAIN"           # init_module's return value (default 0): an
//!                               # int, or an errno name as the tree defines it
//!                               # (alpha's EAGAIN is 35, everyone else's 11)
//! printk = ["percpu test done"] # lines init must print, in this order
//!
//! fail_alloc = [1]              # these alloc_percpu calls of each run (1 = the
//!                               # first) fail, as under memory pressure
//!
//! [planted]                     # the module is a planted bug: it must be caught
//! bug = "reserved chunk exhausted by a big module percpu (bugzilla 204119)"
//! needs = ["smp"]               # what a configuration needs to show the bug:
//!                               # "smp" (2+ possible CPUs), "sparse" (holes in
//!                               # the possible mask), "percpu-above-4g" (CPUs'
//!                               # copies at addresses above 4 GiB)
//! ```
//!
//! A planted bug that is not caught where its `needs` are not met is
//! reported as latent there (still not a pass).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use percpu_arch::check::{ModuleExpect, Needs};
use percpu_arch::runtime::RtAbi;
use percpu_loader::ElfObject;
use serde::Deserialize;

use crate::kbuild::manifest::{Manifest, MANIFEST_FILE};
use crate::kbuild::modules::expect_file_name;
use crate::scenario::Object;

/// Whether an object is a module built by a kernel tree's Kbuild (it has a
/// `.modinfo` with a `vermagic=`), as opposed to a percpu-bed fixture.
pub fn is_kernel_module(bytes: &[u8]) -> bool {
    let Ok(obj) = ElfObject::parse("object", bytes) else { return false };
    obj.sections
        .iter()
        .find(|s| s.name == ".modinfo")
        .is_some_and(|s| obj.section_data(s.index).windows(9).any(|w| w == b"vermagic="))
}

/// The `vermagic=` of a module (`6.1.192 SMP preempt mod_unload`).
pub fn vermagic(bytes: &[u8]) -> Option<String> {
    let obj = ElfObject::parse("object", bytes).ok()?;
    let s = obj.sections.iter().find(|s| s.name == ".modinfo")?;
    obj.section_data(s.index)
        .split(|&b| b == 0)
        .find_map(|f| f.strip_prefix(b"vermagic="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The one arch variant real modules of this tree run on, where the arch
/// has several: the code is compiled for one percpu model (x86_64's
/// zero-based offsets until 6.15, %gs-relative from 6.15; arm64 EL1).
pub fn variant_for(arch: &str, abi: &RtAbi) -> Option<&'static str> {
    match arch {
        "x86_64" if abi.version() >= (6, 15) => Some("relative"),
        "x86_64" => Some("zero-based"),
        "arm64" => Some("el1"),
        _ => None,
    }
}

/// The allocator profile real modules of this tree run with: the tree's
/// own version (with `asked`'s options where that version has them), so a
/// 6.1 tree's modules meet 6.1's percpu setup whatever `--kernel` says.
/// A version percpu-core has no profile for keeps `asked`, with a warning.
pub fn profile_for(abi: &RtAbi, asked: &percpu_core::KernelProfile) -> percpu_core::KernelProfile {
    let (major, minor) = abi.version();
    match percpu_core::KernelProfile::new(major as u32, minor as u32, asked.options) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(
                "the modules' tree is Linux {}: {e}; modelling the percpu setup of {}.{}",
                abi.kernel_version(),
                asked.major,
                asked.minor
            );
            asked.clone()
        }
    }
}

/// Where the runtime ABI of real modules comes from.
pub struct RuntimeSource {
    pub abi: RtAbi,
    /// The manifest, when it came from one.
    pub manifest: Option<Manifest>,
    /// Where it was found (for reports).
    pub from: PathBuf,
}

/// The runtime ABI for `modules`: from `kbuild` (a `percpu-bed kbuild`
/// output directory or its manifest, or a Kbuild `O=` directory in which
/// `pcpubed_rtabi.ko` was built), else from the manifest beside the first
/// module.
pub fn runtime_abi(kbuild: Option<&Path>, module_paths: &[PathBuf]) -> Result<RuntimeSource> {
    let candidates: Vec<PathBuf> = match kbuild {
        Some(p) if p.is_file() => vec![p.to_path_buf()],
        Some(p) => vec![p.join(MANIFEST_FILE), p.join(format!("{}.ko", crate::kbuild::rtabi::PROBE_MODULE))],
        None => module_paths
            .iter()
            .filter_map(|m| m.parent())
            .map(|d| if d.as_os_str().is_empty() { Path::new(".") } else { d })
            .map(|d| d.join(MANIFEST_FILE))
            .collect(),
    };
    for c in &candidates {
        if !c.is_file() {
            continue;
        }
        if c.extension().is_some_and(|e| e == "ko") {
            let bytes = std::fs::read(c).with_context(|| format!("cannot read {}", c.display()))?;
            let obj = ElfObject::parse(&c.display().to_string(), &bytes)?;
            let recs = percpu_loader::rtabi::read(&obj)?
                .with_context(|| format!("{} has no {}", c.display(), percpu_loader::rtabi::SECTION))?;
            return Ok(RuntimeSource { abi: RtAbi::from_records(&recs)?, manifest: None, from: c.clone() });
        }
        let m = Manifest::read(c)?;
        let abi = RtAbi::from_records(&m.rtabi).with_context(|| format!("in {}", c.display()))?;
        return Ok(RuntimeSource { abi, manifest: Some(m), from: c.clone() });
    }
    bail!(
        "real kernel modules need the runtime ABI of the tree they were built from (structure offsets from its \
         headers), and none was found: looked for {}. Build them with `percpu-bed kbuild` (which writes {MANIFEST_FILE} \
         beside them), or pass --kbuild DIR (a kbuild output directory)",
        candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", ")
    )
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ExpectFile {
    #[serde(default)]
    init: InitExpect,
    planted: Option<Planted>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct InitExpect {
    #[serde(default)]
    returns: Returns,
    #[serde(default)]
    printk: Vec<String>,
    #[serde(default)]
    fail_alloc: Vec<u32>,
}

/// `returns = -11` or `returns = "-EAGAIN"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Returns {
    Value(i64),
    Errno(String),
}

impl Default for Returns {
    fn default() -> Self {
        Returns::Value(0)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Planted {
    bug: String,
    #[serde(default)]
    needs: Vec<String>,
}

/// Parse an expectation file's text; errno names are looked up in the
/// tree's runtime ABI.
pub fn parse_expect(text: &str, path: &Path, abi: &RtAbi) -> Result<ModuleExpect> {
    let f: ExpectFile =
        toml::from_str(text).with_context(|| format!("{}: not a valid expectation file", path.display()))?;
    let returns = match f.init.returns {
        Returns::Value(v) => v,
        Returns::Errno(name) => {
            let (neg, bare) = match name.trim().strip_prefix('-') {
                Some(b) => (true, b.trim()),
                None => (false, name.trim()),
            };
            let v = abi.errno(bare).with_context(|| {
                format!(
                    "{}: init.returns = {name:?}: {bare} is not an errno the tree's runtime ABI records \
                     (give a number, or add it to pcpubed_rtabi.c)",
                    path.display()
                )
            })?;
            if neg {
                -v
            } else {
                v
            }
        }
    };
    if !(i32::MIN as i64..=i32::MAX as i64).contains(&returns) {
        bail!("{}: init.returns = {returns} does not fit an int", path.display());
    }
    if let Some(n) = f.init.fail_alloc.iter().find(|&&n| n == 0) {
        bail!("{}: init.fail_alloc counts alloc_percpu calls from 1, not {n}", path.display());
    }
    let needs = match &f.planted {
        Some(p) => p
            .needs
            .iter()
            .map(|n| {
                n.parse::<Needs>().map_err(|known| {
                    anyhow::anyhow!("{}: planted.needs: unknown condition {n:?} (known: {known})", path.display())
                })
            })
            .collect::<Result<Vec<_>>>()?,
        None => Vec::new(),
    };
    Ok(ModuleExpect {
        init_returns: returns,
        printk: f.init.printk,
        fail_alloc: f.init.fail_alloc,
        planted: f.planted.map(|p| p.bug),
        needs,
    })
}

/// The expectation of every module that has a file beside it, by object name.
pub fn expectations(modules: &[(PathBuf, &Object)], abi: &RtAbi) -> Result<HashMap<String, ModuleExpect>> {
    let mut out = HashMap::new();
    for (path, obj) in modules {
        let stem = obj.name.strip_suffix(".ko").unwrap_or(&obj.name);
        let file = path.with_file_name(expect_file_name(stem));
        if file.is_file() {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            out.insert(obj.name.clone(), parse_expect(&text, &file, abi)?);
        }
    }
    Ok(out)
}

/// The records of a runtime ABI as `name = value` lines, for `-v` logs.
pub fn describe_abi(abi: &RtAbi) -> String {
    let r: &BTreeMap<String, u64> = &abi.records;
    r.iter().map(|(k, v)| format!("{k}={v:#x}")).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
/// A runtime ABI with alpha's EAGAIN, as the probe records it (tests).
pub(crate) fn alpha_like_abi() -> RtAbi {
    let mut r: BTreeMap<String, u64> = [
        ("linux_version_code", 0x6_01_c0),
        ("nr_cpus", 32),
        ("page_size", 0x2000),
        ("sizeof_long", 8),
        ("sizeof_task_struct", 0x1000),
        ("sizeof_thread_info", 0x80),
        ("errno_EAGAIN", 35),
        ("errno_EINVAL", 22),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    r.insert("ti_cpu".into(), 0x10);
    RtAbi::from_records(&r).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectation_files_parse_and_refuse_typos() {
        let p = Path::new("m.expect.toml");
        let abi = alpha_like_abi();
        let e = parse_expect("[init]\nreturns = -11\nprintk = [\"done\"]\n", p, &abi).unwrap();
        assert_eq!((e.init_returns, e.printk.as_slice(), e.planted.as_deref()), (-11, &["done".to_string()][..], None));
        let e = parse_expect("[planted]\nbug = \"x\"\n", p, &abi).unwrap();
        assert_eq!((e.init_returns, e.planted.as_deref()), (0, Some("x")));
        assert!(parse_expect("[init]\nreturn = 0\n", p, &abi).unwrap_err().to_string().contains("m.expect.toml"));
        assert!(parse_expect("[init]\nreturns = 4294967296\n", p, &abi).is_err());
        let e = parse_expect(
            "[init]\nfail_alloc = [1, 3]\n[planted]\nbug = \"b\"\nneeds = [\"smp\", \"sparse\"]\n",
            p,
            &abi,
        )
        .unwrap();
        assert_eq!(e.fail_alloc, [1, 3]);
        assert_eq!(e.needs, [Needs::Smp, Needs::Sparse]);
        let err = parse_expect("[planted]\nbug = \"b\"\nneeds = [\"numa\"]\n", p, &abi).unwrap_err().to_string();
        assert!(err.contains("\"numa\"") && err.contains("percpu-above-4g"), "{err}");
        assert!(parse_expect("[init]\nfail_alloc = [0]\n", p, &abi).is_err(), "allocations count from 1");
        assert_eq!(parse_expect("", p, &abi).unwrap(), ModuleExpect::default());
    }

    #[test]
    fn errno_names_take_the_trees_values() {
        let p = Path::new("m.expect.toml");
        let abi = alpha_like_abi();
        assert_eq!(parse_expect("[init]\nreturns = \"-EAGAIN\"\n", p, &abi).unwrap().init_returns, -35);
        assert_eq!(parse_expect("[init]\nreturns = \"EINVAL\"\n", p, &abi).unwrap().init_returns, 22);
        let e = parse_expect("[init]\nreturns = \"-EWHAT\"\n", p, &abi).unwrap_err();
        assert!(format!("{e:#}").contains("EWHAT is not an errno"), "{e:#}");
        assert_eq!(abi.errno_name(35), Some("EAGAIN"));
    }

    #[test]
    fn fixtures_are_not_kernel_modules() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/obj/x86_64");
        let b = std::fs::read(dir.join("mod_basic.o")).unwrap();
        assert!(!is_kernel_module(&b));
        assert!(vermagic(&b).is_none());
        assert!(!is_kernel_module(b"not an elf"));
    }
}
