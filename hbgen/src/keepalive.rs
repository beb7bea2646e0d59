//! One TCP heartbeat session, shared by GED-125 and SCCP: the handshake, the
//! protocol's open exchange, then a request every interval answered by a response (or
//! only by TCP ACKs), with the faults played the same way for both: late, lost to the
//! probe, re-sent after TCP's RTO, left unanswered, closed (FIN/RST), restarted.
//! What differs per protocol is a [`Keepalive`].

use hbwatch_common::proto::Protocol;

use super::rng::Rng;
use super::scenario::{Fault, FaultKind, Side};
use super::tcp::TcpConn;
use super::truth::{AssocKey, Cause, Tracker};
use super::{jitter, Ep, Faults, ModelCtx, Out, MS};

/// What a protocol brings to the session loop.
pub(crate) trait Keepalive {
    /// Frame labels: request, response, request re-sent by TCP.
    const LABELS: [&'static str; 3];
    /// The messages after the handshake (which completed at `opened`); returns when
    /// the first interval starts.
    fn open(&mut self, s: &mut Session, out: &mut Out, rng: &mut Rng, opened: u64) -> u64;
    fn request(&self) -> Vec<u8>;
    /// None when the server answers with TCP ACKs only (an SCCP backup CUCM).
    fn response(&self) -> Option<Vec<u8>>;
    /// The id a heartbeat carries (GED-125's InvokeID); None: known by its number in
    /// the session.
    fn id(&self) -> Option<u32> {
        None
    }
    /// After each interval's exchange.
    fn next(&mut self) {}
    /// The client restarts at `at` (the session then reconnects).
    fn restart(&mut self, s: &mut Session, out: &mut Out, rng: &mut Rng, at: u64, f: &Fault);
    /// The server TCP-ACKs a request it leaves unanswered 40 ms after the request was
    /// sent (true: CVP) or 40 ms after its answer was due (false: CUCM).
    const SILENT_ACK_FROM_REQUEST: bool;
}

/// One connection's state, for the protocol's hooks.
pub(crate) struct Session<'a> {
    pub conn: TcpConn,
    pub tr: Tracker,
    pub rtt: u64,
    faults: &'a Faults,
    /// The DSCP packets carry unless a fault re-marks them.
    base_dscp: u8,
    backup: bool,
}

impl<'a> Session<'a> {
    /// The DSCP a packet sent at `t` carries, and the fault that re-marked it.
    pub fn dscp(&self, t: u64, from_client: bool) -> (u8, Option<&'a Fault>) {
        self.faults
            .dscp(t, from_client, self.backup, self.base_dscp)
    }

    /// Both directions' DSCP at `t` (client, server).
    pub fn dscp_pair(&self, t: u64) -> (u8, u8) {
        (self.dscp(t, true).0, self.dscp(t, false).0)
    }
}

/// Where and how one session runs.
pub(crate) struct Link<'a> {
    pub ctx: &'a ModelCtx<'a>,
    pub protocol: Protocol,
    pub client: Ep,
    pub server: Ep,
    /// The server is a backup (faults aimed at the backup apply).
    pub backup: bool,
    pub interval: u64,
    /// The association's part in the truth ("session 2", "primary").
    pub part: &'a str,
}

