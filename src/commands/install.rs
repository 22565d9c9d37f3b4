//! What installing percpu-bed needs besides the binary: shell completions
//! and man pages, generated from the same clap definitions as `--help`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use percpu_bed::output::emit;

/// `percpu-bed completions bash > /etc/bash_completion.d/percpu-bed`, or
/// for zsh into a `$fpath` directory as `_percpu-bed`.
#[derive(clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// `percpu-bed man --dir /usr/local/share/man/man1` writes percpu-bed.1
/// and percpu-bed-<command>.1 for every subcommand.
#[derive(clap::Args)]
pub struct ManArgs {
    /// Write every page into DIR (created if missing) instead of
    /// percpu-bed.1 to stdout.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

pub fn completions(args: CompletionsArgs, mut cmd: clap::Command) -> Result<u8> {
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "percpu-bed", &mut out);
    emit(&String::from_utf8(out).context("completion script is UTF-8")?)?;
    Ok(0)
}

pub fn man(args: ManArgs, cmd: clap::Command) -> Result<u8> {
    let cmd = cmd.version(percpu_bed::shipped::VERSION);
    let Some(dir) = args.dir else {
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut out)?;
        emit(&String::from_utf8(out).context("man page is UTF-8")?)?;
        return Ok(0);
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    let mut page = |cmd: clap::Command, name: String| -> Result<()> {
        let path = dir.join(format!("{name}.1"));
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd.display_name(name.clone())).render(&mut out)?;
        std::fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
        Ok(())
    };
    let subs: Vec<clap::Command> = cmd.get_subcommands().filter(|s| s.get_name() != "help").cloned().collect();
    page(cmd.clone(), "percpu-bed".into())?;
    for sub in subs {
        let name = format!("percpu-bed-{}", sub.get_name());
        page(sub.version(percpu_bed::shipped::VERSION), name)?;
    }
    emit(&written.iter().map(|p| format!("{}\n", p.display())).collect::<String>())?;
    Ok(0)
}
