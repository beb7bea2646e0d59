//! Heartbeat protocols: the protocol table (one row each: id, name, transports,
//! default ports, default tuning, decoder) and one decoder module each. Everything
//! else (the enum, its lists, the decoder dispatch, the agent's default ports and
//! tuning) is derived from the table; docs/ADDING_A_PROTOCOL.md is the recipe.

pub mod ged125;
pub mod ipmg;
pub mod mds;
pub mod mgcp;
pub mod rudp;
pub mod sccp;
pub mod sip;

use crate::frame::Frame;
use crate::params::{
    ProtoParams, DSCP_ANY, P_INTERVAL_IS_A_BOUND, P_SEQ_IS_AN_ID, P_UNANSWERED_NEEDS_ACKS,
};
use crate::parse::{Packet, IPPROTO_TCP, IPPROTO_UDP};

/// Expands the protocol table into [`Protocol`] (ids as stored in the `PORTS` map),
/// its per-protocol facts and [`decode_into`]'s dispatch. A macro rather than a
/// table of structs because the eBPF side can neither call through function
/// pointers nor afford a lookup: every accessor is a `const` match.
macro_rules! protocol_table {
    ($(
        $(#[$doc:meta])*
        $variant:ident = $id:literal {
            name: $name:literal,
            transports: [$($transport:expr),+],
            ports: [$(($lo:literal, $hi:literal)),+],
            params: $params:expr,
            decoder: $decoder:path,
        }
    )+) => {
        /// Protocol id as stored in the port table (`PORTS` map). 0 = not a heartbeat port.
        #[repr(u8)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Protocol {
            None = 0,
            $($(#[$doc])* $variant = $id,)+
        }

        impl Protocol {
            /// Every protocol, in id order.
            pub const ALL: [Protocol; [$($id),+].len()] = [$(Protocol::$variant),+];

            #[inline(always)]
            pub const fn from_u8(v: u8) -> Protocol {
                match v {
                    $($id => Protocol::$variant,)+
                    _ => Protocol::None,
                }
            }

            /// `network.protocol` in events (docs/EVENTS.md).
            pub const fn name(self) -> &'static str {
                match self {
                    Protocol::None => "none",
                    $(Protocol::$variant => $name,)+
                }
            }

            /// The transports it runs on (SIP runs on both; UDP listed first).
            pub const fn transports(self) -> &'static [u8] {
                match self {
                    Protocol::None => &[],
                    $(Protocol::$variant => &[$($transport),+],)+
                }
            }

            /// The ports watched unless configured otherwise (`--port`), inclusive ranges.
            pub const fn default_ports(self) -> &'static [(u16, u16)] {
                match self {
                    Protocol::None => &[],
                    $(Protocol::$variant => &[$(($lo, $hi)),+],)+
                }
            }

            /// Tuning until configured otherwise (`--tune`, the config file).
            #[inline(always)]
            pub const fn default_params(self) -> ProtoParams {
                match self {
                    Protocol::None => ProtoParams::FALLBACK,
                    $(Protocol::$variant => $params,)+
                }
            }
        }

        /// [`decode`] into `out`; returns the message's kind. Out of line: the decoders'
        /// header buffers get their own stack frame; an out-parameter because BPF functions
        /// may not return stack pointers. It returns a number for the same reason: with no
        /// return value LLVM may leave the frame argument in r0, and the verifier rejects
        /// that ("cannot return stack pointer to the caller", seen on 6.18).
        #[inline(never)]
        pub fn decode_into<F: Frame>(proto: Protocol, f: &F, pkt: &Packet, out: &mut Msg) -> u8 {
            let found = match proto {
                $(Protocol::$variant => $decoder(f, pkt),)+
                Protocol::None => None,
            };
            *out = found.unwrap_or_default();
            out.kind
        }
    };
}

