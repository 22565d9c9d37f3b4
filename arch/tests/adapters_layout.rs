//! The sparc32, alpha, s390x and km adapters on their own (no runner):
//! metadata against the shipped fixtures, the percpu setup their
//! `setup_per_cpu_areas` makes for 1..4096 CPUs, sparse masks and NUMA
//! topologies, the distances the planted bugs need, and the engine side
//! (mapping units, entering a CPU).

use std::collections::HashSet;
use std::path::PathBuf;

use percpu_arch::engine::{EngineError, Perms, Reg};
use percpu_arch::isa::{self, CpuContext, Isa, ModulePlacement};
use percpu_core::percpu::Percpu;
use percpu_core::{AllocRequest, CpuSet, PcpuPtr, Topology};
use percpu_loader::contract::PercpuModel;
use percpu_loader::inspect::inspect_path;

const MINE: [&str; 4] = ["sparc32", "alpha", "s390x", "km"];
const GIB: u64 = 1 << 30;

fn adapter(name: &str) -> &'static dyn Isa {
    isa::lookup(name).unwrap_or_else(|| panic!("{name} is not registered: {:?}", isa::names()))
}

fn fixture(isa: &dyn Isa, object: &str) -> PathBuf {
    let dir = isa.variants()[0].fixture_dir;
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/obj").join(dir).join(object)
}

/// `__per_cpu_end - __per_cpu_start` of the arch's shipped kernel image.
fn static_size(isa: &dyn Isa) -> usize {
    let r = inspect_path(fixture(isa, "kernel.o")).expect("inspect kernel.o");
    r.static_area.expect("kernel.o has a static percpu area").size as usize
}

fn setup(isa: &dyn Isa, topo: Topology) -> Percpu {
    let v = isa.variants()[0];
    isa.setup_percpu(isa.percpu_config(&v, topo, static_size(isa)))
        .unwrap_or_else(|e| panic!("{}: setup: {e}", isa.name()))
}

fn dist(a: u64, b: u64) -> u64 {
    a.abs_diff(b)
}

#[test]
fn registered_and_matching_the_fixtures() {
    for name in MINE {
        let isa = adapter(name);
        assert_eq!(isa.name(), name);
        let r = inspect_path(fixture(isa, "kernel.o")).unwrap();
        assert_eq!(r.e_machine, isa.elf_machine(), "{name}: e_machine of kernel.o");
        assert_eq!(r.class, isa.ptr_bits(), "{name}: ELF class");
        assert_eq!(r.endianness == "big", isa.big_endian(), "{name}: byte order ({})", r.endianness);
        let abi = r.abi.expect("ABI note");
        assert_eq!(Some(abi.model), PercpuModel::from_u32(isa.variants()[0].model.contract_id()), "{name}: model");
        let space = isa.address_space();
        assert_eq!(space.page_size(), isa.page_size());
        assert_eq!(space.ptr_bits(), isa.ptr_bits());
        assert!(!isa.reach().is_empty());
    }
    assert_eq!(adapter("sparc32").elf_machine(), 2, "the fixtures carry EM_SPARC, not EM_SPARC32PLUS");
}

/// Kernel image, static area, memblock window, vmalloc and module areas
/// do not overlap, and the static area is page aligned.
#[test]
fn layouts_are_disjoint() {
    for name in MINE {
        let isa = adapter(name);
        let v = isa.variants()[0];
        let space = isa.address_space();
        let (lm, vm) = (space.linear_map(), space.vmalloc());
        let kb = isa.kernel_base(&v);
        let pcs = isa.percpu_config(&v, Topology::uma(CpuSet::first_n(1)), static_size(isa)).per_cpu_start;
        assert_eq!(pcs % isa.page_size(), 0, "{name}: __per_cpu_start aligned");
        assert!(kb < pcs && pcs + static_size(isa) as u64 <= lm.start, "{name}: image below memblock");
        for (what, m) in [("near", ModulePlacement::Near), ("far", ModulePlacement::Far)] {
            let mb = isa.module_base(&v, m, lm.start);
            assert_eq!(mb % isa.page_size(), 0, "{name}: {what} module base aligned");
            assert!(!lm.contains(&mb) && !vm.contains(&mb), "{name}: {what} modules {mb:#x} outside chunks");
            assert!(mb + (64 << 20) <= kb || mb >= pcs + (16 << 20), "{name}: {what} modules vs image");
        }
    }
}

