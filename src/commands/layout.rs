use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};
use percpu_arch::layout::LayoutRequest;
use percpu_bed::output::emit_human;
use percpu_bed::scenario::{self, arch_and_variant, possible_cpus};
use percpu_core::first_chunk::{FirstChunkKind, MemoryLayout};
use percpu_core::Topology;

/// Print the alloc info, first-chunk layout and __per_cpu_offset[] an arch
/// adapter builds, with the kernel's own boot lines (`setup_percpu:` on
/// x86_64, `percpu:`, `pcpu-alloc:`) as a boot log has them.
#[derive(clap::Args)]
pub struct Args {
    /// x86_64, arm64, sparc32, alpha, s390x or km; also ARCH/VARIANT
    /// (`arm64/el2`) or a fixture directory name (x86_64-rel, arm64-vhe,
    /// riscv64 = km).
    #[arg(long)]
    arch: String,
    /// Arch variant (x86_64: zero-based, relative; arm64: el1, el2; the
    /// others: default).  Default: the one the kernel version's code is
    /// built for.
    #[arg(long)]
    variant: Option<String>,
    /// Kernel version modelled, VERSION[+OPTION...] (6.1 to 6.15; options
    /// MEM_ALLOC_PROFILING, RANDOM_KMALLOC_CACHES).
    #[arg(long, default_value = percpu_core::profile::DEFAULT_KERNEL, value_parser = scenario::parse_kernel)]
    kernel: percpu_core::KernelProfile,
    /// Possible CPUs 0..N (default 4).
    #[arg(long)]
    cpus: Option<u32>,
    /// Possible CPUs as a cpulist, e.g. 0-3,8-11 (sparse masks allowed).
    #[arg(long)]
    possible: Option<String>,
    /// NUMA nodes the possible CPUs are spread over in blocks.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "cpu_nodes")]
    nodes: u32,
    /// The node of each possible CPU, in order (e.g. 0,0,1,1).
    #[arg(long, value_name = "LIST")]
    cpu_nodes: Option<String>,
    /// Node distance table, rows separated by `/` (e.g. 10,20/20,10).
    #[arg(long, value_name = "ROWS")]
    distance: Option<String>,
    /// Memory per node, laid out from physical address 0 in node order
    /// (e.g. 1G,1G; 0 for a memoryless node), or explicit physical ranges
    /// per node, `;`-separated (e.g. `0x40000000-0x7fffffff;0-0x3fffffff`).
    /// Groups are then allocated top-down in their node, as memblock does.
    #[arg(long, value_name = "SPEC")]
    node_mem: Option<String>,
    /// Physical ranges memblock had reserved before the first chunk was
    /// allocated (e.g. 0x7fe00000-0x7fffffff,0x1000000-0x2ffffff).
    #[arg(long, value_name = "RANGES", requires = "node_mem")]
    memblock_reserved: Option<String>,
    /// Size of the kernel's static percpu area (__per_cpu_end -
    /// __per_cpu_start), e.g. 217088 or 0x35000.
    #[arg(long, value_name = "BYTES", conflicts_with_all = ["system_map", "vmlinux"])]
    static_size: Option<String>,
    /// Read the static size from a System.map (__per_cpu_start/__per_cpu_end).
    #[arg(long, value_name = "FILE", conflicts_with = "vmlinux")]
    system_map: Option<PathBuf>,
    /// Read the static size from a vmlinux ELF: its __per_cpu_start and
    /// __per_cpu_end symbols, or without symbols its .data..percpu section.
    #[arg(long, value_name = "FILE")]
    vmlinux: Option<PathBuf>,
    /// First chunk allocator, as the `percpu_alloc=` boot option.
    #[arg(long, value_enum)]
    percpu_alloc: Option<PercpuAlloc>,
    /// CONFIG_NR_CPUS, for x86_64's setup_percpu line (Debian amd64: 8192).
    #[arg(long, default_value_t = 8192)]
    nr_cpus: u32,
    /// Without CONFIG_CPUMASK_OFFSTACK nr_cpumask_bits is NR_CPUS, not
    /// nr_cpu_ids (Debian amd64 has it, through MAXSMP).
    #[arg(long)]
    no_cpumask_offstack: bool,
}

#[derive(Copy, Clone, clap::ValueEnum)]
enum PercpuAlloc {
    Embed,
    Page,
}

