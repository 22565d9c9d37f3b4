//! The `percpu-bed` command's library: one module per subcommand, each a
//! thin layer over the `percpu-core`, `percpu-arch` and `percpu-loader`
//! crates (cargo's `ops` pattern), so the binary only parses arguments.
