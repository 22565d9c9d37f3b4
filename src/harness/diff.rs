//! The differential, the invariant check and the hint-free demonstration:
//! one chunk, the same operations on the tree's real code (through the
//! [`Driver`]) and on the model's [`ChunkMap`], observed after every
//! operation.
//!
//! An operation is what `pcpu_alloc` and `free_percpu` do to one chunk:
//! * alloc: `pcpu_find_block_fit` then `pcpu_alloc_area`, then (unless
//!   atomic) the pages it covers are populated; allocations are numbered so
//!   a free names one (`f ID`), and a free of an allocation that failed, was
//!   freed already or was removed by the minimiser is skipped on both sides;
//! * free: `pcpu_free_area`;
//! * depopulate: every populated, wholly free page is depopulated, as the
//!   balance work's reclaim does.
//!
//! Observed: the offset returned (bytes) or bytes freed, then `free_bytes`,
//! `nr_populated`, `nr_empty_pop_pages` and every field of `chunk_md` and of
//! each `md_block`.

use rand::{Rng, SeedableRng};
use std::fmt;

use super::minimise::ddmin;
use super::{Driver, HarnessError};
use percpu_core::bitmap::{BlockHints, ChunkMap, KernelChunkState};

pub const PAGE_SIZE: usize = 4096;

/// One operation on the chunk.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `bits` 4-byte units aligned to `align` units (a power of two).
    Alloc {
        id: u32,
        bits: u32,
        align: u32,
        atomic: bool,
    },
    Free {
        id: u32,
    },
    Depopulate,
}

impl Op {
    fn request(&self) -> String {
        match *self {
            Op::Alloc { id, bits, align, atomic } => format!("a {id} {bits} {align} {}", atomic as u8),
            Op::Free { id } => format!("f {id}"),
            Op::Depopulate => "d".to_string(),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Op::Alloc { id, bits, align, atomic } => {
                write!(f, "#{id} = alloc {} B align {}{}", bits * 4, align * 4, if atomic { " atomic" } else { "" })
            }
            Op::Free { id } => write!(f, "free #{id}"),
            Op::Depopulate => write!(f, "depopulate empty pages"),
        }
    }
}

/// The hint fields in the order the driver prints them.
const MD_FIELDS: [&str; 8] = [
    "scan_hint",
    "scan_hint_start",
    "contig_hint",
    "contig_hint_start",
    "left_free",
    "right_free",
    "first_free",
    "nr_bits",
];

/// The eight fields of a `struct pcpu_block_md`, in the kernel's order
/// (how both drivers print them).
pub(crate) fn md_values(h: &BlockHints) -> [i64; 8] {
    [
        h.scan_hint,
        h.scan_hint_start,
        h.contig_hint,
        h.contig_hint_start,
        h.left_free,
        h.right_free,
        h.first_free,
        h.nr_bits,
    ]
    .map(|v| v as i64)
}

/// [`md_values`] read back.
pub(crate) fn md_hints(v: &[i64]) -> BlockHints {
    let u = |i: usize| v[i].max(0) as usize;
    BlockHints {
        scan_hint: u(0),
        scan_hint_start: u(1),
        contig_hint: u(2),
        contig_hint_start: u(3),
        left_free: u(4),
        right_free: u(5),
        first_free: u(6),
        nr_bits: u(7),
    }
}

/// What one side showed after one operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// Alloc: byte offset or -1; free: bytes freed or -2 (skipped);
    /// depopulate: pages depopulated.
    pub result: i64,
    /// `free_bytes nr_populated nr_empty_pop_pages`, then 8 fields of
    /// `chunk_md`, then 8 per block.
    pub state: Vec<i64>,
}

/// The first place the two sides disagree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// Index of the operation after which they disagree.
    pub index: usize,
    pub op: Op,
    pub field: String,
    pub real: i64,
    pub model: i64,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "after op {} ({}): {}: real {}, model {}", self.index + 1, self.op, self.field, self.real, self.model)
    }
}

fn field_name(i: usize) -> String {
    match i {
        0 => "free_bytes".into(),
        1 => "nr_populated".into(),
        2 => "nr_empty_pop_pages".into(),
        i if i < 11 => format!("chunk_md.{}", MD_FIELDS[i - 3]),
        i => format!("md_blocks[{}].{}", (i - 11) / 8, MD_FIELDS[(i - 11) % 8]),
    }
}

