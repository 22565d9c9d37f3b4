//! Kernel-version profiles: the constants and behaviours of mm/percpu.c,
//! include/linux/percpu.h and the arch setup code that changed between the
//! kernel versions percpu-bed models.
//!
//! Everything version-dependent the model uses comes from a
//! [`KernelProfile`]; the rest of the crate is the algorithm, which has not
//! changed since 6.1 in the parts modelled.  Sources, by fact:
//!
//! | fact | 6.1 | later |
//! |---|---|---|
//! | `PERCPU_DYNAMIC_EARLY_SIZE` | 12 KiB (6.1.192's include/linux/percpu.h) | 20 KiB from 6.2; `20 << PERCPU_DYNAMIC_SIZE_SHIFT` from 6.6 |
//! | `PERCPU_DYNAMIC_RESERVE` | 28 KiB / 20 KiB (64/32-bit) | `28 << SHIFT` / `20 << SHIFT` from 6.6 |
//! | `PERCPU_DYNAMIC_SIZE_SHIFT` | (none: 10) | 6.6: 12 with `CONFIG_RANDOM_KMALLOC_CACHES`, else 10 |
//! | `PERCPU_MODULE_RESERVE` | 8 KiB | 6.10: `8 << 13` (64 KiB) with `CONFIG_MEM_ALLOC_PROFILING` |
//! | x86_64 percpu model | zero-based (`%gs:sym`, section linked at 0) | relative (`%gs:sym(%rip)`) from 6.15 |
//! | x86_64 first-chunk request | reserved `PERCPU_FIRST_CHUNK_RESERVE` (= module reserve), dynamic `MODULE_RESERVE + DYNAMIC_RESERVE - FIRST_CHUNK_RESERVE` | unchanged |
//! | free-path chunk hint (`pcpu_block_update_hint_free` passes a block-relative end) | present | present in the newest copies looked at |
//!
//! A profile is named on the command line as `VERSION[+OPTION...]`, e.g.
//! `6.1`, `6.15`, `6.15+MEM_ALLOC_PROFILING`; a patch level (`6.1.192`) is
//! accepted and ignored.

use std::fmt;

use serde::Serialize;

/// The version every command uses unless told otherwise: Debian 12's
/// kernel, the one the boot checks compare against.
pub const DEFAULT_KERNEL: &str = "6.1";

/// The oldest and newest versions a profile can be made for.
pub const OLDEST: (u32, u32) = (6, 1);
pub const NEWEST: (u32, u32) = (6, 15);

/// Kconfig options that change the percpu constants.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct KernelOptions {
    /// `CONFIG_MEM_ALLOC_PROFILING` (6.10+): module reserve 64 KiB.
    pub mem_alloc_profiling: bool,
    /// `CONFIG_RANDOM_KMALLOC_CACHES` (6.6+): dynamic sizes << 12, not << 10.
    pub random_kmalloc_caches: bool,
}

/// A profile name that does not describe a modelled kernel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error("kernel version `{spec}`: expected MAJOR.MINOR[.PATCH][+OPTION...], e.g. 6.1 or 6.15+MEM_ALLOC_PROFILING")]
    Syntax { spec: String },
    #[error("kernel version {major}.{minor} is not modelled (profiles exist for {}.{} to {}.{})", OLDEST.0, OLDEST.1, NEWEST.0, NEWEST.1)]
    Unsupported { major: u32, minor: u32 },
    #[error("kernel option `{option}` is unknown (known: MEM_ALLOC_PROFILING, RANDOM_KMALLOC_CACHES)")]
    UnknownOption { option: String },
    #[error("kernel option CONFIG_{option} does not exist in {major}.{minor} (it appeared in {since})")]
    OptionTooNew { option: &'static str, since: &'static str, major: u32, minor: u32 },
}

