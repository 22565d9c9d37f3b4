//! Possible-CPU sets and NUMA topology.
//!
//! The allocator only ever sees *possible* CPUs: a unit exists for each of
//! them, and `nr_cpu_ids` (one past the highest possible CPU) sizes the
//! cpu-indexed arrays such as `__per_cpu_offset[]`.  Masks may be sparse.

use std::fmt;

use crate::consts::{LOCAL_DISTANCE, REMOTE_DISTANCE};

/// A set of CPU numbers, kept sorted.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CpuSet {
    cpus: Vec<u32>,
}

/// A CPU list that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpuListError {
    #[error("cpu list `{list}`: `{part}` is not a cpu number or range (expected e.g. 0-3,8,10-11)")]
    Syntax { list: String, part: String },
    #[error("cpu list `{list}`: range `{part}` runs backwards")]
    Backwards { list: String, part: String },
    #[error("cpu list `{list}` names no cpu")]
    Empty { list: String },
    #[error("cpu list `{list}`: cpu {cpu} is beyond the limit of {limit} cpus")]
    TooLarge { list: String, cpu: u64, limit: u32 },
}

/// Upper bound on CPU numbers we accept (the kernel's largest NR_CPUS).
pub const MAX_CPUS: u32 = 8192;

impl CpuSet {
    /// CPUs `0..n`.
    pub fn first_n(n: u32) -> Self {
        CpuSet { cpus: (0..n).collect() }
    }

    /// Build from any iterator of CPU numbers (duplicates are folded).
    pub fn from_cpus(cpus: impl IntoIterator<Item = u32>) -> Self {
        let mut cpus: Vec<u32> = cpus.into_iter().collect();
        cpus.sort_unstable();
        cpus.dedup();
        CpuSet { cpus }
    }

    /// Parse the kernel's cpulist format: `0-3,8,10-11`.
    pub fn parse_list(list: &str) -> Result<Self, CpuListError> {
        let mut cpus = Vec::new();
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let num = |s: &str| -> Result<u64, CpuListError> {
                s.trim()
                    .parse::<u64>()
                    .map_err(|_| CpuListError::Syntax { list: list.to_string(), part: part.to_string() })
            };
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => {
                    let v = num(part)?;
                    (v, v)
                }
            };
            if hi < lo {
                return Err(CpuListError::Backwards { list: list.to_string(), part: part.to_string() });
            }
            if hi >= MAX_CPUS as u64 {
                return Err(CpuListError::TooLarge { list: list.to_string(), cpu: hi, limit: MAX_CPUS });
            }
            cpus.extend(lo as u32..=hi as u32);
        }
        if cpus.is_empty() {
            return Err(CpuListError::Empty { list: list.to_string() });
        }
        Ok(Self::from_cpus(cpus))
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = u32> + ExactSizeIterator + '_ {
        self.cpus.iter().copied()
    }
    pub fn len(&self) -> usize {
        self.cpus.len()
    }
    pub fn is_empty(&self) -> bool {
        self.cpus.is_empty()
    }
    pub fn contains(&self, cpu: u32) -> bool {
        self.cpus.binary_search(&cpu).is_ok()
    }
    /// One past the highest CPU: the kernel's `nr_cpu_ids`.
    pub fn nr_cpu_ids(&self) -> u32 {
        self.cpus.last().map_or(0, |&c| c + 1)
    }
    pub fn first(&self) -> Option<u32> {
        self.cpus.first().copied()
    }
}

impl fmt::Display for CpuSet {
    /// The kernel's cpulist format (`%*pbl`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut i = 0;
        let mut first = true;
        while i < self.cpus.len() {
            let start = self.cpus[i];
            let mut end = start;
            while i + 1 < self.cpus.len() && self.cpus[i + 1] == end + 1 {
                i += 1;
                end += 1;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
            i += 1;
        }
        Ok(())
    }
}

impl fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CpuSet({self})")
    }
}

/// Possible CPUs and the NUMA node of each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    possible: CpuSet,
    /// Node of each possible CPU, indexed by position in `possible`.
    node_of: Vec<u32>,
    nr_nodes: u32,
    /// `node_distance(a, b)` (the firmware's SLIT); `None`: LOCAL_DISTANCE
    /// within a node, REMOTE_DISTANCE across.
    distances: Option<Vec<Vec<u32>>>,
}

/// A NUMA distance table that does not fit the topology.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    #[error("distance table row {row} has {len} entries, expected {nodes} (one per node)")]
    Ragged { row: usize, len: usize, nodes: usize },
    #[error("distance table covers {table} node(s) but cpus sit on node {node}")]
    TooSmall { table: usize, node: u32 },
    #[error("distance table: node {node}'s distance to itself is {value}, not LOCAL_DISTANCE ({})", LOCAL_DISTANCE)]
    NotLocal { node: usize, value: u32 },
}

impl Topology {
    /// All possible CPUs on one node.
    pub fn uma(possible: CpuSet) -> Self {
        let node_of = vec![0; possible.len()];
        Topology { possible, node_of, nr_nodes: 1, distances: None }
    }

