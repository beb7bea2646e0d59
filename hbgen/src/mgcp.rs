//! MGCP between a Cisco voice gateway (`a`, UDP 2427) and its call agent (`b`, CUCM;
//! 2727 by RFC 3435, 2427 in CUCM deployments), PROTOCOLS.md §7. Idle, the gateway
//! sends an empty NTFY (`*@domain`, `X: 0`, `O:`) `interval` after its last command;
//! calls add the NTFYs of hook events, answered too, and the call agent's own commands
//! (CRCX, RQNT, DLCX), which the gateway answers and the agent must ignore. A command
//! not answered is re-sent with its transaction id after 0.5, 1.5 and 3.5 s (IOS
//! defaults: `mgcp request timeout 500`, `mgcp request retries 3`, doubling), then
//! given up. After a reboot (`restart`) the gateway announces itself with RSIP.

use hbwatch_common::proto::Protocol;

use super::rng::Rng;
use super::scenario::{Fault, FaultKind, Model, Side};
use super::truth::{AssocKey, Cause, Tracker};
use super::{jitter, Ep, ModelCtx, Out};

const MS: u64 = 1_000_000;
/// Re-sends after the first send (IOS: 500 ms, doubling, 3 retries).
const RESENDS: [u64; 3] = [500 * MS, 1500 * MS, 3500 * MS];

/// What the gateway sends.
enum Command {
    Keepalive,
    /// A hook event of endpoint `port`: `L/hd` (off hook) or `L/hu` (on hook).
    Hook {
        port: u32,
        off_hook: bool,
    },
    Rsip,
}

/// A gateway restart whose down time covers `t`.
fn down(faults: &[Fault], t: u64) -> Option<&Fault> {
    faults.iter().find(|f| match f.kind {
        FaultKind::Restart {
            side: Side::A,
            down_ns,
            ..
        } => f.at_ns <= t && t < f.at_ns + down_ns,
        _ => false,
    })
}

/// The call agent does not answer at `t`: an `unanswered` fault, or its own restart.
fn ca_silent<'a>(ctx: &'a ModelCtx, t: u64, interval: u64) -> Option<&'a Fault> {
    ctx.faults.active(t, false, interval, |k| match k {
        FaultKind::Unanswered { .. } => true,
        FaultKind::Restart {
            side: Side::B,
            down_ns,
            ..
        } => *down_ns > 0,
        _ => false,
    })
}

/// The fault's cause as the agent can know it: a silence of both ways is a path
/// interruption only where the reverse direction is an association of its own (RUDP
/// pairs); the call agent's commands follow calls, not a clock, so here it is not.
fn cause(f: &Fault) -> Cause {
    let mut c = Cause::of(f);
    if matches!(f.kind, FaultKind::Silence { .. }) {
        c.diagnosis = Some("undetermined");
    }
    c
}

/// The transaction id after `id` (RFC 3435: 1 to 999,999,999, then round again).
fn next_id(id: u32) -> u32 {
    id % 999_999_999 + 1
}

struct Gateway<'a> {
    ctx: &'a ModelCtx<'a>,
    gw: Ep,
    ca: Ep,
    interval: u64,
    domain: &'a str,
    tid: u32,
    /// The call agent's own transaction ids.
    ca_tid: u32,
    tr: Tracker,
    /// A command left unanswered: the agent says so when the next one comes.
    unanswered: Option<(u32, u64, Option<Cause>)>,
}

