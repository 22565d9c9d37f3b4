//! The one structural validator that `inspect` and the loader share.
//!
//! `ElfObject::parse` already refuses what cannot be indexed safely (bad
//! headers, out-of-file sections, bad symbol indices, unsupported
//! machines).  What is left here is what an object may parse with and still
//! never load, whatever the placement: a relocation outside the section it
//! patches or of a type the loader cannot apply, REL entries where the module loaders take RELA only, and a test
//! contract whose sections cannot be read (two ABI notes, two test
//! sections, a test section without initial data or not a whole number of
//! descriptors).  `load_object` runs it before placing anything and
//! `inspect` runs it before reporting, so an object `inspect --check` passes
//! is one `run` can load, and the two never disagree on why one is refused.

use crate::contract::{descriptor_size, ABI_SECTION, TESTS_SECTION};
use crate::elf::{self, ElfObject};
use crate::error::{LoadError, Place, RelocTypeName};
use crate::load::{module_percpu_section, ObjectRole};
use crate::reloc::{arch_for, ReachBase};

/// Check `obj` (in `role`) for everything that would make loading it fail
/// before any placement decision; `contract`: also the test contract's
/// sections (what `LoadOptions::contract` reads).
pub fn validate(obj: &ElfObject<'_>, role: ObjectRole, contract: bool) -> Result<(), LoadError> {
    if obj.e_type == elf::ET_REL {
        relocations(obj, role)?;
    }
    if contract {
        contract_sections(obj)?;
    }
    Ok(())
}

/// Is section `index` given a home by the loader (so its relocations are
/// applied)?  Mirrors `load_rel`: SHF_ALLOC sections and the tests section,
/// but not the module percpu section (kernel/module.c clears SHF_ALLOC on
/// it) nor the metadata sections the module loader drops.
fn is_relocated(obj: &ElfObject<'_>, index: usize, module_pcpu: Option<usize>) -> bool {
    let s = &obj.sections[index];
    let forced = s.name == TESTS_SECTION && s.sh_type != goblin::elf::section_header::SHT_NULL;
    (s.is_alloc() || forced) && Some(index) != module_pcpu && s.name != ".modinfo" && s.name != "__versions"
}

fn relocations(obj: &ElfObject<'_>, role: ObjectRole) -> Result<(), LoadError> {
    let machine = obj.require_machine()?;
    let arch = arch_for(machine);
    let module_pcpu = if role == ObjectRole::Module { module_percpu_section(obj) } else { None };
    for rs in &obj.relocs {
        if !is_relocated(obj, rs.target, module_pcpu) {
            continue;
        }
        let target = &obj.sections[rs.target];
        if !rs.is_rela && !rs.entries.is_empty() {
            return Err(LoadError::RelNotSupported {
                object: obj.name.clone(),
                section: rs.name.clone(),
                machine: machine.to_string(),
            });
        }
        for r in &rs.entries {
            // A type the loader cannot apply: unknown to the arch (the
            // kernel's apply_relocate_add says "Unknown relocation"), or
            // known and not implemented.
            if arch.reach(r.r_type).is_none() {
                let rtype = RelocTypeName { number: r.r_type, name: arch.type_name(r.r_type) };
                let place = Place { section: target.name.clone(), offset: r.offset };
                return Err(match rtype.name {
                    None => LoadError::UnknownRelocation {
                        object: obj.name.clone(),
                        machine: machine.to_string(),
                        rtype,
                        place,
                    },
                    Some(_) => LoadError::UnsupportedRelocation {
                        object: obj.name.clone(),
                        machine: machine.to_string(),
                        rtype,
                        place,
                        symbol: obj.symbols.get(r.sym).map(|s| s.name.clone()).unwrap_or_default(),
                        reason: "percpu-bed's loader does not implement this type".into(),
                    },
                });
            }
            // A relocation that patches nothing (R_*_NONE-like, no reach)
            // may sit in an empty section.
            let patches_nothing = target.size == 0 && arch.reach(r.r_type).map(|x| x.base) == Some(ReachBase::None);
            if r.offset >= target.size && !patches_nothing {
                return Err(LoadError::RelocOutOfSection {
                    object: obj.name.clone(),
                    rtype: RelocTypeName { number: r.r_type, name: arch.type_name(r.r_type) },
                    place: Place { section: target.name.clone(), offset: r.offset },
                    offset: r.offset,
                    size: target.size,
                });
            }
        }
    }
    Ok(())
}

fn contract_sections(obj: &ElfObject<'_>) -> Result<(), LoadError> {
    let object = || obj.name.clone();
    let notes = obj.sections.iter().filter(|s| s.name == ABI_SECTION).count();
    if notes > 1 {
        return Err(LoadError::BadAbiNote {
            object: object(),
            reason: format!("{notes} sections named {ABI_SECTION} (want exactly one)"),
        });
    }
    let mut tests = obj.sections.iter().filter(|s| s.name == TESTS_SECTION && s.sh_type != 0);
    let Some(sec) = tests.next() else { return Ok(()) };
    let bad = |reason: String| LoadError::BadTestsSection { object: object(), reason };
    if tests.next().is_some() {
        return Err(bad("more than one section of that name".into()));
    }
    if sec.is_nobits() && sec.size > 0 {
        return Err(bad("SHT_NOBITS: the descriptors have no initial data in the file".into()));
    }
    let size = descriptor_size(obj.is_64) as u64;
    if sec.size % size != 0 {
        return Err(bad(format!(
            "size {} is not a multiple of the {size}-byte descriptor ({}-bit)",
            sec.size,
            obj.class_bits()
        )));
    }
    Ok(())
}
