use clap::Parser;

/// Multi-arch, emulator-backed test bed for the Linux dynamic per-CPU allocator.
#[derive(Parser)]
#[command(name = "percpu-bed", version)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
}
