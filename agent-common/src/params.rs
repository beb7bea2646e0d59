//! Per-protocol tuning, kept in the `PARAMS` map so it changes without recompiling.

use crate::proto::Protocol;

/// `expected_dscp` value meaning "no DSCP expectation".
pub const DSCP_ANY: u8 = 0xff;

/// `flags`: report `unanswered` only on associations whose requests were answered
/// before (SCCP backup CUCMs only TCP-ACK keepalives, and that is healthy).
pub const P_UNANSWERED_NEEDS_ACKS: u8 = 1 << 0;

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
    pub _pad: [u8; 3],
}

impl ProtoParams {
    pub const fn defaults(proto: Protocol) -> ProtoParams {
        match proto {
            // 1000 ms both ways; ELAN heartbeats should be EF (46). Down after 4 misses is
            // our documented default (no vendor number), configurable.
            Protocol::Cs1000Rudp => ProtoParams {
                interval_ms: 1000,
                max_gap: 1000,
                reorder_window: 16,
                tolerance_pct: 50,
                down_after: 4,
                expected_dscp: 46,
                flags: 0,
                _pad: [0; 3],
            },
            // 100 ms, 5 consecutive misses = failure (ICM MDS, SRND).
            Protocol::Mds => ProtoParams {
                interval_ms: 100,
                max_gap: 10_000,
                reorder_window: 16,
                tolerance_pct: 50,
                down_after: 5,
                expected_dscp: DSCP_ANY,
                flags: 0,
                _pad: [0; 3],
            },
            // Interval learned per session (seed: 5 s); 2 missed = CVP closes the session.
            Protocol::Ged125 => ProtoParams {
                interval_ms: 5000,
                max_gap: 1000,
                reorder_window: 16,
                tolerance_pct: 50,
                down_after: 2,
                expected_dscp: DSCP_ANY,
                flags: 0,
                _pad: [0; 3],
            },
            // Primary CUCM keepalive 30 s; phones fail over after 3 intervals.
            Protocol::Sccp => ProtoParams {
                interval_ms: 30_000,
                max_gap: 1000,
                reorder_window: 16,
                tolerance_pct: 30,
                down_after: 3,
                expected_dscp: DSCP_ANY,
                flags: P_UNANSWERED_NEEDS_ACKS,
                _pad: [0; 3],
            },
            Protocol::Cs1000Ipmg => ProtoParams {
                interval_ms: 1000,
                max_gap: 1000,
                reorder_window: 16,
                tolerance_pct: 50,
                down_after: 4,
                expected_dscp: DSCP_ANY,
                flags: 0,
                _pad: [0; 3],
            },
            // REGISTER refresh 115 s against Expires 120.
            Protocol::Sip => ProtoParams {
                interval_ms: 115_000,
                max_gap: 1000,
                reorder_window: 16,
                tolerance_pct: 10,
                down_after: 1,
                expected_dscp: DSCP_ANY,
                flags: 0,
                _pad: [0; 3],
            },
            Protocol::None => ProtoParams {
                interval_ms: 1000,
                max_gap: 1000,
                reorder_window: 16,
                tolerance_pct: 50,
                down_after: 3,
                expected_dscp: DSCP_ANY,
                flags: 0,
                _pad: [0; 3],
            },
        }
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for ProtoParams {}
