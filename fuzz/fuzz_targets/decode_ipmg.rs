//! The ipmg decoder (agent-common/src/proto/ipmg.rs) on any payload, lies included.
#![no_main]

use hbwatch_common::proto::Protocol;

libfuzzer_sys::fuzz_target!(init: hbwatch_fuzz::init("decode_ipmg"), |data: &[u8]| {
    hbwatch_fuzz::check_decoder(Protocol::Cs1000Ipmg, data);
});
