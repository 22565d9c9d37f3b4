//! Loading the test objects on every arch: near and far layouts, overflow
//! rules, GOT/PLT, percpu copies, the fixture contract, the linked image and
//! write_relocated_elf.

#![allow(clippy::result_large_err)]

mod common;

use common::*;
use percpu_loader::{
    load_kernel_image, load_module, write_relocated_elf, InMemoryPercpu, LinearLayout, LoadError, LoadOptions, Machine,
    ObjectRole, Op, OverflowPolicy, PercpuModel, RetKind, SymbolResolver, SymbolTable,
};

fn module_of(p: &Plan) -> String {
    format!("{}-module.o", p.prefix)
}

#[test]
fn every_arch_loads_near_and_relocates_correctly() {
    for p in PLANS {
        let file = module_of(&p);
        let l = load_pair(&p, &file, p.near, OverflowPolicy::Strict).unwrap_or_else(|e| panic!("{}: {e}", p.prefix));
        let m = &l.module;
        assert_eq!(m.machine, p.machine);
        assert_eq!(m.role, ObjectRole::Module);
        assert!(m.truncations.is_empty(), "{}: {:?}", p.prefix, m.truncations);
        // The percpu section went to the reserved chunk, right after the static area.
        let pc = m.percpu.as_ref().expect("module percpu");
        assert_eq!(pc.ptr, l.percpu.allocations[0].0, "{}: {:?}", p.prefix, l.percpu.allocations);
        assert!(pc.ptr >= p.pstart && pc.ptr < p.pstart + 0x1_0000, "{}: {:#x}", p.prefix, pc.ptr);
        // Symbols in it were rebased onto the allocation.
        let counter = m.symbol("pcpu_counter").unwrap();
        assert!(counter.percpu);
        assert!(counter.value >= pc.ptr && counter.value + 4 <= pc.ptr + pc.size, "{}", p.prefix);
        // Every possible CPU got the initial value 5.
        let width = if m.is_64 { 8 } else { 4 };
        for cpu in 0..l.percpu.nr_units() {
            let b = l.percpu.read(cpu, counter.value, width).unwrap();
            assert_eq!(get(b, 0, width, m.little_endian), 5, "{} cpu {cpu}", p.prefix);
        }
        // The kernel's exported percpu variable resolved as percpu.
        assert!(l.kernel.symbol("kernel_pcpu_var").unwrap().percpu);
        // Independent decode of the relocated fields.
        let n = verify_relocations(&file, m);
        assert!(n >= 10, "{}: only {n} relocations checked", p.prefix);
        // The contract.
        let abi = m.abi.as_ref().expect("abi note");
        let model = match p.machine {
            Machine::X86_64 => PercpuModel::X86ZeroBased,
            Machine::Aarch64 => PercpuModel::Arm64TpidrEl1,
            Machine::S390x => PercpuModel::S390Lowcore,
            _ => PercpuModel::ThreadInfo,
        };
        assert_eq!(abi.model, model, "{}", p.prefix);
        assert_eq!(abi.weak_percpu(), matches!(p.machine, Machine::Alpha | Machine::S390x), "{}", p.prefix);
        let t = &m.tests;
        assert_eq!(t.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["read", "add", "small", "dynamic"]);
        assert_eq!(t[0].target, counter.value);
        assert_eq!(t[0].fn_addr, m.symbol("test_read").unwrap().value);
        assert_eq!((t[0].op, t[0].ret, t[0].init, t[0].expect_ret, t[0].width), (Op::Read, RetKind::Old, 5, 5, 8));
        assert_eq!((t[1].op, t[1].ret, t[1].operand), (Op::Add, RetKind::New, 3));
        assert_eq!(t[2].target, m.symbol("pcpu_small").unwrap().value);
        assert!(t[3].flags.dynamic() && t[3].flags.expect_caught() && !t[3].flags.once());
        assert_eq!(t[3].target, m.symbol("percpu_slot").unwrap().value);
        assert_eq!(t[3].bug.as_deref(), Some("offset truncated to 32 bits"));
        assert!(t[0].bug.is_none());
    }
}

#[test]
fn x86_64_far_module_truncates_pc32_like_the_kernel_and_strict_refuses() {
    let p = plan(Machine::X86_64);
    let l = load_pair(&p, "x86_64-module.o", p.far, OverflowPolicy::Kernel).unwrap();
    let t = l.module.truncations.iter().find(|t| t.percpu).expect("a truncated percpu reference");
    assert_eq!(t.type_name, Some("R_X86_64_PC32"));
    let e = load_pair(&p, "x86_64-module.o", p.far, OverflowPolicy::Strict).err().unwrap();
    let s = e.to_string();
    assert!(matches!(e, LoadError::Overflow { .. }), "{s}");
    assert!(s.contains("R_X86_64_PC32 (2)") && s.contains("x86_64 relative percpu") && s.contains("±2 GiB"), "{s}");
}

