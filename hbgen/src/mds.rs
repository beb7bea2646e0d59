//! Cisco ICM MDS heartbeats between a CallRouter pair (PROTOCOLS.md §3): one UDP
//! datagram every 100 ms each way, body `DWORD seqno` counting from 0 at process start.
//! The byte order is a scenario choice (LE by default, as a Windows DWORD).

use hbwatch_common::proto::Protocol;

use super::beats::{self, Beat};
use super::rng::Rng;
use super::scenario::{Model, RestartMode, Side};
use super::{ModelCtx, Out};

pub(crate) fn generate(ctx: &ModelCtx, model: &Model, rng: &mut Rng, out: &mut Out) {
    let Model::Mds {
        a,
        b,
        interval_ns: interval,
        little_endian,
        seq_a,
        seq_b,
    } = *model
    else {
        return;
    };
    for side in [Side::A, Side::B] {
        let seq = if side == Side::A { seq_a } else { seq_b };
        let ends = beats::direction(ctx, out, Protocol::Mds, side, (a, b), interval);
        let mut router = Router { seq, little_endian };
        beats::run(&mut router, ctx, rng, out, side, ends, interval);
    }
}

/// One router's heartbeats: a seqno counting from 0 at process start.
struct Router {
    seq: u32,
    little_endian: bool,
}

impl Beat for Router {
    const LABEL: &'static str = "mds.heartbeat";

    fn payload(&self) -> Vec<u8> {
        payload(self.seq, self.little_endian).to_vec()
    }

    fn id(&self) -> Option<u32> {
        Some(self.seq)
    }

    fn next(&mut self) {
        self.seq = self.seq.wrapping_add(1);
    }

    fn restart(&mut self, rng: &mut Rng, mode: RestartMode) {
        self.seq = match mode {
            RestartMode::Random => far_from(rng, self.seq),
            _ => 0,
        };
    }
}

/// The 4-byte heartbeat body.
pub fn payload(seq: u32, little_endian: bool) -> [u8; 4] {
    if little_endian {
        seq.to_le_bytes()
    } else {
        seq.to_be_bytes()
    }
}

/// A sequence unrelated to `old` (neither a gap nor a reorder away from it).
pub(crate) fn far_from(rng: &mut Rng, old: u32) -> u32 {
    loop {
        let s = rng.range(1, 0xf000_0000) as u32;
        let d = s.wrapping_sub(old);
        if d > 100_000 && d < u32::MAX - 100_000 {
            return s;
        }
    }
}
