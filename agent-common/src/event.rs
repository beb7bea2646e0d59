//! Fixed-size records pushed from the datapath to userspace through the ring buffer.

use crate::key::FlowKey;

/// What a [`RawEvent`] reports. Userspace maps each to an `event.action`.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// First heartbeat of a new association (`peer.up`). `seq`, `aux` = its
    /// [`crate::proto::Role`] (userspace counts it as a heartbeat when the association was
    /// known: the flow table had evicted it).
    AssociationSeen = 1,
    /// Sequence jumped forward by more than 1. `seq`, `aux` = expected, `value` = lost.
    Gap = 2,
    /// Same request sequence sent again. `seq`, `aux` = attempt (2 = first re-send).
    Retry = 3,
    /// A request got no response before the next request. `seq`, `value` = ns waited,
    /// `aux` = 1 if the responder's transport was alive meanwhile (TCP segments seen).
    Unanswered = 4,
    /// Sequence restarted. `seq`, `aux` = previous seq.
    Restart = 5,
    /// Duplicate or older sequence. `seq`, `aux` = expected.
    OutOfOrder = 6,
    /// Response that matches no outstanding request. `seq`.
    Mismatch = 7,
    /// Heartbeat DSCP differs from the protocol's expectation. `aux` = expected, `value` = seen.
    QosMismatch = 8,
    /// FIN or RST on a heartbeat session. `aux` = 1 for RST, `value` = 1 if the responder closed.
    SessionClosed = 9,
    /// Timing announced on the session (GED-125 OPEN_REQ IdleTimeout ms in `value`;
    /// SCCP RegisterAck keepalive seconds: `value` primary, `aux` secondary).
    SessionParams = 10,
    /// A SIP REGISTER/OPTIONS request or a response: a `proto::sip::SipRecord`.
    SipMessage = 11,
    /// A heartbeat applied to a known association: what userspace timers run on.
    /// `seq`, `aux` = [`crate::proto::Role`] | `BEAT_*` bits, `value` = interval sample
    /// (in-order request) or RTT (paired response) in ns, 0 when neither.
    Heartbeat = 12,
    /// A fragment of a SIP datagram over UDP, with its bytes (a `SipRecord`): userspace
    /// reassembles. `seq` = IP id, `value` = `Packet::frag` (offset into the IP payload,
    /// flags), the key as the datagram travelled. A first fragment's bytes start with
    /// its UDP header.
    Fragment = 13,
    /// A heartbeat frame seen twice (same identity and IP id, moments apart): counted,
    /// never an alert. `seq` = heartbeat seq, `aux` = [`crate::proto::Role`], `value` = ns
    /// since the first copy.
    Duplicate = 14,
    /// Routine heartbeats the datapath held back in the flow table (`FlowState::held`),
    /// sent up together as a [`HeldBatch`]: when the hold was full and userspace had not
    /// read it, or just before a record about the association, which must come after
    /// them. `seq` = index of the first, `aux` = how many.
    Beats = 15,
}

/// `aux` bit of a `Heartbeat` record: `value` is the interval since the previous sequence.
pub const BEAT_INTERVAL: u32 = 1 << 8;
/// `aux` bit of a `Heartbeat` record: a response that paired with the outstanding request;
/// `value` is its RTT.
pub const BEAT_PAIRED: u32 = 1 << 9;

impl EventKind {
    #[inline(always)]
    pub const fn from_u8(v: u8) -> Option<EventKind> {
        Some(match v {
            1 => EventKind::AssociationSeen,
            2 => EventKind::Gap,
            3 => EventKind::Retry,
            4 => EventKind::Unanswered,
            5 => EventKind::Restart,
            6 => EventKind::OutOfOrder,
            7 => EventKind::Mismatch,
            8 => EventKind::QosMismatch,
            9 => EventKind::SessionClosed,
            10 => EventKind::SessionParams,
            11 => EventKind::SipMessage,
            12 => EventKind::Heartbeat,
            13 => EventKind::Fragment,
            14 => EventKind::Duplicate,
            15 => EventKind::Beats,
            _ => return None,
        })
    }
}

