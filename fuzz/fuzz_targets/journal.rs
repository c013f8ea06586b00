//! A session as the relay sees it: client requests and server replies fed
//! to the session journal (see `understudy_proxy::fuzzing::journal`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    understudy_proxy::fuzzing::journal(data);
});
