//! Write a loaded object back as an ELF file that objdump and gdb can open:
//! an ET_EXEC with every loaded section at its load address (one PT_LOAD
//! each), the relocated bytes, the GOT/PLT the loader built, the percpu data
//! as a non-allocated `.data..percpu` at the percpu pointer, and a symbol
//! table with final values.
//!
//! ```text
//! objdump -d relocated.elf        # disassembly at the real addresses
//! gdb -ex 'add-symbol-file relocated.elf' ...
//! ```

use object::elf as e;
use object::write::elf::{FileHeader, ProgramHeader, SectionHeader, SectionIndex, Sym, Writer};
use object::write::StringId;
use object::Endianness;

use crate::elf::{SHF_ALLOC, SHF_EXECINSTR, SHF_WRITE};
use crate::load::LoadedObject;

struct OutSection<'a> {
    name: StringId,
    index: SectionIndex,
    sh_type: u32,
    flags: u64,
    addr: u64,
    align: u64,
    data: &'a [u8],
    size: u64,
    offset: usize,
    load: bool,
}

/// Serialise `obj` (see the module docs).  Never fails: every input is
/// already validated by the loader.
pub fn write_relocated_elf(obj: &LoadedObject) -> Vec<u8> {
    let mut buf = Vec::new();
    let endian = if obj.little_endian { Endianness::Little } else { Endianness::Big };
    let mut w = Writer::new(endian, obj.is_64, &mut buf);

    // Sections: the loaded ones, then the percpu data.
    let percpu_name: &[u8] = b".data..percpu";
    let mut outs: Vec<OutSection<'_>> = Vec::new();
    w.reserve_file_header();
    let nload = obj.sections.iter().filter(|s| s.size > 0 && !s.nobits).count()
        + obj.sections.iter().filter(|s| s.size > 0 && s.nobits).count();
    w.reserve_program_headers(nload as u32);
    w.reserve_null_section_index();
    for s in &obj.sections {
        let name = w.add_section_name(s.name.as_bytes());
        let index = w.reserve_section_index();
        outs.push(OutSection {
            name,
            index,
            sh_type: if s.nobits { e::SHT_NOBITS } else { e::SHT_PROGBITS },
            flags: s.flags | SHF_ALLOC,
            addr: s.addr,
            align: s.align.max(1),
            data: if s.nobits { &[] } else { &s.data },
            size: s.size,
            offset: 0,
            load: s.size > 0,
        });
    }
    let percpu: Option<(u64, &[u8], u64)> = match (&obj.percpu, &obj.static_percpu) {
        (Some(p), _) => Some((p.ptr, &p.data, p.align)),
        (None, Some(s)) => Some((s.start, &s.data, s.align)),
        _ => None,
    };
    let percpu_index = percpu.map(|(addr, data, align)| {
        let name = w.add_section_name(percpu_name);
        let index = w.reserve_section_index();
        outs.push(OutSection {
            name,
            index,
            sh_type: e::SHT_PROGBITS,
            flags: SHF_WRITE,
            addr,
            align: align.max(1),
            data,
            size: data.len() as u64,
            offset: 0,
            load: false,
        });
        index
    });
    for o in &mut outs {
        o.offset = w.reserve(o.data.len(), o.align.min(4096) as usize);
    }

    // Symbols: locals first.
    let section_of = |name: &Option<String>, percpu: bool| -> Option<SectionIndex> {
        if percpu {
            return percpu_index;
        }
        let n = name.as_ref()?;
        obj.sections.iter().position(|s| &s.name == n).map(|i| outs[i].index)
    };
    let mut syms: Vec<(StringId, Option<SectionIndex>, u8, u64, u64)> = Vec::new();
    let mut num_local = 1u32;
    for pass in [true, false] {
        for s in obj.symbols.iter().filter(|s| !s.name.is_empty() && s.kind != 3 && s.kind != 4) {
            let local = s.bind == crate::elf::STB_LOCAL;
            if local != pass {
                continue;
            }
            let sec = if s.defined { section_of(&s.section, s.percpu) } else { None };
            let info = (s.bind << 4) | (s.kind & 0xf);
            let name = w.add_string(s.name.as_bytes());
            syms.push((name, sec, info, s.value, s.size));
            if local {
                num_local += 1;
            }
        }
    }
    for (_, sec, ..) in &syms {
        w.reserve_symbol_index(*sec);
    }
    w.reserve_symtab_section_index();
    w.reserve_symtab();
    if w.symtab_shndx_needed() {
        w.reserve_symtab_shndx_section_index();
    }
    w.reserve_symtab_shndx();
    w.reserve_strtab_section_index();
    w.reserve_strtab();
    w.reserve_shstrtab_section_index();
    w.reserve_shstrtab();
    w.reserve_section_headers();

    // Write.
    let entry = obj.sections.iter().find(|s| s.flags & SHF_EXECINSTR != 0).map(|s| s.addr).unwrap_or(0);
    w.write_file_header(&FileHeader {
        os_abi: e::ELFOSABI_NONE,
        abi_version: 0,
        e_type: e::ET_EXEC,
        e_machine: obj.e_machine,
        e_entry: entry,
        e_flags: obj.e_flags,
    })
    .expect("ELF header fields are in range");
    w.write_align_program_headers();
    for o in outs.iter().filter(|o| o.load) {
        let mut pf = e::PF_R;
        if o.flags & SHF_WRITE != 0 {
            pf |= e::PF_W;
        }
        if o.flags & SHF_EXECINSTR != 0 {
            pf |= e::PF_X;
        }
        w.write_program_header(&ProgramHeader {
            p_type: e::PT_LOAD,
            p_flags: pf,
            p_offset: o.offset as u64,
            p_vaddr: o.addr,
            p_paddr: o.addr,
            p_filesz: o.data.len() as u64,
            p_memsz: o.size,
            p_align: 1,
        });
    }
    for o in &outs {
        w.write_align(o.align.min(4096) as usize);
        debug_assert_eq!(w.len(), o.offset);
        w.write(o.data);
    }
    w.write_null_symbol();
    for (name, sec, info, value, size) in &syms {
        w.write_symbol(&Sym {
            name: Some(*name),
            section: *sec,
            st_info: *info,
            st_other: 0,
            st_shndx: if sec.is_some() { 0 } else { e::SHN_ABS },
            st_value: *value,
            st_size: *size,
        });
    }
    w.write_symtab_shndx();
    w.write_strtab();
    w.write_shstrtab();
    w.write_null_section_header();
    for o in &outs {
        w.write_section_header(&SectionHeader {
            name: Some(o.name),
            sh_type: o.sh_type,
            sh_flags: o.flags,
            sh_addr: o.addr,
            sh_offset: o.offset as u64,
            sh_size: o.size,
            sh_link: 0,
            sh_info: 0,
            sh_addralign: o.align,
            sh_entsize: 0,
        });
    }
    w.write_symtab_section_header(num_local);
    w.write_symtab_shndx_section_header();
    w.write_strtab_section_header();
    w.write_shstrtab_section_header();
    debug_assert_eq!(w.reserved_len(), w.len());
    buf
}
