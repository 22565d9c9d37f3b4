//! Parse, inspect, load (near and far, kernel and strict overflow policy)
//! and write back arbitrary bytes: every input must give Ok or a typed error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    percpu_loader::fuzzing::load_and_relocate(data);
});
