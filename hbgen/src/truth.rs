//! Ground truth: which events (EVENTS.md actions) the generated capture should cause,
//! on which association, and around when. Written next to the capture as
//! `<capture>.truth.json` so tests and benchmarks can score recall and false positives.
//!
//! Each model reports what it did to a [`Tracker`] per association (heartbeat seen by
//! the probe, heartbeat hidden by a fault, restart, close); the tracker turns silences
//! into `heartbeat.missed` / `peer.down` / `peer.up` with the protocol's own timers
//! (`ProtoParams::defaults`: tolerance and down threshold), and sequence jumps into
//! `heartbeat.gap`. Every expectation names the fault that caused it.

use std::collections::BTreeMap;

use hbwatch_common::params::{DSCP_ANY, P_SEQ_IS_AN_ID};
use hbwatch_common::proto::Protocol;
use serde::Serialize;
use serde_json::{json, Value};

use super::scenario::Fault;
use super::Ep;
use crate::rfc3339_micros;

/// The truth sidecar, one per generated capture.
#[derive(Debug, Clone, Serialize)]
pub struct Truth {
    /// Format version of this file.
    pub version: u32,
    pub scenario: String,
    pub seed: u64,
    pub start: String,
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    pub associations: Vec<TruthAssociation>,
    pub faults: Vec<TruthFault>,
    pub generated: Generated,
    /// Sorted by `at_ns`.
    pub expected: Vec<Expected>,
}

/// An EVENTS.md association (originator -> responder) the capture contains.
#[derive(Debug, Clone, Serialize)]
pub struct TruthAssociation {
    /// The scenario association it belongs to, and which part (e.g. `primary`, `a-to-b`).
    pub scenario_association: String,
    pub part: String,
    pub protocol: &'static str,
    pub transport: &'static str,
    pub source: Endpoint,
    pub destination: Endpoint,
    pub interval_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TruthFault {
    pub index: usize,
    pub kind: &'static str,
    pub association: String,
    pub target: &'static str,
    pub at: String,
    pub at_ns: u64,
    /// The scenario's fault, as parsed (debug form).
    pub detail: String,
}

/// Frame counts, by message label (e.g. `ged125.heartbeat_req`, `ordinary`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Generated {
    pub frames: u64,
    pub heartbeat_frames: u64,
    pub ordinary_frames: u64,
    pub by_message: BTreeMap<String, u64>,
    /// Sent onto an interface: how far (ms) the sender fell behind the frames' timestamps
    /// at worst. Behind by more than a protocol's tolerance, the timing was not the
    /// scenario's (the host was too busy to keep the pace).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_behind_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub ip: String,
    pub port: u16,
}

impl From<Ep> for Endpoint {
    fn from(e: Ep) -> Endpoint {
        Endpoint {
            ip: e.ip.to_string(),
            port: e.port,
        }
    }
}

/// One event the agent should (or may) report.
#[derive(Debug, Clone, Serialize)]
pub struct Expected {
    /// `event.action`.
    pub action: &'static str,
    /// `event.kind`: `alert` or `event`.
    pub kind: &'static str,
    /// `false`: acceptable but not required (e.g. `heartbeat.late` for the first
    /// heartbeat after a loss burst; thresholds within jitter).
    pub required: bool,
    pub protocol: &'static str,
    pub transport: &'static str,
    pub source: Endpoint,
    pub destination: Endpoint,
    /// Most likely `@timestamp`.
    pub at: String,
    pub at_ns: u64,
    /// The event's `@timestamp` should fall in `[from, to]` (Unix ns).
    pub window_ns: [u64; 2],
    /// Index of the scenario fault that causes it (none: lifecycle).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault_kind: Option<&'static str>,
    /// Expected `heartbeat.diagnosis`, where the evidence settles it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<&'static str>,
    /// Expected event fields, dotted (`heartbeat.seq`, `sip.status`, ...).
    pub fields: BTreeMap<&'static str, Value>,
}

