//! SIP registration and OPTIONS tracking (PROTOCOLS.md §5).
//!
//! Input: one `SipMessage` record per UDP datagram, per TCP segment over TCP (see
//! `hbwatch_common::proto::sip`). TCP segments are reassembled into messages
//! ([`stream`]), messages parsed ([`parse`]), and requests paired with their final
//! responses by Call-ID + CSeq number + method (transactions). On top of that:
//!
//! - REGISTER: registration state per (phone IP, registrar IP, AOR): `sip.registered`
//!   on the first success (and after an expiry, unregistration or a new Call-ID),
//!   `sip.expired` by timer when no refresh succeeds within the granted Expires (one
//!   alert per lapse, with what the phone and the registrar did meanwhile),
//!   `sip.unregistered`, `sip.register_failed` (also for a 401/407 that rejects the
//!   credentials the REGISTER carried, counted per source). Cisco's `Expires: 0` +
//!   `;cisco-keep-alive` to a backup registrar is a liveness probe: no registration
//!   events, only `heartbeat.unanswered` when it goes unanswered.
//! - OPTIONS: `sip.options_failed` for "overloaded/down" codes.
//! - Both: `heartbeat.unanswered` by timer, `heartbeat.retry` on the first
//!   retransmission, RTT and counts for `heartbeat.summary`.
//!
//! Associations run from the request sender (phone, OPTIONS pinger) to the receiver.
//! A packet seen twice (mirror ports) is counted and dropped first ([`duplicates`]);
//! requests and answers are paired in [`transaction`]; what a REGISTER's answer means
//! for a registration is in [`registration`], what an OPTIONS answer means in [`options`].

mod duplicates;
#[cfg(test)]
mod fixtures;
mod options;
pub mod parse;
mod registration;
/// Public for the fuzz targets (`fuzz/`); the tracker is its only user in the agent.
pub mod stream;
#[cfg(test)]
mod tests;
mod transaction;

use std::cmp::Ordering;
use std::collections::HashMap;

use hbwatch_common::event::{EventKind, RawEvent};
use hbwatch_common::key::FlowKey;
use hbwatch_common::parse::IPPROTO_TCP;
use hbwatch_common::proto::Protocol;

use super::assoc::Stats;
use super::deadlines::Deadlines;
use super::summary;
use super::{AssocTotals, Ctx};
use crate::event::Event;
use parse::{Message, Method, StartLine};
use registration::{RegKey, RegState, Registration};
use stream::Stream;
pub use stream::StreamStats;
use transaction::{Txn, TxnKey, TxnState};

const NS_PER_MS: u64 = 1_000_000;
/// Forgetting idle state is a scan: at most once per second of record time.
const HOUSEKEEPING_EVERY_NS: u64 = 1_000_000_000;

/// Default of [`SipConfig::expiry_grace_ms`].
pub const DEFAULT_EXPIRY_GRACE_MS: u64 = 2_000;

