//! Running one test descriptor on every possible CPU and checking it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use percpu_loader::{Op, RetKind, TestDescriptor, TestFlags};

use super::bed::Bed;
use super::diag::{explain_value, AddrInfo, Diagnostic, Finding, FindingKind};
use super::{CheckError, CpuRun, Status, TestReport, FULL_CHECK_CPUS, MAX_DIAGNOSED_RUNS};
use crate::engine::{Access, MemAccess, Outcome};

/// Stray writes listed per run (the rest are counted).
const MAX_STRAY: usize = 8;

/// The cause of an access to freed percpu memory.
const KEPT_POINTER: &str = "the code used a percpu pointer it kept (in module data, or from an earlier call) after \
                            the allocation was freed, instead of the current one";

fn wmask(width: u32) -> u64 {
    if width >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * width)) - 1
    }
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Read => "READ",
        Op::Add => "ADD",
        Op::Write => "WRITE",
        Op::SumAll => "SUM_ALL",
        Op::AddAll => "ADD_ALL",
    }
}

/// Everything a run is checked against.
struct Ctx<'t> {
    test: &'t TestDescriptor,
    /// The target percpu pointer.
    t: u64,
    /// cpu -> address of its copy (indexed by cpu number).
    copies: Vec<Option<u64>>,
    nr_possible: usize,
    /// Contract version 2: cpu `k`'s copy starts at `init + k` (so a test
    /// that reads another CPU's copy sees another value); version 1: every
    /// copy starts at `init`.
    per_cpu_init: bool,
    /// STEPS: the (step, cpu) of the steps run before this one.
    earlier_steps: Vec<(u32, u32)>,
}

impl Ctx<'_> {
    fn copy(&self, cpu: u32) -> u64 {
        self.copies[cpu as usize].expect("possible cpu")
    }
    fn size(&self) -> u64 {
        self.test.size as u64
    }
    fn width(&self) -> u64 {
        self.test.width as u64
    }
    /// The value cpu `k`'s copy starts from.
    fn init(&self, k: u32) -> u64 {
        let spread = if self.per_cpu_init { u64::from(k) } else { 0 };
        self.test.init.wrapping_add(spread) & wmask(self.test.width)
    }
    /// Cpu `k`'s value after the op (when the op changes it).
    fn new_value(&self, k: u32) -> u64 {
        let m = wmask(self.test.width);
        match self.test.op {
            Op::Add | Op::AddAll => self.init(k).wrapping_add(self.test.operand) & m,
            Op::Write => self.test.operand & m,
            Op::Read | Op::SumAll => self.init(k),
        }
    }
    /// What cpu `k`'s copy must hold after a run on `cpu`.
    fn want(&self, k: u32, cpu: u32) -> u64 {
        match self.test.op {
            Op::AddAll => self.new_value(k),
            Op::Add | Op::Write if k == cpu => self.new_value(k),
            _ => self.init(k),
        }
    }
}

fn diag(
    bed: &Bed<'_>,
    object: &str,
    test: &TestDescriptor,
    at: Option<(u32, Option<u32>)>,
    status: Status,
    findings: Vec<Finding>,
    notes: Vec<String>,
) -> Diagnostic {
    Diagnostic {
        arch: bed.isa.name().to_string(),
        variant: bed.variant.name.to_string(),
        object: object.to_string(),
        test: test.name.clone(),
        cpu: at.map(|(c, _)| c),
        step: at.and_then(|(_, s)| s),
        status,
        bug: test.bug.clone(),
        summary: findings.first().map(|f| f.text.clone()).unwrap_or_default(),
        findings,
        notes,
    }
}

/// The `CAUGHT_*` class of a finding (0: says nothing about the test).
fn caught_class(kind: FindingKind) -> u32 {
    match kind {
        FindingKind::Rejected => TestFlags::CAUGHT_REJECTED,
        FindingKind::Fault => TestFlags::CAUGHT_FAULT,
        FindingKind::WrongReturn | FindingKind::WrongValue => TestFlags::CAUGHT_VALUE,
        FindingKind::StrayWrite => TestFlags::CAUGHT_STRAY_WRITE,
        FindingKind::StrayRead => TestFlags::CAUGHT_STRAY_READ,
        FindingKind::Trap => TestFlags::CAUGHT_TRAP,
        FindingKind::Warn | FindingKind::Bug | FindingKind::Kernel | FindingKind::Expectation => {
            TestFlags::CAUGHT_KERNEL
        }
        FindingKind::Runaway => TestFlags::CAUGHT_RUNAWAY,
        FindingKind::NotCaught | FindingKind::Harness => 0,
    }
}

