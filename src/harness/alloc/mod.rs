//! The whole allocator in userspace: a tree's own `pcpu_alloc`,
//! `free_percpu`, balance work (`pcpu_balance_workfn`: `pcpu_balance_free`,
//! `pcpu_reclaim_populated`, `pcpu_balance_populated`) and
//! `pcpu_setup_first_chunk`, over its `mm/percpu-km.c` backend with
//! calloc-backed pages ([`source`]), run op by op beside the model's whole
//! allocator [`Percpu`](percpu_core::percpu::Percpu) configured with the
//! km backend and the same alloc info ([`model`]).
//!
//! An operation is an allocation (size in bytes, alignment, reserved or
//! not, atomic or not), a free of an earlier allocation (skipped on both
//! sides when it failed or was freed), or a run of the balance work.  After
//! every one both sides are observed in what they can name identically
//! ([`State`]): the result (failure, or the chunk by creation ordinal and
//! the offset from its base), the global counters
//! (`pcpu_nr_empty_pop_pages`, `pcpu_nr_populated`, whether the balance
//! work is scheduled, the number of chunks), every slot list in list order,
//! and per chunk `free_bytes`, all of `chunk_md`, `nr_populated`,
//! `nr_empty_pop_pages` and `isolated`.  The real side's state is also held
//! to the allocator's invariants ([`check_invariants`]) and, every so many
//! operations, every chunk's maps and hints to the model's
//! `ChunkMap::verify()`.

pub mod model;
pub mod real;
pub mod source;

use std::fmt;

use rand::{Rng, SeedableRng};

use super::minimise::ddmin;
use super::HarnessError;

/// One operation on the allocator.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Alloc { id: u32, size: u32, align: u32, reserved: bool, atomic: bool },
    Free { id: u32 },
    Balance,
}

impl Op {
    /// The driver's request line (`c/alloc_driver.c`).
    pub fn request(&self) -> String {
        match *self {
            Op::Alloc { id, size, align, reserved, atomic } => {
                format!("a {id} {size} {align} {} {}", reserved as u8, atomic as u8)
            }
            Op::Free { id } => format!("f {id}"),
            Op::Balance => "b".to_string(),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Op::Alloc { id, size, align, reserved, atomic } => write!(
                f,
                "#{id} = alloc {size} B align {align}{}{}",
                if reserved { " reserved" } else { "" },
                if atomic { " atomic" } else { "" }
            ),
            Op::Free { id } => write!(f, "free #{id}"),
            Op::Balance => write!(f, "balance work"),
        }
    }
}

/// What an operation returned.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum OpResult {
    /// `Some((chunk ordinal, offset from the chunk's base_addr))`.
    Alloc(Option<(usize, usize)>),
    /// Whether a live allocation was freed (false: skipped).
    Free(bool),
    Balance,
}

impl fmt::Display for OpResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpResult::Alloc(Some((c, off))) => write!(f, "chunk {c} offset {off}"),
            OpResult::Alloc(None) => write!(f, "NULL"),
            OpResult::Free(true) => write!(f, "freed"),
            OpResult::Free(false) => write!(f, "skipped"),
            OpResult::Balance => write!(f, "done"),
        }
    }
}

/// One chunk as both sides show it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ChunkObs {
    /// 0 the first chunk, 1 the reserved chunk if any, then creation order.
    pub ord: usize,
    pub free_bytes: i64,
    /// `chunk_md`: scan_hint scan_hint_start contig_hint contig_hint_start
    /// left_free right_free first_free nr_bits.
    pub md: [i64; 8],
    pub nr_populated: i64,
    pub nr_empty_pop_pages: i64,
    pub isolated: bool,
}

pub const MD_FIELDS: [&str; 8] = [
    "scan_hint",
    "scan_hint_start",
    "contig_hint",
    "contig_hint_start",
    "left_free",
    "right_free",
    "first_free",
    "nr_bits",
];

/// The allocator as both sides show it after an operation.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct State {
    pub nr_empty_pop_pages: i64,
    pub nr_populated: i64,
    pub balance_scheduled: bool,
    pub nr_slots: usize,
    pub nr_chunks: usize,
    /// Non-empty slot lists: (slot, chunk ordinals head first).
    pub slots: Vec<(usize, Vec<usize>)>,
    /// Live chunks by ordinal.
    pub chunks: Vec<ChunkObs>,
}