/// An association as EVENTS.md names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssocKey {
    pub protocol: Protocol,
    pub tcp: bool,
    pub src: Ep,
    pub dst: Ep,
}

/// Why something happened: the fault, and the diagnosis it implies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cause {
    pub fault: Option<(usize, &'static str)>,
    pub diagnosis: Option<&'static str>,
    /// The heartbeat was sent late on purpose: `heartbeat.late` is required.
    pub late: bool,
}

impl Cause {
    pub fn of(f: &Fault) -> Cause {
        use super::scenario::FaultKind::*;
        let diagnosis = match f.kind {
            OneWayLoss { .. } => Some("one-way-loss"),
            Silence { .. } => Some("path-interruption"),
            Restart { .. } => Some("peer-restart"),
            Unanswered { .. } => Some("peer-unresponsive"),
            _ => None,
        };
        Cause {
            fault: Some((f.index, f.kind.name())),
            diagnosis,
            late: matches!(f.kind, Late { .. }),
        }
    }
}

/// What the models collect while generating.
#[derive(Debug, Default)]
pub struct Collector {
    pub start_ns: u64,
    pub end_ns: u64,
    pub associations: Vec<TruthAssociation>,
    pub expected: Vec<Expected>,
}

impl Collector {
    #[allow(clippy::too_many_arguments)]
    pub fn expect(
        &mut self,
        key: &AssocKey,
        action: &'static str,
        at: u64,
        window: (u64, u64),
        required: bool,
        cause: Option<Cause>,
        fields: Vec<(&'static str, Value)>,
    ) {
        let kind = match action {
            "peer.up" | "sip.registered" | "sip.unregistered" => "event",
            _ => "alert",
        };
        let abs = |t: u64| self.start_ns + t;
        self.expected.push(Expected {
            action,
            kind,
            required,
            protocol: key.protocol.name(),
            transport: if key.tcp { "tcp" } else { "udp" },
            source: key.src.into(),
            destination: key.dst.into(),
            at: rfc3339_micros(abs(at) as i128),
            at_ns: abs(at),
            window_ns: [abs(window.0), abs(window.1.max(window.0))],
            fault: cause.and_then(|c| c.fault.map(|f| f.0)),
            fault_kind: cause.and_then(|c| c.fault.map(|f| f.1)),
            diagnosis: cause.and_then(|c| c.diagnosis),
            fields: fields.into_iter().collect(),
        });
    }

    pub fn association(&mut self, name: &str, part: &str, key: &AssocKey, interval_ns: u64) {
        self.associations.push(TruthAssociation {
            scenario_association: name.to_string(),
            part: part.to_string(),
            protocol: key.protocol.name(),
            transport: if key.tcp { "tcp" } else { "udp" },
            source: key.src.into(),
            destination: key.dst.into(),
            interval_ms: interval_ns as f64 / 1e6,
        });
    }
}

/// Follows one association as the probe sees it and turns what the model did into
/// expected events. Times are ns from the capture start.
#[derive(Debug, Clone)]
pub struct Tracker {
    pub key: AssocKey,
    pub interval_ns: u64,
    tolerance: f64,
    down_after: u32,
    expected_dscp: u8,
    /// Heartbeats the datapath waits for before announcing (`ProtoParams::confirm_beats`).
    confirm_beats: u32,
    /// Whether heartbeat numbers count (a jump is a gap), or only identify (MGCP).
    counts: bool,
    /// Whether the generic events (peer.up, missed, down, late) are required. SIP says
    /// what matters with `sip.*` events; there the generic ones are only acceptable.
    required: bool,
    last: Option<(u64, Option<u32>)>,
    pending: Option<Cause>,
    restart: Option<Cause>,
    closed: bool,
    /// Per direction (originator, responder): DSCP already reported as wrong.
    qos_reported: [Option<u8>; 2],
    /// Heartbeats seen by the probe (SCCP numbers keepalives by this count).
    pub seen_count: u32,
    /// Times of the repeating alerts expected, per action: the agent sends at most
    /// `REPEAT_BURST` per `REPEAT_WINDOW_NS` and folds the rest.
    alerts: Vec<(&'static str, u64)>,
    /// Down because re-sent requests went unanswered `down_after` intervals: since when.
    unanswered_down: Option<(u64, Option<Cause>)>,
    /// Requests in a row reported unanswered since the last answer.
    unanswered_run: u32,
}

impl Tracker {
    pub fn new(key: AssocKey, interval_ns: u64, required: bool) -> Tracker {
        let p = key.protocol.default_params();
        Tracker {
            key,
            interval_ns,
            tolerance: p.tolerance_pct as f64 / 100.0,
            down_after: p.down_after as u32,
            expected_dscp: p.expected_dscp,
            confirm_beats: p.confirm_beats.max(1) as u32,
            counts: p.flags & P_SEQ_IS_AN_ID == 0,
            required,
            last: None,
            pending: None,
            restart: None,
            closed: false,
            qos_reported: [None; 2],
            seen_count: 0,
            alerts: Vec::new(),
            unanswered_down: None,
            unanswered_run: 0,
        }
    }

