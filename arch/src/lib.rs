//! Per-architecture adapters (x86_64, arm64, sparc32, alpha, s390x, km) and the engines that run them.
