//! The userspace SIP text parser (agent/src/correlate/sip/parse.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(init: hbwatch_fuzz::init("sip_parse"), |data: &[u8]| {
    hbwatch_fuzz::check_sip_parse(data);
});