/// Tunables of SIP tracking.
#[derive(Debug, Clone)]
pub struct SipConfig {
    /// OPTIONS answers that mean "overloaded/down" (CVP default: 503, 480, 600).
    pub options_fail_codes: Vec<u16>,
    /// A request (OPTIONS, REGISTER) without a final answer after this long is unanswered.
    /// Default: SIP timer F (64 * T1 = 32 s), when the client itself gives up.
    pub answer_timeout_ms: u64,
    /// Grace after a registration's Expires before `sip.expired`: a refresh answered
    /// this late still counts (clocks and queues; config `sip.expiry_grace`).
    pub expiry_grace_ms: u64,
    /// Final answers to REGISTER that are digest challenges, not failures.
    pub register_challenge_codes: Vec<u16>,
    /// Registration lifetime when neither the request nor the answer states one
    /// (RFC 3261 §10.2.1.1 suggests 3600 s).
    pub default_expires_s: u32,
    /// A finished transaction is kept this long, so retransmissions of its request or
    /// response are recognised as such.
    pub transaction_linger_ms: u64,
    /// Registrations (not currently registered), TCP streams and summary counters
    /// with no traffic for this long are forgotten.
    pub idle_forget_ms: u64,
    /// Caps on tracked state; beyond them new entries are not tracked (counted in
    /// [`SipCounters::dropped_at_capacity`]).
    pub max_transactions: usize,
    pub max_registrations: usize,
    pub max_streams: usize,
    pub max_associations: usize,
    /// Bytes a TCP stream may buffer while waiting for the end of a header section.
    pub max_stream_buffer: usize,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            options_fail_codes: vec![503, 480, 600],
            answer_timeout_ms: 32_000,
            expiry_grace_ms: DEFAULT_EXPIRY_GRACE_MS,
            register_challenge_codes: vec![401, 407],
            default_expires_s: 3600,
            transaction_linger_ms: 32_000,
            idle_forget_ms: 2 * 3600 * 1000,
            max_transactions: 16_384,
            max_registrations: 65_536,
            max_streams: 8_192,
            max_associations: 65_536,
            max_stream_buffer: 16_384,
        }
    }
}

/// What the tracker saw that is not an event: for the agent's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SipCounters {
    /// SIP messages parsed (requests and responses of any method).
    pub messages: u64,
    /// UDP datagrams that did not start with a SIP start line.
    pub unparsed: u64,
    /// Messages handed up without their end (capture or stream hole cut them).
    pub truncated: u64,
    /// REGISTER/OPTIONS requests or responses without a usable Call-ID or CSeq.
    pub incomplete: u64,
    /// Final responses for a transaction not seen (request missed or forgotten).
    pub unmatched_responses: u64,
    /// Final responses repeated for an already answered transaction.
    pub duplicate_responses: u64,
    /// Packets seen twice within moments (SPAN/mirror copies), dropped.
    pub duplicates: u64,
    /// 401/407/403 answers rejecting the credentials a REGISTER carried.
    pub credentials_rejected: u64,
    /// New transactions, registrations, streams or associations not tracked: a cap was reached.
    pub dropped_at_capacity: u64,
    pub tcp: StreamStats,
}

impl SipCounters {
    /// By name, for `agent.stopped` and `analyze`'s counters.
    pub fn named(&self) -> [(&'static str, u64); 12] {
        [
            ("sip_messages", self.messages),
            ("sip_unparsed", self.unparsed),
            ("sip_truncated", self.truncated),
            ("sip_incomplete", self.incomplete),
            ("sip_unmatched_responses", self.unmatched_responses),
            ("sip_duplicate_responses", self.duplicate_responses),
            ("sip_duplicates", self.duplicates),
            ("sip_credentials_rejected", self.credentials_rejected),
            ("sip_dropped_at_capacity", self.dropped_at_capacity),
            ("sip_tcp_retransmitted", self.tcp.retransmitted),
            ("sip_tcp_holes", self.tcp.holes),
            ("sip_tcp_overflows", self.tcp.overflows),
        ]
    }
}

/// Intervals between successful heartbeats (REGISTER 2xx, OPTIONS answered).
#[derive(Debug, Default, Clone, Copy)]
struct Intervals {
    sum_ns: u64,
    samples: u64,
}

impl Intervals {
    fn add(&mut self, ns: u64) {
        self.sum_ns = self.sum_ns.saturating_add(ns);
        self.samples += 1;
    }

    fn mean_ms(&self) -> Option<u64> {
        self.sum_ns.checked_div(self.samples).map(ms)
    }
}

/// One SIP association as the status board shows it (record clock times).
pub struct BoardView<'a> {
    pub key: &'a FlowKey,
    /// Last answered REGISTER/OPTIONS, if any.
    pub last_beat_ns: Option<u64>,
    pub last_activity_ns: u64,
    /// Mean time between answered requests, once two were.
    pub interval_ns: Option<u64>,
    pub rtt_avg_ns: Option<u64>,
    /// Requests left unanswered, whole run.
    pub lost: u64,
    /// A registration on it lapsed (`sip.expired`) and has not come back.
    pub lapsed: bool,
    pub diagnosis: Option<&'static str>,
}

