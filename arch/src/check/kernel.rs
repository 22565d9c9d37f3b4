//! The bed's side of the kernel runtime (see [`crate::runtime`]): the
//! per-run log of what the kernel saw (printk lines, WARNs, a BUG,
//! allocations), the host implementations of the kernel functions, and the
//! call loop every test and module function runs through.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;

use percpu_core::alloc::{AllocRequest, PcpuPtr};
use serde::Serialize;

use super::bed::{Bed, DynAlloc};
use super::diag::{CodeLoc, Finding, FindingKind};
use super::CheckError;
use crate::engine::{Access, MemAccess, Outcome, Reg};
use crate::runtime::bugtable::BugSite;
use crate::runtime::{printk, HostFn, KernelAbi, PreemptLoc, RtAbi, TrapAction};

/// Host stops one call may make before it counts as runaway (a loop that
/// calls printk forever stops here even where instructions are not counted).
pub const MAX_HOST_STOPS: usize = 200_000;
/// Bytes a host `memset`/`memcpy` may touch in one call.
const MAX_HOST_COPY: u64 = 16 << 20;

/// One line the kernel printed.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PrintkLine {
    pub cpu: u32,
    /// `info`, `warn`, ... (`default` without a level).
    pub level: &'static str,
    pub text: String,
}

/// A WARN (or the BUG) a run hit.
#[derive(Clone, Debug, Serialize)]
pub struct KernelWarn {
    pub cpu: u32,
    /// `file:line` from the `__bug_table` or `warn_slowpath_fmt`.
    pub location: String,
    /// The WARN's message (from `__warn_printk` or `warn_slowpath_fmt`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Where in the module.
    pub pc: CodeLoc,
    pub bug: bool,
}

impl KernelWarn {
    pub fn describe(&self) -> String {
        let what = if self.bug { "BUG" } else { "WARNING" };
        match &self.message {
            Some(m) => format!("{what} at {} ({}): {m}", self.location, self.pc),
            None => format!("{what} at {} ({})", self.location, self.pc),
        }
    }
}

/// What the kernel saw during one call (with every host call it made).
#[derive(Clone, Debug, Default, Serialize)]
pub struct KernelLog {
    pub printk: Vec<PrintkLine>,
    pub warns: Vec<KernelWarn>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bug: Option<KernelWarn>,
    /// Other kernel-level findings (a bad free_percpu, the stack protector).
    #[serde(skip)]
    pub findings: Vec<Finding>,
    /// Percpu allocations made (pointer, size).
    pub allocations: Vec<(u64, u64)>,
    pub frees: usize,
    pub host_calls: usize,
    /// Privileged instructions emulated on the host (alpha PAL calls), by
    /// instruction.
    pub emulated: BTreeMap<String, u64>,
    /// Every memory access of the call in the order it happened: the
    /// guest's own (drained from the engine at each host call) and the
    /// writes host functions made into guest memory (memset, memcpy), so
    /// the same checks apply to both and an access can be judged against
    /// the allocations live when it happened.
    #[serde(skip)]
    pub trace: Vec<MemAccess>,
    /// Percpu allocations and frees in call order, each at the length
    /// `trace` had when it happened.
    #[serde(skip)]
    pub alloc_events: Vec<AllocEvent>,
    #[serde(skip)]
    pending_warn: Option<String>,
    #[serde(skip)]
    pending_bug: Option<(Option<String>, Option<u32>)>,
}

/// An `alloc_percpu` or `free_percpu` during a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocEvent {
    /// Accesses of the call's trace that came before it.
    pub at: usize,
    pub ptr: u64,
    pub size: u64,
    pub alloc: bool,
}

/// Whether percpu pointer `ptr` (`size` bytes per CPU, one of `events`)
/// was live when access number `idx` of the trace happened.
pub(crate) fn live_at(events: &[AllocEvent], ptr: u64, idx: usize) -> bool {
    let alloc = events.iter().filter(|e| e.ptr == ptr && e.alloc && e.at <= idx).map(|e| e.at).max();
    let free = events.iter().filter(|e| e.ptr == ptr && !e.alloc && e.at <= idx).map(|e| e.at).max();
    // Before its first event it is live if that event frees it (it was
    // allocated before the call).
    let first_is_free = events.iter().filter(|e| e.ptr == ptr).min_by_key(|e| e.at).is_some_and(|e| !e.alloc);
    match (alloc, free) {
        (Some(a), Some(f)) => a > f,
        (Some(_), None) => true,
        // Allocated before the call: live until its free.
        (None, Some(_)) => false,
        (None, None) => first_is_free,
    }
}

