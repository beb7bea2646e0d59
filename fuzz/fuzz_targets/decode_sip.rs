//! The SIP datapath (agent-common/src/proto/sip.rs): start line and payload copy.
#![no_main]

libfuzzer_sys::fuzz_target!(init: hbwatch_fuzz::init("decode_sip"), |data: &[u8]| {
    hbwatch_fuzz::check_decoder_sip(data);
});