impl State {
    /// The first field where `self` (real) and `other` (model) differ, with
    /// both values.
    pub fn first_difference(&self, other: &State) -> Option<(String, String, String)> {
        let d = |name: &str, a: &dyn fmt::Debug, b: &dyn fmt::Debug| {
            Some((name.to_string(), format!("{a:?}"), format!("{b:?}")))
        };
        if self.nr_chunks != other.nr_chunks {
            return d("number of chunks", &self.nr_chunks, &other.nr_chunks);
        }
        if self.nr_empty_pop_pages != other.nr_empty_pop_pages {
            return d("pcpu_nr_empty_pop_pages", &self.nr_empty_pop_pages, &other.nr_empty_pop_pages);
        }
        if self.nr_populated != other.nr_populated {
            return d("pcpu_nr_populated", &self.nr_populated, &other.nr_populated);
        }
        if self.balance_scheduled != other.balance_scheduled {
            return d("balance work scheduled", &self.balance_scheduled, &other.balance_scheduled);
        }
        if self.nr_slots != other.nr_slots {
            return d("pcpu_nr_slots", &self.nr_slots, &other.nr_slots);
        }
        let ords = |s: &State| s.chunks.iter().map(|c| c.ord).collect::<Vec<_>>();
        if ords(self) != ords(other) {
            return d("live chunks (ordinals)", &ords(self), &ords(other));
        }
        for (a, b) in self.chunks.iter().zip(&other.chunks) {
            let c = a.ord;
            if a.free_bytes != b.free_bytes {
                return d(&format!("chunk {c} free_bytes"), &a.free_bytes, &b.free_bytes);
            }
            if let Some(i) = (0..8).find(|&i| a.md[i] != b.md[i]) {
                return d(&format!("chunk {c} chunk_md.{}", MD_FIELDS[i]), &a.md[i], &b.md[i]);
            }
            if a.nr_populated != b.nr_populated {
                return d(&format!("chunk {c} nr_populated"), &a.nr_populated, &b.nr_populated);
            }
            if a.nr_empty_pop_pages != b.nr_empty_pop_pages {
                return d(&format!("chunk {c} nr_empty_pop_pages"), &a.nr_empty_pop_pages, &b.nr_empty_pop_pages);
            }
            if a.isolated != b.isolated {
                return d(&format!("chunk {c} isolated"), &a.isolated, &b.isolated);
            }
        }
        for slot in 0..self.nr_slots {
            let list = |s: &State| s.slots.iter().find(|(n, _)| *n == slot).map(|(_, l)| l.clone()).unwrap_or_default();
            let (a, b) = (list(self), list(other));
            if a != b {
                return d(&format!("slot {slot} list"), &a, &b);
            }
        }
        None
    }
}

/// The geometry both sides are set up with (from the model's alloc info).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setup {
    pub cpus: usize,
    pub nr_units: usize,
    pub static_size: usize,
    pub reserved_size: usize,
    pub dyn_size: usize,
    pub unit_size: usize,
    pub atom_size: usize,
    pub alloc_size: usize,
}

impl Setup {
    pub fn request(&self) -> String {
        format!(
            "setup {} {} {} {} {} {} {} {}",
            self.cpus,
            self.nr_units,
            self.static_size,
            self.reserved_size,
            self.dyn_size,
            self.unit_size,
            self.atom_size,
            self.alloc_size
        )
    }
}

/// `pcpu_chunk_slot` from a chunk's observation.
fn chunk_slot(c: &ChunkObs, unit_size: usize, free_slot: usize) -> usize {
    let contig_bytes = c.md[2] as usize * 4;
    if c.free_bytes < 4 || contig_bytes == 0 {
        0
    } else if contig_bytes == unit_size {
        free_slot
    } else {
        let fls = (usize::BITS - contig_bytes.leading_zeros()) as isize;
        (fls - 5 + 2).max(1) as usize
    }
}

