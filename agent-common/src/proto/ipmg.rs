//! CS1000 IPMG heartbeat (UDP 32779/32780), PROTOCOLS.md §4: the payload layout is
//! unknown, so every datagram is a one-way liveness beat numbered by the association.

use super::{Heartbeat, Msg, Role, HB_SYNTHETIC_SEQ};
use crate::frame::Frame;
use crate::parse::{Packet, IPPROTO_UDP};

#[inline(always)]
pub fn decode<F: Frame>(f: &F, pkt: &Packet) -> Option<Msg> {
    if pkt.transport != IPPROTO_UDP || pkt.payload_len == 0 {
        return None;
    }
    // RTCP (media gateways send it from neighbouring ports) is as regular and as
    // same-sized as a liveness beat: told apart by its header, version 2, packet type
    // 200-204 (SR, RR, SDES, BYE, APP) and a length that fits the datagram.
    if pkt.payload_len >= 8 {
        let h = f.bytes::<4>(pkt.payload_off as usize)?;
        let words = u16::from_be_bytes([h[2], h[3]]) as u32 + 1;
        if h[0] >> 6 == 2 && (200..=204).contains(&h[1]) && words * 4 <= pkt.payload_len as u32 {
            return None;
        }
    }
    let mut hb = Heartbeat::new(Role::OneWay, 0);
    hb.flags = HB_SYNTHETIC_SEQ;
    Some(Msg::heartbeat(hb))
}
