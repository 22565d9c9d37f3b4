//! Running a real kernel module's `init_module` (and `cleanup_module`) on
//! every possible CPU, as seed 003 asked of alpha, s390 and sparc owners:
//! "if you can boot and load/unload the module, it should be working fine".
//!
//! Each run starts from a freshly loaded module: its writable sections and
//! its percpu copies in the reserved chunk are put back to their load-time
//! bytes, as a new `insmod` would have them.  Then `init_module` runs on
//! the CPU; if it returns 0, `cleanup_module` runs too (the kernel only
//! calls a module's exit after a successful init).  A run passes when:
//!
//! * init returns what the module's expectation file says (0 by default;
//!   `lib/percpu_test.c` returns -EAGAIN on purpose) and prints its
//!   declared lines;
//! * no WARN, no BUG, no fault, trap or runaway, no bad `free_percpu`, and
//!   the preempt count and interrupt state are as they were;
//! * every write into percpu memory lands in an allocated object (the
//!   static area, the module's own percpu, a live dynamic allocation) of
//!   the running CPU's unit, or of a CPU whose `__per_cpu_offset[]` entry
//!   the code read (an explicit `per_cpu_ptr()` loop); no write or read
//!   touches the static area's load image, an impossible CPU's
//!   `__per_cpu_offset[]` entry, or unallocated (freed) percpu memory;
//! * every percpu allocation init made is freed by exit (or by init
//!   itself when it fails).
//!
//! Writes to the module's own ordinary data, the stack and the current
//! task are the module's business and never findings.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use percpu_core::percpu::Region;
use serde::Serialize;

use super::bed::Bed;
use super::diag::{Diagnostic, Finding, FindingKind};
use super::kernel::{live_at, log_findings, AllocEvent, KernelLog};
use super::{CheckError, CpuRun, Status, TestReport, MAX_DIAGNOSED_RUNS};
use crate::engine::{Access, MemAccess, Outcome, TraceMode};

/// What a real module's expectation file (`<module>.expect.toml`) declares.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ModuleExpect {
    /// `init_module`'s return value (an `int`: 0, or a negative errno).
    pub init_returns: i64,
    /// Substrings init must print, one line each, in this order.
    pub printk: Vec<String>,
    /// The `alloc_percpu` calls of each run (init and exit, counted from
    /// 1) that fail as under memory pressure.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fail_alloc: Vec<u32>,
    /// The module is a planted bug: why it must be caught.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub planted: Option<String>,
    /// What a configuration needs for the planted bug to show.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<Needs>,
}

/// A condition a planted bug needs to show at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Needs {
    /// Two or more possible CPUs (another CPU's copy to get wrong).
    Smp,
    /// A possible mask with holes below nr_cpu_ids.
    Sparse,
    /// CPUs' copies at addresses above 4 GiB (so 32 bits cannot hold them).
    PercpuAbove4g,
}

impl Needs {
    pub const ALL: [Needs; 3] = [Needs::Smp, Needs::Sparse, Needs::PercpuAbove4g];

    pub fn name(self) -> &'static str {
        match self {
            Needs::Smp => "smp",
            Needs::Sparse => "sparse",
            Needs::PercpuAbove4g => "percpu-above-4g",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Needs::Smp => "two or more possible CPUs",
            Needs::Sparse => "a sparse possible mask (holes below nr_cpu_ids)",
            Needs::PercpuAbove4g => "percpu copies at addresses above 4 GiB",
        }
    }
}

impl std::str::FromStr for Needs {
    /// The known names, for the error message.
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Needs::ALL.into_iter().find(|n| n.name() == s).ok_or_else(|| Needs::ALL.map(|n| n.name()).join(", "))
    }
}

/// The name a module's init/exit test has in reports.
pub const MODULE_TEST: &str = "init_module";

/// Findings listed per run for writes (the rest are counted).
const MAX_LISTED: usize = 8;

fn diag(
    bed: &Bed<'_>,
    object: &str,
    cpu: Option<u32>,
    status: Status,
    bug: Option<String>,
    findings: Vec<Finding>,
    notes: Vec<String>,
) -> Diagnostic {
    Diagnostic {
        arch: bed.isa.name().to_string(),
        variant: bed.variant.name.to_string(),
        object: object.to_string(),
        test: MODULE_TEST.to_string(),
        cpu,
        step: None,
        status,
        bug,
        summary: findings.first().map(|f| f.text.clone()).unwrap_or_default(),
        findings,
        notes,
    }
}

