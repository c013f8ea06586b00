//! A client's first bytes: the startup packet, then the authentication
//! exchange with the proxy (see `understudy_proxy::fuzzing`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    understudy_proxy::fuzzing::startup_auth(data);
});
