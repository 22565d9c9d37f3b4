//! The first chunk's geometry: `struct pcpu_alloc_info` and
//! `pcpu_build_alloc_info()` / `pcpu_dump_alloc_info()` of mm/percpu.c.
//!
//! Modelled on Linux 5.4 (mm/percpu.c of v5.4.286) and checked against
//! 6.1's; the algorithm is unchanged from 2.6.3x to 6.x.  The one
//! version-dependent input, `PERCPU_DYNAMIC_EARLY_SIZE` (12 KiB in 6.1,
//! 20 KiB from 6.2), comes from a [`crate::profile::KernelProfile`] through
//! [`AllocInfoParams::dyn_early_size`]; it only matters when the caller
//! asks for less dynamic space than that (the page first chunk asks for 0).
//!
//! ```text
//!  alloc_size (a multiple of atom_size), upa units per allocation
//!  | u0 | u1 | u2 | u3 |   <- group 0: nr_units = roundup(cpus in group, upa)
//!  | u4 | u5 | -- | -- |   <- group 1 (unused units hold NR_CPUS, None here)
//! ```

use serde::Serialize;

use crate::consts::{LOCAL_DISTANCE, PCPU_MIN_UNIT_SIZE};
use crate::cpus::Topology;

/// `PCPU_MIN_UNIT_SIZE` is `PFN_ALIGN(32 << 10)` in include/linux/percpu.h:
/// 32 KiB on 4 KiB pages but 64 KiB on 64 KiB pages.
pub fn pcpu_min_unit_size(page_size: usize) -> usize {
    roundup(PCPU_MIN_UNIT_SIZE, page_size)
}

/// `roundup(x, y)` of the kernel: the next multiple of `y` (any `y > 0`).
fn roundup(x: usize, y: usize) -> usize {
    x.div_ceil(y) * y
}

fn checked_roundup(x: usize, y: usize) -> Option<usize> {
    x.div_ceil(y).checked_mul(y)
}

/// `struct pcpu_group_info`: the units of one NUMA group, laid out
/// back to back in one allocation per `upa` units.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupInfo {
    /// Number of units, a multiple of units-per-allocation.
    pub nr_units: usize,
    /// Byte offset of the group's first unit from the first chunk's base.
    pub base_offset: u64,
    /// Unit -> cpu; `None` is the kernel's `NR_CPUS` (unused unit).
    pub cpu_map: Vec<Option<u32>>,
}

/// `struct pcpu_alloc_info`.  `nr_groups` is `groups.len()`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AllocInfo {
    pub static_size: usize,
    pub reserved_size: usize,
    pub dyn_size: usize,
    pub unit_size: usize,
    pub atom_size: usize,
    pub alloc_size: usize,
    pub groups: Vec<GroupInfo>,
}

/// Inputs of `pcpu_build_alloc_info(reserved_size, dyn_size, atom_size,
/// cpu_distance_fn)` plus what the kernel reads from globals: the static
/// size (`__per_cpu_end - __per_cpu_start`), `PAGE_SIZE` and the possible
/// mask / NUMA distances.
#[derive(Clone, Copy, Debug)]
pub struct AllocInfoParams<'a> {
    pub static_size: usize,
    pub reserved_size: usize,
    pub dyn_size: usize,
    pub atom_size: usize,
    pub page_size: usize,
    pub topology: &'a Topology,
    /// `true`: the arch passes a `cpu_distance_fn` (here
    /// [`Topology::distance`]); `false`: NULL, every CPU in one group.
    pub use_distance: bool,
    /// `PERCPU_DYNAMIC_EARLY_SIZE` of the kernel modelled
    /// ([`crate::profile::KernelProfile::dynamic_early_size`]).
    pub dyn_early_size: usize,
}

/// Inputs `pcpu_build_alloc_info` cannot turn into a geometry.  The kernel
/// only fails with -ENOMEM; these are the cases where it would divide by
/// zero, loop forever or overflow instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocInfoError {
    #[error("no possible cpu (possible mask is empty, num_possible_cpus() = 0)")]
    NoPossibleCpus,
    #[error("page size {page_size:#x} is not a power of two")]
    PageSize { page_size: usize },
    #[error("atom size {atom_size:#x} gives alloc_size {alloc_size:#x}, which is not a multiple of the {page_size:#x} page: no units-per-allocation divides it into page-aligned units (atom_size 0 or not a multiple of the page size)")]
    AtomSize { atom_size: usize, alloc_size: usize, page_size: usize },
    #[error("static {static_size:#x} + reserved {reserved_size:#x} + dynamic {dyn_size:#x} rounded to atom {atom_size:#x} overflows usize")]
    Overflow { static_size: usize, reserved_size: usize, dyn_size: usize, atom_size: usize },
}

