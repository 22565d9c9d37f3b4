//! `percpu-bed layout`: what an arch variant's `setup_per_cpu_areas` makes
//! of a possible mask: the `pcpu-alloc:` dump, the first chunk's layout,
//! `__per_cpu_offset[]`, and the adapter's address space and reach rules.

use std::fmt::Write;

use percpu_core::percpu::Percpu;
use percpu_core::{CpuSet, Topology};

use crate::check::CheckError;
use crate::isa::{Isa, ModulePlacement};

/// Static size assumed for the layout (a kernel image's `.data..percpu`
/// is tens of KiB; the fixtures' kernel.o has a few KiB).
pub const LAYOUT_STATIC_SIZE: usize = 16 << 10;

/// Render the layout of `isa`/`variant` (`None`: the default variant) for
/// the possible CPUs `cpus` spread over `nodes` NUMA nodes.
pub fn render(isa: &dyn Isa, variant: Option<&str>, cpus: &CpuSet, nodes: u32) -> Result<String, CheckError> {
    let variant = match variant {
        None => isa.variants()[0],
        Some(v) => *isa.variant(v).ok_or_else(|| CheckError::UnknownVariant {
            arch: isa.name().into(),
            variant: v.into(),
            known: isa.variants().iter().map(|v| v.name).collect::<Vec<_>>().join(", "),
        })?,
    };
    if cpus.is_empty() {
        return Err(CheckError::NoCpus);
    }
    let topology = if nodes > 1 { Topology::blocked(cpus.clone(), nodes) } else { Topology::uma(cpus.clone()) };
    let cfg = isa.percpu_config(&variant, topology, LAYOUT_STATIC_SIZE);
    let space = cfg.space.clone();
    let (atom, reserved, dynamic, backend, kind) =
        (cfg.atom_size, cfg.reserved_size, cfg.dyn_size, cfg.backend, cfg.first_chunk);
    let per_cpu_start = cfg.per_cpu_start;
    let percpu = Percpu::new(cfg).map_err(|source| CheckError::Setup {
        arch: isa.name().into(),
        variant: variant.name.into(),
        source,
    })?;
    let first = percpu.first_chunk_layout();
    let mut o = String::new();
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
        "percpu setup: {kind:?} first chunk, {backend} backend, atom {atom:#x}, reserved {reserved:#x}, dynamic {dynamic:#x}, static {LAYOUT_STATIC_SIZE:#x} (assumed)"
    );
    let _ = writeln!(o, "reach of percpu symbols:");
    for r in isa.reach() {
        let _ = writeln!(o, "  {}: {}", r.how, r.limit);
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
