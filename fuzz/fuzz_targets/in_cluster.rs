//! Fuzz target: the default/kubernetes Service rewriter (src/in_cluster.rs).
//! The property lives in `fuzz/checks.rs`, shared with the seeded stress test.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::in_cluster(data));
