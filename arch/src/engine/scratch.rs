//! Host-side scratch state of out-of-process engines: private temporary
//! directories (qemu-alpha's harness ELF, GDB socket and stderr file) and the
//! emulator processes using them.
//!
//! Normally both go away when their engine drops.  Three ways around that
//! used to leave `/tmp/percpu-bed-alpha-*` behind (110 of them after one
//! afternoon of interrupted runs):
//!
//! * a signal that ends the process without unwinding (SIGTERM, a second
//!   Ctrl-C): the CLI's handler calls [`remove_all`], which kills the live
//!   emulators and removes their directories before it exits;
//! * SIGKILL or a crash, which nothing can catch: the first directory made
//!   by a later process sweeps the directories whose owner process no longer
//!   exists ([`sweep_stale`]);
//! * a panic that unwinds: the ordinary drops run.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};

/// What [`remove_all`] must clean up: live directories and the emulator
/// processes (pids) working in them.
static LIVE: Mutex<Vec<(PathBuf, Option<u32>)>> = Mutex::new(Vec::new());

/// A private (0700) temporary directory named `<prefix>-<pid>-<n>-<nanos>`,
/// removed on drop and by [`remove_all`].
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Make one under the temporary directory (or `/tmp` when `$TMPDIR` is
    /// too long for the Unix socket paths made inside it).
    pub fn new(prefix: &str) -> io::Result<ScratchDir> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let base = scratch_base();
        static SWEEP: Once = Once::new();
        SWEEP.call_once(|| sweep_stale(&base, prefix));
        for _ in 0..100 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let path = base.join(format!("{prefix}-{}-{n}-{nanos:08x}", std::process::id()));
            match fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {
                    lock().push((path.clone(), None));
                    return Ok(ScratchDir { path });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(io::ErrorKind::AlreadyExists, "no free temporary directory name"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `pid` works in this directory: [`remove_all`] kills it first.
    pub fn set_owner_process(&self, pid: u32) {
        if let Some(e) = lock().iter_mut().find(|(p, _)| *p == self.path) {
            e.1 = Some(pid);
        }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        lock().retain(|(p, _)| *p != self.path);
        let _ = fs::remove_dir_all(&self.path);
    }
}

fn lock() -> std::sync::MutexGuard<'static, Vec<(PathBuf, Option<u32>)>> {
    // A panic while holding the lock leaves a valid Vec: keep using it.
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

fn scratch_base() -> PathBuf {
    // A Unix socket path must fit in 108 bytes.
    let tmp = std::env::temp_dir();
    if tmp.as_os_str().len() <= 60 {
        tmp
    } else {
        PathBuf::from("/tmp")
    }
}

/// Kill every live emulator process and remove every live scratch
/// directory.  For a signal handler that is about to exit the process: it
/// runs on the handler's thread, while engines may still be in use.
pub fn remove_all() {
    let live = std::mem::take(&mut *lock());
    remove(live);
}

fn remove(entries: Vec<(PathBuf, Option<u32>)>) {
    for (dir, pid) in entries {
        if let Some(pid) = pid {
            kill(pid);
        }
        let _ = fs::remove_dir_all(dir);
    }
}

fn kill(pid: u32) {
    extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    const SIGKILL: i32 = 9;
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) with a constant signal and no memory.  The pid is a
        // child this process spawned and has not reaped (its engine is still
        // live), so it cannot have been reused.
        unsafe {
            kill(pid, SIGKILL);
        }
    }
}

/// Remove `<base>/<prefix>-<pid>-*` directories whose process is gone.
/// Only directories owned by this user are touched (others fail to remove,
/// which is ignored), and only when `/proc` says the pid does not exist.
pub fn sweep_stale(base: &Path, prefix: &str) {
    if !Path::new("/proc/self").exists() {
        return; // cannot tell live owners from dead ones
    }
    let Ok(entries) = fs::read_dir(base) else { return };
    let lead = format!("{prefix}-");
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&lead)) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            tracing::debug!("removing {} left by process {pid}", e.path().display());
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_removes_and_unregisters() {
        let d = ScratchDir::new("percpu-bed-scratch-test").unwrap();
        let p = d.path().to_path_buf();
        assert!(p.is_dir());
        assert!(lock().iter().any(|(q, _)| *q == p));
        drop(d);
        assert!(!p.exists());
        assert!(!lock().iter().any(|(q, _)| *q == p));
    }

    #[test]
    fn sweep_removes_only_dead_owners() {
        let base = std::env::temp_dir().join(format!("percpu-bed-sweep-{}", std::process::id()));
        fs::create_dir_all(&base).unwrap();
        // pid_max is at most 2^22: this pid cannot exist.
        let dead = base.join("pfx-4999999-0-00000000");
        let mine = base.join(format!("pfx-{}-0-00000000", std::process::id()));
        let other = base.join("unrelated-4999999");
        for d in [&dead, &mine, &other] {
            fs::create_dir_all(d.join("inner")).unwrap();
        }
        sweep_stale(&base, "pfx");
        assert!(!dead.exists(), "a dead owner's directory is removed");
        assert!(mine.exists() && other.exists());
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn remove_kills_the_owner_and_removes() {
        // Not `remove_all`: other tests' engines in this process are live.
        // The CLI test `sigterm_cleans_up_alpha_scratch` covers it.
        let d = ScratchDir::new("percpu-bed-scratch-test").unwrap();
        let mut child = std::process::Command::new("sleep").arg("60").spawn().unwrap();
        d.set_owner_process(child.id());
        let entry = lock().iter().find(|(p, _)| p == d.path()).cloned().unwrap();
        assert_eq!(entry.1, Some(child.id()));
        remove(vec![entry]);
        assert!(!d.path().exists());
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(child.wait().unwrap().signal(), Some(9));
        drop(d); // already gone: dropping is harmless
    }
}
