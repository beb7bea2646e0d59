//! Scenario files: which associations talk, and which faults hit them when.
//!
//! A scenario is TOML: top-level `name`, `duration_s`, `seed`, `start` (RFC 3339),
//! then `[[association]]` tables (one device pair or client/server model each, keyed by
//! `protocol`) and `[[fault]]` tables (`at_s`, `association`, `kind`, kind's keys).
//! Every key is checked: an unknown or wrong key is an error naming it, never a panic
//! and never silently ignored. Built-in scenarios are TOML files in `scenarios/`.

use std::net::{IpAddr, Ipv6Addr};

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::Ep;

/// The built-in scenarios by name, as TOML text (also examples of the format).
pub const BUILTIN: [(&str, &str); 4] = [
    ("healthy", include_str!("scenarios/healthy.toml")),
    ("faults", include_str!("scenarios/faults.toml")),
    ("story", include_str!("scenarios/story.toml")),
    ("mgcp", include_str!("scenarios/mgcp.toml")),
];

const NS: f64 = 1e9;
/// Default capture start: a fixed instant, so captures are reproducible.
const DEFAULT_START: &str = "2026-11-22T10:00:00Z";

/// A checked scenario: every address parsed, every fault tied to its association.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub duration_ns: u64,
    pub seed: u64,
    /// Capture start, Unix time in ns.
    pub start_unix_ns: u64,
    pub associations: Vec<Association>,
    pub faults: Vec<Fault>,
}

/// One scenario association: a device pair or a client/server model. It may carry
/// several EVENTS.md associations (RUDP: one per originating end; SCCP: primary and
/// backup CUCM).
#[derive(Debug, Clone)]
pub struct Association {
    pub name: String,
    pub model: Model,
    /// 802.1Q tags, outermost first.
    pub vlans: Vec<u16>,
    pub dscp: u8,
    /// When the association starts, from the capture start; `None` = early, seeded.
    pub start_ns: Option<u64>,
    /// Responder think + network time before an answer.
    pub rtt_ns: u64,
}

#[derive(Debug, Clone)]
pub enum Model {
    Ged125 {
        /// The VRU PIM (TCP client, originator).
        pim: Ep,
        /// CVP Call Server, listening on 5000.
        cvp: Ep,
        interval_ns: u64,
        idle_timeout_ms: u32,
        version: u32,
        invoke_id: Option<u32>,
    },
    Mds {
        a: Ep,
        b: Ep,
        interval_ns: u64,
        little_endian: bool,
        seq_a: u32,
        seq_b: u32,
    },
    Rudp {
        a: Ep,
        b: Ep,
        interval_ns: u64,
        seq_a: Option<u32>,
        seq_b: Option<u32>,
    },
    Ipmg {
        a: Ep,
        b: Ep,
        interval_ns: u64,
    },
    Sccp {
        phone: Ep,
        primary: Ep,
        backup: Option<Ep>,
        keepalive_s: u32,
        secondary_keepalive_s: u32,
        header_version: u32,
        device: String,
    },
    Sip {
        phone: Ep,
        primary: Ep,
        backup: Option<Ep>,
        tcp: bool,
        expires: u32,
        granted_expires: u32,
        refresh_ns: u64,
        backup_interval_ns: u64,
        user: String,
        device: String,
    },
    SipOptions {
        client: Ep,
        server: Ep,
        tcp: bool,
        interval_ns: u64,
    },
    /// An MGCP gateway (`a`) and its call agent (`b`): keepalive NTFYs when idle, the
    /// NTFYs and call agent commands of calls otherwise.
    Mgcp {
        gateway: Ep,
        call_agent: Ep,
        interval_ns: u64,
        /// The gateway's name in endpoint names (`*@vg224.example.com`).
        domain: String,
        /// Calls started per minute (0: an idle gateway, keepalives only).
        calls_per_min: f64,
        tid: Option<u32>,
    },
}

