//! Golden files for the percpu_stats dump after a fixed workload, over the
//! geometries the issue names.  Re-bless with `PERCPU_BLESS=1 cargo test -p
//! percpu-core --test golden_stats` after an intended change, and review
//! the diff like code.

use std::path::PathBuf;

use percpu_core::percpu::{Percpu, PercpuConfig};
use percpu_core::{AddressSpace, AllocRequest, CpuSet, Topology};

fn check_golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("PERCPU_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with PERCPU_BLESS=1 to create it)", path.display()));
    if expected != actual {
        let diff: Vec<String> = expected
            .lines()
            .zip(actual.lines())
            .enumerate()
            .filter(|(_, (e, a))| e != a)
            .take(10)
            .map(|(i, (e, a))| format!("line {}:\n  golden: {e}\n  actual: {a}", i + 1))
            .collect();
        panic!(
            "{} differs from the golden file ({} vs {} lines):\n{}\n(re-bless with PERCPU_BLESS=1 if intended)",
            path.display(),
            expected.lines().count(),
            actual.lines().count(),
            diff.join("\n")
        );
    }
}

/// A deterministic workload touching the reserved chunk, the first chunk,
/// a backend chunk, fragmentation and the balance work.
fn workload(p: &mut Percpu) {
    let mut live = Vec::new();
    for i in 0..600usize {
        let size = [4, 8, 12, 64, 100, 256, 1024, 3000][i % 8];
        let align = [4, 8, 4, 64, 4, 256, 8, 4096][i % 8];
        live.push(p.alloc(AllocRequest::new(size, align)).unwrap());
    }
    for (i, ptr) in std::mem::take(&mut live).into_iter().enumerate() {
        if i % 3 != 0 {
            p.free(ptr).unwrap();
        }
    }
    let _module = p.alloc(AllocRequest::new(1200, 64).reserved()).unwrap();
    p.balance();
}

fn run(name: &str, cfg: PercpuConfig) {
    let nr = cfg.topology.possible().len();
    let mut p = Percpu::new(cfg).unwrap();
    let mut out = p.first_chunk_layout().ai.dump(nr);
    workload(&mut p);
    p.verify().unwrap();
    out.push_str(&p.stats().dump());
    check_golden(&format!("stats_{name}.txt"), &out);
}

fn x86_64_like(topology: Topology) -> PercpuConfig {
    let mut cfg = PercpuConfig::generic(AddressSpace::generic64(), topology, 0x2c000);
    cfg.atom_size = 2 << 20;
    cfg
}

#[test]
fn stats_1cpu() {
    run("1cpu", x86_64_like(Topology::uma(CpuSet::first_n(1))));
}

#[test]
fn stats_4cpu() {
    run("4cpu", x86_64_like(Topology::uma(CpuSet::first_n(4))));
}

#[test]
fn stats_64cpu_4nodes() {
    run("64cpu_4nodes", x86_64_like(Topology::blocked(CpuSet::first_n(64), 4)));
}

#[test]
fn stats_4096cpu() {
    run("4096cpu", x86_64_like(Topology::blocked(CpuSet::first_n(4096), 4)));
}

#[test]
fn stats_sparse_mask() {
    let cpus = CpuSet::parse_list("0-3,8-11,64").unwrap();
    run("sparse", PercpuConfig::generic(AddressSpace::generic64(), Topology::uma(cpus), 0x9000));
}

#[test]
fn stats_64k_pages() {
    let space = AddressSpace::new(
        64,
        65536,
        0xffff_0000_0000_0000..0xffff_4000_0000_0000,
        0xffff_8000_0000_0000..0xffff_c000_0000_0000,
    )
    .unwrap();
    run("64k_pages", PercpuConfig::generic(space, Topology::uma(CpuSet::first_n(8)), 0x12000));
}
