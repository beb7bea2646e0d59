//! CS1000 IPMG heartbeat on UDP 32779/32780 (PROTOCOLS.md §4): payload layout unknown,
//! so the body is opaque (a fixed header and a counter); only arrival timing matters.

use hbwatch_common::proto::Protocol;

use super::beats::{self, Beat};
use super::rng::Rng;
use super::scenario::{Model, RestartMode, Side};
use super::{ModelCtx, Out};

pub(crate) fn generate(ctx: &ModelCtx, model: &Model, rng: &mut Rng, out: &mut Out) {
    let Model::Ipmg {
        a,
        b,
        interval_ns: interval,
    } = *model
    else {
        return;
    };
    for side in [Side::A, Side::B] {
        let ends = beats::direction(ctx, out, Protocol::Cs1000Ipmg, side, (a, b), interval);
        let mut gateway = Gateway { counter: rng.u32() };
        beats::run(&mut gateway, ctx, rng, out, side, ends, interval);
    }
}

/// One side's heartbeats: an opaque body with a counter (not a sequence the agent
/// reads: only timing matters).
struct Gateway {
    counter: u32,
}

impl Beat for Gateway {
    const LABEL: &'static str = "ipmg.heartbeat";

    fn payload(&self) -> Vec<u8> {
        payload(self.counter).to_vec()
    }

    fn id(&self) -> Option<u32> {
        None
    }

    fn next(&mut self) {
        self.counter = self.counter.wrapping_add(1);
    }

    /// IPMG restarts are not modelled (the scenario refuses them).
    fn restart(&mut self, _rng: &mut Rng, _mode: RestartMode) {}
}

/// An opaque 16-byte body: a constant header, a counter, padding.
pub fn payload(counter: u32) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[..4].copy_from_slice(&[0x00, 0x10, 0x80, 0x01]);
    p[4..8].copy_from_slice(&counter.to_be_bytes());
    p
}
