//! Per-architecture adapters (x86_64, arm64, sparc32, alpha, s390x, km) and
//! the engines that run them.  `engine` is the one boundary between the two:
//! adapters speak [`engine::Engine`], engines speak Unicorn or GDB remote.

pub mod check;
pub mod engine;
pub mod isa;
pub mod layout;
