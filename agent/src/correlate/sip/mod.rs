//! SIP registration and OPTIONS tracking (PROTOCOLS.md §5): to be written.

#[cfg(test)]
mod fixtures;
pub mod parse;

use hbwatch_common::event::RawEvent;

use super::Ctx;
use crate::event::Event;

/// Tunables of SIP tracking.
#[derive(Debug, Clone)]
pub struct SipConfig {
    /// OPTIONS answers that mean "overloaded/down" (CVP default: 503, 480, 600).
    pub options_fail_codes: Vec<u16>,
    /// A request (OPTIONS, REGISTER) without a final answer after this long is unanswered.
    pub answer_timeout_ms: u64,
    /// Grace after a registration's Expires before `sip.expired`.
    pub expiry_grace_ms: u64,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            options_fail_codes: vec![503, 480, 600],
            answer_timeout_ms: 32_000,
            expiry_grace_ms: 0,
        }
    }
}

/// SIP state per device and per OPTIONS peer.
#[derive(Debug, Default)]
pub struct SipTracker {
    pub cfg: SipConfig,
}

impl SipTracker {
    pub fn new(cfg: SipConfig) -> SipTracker {
        SipTracker { cfg }
    }

    /// One `SipMessage` record (`raw`, key oriented as the packet travelled) with its
    /// captured bytes `data`.
    pub fn on_record(&mut self, _raw: &RawEvent, _data: &[u8], _ctx: &Ctx, _out: &mut Vec<Event>) {}

    /// Fires every deadline at or before `now_ns` (record clock).
    pub fn advance(&mut self, _now_ns: u64, _ctx: &Ctx, _out: &mut Vec<Event>) {}

    /// The earliest pending deadline, if any.
    pub fn next_deadline(&self) -> Option<u64> {
        None
    }

    /// `heartbeat.summary` for every SIP association active since the last call.
    pub fn summaries(&mut self, _now_ns: u64, _period_ns: u64, _ctx: &Ctx, _out: &mut Vec<Event>) {}
}
