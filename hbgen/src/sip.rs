//! SIP keepalives (PROTOCOLS.md §5), over UDP 5060 or TCP:
//! - a Cisco phone's registration with its primary CUCM: `REGISTER` with `Expires: 3600`
//!   answered `100 Trying` + `200 OK` with `Expires: 120`, refreshed every 115 s (same
//!   Call-ID, next CSeq); to its backup CUCM a keepalive `REGISTER` with `Expires: 0`
//!   and Contact `;expires=0;cisco-keep-alive`, answered `200 OK` (not an unregistration);
//! - OPTIONS pings (CVP server groups, Avaya entity monitoring) answered `200 OK`.

use hbwatch_common::proto::Protocol;
use serde_json::json;

use super::rng::Rng;
use super::scenario::{Fault, FaultKind, Model, Side};
use super::tcp::TcpConn;
use super::truth::{AssocKey, Cause, Tracker};
use super::{jitter, Ep, ModelCtx, Out, Wire, MS};

const SEC: u64 = 1_000_000_000;
/// RFC 3261 timers: T1, T2, and F (non-INVITE transaction timeout).
const T1: u64 = 500 * MS;
const T2: u64 = 4 * SEC;
const TIMER_F: u64 = 64 * T1;

/// Retransmission times of an unanswered request over UDP, after the first send.
fn retransmissions(until: u64) -> Vec<u64> {
    let (mut at, mut step, mut v) = (0, T1, Vec::new());
    while at + step < until.min(TIMER_F) {
        at += step;
        v.push(at);
        step = (step * 2).min(T2);
    }
    v
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        200 => "OK",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        480 => "Temporarily Unavailable",
        486 => "Busy Here",
        500 => "Server Internal Error",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        600 => "Busy Everywhere",
        _ => "Failure",
    }
}

/// `Sun, 22 Nov 2026 10:00:00 GMT` for a time in ns since the Unix epoch.
fn http_date(unix_ns: u64) -> String {
    use time::macros::format_description;
    let fmt = format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(unix_ns as i128)
        .ok()
        .and_then(|t| t.format(fmt).ok())
        .unwrap_or_default()
}

fn hex(rng: &mut Rng, n: usize) -> String {
    (0..n)
        .map(|_| char::from_digit(rng.range(0, 16) as u32, 16).unwrap_or('0'))
        .collect()
}

/// One SIP dialog's fixed parts: who talks to whom, and how.
struct Dialog {
    transport: &'static str,
    client: Ep,
    call_id: String,
    from: String,
    to: String,
}

