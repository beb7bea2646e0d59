//! Avaya/Nortel CS1000 RUDP heartbeat (UDP 15000 <-> 15000), PROTOCOLS.md §4.
//!
//! Payload is exactly 6 bytes: `u32 BE seq` + `u16 flag`, flag 0x02FF from the
//! originating side, 0x0100 from the responding side (an echo of the same seq).

use super::{Heartbeat, Msg, Role};
use crate::frame::Frame;
use crate::parse::{Packet, IPPROTO_UDP};

pub const PAYLOAD_LEN: u16 = 6;
pub const FLAG_ORIGINATE: u16 = 0x02ff;
pub const FLAG_RESPOND: u16 = 0x0100;
/// In Nortel RUDP framing a seq of all ones means "reset sequence number".
pub const SEQ_RESET: u32 = 0xffff_ffff;

/// Decodes by the UDP length (6-byte payload), never by the frame length.
#[inline(always)]
pub fn decode<F: Frame>(f: &F, pkt: &Packet) -> Option<Msg> {
    if pkt.transport != IPPROTO_UDP || pkt.payload_len != PAYLOAD_LEN {
        return None;
    }
    let b = f.bytes::<6>(pkt.payload_off as usize)?;
    let seq = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let role = match u16::from_be_bytes([b[4], b[5]]) {
        FLAG_ORIGINATE => Role::Request,
        FLAG_RESPOND => Role::Response,
        _ => return None,
    };
    Some(Msg::heartbeat(Heartbeat::new(role, seq)))
}

/// Builds the 6-byte payload (generator and tests).
pub const fn payload(seq: u32, role: Role) -> [u8; 6] {
    let s = seq.to_be_bytes();
    let flag = match role {
        Role::Response => FLAG_RESPOND,
        _ => FLAG_ORIGINATE,
    }
    .to_be_bytes();
    [s[0], s[1], s[2], s[3], flag[0], flag[1]]
}
