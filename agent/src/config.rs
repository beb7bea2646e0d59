//! The configuration file: one TOML file with every option (`hbwatch config
//! --print-default` prints it with the defaults). Command-line flags override it;
//! SIGHUP re-reads its tunables (`Settings::tunables`) without losing state.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hbwatch_common::params::{ProtoParams, DSCP_ANY};
use hbwatch_common::proto::Protocol;
use serde::Deserialize;

use crate::datapath::AttachMode;
use crate::ports::{default_specs, PortSpec};
use crate::sink::{parse_duration, SinkSpec};
use crate::tuning::Tune;

/// A configuration that cannot be used: which file, which key, what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// TOML syntax, unknown keys, wrong types (the toml crate names line, key and
    /// what it expected).
    #[error("config {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config {path}: {key} = {value}: {expected}")]
    Value {
        path: String,
        key: String,
        value: String,
        expected: String,
    },
}

/// The file as written (raw values; [`Settings`] is the checked form).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    agent: AgentSection,
    #[serde(default)]
    output: OutputSection,
    #[serde(default)]
    metrics: MetricsSection,
    #[serde(default)]
    privacy: PrivacySection,
    #[serde(default)]
    sip: SipSection,
    /// Protocol name -> its keys, checked by hand for precise messages.
    #[serde(default)]
    protocols: BTreeMap<String, toml::Table>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentSection {
    interfaces: Option<Vec<String>>,
    mode: Option<String>,
    egress: Option<bool>,
    hostname: Option<String>,
    summary_period: Option<String>,
    flush_timeout: Option<String>,
    max_associations: Option<u64>,
    record: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputSection {
    urls: Option<Vec<String>>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsSection {
    listen: Option<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    basic_auth_user: Option<String>,
    basic_auth_password_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrivacySection {
    sip_users: Option<String>,
    hash_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SipSection {
    expiry_grace: Option<String>,
}

pub use crate::privacy::{Privacy, SipUsers};

/// What SIGHUP re-reads: applied to the kernel tables and the correlator in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunables {
    /// Port specs (defaults replaced per protocol where the file lists `ports`).
    pub ports: Vec<PortSpec>,
    /// Per-protocol settings in file order.
    pub tunes: Vec<Tune>,
    pub summary_period: Option<Duration>,
}

/// The checked configuration. `None` where the file is silent (the CLI default applies).
#[derive(Debug, Clone)]
pub struct Settings {
    pub path: Option<PathBuf>,
    pub interfaces: Vec<String>,
    pub mode: Option<AttachMode>,
    pub egress: Option<bool>,
    pub hostname: Option<String>,
    /// Kernel flow-table entries; None: sized by the host's memory.
    pub max_associations: Option<u32>,
    /// The flight recorder (`agent.record`, `--record`); None: off.
    pub record: Option<crate::locate::recorder::RecordSpec>,
    pub flush_timeout: Option<Duration>,
    pub outputs: Vec<SinkSpec>,
    pub labels: BTreeMap<String, String>,
    pub metrics_listen: Option<SocketAddr>,
    /// TLS and basic auth of the metrics endpoint (files read when it starts).
    pub metrics_web: crate::metrics::WebConfig,
    pub privacy: Privacy,
    /// SIP registration tracking (`[sip]`).
    pub sip: crate::correlate::sip::SipConfig,
    pub tunables: Tunables,
}

impl Default for Settings {
    /// No file: the built-in defaults.
    fn default() -> Settings {
        Settings {
            path: None,
            interfaces: Vec::new(),
            mode: None,
            egress: None,
            hostname: None,
            max_associations: None,
            record: None,
            flush_timeout: None,
            outputs: Vec::new(),
            labels: BTreeMap::new(),
            metrics_listen: None,
            metrics_web: Default::default(),
            privacy: Privacy::default(),
            sip: Default::default(),
            tunables: Tunables {
                ports: default_specs(),
                tunes: Vec::new(),
                summary_period: Some(Duration::from_secs(60)),
            },
        }
    }
}

/// The per-protocol keys (also `--tune` keys), besides `ports`.
const PROTOCOL_KEYS: [&str; 7] = [
    "interval_ms",
    "max_gap",
    "reorder_window",
    "tolerance_pct",
    "down_after",
    "expected_dscp",
    "confirm_beats",
];

impl Settings {
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut s = Settings::parse(&text, &path.display().to_string())?;
        s.path = Some(path.to_path_buf());
        Ok(s)
    }

    /// Parses and checks `text`; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Settings, ConfigError> {
        let file: File = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let bad = |key: &str, value: &dyn std::fmt::Display, expected: &str| ConfigError::Value {
            path: origin.to_string(),
            key: key.to_string(),
            value: value.to_string(),
            expected: expected.to_string(),
        };
        let duration = |key: &str, v: &Option<String>| -> Result<Option<Duration>, ConfigError> {
            v.as_ref()
                .map(|s| parse_duration(s).map_err(|e| bad(key, &format!("{s:?}"), &e)))
                .transpose()
        };
        let mut s = Settings::default();
        let a = &file.agent;
        s.interfaces = a.interfaces.clone().unwrap_or_default();
        s.mode = match a.mode.as_deref() {
            None => None,
            Some(m) => Some(
                <AttachMode as clap::ValueEnum>::from_str(m, false)
                    .map_err(|_| bad("agent.mode", &format!("{m:?}"), "auto, driver, skb or tc"))?,
            ),
        };
        s.egress = a.egress;
        s.hostname = a.hostname.clone().filter(|h| !h.is_empty());
        if let Some(p) = duration("agent.summary_period", &a.summary_period)? {
            s.tunables.summary_period = (!p.is_zero()).then_some(p);
        }
        s.flush_timeout = duration("agent.flush_timeout", &a.flush_timeout)?;
        s.max_associations = match a.max_associations {
            None | Some(0) => None,
            Some(n)
                if (crate::datapath::MIN_FLOWS as u64..=crate::datapath::MAX_FLOWS as u64)
                    .contains(&n) =>
            {
                Some(n as u32)
            }
            Some(n) => {
                return Err(bad(
                    "agent.max_associations",
                    &n.to_string(),
                    &format!(
                        "0 (sized by this host's memory) or {} to {}",
                        crate::datapath::MIN_FLOWS,
                        crate::datapath::MAX_FLOWS
                    ),
                ))
            }
        };
        s.record = match a.record.as_deref() {
            None | Some("") => None,
            Some(r) => Some(r.parse().map_err(|why: String| {
                bad(
                    "agent.record",
                    &format!("{r:?}"),
                    why.split_once(": ").map_or(why.as_str(), |(_, w)| w),
                )
            })?),
        };
        for url in file.output.urls.iter().flatten() {
            let spec = url
                .parse::<SinkSpec>()
                .map_err(|e| bad("output.urls", &format!("{url:?}"), &e.why))?;
            s.outputs.push(spec);
        }
        for (k, v) in &file.output.labels {
            let ok_name = k
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok_name || k.starts_with("__") {
                return Err(bad(
                    &format!("output.labels.{k}"),
                    &format!("{v:?}"),
                    "a label name of letters, digits and _ (not starting with a digit or __)",
                ));
            }
            if ["job", "host", "protocol", "level"].contains(&k.as_str()) {
                return Err(bad(
                    &format!("output.labels.{k}"),
                    &format!("{v:?}"),
                    "job, host, protocol and level are set by hbwatch",
                ));
            }
        }
        s.labels = file.output.labels.clone();
        if let Some(l) = file.metrics.listen.as_deref().filter(|l| !l.is_empty()) {
            s.metrics_listen =
                Some(parse_listen(l).map_err(|e| bad("metrics.listen", &format!("{l:?}"), &e))?);
        }
        {
            let m = &file.metrics;
            let path =
                |v: &Option<String>| v.as_deref().filter(|p| !p.is_empty()).map(PathBuf::from);
            s.metrics_web = crate::metrics::WebConfig {
                tls_cert: path(&m.tls_cert),
                tls_key: path(&m.tls_key),
                basic_auth_user: m.basic_auth_user.clone().filter(|u| !u.is_empty()),
                basic_auth_password_file: path(&m.basic_auth_password_file),
            };
            let w = &s.metrics_web;
            if w.tls_cert.is_some() != w.tls_key.is_some() {
                return Err(bad(
                    "metrics.tls_cert",
                    &format!("{:?}", m.tls_cert.as_deref().unwrap_or_default()),
                    "tls_cert and tls_key together (PEM certificate chain and private key)",
                ));
            }
            if w.basic_auth_user.is_some() != w.basic_auth_password_file.is_some() {
                return Err(bad(
                    "metrics.basic_auth_user",
                    &format!("{:?}", m.basic_auth_user.as_deref().unwrap_or_default()),
                    "basic_auth_user and basic_auth_password_file together",
                ));
            }
            if w.basic_auth_user
                .as_deref()
                .is_some_and(|u| u.contains(':'))
            {
                return Err(bad(
                    "metrics.basic_auth_user",
                    &format!("{:?}", m.basic_auth_user.as_deref().unwrap_or_default()),
                    "a user name without ':'",
                ));
            }
        }
        if let Some(u) = &file.privacy.sip_users {
            s.privacy.sip_users =
                <SipUsers as clap::ValueEnum>::from_str(u, false).map_err(|_| {
                    bad(
                        "privacy.sip_users",
                        &format!("{u:?}"),
                        "keep, hash or redact",
                    )
                })?;
        }
        s.privacy.hash_key = file.privacy.hash_key.clone().unwrap_or_default();
        if s.privacy.sip_users == SipUsers::Hash && s.privacy.hash_key.len() < 16 {
            return Err(bad(
                "privacy.hash_key",
                &format!("{:?}", s.privacy.hash_key),
                "at least 16 characters when sip_users = \"hash\" (a short key makes hashes of phone numbers easy to reverse)",
            ));
        }
        if let Some(g) = duration("sip.expiry_grace", &file.sip.expiry_grace)? {
            s.sip.expiry_grace_ms = g.as_millis().try_into().unwrap_or(u64::MAX);
        }
        for (name, table) in &file.protocols {
            let Some(proto) = Protocol::from_name(name).filter(|p| p.decoded()) else {
                let known: Vec<&str> = Protocol::ALL
                    .into_iter()
                    .filter(|p| p.decoded())
                    .map(|p| p.name())
                    .collect();
                return Err(bad(
                    &format!("protocols.{name}"),
                    &"{...}",
                    &format!("a protocol, one of: {}", known.join(", ")),
                ));
            };
            for (key, value) in table {
                let path = format!("protocols.{name}.{key}");
                let text = match value {
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::String(t) => t.clone(),
                    other => {
                        return Err(bad(&path, other, "a number or a string"));
                    }
                };
                if key == "ports" {
                    let spec: PortSpec = format!("{name}={text}").parse().map_err(|_| {
                        bad(&path, value, "ports and ranges, e.g. \"39500-39999,41000\"")
                    })?;
                    s.tunables.ports.retain(|p| p.protocol != proto);
                    s.tunables.ports.push(spec);
                    continue;
                }
                if !PROTOCOL_KEYS.contains(&key.as_str()) {
                    return Err(bad(
                        &path,
                        value,
                        &format!("a known key: ports, {}", PROTOCOL_KEYS.join(", ")),
                    ));
                }
                let tune: Tune = format!("{name}.{key}={text}")
                    .parse()
                    .map_err(|e| match e {
                        crate::tuning::TuneError::BadValue { expected, .. } => {
                            bad(&path, value, expected)
                        }
                        other => bad(&path, value, &other.to_string()),
                    })?;
                s.tunables.tunes.push(tune);
            }
        }
        Ok(s)
    }
}

/// The command line's ports, tunes and summary period, laid over a file's tunables,
/// now and again at every SIGHUP.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub ports: Vec<PortSpec>,
    pub tunes: Vec<Tune>,
    /// `Some(None)`: summaries off.
    pub summary_period: Option<Option<Duration>>,
}

