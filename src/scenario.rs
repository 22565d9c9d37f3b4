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

/// One set of arch names everywhere: `run`, `layout`, `map` and
/// `matrix --arch` accept the adapter and variant (`x86_64` with
/// `--variant relative`), the two together (`x86_64/relative`), or the
/// fixture directory naming both (`x86_64-rel`, `arm64-vhe`, `riscv64` for
/// km), as `fixtures/build --compile` does.  Returns the adapter name and
/// the variant (None: the adapter's default).
pub fn arch_and_variant(arch: &str, variant: Option<&str>) -> Result<(String, Option<String>)> {
    use percpu_arch::isa;
    let (arch, inline) = match arch.split_once('/') {
        Some((a, v)) => (a, Some(v)),
        None => (arch, None),
    };
    let join = |a: &str, from_name: Option<&str>| -> Result<(String, Option<String>)> {
        match (from_name, variant) {
            (Some(x), Some(y)) if x != y => {
                bail!("`{arch}` is {a}/{x}, which contradicts --variant {y}")
            }
            (x, y) => Ok((a.to_string(), x.or(y).map(str::to_string))),
        }
    };
    if let Some(adapter) = isa::lookup(arch) {
        return join(adapter.name(), inline);
    }
    // A fixture directory name: it names the adapter and the variant.
    if inline.is_none() {
        for adapter in isa::all() {
            if let Some(v) = adapter.variants().iter().find(|v| v.fixture_dir == arch) {
                return join(adapter.name(), Some(v.name));
            }
        }
    }
    let dirs: Vec<&str> = isa::all().iter().flat_map(|a| a.variants().iter().map(|v| v.fixture_dir)).collect();
    bail!("unknown arch `{arch}` (known: {}; or a fixture directory: {})", isa::names().join(", "), dirs.join(", "))
}

/// `--kernel VERSION[+OPTION...]` as a clap value parser.
pub fn parse_kernel(spec: &str) -> std::result::Result<percpu_core::KernelProfile, String> {
    percpu_core::KernelProfile::parse(spec).map_err(|e| e.to_string())
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

/// Whether a file name is an object percpu-bed loads: `.o`, `.ko`, and
/// those compressed with xz or zstd.
pub fn is_object_name(name: &str) -> bool {
    let base = name.strip_suffix(".xz").or_else(|| name.strip_suffix(".zst")).unwrap_or(name);
    base.ends_with(".o") || base.ends_with(".ko")
}

/// Every object file of a directory, in name order.
pub fn objects_in_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut objects: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list the objects in {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| is_object_name(&n.to_string_lossy())))
        .collect();
    objects.sort();
    Ok(objects)
}

/// The objects of a directory: `kernel.o` first, then every other object
/// in name order.
pub fn objects_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut objects = objects_in_dir(dir)?;
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

/// `__per_cpu_end - __per_cpu_start` from a System.map (`ADDR TYPE NAME`
/// lines).
pub fn static_size_from_system_map(path: &Path) -> Result<usize> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let find = |sym: &str| -> Result<u64> {
        text.lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (addr, _ty, name) = (f.next()?, f.next()?, f.next()?);
                (name == sym).then(|| u64::from_str_radix(addr, 16).ok()).flatten()
            })
            .next()
            .with_context(|| format!("{}: no {sym} symbol (not a System.map of an SMP kernel?)", path.display()))
    };
    let (start, end) = (find("__per_cpu_start")?, find("__per_cpu_end")?);
    if end < start {
        bail!("{}: __per_cpu_end {end:#x} is below __per_cpu_start {start:#x}", path.display());
    }
    Ok((end - start) as usize)
}

/// The static percpu size of a vmlinux: its `__per_cpu_start` and
/// `__per_cpu_end` symbols, or (a stripped image, such as the one inside a
/// distribution's bzImage) the size of its `.data..percpu` section, which
/// the linker script fills with exactly that area.
pub fn static_size_from_vmlinux(path: &Path) -> Result<usize> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let name = path.display().to_string();
    let elf = percpu_loader::elf::ElfObject::parse(&name, &bytes)?;
    let sym = |s: &str| elf.symbols.iter().find(|y| y.name == s).map(|y| y.value);
    if let (Some(start), Some(end)) = (sym("__per_cpu_start"), sym("__per_cpu_end")) {
        if end < start {
            bail!("{name}: __per_cpu_end {end:#x} is below __per_cpu_start {start:#x}");
        }
        return Ok((end - start) as usize);
    }
    let sec = elf
        .section_by_name(".data..percpu")
        .with_context(|| format!("{name}: neither __per_cpu_start/__per_cpu_end nor a .data..percpu section"))?;
    Ok(sec.size as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_an_arch_variant_is_accepted() {
        let av = |a: &str, v: Option<&str>| arch_and_variant(a, v).map_err(|e| e.to_string());
        let some = |a: &str, v: &str| Ok((a.to_string(), Some(v.to_string())));
        assert_eq!(av("x86_64", None), Ok(("x86_64".into(), None)));
        assert_eq!(av("x86_64", Some("relative")), some("x86_64", "relative"));
        assert_eq!(av("x86_64/relative", None), some("x86_64", "relative"));
        assert_eq!(av("x86_64-rel", None), some("x86_64", "relative"));
        assert_eq!(av("arm64-vhe", None), some("arm64", "el2"));
        assert_eq!(av("arm64-vhe", Some("el2")), some("arm64", "el2"));
        assert_eq!(av("riscv64", None), some("km", "default"));
        assert_eq!(av("km", None), Ok(("km".into(), None)));
        assert!(av("arm64-vhe", Some("el1")).unwrap_err().contains("contradicts --variant el1"));
        let e = av("vax", None).unwrap_err();
        assert!(e.contains("unknown arch `vax`") && e.contains("x86_64-rel") && e.contains("riscv64"), "{e}");
    }
}
