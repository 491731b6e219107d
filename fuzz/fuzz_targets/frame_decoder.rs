//! Fuzz target: arbitrary bytes through the frame decoder for every frame type.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluice_fuzz::frame_decoder(data);
});
