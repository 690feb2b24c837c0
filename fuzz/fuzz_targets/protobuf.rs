//! Fuzz target: protobuf envelopes, messages and length-prefixed watch frames
//! (src/protobuf.rs, src/watch_frames.rs). The property lives in `fuzz/checks.rs`.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::protobuf(data));