fn compare(ops: &[Op], real: &[Observation], model: &[Observation]) -> Option<Divergence> {
    for (index, ((r, m), op)) in real.iter().zip(model).zip(ops).enumerate() {
        let what = match op {
            Op::Alloc { .. } => "offset returned (bytes, -1 refused)",
            Op::Free { .. } => "bytes freed (-2 skipped)",
            Op::Depopulate => "pages depopulated",
        };
        if r.result != m.result {
            return Some(Divergence { index, op: *op, field: what.into(), real: r.result, model: m.result });
        }
        if let Some(i) = (0..r.state.len().max(m.state.len())).find(|&i| r.state.get(i) != m.state.get(i)) {
            return Some(Divergence {
                index,
                op: *op,
                field: field_name(i),
                real: r.state.get(i).copied().unwrap_or(-1),
                model: m.state.get(i).copied().unwrap_or(-1),
            });
        }
    }
    None
}

/// The model's side: a [`ChunkMap`] driven as the driver drives the kernel.
pub struct ModelChunk {
    pub chunk: ChunkMap,
    ids: Vec<Option<usize>>,
}

impl ModelChunk {
    pub fn new(pages: usize, fix: bool) -> Self {
        let mut chunk = ChunkMap::new(PAGE_SIZE, pages);
        chunk.set_free_path_chunk_hint_fix(fix);
        ModelChunk { chunk, ids: Vec::new() }
    }

    pub fn apply(&mut self, op: &Op) -> i64 {
        let c = &mut self.chunk;
        match *op {
            Op::Alloc { id, bits, align, atomic } => {
                let (bits, align) = (bits as usize, align as usize);
                let off = c.find_block_fit(bits, align, atomic).and_then(|start| c.alloc_area(bits, align, start));
                if let (Some(off), false) = (off, atomic) {
                    let (ps, pe) = (off * 4 / PAGE_SIZE, ((off + bits) * 4).div_ceil(PAGE_SIZE));
                    let runs: Vec<_> = c.unpopulated_runs(ps, pe).collect();
                    for r in runs {
                        c.mark_populated(r.start, r.end);
                    }
                }
                let id = id as usize;
                if self.ids.len() <= id {
                    self.ids.resize(id + 1, None);
                }
                self.ids[id] = off;
                off.map_or(-1, |o| (o * 4) as i64)
            }
            Op::Free { id } => match self.ids.get_mut(id as usize).and_then(Option::take) {
                Some(bit) => (c.free_area(bit).expect("the model frees what it allocated") * 4) as i64,
                None => -2,
            },
            Op::Depopulate => {
                let mut n = 0;
                for p in 0..c.nr_pages() {
                    if c.is_page_populated(p) && c.is_page_empty(p) {
                        c.mark_depopulated(p, p + 1);
                        n += 1;
                    }
                }
                n
            }
        }
    }

    pub fn state(&self) -> Vec<i64> {
        let c = &self.chunk;
        let mut s = vec![c.free_bytes() as i64, c.nr_populated() as i64, c.nr_empty_pop_pages() as i64];
        s.extend(md_values(&c.chunk_hints()));
        for b in 0..c.nr_pages() {
            s.extend(md_values(&c.block_hints(b)));
        }
        s
    }
}

/// Run `ops` on the model.
pub fn run_model(pages: usize, fix: bool, ops: &[Op]) -> Vec<Observation> {
    let mut m = ModelChunk::new(pages, fix);
    ops.iter().map(|op| Observation { result: m.apply(op), state: m.state() }).collect()
}

fn parse_ints(line: &str, tag: &str) -> Option<Vec<i64>> {
    let rest = line.strip_prefix(tag)?;
    rest.split_whitespace().map(|w| w.parse().ok()).collect()
}

