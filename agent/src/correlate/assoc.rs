//! One association's timing in userspace: the interval it keeps, whether a heartbeat
//! was late, when silence becomes `missed` and `peer.down`, and what happened before
//! an outage (the diagnosis' evidence).

use std::num::NonZeroU64;

use crate::event::Action;
use hbwatch_common::key::FlowKey;
use hbwatch_common::params::{ProtoParams, P_INTERVAL_IS_A_BOUND};

pub const MS: u64 = 1_000_000;

/// In-order interval samples kept for the median.
const SAMPLES: usize = 8;
/// Interval samples are kept in microseconds (u32: up to ~71 minutes, beyond any
/// heartbeat these protocols send; a longer one counts as that long): 32 bytes less per
/// association, a million times over. pcap timestamps are microseconds anyway.
const SAMPLE_UNIT_NS: u64 = 1_000;
/// Samples needed before the learned interval replaces the default (and `late` may fire).
pub const LEARNED_AFTER: usize = 3;
/// Anomalies remembered before an outage (network-loss evidence).
const HISTORY: usize = 16;
/// Recent gaps whose heartbeats may still arrive late.
const LOST_RUNS: usize = 4;
pub use hbwatch_common::params::{REPEAT_BURST, REPEAT_WINDOW_NS};

/// Alerts that repeat while one condition lasts (the same request failing again and
/// again): rate-limited, and folded into an open outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeating {
    Retry,
    Unanswered,
    OutOfOrder,
    Mismatch,
    /// MGCP RSIPs: a gateway sends one per endpoint group when it restarts.
    Rsip,
}

impl Repeating {
    pub const ALL: [Repeating; 5] = [
        Repeating::Retry,
        Repeating::Unanswered,
        Repeating::OutOfOrder,
        Repeating::Mismatch,
        Repeating::Rsip,
    ];
    pub const COUNT: usize = Repeating::ALL.len();

    /// The action it would have been sent as.
    pub fn action(self) -> Action {
        match self {
            Repeating::Retry => Action::HeartbeatRetry,
            Repeating::Unanswered => Action::HeartbeatUnanswered,
            Repeating::OutOfOrder => Action::HeartbeatOutOfOrder,
            Repeating::Mismatch => Action::HeartbeatMismatch,
            Repeating::Rsip => Action::HeartbeatRestart,
        }
    }
}

/// Folded alerts per [`Repeating`] kind. 32-bit counts (saturating): three of these are
/// in every association, and 4 billion folded alerts of one kind is past any meaning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Folded(pub [u32; Repeating::COUNT]);

impl Folded {
    pub fn add(&mut self, kind: Repeating, n: u64) {
        let sum = u64::from(self.0[kind as usize]).saturating_add(n);
        self.0[kind as usize] = u32::try_from(sum).unwrap_or(u32::MAX);
    }

    pub fn total(&self) -> u64 {
        self.0.iter().map(|&n| u64::from(n)).sum()
    }

    /// `{action: count}` of the kinds folded, for `heartbeat.folded`; `None` if none.
    pub fn by_action(&self) -> Option<std::collections::BTreeMap<&'static str, u64>> {
        let m: std::collections::BTreeMap<_, _> = Repeating::ALL
            .into_iter()
            .filter(|k| self.0[*k as usize] > 0)
            .map(|k| (k.action().name(), u64::from(self.0[k as usize])))
            .collect();
        (!m.is_empty()).then_some(m)
    }

    /// "57 heartbeat.retry, 1 heartbeat.unanswered", for messages.
    pub fn describe(&self) -> String {
        self.by_action()
            .unwrap_or_default()
            .iter()
            .map(|(a, n)| format!("{n} {a}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Heartbeats one gap counted lost: they may still arrive, late and out of order.
#[derive(Debug, Clone, Copy, Default)]
struct LostRun {
    first_seq: u32,
    count: u64,
    /// The last heartbeat before the gap.
    before_ns: u64,
    /// Those of the first 64 that arrived after all.
    arrived: u64,
}

/// A heartbeat counted lost that arrived after all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LateArrival {
    /// Interval from the heartbeat before it (estimated from the expected interval
    /// when others of the same gap are still missing in between).
    pub interval_ns: u64,
    pub expected_ns: u64,
}

/// An anomaly the datapath reported, remembered for the diagnosis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trouble {
    Gap,
    Late,
    Retry,
    Unanswered,
    OutOfOrder,
}

/// Why an association is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownCause {
    /// Nothing from the originator for `down_after` intervals.
    Silence,
    /// Requests kept coming but `down_after` in a row went unanswered.
    Unanswered,
}