/// The kernel runtime of a bed that runs real kernel modules.
pub(crate) struct KernelRt {
    pub abi: RtAbi,
    pub karch: &'static dyn KernelAbi,
    /// Host-call slot -> (function, imported name).
    pub slots: HashMap<u64, (HostFn, &'static str)>,
    /// WARN/BUG trap address -> (object, site).
    pub bugs: HashMap<u64, (String, BugSite)>,
    /// WARN_ONCE sites that already fired (they stay silent afterwards).
    pub warned_once: HashSet<u64>,
    /// The current task (zeroed `task_struct`) and its thread_info.
    pub task: u64,
    pub thread_info: u64,
    pub task_area: Range<u64>,
    /// Interrupt state the runtime keeps (sparc32 PSR PIL, alpha IPL).
    pub irq: u64,
    /// The log of the call in progress.
    pub log: KernelLog,
    /// `GFP_KERNEL` of the tree (what makes an allocation non-atomic).
    pub gfp_kernel: u64,
    /// Allocation calls (counted from 1) that fail, as under memory
    /// pressure (a module's expectation file asks for it).
    pub fail_alloc: Vec<u32>,
    /// Allocation calls so far in this run.
    pub alloc_calls: u32,
}

/// The percpu variable holding x86_64's preempt count, and so on: the
/// address of the preempt count for `cpu`, and its size.
pub(crate) fn preempt_count_at(bed: &Bed<'_>, cpu: u32) -> Option<(u64, usize)> {
    let k = bed.kernel.as_ref()?;
    match k.karch.preempt_count() {
        PreemptLoc::PercpuVar(name) => {
            let v = bed.objects.first()?.loaded.as_ref()?.symbol(name)?.value;
            Some((bed.cpu_ptr(v, cpu)?, 4))
        }
        PreemptLoc::ThreadInfo => k.abi.ti_preempt_count.map(|(off, size)| (k.thread_info + off, size as usize)),
        PreemptLoc::Lowcore => k.abi.lowcore.map(|lc| (lc.preempt_count, 4)),
    }
}

impl Bed<'_> {
    fn rt(&mut self) -> &mut KernelRt {
        self.kernel.as_mut().expect("kernel mode")
    }

    /// Argument word `i` of the host call in progress.
    fn arg(&mut self, i: usize) -> Result<u64, CheckError> {
        let karch = self.rt().karch;
        karch.arg_word(self.engine.as_mut(), i).map_err(self.engine_error("reading a host call's arguments"))
    }

    fn engine_error(&self, what: &str) -> impl Fn(crate::engine::EngineError) -> CheckError {
        let (arch, variant, what) = (self.isa.name().to_string(), self.variant.name.to_string(), what.to_string());
        move |source| CheckError::Engine { arch: arch.clone(), variant: variant.clone(), what: what.clone(), source }
    }

    /// A NUL-terminated guest string (at most `max` bytes).
    pub(crate) fn guest_cstr(&mut self, addr: u64, max: usize) -> Option<String> {
        let mut out = Vec::new();
        let mut at = addr;
        while out.len() < max {
            // Read up to the end of the page at a time.
            let n = (4096 - (at & 4095)) as usize;
            let n = n.min(max - out.len());
            let mut buf = vec![0u8; n];
            if self.engine.read(at, &mut buf).is_err() {
                // Byte by byte near an unmapped page.
                let mut b = [0u8; 1];
                if self.engine.read(at, &mut b).is_err() {
                    return if out.is_empty() { None } else { Some(String::from_utf8_lossy(&out).into_owned()) };
                }
                buf = b.to_vec();
            }
            if let Some(z) = buf.iter().position(|&c| c == 0) {
                out.extend_from_slice(&buf[..z]);
                return Some(String::from_utf8_lossy(&out).into_owned());
            }
            at += buf.len() as u64;
            out.extend_from_slice(&buf);
        }
        Some(String::from_utf8_lossy(&out).into_owned())
    }

    /// Format the kernel printf call whose format is argument `fmt_arg`.
    fn format_args(&mut self, fmt_arg: usize) -> Result<String, CheckError> {
        let fmt_ptr = self.arg(fmt_arg)?;
        let fmt = self.guest_cstr(fmt_ptr, 1024).unwrap_or_else(|| format!("<unreadable format at {fmt_ptr:#x}>"));
        let long = self.ptr_bytes as u32;
        struct A<'b, 'c> {
            bed: &'b mut Bed<'c>,
            next: usize,
            err: Option<CheckError>,
        }
        impl printk::Args for A<'_, '_> {
            fn next(&mut self, bytes: u32) -> u64 {
                let word = self.bed.ptr_bytes as u32;
                let get = |s: &mut Self| {
                    let i = s.next;
                    s.next += 1;
                    match s.bed.arg(i) {
                        Ok(v) => v,
                        Err(e) => {
                            s.err.get_or_insert(e);
                            0
                        }
                    }
                };
                if bytes > word {
                    // 32-bit: a 64-bit value takes two words, high first
                    // on the big-endian sparc32 (register pairs).
                    let hi = get(self) & 0xffff_ffff;
                    let lo = get(self) & 0xffff_ffff;
                    if self.bed.big_endian {
                        hi << 32 | lo
                    } else {
                        lo << 32 | hi
                    }
                } else {
                    get(self)
                }
            }
            fn string(&mut self, addr: u64) -> Option<String> {
                self.bed.guest_cstr(addr, 1024)
            }
            fn symbol(&mut self, addr: u64) -> Option<String> {
                self.bed.code_loc(addr).symbol
            }
        }
        let mut a = A { bed: self, next: fmt_arg + 1, err: None };
        let text = printk::format(&fmt, &mut a, long);
        if let Some(e) = a.err {
            return Err(e);
        }
        Ok(text)
    }

