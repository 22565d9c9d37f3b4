//! Module sets: what `kbuild` builds with `make M=`.
//!
//! * `tree`: the kernel tree's own `lib/percpu_test.c` (Tejun's seed-003
//!   "test module"'s descendant), copied out of the tree with a one-line
//!   Kbuild file;
//! * `pcpubed`: the project's modules written against the real kernel API
//!   (`fixtures/kmod/src`, embedded in the binary), including the runtime
//!   ABI probe;
//! * `user-<name>`: each `--module DIR` of the user's.
//!
//! Each set is synchronised into a directory of the cache: a file is
//! rewritten only when its content changed, so an unchanged set is not
//! rebuilt and a changed header rebuilds only the objects that include it.

use std::path::{Path, PathBuf};

use super::{sha256_hex, KbuildError, ModuleEntry, Tree};

/// The project's set.
pub const PROJECT_SET: &str = "pcpubed";
/// The tree's own test module.
pub const TREE_SET: &str = "tree";

/// The project's real-API module sources, embedded so an installed binary
/// can build them (relative path, content).
pub static PROJECT_FILES: &[(&str, &str)] = &[
    ("Kbuild", include_str!("../../fixtures/kmod/src/Kbuild")),
    ("pcpubed-kmod.h", include_str!("../../fixtures/kmod/src/pcpubed-kmod.h")),
    ("pcpubed_rtabi.c", include_str!("../../fixtures/kmod/src/pcpubed_rtabi.c")),
    ("pcpubed_export.h", include_str!("../../fixtures/kmod/src/pcpubed_export.h")),
    ("pcpubed_api.c", include_str!("../../fixtures/kmod/src/pcpubed_api.c")),
    ("pcpubed_export.c", include_str!("../../fixtures/kmod/src/pcpubed_export.c")),
    ("pcpubed_import.c", include_str!("../../fixtures/kmod/src/pcpubed_import.c")),
    ("pcpubed_contract.c", include_str!("../../fixtures/kmod/src/pcpubed_contract.c")),
    ("pcpubed_bug_uaf.c", include_str!("../../fixtures/kmod/src/pcpubed_bug_uaf.c")),
    ("pcpubed_bug_nullalloc.c", include_str!("../../fixtures/kmod/src/pcpubed_bug_nullalloc.c")),
    ("pcpubed_bug_reserved.c", include_str!("../../fixtures/kmod/src/pcpubed_bug_reserved.c")),
    ("pcpubed_bug_stride.c", include_str!("../../fixtures/kmod/src/pcpubed_bug_stride.c")),
    ("pcpubed_bug_nrcpus.c", include_str!("../../fixtures/kmod/src/pcpubed_bug_nrcpus.c")),
    ("pcpubed_bug_kept_ptr.c", include_str!("../../fixtures/kmod/src/pcpubed_bug_kept_ptr.c")),
    ("pcpubed_bug_trunc32.c", include_str!("../../fixtures/kmod/src/pcpubed_bug_trunc32.c")),
];

/// Expectation files of the project's modules (every module of
/// [`PROJECT_FILES`] but the probe has one: a test checks it).
pub static PROJECT_EXPECT: &[(&str, &str)] = &[
    ("pcpubed_api", include_str!("../../fixtures/kmod/expect/pcpubed_api.expect.toml")),
    ("pcpubed_export", include_str!("../../fixtures/kmod/expect/pcpubed_export.expect.toml")),
    ("pcpubed_import", include_str!("../../fixtures/kmod/expect/pcpubed_import.expect.toml")),
    ("pcpubed_contract", include_str!("../../fixtures/kmod/expect/pcpubed_contract.expect.toml")),
    ("pcpubed_bug_uaf", include_str!("../../fixtures/kmod/expect/pcpubed_bug_uaf.expect.toml")),
    ("pcpubed_bug_nullalloc", include_str!("../../fixtures/kmod/expect/pcpubed_bug_nullalloc.expect.toml")),
    ("pcpubed_bug_reserved", include_str!("../../fixtures/kmod/expect/pcpubed_bug_reserved.expect.toml")),
    ("pcpubed_bug_stride", include_str!("../../fixtures/kmod/expect/pcpubed_bug_stride.expect.toml")),
    ("pcpubed_bug_nrcpus", include_str!("../../fixtures/kmod/expect/pcpubed_bug_nrcpus.expect.toml")),
    ("pcpubed_bug_kept_ptr", include_str!("../../fixtures/kmod/expect/pcpubed_bug_kept_ptr.expect.toml")),
    ("pcpubed_bug_trunc32", include_str!("../../fixtures/kmod/expect/pcpubed_bug_trunc32.expect.toml")),
];

