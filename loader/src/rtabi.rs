//! The runtime ABI note: `.percpu_bed.rtabi`, a table of named constants
//! that the project's probe module (`fixtures/kmod/src/pcpubed_rtabi.c`)
//! computes with the kernel tree's own compiler and headers, the way the
//! kernel's asm-offsets do: structure offsets (`thread_info.cpu`, the s390x
//! lowcore's `percpu_offset`), `NR_CPUS`, the `__bug_table` entry layout.
//!
//! Each record is 48 bytes in the object's byte order: a NUL-padded name of
//! [`NAME_BYTES`] bytes, then a `u64` value.  The values are compile-time
//! constants, so the section has no relocations.

use std::collections::BTreeMap;

use crate::elf::ElfObject;
use crate::error::LoadError;

/// Section holding the records.
pub const SECTION: &str = ".percpu_bed.rtabi";
/// Bytes of a record's name field.
pub const NAME_BYTES: usize = 40;
/// Bytes of a record.
pub const RECORD_BYTES: usize = NAME_BYTES + 8;

/// The records of `obj`'s `.percpu_bed.rtabi`, or `None` when it has none.
pub fn read(obj: &ElfObject<'_>) -> Result<Option<BTreeMap<String, u64>>, LoadError> {
    let Some(sec) = obj.sections.iter().find(|s| s.name == SECTION) else { return Ok(None) };
    let bad = |reason: String| LoadError::Malformed { object: obj.name.clone(), reason };
    let data = obj.section_data(sec.index);
    if sec.is_nobits() || data.len() % RECORD_BYTES != 0 {
        return Err(bad(format!(
            "{SECTION} is {} bytes, not a whole number of {RECORD_BYTES}-byte records",
            data.len()
        )));
    }
    let mut out = BTreeMap::new();
    for rec in data.chunks_exact(RECORD_BYTES) {
        let name_bytes = &rec[..NAME_BYTES];
        let end = name_bytes.iter().position(|&b| b == 0).unwrap_or(NAME_BYTES);
        let name =
            std::str::from_utf8(&name_bytes[..end]).map_err(|_| bad(format!("{SECTION}: a name is not UTF-8")))?;
        if name.is_empty() {
            return Err(bad(format!("{SECTION}: a record has an empty name")));
        }
        let v: [u8; 8] = rec[NAME_BYTES..].try_into().expect("8 bytes");
        let value = if obj.little_endian { u64::from_le_bytes(v) } else { u64::from_be_bytes(v) };
        if out.insert(name.to_string(), value).is_some() {
            return Err(bad(format!("{SECTION}: `{name}` appears twice")));
        }
    }
    Ok(Some(out))
}