/// The most likely cause of an outage (EVENTS.md `heartbeat.diagnosis`), as
/// `diagnosis::diagnose` names it; kept on the association from its `peer.down`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    pub cause: &'static str,
    pub evidence: Vec<String>,
    /// A cause seen before `cause` that it does not explain (network loss before a
    /// restart): both happened.
    pub earlier: Option<&'static str>,
}

/// What went wrong with an association: its recent troubles (for the diagnosis, late
/// arrivals and the rate limit) and its outages. Allocated at the first trouble (most
/// associations never have any): [`Assoc::trouble`] reads an empty one until then.
#[derive(Debug, Clone)]
pub struct Past {
    history: [(u64, Option<Trouble>); HISTORY],
    history_next: usize,
    lost_runs: [LostRun; LOST_RUNS],
    lost_runs_next: usize,
    /// Send times of the last alerts of each repeating kind (ring), for the rate limit.
    sent_alerts: [[u64; REPEAT_BURST]; Repeating::COUNT],
    sent_alerts_n: [usize; Repeating::COUNT],
    /// When the current outage's silence began (last heartbeat before it).
    pub outage_from_ns: u64,
    /// Sequence restart seen during the current outage: (new seq, previous seq).
    pub restart_in_outage: Option<(u32, u32)>,
    /// Heartbeats lost in a gap during/after the current outage.
    pub gap_in_outage: Option<u64>,
    /// The diagnosis made when the current outage began.
    pub down_diagnosis: Option<Box<Diagnosis>>,
    /// Causes of this association's outages, in order.
    pub diagnoses: Vec<&'static str>,
    /// QoS marking currently wrong: (seen, expected).
    pub qos_wrong: Option<(u8, u8)>,
    /// Last `qos.mismatch` per side (originator, responder): the marking seen and
    /// [`Assoc::reannounced`] then. The same marking again after an eviction is the
    /// datapath's fresh memory, not news.
    pub qos_reported: [Option<(u8, u16)>; 2],
    /// A late heartbeat's sequence: its answer is no mismatch.
    pub late_seq: Option<u32>,
    /// Alerts folded since the last `peer.up` (shown on it).
    pub folded: Folded,
    pub last_fold_ns: u64,
}

/// The trouble record of an association that had none.
static NO_TROUBLE: Past = Past {
    history: [(0, None); HISTORY],
    history_next: 0,
    lost_runs: [LostRun {
        first_seq: 0,
        count: 0,
        before_ns: 0,
        arrived: 0,
    }; LOST_RUNS],
    lost_runs_next: 0,
    sent_alerts: [[0; REPEAT_BURST]; Repeating::COUNT],
    sent_alerts_n: [0; Repeating::COUNT],
    outage_from_ns: 0,
    restart_in_outage: None,
    gap_in_outage: None,
    down_diagnosis: None,
    diagnoses: Vec::new(),
    qos_wrong: None,
    qos_reported: [None; 2],
    late_seq: None,
    folded: Folded([0; Repeating::COUNT]),
    last_fold_ns: 0,
};

impl Default for Past {
    fn default() -> Past {
        NO_TROUBLE.clone()
    }
}