pub fn run(args: Args) -> Result<u8> {
    let cpus = possible_cpus(args.cpus, args.possible.as_deref())?;
    let (arch, variant) = arch_and_variant(&args.arch, args.variant.as_deref())?;
    let isa = percpu_arch::isa::lookup(&arch).context("resolved arch")?;
    let mut req = LayoutRequest::new(&cpus, args.nodes);
    req.variant = variant;
    req.kernel = args.kernel.clone();
    if let Some(list) = &args.cpu_nodes {
        let nodes = list
            .split(',')
            .map(|n| n.trim().parse::<u32>().with_context(|| format!("--cpu-nodes {list}: `{n}` is not a node number")))
            .collect::<Result<Vec<_>>>()?;
        ensure!(
            nodes.len() == cpus.len(),
            "--cpu-nodes names {} node(s) but there are {} possible cpus",
            nodes.len(),
            cpus.len()
        );
        req.topology = Topology::with_nodes(cpus.clone(), nodes).expect("lengths checked");
    }
    if let Some(rows) = &args.distance {
        let table = rows
            .split(['/', ';'])
            .map(|r| {
                r.split(',')
                    .map(|v| {
                        v.trim().parse::<u32>().with_context(|| format!("--distance {rows}: `{v}` is not a number"))
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        req.topology = req.topology.with_distances(table)?;
    }
    if let Some(spec) = &args.node_mem {
        let mut mem = MemoryLayout { nodes: node_memory(spec)?, ..Default::default() };
        if let Some(r) = &args.memblock_reserved {
            mem.reserved = r.split(',').map(|r| parse_range(r.trim())).collect::<Result<_>>()?;
        }
        let nr = mem.nodes.iter().map(|(n, _)| n + 1).max().unwrap_or(1);
        req.topology = req.topology.with_min_nodes(nr);
        req.memory = Some(mem);
    }
    req.static_size = match (&args.static_size, &args.system_map, &args.vmlinux) {
        (Some(s), _, _) => Some(parse_size(s).with_context(|| format!("--static-size {s}"))? as usize),
        (_, Some(f), _) => Some(scenario::static_size_from_system_map(f)?),
        (_, _, Some(f)) => Some(scenario::static_size_from_vmlinux(f)?),
        _ => None,
    };
    req.first_chunk = args.percpu_alloc.map(|a| match a {
        PercpuAlloc::Embed => FirstChunkKind::Embed,
        PercpuAlloc::Page => FirstChunkKind::Page,
    });
    req.nr_cpus_config = args.nr_cpus;
    req.cpumask_offstack = !args.no_cpumask_offstack;
    emit_human(&percpu_arch::layout::render_request(isa, &req)?)?;
    Ok(0)
}

/// `1G`, `512M`, `64K`, `0x35000`, `217088`.
pub(crate) fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, shift) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let v = match num.strip_prefix("0x").or_else(|| num.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => num.parse::<u64>(),
    }
    .with_context(|| format!("`{s}` is not a size (e.g. 1G, 512M, 0x35000, 217088)"))?;
    v.checked_mul(1 << shift).with_context(|| format!("`{s}` overflows"))
}

/// `START-END` with END inclusive, as the kernel prints `[mem A-B]`.
fn parse_range(s: &str) -> Result<std::ops::Range<u64>> {
    let (a, b) = s.split_once('-').with_context(|| format!("`{s}` is not a range START-END (END inclusive)"))?;
    let (a, b) = (parse_size(a)?, parse_size(b)?);
    ensure!(a <= b, "range `{s}` runs backwards");
    Ok(a..b + 1)
}

/// `--node-mem`: sizes in node order from 0, or `;`-separated range lists.
fn node_memory(spec: &str) -> Result<Vec<(u32, std::ops::Range<u64>)>> {
    let mut out = Vec::new();
    if spec.contains('-') {
        for (node, part) in spec.split(';').enumerate() {
            for r in part.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                out.push((node as u32, parse_range(r)?));
            }
        }
    } else {
        let mut at = 0u64;
        for (node, size) in spec.split(',').enumerate() {
            let size = parse_size(size)?;
            if size > 0 {
                out.push((node as u32, at..at + size));
            }
            at += size;
        }
    }
    if out.is_empty() {
        bail!("--node-mem {spec}: no node has memory");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_ranges_and_node_memory() {
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("0x35000").unwrap(), 217088);
        assert!(parse_size("12Q").is_err());
        assert_eq!(parse_range("0x1000-0x1fff").unwrap(), 0x1000..0x2000);
        assert!(parse_range("5-4").is_err());
        assert_eq!(node_memory("1G,0,1G").unwrap(), vec![(0, 0..1 << 30), (2, 1 << 30..2 << 30)]);
        assert_eq!(
            node_memory("0x40000000-0x7fffffff;0-0x3fffffff").unwrap(),
            vec![(0, 0x4000_0000..0x8000_0000), (1, 0..0x4000_0000)]
        );
        assert!(node_memory("0,0").is_err());
    }
}
