//! Bad input: every malformed object is a typed error with a clear message,
//! never a panic.

#![allow(clippy::result_large_err)]

mod common;

use common::*;
use percpu_loader::elf::ElfObject;
use percpu_loader::inspect::inspect;
use percpu_loader::{load_object, InMemoryPercpu, LinearLayout, LoadError, LoadOptions, LoadedObject, ResolvedSymbol};

fn resolver(name: &str) -> Option<ResolvedSymbol> {
    Some(ResolvedSymbol { value: if name == "kernel_pcpu_var" { 0x40 } else { 0xffff_ffff_8100_0000 }, percpu: false })
}

fn load(bytes: &[u8]) -> Result<LoadedObject, LoadError> {
    let mut pcpu = InMemoryPercpu::new(2, 0x1000, 8192, 0x1000_0000, 0);
    let mut lay = LinearLayout::at(0xffff_ffff_c000_0000);
    load_object("bad.o", bytes, &LoadOptions::default(), &mut pcpu, &mut lay, &[&resolver])
}

fn x86() -> Vec<u8> {
    data("x86_64-module.o")
}

/// File offset of relocation `k` in the RELA section applying to `target`.
fn rela_entry(bytes: &[u8], target: &str, k: usize) -> usize {
    let o = ElfObject::parse("x", bytes).unwrap();
    let t = o.sections.iter().position(|s| s.name == target).unwrap();
    let rs = o.relocs.iter().find(|r| r.target == t).unwrap();
    o.sections[rs.index].offset as usize + k * 24
}

