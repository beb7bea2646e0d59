//! Per-protocol tuning, kept in the `PARAMS` map so it changes without recompiling.

/// Alerts of one repeating kind sent per association within [`REPEAT_WINDOW_NS`];
/// more are folded (counted, not sent). A correlator rule; here because hbgen's ground
/// truth predicts it too.
pub const REPEAT_BURST: usize = 3;
pub const REPEAT_WINDOW_NS: u64 = 60 * 1_000_000_000;

/// `expected_dscp` value meaning "no DSCP expectation".
pub const DSCP_ANY: u8 = 0xff;

/// `flags`: report `unanswered` only on associations whose requests were answered
/// before (SCCP backup CUCMs only TCP-ACK keepalives, and that is healthy).
pub const P_UNANSWERED_NEEDS_ACKS: u8 = 1 << 0;

/// `flags`: the heartbeat's number identifies a transaction and does not count (MGCP):
/// a new number is the next heartbeat whatever its value (no gap, restart or reordering
/// by number), the same number again is a re-send, and an answer that matches no
/// outstanding request answers another kind of transaction on the same channel.
pub const P_SEQ_IS_AN_ID: u8 = 1 << 1;
/// `flags`: `interval_ms` is the longest a peer waits between heartbeats, not a period:
/// it sends more often when busy (MGCP: every command proves the link), so the expected
/// interval is never learnt shorter from traffic.
pub const P_INTERVAL_IS_A_BOUND: u8 = 1 << 2;
/// `flags`: hold routine heartbeats in the flow table instead of sending a record for
/// each (`FlowState::routine`); userspace reads them when it needs them. Set by the live
/// agent; offline every heartbeat is a record (the same events either way).
pub const P_HOLD_ROUTINE: u8 = 1 << 3;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProtoParams {
    /// Expected heartbeat interval until one is learned, in milliseconds.
    pub interval_ms: u32,
    /// A forward sequence jump up to this many is a gap; further is a restart.
    pub max_gap: u32,
    /// A backward jump up to this many is out-of-order; further is a restart.
    pub reorder_window: u32,
    /// Late tolerance, percent of the interval.
    pub tolerance_pct: u16,
    /// Consecutive missed intervals that mean the peer is down.
    pub down_after: u8,
    /// Expected DSCP, or [`DSCP_ANY`].
    pub expected_dscp: u8,
    /// `P_*` bits.
    pub flags: u8,
    /// Plausible heartbeats in a row (in order, at least a quarter interval apart, same
    /// size for IPMG) before a new association is announced: a port alone is no
    /// signature where the payload says little (MDS: any 4 bytes; IPMG: anything).
    pub confirm_beats: u8,
    pub _pad: [u8; 2],
}

impl ProtoParams {
    /// One row of the protocol table (`proto`). The reorder window is the same for every
    /// protocol.
    pub const fn new(
        interval_ms: u32,
        max_gap: u32,
        tolerance_pct: u16,
        down_after: u8,
        expected_dscp: u8,
        flags: u8,
        confirm_beats: u8,
    ) -> ProtoParams {
        ProtoParams {
            interval_ms,
            max_gap,
            reorder_window: 16,
            tolerance_pct,
            down_after,
            expected_dscp,
            flags,
            confirm_beats,
            _pad: [0; 2],
        }
    }

    /// For a port whose protocol is not known (never expected: the `PARAMS` map has a row
    /// for every id).
    pub const FALLBACK: ProtoParams = ProtoParams::new(1000, 1000, 50, 3, DSCP_ANY, 0, 1);
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for ProtoParams {}