/// Model of `pcpu_build_alloc_info()`.
///
/// Grouping follows the kernel's order: for each possible CPU, the lowest
/// group none of whose earlier members is farther than `LOCAL_DISTANCE`
/// either way, else a new group.  The kernel compares against every earlier
/// member (quadratic); since [`Topology::distance`] depends only on the two
/// CPUs' nodes, comparing against one member per distinct node of the group
/// gives the same answer in O(cpus x groups).
pub fn build_alloc_info(p: &AllocInfoParams) -> Result<AllocInfo, AllocInfoError> {
    let possible = p.topology.possible();
    let nr_possible = possible.len();
    if nr_possible == 0 {
        return Err(AllocInfoError::NoPossibleCpus);
    }
    if !p.page_size.is_power_of_two() {
        return Err(AllocInfoError::PageSize { page_size: p.page_size });
    }
    let overflow = || AllocInfoError::Overflow {
        static_size: p.static_size,
        reserved_size: p.reserved_size,
        dyn_size: p.dyn_size,
        atom_size: p.atom_size,
    };

    // size_sum = PFN_ALIGN(static + reserved + max(dyn, EARLY)); the
    // dynamic size grows to absorb the page rounding.
    let size_sum = p
        .static_size
        .checked_add(p.reserved_size)
        .and_then(|s| s.checked_add(p.dyn_size.max(p.dyn_early_size)))
        .and_then(|s| checked_roundup(s, p.page_size))
        .ok_or_else(overflow)?;
    let dyn_size = size_sum - p.static_size - p.reserved_size;

    let min_unit_size = size_sum.max(pcpu_min_unit_size(p.page_size));
    if p.atom_size == 0 {
        return Err(AllocInfoError::AtomSize { atom_size: 0, alloc_size: 0, page_size: p.page_size });
    }
    let alloc_size = checked_roundup(min_unit_size, p.atom_size).ok_or_else(overflow)?;
    if alloc_size % p.page_size != 0 {
        // upa would run down to 0 (the kernel divides by zero).
        return Err(AllocInfoError::AtomSize { atom_size: p.atom_size, alloc_size, page_size: p.page_size });
    }
    let upa_fits = |upa: usize| alloc_size % upa == 0 && (alloc_size / upa) % p.page_size == 0;

    // The most units that fit one allocation.
    let mut max_upa = alloc_size / min_unit_size;
    while !upa_fits(max_upa) {
        max_upa -= 1;
    }

    // Group cpus by proximity: group_of[i] for the i-th possible cpu.
    let mut group_of: Vec<usize> = Vec::with_capacity(nr_possible);
    let mut group_cnt: Vec<usize> = Vec::new();
    // One (node, cpu) representative per distinct node present in a group.
    let mut reps: Vec<Vec<(Option<u32>, u32)>> = Vec::new();
    for cpu in possible.iter() {
        let group = if p.use_distance {
            let near =
                |t: u32| p.topology.distance(cpu, t) <= LOCAL_DISTANCE && p.topology.distance(t, cpu) <= LOCAL_DISTANCE;
            (0..reps.len()).find(|&g| reps[g].iter().all(|&(_, t)| near(t))).unwrap_or(reps.len())
        } else {
            0
        };
        if group == reps.len() {
            reps.push(Vec::new());
            group_cnt.push(0);
        }
        let node = p.topology.node_of(cpu);
        if !reps[group].iter().any(|&(n, _)| n == node) {
            reps[group].push((node, cpu));
        }
        group_of.push(group);
        group_cnt[group] += 1;
    }

    // Pick units-per-allocation: waste at most num_possible_cpus()/3 units,
    // and stop as soon as a smaller upa needs more allocations.
    let mut last_allocs = usize::MAX;
    let mut best_upa = 1;
    for upa in (1..=max_upa).rev() {
        if !upa_fits(upa) {
            continue;
        }
        let (mut allocs, mut wasted) = (0usize, 0usize);
        for &cnt in &group_cnt {
            let this_allocs = cnt.div_ceil(upa);
            allocs += this_allocs;
            wasted += this_allocs * upa - cnt;
        }
        // `>` lets upa == 1 (never wasteful) always pass.
        if wasted > nr_possible / 3 {
            continue;
        }
        if allocs > last_allocs {
            break;
        }
        last_allocs = allocs;
        best_upa = upa;
    }
    let upa = best_upa;
    let unit_size = alloc_size / upa;

    // Fill cpu_map per group in possible-cpu order; pad to a multiple of upa.
    let mut groups: Vec<GroupInfo> = group_cnt
        .iter()
        .map(|&cnt| GroupInfo { nr_units: 0, base_offset: 0, cpu_map: Vec::with_capacity(roundup(cnt, upa)) })
        .collect();
    for (cpu, &g) in possible.iter().zip(&group_of) {
        groups[g].cpu_map.push(Some(cpu));
    }
    let mut unit = 0usize;
    for gi in &mut groups {
        // The kernel initialises base_offset as if the groups sat back to
        // back; the first-chunk code replaces it with the real offsets.
        gi.base_offset = (unit as u64) * unit_size as u64;
        gi.nr_units = roundup(gi.cpu_map.len(), upa);
        gi.cpu_map.resize(gi.nr_units, None);
        unit += gi.nr_units;
    }

    Ok(AllocInfo {
        static_size: p.static_size,
        reserved_size: p.reserved_size,
        dyn_size,
        unit_size,
        atom_size: p.atom_size,
        alloc_size,
        groups,
    })
}

