//! Fuzz target: the issuer's discovery document and JWKS (src/issuer_keys.rs).
//! The property lives in `fuzz/checks.rs`, shared with the seeded stress test.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::issuer_keys(data));