    /// Whether the agent sends a repeating alert `action` at `at` (correlate::assoc's
    /// rate limit; none while down). Folded ones are acceptable, not required, so the
    /// truth does not hang on the limit's exact edges.
    fn sends(&mut self, action: &'static str, at: u64) -> bool {
        use hbwatch_common::params::{REPEAT_BURST, REPEAT_WINDOW_NS};
        if self.unanswered_down.is_some() {
            return false;
        }
        let recent = self
            .alerts
            .iter()
            .filter(|(a, t)| *a == action && at.saturating_sub(*t) < REPEAT_WINDOW_NS)
            .count();
        if recent >= REPEAT_BURST {
            return false;
        }
        self.alerts.push((action, at));
        true
    }

    /// The answer to a request arrived at `at`: recovery if unanswered re-sends had
    /// taken the association down.
    pub fn answered(&mut self, c: &mut Collector, at: u64) {
        self.unanswered_run = 0;
        if let Some((since, cause)) = self.unanswered_down.take() {
            c.expect(
                &self.key,
                "peer.up",
                at,
                (at, at),
                self.required,
                cause,
                vec![("heartbeat.downtime_ms", json!((at - since) / 1_000_000))],
            );
        }
    }

    /// A heartbeat was due but the probe will not see it.
    pub fn hidden(&mut self, cause: Cause) {
        self.pending.get_or_insert(cause);
    }

    /// The next heartbeat is late on purpose.
    pub fn delayed(&mut self, cause: Cause) {
        let c = self.pending.get_or_insert(cause);
        c.late = true;
    }

    /// The sequence restarts with the next heartbeat.
    pub fn restarted(&mut self, cause: Cause) {
        self.restart = Some(cause);
        self.pending.get_or_insert(cause);
    }

