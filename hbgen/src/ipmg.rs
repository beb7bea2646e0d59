//! CS1000 IPMG heartbeat on UDP 32779/32780 (PROTOCOLS.md §4): payload layout unknown,
//! so the body is opaque (a fixed header and a counter); only arrival timing matters.

use hbwatch_common::proto::Protocol;

use super::rng::Rng;
use super::scenario::{FaultKind, Model, Side};
use super::truth::{AssocKey, Cause, Tracker};
use super::{jitter, ModelCtx, Out};

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
        let from_a = side == Side::A;
        let (src, dst) = if from_a { (a, b) } else { (b, a) };
        let key = AssocKey {
            protocol: Protocol::Cs1000Ipmg,
            tcp: false,
            src,
            dst,
        };
        let part = if from_a { "a-to-b" } else { "b-to-a" };
        out.truth.association(ctx.name, part, &key, interval);
        let mut tr = Tracker::new(key, interval, true);
        let mut counter = rng.u32();
        let mut t = ctx.start + rng.range(0, interval);
        while t < out.duration_ns {
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
                    &payload(counter),
                    "ipmg.heartbeat",
                );
                tr.seen(&mut out.truth, send, None);
            }
            counter = counter.wrapping_add(1);
            t += interval;
        }
        tr.finish(&mut out.truth, out.duration_ns);
    }
}

/// An opaque 16-byte body: a constant header, a counter, padding.
pub fn payload(counter: u32) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[..4].copy_from_slice(&[0x00, 0x10, 0x80, 0x01]);
    p[4..8].copy_from_slice(&counter.to_be_bytes());
    p
}