impl Model {
    /// The `protocol` key of the association table.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Model::Ged125 { .. } => "ged125",
            Model::Mds { .. } => "mds",
            Model::Rudp { .. } => "cs1000-rudp",
            Model::Ipmg { .. } => "cs1000-ipmg",
            Model::Sccp { .. } => "sccp",
            Model::Sip { .. } => "sip",
            Model::SipOptions { .. } => "sip-options",
            Model::Mgcp { .. } => "mgcp",
        }
    }

    /// The fault kinds this model can play, with what each means here.
    fn allowed_faults(&self) -> &'static [&'static str] {
        match self {
            Model::Mds { .. } => &["loss", "one-way-loss", "silence", "late", "restart", "dscp"],
            Model::Rudp { .. } => &[
                "loss",
                "one-way-loss",
                "silence",
                "late",
                "retry",
                "unanswered",
                "restart",
                "dscp",
            ],
            Model::Ipmg { .. } => &["loss", "one-way-loss", "silence", "late", "dscp"],
            Model::Ged125 { .. } | Model::Sccp { .. } => &[
                "loss",
                "late",
                "retry",
                "unanswered",
                "restart",
                "close",
                "dscp",
            ],
            Model::Sip { .. } => &["late", "sip-refresh-fail", "sip-lapse", "close", "dscp"],
            Model::SipOptions { .. } => &["late", "unanswered", "options-fail", "close", "dscp"],
            Model::Mgcp { .. } => &["loss", "silence", "late", "unanswered", "restart", "dscp"],
        }
    }

    fn is_tcp(&self) -> bool {
        match self {
            Model::Ged125 { .. } | Model::Sccp { .. } => true,
            Model::Sip { tcp, .. } | Model::SipOptions { tcp, .. } => *tcp,
            _ => false,
        }
    }

    fn has_backup(&self) -> bool {
        matches!(
            self,
            Model::Sccp {
                backup: Some(_),
                ..
            } | Model::Sip {
                backup: Some(_),
                ..
            }
        )
    }

    fn endpoints_mut(&mut self) -> Vec<&mut Ep> {
        match self {
            Model::Ged125 { pim, cvp, .. } => vec![pim, cvp],
            Model::Mds { a, b, .. } | Model::Rudp { a, b, .. } | Model::Ipmg { a, b, .. } => {
                vec![a, b]
            }
            Model::Sccp {
                phone,
                primary,
                backup,
                ..
            }
            | Model::Sip {
                phone,
                primary,
                backup,
                ..
            } => {
                let mut v = vec![phone, primary];
                if let Some(b) = backup {
                    v.push(b);
                }
                v
            }
            Model::SipOptions { client, server, .. } => vec![client, server],
            Model::Mgcp {
                gateway,
                call_agent,
                ..
            } => vec![gateway, call_agent],
        }
    }
}

/// A direction on the wire between the association's `a` and `b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Both,
    AToB,
    BToA,
}

impl Dir {
    /// Whether a packet sent by `a` (`from_a`) or by `b` travels this way.
    pub fn covers(self, from_a: bool) -> bool {
        match self {
            Dir::Both => true,
            Dir::AToB => from_a,
            Dir::BToA => !from_a,
        }
    }
}

/// `a` or `b` of the association (for TCP models: `a` = client, `b` = server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartMode {
    /// Sequence back to 0 (MDS router process restart).
    Zero,
    /// A new unrelated sequence (RUDP: random or time-based start).
    Random,
    /// RUDP seq 0xFFFFFFFF ("reset sequence number"), then counting from 0.
    ResetMarker,
    /// TCP: the client process restarts and opens a new session (new port, new InvokeIDs).
    Reconnect,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// `count` heartbeat periods of packets travelling `direction` never reach the probe.
    Loss { count: u32, direction: Dir },
    /// Every packet one way is lost for a while; the other way flows.
    OneWayLoss { duration_ns: u64, direction: Dir },
    /// Both ways blocked (firewall idle close, outage); sequences continue after.
    Silence { duration_ns: u64 },
    /// One heartbeat of `side` sent `delay` late.
    Late { delay_ns: u64, side: Side },
    /// The answer to `side`'s request is lost after the probe: re-sent `count` times.
    Retry { count: u32, side: Side },
    /// The responder stays silent to `count` requests of `side` (transport alive).
    Unanswered { count: u32, side: Side },
    Restart {
        side: Side,
        mode: RestartMode,
        down_ns: u64,
    },
    /// TCP FIN or RST by `by`, then a new session after `reconnect_ns` (if any).
    Close {
        reset: bool,
        by: Side,
        reconnect_ns: Option<u64>,
    },
    /// Packets travelling `direction` re-marked to DSCP `value`.
    Dscp {
        value: u8,
        direction: Dir,
        duration_ns: Option<u64>,
    },
    /// The next `count` REGISTER refreshes answered `status` (None: not answered).
    SipRefreshFail {
        status: Option<u16>,
        count: u32,
        retry_ns: u64,
    },
    /// The phone sends no REGISTER for a while: the registration lapses.
    SipLapse { duration_ns: u64 },
    /// The next `count` OPTIONS pings answered with `status`.
    OptionsFail { status: u16, count: u32 },
}

impl FaultKind {
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Loss { .. } => "loss",
            FaultKind::OneWayLoss { .. } => "one-way-loss",
            FaultKind::Silence { .. } => "silence",
            FaultKind::Late { .. } => "late",
            FaultKind::Retry { .. } => "retry",
            FaultKind::Unanswered { .. } => "unanswered",
            FaultKind::Restart { .. } => "restart",
            FaultKind::Close { .. } => "close",
            FaultKind::Dscp { .. } => "dscp",
            FaultKind::SipRefreshFail { .. } => "sip-refresh-fail",
            FaultKind::SipLapse { .. } => "sip-lapse",
            FaultKind::OptionsFail { .. } => "options-fail",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// Position in the scenario's `[[fault]]` list (ground truth refers to it).
    pub index: usize,
    /// From the capture start.
    pub at_ns: u64,
    /// Index into `Scenario::associations`.
    pub association: usize,
    /// SCCP/SIP: the fault hits the backup CUCM connection.
    pub backup: bool,
    pub kind: FaultKind,
}