/// Per association: `count` = REGISTER/OPTIONS transactions answered, `lost` = those
/// unanswered, `outages` = registration lapses. `period` is for `heartbeat.summary`,
/// `run` for `analyze --summary`.
#[derive(Debug, Default)]
struct AssocStats {
    ifindex: u32,
    period: Stats,
    period_intervals: Intervals,
    run: Stats,
    run_intervals: Intervals,
    /// Diagnoses of its lapses, in order.
    diagnoses: Vec<&'static str>,
    /// Last successful heartbeat, for intervals.
    last_beat_ns: Option<u64>,
    last_activity_ns: u64,
    active: bool,
}

impl AssocStats {
    fn answered(&mut self) {
        self.period.count += 1;
        self.run.count += 1;
    }

    fn lost(&mut self) {
        self.period.lost += 1;
        self.run.lost += 1;
    }

    fn rtt(&mut self, rtt_ns: u64) {
        self.period.rtt(rtt_ns);
        self.run.rtt(rtt_ns);
    }

    fn beat(&mut self, ts_ns: u64) {
        if let Some(last) = self.last_beat_ns.filter(|&last| ts_ns > last) {
            self.period_intervals.add(ts_ns - last);
            self.run_intervals.add(ts_ns - last);
        }
        self.last_beat_ns = Some(ts_ns);
    }