/// Whether `obj` is a kernel module with an init function.
pub(crate) fn has_init(bed: &Bed<'_>, oi: usize) -> bool {
    bed.objects[oi].loaded.as_ref().is_some_and(|l| l.symbol("init_module").is_some())
}

impl Bed<'_> {
    /// Whether this bed's configuration meets condition `n`.
    fn shows(&self, n: Needs) -> bool {
        match n {
            Needs::Smp => self.possible.len() >= 2,
            Needs::Sparse => self.possible.last().is_some_and(|&m| m as usize + 1 != self.possible.len()),
            Needs::PercpuAbove4g => {
                self.possible.iter().filter_map(|&c| self.cpu_ptr(self.per_cpu_start, c)).any(|a| a > u32::MAX as u64)
            }
        }
    }

    /// The CPU whose `__per_cpu_offset[]` entry `a` is within a page of:
    /// `per_cpu_ptr(NULL + small, cpu)`, a NULL percpu pointer used.
    fn null_percpu(&self, a: u64) -> Option<(u32, u64)> {
        let page = self.isa.page_size();
        self.possible.iter().find_map(|&c| {
            let off = self.offsets.get(c as usize).copied().flatten()?;
            let d = a.wrapping_sub(off);
            (d < page).then_some((c, d))
        })
    }

    /// Put a module back to its load-time state (sections and percpu copies).
    fn reset_module(&mut self, oi: usize) -> Result<(), CheckError> {
        let Some(obj) = self.objects[oi].loaded.clone() else { return Ok(()) };
        for s in obj.sections.iter().filter(|s| s.size > 0 && s.flags & percpu_loader::elf::SHF_WRITE != 0) {
            self.write(s.addr, &s.data, "module data (reset)")?;
        }
        if let Some(p) = &obj.percpu {
            for cpu in self.possible.clone() {
                let at = self.cpu_ptr(p.ptr, cpu).expect("possible cpu");
                self.write(at, &p.data, "module percpu (reset)")?;
            }
        }
        Ok(())
    }

    /// A write no check constrains (fixtures/CONTRACT.md, "How a test
    /// runs"): the stack, the current task (the kernel runtime's, or the
    /// contract's `pcpubed_thread_info`), a module's ordinary
    /// (non-percpu) writable data.  Percpu sections are not among an
    /// object's loaded sections; the kernel image's data
    /// (`__per_cpu_offset[]`) and the runtime's mask and `nr_cpu_ids` stay
    /// constrained.
    pub(crate) fn ordinary_write(&self, a: u64, len: u64) -> bool {
        let within = |r: &std::ops::Range<u64>| r.start <= a && a.wrapping_add(len) <= r.end;
        if within(&self.stack) {
            return true;
        }
        let task = match &self.kernel {
            Some(k) => k.task_area.clone(),
            None => self.runtime.thread_info..self.runtime.thread_info + super::bed::RT_THREAD_INFO_BYTES,
        };
        if within(&task) {
            return true;
        }
        self.objects.iter().filter(|o| !o.kernel).filter_map(|o| o.loaded.as_ref()).any(|l| {
            l.sections
                .iter()
                .any(|s| s.flags & percpu_loader::elf::SHF_WRITE != 0 && s.addr <= a && a + len <= s.addr + s.size)
        })
    }

    /// The CPUs whose `__per_cpu_offset[]` entry `trace` read, and reads of
    /// entries of impossible CPUs.
    fn offset_reads(&self, trace: &[MemAccess]) -> (BTreeSet<u32>, Vec<(u32, u64)>) {
        let mut explicit = BTreeSet::new();
        let mut impossible = Vec::new();
        let Some(pco) = self.objects.first().and_then(|o| o.loaded.as_ref()).and_then(|l| l.symbol("__per_cpu_offset"))
        else {
            return (explicit, impossible);
        };
        let (base, size) = (pco.value, pco.size);
        let pb = self.ptr_bytes as u64;
        for r in trace.iter().filter(|a| a.access == Access::Read) {
            if r.addr >= base && r.addr < base + size {
                let cpu = ((r.addr - base) / pb) as u32;
                if self.possible.binary_search(&cpu).is_ok() {
                    explicit.insert(cpu);
                } else {
                    impossible.push((cpu, r.pc));
                }
            }
        }
        (explicit, impossible)
    }

    /// Whether `a..a+len` lies in a copy of a dynamic allocation that was
    /// live when access `idx` happened, though it is not any more.
    fn live_during_call(&self, a: u64, len: u64, idx: usize, events: &[AllocEvent]) -> bool {
        let mut seen = BTreeSet::new();
        events.iter().filter(|e| seen.insert(e.ptr)).any(|e| {
            live_at(events, e.ptr, idx)
                && self.possible.iter().filter_map(|&c| self.cpu_ptr(e.ptr, c)).any(|p| p <= a && a + len <= p + e.size)
        })
    }

    /// For an access `a..a+len` into cpu `k`'s copy of another module's
    /// static percpu than the running one's, that module's name and the
    /// symbol there, unless the running module imports that symbol (an
    /// EXPORT_PER_CPU_SYMBOL user): a module reaching into a neighbour's
    /// percpu is stride or array arithmetic gone past its own variable.
    fn foreign_percpu(&self, a: u64, len: u64, k: u32) -> Option<(String, Option<String>)> {
        let m = self.running?;
        let mine = self.objects.get(m)?.loaded.as_ref()?;
        for (_, o) in self.objects.iter().enumerate().filter(|(n, o)| *n != m && !o.kernel) {
            let Some(l) = o.loaded.as_ref() else { continue };
            let Some(p) = &l.percpu else { continue };
            let Some(start) = self.cpu_ptr(p.ptr, k) else { continue };
            if !(start <= a && a < start + p.size) {
                continue;
            }
            let covering = l
                .symbols
                .iter()
                .filter(|s| s.defined && s.percpu)
                .find(|s| self.cpu_ptr(s.value, k).is_some_and(|v| v <= a && a + len <= v + s.size.max(1)));
            let imported = covering.is_some_and(|s| mine.symbols.iter().any(|u| !u.defined && u.name == s.name));
            return (!imported).then(|| (l.name.clone(), covering.map(|s| s.name.clone())));
        }
        None
    }

    /// The percpu-memory checks of one call's accesses (in the order they
    /// happened, with the call's allocations and frees among them).
    fn check_accesses(
        &mut self,
        cpu: u32,
        trace: &[MemAccess],
        events: &[AllocEvent],
        reads_traced: bool,
    ) -> Vec<Finding> {
        let mut out = Vec::new();
        let (explicit, impossible) = self.offset_reads(trace);
        for (k, pc) in impossible.iter().take(MAX_LISTED) {
            let mut f = Finding::new(
                FindingKind::StrayWrite,
                format!(
                    "read __per_cpu_offset[{k}] of cpu {k}, which is not possible (possible: {}; nr_cpu_ids {}): \
                     a loop over CPU numbers instead of for_each_possible_cpu()",
                    self.sc.cpus,
                    self.sc.cpus.nr_cpu_ids()
                ),
            );
            f.pc = Some(self.code_loc(*pc));
            out.push(f);
        }
        let mut listed = 0usize;
        let mut more = 0usize;
        for (idx, a) in trace.iter().enumerate() {
            let len = a.size as u64;
            if a.access == Access::Fetch || (a.access == Access::Read && !reads_traced) {
                continue;
            }
            if a.access == Access::Write && self.ordinary_write(a.addr, len) {
                continue;
            }
            // x86_64 -fstack-protector reads the canary at %gs:40
            // (fixed_percpu_data.stack_canary, in the first page).
            let canary = self.isa.name() == "x86_64" && a.access == Access::Read;
            let null = self.null_percpu(a.addr).filter(|&(_, d)| !(canary && (40..48).contains(&d)));
            let problem = if let Some((k, d)) = null {
                Some(format!(
                    "{} {len} bytes at {} = per_cpu_ptr(NULL, {k}) + {d:#x}: a NULL percpu pointer used (alloc_percpu's \
                     NULL not checked?); per_cpu_ptr(NULL, cpu) is __per_cpu_offset[cpu], not NULL",
                    if a.access == Access::Write { "wrote" } else { "read" },
                    self.decode(a.addr)
                ))
            } else if let Some(loc) = self.percpu.classify(a.addr) {
                let allocated = loc.region == Region::Static
                    || loc.allocation.is_some()
                    || self.live_during_call(a.addr, len, idx, events);
                let foreign = match loc.cpu {
                    Some(k) if loc.region == Region::Reserved && allocated => self.foreign_percpu(a.addr, len, k),
                    _ => None,
                };
                match loc.cpu {
                    _ if foreign.is_some() => {
                        let (owner, sym) = foreign.clone().expect("checked");
                        Some(format!(
                            "{} {len} bytes at {}: in {owner}'s static percpu{}, which this module does not import \
                             (stride or array arithmetic past its own percpu variable?)",
                            if a.access == Access::Write { "wrote" } else { "read" },
                            self.decode(a.addr),
                            sym.map(|s| format!(" (`{s}`)")).unwrap_or_default()
                        ))
                    }
                    _ if !allocated && loc.region == Region::Reserved => Some(format!(
                        "{} {len} bytes at {}: in the reserved chunk but in no module's percpu (past the end of \
                         a module's static percpu: stride or array arithmetic on a percpu variable?)",
                        if a.access == Access::Write { "wrote" } else { "read" },
                        self.decode(a.addr)
                    )),
                    _ if !allocated => Some(match self.freed_memory(a.addr) {
                        Some(freed) => format!(
                            "{} {len} bytes of freed percpu memory at {}: {freed} (a use after free_percpu)",
                            if a.access == Access::Write { "wrote" } else { "read" },
                            self.decode(a.addr),
                        ),
                        None => format!(
                            "{} {len} bytes of unallocated percpu memory at {} (never allocated, or freed before \
                             this run: a stray pointer or a use after free_percpu?)",
                            if a.access == Access::Write { "wrote" } else { "read" },
                            self.decode(a.addr)
                        ),
                    }),
                    None => Some(format!("{} a unit that belongs to no CPU at {}", a.access, self.decode(a.addr))),
                    Some(k) if k != cpu && a.access == Access::Write && !explicit.contains(&k) && reads_traced => {
                        Some(format!(
                            "wrote {len} bytes into cpu {k}'s copy at {} while running on cpu {cpu}, without reading \
                         __per_cpu_offset[{k}] (this_cpu code that used another CPU's offset?)",
                            self.decode(a.addr)
                        ))
                    }
                    _ => None,
                }
            } else if self.static_link.contains(&a.addr) {
                Some(format!(
                    "{} the static percpu area's load image at {} (__per_cpu_offset of an impossible CPU is 0 on \
                     generic arches, so per_cpu_ptr(ptr, cpu) of such a CPU lands here)",
                    if a.access == Access::Write { "wrote" } else { "read" },
                    self.decode(a.addr)
                ))
            } else if a.access == Access::Write {
                Some(format!(
                    "wrote {len} bytes ({:#x}) at {}: not the module's own data",
                    a.value.unwrap_or(0),
                    self.decode(a.addr)
                ))
            } else {
                None
            };
            if let Some(text) = problem {
                listed += 1;
                if listed > MAX_LISTED {
                    more += 1;
                    continue;
                }
                let kind = if a.access == Access::Write { FindingKind::StrayWrite } else { FindingKind::StrayRead };
                let mut f = Finding::new(kind, text);
                f.pc = Some(self.code_loc(a.pc));
                f.addr = Some(self.decode(a.addr));
                f.hints.extend(self.truncation_hint(a.addr));
                f.hints.extend(self.reloc_hint(a.pc));
                out.push(f);
            }
        }
        if more > 0 {
            out.push(Finding::new(FindingKind::StrayWrite, format!("... and {more} more bad accesses")));
        }
        let _ = cpu;
        out
    }

    /// One call of a module function on `cpu` with all of its checks.
    fn module_call(
        &mut self,
        entry: u64,
        cpu: u32,
        what: &str,
        reads_traced: bool,
    ) -> Result<(Outcome, KernelLog, Vec<Finding>), CheckError> {
        self.enter(cpu, None)?;
        let _ = self.engine.take_trace();
        let before = self.kernel_state(cpu);
        let (outcome, mut log) = self.kernel_call(entry, &[], cpu, what)?;
        let mut trace = std::mem::take(&mut log.trace);
        trace.extend(self.engine.take_trace());
        let after = self.kernel_state(cpu);
        let mut findings = Vec::new();
        match outcome {
            Outcome::Returned { .. } => {}
            Outcome::Fault { pc, addr, access, unmapped } => {
                let mut f = Finding::new(
                    FindingKind::Fault,
                    format!(
                        "{what}: {access} fault ({}) at {}",
                        if unmapped { "unmapped" } else { "protected" },
                        self.decode(addr)
                    ),
                );
                f.pc = Some(self.code_loc(pc));
                f.addr = Some(self.decode(addr));
                if access != Access::Fetch {
                    f.hints.extend(self.truncation_hint(addr));
                }
                f.hints.extend(self.reloc_hint(pc));
                findings.push(f);
            }
            Outcome::BudgetExhausted { pc, budget } => {
                let mut f = Finding::new(
                    FindingKind::Runaway,
                    format!("{what}: runaway code: the {budget}-instruction budget ran out"),
                );
                f.pc = Some(self.code_loc(pc));
                findings.push(f);
            }
            Outcome::Trap { pc, ref reason } if log.bug.is_none() && log.findings.is_empty() => {
                let mut f = Finding::new(FindingKind::Trap, format!("{what}: the CPU trapped: {reason}"));
                f.pc = Some(self.code_loc(pc));
                findings.push(f);
            }
            _ => {}
        }
        findings.extend(log_findings(&log, before, after));
        findings.extend(self.check_accesses(cpu, &trace, &log.alloc_events, reads_traced));
        if !findings.is_empty() {
            super::exec::undo_writes(self, &trace)?;
        }
        Ok((outcome, log, findings))
    }
}