/// Tunables in the form the datapath and correlator take.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    pub ports: BTreeMap<u32, Protocol>,
    pub params: BTreeMap<Protocol, ProtoParams>,
    pub summary_period: Option<Duration>,
}

impl Overrides {
    pub fn apply(&self, t: &Tunables) -> Effective {
        let mut specs = t.ports.clone();
        specs.extend(self.ports.iter().cloned());
        let mut tunes = t.tunes.clone();
        tunes.extend(self.tunes.iter().cloned());
        Effective {
            ports: crate::ports::port_table(&specs),
            params: crate::tuning::params(&tunes),
            summary_period: self.summary_period.unwrap_or(t.summary_period),
        }
    }
}

/// Where SIGHUP re-reads tunables from.
#[derive(Debug, Clone)]
pub struct Reload {
    pub path: PathBuf,
    pub overrides: Overrides,
}

impl Reload {
    pub fn load(&self) -> Result<Effective, ConfigError> {
        Ok(self.overrides.apply(&Settings::load(&self.path)?.tunables))
    }
}

/// `9464` or `:9464` (localhost), `127.0.0.1:9464`, `[::1]:9464`, `0.0.0.0:9464`.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let port_only = s.strip_prefix(':').unwrap_or(s);
    if let Ok(port) = port_only.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse::<SocketAddr>()
        .map_err(|_| "ADDR:PORT or a port (then 127.0.0.1), e.g. 127.0.0.1:9464".to_string())
}

