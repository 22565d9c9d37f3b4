//! The real side: the compiled whole-allocator driver (`c/alloc_driver.c`),
//! its replies parsed, run in lockstep with the model.

use std::path::Path;

use percpu_core::bitmap::{ChunkMap, KernelChunkState};

use super::model::{Model, ModelConfig};
use super::{check_invariants, ChunkObs, Coverage, Divergence, Op, OpResult, State};
use crate::harness::diff::md_hints;
use crate::harness::{Driver, HarnessError};

const PAGE_SIZE: usize = 4096;

/// The field a map-level `verify()` failure is reported under.
pub const VERIFY_FIELD: &str = "verify() on the real chunk";

/// Parse an `a`/`f`/`b` reply to `op`.
pub fn parse_result(op: &Op, line: &str) -> Option<OpResult> {
    let w: Vec<&str> = line.split_whitespace().collect();
    match (op, w.as_slice()) {
        (Op::Alloc { .. }, ["a", "-1", "-1"]) => Some(OpResult::Alloc(None)),
        (Op::Alloc { .. }, ["a", c, off]) => Some(OpResult::Alloc(Some((c.parse().ok()?, off.parse().ok()?)))),
        (Op::Free { .. }, ["f", "ok"]) => Some(OpResult::Free(true)),
        (Op::Free { .. }, ["f", "skip"]) => Some(OpResult::Free(false)),
        (Op::Balance, ["b", "ok"]) => Some(OpResult::Balance),
        _ => None,
    }
}

/// Parse an `s` line (format in `c/alloc_driver.c`).
pub fn parse_state(line: &str) -> Option<State> {
    let mut w = line.split_whitespace();
    if w.next()? != "s" {
        return None;
    }
    let num = |w: &mut std::str::SplitWhitespace| -> Option<i64> { w.next()?.parse().ok() };
    let mut s = State {
        nr_empty_pop_pages: num(&mut w)?,
        nr_populated: num(&mut w)?,
        balance_scheduled: num(&mut w)? != 0,
        nr_slots: usize::try_from(num(&mut w)?).ok()?,
        nr_chunks: usize::try_from(num(&mut w)?).ok()?,
        ..State::default()
    };
    let rest: Vec<&str> = w.collect();
    let mut i = 0;
    while i < rest.len() {
        match rest[i] {
            "L" => {
                let slot = rest.get(i + 1)?.parse().ok()?;
                let mut list = Vec::new();
                i += 2;
                while i < rest.len() && rest[i] != "L" && rest[i] != "C" {
                    list.push(rest[i].parse().ok()?);
                    i += 1;
                }
                s.slots.push((slot, list));
            }
            "C" => {
                let v: Vec<i64> = rest.get(i + 1..i + 14)?.iter().map(|t| t.parse().ok()).collect::<Option<_>>()?;
                let mut md = [0; 8];
                md.copy_from_slice(&v[2..10]);
                s.chunks.push(ChunkObs {
                    ord: usize::try_from(v[0]).ok()?,
                    free_bytes: v[1],
                    md,
                    nr_populated: v[10],
                    nr_empty_pop_pages: v[11],
                    isolated: v[12] != 0,
                });
                i += 14;
            }
            _ => return None,
        }
    }
    Some(s)
}

/// Parse a `v` line into the model's import format.
pub fn parse_chunk(line: &str) -> Option<KernelChunkState> {
    let mut parts = line.strip_prefix("v ")?.split('|');
    let head: Vec<i64> = parts.next()?.split_whitespace().map(|t| t.parse().ok()).collect::<Option<_>>()?;
    let words = |p: Option<&str>| -> Option<Vec<u64>> {
        p?.split_whitespace().map(|t| u64::from_str_radix(t, 16).ok()).collect()
    };
    let (alloc_map, bound_map, populated) = (words(parts.next())?, words(parts.next())?, words(parts.next())?);
    let nr_pages = usize::try_from(*head.first()?).ok()?;
    if head.len() != 6 + 8 * (1 + nr_pages) {
        return None;
    }
    Some(KernelChunkState {
        page_size: PAGE_SIZE,
        nr_pages,
        alloc_map,
        bound_map,
        populated,
        chunk_md: md_hints(&head[6..14]),
        md_blocks: (0..nr_pages).map(|b| md_hints(&head[14 + 8 * b..22 + 8 * b])).collect(),
        free_bytes: head[3] as usize,
        nr_populated: head[4] as usize,
        nr_empty_pop_pages: head[5] as usize,
        start_offset: head[1] as usize,
        end_offset: head[2] as usize,
    })
}

