//! Fuzz target: arbitrary bytes as a client's control stream (Hello, then requests),
//! handled against one store that lives as long as the fuzzing process.
#![no_main]

use std::sync::OnceLock;

use sluice_fuzz::SessionEnv;

static ENV: OnceLock<SessionEnv> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluice_fuzz::handshake(ENV.get_or_init(SessionEnv::new), data);
});
