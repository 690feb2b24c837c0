//! Fuzz target: chunked body decoding at any read split (src/body.rs).
//! The property lives in `fuzz/checks.rs`, shared with the seeded stress test.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::chunked_body(data));
