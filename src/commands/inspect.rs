use std::path::PathBuf;

use anyhow::{Context, Result};
use percpu_bed::output::{emit, emit_human, Format};

/// Show an ELF object's percpu sections, symbols and percpu relocations,
/// with a verdict on its arch's module percpu rules.
#[derive(clap::Args)]
pub struct Args {
    /// ELF objects: fixtures, kernel modules (.ko, .ko.xz, .ko.zst), linked images (vmlinux).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// table: a human report per object; json: every field, for programs.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Exit 1 when a module breaks its arch's percpu rules (e.g. an alpha or
    /// s390x module whose percpu variables are not weak).
    #[arg(long)]
    check: bool,
}

/// Exit status: 0 all read (and, with --check, all follow the rules),
/// 1 a rule is broken under --check, 2 a file could not be read.
pub fn run(args: Args) -> Result<u8> {
    let mut reports = Vec::with_capacity(args.files.len());
    for f in &args.files {
        let report = percpu_loader::inspect_path(f).with_context(|| format!("cannot inspect {}", f.display()))?;
        reports.push(report);
    }
    match args.format {
        Format::Table => emit_human(&reports.iter().map(|r| r.to_string()).collect::<String>())?,
        Format::Json => emit(&(serde_json::to_string_pretty(&reports)? + "\n"))?,
    }
    let broken = reports.iter().filter(|r| r.verdict.applies && !r.verdict.follows).count();
    if args.check && broken > 0 {
        eprintln!("percpu-bed: {broken} object(s) break their arch's module percpu rules");
        return Ok(1);
    }
    Ok(0)
}
