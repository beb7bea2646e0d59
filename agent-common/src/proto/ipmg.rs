//! CS1000 IPMG heartbeat (UDP 32779/32780), PROTOCOLS.md §4: the payload layout is
//! unknown, so every datagram is a one-way liveness beat numbered by the association.

use super::{Heartbeat, Msg, Role, HB_SYNTHETIC_SEQ};
use crate::frame::Frame;
use crate::parse::{Packet, IPPROTO_UDP};

#[inline(always)]
pub fn decode<F: Frame>(_f: &F, pkt: &Packet) -> Option<Msg> {
    if pkt.transport != IPPROTO_UDP || pkt.payload_len == 0 {
        return None;
    }
    let mut hb = Heartbeat::new(Role::OneWay, 0);
    hb.flags = HB_SYNTHETIC_SEQ;
    Some(Msg::heartbeat(hb))
}
