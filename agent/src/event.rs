//! The JSON event contract (shared/EVENTS.md, docs/EVENTS.md): one object per line,
//! Elastic Common Schema where ECS has the field (`ecs.version`), `heartbeat.*` and
//! `sip.*` for the rest.

use serde::ser::SerializeStruct;
use serde::Serialize;

/// The ECS release the events follow (`ecs.version`): the one whose field definitions
/// the conformance test checks against (agent/tests/data/ecs/).
pub const ECS_VERSION: &str = "9.4.0";

/// Contract version of docs/EVENTS.md (its changelog says what changed).
pub const CONTRACT_VERSION: &str = "2";

/// `log.level` and its `event.severity` number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    Warning,
    Error,
    Critical,
}

impl Level {
    pub const fn severity(self) -> u8 {
        match self {
            Level::Info => 2,
            Level::Warning => 5,
            Level::Error => 7,
            Level::Critical => 9,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    pub ecs: Ecs,
    pub event: EventMeta,
    pub log: Log,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<Endpoint>,
    /// ECS `related.ip`: both ends of the association, for one search over all events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub related: Option<Related>,
    pub observer: Observer,
    #[serde(skip_serializing_if = "HeartbeatFields::is_empty")]
    pub heartbeat: HeartbeatFields,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sip: Option<SipFields>,
    /// `hbwatch locate`: the segment between two vantage points.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathFields>,
    pub message: String,
}

/// `path.*`: what `hbwatch locate` found between two vantage points (captures).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PathFields {
    /// The upstream vantage (sees the heartbeats first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// `path.route_changed`: `ttl-changed`, `forged-reset`, `forged-fin`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// Heartbeats seen at both vantages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched: Option<u64>,
    /// Seen at `to`, never at `from`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unmatched: Option<u64>,
    /// Seen at `from`, due at `to` outside its capture: not counted lost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outside_window: Option<u64>,
    /// One-way delay `from` -> `to` after the clock offset, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<DelayMs>,
    /// `to`'s clock minus `from`'s, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_offset_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_offset_samples: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_offset_spread_ms: Option<f64>,
    /// `two-way` (path delay cancelled) or `one-way` (delay counted as 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_offset_method: Option<&'static str>,
}

/// One-way delays of a segment, ms.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct DelayMs {
    pub min: f64,
    pub avg: f64,
    pub max: f64,
}

/// SIP registration and OPTIONS detail under `sip.*`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SipFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// Address of record (To URI of the REGISTER).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aor: Option<String>,
    /// Device name (Cisco: the `+u.sip.instance`/Contact user or the AOR user).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The transaction's CSeq, as Packetbeat's `sip.cseq.code`/`sip.cseq.method`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cseq: Option<CSeq>,
    /// Granted registration lifetime, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<u32>,
    /// Response status code (Packetbeat's `sip.code`; contract v1's `sip.status`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// Response reason phrase as sent (Packetbeat's `sip.status`; v1's `sip.reason`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// `sip.register_failed`: the answer rejected the credentials the REGISTER carried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials_rejected: Option<bool>,
    /// `sip.register_failed` for rejected credentials: rejections in a row from this
    /// source address toward this registrar.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejections: Option<u64>,
}

/// `sip.cseq`: sequence number and method.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CSeq {
    pub code: u32,
    pub method: &'static str,
}

/// `ecs.*`.
#[derive(Debug, Clone, Serialize)]
pub struct Ecs {
    pub version: &'static str,
}

/// `related.*`.
#[derive(Debug, Clone, Serialize)]
pub struct Related {
    pub ip: Vec<String>,
}

/// Round-trip times of a summary period, microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct RttUs {
    pub min: u64,
    pub avg: u64,
    pub max: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventMeta {
    /// `alert`, `event` or `metric`.
    pub kind: &'static str,
    pub category: [&'static str; 1],
    /// ECS `event.type`, from the action ([`Action::ecs_type`]).
    #[serde(rename = "type")]
    pub types: &'static [&'static str],
    pub action: Action,
    /// `hbwatch.agent` (the agent itself) or `hbwatch.heartbeat` (what it watches).
    pub dataset: &'static str,
    pub module: &'static str,
    /// ECS `event.outcome` where the action is one: a registration accepted or refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<&'static str>,
    pub severity: u8,
}