fn check_offsets(isa: &dyn Isa, pcpu: &Percpu, possible: &CpuSet) {
    let name = isa.name();
    let fc = pcpu.first_chunk_layout();
    let lm = isa.address_space().linear_map();
    let offs = pcpu.per_cpu_offsets();
    let mut seen = HashSet::new();
    for cpu in possible.iter() {
        let off = offs[cpu as usize].unwrap_or_else(|| panic!("{name}: cpu {cpu} has no offset"));
        assert_ne!(off, 0, "{name}: cpu {cpu}: offset 0 would make the load image a unit");
        assert!(seen.insert(off), "{name}: cpu {cpu}: offset {off:#x} repeated");
        let unit = isa.address_space().wrapping_add(fc.per_cpu_start, off);
        assert!(
            lm.start <= unit && unit + fc.unit_size as u64 <= lm.end,
            "{name}: cpu {cpu}'s unit {unit:#x} outside the linear map {lm:x?}"
        );
    }
    for cpu in 0..offs.len() as u32 {
        if !possible.contains(cpu) {
            assert_eq!(offs[cpu as usize], None, "{name}: impossible cpu {cpu} has an offset");
        }
    }
    pcpu.verify().unwrap();
}

#[test]
fn first_chunk_for_1_4_64_4096_cpus_and_a_sparse_mask() {
    let masks = [
        CpuSet::first_n(1),
        CpuSet::first_n(4),
        CpuSet::first_n(64),
        CpuSet::first_n(4096),
        CpuSet::parse_list("0,2,5-7,63,130,4095").unwrap(),
    ];
    for name in MINE {
        let isa = adapter(name);
        for possible in &masks {
            let pcpu = setup(isa, Topology::uma(possible.clone()));
            check_offsets(isa, &pcpu, possible);
        }
    }
}

/// sparc32, alpha and s390x use the generic setup (no distance function):
/// one group whatever the nodes.  km with NUMA is refused like percpu-km.
#[test]
fn numa_topologies() {
    let possible = CpuSet::first_n(8);
    for name in ["sparc32", "alpha", "s390x"] {
        let isa = adapter(name);
        let pcpu = setup(isa, Topology::blocked(possible.clone(), 2));
        assert_eq!(pcpu.first_chunk_layout().ai.groups.len(), 1, "{name}: generic setup makes one group");
        check_offsets(isa, &pcpu, &possible);
    }
    let km = adapter("km");
    let v = km.variants()[0];
    let err =
        km.setup_percpu(km.percpu_config(&v, Topology::blocked(possible.clone(), 2), static_size(km))).unwrap_err();
    assert!(err.to_string().contains("can't handle more than one group"), "km: {err}");
    // One node is fine.
    check_offsets(km, &setup(km, Topology::blocked(possible.clone(), 1)), &possible);
}

/// Allocate until an allocation lands outside the first chunk (in a chunk
/// the backend created), as the runner does for FAR tests.
fn far_alloc(pcpu: &mut Percpu) -> PcpuPtr {
    let first = pcpu.first_chunk_id();
    for _ in 0..64 {
        let p = pcpu.alloc(AllocRequest::new(16 << 10, 8)).unwrap();
        let addr = pcpu.pcpu_ptr_to_addr(p);
        if pcpu.chunk_addr_search(addr) != Some(first)
            && pcpu.reserved_chunk_id().is_none_or(|r| pcpu.chunk_addr_search(addr) != Some(r))
        {
            return p;
        }
    }
    panic!("no allocation left the first chunk");
}