/// Run `ops` on the real code, on a fresh chunk of `pages` pages.
pub fn run_real(d: &mut Driver, pages: usize, ops: &[Op]) -> Result<Vec<Observation>, HarnessError> {
    let ok = d.request(&format!("init {pages}"))?;
    if ok != "ok" {
        return Err(d.protocol(format!("init replied `{ok}`")));
    }
    let mut out = Vec::with_capacity(ops.len());
    for batch in ops.chunks(128) {
        for op in batch {
            d.send(&op.request())?;
            d.send("s")?;
        }
        d.flush()?;
        for op in batch {
            let line = d.recv()?;
            let result = match (op, line.split_whitespace().nth(1)) {
                (Op::Free { .. }, Some("skip")) => -2,
                (_, Some(v)) => {
                    v.parse().map_err(|_| d.protocol(format!("bad reply `{line}` to `{}`", op.request())))?
                }
                _ => return Err(d.protocol(format!("bad reply `{line}` to `{}`", op.request()))),
            };
            let line = d.recv()?;
            let state = parse_ints(&line, "s ").ok_or_else(|| d.protocol(format!("bad state line `{line}`")))?;
            out.push(Observation { result, state });
        }
        d.expect_end()?;
    }
    Ok(out)
}

/// The real code's chunk in the model's representation, for `verify()`.
pub fn real_state(d: &mut Driver, pages: usize) -> Result<KernelChunkState, HarnessError> {
    let s = d.request("s")?;
    let s = parse_ints(&s, "s ").ok_or_else(|| d.protocol(format!("bad state line `{s}`")))?;
    let m = d.request("m")?;
    let maps: Vec<Vec<u64>> = m
        .strip_prefix("m |")
        .ok_or_else(|| d.protocol(format!("bad maps line `{m}`")))?
        .split('|')
        .map(|part| part.split_whitespace().map(|w| u64::from_str_radix(w, 16).unwrap_or(u64::MAX)).collect())
        .collect();
    if maps.len() != 3 || s.len() != 11 + 8 * pages {
        return Err(d.protocol("state or maps of the wrong shape"));
    }
    Ok(KernelChunkState {
        page_size: PAGE_SIZE,
        nr_pages: pages,
        alloc_map: maps[0].clone(),
        bound_map: maps[1].clone(),
        populated: maps[2].clone(),
        chunk_md: md_hints(&s[3..11]),
        md_blocks: (0..pages).map(|b| md_hints(&s[11 + 8 * b..19 + 8 * b])).collect(),
        free_bytes: s[0] as usize,
        nr_populated: s[1] as usize,
        nr_empty_pop_pages: s[2] as usize,
        start_offset: 0,
        end_offset: 0,
    })
}

/// A random operation sequence: phases that fill the chunk and phases that
/// drain it, sizes from a few bytes to a few pages, alignments up to a
/// page, some atomic requests and depopulations.
pub fn random_ops(seed: u64, n: usize, pages: usize) -> Vec<Op> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let region_bits = (pages * PAGE_SIZE / 4) as u32;
    let mut live: Vec<u32> = Vec::new();
    let mut next_id = 0u32;
    let mut ops = Vec::with_capacity(n);
    for i in 0..n {
        let draining = (i / 500) % 2 == 1;
        let p_free = if draining { 0.7 } else { 0.3 };
        let r: f64 = rng.random();
        if r < 0.01 {
            ops.push(Op::Depopulate);
        } else if !live.is_empty() && r < 0.01 + p_free {
            let k = rng.random_range(0..live.len());
            ops.push(Op::Free { id: live.swap_remove(k) });
        } else {
            let class: f64 = rng.random();
            let bits = if class < 0.55 {
                rng.random_range(1..=16)
            } else if class < 0.85 {
                rng.random_range(17..=256)
            } else if class < 0.97 {
                rng.random_range(257..=1024)
            } else {
                rng.random_range(1025..=3072)
            }
            .min(region_bits);
            let align = if rng.random_bool(0.7) { 1 } else { 1 << rng.random_range(1..=10) };
            let atomic = rng.random_bool(0.1);
            ops.push(Op::Alloc { id: next_id, bits, align, atomic });
            live.push(next_id);
            next_id += 1;
        }
    }
    ops
}

/// What `diff` found.
#[derive(Clone, Debug)]
pub struct DiffOutcome {
    pub ops_run: usize,
    pub divergence: Option<Minimised>,
}

/// A divergence and its minimised reproduction.
pub type Minimised = super::minimise::Minimised<Op, Divergence>;