    /// Append printed text to the log, line by line (KERN_CONT continues
    /// the last line).
    fn log_printk(&mut self, cpu: u32, msg: &str) {
        let (level, text) = printk::split_level(msg);
        let log = &mut self.rt().log;
        let mut lines = text.split('\n').peekable();
        if level == Some('c') {
            if let (Some(last), Some(first)) = (log.printk.last_mut(), lines.peek()) {
                last.text.push_str(first);
                lines.next();
            }
        }
        for l in lines {
            if !l.is_empty() {
                log.printk.push(PrintkLine { cpu, level: printk::level_name(level), text: l.to_string() });
            }
        }
        tracing::info!(target: "percpu_bed::printk", "[cpu {cpu}] {}", text.trim_end());
    }

    /// The caller of the host function in progress (its return address).
    fn caller(&mut self) -> CodeLoc {
        let ra = match self.isa.cpu() {
            crate::engine::Cpu::X86_64 => {
                let sp = self.engine.reg(Reg::Sp).unwrap_or(0);
                let mut b = [0u8; 8];
                self.engine.read(sp, &mut b).map(|()| u64::from_le_bytes(b)).unwrap_or(0)
            }
            _ => self.engine.reg(Reg::ReturnAddress).unwrap_or(0),
        };
        self.code_loc(ra)
    }

    /// Run the host function at slot `pc`: `Ok(None)` when it returned to
    /// the caller, `Ok(Some(finding))` when the run must stop there.
    fn host_call(&mut self, f: HostFn, name: &'static str, cpu: u32) -> Result<Option<Finding>, CheckError> {
        self.rt().log.host_calls += 1;
        let ret: Option<u64> = match f {
            HostFn::Printk => {
                let text = self.format_args(0)?;
                self.log_printk(cpu, &text);
                Some(text.len() as u64)
            }
            HostFn::WarnPrintk => {
                let text = self.format_args(0)?;
                self.log_printk(cpu, "\u{1}4------------[ cut here ]------------\n");
                self.log_printk(cpu, &text);
                self.rt().log.pending_warn = Some(text.trim_end().to_string());
                None
            }
            HostFn::WarnSlowpath => {
                let file = self.arg(0)?;
                let line = self.arg(1)? as u32;
                let file = self.guest_cstr(file, 256).unwrap_or_else(|| "?".into());
                let text = self.format_args(3)?;
                let pc = self.caller();
                self.log_printk(cpu, "\u{1}4------------[ cut here ]------------\n");
                self.log_printk(cpu, &format!("\u{1}4WARNING: CPU: {cpu} at {file}:{line} {}\n", pc));
                self.log_printk(cpu, &text);
                let w = KernelWarn {
                    cpu,
                    location: format!("{file}:{line}"),
                    message: Some(text.trim_end().to_string()).filter(|m| !m.is_empty()),
                    pc,
                    bug: false,
                };
                self.rt().log.warns.push(w);
                None
            }
            HostFn::DoBug => {
                let file = self.arg(0)?;
                let line = self.arg(1)? as u32;
                let file = self.guest_cstr(file, 256);
                self.rt().log.pending_bug = Some((file, Some(line)));
                None
            }
            HostFn::AllocPercpu | HostFn::AllocPercpuGfp => {
                let size = self.arg(0)?;
                let align = self.arg(1)?;
                let gfp = if f == HostFn::AllocPercpuGfp { self.arg(2)? } else { self.rt().gfp_kernel };
                let gk = self.rt().gfp_kernel;
                let atomic = gfp & gk != gk;
                Some(self.host_alloc(size, align, atomic, cpu)?)
            }
            HostFn::FreePercpu => {
                let ptr = self.arg(0)?;
                if ptr != 0 {
                    if let Some(f) = self.host_free(ptr)? {
                        return Ok(Some(f));
                    }
                }
                None
            }
            HostFn::PreemptSchedule => None,
            HostFn::IrqSave => {
                let rt = self.rt();
                let old = rt.irq;
                // PSR_PIL: all interrupt levels masked.
                rt.irq = 0xf00;
                Some(old)
            }
            HostFn::IrqRestore => {
                let flags = self.arg(0)?;
                self.rt().irq = flags & 0xf00;
                None
            }
            HostFn::FindNextBit
            | HostFn::FindNextZeroBit
            | HostFn::FindFirstBit
            | HostFn::FindFirstZeroBit
            | HostFn::FindLastBit
            | HostFn::FindNextAndBit
            | HostFn::BitmapWeight => Some(self.host_bitops(f)?),
            HostFn::DebugSmpProcessorId => Some(cpu as u64),
            HostFn::Memset => {
                let (s, c, n) = (self.arg(0)?, self.arg(1)?, self.arg(2)?);
                if n > MAX_HOST_COPY {
                    return Ok(Some(Finding::new(FindingKind::Kernel, format!("{name}({s:#x}, {c}, {n}): {n} bytes"))));
                }
                let data = vec![c as u8; n as usize];
                if let Some(f) = self.host_store(s, &data, name)? {
                    return Ok(Some(f));
                }
                Some(s)
            }
            HostFn::Memcpy => {
                let (d, s, n) = (self.arg(0)?, self.arg(1)?, self.arg(2)?);
                if n > MAX_HOST_COPY {
                    return Ok(Some(Finding::new(
                        FindingKind::Kernel,
                        format!("{name}({d:#x}, {s:#x}, {n}): {n} bytes"),
                    )));
                }
                let mut data = vec![0u8; n as usize];
                if self.engine.read(s, &mut data).is_err() {
                    let mut f = Finding::new(FindingKind::Fault, format!("{name} read {n} bytes at unmapped {s:#x}"));
                    f.addr = Some(self.decode(s));
                    f.pc = Some(self.caller());
                    return Ok(Some(f));
                }
                if let Some(f) = self.host_store(d, &data, name)? {
                    return Ok(Some(f));
                }
                Some(d)
            }
            HostFn::StackChkFail => {
                let mut f = Finding::new(
                    FindingKind::Kernel,
                    "stack-protector: Kernel stack is corrupted (__stack_chk_fail was called)".to_string(),
                );
                f.pc = Some(self.caller());
                return Ok(Some(f));
            }
            HostFn::NeverCalled => {
                let mut f = Finding::new(
                    FindingKind::Kernel,
                    format!("{name} was called: the runtime applies no alternatives, so nothing should call it"),
                );
                f.pc = Some(self.caller());
                return Ok(Some(f));
            }
        };
        let karch = self.rt().karch;
        karch.host_return(self.engine.as_mut(), ret).map_err(self.engine_error("returning from a host call"))?;
        Ok(None)
    }

