//! Fuzz target `proxy`: see `checks::proxy` for the input format and the invariants.
#![no_main]

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::proxy(data));