#[derive(Debug, Clone)]
pub struct Assoc {
    pub key: FlowKey,
    pub ifindex: u32,
    pub rules: Rules,
    /// What the session announced, ns: the interval (SCCP RegisterAck) or, if
    /// `announced_is_cap`, an upper bound (GED-125 OPEN_REQ IdleTimeout). One field: no
    /// protocol announces both, and a million associations carry it.
    announced_ns: Option<NonZeroU64>,
    announced_is_cap: bool,
    /// In [`SAMPLE_UNIT_NS`].
    samples: [u32; SAMPLES],
    /// Samples taken (wraps back to SAMPLES past u16::MAX: still learned, same slots).
    nsamples: u16,
    /// Last request or one-way heartbeat from the originator.
    pub last_beat_ns: u64,
    pub last_seq: u32,
    /// Last answer from the responder (paired response).
    pub last_answer_ns: u64,
    /// `heartbeat.missed` was reported for the current silence.
    pub missed_reported: bool,
    pub down: Option<DownCause>,
    /// Requests in a row that went unanswered.
    pub unanswered_streak: u32,
    /// The responder's transport was seen alive while a request went unanswered.
    pub transport_alive: bool,
    /// A re-send happened since the last in-order heartbeat: its interval is no timing fact.
    pub retried: bool,
    /// Times the datapath announced this association again after forgetting it (its
    /// flow table evicted it): the datapath's per-flow memory starts over each time.
    /// Wraps: it tells one of the association's lives from the next (`qos_reported`).
    pub reannounced: u16,
    /// What went wrong ([`Self::trouble`]); allocated at the first trouble: most
    /// associations never have any, and it is most of an association's memory.
    past: Option<Box<Past>>,
    /// A timer entry for this association is in the queue.
    pub armed: bool,
    /// Requests and one-way heartbeats counted over the whole run.
    pub beats: u64,
    /// Counts for `heartbeat.summary` and the run's totals, when either is wanted
    /// ([`Assoc::keep_counts`]): 176 bytes a million associations need not carry when
    /// neither is.
    counts: Option<Box<Counts>>,
    /// Ended by FIN/RST.
    pub closed: bool,
    /// The first request still waiting for its answer (request/response associations),
    /// ns + 1: 8 bytes with the niche, not 16 ([`Self::waiting_since`]).
    waiting_since: Option<NonZeroU64>,
    /// Intervals of the current wait already counted unanswered.
    waiting_counted: u64,
    /// The packet being processed re-sent the last request (a `Retry` record came first).
    pub resent: bool,
}

/// What an association's timing reads of its protocol's rules ([`ProtoParams`]): 8
/// bytes of the 20, a million times over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    pub interval_ms: u32,
    pub tolerance_pct: u16,
    pub down_after: u8,
    /// `P_*` bits.
    pub flags: u8,
}

impl Rules {
    pub fn of(p: &ProtoParams) -> Rules {
        Rules {
            interval_ms: p.interval_ms,
            tolerance_pct: p.tolerance_pct,
            down_after: p.down_after,
            flags: p.flags,
        }
    }
}

/// An association's counts: this summary period's and the whole run's.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    /// Reset every `heartbeat.summary` period.
    pub period: Stats,
    /// The whole run (`analyze --summary`); its `count` is [`Assoc::beats`].
    pub run: Stats,
}

/// Counts for `heartbeat.summary`, reset every period.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub count: u64,
    pub lost: u64,
    pub rtt_n: u64,
    pub rtt_sum_ns: u64,
    pub rtt_min_ns: u64,
    pub rtt_max_ns: u64,
    pub outages: u64,
    /// Repeating alerts folded (rate limit, open outage).
    pub folded: Folded,
    /// Packets seen twice (SPAN/mirror copies): counted, never heartbeats or alerts.
    pub duplicates: u64,
}

impl Stats {
    /// Mean RTT, if any response was paired.
    pub fn rtt_avg_ns(&self) -> Option<u64> {
        self.rtt_sum_ns.checked_div(self.rtt_n)
    }

    pub fn rtt(&mut self, rtt_ns: u64) {
        if self.rtt_n == 0 || rtt_ns < self.rtt_min_ns {
            self.rtt_min_ns = rtt_ns;
        }
        self.rtt_max_ns = self.rtt_max_ns.max(rtt_ns);
        self.rtt_sum_ns = self.rtt_sum_ns.saturating_add(rtt_ns);
        self.rtt_n += 1;
    }
}

/// What a heartbeat's timing showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    Normal,
    /// Interval beyond the tolerance: (interval, expected).
    Late(u64, u64),
}

/// What the silence timer found when it fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Silence {
    /// Report `heartbeat.missed` (deadline, missed count).
    Missed(u64, u64),
    /// Report `peer.down` (deadline, missed count).
    Down(u64, u64),
}

/// `waiting_since` of a request sent at `now`: stored + 1 for the niche (the clock's
/// last nanosecond, where no deadline fires anyway, reads back one earlier).
fn since(now: u64) -> Option<NonZeroU64> {
    NonZeroU64::new(now.saturating_add(1))
}

