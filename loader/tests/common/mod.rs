//! Shared helpers for the loader's integration tests: the test objects, a
//! per-arch address plan, loading a kernel + module pair, byte patching, and
//! an independent decoder that checks relocated fields.
#![allow(dead_code)]

use percpu_loader::elf::ElfObject;
use percpu_loader::{
    load_kernel_image, load_module, InMemoryPercpu, LinearLayout, LoadError, LoadOptions, LoadedObject, Machine,
    OverflowPolicy, SymbolResolver, SymbolTable,
};

pub fn data(name: &str) -> Vec<u8> {
    let p = format!("{}/tests/data/{}", env!("CARGO_MANIFEST_DIR"), name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// Where things go for one arch.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub machine: Machine,
    pub prefix: &'static str,
    /// `__per_cpu_start`: where the kernel image's static area is linked.
    pub pstart: u64,
    /// A module base within reach of the percpu area.
    pub near: u64,
    /// A module base more than 4 GiB away from it.
    pub far: u64,
    pub page: u64,
}

pub const PLANS: [Plan; 6] = [
    Plan {
        machine: Machine::X86_64,
        prefix: "x86_64",
        pstart: 0,
        near: 0xffff_ffff_c000_0000,
        far: 0xffff_c900_0000_0000,
        page: 4096,
    },
    Plan {
        machine: Machine::Aarch64,
        prefix: "aarch64",
        pstart: 0xffff_8000_0900_0000,
        near: 0xffff_8000_0000_0000,
        far: 0xffff_8004_0900_0000,
        page: 4096,
    },
    Plan {
        machine: Machine::Sparc,
        prefix: "sparc",
        pstart: 0xf010_0000,
        near: 0xf800_0000,
        far: 0x1000_0000,
        page: 4096,
    },
    Plan {
        machine: Machine::Alpha,
        prefix: "alpha",
        pstart: 0xffff_fc00_0100_0000,
        near: 0xffff_fc00_1100_0000,
        far: 0xffff_fe00_0000_0000,
        page: 8192,
    },
    Plan {
        machine: Machine::S390x,
        prefix: "s390x",
        pstart: 0x140_0000,
        near: 0x4000_0000,
        far: 0x3ff_8000_0000,
        page: 4096,
    },
    Plan {
        machine: Machine::Riscv64,
        prefix: "riscv64",
        pstart: 0x8100_0000,
        near: 0x8200_0000,
        far: 0x2_8000_0000,
        page: 4096,
    },
];

pub fn plan(m: Machine) -> Plan {
    *PLANS.iter().find(|p| p.machine == m).unwrap()
}

pub struct Loaded {
    pub kernel: LoadedObject,
    pub module: LoadedObject,
    pub percpu: InMemoryPercpu,
    pub runtime: SymbolTable,
}

/// The runtime symbol table, 128 MiB below the module.
pub fn runtime(module_base: u64) -> SymbolTable {
    let rt = module_base.wrapping_sub(128 << 20);
    let mut t = SymbolTable::new();
    t.define("nr_cpu_ids", rt).define("__cpu_possible_mask", rt + 0x100).define("pcpubed_thread_info", rt + 0x200);
    t
}

/// Load `<prefix>-kernel.o` (256 MiB below the module, its static percpu
/// area at `pstart`) and then `module_file` at `module_base`.
pub fn load_pair(p: &Plan, module_file: &str, module_base: u64, policy: OverflowPolicy) -> Result<Loaded, LoadError> {
    let opts = LoadOptions { overflow: policy, contract: true };
    let rt = runtime(module_base);
    let mut klayout = LinearLayout::at(module_base.wrapping_sub(256 << 20)).with_page_size(p.page);
    klayout.static_percpu_at = Some(p.pstart);
    let kname = format!("{}-kernel.o", p.prefix);
    let kernel = load_kernel_image(&kname, &data(&kname), &opts, &mut klayout, &[&rt as &dyn SymbolResolver])?;
    let sp = kernel.static_percpu.as_ref().expect("kernel has a static percpu area");
    assert_eq!(sp.start, p.pstart);
    let static_size = (sp.end - sp.start + 7) & !7;
    let mut percpu =
        InMemoryPercpu::new(4, static_size, 8 << 10, 0xffff_8880_0100_0000, p.pstart).with_page_size(p.page);
    let mut mlayout = LinearLayout::at(module_base).with_page_size(p.page);
    let exports = kernel.exports();
    let module = load_module(
        module_file,
        &data(module_file),
        &opts,
        &mut percpu,
        &mut mlayout,
        &[&exports as &dyn SymbolResolver, &rt],
    )?;
    Ok(Loaded { kernel, module, percpu, runtime: rt })
}

/// Overwrite `bytes[off..off+n]` with `v` in the object's byte order.
pub fn put(bytes: &mut [u8], off: usize, n: usize, v: u64, little: bool) {
    for i in 0..n {
        let b = (v >> (8 * i)) as u8;
        if little {
            bytes[off + i] = b;
        } else {
            bytes[off + n - 1 - i] = b;
        }
    }
}

pub fn get(bytes: &[u8], off: usize, n: usize, little: bool) -> u64 {
    let mut v = 0u64;
    for i in 0..n {
        let b = if little { bytes[off + n - 1 - i] } else { bytes[off + i] };
        v = (v << 8) | b as u64;
    }
    v
}

/// File offset of section header `index`'s field at `field64`/`field32`.
pub fn shdr_field(bytes: &[u8], index: usize, field64: usize, field32: usize) -> usize {
    let obj = ElfObject::parse("patch", bytes).unwrap();
    let little = obj.little_endian;
    let (shoff, shent) =
        if obj.is_64 { (get(bytes, 0x28, 8, little) as usize, 64) } else { (get(bytes, 0x20, 4, little) as usize, 40) };
    shoff + index * shent + if obj.is_64 { field64 } else { field32 }
}

pub fn section_index(bytes: &[u8], name: &str) -> usize {
    ElfObject::parse("patch", bytes).unwrap().sections.iter().position(|s| s.name == name).unwrap()
}

fn sext(v: u64, bits: u32) -> i64 {
    ((v << (64 - bits)) as i64) >> (64 - bits)
}

/// Check every relocation of `file` that the decoder understands against
/// the loaded image: the field must encode S + A (directly, or through the
/// GOT slot / PLT entry it points to).  Returns how many were checked.
pub fn verify_relocations(file: &str, m: &LoadedObject) -> usize {
    let bytes = data(file);
    let obj = ElfObject::parse(file, &bytes).unwrap();
    let little = m.little_endian;
    let mut checked = 0;
    let sym_value = |i: usize| m.symbols[i].value;
    let rd = |addr: u64, n: usize| get(m.read(addr, n).unwrap_or_else(|| panic!("read {addr:#x}")), 0, n, little);
    let rd_le = |addr: u64, n: usize| get(m.read(addr, n).unwrap(), 0, n, true);
    for rs in &obj.relocs {
        let target = &obj.sections[rs.target];
        let Some(ls) = m.sections.iter().find(|s| s.index == Some(rs.target)) else {
            continue;
        };
        // riscv: the high parts, by place, with their S + A.
        let his: Vec<(u64, u64)> = rs
            .entries
            .iter()
            .filter(|r| r.r_type == 23)
            .map(|r| (ls.addr + r.offset, sym_value(r.sym).wrapping_add(r.addend as u64)))
            .collect();
        for r in &rs.entries {
            let p = ls.addr + r.offset;
            let sa = sym_value(r.sym).wrapping_add(r.addend as u64);
            let what =
                format!("{file}: {}+{:#x} type {} sym {}", target.name, r.offset, r.r_type, obj.symbols[r.sym].name);
            let ok = match (m.machine, r.r_type) {
                (Machine::X86_64, 1) => rd(p, 8) == sa,
                (Machine::X86_64, 11) => sext(rd(p, 4), 32) as u64 == sa,
                (Machine::X86_64, 2) | (Machine::X86_64, 4) => p.wrapping_add(sext(rd(p, 4), 32) as u64) == sa,
                (Machine::Aarch64, 257) => rd(p, 8) == sa,
                (Machine::Aarch64, 275) => {
                    let insn = rd_le(p, 4);
                    let imm = ((insn >> 29) & 3) | (((insn >> 5) & 0x7ffff) << 2);
                    (p & !0xfff).wrapping_add((sext(imm, 21) << 12) as u64) == sa & !0xfff
                }
                (Machine::Aarch64, 277) => (rd_le(p, 4) >> 10) & 0xfff == sa & 0xfff,
                (Machine::Aarch64, 285) => ((rd_le(p, 4) >> 10) & 0xfff) << 2 == sa & 0xffc,
                (Machine::Aarch64, 286) => ((rd_le(p, 4) >> 10) & 0xfff) << 3 == sa & 0xff8,
                (Machine::Aarch64, 283) | (Machine::Aarch64, 282) => {
                    let t = p.wrapping_add((sext(rd_le(p, 4) & 0x3ff_ffff, 26) << 2) as u64);
                    t == sa || (m.section_at(t).map(|s| s.name == ".plt").unwrap_or(false) && rd_le(t + 8, 8) == sa)
                }
                (Machine::Sparc, 3) => rd(p, 4) == sa & 0xffff_ffff,
                (Machine::Sparc, 9) => (rd(p, 4) & 0x3f_ffff) == (sa >> 10) & 0x3f_ffff,
                (Machine::Sparc, 12) => (rd(p, 4) & 0x3ff) == sa & 0x3ff,
                (Machine::Sparc, 7) => {
                    (p.wrapping_add((sext(rd(p, 4) & 0x3fff_ffff, 30) << 2) as u64)) & 0xffff_ffff == sa & 0xffff_ffff
                }
                (Machine::Alpha, 2) => rd(p, 8) == sa,
                (Machine::Alpha, 4) => {
                    let slot = m.gp.unwrap().wrapping_add(sext(rd(p, 2), 16) as u64);
                    rd(slot, 8) == sa
                }
                (Machine::Alpha, 10) => p.wrapping_add(sext(rd(p, 4), 32) as u64) == sa,
                (Machine::Alpha, 17) => {
                    sext(rd(p, 2), 16) == (sa.wrapping_sub(m.gp.unwrap()).wrapping_add(0x8000) as i64) >> 16
                }
                (Machine::Alpha, 18) => rd(p, 2) == sa.wrapping_sub(m.gp.unwrap()) & 0xffff,
                (Machine::S390x, 22) => rd(p, 8) == sa,
                (Machine::S390x, 19) => p.wrapping_add((sext(rd(p, 4), 32) << 1) as u64) == sa,
                (Machine::S390x, 26) => {
                    let slot = p.wrapping_add((sext(rd(p, 4), 32) << 1) as u64).wrapping_sub(r.addend as u64);
                    rd(slot, 8) == sym_value(r.sym)
                }
                (Machine::S390x, 20) => {
                    let t = p.wrapping_add((sext(rd(p, 4), 32) << 1) as u64);
                    t == sa
                        || (m.section_at(t).map(|s| s.name == ".plt").unwrap_or(false)
                            && rd(t.wrapping_sub(r.addend as u64) + 12, 8) == sym_value(r.sym))
                }
                (Machine::Riscv64, 2) => rd(p, 8) == sa,
                (Machine::Riscv64, 24) => {
                    // S labels the auipc.
                    let hp = sym_value(r.sym);
                    let (_, hsa) = *his.iter().find(|(at, _)| *at == hp).expect("paired HI20");
                    let auipc = rd(hp, 4);
                    let lo = sext(rd(p, 4) >> 20, 12);
                    hp.wrapping_add(sext(auipc & 0xffff_f000, 32) as u64).wrapping_add(lo as u64) == hsa
                }
                (Machine::Riscv64, 19) => {
                    let auipc = rd(p, 4);
                    let jalr = rd(p + 4, 4);
                    let t =
                        p.wrapping_add(sext(auipc & 0xffff_f000, 32) as u64).wrapping_add(sext(jalr >> 20, 12) as u64);
                    t == sa || rd(t + 16, 8) == sa
                }
                _ => continue,
            };
            assert!(ok, "{what}: field does not encode S+A = {sa:#x}");
            checked += 1;
        }
    }
    checked
}
