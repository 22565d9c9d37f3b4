//! `bench --kbuild`: what running the kernel's own percpu test costs here,
//! beside the only anchor a user has without percpu-bed, a QEMU system
//! boot of a real kernel up to its `percpu:` line.
//!
//! For every target of a `percpu-bed kbuild -o` directory, `percpu_test.ko`
//! (or every module, with `all_modules`) is loaded and run on the kernel
//! runtime as `run` does, timed from reading the files to the finished
//! report.  A boot (`--boot ARCH=IMAGE`) starts `qemu-system-<arch>` under
//! TCG with the kernel image and no initrd and is timed until the serial
//! console prints `percpu:`; the boot is then killed.  Numbers are
//! measured and reported, never asserted.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

/// One module on one arch.
#[derive(Clone, Debug, Serialize)]
pub struct ModuleRow {
    pub target: String,
    pub arch: String,
    pub module: String,
    pub kernel: String,
    pub cpus: u32,
    pub runs: usize,
    /// From reading the module to the finished report.
    pub wall_ms: f64,
    pub status: String,
    pub error: Option<String>,
}

/// One QEMU boot up to the `percpu:` line.
#[derive(Clone, Debug, Serialize)]
pub struct BootRow {
    pub arch: String,
    pub image: PathBuf,
    pub smp: u32,
    pub wall_ms: Option<f64>,
    /// The `percpu:` line the boot printed.
    pub line: Option<String>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct KernelBench {
    pub modules: Vec<ModuleRow>,
    pub boots: Vec<BootRow>,
}

/// Run the modules of every target in `dir` at `cpus` CPUs.
pub fn run_modules(dir: &Path, cpus: u32, all_modules: bool) -> Result<Vec<ModuleRow>> {
    let mut targets: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {} (a `percpu-bed kbuild -o` directory)", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(crate::kbuild::manifest::MANIFEST_FILE).is_file())
        .collect();
    targets.sort();
    if targets.is_empty() {
        bail!(
            "{} holds no kbuild target directories (build them with `percpu-bed kbuild -o {}`)",
            dir.display(),
            dir.display()
        );
    }
    let mut rows = Vec::new();
    for t in targets {
        let mut kos: Vec<PathBuf> = std::fs::read_dir(&t)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "ko"))
            .filter(|p| all_modules || p.file_name().is_some_and(|n| n == "percpu_test.ko"))
            .collect();
        kos.sort();
        for ko in kos {
            rows.push(module_row(&t, &ko, cpus));
        }
    }
    Ok(rows)
}

fn module_row(target_dir: &Path, ko: &Path, cpus: u32) -> ModuleRow {
    let target = target_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let arch = crate::kbuild::target::lookup(&target).map_or(target.clone(), |t| t.bed_arch.to_string());
    let mut row = ModuleRow {
        target,
        arch: arch.clone(),
        module: ko.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        kernel: String::new(),
        cpus,
        runs: 0,
        wall_ms: 0.0,
        status: String::new(),
        error: None,
    };
    let t0 = Instant::now();
    let result = (|| -> Result<percpu_arch::check::ScenarioReport> {
        let rt = crate::kmod::runtime_abi(Some(target_dir), &[ko.to_path_buf()])?;
        row.kernel = rt.abi.kernel_version();
        let obj = crate::scenario::read_object(ko)?;
        let expects = crate::kmod::expectations(&[(ko.to_path_buf(), &obj)], &rt.abi)?;
        let mut sc = percpu_arch::check::Scenario::new(&arch, None, percpu_core::CpuSet::first_n(cpus))?;
        if let Some(v) = crate::kmod::variant_for(&arch, &rt.abi) {
            sc.variant = *sc.isa.variant(v).expect("a known variant");
        }
        Ok(percpu_arch::check::run_kernel_modules(&sc, &rt.abi, &[(obj.name.as_str(), &obj.bytes)], &expects)?)
    })();
    row.wall_ms = t0.elapsed().as_secs_f64() * 1e3;
    match result {
        Ok(r) => {
            row.runs = r.runs;
            row.status = r.tests.first().map_or("no test".into(), |t| format!("{:?}", t.status).to_uppercase());
        }
        Err(e) => {
            row.status = "ERROR".into();
            row.error = Some(format!("{e:#}"));
        }
    }
    row
}