// Tuning columns (ProtoParams::new): interval ms, max_gap, tolerance %, down after
// N missed, expected DSCP, flags, confirm_beats. `confirm_beats` > 1 where a port
// alone is no signature (MDS: any 4 bytes, a TFTP ACK train counts up too; IPMG:
// layout unknown); RUDP, GED-125 and SCCP heartbeats have exact byte signatures.
protocol_table! {
    /// GED-125, CVP Call Server <-> ICM VRU PIM: HEARTBEAT_REQ/CONF. Interval learned
    /// per session (seed: 5 s); 2 missed = CVP closes the session.
    Ged125 = 1 {
        name: "ged125",
        transports: [IPPROTO_TCP],
        ports: [(5000, 5000)],
        params: ProtoParams::new(5000, 1000, 50, 2, DSCP_ANY, 0, 1),
        decoder: ged125::decode,
    }
    /// SCCP KeepAlive/Ack, phone <-> CUCM. Primary CUCM keepalive 30 s; phones fail over
    /// after 3 intervals. Backup CUCMs only TCP-ACK keepalives: unanswered needs acks
    /// seen first.
    Sccp = 2 {
        name: "sccp",
        transports: [IPPROTO_TCP],
        ports: [(2000, 2000)],
        params: ProtoParams::new(30_000, 1000, 30, 3, DSCP_ANY, P_UNANSWERED_NEEDS_ACKS, 1),
        decoder: sccp::decode,
    }
    /// ICM MDS heartbeats between CallRouters: 100 ms, 5 consecutive misses = failure
    /// (ICM MDS, SRND); 10 s of gap allowed.
    Mds = 3 {
        name: "mds",
        transports: [IPPROTO_UDP],
        ports: [(39500, 39999)],
        params: ProtoParams::new(100, 10_000, 50, 5, DSCP_ANY, 0, 4),
        decoder: mds::decode,
    }
    /// CS1000 RUDP heartbeats: 1000 ms both ways; ELAN heartbeats should be EF (46).
    /// Down after 4 misses is our documented default (no vendor number).
    Cs1000Rudp = 4 {
        name: "cs1000-rudp",
        transports: [IPPROTO_UDP],
        ports: [(15000, 15000)],
        params: ProtoParams::new(1000, 1000, 50, 4, 46, 0, 1),
        decoder: rudp::decode,
    }
    /// CS1000 IPMG liveness: one-way beats, layout unknown.
    Cs1000Ipmg = 5 {
        name: "cs1000-ipmg",
        transports: [IPPROTO_UDP],
        ports: [(32779, 32780)],
        params: ProtoParams::new(1000, 1000, 50, 4, DSCP_ANY, 0, 4),
        decoder: ipmg::decode,
    }
    /// SIP REGISTER refreshes and OPTIONS pings: refresh 115 s against Expires 120.
    /// The text goes to userspace whole (engine::process, the sip modules).
    Sip = 6 {
        name: "sip",
        transports: [IPPROTO_UDP, IPPROTO_TCP],
        ports: [(5060, 5060)],
        params: ProtoParams::new(115_000, 1000, 10, 1, DSCP_ANY, 0, 1),
        decoder: in_userspace,
    }
    /// MGCP, Cisco voice gateway -> its call agent (CUCM): every NTFY and RSIP is answered
    /// with its transaction id. Idle gateways send an empty NTFY every 15 s and switch to
    /// the next CUCM when none is acknowledged within 30 s: 15 s is a bound (busy
    /// gateways send more), and down after 2. Transaction ids identify, they do not count.
    /// Gateways listen on 2427, call agents on 2727 (CUCM: 2427 too).
    Mgcp = 7 {
        name: "mgcp",
        transports: [IPPROTO_UDP],
        ports: [(2427, 2427), (2727, 2727)],
        params: ProtoParams::new(
            15_000,
            1000,
            50,
            2,
            DSCP_ANY,
            P_SEQ_IS_AN_ID | P_INTERVAL_IS_A_BOUND,
            1,
        ),
        decoder: mgcp::decode,
    }
}

/// Size of per-protocol tables (`PARAMS` map), indexed by protocol id.
pub const PROTOCOL_COUNT: u32 = Protocol::ALL.len() as u32 + 1;

// Ids run 1..=N in table order: `PARAMS` is indexed by id and `ALL` is id order.
const _: () = {
    let mut i = 0;
    while i < Protocol::ALL.len() {
        assert!(Protocol::ALL[i] as usize == i + 1);
        i += 1;
    }
};

impl Protocol {
    pub fn from_name(name: &str) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Whether the kernel datapath decodes this protocol yet.
    pub const fn decoded(self) -> bool {
        !matches!(self, Protocol::None)
    }
}

/// The decoder of protocols whose text the datapath hands up whole.
#[inline(always)]
fn in_userspace<F: Frame>(_: &F, _: &Packet) -> Option<Msg> {
    None
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
/// `Heartbeat::flags`: the message says the sender restarts (or leaves) (MGCP RSIP); the
/// protocol's own code for how in the [`HB_RESTART_HOW`] bits, passed up as the
/// `Restart` finding's `value`.
pub const HB_RESTART: u8 = 1 << 3;
pub const HB_RESTART_HOW_SHIFT: u8 = 4;
pub const HB_RESTART_HOW: u8 = 0x7 << HB_RESTART_HOW_SHIFT;

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
    let kind = decode_into(proto, f, pkt, &mut msg);
    (kind != MSG_NONE).then_some(msg)
}