impl Fault {
    /// The time span the fault covers for an association beating every `interval`:
    /// count-based faults cover `count` heartbeat periods from `at`.
    pub fn window(&self, interval_ns: u64) -> (u64, u64) {
        let span = match self.kind {
            FaultKind::Loss { count, .. }
            | FaultKind::Retry { count, .. }
            | FaultKind::Unanswered { count, .. }
            | FaultKind::OptionsFail { count, .. } => count as u64 * interval_ns,
            FaultKind::OneWayLoss { duration_ns, .. }
            | FaultKind::Silence { duration_ns }
            | FaultKind::SipLapse { duration_ns } => duration_ns,
            FaultKind::Dscp { duration_ns, .. } => duration_ns.unwrap_or(u64::MAX / 4),
            FaultKind::Late { .. }
            | FaultKind::Restart { .. }
            | FaultKind::Close { .. }
            | FaultKind::SipRefreshFail { .. } => interval_ns,
        };
        (self.at_ns, self.at_ns.saturating_add(span))
    }
}

/// Command-line changes applied after loading.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub seed: Option<u64>,
    pub duration_s: Option<f64>,
    /// Tag every association that has no VLAN of its own.
    pub vlan: Option<u16>,
    /// Map every IPv4 address into `fd00:6862::/96`.
    pub ipv6: bool,
}

impl Scenario {
    /// A built-in scenario by name, or a TOML file at that path.
    pub fn load(name_or_path: &str) -> Result<Scenario> {
        if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            return Scenario::from_toml(text, name_or_path)
                .with_context(|| format!("built-in scenario {name_or_path}"));
        }
        let path = std::path::Path::new(name_or_path);
        if !path.exists() {
            bail!(
                "no scenario {name_or_path:?}: not a built-in ({}) and no such file",
                BUILTIN.map(|(n, _)| n).join(", ")
            );
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading scenario {}", path.display()))?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        Scenario::from_toml(&text, &stem).with_context(|| format!("scenario {}", path.display()))
    }

    /// Parses and checks scenario text; `fallback_name` when it has no `name`.
    pub fn from_toml(text: &str, fallback_name: &str) -> Result<Scenario> {
        let raw: RawScenario = toml::from_str(text).map_err(|e| anyhow!("{e}"))?;
        let duration_s = raw.duration_s.unwrap_or(60.0);
        let start = raw.start.as_deref().unwrap_or(DEFAULT_START);
        let mut associations = Vec::new();
        for (i, table) in raw.association.into_iter().enumerate() {
            associations.push(association(i, table)?);
        }
        for (i, a) in associations.iter().enumerate() {
            if associations[..i].iter().any(|b| b.name == a.name) {
                bail!("association[{i}]: name {:?} is used twice", a.name);
            }
        }
        let mut faults = Vec::new();
        for (i, table) in raw.fault.into_iter().enumerate() {
            faults.push(fault(i, table, &associations)?);
        }
        let mut sc = Scenario {
            name: raw.name.unwrap_or_else(|| fallback_name.to_string()),
            duration_ns: seconds("duration_s", duration_s)?,
            seed: raw.seed.unwrap_or(1),
            start_unix_ns: rfc3339(start)?,
            associations,
            faults,
        };
        sc.faults.sort_by_key(|f| (f.at_ns, f.index));
        Ok(sc)
    }

