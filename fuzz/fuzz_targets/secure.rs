//! cargo-fuzz target: `switchyard_proto::fuzz::secure_handshake` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    switchyard_proto::fuzz::secure_handshake(data);
});
