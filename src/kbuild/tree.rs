//! Kernel trees to build against: Debian's `linux-source-6.1` unpacked into
//! the cache, a user's own tree, or Debian's configured header packages.
//!
//! Nothing here is ever written into the checkout: the cache lives under
//! `$PERCPU_BED_CACHE`, else `$XDG_CACHE_HOME/percpu-bed`, else
//! `~/.cache/percpu-bed`.
//!
//! ```text
//! <cache>/sources/debian-linux-source-6.1_<version>/        unpacked tree (read only to builds)
//! <cache>/headers/<abi>-<flavour>_<version>/                unpacked header packages
//! <cache>/kbuild/<tree key>/<target>/{build,mod,out}        see `super`
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{run_logged, KbuildError, Progress};

/// Where percpu-bed keeps downloaded trees and build directories.
#[derive(Clone, Debug)]
pub struct Cache {
    pub root: PathBuf,
}

impl Cache {
    /// `$PERCPU_BED_CACHE`, `$XDG_CACHE_HOME/percpu-bed` or `~/.cache/percpu-bed`.
    pub fn from_env() -> Result<Cache, KbuildError> {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let root = var("PERCPU_BED_CACHE")
            .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("percpu-bed")))
            .or_else(|| var("HOME").map(|h| h.join(".cache/percpu-bed")))
            .ok_or(KbuildError::NoCache)?;
        Ok(Cache { root })
    }

    pub fn at(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    pub fn sources(&self) -> PathBuf {
        self.root.join("sources")
    }
    pub fn headers(&self) -> PathBuf {
        self.root.join("headers")
    }
    pub fn kbuild(&self) -> PathBuf {
        self.root.join("kbuild")
    }
}

/// What kind of tree a build uses.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum TreeKind {
    /// Debian's `linux-source-6.1` package, unpacked into the cache.
    DebianSource { package: String, version: String },
    /// A kernel source tree the user named (`--tree DIR`).
    Dir,
    /// Debian's configured headers for one architecture (`linux-headers-<abi>-<flavour>`
    /// with `-common` and `linux-kbuild-6.1`): configured and prepared by Debian,
    /// built with `make -C` on the headers directory, no `O=`.
    DebianHeaders { package: String, version: String },
}

/// A kernel tree ready to configure (sources) or to build modules against (headers).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Tree {
    #[serde(flatten)]
    pub kind: TreeKind,
    /// The source tree (`make -C`), or the configured headers directory.
    pub path: PathBuf,
    /// Names this tree in cache paths: `debian-6.1.192-3`, `tree-linux-1a2b3c4d`.
    pub key: String,
    /// `VERSION.PATCHLEVEL.SUBLEVEL` from its Makefile.
    pub kernel_version: String,
}

impl Tree {
    /// A human description for progress lines and reports.
    pub fn describe(&self) -> String {
        match &self.kind {
            TreeKind::DebianSource { package, version } => format!("Debian {package} {version}"),
            TreeKind::Dir => format!("tree {} (Linux {})", self.path.display(), self.kernel_version),
            TreeKind::DebianHeaders { package, version } => format!("Debian {package} {version}"),
        }
    }
    pub fn is_headers(&self) -> bool {
        matches!(self.kind, TreeKind::DebianHeaders { .. })
    }
}

/// `VERSION.PATCHLEVEL.SUBLEVEL` of the top-level Makefile of a tree.
pub fn makefile_version(tree: &Path) -> Result<String, KbuildError> {
    let mk = tree.join("Makefile");
    let text = std::fs::read_to_string(&mk).map_err(|e| KbuildError::NotATree {
        path: tree.to_path_buf(),
        reason: format!("cannot read {}: {e}", mk.display()),
    })?;
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    match (field("VERSION"), field("PATCHLEVEL"), field("SUBLEVEL")) {
        (Some(v), Some(p), Some(s)) if !v.is_empty() => Ok(format!("{v}.{p}.{}", if s.is_empty() { "0" } else { &s })),
        _ => Err(KbuildError::NotATree {
            path: tree.to_path_buf(),
            reason: "its Makefile has no VERSION/PATCHLEVEL/SUBLEVEL".into(),
        }),
    }
}

