//! engine::process over a sequence of frames on the offline engine's maps.
#![no_main]

libfuzzer_sys::fuzz_target!(init: hbwatch_fuzz::init("engine"), |data: &[u8]| {
    hbwatch_fuzz::check_engine(data);
});
