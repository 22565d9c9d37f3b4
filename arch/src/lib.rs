//! Per-architecture adapters (x86_64, arm64, sparc32, alpha, s390x, km) and
//! the engines that run them.  `engine` is the one boundary between the two:
//! adapters speak [`engine::Engine`], engines speak Unicorn or GDB remote.

// CheckError carries the names its messages need (object, arch, variant,
// fixture directory); it is only built on the way out of a failed run, so
// its size costs nothing on the paths that matter.
#![allow(clippy::result_large_err)]

pub mod check;
pub mod engine;
pub mod isa;
pub mod layout;
pub mod runtime;