impl Dialog {
    fn request(
        &self,
        method: &str,
        uri: &str,
        branch: &str,
        cseq: u32,
        date: &str,
        tail: &str,
    ) -> String {
        format!(
            "{method} {uri} SIP/2.0\r\n\
             Via: SIP/2.0/{} {};branch=z9hG4bK{branch}\r\n\
             From: {}\r\n\
             To: {}\r\n\
             Call-ID: {}\r\n\
             Max-Forwards: 70\r\n\
             Date: {date}\r\n\
             CSeq: {cseq} {method}\r\n\
             {tail}\
             Content-Length: 0\r\n\r\n",
            self.transport, self.client, self.from, self.to, self.call_id
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn response(
        &self,
        status: u16,
        method: &str,
        branch: &str,
        cseq: u32,
        to_tag: Option<&str>,
        date: &str,
        tail: &str,
    ) -> String {
        let to = match to_tag {
            Some(tag) => format!("{};tag={tag}", self.to),
            None => self.to.clone(),
        };
        format!(
            "SIP/2.0 {status} {}\r\n\
             Via: SIP/2.0/{} {};branch=z9hG4bK{branch}\r\n\
             From: {}\r\n\
             To: {to}\r\n\
             Date: {date}\r\n\
             Call-ID: {}\r\n\
             CSeq: {cseq} {method}\r\n\
             {tail}\
             Content-Length: 0\r\n\r\n",
            reason(status),
            self.transport,
            self.client,
            self.from,
            self.call_id
        )
    }
}

/// Where SIP messages go: UDP datagrams or one TCP connection (with its ACKs).
struct Channel {
    wire: Wire,
    client: Ep,
    server: Ep,
    tcp: Option<TcpConn>,
}

impl Channel {
    #[allow(clippy::too_many_arguments)]
    fn open(
        rng: &mut Rng,
        out: &mut Out,
        wire: &Wire,
        client: Ep,
        server: Ep,
        tcp: bool,
        t: u64,
        rtt: u64,
        dscp: u8,
    ) -> (Channel, u64) {
        let mut ch = Channel {
            wire: wire.clone(),
            client,
            server,
            tcp: None,
        };
        let mut ready = t;
        if tcp {
            let mut conn = TcpConn::new(rng, client, server, wire.clone());
            ready = conn.handshake(out, t, rtt, (dscp, dscp)) + MS;
            ch.tcp = Some(conn);
        }
        (ch, ready)
    }

    fn send(
        &mut self,
        out: &mut Out,
        t: u64,
        from_client: bool,
        dscp: u8,
        text: &str,
        label: &'static str,
    ) {
        match &mut self.tcp {
            Some(conn) => {
                conn.send(out, t, from_client, dscp, text.as_bytes(), label, true);
                // The receiver acknowledges each message (seed capture).
                conn.ack(out, t + MS / 3, !from_client, dscp, true);
            }
            None => {
                let (src, dst) = if from_client {
                    (self.client, self.server)
                } else {
                    (self.server, self.client)
                };
                out.udp(t, &self.wire, src, dst, dscp, text.as_bytes(), label);
            }
        }
    }

    /// TCP: the bytes of a request the other side never answers are acknowledged only.
    /// UDP: the request is retransmitted (T1 doubling up to T2) until `until`.
    fn unanswered(
        &mut self,
        out: &mut Out,
        t: u64,
        until: u64,
        dscp: u8,
        text: &str,
        label: &'static str,
    ) {
        match &mut self.tcp {
            Some(conn) => conn.ack(out, t + 40 * MS, false, dscp, true),
            None => {
                for r in retransmissions(until.saturating_sub(t)) {
                    out.udp(
                        t + r,
                        &self.wire,
                        self.client,
                        self.server,
                        dscp,
                        text.as_bytes(),
                        label,
                    );
                }
            }
        }
    }

    fn close(&mut self, out: &mut Out, at: u64, reset: bool, by_client: bool, rtt: u64, dscp: u8) {
        if let Some(conn) = &mut self.tcp {
            if reset {
                conn.rst(out, at, by_client, dscp);
            } else {
                conn.fin(out, at, by_client, rtt, (dscp, dscp));
            }
        }
    }
}

/// A Cisco phone's Contact header (seed capture), with the keepalive parameters for a backup.
fn contact(phone: Ep, transport: &str, instance: &str, device: &str, keepalive: bool) -> String {
    format!(
        "Contact: <sip:{instance}@{phone};transport={transport}>;+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-{mac}>\";+u.sip!devicename.ccm.cisco.com=\"{device}\";+u.sip!model.ccm.cisco.com=\"437\"{ka}\r\n",
        mac = device.trim_start_matches("SEP").to_ascii_lowercase(),
        ka = if keepalive { ";expires=0;cisco-keep-alive" } else { "" },
    )
}

const SUPPORTED: &str = "Supported: replaces,join,sdp-anat,norefersub,resource-priority,extended-refer,X-cisco-callinfo,X-cisco-serviceuri,X-cisco-escapecodes,X-cisco-service-control,X-cisco-srtp-fallback,X-cisco-monrec,X-cisco-config,X-cisco-sis-7.0.0,X-cisco-xsi-8.5.1\r\n";

/// The faults that end a TCP session (checked between requests).
fn take_close<'a>(ends: &mut Vec<&'a Fault>, t: u64) -> Option<&'a Fault> {
    let pos = ends.iter().position(|f| f.at_ns <= t)?;
    Some(ends.remove(pos))
}

