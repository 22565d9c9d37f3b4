//! percpu_stats (mm/percpu-stats.c): global counters, per-chunk figures and
//! the debugfs layout they are printed in.

use std::fmt::Write as _;

use serde::Serialize;

use super::Percpu;
use crate::consts::PCPU_MIN_ALLOC_SIZE;

/// `struct percpu_stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GlobalStats {
    pub nr_alloc: u64,
    pub nr_dealloc: u64,
    pub nr_cur_alloc: u64,
    pub nr_max_alloc: u64,
    pub nr_chunks: u64,
    pub nr_max_chunks: u64,
    pub min_alloc_size: u64,
    pub max_alloc_size: u64,
}

impl GlobalStats {
    /// `pcpu_stats_save_ai` starts min_alloc_size at the unit size.
    pub(super) fn new(unit_size: usize) -> Self {
        GlobalStats { min_alloc_size: unit_size as u64, ..Default::default() }
    }
    pub(super) fn area_allocated(&mut self, size: usize) {
        self.nr_alloc += 1;
        self.nr_cur_alloc += 1;
        self.nr_max_alloc = self.nr_max_alloc.max(self.nr_cur_alloc);
        self.min_alloc_size = self.min_alloc_size.min(size as u64);
        self.max_alloc_size = self.max_alloc_size.max(size as u64);
    }
    pub(super) fn area_freed(&mut self) {
        self.nr_dealloc += 1;
        self.nr_cur_alloc -= 1;
    }
    pub(super) fn chunk_created(&mut self) {
        self.nr_chunks += 1;
        self.nr_max_chunks = self.nr_max_chunks.max(self.nr_chunks);
    }
    pub(super) fn chunk_destroyed(&mut self) {
        self.nr_chunks -= 1;
    }
}

/// `chunk_map_stats` figures for one chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChunkStats {
    pub chunk: usize,
    /// Header the kernel prints: "Chunk: <- First Chunk", "Chunk (sidelined):", ...
    pub label: String,
    pub nr_alloc: u64,
    pub max_alloc_size: u64,
    pub empty_pop_pages: u64,
    pub first_bit: u64,
    pub free_bytes: u64,
    pub contig_bytes: u64,
    pub sum_frag: u64,
    pub max_frag: u64,
    pub cur_min_alloc: u64,
    pub cur_med_alloc: u64,
    pub cur_max_alloc: u64,
}

/// A snapshot of everything `/sys/kernel/debug/percpu_stats` shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub unit_size: u64,
    pub static_size: u64,
    pub reserved_size: u64,
    pub dyn_size: u64,
    pub atom_size: u64,
    pub alloc_size: u64,
    pub global: GlobalStats,
    pub empty_pop_pages: u64,
    pub chunks: Vec<ChunkStats>,
}

impl Percpu {
    /// Gather the stats in the order the kernel prints them: reserved chunk
    /// first, then every slot list from slot 0 upward.
    pub fn stats(&self) -> Stats {
        let ai = &self.first.ai;
        let mut chunks = Vec::new();
        if let Some(r) = self.reserved_chunk {
            chunks.push(self.chunk_stats(r, "Chunk: <- Reserved Chunk"));
        }
        for slot in 0..self.slots.nr_slots() {
            for id in self.slots.iter(slot) {
                let label = if id == self.first_chunk {
                    "Chunk: <- First Chunk"
                } else if slot == self.to_depopulate_slot {
                    "Chunk (to_depopulate)"
                } else if slot == self.sidelined_slot {
                    "Chunk (sidelined):"
                } else {
                    "Chunk:"
                };
                chunks.push(self.chunk_stats(id, label));
            }
        }
        Stats {
            unit_size: ai.unit_size as u64,
            static_size: ai.static_size as u64,
            reserved_size: ai.reserved_size as u64,
            dyn_size: ai.dyn_size as u64,
            atom_size: ai.atom_size as u64,
            alloc_size: ai.alloc_size as u64,
            global: self.stats.clone(),
            empty_pop_pages: self.nr_empty_pop_pages as u64,
            chunks,
        }
    }

