//! SCCP (Skinny), Cisco IP phone <-> CUCM (TCP 2000), PROTOCOLS.md §2. All little-endian:
//! `u32 data_length` (counts the 4-byte message id), `u32 header_version`, `u32 message_id`, body.
//! KeepAlive 0x0000 (phone -> CUCM) and KeepAliveAck 0x0100 carry no sequence: the
//! association numbers them itself.

use super::{Heartbeat, Msg, Role, HB_SYNTHETIC_SEQ};
use crate::frame::Frame;
use crate::parse::{Packet, IPPROTO_TCP};

pub const KEEPALIVE: u32 = 0x0000;
pub const REGISTER_ACK: u32 = 0x0081;
pub const KEEPALIVE_ACK: u32 = 0x0100;
pub const MAX_MESSAGES: usize = 4;

#[inline(always)]
pub fn decode<F: Frame>(f: &F, pkt: &Packet) -> Option<Msg> {
    if pkt.transport != IPPROTO_TCP || pkt.payload_len < 12 {
        return None;
    }
    let base = pkt.payload_off as usize;
    let end = pkt.payload_len as usize;
    let mut off = 0usize;
    let mut i = 0;
    while i < MAX_MESSAGES {
        if off + 12 > end {
            return None;
        }
        let hdr = f.bytes::<12>(base + off)?;
        let len = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        let version = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
        let id = u32::from_le_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]);
        // data_length counts the message id; the header version is a small number.
        if !(4..=end).contains(&len) || version > 0xff {
            return None;
        }
        if len == 4 && (id == KEEPALIVE || id == KEEPALIVE_ACK) {
            let role = if id == KEEPALIVE {
                Role::Request
            } else {
                Role::Response
            };
            let mut hb = Heartbeat::new(role, 0);
            hb.flags = HB_SYNTHETIC_SEQ;
            return Some(Msg::heartbeat(hb));
        }
        if id == REGISTER_ACK && len >= 4 + 16 && off + 8 + len <= end {
            // Body: +0 keepAliveInterval (s), +12 secondaryKeepAliveInterval (s).
            let b = f.bytes::<16>(base + off + 12)?;
            let primary = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            let secondary = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
            // Sent by CUCM: the association runs phone -> CUCM.
            return Some(Msg::params(Role::Response, primary, secondary));
        }
        off += 8 + len;
        i += 1;
    }
    None
}

/// A KeepAlive (request) or KeepAliveAck (response) message with header version 0x16.
pub fn message(role: Role) -> [u8; 12] {
    let id = if role == Role::Response {
        KEEPALIVE_ACK
    } else {
        KEEPALIVE
    };
    let mut m = [0u8; 12];
    m[..4].copy_from_slice(&4u32.to_le_bytes());
    m[4..8].copy_from_slice(&0x16u32.to_le_bytes());
    m[8..].copy_from_slice(&id.to_le_bytes());
    m
}