impl Assoc {
    pub fn new(key: FlowKey, ifindex: u32, params: ProtoParams, now: u64, seq: u32) -> Assoc {
        Assoc {
            key,
            ifindex,
            rules: Rules::of(&params),
            announced_ns: None,
            announced_is_cap: false,
            samples: [0; SAMPLES],
            nsamples: 0,
            last_beat_ns: now,
            last_seq: seq,
            last_answer_ns: 0,
            missed_reported: false,
            down: None,
            unanswered_streak: 0,
            transport_alive: false,
            retried: false,
            reannounced: 0,
            past: None,
            armed: false,
            beats: 1,
            counts: None,
            closed: false,
            waiting_since: since(now),
            waiting_counted: 0,
            resent: false,
        }
    }

    /// Keeps counts from now on (summaries or totals wanted); the first heartbeat, if
    /// this one is new, counts in this period.
    pub fn keep_counts(&mut self) {
        if self.counts.is_none() {
            let mut c = Counts::default();
            c.period.count = u64::from(self.beats == 1);
            self.counts = Some(Box::new(c));
        }
    }

    /// This period's counts, and the run's (with its heartbeat count), if kept.
    pub fn counts(&self) -> Option<(Stats, Stats)> {
        let c = self.counts.as_deref()?;
        let run = Stats {
            count: self.beats,
            ..c.run
        };
        Some((c.period, run))
    }

    /// The run's counts (its heartbeat count alone if counts are not kept).
    pub fn run_counts(&self) -> Stats {
        self.counts().map(|(_, run)| run).unwrap_or(Stats {
            count: self.beats,
            ..Stats::default()
        })
    }

    /// Ends this summary period: its counts, reset for the next one.
    pub fn take_period(&mut self) -> Stats {
        self.counts
            .as_deref_mut()
            .map(|c| std::mem::take(&mut c.period))
            .unwrap_or_default()
    }

    /// Applies `f` to this period's counts and the run's, if kept.
    fn count(&mut self, f: impl Fn(&mut Stats)) {
        if let Some(c) = self.counts.as_deref_mut() {
            f(&mut c.period);
            f(&mut c.run);
        }
    }

    /// A packet seen twice (a mirror's copy).
    pub fn count_duplicate(&mut self) {
        self.count(|s| s.duplicates += 1);
    }

    /// Whether the interval was learned from traffic (enough in-order samples).
    pub fn learned(&self) -> bool {
        self.nsamples as usize >= LEARNED_AFTER
    }

    /// The interval announced on the session or configured (0: none), ns. SCCP only:
    /// it shares its field with the bound ([`Self::set_cap_ns`]).
    pub fn set_hint_ns(&mut self, ns: Option<u64>) {
        debug_assert!(!self.announced_is_cap, "a protocol announcing both");
        self.announced_ns = ns.and_then(NonZeroU64::new);
        self.announced_is_cap = false;
    }

    /// The upper bound announced on the session (0: none), ns. GED-125 only.
    pub fn set_cap_ns(&mut self, ns: Option<u64>) {
        debug_assert!(
            self.announced_is_cap || self.announced_ns.is_none(),
            "a protocol announcing both"
        );
        self.announced_ns = ns.and_then(NonZeroU64::new);
        self.announced_is_cap = true;
    }

    /// When the first request still waiting for its answer was sent, if one waits.
    pub fn waiting_since(&self) -> Option<u64> {
        self.waiting_since.map(|t| t.get() - 1)
    }

    pub fn clear_waiting_since(&mut self) {
        self.waiting_since = None;
    }

    /// Nothing waits for an answer any more.
    pub fn stop_waiting(&mut self) {
        self.waiting_since = None;
        self.waiting_counted = 0;
    }

    /// The interval this association keeps: the median of recent in-order samples once
    /// learned, else the announced or configured one (never below what was seen, so a
    /// slower-than-default association is not declared missing while learning).
    pub fn expected_ns(&self) -> u64 {
        if self.rules.flags & P_INTERVAL_IS_A_BOUND != 0 {
            // A bound, not a period: busy peers send more often, idle ones this often.
            return (self.rules.interval_ms as u64 * MS).max(MS);
        }
        let e = if self.learned() {
            let n = (self.nsamples as usize).min(SAMPLES);
            let mut s = self.samples;
            let s = &mut s[..n];
            s.sort_unstable();
            u64::from(s[n / 2]) * SAMPLE_UNIT_NS
        } else {
            let hint = self.announced_ns.filter(|_| !self.announced_is_cap);
            let base = hint.map_or(self.rules.interval_ms as u64 * MS, NonZeroU64::get);
            let seen = self.samples[..self.nsamples as usize].iter().copied().max();
            base.max(seen.map_or(0, |s| u64::from(s) * SAMPLE_UNIT_NS))
        };
        let e = match self.announced_ns {
            Some(cap) if self.announced_is_cap => e.min(cap.get()),
            _ => e,
        };
        e.max(MS)
    }

