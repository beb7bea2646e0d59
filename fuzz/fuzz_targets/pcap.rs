//! Bytes as a pcap/pcapng file through hbwatch analyze: every output line valid JSON.
#![no_main]

libfuzzer_sys::fuzz_target!(init: hbwatch_fuzz::init("pcap"), |data: &[u8]| {
    hbwatch_fuzz::check_pcap(data);
});
