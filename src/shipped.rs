//! What ships inside the binary: the fixture objects of `fixtures/obj` and
//! the default matrix `ci/matrix.toml`, so an installed `percpu-bed` works
//! wherever it lives, without its source tree.
//!
//! The fixtures are used from a directory (reports name real files you can
//! open with `readelf`): `$PERCPU_BED_FIXTURES` when set, else the embedded
//! set unpacked once into `$PERCPU_BED_CACHE/fixtures/<hash>` (default cache
//! `$XDG_CACHE_HOME/percpu-bed`, else `~/.cache/percpu-bed`; the system
//! temporary directory when none is writable).  The directory name is a
//! hash of the contents, so binaries of different versions never share one
//! and a complete directory is never rewritten.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/shipped.rs"));
}

/// The environment variable naming a fixtures directory to use instead of
/// the embedded one.
pub const FIXTURES_ENV: &str = "PERCPU_BED_FIXTURES";

/// The name reports give the embedded matrix file.
pub const MATRIX_NAME: &str = "ci/matrix.toml (built in)";

/// The git commit the binary was built from (`unknown` outside a checkout).
pub const GIT_COMMIT: &str = env!("PERCPU_BED_GIT_COMMIT");

/// `0.1.0 (1a2b3c4d5e6f 2026-12-03)`, what `--version` prints.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("PERCPU_BED_GIT_COMMIT"), ")");

/// The embedded default matrix.
pub fn matrix_toml() -> &'static str {
    embedded::MATRIX_TOML
}

/// The embedded fixtures: path under `fixtures/obj` and contents.
pub fn fixture_files() -> &'static [(&'static str, &'static [u8])] {
    embedded::FIXTURES
}

/// The fixture directory could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ShippedError {
    #[error("{FIXTURES_ENV}={} is not a directory", .0.display())]
    EnvNotDir(PathBuf),
    #[error("cannot unpack the built-in fixtures into {}: {source} (set {FIXTURES_ENV} to a fixtures/obj directory)", dir.display())]
    Unpack {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The fixtures directory (`fixtures/obj` layout): `$PERCPU_BED_FIXTURES`,
/// else the embedded fixtures, unpacked on first use.
pub fn fixtures_dir() -> Result<PathBuf, ShippedError> {
    if let Some(dir) = std::env::var_os(FIXTURES_ENV).filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(dir);
        return if dir.is_dir() { Ok(dir) } else { Err(ShippedError::EnvNotDir(dir)) };
    }
    static UNPACKED: OnceLock<PathBuf> = OnceLock::new();
    if let Some(d) = UNPACKED.get() {
        return Ok(d.clone());
    }
    let mut last = None;
    for root in cache_roots() {
        match unpack_into(&root.join("fixtures")) {
            Ok(d) => return Ok(UNPACKED.get_or_init(|| d).clone()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("the temporary directory is always a candidate"))
}

fn cache_roots() -> Vec<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let mut roots: Vec<PathBuf> = var("PERCPU_BED_CACHE")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("percpu-bed")))
        .or_else(|| var("HOME").map(|h| h.join(".cache/percpu-bed")))
        .into_iter()
        .collect();
    roots.push(std::env::temp_dir().join(format!("percpu-bed-{}", user_tag())));
    roots
}

/// Keeps users of a shared /tmp apart.
fn user_tag() -> String {
    std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "user".into())
}

/// A hash of every embedded name and byte: the unpacked directory's name.
fn content_hash() -> String {
    let mut h = Sha256::new();
    for (name, bytes) in fixture_files() {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Unpack into `parent/<hash>` unless a complete copy is there; a copy is
/// written beside it and renamed into place, so a concurrent run never sees
/// a half-written directory.
pub fn unpack_into(parent: &Path) -> Result<PathBuf, ShippedError> {
    let dir = parent.join(content_hash());
    let marker = dir.join(".complete");
    if marker.is_file() {
        return Ok(dir);
    }
    let err = |source| ShippedError::Unpack { dir: dir.clone(), source };
    std::fs::create_dir_all(parent).map_err(err)?;
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let tmp = parent.join(format!(".tmp-{}-{nonce}", std::process::id()));
    let write = || -> std::io::Result<()> {
        for (name, bytes) in fixture_files() {
            let p = tmp.join(name);
            std::fs::create_dir_all(p.parent().expect("a file in a fixture dir"))?;
            std::fs::write(&p, bytes)?;
        }
        std::fs::write(tmp.join(".complete"), crate::shipped::VERSION)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(err(e));
    }
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => Ok(dir),
        // Another run got there first (or left an incomplete copy).
        Err(_) if marker.is_file() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(dir)
        }
        Err(_) => {
            let _ = std::fs::remove_dir_all(&dir);
            let r = std::fs::rename(&tmp, &dir).map_err(err);
            if r.is_err() {
                let _ = std::fs::remove_dir_all(&tmp);
            }
            r.map(|()| dir)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeds_every_shipped_fixture_byte_for_byte() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/obj");
        let mut on_disk = 0;
        for dir in std::fs::read_dir(&src).unwrap() {
            for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
                let p = f.unwrap().path();
                if p.extension().is_some_and(|x| x == "o") {
                    on_disk += 1;
                    let rel = p.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
                    let (_, bytes) =
                        fixture_files().iter().find(|(n, _)| *n == rel).unwrap_or_else(|| panic!("{rel} not embedded"));
                    assert_eq!(*bytes, std::fs::read(&p).unwrap().as_slice(), "{rel}");
                }
            }
        }
        assert_eq!(fixture_files().len(), on_disk);
        assert!(fixture_files().iter().any(|(n, _)| *n == "x86_64/kernel.o"));
        assert_eq!(
            matrix_toml(),
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ci/matrix.toml")).unwrap()
        );
    }

    #[test]
    fn unpacks_once_and_completely() {
        let parent = std::env::temp_dir().join(format!("percpu-bed-unpack-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&parent);
        let a = unpack_into(&parent).unwrap();
        assert!(a.join(".complete").is_file());
        assert_eq!(
            std::fs::read(a.join("s390x/kernel.o")).unwrap(),
            std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/obj/s390x/kernel.o")).unwrap()
        );
        // A second call reuses the copy and leaves no temporary behind.
        std::fs::write(a.join("sentinel"), b"x").unwrap();
        assert_eq!(unpack_into(&parent).unwrap(), a);
        assert!(a.join("sentinel").is_file());
        let entries: Vec<_> = std::fs::read_dir(&parent).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        let _ = std::fs::remove_dir_all(&parent);
    }
}