/// A user's kernel source tree.
pub fn user_tree(path: &Path) -> Result<Tree, KbuildError> {
    let abs =
        path.canonicalize().map_err(|e| KbuildError::NotATree { path: path.to_path_buf(), reason: e.to_string() })?;
    for must in ["Makefile", "Kconfig", "include/linux/percpu.h", "mm/percpu.c", "scripts/Makefile.build"] {
        if !abs.join(must).is_file() {
            return Err(KbuildError::NotATree {
                path: abs.clone(),
                reason: format!("{must} is missing: not a Linux source tree"),
            });
        }
    }
    let kernel_version = makefile_version(&abs)?;
    let base = abs.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "root".into());
    let base: String =
        base.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect();
    let key = format!("tree-{base}-{}", &super::sha256_hex(abs.as_os_str().as_encoded_bytes())[..12]);
    Ok(Tree { kind: TreeKind::Dir, path: abs, key, kernel_version })
}

/// The Debian source package the default tree comes from.
pub const DEBIAN_SOURCE_PACKAGE: &str = "linux-source-6.1";

/// Debian's `linux-source-6.1`, downloaded with `apt-get download` and
/// unpacked into the cache on first use.  Later calls reuse the newest
/// unpacked copy without asking apt, so a cached run needs no network;
/// `refresh` asks apt for the current version and unpacks it if it is new.
pub fn debian_source(cache: &Cache, refresh: bool, progress: &Progress) -> Result<Tree, KbuildError> {
    let dir = cache.sources();
    let prefix = format!("debian-{DEBIAN_SOURCE_PACKAGE}_");
    if !refresh {
        if let Some((version, path)) = newest_unpacked(&dir, &prefix) {
            return debian_tree(path, version);
        }
    }
    std::fs::create_dir_all(&dir).map_err(|e| KbuildError::io(&dir, e))?;
    let dl = tempdir_in(&dir, "download")?;
    progress.step("sources", &format!("apt-get download {DEBIAN_SOURCE_PACKAGE}"));
    let deb = apt_download(&dl, DEBIAN_SOURCE_PACKAGE, &dl.join("apt.log"))?;
    let version = deb_version(&deb).ok_or_else(|| KbuildError::Download {
        package: DEBIAN_SOURCE_PACKAGE.into(),
        reason: format!("unexpected file name {}", deb.display()),
    })?;
    let final_dir = dir.join(format!("{prefix}{version}"));
    if final_dir.join(".complete").is_file() {
        let _ = std::fs::remove_dir_all(&dl);
        return debian_tree(final_dir.join(DEBIAN_SOURCE_PACKAGE), version);
    }
    // Unpack next to the final place and rename, so an interrupted unpack
    // never looks complete.
    progress.step("sources", &format!("unpacking {DEBIAN_SOURCE_PACKAGE} {version} (about 1.5 GB)"));
    let unpack = dl.join("unpack");
    std::fs::create_dir_all(&unpack).map_err(|e| KbuildError::io(&unpack, e))?;
    let log = dl.join("unpack.log");
    let tarball = format!("./usr/src/{DEBIAN_SOURCE_PACKAGE}.tar.xz");
    run_logged(
        Command::new("sh").arg("-c").arg(format!(
            "dpkg-deb --fsys-tarfile '{}' | tar -xf - -C '{}' '{tarball}' && tar -xf '{}/{tarball}' -C '{}' && rm -f '{}/{tarball}'",
            deb.display(),
            unpack.display(),
            unpack.display(),
            unpack.display(),
            unpack.display()
        )),
        &log,
        "unpacking the source package",
    )?;
    let tree = unpack.join(DEBIAN_SOURCE_PACKAGE);
    if !tree.join("Makefile").is_file() {
        return Err(KbuildError::Download {
            package: DEBIAN_SOURCE_PACKAGE.into(),
            reason: format!("the package did not contain {DEBIAN_SOURCE_PACKAGE}.tar.xz with a kernel tree"),
        });
    }
    std::fs::write(unpack.join(".complete"), version.as_bytes()).map_err(|e| KbuildError::io(&unpack, e))?;
    match std::fs::rename(&unpack, &final_dir) {
        Ok(()) => {}
        // Another run unpacked the same version meanwhile: use theirs.
        Err(_) if final_dir.join(".complete").is_file() => {}
        Err(e) => return Err(KbuildError::io(&final_dir, e)),
    }
    let _ = std::fs::remove_dir_all(&dl);
    debian_tree(final_dir.join(DEBIAN_SOURCE_PACKAGE), version)
}

