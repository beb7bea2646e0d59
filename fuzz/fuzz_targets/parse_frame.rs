//! Ethernet/VLAN/IPv4/IPv6/TCP/UDP parsing (agent-common/src/parse.rs) against a reference parser.
#![no_main]

libfuzzer_sys::fuzz_target!(init: hbwatch_fuzz::init("parse_frame"), |data: &[u8]| {
    hbwatch_fuzz::check_parse(data);
});