#[test]
fn x86_64_zero_based_percpu_above_2g_overflows_32s() {
    let mut p = plan(Machine::X86_64);
    p.pstart = 0x1_0000_0000;
    let e = load_pair(&p, "x86_64-module.o", p.near, OverflowPolicy::Kernel).err().unwrap();
    let s = e.to_string();
    assert!(s.contains("R_X86_64_32S (11)") && s.contains("zero-based") && s.contains("sign-extended 32-bit"), "{s}");
}

#[test]
fn aarch64_far_module_overflows_adrp_with_the_arm64_rule() {
    let p = plan(Machine::Aarch64);
    let e = load_pair(&p, "aarch64-module.o", p.far, OverflowPolicy::Kernel).err().unwrap();
    let s = e.to_string();
    assert!(s.contains("R_AARCH64_ADR_PREL_PG_HI21 (275)") && s.contains("adrp reach is ±4 GiB"), "{s}");
    assert!(s.contains(".text.test_read+0x"), "{s}");
}

#[test]
fn aarch64_far_call_goes_through_a_plt_entry() {
    let p = plan(Machine::Aarch64);
    // Kernel text 256 MiB below the module: out of CALL26's ±128 MiB.
    let l = load_pair(&p, "aarch64-module.o", p.near, OverflowPolicy::Strict).unwrap();
    let plt = l.module.section(".plt").expect("a PLT");
    assert_eq!(plt.data.len(), 16);
    assert_eq!(
        u64::from_le_bytes(plt.data[8..16].try_into().unwrap()),
        l.kernel.symbol("kernel_helper").unwrap().value
    );
}

#[test]
fn alpha_weak_percpu_goes_through_the_got_and_survives_far() {
    let p = plan(Machine::Alpha);
    for base in [p.near, p.far] {
        let l = load_pair(&p, "alpha-module.o", base, OverflowPolicy::Strict).unwrap();
        let got = l.module.section(".got").unwrap();
        assert!(!got.data.is_empty());
        assert_eq!(l.module.gp, Some(got.end() - 0x8000));
        verify_relocations("alpha-module.o", &l.module);
    }
}

#[test]
fn alpha_strong_percpu_far_breaks_the_weak_rule() {
    let p = plan(Machine::Alpha);
    load_pair(&p, "alpha-module-strong.o", p.near, OverflowPolicy::Strict).unwrap();
    let e = load_pair(&p, "alpha-module-strong.o", p.far, OverflowPolicy::Kernel).err().unwrap();
    let s = e.to_string();
    assert!(s.contains("R_ALPHA_GPRELHIGH (17)"), "{s}");
    assert!(s.contains("alpha modules must define percpu variables weak: GP-relative reach is +-2 GiB"), "{s}");
}

#[test]
fn s390x_weak_percpu_gotent_survives_far_and_uses_the_plt() {
    let p = plan(Machine::S390x);
    let l = load_pair(&p, "s390x-module.o", p.far, OverflowPolicy::Strict).unwrap();
    assert!(verify_relocations("s390x-module.o", &l.module) >= 8);
    let plt = l.module.section(".plt").expect("PLT");
    assert_eq!(&plt.data[..4], &[0x0d, 0x10, 0xe3, 0x10]);
    assert_eq!(
        u64::from_be_bytes(plt.data[12..20].try_into().unwrap()),
        l.kernel.symbol("kernel_helper").unwrap().value
    );
}

#[test]
fn s390x_strong_percpu_far_breaks_the_larl_rule() {
    let p = plan(Machine::S390x);
    load_pair(&p, "s390x-module-strong.o", p.near, OverflowPolicy::Strict).unwrap();
    let e = load_pair(&p, "s390x-module-strong.o", p.far, OverflowPolicy::Kernel).err().unwrap();
    let s = e.to_string();
    assert!(s.contains("R_390_PC32DBL (19)"), "{s}");
    assert!(s.contains("s390x modules must define percpu variables weak: larl reach is +-4 GiB"), "{s}");
    // Every reference out of reach, by variable and function (issue 12 item 17).
    let LoadError::Overflow { uses, .. } = &e else { panic!("{e:?}") };
    assert!(!uses.is_empty(), "{s}");
    assert!(s.contains(&format!("every reference out of reach ({})", uses.len())), "{s}");
    for u in uses {
        assert!(u.function.is_some(), "{u:?}");
        assert!(!u.variable.starts_with('.'), "a section symbol named as the variable: {u:?}");
        assert!(s.contains(&format!("`{}` from {}", u.variable, u.function.as_deref().unwrap())), "{s}");
    }
}

