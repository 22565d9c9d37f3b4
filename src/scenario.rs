//! What `run`, `map` and `layout` share: choosing the arch, variant and
//! possible CPUs from the command line, finding the shipped fixtures, and
//! sorting the given objects into the kernel image and modules.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use percpu_core::CpuSet;

/// Where the shipped fixture objects live: `$PERCPU_BED_FIXTURES`, or the
/// set built into the binary (see [`crate::shipped`]).
pub fn fixtures_dir() -> Result<PathBuf> {
    Ok(crate::shipped::fixtures_dir()?)
}

/// The possible mask from `--cpus N` or `--possible MASK` (not both).
pub fn possible_cpus(cpus: Option<u32>, possible: Option<&str>) -> Result<CpuSet> {
    match (cpus, possible) {
        (Some(_), Some(_)) => bail!("give either --cpus N or --possible MASK, not both"),
        (Some(0), None) => bail!("--cpus must be at least 1"),
        (Some(n), None) => {
            if n > percpu_core::cpus::MAX_CPUS {
                bail!("--cpus {n} is beyond the limit of {} cpus", percpu_core::cpus::MAX_CPUS);
            }
            Ok(CpuSet::first_n(n))
        }
        (None, Some(mask)) => Ok(CpuSet::parse_list(mask)?),
        (None, None) => Ok(CpuSet::first_n(4)),
    }
}

/// An object file read into memory, with the name reports use.
pub struct Object {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Read an object file: plain, xz or zstd (`.ko.xz`, `.ko.zst`), regular
/// files only, size-capped (see [`percpu_loader::file`]).  It is named by
/// its file name without the compression suffix.
pub fn read_object(path: &Path) -> Result<Object> {
    let file = percpu_loader::read_object_file(path)?;
    Ok(Object { name: percpu_loader::file::object_name(path), bytes: file.bytes })
}

/// The shipped objects of one fixture directory: `kernel.o` first, then
/// every other object in name order.
pub fn shipped_objects(fixture_dir: &str) -> Result<Vec<PathBuf>> {
    objects_in(&fixtures_dir()?.join(fixture_dir)).context("set PERCPU_BED_FIXTURES to a fixtures/obj directory")
}

/// The objects (`*.o`) of a directory: `kernel.o` first, then every other
/// object in name order.
pub fn objects_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut objects: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list the fixtures in {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "o"))
        .collect();
    objects.sort();
    let kernel = dir.join("kernel.o");
    if !objects.contains(&kernel) {
        bail!("{} has no kernel.o", dir.display());
    }
    objects.retain(|p| p != &kernel);
    objects.insert(0, kernel);
    Ok(objects)
}

/// The kernel image and the modules to load: `kernel` if given (every
/// object is then a module); else the first object the loader does not see
/// as a module, or the shipped `kernel.o` of `fixture_dir` when there is
/// none; with no objects at all, every shipped fixture of `fixture_dir`.
pub fn kernel_and_modules(
    fixture_dir: &str,
    kernel: Option<PathBuf>,
    objects: Vec<PathBuf>,
) -> Result<(Object, Vec<Object>)> {
    let shipped = || shipped_objects(fixture_dir);
    let (kernel_path, module_paths) = match (kernel, objects.is_empty()) {
        (Some(k), _) => (k, objects),
        (None, true) => {
            let mut all = shipped()?;
            let k = all.remove(0);
            (k, all)
        }
        (None, false) => {
            let mut kernel = None;
            let mut modules = Vec::new();
            for p in objects {
                let object = read_object(&p)?;
                let report = percpu_loader::inspect(&object.name, &object.bytes)
                    .with_context(|| format!("cannot read {}", p.display()))?;
                if kernel.is_none() && report.role != percpu_loader::ObjectRole::Module {
                    kernel = Some(p);
                } else {
                    modules.push(p);
                }
            }
            let k = match kernel {
                Some(k) => k,
                None => shipped()?.remove(0),
            };
            (k, modules)
        }
    };
    let kernel = read_object(&kernel_path)?;
    let modules = module_paths.iter().map(|p| read_object(p)).collect::<Result<Vec<_>>>()?;
    Ok((kernel, modules))
}
