//! Client message stream: frame decoding, the relay's scanner and the typed
//! parsers of authentication responses (see `understudy_protocol::fuzzing`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    understudy_protocol::fuzzing::frontend_stream(data);
});
