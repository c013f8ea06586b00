//! Server message stream: frame decoding, the relay's scanner and the typed
//! parsers of the messages the proxy reads (see `understudy_protocol::fuzzing`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    understudy_protocol::fuzzing::backend_stream(data);
});
