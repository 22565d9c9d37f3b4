//! Output formats and progress reporting shared by the subcommands.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// Human table or machine JSON.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// A spinner on stderr when it is a terminal; silent otherwise (CI logs).
pub struct Progress(Option<ProgressBar>);

impl Progress {
    pub fn new(len: Option<u64>) -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = match len {
            Some(n) => ProgressBar::new(n).with_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
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

    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
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
