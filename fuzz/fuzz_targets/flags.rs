//! Fuzz target: command-line flag parsing and validation (src/config.rs).
//! The property lives in `fuzz/checks.rs`, shared with the seeded stress test.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::flags(data));
