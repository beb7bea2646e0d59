//! Correlation in userspace: what needs time, memory or text the datapath does not
//! have. Timers that fire during silence (missed, down), learned intervals (late),
//! recovery (up), diagnosis, periodic summaries, SIP registration state. Live and
//! offline feed it the same records; only the clock behind the timestamps differs.

pub mod sip;

use crate::convert::{About, Converter};

/// Turns record time (`RawEvent::ts_ns`) into wall-clock nanoseconds since the epoch:
/// the monotonic-to-realtime offset live, the identity offline (capture time).
pub trait Clock {
    fn unix_ns(&self, ts_ns: u64) -> i128;
}

impl Clock for crate::clock::WallClock {
    fn unix_ns(&self, ts_ns: u64) -> i128 {
        crate::clock::WallClock::unix_ns(self, ts_ns)
    }
}

/// Offline: record times already are capture times since the epoch.
#[derive(Debug, Clone, Copy, Default)]
pub struct CaptureClock;

impl Clock for CaptureClock {
    fn unix_ns(&self, ts_ns: u64) -> i128 {
        ts_ns as i128
    }
}

/// What every correlation stage needs to build events.
pub struct Ctx<'a> {
    pub conv: &'a Converter,
    pub clock: &'a dyn Clock,
    /// Where the datapath holds routine heartbeats (live); None: every heartbeat is a
    /// record (offline).
    pub held: Option<&'a dyn held::Held>,
}

pub mod assoc;
pub mod beats;
mod deadlines;
pub mod diagnosis;
pub mod fragments;
pub mod held;
mod summary;

use std::collections::{BTreeMap, HashMap};

use hbwatch_common::event::{EventKind, HeldBeat, RawEvent, BEAT_PAIRED, HELD_BEATS};
use hbwatch_common::flow::{FlowState, CALM_AFTER, QOS_FROM_RESPONDER};
use hbwatch_common::key::FlowKey;
use hbwatch_common::params::{ProtoParams, P_UNANSWERED_NEEDS_ACKS};
use hbwatch_common::proto::{Protocol, Role};

use crate::convert::association;
use crate::event::{Action, Event, Level, Said};
use assoc::{
    Assoc, Diagnosis, DownCause, LateArrival, Repeating, Silence, Stats, Timing, Trouble, MS,
};
use deadlines::Deadlines;
use diagnosis::{diagnose, Phase};
use held::Until;
use sip::{SipConfig, SipTracker};

/// Correlation settings.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Per-protocol rules (defaults plus `--tune`), the same the datapath runs with.
    pub params: BTreeMap<Protocol, ProtoParams>,
    /// `heartbeat.summary` period; `None` = off.
    pub summary_period_ns: Option<u64>,
    pub sip: SipConfig,
    /// Keep counts per association (RTT, lost, outages, folded alerts) for the live
    /// status board and `heartbeat.summary`; on whenever summaries are.
    pub counts: bool,
    /// Keep each association's totals for the whole run, ended ones too
    /// ([`Correlator::totals`]: `analyze --summary`, `--report`). Off, an association
    /// that ends leaves nothing behind (live, TCP sessions come and go for months).
    pub totals: bool,
}

impl Config {
    fn params(&self, proto: Protocol) -> ProtoParams {
        self.params
            .get(&proto)
            .copied()
            .unwrap_or(proto.default_params())
    }
}

/// Totals of one association over the whole run (`analyze --summary`).
#[derive(Debug, Clone)]
pub struct AssocTotals {
    pub key: FlowKey,
    pub stats: Stats,
    pub expected_interval_ms: u64,
    /// Diagnoses of its outages, in order.
    pub diagnoses: Vec<&'static str>,
    pub closed: bool,
}

impl AssocTotals {
    /// The cells of its `analyze --summary` row, as the table and the HTML report show
    /// them: association, heartbeats, lost, dups, rtt min, avg, max, outages, folded,
    /// interval, diagnosis.
    pub fn summary_cells(&self) -> [String; 11] {
        let st = &self.stats;
        let ms = |ns: u64| format!("{:.1}ms", ns as f64 / 1e6);
        let (min, avg, max) = match st.rtt_avg_ns() {
            Some(avg) => (ms(st.rtt_min_ns), ms(avg), ms(st.rtt_max_ns)),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let interval = match self.expected_interval_ms {
            0 => "-".to_string(),
            i => format!("{i}ms"),
        };
        let diag = if self.diagnoses.is_empty() {
            "-".to_string()
        } else {
            self.diagnoses.join(",")
        };
        [
            crate::convert::association(&self.key),
            st.count.to_string(),
            st.lost.to_string(),
            st.duplicates.to_string(),
            min,
            avg,
            max,
            st.outages.to_string(),
            st.folded.total().to_string(),
            interval,
            diag,
        ]
    }
}

/// RegisterAcks remembered for connections not tracked yet.
const SCCP_PENDING_MAX: usize = 4096;

/// An association slot; the generation tells stale timer entries apart.
struct Slot {
    assoc: Assoc,
    /// Wraps: a stale timer entry would need 2^32 inserts into its place while it waits
    /// (minutes) to be mistaken for a live one.
    generation: u32,
    /// What not every association needs, boxed: 8 bytes where none of it is (`Aside`).
    aside: Option<Box<Aside>>,
    /// The datapath's announcement (`AssociationSeen`) arrived; false while it is tracked
    /// from heartbeats whose announcement was lost (ring buffer full) or is still to come
    /// (overtaken): its `peer.up` was said from the first of them.
    announced: bool,
}

/// An association's state beyond its timing, boxed in its slot, made at the first need
/// and kept (one that holds keeps holding): the beats the datapath held for it, as far
/// as they were read, and a held `heartbeat.unanswered`. Offline by default, beats are
/// not held, and a million slots carry 8 bytes instead of 40.
#[derive(Default)]
struct Aside {
    /// Index of the next beat the datapath holds for it (`held`): those before were read.
    held_next: u16,
    /// Index up to which the datapath was told the beats were read (`Held::ack`).
    held_acked: u16,
    /// A `heartbeat.unanswered` held until the rest of its packet is known: when that
    /// packet is an older request arriving late (TCP re-sent it), the "next request"
    /// that made the earlier one look unanswered was no next request.
    held: Option<Box<Held>>,
    /// Held beats read but not applied yet (after the moment of a decision), in order
    /// (offline by default, none are held).
    pending: std::collections::VecDeque<HeldBeat>,
}

// A million associations carry one each (`cargo xtask bench`, scale): grow it knowingly.
const _: () = assert!(std::mem::size_of::<Slot>() <= 184);

impl crate::table::Keyed for Slot {
    fn key(&self) -> &FlowKey {
        &self.assoc.key
    }
}

impl Slot {
    /// Queues the beats of a hold (the flow table's, or a `Beats` record's) from its
    /// next unread index up to `end`, in order; stops at a slot overwritten since (that
    /// beat went up the ring buffer and comes that way). True if any was queued.
    fn queue_held(&mut self, beats: &[HeldBeat; HELD_BEATS], end: u16) -> bool {
        let from = self.held_next();
        let mut next = from;
        while held::before(next, end) {
            let b = beats[next as usize % HELD_BEATS];
            if b.index != next {
                break;
            }
            self.aside_mut().pending.push_back(b);
            next = next.wrapping_add(1);
        }
        self.set_held_next(next);
        next != from
    }

