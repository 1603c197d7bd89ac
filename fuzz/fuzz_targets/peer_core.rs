//! cargo-fuzz target: `switchyard_proto::fuzz::peer_core` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // The harness takes time as an input, like the core; the target supplies it.
    switchyard_proto::fuzz::peer_core(std::time::Instant::now(), data);
});
