//! Cisco ICM MDS heartbeats between a CallRouter pair (PROTOCOLS.md §3): one UDP
//! datagram every 100 ms each way, body `DWORD seqno` counting from 0 at process start.
//! The byte order is a scenario choice (LE by default, as a Windows DWORD).

use hbwatch_common::proto::Protocol;

use super::rng::Rng;
use super::scenario::{FaultKind, Model, RestartMode, Side};
use super::truth::{AssocKey, Cause, Tracker};
use super::{jitter, ModelCtx, Out};

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
        let from_a = side == Side::A;
        let (src, dst, mut seq) = if from_a { (a, b, seq_a) } else { (b, a, seq_b) };
        let key = AssocKey {
            protocol: Protocol::Mds,
            tcp: false,
            src,
            dst,
        };
        let part = if from_a { "a-to-b" } else { "b-to-a" };
        out.truth.association(ctx.name, part, &key, interval);
        let mut tr = Tracker::new(key, interval, true);
        let mut restarts: Vec<_> = ctx
            .faults
            .list
            .iter()
            .filter(|f| matches!(f.kind, FaultKind::Restart { side: s, .. } if s == side))
            .collect();
        let mut down_until = 0;
        // Each router runs its own 100 ms timer.
        let mut t = ctx.start + rng.range(0, interval);
        while t < out.duration_ns {
            if let Some(pos) = restarts.iter().position(|f| f.at_ns <= t) {
                let f = restarts.remove(pos);
                let FaultKind::Restart { mode, down_ns, .. } = f.kind else {
                    unreachable!("filtered on Restart")
                };
                seq = match mode {
                    RestartMode::Random => far_from(rng, seq),
                    _ => 0,
                };
                down_until = t + down_ns;
                tr.restarted(Cause::of(f));
            }
            if t < down_until {
                // The router process is restarting: nothing is sent.
                t += interval;
                continue;
            }
            let mut send = t + jitter(rng, interval);
            if let Some(f) = ctx.faults.active(
                t,
                false,
                interval,
                |k| matches!(k, FaultKind::Late { side: s, .. } if *s == side),
            ) {
                if let FaultKind::Late { delay_ns, .. } = f.kind {
                    send += delay_ns;
                }
                tr.delayed(Cause::of(f));
            }
            if let Some(f) = ctx.faults.dropped(t, from_a, false, interval) {
                tr.hidden(Cause::of(f));
            } else {
                let (dscp, _) = ctx.faults.dscp(send, from_a, false, ctx.dscp);
                out.udp(
                    send,
                    &ctx.wire,
                    src,
                    dst,
                    dscp,
                    &payload(seq, little_endian),
                    "mds.heartbeat",
                );
                tr.seen(&mut out.truth, send, Some(seq));
            }
            seq = seq.wrapping_add(1);
            t += interval;
        }
        tr.finish(&mut out.truth, out.duration_ns);
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