/// The allocator-level invariants `Percpu::verify` holds the model to,
/// applied to an observed state: the global empty-page count is the sum
/// over the chunks it counts (not reserved, not isolated); every chunk but
/// the reserved one is on exactly one slot list; an isolated chunk is on
/// the to_depopulate or sidelined list, any other on the slot of its contig
/// hint (or slot 0 / sidelined, where a failed fit or reclaim put it);
/// counters stay within the chunk's pages; `pcpu_nr_populated` is the
/// first chunk's pages plus the backend chunks' populated pages.
pub fn check_invariants(s: &State, setup: &Setup, reserved_ord: Option<usize>) -> Result<(), String> {
    let (sidelined, free_slot, to_depop) = (s.nr_slots - 3, s.nr_slots - 2, s.nr_slots - 1);
    let mut empty = 0;
    for c in &s.chunks {
        // every list the chunk appears on, once per appearance
        let on: Vec<usize> =
            s.slots.iter().flat_map(|(n, l)| l.iter().filter(|&&o| o == c.ord).map(move |_| *n)).collect();
        if Some(c.ord) == reserved_ord {
            if !on.is_empty() {
                return Err(format!("the reserved chunk {} is on slot list(s) {on:?}", c.ord));
            }
            continue;
        }
        if on.len() != 1 {
            return Err(format!("chunk {} is on {} slot lists ({on:?}), not one", c.ord, on.len()));
        }
        let slot = on[0];
        if c.isolated {
            if slot != to_depop && slot != sidelined {
                return Err(format!("isolated chunk {} is on slot {slot}", c.ord));
            }
        } else {
            empty += c.nr_empty_pop_pages;
            let want = chunk_slot(c, setup.unit_size, free_slot);
            if slot != want && slot != 0 && slot != sidelined {
                return Err(format!("chunk {} is on slot {slot}, its contig hint {} says {want}", c.ord, c.md[2]));
            }
        }
        if c.nr_empty_pop_pages < 0 || c.nr_empty_pop_pages > c.nr_populated || c.free_bytes < 0 {
            return Err(format!(
                "chunk {}: nr_empty_pop_pages {} outside 0..=nr_populated {} (free_bytes {})",
                c.ord, c.nr_empty_pop_pages, c.nr_populated, c.free_bytes
            ));
        }
    }
    if empty != s.nr_empty_pop_pages {
        return Err(format!(
            "pcpu_nr_empty_pop_pages is {}, the chunks it counts sum to {empty}",
            s.nr_empty_pop_pages
        ));
    }
    // pcpu_setup_first_chunk counts the first chunk's regions once
    // (PFN_DOWN(size_sum)); backend chunks add their populated pages
    let first_dynamic = 1 + reserved_ord.map_or(0, |_| 1);
    let size_sum = setup.static_size + setup.reserved_size + setup.dyn_size;
    let populated = (size_sum / 4096) as i64
        + s.chunks.iter().filter(|c| c.ord >= first_dynamic).map(|c| c.nr_populated).sum::<i64>();
    if populated != s.nr_populated {
        return Err(format!(
            "pcpu_nr_populated is {}, the first chunk and backend chunks sum to {populated}",
            s.nr_populated
        ));
    }
    let listed: usize = s.slots.iter().map(|(_, l)| l.len()).sum();
    if listed + reserved_ord.map_or(0, |_| 1) != s.nr_chunks || s.chunks.len() != s.nr_chunks {
        return Err(format!("{} chunks live, {} on slot lists, {} observed", s.nr_chunks, listed, s.chunks.len()));
    }
    Ok(())
}

/// A random operation sequence: phases that grow the allocator over
/// several chunks and phases that drain it; sizes from 1 B to the 32 KiB
/// limit (a few beyond it, refused), alignments 1 B to a page, some
/// reserved and some atomic requests, runs of the balance work.
pub fn random_ops(seed: u64, n: usize) -> Vec<Op> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut live: Vec<u32> = Vec::new();
    let mut next_id = 0u32;
    let mut ops = Vec::with_capacity(n);
    for i in 0..n {
        let draining = (i / 1500) % 2 == 1;
        let p_free = if draining { 0.75 } else { 0.3 };
        let r: f64 = rng.random();
        if r < 0.02 {
            ops.push(Op::Balance);
        } else if !live.is_empty() && r < 0.02 + p_free {
            let k = rng.random_range(0..live.len());
            ops.push(Op::Free { id: live.swap_remove(k) });
        } else {
            let class: f64 = rng.random();
            let size = if class < 0.5 {
                rng.random_range(1..=64)
            } else if class < 0.8 {
                rng.random_range(65..=1024)
            } else if class < 0.96 {
                rng.random_range(1025..=4096)
            } else if class < 0.995 {
                rng.random_range(4097..=32768)
            } else {
                // illegal: 0 or over PCPU_MIN_UNIT_SIZE
                if rng.random_bool(0.5) {
                    0
                } else {
                    rng.random_range(32769..=40000)
                }
            };
            let align = if rng.random_bool(0.6) { 1 << rng.random_range(0..=3) } else { 1 << rng.random_range(4..=12) };
            let reserved = rng.random_bool(0.08);
            let atomic = rng.random_bool(0.12);
            ops.push(Op::Alloc { id: next_id, size, align, reserved, atomic });
            live.push(next_id);
            next_id += 1;
        }
    }
    ops
}