fn debian_tree(path: PathBuf, version: String) -> Result<Tree, KbuildError> {
    let kernel_version = makefile_version(&path)?;
    Ok(Tree {
        kind: TreeKind::DebianSource { package: DEBIAN_SOURCE_PACKAGE.into(), version: version.clone() },
        path,
        key: format!("debian-{version}"),
        kernel_version,
    })
}

/// The newest completely unpacked `<prefix><version>` directory in `dir`,
/// by Debian version order (`dpkg --compare-versions`), with the tree path.
fn newest_unpacked(dir: &Path, prefix: &str) -> Option<(String, PathBuf)> {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join(".complete").is_file())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix(prefix).map(str::to_string))
        .collect();
    found.sort_by(|a, b| compare_debian_versions(a, b));
    let v = found.pop()?;
    let path = dir.join(format!("{prefix}{v}")).join(DEBIAN_SOURCE_PACKAGE);
    Some((v, path))
}

/// Debian version order, by `dpkg --compare-versions` (falling back to
/// string order where dpkg is missing).
pub fn compare_debian_versions(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    if a == b {
        return Ordering::Equal;
    }
    match Command::new("dpkg").args(["--compare-versions", a, "lt", b]).status() {
        Ok(s) if s.success() => Ordering::Less,
        Ok(_) => Ordering::Greater,
        Err(_) => a.cmp(b),
    }
}

/// `<name>_<version>_<arch>.deb` -> version (with the epoch's `%3a` decoded).
fn deb_version(deb: &Path) -> Option<String> {
    let name = deb.file_name()?.to_str()?;
    let mut parts = name.strip_suffix(".deb")?.split('_');
    let _pkg = parts.next()?;
    Some(parts.next()?.replace("%3a", ":"))
}

/// A fresh directory under `dir` that no other run uses.
fn tempdir_in(dir: &Path, what: &str) -> Result<PathBuf, KbuildError> {
    let p = dir.join(format!(".{what}-{}-{}", std::process::id(), nanos()));
    std::fs::create_dir_all(&p).map_err(|e| KbuildError::io(&p, e))?;
    Ok(p)
}

fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// `apt-get download PKG` into `dir`; the path of the .deb.
pub(crate) fn apt_download(dir: &Path, package: &str, log: &Path) -> Result<PathBuf, KbuildError> {
    if which("apt-get").is_none() {
        return Err(KbuildError::Download {
            package: package.into(),
            reason: "apt-get is not available: on a non-Debian machine pass --tree DIR (your own kernel tree)".into(),
        });
    }
    let before: Vec<PathBuf> = debs_in(dir);
    let mut cmd = Command::new("apt-get");
    cmd.arg("download").arg("-q").arg(package).current_dir(dir);
    run_logged(&mut cmd, log, &format!("apt-get download {package}")).map_err(|e| KbuildError::Download {
        package: package.into(),
        reason: format!(
            "{e}\n(is the package known to apt? run `apt-get update`, or pass --tree DIR for your own kernel tree)"
        ),
    })?;
    let name = package.split(':').next().unwrap_or(package);
    debs_in(dir)
        .into_iter()
        .find(|p| {
            !before.contains(p)
                && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&format!("{name}_")))
        })
        .ok_or_else(|| KbuildError::Download { package: package.into(), reason: "apt-get wrote no .deb".into() })
}

fn debs_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "deb")).collect()
        })
        .unwrap_or_default()
}

/// The full path of a program on `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}

// ----- Debian's configured header packages ---------------------------------