pub(crate) fn generate_register(ctx: &ModelCtx, model: &Model, rng: &mut Rng, out: &mut Out) {
    let Model::Sip {
        phone,
        primary,
        backup,
        tcp,
        expires,
        granted_expires,
        refresh_ns,
        backup_interval_ns,
        ref user,
        ref device,
    } = *model
    else {
        return;
    };
    let reg = Registration {
        phone,
        tcp,
        expires,
        granted_expires,
        user: user.clone(),
        device: device.clone(),
        instance: format!(
            "{}-{}-{}-{}-{}",
            hex(rng, 8),
            hex(rng, 4),
            hex(rng, 4),
            hex(rng, 4),
            hex(rng, 12)
        ),
    };
    reg.run(ctx, rng, out, primary, false, refresh_ns, ctx.start);
    if let Some(backup) = backup {
        let start = ctx.start + rng.range(500 * MS, 3000 * MS);
        reg.run(ctx, rng, out, backup, true, backup_interval_ns, start);
    }
}

struct Registration {
    phone: Ep,
    tcp: bool,
    expires: u32,
    granted_expires: u32,
    user: String,
    device: String,
    instance: String,
}

impl Registration {
    /// REGISTERs to one CUCM: refreshes to the primary, keepalives to a backup.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        ctx: &ModelCtx,
        rng: &mut Rng,
        out: &mut Out,
        cucm: Ep,
        backup: bool,
        interval: u64,
        start: u64,
    ) {
        let faults = &ctx.faults;
        let transport = if self.tcp { "TCP" } else { "UDP" };
        let lower = transport.to_ascii_lowercase();
        let rtt = ctx.rtt(rng);
        let part = if backup { "backup" } else { "primary" };
        let granted = self.granted_expires as u64 * SEC;
        let mut ends: Vec<&Fault> = faults
            .list
            .iter()
            .filter(|f| f.backup == backup && matches!(f.kind, FaultKind::Close { .. }))
            .collect();
        let mut failures: Vec<&Fault> = faults
            .list
            .iter()
            .filter(|f| f.backup == backup && matches!(f.kind, FaultKind::SipRefreshFail { .. }))
            .collect();
        let mut cseq = rng.range(100, 20_000) as u32;
        let call_id = format!(
            "{}-{}-{}-{}@{}",
            hex(rng, 8),
            hex(rng, 8),
            hex(rng, 8),
            hex(rng, 8),
            self.phone.ip
        );
        let from_tag = format!("{}{}-{}", hex(rng, 12), hex(rng, 12), hex(rng, 8));
        let to_tag = rng.range(1_000_000_000, 4_000_000_000).to_string();
        let mut connect_at = start;
        // End of the current registration (primary only).
        let mut registered_until: Option<(u64, Option<Cause>)> = None;
        let mut lapse_cause: Option<Cause> = None;
        let mut last_key = None;
        while connect_at < out.duration_ns {
            let port = match (self.tcp, self.phone.port) {
                (true, 0) => rng.ephemeral_port(),
                (_, p) => p,
            };
            let client = Ep::new(self.phone.ip, port);
            let key = AssocKey {
                protocol: Protocol::Sip,
                tcp: self.tcp,
                src: client,
                dst: cucm,
            };
            out.truth.association(ctx.name, part, &key, interval);
            last_key = Some(key);
            let mut tr = Tracker::new(key, interval, false);
            let (mut ch, ready) = Channel::open(
                rng, out, &ctx.wire, client, cucm, self.tcp, connect_at, rtt, ctx.dscp,
            );
            let dialog = Dialog {
                transport,
                client,
                call_id: call_id.clone(),
                from: format!("<sip:{}@{}>;tag={from_tag}", self.user, cucm.host()),
                to: format!("<sip:{}@{}>", self.user, cucm.host()),
            };
            let uri = format!("sip:{}", cucm.host());
            let contact = contact(client, &lower, &self.instance, &self.device, backup);
            let mut t = ready;
            let mut reconnect = None;
            loop {
                if let Some(f) = take_close(&mut ends, t.min(out.duration_ns)) {
                    if let FaultKind::Close {
                        reset,
                        by,
                        reconnect_ns,
                    } = f.kind
                    {
                        let at = f
                            .at_ns
                            .max(super::keepalive::after_exchange(t, interval))
                            .max(ready);
                        ch.close(out, at, reset, by == Side::A, rtt, ctx.dscp);
                        tr.closed(&mut out.truth, at, reset, by == Side::A, Some(Cause::of(f)));
                        reconnect = reconnect_ns.map(|r| at + r);
                    }
                    break;
                }
                if t >= out.duration_ns {
                    break;
                }
                if let Some(f) = faults.active(t, backup, interval, |k| {
                    matches!(k, FaultKind::SipLapse { .. })
                }) {
                    // The phone is gone for a while: no REGISTER until the lapse ends.
                    tr.hidden(Cause::of(f));
                    lapse_cause = Some(Cause::of(f));
                    t = f.window(interval).1;
                    continue;
                }
                let mut send = t + jitter(rng, interval);
                if let Some(f) =
                    faults.active(t, backup, interval, |k| matches!(k, FaultKind::Late { .. }))
                {
                    if let FaultKind::Late { delay_ns, .. } = f.kind {
                        send += delay_ns;
                    }
                    tr.delayed(Cause::of(f));
                    lapse_cause = Some(Cause::of(f));
                }
                let (dscp, df) = faults.dscp(send, true, backup, ctx.dscp);
                let (dscp_r, _) = faults.dscp(send, false, backup, ctx.dscp);
                let expires = if backup { 0 } else { self.expires };
                let tail = format!(
                    "User-Agent: Cisco-CP7975G/9.3.1\r\n{contact}{SUPPORTED}Expires: {expires}\r\n"
                );
                let label = if backup {
                    "sip.register_keepalive"
                } else {
                    "sip.register"
                };
                let failure = failures
                    .iter()
                    .position(|f| f.at_ns <= t)
                    .map(|i| failures.remove(i));
                let mut attempts = match failure.map(|f| &f.kind) {
                    Some(FaultKind::SipRefreshFail { count, .. }) => *count,
                    _ => 0,
                };
                let mut at = send;
                let mut first = true;
                loop {
                    cseq += 1;
                    let branch = hex(rng, 8);
                    let date = http_date(out.truth.start_ns + at);
                    let text = dialog.request("REGISTER", &uri, &branch, cseq, &date, &tail);
                    ch.send(out, at, true, dscp, &text, label);
                    if first {
                        tr.seen(&mut out.truth, at, None);
                        first = false;
                    }
                    let trying = at + rtt;
                    if attempts > 0 {
                        let f = failure.expect("attempts come from a failure");
                        let FaultKind::SipRefreshFail {
                            status, retry_ns, ..
                        } = f.kind
                        else {
                            unreachable!()
                        };
                        let cause = Some(Cause::of(f));
                        match status {
                            Some(status) => {
                                ch.send(
                                    out,
                                    trying,
                                    false,
                                    dscp_r,
                                    &dialog
                                        .response(100, "REGISTER", &branch, cseq, None, &date, ""),
                                    "sip.100",
                                );
                                let resp = dialog.response(
                                    status,
                                    "REGISTER",
                                    &branch,
                                    cseq,
                                    Some(&to_tag),
                                    &date,
                                    "Retry-After: 30\r\n",
                                );
                                ch.send(
                                    out,
                                    trying + 2 * MS,
                                    false,
                                    dscp_r,
                                    &resp,
                                    status_label(status),
                                );
                                out.truth.expect(
                                    &key,
                                    "sip.register_failed",
                                    trying + 2 * MS,
                                    (trying, trying + 2 * MS),
                                    true,
                                    cause,
                                    vec![
                                        ("sip.status", json!(status)),
                                        ("sip.reason", json!(reason(status))),
                                    ],
                                );
                            }
                            None => {
                                ch.unanswered(out, at, at + retry_ns, dscp, &text, label);
                                tr.unanswered(
                                    &mut out.truth,
                                    cseq,
                                    at,
                                    at + TIMER_F.min(retry_ns),
                                    false,
                                    cause,
                                );
                            }
                        }
                        lapse_cause = cause;
                        attempts -= 1;
                        at += retry_ns;
                        if at >= out.duration_ns {
                            break;
                        }
                        continue;
                    }
                    // Answered: 100 Trying, then 200 OK granting the (shorter) expiry.
                    ch.send(
                        out,
                        trying,
                        false,
                        dscp_r,
                        &dialog.response(100, "REGISTER", &branch, cseq, None, &date, ""),
                        "sip.100",
                    );
                    let ok_at = trying + 2 * MS + rng.range(0, MS);
                    let granted_s = if backup { 0 } else { self.granted_expires };
                    let ok_tail = format!("Expires: {granted_s}\r\n{contact}Supported: X-cisco-srtp-fallback,X-cisco-sis-7.0.0\r\n");
                    ch.send(
                        out,
                        ok_at,
                        false,
                        dscp_r,
                        &dialog.response(
                            200,
                            "REGISTER",
                            &branch,
                            cseq,
                            Some(&to_tag),
                            &date,
                            &ok_tail,
                        ),
                        "sip.200",
                    );
                    tr.dscp(&mut out.truth, at, true, dscp, df.map(Cause::of));
                    if !backup {
                        self.registered(
                            out,
                            &key,
                            &mut registered_until,
                            ok_at,
                            granted,
                            lapse_cause.take(),
                        );
                    }
                    break;
                }
                t = at.max(send) + interval;
                if at >= out.duration_ns {
                    break;
                }
            }
            tr.finish(&mut out.truth, out.duration_ns);
            match reconnect {
                Some(r) => connect_at = r,
                None => break,
            }
            if !self.tcp {
                break;
            }
        }
        if let (Some((until, cause)), Some(key)) = (registered_until, last_key) {
            if until + SEC < out.duration_ns {
                expired(
                    out,
                    &key,
                    until,
                    cause.or(lapse_cause),
                    self.granted_expires,
                );
            }
        }
    }

    /// A 200 OK at `ok_at`: registered (first time or after a lapse), expired before?
    fn registered(
        &self,
        out: &mut Out,
        key: &AssocKey,
        until: &mut Option<(u64, Option<Cause>)>,
        ok_at: u64,
        granted: u64,
        cause: Option<Cause>,
    ) {
        let fresh = match *until {
            None => true,
            Some((deadline, _)) if deadline < ok_at => {
                expired(out, key, deadline, cause, self.granted_expires);
                true
            }
            Some(_) => false,
        };
        if fresh {
            out.truth.expect(
                key,
                "sip.registered",
                ok_at,
                (ok_at, ok_at),
                true,
                if until.is_some() { cause } else { None },
                vec![("sip.expires", json!(self.granted_expires))],
            );
        }
        *until = Some((ok_at + granted, None));
    }
}

