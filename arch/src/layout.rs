//! `percpu-bed layout`: what an arch variant's `setup_per_cpu_areas` makes
//! of a possible mask: the `pcpu-alloc:` dump, the first chunk's layout,
//! `__per_cpu_offset[]`, and the adapter's address space and reach rules.
//!
//! The kernel's own boot lines (`setup_percpu:` on x86_64, `percpu:`,
//! `pcpu-alloc:`) are printed exactly as a boot log has them, so that a
//! boot check can compare them line for line; everything else is the
//! model's explanation around them.

use std::fmt::Write;

use percpu_core::first_chunk::{FirstChunkKind, MemoryLayout};
use percpu_core::{CpuSet, KernelProfile, Topology};

use crate::check::CheckError;
use crate::isa::{Isa, ModulePlacement};

/// Static size assumed for the layout when none is given (a kernel
/// image's `.data..percpu` is tens of KiB; the fixtures' kernel.o has a
/// few KiB).
pub const LAYOUT_STATIC_SIZE: usize = 16 << 10;

/// Everything a layout is computed from besides the arch.
#[derive(Clone, Debug)]
pub struct LayoutRequest {
    /// Arch variant by name; `None`: the one the kernel's code is built for.
    pub variant: Option<String>,
    pub kernel: KernelProfile,
    /// Possible CPUs and their nodes (and the node distance table).
    pub topology: Topology,
    /// `__per_cpu_end - __per_cpu_start`; `None`: [`LAYOUT_STATIC_SIZE`].
    pub static_size: Option<usize>,
    /// `percpu_alloc=`: `None` is the arch's default (embed).
    pub first_chunk: Option<FirstChunkKind>,
    /// Node memory and early reservations in *physical* addresses (offsets
    /// from the RAM the linear map starts at); `None`: the model's equal
    /// node spans.
    pub memory: Option<MemoryLayout>,
    /// `CONFIG_NR_CPUS` and `CONFIG_CPUMASK_OFFSTACK` for x86_64's
    /// `setup_percpu:` line (Debian's amd64 kernel: 8192, offstack).
    pub nr_cpus_config: u32,
    pub cpumask_offstack: bool,
}

impl LayoutRequest {
    /// `cpus` spread over `nodes` nodes in blocks, the default kernel,
    /// the assumed static size.
    pub fn new(cpus: &CpuSet, nodes: u32) -> Self {
        let topology = if nodes > 1 { Topology::blocked(cpus.clone(), nodes) } else { Topology::uma(cpus.clone()) };
        LayoutRequest {
            variant: None,
            kernel: KernelProfile::default(),
            topology,
            static_size: None,
            first_chunk: None,
            memory: None,
            nr_cpus_config: 8192,
            cpumask_offstack: true,
        }
    }
}

/// `pcpu_fc_alloc`'s goal, `__pa(MAX_DMA_ADDRESS)`: 16 MiB on x86_64;
/// arm64's MAX_DMA_ADDRESS is `~0UL` (memblock then retries from 0).
fn memblock_goal(isa: &dyn Isa) -> u64 {
    match isa.name() {
        "x86_64" => 16 << 20,
        _ => 0,
    }
}

/// Render the layout of `isa`/`variant` (`None`: the default variant) for
/// the possible CPUs `cpus` spread over `nodes` NUMA nodes.
pub fn render(isa: &dyn Isa, variant: Option<&str>, cpus: &CpuSet, nodes: u32) -> Result<String, CheckError> {
    let mut req = LayoutRequest::new(cpus, nodes);
    req.variant = variant.map(str::to_string);
    render_request(isa, &req)
}

