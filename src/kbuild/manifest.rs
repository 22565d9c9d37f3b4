//! `percpu-bed-kbuild.json`: what a kbuild output directory holds and how
//! it was made.  `percpu-bed run` reads it from a module's directory to get
//! the tree's runtime ABI (and says which tree and configuration a result
//! belongs to).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{KbuildError, Target, Tree};

/// The manifest's file name in an output directory.
pub const MANIFEST_FILE: &str = "percpu-bed-kbuild.json";
/// Bumped when a field changes meaning.
pub const MANIFEST_FORMAT: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepTime {
    pub step: String,
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModuleEntry {
    pub name: String,
    /// File name in the output directory.
    pub file: String,
    pub sha256: String,
    /// The module set: `tree`, `pcpubed` or `user-<dir>`.
    pub set: String,
    /// The expectation file beside it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// What built it (`percpu-bed <version>`).
    pub generator: String,
    /// The tree: kind, path, key, kernel version.
    pub tree: serde_json::Value,
    pub target: String,
    /// The percpu-bed arch that runs these modules (`run --arch`).
    pub bed_arch: String,
    pub kbuild_arch: String,
    pub cross_compile: String,
    pub compiler: String,
    pub defconfig: String,
    /// The runtime ABI probe's records (see `rtabi`).
    pub rtabi: BTreeMap<String, u64>,
    pub steps: Vec<StepTime>,
    pub modules: Vec<ModuleEntry>,
}

impl Manifest {
    pub fn new(
        tree: &Tree,
        target: &Target,
        compiler: &str,
        rtabi: BTreeMap<String, u64>,
        steps: Vec<StepTime>,
    ) -> Self {
        Manifest {
            format: MANIFEST_FORMAT,
            generator: format!("percpu-bed {}", env!("CARGO_PKG_VERSION")),
            tree: serde_json::to_value(tree).unwrap_or(serde_json::Value::Null),
            target: target.name.into(),
            bed_arch: target.bed_arch.into(),
            kbuild_arch: target.kbuild_arch.into(),
            cross_compile: target.cross_compile.into(),
            compiler: compiler.into(),
            defconfig: if tree.is_headers() { "(the distribution's .config)".into() } else { target.defconfig.into() },
            rtabi,
            steps,
            modules: Vec::new(),
        }
    }

    pub fn write(&self, path: &Path) -> Result<(), KbuildError> {
        let text = serde_json::to_string_pretty(self).expect("a manifest serialises");
        std::fs::write(path, text + "\n").map_err(|e| KbuildError::io(path, e))
    }

    pub fn read(path: &Path) -> Result<Manifest, KbuildError> {
        let text = std::fs::read_to_string(path).map_err(|e| KbuildError::io(path, e))?;
        let m: Manifest = serde_json::from_str(&text).map_err(|e| KbuildError::Module {
            target: "manifest".into(),
            what: format!("{}: not a percpu-bed kbuild manifest: {e}", path.display()),
        })?;
        if m.format != MANIFEST_FORMAT {
            return Err(KbuildError::Module {
                target: m.target,
                what: format!("{}: manifest format {} (this percpu-bed reads {MANIFEST_FORMAT}): rebuild with `percpu-bed kbuild`", path.display(), m.format),
            });
        }
        Ok(m)
    }

    /// The kernel release the tree reports, from the probe (`6.1.192`).
    pub fn kernel_version(&self) -> String {
        super::rtabi::version_of_code(self.rtabi.get("linux_version_code").copied().unwrap_or(0))
    }
}