/// Decimal digits of `v` the way pcpu_dump_alloc_info counts them
/// (`while (v /= 10) width++` starting from 1).
fn dec_width(mut v: usize) -> usize {
    let mut w = 1;
    loop {
        v /= 10;
        if v == 0 {
            return w;
        }
        w += 1;
    }
}

fn rounddown_pow_of_two(v: usize) -> usize {
    debug_assert!(v > 0);
    1 << (usize::BITS - 1 - v.leading_zeros())
}

impl AllocInfo {
    /// `ai->nr_groups`.
    pub fn nr_groups(&self) -> usize {
        self.groups.len()
    }

    /// Units over all groups (`pcpu_nr_units` once set up).
    pub fn nr_units(&self) -> usize {
        self.groups.iter().map(|g| g.nr_units).sum()
    }

    /// Units per allocation, `alloc_size / unit_size`.
    pub fn upa(&self) -> usize {
        self.alloc_size.checked_div(self.unit_size).unwrap_or(1).max(1)
    }

    /// `static + reserved + dynamic`, the bytes a unit really uses.
    pub fn size_sum(&self) -> usize {
        self.static_size + self.reserved_size + self.dyn_size
    }

    /// What `pcpu_dump_alloc_info()` prints, one `pcpu-alloc: ` line per
    /// printk, each ending in `\n`.  Like the kernel, every `[group]` and
    /// cpu field is followed by a space, so unit lines end in a space.
    ///
    /// `nr_possible` is `num_possible_cpus()` (it sets the cpu field width,
    /// even when a sparse mask has wider cpu numbers).  Where the kernel
    /// would BUG (a group's `nr_units` not a multiple of upa) or divide by
    /// zero (unit_size or atom_size 0), this prints what it can instead.
    pub fn dump(&self, nr_possible: usize) -> String {
        use std::fmt::Write;

        let group_width = dec_width(self.groups.len());
        let cpu_width = dec_width(nr_possible);
        let empty = &"--------"[..cpu_width.min(8)];
        let upa = self.upa();
        let width = upa * (cpu_width + 1) + group_width + 3;
        let apl = rounddown_pow_of_two((60 / width).max(1));
        let atoms = self.alloc_size.checked_div(self.atom_size).unwrap_or(0);

        let mut out = String::new();
        let _ = write!(
            out,
            "pcpu-alloc: s{} r{} d{} u{} alloc={}*{}",
            self.static_size, self.reserved_size, self.dyn_size, self.unit_size, atoms, self.atom_size
        );
        let mut alloc = 0usize;
        let mut alloc_end = 0usize;
        for (group, gi) in self.groups.iter().enumerate() {
            let mut unit = 0usize;
            alloc_end += gi.nr_units.div_ceil(upa);
            while alloc < alloc_end {
                if alloc % apl == 0 {
                    out.push('\n');
                    out.push_str("pcpu-alloc: ");
                }
                let _ = write!(out, "[{group:0group_width$}] ");
                for u in unit..unit + upa {
                    match gi.cpu_map.get(u).copied().flatten() {
                        Some(cpu) if u < gi.nr_units => {
                            let _ = write!(out, "{cpu:0cpu_width$} ");
                        }
                        _ => {
                            out.push_str(empty);
                            out.push(' ');
                        }
                    }
                }
                unit += upa;
                alloc += 1;
            }
        }
        out.push('\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consts::{percpu_dynamic_reserve, PERCPU_MODULE_RESERVE};
    use crate::cpus::CpuSet;

    fn params(topology: &Topology, static_size: usize, atom: usize, page: usize, dist: bool) -> AllocInfoParams<'_> {
        AllocInfoParams {
            static_size,
            reserved_size: PERCPU_MODULE_RESERVE,
            dyn_size: percpu_dynamic_reserve(64),
            atom_size: atom,
            page_size: page,
            topology,
            use_distance: dist,
            dyn_early_size: 20 << 10,
        }
    }

    /// Worked by hand from pcpu_build_alloc_info (v5.4) and checked against
    /// a real x86_64 4-cpu QEMU boot log, which prints
    /// `percpu: Embedded 52 pages/cpu s173272 r8192 d31528 u524288`,
    /// `pcpu-alloc: s173272 r8192 d31528 u524288 alloc=1*2097152` and
    /// `pcpu-alloc: [0] 0 1 2 3`.
    /// size_sum = PFN_ALIGN(173272 + 8192 + 28672) = 212992 (52 pages), so
    /// d = 212992 - 173272 - 8192 = 31528; alloc_size = 2 MiB; max_upa =
    /// 2097152 / 212992 = 9 -> 8 (2 MiB % 9 != 0); upa 8 wastes 4 > 4/3
    /// units, 7..5 do not divide 2 MiB, upa 4 wastes 0 (1 alloc), upa 2 needs
    /// 2 allocs > 1: stop.  unit = 2 MiB / 4 = 524288.
    #[test]
    fn x86_64_four_cpus_matches_boot_log() {
        let t = Topology::uma(CpuSet::first_n(4));
        let ai = build_alloc_info(&params(&t, 173272, 2 << 20, 4096, true)).unwrap();
        assert_eq!(ai.dyn_size, 31528);
        assert_eq!(ai.unit_size, 524288);
        assert_eq!(ai.upa(), 4);
        assert_eq!(ai.dump(4), "pcpu-alloc: s173272 r8192 d31528 u524288 alloc=1*2097152\npcpu-alloc: [0] 0 1 2 3 \n");
    }

    #[test]
    fn upa_is_lowered_when_units_would_be_wasted() {
        // 5 cpus, 2 MiB atom, 208 KiB size_sum: max_upa 8.  upa 8 wastes
        // 3 > 5/3 = 1 unit: rejected; 7, 6, 5 do not divide 2 MiB; upa 4
        // wastes 3: rejected; 3 does not divide; upa 2 needs 3 allocs and
        // wastes 1: accepted; upa 1 needs 5 > 3 allocs: stop.  upa = 2.
        let t = Topology::uma(CpuSet::first_n(5));
        let ai = build_alloc_info(&params(&t, 173272, 2 << 20, 4096, false)).unwrap();
        assert_eq!(ai.upa(), 2);
        assert_eq!(ai.unit_size, 1 << 20);
        assert_eq!(ai.groups[0].nr_units, 6);
        assert_eq!(ai.groups[0].cpu_map[5], None);
    }

    #[test]
    fn numa_groups_follow_nodes_in_first_seen_order() {
        // Nodes interleaved: cpu i on node i % 2.
        let possible = CpuSet::first_n(6);
        let t = Topology::with_nodes(possible, vec![1, 0, 1, 0, 1, 0]).unwrap();
        let ai = build_alloc_info(&params(&t, 0x10000, 4096, 4096, true)).unwrap();
        assert_eq!(ai.nr_groups(), 2);
        assert_eq!(ai.groups[0].cpu_map, vec![Some(0), Some(2), Some(4)]);
        assert_eq!(ai.groups[1].cpu_map, vec![Some(1), Some(3), Some(5)]);
        assert_eq!(ai.groups[1].base_offset, 3 * ai.unit_size as u64);
        // Without a distance function everything is one group.
        let ai = build_alloc_info(&params(&t, 0x10000, 4096, 4096, false)).unwrap();
        assert_eq!(ai.nr_groups(), 1);
    }

    #[test]
    fn min_unit_size_is_page_aligned() {
        assert_eq!(pcpu_min_unit_size(4096), 32 << 10);
        assert_eq!(pcpu_min_unit_size(64 << 10), 64 << 10);
        let t = Topology::uma(CpuSet::first_n(2));
        let mut p = params(&t, 0x100, 64 << 10, 64 << 10, false);
        p.reserved_size = 0;
        p.dyn_size = 0;
        let ai = build_alloc_info(&p).unwrap();
        // size_sum = PFN_ALIGN(0x100 + 20K) = 64K; dyn absorbs the rounding.
        assert_eq!(ai.unit_size, 64 << 10);
        assert_eq!(ai.dyn_size, (64 << 10) - 0x100);
    }

    /// 6.1's `pcpu_page_first_chunk` asks `pcpu_build_alloc_info` for no
    /// dynamic space, so the first chunk gets PERCPU_DYNAMIC_EARLY_SIZE =
    /// 12 KiB plus the page rounding.  Real Debian 6.1 boots with
    /// `percpu_alloc=page` print `percpu: 58 4K pages/cpu s217088 r8192
    /// d12288` (x86_64) and `27 4K pages/cpu s87272 r8192 d15128` (arm64).
    #[test]
    fn page_first_chunk_6_1_matches_boot_logs() {
        let t = Topology::uma(CpuSet::first_n(2));
        let early = crate::profile::KernelProfile::parse("6.1").unwrap().dynamic_early_size;
        for (static_size, dyn_size, pages) in [(217088, 12288, 58), (87272, 15128, 27)] {
            let mut p = params(&t, static_size, 4096, 4096, false);
            p.dyn_size = 0;
            p.dyn_early_size = early;
            let ai = build_alloc_info(&p).unwrap();
            assert_eq!(ai.dyn_size, dyn_size);
            assert_eq!(ai.size_sum() / 4096, pages);
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let t = Topology::uma(CpuSet::first_n(2));
        assert!(matches!(build_alloc_info(&params(&t, 0x1000, 0, 4096, false)), Err(AllocInfoError::AtomSize { .. })));
        assert!(matches!(
            build_alloc_info(&params(&t, 0x1000, 1000, 4096, false)),
            Err(AllocInfoError::AtomSize { .. })
        ));
        assert!(matches!(
            build_alloc_info(&params(&t, 0x1000, 4096, 3000, false)),
            Err(AllocInfoError::PageSize { .. })
        ));
        assert!(matches!(
            build_alloc_info(&params(&t, usize::MAX - 10, 4096, 4096, false)),
            Err(AllocInfoError::Overflow { .. })
        ));
        let empty = Topology::uma(CpuSet::from_cpus([]));
        assert_eq!(build_alloc_info(&params(&empty, 0x1000, 4096, 4096, false)), Err(AllocInfoError::NoPossibleCpus));
        let e = build_alloc_info(&params(&t, 0x1000, 1000, 4096, false)).unwrap_err().to_string();
        assert!(e.contains("0x3e8"), "{e}");
    }

    #[test]
    fn large_and_sparse_masks_are_fast() {
        let start = std::time::Instant::now();
        // 4096 cpus on 64 nodes.
        let t = Topology::blocked(CpuSet::first_n(4096), 64);
        let ai = build_alloc_info(&params(&t, 173272, 2 << 20, 4096, true)).unwrap();
        assert_eq!(ai.nr_groups(), 64);
        assert_eq!(ai.nr_units(), 4096);
        let t4096 = start.elapsed();
        // All 8192 cpus (NR_CPUS max), and a sparse half of them.
        let t = Topology::blocked(CpuSet::first_n(8192), 16);
        let ai = build_alloc_info(&params(&t, 173272, 2 << 20, 4096, true)).unwrap();
        assert_eq!(ai.nr_units(), 8192);
        let t = Topology::blocked(CpuSet::from_cpus((0..8192).step_by(2)), 64);
        let ai = build_alloc_info(&params(&t, 173272, 2 << 20, 4096, true)).unwrap();
        assert_eq!(ai.groups[63].cpu_map.last(), Some(&Some(8190)));
        assert!(t4096.as_millis() < 100, "4096 cpus x 64 groups took {t4096:?}");
        assert!(start.elapsed().as_millis() < 300, "took {:?}", start.elapsed());
    }

    #[test]
    fn dump_widths_and_empty_units() {
        // 10 possible cpus -> cpu_width 2, "--" for empty units.
        let ai = AllocInfo {
            static_size: 1,
            reserved_size: 2,
            dyn_size: 3,
            unit_size: 4096,
            atom_size: 4096,
            alloc_size: 8192,
            groups: vec![GroupInfo { nr_units: 4, base_offset: 0, cpu_map: vec![Some(0), Some(9), Some(3), None] }],
        };
        // width = 2*3 + 1 + 3 = 10, apl = 6 -> 4.
        assert_eq!(ai.dump(10), "pcpu-alloc: s1 r2 d3 u4096 alloc=2*4096\npcpu-alloc: [0] 00 09 [0] 03 -- \n");
    }
}
