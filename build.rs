//! Build-time facts for the `percpu-bed` binary:
//!
//! * the shipped fixture objects (`fixtures/obj/<dir>/*.o`) and the default
//!   matrix (`ci/matrix.toml`), embedded so an installed binary works
//!   wherever it lives (`src/shipped.rs` reads them);
//! * the git commit it was built from, for `--version` (`unknown` outside a
//!   git checkout, e.g. from a source tarball).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    embed_shipped(&root, &out);
    git_commit(&root);
}

fn embed_shipped(root: &Path, out: &Path) {
    let obj = root.join("fixtures/obj");
    let matrix = root.join("ci/matrix.toml");
    println!("cargo:rerun-if-changed={}", obj.display());
    println!("cargo:rerun-if-changed={}", matrix.display());
    let mut files = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&obj)
        .unwrap_or_else(|e| panic!("{}: {e}", obj.display()))
        .map(|e| e.expect("readable fixtures/obj").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        // A new or removed object changes the directory, so rerun then.
        println!("cargo:rerun-if-changed={}", dir.display());
        let mut objects: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("readable fixture dir").path())
            .filter(|p| p.extension().is_some_and(|x| x == "o") && p.is_file())
            .collect();
        objects.sort();
        for o in objects {
            let rel = o.strip_prefix(&obj).expect("under fixtures/obj").to_string_lossy().replace('\\', "/");
            files.push((rel, o));
        }
    }
    let mut code = String::from("/// Shipped fixture objects: (path under fixtures/obj, contents).\n");
    code += "pub static FIXTURES: &[(&str, &[u8])] = &[\n";
    for (rel, path) in &files {
        code += &format!("    ({rel:?}, include_bytes!({:?})),\n", path.display().to_string());
    }
    code += "];\n/// The shipped ci/matrix.toml.\n";
    code += &format!("pub static MATRIX_TOML: &str = include_str!({:?});\n", matrix.display().to_string());
    std::fs::write(out.join("shipped.rs"), code).expect("OUT_DIR is writable");
}

fn git(root: &Path, args: &[&str]) -> Option<String> {
    let o = Command::new("git").arg("-C").arg(root).args(args).output().ok()?;
    if !o.status.success() {
        return None;
    }
    let s = String::from_utf8(o.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn git_commit(root: &Path) {
    // An explicit value wins (distribution builds from a tarball).
    println!("cargo:rerun-if-env-changed=PERCPU_BED_GIT_COMMIT");
    let commit = std::env::var("PERCPU_BED_GIT_COMMIT").ok().filter(|s| !s.is_empty()).or_else(|| {
        let hash = git(root, &["rev-parse", "--short=12", "HEAD"])?;
        let date = git(root, &["log", "-1", "--format=%cs", "HEAD"]).unwrap_or_default();
        // Rebuild when HEAD moves: HEAD itself, the branch it names, packed refs.
        if let Some(dir) = git(root, &["rev-parse", "--absolute-git-dir"]) {
            println!("cargo:rerun-if-changed={dir}/HEAD");
        }
        if let (Some(common), Some(head_ref)) = (
            git(root, &["rev-parse", "--path-format=absolute", "--git-common-dir"]),
            git(root, &["symbolic-ref", "-q", "HEAD"]),
        ) {
            println!("cargo:rerun-if-changed={common}/{head_ref}");
            println!("cargo:rerun-if-changed={common}/packed-refs");
        }
        Some(if date.is_empty() { hash } else { format!("{hash} {date}") })
    });
    println!("cargo:rustc-env=PERCPU_BED_GIT_COMMIT={}", commit.as_deref().unwrap_or("unknown"));
}