    /// A write by a host function, recorded like the guest's own writes.
    fn host_store(&mut self, at: u64, data: &[u8], name: &str) -> Result<Option<Finding>, CheckError> {
        let mut old = vec![0u8; data.len()];
        if self.engine.read(at, &mut old).is_err() || self.engine.write(at, data).is_err() {
            let mut f =
                Finding::new(FindingKind::Fault, format!("{name} wrote {} bytes at unmapped {at:#x}", data.len()));
            f.addr = Some(self.decode(at));
            f.pc = Some(self.caller());
            return Ok(Some(f));
        }
        let pc = self.caller().pc;
        let be = self.big_endian;
        for (i, chunk) in data.chunks(8).enumerate() {
            let o = &old[i * 8..i * 8 + chunk.len()];
            self.rt().log.trace.push(MemAccess {
                pc,
                addr: at + 8 * i as u64,
                size: chunk.len() as u8,
                access: Access::Write,
                value: Some(le_or_be(chunk, be)),
                old: Some(le_or_be(o, be)),
            });
        }
        Ok(None)
    }

    fn host_alloc(&mut self, size: u64, align: u64, atomic: bool, cpu: u32) -> Result<u64, CheckError> {
        let mut req = AllocRequest::new(size as usize, align as usize);
        if atomic {
            req = req.atomic();
        }
        let caller = self.caller();
        let rt = self.rt();
        rt.alloc_calls += 1;
        if rt.fail_alloc.contains(&rt.alloc_calls) {
            let n = rt.alloc_calls;
            // What pcpu_alloc() prints when it cannot get memory.
            self.log_printk(
                cpu,
                &format!(
                    "\u{1}4percpu: allocation failed, size={size} align={align} atomic={}, failed to allocate new chunk \
                     failed (injected: allocation {n} of this run)\n",
                    atomic as u8
                ),
            );
            return Ok(0);
        }
        match self.percpu.alloc(req) {
            Ok(p) => {
                self.sync_events()?;
                let by = caller.symbol.clone().unwrap_or_else(|| format!("{:#x}", caller.pc));
                self.dyn_allocs.push(DynAlloc { ptr: p.0, size, test: format!("alloc_percpu in {by}") });
                self.rt().log.allocations.push((p.0, size));
                self.alloc_event(p.0, size, true);
                Ok(p.0)
            }
            Err(e) => {
                // pcpu_alloc: a WARN for illegal requests, a warning line otherwise.
                let msg = format!("percpu: {e}");
                if matches!(e, percpu_core::alloc::AllocError::IllegalSizeOrAlign { .. }) {
                    self.log_printk(cpu, "\u{1}4------------[ cut here ]------------\n");
                    self.log_printk(cpu, &format!("\u{1}4{msg}\n"));
                    self.rt().log.warns.push(KernelWarn {
                        cpu,
                        location: "mm/percpu.c (pcpu_alloc)".into(),
                        message: Some(msg),
                        pc: caller,
                        bug: false,
                    });
                } else {
                    self.log_printk(cpu, &format!("\u{1}4{msg}\n"));
                }
                Ok(0)
            }
        }
    }

