//! The real allocator in userspace: a kernel tree's own mm/percpu.c chunk
//! allocator compiled with the host's gcc inside a small stub environment
//! (like tools/testing/radix-tree), driven by the model's workloads.
//!
//! * [`build`]: extract the functions from the tree ([`extract`]), compile,
//!   cache by a hash of the inputs;
//! * [`Driver`]: the compiled program, spoken to over a line protocol
//!   (documented in `c/driver.c`);
//! * [`diff`]: random operation sequences run op by op on the real code and
//!   on the model's [`ChunkMap`](percpu_core::bitmap::ChunkMap), offsets,
//!   hints and counters compared, the first divergence minimised; the
//!   model's `verify()` applied to the real code's state; the hint-free
//!   finding and the multi-chunk benchmark;
//! * [`alloc`]: the next level, the tree's whole `pcpu_alloc`/`free_percpu`
//!   with its balance work and first-chunk setup over `mm/percpu-km.c`,
//!   compared op by op with the model's whole allocator.
//!
//! The scope of [`diff`] is the chunk: `pcpu_find_block_fit`, `pcpu_alloc_area`,
//! `pcpu_free_area`, the hint functions they call, `pcpu_alloc_chunk`,
//! `pcpu_chunk_populated`/`depopulated` and the slot bookkeeping.  The
//! driver's `bench` transcribes `pcpu_alloc`'s slot search over those
//! functions; the tree's `pcpu_alloc`/`free_percpu` themselves (locks,
//! balance work, a backend) are compiled only by [`alloc`].

pub mod alloc;
pub mod build;
pub mod diff;
pub mod extract;
pub mod minimise;

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};

pub use build::{build, Built};

/// Everything that can go wrong building or running the harness.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("gcc is not installed: the harness compiles the tree's mm/percpu.c with it (Debian: apt-get install gcc)")]
    NoCompiler,
    #[error("{}: {reason}", path.display())]
    TreeFile { path: PathBuf, reason: String },
    #[error("{what} in the tree's {file} (the harness extracts it by name; was it renamed or removed?)")]
    NotFound { what: extract::NotFound, file: String },
    #[error("compiling the harness failed (full log: {}):\n{tail}", log.display())]
    Compile { log: PathBuf, tail: String },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the harness program {}: {what}", binary.display())]
    Protocol { binary: PathBuf, what: String },
    #[error("the model cannot be set up as asked: {0}")]
    Model(String),
}

impl HarnessError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        HarnessError::Io { path: path.to_path_buf(), source }
    }
}

/// A running harness program.
pub struct Driver {
    binary: PathBuf,
    child: Child,
    stdin: BufWriter<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    line: String,
    /// The program's stderr, when captured ([`Driver::start_captured`]):
    /// its last lines go into the error when it dies.
    stderr: Option<Arc<Mutex<String>>>,
}

/// How much of a captured stderr is kept.
const STDERR_KEEP: usize = 4096;

impl Driver {
    pub fn start(binary: &Path) -> Result<Driver, HarnessError> {
        Self::spawn(binary, false)
    }

    /// Start with stderr captured rather than inherited: many short runs
    /// stay quiet, and a crash reports what the program printed.
    pub fn start_captured(binary: &Path) -> Result<Driver, HarnessError> {
        Self::spawn(binary, true)
    }