/// A FAR allocation (one that does not fit the first chunk) lands in a
/// backend chunk: on alpha and s390x at least 4 GiB from the first chunk,
/// on km in RAM.
#[test]
fn far_chunks() {
    for name in MINE {
        let isa = adapter(name);
        let possible = CpuSet::first_n(4);
        let mut pcpu = setup(isa, Topology::uma(possible.clone()));
        let first_base = pcpu.first_chunk_layout().base_addr;
        let ptr = far_alloc(&mut pcpu);
        let a0 = pcpu.per_cpu_ptr(ptr, 0).unwrap();
        let space = isa.address_space();
        match name {
            "km" => assert!(space.linear_map().contains(&a0), "km chunk {a0:#x} in RAM"),
            _ => assert!(space.vmalloc().contains(&a0), "{name}: chunk {a0:#x} in vmalloc"),
        }
        if name == "alpha" || name == "s390x" {
            assert!(dist(a0, first_base) >= 4 * GIB, "{name}: FAR chunk {a0:#x} vs first chunk {first_base:#x}");
        }
        let mut seen = HashSet::new();
        for cpu in possible.iter() {
            assert!(seen.insert(pcpu.per_cpu_ptr(ptr, cpu).unwrap()));
        }
    }
}

/// Near modules are within reach of the kernel's percpu section (where
/// module percpu pointers point); far ones are not on alpha (GP +-2 GiB)
/// and s390x (larl +-4 GiB).
#[test]
fn module_distances() {
    for (name, reach) in [("sparc32", u64::MAX), ("alpha", 2 * GIB), ("s390x", 4 * GIB), ("km", 2 * GIB)] {
        let isa = adapter(name);
        let v = isa.variants()[0];
        let pcs = isa.percpu_config(&v, Topology::uma(CpuSet::first_n(1)), 0).per_cpu_start;
        let lm = isa.address_space().linear_map();
        let near = isa.module_base(&v, ModulePlacement::Near, lm.start);
        let far = isa.module_base(&v, ModulePlacement::Far, lm.start);
        assert!(dist(near, pcs) + (64 << 20) < reach, "{name}: near modules {near:#x} vs {pcs:#x}");
        if name == "alpha" || name == "s390x" {
            assert!(dist(far, pcs) > 4 * GIB, "{name}: far modules {far:#x} vs {pcs:#x}");
        }
    }
}

/// Start the arch's engine, or skip (alpha) when qemu-alpha is missing.
fn engine(isa: &dyn Isa) -> Option<Box<dyn percpu_arch::engine::Engine>> {
    match isa.new_engine() {
        Ok(e) => Some(e),
        Err(e @ EngineError::Missing { .. }) => {
            eprintln!("SKIPPED {}: {e}", isa.name());
            None
        }
        Err(e) => panic!("{}: engine: {e}", isa.name()),
    }
}