/// Expands the action table into [`Action`]: each action's `event.action` string and
/// `event.kind`, written once.
macro_rules! action_table {
    ($($(#[$doc:meta])* $variant:ident = $name:literal, $kind:literal;)+) => {
        /// Every `event.action` the agent sends (docs/EVENTS.md, Actions).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Action {
            $($(#[$doc])* $variant,)+
        }

        impl Action {
            pub const ALL: &'static [Action] = &[$(Action::$variant),+];

            /// `event.action`.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Action::$variant => $name,)+
                }
            }

            /// `event.kind`: `alert`, `event` or `metric`.
            pub const fn kind(self) -> &'static str {
                match self {
                    $(Action::$variant => $kind,)+
                }
            }
        }
    };
}

action_table! {
    PeerUp = "peer.up", "event";
    PeerDown = "peer.down", "alert";
    HeartbeatLate = "heartbeat.late", "alert";
    HeartbeatMissed = "heartbeat.missed", "alert";
    HeartbeatSummary = "heartbeat.summary", "metric";
    HeartbeatGap = "heartbeat.gap", "alert";
    HeartbeatRetry = "heartbeat.retry", "alert";
    HeartbeatUnanswered = "heartbeat.unanswered", "alert";
    HeartbeatRestart = "heartbeat.restart", "alert";
    HeartbeatOutOfOrder = "heartbeat.out_of_order", "alert";
    HeartbeatMismatch = "heartbeat.mismatch", "alert";
    QosMismatch = "qos.mismatch", "alert";
    SessionClosed = "session.closed", "alert";
    SipRegistered = "sip.registered", "event";
    SipUnregistered = "sip.unregistered", "event";
    SipRegisterFailed = "sip.register_failed", "alert";
    SipExpired = "sip.expired", "alert";
    SipOptionsFailed = "sip.options_failed", "alert";
    /// `hbwatch locate`: heartbeats seen at one vantage point and never at the next.
    PathLoss = "path.loss", "alert";
    PathQosChanged = "path.qos_changed", "alert";
    PathRouteChanged = "path.route_changed", "alert";
    PathSummary = "path.summary", "metric";
    AgentStarted = "agent.started", "event";
    AgentStopped = "agent.stopped", "event";
    AgentEventsLost = "agent.events_lost", "alert";
    AgentReloaded = "agent.reloaded", "event";
    AgentReloadFailed = "agent.reload_failed", "alert";
    AgentInterfaceLost = "agent.interface_lost", "alert";
    AgentInterfaceAttached = "agent.interface_attached", "event";
    AgentAttachFailed = "agent.attach_failed", "alert";
    AgentFlowTableFull = "agent.flow_table_full", "alert";
}

impl Action {
    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL.iter().copied().find(|a| a.name() == name)
    }

    /// The agent's own events (`agent.*`), as opposed to what it watches.
    pub const fn is_agent(self) -> bool {
        matches!(
            self,
            Action::AgentStarted
                | Action::AgentStopped
                | Action::AgentEventsLost
                | Action::AgentReloaded
                | Action::AgentReloadFailed
                | Action::AgentInterfaceLost
                | Action::AgentInterfaceAttached
                | Action::AgentAttachFailed
        )
    }

    /// ECS `event.type` (category `network` allows access, allowed, connection, denied,
    /// end, info, protocol, start).
    pub const fn ecs_type(self) -> &'static [&'static str] {
        match self {
            Action::PeerUp => &["connection", "start"],
            Action::PeerDown | Action::SessionClosed => &["connection", "end"],
            Action::SipRegistered => &["protocol", "start"],
            Action::SipUnregistered | Action::SipExpired => &["protocol", "end"],
            Action::SipRegisterFailed => &["protocol", "denied"],
            Action::HeartbeatSummary | Action::PathSummary => &["info"],
            a if a.is_agent() => &["info"],
            _ => &["protocol"],
        }
    }

    /// ECS `event.outcome`, where the action is one.
    pub const fn ecs_outcome(self) -> Option<&'static str> {
        match self {
            Action::SipRegistered | Action::SipUnregistered => Some("success"),
            Action::SipRegisterFailed | Action::SipOptionsFailed => Some("failure"),
            _ => None,
        }
    }

    /// `event.dataset`.
    pub const fn dataset(self) -> &'static str {
        if self.is_agent() {
            "hbwatch.agent"
        } else {
            "hbwatch.heartbeat"
        }
    }
}