fn expired(out: &mut Out, key: &AssocKey, deadline: u64, cause: Option<Cause>, granted_s: u32) {
    out.truth.expect(
        key,
        "sip.expired",
        deadline,
        (deadline, deadline + SEC),
        true,
        cause,
        vec![("sip.expires", json!(granted_s))],
    );
}

fn status_label(status: u16) -> &'static str {
    match status {
        503 => "sip.503",
        480 => "sip.480",
        600 => "sip.600",
        _ => "sip.failure",
    }
}

pub(crate) fn generate_options(ctx: &ModelCtx, model: &Model, rng: &mut Rng, out: &mut Out) {
    let Model::SipOptions {
        client,
        server,
        tcp,
        interval_ns: interval,
    } = *model
    else {
        return;
    };
    let faults = &ctx.faults;
    let transport = if tcp { "TCP" } else { "UDP" };
    let rtt = ctx.rtt(rng);
    let mut ends: Vec<&Fault> = faults
        .list
        .iter()
        .filter(|f| matches!(f.kind, FaultKind::Close { .. }))
        .collect();
    let mut cseq = rng.range(1, 1000) as u32;
    let mut connect_at = ctx.start;
    while connect_at < out.duration_ns {
        let port = match (tcp, client.port) {
            (true, 0) => rng.ephemeral_port(),
            (_, p) => p,
        };
        let client = Ep::new(client.ip, port);
        let key = AssocKey {
            protocol: Protocol::Sip,
            tcp,
            src: client,
            dst: server,
        };
        out.truth.association(ctx.name, "options", &key, interval);
        let mut tr = Tracker::new(key, interval, false);
        let (mut ch, ready) = Channel::open(
            rng, out, &ctx.wire, client, server, tcp, connect_at, rtt, ctx.dscp,
        );
        let mut t = ready;
        let mut reconnect = None;
        loop {
            if let Some(f) = take_close(&mut ends, t.min(out.duration_ns)) {
                if let FaultKind::Close {
                    reset,
                    by,
                    reconnect_ns,
                } = f.kind
                {
                    let at = f
                        .at_ns
                        .max(super::keepalive::after_exchange(t, interval))
                        .max(ready);
                    ch.close(out, at, reset, by == Side::A, rtt, ctx.dscp);
                    tr.closed(&mut out.truth, at, reset, by == Side::A, Some(Cause::of(f)));
                    reconnect = reconnect_ns.map(|r| at + r);
                }
                break;
            }
            if t >= out.duration_ns {
                break;
            }
            let mut send = t + jitter(rng, interval);
            if let Some(f) =
                faults.active(t, false, interval, |k| matches!(k, FaultKind::Late { .. }))
            {
                if let FaultKind::Late { delay_ns, .. } = f.kind {
                    send += delay_ns;
                }
                tr.delayed(Cause::of(f));
            }
            let (dscp, _) = faults.dscp(send, true, false, ctx.dscp);
            let (dscp_r, _) = faults.dscp(send, false, false, ctx.dscp);
            cseq += 1;
            // CVP starts a new dialog per ping.
            let dialog = Dialog {
                transport,
                client,
                call_id: format!("{}-{}@{}", hex(rng, 16), hex(rng, 8), client.ip),
                from: format!("<sip:{}>;tag={}", client, hex(rng, 10)),
                to: format!("<sip:{server}>"),
            };
            let branch = hex(rng, 12);
            let date = http_date(out.truth.start_ns + send);
            let tail = format!(
                "Contact: <sip:{client}>\r\nAccept: application/sdp\r\nUser-Agent: CVP 12.5\r\n"
            );
            let text = dialog.request(
                "OPTIONS",
                &format!("sip:{server}"),
                &branch,
                cseq,
                &date,
                &tail,
            );
            ch.send(out, send, true, dscp, &text, "sip.options");
            tr.seen(&mut out.truth, send, None);
            let answer = send + rtt;
            if let Some(f) = faults.active(t, false, interval, |k| {
                matches!(k, FaultKind::Unanswered { .. })
            }) {
                ch.unanswered(out, send, t + interval, dscp, &text, "sip.options");
                let reveal = (send + TIMER_F).min(t + interval);
                tr.unanswered(&mut out.truth, cseq, send, reveal, true, Some(Cause::of(f)));
            } else if let Some(f) = faults.active(t, false, interval, |k| {
                matches!(k, FaultKind::OptionsFail { .. })
            }) {
                let FaultKind::OptionsFail { status, .. } = f.kind else {
                    unreachable!()
                };
                let resp = dialog.response(
                    status,
                    "OPTIONS",
                    &branch,
                    cseq,
                    Some(&hex(rng, 8)),
                    &date,
                    "",
                );
                ch.send(out, answer, false, dscp_r, &resp, status_label(status));
                out.truth.expect(
                    &key,
                    "sip.options_failed",
                    answer,
                    (answer, answer),
                    true,
                    Some(Cause::of(f)),
                    vec![("sip.status", json!(status))],
                );
            } else {
                let tail = "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER, NOTIFY\r\nAccept: application/sdp\r\n";
                let resp = dialog.response(
                    200,
                    "OPTIONS",
                    &branch,
                    cseq,
                    Some(&hex(rng, 8)),
                    &date,
                    tail,
                );
                ch.send(out, answer, false, dscp_r, &resp, "sip.200");
            }
            t += interval;
        }
        tr.finish(&mut out.truth, out.duration_ns);
        match reconnect {
            Some(r) if tcp => connect_at = r,
            _ => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_retransmissions_follow_rfc3261() {
        let secs: Vec<f64> = retransmissions(60 * SEC)
            .iter()
            .map(|&t| t as f64 / 1e9)
            .collect();
        assert_eq!(
            secs,
            vec![0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
        );
        assert_eq!(retransmissions(2 * SEC).len(), 2);
        assert_eq!(
            http_date(1_795_341_600_000_000_000),
            "Sun, 22 Nov 2026 10:00:00 GMT"
        );
    }
}
