//! Heartbeat protocols: ids, names, default ports, and one decoder module each.
//! Adding a protocol = one decoder module + one row in [`Protocol`] and
//! [`crate::params::DEFAULT_PARAMS`].

pub mod rudp;

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
        matches!(self, Protocol::Cs1000Rudp)
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

/// A decoded heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    pub role: Role,
    pub seq: u32,
}

/// Decodes the payload of `pkt` as a heartbeat of `proto`; `None` when it is not one.
#[inline(always)]
pub fn decode<F: Frame>(proto: Protocol, f: &F, pkt: &Packet) -> Option<Heartbeat> {
    match proto {
        Protocol::Cs1000Rudp => rudp::decode(f, pkt),
        _ => None,
    }
}