    /// Index of the next beat the datapath holds for it: 0 until one was read.
    fn held_next(&self) -> u16 {
        self.aside.as_ref().map_or(0, |x| x.held_next)
    }

    fn set_held_next(&mut self, next: u16) {
        if next != self.held_next() {
            self.aside_mut().held_next = next;
        }
    }

    fn aside_mut(&mut self) -> &mut Aside {
        self.aside.get_or_insert_default()
    }
}

/// A `heartbeat.unanswered` waiting for the rest of its packet.
struct Held {
    event: Event,
    /// The responder's transport was seen alive meanwhile.
    alive: bool,
    at: u64,
    /// How long the request had waited, ns.
    waited: u64,
}

/// Sends (or folds) the `heartbeat.unanswered` held in `slot`, if any. A request
/// re-sent within half an interval (a TCP retransmission after 200 ms) is no
/// unanswered request yet: the re-send is `heartbeat.retry`, and if no answer comes,
/// the intervals it waits escalate (`Correlator::unanswered`).
fn release_held(slot: &mut Slot, out: &mut Vec<Event>) {
    let Some(h) = slot.aside.as_mut().and_then(|x| x.held.take()) else {
        return;
    };
    let a = &mut slot.assoc;
    a.transport_alive |= h.alive;
    if h.waited < a.expected_ns() / 2 {
        return;
    }
    a.note(h.at, Trouble::Unanswered);
    if a.gate(Repeating::Unanswered, h.at) {
        out.push(h.event);
    }
}

/// Userspace correlation over datapath records.
pub struct Correlator {
    cfg: Config,
    slots: crate::table::Table<Slot>,
    /// (deadline, place in `slots`, generation): one entry per association at most,
    /// re-armed when it fires early (heartbeats do not touch the queue). 16 bytes an
    /// entry: with the key in it, 56 (a million associations' queue was 56 MiB).
    timers: Deadlines<(u32, u32)>,
    /// The entries due at one deadline, taken off `timers` together and fired in their
    /// keys' order ([`TimerKey`]), last first: the order events come out in must not
    /// depend on where an association happens to be kept.
    due: Vec<(TimerKey, u32, u32)>,
    due_at: u64,
    next_generation: u32,
    /// SCCP secondary keepalive interval (RegisterAck) per phone address, ns.
    sccp_secondary: HashMap<[u8; 16], u64>,
    /// SCCP primary keepalive interval from a RegisterAck on a connection whose first
    /// KeepAlive is still to come (the RegisterAck always comes first), ns.
    sccp_primary: HashMap<FlowKey, u64>,
    sip: SipTracker,
    /// Associations the datapath announced again after evicting them from its flow
    /// table (`agent.max_associations` too small).
    reannounced: u64,
    /// IP fragments of SIP datagrams, put together for the SIP tracker.
    fragments: fragments::Reassembler,
    next_summary_ns: Option<u64>,
    last_summary_ns: u64,
    /// The first record set the summary schedule (`next_summary_ns` is None after the
    /// last boundary the clock can hold).
    summaries_started: bool,
    totals: HashMap<FlowKey, AssocTotals>,
    /// Heartbeat times per association (`analyze --report`); off: None.
    beats: Option<beats::BeatLog>,
    /// Held beats are being taken: a decision they lead to takes no others (no
    /// re-entry into an association being updated).
    taking: bool,
}

/// FlowKey ordered by its bytes, for the timer queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TimerKey(FlowKey);

impl TimerKey {
    fn tuple(&self) -> ([u8; 16], [u8; 16], u16, u16, u8, u8) {
        let k = &self.0;
        (
            k.orig,
            k.resp,
            k.orig_port,
            k.resp_port,
            k.proto,
            k.transport,
        )
    }
}

impl Ord for TimerKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.tuple().cmp(&other.tuple())
    }
}

impl PartialOrd for TimerKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

fn reverse_key(k: &FlowKey) -> FlowKey {
    FlowKey {
        orig: k.resp,
        resp: k.orig,
        orig_port: k.resp_port,
        resp_port: k.orig_port,
        ..*k
    }
}

impl Correlator {
    pub fn new(cfg: Config) -> Correlator {
        Correlator {
            sip: SipTracker::new(cfg.sip.clone()),
            reannounced: 0,
            fragments: fragments::Reassembler::default(),
            cfg,
            slots: Default::default(),
            timers: Deadlines::default(),
            due: Vec::new(),
            due_at: 0,
            next_generation: 0,
            sccp_secondary: HashMap::new(),
            sccp_primary: HashMap::new(),
            next_summary_ns: None,
            last_summary_ns: 0,
            summaries_started: false,
            totals: HashMap::new(),
            beats: None,
            taking: false,
        }
    }

    /// Keeps heartbeat times per association from now on (bounded: [`beats`]).
    pub fn record_beats(&mut self) {
        self.beats = Some(beats::BeatLog::default());
        self.sip.record_beats();
    }

    /// The heartbeat times recorded, SIP's included; None when not recording.
    pub fn take_beats(&mut self) -> Option<beats::BeatLog> {
        let mut log = self.beats.take()?;
        if let Some(sip) = self.sip.take_beats() {
            log.merge(sip);
        }
        Some(log)
    }

    /// New per-protocol rules (SIGHUP): tracked associations keep their state and
    /// learned interval and follow the new tolerances and thresholds from now on.
    pub fn set_params(&mut self, params: BTreeMap<Protocol, ProtoParams>) {
        self.cfg.params = params;
        for slot in self.slots.values_mut() {
            let proto = Protocol::from_u8(slot.assoc.key.proto);
            slot.assoc.rules = assoc::Rules::of(&self.cfg.params(proto));
        }
    }

    /// New `heartbeat.summary` period (SIGHUP); takes effect after the next summary.
    pub fn set_summary_period(&mut self, period_ns: Option<u64>) {
        self.cfg.summary_period_ns = period_ns;
        if period_ns.is_none() {
            self.next_summary_ns = None;
        } else {
            for slot in self.slots.values_mut() {
                slot.assoc.keep_counts();
            }
        }
    }

    /// Associations (up, down) per protocol.
    pub fn health(&self) -> BTreeMap<Protocol, (u64, u64)> {
        let mut h: BTreeMap<Protocol, (u64, u64)> = BTreeMap::new();
        let slots = self
            .slots
            .values()
            .map(|s| (Protocol::from_u8(s.assoc.key.proto), s.assoc.down.is_some()));
        // SIP: down while a registration on the association has lapsed (as on the board).
        let sip = self
            .sip
            .board()
            .into_iter()
            .map(|v| (Protocol::Sip, v.lapsed));
        for (protocol, down) in slots.chain(sip) {
            let e = h.entry(protocol).or_default();
            if down {
                e.1 += 1;
            } else {
                e.0 += 1;
            }
        }
        h
    }