/// The configuration file with every option at its default, commented.
pub fn default_toml() -> String {
    let mut t = String::from(
        r#"# hbwatch configuration (TOML). Command-line flags override these values.
# `hbwatch run --config FILE`; SIGHUP re-reads [protocols.*] and agent.summary_period
# (thresholds, ports) without losing state; other changes need a restart.

[agent]
# Interfaces to attach XDP to (`--iface` replaces this list).
interfaces = []
# Ingress attach mode: XDP "auto" (driver mode, else generic skb mode), "driver", "skb";
# or "tc" (the clsact ingress hook, no XDP: cheapest on veth and virtual interfaces).
mode = "auto"
# Also watch each interface's egress (TC): heartbeats this host sends itself.
egress = false
# observer.hostname in events; "" = this host's name.
hostname = ""
# Period of heartbeat.summary events per association; "0s" = none.
summary_period = "60s"
# On exit, how long outputs may take to deliver what they still hold.
flush_timeout = "10s"
# Associations the kernel flow table holds (phones, trunks, device pairs, and the
# candidates it is still confirming); 0 = sized by this host's memory (1/64 KiB of RAM,
# 65,536 to 1,048,576). Beyond it the stalest are evicted: counted, reported
# (agent.flow_table_full), never a false alert.
max_associations = 0
# Flight recorder for `hbwatch locate`: the last minutes of heartbeats as rotating pcapng
# files, e.g. "/var/lib/hbwatch/record?keep=15m&max_size=256MiB" (the packaged service
# may write under /var/lib/hbwatch); "" = off. `--record` replaces it.
record = ""

[output]
# Where events go (`--output` replaces this list): "stdout", "file:PATH?max_size=100MiB&keep=5",
# "loki+http://HOST:3100", "otlp+http://HOST:4318", "syslog+udp://HOST:514", "syslog+tcp://...",
# "syslog+tls://...".
urls = ["stdout"]

# Extra static Loki stream labels (few and fixed: every combination is a stream).
[output.labels]
# env = "prod"

[metrics]
# Prometheus endpoint: "9464" binds 127.0.0.1:9464; "" = off.
listen = ""
# HTTPS: PEM certificate chain and private key (read at start; a restart takes new ones).
tls_cert = ""
tls_key = ""
# HTTP basic auth: the user, and a file with its password on one line.
basic_auth_user = ""
basic_auth_password_file = ""

[privacy]
# SIP user parts (phone numbers, names) in events: "keep", "hash" (keyed, stable) or "redact".
sip_users = "keep"
# Key for "hash", 16 characters or more. The same key gives the same hashes across hosts.
hash_key = ""

[sip]
# A registration whose refresh is answered this long after its Expires ran out has not
# lapsed (no sip.expired): phones and registrars run a little late. Needs a restart.
expiry_grace = "2s"
"#,
    );
    for proto in Protocol::ALL.into_iter().filter(|p| p.decoded()) {
        let p = proto.default_params();
        let dscp = if p.expected_dscp == DSCP_ANY {
            "\"any\"".to_string()
        } else {
            p.expected_dscp.to_string()
        };
        t.push_str(&format!(
            r#"
[protocols.{name}]
ports = "{ports}"
interval_ms = {interval}
max_gap = {max_gap}
reorder_window = {reorder}
tolerance_pct = {tol}
down_after = {down}
expected_dscp = {dscp}
"#,
            name = proto.name(),
            ports = crate::ports::ranges_text(proto.default_ports()),
            interval = p.interval_ms,
            max_gap = p.max_gap,
            reorder = p.reorder_window,
            tol = p.tolerance_pct,
            down = p.down_after,
        ));
    }
    t.insert_str(
        t.find("\n[protocols.").unwrap_or(t.len()),
        "\n# Per protocol: ports (replace the defaults), learned-interval seed, sequence windows,\n\
         # late tolerance (% of the interval), missed intervals before peer.down, expected DSCP\n\
         # (0-63 or \"any\").\n",
    );
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuning::params;

    #[test]
    fn the_printed_default_is_valid_and_is_the_default() {
        let s = Settings::parse(&default_toml(), "default").unwrap();
        assert_eq!(params(&s.tunables.tunes), params(&[]));
        let by_proto = |specs: &[PortSpec]| {
            let mut v: Vec<String> = specs.iter().map(|s| format!("{s:?}")).collect();
            v.sort();
            v
        };
        assert_eq!(by_proto(&s.tunables.ports), by_proto(&default_specs()));
        assert_eq!(s.tunables.summary_period, Some(Duration::from_secs(60)));
        assert_eq!(s.outputs, vec![SinkSpec::Stdout]);
        assert_eq!(s.mode, Some(AttachMode::Auto));
        assert_eq!(s.metrics_listen, None);
    }

    fn err(text: &str) -> String {
        Settings::parse(text, "t.toml").unwrap_err().to_string()
    }

    /// The flight recorder from the file (what the packaged service reads), with the
    /// same options and checks as `--record`.
    #[test]
    fn agent_record_configures_the_flight_recorder() {
        let s = Settings::parse(
            "[agent]\nrecord = \"/var/lib/hbwatch/record?keep=20m&max_size=64MiB\"\n",
            "t.toml",
        )
        .unwrap();
        let r = s.record.expect("a recorder");
        assert_eq!(r.dir, PathBuf::from("/var/lib/hbwatch/record"));
        assert_eq!(r.keep, Duration::from_secs(20 * 60));
        assert_eq!(r.max_bytes, 64 << 20);
        assert!(Settings::parse("[agent]\nrecord = \"\"\n", "t.toml")
            .unwrap()
            .record
            .is_none());
        assert_eq!(
            err("[agent]\nrecord = \"/r?keep=1s\"\n"),
            "config t.toml: agent.record = \"/r?keep=1s\": a duration of 10s or more, e.g. 15m"
        );
        // The commented default file leaves it off.
        assert!(Settings::parse(&default_toml(), "d.toml")
            .unwrap()
            .record
            .is_none());
    }

    #[test]
    fn errors_name_the_key_and_what_was_expected() {
        assert_eq!(
            err("[protocols.mds]\ndown_after = 0\n"),
            "config t.toml: protocols.mds.down_after = 0: missed intervals, 1-255"
        );
        assert_eq!(
            err("[protocols.mds]\nexpected_dscp = 64\n"),
            "config t.toml: protocols.mds.expected_dscp = 64: a DSCP 0-63 or `any`"
        );
        assert!(err("[protocols.mds]\nspeed = 1\n").starts_with(
            "config t.toml: protocols.mds.speed = 1: a known key: ports, interval_ms"
        ));
        assert!(err("[protocols.h323]\nports = \"1720\"\n")
            .starts_with("config t.toml: protocols.h323 = {...}: a protocol, one of: ged125"));
        assert!(err("[protocols.sccp]\nports = \"2000-1000\"\n").contains("protocols.sccp.ports"));
        assert_eq!(
            err("[agent]\nmax_associations = 10\n"),
            "config t.toml: agent.max_associations = 10: 0 (sized by this host's memory) or 64 to 16777216"
        );
        assert_eq!(
            err("[agent]\nmode = \"turbo\"\n"),
            "config t.toml: agent.mode = \"turbo\": auto, driver, skb or tc"
        );
        assert!(err("[agent]\nsummary_period = \"1y\"\n").starts_with(
            "config t.toml: agent.summary_period = \"1y\": \"1y\": unknown duration unit"
        ));
        assert!(err("[metrics]\nlisten = \"localhost\"\n").contains("metrics.listen"));
        assert!(err("[output]\nurls = [\"kafka://x\"]\n")
            .starts_with("config t.toml: output.urls = \"kafka://x\": unknown scheme"));
        assert!(err("[output.labels]\nlevel = \"x\"\n").contains("set by hbwatch"));
        assert!(
            err("[privacy]\nsip_users = \"hash\"\nhash_key = \"short\"\n")
                .contains("16 characters")
        );
        // Unknown keys and wrong types: the toml crate's message, with line and key.
        let e = err("[agent]\nintrefaces = [\"eth0\"]\n");
        assert!(
            e.contains("line 2")
                && e.contains("unknown field `intrefaces`")
                && e.contains("`interfaces`"),
            "{e}"
        );
        let e = err("[agent]\negress = \"yes\"\n");
        assert!(e.contains("expected a boolean"), "{e}");
    }

    #[test]
    fn metrics_tls_and_basic_auth_come_in_pairs() {
        let s = Settings::parse(
            "[metrics]\nlisten = \"9464\"\ntls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\n\
             basic_auth_user = \"prometheus\"\nbasic_auth_password_file = \"/pw\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(s.metrics_web.tls_cert, Some(PathBuf::from("/c.pem")));
        assert_eq!(s.metrics_web.basic_auth_user.as_deref(), Some("prometheus"));
        let err = |t: &str| Settings::parse(t, "t").unwrap_err().to_string();
        assert!(err("[metrics]\ntls_cert = \"/c.pem\"\n").contains("tls_key"));
        assert!(err("[metrics]\nbasic_auth_user = \"p\"\n").contains("basic_auth_password_file"));
        assert!(
            err("[metrics]\nbasic_auth_user = \"a:b\"\nbasic_auth_password_file = \"/pw\"\n")
                .contains("without ':'")
        );
    }

    #[test]
    fn settings_apply_over_the_defaults() {
        let s = Settings::parse(
            "[agent]\ninterfaces = [\"eth1\"]\nsummary_period = \"0s\"\n\
             [metrics]\nlisten = \"9464\"\n\
             [protocols.mds]\nports = \"41000\"\ndown_after = 7\nexpected_dscp = \"any\"\n\
             [protocols.cs1000-rudp]\nexpected_dscp = 40\n",
            "t",
        )
        .unwrap();
        assert_eq!(s.interfaces, vec!["eth1"]);
        assert_eq!(s.tunables.summary_period, None);
        assert_eq!(s.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(s.metrics_web, crate::metrics::WebConfig::default());
        let p = params(&s.tunables.tunes);
        assert_eq!(p[&Protocol::Mds].down_after, 7);
        assert_eq!(p[&Protocol::Cs1000Rudp].expected_dscp, 40);
        let mds: Vec<_> = s
            .tunables
            .ports
            .iter()
            .filter(|p| p.protocol == Protocol::Mds)
            .collect();
        assert_eq!(mds.len(), 1);
        assert_eq!(mds[0].ranges, vec![(41000, 41000)]);
    }
}
