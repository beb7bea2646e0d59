//! Heartbeat protocols: ids, names, default ports, and one decoder module each.
//! Adding a protocol = one decoder module + one row in [`Protocol`] and
//! [`crate::params::DEFAULT_PARAMS`].

pub mod ged125;
pub mod ipmg;
pub mod mds;
pub mod rudp;
pub mod sccp;
pub mod sip;

use crate::frame::Frame;
use crate::parse::{Packet, IPPROTO_TCP, IPPROTO_UDP};

/// Protocol id as stored in the port table (`PORTS` map). 0 = not a heartbeat port.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    None = 0,
    Ged125 = 1,
    Sccp = 2,
    Mds = 3,
    Cs1000Rudp = 4,
    Cs1000Ipmg = 5,
    Sip = 6,
}

/// Size of per-protocol tables (`PARAMS` map), indexed by protocol id.
pub const PROTOCOL_COUNT: u32 = 7;

impl Protocol {
    pub const ALL: [Protocol; 6] = [
        Protocol::Ged125,
        Protocol::Sccp,
        Protocol::Mds,
        Protocol::Cs1000Rudp,
        Protocol::Cs1000Ipmg,
        Protocol::Sip,
    ];

    #[inline(always)]
    pub const fn from_u8(v: u8) -> Protocol {
        match v {
            1 => Protocol::Ged125,
            2 => Protocol::Sccp,
            3 => Protocol::Mds,
            4 => Protocol::Cs1000Rudp,
            5 => Protocol::Cs1000Ipmg,
            6 => Protocol::Sip,
            _ => Protocol::None,
        }
    }

    /// `network.protocol` in events (EVENTS.md).
    pub const fn name(self) -> &'static str {
        match self {
            Protocol::None => "none",
            Protocol::Ged125 => "ged125",
            Protocol::Sccp => "sccp",
            Protocol::Mds => "mds",
            Protocol::Cs1000Rudp => "cs1000-rudp",
            Protocol::Cs1000Ipmg => "cs1000-ipmg",
            Protocol::Sip => "sip",
        }
    }

    pub fn from_name(name: &str) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The transport the protocol runs on (SIP runs on both; UDP listed first).
    pub const fn transports(self) -> &'static [u8] {
        match self {
            Protocol::Ged125 | Protocol::Sccp => &[IPPROTO_TCP],
            Protocol::Mds | Protocol::Cs1000Rudp | Protocol::Cs1000Ipmg => &[IPPROTO_UDP],
            Protocol::Sip => &[IPPROTO_UDP, IPPROTO_TCP],
            Protocol::None => &[],
        }
    }

    /// Whether the kernel datapath decodes this protocol yet.
    pub const fn decoded(self) -> bool {
        !matches!(self, Protocol::None)
    }
}

/// Index into the port table: one slot per (transport, port).
#[inline(always)]
pub const fn port_slot(transport: u8, port: u16) -> u32 {
    let t = if transport == IPPROTO_TCP { 1u32 } else { 0u32 };
    (t << 16) | port as u32
}

/// Size of the port table (`PORTS` map).
pub const PORT_SLOTS: u32 = 2 << 16;

/// Role of a heartbeat packet in its association.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Sent by the originator, expects a response.
    Request = 1,
    /// Sent by the responder, echoes the request's sequence.
    Response = 2,
    /// One-way heartbeat (MDS, IPMG): the sender is the originator.
    OneWay = 3,
}

/// `Heartbeat::flags`: the wire carries no sequence; the association numbers heartbeats.
pub const HB_SYNTHETIC_SEQ: u8 = 1 << 0;
/// `Heartbeat::flags`: `seq` is the big-endian reading of an undocumented byte order.
pub const HB_BYTE_ORDER_UNKNOWN: u8 = 1 << 1;

/// A decoded heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    pub role: Role,
    pub seq: u32,
    pub flags: u8,
}

impl Heartbeat {
    #[inline(always)]
    pub const fn new(role: Role, seq: u32) -> Heartbeat {
        Heartbeat {
            role,
            seq,
            flags: 0,
        }
    }
}

/// What a decoder found in a packet. Flat and fully written (no enum payloads), so
/// copies never carry undefined bytes, which the verifier rejects.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Msg {
    /// `MSG_NONE`, `MSG_HEARTBEAT` or `MSG_PARAMS`.
    pub kind: u8,
    /// A [`Role`]: orients the association.
    pub role: u8,
    /// `HB_*` bits of a heartbeat.
    pub flags: u8,
    pub _pad: u8,
    /// Heartbeat sequence.
    pub seq: u32,
    /// Timing announced on the session: GED-125 OPEN_REQ IdleTimeout (ms, `value`);
    /// SCCP RegisterAck keepalive intervals (s, `value` primary, `aux` secondary).
    pub value: u32,
    pub aux: u32,
}

// SAFETY: integers only; 4-byte aligned.
unsafe impl crate::zero::Zeroable for Msg {}

pub const MSG_NONE: u8 = 0;
pub const MSG_HEARTBEAT: u8 = 1;
pub const MSG_PARAMS: u8 = 2;

impl Msg {
    #[inline(always)]
    pub const fn heartbeat(hb: Heartbeat) -> Msg {
        Msg {
            kind: MSG_HEARTBEAT,
            role: hb.role as u8,
            flags: hb.flags,
            _pad: 0,
            seq: hb.seq,
            value: 0,
            aux: 0,
        }
    }

    #[inline(always)]
    pub const fn params(role: Role, value: u32, aux: u32) -> Msg {
        Msg {
            kind: MSG_PARAMS,
            role: role as u8,
            flags: 0,
            _pad: 0,
            seq: 0,
            value,
            aux,
        }
    }

    #[inline(always)]
    pub const fn role(&self) -> Role {
        match self.role {
            2 => Role::Response,
            3 => Role::OneWay,
            _ => Role::Request,
        }
    }

    /// The heartbeat, if this is one.
    #[inline(always)]
    pub const fn as_heartbeat(&self) -> Option<Heartbeat> {
        if self.kind != MSG_HEARTBEAT {
            return None;
        }
        Some(Heartbeat {
            role: self.role(),
            seq: self.seq,
            flags: self.flags,
        })
    }
}

/// Decodes the payload of `pkt` as `proto`; `None` when it carries no heartbeat.
#[inline(always)]
pub fn decode<F: Frame>(proto: Protocol, f: &F, pkt: &Packet) -> Option<Msg> {
    let mut msg = Msg::default();
    decode_into(proto, f, pkt, &mut msg);
    (msg.kind != MSG_NONE).then_some(msg)
}

/// [`decode`] into `out`. Out of line: the decoders' header buffers get their own
/// stack frame; an out-parameter because BPF functions may not return stack pointers.
#[inline(never)]
pub fn decode_into<F: Frame>(proto: Protocol, f: &F, pkt: &Packet, out: &mut Msg) {
    let found = match proto {
        Protocol::Cs1000Rudp => rudp::decode(f, pkt),
        Protocol::Ged125 => ged125::decode(f, pkt),
        Protocol::Sccp => sccp::decode(f, pkt),
        Protocol::Mds => mds::decode(f, pkt),
        Protocol::Cs1000Ipmg => ipmg::decode(f, pkt),
        // SIP text goes to userspace whole (engine::process, sip module).
        Protocol::Sip | Protocol::None => None,
    };
    *out = found.unwrap_or_default();
}
