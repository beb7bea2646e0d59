//! The association key: which flow-table entry, ring record and userspace association a
//! packet belongs to. Apart from `flow` (the state) so that `event` (the records) needs
//! only the key, not the state machine.

use crate::parse::Packet;
use crate::proto::{Protocol, Role};

/// Flow-table key: originator -> responder. 8-byte aligned: built, hashed and copied
/// into records in words (BPF).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowKey {
    pub orig: [u8; 16],
    pub resp: [u8; 16],
    pub orig_port: u16,
    pub resp_port: u16,
    /// A [`Protocol`] id.
    pub proto: u8,
    /// 4 or 6.
    pub family: u8,
    /// IPPROTO_TCP / IPPROTO_UDP.
    pub transport: u8,
    pub _pad: u8,
}

/// One write of the key's 40 bytes: the derived field-by-field hash made eight hasher
/// calls per lookup, a twentieth of the event pipeline's time (userspace maps only).
impl core::hash::Hash for FlowKey {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        let mut b = [0u8; 40];
        b[..16].copy_from_slice(&self.orig);
        b[16..32].copy_from_slice(&self.resp);
        b[32..34].copy_from_slice(&self.orig_port.to_ne_bytes());
        b[34..36].copy_from_slice(&self.resp_port.to_ne_bytes());
        b[36] = self.proto;
        b[37] = self.family;
        b[38] = self.transport;
        b[39] = self._pad;
        state.write(&b);
    }
}

impl FlowKey {
    /// The association a packet belongs to: a response travels responder -> originator.
    #[inline(always)]
    pub fn of(proto: Protocol, pkt: &Packet, role: Role) -> FlowKey {
        let (orig, resp, orig_port, resp_port) = match role {
            Role::Response => (pkt.dst, pkt.src, pkt.dst_port, pkt.src_port),
            _ => (pkt.src, pkt.dst, pkt.src_port, pkt.dst_port),
        };
        FlowKey {
            orig,
            resp,
            orig_port,
            resp_port,
            proto: proto as u8,
            family: pkt.family,
            transport: pkt.transport,
            _pad: 0,
        }
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for FlowKey {}