    fn alloc_event(&mut self, ptr: u64, size: u64, alloc: bool) {
        let log = &mut self.rt().log;
        let at = log.trace.len();
        log.alloc_events.push(AllocEvent { at, ptr, size, alloc });
    }

    fn host_free(&mut self, ptr: u64) -> Result<Option<Finding>, CheckError> {
        let live = self.dyn_allocs.iter().any(|d| d.ptr == ptr);
        if !live {
            let mut f = Finding::new(
                FindingKind::Kernel,
                format!(
                    "free_percpu({ptr:#x}): not a live percpu allocation (a double free, or a pointer that \
                     alloc_percpu never returned); the kernel would corrupt its chunk maps or crash"
                ),
            );
            match self.percpu.classify_ptr(PcpuPtr(ptr)) {
                Some(l) => f.hints.push(format!("it points into {l}, which holds no live allocation starting there")),
                None => f.hints.push("it points into no chunk at all".into()),
            }
            f.pc = Some(self.caller());
            return Ok(Some(f));
        }
        let size = self.dyn_allocs.iter().find(|d| d.ptr == ptr).map_or(0, |d| d.size);
        let at = self.caller();
        let at = at.symbol.clone().unwrap_or_else(|| format!("{:#x}", at.pc));
        self.free_dynamic_at(ptr, Some(format!("free_percpu in {at}")))?;
        self.alloc_event(ptr, size, false);
        self.rt().log.frees += 1;
        Ok(None)
    }