/// The QEMU command line that boots `image` for `arch` with `smp` CPUs,
/// printing the console on stdout (options from real 6.1 boots here).
fn qemu_command(arch: &str, image: &Path, smp: u32) -> Result<Command> {
    let append = "loglevel=8 ignore_loglevel nokaslr panic=0";
    let (binary, machine, console, package) = match arch {
        "x86_64" => {
            ("qemu-system-x86_64", vec!["-machine", "q35,accel=tcg", "-cpu", "max"], "ttyS0", "qemu-system-x86")
        }
        "arm64" => {
            let gic = if smp > 8 { "virt,gic-version=3" } else { "virt" };
            ("qemu-system-aarch64", vec!["-machine", gic, "-cpu", "cortex-a57"], "ttyAMA0", "qemu-system-arm")
        }
        other => bail!("--boot {other}: boots are measured for x86_64 and arm64"),
    };
    if which(binary).is_none() {
        bail!("--boot {arch}: {binary} is not installed (Debian package {package})");
    }
    let mut c = Command::new(binary);
    c.args(machine)
        .args(["-m", "512M", "-smp", &smp.to_string(), "-display", "none", "-serial", "stdio", "-monitor", "none"])
        .args(["-no-reboot", "-kernel"])
        .arg(image)
        .args(["-append", &format!("console={console} {append}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    Ok(c)
}

fn which(binary: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(binary)).find(|p| p.is_file())
}

/// The `percpu: ...` part of a console line (`[    0.000000] percpu:
/// Embedded ...`), not `setup_percpu:` or `pcpu-alloc:`.
fn percpu_line(text: &str) -> Option<&str> {
    let at = if text.starts_with("percpu: ") { Some(0) } else { text.find("] percpu: ").map(|i| i + 2) };
    at.map(|a| &text[a..])
}

/// Boot `image` and time it to the `percpu:` line (at most `timeout`).
pub fn boot(arch: &str, image: &Path, smp: u32, timeout: Duration) -> BootRow {
    let mut row = BootRow { arch: arch.into(), image: image.into(), smp, wall_ms: None, line: None, error: None };
    let result = (|| -> Result<(f64, String)> {
        if !image.is_file() {
            bail!("{} is not a kernel image file", image.display());
        }
        let mut child = qemu_command(arch, image, smp)?.spawn().context("cannot start QEMU")?;
        let t0 = Instant::now();
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).split(b'\n').map_while(|l| l.ok()) {
                let text = String::from_utf8_lossy(&line).trim_end().to_string();
                if let Some(line) = percpu_line(&text) {
                    let _ = tx.send(line.to_string());
                    return;
                }
            }
        });
        let got = rx.recv_timeout(timeout);
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        let _ = child.kill();
        let _ = child.wait();
        match got {
            Ok(line) => Ok((ms, line)),
            Err(_) => bail!("no `percpu:` line within {} s", timeout.as_secs()),
        }
    })();
    match result {
        Ok((ms, line)) => {
            row.wall_ms = Some(ms);
            row.line = Some(line);
        }
        Err(e) => row.error = Some(format!("{e:#}")),
    }
    row
}

impl std::fmt::Display for KernelBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "Real kernel modules on the kernel runtime (wall time from reading the module to the report)")?;
        writeln!(
            f,
            "{:<9} {:<22} {:<9} {:>5} {:>5} {:>10}  status",
            "arch", "module", "kernel", "cpus", "runs", "wall ms"
        )?;
        for r in &self.modules {
            writeln!(
                f,
                "{:<9} {:<22} {:<9} {:>5} {:>5} {:>10.1}  {}{}",
                r.arch,
                r.module,
                r.kernel,
                r.cpus,
                r.runs,
                r.wall_ms,
                r.status,
                r.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
            )?;
        }
        if !self.boots.is_empty() {
            writeln!(f, "\nQEMU TCG system boots of a real kernel, to its `percpu:` line")?;
            for b in &self.boots {
                match (b.wall_ms, &b.error) {
                    (Some(ms), _) => {
                        writeln!(
                            f,
                            "{:<9} -smp {:<3} {:>10.1} ms  {}",
                            b.arch,
                            b.smp,
                            ms,
                            b.line.as_deref().unwrap_or("")
                        )?;
                        if let Some(m) = self.modules.iter().find(|m| m.arch == b.arch && m.error.is_none()) {
                            writeln!(
                                f,
                                "          the boot takes {:.0}x the time of {} on all {} CPUs",
                                ms / m.wall_ms.max(1e-3),
                                m.module,
                                m.cpus
                            )?;
                        }
                    }
                    (None, e) => writeln!(f, "{:<9} -smp {:<3} error: {}", b.arch, b.smp, e.as_deref().unwrap_or("?"))?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_percpu_line_is_told_from_its_neighbours() {
        let l = "[    0.000000] percpu: Embedded 62 pages/cpu s217088 r8192 d28672 u524288";
        assert_eq!(percpu_line(l), Some("percpu: Embedded 62 pages/cpu s217088 r8192 d28672 u524288"));
        assert_eq!(percpu_line("[    0.000000] setup_percpu: NR_CPUS:8192 nr_cpumask_bits:4"), None);
        assert_eq!(percpu_line("[    0.000000] pcpu-alloc: s217088 r8192 d28672 u524288 alloc=1*2097152"), None);
        assert_eq!(percpu_line("percpu: 58 4K pages/cpu"), Some("percpu: 58 4K pages/cpu"));
    }

    #[test]
    fn boots_that_cannot_run_say_why() {
        let b = boot("x86_64", Path::new("/nonexistent/vmlinuz"), 1, Duration::from_secs(1));
        assert!(b.error.unwrap().contains("not a kernel image file"));
        let b = boot("sparc32", Path::new("/proc/self/exe"), 1, Duration::from_secs(1));
        assert!(b.error.unwrap().contains("x86_64 and arm64"));
        let e = run_modules(Path::new("/nonexistent"), 4, false).unwrap_err();
        assert!(format!("{e:#}").contains("percpu-bed kbuild -o"));
    }
}
