//! Fuzz target: watch-event streams applied to a cached list, through the public CacheHandle (src/cache/watch.rs).
//! The property lives in `fuzz/checks.rs`, shared with the seeded stress test.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::watch_stream(data));