    /// Spread possible CPUs over `nr_nodes` nodes in contiguous blocks, the
    /// way firmware usually numbers sockets (cpus 0-3 node 0, 4-7 node 1...).
    pub fn blocked(possible: CpuSet, nr_nodes: u32) -> Self {
        let nr_nodes = nr_nodes.max(1);
        let n = possible.len().max(1);
        let per = n.div_ceil(nr_nodes as usize);
        let node_of = (0..possible.len()).map(|i| (i / per) as u32).collect();
        Topology { possible, node_of, nr_nodes, distances: None }
    }

    /// Explicit node per possible CPU (in the order of `possible`).
    pub fn with_nodes(possible: CpuSet, node_of: Vec<u32>) -> Option<Self> {
        if node_of.len() != possible.len() {
            return None;
        }
        let nr_nodes = node_of.iter().copied().max().map_or(1, |m| m + 1);
        Some(Topology { possible, node_of, nr_nodes, distances: None })
    }

    /// Use the node distance table `table[from][to]` (square, one row per
    /// node, LOCAL_DISTANCE on the diagonal); it may name nodes no cpu
    /// sits on (memory-only nodes), which then count in [`Self::nr_nodes`].
    pub fn with_distances(mut self, table: Vec<Vec<u32>>) -> Result<Self, TopologyError> {
        let n = table.len();
        for (row, r) in table.iter().enumerate() {
            if r.len() != n {
                return Err(TopologyError::Ragged { row, len: r.len(), nodes: n });
            }
            if r[row] != LOCAL_DISTANCE {
                return Err(TopologyError::NotLocal { node: row, value: r[row] });
            }
        }
        if let Some(&node) = self.node_of.iter().find(|&&nd| nd as usize >= n) {
            return Err(TopologyError::TooSmall { table: n, node });
        }
        self.nr_nodes = self.nr_nodes.max(n as u32);
        self.distances = Some(table);
        Ok(self)
    }

    /// At least `n` nodes (`nr_node_ids`), e.g. nodes with memory but no cpu.
    pub fn with_min_nodes(mut self, n: u32) -> Self {
        self.nr_nodes = self.nr_nodes.max(n);
        self
    }

    /// `node_distance(a, b)`.
    pub fn node_distance(&self, a: u32, b: u32) -> u32 {
        match &self.distances {
            Some(t) => t.get(a as usize).and_then(|r| r.get(b as usize)).copied().unwrap_or(REMOTE_DISTANCE),
            None if a == b => LOCAL_DISTANCE,
            None => REMOTE_DISTANCE,
        }
    }

    pub fn possible(&self) -> &CpuSet {
        &self.possible
    }
    pub fn nr_nodes(&self) -> u32 {
        self.nr_nodes
    }
    /// Node of a possible CPU; `None` for an impossible one.
    pub fn node_of(&self, cpu: u32) -> Option<u32> {
        self.possible.cpus.binary_search(&cpu).ok().map(|i| self.node_of[i])
    }
    /// The `cpu_distance_fn` the kernel's arch code passes in.
    pub fn distance(&self, from: u32, to: u32) -> u32 {
        match (self.node_of(from), self.node_of(to)) {
            (Some(a), Some(b)) => self.node_distance(a, b),
            _ => REMOTE_DISTANCE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpulist_round_trips() {
        let s = CpuSet::parse_list("0-3,8,10-11").unwrap();
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(s.to_string(), "0-3,8,10-11");
        assert_eq!(s.nr_cpu_ids(), 12);
    }

    #[test]
    fn cpulist_errors_are_specific() {
        assert!(matches!(CpuSet::parse_list("3-1"), Err(CpuListError::Backwards { .. })));
        assert!(matches!(CpuSet::parse_list("x"), Err(CpuListError::Syntax { .. })));
        assert!(matches!(CpuSet::parse_list(""), Err(CpuListError::Empty { .. })));
        assert!(matches!(CpuSet::parse_list("0-9000"), Err(CpuListError::TooLarge { .. })));
    }

    #[test]
    fn blocked_topology_groups_neighbours() {
        let t = Topology::blocked(CpuSet::first_n(8), 4);
        assert_eq!(t.node_of(0), Some(0));
        assert_eq!(t.node_of(1), Some(0));
        assert_eq!(t.node_of(7), Some(3));
        assert_eq!(t.distance(0, 1), LOCAL_DISTANCE);
        assert_eq!(t.distance(0, 2), REMOTE_DISTANCE);
    }

    #[test]
    fn distance_tables() {
        let t = Topology::with_nodes(CpuSet::first_n(4), vec![0, 0, 1, 1]).unwrap();
        // nodes 0 and 1 at LOCAL_DISTANCE from each other: one group
        let t2 = t.clone().with_distances(vec![vec![10, 10, 30], vec![10, 10, 30], vec![30, 30, 10]]).unwrap();
        assert_eq!(t2.distance(0, 3), LOCAL_DISTANCE);
        assert_eq!(t2.nr_nodes(), 3);
        let t3 = t.clone().with_distances(vec![vec![10, 21], vec![21, 10]]).unwrap();
        assert_eq!(t3.distance(1, 2), 21);
        assert!(matches!(t.clone().with_distances(vec![vec![10]]), Err(TopologyError::TooSmall { .. })));
        assert!(matches!(t.clone().with_distances(vec![vec![10, 20], vec![20]]), Err(TopologyError::Ragged { .. })));
        assert!(matches!(t.with_distances(vec![vec![10, 20], vec![20, 11]]), Err(TopologyError::NotLocal { .. })));
    }
}
