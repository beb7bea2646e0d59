//! The mgcp decoder (agent-common/src/proto/mgcp.rs) on any payload, lies included.
#![no_main]

use hbwatch_common::proto::Protocol;

libfuzzer_sys::fuzz_target!(init: hbwatch_fuzz::init("decode_mgcp"), |data: &[u8]| {
    hbwatch_fuzz::check_decoder(Protocol::Mgcp, data);
});
