//! Fuzz target `tls`: see `tls_checks` for the input format and the invariants.
#![no_main]

#[allow(dead_code)]
#[path = "../tls_checks.rs"]
mod tls_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| tls_checks::tls(data));