/// Run module `oi`'s init (and exit) on every possible CPU (or a sample).
pub(crate) fn run_module(bed: &mut Bed<'_>, oi: usize, expect: &ModuleExpect) -> Result<TestReport, CheckError> {
    let t0 = Instant::now();
    let object = bed.objects[oi].name.clone();
    let planted = expect.planted.clone();
    let mut report = TestReport {
        object: object.clone(),
        test: MODULE_TEST.to_string(),
        index: 0,
        status: Status::Pass,
        expect_caught: planted.is_some(),
        bug: planted.clone(),
        diagnostic: None,
        runs: Vec::new(),
        micros: 0,
        printk: Vec::new(),
        emulated: BTreeMap::new(),
        latent: None,
    };
    if let Some(msg) = bed.objects[oi].rejected.clone() {
        let status = if planted.is_some() { Status::Caught } else { Status::Fail };
        let f = Finding::new(
            FindingKind::Rejected,
            format!("the module could not be loaded, as the kernel would refuse it: {msg}"),
        );
        report.status = status;
        report.diagnostic = Some(diag(bed, &object, None, status, planted, vec![f], Vec::new()));
        return Ok(report);
    }
    let loaded = bed.objects[oi].loaded.clone().expect("not rejected");
    let init = loaded.symbol("init_module").map(|s| s.value).expect("has_init checked");
    let exit = loaded.symbol("cleanup_module").map(|s| s.value);
    let mut notes = vec![format!("init_module is {}", bed.code_loc(init))];
    if let Some(k) = &bed.kernel {
        notes.push(format!("kernel runtime for Linux {} (NR_CPUS {})", k.abi.kernel_version(), k.abi.nr_cpus));
    }
    // Reads are checked where tracing them is cheap (Unicorn), not where
    // every read would be a single step (qemu-alpha).
    let reads_traced = bed.engine.name() != "qemu-alpha";
    if reads_traced {
        bed.engine.set_trace_mode(TraceMode::All);
    }
    let run_cpus = super::sample_cpus(&bed.possible, bed.sc.nodes, bed.sc.run_on);
    let mut diagnosed = 0;
    for cpu in run_cpus {
        let tr = Instant::now();
        bed.reset_module(oi)?;
        if let Some(k) = bed.kernel.as_mut() {
            k.fail_alloc = expect.fail_alloc.clone();
            k.alloc_calls = 0;
        }
        let live_before: Vec<u64> = bed.dyn_allocs.iter().map(|d| d.ptr).collect();
        bed.running = Some(oi);
        let (outcome, log, mut findings) = bed.module_call(init, cpu, "init_module", reads_traced)?;
        let mut printk = log.printk.clone();
        for (what, n) in &log.emulated {
            *report.emulated.entry(what.clone()).or_default() += n;
        }
        let mut instructions = outcome.instructions();
        if let Outcome::Returned { value, .. } = outcome {
            let got = value as u32 as i32 as i64;
            if got != expect.init_returns {
                let abi = bed.kernel.as_ref().map(|k| &k.abi);
                findings.push(Finding::new(
                    FindingKind::Expectation,
                    format!(
                        "init_module returned {got}{}, expected {}{}",
                        errno_name(abi, got),
                        expect.init_returns,
                        errno_name(abi, expect.init_returns)
                    ),
                ));
            }
            if got == 0 && findings.is_empty() {
                if let Some(exit) = exit {
                    let (out2, log2, f2) = bed.module_call(exit, cpu, "cleanup_module", reads_traced)?;
                    printk.extend(log2.printk.iter().cloned());
                    for (what, n) in &log2.emulated {
                        *report.emulated.entry(what.clone()).or_default() += n;
                    }
                    findings.extend(f2);
                    instructions = instructions.zip(out2.instructions()).map(|(a, b)| a + b);
                }
            }
        }
        let mut at = 0usize;
        for want in &expect.printk {
            match printk.iter().skip(at).position(|l| l.text.contains(want.as_str())) {
                Some(p) => at += p + 1,
                None => {
                    findings.push(Finding::new(
                        FindingKind::Expectation,
                        format!("init did not print a line containing {want:?} (in order after the earlier ones)"),
                    ));
                    break;
                }
            }
        }
        // Allocations that outlived the module.
        let leaked: Vec<(u64, u64)> =
            bed.dyn_allocs.iter().filter(|d| !live_before.contains(&d.ptr)).map(|d| (d.ptr, d.size)).collect();
        for (p, size) in leaked {
            findings.push(Finding::new(
                FindingKind::Kernel,
                format!("leaked percpu memory: {size} bytes at {p:#x} were allocated and never freed by the module"),
            ));
            bed.free_dynamic(p)?;
        }
        let status = match (findings.is_empty(), planted.is_some()) {
            (true, _) => Status::Pass,
            (false, true) => Status::Caught,
            (false, false) => Status::Fail,
        };
        if report.printk.is_empty() {
            report.printk = printk.iter().map(|l| format!("[cpu {}] {}", l.cpu, l.text)).collect();
        }
        let mut run = CpuRun {
            step: None,
            cpu,
            status,
            instructions,
            micros: tr.elapsed().as_micros() as u64,
            diagnostic: None,
            summary: None,
            printk: printk.iter().map(|l| l.text.clone()).collect(),
        };
        if !findings.is_empty() {
            let d = diag(bed, &object, Some(cpu), status, planted.clone(), findings, notes.clone());
            run.summary = Some(d.summary.clone());
            if report.diagnostic.is_none() {
                report.diagnostic = Some(d.clone());
            }
            if diagnosed < MAX_DIAGNOSED_RUNS {
                run.diagnostic = Some(d);
            }
            diagnosed += 1;
        }
        report.runs.push(run);
    }
    bed.reset_module(oi)?;
    if let Some(k) = bed.kernel.as_mut() {
        k.fail_alloc.clear();
    }
    bed.engine.set_trace_mode(if bed.sc.trace { TraceMode::All } else { TraceMode::Writes });
    let any = |s: Status| report.runs.iter().any(|r| r.status == s);
    report.status = if planted.is_some() {
        if any(Status::Caught) {
            Status::Caught
        } else {
            let mut f = Finding::new(
                FindingKind::NotCaught,
                "planted bug not caught: init and exit behaved on every CPU they ran on",
            );
            let unmet: Vec<Needs> = expect.needs.iter().copied().filter(|n| !bed.shows(*n)).collect();
            if !unmet.is_empty() {
                let why = format!(
                    "latent in this configuration: the bug needs {}",
                    unmet.iter().map(|n| n.what()).collect::<Vec<_>>().join(" and ")
                );
                f.hints.push(why.clone());
                report.latent = Some(why);
            }
            report.diagnostic = Some(diag(bed, &object, None, Status::Fail, planted.clone(), vec![f], notes));
            Status::Fail
        }
    } else if any(Status::Fail) {
        Status::Fail
    } else {
        Status::Pass
    };
    if let Some(d) = &mut report.diagnostic {
        d.status = report.status;
    }
    report.micros = t0.elapsed().as_micros() as u64;
    Ok(report)
}

/// ` (-EAGAIN)` for a negative errno, named as the tree names it (alpha's
/// EAGAIN is 35).
fn errno_name(abi: Option<&crate::runtime::RtAbi>, v: i64) -> String {
    match abi.and_then(|a| if v < 0 { a.errno_name(-v) } else { None }) {
        Some(name) => format!(" (-{name})"),
        None => String::new(),
    }
}
