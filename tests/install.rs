//! An installed binary: moved out of the checkout, it still finds its
//! fixtures and default matrix, tells its version and commit, and writes
//! shell completions and man pages.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A copy of the built binary in a fresh directory outside the checkout,
/// with its own cache (so nothing is shared with the user's).
struct Installed {
    dir: PathBuf,
    bin: PathBuf,
}

impl Installed {
    fn new(tag: &str) -> Installed {
        let dir = std::env::temp_dir().join(format!("percpu-bed-installed-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let bin = dir.join("bin/percpu-bed");
        std::fs::copy(env!("CARGO_BIN_EXE_percpu-bed"), &bin).unwrap();
        assert!(!dir.starts_with(env!("CARGO_MANIFEST_DIR")));
        Installed { dir, bin }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        // ETXTBSY: another test thread forking while the copy's write fd was
        // open hands the child that fd until it execs; wait it out.
        for _ in 0..100 {
            match Command::new(&self.bin)
                .args(args)
                .current_dir(&self.dir)
                .env_remove("PERCPU_BED_FIXTURES")
                .env("PERCPU_BED_CACHE", self.dir.join("cache"))
                .output()
            {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                r => return r.expect("the installed binary runs"),
            }
        }
        panic!("the installed binary stayed busy (ETXTBSY) for 2 s");
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_moved_binary_runs_the_default_matrix_and_run() {
    let inst = Installed::new("matrix");
    let o = inst.run(&["matrix", "--arch", "x86_64/relative", "--arch", "km", "--filter", "cpus-2"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", text(&o.stdout), text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("2 jobs (0 skipped)") && out.contains("all as expected"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("km/default")), "{out}");
    // The fixtures were unpacked into its cache, not read from the checkout.
    let unpacked = std::fs::read_dir(inst.dir.join("cache/fixtures")).unwrap().count();
    assert_eq!(unpacked, 1);

    let o = inst.run(&["run", "--arch", "s390x", "--cpus", "2"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", text(&o.stdout), text(&o.stderr));
    assert!(text(&o.stdout).contains("CAUGHT  bug_noweak_module.o"), "{}", text(&o.stdout));
}

#[test]
fn percpu_bed_fixtures_overrides_the_built_in_set() {
    let inst = Installed::new("env");
    let mut cmd = Command::new(&inst.bin);
    let o = cmd
        .args(["run", "--arch", "km", "--cpus", "1"])
        .env("PERCPU_BED_FIXTURES", inst.dir.join("nowhere"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("PERCPU_BED_FIXTURES="), "{}", text(&o.stderr));
    let o = inst.run(&["--help"]);
    assert!(text(&o.stdout).contains("PERCPU_BED_FIXTURES"), "{}", text(&o.stdout));
}

#[test]
fn version_names_the_commit() {
    let inst = Installed::new("version");
    let o = inst.run(&["--version"]);
    assert_eq!(o.status.code(), Some(0));
    let v = text(&o.stdout);
    assert!(v.starts_with(&format!("percpu-bed {} (", env!("CARGO_PKG_VERSION"))), "{v}");
    // In a git checkout the commit is there; built from a tarball, `unknown`.
    let head = Command::new("git").args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "--short=12", "HEAD"]).output();
    match head {
        Ok(h) if h.status.success() => assert!(v.contains(text(&h.stdout).trim()), "{v}"),
        _ => assert!(v.contains("(unknown)"), "{v}"),
    }
}

#[test]
fn completions_and_man_pages() {
    let inst = Installed::new("man");
    for shell in ["bash", "zsh", "fish"] {
        let o = inst.run(&["completions", shell]);
        assert_eq!(o.status.code(), Some(0), "{shell}: {}", text(&o.stderr));
        let s = text(&o.stdout);
        assert!(s.contains("percpu-bed") && s.contains("matrix") && s.contains("sample-cpus"), "{shell}: {s}");
    }
    let man = inst.dir.join("man1");
    let o = inst.run(&["man", "--dir", man.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    for page in ["percpu-bed.1", "percpu-bed-run.1", "percpu-bed-matrix.1", "percpu-bed-completions.1"] {
        let p = man.join(page);
        let roff = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(roff.contains(".TH"), "{page}");
    }
    let top = std::fs::read_to_string(man.join("percpu-bed.1")).unwrap();
    assert!(top.contains("PERCPU_BED_FIXTURES"), "{top}");
    // man(1) itself renders it, when installed.
    if Path::new("/usr/bin/man").exists() {
        let o =
            Command::new("man").arg("-l").arg(man.join("percpu-bed-run.1")).env("MANPAGER", "cat").output().unwrap();
        assert!(text(&o.stdout).contains("sample"), "{}", text(&o.stderr));
    }
}