/// The status of one run (or of a rejected object's test) from its
/// findings.  A planted bug is caught only by findings of the classes its
/// descriptor declares (`CAUGHT_*`; none declared: any finding but a
/// runaway, which says the run did not finish, not what the bug did; and
/// after a runaway only a declared runaway counts).
/// Anything else is a failure that says so first: "caught for another
/// reason" is how `budget = 0` or a broken engine shows up.
fn judge(test: &TestDescriptor, findings: &mut Vec<Finding>) -> Status {
    if findings.is_empty() {
        return Status::Pass;
    }
    if !test.flags.expect_caught() {
        return Status::Fail;
    }
    let want = test.flags.caught_as();
    // A run that did not finish says nothing about the effects it did not
    // reach: its unmodified copies are no wrong values.
    let ran_out = findings.iter().any(|f| f.kind == FindingKind::Runaway);
    let counts = |c: u32| {
        let declared = if want == 0 { c != TestFlags::CAUGHT_RUNAWAY } else { want & c != 0 };
        c != 0 && declared && (!ran_out || c == TestFlags::CAUGHT_RUNAWAY)
    };
    if findings.iter().any(|f| counts(caught_class(f.kind))) {
        return Status::Caught;
    }
    let mut found: Vec<&str> = Vec::new();
    for f in findings.iter() {
        let name = TestFlags::CAUGHT_NAMES
            .iter()
            .find(|(bit, _)| *bit == caught_class(f.kind))
            .map_or("harness error", |(_, n)| *n);
        if !found.contains(&name) {
            found.push(name);
        }
    }
    let expected = if want == 0 { "any finding but a runaway".to_string() } else { test.flags.caught_as_names() };
    let text = if ran_out && want & TestFlags::CAUGHT_RUNAWAY == 0 {
        format!(
            "planted bug not judged: the run ran out of its instruction budget, so what it left says nothing \
             about the bug (it is caught by {expected})"
        )
    } else {
        format!(
            "planted bug caught for another reason: it is caught by {expected}; this run found {}",
            found.join("; ")
        )
    };
    findings.insert(0, Finding::new(FindingKind::NotCaught, text));
    Status::Fail
}

/// The (cpu, step) of each call.  A test runs once on each CPU of
/// `run_cpus`; a STEPS test runs as one sequence of steps over them, at
/// least two (on a uniprocessor both on its one CPU), so that state kept
/// from one call to the next, and a DYNAMIC target replaced between calls,
/// are exercised everywhere.
fn run_plan(test: &TestDescriptor, run_cpus: &[u32]) -> Vec<(u32, Option<u32>)> {
    if !test.flags.steps() {
        return run_cpus.iter().map(|&c| (c, None)).collect();
    }
    let n = run_cpus.len().max(2);
    (0..n).map(|k| (run_cpus[k % run_cpus.len()], Some(k as u32))).collect()
}

