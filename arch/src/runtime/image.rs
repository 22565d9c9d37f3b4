//! The runtime's kernel image: an ELF relocatable object written for each
//! run, loaded by the bed like any kernel image (see the [`super`] docs).
//!
//! ```text
//! .text           thunks (real code), then one host-call slot per kernel
//!                 function (SLOT_BYTES each, filled with a trapping
//!                 instruction: the engine stops before it runs)
//! .data           __per_cpu_offset[NR_CPUS], __cpu_online_mask,
//!                 __cpu_present_mask, __cpu_active_mask, __stack_chk_guard
//! .data..percpu   the arch's runtime percpu variables, then padding up to
//!                 the static size a real boot reports
//! ```
//!
//! `__cpu_possible_mask` and `nr_cpu_ids` come from the bed's runtime page,
//! as for fixtures.  The NR_CPUS of the arrays is the tree's.

use object::elf as e;
use object::write::elf::{FileHeader, SectionHeader, SectionIndex, Sym, Writer};
use object::write::StringId;
use object::Endianness;

use super::{PercpuVar, RtAbi, HOST_FUNCTIONS};

/// Bytes per host-call slot.
pub const SLOT_BYTES: u64 = 16;
/// The padding object that makes the static area a realistic size.
pub const STATIC_PAD: &str = "pcpubed_rt_static_pad";

/// What to put in the image.
pub struct ImageSpec<'a> {
    pub e_machine: u16,
    pub is_64: bool,
    pub little_endian: bool,
    pub abi: &'a RtAbi,
    pub percpu_vars: Vec<PercpuVar>,
    /// Bytes the `.data..percpu` section should have in all (at least the
    /// variables' own size).
    pub static_bytes: u64,
    pub thunks: Vec<(&'static str, Vec<u8>)>,
    pub slot_fill: &'static [u8],
}

/// The data objects of `.data` (name, bytes).
pub fn data_objects(abi: &RtAbi) -> Vec<(&'static str, u64)> {
    let long = abi.sizeof_long as u64;
    let bits = long * 8;
    let mask = (abi.nr_cpus as u64).div_ceil(bits) * long;
    vec![
        ("__per_cpu_offset", abi.nr_cpus as u64 * long),
        ("__cpu_online_mask", mask),
        ("__cpu_present_mask", mask),
        ("__cpu_active_mask", mask),
        ("__stack_chk_guard", long),
    ]
}

struct Out {
    name: StringId,
    index: SectionIndex,
    flags: u64,
    align: u64,
    data: Vec<u8>,
    offset: usize,
}

/// The image's ELF bytes.
pub fn write(spec: &ImageSpec<'_>) -> Vec<u8> {
    let mut buf = Vec::new();
    let endian = if spec.little_endian { Endianness::Little } else { Endianness::Big };
    let mut w = Writer::new(endian, spec.is_64, &mut buf);
    w.reserve_file_header();
    w.reserve_null_section_index();

    // Contents and symbols: (name, section 0..3, value, size, type).
    let mut syms: Vec<(String, usize, u64, u64, u8)> = Vec::new();
    let mut text = Vec::new();
    let align16 = |v: &mut Vec<u8>| v.resize(v.len().div_ceil(16) * 16, 0);
    for (name, code) in &spec.thunks {
        align16(&mut text);
        syms.push((name.to_string(), 0, text.len() as u64, code.len() as u64, e::STT_FUNC));
        text.extend(code);
    }
    align16(&mut text);
    let thunk_names: Vec<&str> = spec.thunks.iter().map(|(n, _)| *n).collect();
    for (name, _) in HOST_FUNCTIONS.iter().filter(|(n, _)| !thunk_names.contains(n)) {
        syms.push((name.to_string(), 0, text.len() as u64, SLOT_BYTES, e::STT_FUNC));
        let fill: Vec<u8> = spec.slot_fill.iter().copied().cycle().take(SLOT_BYTES as usize).collect();
        text.extend(fill);
    }
    let mut data = Vec::new();
    for (name, size) in data_objects(spec.abi) {
        data.resize(data.len().div_ceil(64) * 64, 0);
        syms.push((name.to_string(), 1, data.len() as u64, size, e::STT_OBJECT));
        data.resize(data.len() + size as usize, 0);
    }
    let mut percpu = Vec::new();
    for v in &spec.percpu_vars {
        let a = v.size.max(1) as usize;
        percpu.resize(percpu.len().div_ceil(a) * a, 0);
        syms.push((v.name.to_string(), 2, percpu.len() as u64, v.size as u64, e::STT_OBJECT));
        percpu.resize(percpu.len() + v.size as usize, 0);
    }
    percpu.resize(percpu.len().div_ceil(64) * 64, 0);
    let pad = spec.static_bytes.saturating_sub(percpu.len() as u64).max(64);
    syms.push((STATIC_PAD.to_string(), 2, percpu.len() as u64, pad, e::STT_OBJECT));
    percpu.resize(percpu.len() + pad as usize, 0);

    let mut outs = Vec::new();
    for (name, flags, align, bytes) in [
        (&b".text"[..], (e::SHF_ALLOC | e::SHF_EXECINSTR) as u64, 16u64, text),
        (b".data", (e::SHF_ALLOC | e::SHF_WRITE) as u64, 64, data),
        (b".data..percpu", (e::SHF_ALLOC | e::SHF_WRITE) as u64, 64, percpu),
    ] {
        let name = w.add_section_name(name);
        let index = w.reserve_section_index();
        outs.push(Out { name, index, flags, align, data: bytes, offset: 0 });
    }
    for o in &mut outs {
        o.offset = w.reserve(o.data.len(), o.align as usize);
    }
    let names: Vec<StringId> = syms.iter().map(|s| w.add_string(s.0.as_bytes())).collect();
    for s in &syms {
        w.reserve_symbol_index(Some(outs[s.1].index));
    }
    w.reserve_symtab_section_index();
    w.reserve_symtab();
    w.reserve_strtab_section_index();
    w.reserve_strtab();
    w.reserve_shstrtab_section_index();
    w.reserve_shstrtab();
    w.reserve_section_headers();

    w.write_file_header(&FileHeader {
        os_abi: e::ELFOSABI_NONE,
        abi_version: 0,
        e_type: e::ET_REL,
        e_machine: spec.e_machine,
        e_entry: 0,
        e_flags: 0,
    })
    .expect("ELF header fields are in range");
    for o in &outs {
        w.write_align(o.align as usize);
        w.write(&o.data);
    }
    w.write_null_symbol();
    for (s, name) in syms.iter().zip(&names) {
        w.write_symbol(&Sym {
            name: Some(*name),
            section: Some(outs[s.1].index),
            st_info: (e::STB_GLOBAL << 4) | s.4,
            st_other: 0,
            st_shndx: 0,
            st_value: s.2,
            st_size: s.3,
        });
    }
    w.write_strtab();
    w.write_shstrtab();
    w.write_null_section_header();
    for o in &outs {
        w.write_section_header(&SectionHeader {
            name: Some(o.name),
            sh_type: e::SHT_PROGBITS,
            sh_flags: o.flags,
            sh_addr: 0,
            sh_offset: o.offset as u64,
            sh_size: o.data.len() as u64,
            sh_link: 0,
            sh_info: 0,
            sh_addralign: o.align,
            sh_entsize: 0,
        });
    }
    w.write_symtab_section_header(1);
    w.write_strtab_section_header();
    w.write_shstrtab_section_header();
    buf
}
