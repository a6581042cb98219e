//! Fuzz target `filter`: see `checks::filter` for the input format and the invariants.
#![no_main]

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::filter(data));