    /// The `find_*_bit` family and `__bitmap_weight` over guest bitmaps.
    fn host_bitops(&mut self, f: HostFn) -> Result<u64, CheckError> {
        let long = self.ptr_bytes as u64;
        let bits = long * 8;
        let (a, b, size, start) = match f {
            HostFn::FindNextBit | HostFn::FindNextZeroBit => (self.arg(0)?, None, self.arg(1)?, self.arg(2)?),
            HostFn::FindNextAndBit => (self.arg(0)?, Some(self.arg(1)?), self.arg(2)?, self.arg(3)?),
            _ => (self.arg(0)?, None, self.arg(1)?, 0),
        };
        let size = size.min(1 << 20);
        let word = |bed: &mut Bed<'_>, base: u64, w: u64| -> u64 {
            let mut buf = vec![0u8; long as usize];
            if bed.engine.read(base + w * long, &mut buf).is_err() {
                return 0;
            }
            le_or_be(&buf, bed.big_endian)
        };
        let bit = |bed: &mut Bed<'_>, i: u64| -> bool {
            let mut v = word(bed, a, i / bits);
            if let Some(b) = b {
                v &= word(bed, b, i / bits);
            }
            v >> (i % bits) & 1 == 1
        };
        let mut r = size;
        match f {
            HostFn::BitmapWeight => {
                r = (0..size).filter(|&i| bit(self, i)).count() as u64;
            }
            HostFn::FindLastBit => {
                if let Some(i) = (0..size).rev().find(|&i| bit(self, i)) {
                    r = i;
                }
            }
            HostFn::FindNextZeroBit | HostFn::FindFirstZeroBit => {
                if let Some(i) = (start..size).find(|&i| !bit(self, i)) {
                    r = i;
                }
            }
            _ => {
                if let Some(i) = (start..size).find(|&i| bit(self, i)) {
                    r = i;
                }
            }
        }
        Ok(r)
    }

    /// The preempt count and interrupt state a call must leave as it found
    /// them, and what they are now.
    pub(crate) fn kernel_state(&mut self, cpu: u32) -> Option<(u64, u64)> {
        let (at, size) = preempt_count_at(self, cpu)?;
        let mut b = vec![0u8; size];
        self.engine.read(at, &mut b).ok()?;
        let pc = le_or_be(&b, self.big_endian);
        Some((pc, self.kernel.as_ref()?.irq))
    }

    /// Call `entry(args)` through the kernel runtime: host calls are served,
    /// WARNs recorded and resumed past, emulated traps resumed, until the
    /// function returns or the run ends.  Without a kernel runtime this is
    /// a plain [`crate::engine::Engine::call`].
    pub(crate) fn kernel_call(
        &mut self,
        entry: u64,
        args: &[u64],
        cpu: u32,
        what: &str,
    ) -> Result<(Outcome, KernelLog), CheckError> {
        let (stack_top, budget) = (self.stack.end, self.sc.budget);
        let err = self.engine_error(&format!("calling `{what}` on cpu {cpu}"));
        if let Some(k) = self.kernel.as_mut() {
            k.log = KernelLog::default();
        }
        let mut out = self.engine.call(entry, args, stack_top, budget).map_err(&err)?;
        if self.kernel.is_none() {
            return Ok((out, KernelLog::default()));
        }
        let mut executed = 0u64;
        let mut counted = true;
        let mut stops = 0usize;
        loop {
            match out.instructions() {
                Some(n) => executed += n,
                None => counted = false,
            }
            let left = budget.saturating_sub(executed);
            stops += 1;
            if stops > MAX_HOST_STOPS || (counted && left == 0) {
                let pc = self.engine.reg(Reg::Pc).unwrap_or(0);
                out = Outcome::BudgetExhausted { pc, budget };
                break;
            }
            let next = match out {
                Outcome::HostCall { pc, .. } => {
                    let Some(&(f, name)) = self.rt().slots.get(&pc) else { break };
                    // Keep the accesses in order with the host call's own.
                    let t = self.engine.take_trace();
                    self.rt().log.trace.extend(t);
                    if let Some(finding) = self.host_call(f, name, cpu)? {
                        self.rt().log.findings.push(finding);
                        return Ok(self.finish(Outcome::Trap { pc, reason: format!("stopped in {name}") }, cpu));
                    }
                    true
                }
                Outcome::Breakpoint { pc, .. } => {
                    let Some((_, site)) = self.rt().bugs.get(&pc).cloned() else { break };
                    let layout = self.rt().abi.bug.expect("bug sites need a layout");
                    let loc = self.code_loc(pc);
                    let message = self.rt().log.pending_warn.take();
                    let warn =
                        KernelWarn { cpu, location: site.location(), message, pc: loc, bug: !site.is_warning(&layout) };
                    if warn.bug {
                        self.log_printk(cpu, &format!("\u{1}2kernel BUG at {}!\n", warn.location));
                        self.rt().log.bug = Some(warn);
                        return Ok(self.finish(Outcome::Trap { pc, reason: "BUG()".into() }, cpu));
                    }
                    let once = site.is_once(&layout);
                    if !(once && self.rt().warned_once.contains(&pc)) {
                        if once {
                            self.rt().warned_once.insert(pc);
                        }
                        self.log_printk(
                            cpu,
                            &format!("\u{1}4WARNING: CPU: {cpu} PID: 0 at {} {}\n", warn.location, warn.pc),
                        );
                        self.rt().log.warns.push(warn);
                    }
                    // Continue after the trap instruction, as report_bug() does.
                    let mut insn = [0u8; 4];
                    let _ = self.engine.read(pc, &mut insn);
                    let len = self.rt().karch.bug_insn_len(&insn);
                    self.engine.set_reg(Reg::Pc, pc + len).map_err(&err)?;
                    true
                }
                Outcome::Trap { pc, ref reason } => {
                    let mut w = [0u8; 4];
                    let insn = match self.engine.read(pc, &mut w) {
                        Ok(()) if self.big_endian => u32::from_be_bytes(w),
                        Ok(()) => u32::from_le_bytes(w),
                        Err(_) => 0,
                    };
                    let karch = self.rt().karch;
                    let mut irq = self.rt().irq;
                    let action = karch.handle_trap(self.engine.as_mut(), pc, insn, &mut irq, cpu).map_err(&err)?;
                    self.rt().irq = irq;
                    match action {
                        Some(TrapAction::Emulated { what }) => {
                            *self.rt().log.emulated.entry(what.to_string()).or_default() += 1;
                            true
                        }
                        Some(TrapAction::Bug { file, line, what }) => {
                            let pending = self.rt().log.pending_bug.take();
                            let (file, line) = match (file, line, pending) {
                                (None, None, Some(p)) => p,
                                (f, l, _) => (f, l),
                            };
                            let location = match (&file, line) {
                                (Some(f), Some(l)) => format!("{f}:{l}"),
                                (Some(f), None) => f.clone(),
                                _ => "(unknown location)".into(),
                            };
                            self.log_printk(cpu, &format!("\u{1}2kernel BUG at {location}!\n"));
                            let loc = self.code_loc(pc);
                            self.rt().log.bug =
                                Some(KernelWarn { cpu, location, message: Some(what), pc: loc, bug: true });
                            let reason = reason.clone();
                            return Ok(self.finish(Outcome::Trap { pc, reason }, cpu));
                        }
                        None => false,
                    }
                }
                _ => false,
            };
            if !next {
                break;
            }
            out = self.engine.resume(left).map_err(&err)?;
        }
        // The final outcome, with the instructions of every part.
        if let Outcome::Returned { value, .. } = out {
            out = Outcome::Returned { value, instructions: counted.then_some(executed) };
        }
        Ok(self.finish(out, cpu))
    }

    fn finish(&mut self, out: Outcome, _cpu: u32) -> (Outcome, KernelLog) {
        let t = self.engine.take_trace();
        self.rt().log.trace.extend(t);
        let log = std::mem::take(&mut self.rt().log);
        (out, log)
    }
}

/// The integer in `b` (1..8 bytes) in the target's byte order.
pub(crate) fn le_or_be(b: &[u8], big_endian: bool) -> u64 {
    if big_endian {
        b.iter().fold(0u64, |v, &x| v << 8 | x as u64)
    } else {
        b.iter().rev().fold(0u64, |v, &x| v << 8 | x as u64)
    }
}

