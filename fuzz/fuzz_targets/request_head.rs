//! Fuzz target: request-head parsing, validation and the head sent upstream (src/http1.rs).
//! The property lives in `fuzz/checks.rs`, shared with the seeded stress test.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::request_head(data));