/// Debian's configured headers for `debian_arch` (amd64, arm64, s390x):
/// `linux-headers-<abi>-<flavour>` (for that architecture), `-common` and
/// the host's `linux-kbuild-6.1`, unpacked together into the cache, with
/// the arch package's Makefile pointed at the unpacked `-common`.  The ABI
/// is the one `linux-headers-<flavour>` depends on; if that build is not
/// in the archive for the architecture, the newest one that is.
pub fn debian_headers(cache: &Cache, debian_arch: &str, progress: &Progress) -> Result<Tree, KbuildError> {
    let flavour = debian_arch; // amd64, arm64, s390x: Debian's default flavour is named after the arch
    let native = native_debian_arch();
    let qualified = |p: &str| if debian_arch == native { p.to_string() } else { format!("{p}:{debian_arch}") };
    let dir = cache.headers();
    std::fs::create_dir_all(&dir).map_err(|e| KbuildError::io(&dir, e))?;

    // Reuse an unpacked copy without asking apt (cached runs need no network).
    if let Some(t) = newest_headers(&dir, flavour) {
        return Ok(t);
    }
    ensure_foreign_arch(debian_arch)?;
    progress.step("headers", &format!("finding Debian's linux-headers for {debian_arch}"));
    let abi = header_abi(debian_arch, flavour, &qualified)?;
    let dl = tempdir_in(&dir, "download")?;
    let log = dl.join("apt.log");
    let arch_pkg = format!("linux-headers-{abi}-{flavour}");
    let mut debs = Vec::new();
    for p in [qualified(&arch_pkg), format!("linux-headers-{abi}-common"), "linux-kbuild-6.1".to_string()] {
        progress.step("headers", &format!("apt-get download {p}"));
        debs.push(apt_download(&dl, &p, &log)?);
    }
    let version = deb_version(&debs[0]).unwrap_or_default();
    let root = dl.join("root");
    for deb in &debs {
        let mut cmd = Command::new("dpkg-deb");
        cmd.arg("-x").arg(deb).arg(&root);
        run_logged(&mut cmd, &dl.join("unpack.log"), "unpacking a header package")?;
    }
    let final_dir = dir.join(format!("{abi}-{flavour}_{version}"));
    let hdr = final_dir.join("root/usr/src").join(format!("linux-headers-{abi}-{flavour}"));
    // The arch package includes the -common Makefile by absolute path.
    let common = final_dir.join("root/usr/src").join(format!("linux-headers-{abi}-common/Makefile"));
    let mk = root.join("usr/src").join(format!("linux-headers-{abi}-{flavour}/Makefile"));
    std::fs::write(
        &mk,
        format!("# percpu-bed: was an include of /usr/src/...; unpacked elsewhere\ninclude {}\n", common.display()),
    )
    .map_err(|e| KbuildError::io(&mk, e))?;
    std::fs::write(dl.join("root/.complete"), version.as_bytes()).map_err(|e| KbuildError::io(&dl, e))?;
    if final_dir.exists() {
        let _ = std::fs::remove_dir_all(&final_dir);
    }
    std::fs::create_dir_all(&final_dir).map_err(|e| KbuildError::io(&final_dir, e))?;
    std::fs::rename(&root, final_dir.join("root")).map_err(|e| KbuildError::io(&final_dir, e))?;
    for deb in debs {
        let _ = std::fs::rename(&deb, final_dir.join(deb.file_name().unwrap_or_default()));
    }
    let _ = std::fs::remove_dir_all(&dl);
    headers_tree(hdr, arch_pkg, version)
}

fn headers_tree(hdr: PathBuf, package: String, version: String) -> Result<Tree, KbuildError> {
    // The headers directory has no top-level version fields; the kernel
    // release is in .kernelvariables and include/config/kernel.release.
    let release = std::fs::read_to_string(hdr.join("include/config/kernel.release")).unwrap_or_default();
    let kernel_version = version.split(['-', '+', '~']).next().unwrap_or("").to_string();
    let key = format!("debian-headers-{}", package.trim_start_matches("linux-headers-"));
    let _ = release;
    Ok(Tree { kind: TreeKind::DebianHeaders { package, version }, path: hdr, key, kernel_version })
}

fn newest_headers(dir: &Path, flavour: &str) -> Option<Tree> {
    let mut found: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("root/.complete").is_file())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let (abi_flavour, version) = name.split_once('_')?;
            let abi = abi_flavour.strip_suffix(&format!("-{flavour}"))?;
            Some((version.to_string(), e.path().join("root/usr/src").join(format!("linux-headers-{abi}-{flavour}"))))
        })
        .collect();
    found.sort_by(|a, b| compare_debian_versions(&a.0, &b.0));
    let (version, hdr) = found.pop()?;
    let package = hdr.file_name()?.to_str()?.to_string();
    headers_tree(hdr, package, version).ok()
}

/// dpkg's native architecture (amd64 on the project's machines).
pub fn native_debian_arch() -> String {
    Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "amd64".into())
}