/// Render the layout `req` asks for.
pub fn render_request(isa: &dyn Isa, req: &LayoutRequest) -> Result<String, CheckError> {
    let variant = match req.variant.as_deref() {
        None => *isa.default_variant(&req.kernel),
        Some(v) => *isa.variant(v).ok_or_else(|| CheckError::UnknownVariant {
            arch: isa.name().into(),
            variant: v.into(),
            known: isa.variants().iter().map(|v| v.name).collect::<Vec<_>>().join(", "),
        })?,
    };
    let cpus = req.topology.possible().clone();
    if cpus.is_empty() {
        return Err(CheckError::NoCpus);
    }
    let static_size = req.static_size.unwrap_or(LAYOUT_STATIC_SIZE);
    let mut cfg = isa.percpu_config_for(&variant, req.topology.clone(), static_size, &req.kernel);
    if let Some(kind) = req.first_chunk {
        cfg.first_chunk = kind;
    }
    if let Some(mem) = &req.memory {
        let lm = cfg.space.linear_map().start;
        let to_linear = |r: &std::ops::Range<u64>| lm.saturating_add(r.start)..lm.saturating_add(r.end);
        cfg.memory = Some(MemoryLayout {
            nodes: mem.nodes.iter().map(|(n, r)| (*n, to_linear(r))).collect(),
            reserved: mem.reserved.iter().map(to_linear).collect(),
            goal: lm + mem.goal.max(memblock_goal(isa)),
        });
    }
    let space = cfg.space.clone();
    let (mut atom, reserved, mut dynamic, backend, kind) =
        (cfg.atom_size, cfg.reserved_size, cfg.dyn_size, cfg.backend, cfg.first_chunk);
    if kind == FirstChunkKind::Page {
        // pcpu_page_first_chunk asks for page atoms and no dynamic space
        (atom, dynamic) = (isa.page_size() as usize, 0);
    }
    let per_cpu_start = cfg.per_cpu_start;
    // Through the arch's own setup, as `run` does: km refuses NUMA groups.
    let percpu = isa.setup_percpu(cfg).map_err(|source| CheckError::Setup {
        arch: isa.name().into(),
        variant: variant.name.into(),
        source,
    })?;
    let first = percpu.first_chunk_layout();
    let nodes = req.topology.nr_nodes();
    let mut o = String::new();
    let _ = writeln!(o, "{} percpu setup", req.kernel);
    let _ = writeln!(
        o,
        "{} {} (model {}, fixtures/obj/{}): {}-bit {}, {} KiB pages",
        isa.name(),
        variant.name,
        variant.model.name(),
        variant.fixture_dir,
        isa.ptr_bits(),
        if isa.big_endian() { "big-endian" } else { "little-endian" },
        isa.page_size() / 1024
    );
    let _ = writeln!(
        o,
        "possible cpus {cpus} ({} cpus, nr_cpu_ids {}), {} node{}",
        cpus.len(),
        cpus.nr_cpu_ids(),
        nodes.max(1),
        if nodes.max(1) == 1 { "" } else { "s" }
    );
    if let Some(mem) = &req.memory {
        let _ = writeln!(o, "node memory (physical):");
        for n in 0..nodes {
            let ranges: Vec<String> = mem
                .nodes
                .iter()
                .filter(|(m, _)| *m == n)
                .map(|(_, r)| format!("{:#x}-{:#x}", r.start, r.end - 1))
                .collect();
            let _ = writeln!(
                o,
                "  node {n}: {}",
                if ranges.is_empty() { "memoryless".to_string() } else { ranges.join(", ") }
            );
        }
        for r in &mem.reserved {
            let _ = writeln!(o, "  reserved {:#x}-{:#x}", r.start, r.end - 1);
        }
    }
    let _ = writeln!(o, "address space:");
    let lm = space.linear_map();
    let vm = space.vmalloc();
    let _ = writeln!(o, "  linear map   {:#018x}..{:#018x} ({} GiB)", lm.start, lm.end, (lm.end - lm.start) >> 30);
    let _ = writeln!(o, "  vmalloc      {:#018x}..{:#018x} ({} GiB)", vm.start, vm.end, (vm.end - vm.start) >> 30);
    let _ = writeln!(o, "  kernel image {:#018x}", isa.kernel_base(&variant));
    let _ = writeln!(o, "  __per_cpu_start {per_cpu_start:#018x}");
    for p in [ModulePlacement::Near, ModulePlacement::Far] {
        let _ = writeln!(o, "  modules ({p}) {:#018x}", isa.module_base(&variant, p, first.base_addr));
    }
    for m in isa.fixed_mappings(&variant) {
        let _ = writeln!(o, "  {} {:#018x}+{:#x}", m.what, m.addr, m.size);
    }
    let _ = writeln!(
        o,
        "percpu setup: {kind:?} first chunk, {backend} backend, atom {atom:#x}, reserved {reserved:#x}, dynamic {dynamic:#x}, static {static_size:#x}{}",
        if req.static_size.is_some() { "" } else { " (assumed)" }
    );
    let _ = writeln!(o, "reach of percpu symbols:");
    for r in isa.reach() {
        let _ = writeln!(o, "  {}: {}", r.how, r.limit);
    }
    if isa.name() == "x86_64" {
        // arch/x86/kernel/setup_percpu.c prints this first.
        let nr_cpu_ids = cpus.nr_cpu_ids();
        let bits = if req.cpumask_offstack { nr_cpu_ids } else { req.nr_cpus_config };
        let _ = writeln!(
            o,
            "setup_percpu: NR_CPUS:{} nr_cpumask_bits:{bits} nr_cpu_ids:{nr_cpu_ids} nr_node_ids:{}",
            req.nr_cpus_config,
            nodes.max(1)
        );
    }
    o.push_str(&first.dump_layout());
    if !o.contains("__per_cpu_offset") {
        let _ = writeln!(o, "__per_cpu_offset[]:");
        for (cpu, off) in first.per_cpu_offset.iter().enumerate() {
            if let Some(off) = off {
                let _ = writeln!(o, "  [{cpu}] {off:#018x}");
            }
        }
    }
    Ok(o)
}