    /// The associations tracked now (for the status board's snapshot).
    pub fn assocs(&self) -> impl Iterator<Item = &Assoc> {
        self.slots.values().map(|s| &s.assoc)
    }

    /// The SIP associations (registrations, OPTIONS pings), for the status board.
    pub fn sip_board(&self) -> Vec<sip::BoardView<'_>> {
        self.sip.board()
    }

    /// Associations currently tracked.
    pub fn associations(&self) -> usize {
        self.slots.len()
    }

    /// Keys of the associations tracked now.
    pub fn keys(&self) -> Vec<FlowKey> {
        self.slots.keys().copied().collect()
    }

    /// After records were lost: the datapath's own last request time and sequence for
    /// `key` (its flow table). Heartbeats whose records were lost must not look like
    /// silence: timers restart from what the datapath saw.
    pub fn resync(&mut self, key: &FlowKey, last_beat_ns: u64, last_seq: u32) {
        if let Some(slot) = self.slots.get_mut(key) {
            let a = &mut slot.assoc;
            if last_beat_ns > a.last_beat_ns && a.down.is_none() {
                a.last_beat_ns = last_beat_ns;
                a.last_seq = last_seq;
                a.missed_reported = false;
            }
        }
    }

    /// Per-association totals of the whole run, closed associations included.
    pub fn totals(&self) -> Vec<AssocTotals> {
        let mut all: Vec<AssocTotals> = self.totals.values().cloned().collect();
        for slot in self.slots.values() {
            let a = &slot.assoc;
            all.push(AssocTotals {
                key: a.key,
                stats: a.run_counts(),
                expected_interval_ms: a.expected_ns() / MS,
                diagnoses: a.trouble().diagnoses.clone(),
                closed: false,
            });
        }
        all.extend(self.sip.totals());
        // Cached: formatting two keys per comparison was a fifth of `analyze` at 1M associations.
        all.sort_by_cached_key(|a| association(&a.key));
        all
    }

    /// Userspace's counters (SIP tracking, fragment reassembly, flow-table evictions),
    /// named as they are reported beside the datapath's.
    pub fn named_counters(&self) -> impl Iterator<Item = (&'static str, u64)> {
        let frags = self.fragments.counters().named();
        let own = [("associations_reannounced", self.reannounced)];
        self.sip
            .counters()
            .named()
            .into_iter()
            .chain(frags)
            .chain(own)
    }

    /// Associations the datapath evicted from its flow table and announced again.
    pub fn reannounced(&self) -> u64 {
        self.reannounced
    }

    /// Warms the cache for an association ahead of its records, in three steps
    /// (`Table::prefetch_index`, `prefetch_value` and `expect`), `h` its key's
    /// `table::hash32`.
    pub fn prefetch_index(&self, h: u32) {
        self.slots.prefetch_index(h);
    }

    pub fn prefetch_value(&self, h: u32) -> Option<u32> {
        self.slots.prefetch_value(h)
    }

    pub fn expect(&self, key: &FlowKey, place: u32) {
        self.slots.expect(key, place);
    }

    /// One datapath record (with its payload for SIP records).
    pub fn on_record(&mut self, raw: &RawEvent, payload: &[u8], ctx: &Ctx, out: &mut Vec<Event>) {
        let Some(kind) = EventKind::from_u8(raw.kind) else {
            return;
        };
        if !self.summaries_started {
            if let Some(p) = self.cfg.summary_period_ns {
                self.summaries_started = true;
                // None when the first boundary is past the clock's range (found by the
                // pcap fuzz target: a timestamp that saturated to u64::MAX).
                self.next_summary_ns = raw.ts_ns.checked_add(p);
                self.last_summary_ns = raw.ts_ns;
            }
        }
        let now = raw.ts_ns;
        if !self.taking && !matches!(kind, EventKind::SipMessage | EventKind::Fragment) {
            // Beats held before this record came before it.
            if self
                .slots
                .get(&raw.key)
                .is_some_and(|s| s.aside.as_ref().is_some_and(|x| !x.pending.is_empty()))
            {
                self.apply_pending(&raw.key, Until::Time(u64::MAX), ctx, out);
            }
        }
        match kind {
            EventKind::SipMessage => {
                self.sip.on_record(raw, payload, ctx, out);
                return;
            }
            EventKind::Fragment => {
                self.deliver_fragments(now, ctx, out);
                if let Some((whole, data)) = self.fragments.on_fragment(raw, payload) {
                    self.sip.on_record(&whole, &data, ctx, out);
                }
                return;
            }
            EventKind::Duplicate => {
                // A mirror copy of a heartbeat frame: counted, never a heartbeat.
                if let Some(slot) = self.slots.get_mut(&raw.key) {
                    slot.assoc.count_duplicate();
                }
                return;
            }
            EventKind::SessionParams => {
                self.session_params(raw);
                return;
            }
            EventKind::Heartbeat => {
                self.heartbeat(raw, ctx, out);
                return;
            }
            EventKind::Beats => {
                self.held_batch(raw, payload, ctx, out);
                return;
            }
            EventKind::AssociationSeen => {
                if let Some(slot) = self.slots.get_mut(&raw.key) {
                    if slot.announced {
                        // Known and announced: the datapath's flow table evicted it and
                        // it came back. No new peer: this is its next heartbeat. Its
                        // new flow state holds beats from index 0 again.
                        if let Some(x) = slot.aside.as_deref_mut() {
                            (x.held_next, x.held_acked) = (0, 0);
                        }
                        if let Some(h) = ctx.held {
                            h.forget(&raw.key);
                        }
                        slot.assoc.reannounced = slot.assoc.reannounced.wrapping_add(1);
                        self.reannounced += 1;
                        let beat = RawEvent {
                            kind: EventKind::Heartbeat as u8,
                            aux: raw.aux & 0xff,
                            value: 0,
                            ..*raw
                        };
                        self.heartbeat(&beat, ctx, out);
                        return;
                    }
                    // The announcement a later heartbeat overtook: peer.up was said then,
                    // and this beat is older than that one.
                    slot.announced = true;
                    return;
                }
                out.extend(ctx.conv.event(raw, ctx.clock.unix_ns(now)));
                self.insert(raw, true);
                // Its first heartbeat, counted by `Assoc::new`.
                if let Some(log) = &mut self.beats {
                    log.beat(&raw.key, now);
                }
                return;
            }
            _ => {}
        }
        let ev = ctx.conv.event(raw, ctx.clock.unix_ns(now));
        let one_way = matches!(kind, EventKind::Retry | EventKind::Unanswered);
        if one_way {
            self.take_reverse(&raw.key, now, ctx, out);
        }
        let one_way = one_way.then(|| self.one_way_now(&raw.key, now)).flatten();
        let Some(slot) = self.slots.get_mut(&raw.key) else {
            // Not announced yet: reported as the datapath found it.
            out.extend(ev);
            return;
        };
        if kind != EventKind::OutOfOrder {
            release_held(slot, out);
        }
        let (a, aside) = (&mut slot.assoc, &mut slot.aside);
        let mut ev = ev;
        match kind {
            EventKind::Gap => {
                a.note(now, Trouble::Gap);
                a.gap(raw.aux, raw.value);
                if a.down.is_some() {
                    a.trouble_mut().gap_in_outage = Some(raw.value);
                }
            }
            EventKind::Retry => {
                a.note(now, Trouble::Retry);
                a.retried = true;
                a.resent = true;
                if !a.gate(Repeating::Retry, now) {
                    ev = None;
                }
            }
            EventKind::Restart if a.down.is_some() => {
                a.trouble_mut().restart_in_outage = Some((raw.seq, raw.aux));
            }
            // An MGCP RSIP (`value` = its method): one per endpoint group in a burst.
            EventKind::Restart if raw.value != 0 && !a.gate(Repeating::Rsip, now) => {
                ev = None;
            }
            EventKind::OutOfOrder => {
                let late = a.arrived_late(raw.seq, now);
                if late.is_some() {
                    // The request before it was not unanswered: this is no next request.
                    if let Some(x) = aside {
                        x.held = None;
                    }
                } else {
                    release_held(slot, out);
                }
                let a = &mut slot.assoc;
                if let Some(late) = late {
                    // Counted lost by a gap, here after all: late, if beyond the tolerance.
                    if late.interval_ns > late.expected_ns.saturating_add(a.grace_ns()) {
                        a.note(now, Trouble::Late);
                        let mut e = late_event(ctx, &raw.key, raw.ifindex, now, raw.seq, late);
                        e.message
                            .push_str("; the gap before counted it lost: it was late");
                        ev = Some(e);
                    } else if !a.gate(Repeating::OutOfOrder, now) {
                        ev = None;
                    }
                } else {
                    a.note(now, Trouble::OutOfOrder);
                    if !a.gate(Repeating::OutOfOrder, now) {
                        ev = None;
                    }
                }
            }
            EventKind::Mismatch => {
                if a.trouble().late_seq == Some(raw.seq) {
                    // The answer to a heartbeat that came late: it matches that one.
                    a.trouble_mut().late_seq = None;
                    ev = None;
                } else {
                    a.note(now, Trouble::OutOfOrder);
                    if !a.gate(Repeating::Mismatch, now) {
                        ev = None;
                    }
                }
            }
            EventKind::QosMismatch => {
                let seen = (raw.value & 0xff) as u8;
                let side = usize::from(raw.value & QOS_FROM_RESPONDER != 0);
                let reannounced = a.reannounced;
                let p = a.trouble_mut();
                if let Some((last, at)) = p.qos_reported[side] {
                    if last == seen && at != reannounced {
                        // Reported before the flow table evicted it: the datapath forgot.
                        p.qos_reported[side] = Some((seen, reannounced));
                        return;
                    }
                }
                p.qos_reported[side] = Some((seen, reannounced));
                if side == 0 {
                    p.qos_wrong = Some((seen, raw.aux as u8));
                }
            }
            EventKind::Unanswered => {
                // Held until the request in the same packet is known (`release_held`).
                // Lost intervals and the escalation to `peer.down` are counted by that
                // request (`heartbeat`).
                if let Some(mut event) = ev {
                    if let Some(d) = one_way {
                        event.heartbeat.diagnosis = Some(d.cause);
                        event.heartbeat.evidence = Some(d.evidence);
                    }
                    aside.get_or_insert_default().held = Some(Box::new(Held {
                        event,
                        alive: raw.aux != 0,
                        at: now,
                        waited: raw.value,
                    }));
                }
                return;
            }
            EventKind::SessionClosed => {
                out.extend(ev);
                self.remove(&raw.key);
                if let Some(h) = ctx.held {
                    h.forget(&raw.key);
                }
                return;
            }
            _ => {}
        }
        if let (Some(e), Some(d)) = (ev.as_mut(), one_way) {
            e.heartbeat.diagnosis = Some(d.cause);
            e.heartbeat.evidence = Some(d.evidence);
        }
        out.extend(ev);
    }

    /// Fires every timer due at or before `now` (record clock), then summaries.
    pub fn advance(&mut self, now: u64, ctx: &Ctx, out: &mut Vec<Event>) {
        while let Some(key) = self.next_due(now) {
            let key = TimerKey(key);
            let slot = self.slots.get_mut(&key.0).expect("next_due checked");
            slot.assoc.armed = false;
            // Beats the datapath held back, up to the deadline as it moves: they may
            // have ended the silence.
            self.take_held(&key.0, Until::Deadline, ctx, out);
            // One step per pop: a following step (missed -> down) is re-armed and
            // comes out of the queue in time order with every other association's.
            let found = self
                .slots
                .get_mut(&key.0)
                .and_then(|slot| slot.assoc.on_timer(now));
            match found {
                Some(Silence::Missed(at, missed)) => {
                    self.take_reverse(&key.0, at, ctx, out);
                    let a = &self.slots[&key.0].assoc;
                    let ev = self.silence_event(a, at, missed, false, ctx);
                    out.push(ev);
                }
                Some(Silence::Down(at, missed)) => {
                    let silence = at - self.slots[&key.0].assoc.last_beat_ns;
                    self.report_down(&key.0, at, missed, silence, ctx, out);
                }
                None => {}
            }
            self.arm(&key.0);
        }
        self.deliver_fragments(now, ctx, out);
        self.sip.advance(now, ctx, out);
        while let (Some(at), Some(period)) = (self.next_summary_ns, self.cfg.summary_period_ns) {
            if at > now {
                break;
            }
            self.take_all_held(at, ctx, out);
            self.summaries(at, ctx, out);
            // Every later boundary up to `now` closes an empty period (what happened so
            // far came before `at`), and empty periods give no summary: go straight to
            // the last of them. Walking them one by one after a jump of the clock (a
            // capture with a corrupt timestamp) took hours (found by the pcap fuzz target).
            let skipped = (now - at) / period;
            if skipped > 0 {
                self.last_summary_ns = at.saturating_add(skipped.saturating_mul(period));
            }
            // None past the end of the clock's range: no boundary left.
            self.next_summary_ns = skipped
                .checked_add(1)
                .and_then(|n| n.checked_mul(period))
                .and_then(|d| at.checked_add(d));
        }
    }

    /// The key of the next association whose timer is due at `now` or before: earliest
    /// deadline first, then by key. Entries whose association left its place or was
    /// re-armed since (another generation) are skipped.
    fn next_due(&mut self, now: u64) -> Option<FlowKey> {
        loop {
            // An entry pushed for before the deadline being fired goes first, as the
            // queue's order has it: the rest of the batch goes back and waits.
            if self.timers.next().is_some_and(|at| at < self.due_at) {
                for (_, place, generation) in self.due.drain(..) {
                    self.timers.push(self.due_at, (place, generation));
                }
            }
            // Entries pushed at the deadline being fired join it in key order.
            let join = self.timers.next().is_some_and(|at| at == self.due_at);
            if self.due.is_empty() || join {
                if self.due.is_empty() {
                    self.due_at = self.timers.next().filter(|&at| at <= now)?;
                }
                while let Some((_, (place, generation))) = self.timers.pop_due(self.due_at) {
                    if let Some(s) = self.slots.at(place) {
                        if s.generation == generation {
                            self.due.push((TimerKey(s.assoc.key), place, generation));
                        }
                    }
                }
                self.due.sort_unstable_by_key(|e| std::cmp::Reverse(e.0));
            }
            let (_, place, generation) = self.due.pop()?;
            // Firing an earlier entry may have moved this one's association on.
            if let Some(s) = self.slots.at(place) {
                if s.generation == generation {
                    return Some(s.assoc.key);
                }
            }
        }
    }

    /// Datagrams whose fragments stopped coming by `now`, as far as they go.
    fn deliver_fragments(&mut self, now: u64, ctx: &Ctx, out: &mut Vec<Event>) {
        for (whole, data) in self.fragments.expire(now) {
            self.sip.on_record(&whole, &data, ctx, out);
        }
    }

    /// End of input (offline): the last, partial summary period.
    pub fn finish(&mut self, now: u64, ctx: &Ctx, out: &mut Vec<Event>) {
        // Heartbeats still held count in the last period and the totals.
        self.take_all_held(now, ctx, out);
        if self.cfg.summary_period_ns.is_some() && now > self.last_summary_ns {
            self.summaries(now, ctx, out);
        }
    }

    fn summaries(&mut self, at: u64, ctx: &Ctx, out: &mut Vec<Event>) {
        let period = at.saturating_sub(self.last_summary_ns);
        self.last_summary_ns = at;
        let mut keys: Vec<FlowKey> = self.slots.keys().copied().collect();
        keys.sort_by_key(|k| TimerKey(*k));
        for key in keys {
            let a = &mut self.slots.get_mut(&key).expect("listed").assoc;
            let stats = a.take_period();
            let p = summary::Period {
                key: &key,
                ifindex: a.ifindex,
                at_ns: at,
                length_ns: period,
                stats: &stats,
                interval_ms: Some(a.expected_ns() / MS),
                counted: &summary::HEARTBEATS,
            };
            out.extend(summary::event(&p, ctx));
        }
        self.sip.summaries(at, period, ctx, out);
    }

    fn insert(&mut self, raw: &RawEvent, announced: bool) {
        let proto = Protocol::from_u8(raw.key.proto);
        let mut a = Assoc::new(
            raw.key,
            raw.ifindex,
            self.cfg.params(proto),
            raw.ts_ns,
            raw.seq,
        );
        if proto == Protocol::Sccp {
            // The connection that carried the RegisterAck is the primary CUCM's; the
            // phone's others are backups.
            a.set_hint_ns(
                self.sccp_primary
                    .remove(&raw.key)
                    .or_else(|| self.sccp_secondary.get(&raw.key.orig).copied()),
            );
        }
        if self.cfg.counts || self.cfg.summary_period_ns.is_some() || self.cfg.totals {
            a.keep_counts();
        }
        self.next_generation = self.next_generation.wrapping_add(1);
        if let Some(old) = self.slots.insert(Slot {
            assoc: a,
            generation: self.next_generation,
            aside: None,
            announced,
        }) {
            self.retire(old.assoc);
        }
        self.arm(&raw.key);
    }

    fn remove(&mut self, key: &FlowKey) {
        self.sccp_primary.remove(key);
        if let Some(old) = self.slots.remove(key) {
            let mut a = old.assoc;
            a.closed = true;
            self.retire(a);
        }
    }

    /// Keeps a finished association's totals for the run summary.
    fn retire(&mut self, a: Assoc) {
        if !self.cfg.totals {
            return;
        }
        let t = AssocTotals {
            key: a.key,
            stats: a.run_counts(),
            expected_interval_ms: a.expected_ns() / MS,
            diagnoses: a.trouble().diagnoses.clone(),
            closed: true,
        };
        // Several sessions may reuse the same key: add them up.
        self.totals
            .entry(a.key)
            .and_modify(|e| {
                e.stats.count += t.stats.count;
                e.stats.lost += t.stats.lost;
                e.stats.outages += t.stats.outages;
                e.stats.duplicates += t.stats.duplicates;
                for k in Repeating::ALL {
                    e.stats.folded.add(k, t.stats.folded.0[k as usize].into());
                }
                e.diagnoses.extend(t.diagnoses.iter().copied());
            })
            .or_insert(t);
    }

    fn arm(&mut self, key: &FlowKey) {
        let Some(place) = self.slots.place_of(key) else {
            return;
        };
        let slot = self.slots.get_mut(key).expect("found above");
        if slot.assoc.armed {
            return;
        }
        if let Some(d) = slot.assoc.deadline() {
            slot.assoc.armed = true;
            self.timers.push(d, (place, slot.generation));
        }
    }

    fn session_params(&mut self, raw: &RawEvent) {
        match Protocol::from_u8(raw.key.proto) {
            Protocol::Ged125 => {
                if let Some(s) = self.slots.get_mut(&raw.key) {
                    s.assoc.set_cap_ns(Some(raw.value * MS));
                }
            }
            Protocol::Sccp => {
                // RegisterAck: primary interval on this connection, secondary for the
                // phone's other (backup) CUCM connections.
                let primary = raw.value.saturating_mul(1_000_000_000);
                let secondary = raw.aux as u64 * 1_000_000_000;
                if secondary > 0 {
                    self.sccp_secondary.insert(raw.key.orig, secondary);
                }
                if !self.slots.contains_key(&raw.key) && primary > 0 {
                    if self.sccp_primary.len() >= SCCP_PENDING_MAX {
                        // Registrations that never sent a KeepAlive: forget them.
                        self.sccp_primary.clear();
                    }
                    self.sccp_primary.insert(raw.key, primary);
                }
                for s in self.slots.values_mut() {
                    let k = &s.assoc.key;
                    if k.proto != Protocol::Sccp as u8 || k.orig != raw.key.orig {
                        continue;
                    }
                    if *k == raw.key {
                        s.assoc.set_hint_ns(Some(primary));
                    } else if secondary > 0 {
                        s.assoc.set_hint_ns(Some(secondary));
                    }
                }
            }
            _ => {}
        }
    }

    /// Takes every association's held beats up to `until` (a summary boundary; live,
    /// the status board's and metrics' second).
    pub fn take_all_held(&mut self, until: u64, ctx: &Ctx, out: &mut Vec<Event>) {
        if ctx.held.is_none() {
            return;
        }
        for key in self.keys() {
            self.take_held(&key, Until::Time(until), ctx, out);
        }
    }

    /// Applies the beats the datapath holds for `key`, in order, as far as `until` allows
    /// (PROTOCOLS.md "Routine heartbeats stay in the kernel"). Every beat held is read
    /// and acknowledged, so the kernel's hold empties; those past `until` wait in the
    /// association's queue (`Slot::pending`) for the next take or record.
    fn take_held(&mut self, key: &FlowKey, until: Until, ctx: &Ctx, out: &mut Vec<Event>) {
        let Some(src) = ctx.held else {
            return;
        };
        if self.taking {
            return;
        }
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        // The kernel holds beats only after two regular intervals in a row, the second
        // of them a record here (its announcement may be the first): an association of a
        // single heartbeat holds none, and not reading it is a system call saved (a storm
        // of one-beat associations made thousands).
        let could_hold = slot.assoc.beats > u64::from(CALM_AFTER);
        if let Some(st) = could_hold.then(|| src.flow(key)).flatten() {
            // Acknowledged once half the hold was read, not at every take: each is a map
            // update (a system call that allocates an LRU element), and the kernel looks
            // only when its hold is full, by then at least half of it acknowledged.
            if slot.queue_held(&st.held.beats, st.held_next) {
                let x = slot.aside_mut();
                if x.held_next.wrapping_sub(x.held_acked) as usize >= HELD_BEATS / 2 {
                    src.ack(key, x.held_next);
                    x.held_acked = x.held_next;
                }
            }
        }
        self.apply_pending(key, until, ctx, out);
    }

    /// Applies `key`'s queued held beats, in order, as far as `until` allows.
    fn apply_pending(&mut self, key: &FlowKey, until: Until, ctx: &Ctx, out: &mut Vec<Event>) {
        self.taking = true;
        while let Some(slot) = self.slots.get_mut(key) {
            let limit = match until {
                Until::Time(t) => t,
                Until::Deadline => slot.assoc.deadline().unwrap_or(u64::MAX),
            };
            let queue = slot.aside.as_deref_mut().map(|x| &mut x.pending);
            let Some(b) = queue.and_then(|q| q.pop_front_if(|b| b.ts_ns <= limit)) else {
                break;
            };
            let raw = b.record(key, slot.assoc.ifindex);
            if let Some(h) = ctx.held {
                h.taken(&raw);
            }
            self.on_record(&raw, &[], ctx, out);
        }
        self.taking = false;
    }

    /// Before a diagnosis that looks at the reverse direction: its held beats up to `at`.
    fn take_reverse(&mut self, key: &FlowKey, at: u64, ctx: &Ctx, out: &mut Vec<Event>) {
        self.take_held(&reverse_key(key), Until::Time(at), ctx, out);
    }

    /// A `Beats` record: held beats sent up the ring buffer, after those queued; those
    /// already read from the flow table are skipped.
    fn held_batch(&mut self, raw: &RawEvent, payload: &[u8], ctx: &Ctx, out: &mut Vec<Event>) {
        let beats = HeldBeat::read_all(payload);
        let first = raw.seq as u16;
        if !self.slots.contains_key(&raw.key) {
            // Its announcement was lost or is still to come: the first beat says peer.up.
            if let Some(b) = beats
                .get(first as usize % HELD_BEATS)
                .filter(|b| b.index == first)
            {
                let r = b.record(&raw.key, raw.ifindex);
                self.on_record(&r, &[], ctx, out);
                if let Some(slot) = self.slots.get_mut(&raw.key) {
                    slot.set_held_next(first.wrapping_add(1));
                }
            }
        }
        let Some(slot) = self.slots.get_mut(&raw.key) else {
            return;
        };
        if held::before(slot.held_next(), first) {
            // Beats before these went up in a record that was lost (counted).
            slot.set_held_next(first);
        }
        let end = first.wrapping_add((raw.aux as u16).min(HELD_BEATS as u16));
        slot.queue_held(&beats, end);
        self.apply_pending(&raw.key, Until::Time(u64::MAX), ctx, out);
    }

    /// After ring-buffer records were lost: held beats that went up with them are gone,
    /// and the next to take is the oldest the flow table still has.
    pub fn resync_held(&mut self, key: &FlowKey, st: &FlowState) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let oldest = st.held_next.wrapping_sub(HELD_BEATS as u16);
        let mut next = slot.held_next();
        if held::before(next, oldest) {
            next = oldest;
        }
        while held::before(next, st.held_next)
            && st.held.beats[next as usize % HELD_BEATS].index != next
        {
            next = next.wrapping_add(1);
        }
        slot.set_held_next(next);
    }

    fn heartbeat(&mut self, raw: &RawEvent, ctx: &Ctx, out: &mut Vec<Event>) {
        let now = raw.ts_ns;
        if !self.slots.contains_key(&raw.key) {
            // The datapath announced it but the record never came (lost in a full ring
            // buffer, reported as agent.events_lost) or comes later: up from here, said
            // now as offline would; this heartbeat is counted below.
            let seen = RawEvent {
                kind: EventKind::AssociationSeen as u8,
                ..*raw
            };
            out.extend(ctx.conv.event(&seen, ctx.clock.unix_ns(now)));
            self.insert(raw, false);
            let a = &mut self.slots.get_mut(&raw.key).expect("inserted").assoc;
            a.beats = 0;
            a.take_period();
        }
        let role = raw.aux & 0xff;
        let key = raw.key;
        let slot = self.slots.get_mut(&key).expect("inserted");
        release_held(slot, out);
        let a = &mut slot.assoc;
        if role == Role::Response as u32 {
            if raw.aux & BEAT_PAIRED == 0 {
                return;
            }
            a.answered(now, raw.value);
            if a.down == Some(DownCause::Unanswered) {
                self.report_up(&key, now, raw.seq, ctx, out);
            }
            return;
        }
        if role == Role::Request as u32 {
            // A new request or a re-send; not an older one arriving late.
            let resent = std::mem::take(&mut a.resent);
            let next = raw.seq != a.last_seq;
            if next || resent {
                self.unanswered(&key, now, next, ctx, out);
            }
        } else {
            // One-way: no answer is waited for (nothing counts unanswered intervals).
            a.clear_waiting_since();
        }
        let a = &mut self.slots.get_mut(&key).expect("inserted").assoc;
        let interval = (raw.aux & hbwatch_common::event::BEAT_INTERVAL != 0).then_some(raw.value);
        if a.down == Some(DownCause::Silence) {
            a.last_seq = raw.seq;
            self.report_up(&key, now, raw.seq, ctx, out);
        }
        let a = &mut self.slots.get_mut(&key).expect("inserted").assoc;
        a.beats += 1;
        if let Some(log) = &mut self.beats {
            log.beat(&key, now);
        }
        if let Timing::Late(sample, expected) = a.on_beat(now, raw.seq, interval) {
            let late = LateArrival {
                interval_ns: sample,
                expected_ns: expected,
            };
            out.push(late_event(ctx, &key, raw.ifindex, now, raw.seq, late));
        }
        self.arm(&key);
    }

    /// A request at `now` while earlier ones wait: each interval gone by without an
    /// answer is a heartbeat lost, and `down_after` of them in a row (at least 2) mean
    /// `peer.down` while requests still arrive. Backup SCCP connections, only TCP-ACKed,
    /// are healthy: there (`P_UNANSWERED_NEEDS_ACKS`) only once an answer was seen.
    fn unanswered(&mut self, key: &FlowKey, now: u64, next: bool, ctx: &Ctx, out: &mut Vec<Event>) {
        let a = &mut self.slots.get_mut(key).expect("known").assoc;
        let new = a.unanswered_intervals(now, next);
        let needs_acks = a.rules.flags & P_UNANSWERED_NEEDS_ACKS != 0;
        if new == 0 || (needs_acks && a.last_answer_ns == 0) {
            return;
        }
        a.count_lost(new);
        a.unanswered_streak = a.unanswered_streak.saturating_add(new as u32);
        let streak = a.unanswered_streak as u64;
        if a.down.is_some() || streak < a.down_after() {
            return;
        }
        let since = a.waiting_since().unwrap_or(now);
        a.down_unanswered(since);
        self.report_down(key, now, streak, now.saturating_sub(since), ctx, out);
    }

    /// One-way loss while this association's requests fail: the reverse association
    /// of the same pair is healthy (beating, answered, not down).
    fn one_way_now(&self, key: &FlowKey, now: u64) -> Option<Diagnosis> {
        let r = &self.slots.get(&reverse_key(key))?.assoc;
        diagnosis::reverse_healthy(r, now)
    }

    fn diagnose(&self, key: &FlowKey, now: u64, phase: Phase) -> Diagnosis {
        let a = &self.slots[key].assoc;
        let reverse = self.slots.get(&reverse_key(key)).map(|s| &s.assoc);
        diagnose(a, reverse, now, phase)
    }

    fn silence_event(&self, a: &Assoc, at: u64, missed: u64, down: bool, ctx: &Ctx) -> Event {
        let d = self.diagnose(&a.key, at, Phase::Outage);
        // A record may be dated before the last heartbeat (captures are not always in
        // time order): no negative silence (found by the pcap fuzz target).
        let silence = at.saturating_sub(a.last_beat_ns);
        let expected = a.expected_ns() / MS;
        let (action, level, what) = if down {
            (Action::PeerDown, Level::Critical, "peer down")
        } else {
            (Action::HeartbeatMissed, Level::Warning, "heartbeats missed")
        };
        let message = format!(
            "{}: {what}: {missed} missed, {} ms without a heartbeat (interval {expected} ms); likely {}",
            association(&a.key),
            silence / MS,
            d.cause
        );
        let mut ev = ctx.conv.association_event(
            About {
                key: &a.key,
                ifindex: Some(a.ifindex),
                unix_ns: ctx.clock.unix_ns(at),
            },
            Said {
                action,
                level,
                message,
            },
        );
        let hb = &mut ev.heartbeat;
        hb.seq = Some(a.last_seq);
        hb.missed = Some(missed);
        hb.silence_ms = Some(silence / MS);
        hb.expected_interval_ms = Some(expected);
        hb.diagnosis = Some(d.cause);
        hb.evidence = Some(d.evidence);
        ev
    }

    fn report_down(
        &mut self,
        key: &FlowKey,
        at: u64,
        missed: u64,
        silence: u64,
        ctx: &Ctx,
        out: &mut Vec<Event>,
    ) {
        self.take_reverse(key, at, ctx, out);
        let a = &self.slots[key].assoc;
        let mut ev = self.silence_event(a, at, missed, true, ctx);
        ev.heartbeat.silence_ms = Some(silence / MS);
        if a.down == Some(DownCause::Unanswered) {
            ev.message = format!(
                "{}: peer down: {missed} requests in a row unanswered ({} ms without an answer); likely {}",
                association(key),
                silence / MS,
                ev.heartbeat.diagnosis.unwrap_or(diagnosis::UNDETERMINED)
            );
        }
        let cause = ev.heartbeat.diagnosis.unwrap_or(diagnosis::UNDETERMINED);
        let p = self.slots.get_mut(key).expect("known").assoc.trouble_mut();
        if at.saturating_sub(p.last_fold_ns) > assoc::REPEAT_WINDOW_NS {
            // Folded long before this outage: that burst is over (the summary has it).
            p.folded = Default::default();
        }
        p.diagnoses.push(cause);
        p.down_diagnosis = Some(Box::new(Diagnosis {
            cause,
            evidence: ev.heartbeat.evidence.clone().unwrap_or_default(),
            earlier: None,
        }));
        out.push(ev);
    }

    fn report_up(&mut self, key: &FlowKey, now: u64, seq: u32, ctx: &Ctx, out: &mut Vec<Event>) {
        self.take_reverse(key, now, ctx, out);
        let d = self.diagnose(key, now, Phase::Recovery);
        let a = &mut self.slots.get_mut(key).expect("known").assoc;
        let downtime = now.saturating_sub(a.trouble().outage_from_ns) / MS;
        let folded = std::mem::take(&mut a.trouble_mut().folded);
        let folded_text = match folded.total() {
            0 => String::new(),
            _ => format!("; alerts folded into the outage: {}", folded.describe()),
        };
        let causes = match d.earlier {
            Some(earlier) => format!("{earlier}, then {}", d.cause),
            None => d.cause.to_string(),
        };
        let message = format!(
            "{}: peer up again after {downtime} ms down (seq {seq}); likely {causes}{folded_text}",
            association(key),
        );
        let mut ev = ctx.conv.association_event(
            About {
                key,
                ifindex: Some(a.ifindex),
                unix_ns: ctx.clock.unix_ns(now),
            },
            Said {
                action: Action::PeerUp,
                level: Level::Info,
                message,
            },
        );
        ev.heartbeat.seq = Some(seq);
        ev.heartbeat.downtime_ms = Some(downtime);
        ev.heartbeat.diagnosis = Some(d.cause);
        ev.heartbeat.evidence = Some(d.evidence);
        ev.heartbeat.folded = folded.by_action();
        a.down = None;
        a.trouble_mut().down_diagnosis = None;
        a.missed_reported = false;
        a.unanswered_streak = 0;
        a.transport_alive = false;
        if d.earlier.is_some() {
            // Two causes, one after the other: both stay.
            a.trouble_mut().diagnoses.push(d.cause);
        } else if let Some(last) = a.trouble_mut().diagnoses.last_mut() {
            // The recovery knows more (a restart shows only now).
            *last = d.cause;
        }
        out.push(ev);
    }
}

