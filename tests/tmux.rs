//! Terminal manners, checked on a real terminal: tmux runs the binary in a
//! pane and the captured screen (with its escape codes) is inspected for a
//! progress bar, coloured status words, wrapping to the pane's width, and
//! Ctrl-C printing partial results.  Skipped (with a note) without tmux.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

struct Tmux {
    socket: String,
    session: String,
    dir: PathBuf,
    runs: AtomicUsize,
}

impl Tmux {
    fn start(tag: &str, width: u16) -> Option<Tmux> {
        if Command::new("tmux").arg("-V").output().map_or(true, |o| !o.status.success()) {
            eprintln!("tmux not installed: terminal checks skipped");
            return None;
        }
        let id = format!("percpu-bed-{tag}-{}", std::process::id());
        let dir = std::env::temp_dir().join(&id);
        std::fs::create_dir_all(&dir).unwrap();
        let t = Tmux { socket: id.clone(), session: id, dir, runs: AtomicUsize::new(0) };
        let st = t
            .cmd()
            .args([
                "new-session",
                "-d",
                "-s",
                &t.session,
                "-x",
                &width.to_string(),
                "-y",
                "50",
                "-c",
                env!("CARGO_MANIFEST_DIR"),
            ])
            .args(["env", "-u", "NO_COLOR", "-u", "CLICOLOR_FORCE", "TERM=xterm-256color", "sh"])
            .status()
            .unwrap();
        assert!(st.success());
        Some(t)
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    fn send(&self, keys: &[&str]) {
        assert!(self.cmd().args(["send-keys", "-t", &self.session]).args(keys).status().unwrap().success());
    }

    /// The pane's text with escape codes (`-e`), joined wrapped lines kept apart.
    fn screen(&self) -> String {
        let o = self.cmd().args(["capture-pane", "-p", "-e", "-t", &self.session, "-S", "-200"]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Run `args` in the pane, writing the exit code to a file when done.
    fn run(&self, args: &str) -> PathBuf {
        // A fresh file per command: reusing a name would read the previous
        // command's code before this one has finished.
        let n = self.runs.fetch_add(1, Ordering::Relaxed);
        let rc = self.dir.join(format!("rc-{n}"));
        let line = format!("clear; {} {args}; echo $? > {}", env!("CARGO_BIN_EXE_percpu-bed"), rc.display());
        self.send(&[&line, "Enter"]);
        rc
    }

    fn wait_for(&self, what: &str, timeout: Duration, done: impl Fn(&str) -> bool) -> String {
        let t0 = Instant::now();
        loop {
            let s = self.screen();
            if done(&s) {
                return s;
            }
            assert!(t0.elapsed() < timeout, "timed out waiting for {what}; screen:\n{s}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn exit_code(&self, rc: &PathBuf, timeout: Duration) -> i32 {
        let t0 = Instant::now();
        loop {
            if let Ok(s) = std::fs::read_to_string(rc) {
                if let Ok(n) = s.trim().parse() {
                    return n;
                }
            }
            assert!(t0.elapsed() < timeout, "no exit code; screen:\n{}", self.screen());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn colour_and_width_on_a_terminal_plain_in_a_pipe() {
    let Some(t) = Tmux::start("colour", 100) else { return };
    let rc =
        t.run("run --arch x86_64 --cpus 4 --explain fixtures/obj/x86_64/kernel.o fixtures/obj/x86_64/bug_trunc32.o");
    assert_eq!(t.exit_code(&rc, Duration::from_secs(60)), 0, "{}", t.screen());
    let s = t.screen();
    assert!(s.contains("\x1b[32mPASS\x1b[39m") || s.contains("\x1b[32mPASS\x1b[0m"), "no green PASS:\n{s:?}");
    assert!(s.contains("\x1b[36mCAUGHT"), "no cyan CAUGHT:\n{s:?}");
    // The long diagnostic lines were wrapped to the 100-column pane.
    let plain = strip(&s);
    assert!(plain.contains("32-bit truncation"), "{plain}");
    assert!(plain.lines().all(|l| l.chars().count() <= 100), "{plain}");

    // The same through a pipe: no escape codes, nothing wrapped.
    let out = t.dir.join("piped.txt");
    let rc = t.run(&format!(
        "run --arch x86_64 --cpus 4 --explain fixtures/obj/x86_64/kernel.o fixtures/obj/x86_64/bug_trunc32.o | cat > {}",
        out.display()
    ));
    assert_eq!(t.exit_code(&rc, Duration::from_secs(60)), 0);
    let piped = std::fs::read_to_string(&out).unwrap();
    assert!(!piped.contains('\x1b'), "{piped:?}");
    assert!(piped.lines().any(|l| l.len() > 100), "pipes are not wrapped");
    let rc = t.run(&format!("--color never run --arch x86_64 --cpus 2 > {}", out.display()));
    assert_eq!(t.exit_code(&rc, Duration::from_secs(60)), 0);
    assert!(!std::fs::read_to_string(&out).unwrap().contains('\x1b'));
}

#[test]
fn progress_bar_then_ctrl_c_prints_partial_results() {
    let Some(t) = Tmux::start("progress", 120) else { return };
    // 2048 CPUs, every test on every CPU: long enough to see the bar and
    // interrupt the run before it ends.
    let rc = t.run("run --arch x86_64 --cpus 2048");
    let s = t.wait_for("the progress bar", Duration::from_secs(120), |s| {
        let p = strip(s);
        // The bar after the first tests: elapsed time, a bar, n/len and the last test.
        p.contains("[00:0") && p.contains('█') && p.contains(".o:") && !p.contains(" 0/")
    });
    assert!(!strip(&s).contains("PASS"), "the report waits for the end: {s}");
    t.send(&["C-c"]);
    let code = t.exit_code(&rc, Duration::from_secs(120));
    let s = strip(&t.screen());
    assert_eq!(code, 130, "{s}");
    assert!(s.contains("interrupted:") && s.contains("results above are partial"), "{s}");
    assert!(s.contains("PASS    kernel.o:"), "partial results printed: {s}");
}

/// The screen without escape sequences.
fn strip(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}
