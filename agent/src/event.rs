//! The JSON event contract (shared/EVENTS.md, docs/EVENTS.md): one object per line.

use serde::Serialize;

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
    pub event: EventMeta,
    pub log: Log,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<Endpoint>,
    pub observer: Observer,
    #[serde(skip_serializing_if = "HeartbeatFields::is_empty")]
    pub heartbeat: HeartbeatFields,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sip: Option<SipFields>,
    pub message: String,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cseq: Option<u32>,
    /// Granted registration lifetime, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
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
    pub action: &'static str,
    pub severity: u8,
}

#[derive(Debug, Clone, Serialize)]
pub struct Log {
    pub level: Level,
}

#[derive(Debug, Clone, Serialize)]
pub struct Network {
    pub protocol: &'static str,
    pub transport: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    pub ip: String,
    pub port: u16,
}

#[derive(Debug, Clone, Serialize)]
pub struct Observer {
    pub hostname: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Ingress>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dscp: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_dscp: Option<u8>,
    /// `qos.mismatch`: whose packets carry the wrong marking (`request` / `response`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_by: Option<&'static str>,
    #[serde(rename = "where", skip_serializing_if = "Option::is_none")]
    pub where_: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<Vec<Attachment>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counters: Option<std::collections::BTreeMap<&'static str, u64>>,
}

impl HeartbeatFields {
    pub fn is_empty(&self) -> bool {
        self.seq.is_none()
            && self.expected_seq.is_none()
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
            && self.dscp.is_none()
            && self.expected_dscp.is_none()
            && self.direction.is_none()
            && self.reset.is_none()
            && self.closed_by.is_none()
            && self.where_.is_none()
            && self.interfaces.is_none()
            && self.config_digest.is_none()
            && self.counters.is_none()
    }
}

impl Event {
    /// An event with the always-present fields; callers fill the rest.
    pub fn new(
        timestamp: String,
        kind: &'static str,
        action: &'static str,
        level: Level,
        observer: Observer,
        message: String,
    ) -> Event {
        Event {
            timestamp,
            event: EventMeta {
                kind,
                category: ["network"],
                action,
                severity: level.severity(),
            },
            log: Log { level },
            network: None,
            source: None,
            destination: None,
            observer,
            heartbeat: HeartbeatFields::default(),
            sip: None,
            message,
        }
    }

    /// One NDJSON line, newline included.
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).expect("events serialize");
        s.push('\n');
        s
    }
}

/// RFC 3339 UTC with microseconds, from nanoseconds since the Unix epoch.
pub fn rfc3339_micros(unix_ns: i128) -> String {
    use time::{format_description::FormatItem, macros::format_description, OffsetDateTime};
    const FMT: &[FormatItem<'_>] =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    let t =
        OffsetDateTime::from_unix_timestamp_nanos(unix_ns).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    t.format(FMT).unwrap_or_default()
}
