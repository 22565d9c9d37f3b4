//! Output formats, terminal manners and progress reporting shared by the
//! subcommands.
//!
//! Colour follows the usual conventions, resolved once at start-up by
//! [`init`]: `--color always|never` wins; with `auto` (the default)
//! `NO_COLOR` turns it off, `CLICOLOR_FORCE` turns it on, and otherwise a
//! stream is coloured only when it is a terminal (and `TERM` is not
//! `dumb`).  stdout and stderr are decided separately, so
//! `percpu-bed run ... | less` gets plain text while warnings on the
//! terminal are still coloured.
//!
//! Width: human output on a terminal is wrapped to the terminal's width
//! (continuation lines indented under their line); output to a pipe or a
//! file is never wrapped, so `grep` sees whole lines.

use std::io::IsTerminal;
use std::sync::OnceLock;

use anstyle::{AnsiColor, Style};
use indicatif::{ProgressBar, ProgressStyle};

/// Human table or machine JSON.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable text.
    Table,
    /// Every field, for programs.
    Json,
}

/// `--color`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorWhen {
    /// Colour on a terminal, unless NO_COLOR is set (CLICOLOR_FORCE forces it).
    #[default]
    Auto,
    Always,
    Never,
}

/// How this process writes to the terminal.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Terminal {
    pub stdout_color: bool,
    pub stderr_color: bool,
    /// Wrap human stdout to this many columns (stdout is a terminal).
    pub width: Option<usize>,
    /// stderr is a terminal: progress bars are drawn there.
    pub stderr_tty: bool,
}

static TERMINAL: OnceLock<Terminal> = OnceLock::new();

/// The colour conventions (anstyle-query reads the variables): NO_COLOR
/// off, CLICOLOR_FORCE on, CLICOLOR=0 off, else a terminal whose TERM can.
fn color_for(when: ColorWhen, is_terminal: bool) -> bool {
    match when {
        ColorWhen::Always => true,
        ColorWhen::Never => false,
        ColorWhen::Auto => {
            if anstyle_query::no_color() {
                false
            } else if anstyle_query::clicolor_force() {
                true
            } else if anstyle_query::clicolor() == Some(false) {
                false
            } else {
                is_terminal && anstyle_query::term_supports_color()
            }
        }
    }
}

/// Decide colour and width for this process (call once, before output).
pub fn init(when: ColorWhen) -> Terminal {
    let out = std::io::stdout();
    let err = std::io::stderr();
    let t = Terminal {
        stdout_color: color_for(when, out.is_terminal()),
        stderr_color: color_for(when, err.is_terminal()),
        width: terminal_size::terminal_size_of(&out).map(|(w, _)| usize::from(w.0)).filter(|w| *w >= 20),
        stderr_tty: err.is_terminal(),
    };
    *TERMINAL.get_or_init(|| t)
}

/// The terminal as [`init`] decided (plain, unwrapped text before that).
pub fn terminal() -> Terminal {
    TERMINAL.get().copied().unwrap_or(Terminal {
        stdout_color: false,
        stderr_color: false,
        width: None,
        stderr_tty: false,
    })
}

/// The style of a status word in human output.
fn status_style(word: &str) -> Option<Style> {
    let c = match word {
        "PASS" | "ok" => AnsiColor::Green,
        "CAUGHT" | "LATENT" | "XFAIL" => AnsiColor::Cyan,
        "FAIL" | "ERROR" => AnsiColor::Red,
        "WARN" | "skip" | "INTERRUPTED" => AnsiColor::Yellow,
        _ => return None,
    };
    let s = Style::new().fg_color(Some(c.into()));
    Some(if matches!(word, "FAIL" | "ERROR") { s.bold() } else { s })
}

/// Colour the status words of human output: a line's first word (`PASS`,
/// `CAUGHT`, `FAIL`, `ERROR`) and `FAIL`/`ERROR` cells of a table.
pub fn paint(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for line in text.split_inclusive('\n') {
        let mut first = true;
        let mut rest = line;
        while !rest.is_empty() {
            let ws = rest.len() - rest.trim_start_matches(' ').len();
            out.push_str(&rest[..ws]);
            rest = &rest[ws..];
            let end = rest.find([' ', '\n']).unwrap_or(rest.len());
            let word = &rest[..end];
            // Only the line's first word, or a FAIL/ERROR cell further on.
            match status_style(word).filter(|_| first || matches!(word, "FAIL" | "ERROR")) {
                Some(st) => out.push_str(&format!("{}{word}{}", st.render(), st.render_reset())),
                None => out.push_str(word),
            }
            rest = &rest[end..];
            if let Some(r) = rest.strip_prefix('\n') {
                out.push('\n');
                rest = r;
            }
            first = false;
        }
    }
    out
}

/// Wrap every line longer than `width`: continuation lines are indented
/// four columns deeper than the line they continue.
pub fn wrap(text: &str, width: usize) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let (body, nl) = line.strip_suffix('\n').map_or((line, ""), |b| (b, "\n"));
        if textwrap::core::display_width(body) <= width {
            out.push_str(line);
            continue;
        }
        let indent = &body[..body.len() - body.trim_start().len()];
        let more = format!("{indent}    ");
        let opts = textwrap::Options::new(width).initial_indent(indent).subsequent_indent(&more).break_words(true);
        out.push_str(&textwrap::fill(body.trim_start(), opts));
        out.push_str(nl);
    }
    out
}

/// Human output for stdout: wrapped and coloured as [`init`] decided.
pub fn human(text: &str) -> String {
    let t = terminal();
    let text = match t.width {
        Some(w) => wrap(text, w),
        None => text.to_string(),
    };
    if t.stdout_color {
        paint(&text)
    } else {
        text
    }
}

