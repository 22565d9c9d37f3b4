//! The body of the `load_and_relocate` fuzz target, shared by cargo-fuzz
//! (fuzz/fuzz_targets/load_and_relocate.rs) and the plain `cargo test`
//! corpus/mutation run (tests/fuzz_corpus.rs), so the same code is exercised
//! with or without a nightly toolchain.

use crate::inspect::inspect;
use crate::load::{load_object, LoadOptions};
use crate::placement::{InMemoryPercpu, LinearLayout};
use crate::reloc::OverflowPolicy;
use crate::symbols::{ResolvedSymbol, SymbolResolver};
use crate::write::write_relocated_elf;

struct Any;

impl SymbolResolver for Any {
    fn resolve(&self, name: &str) -> Option<ResolvedSymbol> {
        // Deterministic, sometimes percpu, sometimes odd (misaligned) values.
        let h = name.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
        match h % 4 {
            0 => None,
            1 => Some(ResolvedSymbol { value: 0x40 + (h & 0xff), percpu: true }),
            2 => Some(ResolvedSymbol { value: 0xffff_ffff_8100_0000 + (h & 0xffff), percpu: false }),
            _ => Some(ResolvedSymbol { value: h, percpu: false }),
        }
    }
}

/// Parse, inspect, load near (kernel policy) and far (strict), and round-trip
/// every successful load through [`write_relocated_elf`].  Panics only on a
/// loader bug: every input must give `Ok` or a typed error.
pub fn load_and_relocate(data: &[u8]) {
    let _ = inspect("fuzz", data);
    for (base, policy) in
        [(0xffff_ffff_c000_0000u64, OverflowPolicy::Kernel), (0x0000_7f00_0000_0000, OverflowPolicy::Strict)]
    {
        let mut pcpu = InMemoryPercpu::new(2, 0x1000, 8 << 10, 0x1000_0000, 0);
        let mut lay = LinearLayout::at(base);
        let opts = LoadOptions { overflow: policy, contract: true };
        if let Ok(obj) = load_object("fuzz", data, &opts, &mut pcpu, &mut lay, &[&Any]) {
            let out = write_relocated_elf(&obj);
            if let Err(e) = crate::elf::ElfObject::parse("fuzz-out", &out) {
                panic!("write_relocated_elf produced an unreadable ELF: {e}");
            }
        }
    }
}