    /// The probe sees a heartbeat (request or one-way) at `at`.
    pub fn seen(&mut self, c: &mut Collector, at: u64, seq: Option<u32>) {
        self.seen_count += 1;
        if self.seen_count == self.confirm_beats {
            // Announced once enough plausible heartbeats came (generated ones all are).
            let fields = seq.map(|s| vec![("heartbeat.seq", json!(s))]);
            c.expect(
                &self.key,
                "peer.up",
                at,
                (at, at),
                self.required,
                None,
                fields.unwrap_or_default(),
            );
        }
        let Some((last_t, last_seq)) = self.last else {
            self.last = Some((at, seq));
            return;
        };
        let cause = self.pending.take();
        self.silence(c, last_t, at, true, cause);
        if let Some(rc) = self.restart.take() {
            let mut fields = vec![];
            if let Some(s) = seq {
                fields.push(("heartbeat.seq", json!(s)));
            }
            if let Some(p) = last_seq {
                fields.push(("heartbeat.previous_seq", json!(p)));
            }
            c.expect(
                &self.key,
                "heartbeat.restart",
                at,
                (at, at),
                true,
                Some(rc),
                fields,
            );
        } else if let (Some(s), Some(ls), true) = (seq, last_seq, self.counts) {
            let jump = s.wrapping_sub(ls);
            if jump > 1 && jump < 1 << 30 {
                c.expect(
                    &self.key,
                    "heartbeat.gap",
                    at,
                    (at, at),
                    true,
                    cause,
                    vec![
                        ("heartbeat.seq", json!(s)),
                        ("heartbeat.expected_seq", json!(ls.wrapping_add(1))),
                        ("heartbeat.lost", json!(jump - 1)),
                    ],
                );
            }
        }
        self.last = Some((at, seq));
    }

    /// Silence from `last` to `until` (a heartbeat seen at `until` when `resumed`, else
    /// the end of the capture): missed, down, and on resumption up and late.
    fn silence(
        &self,
        c: &mut Collector,
        last: u64,
        until: u64,
        resumed: bool,
        cause: Option<Cause>,
    ) {
        let i = self.interval_ns as f64;
        let tol = self.tolerance * i;
        // Jitter in the generator stays far below this; closer than this is a coin toss.
        let margin = i / 50.0;
        let gap = until.saturating_sub(last) as f64;
        let deadline = last + (i + tol) as u64;
        if gap <= i + tol - margin {
            return;
        }
        let clear = gap > i + tol + margin;
        let late_on_purpose = cause.is_some_and(|c| c.late);
        // Heartbeats k = 1.. were due at last + k*i; each is missed once tol has passed.
        let missed = ((gap - tol) / i).ceil() as u64 - 1;
        // The agent says `missed` once the heartbeat after the first missed one is overdue
        // too (correlate::assoc::deadline), and only if that is not already `peer.down`.
        let said = self.down_after > 2 && gap > 2.0 * i + tol + margin;
        c.expect(
            &self.key,
            "heartbeat.missed",
            deadline,
            (deadline.saturating_sub(margin as u64), until),
            clear && said && !late_on_purpose && self.required,
            cause,
            vec![
                ("heartbeat.missed", json!(missed.max(1))),
                ("heartbeat.expected_interval_ms", json!(i / 1e6)),
            ],
        );
        let down_at = last as f64 + self.down_after as f64 * i + tol;
        let down = missed >= self.down_after as u64;
        if down {
            let sure = until as f64 - down_at > margin && self.required;
            c.expect(
                &self.key,
                "peer.down",
                down_at as u64,
                ((down_at - margin) as u64, until),
                sure,
                cause,
                vec![("heartbeat.missed", json!(self.down_after))],
            );
        }
        if !resumed {
            return;
        }
        if down {
            c.expect(
                &self.key,
                "peer.up",
                until,
                (until, until),
                self.required,
                cause,
                vec![("heartbeat.downtime_ms", json!((gap / 1e6).round()))],
            );
        }
        c.expect(
            &self.key,
            "heartbeat.late",
            until,
            (until, until),
            clear && late_on_purpose && self.required,
            cause,
            vec![
                ("heartbeat.interval_ms", json!((gap / 1e6).round())),
                ("heartbeat.expected_interval_ms", json!(i / 1e6)),
            ],
        );
    }

