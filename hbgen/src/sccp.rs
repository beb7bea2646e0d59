//! SCCP (Skinny) between a Cisco IP phone and CUCM on TCP 2000 (PROTOCOLS.md §2), all
//! little-endian with header version 0x16: the phone registers with its primary CUCM
//! (Register / RegisterAck announcing the keepalive intervals), sends KeepAlive every
//! 30 s answered by KeepAliveAck; to its backup CUCM it sends KeepAlive every 60 s,
//! answered only by TCP ACKs (healthy, Cisco 200410).

use hbwatch_common::proto::{sccp, Protocol, Role};

use super::ged125::{after_exchange, peer_unresponsive, rto};
use super::rng::Rng;
use super::scenario::{Fault, FaultKind, Model, Side};
use super::tcp::TcpConn;
use super::truth::{AssocKey, Cause, Tracker};
use super::{jitter, Ep, ModelCtx, Out, MS};

pub const REGISTER: u32 = 0x0001;
const SEC: u64 = 1_000_000_000;

fn message(header_version: u32, id: u32, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(12 + body.len());
    m.extend_from_slice(&(4 + body.len() as u32).to_le_bytes());
    m.extend_from_slice(&header_version.to_le_bytes());
    m.extend_from_slice(&id.to_le_bytes());
    m.extend_from_slice(body);
    m
}

/// KeepAlive (request) or KeepAliveAck (response), 12 bytes, no body.
pub fn keepalive(header_version: u32, role: Role) -> Vec<u8> {
    let id = if role == Role::Response {
        sccp::KEEPALIVE_ACK
    } else {
        sccp::KEEPALIVE
    };
    message(header_version, id, &[])
}

/// Register: station identity, address, device type and stream counts.
pub fn register(header_version: u32, device: &str, ip: std::net::IpAddr) -> Vec<u8> {
    let mut b = Vec::new();
    let mut name = [0u8; 16];
    let n = device.len().min(15);
    name[..n].copy_from_slice(&device.as_bytes()[..n]);
    b.extend_from_slice(&name);
    b.extend_from_slice(&0u32.to_le_bytes()); // reserved
    b.extend_from_slice(&1u32.to_le_bytes()); // instance
    let v4 = match ip {
        std::net::IpAddr::V4(v4) => v4.octets(),
        std::net::IpAddr::V6(_) => [0; 4],
    };
    b.extend_from_slice(&v4); // stationIpAddr (network order, as phones send it)
    b.extend_from_slice(&437u32.to_le_bytes()); // deviceType: 7975
    b.extend_from_slice(&5u32.to_le_bytes()); // maxStreams
    b.extend_from_slice(&0u32.to_le_bytes()); // activeStreams
    b.extend_from_slice(&[0x16, 0, 0x72, 0x85]); // protocolVer, unknown, phoneFeatures
    b.extend_from_slice(&4u32.to_le_bytes()); // maxConferences
    b.extend_from_slice(&0u32.to_le_bytes()); // activeConferences
    message(header_version, REGISTER, &b)
}

/// RegisterAck: keepAliveInterval (s), dateTemplate, padding, secondaryKeepAliveInterval
/// (s), maxProtocolVer, unknown, phoneFeatures.
pub fn register_ack(header_version: u32, keepalive_s: u32, secondary_s: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&keepalive_s.to_le_bytes());
    b.extend_from_slice(b"M/D/YA");
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&secondary_s.to_le_bytes());
    b.extend_from_slice(&[0x16, 0, 0, 0]);
    message(header_version, sccp::REGISTER_ACK, &b)
}

pub(crate) fn generate(ctx: &ModelCtx, model: &Model, rng: &mut Rng, out: &mut Out) {
    let Model::Sccp {
        phone,
        primary,
        backup,
        keepalive_s,
        secondary_keepalive_s,
        header_version,
        ref device,
    } = *model
    else {
        return;
    };
    let link = Link {
        phone,
        header_version,
        device: device.clone(),
        keepalive_s,
        secondary_keepalive_s,
    };
    link.run(ctx, rng, out, primary, false, ctx.start);
    if let Some(backup) = backup {
        // Phones connect to the backup a little after registering with the primary.
        let start = ctx.start + rng.range(500 * MS, 2000 * MS);
        link.run(ctx, rng, out, backup, true, start);
    }
}

struct Link {
    phone: Ep,
    header_version: u32,
    device: String,
    keepalive_s: u32,
    secondary_keepalive_s: u32,
}