/// Every place the layout names can be mapped by the arch's engine: a
/// unit of the first and a far chunk, the kernel image and static area,
/// both module areas, the lowcore.
#[test]
fn engine_maps_the_layout() {
    for name in MINE {
        let isa = adapter(name);
        let Some(mut e) = engine(isa) else { continue };
        assert_eq!(e.cpu(), isa.cpu());
        let v = isa.variants()[0];
        let g = e.map_granule();
        assert_eq!(isa.page_size() % g, 0, "{name}: page is a multiple of the engine granule");
        let possible = CpuSet::first_n(64);
        let mut pcpu = setup(isa, Topology::uma(possible.clone()));
        let unit = pcpu.unit_size() as u64;
        let far = far_alloc(&mut pcpu);
        let cfg = isa.percpu_config(&v, Topology::uma(possible.clone()), static_size(isa));
        let lm = isa.address_space().linear_map();
        let mut places = vec![
            ("kernel image", isa.kernel_base(&v), 1 << 20),
            ("static area", cfg.per_cpu_start, 64 << 10),
            ("near modules", isa.module_base(&v, ModulePlacement::Near, lm.start), 1 << 20),
            ("far modules", isa.module_base(&v, ModulePlacement::Far, lm.start), 1 << 20),
        ];
        for m in isa.fixed_mappings(&v) {
            places.push((m.what, m.addr, m.size));
        }
        let fc = pcpu.first_chunk_layout().clone();
        for cpu in [0, 63] {
            let off = pcpu.per_cpu_offsets()[cpu].unwrap();
            places.push(("first chunk unit", fc.per_cpu_start.wrapping_add(off) & isa.address_space().mask(), unit));
            let a = pcpu.per_cpu_ptr(far, cpu as u32).unwrap();
            places.push(("far chunk page", a & !(g - 1), g));
        }
        for (what, addr, size) in places {
            let size = size.div_ceil(g) * g;
            e.map(addr, size, Perms::RW).unwrap_or_else(|err| panic!("{name}: map {what} {addr:#x}: {err}"));
            let pat: Vec<u8> = (0..16u8).map(|i| i ^ 0x5a).collect();
            let at = addr + size - 16;
            e.write(at, &pat).unwrap();
            let mut back = [0u8; 16];
            e.read(at, &mut back).unwrap();
            assert_eq!(back.as_slice(), pat.as_slice(), "{name}: {what} reads back");
            e.unmap(addr, size).unwrap();
        }
    }
}

/// `enter_cpu` sets the thread_info register and `->cpu` (model 5) or the
/// lowcore's percpu_offset (s390x), mapping the lowcore if needed.
#[test]
fn enter_cpu_sets_the_state() {
    for name in MINE {
        let isa = adapter(name);
        let Some(mut e) = engine(isa) else { continue };
        let v = isa.variants()[0];
        let pcpu = setup(isa, Topology::uma(CpuSet::first_n(4)));
        let abi = inspect_path(fixture(isa, "kernel.o")).unwrap().abi.unwrap();
        // thread_info in the kernel image's data, 2 MiB above its base.
        let ti = isa.kernel_base(&v) + (2 << 20);
        let g = e.map_granule();
        e.map(ti & !(g - 1), g.max(4096), Perms::RW).unwrap();
        for cpu in [3u32, 1] {
            let ctx = CpuContext {
                cpu,
                per_cpu_offset: pcpu.per_cpu_offsets()[cpu as usize].unwrap(),
                percpu_area: 0,
                thread_info: ti,
                ti_cpu_offset: abi.ti_cpu_offset,
                lowcore_percpu_offset: abi.lowcore_percpu_offset,
            };
            isa.enter_cpu(e.as_mut(), &v, &ctx).unwrap();
            if name == "s390x" {
                let mut b = [0u8; 8];
                e.read(u64::from(abi.lowcore_percpu_offset), &mut b).unwrap();
                assert_eq!(abi.lowcore_percpu_offset, 0x3b8);
                assert_eq!(u64::from_be_bytes(b), ctx.per_cpu_offset, "s390x lowcore percpu_offset");
                continue;
            }
            let reg = match name {
                "sparc32" => Reg::G6,
                "alpha" => Reg::ThreadPointer,
                _ => Reg::Tp,
            };
            assert_eq!(e.reg(reg).unwrap(), ti, "{name}: {reg:?}");
            let mut b = [0u8; 4];
            e.read(ti + u64::from(abi.ti_cpu_offset), &mut b).unwrap();
            let got = if isa.big_endian() { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) };
            assert_eq!(got, cpu, "{name}: thread_info->cpu at {}", abi.ti_cpu_offset);
        }
        let expect = match name {
            "sparc32" => 12,
            "alpha" => 80,
            "km" => 32,
            _ => 0,
        };
        assert_eq!(abi.ti_cpu_offset, expect, "{name}: ti_cpu_offset of the fixtures");
    }
}
