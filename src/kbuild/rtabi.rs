//! Reading the runtime ABI probe a build produced (see
//! `fixtures/kmod/src/pcpubed_rtabi.c` and `percpu_loader::rtabi`).

use std::collections::BTreeMap;
use std::path::Path;

use percpu_loader::ElfObject;

use super::{KbuildError, Target};

/// The probe module's name (its `.ko` is built in the project's set).
pub const PROBE_MODULE: &str = "pcpubed_rtabi";

/// Records every probe must have, whatever the arch.
const REQUIRED: &[&str] = &["rtabi_version", "linux_version_code", "nr_cpus", "page_size", "sizeof_long"];

/// The records of the probe built at `ko`.
pub fn read_probe(target: &Target, ko: &Path) -> Result<BTreeMap<String, u64>, KbuildError> {
    let err = |reason: String| KbuildError::RtAbi { target: target.name.into(), reason };
    let bytes = std::fs::read(ko).map_err(|e| err(format!("{}: {e}", ko.display())))?;
    let obj = ElfObject::parse(PROBE_MODULE, &bytes).map_err(|e| err(e.to_string()))?;
    let recs = percpu_loader::rtabi::read(&obj)
        .map_err(|e| err(e.to_string()))?
        .ok_or_else(|| err(format!("{} has no {} section", ko.display(), percpu_loader::rtabi::SECTION)))?;
    for r in REQUIRED {
        if !recs.contains_key(*r) {
            return Err(err(format!("record `{r}` is missing")));
        }
    }
    Ok(recs)
}

/// `LINUX_VERSION_CODE` as `a.b.c`.
pub fn version_of_code(code: u64) -> String {
    format!("{}.{}.{}", code >> 16, (code >> 8) & 0xff, code & 0xff)
}