    /// Grace beyond a due time before a heartbeat counts as late or missed.
    ///
    /// Timing arithmetic saturates here and below: an interval can be anything a packet
    /// says (an SCCP RegisterAck of 2^32-1 s) or a capture's clock makes it (a corrupt
    /// timestamp), and overflowed, the deadlines wrapped around (found by the pcap fuzz
    /// target and the malformed suite). A saturated deadline never fires.
    pub fn grace_ns(&self) -> u64 {
        let g = self.expected_ns() as u128 * self.rules.tolerance_pct as u128 / 100;
        u64::try_from(g).unwrap_or(u64::MAX)
    }

    /// Silence after which `n` heartbeats are overdue beyond the grace.
    fn overdue_after(&self, n: u64) -> u64 {
        n.saturating_mul(self.expected_ns())
            .saturating_add(self.grace_ns())
    }

    /// Missed heartbeats for a silence of `silence_ns`.
    pub fn missed_for(&self, silence_ns: u64) -> u64 {
        silence_ns.saturating_sub(self.grace_ns()) / self.expected_ns()
    }

    /// Consecutive misses that mean `peer.down` (at least 2: one miss could be late).
    pub fn down_after(&self) -> u64 {
        (self.rules.down_after as u64).max(2)
    }

    /// The next moment the silence timer must look at this association, if any.
    /// A heartbeat counts as missed only once the one after it is overdue too: until
    /// then it may still arrive late.
    pub fn deadline(&self) -> Option<u64> {
        if self.down.is_some() {
            return None;
        }
        let n = if self.missed_reported {
            self.down_after()
        } else {
            2
        };
        Some(self.last_beat_ns.saturating_add(self.overdue_after(n)))
    }

    /// The silence timer at `now`: what to report, if anything.
    pub fn on_timer(&mut self, now: u64) -> Option<Silence> {
        let deadline = self.deadline()?;
        if now < deadline {
            return None;
        }
        let missed = self.missed_for(deadline - self.last_beat_ns);
        // Silence is the timer's to count: unanswered intervals start afresh after it.
        self.stop_waiting();
        self.unanswered_streak = 0;
        if missed >= self.down_after() {
            self.down = Some(DownCause::Silence);
            self.missed_reported = true;
            self.start_outage(self.last_beat_ns);
            return Some(Silence::Down(deadline, missed));
        }
        self.missed_reported = true;
        Some(Silence::Missed(deadline, missed))
    }

    /// A request or one-way heartbeat at `now`; `interval` = the datapath's in-order
    /// interval sample. Returns the silence it ended (if reported) and its timing.
    pub fn on_beat(&mut self, now: u64, seq: u32, interval: Option<u64>) -> Timing {
        if let Some(c) = self.counts.as_deref_mut() {
            c.period.count += 1;
        }
        let was_missing = self.missed_reported;
        self.missed_reported = false;
        self.last_beat_ns = now;
        self.last_seq = seq;
        let Some(sample) = interval else {
            return Timing::Normal;
        };
        let retried = std::mem::replace(&mut self.retried, false);
        let expected = self.expected_ns();
        let late = self.learned() && sample > expected.saturating_add(self.grace_ns());
        if !late || sample <= expected.saturating_mul(2) {
            // Late samples beyond two intervals are outages, not the interval.
            let unit = u32::try_from(sample / SAMPLE_UNIT_NS).unwrap_or(u32::MAX);
            self.samples[self.nsamples as usize % SAMPLES] = unit;
            self.nsamples = self.nsamples.checked_add(1).unwrap_or(SAMPLES as u16);
        }
        if late && !retried && !was_missing {
            self.note(now, Trouble::Late);
            return Timing::Late(sample, expected);
        }
        Timing::Normal
    }

