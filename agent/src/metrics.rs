//! Prometheus metrics (`run --metrics-listen ADDR`): heartbeats, anomalies, RTT,
//! association health, kernel counters, outputs. Counters are atomics updated where the
//! figures arise; the HTTP task only encodes them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hbwatch_common::counters::Counter as KernelCounter;
use hbwatch_common::event::{EventKind, RawEvent, BEAT_PAIRED};
use hbwatch_common::proto::Protocol;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{info, warn};

use crate::event::{Action, Event};
use crate::sink::{Filter, SinkStats};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtoLabel {
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    protocol: &'static str,
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    protocol: &'static str,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
    target: &'static str,
}

/// Where a datapath counter is exposed: one metric per meaning (Prometheus naming), not
/// one family mixing packets, heartbeats and flows.
enum Home {
    /// Its own counter: name (without `hbwatch_` and `_total`) and help.
    Own(&'static str, &'static str),
    /// `hbwatch_datapath_skipped_packets_total{reason}`: frames not analysed, and why.
    Skipped(&'static str),
    /// Ring-buffer loss: `hbwatch_events_lost_total{where="kernel-ringbuf"}` already says it.
    EventsLost,
}

fn home(c: KernelCounter) -> Home {
    use KernelCounter::*;
    match c {
        Packets => Home::Own("datapath_packets", "Frames the datapath saw"),
        PortMatched => Home::Own(
            "datapath_port_matched_packets",
            "Frames on a heartbeat protocol's port",
        ),
        Heartbeats => Home::Own(
            "datapath_heartbeat_packets",
            "Frames decoded as heartbeats, of announced associations or candidates",
        ),
        Duplicates => Home::Own(
            "datapath_duplicate_packets",
            "Heartbeat frames seen twice (mirror ports): counted, never alerted",
        ),
        Unconfirmed => Home::Own(
            "datapath_unconfirmed_heartbeats",
            "Heartbeats of candidate associations not announced (yet)",
        ),
        FlowInsertFailed => Home::Own(
            "datapath_flow_insert_failures",
            "New associations the flow table could not take",
        ),
        FragmentsPassed => Home::Own(
            "datapath_fragments_passed",
            "Fragments of SIP datagrams passed to userspace for reassembly",
        ),
        Held => Home::Own(
            "datapath_held_heartbeats",
            "Routine heartbeats held in the flow table for the agent to read, not sent one record each",
        ),
        Truncated => Home::Skipped("truncated"),
        Malformed => Home::Skipped("malformed"),
        Fragments => Home::Skipped("fragment"),
        Unparsed => Home::Skipped("unparsed"),
        NotHeartbeat => Home::Skipped("not_heartbeat"),
        Undispatched => Home::Skipped("undispatched"),
        RingbufLost => Home::EventsLost,
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutputLabel {
    output: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WhereLabel {
    r#where: String,
}

type Histograms = Family<ProtoLabel, Histogram, fn() -> Histogram>;

fn rtt_histogram() -> Histogram {
    // 100 µs to ~3.3 s: LAN answers to a congested WAN.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// Every metric the agent serves.
pub struct Metrics {
    registry: Registry,
    heartbeats: Family<ProtoLabel, Counter>,
    lost_heartbeats: Family<ProtoLabel, Counter>,
    events: Family<ActionLabels, Counter>,
    rtt: Histograms,
    associations: Family<StateLabels, Gauge>,
    /// Datapath counters with their own metric, by counter name.
    datapath: BTreeMap<&'static str, Counter>,
    skipped: Family<ReasonLabel, Counter>,
    delivered: Family<OutputLabel, Counter>,
    dropped: Family<OutputLabel, Counter>,
    retries: Family<OutputLabel, Counter>,
    queued: Family<OutputLabel, Gauge>,
    spool: Family<OutputLabel, Gauge>,
    lost: Family<WhereLabel, Counter>,
    reloads: Family<ResultLabel, Counter>,
    reload_ok: Gauge,
    reload_time: Gauge,
    flow_capacity: Gauge,
    evicted: Counter,
    /// Last absolute values of counters that arrive as totals (kernel, outputs).
    last: Mutex<BTreeMap<String, u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("hbwatch");
        let m = Metrics {
            heartbeats: Family::default(),
            lost_heartbeats: Family::default(),
            events: Family::default(),
            rtt: Histograms::new_with_constructor(rtt_histogram),
            associations: Family::default(),
            datapath: BTreeMap::new(),
            skipped: Family::default(),
            delivered: Family::default(),
            dropped: Family::default(),
            retries: Family::default(),
            queued: Family::default(),
            spool: Family::default(),
            lost: Family::default(),
            reloads: Family::default(),
            reload_ok: Gauge::default(),
            flow_capacity: Gauge::default(),
            evicted: Counter::default(),
            reload_time: Gauge::default(),
            last: Mutex::new(BTreeMap::new()),
            registry: Registry::default(),
        };
        registry.register(
            "heartbeats",
            "Heartbeats of known associations seen in the datapath",
            m.heartbeats.clone(),
        );
        registry.register(
            "heartbeats_lost",
            "Heartbeats lost, by the sequence numbers the gaps skipped (heartbeat.gap lost)",
            m.lost_heartbeats.clone(),
        );
        // At 0 for every protocol: a loss rate is 0, not absent, before the first gap.
        for p in Protocol::ALL.into_iter().filter(|p| p.decoded()) {
            let _ = m
                .lost_heartbeats
                .get_or_create(&ProtoLabel { protocol: p.name() });
        }
        registry.register(
            "events",
            "Events emitted, by protocol (agent for the agent's own) and action",
            m.events.clone(),
        );
        registry.register(
            "heartbeat_rtt_seconds",
            "Request to response time of paired heartbeats",
            m.rtt.clone(),
        );
        registry.register(
            "associations",
            "Heartbeat associations tracked, by state (up, down)",
            m.associations.clone(),
        );
        let mut datapath = BTreeMap::new();
        for c in KernelCounter::ALL {
            match home(c) {
                Home::Own(name, help) => {
                    let counter = Counter::default();
                    registry.register(name, help, counter.clone());
                    datapath.insert(c.name(), counter);
                }
                // Every reason at 0 from the start: rates and alerts see the series.
                Home::Skipped(reason) => {
                    let _ = m.skipped.get_or_create(&ReasonLabel { reason });
                }
                Home::EventsLost => {}
            }
        }
        registry.register(
            "datapath_skipped_packets",
            "Frames the datapath did not analyse, by reason (truncated, malformed, fragment, unparsed, not_heartbeat, undispatched)",
            m.skipped.clone(),
        );
        registry.register(
            "output_delivered_events",
            "Events an output delivered",
            m.delivered.clone(),
        );
        registry.register(
            "output_dropped_events",
            "Events an output gave up on (reported as agent.events_lost)",
            m.dropped.clone(),
        );
        registry.register(
            "output_retries",
            "Failed deliveries an output will retry",
            m.retries.clone(),
        );
        registry.register(
            "output_queue_events",
            "Events waiting in an output's memory queue",
            m.queued.clone(),
        );
        registry.register(
            "output_spool_bytes",
            "Bytes waiting in an output's on-disk spool",
            m.spool.clone(),
        );
        registry.register(
            "events_lost",
            "Events lost, by where (kernel-ringbuf, sink:NAME), as in agent.events_lost",
            m.lost.clone(),
        );
        registry.register(
            "config_reloads",
            "SIGHUP reloads, by result (ok, failed)",
            m.reloads.clone(),
        );
        registry.register(
            "datapath_flow_table_capacity",
            "Associations the kernel flow table holds (agent.max_associations)",
            m.flow_capacity.clone(),
        );
        registry.register(
            "datapath_flow_table_evictions",
            "Associations the kernel flow table evicted and then saw again (raise agent.max_associations)",
            m.evicted.clone(),
        );
        registry.register(
            "config_last_reload_successful",
            "Whether the last configuration reload (or the start) succeeded",
            m.reload_ok.clone(),
        );
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully (start or SIGHUP), Unix time",
            m.reload_time.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                commit: option_env!("HBWATCH_GIT_COMMIT").unwrap_or("unknown"),
                target: std::env::consts::ARCH,
            })
            .set(1);
        registry.register("build_info", "The agent's build: always 1", build);
        // At 0 from the start, so loss alerts and rates have a series to watch.
        let _ = m.lost.get_or_create(&WhereLabel {
            r#where: "kernel-ringbuf".into(),
        });
        for result in ["ok", "failed"] {
            let _ = m.reloads.get_or_create(&ResultLabel { result });
        }
        m.reload_ok.set(1);
        m.reload_time.set(unix_seconds());
        Metrics {
            registry,
            datapath,
            ..m
        }
    }

    /// One datapath record: heartbeats and their RTT.
    pub fn record(&self, raw: &RawEvent) {
        if raw.kind != EventKind::Heartbeat as u8 {
            return;
        }
        let protocol = Protocol::from_u8(raw.key.proto).name();
        self.heartbeats
            .get_or_create(&ProtoLabel { protocol })
            .inc();
        if raw.aux & BEAT_PAIRED != 0 {
            self.rtt
                .get_or_create(&ProtoLabel { protocol })
                .observe(raw.value as f64 / 1e9);
        }
    }

    /// One emitted event.
    pub fn event(&self, ev: &Event) {
        let protocol = ev.network.as_ref().map_or("agent", |n| n.protocol);
        self.events
            .get_or_create(&ActionLabels {
                protocol,
                action: ev.event.action.name(),
            })
            .inc();
        if ev.event.action == Action::HeartbeatGap {
            self.lost_heartbeats
                .get_or_create(&ProtoLabel { protocol })
                .inc_by(ev.heartbeat.lost.unwrap_or(0));
        }
        if ev.event.action == Action::AgentEventsLost {
            let r#where = ev.heartbeat.where_.clone().unwrap_or_default();
            self.lost
                .get_or_create(&WhereLabel { r#where })
                .inc_by(ev.heartbeat.lost.unwrap_or(0));
        }
    }

    /// Associations up and down per protocol, now.
    pub fn associations(&self, health: &BTreeMap<Protocol, (u64, u64)>) {
        for proto in Protocol::ALL.into_iter().filter(|p| p.decoded()) {
            let (up, down) = health.get(&proto).copied().unwrap_or((0, 0));
            let protocol = proto.name();
            for (state, n) in [("up", up), ("down", down)] {
                self.associations
                    .get_or_create(&StateLabels { protocol, state })
                    .set(n as i64);
            }
        }
    }

    /// The datapath's counters, as totals since load.
    pub fn kernel(&self, counters: &BTreeMap<&'static str, u64>) {
        for (&name, &total) in counters {
            let Some(c) = KernelCounter::ALL.into_iter().find(|c| c.name() == name) else {
                continue;
            };
            let delta = self.delta(format!("kernel/{name}"), total);
            match home(c) {
                Home::Own(..) => {
                    if let Some(counter) = self.datapath.get(name) {
                        counter.inc_by(delta);
                    }
                }
                Home::Skipped(reason) => {
                    self.skipped
                        .get_or_create(&ReasonLabel { reason })
                        .inc_by(delta);
                }
                Home::EventsLost => {}
            }
        }
    }

    /// Every output's figures, as totals and gauges.
    pub fn outputs(&self, stats: &[(String, SinkStats)]) {
        for (name, st) in stats {
            let l = OutputLabel {
                output: name.clone(),
            };
            for (family, kind, total) in [
                (&self.delivered, "delivered", st.delivered),
                (&self.dropped, "dropped", st.dropped),
                (&self.retries, "retries", st.retries),
            ] {
                let delta = self.delta(format!("{kind}/{name}"), total);
                family.get_or_create(&l).inc_by(delta);
            }
            self.queued.get_or_create(&l).set(st.queued as i64);
            self.spool.get_or_create(&l).set(st.spool_bytes as i64);
        }
    }

    /// The kernel flow table's size and the evictions seen so far (a total).
    pub fn flow_table(&self, capacity: u32, evicted_total: u64) {
        self.flow_capacity.set(capacity as i64);
        let delta = self.delta("flow_table/evicted".into(), evicted_total);
        self.evicted.inc_by(delta);
    }

    pub fn reloaded(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&ResultLabel { result }).inc();
        self.reload_ok.set(ok as i64);
        if ok {
            self.reload_time.set(unix_seconds());
        }
    }

    fn delta(&self, key: String, total: u64) -> u64 {
        let mut last = self.last.lock().expect("metrics lock");
        let prev = last.insert(key, total).unwrap_or(0);
        total.saturating_sub(prev)
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry)
            .expect("encoding to a String does not fail");
        s
    }

    /// The Prometheus text format 0.0.4, for scrapers and tools (promtool) that do not
    /// ask for OpenMetrics.
    pub fn encode_text(&self) -> String {
        openmetrics_to_text(&self.encode())
    }
}

fn unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// OpenMetrics names a counter family `x` and its sample `x_total`; the older text
/// format names both `x_total` and has no `# EOF`. Gauges and histograms are the same.
fn openmetrics_to_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((p, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let name = if counters.contains(name) {
                    format!("{name}_total")
                } else {
                    name.to_string()
                };
                out.push_str(&format!("{p}{name} {tail}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// Counts every event on its way to another sink (`sink::Filtered`).
impl Filter for Arc<Metrics> {
    fn apply<'e>(&mut self, ev: &'e Event) -> std::borrow::Cow<'e, Event> {
        self.event(ev);
        std::borrow::Cow::Borrowed(ev)
    }
}

/// `[metrics]` TLS and HTTP basic auth. Either, both or neither.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebConfig {
    /// PEM certificate chain (the server's first) and its PEM private key.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The one user, and a file holding its password (one line; a trailing newline is
    /// not part of it).
    pub basic_auth_user: Option<String>,
    pub basic_auth_password_file: Option<PathBuf>,
}

/// What [`WebConfig`] loads into at start.
struct Access {
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// `user:password`, as a client's `Authorization: Basic` must decode to.
    credentials: Option<Vec<u8>>,
}

impl WebConfig {
    /// Reads the certificate, key and password files as the endpoint will at start
    /// (`hbwatch config --check`).
    pub fn check(&self) -> anyhow::Result<()> {
        self.load().map(|_| ())
    }

    /// Reads the files: a missing or bad one stops the agent at start.
    fn load(&self) -> anyhow::Result<Access> {
        use anyhow::Context as _;
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let tls = match (&self.tls_cert, &self.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .with_context(|| format!("metrics.tls_cert {}", cert.display()))?;
                anyhow::ensure!(
                    !chain.is_empty(),
                    "metrics.tls_cert {}: no certificate in it",
                    cert.display()
                );
                let key = PrivateKeyDer::from_pem_file(key)
                    .with_context(|| format!("metrics.tls_key {}", key.display()))?;
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let mut config = rustls::ServerConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()?
                    .with_no_client_auth()
                    .with_single_cert(chain, key)
                    .context("metrics.tls_cert and metrics.tls_key do not go together")?;
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
            }
            _ => anyhow::bail!("metrics.tls_cert and metrics.tls_key go together"),
        };
        let credentials = match (&self.basic_auth_user, &self.basic_auth_password_file) {
            (None, None) => None,
            (Some(user), Some(file)) => {
                anyhow::ensure!(
                    !user.is_empty() && !user.contains(':'),
                    "metrics.basic_auth_user {user:?}: not empty, no ':'"
                );
                let text = std::fs::read_to_string(file).with_context(|| {
                    format!("metrics.basic_auth_password_file {}", file.display())
                })?;
                let password = text
                    .strip_suffix('\n')
                    .map(|p| p.strip_suffix('\r').unwrap_or(p))
                    .unwrap_or(&text);
                anyhow::ensure!(
                    !password.is_empty(),
                    "metrics.basic_auth_password_file {}: empty",
                    file.display()
                );
                Some(format!("{user}:{password}").into_bytes())
            }
            _ => anyhow::bail!(
                "metrics.basic_auth_user and metrics.basic_auth_password_file go together"
            ),
        };
        Ok(Access { tls, credentials })
    }
}

/// Serves `GET /metrics` on `addr` from a tokio task, over TLS and behind basic auth
/// when `web` says so. Binding and reading the TLS and password files happen now, so a
/// busy address or a bad file is an error at start, not a warning later.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    web: &WebConfig,
) -> anyhow::Result<SocketAddr> {
    let access = Arc::new(web.load().map_err(|e| anyhow::anyhow!("metrics: {e:#}"))?);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("metrics: cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    if !bound.ip().is_loopback() {
        warn!("metrics: listening on {bound}, reachable from other hosts (use 127.0.0.1 to keep it local)");
    }
    let scheme = if access.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let auth = if access.credentials.is_some() {
        " (basic auth)"
    } else {
        ""
    };
    info!("metrics: {scheme}://{bound}/metrics{auth}");
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            let access = access.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    match &access.tls {
                        Some(tls) => match tls.accept(conn).await {
                            Ok(conn) => answer(conn, &metrics, &access).await,
                            Err(e) => {
                                tracing::debug!("metrics: TLS handshake: {e}");
                                Ok(())
                            }
                        },
                        None => answer(conn, &metrics, &access).await,
                    }
                })
                .await;
            });
        }
    });
    Ok(bound)
}

