//! Indices of the per-CPU counters the datapath keeps (`COUNTERS` map).

/// One slot per counter; userspace sums the per-CPU values.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Every frame the program saw.
    Packets = 0,
    /// Frames whose port maps to a heartbeat protocol.
    PortMatched,
    /// Frames decoded as a heartbeat (request, response or one-way).
    Heartbeats,
    /// Ring-buffer reservations that failed: events lost in the kernel.
    RingbufLost,
    /// Frames too short for the headers they announce.
    Truncated,
    /// IPv4 headers with IHL < 5 or beyond the packet, or inconsistent lengths.
    Malformed,
    /// IP fragments not passed to userspace: of datagrams on no heartbeat port, of a
    /// heartbeat protocol that never fragments, or whose first fragment was not seen.
    Fragments,
    /// More VLAN tags than parsed, or IPv6 extension headers before TCP/UDP.
    Unparsed,
    /// Frames on a heartbeat port whose payload is no heartbeat of that protocol.
    NotHeartbeat,
    /// New associations that could not be inserted into the flow table.
    FlowInsertFailed,
    /// Fragments of SIP datagrams passed to userspace, which reassembles them.
    FragmentsPassed,
    /// Heartbeat frames seen twice (SPAN/mirror ports, routers): counted, never alerts.
    Duplicates,
    /// Heartbeats of candidate associations not (yet) announced: too few, implausibly
    /// timed, or on a 5-tuple that also carried other traffic.
    Unconfirmed,
    /// TC frames not observed: the program's reader slot was empty (a loader fault).
    Undispatched,
    /// Routine heartbeats held in the flow table for userspace to read (live), instead
    /// of a ring-buffer record each.
    Held,
}

pub const COUNTER_COUNT: u32 = 15;

impl Counter {
    pub const ALL: [Counter; COUNTER_COUNT as usize] = [
        Counter::Packets,
        Counter::PortMatched,
        Counter::Heartbeats,
        Counter::RingbufLost,
        Counter::Truncated,
        Counter::Malformed,
        Counter::Fragments,
        Counter::Unparsed,
        Counter::NotHeartbeat,
        Counter::FlowInsertFailed,
        Counter::FragmentsPassed,
        Counter::Duplicates,
        Counter::Unconfirmed,
        Counter::Undispatched,
        Counter::Held,
    ];

    /// Stable name for logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Packets => "packets",
            Counter::PortMatched => "port_matched",
            Counter::Heartbeats => "heartbeats",
            Counter::RingbufLost => "ringbuf_lost",
            Counter::Truncated => "truncated",
            Counter::Malformed => "malformed",
            Counter::Fragments => "fragments",
            Counter::Unparsed => "unparsed",
            Counter::NotHeartbeat => "not_heartbeat",
            Counter::FlowInsertFailed => "flow_insert_failed",
            Counter::FragmentsPassed => "fragments_passed",
            Counter::Duplicates => "duplicates",
            Counter::Unconfirmed => "unconfirmed",
            Counter::Undispatched => "undispatched",
            Counter::Held => "held",
        }
    }
}