/// apt must know `arch`'s packages to download them: add it as a foreign
/// architecture (root only) and update, or say exactly what to run.
fn ensure_foreign_arch(arch: &str) -> Result<(), KbuildError> {
    if arch == native_debian_arch() {
        return Ok(());
    }
    let foreign =
        Command::new("dpkg").arg("--print-foreign-architectures").output().map(|o| o.stdout).unwrap_or_default();
    if String::from_utf8_lossy(&foreign).lines().any(|l| l.trim() == arch) {
        return Ok(());
    }
    let root = Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
    if !root {
        return Err(KbuildError::Download {
            package: format!("linux-headers (for {arch})"),
            reason: format!(
                "apt does not know {arch} packages; run: sudo dpkg --add-architecture {arch} && sudo apt-get update"
            ),
        });
    }
    let log = std::env::temp_dir().join(format!("percpu-bed-apt-{}.log", std::process::id()));
    run_logged(Command::new("dpkg").args(["--add-architecture", arch]), &log, "dpkg --add-architecture")?;
    run_logged(Command::new("apt-get").args(["update", "-qq"]), &log, "apt-get update")?;
    let _ = std::fs::remove_file(&log);
    Ok(())
}

/// The ABI (`6.1.0-57`) of the current header package for `flavour`: the one
/// `linux-headers-<flavour>` depends on if it can be downloaded for the
/// architecture, else the newest `linux-headers-6.1.0-N-<flavour>` apt has.
fn header_abi(arch: &str, flavour: &str, qualified: &dyn Fn(&str) -> String) -> Result<String, KbuildError> {
    let out = |args: &[&str]| {
        Command::new("apt-cache").args(args).output().ok().map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let prefix = "linux-headers-";
    let suffix = format!("-{flavour}");
    let meta = out(&["depends", &qualified(&format!("linux-headers-{flavour}"))]).unwrap_or_default();
    let wanted = meta.lines().find_map(|l| {
        let dep = l.trim().strip_prefix("Depends: ")?.split(':').next()?.trim();
        dep.strip_prefix(prefix)?.strip_suffix(&suffix).map(str::to_string)
    });
    let available = |abi: &str| {
        out(&["policy", &qualified(&format!("{prefix}{abi}{suffix}"))])
            .is_some_and(|p| p.lines().any(|l| l.trim().starts_with("Candidate:") && !l.contains("(none)")))
    };
    if let Some(abi) = wanted.filter(|a| available(a)) {
        return Ok(abi);
    }
    let search =
        out(&["search", "--names-only", &format!("^linux-headers-6\\.1\\.0-[0-9]+{suffix}$")]).unwrap_or_default();
    let mut abis: Vec<String> = search
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.strip_prefix(prefix)?.strip_suffix(&suffix).map(str::to_string))
        .filter(|a| available(a))
        .collect();
    abis.sort_by_key(|a| a.rsplit('-').next().and_then(|n| n.parse::<u32>().ok()).unwrap_or(0));
    abis.pop().ok_or_else(|| KbuildError::Download {
        package: format!("linux-headers-6.1.0-*-{flavour}"),
        reason: format!("apt knows no 6.1 header package for {arch}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb_file_names_give_versions() {
        assert_eq!(deb_version(Path::new("/x/linux-source-6.1_6.1.192-3_all.deb")).unwrap(), "6.1.192-3");
        assert_eq!(deb_version(Path::new("foo_1%3a2.0-1_amd64.deb")).unwrap(), "1:2.0-1");
        assert!(deb_version(Path::new("foo.tar")).is_none());
    }

    #[test]
    fn a_directory_without_a_kernel_is_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("pcpubed-notatree-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("Makefile"), "all:\n").unwrap();
        let e = user_tree(&dir).unwrap_err().to_string();
        assert!(e.contains("Kconfig is missing"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn makefile_versions_are_read() {
        let dir = std::env::temp_dir().join(format!("pcpubed-mkver-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("Makefile"), "VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 192\nEXTRAVERSION =\n").unwrap();
        assert_eq!(makefile_version(&dir).unwrap(), "6.1.192");
        std::fs::write(dir.join("Makefile"), "VERSION = 6\nPATCHLEVEL = 15\nSUBLEVEL =\n").unwrap();
        assert_eq!(makefile_version(&dir).unwrap(), "6.15.0");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