/// How often a named workload runs the balance work (the kernel would run
/// it asynchronously whenever it was scheduled; here it is a step).
pub const WORKLOAD_BALANCE_EVERY: usize = 256;

/// One of seed 002's objects workloads ([`crate::bench::Workload`], as
/// `bench` runs them) as operations: the second-half filler if the pattern
/// has one, `n` allocations, the frees in the pattern's order; the balance
/// work every [`WORKLOAD_BALANCE_EVERY`] operations and at the end.
pub fn workload_ops(name: &str, n: usize) -> Result<Vec<Op>, String> {
    use crate::bench::{free_order, Pattern, Workload};
    let w = Workload::parse(name).ok_or_else(|| {
        let names: Vec<String> = Workload::all().iter().map(Workload::name).collect();
        format!("no workload `{name}` (one of {})", names.join(", "))
    })?;
    let Workload::Objects { size, align, pattern } = w else {
        return Err(format!("`{name}` draws random sizes from bench's own generator; harness alloc runs the objects workloads and its random sequence (--seed)"));
    };
    let mut plain = Vec::new();
    let mut next = 0u32;
    let mut alloc = |size: usize, align: usize, out: &mut Vec<Op>| {
        out.push(Op::Alloc { id: next, size: size as u32, align: align as u32, reserved: false, atomic: false });
        next += 1;
        next - 1
    };
    if pattern == Pattern::SecondHalfFilled {
        let pairs = (n * size).div_ceil(2048) + 64;
        let firsts: Vec<u32> = (0..pairs)
            .map(|_| {
                let first = alloc(2048, 2048, &mut plain);
                alloc(2048, 2048, &mut plain);
                first
            })
            .collect();
        plain.extend(firsts.into_iter().map(|id| Op::Free { id }));
    }
    let objects: Vec<u32> = (0..n).map(|_| alloc(size, align, &mut plain)).collect();
    plain.extend(free_order(n, pattern).into_iter().map(|i| Op::Free { id: objects[i] }));
    let mut ops = Vec::with_capacity(plain.len() + plain.len() / WORKLOAD_BALANCE_EVERY + 1);
    for (i, op) in plain.into_iter().enumerate() {
        ops.push(op);
        if (i + 1) % WORKLOAD_BALANCE_EVERY == 0 {
            ops.push(Op::Balance);
        }
    }
    ops.push(Op::Balance);
    Ok(ops)
}

/// Where the two sides first disagree (or the real side broke an
/// invariant).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// The operation (index, op) after which they disagree; `None`: at
    /// setup, before any.
    pub op: Option<(usize, Op)>,
    pub field: String,
    pub real: String,
    pub model: String,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.op {
            Some((index, op)) => write!(f, "after op {} ({op})", index + 1)?,
            None => write!(f, "at setup")?,
        }
        write!(f, ": {}: real {}, model {}", self.field, self.real, self.model)
    }
}

/// What a run exercised (counted on the states both sides agreed on), so
/// that "0 divergences" can be seen to mean something.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    pub allocs: usize,
    pub alloc_failures: usize,
    pub atomic_failures: usize,
    pub reserved_allocs: usize,
    pub frees: usize,
    pub balances: usize,
    /// Dynamic chunks created (ordinals handed out past the first chunk's).
    pub chunks_created: usize,
    pub chunks_destroyed: usize,
    pub max_live_chunks: usize,
    /// Operations after which the balance work was pending.
    pub scheduled: usize,
    /// Allocations served from a dynamic chunk other than the newest.
    pub older_chunk_allocs: usize,
    /// The backend's setup messages both sides gave ("wasting N pages per
    /// chunk" when a chunk's pages are not a power of two).
    pub setup_warnings: Vec<String>,
}

