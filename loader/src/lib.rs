//! # percpu-loader: ELF objects with Linux-style percpu data
//!
//! Loads kernel-image and module objects the way kernel/module.c does, so
//! percpu-bed can run them on emulated CPUs:
//!
//! * [`elf::ElfObject`] parses (goblin) and validates an object: ET_REL
//!   modules and kernel objects, linked vmlinux-style images; 32/64-bit,
//!   little/big endian.
//! * [`load::load_module`] finds `.data..percpu` (or the pre-2010
//!   `.data.percpu`), allocates it from the reserved chunk through a
//!   [`PercpuPlacer`], places the other SHF_ALLOC sections through a
//!   [`SectionPlacer`], resolves undefined symbols against the kernel image
//!   and the runtime symbol table ([`SymbolResolver`]), builds the GOT/PLT
//!   entries the arch needs and applies relocations with that arch's module
//!   loader rules ([`reloc`]: x86_64, aarch64, sparc32, alpha, s390x,
//!   riscv64).  [`load::load_kernel_image`] does the same for the kernel
//!   image object (its `.data..percpu*` sections form the static area).
//! * [`contract`] reads the fixture contract (`.percpu_bed.abi`,
//!   `.percpu_bed.tests`) from the relocated image.
//! * [`inspect::inspect`] reports an object's percpu facts and whether it
//!   follows its arch's module percpu rules; [`write::write_relocated_elf`]
//!   writes a loaded object back as an ELF objdump and gdb can open.

// Errors carry the object, place, symbol and rule as text on purpose; they
// are built once per failed load, so their size does not matter.
#![allow(clippy::result_large_err)]

pub mod contract;
pub mod elf;
pub mod error;
pub mod file;
#[doc(hidden)]
pub mod fuzzing;
pub mod inspect;
pub mod load;
pub mod placement;
pub mod reloc;
pub mod rtabi;
pub mod symbols;
pub mod validate;
pub mod write;

pub use contract::{AbiNote, Op, PercpuModel, RetKind, TestDescriptor, TestFlags};
pub use elf::{ElfObject, Machine};
pub use error::{LoadError, OverflowUse, PlaceError, ReservedExhausted};
pub use file::{read_object_file, Compression, ObjectBytes, ReadError, MAX_OBJECT_BYTES};
pub use inspect::{inspect, inspect_path, InspectReport};
pub use load::{
    load_kernel_image, load_module, load_object, LoadOptions, LoadedObject, LoadedSection, LoadedSymbol, ModulePercpu,
    ObjectRole, StaticPercpu,
};
pub use placement::{InMemoryPercpu, LinearLayout, PercpuPlacer, PlaceRequest, SectionKind, SectionPlacer};
pub use reloc::{OverflowPolicy, Reach, ReachBase, Truncation};
pub use symbols::{ResolvedSymbol, SymbolResolver, SymbolTable};
pub use write::write_relocated_elf;
