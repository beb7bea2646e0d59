//! The ged125 decoder (agent-common/src/proto/ged125.rs) on any payload, lies included.
#![no_main]

use hbwatch_common::proto::Protocol;

libfuzzer_sys::fuzz_target!(init: hbwatch_fuzz::init("decode_ged125"), |data: &[u8]| {
    hbwatch_fuzz::check_decoder(Protocol::Ged125, data);
});