    fn totals(&self, key: FlowKey, closed: bool) -> AssocTotals {
        AssocTotals {
            key,
            stats: self.run,
            expected_interval_ms: self.run_intervals.mean_ms().unwrap_or(0),
            diagnoses: self.diagnoses.clone(),
            closed,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum TimerRef {
    Answer(TxnKey),
    Expiry(RegKey),
}

/// A SIP deadline's owner, in the shared timer queue; ties fire in the order they
/// were set.
#[derive(Debug)]
struct Timer {
    /// Insertion order.
    order: u64,
    what: TimerRef,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        self.order == other.order
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    fn cmp(&self, other: &Self) -> Ordering {
        self.order.cmp(&other.order)
    }
}

/// Whether a queued deadline is still its owner's (see [`Deadlines`]).
fn is_live(
    txns: &HashMap<TxnKey, Txn>,
    regs: &HashMap<RegKey, Registration>,
    at_ns: u64,
    timer: &Timer,
) -> bool {
    match &timer.what {
        TimerRef::Answer(key) => txns
            .get(key)
            .is_some_and(|t| t.state == TxnState::Pending && t.deadline_ns == at_ns),
        TimerRef::Expiry(key) => regs
            .get(key)
            .is_some_and(|r| r.state == RegState::Registered && r.expiry_ns == at_ns),
    }
}

/// SIP state per device and per OPTIONS peer.
#[derive(Debug, Default)]
pub struct SipTracker {
    pub cfg: SipConfig,
    counters: SipCounters,
    streams: HashMap<FlowKey, Stream>,
    txns: HashMap<TxnKey, Txn>,
    /// Final answers whose request was not seen (yet), with their time: a request
    /// handed up late (after a TCP hole, or reordered) finds its answer here.
    early_answers: HashMap<TxnKey, u64>,
    regs: HashMap<RegKey, Registration>,
    assocs: HashMap<FlowKey, AssocStats>,
    /// Run totals of associations forgotten when idle, for [`SipTracker::totals`].
    retired: Vec<AssocTotals>,
    /// Packets of the last moments, to recognise copies.
    recent: duplicates::Recent,
    /// Credential rejections in a row per source toward a registrar.
    rejections: HashMap<SourceKey, Rejections>,
    timers: Deadlines<Timer>,
    timer_order: u64,
    last_housekeeping_ns: u64,
    /// Reused between records: messages with their time.
    scratch: Vec<(u64, Message)>,
    /// Times of answered REGISTER/OPTIONS (`analyze --report`); off: None.
    beats: Option<crate::correlate::beats::BeatLog>,
}

/// A REGISTER source (phone, or a guesser) and the registrar it talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct SourceKey {
    family: u8,
    source: [u8; 16],
    registrar: [u8; 16],
}

/// Credential rejections from one source since its last successful REGISTER.
#[derive(Debug, Default)]
struct Rejections {
    in_row: u64,
    /// Rejections not alerted since the last alert (see [`worth_alerting`]).
    unreported: u64,
    last_ns: u64,
}

/// The association a packet travelling along `key` belongs to, as a SIP key.
fn sip_key(key: &FlowKey) -> FlowKey {
    FlowKey {
        proto: Protocol::Sip as u8,
        _pad: 0,
        ..*key
    }
}

fn reversed(key: &FlowKey) -> FlowKey {
    FlowKey {
        orig: key.resp,
        resp: key.orig,
        orig_port: key.resp_port,
        resp_port: key.orig_port,
        ..sip_key(key)
    }
}

fn ms(ns: u64) -> u64 {
    ns / NS_PER_MS
}

/// `SEP0024142DDF24 (sip:5678@10.106.114.161)`, or whichever of the two is known.
fn who(device: Option<&str>, aor: &str) -> String {
    match (device, aor.is_empty()) {
        (Some(d), false) => format!("{d} ({aor})"),
        (Some(d), true) => d.to_string(),
        (None, false) => aor.to_string(),
        (None, true) => "the device".to_string(),
    }
}

/// The user part of an AOR (`sip:5678@host` -> `5678`), a device name of last resort.
fn aor_user(aor: &str) -> Option<String> {
    let rest = aor.split_once(':').map_or(aor, |(_, r)| r);
    let (user, _) = rest.split_once('@')?;
    (!user.is_empty()).then(|| user.to_string())
}

impl SipTracker {
    pub fn new(cfg: SipConfig) -> SipTracker {
        SipTracker {
            cfg,
            ..SipTracker::default()
        }
    }

    pub fn counters(&self) -> SipCounters {
        self.counters
    }

    /// Keeps the times of answered REGISTER/OPTIONS per association (the heartbeats
    /// `totals` counts) from now on.
    pub fn record_beats(&mut self) {
        self.beats = Some(Default::default());
    }

    pub fn take_beats(&mut self) -> Option<crate::correlate::beats::BeatLog> {
        self.beats.take()
    }

    /// One `SipMessage` record (`raw`, key oriented as the packet travelled) with its
    /// captured bytes `data`. Timers due by the record's time fire first, so events
    /// come out in time order.
    pub fn on_record(&mut self, raw: &RawEvent, data: &[u8], ctx: &Ctx, out: &mut Vec<Event>) {
        if EventKind::from_u8(raw.kind) != Some(EventKind::SipMessage) {
            return;
        }
        self.advance(raw.ts_ns, ctx, out);
        let captured = data.get(..raw.aux as usize).unwrap_or(data);
        if self.recent.is_duplicate(
            &raw.key,
            raw.seq,
            raw.value,
            captured,
            raw.ts_ns,
            self.cfg.max_associations,
        ) {
            self.duplicate(&raw.key);
            return;
        }
        let mut msgs = std::mem::take(&mut self.scratch);
        if raw.key.transport == IPPROTO_TCP {
            self.tcp_segment(raw, captured, &mut msgs);
        } else {
            match parse::parse(captured) {
                Some(msg) => msgs.push((raw.ts_ns, msg)),
                None => self.counters.unparsed += 1,
            }
        }
        for (ts, msg) in msgs.drain(..) {
            self.on_message(&msg, ts, raw, ctx, out);
        }
        self.scratch = msgs;
        self.drop_stale_timers();
    }

    /// A copy of a packet just seen: counted for the association it belongs to.
    fn duplicate(&mut self, key: &FlowKey) {
        self.counters.duplicates += 1;
        let (forward, backward) = (sip_key(key), reversed(key));
        let stats = match self.assocs.get_mut(&forward) {
            Some(stats) => Some(stats),
            None => self.assocs.get_mut(&backward),
        };
        if let Some(stats) = stats {
            stats.period.duplicates += 1;
            stats.run.duplicates += 1;
        }
    }

    fn tcp_segment(&mut self, raw: &RawEvent, captured: &[u8], msgs: &mut Vec<(u64, Message)>) {
        let stream_key = sip_key(&raw.key);
        if !self.streams.contains_key(&stream_key) {
            if self.streams.len() >= self.cfg.max_streams {
                // No room to follow the stream: take the segment as one message.
                self.counters.dropped_at_capacity += 1;
                msgs.extend(parse::parse(captured).map(|msg| (raw.ts_ns, msg)));
                return;
            }
            self.streams
                .insert(stream_key, Stream::new(raw.seq, raw.ts_ns));
        }
        if let Some(stream) = self.streams.get_mut(&stream_key) {
            stream.segment(
                raw.ts_ns,
                raw.seq,
                captured,
                raw.value,
                self.cfg.max_stream_buffer,
                &mut self.counters.tcp,
                msgs,
            );
        }
    }

    /// One message at `ts` (its segment's time) of the record `raw`.
    fn on_message(
        &mut self,
        msg: &Message,
        ts: u64,
        raw: &RawEvent,
        ctx: &Ctx,
        out: &mut Vec<Event>,
    ) {
        self.counters.messages += 1;
        if msg.is_truncated() {
            self.counters.truncated += 1;
        }
        match &msg.start {
            StartLine::Request { method, .. } if *method != Method::Other => {
                self.on_request(msg, *method, ts, raw, ctx, out)
            }
            StartLine::Response { status, reason } => {
                if let Some(method) = msg.cseq.map(|c| c.method).filter(|m| *m != Method::Other) {
                    self.on_response(msg, *status, reason, method, ts, raw, ctx, out);
                }
            }
            StartLine::Request { .. } => {}
        }
    }

    fn assoc_stats(&mut self, assoc: &FlowKey, ifindex: u32, ts: u64) -> Option<&mut AssocStats> {
        if !self.assocs.contains_key(assoc) && self.assocs.len() >= self.cfg.max_associations {
            self.counters.dropped_at_capacity += 1;
            return None;
        }
        let stats = self.assocs.entry(*assoc).or_default();
        stats.ifindex = ifindex;
        stats.last_activity_ns = stats.last_activity_ns.max(ts);
        Some(stats)
    }

    fn set_timer(&mut self, at_ns: u64, what: TimerRef) {
        self.timer_order += 1;
        let order = self.timer_order;
        self.timers.push(at_ns, Timer { order, what });
    }

    /// Pops dead entries off the top, so [`Self::next_deadline`] is exact.
    fn drop_stale_timers(&mut self) {
        let (txns, regs) = (&self.txns, &self.regs);
        self.timers.drop_stale(|at, t| !is_live(txns, regs, at, t));
    }

    /// Fires every deadline at or before `now_ns` (record clock).
    pub fn advance(&mut self, now_ns: u64, ctx: &Ctx, out: &mut Vec<Event>) {
        while let Some((at_ns, timer)) = self.timers.pop_due(now_ns) {
            if is_live(&self.txns, &self.regs, at_ns, &timer) {
                match &timer.what {
                    TimerRef::Answer(key) => self.fire_unanswered(key, at_ns, ctx, out),
                    TimerRef::Expiry(key) => self.fire_expired(key, at_ns, ctx, out),
                }
            }
        }
        self.housekeeping(now_ns);
        self.drop_stale_timers();
    }

    /// Forgets what has been idle long enough; at most once per second of record time.
    fn housekeeping(&mut self, now_ns: u64) {
        if now_ns
            < self
                .last_housekeeping_ns
                .saturating_add(HOUSEKEEPING_EVERY_NS)
            && now_ns >= self.last_housekeeping_ns
        {
            return;
        }
        self.last_housekeeping_ns = now_ns;
        let linger = self.cfg.transaction_linger_ms.saturating_mul(NS_PER_MS);
        let idle = self.cfg.idle_forget_ms.saturating_mul(NS_PER_MS);
        let gone = |last: u64, keep: u64| last.saturating_add(keep) <= now_ns;
        self.txns
            .retain(|_, t| t.state == TxnState::Pending || !gone(t.done_ns, linger));
        // A request cut by a TCP hole is handed up only with the next segment, which
        // may be a refresh period later: early answers wait as long as streams do.
        self.early_answers.retain(|_, &mut at| !gone(at, idle));
        self.regs
            .retain(|_, r| r.state == RegState::Registered || !gone(r.last_seen_ns, idle));
        self.streams.retain(|_, s| !gone(s.last_ns, idle));
        self.rejections.retain(|_, r| !gone(r.last_ns, idle));
        self.recent.forget_before(now_ns);
        let retired = &mut self.retired;
        let max_retired = self.cfg.max_associations;
        self.assocs.retain(|key, a| {
            let keep = a.active || !gone(a.last_activity_ns, idle);
            if !keep && retired.len() < max_retired {
                retired.push(a.totals(*key, true));
            }
            keep
        });
        // Entries whose owner moved on pile up (one per refresh): rebuild when bloated.
        if self.timers.len() > 4 * (self.txns.len() + self.regs.len()) + 1024 {
            let (txns, regs) = (&self.txns, &self.regs);
            self.timers.retain(|at, t| is_live(txns, regs, at, t));
        }
    }

    /// The earliest pending deadline, if any.
    pub fn next_deadline(&self) -> Option<u64> {
        self.timers.next()
    }

    /// `heartbeat.summary` for every SIP association active since the last call.
    pub fn summaries(&mut self, now_ns: u64, period_ns: u64, ctx: &Ctx, out: &mut Vec<Event>) {
        let mut active: Vec<FlowKey> = self
            .assocs
            .iter()
            .filter(|(_, a)| a.active)
            .map(|(k, _)| *k)
            .collect();
        active.sort_by_key(|k| {
            (
                k.family,
                k.orig,
                k.orig_port,
                k.resp,
                k.resp_port,
                k.transport,
            )
        });
        for key in active {
            let Some(stats) = self.assocs.get_mut(&key) else {
                continue;
            };
            let p = std::mem::take(&mut stats.period);
            let interval_ms = std::mem::take(&mut stats.period_intervals).mean_ms();
            stats.active = false;
            let period = summary::Period {
                key: &key,
                ifindex: stats.ifindex,
                at_ns: now_ns,
                length_ns: period_ns,
                stats: &p,
                interval_ms,
                counted: &summary::SIP_TRANSACTIONS,
            };
            out.extend(summary::event(&period, ctx));
        }
    }

    /// What the status board shows of each SIP association now.
    pub fn board(&self) -> Vec<BoardView<'_>> {
        let lapsed: std::collections::HashSet<&FlowKey> = self
            .regs
            .values()
            .filter(|r| r.state == RegState::Expired)
            .map(|r| &r.assoc)
            .collect();
        self.assocs
            .iter()
            .map(|(key, a)| BoardView {
                key,
                last_beat_ns: a.last_beat_ns,
                last_activity_ns: a.last_activity_ns,
                interval_ns: a.run_intervals.mean_ms().map(|ms| ms * NS_PER_MS),
                rtt_avg_ns: a.period.rtt_avg_ns().or_else(|| a.run.rtt_avg_ns()),
                lost: a.run.lost,
                lapsed: lapsed.contains(key),
                diagnosis: a.diagnoses.last().copied(),
            })
            .collect()
    }

    /// Per-association totals of the whole run (`analyze --summary`).
    pub fn totals(&self) -> Vec<AssocTotals> {
        let mut all = self.retired.clone();
        all.extend(self.assocs.iter().map(|(key, a)| a.totals(*key, false)));
        all
    }
}