    pub fn apply(&mut self, o: &Overrides) -> Result<()> {
        if let Some(seed) = o.seed {
            self.seed = seed;
        }
        if let Some(d) = o.duration_s {
            self.duration_ns = seconds("--duration", d)?;
        }
        if let Some(vlan) = o.vlan {
            if vlan == 0 || vlan > 4094 {
                bail!("--vlan {vlan}: a VLAN id is 1-4094");
            }
            for a in &mut self.associations {
                if a.vlans.is_empty() {
                    a.vlans = vec![vlan];
                }
            }
        }
        if o.ipv6 {
            for a in &mut self.associations {
                for ep in a.model.endpoints_mut() {
                    if let IpAddr::V4(v4) = ep.ip {
                        let o = v4.octets();
                        ep.ip = IpAddr::V6(Ipv6Addr::new(
                            0xfd00,
                            0x6862,
                            0,
                            0,
                            0,
                            0,
                            u16::from_be_bytes([o[0], o[1]]),
                            u16::from_be_bytes([o[2], o[3]]),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Faults of one association, in time order.
    pub fn faults_of(&self, association: usize) -> Vec<Fault> {
        self.faults
            .iter()
            .filter(|f| f.association == association)
            .cloned()
            .collect()
    }
}

// ---------------------------------------------------------------------------------
// Raw TOML shapes. Each association/fault table is first read as a plain table so the
// error can name it; then its protocol's (kind's) struct reads it with every key checked.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    duration_s: Option<f64>,
    seed: Option<u64>,
    start: Option<String>,
    #[serde(default)]
    association: Vec<toml::Table>,
    #[serde(default)]
    fault: Vec<toml::Table>,
}

/// `vlan = 100` or `vlan = [200, 100]` (QinQ, outer first).
#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Vlans {
    #[default]
    None,
    One(u16),
    Stack(Vec<u16>),
}

/// Keys every association has.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Common {
    name: String,
    #[serde(default)]
    vlan: Vlans,
    dscp: Option<u8>,
    start_s: Option<f64>,
    rtt_ms: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Ged125Keys {
    a: String,
    b: String,
    interval_ms: Option<f64>,
    idle_timeout_ms: Option<u32>,
    version: Option<u32>,
    invoke_id: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MdsKeys {
    a: String,
    b: String,
    interval_ms: Option<f64>,
    byte_order: Option<String>,
    seq_a: Option<u32>,
    seq_b: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RudpKeys {
    a: String,
    b: String,
    interval_ms: Option<f64>,
    seq_a: Option<u32>,
    seq_b: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IpmgKeys {
    a: String,
    b: String,
    interval_ms: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SccpKeys {
    a: String,
    b: String,
    backup: Option<String>,
    keepalive_s: Option<u32>,
    secondary_keepalive_s: Option<u32>,
    header_version: Option<u32>,
    device: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SipKeys {
    a: String,
    b: String,
    backup: Option<String>,
    transport: Option<String>,
    expires: Option<u32>,
    granted_expires: Option<u32>,
    refresh_s: Option<f64>,
    backup_interval_s: Option<f64>,
    user: Option<String>,
    device: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MgcpKeys {
    a: String,
    b: String,
    interval_ms: Option<f64>,
    domain: Option<String>,
    calls_per_min: Option<f64>,
    tid: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SipOptionsKeys {
    a: String,
    b: String,
    transport: Option<String>,
    interval_s: Option<f64>,
}

const COMMON_KEYS: [&str; 5] = ["name", "vlan", "dscp", "start_s", "rtt_ms"];

/// Moves `keys` out of `table` into a new table.
fn split(table: &mut toml::Table, keys: &[&str]) -> toml::Table {
    let mut out = toml::Table::new();
    for k in keys {
        if let Some(v) = table.remove(*k) {
            out.insert(k.to_string(), v);
        }
    }
    out
}

fn typed<T: DeserializeOwned>(table: toml::Table, what: &str) -> Result<T> {
    toml::Value::Table(table)
        .try_into()
        .map_err(|e| anyhow!("{what}: {}", e.to_string().trim()))
}

fn ms(key: &str, v: f64) -> Result<u64> {
    if !(v.is_finite() && v > 0.0) {
        bail!("key `{key}`: {v} is not a positive time");
    }
    Ok((v * 1e6) as u64)
}

fn seconds(key: &str, v: f64) -> Result<u64> {
    if !(v.is_finite() && v > 0.0 && v < 1e7) {
        bail!("key `{key}`: {v} is not a positive number of seconds");
    }
    Ok((v * NS) as u64)
}

/// The default capture start, Unix ns (also the `quiet` noise capture's).
pub fn default_start_ns() -> u64 {
    rfc3339(DEFAULT_START).expect("DEFAULT_START is RFC 3339")
}

fn rfc3339(s: &str) -> Result<u64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| anyhow!("key `start`: {s:?} is not an RFC 3339 time ({e})"))?;
    u64::try_from(t.unix_timestamp_nanos())
        .map_err(|_| anyhow!("key `start`: {s:?} is before 1970"))
}

/// `ip`, `ip:port`, `[v6]:port` or `v6`; `default_port` when none is given.
fn endpoint(key: &str, s: &str, default_port: u16) -> Result<Ep> {
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Ok(Ep::new(sa.ip(), sa.port()));
    }
    let ip: IpAddr = s
        .trim_matches(|c| c == '[' || c == ']')
        .parse()
        .map_err(|_| {
            anyhow!("key `{key}`: {s:?} is not an address (IP, IP:PORT or [IPv6]:PORT)")
        })?;
    Ok(Ep::new(ip, default_port))
}

fn transport_tcp(key: &str, v: Option<String>) -> Result<bool> {
    match v.as_deref() {
        None | Some("udp") => Ok(false),
        Some("tcp") => Ok(true),
        Some(other) => bail!("key `{key}`: {other:?} is not udp or tcp"),
    }
}

fn association(i: usize, mut table: toml::Table) -> Result<Association> {
    let what = |name: &str| format!("association[{i}] {name:?}");
    let proto = match table.remove("protocol") {
        Some(toml::Value::String(s)) => s,
        Some(_) => bail!("association[{i}]: key `protocol` must be a string"),
        None => bail!(
            "association[{i}]: key `protocol` is missing (ged125, mds, cs1000-rudp, cs1000-ipmg, sccp, sip, sip-options, mgcp)"
        ),
    };
    let common: Common = typed(
        split(&mut table, &COMMON_KEYS),
        &format!("association[{i}]"),
    )?;
    let at = what(&common.name);
    let ctx = |e: anyhow::Error| anyhow!("{at}: {e}");
    let interval = |v: Option<f64>, default_ms: f64| {
        let v = v.unwrap_or(default_ms);
        if v < 1.0 {
            bail!("key `interval_ms`: {v} is below 1 ms");
        }
        ms("interval_ms", v)
    };
    let model = match proto.as_str() {
        "ged125" => {
            let k: Ged125Keys = typed(table, &at)?;
            Model::Ged125 {
                pim: endpoint("a", &k.a, 0).map_err(ctx)?,
                cvp: endpoint("b", &k.b, 5000).map_err(ctx)?,
                interval_ns: interval(k.interval_ms, 5000.0).map_err(ctx)?,
                idle_timeout_ms: k.idle_timeout_ms.unwrap_or(15_000),
                version: k.version.unwrap_or(13),
                invoke_id: k.invoke_id,
            }
        }
        "mds" => {
            let k: MdsKeys = typed(table, &at)?;
            let little_endian = match k.byte_order.as_deref() {
                None | Some("le") => true,
                Some("be") => false,
                Some(o) => return Err(ctx(anyhow!("key `byte_order`: {o:?} is not le or be"))),
            };
            Model::Mds {
                a: endpoint("a", &k.a, 39500).map_err(ctx)?,
                b: endpoint("b", &k.b, 39500).map_err(ctx)?,
                interval_ns: interval(k.interval_ms, 100.0).map_err(ctx)?,
                little_endian,
                seq_a: k.seq_a.unwrap_or(0),
                seq_b: k.seq_b.unwrap_or(0),
            }
        }
        "cs1000-rudp" => {
            let k: RudpKeys = typed(table, &at)?;
            Model::Rudp {
                a: endpoint("a", &k.a, 15000).map_err(ctx)?,
                b: endpoint("b", &k.b, 15000).map_err(ctx)?,
                interval_ns: interval(k.interval_ms, 1000.0).map_err(ctx)?,
                seq_a: k.seq_a,
                seq_b: k.seq_b,
            }
        }
        "mgcp" => {
            let k: MgcpKeys = typed(table, &at)?;
            let calls_per_min = k.calls_per_min.unwrap_or(0.0);
            if !(calls_per_min.is_finite() && (0.0..=600.0).contains(&calls_per_min)) {
                return Err(ctx(anyhow!("key `calls_per_min`: {calls_per_min} is not 0-600")));
            }
            if k.tid.is_some_and(|t| t == 0 || t > 999_999_999) {
                return Err(ctx(anyhow!("key `tid`: transaction ids are 1-999999999")));
            }
            Model::Mgcp {
                gateway: endpoint("a", &k.a, 2427).map_err(ctx)?,
                call_agent: endpoint("b", &k.b, 2727).map_err(ctx)?,
                interval_ns: interval(k.interval_ms, 15_000.0).map_err(ctx)?,
                domain: k.domain.unwrap_or_else(|| "gw.example.com".to_string()),
                calls_per_min,
                tid: k.tid,
            }
        }
        "cs1000-ipmg" => {
            let k: IpmgKeys = typed(table, &at)?;
            Model::Ipmg {
                a: endpoint("a", &k.a, 32779).map_err(ctx)?,
                b: endpoint("b", &k.b, 32780).map_err(ctx)?,
                interval_ns: interval(k.interval_ms, 1000.0).map_err(ctx)?,
            }
        }
        "sccp" => {
            let k: SccpKeys = typed(table, &at)?;
            let keepalive_s = k.keepalive_s.unwrap_or(30);
            let secondary_keepalive_s = k.secondary_keepalive_s.unwrap_or(60);
            if keepalive_s == 0 || secondary_keepalive_s == 0 {
                return Err(ctx(anyhow!("keepalive intervals must be at least 1 s")));
            }
            Model::Sccp {
                phone: endpoint("a", &k.a, 0).map_err(ctx)?,
                primary: endpoint("b", &k.b, 2000).map_err(ctx)?,
                backup: k
                    .backup
                    .map(|b| endpoint("backup", &b, 2000))
                    .transpose()
                    .map_err(ctx)?,
                keepalive_s,
                secondary_keepalive_s,
                header_version: k.header_version.unwrap_or(0x16),
                device: k.device.unwrap_or_else(|| "SEP0024142DDF24".into()),
            }
        }
        "sip" => {
            let k: SipKeys = typed(table, &at)?;
            let tcp = transport_tcp("transport", k.transport).map_err(ctx)?;
            let granted_expires = k.granted_expires.unwrap_or(120);
            if granted_expires < 2 {
                return Err(ctx(anyhow!("key `granted_expires`: at least 2 s")));
            }
            // Cisco phones refresh 5 s before the granted expiry.
            let refresh_s = k
                .refresh_s
                .unwrap_or(granted_expires.saturating_sub(5).max(1) as f64);
            Model::Sip {
                phone: endpoint("a", &k.a, if tcp { 0 } else { 5060 }).map_err(ctx)?,
                primary: endpoint("b", &k.b, 5060).map_err(ctx)?,
                backup: k
                    .backup
                    .map(|b| endpoint("backup", &b, 5060))
                    .transpose()
                    .map_err(ctx)?,
                tcp,
                expires: k.expires.unwrap_or(3600),
                granted_expires,
                refresh_ns: seconds("refresh_s", refresh_s).map_err(ctx)?,
                backup_interval_ns: seconds(
                    "backup_interval_s",
                    k.backup_interval_s.unwrap_or(120.0),
                )
                .map_err(ctx)?,
                user: k.user.unwrap_or_else(|| "5678".into()),
                device: k.device.unwrap_or_else(|| "SEP0024142DDF24".into()),
            }
        }
        "sip-options" => {
            let k: SipOptionsKeys = typed(table, &at)?;
            let tcp = transport_tcp("transport", k.transport).map_err(ctx)?;
            Model::SipOptions {
                client: endpoint("a", &k.a, if tcp { 0 } else { 5060 }).map_err(ctx)?,
                server: endpoint("b", &k.b, 5060).map_err(ctx)?,
                tcp,
                interval_ns: seconds("interval_s", k.interval_s.unwrap_or(30.0)).map_err(ctx)?,
            }
        }
        other => bail!(
            "association[{i}] {:?}: key `protocol`: unknown {other:?} (ged125, mds, cs1000-rudp, cs1000-ipmg, sccp, sip, sip-options, mgcp)",
            common.name
        ),
    };
    let vlans = match common.vlan {
        Vlans::None => Vec::new(),
        Vlans::One(v) => vec![v],
        Vlans::Stack(v) => v,
    };
    if vlans.len() > 2 || vlans.iter().any(|&v| v == 0 || v > 4094) {
        bail!("{at}: key `vlan`: one or two VLAN ids of 1-4094");
    }
    let default_dscp = match model {
        // ELAN heartbeats should be EF (PROTOCOLS.md §4); phones mark signalling CS3.
        Model::Rudp { .. } => 46,
        Model::Sccp { .. } | Model::Sip { .. } | Model::SipOptions { .. } => 24,
        _ => 0,
    };
    let dscp = common.dscp.unwrap_or(default_dscp);
    if dscp > 63 {
        bail!("{at}: key `dscp`: {dscp} is not 0-63");
    }
    let endpoints_same_family = {
        let mut m = model.clone();
        let eps = m.endpoints_mut();
        eps.iter().all(|e| e.ip.is_ipv4() == eps[0].ip.is_ipv4())
    };
    if !endpoints_same_family {
        bail!("{at}: all addresses must be IPv4 or all IPv6");
    }
    Ok(Association {
        name: common.name,
        model,
        vlans,
        dscp,
        start_ns: common
            .start_s
            .map(|s| {
                if s >= 0.0 && s.is_finite() {
                    Ok((s * NS) as u64)
                } else {
                    Err(anyhow!("{at}: key `start_s`: {s} is not a time >= 0"))
                }
            })
            .transpose()?,
        rtt_ns: ms("rtt_ms", common.rtt_ms.unwrap_or(0.4)).map_err(ctx)?,
    })
}

// Fault keys, per kind.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LossKeys {
    count: Option<u32>,
    direction: Option<String>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DurationDirKeys {
    duration_s: f64,
    direction: Option<String>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DurationKeys {
    duration_s: f64,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LateKeys {
    delay_ms: f64,
    side: Option<String>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CountSideKeys {
    count: Option<u32>,
    side: Option<String>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestartKeys {
    side: Option<String>,
    mode: Option<String>,
    down_s: Option<f64>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseKeys {
    how: Option<String>,
    by: Option<String>,
    reconnect_s: Option<f64>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DscpKeys {
    value: Option<u8>,
    direction: Option<String>,
    duration_s: Option<f64>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshFailKeys {
    status: Option<u16>,
    no_answer: Option<bool>,
    count: Option<u32>,
    retry_s: Option<f64>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OptionsFailKeys {
    status: Option<u16>,
    count: Option<u32>,
}

fn direction(v: Option<&str>) -> Result<Dir> {
    match v {
        None | Some("both") => Ok(Dir::Both),
        Some("a-to-b") => Ok(Dir::AToB),
        Some("b-to-a") => Ok(Dir::BToA),
        Some(o) => bail!("key `direction`: {o:?} is not both, a-to-b or b-to-a"),
    }
}

fn side(key: &str, v: Option<&str>, default: Side) -> Result<Side> {
    match v {
        None => Ok(default),
        Some("a") => Ok(Side::A),
        Some("b") => Ok(Side::B),
        Some(o) => bail!("key `{key}`: {o:?} is not a or b"),
    }
}

fn count(v: Option<u32>) -> Result<u32> {
    match v.unwrap_or(1) {
        0 => bail!("key `count`: must be at least 1"),
        n => Ok(n),
    }
}

fn fault(i: usize, mut table: toml::Table, assocs: &[Association]) -> Result<Fault> {
    let common = split(&mut table, &["at_s", "association", "kind", "target"]);
    let get_str = |k: &str| -> Result<Option<String>> {
        match common.get(k) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => bail!("fault[{i}]: key `{k}` must be a string"),
        }
    };
    let kind = get_str("kind")?.ok_or_else(|| anyhow!("fault[{i}]: key `kind` is missing"))?;
    let at = format!("fault[{i}] ({kind})");
    let assoc_name =
        get_str("association")?.ok_or_else(|| anyhow!("{at}: key `association` is missing"))?;
    let at_s = match common.get("at_s") {
        Some(toml::Value::Float(f)) => *f,
        Some(toml::Value::Integer(n)) => *n as f64,
        Some(_) => bail!("{at}: key `at_s` must be a number of seconds"),
        None => bail!("{at}: key `at_s` is missing"),
    };
    if !(at_s.is_finite() && at_s >= 0.0) {
        bail!("{at}: key `at_s`: {at_s} is not a time >= 0");
    }
    let association = assocs
        .iter()
        .position(|a| a.name == assoc_name)
        .ok_or_else(|| {
            anyhow!(
                "{at}: key `association`: no association named {assoc_name:?} (have: {})",
                assocs
                    .iter()
                    .map(|a| a.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    let model = &assocs[association].model;
    let backup = match get_str("target")?.as_deref() {
        None | Some("primary") => false,
        Some("backup") if model.has_backup() => true,
        Some("backup") => bail!(
            "{at}: key `target`: association {assoc_name:?} has no backup (sccp/sip `backup` key)"
        ),
        Some(o) => bail!("{at}: key `target`: {o:?} is not primary or backup"),
    };
    if !model.allowed_faults().contains(&kind.as_str()) {
        bail!(
            "{at}: key `kind`: {kind:?} is not modelled for {} (it plays: {})",
            model.kind_name(),
            model.allowed_faults().join(", ")
        );
    }
    let ctx = |e: anyhow::Error| anyhow!("{at}: {e}");
    let tcp = model.is_tcp();
    let kind = match kind.as_str() {
        "loss" => {
            let k: LossKeys = typed(table, &at)?;
            let direction = direction(k.direction.as_deref()).map_err(ctx)?;
            if tcp && direction != Dir::Both {
                // TCP does not lose data one way silently: it retransmits (use `retry`).
                bail!("{at}: key `direction`: a TCP session loses heartbeats both ways (the probe misses the exchange); use retry or unanswered");
            }
            FaultKind::Loss {
                count: count(k.count).map_err(ctx)?,
                direction,
            }
        }
        "one-way-loss" => {
            let k: DurationDirKeys = typed(table, &at)?;
            let direction = direction(k.direction.as_deref()).map_err(ctx)?;
            if direction == Dir::Both {
                bail!("{at}: key `direction`: one-way loss is a-to-b or b-to-a (both ways is `silence`)");
            }
            FaultKind::OneWayLoss {
                duration_ns: seconds("duration_s", k.duration_s).map_err(ctx)?,
                direction,
            }
        }
        "silence" => {
            let k: DurationKeys = typed(table, &at)?;
            FaultKind::Silence {
                duration_ns: seconds("duration_s", k.duration_s).map_err(ctx)?,
            }
        }
        "late" => {
            let k: LateKeys = typed(table, &at)?;
            FaultKind::Late {
                delay_ns: ms("delay_ms", k.delay_ms).map_err(ctx)?,
                side: side("side", k.side.as_deref(), Side::A).map_err(ctx)?,
            }
        }
        "retry" | "unanswered" => {
            let k: CountSideKeys = typed(table, &at)?;
            let count = count(k.count).map_err(ctx)?;
            let side = side("side", k.side.as_deref(), Side::A).map_err(ctx)?;
            if !matches!(model, Model::Rudp { .. }) && side == Side::B {
                bail!("{at}: key `side`: only the client (a) sends requests here");
            }
            if kind == "retry" {
                FaultKind::Retry { count, side }
            } else {
                if backup && matches!(model, Model::Sccp { .. }) {
                    bail!("{at}: key `target`: a backup CUCM never answers keepalives (only TCP ACKs): nothing to leave unanswered");
                }
                FaultKind::Unanswered { count, side }
            }
        }
        "restart" => {
            let k: RestartKeys = typed(table, &at)?;
            let mode = match (k.mode.as_deref(), model) {
                (None, Model::Mds { .. }) | (Some("zero"), Model::Mds { .. } | Model::Rudp { .. }) => RestartMode::Zero,
                (None | Some("random"), Model::Rudp { .. }) | (Some("random"), Model::Mds { .. }) => RestartMode::Random,
                (Some("reset-marker"), Model::Rudp { .. }) => RestartMode::ResetMarker,
                (None | Some("reconnect"), Model::Ged125 { .. } | Model::Sccp { .. }) => RestartMode::Reconnect,
                (Some(o), m) => bail!(
                    "{at}: key `mode`: {o:?} does not apply to {} (mds: zero|random; cs1000-rudp: random|zero|reset-marker; ged125/sccp: reconnect)",
                    m.kind_name()
                ),
                (None, _) => RestartMode::Random,
            };
            let default_down = if mode == RestartMode::Reconnect {
                5.0
            } else {
                0.0
            };
            let down_s = k.down_s.unwrap_or(default_down);
            if !(down_s.is_finite() && down_s >= 0.0) {
                bail!("{at}: key `down_s`: {down_s} is not a time >= 0");
            }
            FaultKind::Restart {
                side: side("side", k.side.as_deref(), Side::A).map_err(ctx)?,
                mode,
                down_ns: (down_s * NS) as u64,
            }
        }
        "close" => {
            let k: CloseKeys = typed(table, &at)?;
            if !tcp {
                bail!("{at}: key `kind`: close needs a TCP session (transport = \"tcp\")");
            }
            let reset = match k.how.as_deref() {
                None | Some("rst") => true,
                Some("fin") => false,
                Some(o) => bail!("{at}: key `how`: {o:?} is not fin or rst"),
            };
            let reconnect_ns = match k.reconnect_s {
                Some(s) if s < 0.0 => None,
                Some(s) => Some(seconds("reconnect_s", s).map_err(ctx)?),
                None => Some(2 * 1_000_000_000),
            };
            FaultKind::Close {
                reset,
                by: side("by", k.by.as_deref(), Side::B).map_err(ctx)?,
                reconnect_ns,
            }
        }
        "dscp" => {
            let k: DscpKeys = typed(table, &at)?;
            let value = k.value.unwrap_or(0);
            if value > 63 {
                bail!("{at}: key `value`: {value} is not a DSCP (0-63)");
            }
            FaultKind::Dscp {
                value,
                direction: direction(k.direction.as_deref()).map_err(ctx)?,
                duration_ns: k
                    .duration_s
                    .map(|d| seconds("duration_s", d))
                    .transpose()
                    .map_err(ctx)?,
            }
        }
        "sip-refresh-fail" => {
            let k: RefreshFailKeys = typed(table, &at)?;
            let status = match (k.no_answer.unwrap_or(false), k.status) {
                (true, Some(_)) => bail!("{at}: keys `status` and `no_answer` exclude each other"),
                (true, None) => None,
                (false, s) => Some(s.unwrap_or(503)),
            };
            if let Some(s) = status {
                if !(300..700).contains(&s) {
                    bail!("{at}: key `status`: {s} is not a failure response (300-699)");
                }
            }
            FaultKind::SipRefreshFail {
                status,
                count: count(k.count).map_err(ctx)?,
                retry_ns: seconds("retry_s", k.retry_s.unwrap_or(10.0)).map_err(ctx)?,
            }
        }
        "sip-lapse" => {
            let k: DurationKeys = typed(table, &at)?;
            FaultKind::SipLapse {
                duration_ns: seconds("duration_s", k.duration_s).map_err(ctx)?,
            }
        }
        "options-fail" => {
            let k: OptionsFailKeys = typed(table, &at)?;
            let status = k.status.unwrap_or(503);
            if !(300..700).contains(&status) {
                bail!("{at}: key `status`: {status} is not a failure response (300-699)");
            }
            FaultKind::OptionsFail {
                status,
                count: count(k.count).map_err(ctx)?,
            }
        }
        other => bail!("{at}: key `kind`: unknown {other:?}"),
    };
    Ok(Fault {
        index: i,
        at_ns: (at_s * NS) as u64,
        association,
        backup,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        format!("{:#}", Scenario::from_toml(text, "t").unwrap_err())
    }

    const PAIR: &str = r#"
[[association]]
name = "cs"
protocol = "cs1000-rudp"
a = "10.0.0.1"
b = "10.0.0.2"
"#;

    #[test]
    fn builtins_parse() {
        for (name, _) in BUILTIN {
            let s = Scenario::load(name).unwrap();
            assert!(!s.associations.is_empty(), "{name}");
        }
        let faults = Scenario::load("faults").unwrap();
        let kinds: std::collections::BTreeSet<_> =
            faults.faults.iter().map(|f| f.kind.name()).collect();
        assert_eq!(kinds.len(), 12, "every fault kind once: {kinds:?}");
    }

    #[test]
    fn errors_name_the_key() {
        let e = err(&format!("{PAIR}intervl_ms = 5\n"));
        assert!(
            e.contains("association[0] \"cs\"") && e.contains("intervl_ms"),
            "{e}"
        );
        let e = err("[[association]]\nname = \"x\"\nprotocol = \"rudp\"\na = \"1.1.1.1\"\nb = \"1.1.1.2\"\n");
        assert!(e.contains("`protocol`") && e.contains("\"rudp\""), "{e}");
        let e = err(&format!("{PAIR}[[fault]]\nat_s = 1\nassociation = \"cs\"\nkind = \"loss\"\ndirection = \"up\"\n"));
        assert!(
            e.contains("fault[0] (loss)") && e.contains("`direction`"),
            "{e}"
        );
        let e = err(&format!(
            "{PAIR}[[fault]]\nat_s = 1\nassociation = \"nope\"\nkind = \"loss\"\n"
        ));
        assert!(e.contains("`association`") && e.contains("nope"), "{e}");
        let e = err(&format!(
            "{PAIR}[[fault]]\nat_s = 1\nassociation = \"cs\"\nkind = \"close\"\n"
        ));
        assert!(e.contains("not modelled for cs1000-rudp"), "{e}");
        let e = err(&format!(
            "{PAIR}[[fault]]\nat_s = 1\nassociation = \"cs\"\nkind = \"late\"\n"
        ));
        assert!(e.contains("delay_ms"), "{e}");
        let e = err("[[association]]\nname = \"x\"\nprotocol = \"mds\"\na = \"10.0.0.300\"\nb = \"10.0.0.2\"\n");
        assert!(e.contains("key `a`"), "{e}");
        let e = err("duration_s = -1\n");
        assert!(e.contains("duration_s"), "{e}");
        let e = err("start = \"yesterday\"\n");
        assert!(e.contains("`start`"), "{e}");
        let e = err("nmae = 1\n");
        assert!(e.contains("nmae"), "{e}");
    }

    #[test]
    fn overrides_map_to_ipv6_and_tag() {
        let mut s = Scenario::from_toml(PAIR, "t").unwrap();
        s.apply(&Overrides {
            vlan: Some(300),
            ipv6: true,
            duration_s: Some(5.0),
            seed: Some(9),
        })
        .unwrap();
        assert_eq!(s.associations[0].vlans, vec![300]);
        assert_eq!(s.duration_ns, 5_000_000_000);
        let Model::Rudp { a, .. } = &s.associations[0].model else {
            panic!()
        };
        assert_eq!(a.ip.to_string(), "fd00:6862::a00:1");
        assert_eq!(a.port, 15000);
    }
}