impl Link {
    /// One CUCM connection (and its reconnections) from `start`.
    fn run(
        &self,
        ctx: &ModelCtx,
        rng: &mut Rng,
        out: &mut Out,
        cucm: Ep,
        backup: bool,
        start: u64,
    ) {
        let faults = &ctx.faults;
        let hv = self.header_version;
        let interval = if backup {
            self.secondary_keepalive_s
        } else {
            self.keepalive_s
        } as u64
            * SEC;
        let mut ends: Vec<&Fault> = faults
            .list
            .iter()
            .filter(|f| {
                f.backup == backup
                    && matches!(f.kind, FaultKind::Close { .. } | FaultKind::Restart { .. })
            })
            .collect();
        let part = if backup { "backup" } else { "primary" };
        let mut port = if self.phone.port != 0 {
            self.phone.port.wrapping_add(u16::from(backup))
        } else {
            rng.ephemeral_port()
        };
        let mut connect_at = start;
        while connect_at < out.duration_ns {
            let client = Ep::new(self.phone.ip, port);
            let key = AssocKey {
                protocol: Protocol::Sccp,
                tcp: true,
                src: client,
                dst: cucm,
            };
            out.truth.association(ctx.name, part, &key, interval);
            let mut tr = Tracker::new(key, interval, true);
            let dscp = |t: u64, from_phone: bool| faults.dscp(t, from_phone, backup, ctx.dscp);
            let mut conn = TcpConn::new(rng, client, cucm, ctx.wire.clone());
            let rtt = ctx.rtt(rng);
            let mut t = conn.handshake(
                out,
                connect_at,
                rtt,
                (dscp(connect_at, true).0, dscp(connect_at, false).0),
            );
            if !backup {
                t += 5 * MS;
                conn.send(
                    out,
                    t,
                    true,
                    dscp(t, true).0,
                    &register(hv, &self.device, client.ip),
                    "sccp.register",
                    true,
                );
                let ack = register_ack(hv, self.keepalive_s, self.secondary_keepalive_s);
                conn.send(
                    out,
                    t + rtt + MS,
                    false,
                    dscp(t, false).0,
                    &ack,
                    "sccp.register_ack",
                    true,
                );
                conn.ack(out, t + rtt + 40 * MS, true, dscp(t, true).0, true);
            }
            let mut tick = t + interval;
            let mut next_connect = None;
            let mut unanswered: Option<(u32, u64, Option<Cause>)> = None;
            loop {
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
                            let by_phone = by == Side::A;
                            if reset {
                                conn.rst(out, at, by_phone, dscp(at, by_phone).0);
                            } else {
                                conn.fin(
                                    out,
                                    at,
                                    by_phone,
                                    rtt,
                                    (dscp(at, true).0, dscp(at, false).0),
                                );
                            }
                            tr.closed(&mut out.truth, at, reset, by_phone, cause);
                            next_connect = reconnect_ns.map(|r| at + r);
                        }
                        FaultKind::Restart { down_ns, .. } => {
                            // The phone reboots: no FIN; the old session just goes quiet
                            // (the truth expects missed/down on it) and a new one opens.
                            tr.hidden(Cause::of(f));
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
                    tr.delayed(Cause::of(f));
                }
                let (dp, dpf) = dscp(send, true);
                let ka = keepalive(hv, Role::Request);
                if let Some(f) = faults.dropped(tick, true, backup, interval) {
                    tr.hidden(Cause::of(f));
                    conn.send(out, send, true, dp, &ka, "sccp.keepalive", false);
                    if !backup {
                        conn.send(
                            out,
                            send + rtt,
                            false,
                            dp,
                            &keepalive(hv, Role::Response),
                            "sccp.keepalive_ack",
                            false,
                        );
                    }
                    tick += interval;
                    continue;
                }
                let seq = conn.send(out, send, true, dp, &ka, "sccp.keepalive", true);
                tr.seen(&mut out.truth, send, None);
                let number = tr.seen_count;
                tr.dscp(&mut out.truth, send, true, dp, dpf.map(Cause::of));
                let mut answer_at = send + rtt;
                if let Some(f) = faults.active(tick, backup, interval, |k| {
                    matches!(k, FaultKind::Retry { .. })
                }) {
                    let FaultKind::Retry { count, .. } = f.kind else {
                        unreachable!()
                    };
                    let mut at = send;
                    for n in 0..count {
                        at += rto(n);
                        conn.resend(out, at, true, seq, dp, &ka, "sccp.keepalive_retransmission");
                        tr.retry(&mut out.truth, at, number, n + 2, send, Some(Cause::of(f)));
                    }
                    answer_at = at + rtt;
                    if !backup {
                        tr.unanswered(
                            &mut out.truth,
                            number,
                            send,
                            send + rto(0),
                            false,
                            Some(Cause::of(f)),
                        );
                    }
                }
                let (dc, dcf) = dscp(answer_at, false);
                let silent = faults.active(tick, backup, interval, |k| {
                    matches!(k, FaultKind::Unanswered { .. })
                });
                if backup || silent.is_some() {
                    // Backup CUCMs only acknowledge at the TCP level (healthy); a silent
                    // primary does the same.
                    conn.ack(out, answer_at + 40 * MS, false, dc, true);
                    tr.dscp(
                        &mut out.truth,
                        answer_at + 40 * MS,
                        false,
                        dc,
                        dcf.map(Cause::of),
                    );
                    if let Some(f) = silent {
                        let cause = Some(Cause::of(f));
                        tr.unanswered(
                            &mut out.truth,
                            number,
                            send,
                            tick + interval + interval / 100,
                            true,
                            cause,
                        );
                        unanswered.get_or_insert((0, send, cause)).0 += 1;
                    }
                } else {
                    conn.send(
                        out,
                        answer_at,
                        false,
                        dc,
                        &keepalive(hv, Role::Response),
                        "sccp.keepalive_ack",
                        true,
                    );
                    tr.answered(&mut out.truth, answer_at);
                    tr.dscp(&mut out.truth, answer_at, false, dc, dcf.map(Cause::of));
                    conn.ack(
                        out,
                        answer_at + rng.range(20 * MS, 200 * MS),
                        true,
                        dscp(answer_at, true).0,
                        true,
                    );
                    if let Some((n, first, cause)) = unanswered.take() {
                        peer_unresponsive(&mut tr, out, n, first, answer_at, cause);
                    }
                }
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
}