/// The version-dependent facts of one kernel (version + options).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct KernelProfile {
    pub major: u32,
    pub minor: u32,
    pub options: KernelOptions,
    /// `PERCPU_DYNAMIC_EARLY_SIZE`.
    pub dynamic_early_size: usize,
    /// `PERCPU_DYNAMIC_SIZE_SHIFT` (10 where the macro does not exist).
    pub dynamic_size_shift: u32,
    /// `PERCPU_MODULE_RESERVE` with `CONFIG_MODULES`.
    pub module_reserve: usize,
    /// x86_64 uses the relative percpu model (6.15+): the default x86_64
    /// variant is `relative` rather than `zero-based`.
    pub x86_64_relative_percpu: bool,
    /// `pcpu_block_update_hint_free` updates the chunk hint with a
    /// chunk-relative end (the fix); `false` in every released kernel
    /// modelled (the block-relative end of 6.1 is still there).
    pub free_path_chunk_hint_fix: bool,
}

impl Default for KernelProfile {
    fn default() -> Self {
        KernelProfile::parse(DEFAULT_KERNEL).expect("the default kernel has a profile")
    }
}

impl KernelProfile {
    /// The profile of `major.minor` with `options`.
    pub fn new(major: u32, minor: u32, options: KernelOptions) -> Result<Self, ProfileError> {
        let v = (major, minor);
        if v < OLDEST || v > NEWEST {
            return Err(ProfileError::Unsupported { major, minor });
        }
        if options.random_kmalloc_caches && v < (6, 6) {
            return Err(ProfileError::OptionTooNew { option: "RANDOM_KMALLOC_CACHES", since: "6.6", major, minor });
        }
        if options.mem_alloc_profiling && v < (6, 10) {
            return Err(ProfileError::OptionTooNew { option: "MEM_ALLOC_PROFILING", since: "6.10", major, minor });
        }
        let dynamic_size_shift = if options.random_kmalloc_caches { 12 } else { 10 };
        let dynamic_early_size = if v < (6, 2) { 12 << 10 } else { 20 << dynamic_size_shift };
        let module_reserve = if options.mem_alloc_profiling { 8 << 13 } else { 8 << 10 };
        Ok(KernelProfile {
            major,
            minor,
            options,
            dynamic_early_size,
            dynamic_size_shift,
            module_reserve,
            x86_64_relative_percpu: v >= (6, 15),
            free_path_chunk_hint_fix: false,
        })
    }

    /// Parse `VERSION[+OPTION...]` (options with or without `CONFIG_`).
    pub fn parse(spec: &str) -> Result<Self, ProfileError> {
        let syntax = || ProfileError::Syntax { spec: spec.to_string() };
        let mut parts = spec.trim().split('+');
        let version = parts.next().filter(|s| !s.is_empty()).ok_or_else(syntax)?;
        let mut nums = version.split('.');
        let mut num = || nums.next().and_then(|n| n.parse::<u32>().ok());
        let (major, minor) = (num().ok_or_else(syntax)?, num().ok_or_else(syntax)?);
        if let Some(patch) = nums.next() {
            if patch.parse::<u32>().is_err() || nums.next().is_some() {
                return Err(syntax());
            }
        }
        let mut options = KernelOptions::default();
        for opt in parts {
            match opt.trim().trim_start_matches("CONFIG_") {
                "MEM_ALLOC_PROFILING" => options.mem_alloc_profiling = true,
                "RANDOM_KMALLOC_CACHES" => options.random_kmalloc_caches = true,
                other => return Err(ProfileError::UnknownOption { option: other.to_string() }),
            }
        }
        Self::new(major, minor, options)
    }

    /// `(major, minor)`.
    pub fn version(&self) -> (u32, u32) {
        (self.major, self.minor)
    }

    /// `PERCPU_DYNAMIC_RESERVE` for a kernel with `ptr_bits`-bit longs.
    pub fn dynamic_reserve(&self, ptr_bits: u32) -> usize {
        let kib = if ptr_bits > 32 { 28 } else { 20 };
        kib << self.dynamic_size_shift
    }