/// `heartbeat.late` for heartbeat `seq` at `now`.
fn late_event(
    ctx: &Ctx,
    key: &FlowKey,
    ifindex: u32,
    now: u64,
    seq: u32,
    late: LateArrival,
) -> Event {
    let mut ev = ctx.conv.association_event(
        About {
            key,
            ifindex: Some(ifindex),
            unix_ns: ctx.clock.unix_ns(now),
        },
        Said {
            action: Action::HeartbeatLate,
            level: Level::Warning,
            message: format!(
                "{}: heartbeat seq {seq} came {} ms after the previous one (expected {} ms)",
                association(key),
                late.interval_ns / MS,
                late.expected_ns / MS
            ),
        },
    );
    ev.heartbeat.seq = Some(seq);
    ev.heartbeat.interval_ms = Some(late.interval_ns / MS);
    ev.heartbeat.expected_interval_ms = Some(late.expected_ns / MS);
    ev
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::CaptureClock;
    use hbwatch_common::event::BEAT_INTERVAL;

    const SEC: u64 = 1_000_000_000;

    fn record(kind: EventKind, ts_ns: u64, seq: u32, aux: u32, value: u64) -> RawEvent {
        let mut key = FlowKey {
            orig_port: 15000,
            resp_port: 15000,
            proto: Protocol::Cs1000Rudp as u8,
            family: 4,
            transport: hbwatch_common::parse::IPPROTO_UDP,
            ..FlowKey::default()
        };
        key.orig[..4].copy_from_slice(&[10, 0, 0, 1]);
        key.resp[..4].copy_from_slice(&[10, 0, 0, 2]);
        RawEvent {
            ts_ns,
            value,
            key,
            seq,
            aux,
            ifindex: 1,
            kind: kind as u8,
            dscp: 0,
            _pad: [0; 2],
        }
    }

    fn converter() -> Converter {
        Converter {
            hostname: "probe".into(),
            interfaces: HashMap::new(),
            fixed_interface: Some("t.pcap".into()),
        }
    }

    /// With the default rules, summaries off.
    fn correlator() -> Correlator {
        Correlator::new(Config {
            params: BTreeMap::new(),
            summary_period_ns: None,
            sip: SipConfig::default(),
            counts: true,
            totals: true,
        })
    }

    /// A flow table too small for the site evicts an association; the datapath, having
    /// forgotten it, announces it again at its next heartbeat with its QoS finding.
    /// Neither is news: one peer.up, one qos.mismatch, every heartbeat counted, no
    /// silence, and the eviction counted.
    #[test]
    fn an_association_announced_again_after_eviction_is_its_heartbeat() {
        let conv = converter();
        let ctx = Ctx {
            conv: &conv,
            clock: &CaptureClock,
            held: None,
        };
        let mut c = correlator();
        let (req, resp) = (Role::Request as u32, Role::Response as u32);
        let qos = |ts, seq| record(EventKind::QosMismatch, ts, seq, 46, 0);
        let mut out = Vec::new();
        for seq in 0..10u32 {
            let t = seq as u64 * SEC;
            // Announced at 0, and again (evicted in between) at 4 and 7.
            let first = [0, 4, 7].contains(&seq);
            let beat = if first {
                record(EventKind::AssociationSeen, t, seq, req, 0)
            } else {
                record(EventKind::Heartbeat, t, seq, req | BEAT_INTERVAL, SEC)
            };
            c.on_record(&beat, &[], &ctx, &mut out);
            if first {
                c.on_record(&qos(t, seq), &[], &ctx, &mut out);
            }
            let answer = record(
                EventKind::Heartbeat,
                t + SEC / 100,
                seq,
                resp | BEAT_PAIRED,
                SEC / 100,
            );
            c.on_record(&answer, &[], &ctx, &mut out);
            c.advance(t + SEC / 2, &ctx, &mut out);
        }
        let actions: Vec<&str> = out.iter().map(|e| e.event.action.name()).collect();
        assert_eq!(actions, ["peer.up", "qos.mismatch"], "{out:#?}");
        assert_eq!(c.reannounced(), 2);
        let a = &c.slots.values().next().unwrap().assoc;
        assert_eq!(a.beats, 10, "every heartbeat counted, the re-announced too");
        assert!(c
            .named_counters()
            .any(|(name, n)| name == "associations_reannounced" && n == 2));
    }

    /// The announcement lost in a full ring buffer (or overtaken by the next heartbeat):
    /// the first heartbeat says peer.up, as offline would; the late announcement adds
    /// nothing and is no eviction.
    #[test]
    fn a_lost_announcement_is_said_at_the_first_heartbeat() {
        let conv = converter();
        let ctx = Ctx {
            conv: &conv,
            clock: &CaptureClock,
            held: None,
        };
        let mut c = correlator();
        let req = Role::Request as u32;
        let mut out = Vec::new();
        let beat = record(EventKind::Heartbeat, SEC, 1, req | BEAT_INTERVAL, SEC);
        c.on_record(&beat, &[], &ctx, &mut out);
        let late = record(EventKind::AssociationSeen, 0, 0, req, 0);
        c.on_record(&late, &[], &ctx, &mut out);
        let next = record(EventKind::Heartbeat, 2 * SEC, 2, req | BEAT_INTERVAL, SEC);
        c.on_record(&next, &[], &ctx, &mut out);
        let actions: Vec<&str> = out.iter().map(|e| e.event.action.name()).collect();
        assert_eq!(actions, ["peer.up"], "{out:#?}");
        assert_eq!(out[0].heartbeat.seq, Some(1));
        assert_eq!(c.reannounced(), 0);
    }

    /// Silences that fall due together are said in the order of their associations'
    /// keys, whatever order the associations were first seen in (and so wherever the
    /// correlator keeps them): live and offline must say the same in the same order.
    #[test]
    fn timers_due_together_fire_in_key_order() {
        let conv = converter();
        let ctx = Ctx {
            conv: &conv,
            clock: &CaptureClock,
            held: None,
        };
        let req = Role::Request as u32;
        let seen = |host: u8| {
            let mut r = record(EventKind::AssociationSeen, 0, 0, req, 0);
            r.key.orig[3] = host;
            r
        };
        let order = |hosts: &[u8]| {
            let mut c = correlator();
            let mut out = Vec::new();
            for &h in hosts {
                c.on_record(&seen(h), &[], &ctx, &mut out);
            }
            out.clear();
            c.advance(60 * SEC, &ctx, &mut out);
            out.iter()
                .map(|e| {
                    let ip = e.source.as_ref().map(|s| s.ip.clone()).unwrap_or_default();
                    (e.event.action.name(), ip)
                })
                .collect::<Vec<_>>()
        };
        let forward = order(&[3, 5, 7, 9]);
        assert_eq!(forward, order(&[9, 5, 3, 7]));
        let said: Vec<_> = forward.iter().map(|(a, _)| *a).collect();
        assert_eq!(
            said.iter().filter(|a| **a == "peer.down").count(),
            4,
            "{forward:?}"
        );
        // Each step (missed, then down) for all four in key order.
        let hosts: Vec<&str> = forward.iter().map(|(_, h)| h.as_str()).collect();
        let steps = ["10.0.0.3", "10.0.0.5", "10.0.0.7", "10.0.0.9"];
        assert_eq!(hosts, [steps, steps].concat(), "{forward:?}");
    }
}