/// The client's delayed ACK after an answer (seed: 37 ms to 2 s later).
pub(crate) fn delayed_ack(rng: &mut Rng) -> u64 {
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

/// The fault kinds that end a session.
pub(crate) fn ends_session(f: &Fault) -> bool {
    matches!(f.kind, FaultKind::Close { .. } | FaultKind::Restart { .. })
}

/// Runs one connection from `connect_at` until it closes or the capture ends; `ends`
/// are the closes and restarts still to come (each is used once). Returns when the
/// client connects again, if it does.
pub(crate) fn run<P: Keepalive>(
    p: &mut P,
    link: &Link,
    rng: &mut Rng,
    out: &mut Out,
    ends: &mut Vec<&Fault>,
    connect_at: u64,
) -> Option<u64> {
    let (ctx, backup, interval) = (link.ctx, link.backup, link.interval);
    let faults = &ctx.faults;
    let [request_label, response_label, resend_label] = P::LABELS;
    let key = AssocKey {
        protocol: link.protocol,
        tcp: true,
        src: link.client,
        dst: link.server,
    };
    out.truth.association(ctx.name, link.part, &key, interval);
    let conn = TcpConn::new(rng, link.client, link.server, ctx.wire.clone());
    let rtt = ctx.rtt(rng);
    let mut s = Session {
        conn,
        tr: Tracker::new(key, interval, true),
        rtt,
        faults: &ctx.faults,
        base_dscp: ctx.dscp,
        backup,
    };
    let dscp = s.dscp_pair(connect_at);
    let opened = s.conn.handshake(out, connect_at, rtt, dscp);
    let t = p.open(&mut s, out, rng, opened);
    let mut tick = t + interval;
    let mut next_connect = None;
    // Unanswered requests in a row: (count, first sent, its cause).
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
                        let d = s.dscp(at, by_client).0;
                        s.conn.rst(out, at, by_client, d);
                    } else {
                        let d = s.dscp_pair(at);
                        s.conn.fin(out, at, by_client, rtt, d);
                    }
                    s.tr.closed(&mut out.truth, at, reset, by_client, cause);
                    next_connect = reconnect_ns.map(|r| at + r);
                }
                FaultKind::Restart { down_ns, .. } => {
                    p.restart(&mut s, out, rng, at, f);
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
        if let Some(f) = faults.active(tick, backup, interval, |k| {
            matches!(k, FaultKind::Late { .. })
        }) {
            if let FaultKind::Late { delay_ns, .. } = f.kind {
                send += delay_ns;
            }
            s.tr.delayed(Cause::of(f));
        }
        let (dc, dcf) = s.dscp(send, true);
        let (req, resp) = (p.request(), p.response());
        if let Some(f) = faults.dropped(tick, true, backup, interval) {
            // The probe misses the whole exchange; the session goes on.
            s.tr.hidden(Cause::of(f));
            s.conn.send(out, send, true, dc, &req, request_label, false);
            if let Some(resp) = &resp {
                s.conn
                    .send(out, send + rtt, false, dc, resp, response_label, false);
            }
            p.next();
            tick += interval;
            continue;
        }
        let seq = s.conn.send(out, send, true, dc, &req, request_label, true);
        s.tr.seen(&mut out.truth, send, p.id());
        let id = p.id().unwrap_or(s.tr.seen_count);
        s.tr.dscp(&mut out.truth, send, true, dc, dcf.map(Cause::of));
        let mut answer_at = send + rtt;
        if let Some(f) = faults.active(tick, backup, interval, |k| {
            matches!(k, FaultKind::Retry { .. })
        }) {
            // Lost after the probe: TCP re-sends the same bytes after each RTO.
            let FaultKind::Retry { count, .. } = f.kind else {
                unreachable!()
            };
            let mut at = send;
            for n in 0..count {
                at += rto(n);
                s.conn.resend(out, at, true, seq, dc, &req, resend_label);
                s.tr.retry(&mut out.truth, at, id, n + 2, send, Some(Cause::of(f)));
            }
            answer_at = at + rtt;
            if resp.is_some() {
                s.tr.unanswered(
                    &mut out.truth,
                    id,
                    send,
                    send + rto(0),
                    false,
                    Some(Cause::of(f)),
                );
            }
        }
        let (ds, dsf) = s.dscp(answer_at, false);
        let silent = faults.active(tick, backup, interval, |k| {
            matches!(k, FaultKind::Unanswered { .. })
        });
        match resp.filter(|_| silent.is_none()) {
            None => {
                // The server's TCP stack acknowledges; its application stays silent
                // (or, a backup CUCM, is healthy that way).
                let ack_at = if P::SILENT_ACK_FROM_REQUEST {
                    send + 40 * MS
                } else {
                    answer_at + 40 * MS
                };
                s.conn.ack(out, ack_at, false, ds, true);
                s.tr.dscp(&mut out.truth, ack_at, false, ds, dsf.map(Cause::of));
                if let Some(f) = silent {
                    let cause = Some(Cause::of(f));
                    // The probe knows when the next request goes out (up to its jitter later).
                    s.tr.unanswered(
                        &mut out.truth,
                        id,
                        send,
                        tick + interval + interval / 100,
                        true,
                        cause,
                    );
                    unanswered.get_or_insert((0, send, cause)).0 += 1;
                }
            }
            Some(resp) => {
                s.conn
                    .send(out, answer_at, false, ds, &resp, response_label, true);
                s.tr.answered(&mut out.truth, answer_at);
                s.tr.dscp(&mut out.truth, answer_at, false, ds, dsf.map(Cause::of));
                let ack_at = answer_at + delayed_ack(rng);
                let d = s.dscp(answer_at, true).0;
                s.conn.ack(out, ack_at, true, d, true);
                if let Some((n, first, cause)) = unanswered.take() {
                    peer_unresponsive(&mut s.tr, out, n, first, answer_at, cause);
                }
            }
        }
        p.next();
        tick += interval;
    }
    s.tr.finish(&mut out.truth, out.duration_ns);
    next_connect
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