    /// Remembers an anomaly at `now` for the diagnosis.
    pub fn note(&mut self, now: u64, t: Trouble) {
        let p = self.trouble_mut();
        p.history[p.history_next % HISTORY] = (now, Some(t));
        p.history_next += 1;
    }

    /// What went wrong with this association (an empty record if nothing did).
    pub fn trouble(&self) -> &Past {
        self.past.as_deref().unwrap_or(&NO_TROUBLE)
    }

    /// The trouble record to write to, allocated on first use.
    pub fn trouble_mut(&mut self) -> &mut Past {
        self.past.get_or_insert_with(Box::default)
    }

    /// A new outage from `since`: what the last one saw is forgotten.
    fn start_outage(&mut self, since: u64) {
        let p = self.trouble_mut();
        p.outage_from_ns = since;
        p.restart_in_outage = None;
        p.gap_in_outage = None;
        self.count_outage();
    }

    /// Anomalies within `window_ns` before `until`.
    pub fn troubles_before(&self, until: u64, window_ns: u64) -> Vec<Trouble> {
        let Some(p) = &self.past else {
            return Vec::new();
        };
        p.history
            .iter()
            .filter(|(t, k)| k.is_some() && *t <= until && until - *t <= window_ns)
            .filter_map(|(_, k)| *k)
            .collect()
    }

    /// Starts an outage caused by unanswered requests.
    pub fn down_unanswered(&mut self, since: u64) {
        self.down = Some(DownCause::Unanswered);
        self.start_outage(since);
    }

    fn count_outage(&mut self) {
        self.count(|s| s.outages += 1);
    }

    /// `n` heartbeats lost (gap, unanswered interval).
    pub fn count_lost(&mut self, n: u64) {
        self.count(|s| s.lost = s.lost.saturating_add(n));
    }

    /// A paired answer at `now` with round trip `rtt_ns`: nothing waits any more.
    pub fn answered(&mut self, now: u64, rtt_ns: u64) {
        self.count(|s| s.rtt(rtt_ns));
        self.last_answer_ns = now;
        self.unanswered_streak = 0;
        self.stop_waiting();
    }

    /// A new request (`next`), or a re-send of the last one, at `now`: the intervals
    /// gone by without an answer since the first request still waiting, not counted
    /// before. Each interval without an answer is a heartbeat lost. A quarter interval
    /// of slack: re-sends come one interval apart, give or take the sender's timer.
    /// A next request while one waits is one interval at least, whatever the clock says.
    pub fn unanswered_intervals(&mut self, now: u64, next: bool) -> u64 {
        let Some(since) = self.waiting_since() else {
            self.waiting_since = since(now);
            return 0;
        };
        let e = self.expected_ns();
        let mut n = now.saturating_sub(since).saturating_add(e / 4) / e;
        if next {
            n = n.max(self.waiting_counted + 1);
        }
        let new = n.saturating_sub(self.waiting_counted);
        self.waiting_counted = self.waiting_counted.max(n);
        new
    }

    /// A gap at `now`: `count` heartbeats from `first_seq` counted lost.
    pub fn gap(&mut self, first_seq: u32, count: u64) {
        let before_ns = self.last_beat_ns;
        let p = self.trouble_mut();
        p.lost_runs[p.lost_runs_next % LOST_RUNS] = LostRun {
            first_seq,
            count,
            before_ns,
            arrived: 0,
        };
        p.lost_runs_next += 1;
        self.count_lost(count);
    }

    /// An older heartbeat `seq` at `now`: if a recent gap counted it lost, it was late,
    /// not lost: uncounts it. Once per heartbeat.
    pub fn arrived_late(&mut self, seq: u32, now: u64) -> Option<LateArrival> {
        let expected = self.expected_ns();
        let run = self.past.as_mut()?.lost_runs.iter_mut().find(|r| {
            let k = seq.wrapping_sub(r.first_seq) as u64;
            k < r.count.min(64) && r.arrived & (1 << k) == 0
        })?;
        let k = seq.wrapping_sub(run.first_seq) as u64;
        run.arrived |= 1 << k;
        let all_arrived = run.arrived.count_ones() as u64 == run.count;
        let previous = run.before_ns.saturating_add(k.saturating_mul(expected));
        self.count(|s| s.lost = s.lost.saturating_sub(1));
        let p = self.trouble_mut();
        if let Some(g) = p.gap_in_outage.as_mut() {
            *g = g.saturating_sub(1);
        }
        p.late_seq = Some(seq);
        if all_arrived {
            // Nothing was lost after all: the gap is no loss evidence.
            self.renote(Trouble::Gap, Trouble::Late);
        }
        Some(LateArrival {
            interval_ns: now.saturating_sub(previous),
            expected_ns: expected,
        })
    }