    /// x86_64's `PERCPU_FIRST_CHUNK_RESERVE`: the module reserve on 64-bit.
    pub fn x86_64_first_chunk_reserve(&self) -> usize {
        self.module_reserve
    }

    /// The dynamic size x86_64's `setup_per_cpu_areas` asks the embed
    /// first chunk for: `PERCPU_MODULE_RESERVE + PERCPU_DYNAMIC_RESERVE -
    /// PERCPU_FIRST_CHUNK_RESERVE` (28 KiB in 6.1).
    pub fn x86_64_embed_dyn_size(&self) -> usize {
        self.module_reserve + self.dynamic_reserve(64) - self.x86_64_first_chunk_reserve()
    }
}

impl fmt::Display for KernelProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Linux {}.{}", self.major, self.minor)?;
        if self.options.mem_alloc_profiling {
            f.write_str("+MEM_ALLOC_PROFILING")?;
        }
        if self.options.random_kmalloc_caches {
            f.write_str("+RANDOM_KMALLOC_CACHES")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_one_matches_its_tree() {
        let p = KernelProfile::parse("6.1").unwrap();
        assert_eq!(p, KernelProfile::default());
        assert_eq!(p.dynamic_early_size, 12 << 10);
        assert_eq!(p.module_reserve, 8 << 10);
        assert_eq!(p.dynamic_reserve(64), 28 << 10);
        assert_eq!(p.dynamic_reserve(32), 20 << 10);
        // every real 6.1 x86_64 boot prints d28672 before page rounding
        assert_eq!(p.x86_64_embed_dyn_size(), 28672);
        assert!(!p.x86_64_relative_percpu);
        assert!(!p.free_path_chunk_hint_fix);
        assert_eq!(p.to_string(), "Linux 6.1");
        assert_eq!(KernelProfile::parse("6.1.192").unwrap(), p);
    }

    #[test]
    fn later_versions() {
        let p = KernelProfile::parse("6.15").unwrap();
        assert_eq!(p.dynamic_early_size, 20 << 10);
        assert_eq!(p.dynamic_reserve(64), 28 << 10);
        assert!(p.x86_64_relative_percpu);
        assert_eq!(KernelProfile::parse("6.14").unwrap().x86_64_relative_percpu, false);
        assert_eq!(KernelProfile::parse("6.2").unwrap().dynamic_early_size, 20 << 10);
        let p = KernelProfile::parse("6.15+MEM_ALLOC_PROFILING+CONFIG_RANDOM_KMALLOC_CACHES").unwrap();
        assert_eq!(p.module_reserve, 64 << 10);
        assert_eq!(p.dynamic_early_size, 80 << 10);
        assert_eq!(p.dynamic_reserve(64), 112 << 10);
        // the x86_64 request stays DYNAMIC_RESERVE: the module reserve cancels out
        assert_eq!(p.x86_64_embed_dyn_size(), 112 << 10);
        assert_eq!(p.to_string(), "Linux 6.15+MEM_ALLOC_PROFILING+RANDOM_KMALLOC_CACHES");
    }

    #[test]
    fn bad_specs() {
        assert!(matches!(KernelProfile::parse("6"), Err(ProfileError::Syntax { .. })));
        assert!(matches!(KernelProfile::parse("six.one"), Err(ProfileError::Syntax { .. })));
        assert!(matches!(KernelProfile::parse("6.1.x"), Err(ProfileError::Syntax { .. })));
        assert_eq!(KernelProfile::parse("5.4"), Err(ProfileError::Unsupported { major: 5, minor: 4 }));
        assert_eq!(KernelProfile::parse("6.16"), Err(ProfileError::Unsupported { major: 6, minor: 16 }));
        assert!(matches!(KernelProfile::parse("6.15+KASAN"), Err(ProfileError::UnknownOption { .. })));
        let e = KernelProfile::parse("6.1+MEM_ALLOC_PROFILING").unwrap_err();
        assert!(e.to_string().contains("appeared in 6.10"), "{e}");
    }
}
