//! The `percpu-bed` command's library: the operations behind each
//! subcommand, built on `percpu-core`, `percpu-arch` and `percpu-loader`.
//! The binary's `commands/` modules only parse arguments and print
//! (cargo's `ops` pattern).

pub mod bench;
pub mod harness;
pub mod kbuild;
pub mod kmod;
pub mod map;
pub mod matrix;
pub mod output;
pub mod scenario;
pub mod shipped;