impl std::fmt::Display for Action {
    /// The name, padded as asked (`{:<22}`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

impl Serialize for Action {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Log {
    pub level: Level,
}

#[derive(Debug, Clone, Serialize)]
pub struct Network {
    pub protocol: &'static str,
    pub transport: &'static str,
    /// `ipv4` or `ipv6`.
    #[serde(rename = "type")]
    pub ip_version: &'static str,
    /// IANA protocol number of the transport, as ECS spells it (a string): `6`, `17`.
    pub iana_number: &'static str,
    /// Community ID v1 of the association's 5-tuple (`community_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub community_id: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    pub ip: String,
    pub port: u16,
}

/// The agent as ECS's observer: `hostname`, the interface, and what it is
/// (`type`/`vendor`/`product`/`version`, written by [`Observer`]'s serializer).
#[derive(Debug, Clone)]
pub struct Observer {
    pub hostname: String,
    pub ingress: Option<Ingress>,
}

impl Serialize for Observer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut o = s.serialize_struct("Observer", 6)?;
        o.serialize_field("hostname", &self.hostname)?;
        o.serialize_field("type", "sensor")?;
        o.serialize_field("vendor", "hbwatch")?;
        o.serialize_field("product", "hbwatch")?;
        o.serialize_field("version", env!("CARGO_PKG_VERSION"))?;
        if let Some(ingress) = &self.ingress {
            o.serialize_field("ingress", ingress)?;
        } else {
            o.skip_field("ingress")?;
        }
        o.end()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Ingress {
    pub interface: Interface,
}

#[derive(Debug, Clone, Serialize)]
pub struct Interface {
    pub name: String,
}

/// Attachment of the agent to one interface (`agent.started`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Attachment {
    pub name: String,
    /// `driver` or `skb`.
    pub mode: &'static str,
}

/// Protocol detail under `heartbeat.*`; absent fields are left out.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HeartbeatFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_seq: Option<u32>,
    /// Last heartbeat of a run (`path.loss`, `path.qos_changed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_seq: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_interval_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub silence_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<u64>,
    /// Most likely cause (`peer-restart`, `path-interruption`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<&'static str>,
    /// The facts the diagnosis used, one short sentence each.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Vec<String>>,
    /// `heartbeat.summary`: heartbeats in the period.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_us: Option<RttUs>,
    /// `heartbeat.summary`: length of the period, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period_ms: Option<u64>,
    /// `heartbeat.summary`: packets seen twice (mirror copies), ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicates: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dscp: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_dscp: Option<u8>,
    /// IP TTL / hop limit (`path.route_changed`), and the usual one before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_ttl: Option<u8>,
    /// `qos.mismatch`: whose packets carry the wrong marking (`request` / `response`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_by: Option<&'static str>,
    #[serde(rename = "where", skip_serializing_if = "Option::is_none")]
    pub where_: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<Vec<Attachment>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counters: Option<std::collections::BTreeMap<&'static str, u64>>,
    /// Repeating alerts folded (not sent), per action: on `peer.up` those of the outage,
    /// on `heartbeat.summary` those of the period.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folded: Option<std::collections::BTreeMap<&'static str, u64>>,
}

impl HeartbeatFields {
    pub fn is_empty(&self) -> bool {
        self.seq.is_none()
            && self.expected_seq.is_none()
            && self.last_seq.is_none()
            && self.previous_seq.is_none()
            && self.lost.is_none()
            && self.attempt.is_none()
            && self.timeout_ms.is_none()
            && self.interval_ms.is_none()
            && self.expected_interval_ms.is_none()
            && self.missed.is_none()
            && self.silence_ms.is_none()
            && self.downtime_ms.is_none()
            && self.diagnosis.is_none()
            && self.evidence.is_none()
            && self.count.is_none()
            && self.rtt_us.is_none()
            && self.period_ms.is_none()
            && self.duplicates.is_none()
            && self.dscp.is_none()
            && self.expected_dscp.is_none()
            && self.ttl.is_none()
            && self.expected_ttl.is_none()
            && self.direction.is_none()
            && self.reset.is_none()
            && self.closed_by.is_none()
            && self.where_.is_none()
            && self.interfaces.is_none()
            && self.config_digest.is_none()
            && self.counters.is_none()
            && self.folded.is_none()
    }
}

/// What an event says: its action, severity and sentence. Named fields, so that the
/// message and the timestamp (both strings) cannot trade places at a call site.
pub struct Said {
    pub action: Action,
    pub level: Level,
    pub message: String,
}