/// Findings from what the kernel saw during a call: WARNs, a BUG, kernel
/// findings, and the preempt count and interrupt state left changed.
pub(crate) fn log_findings(log: &KernelLog, before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Vec<Finding> {
    let mut out = Vec::new();
    for w in &log.warns {
        let mut f = Finding::new(FindingKind::Warn, w.describe());
        f.pc = Some(w.pc.clone());
        out.push(f);
    }
    if let Some(b) = &log.bug {
        let mut f = Finding::new(FindingKind::Bug, b.describe());
        f.pc = Some(b.pc.clone());
        out.push(f);
    }
    out.extend(log.findings.iter().cloned());
    if let (Some((p0, i0)), Some((p1, i1))) = (before, after) {
        if p0 != p1 && log.bug.is_none() {
            out.push(Finding::new(
                FindingKind::Kernel,
                format!(
                    "preemption imbalance: the preempt count was {p0:#x} before the call and {p1:#x} after it \
                     (a preempt_disable()/get_cpu() without its preempt_enable()/put_cpu())"
                ),
            ));
        }
        if i0 != i1 && log.bug.is_none() {
            out.push(Finding::new(
                FindingKind::Kernel,
                format!(
                    "interrupts left disabled: the interrupt state was {i0:#x} before the call and {i1:#x} after it"
                ),
            ));
        }
    }
    out
}

impl Bed<'_> {
    /// Turn a bed whose kernel image is the runtime's into a kernel: host
    /// calls, the masks, the current task, the runtime percpu variables.
    pub(crate) fn setup_kernel_runtime(&mut self, abi: RtAbi, possible_mask: &[u8]) -> Result<(), CheckError> {
        let karch = self.isa.kernel_abi().expect("checked when the image was written");
        let image = self.objects[0].loaded.clone().expect("the runtime image loaded");
        let layout_err = |reason: String| CheckError::Layout {
            arch: self.isa.name().into(),
            variant: self.variant.name.into(),
            reason,
        };
        // Host-call slots: every runtime function that is not a thunk.
        let thunks: Vec<&str> = karch.thunks().iter().map(|(n, _)| *n).collect();
        let mut slots = HashMap::new();
        for (name, f) in crate::runtime::HOST_FUNCTIONS.iter().filter(|(n, _)| !thunks.contains(n)) {
            let s = image.symbol(name).ok_or_else(|| layout_err(format!("the runtime image lacks {name}")))?;
            slots.insert(s.value, (*f, *name));
        }
        let addrs: Vec<u64> = slots.keys().copied().collect();
        self.engine.set_host_calls(&addrs).map_err(self.engine_error("installing the host-call slots"))?;

        // The other CPU masks equal the possible mask.
        for name in ["__cpu_online_mask", "__cpu_present_mask", "__cpu_active_mask"] {
            let s = image.symbol(name).ok_or_else(|| layout_err(format!("the runtime image lacks {name}")))?;
            let n = (s.size as usize).min(possible_mask.len());
            self.write(s.value, &possible_mask[..n], name)?;
        }
        if let Some(s) = image.symbol("__stack_chk_guard") {
            let v = self.uint_bytes(0x5ca1_ab1e_d00d_f00d, self.ptr_bytes);
            self.write(s.value, &v, "__stack_chk_guard")?;
        }

        // The current task, with thread_info inside it (THREAD_INFO_IN_TASK)
        // or after it (pointing back at the task), above the stack.
        let page = self.isa.page_size();
        let task_bytes = abi.sizeof_task_struct.max(64).div_ceil(64) * 64;
        let ti_bytes = if abi.task_thread_info.is_some() { 0 } else { abi.sizeof_thread_info.div_ceil(64) * 64 };
        let start = self.stack.end + page;
        let area = start..start + (task_bytes + ti_bytes).div_ceil(page) * page;
        if self.per_cpu_start > self.runtime.base && area.end > self.per_cpu_start {
            return Err(layout_err(format!(
                "the kernel runtime's task area runs into __per_cpu_start {:#x}",
                self.per_cpu_start
            )));
        }
        self.map(area.start, area.end - area.start, crate::engine::Perms::RW, "the current task")?;
        self.regions.push((area.clone(), "the current task (task_struct and thread_info)".into()));
        let task = area.start;
        let thread_info = match abi.task_thread_info {
            Some(off) => task + off,
            None => {
                let ti = task + task_bytes;
                if let Some(off) = abi.ti_task {
                    self.write_uint(ti + off, task, self.ptr_bytes, "thread_info task")?;
                }
                ti
            }
        };

        // The runtime's percpu variables, in every possible CPU's copy.
        for v in karch.percpu_vars(&abi) {
            let Some(s) = image.symbol(v.name) else { continue };
            for cpu in self.possible.clone() {
                let value = match v.init {
                    crate::runtime::PercpuInit::CpuNumber => cpu as u64,
                    crate::runtime::PercpuInit::CpuOffset => {
                        self.offsets.get(cpu as usize).copied().flatten().unwrap_or(0)
                    }
                    crate::runtime::PercpuInit::PreemptEnabled => abi.preempt_enabled,
                    crate::runtime::PercpuInit::CurrentTask => task,
                };
                let at = self.cpu_ptr(s.value, cpu).expect("possible cpu");
                self.write_uint(at, value, v.size as usize, v.name)?;
            }
        }
        let gfp_kernel = abi.records.get("gfp_kernel").copied().unwrap_or(0xcc0);
        self.kernel = Some(KernelRt {
            abi,
            karch,
            slots,
            bugs: HashMap::new(),
            warned_once: HashSet::new(),
            task,
            thread_info,
            task_area: area,
            irq: 0,
            log: KernelLog::default(),
            gfp_kernel,
            fail_alloc: Vec::new(),
            alloc_calls: 0,
        });
        Ok(())
    }

    /// Breakpoints on every WARN/BUG trap of a module's `__bug_table`.
    pub(crate) fn add_bug_table(&mut self, obj: &percpu_loader::LoadedObject) -> Result<(), CheckError> {
        let Some(layout) = self.kernel.as_ref().and_then(|k| k.abi.bug) else { return Ok(()) };
        let Some(sec) = obj.section("__bug_table") else { return Ok(()) };
        let read = |p: u64| obj.read_cstr(p, 512);
        let sites = crate::runtime::bugtable::parse(
            sec.addr,
            &sec.data,
            &layout,
            obj.little_endian,
            self.ptr_bytes as u32,
            &read,
        )
        .map_err(|e| CheckError::Layout {
            arch: self.isa.name().into(),
            variant: self.variant.name.into(),
            reason: format!("{}: {e}", obj.name),
        })?;
        tracing::debug!(object = %obj.name, sites = sites.len(), "WARN/BUG sites from __bug_table");
        let rt = self.kernel.as_mut().expect("kernel mode");
        for s in sites {
            rt.bugs.insert(s.addr, (obj.name.clone(), s));
        }
        let addrs: Vec<u64> = rt.bugs.keys().copied().collect();
        self.engine.set_breakpoints(&addrs).map_err(self.engine_error("installing the WARN/BUG breakpoints"))
    }

    /// Kernel state for a CPU about to run: thread_info's cpu and preempt
    /// count, the arch's registers and lowcore fields, interrupts on.
    pub(crate) fn enter_kernel(&mut self, cpu: u32, offset: u64) -> Result<(), CheckError> {
        let k = self.kernel.as_ref().expect("kernel mode");
        let (abi, karch) = (k.abi.clone(), k.karch);
        let kc = crate::runtime::KernelCpu { cpu, per_cpu_offset: offset, task: k.task, thread_info: k.thread_info };
        if let Some(off) = abi.ti_cpu {
            self.write_uint(kc.thread_info + off, cpu as u64, 4, "thread_info cpu")?;
        }
        if let Some((off, size)) = abi.ti_preempt_count {
            self.write_uint(kc.thread_info + off, abi.preempt_enabled, size as usize, "thread_info preempt_count")?;
        }
        if let PreemptLoc::PercpuVar(name) = karch.preempt_count() {
            if let Some(v) = self.objects[0].loaded.as_ref().and_then(|l| l.symbol(name)).map(|s| s.value) {
                let at = self.cpu_ptr(v, cpu).expect("possible cpu");
                self.write_uint(at, abi.preempt_enabled, 4, name)?;
            }
        }
        self.rt().irq = 0;
        karch.enter_kernel_cpu(self.engine.as_mut(), &kc, &abi).map_err(self.engine_error("entering the kernel state"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(at: usize, ptr: u64, alloc: bool) -> AllocEvent {
        AllocEvent { at, ptr, size: 8, alloc }
    }

    #[test]
    fn an_allocation_is_live_between_its_alloc_and_its_free() {
        // trace: 0 1 | alloc A | 2 3 | free A | 4 5
        let events = [ev(2, 0xa0, true), ev(4, 0xa0, false)];
        let live: Vec<usize> = (0..6).filter(|&i| live_at(&events, 0xa0, i)).collect();
        assert_eq!(live, [2, 3], "before the alloc and after the free it is not live");
        assert!(!live_at(&events, 0xb0, 3), "a pointer with no events");
    }

    #[test]
    fn an_allocation_from_an_earlier_call_is_live_until_it_is_freed() {
        // exit: 0 1 2 | free K | 3
        let events = [ev(3, 0xc0, false)];
        assert!(live_at(&events, 0xc0, 2));
        assert!(!live_at(&events, 0xc0, 3), "used after free_percpu");
    }

    #[test]
    fn a_reused_address_is_live_only_in_each_of_its_lifetimes() {
        // alloc P @1, free P @3, alloc P again @5 (same address reused).
        let events = [ev(1, 0xd0, true), ev(3, 0xd0, false), ev(5, 0xd0, true)];
        let live: Vec<usize> = (0..7).filter(|&i| live_at(&events, 0xd0, i)).collect();
        assert_eq!(live, [1, 2, 5, 6]);
    }
}
