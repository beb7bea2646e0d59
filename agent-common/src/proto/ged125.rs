//! GED-125, Cisco CVP Call Server <-> ICM VRU PIM (TCP, CVP listens on 5000), PROTOCOLS.md §1.
//!
//! Framing: `u32 BE body_length` (excluding the 8-byte header), `u32 BE message_type`, body.
//! Several messages may share a segment. HEARTBEAT_REQ/CONF are exactly
//! `00000004 0000000{5,6} <InvokeID u32 BE>`; the CONF echoes the REQ's InvokeID.

use super::{Heartbeat, Msg, Role};
use crate::frame::Frame;
use crate::parse::{Packet, IPPROTO_TCP};

pub const OPEN_REQ: u32 = 3;
pub const HEARTBEAT_REQ: u32 = 5;
pub const HEARTBEAT_CONF: u32 = 6;
/// Messages walked per segment (bounded for the verifier).
pub const MAX_MESSAGES: usize = 4;

/// The first heartbeat (or OPEN_REQ timing) among the segment's messages.
#[inline(always)]
pub fn decode<F: Frame>(f: &F, pkt: &Packet) -> Option<Msg> {
    if pkt.transport != IPPROTO_TCP || pkt.payload_len < 8 {
        return None;
    }
    let base = pkt.payload_off as usize;
    let end = pkt.payload_len as usize;
    let mut off = 0usize;
    let mut i = 0;
    while i < MAX_MESSAGES {
        if off + 8 > end {
            return None;
        }
        let hdr = f.bytes::<8>(base + off)?;
        let len = u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        let ty = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
        if len > end {
            // Longer than the whole segment: not a message start we can trust.
            return None;
        }
        if len == 4 && (ty == HEARTBEAT_REQ || ty == HEARTBEAT_CONF) && off + 12 <= end {
            let seq = f.be32(base + off + 8)?;
            let role = if ty == HEARTBEAT_REQ {
                Role::Request
            } else {
                Role::Response
            };
            return Some(Msg::heartbeat(Heartbeat::new(role, seq)));
        }
        if ty == OPEN_REQ && len >= 12 && off + 20 <= end {
            // Body: InvokeID, VersionNumber, IdleTimeout (ms); the PIM opens the session.
            let idle_ms = f.be32(base + off + 16)?;
            return Some(Msg::params(Role::Request, idle_ms, 0));
        }
        off += 8 + len;
        i += 1;
    }
    None
}

/// A heartbeat message (generator and tests).
pub fn message(role: Role, invoke_id: u32) -> [u8; 12] {
    let ty = if role == Role::Response {
        HEARTBEAT_CONF
    } else {
        HEARTBEAT_REQ
    };
    let mut m = [0u8; 12];
    m[..4].copy_from_slice(&4u32.to_be_bytes());
    m[4..8].copy_from_slice(&ty.to_be_bytes());
    m[8..].copy_from_slice(&invoke_id.to_be_bytes());
    m
}