#[test]
fn wrong_magic_and_tiny_files() {
    for b in [&b""[..], b"\x7fEL", b"MZ\x90\x00 not elf", b"\x7fELF"] {
        let e = load(b).err().unwrap();
        assert!(matches!(e, LoadError::BadMagic { .. } | LoadError::Truncated { .. }), "{e}");
        assert!(inspect("bad.o", b).is_err());
    }
    let e = load(b"\x7fELF\x03\x01\x01\0\0\0\0\0\0\0\0\0").err().unwrap();
    assert!(e.to_string().contains("bad EI_CLASS 3"), "{e}");
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    for file in ["x86_64-module.o", "s390x-module.o", "sparc-module.o", "x86_64-vmlinux"] {
        let full = data(file);
        for len in 0..full.len() {
            let b = &full[..len];
            assert!(inspect(file, b).is_err() || len >= 64, "{file} len {len}");
            let _ = load(b);
        }
    }
    let e = load(&x86()[..200]).err().unwrap();
    assert!(matches!(e, LoadError::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("truncated: section header"), "{e}");
}

#[test]
fn symbol_section_index_out_of_range() {
    let mut b = x86();
    let o = ElfObject::parse("x", &b).unwrap();
    let symtab = &o.sections[o.symtab.unwrap()];
    let k = o.symbols.iter().position(|s| s.name == "pcpu_counter").unwrap();
    put(&mut b, symtab.offset as usize + k * 24 + 6, 2, 0x500, true);
    let e = load(&b).err().unwrap();
    assert!(matches!(e, LoadError::SectionIndex { .. }), "{e}");
    assert!(
        e.to_string().contains("symbol `pcpu_counter`") && e.to_string().contains("section index 1280 out of range"),
        "{e}"
    );
}

#[test]
fn relocation_section_pointing_nowhere() {
    let mut b = x86();
    let i = section_index(&b, ".rela.percpu_bed.tests");
    let off = shdr_field(&b, i, 44, 28);
    put(&mut b, off, 4, 999, true);
    let e = load(&b).err().unwrap();
    assert!(matches!(e, LoadError::BadRelocTarget { .. }), "{e}");
    assert!(e.to_string().contains("applies to section 999 which does not exist"), "{e}");
}

#[test]
fn relocation_symbol_index_out_of_range() {
    let mut b = x86();
    let off = rela_entry(&b, ".percpu_bed.tests", 0);
    put(&mut b, off + 8 + 4, 4, 0xffff, true);
    let e = load(&b).err().unwrap();
    assert!(matches!(e, LoadError::SymbolIndex { .. }), "{e}");
}

#[test]
fn sizes_that_overflow() {
    let mut b = x86();
    let i = section_index(&b, ".percpu_bed.tests");
    let at = shdr_field(&b, i, 24, 16);
    put(&mut b, at, 8, u64::MAX - 4, true);
    let e = load(&b).err().unwrap();
    assert!(matches!(e, LoadError::SizeOverflow { .. }), "{e}");
    // A huge NOBITS section is refused before anything is allocated.
    let mut b = x86();
    let i = ElfObject::parse("x", &b).unwrap().sections.iter().position(|s| s.is_nobits() && s.is_alloc()).unwrap();
    let at = shdr_field(&b, i, 32, 20);
    put(&mut b, at, 8, 1 << 60, true);
    let e = load(&b).err().unwrap();
    assert!(matches!(e, LoadError::SizeOverflow { .. }), "{e}");
    // So is a section table that cannot fit the file.
    let mut b = x86();
    put(&mut b, 0x3c, 2, 0xfff0, true);
    let e = load(&b).err().unwrap();
    assert!(matches!(e, LoadError::Truncated { .. }), "{e}");
}

#[test]
fn unsupported_machine() {
    let mut b = x86();
    put(&mut b, 18, 2, 8, true); // EM_MIPS
    let e = load(&b).err().unwrap();
    assert!(matches!(e, LoadError::UnsupportedMachine { machine: 8, .. }), "{e}");
    assert!(e.to_string().contains("MIPS"), "{e}");
    // inspect refuses it too, before reading relocations (issue 12 item 4).
    let e = inspect("x", &b).unwrap_err();
    assert!(matches!(e, LoadError::UnsupportedMachine { machine: 8, .. }), "{e}");
}

#[test]
fn unknown_and_unsupported_relocation_types() {
    let mut b = x86();
    let off = rela_entry(&b, ".percpu_bed.tests", 0);
    put(&mut b, off + 8, 4, 200, true);
    let e = load(&b).err().unwrap();
    let s = e.to_string();
    assert!(matches!(e, LoadError::UnknownRelocation { .. }), "{s}");
    assert!(
        s.contains("type 200 (unknown name)") && s.contains(".percpu_bed.tests+0x18") && s.contains("x86_64"),
        "{s}"
    );
    put(&mut b, off + 8, 4, 9, true); // R_X86_64_GOTPCREL
    let s = load(&b).err().unwrap().to_string();
    assert!(s.contains("R_X86_64_GOTPCREL (9)"), "{s}");
}

#[test]
fn relocation_past_the_end_of_its_section() {
    let mut b = x86();
    let off = rela_entry(&b, ".percpu_bed.tests", 0);
    put(&mut b, off, 8, 0x10_0000, true);
    let e = load(&b).err().unwrap();
    assert!(matches!(e, LoadError::RelocOutOfSection { .. }), "{e}");
    // Straddling the end is caught by the field write.
    let size = ElfObject::parse("x", &b).unwrap().section_by_name(".percpu_bed.tests").unwrap().size;
    put(&mut b, off, 8, size - 4, true);
    let e = load(&b).err().unwrap();
    assert!(matches!(e, LoadError::RelocOutOfSection { .. }), "{e}");
}

#[test]
fn rel_sections_are_refused() {
    let mut b = x86();
    let i = section_index(&b, ".rela.percpu_bed.tests");
    let at = shdr_field(&b, i, 4, 4);
    put(&mut b, at, 4, 9, true); // SHT_REL
    let e = load(&b).err().unwrap();
    assert!(matches!(e, LoadError::RelNotSupported { .. }), "{e}");
}

#[test]
fn common_symbols_are_refused() {
    let mut b = x86();
    let o = ElfObject::parse("x", &b).unwrap();
    let symtab = &o.sections[o.symtab.unwrap()];
    let k = o.symbols.iter().position(|s| s.name == "percpu_slot").unwrap();
    put(&mut b, symtab.offset as usize + k * 24 + 6, 2, 0xfff2, true);
    let e = load(&b).err().unwrap();
    assert!(e.to_string().contains("please compile with -fno-common"), "{e}");
}

fn tests_data_offset(b: &[u8]) -> usize {
    ElfObject::parse("x", b).unwrap().section_by_name(".percpu_bed.tests").unwrap().offset as usize
}

#[test]
fn bad_descriptor_fields_name_object_test_and_field() {
    let base = x86();
    let cases: [(usize, u64, &str, &str); 8] = [
        (56, 3, "width", "3 (want 1, 2, 4 or 8)"),
        (60, 9, "op", "9 (want 0..=4)"),
        (68, 6, "ret", "6 (want 0..=5)"),
        (64, 0x40, "flags", "unknown bits 0x40"),
        (64, 0x20, "flags", "NEEDS_SMP without EXPECT_CAUGHT"),
        (64, 0x14, "flags", "STEPS with ONCE"),
        (64, 0x100, "flags", "CAUGHT_* without EXPECT_CAUGHT"),
        (48, 2, "size", "smaller than the width"),
    ];
    for (field_off, v, field, why) in cases {
        let mut b = base.clone();
        let off = tests_data_offset(&b);
        put(&mut b, off + field_off, 4, v, true);
        let e = load(&b).err().unwrap();
        let s = e.to_string();
        assert!(matches!(e, LoadError::BadDescriptor { index: 0, .. }), "{s}");
        assert!(
            s.starts_with("bad.o: .percpu_bed.tests: test 0 (read): field `") && s.contains(field) && s.contains(why),
            "{s}"
        );
    }
    // A name pointer outside the image (its relocation's addend moved away).
    let mut b = base.clone();
    let o = ElfObject::parse("x", &b).unwrap();
    let t = o.sections.iter().position(|s| s.name == ".percpu_bed.tests").unwrap();
    let rs = o.relocs.iter().find(|r| r.target == t).unwrap();
    let k = rs.entries.iter().position(|r| r.offset == 80 + 24).unwrap();
    let off = rela_entry(&b, ".percpu_bed.tests", k);
    put(&mut b, off + 16, 8, 0x7fff_0000, true);
    let e = load(&b).err().unwrap();
    let s = e.to_string();
    assert!(matches!(e, LoadError::BadDescriptor { index: 1, field: "name", .. }), "{s}");
    assert!(s.contains("outside the loaded image"), "{s}");
    // A section that is not a whole number of descriptors.
    let mut b = base.clone();
    let i = section_index(&b, ".percpu_bed.tests");
    let size = ElfObject::parse("x", &b).unwrap().sections[i].size;
    let at = shdr_field(&b, i, 32, 20);
    put(&mut b, at, 8, size - 8, true);
    let e = load(&b).err().unwrap();
    assert!(matches!(e, LoadError::BadTestsSection { .. } | LoadError::RelocOutOfSection { .. }), "{e}");
}

#[test]
fn bad_abi_note() {
    let mut b = x86();
    let off = ElfObject::parse("x", &b).unwrap().section_by_name(".percpu_bed.abi").unwrap().offset as usize;
    put(&mut b, off + 8, 4, 77, true);
    let e = load(&b).err().unwrap();
    assert!(e.to_string().contains(".percpu_bed.abi: unknown model 77"), "{e}");
    put(&mut b, off, 4, 0x4250_4350, true);
    let e = inspect("x", &b).err().unwrap();
    assert!(e.to_string().contains("wrong byte order?"), "{e}");
}

/// Issue 12 item 5: one validator for `inspect` and the loader.  Each of
/// these objects parses, `run` refuses it, and `inspect` (so `inspect
/// --check`) refuses it for the same reason instead of reporting on it.
#[test]
fn inspect_refuses_what_the_loader_refuses() {
    let base = x86();
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();

    let mut b = base.clone();
    let off = rela_entry(&b, ".percpu_bed.tests", 0);
    put(&mut b, off, 8, 0x10_0000, true);
    cases.push(("relocation offset outside its section", b));

    let mut b = base.clone();
    let i = section_index(&b, ".percpu_bed.tests");
    let at = shdr_field(&b, i, 4, 4);
    put(&mut b, at, 4, 8, true); // SHT_NOBITS
    cases.push(("SHT_NOBITS tests section", b));

    let mut b = base.clone();
    let abi = section_index(&b, ".percpu_bed.abi");
    let abi_name = get(&b, shdr_field(&b, abi, 0, 0), 4, true);
    let other = section_index(&b, ".note.GNU-stack");
    let at = shdr_field(&b, other, 0, 0);
    put(&mut b, at, 4, abi_name, true);
    cases.push(("two ABI notes", b));

    let mut b = base.clone();
    let i = section_index(&b, ".rela.percpu_bed.tests");
    let at = shdr_field(&b, i, 4, 4);
    put(&mut b, at, 4, 9, true); // SHT_REL
    cases.push(("REL relocations", b));

    let mut b = base.clone();
    let i = section_index(&b, ".note.GNU-stack");
    let at = shdr_field(&b, i, 0, 0);
    put(&mut b, at, 4, 0xffff_0000, true);
    cases.push(("section name offset beyond .shstrtab", b));

    // r_info's type (low 32 bits of the 64-bit r_info, at +8 in Elf64_Rela).
    let mut b = base.clone();
    let off = rela_entry(&b, ".percpu_bed.tests", 0);
    put(&mut b, off + 8, 4, 250, true);
    cases.push(("unknown relocation type", b));

    for (what, b) in &cases {
        let from_load = load(b).err().unwrap_or_else(|| panic!("{what}: the loader accepted it"));
        let from_inspect = inspect("bad.o", b).err().unwrap_or_else(|| panic!("{what}: inspect accepted it"));
        assert_eq!(
            std::mem::discriminant(&from_load),
            std::mem::discriminant(&from_inspect),
            "{what}: load says {from_load}, inspect says {from_inspect}"
        );
    }
}
