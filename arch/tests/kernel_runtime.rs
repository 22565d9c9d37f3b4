//! The kernel runtime on a module synthesised here (no kernel tree needed):
//! an x86_64 `.ko` whose init prints through `_printk` and returns -EAGAIN,
//! and the errors a real module can meet (an import the runtime does not
//! know, nothing to run).  `ci/kernel.sh` runs modules built from a real
//! tree.

use std::collections::{BTreeMap, HashMap};

use object::write::{Object, Relocation, StandardSection, Symbol, SymbolSection};
use object::{elf, Architecture, BinaryFormat, Endianness, RelocationFlags, SymbolFlags, SymbolKind, SymbolScope};
use percpu_arch::check::{run_kernel_modules, CheckError, ModuleExpect, Scenario, Status};
use percpu_arch::runtime::RtAbi;
use percpu_core::CpuSet;

/// The runtime ABI of Debian's 6.1.192 x86_64 defconfig build, as the
/// probe module records it.
fn x86_64_abi() -> RtAbi {
    let r: BTreeMap<String, u64> = [
        ("rtabi_version", 1),
        ("linux_version_code", 0x601c0),
        ("nr_cpus", 64),
        ("page_size", 4096),
        ("thread_size", 16384),
        ("sizeof_long", 8),
        ("gfp_kernel", 0xcc0),
        ("preempt_enabled", 0x8000_0000),
        ("preempt_need_resched", 0x8000_0000),
        ("preempt_disable_offset", 1),
        ("config_preempt_count", 1),
        ("config_preemption", 1),
        ("config_smp", 1),
        ("sizeof_task_struct", 0x1c80),
        ("sizeof_thread_info", 0x18),
        ("task_thread_info", 0),
        ("ti_cpu", 0x14),
        ("sizeof_bug_entry", 12),
        ("bug_relative_pointers", 1),
        ("bug_entry_addr", 0),
        ("bug_entry_file", 4),
        ("bug_entry_line", 8),
        ("bug_entry_flags", 10),
        ("bugflag_warning", 1),
        ("bugflag_once", 2),
        ("bugflag_done", 4),
        ("errno_EAGAIN", 11),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    RtAbi::from_records(&r).unwrap()
}

/// `init_module() { _printk(KERN_INFO "percpu %d done\n", 42); return -11; }`
/// calling `callee` instead of `_printk`, as Kbuild would lay it out.
fn module(callee: &str) -> Vec<u8> {
    #[rustfmt::skip]
    let code = [
        0x48, 0x8d, 0x3d, 0, 0, 0, 0, // lea fmt(%rip), %rdi
        0xbe, 0x2a, 0, 0, 0,          // mov $42, %esi
        0xe8, 0, 0, 0, 0,             // call callee
        0xb8, 0xf5, 0xff, 0xff, 0xff, // mov $-11, %eax
        0xc3,                         // ret
    ];
    ko(&code, &[(13, callee)], Some((3, b"\x016percpu %d done\n\0")))
}

/// An x86_64 `.ko` whose `init_module` is `code`, with a PLT32 call
/// relocation at each `(offset, callee)` and, if given, a string in
/// .rodata reached by a PC32 relocation at `offset`.
fn ko(code: &[u8], calls: &[(u64, &str)], string: Option<(u64, &[u8])>) -> Vec<u8> {
    let mut o = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    let text = o.section_id(StandardSection::Text);
    o.append_section_data(text, code, 16);
    let modinfo = o.add_section(Vec::new(), b".modinfo".to_vec(), object::SectionKind::ReadOnlyData);
    o.append_section_data(modinfo, b"vermagic=6.1.192 SMP preempt mod_unload \0license=GPL\0", 1);
    let sym = |o: &mut Object, name: &str, section, value, kind, scope| {
        o.add_symbol(Symbol {
            name: name.as_bytes().to_vec(),
            value,
            size: 0,
            kind,
            scope,
            weak: false,
            section,
            flags: SymbolFlags::None,
        })
    };
    sym(&mut o, "init_module", SymbolSection::Section(text), 0, SymbolKind::Text, SymbolScope::Dynamic);
    let mut relocs = Vec::new();
    if let Some((at, bytes)) = string {
        let rodata = o.section_id(StandardSection::ReadOnlyString);
        let off = o.append_section_data(rodata, bytes, 1);
        let s = sym(&mut o, ".LC0", SymbolSection::Section(rodata), off, SymbolKind::Data, SymbolScope::Compilation);
        relocs.push((at, s, elf::R_X86_64_PC32));
    }
    for &(at, callee) in calls {
        let s = sym(&mut o, callee, SymbolSection::Undefined, 0, SymbolKind::Text, SymbolScope::Dynamic);
        relocs.push((at, s, elf::R_X86_64_PLT32));
    }
    for (offset, symbol, r_type) in relocs {
        o.add_relocation(text, Relocation { offset, symbol, addend: -4, flags: RelocationFlags::Elf { r_type } })
            .unwrap();
    }
    o.write().unwrap()
}

fn scenario(cpus: u32) -> Scenario {
    Scenario::new("x86_64", Some("zero-based"), CpuSet::first_n(cpus)).unwrap()
}

#[test]
fn init_runs_on_every_cpu_with_printk_captured() {
    let ko = module("_printk");
    let abi = x86_64_abi();
    let expect =
        ModuleExpect { init_returns: -11, printk: vec!["percpu 42 done".into()], planted: None, ..Default::default() };
    let expects = HashMap::from([("m.ko".to_string(), expect)]);
    let r = run_kernel_modules(&scenario(3), &abi, &[("m.ko", &ko)], &expects).unwrap();
    assert_eq!(r.tests.len(), 1, "{r}");
    let t = &r.tests[0];
    assert_eq!(t.status, Status::Pass, "{r}");
    assert_eq!(t.runs.len(), 3);
    assert!(t.runs.iter().all(|run| run.printk == ["percpu 42 done"]), "{:?}", t.runs);
    assert_eq!(t.printk, ["[cpu 0] percpu 42 done"]);
}

#[test]
fn a_wrong_return_value_or_missing_line_fails() {
    let ko = module("_printk");
    let abi = x86_64_abi();
    let expect =
        ModuleExpect { init_returns: 0, printk: vec!["percpu test done".into()], planted: None, ..Default::default() };
    let expects = HashMap::from([("m.ko".to_string(), expect)]);
    let r = run_kernel_modules(&scenario(2), &abi, &[("m.ko", &ko)], &expects).unwrap();
    let t = &r.tests[0];
    assert_eq!(t.status, Status::Fail, "{r}");
    let text = r.to_string();
    assert!(text.contains("init_module returned -11 (-EAGAIN), expected 0"), "{text}");
    assert!(text.contains("did not print a line containing \"percpu test done\""), "{text}");
}

#[test]
fn an_unknown_import_names_the_symbol_and_the_module() {
    let ko = module("frobnicate_percpu");
    match run_kernel_modules(&scenario(2), &x86_64_abi(), &[("frob.ko", &ko)], &HashMap::new()) {
        Err(e @ CheckError::UnknownImport { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("frobnicate_percpu") && msg.contains("frob.ko"), "{msg}");
        }
        other => panic!("expected UnknownImport, got {other:?}"),
    }
}

#[test]
fn a_module_with_nothing_to_run_is_an_error_unless_load_only() {
    // The same module without init_module: rename the symbol.
    let mut ko = module("_printk");
    let at = ko.windows(11).position(|w| w == b"init_module").unwrap();
    ko[at..at + 11].copy_from_slice(b"just_loaded");
    match run_kernel_modules(&scenario(2), &x86_64_abi(), &[("idle.ko", &ko)], &HashMap::new()) {
        Err(e @ CheckError::NothingToRun { .. }) => assert!(e.to_string().contains("idle.ko"), "{e}"),
        other => panic!("expected NothingToRun, got {other:?}"),
    }
    let mut sc = scenario(2);
    sc.load_only = true;
    let r = run_kernel_modules(&sc, &x86_64_abi(), &[("idle.ko", &ko)], &HashMap::new()).unwrap();
    assert!(r.tests.is_empty());
}

#[test]
fn a_use_after_free_percpu_names_the_allocation_and_both_call_sites() {
    #[rustfmt::skip]
    let code = [
        0x53,                         // push %rbx
        0xbf, 0x10, 0, 0, 0,          // mov $16, %edi
        0xbe, 0x08, 0, 0, 0,          // mov $8, %esi
        0xe8, 0, 0, 0, 0,             // call __alloc_percpu
        0x48, 0x89, 0xc3,             // mov %rax, %rbx
        0x48, 0x89, 0xc7,             // mov %rax, %rdi
        0xe8, 0, 0, 0, 0,             // call free_percpu
        0x65, 0xff, 0x43, 0x08,       // incl %gs:8(%rbx): this_cpu_inc(p->second)
        0x31, 0xc0,                   // xor %eax, %eax
        0x5b,                         // pop %rbx
        0xc3,                         // ret
    ];
    let ko = ko(&code, &[(12, "__alloc_percpu"), (23, "free_percpu")], None);
    let expects = HashMap::from([("uaf.ko".to_string(), ModuleExpect::default())]);
    let r = run_kernel_modules(&scenario(2), &x86_64_abi(), &[("uaf.ko", &ko)], &expects).unwrap();
    assert_eq!(r.tests[0].status, Status::Fail, "{r}");
    let text = r.to_string();
    assert!(
        text.contains("of freed percpu memory at")
            && text.contains("byte 0x8 of the 16-byte allocation made by alloc_percpu in init_module+0x10 in uaf.ko")
            && text.contains("freed by free_percpu in init_module+0x1b in uaf.ko (a use after free_percpu)"),
        "{text}"
    );
}
