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
    /// Plausible heartbeats in a row (in order, at least a quarter interval apart, same
    /// size for IPMG) before a new association is announced: a port alone is no
    /// signature where the payload says little (MDS: any 4 bytes; IPMG: anything).
    pub confirm_beats: u8,
    pub _pad: [u8; 2],
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

    /// Defaults per protocol (PROTOCOLS.md); config overrides them.
    pub const fn defaults(proto: Protocol) -> ProtoParams {
        use Protocol::*;
        // confirm: RUDP, GED-125 and SCCP heartbeats have exact byte signatures (a flag
        // word, message type and length), announced at once; MDS (any 4 bytes: a TFTP
        // ACK train counts up too) and IPMG (layout unknown) only after 4 plausible beats.
        //                                      interval max_gap tol% down  dscp      flags confirm
        match proto {
            // 1000 ms both ways; ELAN heartbeats should be EF (46). Down after 4 misses is
            // our documented default (no vendor number).
            Cs1000Rudp => Self::row(1000, 1000, 50, 4, 46, 0, 1),
            // 100 ms, 5 consecutive misses = failure (ICM MDS, SRND); 10 s of gap allowed.
            Mds => Self::row(100, 10_000, 50, 5, DSCP_ANY, 0, 4),
            // Interval learned per session (seed: 5 s); 2 missed = CVP closes the session.
            Ged125 => Self::row(5000, 1000, 50, 2, DSCP_ANY, 0, 1),
            // Primary CUCM keepalive 30 s; phones fail over after 3 intervals. Backup
            // CUCMs only TCP-ACK keepalives: unanswered needs acks seen first.
            Sccp => Self::row(30_000, 1000, 30, 3, DSCP_ANY, P_UNANSWERED_NEEDS_ACKS, 1),
            Cs1000Ipmg => Self::row(1000, 1000, 50, 4, DSCP_ANY, 0, 4),
            // REGISTER refresh 115 s against Expires 120.
            Sip => Self::row(115_000, 1000, 10, 1, DSCP_ANY, 0, 1),
            None => Self::row(1000, 1000, 50, 3, DSCP_ANY, 0, 1),
        }
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for ProtoParams {}
