//! GED-125 between an ICM VRU PIM (TCP client) and the CVP Call Server on 5000
//! (PROTOCOLS.md §1): handshake, OPEN_REQ (InvokeID, VersionNumber, IdleTimeout ms) /
//! OPEN_CONF, then HEARTBEAT_REQ every interval with an incrementing InvokeID, answered
//! by HEARTBEAT_CONF echoing it, and the PIM's delayed bare ACK (seed capture).

use hbwatch_common::proto::{ged125, Protocol, Role};

use super::rng::Rng;
use super::scenario::{Fault, FaultKind, Model, RestartMode, Side};
use super::tcp::TcpConn;
use super::truth::{AssocKey, Cause, Tracker};
use super::{jitter, ModelCtx, Out, MS};

pub const OPEN_CONF: u32 = 4;

/// OPEN_REQ: InvokeID, VersionNumber, IdleTimeout (ms), all u32 BE.
pub fn open_req(invoke_id: u32, version: u32, idle_timeout_ms: u32) -> Vec<u8> {
    words(&[12, ged125::OPEN_REQ, invoke_id, version, idle_timeout_ms])
}

/// OPEN_CONF: InvokeID and the five feature booleans (Wireshark's layout).
pub fn open_conf(invoke_id: u32) -> Vec<u8> {
    // UseEventFeed, UsePolledFeed, UseCallRouting, UseTimeSynch, UseServiceControl.
    words(&[24, OPEN_CONF, invoke_id, 1, 0, 1, 1, 1])
}

fn words(w: &[u32]) -> Vec<u8> {
    w.iter().flat_map(|x| x.to_be_bytes()).collect()
}

/// The PIM's delayed ACK after a CONF (seed: 37 ms to 2 s later).
fn delayed_ack(rng: &mut Rng) -> u64 {
    rng.range(20 * MS, 200 * MS)
}

/// When a session can close between the heartbeat before `tick` and `tick`: after
/// the last exchange's delayed ACK.
pub(crate) fn after_exchange(tick: u64, interval: u64) -> u64 {
    tick.saturating_sub(interval) + (interval / 2).min(1000 * MS)
}

/// TCP retransmission timeouts: 200 ms doubling (Linux minimum RTO).
pub(crate) fn rto(n: u32) -> u64 {
    (200 * MS) << n.min(6)
}