/// Expectation files of modules from the kernel tree (`<module>.expect.toml`).
pub static TREE_EXPECT: &[(&str, &str)] =
    &[("percpu_test", include_str!("../../fixtures/kmod/expect/percpu_test.expect.toml"))];

/// The expectation file name that `run` looks for beside `<module>.ko`.
pub fn expect_file_name(module: &str) -> String {
    format!("{module}.expect.toml")
}

/// One `M=` directory's worth of sources.
#[derive(Clone, Debug)]
pub struct ModuleSet {
    pub name: String,
    /// Files relative to the set's directory.
    pub files: Vec<(PathBuf, Vec<u8>)>,
    /// What `__FILE__` shows instead of the cache directory.
    pub file_prefix: String,
    /// Expectation files by module name.
    pub expect: Vec<(String, String)>,
}

/// Files a build leaves in a module directory (never copied from a user's).
fn is_build_output(name: &str) -> bool {
    name.ends_with(".o")
        || name.ends_with(".ko")
        || name.ends_with(".mod")
        || name.ends_with(".mod.c")
        || name.ends_with(".cmd")
        || name == "modules.order"
        || name == "Module.symvers"
        || name.starts_with(".tmp")
}

impl ModuleSet {
    /// Write the set's files into `dir` (only those whose content differs)
    /// and remove sources that are no longer part of it.  Whether anything
    /// changed.
    pub fn sync_into(&self, dir: &Path) -> Result<bool, KbuildError> {
        std::fs::create_dir_all(dir).map_err(|e| KbuildError::io(dir, e))?;
        let mut changed = false;
        for (rel, data) in &self.files {
            let to = dir.join(rel);
            if std::fs::read(&to).is_ok_and(|old| old == *data) {
                continue;
            }
            if let Some(p) = to.parent() {
                std::fs::create_dir_all(p).map_err(|e| KbuildError::io(p, e))?;
            }
            std::fs::write(&to, data).map_err(|e| KbuildError::io(&to, e))?;
            changed = true;
        }
        // Sources removed from the set (not build outputs) go too.
        for f in walk(dir) {
            let rel = f.strip_prefix(dir).unwrap_or(&f).to_path_buf();
            let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !is_build_output(name) && !self.files.iter().any(|(r, _)| *r == rel) {
                let _ = std::fs::remove_file(&f);
                changed = true;
            }
        }
        Ok(changed)
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.filter_map(|e| e.ok()) {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() => out.push(p),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// The sets to build against `tree`: the tree's test module (from
/// `test_source`, the source tree that has `lib/percpu_test.c`: the tree
/// itself, or for header packages Debian's matching source package), the
/// project's set and the user's directories.
pub fn module_sets(tree: &Tree, test_source: Option<&Path>, user: &[PathBuf]) -> Result<Vec<ModuleSet>, KbuildError> {
    let mut sets = Vec::new();
    let src = test_source.unwrap_or(&tree.path);
    let pt = src.join("lib/percpu_test.c");
    match std::fs::read(&pt) {
        Ok(data) => sets.push(ModuleSet {
            name: TREE_SET.into(),
            files: vec![("Kbuild".into(), b"obj-m := percpu_test.o\n".to_vec()), ("percpu_test.c".into(), data)],
            file_prefix: "lib".into(),
            expect: TREE_EXPECT.iter().map(|(m, t)| (m.to_string(), t.to_string())).collect(),
        }),
        Err(e) => {
            return Err(KbuildError::NotATree {
                path: src.to_path_buf(),
                reason: format!("cannot read lib/percpu_test.c: {e}"),
            })
        }
    }
    sets.push(ModuleSet {
        name: PROJECT_SET.into(),
        files: PROJECT_FILES.iter().map(|(p, t)| (PathBuf::from(p), t.as_bytes().to_vec())).collect(),
        file_prefix: "fixtures/kmod/src".into(),
        expect: PROJECT_EXPECT.iter().map(|(m, t)| (m.to_string(), t.to_string())).collect(),
    });
    for dir in user {
        sets.push(user_set(dir)?);
    }
    let mut names = std::collections::HashSet::new();
    for s in &sets {
        if !names.insert(s.name.clone()) {
            return Err(KbuildError::Module {
                target: "all".into(),
                what: format!(
                    "two module directories are both named `{}`: rename one",
                    s.name.trim_start_matches("user-")
                ),
            });
        }
    }
    Ok(sets)
}

fn user_set(dir: &Path) -> Result<ModuleSet, KbuildError> {
    let abs = dir.canonicalize().map_err(|e| KbuildError::io(dir, e))?;
    let has_kbuild = abs.join("Kbuild").is_file() || abs.join("Makefile").is_file();
    if !has_kbuild {
        return Err(KbuildError::Module {
            target: "all".into(),
            what: format!(
                "{}: no Kbuild or Makefile (write `obj-m := yourmodule.o` into a Kbuild file)",
                abs.display()
            ),
        });
    }
    let base = abs.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "module".into());
    let mut files = Vec::new();
    let mut expect = Vec::new();
    for f in walk(&abs) {
        let rel = f.strip_prefix(&abs).unwrap_or(&f).to_path_buf();
        let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
        if is_build_output(&name) {
            continue;
        }
        let data = std::fs::read(&f).map_err(|e| KbuildError::io(&f, e))?;
        if let Some(m) = name.strip_suffix(".expect.toml") {
            expect.push((m.to_string(), String::from_utf8_lossy(&data).into_owned()));
        }
        files.push((rel, data));
    }
    Ok(ModuleSet { name: format!("user-{base}"), files, file_prefix: base, expect })
}

/// A `.ko` the build produced.
#[derive(Clone, Debug)]
pub struct BuiltModule {
    pub name: String,
    pub file: String,
    pub built: PathBuf,
    pub sha256: String,
    pub set: String,
    pub expect: Option<String>,
}

impl BuiltModule {
    pub fn entry(&self) -> ModuleEntry {
        ModuleEntry {
            name: self.name.clone(),
            file: self.file.clone(),
            sha256: self.sha256.clone(),
            set: self.set.clone(),
            expect: self.expect.as_ref().map(|_| expect_file_name(&self.name)),
        }
    }
}

/// The modules `make M=dir modules` built, from its `modules.order`.
pub fn collect(dir: &Path, set: &ModuleSet) -> Result<Vec<BuiltModule>, KbuildError> {
    let order = dir.join("modules.order");
    let text = std::fs::read_to_string(&order).map_err(|e| KbuildError::io(&order, e))?;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        // 6.1 writes absolute .ko paths; older trees `kernel/...ko`, newer `.o`.
        let p = Path::new(line);
        let p = if p.is_absolute() { p.to_path_buf() } else { dir.join(p) };
        let ko = p.with_extension("ko");
        let data = std::fs::read(&ko).map_err(|e| KbuildError::io(&ko, e))?;
        let file = ko.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let name = file.trim_end_matches(".ko").to_string();
        let expect = set.expect.iter().find(|(m, _)| *m == name).map(|(_, t)| t.clone());
        out.push(BuiltModule { name, file, built: ko, sha256: sha256_hex(&data), set: set.name.clone(), expect });
    }
    if out.is_empty() {
        return Err(KbuildError::Module { target: "all".into(), what: format!("{} built no modules", set.name) });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pcpubed-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn syncing_rewrites_only_changed_files_and_drops_removed_sources() {
        let d = tmp("sync");
        let mut set = ModuleSet {
            name: "s".into(),
            files: vec![("Kbuild".into(), b"obj-m := a.o\n".to_vec()), ("a.c".into(), b"int a;\n".to_vec())],
            file_prefix: "s".into(),
            expect: vec![],
        };
        assert!(set.sync_into(&d).unwrap());
        let mtime = std::fs::metadata(d.join("a.c")).unwrap().modified().unwrap();
        std::fs::write(d.join("a.o"), b"obj").unwrap();
        std::fs::write(d.join("old.c"), b"gone").unwrap();
        assert!(set.sync_into(&d).unwrap(), "old.c removed");
        assert!(!d.join("old.c").exists());
        assert!(d.join("a.o").exists(), "build outputs are kept");
        assert!(!set.sync_into(&d).unwrap(), "nothing changed");
        assert_eq!(std::fs::metadata(d.join("a.c")).unwrap().modified().unwrap(), mtime);
        set.files[1].1 = b"int b;\n".to_vec();
        assert!(set.sync_into(&d).unwrap());
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// The modules the project's Kbuild builds (`obj-m += x.o`).
    fn kbuild_modules() -> Vec<String> {
        let kbuild = PROJECT_FILES.iter().find(|(p, _)| *p == "Kbuild").expect("a Kbuild").1;
        kbuild
            .lines()
            .filter_map(|l| l.trim().strip_prefix("obj-m"))
            .filter_map(|l| l.trim_start_matches([' ', '+', ':', '=']).strip_suffix(".o"))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn every_project_module_has_a_source_and_an_expectation_file() {
        let mods = kbuild_modules();
        assert!(mods.len() >= 10, "{mods:?}");
        for m in &mods {
            assert!(PROJECT_FILES.iter().any(|(p, _)| *p == format!("{m}.c")), "{m}.c is not embedded");
            if m != super::super::rtabi::PROBE_MODULE {
                let (_, text) =
                    PROJECT_EXPECT.iter().find(|(n, _)| n == m).unwrap_or_else(|| panic!("{m}: no expectation file"));
                let e =
                    crate::kmod::parse_expect(text, Path::new(&expect_file_name(m)), &crate::kmod::alpha_like_abi())
                        .unwrap();
                // A planted bug says which real bug it mimics; its source too.
                if m.starts_with("pcpubed_bug_") {
                    assert!(e.planted.is_some(), "{m} is a planted bug without [planted]");
                    let src = PROJECT_FILES.iter().find(|(p, _)| *p == format!("{m}.c")).unwrap().1;
                    assert!(src.contains("PLANTED BUG") && src.contains("Mimics"), "{m}.c must name the bug it mimics");
                } else {
                    // A module with an init prints its done line; one with
                    // only contract descriptors (pcpubed-kmod.h) has none.
                    let src = PROJECT_FILES.iter().find(|(p, _)| *p == format!("{m}.c")).unwrap().1;
                    let has_init = src.contains("module_init(");
                    assert!(e.planted.is_none(), "{m}: a good module has no [planted]");
                    assert!(!has_init || !e.printk.is_empty(), "{m}: a good module prints its done line");
                    assert!(has_init || src.contains("PCPUBED_TEST("), "{m}: no init and no descriptors");
                }
            }
        }
        for (m, _) in PROJECT_EXPECT {
            assert!(mods.iter().any(|k| k == m), "{m}.expect.toml belongs to no module of the Kbuild");
        }
    }

    #[test]
    fn the_embedded_sources_are_the_files_in_the_checkout() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/kmod");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir.join("src"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = PROJECT_FILES.iter().map(|(p, _)| p.to_string()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded, "every file of fixtures/kmod/src is embedded, and nothing else");
        for (p, text) in PROJECT_FILES {
            assert_eq!(std::fs::read_to_string(dir.join("src").join(p)).unwrap(), *text);
        }
        let expects = std::fs::read_dir(dir.join("expect")).unwrap().count();
        assert_eq!(expects, PROJECT_EXPECT.len() + TREE_EXPECT.len(), "every expectation file is embedded");
    }

    #[test]
    fn a_user_directory_without_kbuild_is_refused() {
        let d = tmp("nokbuild");
        std::fs::write(d.join("m.c"), b"").unwrap();
        let e = user_set(&d).unwrap_err().to_string();
        assert!(e.contains("no Kbuild or Makefile"), "{e}");
        std::fs::write(d.join("Kbuild"), b"obj-m := m.o\n").unwrap();
        std::fs::write(d.join("m.expect.toml"), b"[init]\nreturns = 0\n").unwrap();
        std::fs::write(d.join("m.ko"), b"stale").unwrap();
        let s = user_set(&d).unwrap();
        assert!(s.name.starts_with("user-"));
        assert!(s.files.iter().all(|(p, _)| p != Path::new("m.ko")), "build outputs are not copied");
        assert_eq!(s.expect.len(), 1);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// pcpubed-kmod.h is the fixture contract for Kbuild modules: every
    /// `PCPUBED_*` constant and the descriptor's fields are pcpubed.h's.
    #[test]
    fn the_kbuild_contract_header_matches_the_fixture_contract() {
        let fixture = include_str!("../../fixtures/include/pcpubed.h");
        let kmod = PROJECT_FILES.iter().find(|(n, _)| *n == "pcpubed-kmod.h").expect("embedded").1;
        let defines = |text: &str| -> std::collections::BTreeMap<String, String> {
            text.lines()
                .filter_map(|l| l.strip_prefix("#define PCPUBED_"))
                .filter_map(|l| {
                    let mut it = l.split_whitespace();
                    let name = it.next()?;
                    let value = it.next()?;
                    // Constants only: hex or decimal literals.
                    (value.as_bytes()[0].is_ascii_digit() && !name.contains('('))
                        .then(|| (name.to_string(), value.to_string()))
                })
                .collect()
        };
        let (f, k) = (defines(fixture), defines(kmod));
        assert!(f.len() >= 20, "{f:?}");
        for (name, value) in &f {
            // ABI_VERSION: the real-API modules stay on contract version 1
            // (one init for every copy) until ci/kernel.sh has run them on 2.
            if ["PAGE_SIZE", "L1_CACHE_BYTES", "TI_CPU_OFFSET", "LOWCORE_PERCPU_OFFSET", "ABI_FLAGS", "ABI_VERSION"]
                .contains(&name.as_str())
            {
                continue;
            }
            assert_eq!(k.get(name), Some(value), "PCPUBED_{name}");
        }
        let fields = |text: &str| -> String {
            let start = text.find("struct pcpubed_test {").expect("the descriptor");
            let body = &text[start..start + text[start..].find("};").unwrap()];
            body.split_whitespace().collect::<Vec<_>>().join(" ")
        };
        assert_eq!(fields(fixture), fields(kmod));
    }
}
