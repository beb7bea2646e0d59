//! Avaya/Nortel CS1000 RUDP heartbeat between a device pair (PROTOCOLS.md §4): UDP
//! 15000 <-> 15000, both ends originate every 1000 ms with their own BE sequence,
//! payload `seq + 0x02FF`, echoed as `seq + 0x0100`. The originator only moves to the
//! next seq after its echo arrived, so an unanswered heartbeat is re-sent with the
//! same seq at the next tick.

use hbwatch_common::proto::{rudp, Protocol, Role};

use super::beats;
use super::mds::far_from;
use super::rng::Rng;
use super::scenario::{Fault, FaultKind, Model, RestartMode, Side};
use super::truth::Cause;
use super::{jitter, ModelCtx, Out};

/// The restart of `side` whose down time covers `t`.
fn down(faults: &[Fault], side: Side, t: u64) -> Option<&Fault> {
    faults.iter().find(|f| match f.kind {
        FaultKind::Restart {
            side: s, down_ns, ..
        } => s == side && f.at_ns <= t && t < f.at_ns + down_ns,
        _ => false,
    })
}

pub(crate) fn generate(ctx: &ModelCtx, model: &Model, rng: &mut Rng, out: &mut Out) {
    let Model::Rudp {
        a,
        b,
        interval_ns: interval,
        seq_a,
        seq_b,
    } = *model
    else {
        return;
    };
    let faults = &ctx.faults;
    for side in [Side::A, Side::B] {
        let from_a = side == Side::A;
        let peer = if from_a { Side::B } else { Side::A };
        let first = if from_a { seq_a } else { seq_b };
        // Start value unknown (random or time-based): random unless the scenario says.
        let mut seq = first.unwrap_or_else(|| rng.range(1, 0xf000_0000) as u32);
        let (src, dst, mut tr) =
            beats::direction(ctx, out, Protocol::Cs1000Rudp, side, (a, b), interval);
        let mut restarts: Vec<_> = faults
            .list
            .iter()
            .filter(|f| matches!(f.kind, FaultKind::Restart { side: s, .. } if s == side))
            .collect();
        // Sends of the current seq, and those the probe saw.
        let mut attempt = 0u32;
        let mut seen_sends = 0u32;
        let mut first_seen = 0u64;
        let mut unanswered_reported = false;
        let mut t = ctx.start + rng.range(0, interval);
        while t < out.duration_ns {
            if let Some(f) = down(&faults.list, side, t) {
                tr.hidden(Cause::of(f));
                t += interval;
                continue;
            }
            if let Some(pos) = restarts.iter().position(|f| f.at_ns <= t) {
                let f = restarts.remove(pos);
                let FaultKind::Restart { mode, .. } = f.kind else {
                    unreachable!("filtered on Restart")
                };
                seq = match mode {
                    RestartMode::Zero => 0,
                    RestartMode::ResetMarker => rudp::SEQ_RESET,
                    _ => far_from(rng, seq),
                };
                (attempt, seen_sends, unanswered_reported) = (0, 0, false);
                tr.restarted(Cause::of(f));
            }
            attempt += 1;
            let mut send = t + jitter(rng, interval);
            if let Some(f) = faults.active(
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
            let request_lost = faults.dropped(t, from_a, false, interval);
            if let Some(f) = request_lost {
                tr.hidden(Cause::of(f));
            } else {
                let (dscp, df) = faults.dscp(send, from_a, false, ctx.dscp);
                out.udp(
                    send,
                    &ctx.wire,
                    src,
                    dst,
                    dscp,
                    &rudp::payload(seq, Role::Request),
                    "rudp.request",
                );
                tr.seen(&mut out.truth, send, Some(seq));
                tr.dscp(&mut out.truth, send, true, dscp, df.map(Cause::of));
                if seen_sends > 0 {
                    // The probe saw this seq go out before: a retry.
                    let cause = retry_cause(faults, t, interval, side, peer);
                    if !unanswered_reported {
                        tr.unanswered(&mut out.truth, seq, first_seen, send, true, cause);
                        unanswered_reported = true;
                    }
                    tr.retry(&mut out.truth, send, seq, attempt, first_seen, cause);
                } else {
                    first_seen = send;
                }
                seen_sends += 1;
            }
            // The echo: only if the request arrived and the peer is up and answering.
            let silent = faults.active(t, false, interval, |k| {
                matches!(k, FaultKind::Retry { side: s, .. } | FaultKind::Unanswered { side: s, .. } if *s == side)
            });
            let echo_at = send + ctx.rtt(rng);
            let echoed = request_lost.is_none()
                && silent.is_none()
                && down(&faults.list, peer, echo_at).is_none();
            let echo_lost = faults.dropped(t, !from_a, false, interval);
            if echoed && echo_lost.is_none() {
                let (dscp, df) = faults.dscp(echo_at, !from_a, false, ctx.dscp);
                out.udp(
                    echo_at,
                    &ctx.wire,
                    dst,
                    src,
                    dscp,
                    &rudp::payload(seq, Role::Response),
                    "rudp.echo",
                );
                tr.dscp(&mut out.truth, echo_at, false, dscp, df.map(Cause::of));
                tr.answered(&mut out.truth, echo_at);
                // Round trip done: next seq (0xFFFFFFFF, the reset marker, wraps to 0).
                seq = seq.wrapping_add(1);
                (attempt, seen_sends, unanswered_reported) = (0, 0, false);
            }
            t += interval;
        }
        tr.finish(&mut out.truth, out.duration_ns);
    }
}

/// What kept `side`'s request unanswered at `t`: a silent responder, a lost echo,
/// or the peer restarting.
fn retry_cause(
    faults: &super::Faults,
    t: u64,
    interval: u64,
    side: Side,
    peer: Side,
) -> Option<Cause> {
    let from_a = side == Side::A;
    let earlier = t.saturating_sub(interval);
    faults
        .active(earlier, false, interval, |k| {
            matches!(k, FaultKind::Retry { side: s, .. } | FaultKind::Unanswered { side: s, .. } if *s == side)
        })
        .or_else(|| faults.dropped(earlier, !from_a, false, interval))
        .or_else(|| down(&faults.list, peer, earlier))
        .map(Cause::of)
}
