//! What `run`, `map` and `layout` share: choosing the arch, variant and
//! possible CPUs from the command line, finding the shipped fixtures, and
//! sorting the given objects into the kernel image and modules.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use percpu_core::CpuSet;

/// Where the shipped fixture objects live: `$PERCPU_BED_FIXTURES`, or the
/// source tree this binary was built from.
pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os("PERCPU_BED_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/obj"),
    }
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

pub fn read_object(path: &Path) -> Result<Object> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    Ok(Object { name, bytes })
}

/// The shipped objects of one fixture directory: `kernel.o` first, then
/// every other object in name order.
pub fn shipped_objects(fixture_dir: &str) -> Result<Vec<PathBuf>> {
    objects_in(&fixtures_dir().join(fixture_dir)).context("set PERCPU_BED_FIXTURES to the shipped fixtures/obj")
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
                let report = percpu_loader::inspect_path(&p).with_context(|| format!("cannot read {}", p.display()))?;
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