impl Gateway<'_> {
    /// One gateway command at `at`, with its re-sends until answered.
    fn transact(&mut self, rng: &mut Rng, out: &mut Out, at: u64, cmd: &Command) {
        self.tid = next_id(self.tid);
        let tid = self.tid;
        let (text, label) = match cmd {
            Command::Keepalive => (
                format!("NTFY {tid} *@{} MGCP 0.1\nX: 0\nO: \n", self.domain),
                "mgcp.keepalive",
            ),
            Command::Hook { port, off_hook } => (
                format!(
                    "NTFY {tid} aaln/S0/SU1/{port}@{} MGCP 0.1\nX: {port}\nO: L/{}\n",
                    self.domain,
                    if *off_hook { "hd" } else { "hu" }
                ),
                "mgcp.ntfy",
            ),
            Command::Rsip => (
                format!("RSIP {tid} *@{} MGCP 0.1\nRM: restart\n", self.domain),
                "mgcp.rsip",
            ),
        };
        let (ctx, interval) = (self.ctx, self.interval);
        let mut first_seen = None;
        let mut seen = 0u32;
        let mut why: Option<Cause> = None;
        for (k, delay) in [0].into_iter().chain(RESENDS).enumerate() {
            let send = at + delay;
            if send >= out.duration_ns {
                return;
            }
            let lost = ctx.faults.dropped(send, true, false, interval);
            if let Some(f) = lost {
                if k == 0 {
                    self.tr.hidden(cause(f));
                }
                why.get_or_insert(cause(f));
            } else {
                let (dscp, df) = ctx.faults.dscp(send, true, false, ctx.dscp);
                out.udp(
                    send,
                    &ctx.wire,
                    self.gw,
                    self.ca,
                    dscp,
                    text.as_bytes(),
                    label,
                );
                seen += 1;
                self.tr.seen(&mut out.truth, send, Some(tid));
                self.tr
                    .dscp(&mut out.truth, send, true, dscp, df.map(Cause::of));
                match first_seen {
                    None => {
                        first_seen = Some(send);
                        if let Some((t, first, cause)) = self.unanswered.take() {
                            // The agent's rule (flow.rs): a request left waiting half
                            // an interval, then a new one, is unanswered.
                            if send - first >= interval / 2 {
                                self.tr
                                    .unanswered(&mut out.truth, t, first, send, true, cause);
                            }
                        }
                    }
                    Some(first) => {
                        self.tr.retry(&mut out.truth, send, tid, seen, first, why);
                    }
                }
            }
            if lost.is_some() {
                continue;
            }
            if let Some(f) = ca_silent(ctx, send, interval) {
                why.get_or_insert(cause(f));
                continue;
            }
            let answer_at = send + ctx.rtt(rng);
            if let Some(f) = ctx.faults.dropped(answer_at, false, false, interval) {
                why.get_or_insert(cause(f));
                continue;
            }
            let (dscp, df) = ctx.faults.dscp(answer_at, false, false, ctx.dscp);
            let answer = format!("200 {tid} OK\n");
            out.udp(
                answer_at,
                &ctx.wire,
                self.ca,
                self.gw,
                dscp,
                answer.as_bytes(),
                "mgcp.response",
            );
            self.tr
                .dscp(&mut out.truth, answer_at, false, dscp, df.map(Cause::of));
            self.tr.answered(&mut out.truth, answer_at);
            return;
        }
        if let Some(first) = first_seen {
            self.unanswered = Some((tid, first, why));
        }
    }

    /// A call agent command to endpoint `port` and the gateway's answer: call control
    /// the monitoring must leave alone. Not re-sent: only what the wire carries matters.
    fn ca_command(&mut self, rng: &mut Rng, out: &mut Out, at: u64, verb: &str, port: u32) {
        self.ca_tid = next_id(self.ca_tid);
        let (ctx, interval) = (self.ctx, self.interval);
        let t = self.ca_tid;
        let body = match verb {
            "CRCX" => format!("C: {:X}\nL: p:20, a:PCMU\nM: recvonly\n", 0xa000 + port),
            "DLCX" => format!("C: {:X}\n", 0xa000 + port),
            _ => format!("X: {port}\nR: L/hu, D/[0-9#*T](D)\n"),
        };
        let text = format!(
            "{verb} {t} aaln/S0/SU1/{port}@{} MGCP 0.1\n{body}",
            self.domain
        );
        if ctx.faults.dropped(at, false, false, interval).is_some()
            || down(&ctx.faults.list, at).is_some()
        {
            return;
        }
        let (dscp, _) = ctx.faults.dscp(at, false, false, ctx.dscp);
        out.udp(
            at,
            &ctx.wire,
            self.ca,
            self.gw,
            dscp,
            text.as_bytes(),
            "mgcp.ca_command",
        );
        let answer_at = at + ctx.rtt(rng);
        if ctx
            .faults
            .dropped(answer_at, true, false, interval)
            .is_some()
        {
            return;
        }
        let answer = match verb {
            "CRCX" => format!(
                "200 {t} OK\nI: {:X}\n\nv=0\nc=IN IP4 {}\nm=audio {} RTP/AVP 0\n",
                0xb000 + port,
                self.gw.ip,
                16384 + 2 * port
            ),
            "DLCX" => format!("250 {t} OK\n"),
            _ => format!("200 {t} OK\n"),
        };
        let (dscp, _) = ctx.faults.dscp(answer_at, true, false, ctx.dscp);
        out.udp(
            answer_at,
            &ctx.wire,
            self.gw,
            self.ca,
            dscp,
            answer.as_bytes(),
            "mgcp.gw_response",
        );
    }
}

