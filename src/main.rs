//! `percpu-bed`: a multi-arch, emulator-backed test bed for the Linux
//! dynamic per-CPU allocator.

mod commands;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

const ENV_HELP: &str = "\
Environment:
  PERCPU_BED_FIXTURES  a fixtures/obj directory to use instead of the fixtures built into
                       the binary (one subdirectory per fixture dir: x86_64, x86_64-rel,
                       arm64, arm64-vhe, sparc32, alpha, s390x, riscv64)
  PERCPU_BED_CACHE     where the built-in fixtures are unpacked and kbuild keeps its trees
                       (default $XDG_CACHE_HOME/percpu-bed, else ~/.cache/percpu-bed)
  RUST_LOG             tracing filter for diagnostics on stderr (overrides -v)
  NO_COLOR             no colour with --color auto; CLICOLOR_FORCE=1 colours even in pipes

Output: on a terminal, human output is coloured and wrapped to its width and long runs
show a progress bar on stderr; in a pipe or file it is plain and never wrapped.  Ctrl-C
in run and matrix stops and prints what finished (a second Ctrl-C exits at once).

Exit status: 0 all as expected, 1 a check failed, 2 bad input or usage.";

#[derive(Parser)]
#[command(name = "percpu-bed", version = percpu_bed::shipped::VERSION, about, long_about = None, after_help = ENV_HELP)]
struct Cli {
    /// More diagnostics on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Colour status words and warnings: auto (on a terminal, unless NO_COLOR is set; CLICOLOR_FORCE forces it), always or never.
    #[arg(long, value_enum, value_name = "WHEN", default_value = "auto", global = true)]
    color: percpu_bed::output::ColorWhen,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmark the bitmap allocator against the 2009 area map and a bump allocator (seed 002).
    Bench(commands::bench::Args),
    /// Run the cross-arch matrix of ci/matrix.toml (or yours) and report it as a table, JSON, JUnit or KTAP.
    Matrix(commands::matrix::Args),
    /// Run fixture tests on every CPU of an emulated arch and check every unit's memory.
    Run(commands::run::Args),
    /// Print the alloc info, first-chunk layout and __per_cpu_offset[] of an arch.
    Layout(commands::layout::Args),
    /// Inspect ELF objects: percpu sections, symbols, relocations and the arch's module rules.
    Inspect(commands::inspect::Args),
    /// Build percpu test modules (lib/percpu_test.c, real-API modules, yours) with a real kernel tree's Kbuild.
    Kbuild(commands::kbuild::Args),
    /// Compile a kernel tree's own mm/percpu.c chunk allocator in userspace: differential, verify, bench.
    Harness(commands::harness::Args),
    /// Draw a chunk map as SVG after a run or a benchmark workload.
    Map(commands::map::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(commands::install::CompletionsArgs),
    /// Write man pages (percpu-bed.1 and one per subcommand) to a directory, or percpu-bed.1 to stdout.
    Man(commands::install::ManArgs),
}

fn init_tracing(verbose: u8, ansi: bool) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let term = percpu_bed::output::init(cli.color);
    init_tracing(cli.verbose, term.stderr_color);
    percpu_bed::output::interrupt::install_global();
    // Exit codes: 0 all as expected, 1 a check failed, 2 bad input or usage.
    let result = match cli.command {
        Command::Bench(args) => commands::bench::run(args).map(|()| 0),
        Command::Inspect(args) => commands::inspect::run(args),
        Command::Kbuild(args) => commands::kbuild::run(args),
        Command::Harness(args) => commands::harness::run(args),
        Command::Matrix(args) => commands::matrix::run(args),
        Command::Run(args) => commands::run::run(args),
        Command::Layout(args) => commands::layout::run(args),
        Command::Map(args) => commands::map::run(args),
        Command::Completions(args) => commands::install::completions(args, Cli::command()),
        Command::Man(args) => commands::install::man(args, Cli::command()),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("percpu-bed: error: {}", error_chain(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes joined by ": ", leaving out a cause whose text
/// the message already carries (the library errors embed their source).
fn error_chain(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !msg.contains(&text) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&text);
        }
    }
    msg
}