/// Write human output (tables, reports) to stdout, wrapped and coloured
/// for a terminal, plain in a pipe.
pub fn emit_human(text: &str) -> anyhow::Result<()> {
    emit(&human(text))
}

/// A progress bar on stderr when it is a terminal; silent otherwise (CI
/// logs).
pub struct Progress(Option<ProgressBar>);

impl Progress {
    pub fn new(len: Option<u64>) -> Self {
        let t = TERMINAL.get().copied();
        let tty = t.map_or_else(|| std::io::stderr().is_terminal(), |t| t.stderr_tty);
        if !tty {
            return Progress(None);
        }
        let bar = match len {
            Some(n) => ProgressBar::new(n).with_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {wide_msg}")
                    .expect("valid template"),
            ),
            None => ProgressBar::new_spinner(),
        };
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        Progress(Some(bar))
    }

    /// Say what runs now (and advance a counted bar).
    pub fn step(&self, msg: &str) {
        tracing::info!("{msg}");
        if let Some(b) = &self.0 {
            b.set_message(msg.to_string());
            b.inc(1);
        }
    }

    /// Set the length once it is known.
    pub fn set_len(&self, len: u64) {
        if let Some(b) = &self.0 {
            b.set_length(len);
        }
    }

    /// Say what runs now without advancing.
    pub fn message(&self, msg: &str) {
        if let Some(b) = &self.0 {
            b.set_message(msg.to_string());
        }
    }

    /// Print a line above the bar (or plainly without one).
    pub fn println(&self, line: &str) {
        match &self.0 {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

/// Drives a [`Progress`] bar from a run's tests and stops the run on
/// Ctrl-C.
pub struct RunObserver<'a> {
    pub progress: &'a Progress,
}

impl percpu_arch::check::Observer for RunObserver<'_> {
    fn planned(&mut self, tests: usize) {
        self.progress.set_len(tests as u64);
    }
    fn finished(&mut self, t: &percpu_arch::check::TestReport) -> bool {
        self.progress.step(&format!("{}:{}", t.object, t.test));
        !interrupt::requested()
    }
}

/// Ctrl-C, SIGTERM and SIGHUP.  A command that reports partial results
/// opts in with [`interrupt::install`]: the first signal asks it to stop
/// and report what it has, a second one exits at once.  Every other
/// command exits at the first.  Exiting from the handler skips the
/// engines' drops, so it first kills the emulator processes and removes
/// their scratch directories (`percpu_arch::engine::scratch`).
pub mod interrupt {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    static INTERRUPTIBLE: AtomicBool = AtomicBool::new(false);
    static REQUESTED: AtomicBool = AtomicBool::new(false);
    static PRESSES: AtomicUsize = AtomicUsize::new(0);

    /// Install the process-wide handler (once; later calls do nothing).
    /// `main` calls it before any command runs.
    pub fn install_global() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let _ = ctrlc::set_handler(|| {
                let first = PRESSES.fetch_add(1, Ordering::SeqCst) == 0;
                if first && INTERRUPTIBLE.load(Ordering::SeqCst) {
                    REQUESTED.store(true, Ordering::SeqCst);
                    return;
                }
                percpu_arch::engine::scratch::remove_all();
                std::process::exit(130);
            });
        });
    }

    /// The running command stops at the next test when interrupted and
    /// reports what it has (see [`requested`]).
    pub fn install() {
        install_global();
        INTERRUPTIBLE.store(true, Ordering::SeqCst);
    }

    /// Ctrl-C was pressed.
    pub fn requested() -> bool {
        REQUESTED.load(Ordering::SeqCst)
    }
}

/// Write a command's output to stdout.  A reader that went away (`| head`)
/// ends the output quietly instead of panicking like `print!` does.
pub fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// `1 job`, `2 jobs`.
pub fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paints_status_words_only() {
        let s =
            paint("  PASS    kernel.o:k_cpu\n  CAUGHT  bug.o:x (planted bug)\n  FAIL    a.o:PASS\nx  FAIL 2  ERROR\n");
        assert!(s.contains("\x1b[32mPASS\x1b[0m    kernel.o:k_cpu"), "{s:?}");
        assert!(s.contains("\x1b[36mCAUGHT\x1b[0m"), "{s:?}");
        assert!(s.contains("\x1b[1m\x1b[31mFAIL\x1b[0m    a.o:PASS\n") || s.contains("\x1b[1;31mFAIL"), "{s:?}");
        // A later word is painted only when it is a FAIL/ERROR cell.
        assert!(s.contains("a.o:PASS\n"), "{s:?}");
        assert_eq!(s.matches("\x1b[0m").count(), 5, "{s:?}");
        assert_eq!(paint("no status here\n"), "no status here\n");
    }

    #[test]
    fn wraps_long_lines_under_their_indent() {
        let long = format!("    - {}\nshort\n", "word ".repeat(30).trim_end());
        let w = wrap(&long, 40);
        for l in w.lines() {
            assert!(l.len() <= 40, "{l:?}");
        }
        let lines: Vec<&str> = w.lines().collect();
        assert!(lines[0].starts_with("    - word"));
        assert!(lines[1].starts_with("        word"), "{w}");
        assert_eq!(*lines.last().unwrap(), "short");
        assert_eq!(wrap("fits\n", 40), "fits\n");
    }

    #[test]
    fn plurals() {
        assert_eq!(plural(1, "job", "jobs"), "1 job");
        assert_eq!(plural(0, "job", "jobs"), "0 jobs");
    }
}