    /// Whether an alert of `kind` at `now` goes out: at most [`REPEAT_BURST`] per kind
    /// within [`REPEAT_WINDOW_NS`], none while the association is down. Folded ones
    /// are counted.
    pub fn gate(&mut self, kind: Repeating, now: u64) -> bool {
        let i = kind as usize;
        let down = self.down.is_some();
        let p = self.trouble_mut();
        let ring = &mut p.sent_alerts[i];
        let n = p.sent_alerts_n[i];
        let oldest = ring[n % REPEAT_BURST];
        let room = n < REPEAT_BURST || now.saturating_sub(oldest) >= REPEAT_WINDOW_NS;
        if !down && room {
            ring[n % REPEAT_BURST] = now;
            p.sent_alerts_n[i] = n + 1;
            return true;
        }
        p.folded.add(kind, 1);
        p.last_fold_ns = now;
        self.count(|s| s.folded.add(kind, 1));
        false
    }

    /// Replaces the latest `from` anomaly remembered with `to`.
    fn renote(&mut self, from: Trouble, to: Trouble) {
        let Some(p) = self.past.as_mut() else {
            return;
        };
        let n = p.history_next;
        if let Some(i) = (0..n.min(HISTORY))
            .map(|back| (n - 1 - back) % HISTORY)
            .find(|&i| p.history[i].1 == Some(from))
        {
            p.history[i].1 = Some(to);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hbwatch_common::proto::Protocol;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn intervals_at_their_extremes_saturate_instead_of_overflowing() {
        // An SCCP RegisterAck announcing 2^32-1 s: the grace and deadline products
        // overflowed (panic in debug, wrapped deadlines in release).
        let mut a = Assoc::new(
            FlowKey::default(),
            1,
            Protocol::Sccp.default_params(),
            5 * SEC,
            0,
        );
        let e = u32::MAX as u64 * SEC;
        a.set_hint_ns(Some(e));
        let want = 5 * SEC as u128 + 2 * e as u128 + e as u128 * 30 / 100;
        assert_eq!(a.deadline().map(u128::from), Some(want));
        assert_eq!(a.on_timer(want as u64 - 1), None);
        // Beyond the clock's range: saturated, never fires.
        a.set_hint_ns(Some(u64::MAX / 2));
        assert_eq!(a.deadline(), Some(u64::MAX));
        assert_eq!(a.on_timer(u64::MAX - 1), None);
        // A capture's clock jumping by centuries between two heartbeats.
        let mut b = Assoc::new(FlowKey::default(), 1, Protocol::Mds.default_params(), 0, 0);
        b.keep_counts();
        for (i, t) in [SEC, u64::MAX / 2, u64::MAX - SEC].into_iter().enumerate() {
            b.on_beat(t, i as u32 + 1, Some(t - b.last_beat_ns));
            b.count(|s| s.rtt(u64::MAX / 2));
            assert!(b.deadline().is_some());
        }
        assert!(b.grace_ns() > 0);
    }

    #[test]
    fn learned_interval_keeps_microseconds_and_saturates_long_ones() {
        // Samples are kept in microseconds: a ns-precision interval learns to the µs.
        let mut a = rudp();
        let interval = 2 * SEC + 123_456;
        for i in 1..=3u64 {
            a.on_beat(i * interval, 100 + i as u32, Some(interval));
        }
        assert!(a.learned());
        assert_eq!(a.expected_ns(), 2 * SEC + 123_000);
        // An interval beyond a u32 of microseconds (~71.6 min) counts as that long, not
        // as what is left after wrapping (which would make every next heartbeat late).
        let mut b = rudp();
        let long = 72 * 60 * SEC;
        for i in 1..=3u64 {
            b.on_beat(i * long, 100 + i as u32, Some(long));
        }
        assert_eq!(b.expected_ns(), u64::from(u32::MAX) * 1_000);
    }

    fn rudp() -> Assoc {
        let mut a = Assoc::new(
            FlowKey::default(),
            1,
            Protocol::Cs1000Rudp.default_params(),
            0,
            100,
        );
        a.keep_counts();
        a
    }

    fn run(a: &Assoc) -> Stats {
        a.counts().expect("kept").1
    }

    #[test]
    fn repeating_alerts_go_out_three_a_minute_and_none_while_down() {
        let mut a = rudp();
        let sent: Vec<bool> = (1..=6).map(|i| a.gate(Repeating::Retry, i * SEC)).collect();
        assert_eq!(sent, [true, true, true, false, false, false]);
        // Another kind has its own budget; the first retry's minute ends at 61 s.
        assert!(a.gate(Repeating::Unanswered, 6 * SEC));
        assert!(!a.gate(Repeating::Retry, 60 * SEC + SEC - 1));
        assert!(a.gate(Repeating::Retry, 61 * SEC));
        a.down_unanswered(62 * SEC);
        assert!(!a.gate(Repeating::Mismatch, 63 * SEC));
        assert_eq!(a.trouble().folded.0, [4, 0, 0, 1, 0]);
        assert_eq!(run(&a).folded.total(), 5);
        assert_eq!(
            a.trouble().folded.describe(),
            "1 heartbeat.mismatch, 4 heartbeat.retry"
        );
    }

    #[test]
    fn unanswered_intervals_follow_the_clock_and_count_each_next_request() {
        let mut a = rudp();
        // Re-sends one interval apart, give or take the sender's timer.
        assert_eq!(a.unanswered_intervals(800 * MS, false), 1);
        assert_eq!(a.unanswered_intervals(1900 * MS, false), 1);
        assert_eq!(a.unanswered_intervals(2100 * MS, false), 0);
        // A TCP re-send 200 ms later is no interval; a next request is one at least.
        assert_eq!(a.unanswered_intervals(2300 * MS, true), 1);
        a.answered(2400 * MS, MS);
        assert_eq!(a.waiting_since(), None);
        assert_eq!(a.unanswered_intervals(3 * SEC, true), 0);
        assert_eq!(a.waiting_since(), Some(3 * SEC));
    }

    #[test]
    fn a_heartbeat_counted_lost_that_arrives_is_uncounted_once() {
        let mut a = rudp();
        a.on_beat(SEC, 101, Some(SEC));
        a.gap(102, 2);
        assert_eq!(run(&a).lost, 2);
        let late = a.arrived_late(102, 3_500 * MS).expect("in the gap");
        // From seq 101 (1 s) to 3.5 s.
        assert_eq!(late.interval_ns, 2_500 * MS);
        assert_eq!(run(&a).lost, 1);
        assert_eq!(a.trouble().late_seq, Some(102));
        assert_eq!(a.arrived_late(102, 3_600 * MS), None, "once");
        assert_eq!(a.arrived_late(99, 3_600 * MS), None, "never counted lost");
        // The second of the gap: estimated one interval after the first was due.
        let late = a.arrived_late(103, 3_600 * MS).unwrap();
        assert_eq!(late.interval_ns, 1_600 * MS);
        assert_eq!(run(&a).lost, 0);
    }
}

#[cfg(test)]
mod counts_tests {
    use super::*;
    use hbwatch_common::proto::Protocol;

    #[test]
    fn counts_are_kept_only_when_asked_and_split_into_periods() {
        let new = || Assoc::new(FlowKey::default(), 1, Protocol::Mds.default_params(), 0, 1);
        let mut quiet = new();
        quiet.on_beat(MS * 100, 2, Some(MS * 100));
        quiet.count_lost(3);
        assert!(quiet.counts().is_none(), "nothing kept, nothing allocated");
        assert_eq!(quiet.beats, 1, "the correlator counts beats itself");

        let mut a = new();
        a.keep_counts();
        a.on_beat(MS * 100, 2, Some(MS * 100));
        a.count_lost(3);
        a.answered(MS * 101, MS);
        a.beats += 1;
        let (period, run) = a.counts().unwrap();
        assert_eq!((period.count, period.lost, period.rtt_n), (2, 3, 1));
        assert_eq!((run.count, run.lost), (2, 3));
        assert_eq!(a.take_period().count, 2);
        let (period, run) = a.counts().unwrap();
        assert_eq!((period.count, period.lost), (0, 0), "a new period");
        assert_eq!((run.count, run.lost), (2, 3), "the run goes on");
    }
}