    fn spawn(binary: &Path, capture: bool) -> Result<Driver, HarnessError> {
        let mut child = Command::new(binary)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(if capture { Stdio::piped() } else { Stdio::inherit() })
            .spawn()
            .map_err(|e| HarnessError::io(binary, e))?;
        let stdin = BufWriter::new(child.stdin.take().expect("piped stdin"));
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let stderr = child.stderr.take().map(|mut err| {
            let kept = Arc::new(Mutex::new(String::new()));
            let sink = Arc::clone(&kept);
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = std::io::Read::read(&mut err, &mut buf) {
                    if n == 0 {
                        break;
                    }
                    let mut k = sink.lock().unwrap_or_else(|e| e.into_inner());
                    k.push_str(&String::from_utf8_lossy(&buf[..n]));
                    if k.len() > 2 * STDERR_KEEP {
                        let cut = k.len() - STDERR_KEEP;
                        let cut = (cut..k.len()).find(|&i| k.is_char_boundary(i)).unwrap_or(k.len());
                        k.drain(..cut);
                    }
                }
            });
            kept
        });
        Ok(Driver { binary: binary.to_path_buf(), child, stdin, stdout, line: String::new(), stderr })
    }

    /// Why the program stopped answering: its exit status or signal, and
    /// what it printed on stderr when that was captured.
    fn death(&mut self) -> String {
        let mut status = None;
        for _ in 0..200 {
            if let Ok(Some(s)) = self.child.try_wait() {
                status = Some(s);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let how = match status {
            None => "still running".to_string(),
            Some(s) => {
                use std::os::unix::process::ExitStatusExt;
                match s.signal() {
                    Some(sig) => format!(
                        "killed by signal {sig}{}",
                        if sig == 6 {
                            " (SIGABRT: a BUG or abort)"
                        } else if sig == 11 {
                            " (SIGSEGV)"
                        } else {
                            ""
                        }
                    ),
                    None => s.to_string(),
                }
            }
        };
        match &self.stderr {
            Some(err) => {
                // the reader thread may still be draining the pipe
                std::thread::sleep(std::time::Duration::from_millis(50));
                let text = err.lock().unwrap_or_else(|e| e.into_inner()).trim_end().to_string();
                if text.is_empty() {
                    format!("ended unexpectedly ({how}), nothing on stderr")
                } else {
                    format!("ended unexpectedly ({how}); its stderr:\n{text}")
                }
            }
            None => {
                format!("ended unexpectedly ({how}): a WARN/BUG in the tree's code or a crash, see its stderr above")
            }
        }
    }

    fn protocol(&self, what: impl Into<String>) -> HarnessError {
        HarnessError::Protocol { binary: self.binary.clone(), what: what.into() }
    }

    /// Queue a request (sent at the next [`Driver::flush`] or read).
    pub fn send(&mut self, request: &str) -> Result<(), HarnessError> {
        writeln!(self.stdin, "{request}").map_err(|e| self.protocol(format!("write failed: {e}")))
    }

    /// Send what is queued, with an `end` marker: the driver buffers its
    /// replies until it sees one.  Read the replies, then [`Driver::expect_end`].
    pub fn flush(&mut self) -> Result<(), HarnessError> {
        self.send("end")?;
        self.stdin.flush().map_err(|e| self.protocol(format!("write failed: {e}")))
    }

    /// Read the `end` reply that closes a flushed batch.
    pub fn expect_end(&mut self) -> Result<(), HarnessError> {
        let end = self.recv()?;
        if end != "end" {
            return Err(self.protocol(format!("expected `end` after a batch's replies, got `{end}`")));
        }
        Ok(())
    }

    /// The next reply line (without its newline).
    pub fn recv(&mut self) -> Result<String, HarnessError> {
        self.line.clear();
        let n = self.stdout.read_line(&mut self.line).map_err(|e| self.protocol(format!("read failed: {e}")))?;
        // no reply, or half a line: the program died (its buffered output
        // was flushed, or not, as it went)
        if n == 0 || !self.line.ends_with('\n') {
            let why = self.death();
            return Err(self.protocol(why));
        }
        if self.line.starts_with("error") {
            return Err(self.protocol(self.line.trim_end().to_string()));
        }
        Ok(self.line.trim_end().to_string())
    }

    /// Send one request and read its reply.
    pub fn request(&mut self, request: &str) -> Result<String, HarnessError> {
        self.send(request)?;
        self.flush()?;
        let reply = self.recv()?;
        self.expect_end()?;
        Ok(reply)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A copy of the harness's files of `tree` (see [`build::TREE_FILES`]) with
/// the one-line hint-free fix applied to `mm/percpu.c`, under
/// `<cache>/harness/trees/<hash>/`: a tree the harness builds like any other.
pub fn fixed_copy(tree: &Path, cache: &crate::kbuild::Cache) -> Result<PathBuf, HarnessError> {
    let c_path = tree.join("mm/percpu.c");
    let text = std::fs::read_to_string(&c_path).map_err(|e| HarnessError::io(&c_path, e))?;
    let fixed = diff::apply_hint_free_fix(&text).ok_or_else(|| HarnessError::TreeFile {
        path: c_path.clone(),
        reason: "pcpu_block_update_hint_free has no `pcpu_block_update(&chunk->chunk_md, pcpu_block_off_to_off(s_index, start), end)` to fix (already fixed, or changed)".into(),
    })?;
    let hash = &crate::kbuild::sha256_hex(fixed.as_bytes())[..16];
    let dir = cache.root.join("harness").join("trees").join(format!("hint-free-fixed-{hash}"));
    for f in build::TREE_FILES {
        let dst = dir.join(f);
        std::fs::create_dir_all(dst.parent().expect("a file in a directory")).map_err(|e| HarnessError::io(&dst, e))?;
        if f == "mm/percpu.c" {
            std::fs::write(&dst, &fixed).map_err(|e| HarnessError::io(&dst, e))?;
        } else {
            std::fs::copy(tree.join(f), &dst).map_err(|e| HarnessError::io(&dst, e))?;
        }
    }
    Ok(dir)
}

/// The real code on one of seed 002's workloads, over as many chunks as it
/// needs (the driver's `bench`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct RealBench {
    pub alloc_ns_per_op: f64,
    /// For `random-churn`: the second allocation phase.
    pub free_ns_per_op: f64,
    pub chunks: usize,
    /// Chunks tried whose hints refused a request that fitted their bitmap.
    pub refused: u64,
    /// New chunks made although an existing one had room.
    pub missed: u64,
}

/// Run `pattern` (`in-order`, `alternating`, `reverse`,
/// `second-half-filled`, `random-churn`) with `n` objects of `size` bytes.
pub fn real_bench(
    d: &mut Driver,
    size: usize,
    align: usize,
    n: usize,
    pattern: &str,
    unit_pages: usize,
) -> Result<RealBench, HarnessError> {
    let line = d.request(&format!("bench {size} {align} {n} {pattern} {unit_pages}"))?;
    let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|w| w.parse().ok()).collect();
    if !line.starts_with("bench ") || v.len() != 5 {
        return Err(d.protocol(format!("bad bench reply `{line}`")));
    }
    Ok(RealBench {
        alloc_ns_per_op: v[0],
        free_ns_per_op: v[1],
        chunks: v[2] as usize,
        refused: v[3] as u64,
        missed: v[4] as u64,
    })
}
