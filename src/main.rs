//! `percpu-bed`: a multi-arch, emulator-backed test bed for the Linux
//! dynamic per-CPU allocator.

mod commands;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "percpu-bed", version, about, long_about = None)]
struct Cli {
    /// More diagnostics on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
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
    Map(commands::map::Args),
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    // Exit codes: 0 all as expected, 1 a check failed, 2 bad input or usage.
    let result = match cli.command {
        Command::Bench(args) => commands::bench::run(args).map(|()| 0),
        Command::Inspect(args) => commands::inspect::run(args),
        Command::Kbuild(args) => commands::kbuild::run(args),
        Command::Matrix(args) => commands::matrix::run(args),
        Command::Run(args) => commands::run::run(args),
        Command::Layout(args) => commands::layout::run(args),
        Command::Map(args) => commands::map::run(args),
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
