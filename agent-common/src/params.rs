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
    /// One table row. Gap and reorder windows are the same for every protocol except MDS.
    const fn row(
        interval_ms: u32,
        max_gap: u32,
        tolerance_pct: u16,
        down_after: u8,
        expected_dscp: u8,
        flags: u8,
    ) -> ProtoParams {
        ProtoParams {
            interval_ms,
            max_gap,
            reorder_window: 16,
            tolerance_pct,
            down_after,
            expected_dscp,
            flags,
            _pad: [0; 3],
        }
    }

    /// Defaults per protocol (PROTOCOLS.md); config overrides them.
    pub const fn defaults(proto: Protocol) -> ProtoParams {
        use Protocol::*;
        //                                      interval max_gap tol% down  dscp      flags
        match proto {
            // 1000 ms both ways; ELAN heartbeats should be EF (46). Down after 4 misses is
            // our documented default (no vendor number).
            Cs1000Rudp => Self::row(1000, 1000, 50, 4, 46, 0),
            // 100 ms, 5 consecutive misses = failure (ICM MDS, SRND); 10 s of gap allowed.
            Mds => Self::row(100, 10_000, 50, 5, DSCP_ANY, 0),
            // Interval learned per session (seed: 5 s); 2 missed = CVP closes the session.
            Ged125 => Self::row(5000, 1000, 50, 2, DSCP_ANY, 0),
            // Primary CUCM keepalive 30 s; phones fail over after 3 intervals. Backup
            // CUCMs only TCP-ACK keepalives: unanswered needs acks seen first.
            Sccp => Self::row(30_000, 1000, 30, 3, DSCP_ANY, P_UNANSWERED_NEEDS_ACKS),
            Cs1000Ipmg => Self::row(1000, 1000, 50, 4, DSCP_ANY, 0),
            // REGISTER refresh 115 s against Expires 120.
            Sip => Self::row(115_000, 1000, 10, 1, DSCP_ANY, 0),
            None => Self::row(1000, 1000, 50, 3, DSCP_ANY, 0),
        }
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for ProtoParams {}
