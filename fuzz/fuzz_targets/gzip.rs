//! Fuzz target: gzip streams from the cloud — split reads, output limit, bombs (src/gzip.rs).
//! The property lives in `fuzz/checks.rs`, shared with the seeded stress test.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::gzip(data));