fn divergence(
    index: usize,
    op: Op,
    field: impl Into<String>,
    real: impl Into<String>,
    model: impl Into<String>,
) -> Divergence {
    Divergence { op: Some((index, op)), field: field.into(), real: real.into(), model: model.into() }
}

/// `verify()` on every live chunk of the real side.
fn verify_chunks(d: &mut Driver, state: &State) -> Result<Option<String>, HarnessError> {
    for c in &state.chunks {
        d.send(&format!("v {}", c.ord))?;
    }
    d.flush()?;
    let mut bad = None;
    for c in &state.chunks {
        let line = d.recv()?;
        let st = parse_chunk(&line).ok_or_else(|| d.protocol(format!("bad chunk state line `{line}`")))?;
        let err = match ChunkMap::from_kernel_state(&st) {
            Ok(m) => m.verify().err().map(|e| e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let (None, Some(e)) = (&bad, err) {
            bad = Some(format!("chunk {}: {e}", c.ord));
        }
    }
    d.expect_end()?;
    Ok(bad)
}

/// The first divergence or violation, how many real states were
/// map-verified, and what the run exercised.
pub type RunResult = (Option<Divergence>, usize, Coverage);

/// Run `ops` on a fresh driver and a fresh model in lockstep.
pub fn run(binary: &Path, cfg: &ModelConfig, ops: &[Op], every: usize) -> Result<RunResult, HarnessError> {
    let mut model = Model::new(cfg).map_err(|e| HarnessError::Model(e.to_string()))?;
    let setup = model.setup(cfg).map_err(HarnessError::Model)?;
    let reserved = model.reserved_ord();
    let mut d = Driver::start_captured(binary)?;
    let ok = d.request(&setup.request())?;
    if ok != "ok" {
        return Err(d.protocol(format!("setup replied `{ok}`")));
    }
    // pcpu_verify_alloc_info's message against the model backend's
    let logged = d.request("w")?;
    let real_waste: Vec<&str> = logged
        .strip_prefix('w')
        .unwrap_or("")
        .split(" / ")
        .map(str::trim)
        .filter(|m| m.starts_with("wasting"))
        .collect();
    let model_waste = model.p.backend_warnings();
    if real_waste != model_waste {
        let field = "backend setup warnings".to_string();
        let d = Divergence { op: None, field, real: format!("{real_waste:?}"), model: format!("{model_waste:?}") };
        return Ok((Some(d), 0, Coverage::default()));
    }
    let mut verified = 0;
    let mut done = 0;
    let mut cov = Coverage { setup_warnings: model_waste, ..Coverage::default() };
    let first_dynamic = 1 + reserved.is_some() as usize;
    let mut before = model.state();
    // the driver can be asked for maps between batches: with --every N
    // below the batch size, batches shrink to N
    let batch_len = if every > 0 { every.min(256) } else { 256 };
    for batch in ops.chunks(batch_len) {
        for op in batch {
            d.send(&op.request())?;
            d.send("s")?;
        }
        d.flush()?;
        let mut replies = Vec::with_capacity(batch.len());
        for op in batch {
            let line = d.recv()?;
            let result = parse_result(op, &line)
                .ok_or_else(|| d.protocol(format!("bad reply `{line}` to `{}`", op.request())))?;
            let line = d.recv()?;
            let state = parse_state(&line).ok_or_else(|| d.protocol(format!("bad state line `{line}`")))?;
            replies.push((result, state));
        }
        d.expect_end()?;
        let mut last_state = None;
        for (k, (op, (result, state))) in batch.iter().zip(replies).enumerate() {
            let index = done + k;
            let want = model.apply(op);
            if result != want {
                return Ok((
                    Some(divergence(index, *op, "result", result.to_string(), want.to_string())),
                    verified,
                    cov,
                ));
            }
            let mstate = model.state();
            if let Some((field, r, m)) = state.first_difference(&mstate) {
                return Ok((Some(divergence(index, *op, field, r, m)), verified, cov));
            }
            cov.count(op, &result, &before, &mstate, first_dynamic);
            before = mstate;
            if let Err(e) = check_invariants(&state, &setup, reserved) {
                return Ok((Some(divergence(index, *op, "invariant on the real state", e, "(holds)")), verified, cov));
            }
            last_state = Some(state);
        }
        let after = done + batch.len();
        let due = every > 0 && (after / every != done / every || after == ops.len());
        if let (true, Some(state)) = (due, last_state) {
            if let Some(e) = verify_chunks(&mut d, &state)? {
                let (index, op) = (after - 1, batch[batch.len() - 1]);
                return Ok((Some(divergence(index, op, VERIFY_FIELD, e, "(holds)")), verified, cov));
            }
            verified += 1;
        }
        done = after;
    }
    Ok((None, verified, cov))
}