    /// A request of this association went unanswered; the probe knows at `reveal`.
    pub fn unanswered(
        &mut self,
        c: &mut Collector,
        seq: u32,
        sent: u64,
        reveal: u64,
        required: bool,
        cause: Option<Cause>,
    ) {
        // The agent is down once `down_after` (at least 2) in a row went unanswered;
        // the alerts after that are folded into the outage.
        // (SIP's unanswered requests are the SIP tracker's: never folded.)
        self.unanswered_run += 1;
        let folded = self.key.protocol != Protocol::Sip
            && (self.unanswered_run > self.down_after.max(2)
                || !self.sends("heartbeat.unanswered", reveal));
        let required = !folded && required;
        c.expect(
            &self.key,
            "heartbeat.unanswered",
            reveal,
            (sent, reveal),
            required,
            cause,
            vec![("heartbeat.seq", json!(seq))],
        );
    }

    /// The probe sees request `seq`, first sent at `first`, sent again at `at` (attempt
    /// 2 = first re-send). Each interval without an answer is a heartbeat lost;
    /// `down_after` of them (at least 2) are `peer.down` while the requests go on.
    #[allow(clippy::too_many_arguments)]
    pub fn retry(
        &mut self,
        c: &mut Collector,
        at: u64,
        seq: u32,
        attempt: u32,
        first: u64,
        cause: Option<Cause>,
    ) {
        let required = self.sends("heartbeat.retry", at);
        c.expect(
            &self.key,
            "heartbeat.retry",
            at,
            (at, at),
            required,
            cause,
            vec![
                ("heartbeat.seq", json!(seq)),
                ("heartbeat.attempt", json!(attempt)),
            ],
        );
        let i = self.interval_ns;
        let unanswered = (at.saturating_sub(first) + i / 4) / i;
        if self.unanswered_down.is_some() || unanswered < self.down_after.max(2) as u64 {
            return;
        }
        // Requests arrive, answers do not: one direction fails, whatever the fault.
        let cause = cause.map(|c| Cause {
            diagnosis: match c.fault.map(|f| f.1) {
                Some("one-way-loss" | "retry" | "unanswered") => Some("one-way-loss"),
                _ => None,
            },
            ..c
        });
        c.expect(
            &self.key,
            "peer.down",
            at,
            (at, at),
            self.required,
            cause,
            vec![("heartbeat.missed", json!(unanswered))],
        );
        self.unanswered_down = Some((first, cause));
    }

    /// A heartbeat packet of this association with DSCP `dscp`, sent by the originator
    /// (`from_orig`) or the responder.
    pub fn dscp(
        &mut self,
        c: &mut Collector,
        at: u64,
        from_orig: bool,
        dscp: u8,
        cause: Option<Cause>,
    ) {
        if self.expected_dscp == DSCP_ANY {
            return;
        }
        let slot = &mut self.qos_reported[usize::from(!from_orig)];
        if dscp == self.expected_dscp {
            *slot = None;
            return;
        }
        if *slot == Some(dscp) {
            return;
        }
        *slot = Some(dscp);
        c.expect(
            &self.key,
            "qos.mismatch",
            at,
            (at, at),
            true,
            cause,
            vec![
                ("heartbeat.dscp", json!(dscp)),
                ("heartbeat.expected_dscp", json!(self.expected_dscp)),
            ],
        );
    }

    /// FIN or RST on the session; nothing is expected after it.
    pub fn closed(
        &mut self,
        c: &mut Collector,
        at: u64,
        reset: bool,
        by_source: bool,
        cause: Option<Cause>,
    ) {
        self.closed = true;
        c.expect(
            &self.key,
            "session.closed",
            at,
            (at, at),
            true,
            cause,
            vec![
                ("heartbeat.reset", json!(reset)),
                (
                    "heartbeat.closed_by",
                    json!(if by_source { "source" } else { "destination" }),
                ),
            ],
        );
    }

    /// End of the capture: a silence still running counts too.
    pub fn finish(&mut self, c: &mut Collector, end: u64) {
        if self.closed {
            return;
        }
        if let Some((last, _)) = self.last {
            let cause = self.pending.take();
            self.silence(c, last, end, false, cause);
        }
    }
}