pub(crate) fn generate(ctx: &ModelCtx, model: &Model, rng: &mut Rng, out: &mut Out) {
    let Model::Mgcp {
        gateway,
        call_agent,
        interval_ns: interval,
        ref domain,
        calls_per_min,
        tid,
    } = *model
    else {
        return;
    };
    let key = AssocKey {
        protocol: Protocol::Mgcp,
        tcp: false,
        src: gateway,
        dst: call_agent,
    };
    out.truth.association(ctx.name, "gateway", &key, interval);
    // Calls: (at, port, length); each is a hook-off NTFY, the call agent's RQNT and
    // CRCX, later a hook-on NTFY and its DLCX.
    let mut calls = Vec::new();
    if calls_per_min > 0.0 {
        let mean = (60e9 / calls_per_min) as u64;
        let mut t = ctx.start + rng.range(0, mean);
        let mut port = 0;
        while t < out.duration_ns {
            port = port % 24 + 1;
            calls.push((t, port, rng.range(20_000 * MS, 90_000 * MS)));
            t += rng.range(mean / 2, mean * 3 / 2);
        }
    }
    let mut notes: Vec<(u64, Command)> = calls
        .iter()
        .flat_map(|&(at, port, len)| {
            [
                (
                    at,
                    Command::Hook {
                        port,
                        off_hook: true,
                    },
                ),
                (
                    at + len,
                    Command::Hook {
                        port,
                        off_hook: false,
                    },
                ),
            ]
        })
        .collect();
    notes.sort_by_key(|(t, _)| *t);
    let mut g = Gateway {
        ctx,
        gw: gateway,
        ca: call_agent,
        interval,
        domain,
        tid: tid.map_or_else(|| rng.range(1, 900_000_000) as u32, |t| t - 1),
        ca_tid: rng.range(1, 1000) as u32,
        tr: Tracker::new(key, interval, true),
        unanswered: None,
    };
    let mut restarts: Vec<&Fault> = ctx
        .faults
        .list
        .iter()
        .filter(|f| matches!(f.kind, FaultKind::Restart { side: Side::A, .. }))
        .collect();
    let mut notes = notes.into_iter().peekable();
    // The next keepalive is due `interval` after the gateway's last command.
    let mut due = ctx.start + rng.range(0, interval);
    loop {
        let event_first = notes.peek().is_some_and(|(t, _)| *t < due);
        let (mut at, cmd) = if event_first {
            notes.next().expect("peeked")
        } else {
            (due + jitter(rng, interval), Command::Keepalive)
        };
        if at >= out.duration_ns {
            break;
        }
        if let Some(f) = down(&ctx.faults.list, at) {
            // Rebooting: nothing leaves the gateway; it comes back with an RSIP.
            g.tr.hidden(cause(f));
            let FaultKind::Restart { down_ns, .. } = f.kind else {
                unreachable!("down() finds restarts")
            };
            due = f.at_ns + down_ns;
            continue;
        }
        let cmd = match restarts.iter().position(|f| f.at_ns <= at) {
            Some(pos) => {
                let f = restarts.remove(pos);
                g.tid = rng.range(1, 900_000_000) as u32;
                g.unanswered = None;
                g.tr.restarted(cause(f));
                Command::Rsip
            }
            None => cmd,
        };
        if let Command::Keepalive = cmd {
            if let Some(f) = ctx.faults.active(at, false, interval, |k| {
                matches!(k, FaultKind::Late { side: Side::A, .. })
            }) {
                if let FaultKind::Late { delay_ns, .. } = f.kind {
                    at += delay_ns;
                }
                g.tr.delayed(cause(f));
            }
        }
        g.transact(rng, out, at, &cmd);
        if let Command::Hook { port, off_hook } = cmd {
            let ca_at = at + ctx.rtt(rng) * 2;
            if off_hook {
                g.ca_command(rng, out, ca_at, "RQNT", port);
                g.ca_command(rng, out, ca_at + 200 * MS, "CRCX", port);
            } else {
                g.ca_command(rng, out, ca_at, "DLCX", port);
            }
        }
        due = at + interval;
    }
    g.tr.finish(&mut out.truth, out.duration_ns);
}