#[test]
fn riscv_far_module_overflows_auipc() {
    let p = plan(Machine::Riscv64);
    let e = load_pair(&p, "riscv64-module.o", p.far, OverflowPolicy::Kernel).err().unwrap();
    let s = e.to_string();
    assert!(s.contains("R_RISCV_PCREL_HI20 (23)") && s.contains("auipc"), "{s}");
}

#[test]
fn sparc32_reaches_everything() {
    let p = plan(Machine::Sparc);
    let l = load_pair(&p, "sparc-module.o", p.far, OverflowPolicy::Strict).unwrap();
    assert!(!l.module.is_64 && !l.module.little_endian);
    verify_relocations("sparc-module.o", &l.module);
}

#[test]
fn percpu_larger_than_the_reserved_chunk_is_the_kernels_error() {
    let p = plan(Machine::X86_64);
    let bytes = data("x86_64-module.o");
    let mut pcpu = InMemoryPercpu::new(2, 0x1000, 8, 0x1000_0000, 0);
    let mut lay = LinearLayout::at(p.near);
    let rt = runtime(p.near);
    let mut k = SymbolTable::new();
    k.define_percpu("kernel_pcpu_var", 0x40)
        .define("kernel_helper", 0xffff_ffff_8100_0000)
        .define("__per_cpu_offset", 0xffff_ffff_8200_0000);
    let e = load_module(
        "x86_64-module.o",
        &bytes,
        &LoadOptions::default(),
        &mut pcpu,
        &mut lay,
        &[&k as &dyn SymbolResolver, &rt],
    )
    .err()
    .unwrap();
    assert!(matches!(e, LoadError::PercpuAlloc { .. }));
    assert!(e.to_string().contains("Could not allocate 16 bytes percpu data"), "{e}");
}

#[test]
fn percpu_alignment_above_page_size_is_clamped_with_a_warning() {
    let mut bytes = data("x86_64-module.o");
    let i = section_index(&bytes, ".data..percpu");
    let off = shdr_field(&bytes, i, 48, 32);
    put(&mut bytes, off, 8, 0x10000, true);
    let mut pcpu = InMemoryPercpu::new(2, 0x1000, 8192, 0x1000_0000, 0);
    let mut lay = LinearLayout::at(0xffff_ffff_c000_0000);
    let any = |n: &str| {
        Some(percpu_loader::ResolvedSymbol {
            value: if n == "kernel_pcpu_var" { 0x40 } else { 0xffff_ffff_8100_0000 },
            percpu: false,
        })
    };
    let m = load_module("x", &bytes, &LoadOptions::default(), &mut pcpu, &mut lay, &[&any]).unwrap();
    assert_eq!(m.percpu.as_ref().unwrap().align, 4096);
    assert_eq!(m.percpu.as_ref().unwrap().requested_align, 0x10000);
    assert_eq!(m.percpu.as_ref().unwrap().ptr % 4096, 0);
    assert!(m.warnings.iter().any(|w| w.contains("per-cpu alignment 65536 > 4096")), "{:?}", m.warnings);
}

#[test]
fn unknown_symbols_are_refused_and_weak_ones_resolve_to_zero() {
    let bytes = data("x86_64-module.o");
    let mut pcpu = InMemoryPercpu::new(2, 0x1000, 8192, 0x1000_0000, 0);
    let mut lay = LinearLayout::at(0xffff_ffff_c000_0000);
    let e = load_module("m.o", &bytes, &LoadOptions::default(), &mut pcpu, &mut lay, &[]).err().unwrap();
    assert!(matches!(e, LoadError::UnknownSymbol { .. }), "{e}");
    assert!(e.to_string().starts_with("m.o: Unknown symbol "), "{e}");
}

#[test]
fn linked_image_reports_the_static_area_and_serves_a_module() {
    let bytes = data("x86_64-vmlinux");
    let mut lay = LinearLayout::at(0);
    let k = load_kernel_image("x86_64-vmlinux", &bytes, &LoadOptions::default(), &mut lay, &[]).unwrap();
    assert_eq!(k.role, ObjectRole::LinkedImage);
    let sp = k.static_percpu.as_ref().unwrap();
    assert_eq!(sp.start, 0);
    assert!(sp.end >= 64 + 16, "{sp:?}");
    assert_eq!(sp.load, k.symbol("__per_cpu_load").unwrap().value);
    assert!(sp.load >= 0xffff_ffff_8100_0000);
    let var = k.symbol("kernel_pcpu_var").unwrap();
    assert!(var.percpu && var.value < sp.end);
    // Its initial value (42) is in the static area's data.
    assert_eq!(u64::from_le_bytes(sp.data[var.value as usize..var.value as usize + 8].try_into().unwrap()), 42);
    // A module resolves against it.
    let mut pcpu = InMemoryPercpu::new(2, (sp.end + 7) & !7, 8192, 0x1000_0000, 0);
    let mut ml = LinearLayout::at(0xffff_ffff_c000_0000);
    let exports = k.exports();
    let rt = runtime(0xffff_ffff_c000_0000);
    let m = load_module(
        "x86_64-module.o",
        &data("x86_64-module.o"),
        &LoadOptions::default(),
        &mut pcpu,
        &mut ml,
        &[&exports as &dyn SymbolResolver, &rt],
    )
    .unwrap();
    verify_relocations("x86_64-module.o", &m);
}

