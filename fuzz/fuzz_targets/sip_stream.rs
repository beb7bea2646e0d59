//! SIP over TCP reassembly (agent/src/correlate/sip/stream.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(init: hbwatch_fuzz::init("sip_stream"), |data: &[u8]| {
    hbwatch_fuzz::check_sip_stream(data);
});