pub(crate) fn run_test(bed: &mut Bed<'_>, oi: usize, ti: usize) -> Result<TestReport, CheckError> {
    let t0 = Instant::now();
    let test = bed.objects[oi].tests[ti].clone();
    let object = bed.objects[oi].name.clone();
    let abi = bed.objects[oi].abi.clone();
    let expect = test.flags.expect_caught();
    let mut report = TestReport {
        object: object.clone(),
        test: test.name.clone(),
        index: test.index,
        status: Status::Pass,
        expect_caught: expect,
        bug: test.bug.clone(),
        diagnostic: None,
        runs: Vec::new(),
        micros: 0,
        printk: Vec::new(),
        emulated: BTreeMap::new(),
        latent: None,
    };
    let mut notes: Vec<String> = bed.objects[oi]
        .truncations
        .iter()
        .take(3)
        .map(|t| {
            format!(
                "the loader silently truncated {} against `{}` at {}+{:#x} (value {} does not fit {}), as the arch's \
                 module loader does",
                t.type_name.unwrap_or("a relocation"),
                t.symbol,
                t.section,
                t.offset,
                super::diag::hex_i128(t.value),
                t.reach
            )
        })
        .collect();

    // An object the loader rejected: its tests' result is the rejection.
    if let Some(msg) = bed.objects[oi].rejected.clone() {
        let f = Finding::new(
            FindingKind::Rejected,
            format!("the loader rejected {object}, as the kernel's module loader would: {msg}"),
        );
        let mut findings = vec![f];
        let status = judge(&test, &mut findings);
        report.status = status;
        report.diagnostic = Some(diag(bed, &object, &test, None, status, findings, notes));
        report.micros = t0.elapsed().as_micros() as u64;
        return Ok(report);
    }

    let error = |bed: &Bed<'_>, report: &mut TestReport, text: String| {
        let f = Finding::new(FindingKind::Harness, text);
        report.status = Status::Error;
        report.diagnostic = Some(diag(bed, &object, &test, None, Status::Error, vec![f], Vec::new()));
    };

    // The target: a static percpu symbol, or a fresh allocation.
    let dynamic = test.flags.dynamic();
    let t = if dynamic {
        match bed.alloc_dynamic(test.size as usize, test.align.max(1) as usize, test.flags.far(), &test.name) {
            Ok(p) => {
                let pb = bed.ptr_bytes;
                bed.write_uint(test.target, p, pb, "the DYNAMIC slot")?;
                let loc = bed.percpu.classify_ptr(percpu_core::PcpuPtr(p));
                notes.push(format!(
                    "target: {} bytes allocated at percpu pointer {p:#x}{}",
                    test.size,
                    loc.map(|l| format!(" (chunk {} {:?}, unit offset {:#x})", l.chunk, l.role, l.offset))
                        .unwrap_or_default()
                ));
                p
            }
            Err(e) => {
                error(bed, &mut report, format!("cannot allocate the DYNAMIC target: {e}"));
                report.micros = t0.elapsed().as_micros() as u64;
                return Ok(report);
            }
        }
    } else {
        if let Some(s) = bed.name_percpu_ptr(test.target) {
            notes.push(format!("target: percpu pointer {:#x} = {s}", test.target));
        }
        test.target
    };

    let nr_ids = bed.offsets.len();
    let copies_of = |bed: &Bed<'_>, t: u64| {
        let mut copies = vec![None; nr_ids];
        for &c in &bed.possible {
            copies[c as usize] = bed.cpu_ptr(t, c);
        }
        copies
    };
    let per_cpu_init = abi.as_ref().is_some_and(|a| a.version >= 2);
    let mut ctx = Ctx {
        test: &test,
        t,
        copies: copies_of(bed, t),
        nr_possible: bed.possible.len(),
        per_cpu_init,
        earlier_steps: Vec::new(),
    };
    let first_cpu = bed.possible[0];
    let a0 = ctx.copy(first_cpu);
    if bed.percpu.classify(a0).is_none() || !bed.is_mapped(a0) {
        error(
            bed,
            &mut report,
            format!("target {t:#x} is no percpu pointer: per_cpu_ptr(target, {first_cpu}) = {}", bed.decode(a0)),
        );
        if dynamic {
            bed.free_dynamic(t)?;
        }
        report.micros = t0.elapsed().as_micros() as u64;
        return Ok(report);
    }

    // init into every possible CPU's copy (the rest of the object keeps its bytes).
    let width = test.width as usize;
    for &c in &bed.possible.clone() {
        bed.write_uint(ctx.copy(c), ctx.init(c), width, "init")?;
    }
    let full = bed.possible.len() <= FULL_CHECK_CPUS;
    let run_cpus: Vec<u32> = if test.flags.once() {
        vec![first_cpu]
    } else {
        super::sample_cpus(&bed.possible, bed.sc.nodes, bed.sc.run_on)
    };
    let plan = run_plan(&test, &run_cpus);
    let mut diagnosed = 0usize;
    let mut step_note: Option<String> = None;
    for (cpu, step) in plan {
        if let Some(s) = step.filter(|&s| dynamic && s > 0) {
            // Between steps the target moves, as a module that frees an
            // object and allocates a new one: the new allocation first, so
            // that the freed memory is not handed straight back and a kept
            // pointer reaches freed percpu memory.
            let (prev_step, prev_cpu) = *ctx.earlier_steps.last().expect("a step before");
            let old = ctx.t;
            let new =
                match bed.alloc_dynamic(test.size as usize, test.align.max(1) as usize, test.flags.far(), &test.name) {
                    Ok(p) => p,
                    Err(e) => {
                        error(bed, &mut report, format!("cannot allocate the DYNAMIC target for step {s}: {e}"));
                        bed.free_dynamic(old)?;
                        report.micros = t0.elapsed().as_micros() as u64;
                        return Ok(report);
                    }
                };
            let pb = bed.ptr_bytes;
            bed.write_uint(test.target, new, pb, "the DYNAMIC slot")?;
            bed.free_dynamic_at(
                old,
                Some(format!("the harness after step {prev_step} (cpu {prev_cpu}), before step {s} (STEPS)")),
            )?;
            ctx.t = new;
            ctx.copies = copies_of(bed, new);
            for &c in &bed.possible.clone() {
                bed.write_uint(ctx.copy(c), ctx.init(c), width, "init")?;
            }
            // Only the latest move: a diagnostic names its own step's target.
            step_note = Some(format!(
                "step {s}: the target was reallocated at percpu pointer {new:#x} and the step {prev_step} allocation \
                 {old:#x} freed"
            ));
        }
        let snapshot = if full { Some(snapshot(bed, &ctx)?) } else { None };
        let words = word_window(bed, &ctx, cpu)?;
        let tr = Instant::now();
        let mut state_before = None;
        let outcome = bed.enter(cpu, abi.as_ref()).and_then(|_| {
            let _ = bed.engine.take_trace();
            state_before = bed.kernel_state(cpu);
            bed.kernel_call(test.fn_addr, &[test.arg(step)], cpu, &test.name)
        });
        let micros = tr.elapsed().as_micros() as u64;
        let (outcome, mut klog) = match outcome {
            Ok(o) => o,
            Err(e) => {
                let f = Finding::new(FindingKind::Harness, e.to_string());
                let d = diag(bed, &object, &test, Some((cpu, step)), Status::Error, vec![f], Vec::new());
                report.runs.push(CpuRun {
                    cpu,
                    step,
                    status: Status::Error,
                    instructions: None,
                    micros,
                    summary: Some(d.summary.clone()),
                    diagnostic: Some(d),
                    printk: Vec::new(),
                });
                continue;
            }
        };
        // Without the kernel runtime the engine still holds the accesses.
        let mut trace = std::mem::take(&mut klog.trace);
        trace.extend(bed.engine.take_trace());
        if bed.sc.trace {
            log_trace(bed, &object, &test, cpu, &trace);
        }
        let mut findings = evaluate(bed, &ctx, cpu, &outcome, &trace, snapshot.as_deref(), words.as_ref())?;
        let state_after = bed.kernel_state(cpu);
        findings.extend(super::kernel::log_findings(&klog, state_before, state_after));
        // Dynamic allocations the test made itself and did not free.
        for (p, size) in &klog.allocations {
            if bed.dyn_allocs.iter().any(|d| d.ptr == *p) {
                findings.push(Finding::new(
                    FindingKind::Kernel,
                    format!("leaked a percpu allocation: {size} bytes at {p:#x} (alloc_percpu without free_percpu)"),
                ));
                bed.free_dynamic(*p)?;
            }
        }
        let instructions = match outcome {
            Outcome::Returned { instructions, .. } => instructions,
            Outcome::BudgetExhausted { budget, .. } => Some(budget),
            _ => None,
        };
        // A misbehaving run may have written anywhere: undo its writes,
        // newest first, so no later test starts from memory it corrupted.
        if !findings.is_empty() {
            undo_writes(bed, &trace)?;
        }
        // Put init back where this run wrote (everywhere after a misbehaviour).
        if !findings.is_empty() || test.op == Op::AddAll {
            match &snapshot {
                Some(s) => restore(bed, &ctx, s)?,
                None => {
                    for &c in &bed.possible.clone() {
                        bed.write_uint(ctx.copy(c), ctx.init(c), width, "init")?;
                    }
                }
            }
        } else if matches!(test.op, Op::Add | Op::Write) {
            bed.write_uint(ctx.copy(cpu), ctx.init(cpu), width, "init")?;
        }
        let status = judge(&test, &mut findings);
        let printk = klog.printk.iter().map(|l| l.text.clone()).collect();
        let mut run = CpuRun { cpu, step, status, instructions, micros, diagnostic: None, summary: None, printk };
        if !findings.is_empty() {
            let run_notes = notes.iter().chain(&step_note).cloned().collect();
            let d = diag(bed, &object, &test, Some((cpu, step)), status, findings, run_notes);
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
        if let Some(s) = step {
            ctx.earlier_steps.push((s, cpu));
        }
    }
    if dynamic {
        bed.free_dynamic(ctx.t)?;
    }
    let any = |s: Status| report.runs.iter().any(|r| r.status == s);
    report.status = if any(Status::Error) {
        Status::Error
    } else if expect {
        if any(Status::Caught) {
            Status::Caught
        } else if any(Status::Fail) {
            // Misbehaved, but not the way the bug does: the first such
            // run's diagnostic (it leads with "caught for another reason").
            Status::Fail
        } else {
            let cpus = percpu_core::CpuSet::from_cpus(report.runs.iter().map(|r| r.cpu));
            let text = if test.flags.steps() {
                format!(
                    "planted bug not caught: the test behaved in all {} steps (on CPU(s) {cpus})",
                    report.runs.len()
                )
            } else {
                format!(
                    "planted bug not caught: the test behaved on all {} CPU(s) it ran on ({cpus})",
                    report.runs.len()
                )
            };
            let mut f = Finding::new(FindingKind::NotCaught, text);
            if test.flags.needs_smp() && bed.possible.len() < 2 {
                let why = "latent in this configuration: the bug needs two or more possible CPUs".to_string();
                f.hints.push(why.clone());
                report.latent = Some(why);
            }
            report.diagnostic = Some(diag(bed, &object, &test, None, Status::Fail, vec![f], notes));
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
    let _ = ctx.nr_possible;
    Ok(report)
}

/// Put back what every recorded write overwrote (outside the stack),
/// newest first, where the engine could read the old bytes.
pub(crate) fn undo_writes(bed: &mut Bed<'_>, trace: &[MemAccess]) -> Result<(), CheckError> {
    let mut undone = 0usize;
    for w in trace.iter().rev().filter(|a| a.access == Access::Write) {
        let in_stack = bed.stack.contains(&w.addr) && w.addr.wrapping_add(w.size as u64) <= bed.stack.end;
        if let (Some(old), false) = (w.old, in_stack) {
            if bed.is_mapped(w.addr) && bed.write_uint(w.addr, old, w.size as usize, "undoing a stray write").is_ok() {
                undone += 1;
            }
        }
    }
    tracing::debug!(undone, "undid the writes of a misbehaving run");
    Ok(())
}

/// Every copy's `size` bytes (small CPU counts only).
fn snapshot(bed: &mut Bed<'_>, ctx: &Ctx<'_>) -> Result<Vec<u8>, CheckError> {
    let size = ctx.test.size as usize;
    let mut v = Vec::with_capacity(size * bed.possible.len());
    for &c in &bed.possible.clone() {
        v.extend(bed.read(ctx.copy(c), size, "target copy")?);
    }
    Ok(v)
}

fn restore(bed: &mut Bed<'_>, ctx: &Ctx<'_>, snap: &[u8]) -> Result<(), CheckError> {
    let size = ctx.test.size as usize;
    for (i, &c) in bed.possible.clone().iter().enumerate() {
        bed.write(ctx.copy(c), &snap[i * size..(i + 1) * size], "target copy")?;
    }
    Ok(())
}

/// The aligned 8-byte words around this CPU's copy of an ADD/WRITE
/// target, read before the run.  Arches without byte and halfword stores
/// (alpha without BWX, as generic alpha kernels are built) update a narrow
/// value by rewriting its whole word; such a store is fine as long as every
/// byte it writes outside the target keeps its value.
fn word_window(bed: &mut Bed<'_>, ctx: &Ctx<'_>, cpu: u32) -> Result<Option<(u64, Vec<u8>)>, CheckError> {
    if !matches!(ctx.test.op, Op::Add | Op::Write) {
        return Ok(None);
    }
    let e = ctx.copy(cpu);
    let lo = e & !7;
    let hi = (e + ctx.width() + 7) & !7;
    Ok(Some((lo, bed.read(lo, (hi - lo) as usize, "words around the target")?)))
}

/// `--trace`: every access at debug level, decoded, except the call's
/// own stack (trace level).  Accesses outside the units (link addresses,
/// the load image, lowcore, unmapped memory) are the ones offset bugs make.
fn log_trace(bed: &Bed<'_>, object: &str, test: &TestDescriptor, cpu: u32, trace: &[MemAccess]) {
    let arch = bed.isa.name();
    for a in trace {
        let what = match a.access {
            Access::Write => format!("write {} bytes {:#x}", a.size, a.value.unwrap_or(0)),
            _ => format!("{} {} bytes", a.access, a.size),
        };
        let line = format!(
            "{arch}/{} {object}:{} cpu {cpu}: {what} at {} ({})",
            bed.variant.name,
            test.name,
            bed.decode(a.addr),
            bed.code_loc(a.pc)
        );
        // tracing's levels are constants: one message, two call sites.
        if bed.stack.contains(&a.addr) {
            tracing::trace!(target: "percpu_bed::trace", "{line}");
        } else {
            tracing::debug!(target: "percpu_bed::trace", "{line}");
        }
    }
}

fn evaluate(
    bed: &mut Bed<'_>,
    ctx: &Ctx<'_>,
    cpu: u32,
    outcome: &Outcome,
    trace: &[MemAccess],
    snap: Option<&[u8]>,
    words: Option<&(u64, Vec<u8>)>,
) -> Result<Vec<Finding>, CheckError> {
    let test = ctx.test;
    let mut out = Vec::new();
    let e = ctx.copy(cpu);
    let (t, size, width) = (ctx.t, ctx.size(), ctx.width());
    let ptr_bytes = bed.ptr_bytes as u32;
    let n = bed.possible.len() as u64;

    // How the call ended, and what it returned.
    match *outcome {
        Outcome::Returned { value, .. } => {
            let cmp = test.width.min(ptr_bytes);
            let m = wmask(cmp);
            let pm = wmask(ptr_bytes);
            let want = match test.ret {
                RetKind::None => None,
                RetKind::Value => Some((test.expect_ret & pm, pm, format!("RET_VALUE {:#x}", test.expect_ret & pm))),
                RetKind::Old => Some((ctx.init(cpu) & m, m, "RET_OLD: this CPU's value before the op".into())),
                RetKind::New => Some((ctx.new_value(cpu) & m, m, "RET_NEW: this CPU's value after the op".into())),
                RetKind::Sum => Some((
                    bed.possible.iter().fold(0u64, |sum, &k| sum.wrapping_add(ctx.init(k))) & wmask(test.width) & m,
                    m,
                    format!("RET_SUM: the sum of {n} CPUs' values"),
                )),
                RetKind::Cpu => Some((cpu as u64, pm, "RET_CPU: the running CPU's number".into())),
            };
            if let Some((want, mask, what)) = want {
                let got = value & mask;
                if got != want {
                    let mut f = Finding::new(
                        FindingKind::WrongReturn,
                        format!("returned {got:#x}, expected {want:#x} ({what})"),
                    );
                    if matches!(test.ret, RetKind::New | RetKind::Value) && test.op == Op::Add {
                        f.hints = explain_value(true, ctx.init(cpu), test.operand, cmp, want, got);
                        f.hints.retain(|h| !h.starts_with("the value was not modified"));
                    }
                    if test.ret == RetKind::Old && ctx.per_cpu_init {
                        if let Some(&k) = bed.possible.iter().find(|&&k| k != cpu && ctx.init(k) & mask == got) {
                            f.hints.push(format!(
                                "{got:#x} is cpu {k}'s initial value (each copy starts at init + cpu): the test read \
                                 cpu {k}'s copy while running on cpu {cpu}"
                            ));
                        }
                    }
                    if test.ret == RetKind::Cpu {
                        f.hints.push(format!(
                            "cpu {got} reported instead of cpu {cpu}: the CPU number came from the wrong place"
                        ));
                    }
                    out.push(f);
                }
            }
        }
        Outcome::Fault { pc, addr, access, unmapped } => {
            let info = bed.decode(addr);
            let mut f = Finding::new(
                FindingKind::Fault,
                format!(
                    "{access} fault ({}) at {info}; the access was meant for this CPU's copy of the target, {}",
                    if unmapped { "unmapped" } else { "protected" },
                    bed.decode(e)
                ),
            );
            if access != Access::Fetch {
                f.hints = bed.explain_addr(cpu, t, size, width, addr);
                if let Some(freed) = bed.freed_memory(addr) {
                    f.hints.insert(0, format!("{freed}: {KEPT_POINTER}"));
                }
            }
            f.hints.extend(bed.reloc_hint(pc));
            f.pc = Some(bed.code_loc(pc));
            f.addr = Some(info);
            out.push(f);
        }
        Outcome::BudgetExhausted { pc, budget } => {
            let mut f =
                Finding::new(FindingKind::Runaway, format!("runaway code: the {budget}-instruction budget ran out"));
            f.pc = Some(bed.code_loc(pc));
            out.push(f);
        }
        Outcome::HostCall { pc, .. } | Outcome::Breakpoint { pc, .. } => {
            let mut f = Finding::new(FindingKind::Trap, "stopped in the kernel runtime's function page".to_string());
            f.pc = Some(bed.code_loc(pc));
            out.push(f);
        }
        Outcome::Trap { pc, ref reason } => {
            let mut f = Finding::new(FindingKind::Trap, format!("the CPU trapped: {reason}"));
            if bed.isa.name() == "arm64" && reason.contains("undefined") {
                f.hints.push(format!(
                    "an UNDEFINED instruction on arm64 {}: reading a system register this exception level cannot \
                     access (e.g. mrs tpidr_el2 at EL1) traps",
                    bed.variant.name
                ));
            }
            f.pc = Some(bed.code_loc(pc));
            out.push(f);
        }
    }

    // Every write: the stack, or the bytes the op names.
    let mut touched: BTreeSet<u32> = BTreeSet::new();
    let mut stray = 0usize;
    // preempt_disable()/preempt_enable() on the kernel runtime (x86_64's
    // percpu __preempt_count, s390x's lowcore word): the running CPU's
    // count is the code's to change; whether it comes back balanced is
    // the kernel state check's business.
    let preempt = super::kernel::preempt_count_at(bed, cpu);
    for w in trace.iter().filter(|a| a.access == Access::Write) {
        let (a, len) = (w.addr, w.size as u64);
        if bed.stack.contains(&a) && a.wrapping_add(len) <= bed.stack.end {
            continue;
        }
        // The contract constrains percpu memory only: ordinary data, the
        // current thread_info (preempt_disable() counts there) are the
        // test's own.
        if bed.ordinary_write(a, len) || preempt.is_some_and(|(p, n)| a >= p && a + len <= p + n as u64) {
            continue;
        }
        let loc = bed.percpu.classify(a);
        if let Some(k) = loc.as_ref().and_then(|l| l.cpu) {
            touched.insert(k);
        }
        let within = |base: u64| a.wrapping_sub(base) < width && a.wrapping_sub(base) + len <= width;
        let ok = match test.op {
            Op::Add | Op::Write => within(e),
            Op::AddAll => loc.as_ref().and_then(|l| l.cpu).is_some_and(|k| within(ctx.copy(k))),
            Op::Read | Op::SumAll => false,
        };
        // A whole-word store that rewrites the target's neighbours with
        // the values they already had (read-modify-write of a narrow value).
        let word_store = || {
            words.is_some_and(|(lo, before)| {
                let hi = lo + before.len() as u64;
                a >= *lo
                    && a + len <= hi
                    && a < e + width
                    && e < a + len
                    && w.value.is_some_and(|v| {
                        bed.uint_bytes(v, len as usize).iter().enumerate().all(|(i, b)| {
                            let at = a + i as u64;
                            (e..e + width).contains(&at) || *b == before[(at - lo) as usize]
                        })
                    })
            })
        };
        if ok || (matches!(test.op, Op::Add | Op::Write) && word_store()) {
            continue;
        }
        stray += 1;
        if stray > MAX_STRAY {
            continue;
        }
        let info = bed.decode(a);
        let expected = match test.op {
            Op::Add | Op::Write => {
                let unit = bed.percpu.classify(e).map(|l| format!(" (unit {})", l.unit)).unwrap_or_default();
                format!("only cpu {cpu}'s copy {e:#x}{unit}, {width} bytes")
            }
            Op::AddAll => format!("only the {width}-byte value in each CPU's copy"),
            _ => format!("no write at all ({})", op_name(test.op)),
        };
        let freed = bed.freed_memory(a);
        let text = match &freed {
            Some(fr) => format!(
                "wrote {len} bytes ({:#x}) into freed percpu memory at {info}: {fr} (a use after free_percpu; \
                 expected {expected})",
                w.value.unwrap_or(0)
            ),
            None => format!("wrote {len} bytes ({:#x}) at {info} (expected {expected})", w.value.unwrap_or(0)),
        };
        let mut f = Finding::new(FindingKind::StrayWrite, text);
        // A kept pointer is the whole explanation: no offset arithmetic
        // went wrong in this call.
        let in_copy_of =
            |k: u32| ctx.copies.get(k as usize).copied().flatten().is_some_and(|c| a.wrapping_sub(c) < size);
        let stale =
            loc.as_ref().and_then(|l| l.cpu).filter(|&k| in_copy_of(k)).and_then(|k| stale_cpu_hint(ctx, k, cpu));
        match (freed.is_some(), stale) {
            (true, _) => f.hints.push(KEPT_POINTER.to_string()),
            (false, Some(h)) => f.hints.push(h),
            (false, None) => f.hints = bed.explain_addr(cpu, t, size, width, a),
        }
        out.push(at_access(bed, f, w.pc, info));
    }
    push_unlisted(&mut out, FindingKind::StrayWrite, stray, "stray writes");

    // Reads: an op on this CPU's copy has no business reading another
    // CPU's copy of the target, even when the value it returns comes out
    // right (a copy that happened to hold the same value).  Engines that
    // record writes only (qemu-alpha's fast path) give no reads here.
    if matches!(test.op, Op::Add | Op::Write | Op::Read) {
        let mut listed = 0usize;
        for r in trace.iter().filter(|a| a.access == Access::Read) {
            let (a, len) = (r.addr, r.size as u64);
            let Some(k) = bed.percpu.classify(a).and_then(|l| l.cpu) else { continue };
            let base = ctx.copy(k);
            if k == cpu || ctx.copies.get(k as usize).copied().flatten().is_none() {
                continue;
            }
            if a.wrapping_add(len) <= base || a >= base + size {
                continue;
            }
            listed += 1;
            if listed > MAX_STRAY {
                continue;
            }
            let info = bed.decode(a);
            let mut f = Finding::new(
                FindingKind::StrayRead,
                format!(
                    "read {len} bytes of cpu {k}'s copy of the target at {info} while running on cpu {cpu} ({} \
                     names this CPU's copy {e:#x} only)",
                    op_name(test.op)
                ),
            );
            f.hints = match stale_cpu_hint(ctx, k, cpu) {
                Some(h) => vec![h],
                None => bed.explain_addr(cpu, t, size, width, a),
            };
            out.push(at_access(bed, f, r.pc, info));
        }
        push_unlisted(&mut out, FindingKind::StrayRead, listed, "reads of other CPUs' copies");
    }

    // Reads of freed percpu memory: a pointer kept past free_percpu (STEPS
    // tests replace their DYNAMIC target between steps).
    if !bed.freed_allocs.is_empty() {
        let mut listed = 0usize;
        for r in trace.iter().filter(|a| a.access == Access::Read) {
            let Some(freed) = bed.freed_memory(r.addr) else { continue };
            listed += 1;
            if listed > MAX_STRAY {
                continue;
            }
            let info = bed.decode(r.addr);
            let mut f = Finding::new(
                FindingKind::StrayRead,
                format!("read {} bytes of freed percpu memory at {info}: {freed} (a use after free_percpu)", r.size),
            );
            f.hints.push(KEPT_POINTER.to_string());
            out.push(at_access(bed, f, r.pc, info));
        }
        push_unlisted(&mut out, FindingKind::StrayRead, listed, "reads of freed percpu memory");
    }

    // The values: this CPU's copy, every copy a write touched, all of them
    // when few or for ADD_ALL.
    let check: Vec<u32> = if snap.is_some() || test.op == Op::AddAll {
        bed.possible.clone()
    } else {
        touched.insert(cpu);
        touched.into_iter().filter(|k| ctx.copies.get(*k as usize).copied().flatten().is_some()).collect()
    };
    let size_us = test.size as usize;
    for (i, k) in check.iter().copied().enumerate() {
        let at = ctx.copy(k);
        let bytes = bed.read(at, size_us, "target copy")?;
        let got = bed.uint_of(&bytes[..test.width as usize]);
        let want = ctx.want(k, cpu);
        if got != want {
            let info = bed.decode(at);
            let mut f = Finding::new(
                FindingKind::WrongValue,
                format!(
                    "cpu {k}'s copy of the target holds {got:#x}, expected {want:#x} ({} by cpu {cpu}, init {:#x}, \
                     operand {:#x}) at {info}",
                    op_name(test.op),
                    ctx.init(k),
                    test.operand
                ),
            );
            f.hints = explain_value(
                matches!(test.op, Op::Add | Op::AddAll) && (k == cpu || test.op == Op::AddAll),
                ctx.init(k),
                test.operand,
                test.width,
                want,
                got,
            );
            if let Some(hint) = narrow_store_hint(bed, trace, at, width) {
                f.hints.retain(|h| !h.contains("widened wrongly"));
                f.hints.insert(0, hint);
            }
            if k != cpu && test.op != Op::AddAll {
                f.hints.push(format!("cpu {k}'s copy changed although the test ran on cpu {cpu}"));
                f.hints.extend(stale_cpu_hint(ctx, k, cpu));
            }
            f.addr = Some(info);
            out.push(f);
        }
        if let Some(s) = snap {
            // Bytes past the value must keep their contents.
            let idx = bed.possible.iter().position(|&c| c == k).unwrap_or(i);
            let before = &s[idx * size_us..(idx + 1) * size_us];
            if let Some(j) = (test.width as usize..size_us).find(|&j| bytes[j] != before[j]) {
                let info = bed.decode(at + j as u64);
                let mut f = Finding::new(
                    FindingKind::WrongValue,
                    format!(
                        "cpu {k}'s copy of the target changed past its {}-byte value: byte +{j:#x} of the {}-byte \
                         object ({:#x} -> {:#x}) at {info}",
                        test.width, test.size, before[j], bytes[j]
                    ),
                );
                f.addr = Some(info);
                out.push(f);
            }
        }
    }
    if !out.is_empty() {
        if let Some(h) = offset_word_hint(bed, cpu, trace) {
            let at = out.iter().position(|f| f.addr.is_some()).unwrap_or(0);
            out[at].hints.insert(0, h);
        }
    }
    Ok(out)
}

/// A finding at one access: its instruction's relocation hint, its pc
/// and the decoded address.
fn at_access(bed: &Bed<'_>, mut f: Finding, pc: u64, info: AddrInfo) -> Finding {
    f.hints.extend(bed.reloc_hint(pc));
    f.pc = Some(bed.code_loc(pc));
    f.addr = Some(info);
    f
}

/// Past [`MAX_STRAY`] findings of a kind, one line counts the rest.
fn push_unlisted(out: &mut Vec<Finding>, kind: FindingKind, found: usize, what: &str) {
    if found > MAX_STRAY {
        out.push(Finding::new(kind, format!("... and {} more {what}", found - MAX_STRAY)));
    }
}

/// A STEPS test that reached cpu `k`'s copy while on `cpu`, where an
/// earlier step ran on `k`: a pointer computed on `k` (this_cpu_ptr() kept
/// in module data across calls) used after the task moved.
fn stale_cpu_hint(ctx: &Ctx<'_>, k: u32, cpu: u32) -> Option<String> {
    let &(step, _) = ctx.earlier_steps.iter().rev().find(|&&(_, c)| c == k && k != cpu)?;
    Some(format!(
        "step {step} of this test ran on cpu {k}: a this_cpu_ptr() taken there and kept across calls (in module \
         data) still points at cpu {k}'s copy now that the code runs on cpu {cpu}; take this_cpu_ptr() again each \
         time, with preemption disabled"
    ))
}

/// When every write that reached the `width`-byte value at `at` was
/// narrower than it: the op ran at the wrong width (a `this_cpu_add` on a
/// narrower type than the variable's, through a mismatched declaration or
/// a cast), which no widening rule explains.
fn narrow_store_hint(bed: &Bed<'_>, trace: &[MemAccess], at: u64, width: u64) -> Option<String> {
    let hits: Vec<&MemAccess> = trace
        .iter()
        .filter(|w| w.access == Access::Write && w.addr < at + width && at < w.addr + w.size as u64)
        .collect();
    let first = hits.first()?;
    if hits.iter().any(|w| w.size as u64 >= width) {
        return None;
    }
    let n = first.size as u64;
    let off = first.addr.wrapping_sub(at);
    let part = if 2 * n == width && (off == 0 || off == n) {
        let low = (off == 0) != bed.big_endian;
        format!(
            ", its {} half on this {}-endian CPU",
            if low { "low" } else { "high" },
            if bed.big_endian { "big" } else { "little" }
        )
    } else {
        String::new()
    };
    Some(format!(
        "a {n}-byte store hit the {width}-byte value at byte +{off:#x}{part}: the op was done {n} bytes wide on {} \
         {width}-byte variable (a this_cpu op on a narrower type: a DECLARE_PER_CPU whose type differs from the \
         DEFINE_PER_CPU, or a cast)",
        if width == 8 { "an" } else { "a" }
    ))
}

/// On arches that keep the offset in a per-CPU structure (s390x's
/// lowcore): the words of that structure the call read *instead of* the
/// offset's own slot, named with what they held and where the layout keeps
/// the field.  Code built against another `struct lowcore` layout reads the
/// wrong word and applies whatever it holds.
fn offset_word_hint(bed: &mut Bed<'_>, cpu: u32, trace: &[MemAccess]) -> Option<String> {
    let w = bed.offset_word.clone()?;
    let reads: Vec<&MemAccess> =
        trace.iter().filter(|a| a.access == Access::Read && w.area.contains(&a.addr)).collect();
    if reads.iter().any(|a| a.addr < w.slot.end && w.slot.start < a.addr + a.size as u64) {
        return None;
    }
    let wrong = reads.iter().find(|a| a.size as u64 == w.slot.end - w.slot.start)?;
    let n = wrong.size as usize;
    let held = bed.read(wrong.addr, n, "the word read").ok().map(|b| bed.uint_of(&b))?;
    let own = bed.offsets.get(cpu as usize).copied().flatten().unwrap_or(0);
    Some(format!(
        "the code read {} word {:#x} (holding {held:#x}) as its percpu offset, and never {}'s {} at {:#x} (cpu {cpu}'s \
         offset {own:#x}): it was built for another {} layout (a stale offset constant such as __LC_PERCPU_OFFSET)",
        w.area_name,
        wrong.addr,
        w.area_name,
        w.field,
        w.slot.start,
        w.area_name
    ))
}