pub(crate) fn generate(ctx: &ModelCtx, model: &Model, rng: &mut Rng, out: &mut Out) {
    let Model::Ged125 {
        pim,
        cvp,
        interval_ns: interval,
        idle_timeout_ms,
        version,
        invoke_id,
    } = model.clone()
    else {
        return;
    };
    let faults = &ctx.faults;
    let mut invoke = invoke_id.unwrap_or_else(|| rng.u32());
    let mut port = if pim.port != 0 {
        pim.port
    } else {
        rng.ephemeral_port()
    };
    let mut ends: Vec<&Fault> = faults
        .list
        .iter()
        .filter(|f| matches!(f.kind, FaultKind::Close { .. } | FaultKind::Restart { .. }))
        .collect();
    let mut connect_at = ctx.start;
    let mut session = 0;
    while connect_at < out.duration_ns {
        session += 1;
        let client = super::Ep::new(pim.ip, port);
        let key = AssocKey {
            protocol: Protocol::Ged125,
            tcp: true,
            src: client,
            dst: cvp,
        };
        out.truth
            .association(ctx.name, &format!("session {session}"), &key, interval);
        let mut tr = Tracker::new(key, interval, true);
        let dscp = |t: u64, from_client: bool| ctx.faults.dscp(t, from_client, false, ctx.dscp);
        let mut conn = TcpConn::new(rng, client, cvp, ctx.wire.clone());
        let rtt = ctx.rtt(rng);
        let opened = conn.handshake(
            out,
            connect_at,
            rtt,
            (dscp(connect_at, true).0, dscp(connect_at, false).0),
        );
        let t = opened + 2 * MS;
        conn.send(
            out,
            t,
            true,
            dscp(t, true).0,
            &open_req(invoke, version, idle_timeout_ms),
            "ged125.open_req",
            true,
        );
        conn.send(
            out,
            t + rtt,
            false,
            dscp(t, false).0,
            &open_conf(invoke),
            "ged125.open_conf",
            true,
        );
        conn.ack(out, t + rtt + delayed_ack(rng), true, dscp(t, true).0, true);
        invoke = invoke.wrapping_add(1);
        let mut tick = t + interval;
        let mut next_connect = None;
        // Unanswered REQs in a row: (count, first sent, its InvokeID).
        let mut unanswered: Option<(u32, u64, Option<Cause>)> = None;
        loop {
            // A close due before the capture ends happens even if no heartbeat follows it.
            if let Some(pos) = ends
                .iter()
                .position(|f| f.at_ns <= tick.min(out.duration_ns))
            {
                let f = ends.remove(pos);
                let at = f.at_ns.max(after_exchange(tick, interval));
                let cause = Some(Cause::of(f));
                match f.kind {
                    FaultKind::Close {
                        reset,
                        by,
                        reconnect_ns,
                    } => {
                        let by_client = by == Side::A;
                        if reset {
                            conn.rst(out, at, by_client, dscp(at, by_client).0);
                        } else {
                            conn.fin(
                                out,
                                at,
                                by_client,
                                rtt,
                                (dscp(at, true).0, dscp(at, false).0),
                            );
                        }
                        tr.closed(&mut out.truth, at, reset, by_client, cause);
                        next_connect = reconnect_ns.map(|r| at + r);
                    }
                    FaultKind::Restart {
                        mode: RestartMode::Reconnect,
                        down_ns,
                        ..
                    } => {
                        // The PIM process exits (its OS closes the socket), then
                        // comes back with new InvokeIDs on a new port.
                        conn.fin(out, at, true, rtt, (dscp(at, true).0, dscp(at, false).0));
                        tr.closed(&mut out.truth, at, false, true, cause);
                        invoke = rng.u32();
                        next_connect = Some(at + down_ns.max(MS));
                    }
                    _ => {}
                }
                break;
            }
            if tick >= out.duration_ns {
                break;
            }
            let mut send = tick + jitter(rng, interval);
            if let Some(f) = faults.active(tick, false, interval, |k| {
                matches!(k, FaultKind::Late { .. })
            }) {
                if let FaultKind::Late { delay_ns, .. } = f.kind {
                    send += delay_ns;
                }
                tr.delayed(Cause::of(f));
            }
            let (dc, dcf) = dscp(send, true);
            let req = ged125::message(Role::Request, invoke);
            if let Some(f) = faults.dropped(tick, true, false, interval) {
                // The probe misses the whole exchange; the session goes on.
                tr.hidden(Cause::of(f));
                conn.send(out, send, true, dc, &req, "ged125.heartbeat_req", false);
                conn.send(
                    out,
                    send + rtt,
                    false,
                    dc,
                    &ged125::message(Role::Response, invoke),
                    "ged125.heartbeat_conf",
                    false,
                );
                invoke = invoke.wrapping_add(1);
                tick += interval;
                continue;
            }
            let seq = conn.send(out, send, true, dc, &req, "ged125.heartbeat_req", true);
            tr.seen(&mut out.truth, send, Some(invoke));
            tr.dscp(&mut out.truth, send, true, dc, dcf.map(Cause::of));
            let mut answer_at = send + rtt;
            if let Some(f) = faults.active(tick, false, interval, |k| {
                matches!(k, FaultKind::Retry { .. })
            }) {
                // Lost after the probe: TCP re-sends the same bytes after each RTO.
                let FaultKind::Retry { count, .. } = f.kind else {
                    unreachable!()
                };
                let mut at = send;
                for n in 0..count {
                    at += rto(n);
                    conn.resend(
                        out,
                        at,
                        true,
                        seq,
                        dc,
                        &req,
                        "ged125.heartbeat_req_retransmission",
                    );
                    tr.retry(&mut out.truth, at, invoke, n + 2, send, Some(Cause::of(f)));
                }
                answer_at = at + rtt;
                tr.unanswered(
                    &mut out.truth,
                    invoke,
                    send,
                    send + rto(0),
                    false,
                    Some(Cause::of(f)),
                );
            }
            let (ds, dsf) = dscp(answer_at, false);
            if let Some(f) = faults.active(tick, false, interval, |k| {
                matches!(k, FaultKind::Unanswered { .. })
            }) {
                // CVP's TCP stack acknowledges; the application stays silent.
                conn.ack(out, send + 40 * MS, false, ds, true);
                tr.dscp(
                    &mut out.truth,
                    send + 40 * MS,
                    false,
                    ds,
                    dsf.map(Cause::of),
                );
                let cause = Some(Cause::of(f));
                // The probe knows when the next request goes out (up to its jitter later).
                tr.unanswered(
                    &mut out.truth,
                    invoke,
                    send,
                    tick + interval + interval / 100,
                    true,
                    cause,
                );
                let u = unanswered.get_or_insert((0, send, cause));
                u.0 += 1;
            } else {
                conn.send(
                    out,
                    answer_at,
                    false,
                    ds,
                    &ged125::message(Role::Response, invoke),
                    "ged125.heartbeat_conf",
                    true,
                );
                tr.answered(&mut out.truth, answer_at);
                tr.dscp(&mut out.truth, answer_at, false, ds, dsf.map(Cause::of));
                conn.ack(
                    out,
                    answer_at + delayed_ack(rng),
                    true,
                    dscp(answer_at, true).0,
                    true,
                );
                if let Some((n, first, cause)) = unanswered.take() {
                    peer_unresponsive(&mut tr, out, n, first, answer_at, cause);
                }
            }
            invoke = invoke.wrapping_add(1);
            tick += interval;
        }
        tr.finish(&mut out.truth, out.duration_ns);
        port = rng.ephemeral_port();
        match next_connect {
            Some(t) => connect_at = t,
            None => break,
        }
    }
}

/// `n` requests in a row went unanswered while the transport stayed up; answers came
/// back at `resumed`. Down after the protocol's threshold, with the diagnosis
/// `peer-unresponsive`; not required: EVENTS.md leaves open whether unanswered
/// requests count as misses.
pub(crate) fn peer_unresponsive(
    tr: &mut Tracker,
    out: &mut Out,
    n: u32,
    first: u64,
    resumed: u64,
    cause: Option<Cause>,
) {
    let p = tr.key.protocol.default_params();
    if n < p.down_after as u32 {
        return;
    }
    let down_at = first + p.down_after as u64 * tr.interval_ns;
    let key = tr.key;
    out.truth.expect(
        &key,
        "peer.down",
        down_at,
        (first, resumed),
        false,
        cause,
        vec![("heartbeat.missed", serde_json::json!(p.down_after))],
    );
    out.truth.expect(
        &key,
        "peer.up",
        resumed,
        (resumed, resumed),
        false,
        cause,
        vec![],
    );
}