    /// `chunk_map_stats`: fragments are counted from the chunk's start
    /// offset to its last allocation, with the kernel's exact bounds.
    fn chunk_stats(&self, id: usize, label: &str) -> ChunkStats {
        let c = self.chunk(id);
        let m = &c.map;
        let start_bit = m.start_offset() / PCPU_MIN_ALLOC_SIZE;
        // find_last_bit over [0, map_bits - end_bits - 1), then the
        // kernel's "found it?" test on the returned index.
        let search_end = (m.region_bits() - m.end_offset() / PCPU_MIN_ALLOC_SIZE).saturating_sub(1);
        let is_set = |bit: usize| m.allocation_containing(bit).is_some();
        let mut last_set = search_end;
        for (r, allocated) in m.areas() {
            if allocated && r.start < search_end {
                last_set = r.end.min(search_end) - 1;
            }
        }
        let last_alloc = if last_set < m.region_bits() && is_set(last_set) { last_set + 1 } else { 0 };

        let mut sizes: Vec<i64> = Vec::new();
        for (r, allocated) in m.areas() {
            let (s, e) = (r.start.max(start_bit), r.end.min(last_alloc));
            if s >= e {
                continue;
            }
            let bytes = ((e - s) * PCPU_MIN_ALLOC_SIZE) as i64;
            sizes.push(if allocated { bytes } else { -bytes });
        }
        sizes.sort_unstable();
        let (mut sum_frag, mut max_frag) = (0u64, 0u64);
        let mut i = 0;
        while i < sizes.len() && sizes[i] < 0 {
            sum_frag += (-sizes[i]) as u64;
            max_frag = max_frag.max((-sizes[i]) as u64);
            i += 1;
        }
        let (mut min, mut med, mut max) = (0, 0, 0);
        if !sizes.is_empty() && i < sizes.len() {
            min = sizes[i] as u64;
            med = sizes[(i + sizes.len() - 1) / 2] as u64;
            max = sizes[sizes.len() - 1] as u64;
        }
        ChunkStats {
            chunk: id,
            label: label.to_string(),
            nr_alloc: c.nr_alloc as u64,
            max_alloc_size: c.max_alloc_size as u64,
            empty_pop_pages: m.nr_empty_pop_pages() as u64,
            first_bit: m.chunk_hints().first_free as u64,
            free_bytes: m.free_bytes() as u64,
            contig_bytes: m.contig_hint_bytes() as u64,
            sum_frag,
            max_frag,
            cur_min_alloc: min,
            cur_med_alloc: med,
            cur_max_alloc: max,
        }
    }
}

impl Stats {
    /// The debugfs layout: `"  %-20s: %12lld"` lines under the kernel's
    /// section headers.
    pub fn dump(&self) -> String {
        let mut s = String::new();
        let line = |s: &mut String, k: &str, v: u64| {
            let _ = writeln!(s, "  {k:<20}: {v:>12}");
        };
        s.push_str("Percpu Memory Statistics\nAllocation Info:\n----------------------------------------\n");
        line(&mut s, "unit_size", self.unit_size);
        line(&mut s, "static_size", self.static_size);
        line(&mut s, "reserved_size", self.reserved_size);
        line(&mut s, "dyn_size", self.dyn_size);
        line(&mut s, "atom_size", self.atom_size);
        line(&mut s, "alloc_size", self.alloc_size);
        s.push('\n');
        s.push_str("Global Stats:\n----------------------------------------\n");
        let g = &self.global;
        line(&mut s, "nr_alloc", g.nr_alloc);
        line(&mut s, "nr_dealloc", g.nr_dealloc);
        line(&mut s, "nr_cur_alloc", g.nr_cur_alloc);
        line(&mut s, "nr_max_alloc", g.nr_max_alloc);
        line(&mut s, "nr_chunks", g.nr_chunks);
        line(&mut s, "nr_max_chunks", g.nr_max_chunks);
        line(&mut s, "min_alloc_size", g.min_alloc_size);
        line(&mut s, "max_alloc_size", g.max_alloc_size);
        line(&mut s, "empty_pop_pages", self.empty_pop_pages);
        s.push('\n');
        s.push_str("Per Chunk Stats:\n----------------------------------------\n");
        for c in &self.chunks {
            s.push_str(&c.label);
            s.push('\n');
            line(&mut s, "nr_alloc", c.nr_alloc);
            line(&mut s, "max_alloc_size", c.max_alloc_size);
            line(&mut s, "empty_pop_pages", c.empty_pop_pages);
            line(&mut s, "first_bit", c.first_bit);
            line(&mut s, "free_bytes", c.free_bytes);
            line(&mut s, "contig_bytes", c.contig_bytes);
            line(&mut s, "sum_frag", c.sum_frag);
            line(&mut s, "max_frag", c.max_frag);
            line(&mut s, "cur_min_alloc", c.cur_min_alloc);
            line(&mut s, "cur_med_alloc", c.cur_med_alloc);
            line(&mut s, "cur_max_alloc", c.cur_max_alloc);
            s.push('\n');
        }
        s
    }
}
