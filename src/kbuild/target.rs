//! The six kernel build targets: how each is configured and compiled, and
//! which percpu-bed arch runs what it builds.

use std::fmt;

/// One kernel build target (an `ARCH=` plus a configuration).
#[derive(Debug)]
pub struct Target {
    /// Name on the command line and in paths: x86_64, arm64, s390x, alpha,
    /// sparc32, riscv64.
    pub name: &'static str,
    /// Kbuild's `ARCH=`.
    pub kbuild_arch: &'static str,
    /// Kbuild's `CROSS_COMPILE=` (Debian's cross compilers).
    pub cross_compile: &'static str,
    /// The Debian package that provides `<cross_compile>gcc`.
    pub compiler_package: &'static str,
    /// The defconfig target the configuration starts from.
    pub defconfig: &'static str,
    /// The fragment merged into it (`fixtures/kmod/config/<name>.config`).
    pub fragment: &'static str,
    /// The percpu-bed arch (`run --arch`) that runs this target's modules.
    pub bed_arch: &'static str,
    /// Debian's architecture name, where Debian builds kernels for it (the
    /// configured `linux-headers-*` packages exist only for these).
    pub debian_arch: Option<&'static str>,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// Every target, in report order.
pub static TARGETS: [Target; 6] = [
    Target {
        name: "x86_64",
        kbuild_arch: "x86_64",
        cross_compile: "x86_64-linux-gnu-",
        compiler_package: "gcc-x86-64-linux-gnu (on an amd64 host: gcc)",
        defconfig: "x86_64_defconfig",
        fragment: include_str!("../../fixtures/kmod/config/x86_64.config"),
        bed_arch: "x86_64",
        debian_arch: Some("amd64"),
    },
    Target {
        name: "arm64",
        kbuild_arch: "arm64",
        cross_compile: "aarch64-linux-gnu-",
        compiler_package: "gcc-aarch64-linux-gnu",
        defconfig: "defconfig",
        fragment: include_str!("../../fixtures/kmod/config/arm64.config"),
        bed_arch: "arm64",
        debian_arch: Some("arm64"),
    },
    Target {
        name: "s390x",
        kbuild_arch: "s390",
        cross_compile: "s390x-linux-gnu-",
        compiler_package: "gcc-s390x-linux-gnu",
        defconfig: "defconfig",
        fragment: include_str!("../../fixtures/kmod/config/s390x.config"),
        bed_arch: "s390x",
        debian_arch: Some("s390x"),
    },
    Target {
        name: "alpha",
        kbuild_arch: "alpha",
        cross_compile: "alpha-linux-gnu-",
        compiler_package: "gcc-alpha-linux-gnu",
        defconfig: "defconfig",
        fragment: include_str!("../../fixtures/kmod/config/alpha.config"),
        bed_arch: "alpha",
        debian_arch: None,
    },
    Target {
        name: "sparc32",
        kbuild_arch: "sparc",
        // Debian has no sparc32 compiler; its sparc64 GCC builds the 32-bit
        // kernel (the kernel's Makefile passes -m32).
        cross_compile: "sparc64-linux-gnu-",
        compiler_package: "gcc-sparc64-linux-gnu",
        defconfig: "sparc32_defconfig",
        fragment: include_str!("../../fixtures/kmod/config/sparc32.config"),
        bed_arch: "sparc32",
        debian_arch: None,
    },
    Target {
        name: "riscv64",
        kbuild_arch: "riscv",
        cross_compile: "riscv64-linux-gnu-",
        compiler_package: "gcc-riscv64-linux-gnu",
        defconfig: "nommu_virt_defconfig",
        fragment: include_str!("../../fixtures/kmod/config/riscv64.config"),
        bed_arch: "km",
        debian_arch: None,
    },
];

/// A target by its name, its Kbuild `ARCH`, its percpu-bed arch or its
/// Debian architecture (`amd64`).
pub fn lookup(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| {
        t.name == name
            || t.bed_arch == name
            || t.debian_arch == Some(name)
            || (t.kbuild_arch == name && name != "sparc")
    })
}

/// The names of every target, for messages.
pub fn names() -> String {
    TARGETS.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
}

/// The config lines of a fragment (comments and blank lines dropped),
/// as `(symbol, value)`: `("CONFIG_SMP", "y")`, `("CONFIG_COMPACTION", "n")`
/// for `# CONFIG_COMPACTION is not set`.
pub fn fragment_settings(fragment: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in fragment.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("# ").and_then(|r| r.strip_suffix(" is not set")) {
            if rest.starts_with("CONFIG_") {
                out.push((rest.to_string(), "n".to_string()));
            }
        } else if let Some((k, v)) = line.split_once('=') {
            if k.starts_with("CONFIG_") && !line.starts_with('#') {
                out.push((k.to_string(), v.to_string()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_is_found_by_each_of_its_names() {
        for t in &TARGETS {
            assert!(std::ptr::eq(lookup(t.name).unwrap(), t));
            assert!(std::ptr::eq(lookup(t.bed_arch).unwrap(), t));
        }
        assert_eq!(lookup("amd64").unwrap().name, "x86_64");
        assert_eq!(lookup("km").unwrap().name, "riscv64");
        assert_eq!(lookup("s390").unwrap().name, "s390x");
        assert!(lookup("sparc").is_none(), "ARCH=sparc is ambiguous (sparc32 or sparc64)");
        assert!(lookup("mips").is_none());
    }

    #[test]
    fn fragments_turn_on_smp_and_modules_everywhere() {
        for t in &TARGETS {
            let s = fragment_settings(t.fragment);
            for want in ["CONFIG_SMP", "CONFIG_MODULES", "CONFIG_MODULE_UNLOAD"] {
                assert!(s.iter().any(|(k, v)| k == want && v == "y"), "{}: {want}=y missing", t.name);
            }
        }
        let alpha = fragment_settings(lookup("alpha").unwrap().fragment);
        assert!(alpha.contains(&("CONFIG_COMPACTION".into(), "n".into())));
    }
}