impl Coverage {
    pub fn count(&mut self, op: &Op, result: &OpResult, before: &State, after: &State, first_dynamic: usize) {
        match (op, result) {
            (Op::Alloc { reserved, atomic, .. }, OpResult::Alloc(r)) => match r {
                Some((c, _)) => {
                    self.allocs += 1;
                    self.reserved_allocs += *reserved as usize;
                    let newest = after.chunks.last().map_or(0, |c| c.ord);
                    self.older_chunk_allocs += (*c >= first_dynamic && *c < newest) as usize;
                }
                None => {
                    self.alloc_failures += 1;
                    self.atomic_failures += *atomic as usize;
                }
            },
            (Op::Free { .. }, OpResult::Free(true)) => self.frees += 1,
            (Op::Balance, _) => self.balances += 1,
            _ => {}
        }
        let created = after.chunks.iter().filter(|c| !before.chunks.iter().any(|b| b.ord == c.ord)).count();
        let destroyed = before.chunks.iter().filter(|b| !after.chunks.iter().any(|c| c.ord == b.ord)).count();
        self.chunks_created += created;
        self.chunks_destroyed += destroyed;
        self.max_live_chunks = self.max_live_chunks.max(after.nr_chunks);
        self.scheduled += after.balance_scheduled as usize;
    }
}

impl fmt::Display for Coverage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} allocations ({} reserved, {} from an older chunk), {} refused ({} atomic), {} frees, {} balance runs; \
             {} chunks created, {} destroyed, at most {} live; balance work pending after {} ops",
            self.allocs,
            self.reserved_allocs,
            self.older_chunk_allocs,
            self.alloc_failures,
            self.atomic_failures,
            self.frees,
            self.balances,
            self.chunks_created,
            self.chunks_destroyed,
            self.max_live_chunks,
            self.scheduled
        )?;
        if !self.setup_warnings.is_empty() {
            write!(f, "; both backends warned \"{}\"", self.setup_warnings.join("\", \""))?;
        }
        Ok(())
    }
}

/// What [`diff`] found.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub ops_run: usize,
    pub states_verified: usize,
    pub coverage: Coverage,
    pub divergence: Option<Minimised>,
}

/// A divergence and a 1-minimal sequence that still diverges.
pub type Minimised = super::minimise::Minimised<Op, Divergence>;

/// Run `ops` on a fresh real allocator and a fresh model, compare after
/// every op (and verify the real chunks' maps every `every` ops, 0: never);
/// on a divergence, minimise it over the failing prefix.
pub fn diff(
    binary: &std::path::Path,
    model_cfg: &model::ModelConfig,
    ops: &[Op],
    every: usize,
) -> Result<Outcome, HarnessError> {
    let (first, verified, coverage) = real::run(binary, model_cfg, ops, every)?;
    let Some(first) = first else {
        return Ok(Outcome { ops_run: ops.len(), states_verified: verified, coverage, divergence: None });
    };
    let Some((index, _)) = first.op else {
        // nothing to minimise: the setup itself differs
        let divergence = Some(Minimised { first: first.clone(), ops: Vec::new(), divergence: first, tests: 0 });
        return Ok(Outcome { ops_run: 0, states_verified: verified, coverage, divergence });
    };
    let mut failed: Option<HarnessError> = None;
    let mut tests = 0;
    // states are compared after every op anyway; only a map-level
    // violation (found every N ops, so it may sit anywhere before) needs
    // the maps checked after every op of a candidate
    let every_min = if first.field == real::VERIFY_FIELD { 1 } else { 0 };
    let small = ddmin(&ops[..=index], 1500, |cand| {
        tests += 1;
        if failed.is_some() {
            return false;
        }
        match real::run(binary, model_cfg, cand, every_min) {
            Ok((d, _, _)) => d.is_some(),
            Err(e) => {
                failed = Some(e);
                false
            }
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    let (divergence, _, _) = real::run(binary, model_cfg, &small, every_min)?;
    let divergence = divergence.unwrap_or_else(|| first.clone());
    Ok(Outcome {
        ops_run: index + 1,
        states_verified: verified,
        coverage,
        divergence: Some(Minimised { first, ops: small, divergence, tests }),
    })
}

#[cfg(test)]
mod tests;