impl Event {
    /// An event with the always-present fields; callers fill the rest.
    pub fn new(timestamp: String, observer: Observer, said: Said) -> Event {
        let Said {
            action,
            level,
            message,
        } = said;
        Event {
            timestamp,
            ecs: Ecs {
                version: ECS_VERSION,
            },
            event: EventMeta {
                kind: action.kind(),
                category: ["network"],
                types: action.ecs_type(),
                action,
                dataset: action.dataset(),
                module: "hbwatch",
                outcome: action.ecs_outcome(),
                severity: level.severity(),
            },
            log: Log { level },
            network: None,
            source: None,
            destination: None,
            related: None,
            observer,
            heartbeat: HeartbeatFields::default(),
            sip: None,
            path: None,
            message,
        }
    }

    /// One NDJSON line, newline included.
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).expect("events serialize");
        s.push('\n');
        s
    }

    /// Appends the line (newline included) to `buf`: batches share one buffer instead of
    /// a growing String per event (allocation was a tenth of the event pipeline's time).
    pub fn write_line(&self, buf: &mut Vec<u8>) {
        serde_json::to_writer(&mut *buf, self).expect("events serialize");
        buf.push(b'\n');
    }
}

/// RFC 3339 UTC with microseconds, from nanoseconds since the Unix epoch. Years 0-9999
/// are formatted here (the `time` crate's general formatter was a twentieth of the event
/// pipeline's time), others by `time`.
pub fn rfc3339_micros(unix_ns: i128) -> String {
    let secs = unix_ns.div_euclid(1_000_000_000);
    let micros = (unix_ns.rem_euclid(1_000_000_000) / 1000) as u32;
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u32);
    match i64::try_from(days).ok().map(civil_from_days) {
        Some((y, m, d)) if (0..=9999).contains(&y) => {
            let mut b = *b"0000-00-00T00:00:00.000000Z";
            let mut put = |at: usize, width: usize, mut v: u32| {
                for i in (at..at + width).rev() {
                    b[i] = b'0' + (v % 10) as u8;
                    v /= 10;
                }
            };
            put(0, 4, y as u32);
            put(5, 2, m);
            put(8, 2, d);
            put(11, 2, sod / 3600);
            put(14, 2, sod / 60 % 60);
            put(17, 2, sod % 60);
            put(20, 6, micros);
            String::from_utf8_lossy(&b).into_owned()
        }
        _ => rfc3339_micros_slow(unix_ns),
    }
}

/// Year, month, day of a day count since 1970-01-01 (H. Hinnant's civil_from_days).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + (m <= 2) as i64;
    (y, m, d)
}

fn rfc3339_micros_slow(unix_ns: i128) -> String {
    use time::{format_description::FormatItem, macros::format_description, OffsetDateTime};
    const FMT: &[FormatItem<'_>] =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    let t =
        OffsetDateTime::from_unix_timestamp_nanos(unix_ns).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    t.format(FMT).unwrap_or_default()
}

/// An alert on one MDS association, 10.50.0.1:41000 -> 10.50.0.2:41000, diagnosed as a
/// path interruption: the sample event the output tests encode.
#[cfg(test)]
pub(crate) fn mds_alert(
    timestamp: String,
    action: Action,
    level: Level,
    hostname: &str,
    message: String,
) -> Event {
    let observer = Observer {
        hostname: hostname.into(),
        ingress: None,
    };
    let mut ev = Event::new(
        timestamp,
        observer,
        Said {
            action,
            level,
            message,
        },
    );
    ev.network = Some(Network {
        protocol: "mds",
        transport: "udp",
        ip_version: "ipv4",
        iana_number: "17",
        community_id: None,
    });
    ev.source = Some(Endpoint {
        ip: "10.50.0.1".into(),
        port: 41000,
    });
    ev.destination = Some(Endpoint {
        ip: "10.50.0.2".into(),
        port: 41000,
    });
    ev.heartbeat.diagnosis = Some("path-interruption");
    ev
}

#[cfg(test)]
mod tests {
    use super::{rfc3339_micros, rfc3339_micros_slow};

    #[test]
    fn rfc3339_matches_the_time_crate() {
        let mut ns: i128 = -1_000_000_000_000_000_000;
        // Leap days, month ends, the epoch, negative times, sub-second parts.
        while ns < 300_000_000_000_000_000_000 {
            assert_eq!(rfc3339_micros(ns), rfc3339_micros_slow(ns), "{ns}");
            ns += 86_399_999_999_937;
        }
        for ns in [0, 1_000, 951_782_400_123_456_789, 1_763_798_520_512_345_000] {
            assert_eq!(rfc3339_micros(ns), rfc3339_micros_slow(ns), "{ns}");
        }
        assert_eq!(
            rfc3339_micros(1_763_798_520_512_345_999),
            "2025-11-22T08:02:00.512345Z"
        );
    }
}