#[test]
fn relocations_inside_module_percpu_are_skipped_like_the_kernel() {
    // The kernel image's static area is relocated (its self pointer)...
    let p = plan(Machine::X86_64);
    let l = load_pair(&p, "x86_64-module.o", p.near, OverflowPolicy::Strict).unwrap();
    let sp = l.kernel.static_percpu.as_ref().unwrap();
    let selfp = l.kernel.symbol("kernel_pcpu_self").unwrap();
    let v = u64::from_le_bytes(sp.data[(selfp.value - sp.start) as usize..][..8].try_into().unwrap());
    assert_eq!(v, l.kernel.symbol("kernel_pcpu_var").unwrap().value);
    // ...but a kernel object loaded as a module gets the kernel's warning.
    let mut pcpu = InMemoryPercpu::new(2, 0x1000, 8192, 0x1000_0000, 0);
    let mut lay = LinearLayout::at(0xffff_ffff_c000_0000);
    let m = load_module("x86_64-kernel.o", &data("x86_64-kernel.o"), &LoadOptions::default(), &mut pcpu, &mut lay, &[])
        .unwrap();
    assert!(m.warnings.iter().any(|w| w.contains("relocations in .data..percpu are not applied")), "{:?}", m.warnings);
}

#[test]
fn write_relocated_elf_round_trips_through_a_parser() {
    for p in PLANS {
        let l = load_pair(&p, &module_of(&p), p.near, OverflowPolicy::Strict).unwrap();
        let out = write_relocated_elf(&l.module);
        let obj = percpu_loader::ElfObject::parse("out", &out).unwrap_or_else(|e| panic!("{}: {e}", p.prefix));
        assert_eq!(obj.e_machine, l.module.e_machine);
        assert_eq!(obj.little_endian, l.module.little_endian);
        for s in &l.module.sections {
            let o = obj.section_by_name(&s.name).unwrap_or_else(|| panic!("{}: {}", p.prefix, s.name));
            assert_eq!(o.addr, s.addr, "{} {}", p.prefix, s.name);
            if !s.nobits {
                assert_eq!(obj.section_data(o.index), &s.data[..], "{} {}", p.prefix, s.name);
            }
        }
        let pc = obj.section_by_name(".data..percpu").unwrap();
        assert_eq!(pc.addr, l.module.percpu.as_ref().unwrap().ptr);
        let sym = obj.symbol_by_name("pcpu_counter").unwrap();
        assert_eq!(sym.value, l.module.symbol("pcpu_counter").unwrap().value);
        assert_eq!(sym.section(), Some(pc.index));
        // objdump can disassemble it at the real addresses (when binutils-multiarch is there).
        if p.machine == Machine::X86_64 {
            let path = std::env::temp_dir().join(format!("percpu-loader-{}-{}.elf", p.prefix, std::process::id()));
            std::fs::write(&path, &out).unwrap();
            if let Ok(o) = std::process::Command::new("objdump").arg("-d").arg(&path).output() {
                let text = String::from_utf8_lossy(&o.stdout);
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                assert!(text.contains("ffffffffc0000000 <test_read>:"), "{text}");
            }
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[test]
fn the_pre_2010_section_name_is_module_percpu_too() {
    let mut b = data("x86_64-module.o");
    let pos = b.windows(14).position(|w| w == b".data..percpu\0").unwrap();
    b[pos..pos + 14].copy_from_slice(b".data.percpu\0\0");
    let mut pcpu = InMemoryPercpu::new(2, 0x1000, 8192, 0x1000_0000, 0);
    let mut lay = LinearLayout::at(0xffff_ffff_c000_0000);
    let any = |n: &str| {
        Some(percpu_loader::ResolvedSymbol {
            value: if n == "kernel_pcpu_var" { 0x40 } else { 0xffff_ffff_8100_0000 },
            percpu: false,
        })
    };
    let m = load_module("old.o", &b, &LoadOptions::default(), &mut pcpu, &mut lay, &[&any]).unwrap();
    let pc = m.percpu.as_ref().unwrap();
    assert_eq!(pc.section, ".data.percpu");
    assert_eq!(m.symbol("pcpu_counter").map(|s| s.percpu), Some(true));
    let r = percpu_loader::inspect("old.o", &b).unwrap();
    assert!(r.percpu_sections[0].legacy_name && r.percpu_sections[0].module_percpu);
}