/// Compare real and model over `ops`; on a divergence, minimise it.
pub fn diff(d: &mut Driver, pages: usize, fix: bool, ops: &[Op]) -> Result<DiffOutcome, HarnessError> {
    let real = run_real(d, pages, ops)?;
    let model = run_model(pages, fix, ops);
    let Some(first) = compare(ops, &real, &model) else {
        return Ok(DiffOutcome { ops_run: ops.len(), divergence: None });
    };
    let mut failed: Option<HarnessError> = None;
    let mut tests = 0;
    let prefix = &ops[..=first.index];
    let small = ddmin(prefix, 4000, |cand| {
        tests += 1;
        if failed.is_some() {
            return false;
        }
        match run_real(d, pages, cand) {
            Ok(real) => compare(cand, &real, &run_model(pages, fix, cand)).is_some(),
            Err(e) => {
                failed = Some(e);
                false
            }
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    let real = run_real(d, pages, &small)?;
    let divergence = compare(&small, &real, &run_model(pages, fix, &small)).expect("the minimised sequence diverges");
    Ok(DiffOutcome { ops_run: first.index + 1, divergence: Some(Minimised { first, ops: small, divergence, tests }) })
}

/// A `verify()` failure on the real code's state.
#[derive(Clone, Debug)]
pub struct VerifyFailure {
    pub index: usize,
    pub op: Op,
    pub error: String,
    /// A minimised sequence whose end state fails the same way.
    pub ops: Vec<Op>,
}

/// Run `ops` on the real code and apply the model's `verify()` to its state
/// after every `every` operations (and after the last).
pub fn verify(d: &mut Driver, pages: usize, ops: &[Op], every: usize) -> Result<Option<VerifyFailure>, HarnessError> {
    let check = |d: &mut Driver, ops: &[Op]| -> Result<Option<String>, HarnessError> {
        run_real(d, pages, ops)?;
        let st = real_state(d, pages)?;
        Ok(match ChunkMap::from_kernel_state(&st) {
            Ok(c) => c.verify().err().map(|e| e.to_string()),
            Err(e) => Some(e.to_string()),
        })
    };
    let ok = d.request(&format!("init {pages}"))?;
    if ok != "ok" {
        return Err(d.protocol(format!("init replied `{ok}`")));
    }
    let every = every.max(1);
    // one pass, checking as it goes; replaying from scratch only to minimise
    let mut done = 0;
    let mut first_bad = None;
    for (i, op) in ops.iter().enumerate() {
        d.send(&op.request())?;
        if (i + 1) % every == 0 || i + 1 == ops.len() {
            d.flush()?;
            for _ in done..=i {
                d.recv()?;
            }
            d.expect_end()?;
            done = i + 1;
            let st = real_state(d, pages)?;
            let err = match ChunkMap::from_kernel_state(&st) {
                Ok(c) => c.verify().err().map(|e| e.to_string()),
                Err(e) => Some(e.to_string()),
            };
            if let Some(e) = err {
                first_bad = Some((i, e));
                break;
            }
        }
    }
    let Some((index, error)) = first_bad else { return Ok(None) };
    let mut failed = None;
    let small = ddmin(&ops[..=index], 4000, |cand| match check(d, cand) {
        Ok(r) => r.is_some(),
        Err(e) => {
            failed.get_or_insert(e);
            false
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(Some(VerifyFailure { index, op: ops[index], error, ops: small }))
}

/// The hint-free sequence of `docs/hint-free.md`: fill a 4-page chunk with
/// 2 KiB objects, free the first one of block 1, ask for 1 KiB.
pub fn hint_free_ops() -> Vec<Op> {
    let mut ops: Vec<Op> = (0..8).map(|id| Op::Alloc { id, bits: 512, align: 1, atomic: false }).collect();
    ops.push(Op::Free { id: 2 });
    ops.push(Op::Alloc { id: 8, bits: 256, align: 1, atomic: false });
    ops
}

/// What the hint-free sequence shows on one side.
#[derive(Clone, Debug)]
pub struct HintFreeSteps {
    /// `chunk_md` after the free, and block 1's hints.
    pub chunk_after_free: BlockHints,
    pub block1_after_free: BlockHints,
    /// Offset of the 1 KiB request (None: refused).
    pub last: Option<i64>,
}

fn steps(obs: &[Observation]) -> HintFreeSteps {
    let after_free = &obs[8].state;
    let last = obs[9].result;
    HintFreeSteps {
        chunk_after_free: md_hints(&after_free[3..11]),
        block1_after_free: md_hints(&after_free[19..27]),
        last: (last >= 0).then_some(last),
    }
}

pub fn hint_free_real(d: &mut Driver) -> Result<HintFreeSteps, HarnessError> {
    Ok(steps(&run_real(d, 4, &hint_free_ops())?))
}

pub fn hint_free_model(fix: bool) -> HintFreeSteps {
    steps(&run_model(4, fix, &hint_free_ops()))
}

/// Apply the one-line fix to the text of a tree's `mm/percpu.c`: the free
/// path's chunk update gets a chunk-relative end.  `None` when the line is
/// not there as 6.1 has it (already fixed, or changed).
pub fn apply_hint_free_fix(percpu_c: &str) -> Option<String> {
    let call = "pcpu_block_update(&chunk->chunk_md,";
    let start_arg = "pcpu_block_off_to_off(s_index, start),";
    let func = percpu_c.find("pcpu_block_update_hint_free(struct pcpu_chunk")?;
    let at = func + percpu_c[func..].find(call)?;
    let after_call = at + call.len();
    let rest = &percpu_c[after_call..];
    let s = rest.len() - rest.trim_start().len();
    if !rest[s..].starts_with(start_arg) {
        return None;
    }
    let after_start = after_call + s + start_arg.len();
    let rest = &percpu_c[after_start..];
    let e = rest.len() - rest.trim_start().len();
    if !rest[e..].starts_with("end)") {
        return None;
    }
    let end_at = after_start + e;
    Some(format!("{}pcpu_block_off_to_off(s_index, end){}", &percpu_c[..end_at], &percpu_c[end_at + 3..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fix_changes_exactly_the_end_argument() {
        let c = "static void pcpu_block_update_hint_free(struct pcpu_chunk *chunk, int bit_off,\n\
                 int bits)\n{\n\tif (x)\n\t\tpcpu_chunk_refresh_hint(chunk, true);\n\telse\n\
                 \t\tpcpu_block_update(&chunk->chunk_md,\n\t\t\t\t  pcpu_block_off_to_off(s_index, start),\n\
                 \t\t\t\t  end);\n}\n";
        let fixed = apply_hint_free_fix(c).unwrap();
        assert!(
            fixed.contains("pcpu_block_off_to_off(s_index, start),\n\t\t\t\t  pcpu_block_off_to_off(s_index, end));")
        );
        assert_eq!(fixed.len(), c.len() + "pcpu_block_off_to_off(s_index, )".len());
        // applying it twice finds nothing more to fix
        assert!(apply_hint_free_fix(&fixed).is_none());
    }

    #[test]
    fn the_model_shows_the_finding_and_the_fix() {
        let bug = hint_free_model(false);
        assert_eq!(bug.block1_after_free.contig_hint, 512, "block 1's first half is free");
        assert_eq!(bug.chunk_after_free.contig_hint, 0, "the chunk's contig hint is not raised");
        assert_eq!(bug.last, None, "the 1 KiB request is refused");
        let fixed = hint_free_model(true);
        assert_eq!(fixed.chunk_after_free.contig_hint, 512);
        assert_eq!(fixed.last, Some(4096));
    }

    #[test]
    fn random_ops_free_only_what_was_allocated_before() {
        let ops = random_ops(7, 5000, 8);
        let mut seen = std::collections::HashSet::new();
        for op in &ops {
            match *op {
                Op::Alloc { id, align, .. } => {
                    assert!(align.is_power_of_two() && align <= 1024);
                    assert!(seen.insert(id));
                }
                Op::Free { id } => assert!(seen.contains(&id)),
                Op::Depopulate => {}
            }
        }
        assert!(ops.iter().any(|o| matches!(o, Op::Free { .. })));
    }

    #[test]
    fn fields_are_named_for_the_report() {
        assert_eq!(field_name(0), "free_bytes");
        assert_eq!(field_name(5), "chunk_md.contig_hint");
        assert_eq!(field_name(11 + 8 + 2), "md_blocks[1].contig_hint");
    }
}