/// Whether the request head carries `Authorization: Basic` with the credentials (the
/// comparison takes the same time wherever the first difference is).
fn authorized(head: &[u8], credentials: &[u8]) -> bool {
    use base64::Engine as _;
    let text = String::from_utf8_lossy(head);
    let Some(value) = text.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("authorization")
            .then(|| value.trim())
    }) else {
        return false;
    };
    let Some((scheme, token)) = value.split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(token.trim()) else {
        return false;
    };
    given.len() == credentials.len()
        && given
            .iter()
            .zip(credentials)
            .fold(0u8, |d, (a, b)| d | (a ^ b))
            == 0
}

/// One HTTP/1.x request: GET /metrics or 404 (401 without the right basic auth). The
/// request head is capped at 8 KiB.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    mut conn: S,
    metrics: &Metrics,
    access: &Access,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).await?;
        if n == 0 || head.len() + n > 8192 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let path = path.split(|&b| b == b'?').next().unwrap_or_default();
    let openmetrics = String::from_utf8_lossy(&head).lines().any(|l| {
        l.to_ascii_lowercase().starts_with("accept:") && l.contains("application/openmetrics-text")
    });
    let denied = access
        .credentials
        .as_deref()
        .is_some_and(|c| !authorized(&head, c));
    let (status, ctype, body) = match (method, path) {
        _ if denied => (
            "401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"hbwatch\", charset=\"UTF-8\"",
            "text/plain",
            "unauthorized\n".to_string(),
        ),
        (b"GET", b"/metrics") if openmetrics => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        (b"GET", b"/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.encode_text(),
        ),
        (b"GET", b"/") => (
            "200 OK",
            "text/plain; charset=utf-8",
            "hbwatch: metrics at /metrics\n".to_string(),
        ),
        (b"GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_string(),
        ),
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(resp.as_bytes()).await?;
    conn.write_all(body.as_bytes()).await?;
    conn.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use hbwatch_common::key::FlowKey;

    #[test]
    fn basic_auth_takes_exactly_the_credentials() {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let head = |auth: &str| format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{auth}\r\n\r\n");
        let ok = |auth: &str| authorized(head(auth).as_bytes(), b"prometheus:s3cret");
        assert!(ok(&format!(
            "Authorization: Basic {}",
            b64("prometheus:s3cret")
        )));
        assert!(ok(&format!(
            "authorization:  basic {}",
            b64("prometheus:s3cret")
        )));
        assert!(!ok(&format!(
            "Authorization: Basic {}",
            b64("prometheus:s3cres")
        )));
        assert!(!ok(&format!(
            "Authorization: Basic {}",
            b64("prometheus:s3cret2")
        )));
        assert!(!ok(&format!(
            "Authorization: Basic {}",
            b64("other:s3cret")
        )));
        assert!(!ok(&format!(
            "Authorization: Bearer {}",
            b64("prometheus:s3cret")
        )));
        assert!(!ok("Authorization: Basic !!!"));
        assert!(!ok("X-Other: 1"));
    }

    #[test]
    fn web_config_files_are_checked_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let web = WebConfig {
            basic_auth_user: Some("prometheus".into()),
            basic_auth_password_file: Some(pw.clone()),
            ..WebConfig::default()
        };
        let a = web.load().unwrap();
        assert_eq!(a.credentials.as_deref(), Some(&b"prometheus:s3cret"[..]));
        assert!(a.tls.is_none());
        let err = |w: WebConfig| format!("{:#}", w.load().err().unwrap());
        std::fs::write(&pw, "\n").unwrap();
        assert!(err(web.clone()).contains("empty"));
        assert!(err(WebConfig {
            basic_auth_password_file: Some(dir.path().join("missing")),
            ..web.clone()
        })
        .contains("missing"));
        assert!(err(WebConfig {
            basic_auth_user: None,
            ..web
        })
        .contains("go together"));
        assert!(err(WebConfig {
            tls_cert: Some(dir.path().join("nope.pem")),
            tls_key: Some(dir.path().join("nope.key")),
            ..WebConfig::default()
        })
        .contains("nope.pem"));
    }

    #[test]
    fn heartbeats_rtt_and_totals_are_exposed() {
        let m = Metrics::new();
        let raw = RawEvent {
            kind: EventKind::Heartbeat as u8,
            key: FlowKey {
                proto: Protocol::Ged125 as u8,
                ..FlowKey::default()
            },
            aux: BEAT_PAIRED,
            value: 2_000_000, // 2 ms
            ..RawEvent::default()
        };
        m.record(&raw);
        m.record(&raw);
        let mut totals = BTreeMap::new();
        totals.insert("packets", 10u64);
        m.kernel(&totals);
        totals.insert("packets", 25u64);
        m.kernel(&totals);
        let text = m.encode();
        assert!(
            text.contains("hbwatch_heartbeats_total{protocol=\"ged125\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("hbwatch_heartbeat_rtt_seconds_count{protocol=\"ged125\"} 2"),
            "{text}"
        );
        assert!(text.contains("hbwatch_datapath_packets_total 25"), "{text}");
        totals.insert("malformed", 3u64);
        totals.insert("ringbuf_lost", 7u64);
        m.kernel(&totals);
        let text = m.encode();
        assert!(
            text.contains("hbwatch_datapath_skipped_packets_total{reason=\"malformed\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("hbwatch_datapath_skipped_packets_total{reason=\"fragment\"} 0"),
            "{text}"
        );
        // Ring-buffer loss is events_lost's (fed by agent.events_lost), not a second metric.
        assert!(!text.contains("ringbuf_lost"), "{text}");
        assert!(
            text.contains("hbwatch_events_lost_total{where=\"kernel-ringbuf\"} 0"),
            "{text}"
        );
        assert!(text.contains("hbwatch_build_info{version="), "{text}");
        assert!(
            text.contains("hbwatch_config_last_reload_successful 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
        let plain = m.encode_text();
        assert!(
            plain.contains("# TYPE hbwatch_heartbeats_total counter\n"),
            "{plain}"
        );
        assert!(
            plain.contains("# HELP hbwatch_heartbeats_total Heartbeats"),
            "{plain}"
        );
        assert!(
            plain.contains("# TYPE hbwatch_heartbeat_rtt_seconds histogram\n"),
            "{plain}"
        );
        assert!(!plain.contains("# EOF"));
    }
}
