//! One direction of a UDP heartbeat stream, shared by MDS and IPMG: a datagram every
//! interval on the sender's own timer, with the faults played the same way (late, lost,
//! re-marked, the sender restarting). What differs per protocol is a [`Beat`].

use hbwatch_common::proto::Protocol;

use super::rng::Rng;
use super::scenario::{FaultKind, RestartMode, Side};
use super::truth::{AssocKey, Cause, Tracker};
use super::{jitter, Ep, ModelCtx, Out};

/// What a protocol's heartbeat carries.
pub(crate) trait Beat {
    const LABEL: &'static str;
    fn payload(&self) -> Vec<u8>;
    /// The sequence number the truth knows the heartbeat by, if it has one.
    fn id(&self) -> Option<u32>;
    /// After each interval, sent or not.
    fn next(&mut self);
    /// The sender's process restarted (`mode` says how its counter starts again).
    fn restart(&mut self, rng: &mut Rng, mode: RestartMode);
}

/// The endpoints of `side`'s direction between `a` and `b`, its association
/// registered in the truth ("a-to-b", "b-to-a"), and a tracker for it.
pub(crate) fn direction(
    ctx: &ModelCtx,
    out: &mut Out,
    protocol: Protocol,
    side: Side,
    (a, b): (Ep, Ep),
    interval: u64,
) -> (Ep, Ep, Tracker) {
    let from_a = side == Side::A;
    let (src, dst) = if from_a { (a, b) } else { (b, a) };
    let key = AssocKey {
        protocol,
        tcp: false,
        src,
        dst,
    };
    let part = if from_a { "a-to-b" } else { "b-to-a" };
    out.truth.association(ctx.name, part, &key, interval);
    (src, dst, Tracker::new(key, interval, true))
}

/// `side` sends `beat` from `src` to `dst` every `interval` until the capture ends.
pub(crate) fn run<B: Beat>(
    beat: &mut B,
    ctx: &ModelCtx,
    rng: &mut Rng,
    out: &mut Out,
    side: Side,
    (src, dst, mut tr): (Ep, Ep, Tracker),
    interval: u64,
) {
    let from_a = side == Side::A;
    let mut restarts: Vec<_> = ctx
        .faults
        .list
        .iter()
        .filter(|f| matches!(f.kind, FaultKind::Restart { side: s, .. } if s == side))
        .collect();
    let mut down_until = 0;
    // Each sender runs its own timer.
    let mut t = ctx.start + rng.range(0, interval);
    while t < out.duration_ns {
        if let Some(pos) = restarts.iter().position(|f| f.at_ns <= t) {
            let f = restarts.remove(pos);
            let FaultKind::Restart { mode, down_ns, .. } = f.kind else {
                unreachable!("filtered on Restart")
            };
            beat.restart(rng, mode);
            down_until = t + down_ns;
            tr.restarted(Cause::of(f));
        }
        if t < down_until {
            // The sender's process is restarting: nothing is sent.
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
            let payload = beat.payload();
            out.udp(send, &ctx.wire, src, dst, dscp, &payload, B::LABEL);
            tr.seen(&mut out.truth, send, beat.id());
        }
        beat.next();
        t += interval;
    }
    tr.finish(&mut out.truth, out.duration_ns);
}
