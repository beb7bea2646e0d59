//! Cisco ICM MDS heartbeats between CallRouters (UDP), PROTOCOLS.md §3: one datagram
//! every 100 ms each way, body `DWORD seqno` from 0 at process start. The byte order is
//! not documented, so the association detects it (see `flow`).

use super::{Heartbeat, Msg, Role, HB_BYTE_ORDER_UNKNOWN};
use crate::frame::Frame;
use crate::parse::{Packet, IPPROTO_UDP};

pub const PAYLOAD_LEN: u16 = 4;

/// `seq` carries the big-endian reading; the flow swaps it once the order is known.
#[inline(always)]
pub fn decode<F: Frame>(f: &F, pkt: &Packet) -> Option<Msg> {
    if pkt.transport != IPPROTO_UDP || pkt.payload_len != PAYLOAD_LEN {
        return None;
    }
    let seq = f.be32(pkt.payload_off as usize)?;
    let mut hb = Heartbeat::new(Role::OneWay, seq);
    hb.flags = HB_BYTE_ORDER_UNKNOWN;
    Some(Msg::heartbeat(hb))
}