/// One datapath finding. `#[repr(C)]`, no padding holes left implicit, so the
/// kernel and userspace agree byte for byte.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawEvent {
    /// Packet time: `bpf_ktime_get_ns` (CLOCK_MONOTONIC) live, capture time offline.
    pub ts_ns: u64,
    /// Kind-specific number (lost count, ns waited).
    pub value: u64,
    pub key: FlowKey,
    pub seq: u32,
    /// Kind-specific number (expected seq, previous seq, attempt).
    pub aux: u32,
    /// Interface the packet was seen on.
    pub ifindex: u32,
    /// An [`EventKind`].
    pub kind: u8,
    /// DSCP of the packet that triggered the event.
    pub dscp: u8,
    pub _pad: [u8; 2],
}

pub const RAW_EVENT_SIZE: usize = core::mem::size_of::<RawEvent>();

/// Routine heartbeats an association holds back at most (a power of two: the slot of
/// index `i` is `i % HELD_BEATS`). Userspace reads them at its deadlines, about every
/// two intervals (two or three requests and their answers), and acknowledges them
/// (`ACKS`); only a hold that fills unread goes up the ring buffer.
pub const HELD_BEATS: usize = 8;

/// `HeldBeat::aux` bit: a mirror copy (a `Duplicate` record), not a heartbeat.
pub const HELD_DUPLICATE: u16 = 1 << 15;

/// A routine heartbeat held in the flow table: what its `Heartbeat` (or `Duplicate`)
/// record would have said. The key and interface are the association's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeldBeat {
    pub ts_ns: u64,
    pub value: u64,
    pub seq: u32,
    /// The record's `aux` (role and `BEAT_*` bits), or [`HELD_DUPLICATE`].
    pub aux: u16,
    /// Position in the association's sequence of held beats (wraps), so a reader knows
    /// which it has and whether a slot was overwritten since.
    pub index: u16,
}

impl HeldBeat {
    /// The record it stands for, on `key` seen on `ifindex`.
    pub fn record(&self, key: &FlowKey, ifindex: u32) -> RawEvent {
        let kind = if self.aux & HELD_DUPLICATE != 0 {
            EventKind::Duplicate
        } else {
            EventKind::Heartbeat
        };
        RawEvent {
            ts_ns: self.ts_ns,
            value: self.value,
            key: *key,
            seq: self.seq,
            aux: (self.aux & !HELD_DUPLICATE) as u32,
            ifindex,
            kind: kind as u8,
            dscp: 0,
            _pad: [0; 2],
        }
    }

    /// Reads the held beats of a [`HeldBatch`]'s bytes after its header.
    pub fn read_all(b: &[u8]) -> [HeldBeat; HELD_BEATS] {
        let mut out = [HeldBeat::default(); HELD_BEATS];
        for (i, o) in out.iter_mut().enumerate() {
            let at = i * core::mem::size_of::<HeldBeat>();
            if let Some(bytes) = b.get(at..at + core::mem::size_of::<HeldBeat>()) {
                // SAFETY: HeldBeat is plain integers; the length was checked.
                *o = unsafe { core::ptr::read_unaligned(bytes.as_ptr() as *const HeldBeat) };
            }
        }
        out
    }
}

/// A `Beats` record: the header, then the association's whole hold (the beats in it are
/// those of indices `hdr.seq .. hdr.seq + hdr.aux`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeldBatch {
    pub hdr: RawEvent,
    pub beats: [HeldBeat; HELD_BEATS],
}

impl RawEvent {
    /// Carries heartbeats of a known association: one (`Heartbeat`), or held ones
    /// (`Beats`). What "records per heartbeat" counts.
    pub fn carries_heartbeats(&self) -> bool {
        self.kind == EventKind::Heartbeat as u8 || self.kind == EventKind::Beats as u8
    }

    /// Reads a record from ring-buffer bytes; `None` if the size is wrong.
    pub fn from_bytes(b: &[u8]) -> Option<RawEvent> {
        if b.len() < RAW_EVENT_SIZE {
            return None;
        }
        // SAFETY: RawEvent is plain old data (integers and byte arrays); the length was checked.
        Some(unsafe { core::ptr::read_unaligned(b.as_ptr() as *const RawEvent) })
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for RawEvent {}
