//! `loki+http://`, `loki+https://`: events pushed to Grafana Loki's push API.
//!
//! ```text
//! --output 'loki+https://user:password@loki.example.net/loki/api/v1/push?tenant=ops&ca=/etc/hbwatch/ca.pem'
//! --output 'loki+http://127.0.0.1:3100'                  (path defaults to /loki/api/v1/push)
//! ```
//!
//! | option | default | meaning |
//! |---|---|---|
//! | `encoding` | `protobuf` | `protobuf`: `logproto.PushRequest`, snappy block-compressed (`application/x-protobuf`); `json`: the documented JSON body |
//! | `tenant` | none | `X-Scope-OrgID` header (multi-tenant Loki) |
//! | `password_file` | none | basic-auth password read from this file (the user stays in the URL) |
//! | `bearer_token_file` | none | `Authorization: Bearer` with the token read from this file |
//! | `bearer_token` | none | the token inline (discouraged: command lines and configs show it; warned at start) |
//! | `header.NAME` | none | an extra request header `NAME: VALUE` (repeatable; not the ones hbwatch sets) |
//! | `header_file.NAME` | none | the same, its value read from a file (API keys) |
//! | `ca` | the system store | `loki+https`: PEM file of the only CA(s) to trust, replacing the system store |
//! | `cert`, `key` | none | `loki+https`: client certificate (chain) and its key, PEM, for mutual TLS |
//! | `batch_size` | `1MiB` | a batch is sent once its lines reach this size... |
//! | `batch_wait` | `1s` | ...or once its first event is this old |
//! | `queue_max` | `8MiB` | events held in memory; beyond, the oldest batches move to the spool |
//! | `spool` | `on` | `off`: no disk; what does not fit in memory or is left at exit is lost (counted) |
//! | `spool_max` | `256MiB` | bound of the on-disk spool (compressed bytes); beyond it new events are dropped (counted) |
//! | `timeout` | `10s` | one push request, connect to answer |
//! | `min_backoff`, `max_backoff` | `500ms`, `30s` | retry pauses: doubling, jittered, capped |
//! | `metadata` | `on` | `off`: no structured metadata (Loki before 3.0, or schemas below v13 that refuse it) |
//!
//! User and password in the URL become HTTP basic auth (percent-encode `@`, `:` and `/`
//! in them). Secrets can stay out of the URL: `password_file`, `bearer_token_file`,
//! `header_file.NAME` and `key` name files read once at start, and a relative name is taken
//! in `$CREDENTIALS_DIRECTORY` when it is set (systemd `LoadCredential=`, see
//! [`credential_path`]). A secret file holds one line. The system store is what
//! rustls-native-certs finds: `SSL_CERT_FILE`/`SSL_CERT_DIR` when set, else the
//! distribution's bundle.
//!
//! Stream labels are few and fixed, so Loki's index stays small: `job` (`hbwatch`),
//! `host` (the observer host name), `protocol` (`network.protocol`, `agent` for the agent's
//! own events), `level` (`log.level`), plus the static labels of the configuration. The
//! line is the whole JSON event; its `@timestamp` is the entry's timestamp. Per-event
//! values that would explode the label index go to structured metadata instead:
//! `event_action`, `source_ip`, `source_port`, `destination_ip`, `destination_port`,
//! `heartbeat_diagnosis`.
//!
//! Delivery: `send` only appends to a batch in memory; a worker thread pushes batches in
//! order. 429, 408, 5xx and transport errors are retried (capped exponential backoff with
//! jitter, `Retry-After` honoured); other 4xx answers are final: the batch is dropped,
//! counted, and Loki's answer logged. Undeliverable batches, and batches that do not fit
//! in memory, wait in the spool (`<spool dir>/<output name>/`, see [`spool`]), which a
//! later agent delivers first. A spooled batch is deleted only after Loki answered 2xx.
//! `close(timeout)` delivers until the timeout, then spools what is left.
//! docs/outputs/loki.md has the user-facing version.

pub mod proto;

use std::time::Duration;

pub use self::proto::Encoding;
use self::proto::{
    format_labels, valid_label_name, EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter,
    Timestamp,
};
pub use super::queue::auth::{credential_path, read_secret, redact, Secret};
pub use super::queue::spool;
use super::queue::{http, on_off, Outcome, Payload, Pipeline, QueueOptions, Transport};
use super::SinkContext;
use crate::event::{Event, Level};
use crate::sink::{Sink, SinkStats};

/// Path of the push API when the URL has none.
pub const DEFAULT_PATH: &str = "/loki/api/v1/push";

/// Spool file names end so: each holds a snappy-compressed protobuf push body.
pub const SPOOL_SUFFIX: &str = ".pb.snappy";

/// Loki's own options (the shared ones: [`super::queue::QUEUE_KEYS`]).
const KNOWN: &[&str] = &["encoding", "tenant", "metadata"];

/// A parsed `loki+http(s)://` output.
#[derive(Debug, Clone, PartialEq)]
pub struct LokiOptions {
    /// `loki+http://host:port[/path][?tenant=..]`: no credentials (logs, `where` of
    /// `agent.events_lost`, the spool directory's name).
    pub name: String,
    /// Endpoint, credentials, CA, batching, spool, timeouts, backoff.
    pub queue: QueueOptions,
    pub tenant: Option<String>,
    pub encoding: Encoding,
    pub metadata: bool,
}

/// Loki's (Cortex's) rule for tenant IDs.
fn valid_tenant(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 150
        && t != "."
        && t != ".."
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || "!-_.*'()".contains(c))
}

impl LokiOptions {
    pub fn parse(url: &url::Url) -> Result<LokiOptions, String> {
        let (queue, parts) = QueueOptions::from_url(url, "loki", "Loki", DEFAULT_PATH)?;
        let mut o = LokiOptions {
            name: String::new(),
            queue,
            tenant: None,
            encoding: Encoding::Protobuf,
            metadata: true,
        };
        let pairs = o.queue.take_options(url, KNOWN)?;
        for (k, v) in pairs {
            let bad = |why: String| format!("option {k}={v:?}: {why}");
            match k.as_str() {
                "encoding" => {
                    o.encoding = match v.as_str() {
                        "protobuf" => Encoding::Protobuf,
                        "json" => Encoding::Json,
                        _ => return Err(bad("expected protobuf or json".into())),
                    }
                }
                "tenant" => {
                    if !valid_tenant(&v) {
                        return Err(bad(
                            "a tenant ID is 1 to 150 of a-z A-Z 0-9 ! - _ . * ' ( )".into(),
                        ));
                    }
                    o.tenant = Some(v.clone());
                }
                "metadata" => o.metadata = on_off(&v).map_err(bad)?,
                _ => unreachable!("query_pairs lets only known options through"),
            }
        }
        o.queue.check(&parts, "loki")?;
        // X-Scope-OrgID given as a header is the tenant, under the same rule.
        let org_header = o
            .queue
            .header_names()
            .any(|n| n.eq_ignore_ascii_case("x-scope-orgid"));
        if org_header && o.tenant.is_some() {
            return Err("tenant and header.X-Scope-OrgID: give one".into());
        }
        if let Some((k, v)) = o
            .queue
            .headers
            .iter()
            .find(|h| h.0.eq_ignore_ascii_case("x-scope-orgid"))
        {
            if !valid_tenant(&v.0) {
                return Err(format!(
                    "option header.{k}={:?}: a tenant ID is 1 to 150 of a-z A-Z 0-9 ! - _ . * ' ( )",
                    v.0
                ));
            }
        }
        o.name = format!(
            "{}://{}{}{}",
            url.scheme(),
            parts.authority,
            if parts.path == DEFAULT_PATH {
                ""
            } else {
                &parts.path
            },
            o.tenant
                .as_ref()
                .or_else(|| o
                    .queue
                    .headers
                    .iter()
                    .find(|h| h.0.eq_ignore_ascii_case("x-scope-orgid"))
                    .map(|h| &h.1 .0))
                .map_or(String::new(), |t| format!("?tenant={t}"))
        );
        Ok(o)
    }

    /// The spool directory's name: the output name with anything but `[A-Za-z0-9.-]`
    /// replaced by `_`.
    pub fn spool_name(&self) -> String {
        super::queue::spool_name(&self.name)
    }
}

fn level_name(l: Level) -> &'static str {
    match l {
        Level::Info => "info",
        Level::Warning => "warning",
        Level::Error => "error",
        Level::Critical => "critical",
    }
}

/// The fixed part of every stream's label set.
#[derive(Debug, Clone)]
struct Labeler {
    base: Vec<(String, String)>,
}

impl Labeler {
    fn new(ctx: &SinkContext) -> anyhow::Result<Labeler> {
        let host = if ctx.hostname.is_empty() {
            "unknown".to_string()
        } else {
            ctx.hostname.clone()
        };
        let mut base = vec![
            ("job".to_string(), ctx.job.clone()),
            ("host".to_string(), host),
        ];
        for (k, v) in &ctx.labels {
            if !valid_label_name(k) || k.starts_with("__") {
                anyhow::bail!(
                    "label {k:?}: a Loki label name is [a-zA-Z_][a-zA-Z0-9_]* and does not start with __"
                );
            }
            if ["job", "host", "protocol", "level"].contains(&k.as_str()) {
                anyhow::bail!("label {k:?} is set by hbwatch itself");
            }
            if v.is_empty() {
                anyhow::bail!("label {k:?} has an empty value (Loki would ignore it)");
            }
            base.push((k.clone(), v.clone()));
        }
        Ok(Labeler { base })
    }

    fn labels(&self, protocol: Option<&str>, level: Level) -> String {
        let mut pairs = self.base.clone();
        pairs.push(("protocol".into(), protocol.unwrap_or("agent").into()));
        pairs.push(("level".into(), level_name(level).into()));
        pairs.sort();
        format_labels(&pairs)
    }
}

/// Structured metadata of an event: what is per event and would make too many streams as
/// labels.
fn metadata(ev: &Event) -> Vec<LabelPairAdapter> {
    let pair = |name: &str, value: String| LabelPairAdapter {
        name: name.to_string(),
        value,
    };
    let mut md = vec![pair("event_action", ev.event.action.to_string())];
    if let Some(s) = &ev.source {
        md.push(pair("source_ip", s.ip.clone()));
        md.push(pair("source_port", s.port.to_string()));
    }
    if let Some(d) = &ev.destination {
        md.push(pair("destination_ip", d.ip.clone()));
        md.push(pair("destination_port", d.port.to_string()));
    }
    if let Some(d) = ev.heartbeat.diagnosis {
        md.push(pair("heartbeat_diagnosis", d.to_string()));
    }
    md
}

/// Stream key of an event: the labels that vary (`protocol`, `level`).
type StreamKey = (Option<&'static str>, Level);

/// A Loki batch: one stream per label set.
#[derive(Debug, Clone, Default)]
pub struct LokiBatch {
    req: PushRequest,
    keys: Vec<StreamKey>,
}

impl LokiBatch {
    fn add(&mut self, key: StreamKey, labels: impl FnOnce() -> String, entry: EntryAdapter) {
        let i = match self.keys.iter().position(|k| *k == key) {
            Some(i) => i,
            None => {
                self.keys.push(key);
                self.req.streams.push(StreamAdapter {
                    labels: labels(),
                    entries: Vec::new(),
                    hash: 0,
                });
                self.keys.len() - 1
            }
        };
        self.req.streams[i].entries.push(entry);
    }
}

impl Payload for LokiBatch {
    fn spool_body(&self) -> Vec<u8> {
        self.req.to_snappy()
    }
}

/// Pushes to Loki: 429, 408, 5xx and transport errors are worth a retry.
struct LokiTransport {
    client: http::Client,
    encoding: Encoding,
}

impl Transport for LokiTransport {
    type Batch = LokiBatch;

    fn body(&self, b: &LokiBatch) -> Result<Vec<u8>, String> {
        b.req.body(self.encoding)
    }

    fn spooled_body(&self, stored: Vec<u8>) -> Result<Vec<u8>, String> {
        match self.encoding {
            Encoding::Protobuf => Ok(stored),
            Encoding::Json => PushRequest::from_snappy(&stored).and_then(|r| r.to_json()),
        }
    }

    fn body_is_spool_body(&self) -> bool {
        self.encoding == Encoding::Protobuf
    }

    fn push(&self, body: &[u8], timeout: Duration) -> Outcome {
        match self
            .client
            .post(body, timeout, |s| matches!(s, 408 | 429 | 500..=599))
        {
            Ok(_) => Outcome::Delivered,
            Err(o) => o,
        }
    }
}

/// One Loki output.
pub struct LokiSink {
    pipe: Pipeline<LokiBatch>,
    labeler: Labeler,
    metadata: bool,
    line: Vec<u8>,
}

pub fn open(opts: &LokiOptions, ctx: &SinkContext) -> anyhow::Result<Box<dyn Sink + Send>> {
    Ok(Box::new(LokiSink::open(opts, ctx)?))
}

impl LokiSink {
    pub fn open(opts: &LokiOptions, ctx: &SinkContext) -> anyhow::Result<LokiSink> {
        let ctxerr = |e: anyhow::Error| e.context(format!("output {}", opts.name));
        let labeler = Labeler::new(ctx).map_err(ctxerr)?;
        let q = &opts.queue;
        let tenant = opts.tenant.iter();
        let tenant = tenant.map(|t| ("X-Scope-OrgID".to_string(), Secret(t.clone())));
        let client = q
            .client(&opts.name, opts.encoding.content_type(), tenant.collect())
            .map_err(ctxerr)?;
        let pipe = Pipeline::open(
            q.config(&opts.name, "Loki"),
            q,
            &ctx.spool_dir.join(opts.spool_name()),
            SPOOL_SUFFIX,
            LokiTransport {
                client,
                encoding: opts.encoding,
            },
            "loki-push",
        )?;
        Ok(LokiSink {
            pipe,
            labeler,
            metadata: opts.metadata,
            line: Vec::with_capacity(1024),
        })
    }

    fn entry(&mut self, ev: &Event) -> anyhow::Result<(EntryAdapter, u64)> {
        self.line.clear();
        ev.write_line(&mut self.line);
        if self.line.last() == Some(&b'\n') {
            self.line.pop();
        }
        let line = String::from_utf8(self.line.clone())?;
        let ns = self.pipe.event_time_ns(&ev.timestamp);
        let md = if self.metadata {
            metadata(ev)
        } else {
            Vec::new()
        };
        let bytes = line.len() as u64
            + md.iter()
                .map(|p| (p.name.len() + p.value.len()) as u64)
                .sum::<u64>();
        Ok((
            EntryAdapter {
                timestamp: Some(Timestamp::from_unix_nanos(ns)),
                line,
                structured_metadata: md,
            },
            bytes,
        ))
    }
}

impl Sink for LokiSink {
    fn send(&mut self, ev: &Event) -> anyhow::Result<()> {
        let (entry, bytes) = self.entry(ev)?;
        let key = (ev.network.as_ref().map(|n| n.protocol), ev.log.level);
        let labeler = &self.labeler;
        self.pipe.add(bytes, |b| {
            b.add(key, || labeler.labels(key.0, key.1), entry)
        })
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.pipe.flush();
        Ok(())
    }

    fn close(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.pipe.close(timeout);
        Ok(())
    }

    fn name(&self) -> String {
        self.pipe.name().to_string()
    }

    fn stats(&self) -> SinkStats {
        self.pipe.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::spool::Spool;
    use super::*;
    use crate::sink::stdout::Format;
    use crate::sink::SinkSpec;
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::Instant;

    fn parse(s: &str) -> Result<LokiOptions, String> {
        LokiOptions::parse(&url::Url::parse(s).unwrap())
    }

    fn err(s: &str) -> String {
        parse(s).expect_err(s)
    }

    #[test]
    fn defaults() {
        let o = parse("loki+http://127.0.0.1:3100").unwrap();
        assert_eq!(o.queue.endpoint, "http://127.0.0.1:3100/loki/api/v1/push");
        assert_eq!(o.name, "loki+http://127.0.0.1:3100");
        assert_eq!(o.encoding, Encoding::Protobuf);
        assert_eq!(
            (o.queue.batch_size, o.queue.queue_max, o.queue.spool_max),
            (1 << 20, 8 << 20, 256 << 20)
        );
        assert_eq!(o.queue.batch_wait, Duration::from_secs(1));
        assert!(o.queue.spool && o.metadata);
        assert_eq!(
            (
                o.queue.user.as_deref(),
                o.tenant.as_deref(),
                o.queue.ca.as_ref()
            ),
            (None, None, None)
        );
        assert_eq!(o.spool_name(), "loki_http___127.0.0.1_3100");
        // A trailing slash is no path either.
        assert_eq!(
            parse("loki+http://loki:3100/").unwrap().queue.endpoint,
            "http://loki:3100/loki/api/v1/push"
        );
        assert_eq!(
            parse("loki+http://[::1]:3100").unwrap().queue.endpoint,
            "http://[::1]:3100/loki/api/v1/push"
        );
    }

    #[test]
    fn every_option() {
        let o = parse(
            "loki+https://ops%40corp:p%3Ass%2Fw@logs.example.net/custom/push?tenant=team-a&encoding=json\
             &ca=/etc/hbwatch/ca.pem&batch_size=64KiB&batch_wait=250ms&queue_max=1MiB&spool=off\
             &spool_max=1GiB&timeout=3s&min_backoff=50ms&max_backoff=5s&metadata=off",
        )
        .unwrap();
        assert_eq!(o.queue.endpoint, "https://logs.example.net/custom/push");
        assert_eq!(
            o.name,
            "loki+https://logs.example.net/custom/push?tenant=team-a"
        );
        assert_eq!(o.queue.user.as_deref(), Some("ops@corp"));
        assert_eq!(o.queue.password, Some(Secret("p:ss/w".into())));
        assert_eq!(o.tenant.as_deref(), Some("team-a"));
        assert_eq!(o.queue.ca, Some(PathBuf::from("/etc/hbwatch/ca.pem")));
        assert_eq!(o.encoding, Encoding::Json);
        assert_eq!(
            (o.queue.batch_size, o.queue.queue_max, o.queue.spool_max),
            (64 << 10, 1 << 20, 1 << 30)
        );
        assert_eq!(o.queue.batch_wait, Duration::from_millis(250));
        assert_eq!(o.queue.timeout, Duration::from_secs(3));
        assert_eq!(
            (o.queue.min_backoff, o.queue.max_backoff),
            (Duration::from_millis(50), Duration::from_secs(5))
        );
        assert!(!o.queue.spool && !o.metadata);
        // The password stays out of logs and debug output.
        let dbg = format!("{o:?}");
        assert!(!dbg.contains("p:ss") && dbg.contains("***"), "{dbg}");
        assert!(!o.name.contains("ops"), "{}", o.name);
        // A batch larger than the default memory queue raises the queue to one batch.
        assert_eq!(
            parse("loki+http://l:1?batch_size=20MiB")
                .unwrap()
                .queue
                .queue_max,
            20 << 20
        );
    }

    #[test]
    fn each_bad_key_or_value_says_what_is_wrong() {
        let cases = [
            (
                "loki+http://l:1?encodng=json",
                "unknown option \"encodng\" (known: encoding, tenant",
            ),
            (
                "loki+http://l:1?encoding=xml",
                "option encoding=\"xml\": expected protobuf or json",
            ),
            (
                "loki+http://l:1?tenant=a%20b",
                "option tenant=\"a b\": a tenant ID is",
            ),
            (
                "loki+http://l:1?tenant=",
                "option tenant=\"\": a tenant ID is",
            ),
            (
                "loki+http://l:1?ca=/x.pem",
                "option ca only applies to loki+https",
            ),
            ("loki+https://l:1?ca=", "option ca=\"\": expected the path"),
            (
                "loki+http://l:1?batch_size=big",
                "option batch_size=\"big\": \"big\" is not a size",
            ),
            (
                "loki+http://l:1?batch_size=0",
                "option batch_size=\"0\": must be more than 0",
            ),
            (
                "loki+http://l:1?batch_wait=1y",
                "option batch_wait=\"1y\": \"1y\": unknown duration unit",
            ),
            (
                "loki+http://l:1?queue_max=1KiB&batch_size=4KiB",
                "queue_max (1024) must be at least batch_size (4096)",
            ),
            (
                "loki+http://l:1?spool=maybe",
                "option spool=\"maybe\": expected on or off",
            ),
            (
                "loki+http://l:1?spool_max=1TB",
                "option spool_max=\"1TB\": \"1TB\": unknown size unit",
            ),
            (
                "loki+http://l:1?timeout=0s",
                "option timeout=\"0s\": must be more than 0",
            ),
            (
                "loki+http://l:1?min_backoff=10s&max_backoff=1s",
                "min_backoff (10s) is more than max_backoff (1s)",
            ),
            (
                "loki+http://l:1?metadata=yesplease",
                "option metadata=\"yesplease\": expected on or off",
            ),
            (
                "loki+http://l:1?spool=on&spool=off",
                "option spool given twice",
            ),
            ("loki+http://l:1#frag", "a #fragment has no meaning"),
            ("loki+http:///loki/api/v1/push", "no host"),
            ("loki+http://:secret@l:1", "a password without a user name"),
        ];
        for (url, want) in cases {
            let e = err(url);
            assert!(e.contains(want), "{url}: got {e:?}, want {want:?}");
        }
        // Through --output, the message names the URL.
        let e = "loki+http://l:1?batch_wait=soon"
            .parse::<SinkSpec>()
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("output \"loki+http://l:1?batch_wait=soon\": option batch_wait"),
            "{e}"
        );
    }

    #[test]
    fn auth_header_and_client_certificate_options() {
        let o = parse(
            "loki+https://l:1?bearer_token_file=loki-token&header.X-Team=blue\
             &header_file.X-Api-Key=/run/keys/api&cert=client.pem&key=client.key&ca=/ca.pem",
        )
        .unwrap();
        assert_eq!(o.queue.bearer_token_file, Some(PathBuf::from("loki-token")));
        assert_eq!(
            o.queue.headers,
            [("X-Team".to_string(), Secret("blue".into()))]
        );
        assert_eq!(
            o.queue.header_files,
            [("X-Api-Key".to_string(), PathBuf::from("/run/keys/api"))]
        );
        assert_eq!(
            (o.queue.cert.as_deref(), o.queue.key.as_deref()),
            (
                Some(std::path::Path::new("client.pem")),
                Some(std::path::Path::new("client.key"))
            )
        );
        // Neither the headers nor the token's file name make the output's name.
        assert_eq!(o.name, "loki+https://l:1");
        // The tenant does, whichever way it is given (two tenants, two spools).
        assert_eq!(
            parse("loki+http://l:1?header.X-Scope-OrgID=team-b&header.X-A=1")
                .unwrap()
                .name,
            "loki+http://l:1?tenant=team-b"
        );
        let o = parse("loki+https://ops@l:1?password_file=/etc/hbwatch/loki-pass").unwrap();
        assert_eq!(
            o.queue.password_file,
            Some(PathBuf::from("/etc/hbwatch/loki-pass"))
        );
        // An inline token and header values are secrets: not in Debug output.
        let o = parse("loki+http://l:1?bearer_token=tok3n&header.X-Key=k3y").unwrap();
        let dbg = format!("{o:?}");
        assert!(!dbg.contains("tok3n") && !dbg.contains("k3y"), "{dbg}");
        assert_eq!(
            o.queue.authorization().unwrap(),
            Some(Secret("Bearer tok3n".into()))
        );
        let o = parse("loki+http://l:1?tenant=t&header.X-A=1").unwrap();
        assert_eq!(o.tenant.as_deref(), Some("t"));
        assert_eq!(
            o.queue.header_values().unwrap(),
            [("X-A".to_string(), Secret("1".into()))]
        );
    }

    #[test]
    fn secrets_stay_out_of_parse_errors() {
        for (url, want) in [
            (
                "loki+http://l:1?bearer_token=s3cr%0At",
                "option bearer_token: more than one line",
            ),
            (
                "loki+http://l:1?header.X-K=s3cr%0D",
                "option header.X-K: more than one line",
            ),
            (
                "loki+http://u:s3cr@l:1?bearer_token=t",
                "basic auth (user in the URL) and a bearer token",
            ),
        ] {
            let e = url.parse::<SinkSpec>().unwrap_err().to_string();
            assert!(e.contains(want), "{url}: {e}");
            assert!(!e.contains("s3cr"), "{e}");
        }
        let e = "loki+http://l:1?bearer_token=s3cr&header.X-K=s3cr&batch_wait=x"
            .parse::<SinkSpec>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("bearer_token=***") && !e.contains("s3cr"), "{e}");
    }

    #[test]
    fn auth_and_tls_option_errors() {
        let cases = [
            (
                "loki+http://l:1?header.=x",
                "option header.: \"\" is not an HTTP header name",
            ),
            (
                "loki+http://l:1?header.X%20Y=x",
                "\"X Y\" is not an HTTP header name",
            ),
            (
                "loki+http://l:1?header.content-type=x",
                "hbwatch sets content-type itself",
            ),
            (
                "loki+http://l:1?header.Authorization=x",
                "hbwatch sets Authorization itself",
            ),
            (
                "loki+http://l:1?header.X-A=1&header.x-a=2",
                "header x-a given twice",
            ),
            ("loki+http://l:1?header.X-A=", "option header.X-A: empty"),
            (
                "loki+http://l:1?header_file.X-A=",
                "expected the path of a file",
            ),
            (
                "loki+http://l:1?header.x-scope-orgid=a%20b",
                "option header.x-scope-orgid=\"a b\": a tenant ID is",
            ),
            (
                "loki+http://l:1?tenant=a&header.X-Scope-OrgID=b",
                "tenant and header.X-Scope-OrgID",
            ),
            (
                "loki+http://l:1?cert=/c.pem&key=/k.pem",
                "option cert only applies to loki+https",
            ),
            (
                "loki+https://l:1?cert=/c.pem",
                "options cert and key go together",
            ),
            (
                "loki+https://l:1?key=/k.pem",
                "options cert and key go together",
            ),
            (
                "loki+https://l:1?key=",
                "option key=\"\": expected the path of a file",
            ),
            (
                "loki+http://l:1?password_file=/p",
                "password_file without a user name",
            ),
            (
                "loki+http://u:p@l:1?password_file=/p",
                "a password in the URL and password_file",
            ),
            (
                "loki+http://l:1?bearer_token=a&bearer_token_file=/t",
                "bearer_token and bearer_token_file",
            ),
            (
                "loki+http://u@l:1?bearer_token_file=/t",
                "basic auth (user in the URL) and a bearer token",
            ),
            (
                "loki+http://l:1?bearer_token=",
                "option bearer_token: empty",
            ),
            (
                "loki+http://l:1?headers.X=1",
                "unknown option \"headers.X\"",
            ),
        ];
        for (url, want) in cases {
            let e = err(url);
            assert!(e.contains(want), "{url}: got {e:?}, want {want:?}");
        }
    }

    #[test]
    fn secret_files_are_read_and_their_problems_named() {
        let dir = tempdir("secret");
        std::fs::create_dir_all(&dir).unwrap();
        let f = |name: &str, content: &[u8]| {
            let p = dir.join(name);
            std::fs::write(&p, content).unwrap();
            p
        };
        assert_eq!(
            read_secret("bearer_token_file", &f("ok", b"t0ken\n")).unwrap(),
            Secret("t0ken".into())
        );
        assert_eq!(
            read_secret("password_file", &f("crlf", b"p w\r\n")).unwrap(),
            Secret("p w".into())
        );
        // A password is any one line (it is sent base64-encoded); a header value is ASCII.
        let p = f("utf8", " mot de passe é \n".as_bytes());
        assert_eq!(
            read_secret("password_file", &p).unwrap(),
            Secret(" mot de passe é ".into())
        );
        let e = read_secret("header_file.X-K", &p).unwrap_err().to_string();
        assert!(e.contains("cannot carry"), "{e}");
        for (name, content, want) in [
            ("empty", &b""[..], "empty"),
            ("blank", b"\n", "empty"),
            ("two", b"s3cret\nmore\n", "more than one line"),
            ("bin", b"s3cret\xff", "not UTF-8 text"),
        ] {
            let p = f(name, content);
            let e = format!("{:#}", read_secret("bearer_token_file", &p).unwrap_err());
            assert!(
                e.starts_with(&format!("bearer_token_file={}: ", p.display())) && e.contains(want),
                "{name}: {e}"
            );
            assert!(!e.contains("s3cret"), "{e}");
        }
        let e = read_secret("password_file", &dir.join("missing")).unwrap_err();
        assert!(e.to_string().contains("No such file"), "{e}");
        // The options read their files when the output opens.
        let o = parse(&format!(
            "loki+http://ops@l:1?password_file={}&header_file.X-Key={}",
            dir.join("ok").display(),
            dir.join("crlf").display()
        ))
        .unwrap();
        assert_eq!(
            o.queue.authorization().unwrap(),
            Some(Secret("Basic b3BzOnQwa2Vu".into()))
        );
        assert_eq!(
            o.queue.header_values().unwrap(),
            [("X-Key".to_string(), Secret("p w".into()))]
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    fn ctx(spool_dir: PathBuf) -> SinkContext {
        let mut c = SinkContext::new("probe-1".into(), Format::Json);
        c.spool_dir = spool_dir;
        c
    }

    #[test]
    fn labels_are_few_and_fixed() {
        let mut c = ctx(PathBuf::from("/nonexistent"));
        c.labels.insert("site".into(), "par\"1".into());
        let l = Labeler::new(&c).unwrap();
        assert_eq!(
            l.labels(Some("mds"), Level::Warning),
            r#"{host="probe-1", job="hbwatch", level="warning", protocol="mds", site="par\"1"}"#
        );
        assert_eq!(
            l.labels(None, Level::Critical),
            r#"{host="probe-1", job="hbwatch", level="critical", protocol="agent", site="par\"1"}"#
        );
        for (k, v, want) in [
            ("level", "x", "set by hbwatch itself"),
            ("site-id", "x", "a Loki label name is"),
            ("__name__", "x", "a Loki label name is"),
            ("site", "", "empty value"),
        ] {
            let mut c = ctx(PathBuf::from("/nonexistent"));
            c.labels.insert(k.into(), v.into());
            let e = Labeler::new(&c).unwrap_err().to_string();
            assert!(e.contains(want), "{k}={v}: {e}");
        }
    }

    fn event(i: u64) -> Event {
        crate::event::mds_alert(
            crate::event::rfc3339_micros(1_795_341_600_000_000_000 + i as i128 * 1_000_000),
            crate::event::Action::HeartbeatGap,
            Level::Warning,
            "probe-1",
            format!("mds 10.50.0.1 -> 10.50.0.2: event {i}"),
        )
    }

    #[test]
    fn entries_carry_the_event_time_line_and_metadata() {
        let dir = tempdir("entry");
        let o = parse("loki+http://127.0.0.1:9?spool=off").unwrap();
        let mut sink = LokiSink::open(&o, &ctx(dir.clone())).unwrap();
        let (e, bytes) = sink.entry(&event(5)).unwrap();
        assert_eq!(e.timestamp.unwrap().unix_nanos(), 1_795_341_600_005_000_000);
        assert_eq!(format!("{}\n", e.line), event(5).to_line());
        let md: Vec<(&str, &str)> = e
            .structured_metadata
            .iter()
            .map(|p| (p.name.as_str(), p.value.as_str()))
            .collect();
        assert_eq!(
            md,
            [
                ("event_action", "heartbeat.gap"),
                ("source_ip", "10.50.0.1"),
                ("source_port", "41000"),
                ("destination_ip", "10.50.0.2"),
                ("destination_port", "41000"),
                ("heartbeat_diagnosis", "path-interruption")
            ]
        );
        assert!(bytes > e.line.len() as u64);
        sink.close(Duration::ZERO).unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "hbwatch-loki-{tag}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// A port nothing listens on: every push is a refused connection.
    fn dead_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// Loki down, spool bounded: every event is delivered, spooled, or counted as dropped,
    /// the spool never exceeds its bound, and drops start only once memory and spool are full.
    #[test]
    fn spool_bound_holds_and_every_event_is_accounted_for() {
        let dir = tempdir("bound");
        let o = parse(&format!(
            "loki+http://127.0.0.1:{}?batch_size=2KiB&queue_max=4KiB&spool_max=16KiB&min_backoff=5ms&max_backoff=20ms",
            dead_port()
        ))
        .unwrap();
        let mut sink = LokiSink::open(&o, &ctx(dir.clone())).unwrap();
        let n = 2000;
        for i in 0..n {
            sink.send(&event(i)).unwrap();
            assert!(sink.stats().spool_bytes <= 16 << 10);
        }
        let st = sink.stats();
        assert!(st.dropped > 0, "{st:?}");
        assert!(st.spool_bytes > 8 << 10, "the spool filled up: {st:?}");
        sink.close(Duration::from_millis(50)).unwrap();
        let st = sink.stats();
        drop(sink);
        let spool = Spool::open(&dir.join(o.spool_name()), u64::MAX, SPOOL_SUFFIX).unwrap();
        assert_eq!(st.delivered, 0);
        assert_eq!(st.queued, 0);
        assert_eq!(spool.bytes(), st.spool_bytes);
        assert_eq!(
            st.dropped + spool.events(),
            n,
            "{st:?}, {} spooled",
            spool.events()
        );
        assert!(st.retries > 0);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn open_errors_name_the_problem() {
        let dir = tempdir("openerr");
        let o = parse("loki+https://l:1?ca=/nonexistent/ca.pem").unwrap();
        let e = LokiSink::open(&o, &ctx(dir.clone())).err().unwrap();
        let e = format!("{e:#}");
        assert!(e.contains("ca=/nonexistent/ca.pem: No such file"), "{e}");
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, b"not a certificate\n").unwrap();
        let bad = dir.join("bad.pem");
        std::fs::write(
            &bad,
            b"-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        for (q, want) in [
            (format!("ca={}", junk.display()), "no PEM certificate"),
            (
                format!("ca={}", bad.display()),
                "certificate 1 is not a usable CA certificate",
            ),
            (
                format!("cert={}&key={}", junk.display(), junk.display()),
                "cert=",
            ),
        ] {
            let o = parse(&format!("loki+https://l:1?{q}")).unwrap();
            let e = match LokiSink::open(&o, &ctx(dir.clone())) {
                Ok(_) => panic!("{q}: opened"),
                Err(e) => format!("{e:#}"),
            };
            assert!(e.contains(want), "{q}: {e}");
        }
        // A spool directory that cannot be created (its parent is a file).
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("file"), b"").unwrap();
        let o = parse("loki+http://l:1").unwrap();
        let e = LokiSink::open(&o, &ctx(dir.join("file"))).err().unwrap();
        let e = format!("{e:#}");
        assert!(
            e.contains("spool directory") && e.contains("spool=off"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Answers every HTTP request on `listener` with 204, counting them.
    fn accept_all(listener: std::net::TcpListener) -> Arc<std::sync::atomic::AtomicU64> {
        use std::io::{BufRead, Read, Write};
        let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let c = count.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let c = c.clone();
                std::thread::spawn(move || {
                    let mut r = std::io::BufReader::new(conn);
                    loop {
                        let mut len = 0;
                        let mut line = String::new();
                        loop {
                            line.clear();
                            if r.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            let l = line.to_ascii_lowercase();
                            if let Some(v) = l.strip_prefix("content-length:") {
                                len = v.trim().parse().unwrap();
                            }
                            if line == "\r\n" {
                                break;
                            }
                        }
                        let mut body = vec![0; len];
                        r.read_exact(&mut body).unwrap();
                        c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let _ = r
                            .get_mut()
                            .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
                    }
                });
            }
        });
        count
    }

    /// Loki comes back during a long backoff pause: `close` tries at once instead of
    /// sleeping through its timeout.
    #[test]
    fn close_cuts_a_backoff_pause_short() {
        let dir = tempdir("cut");
        let port = dead_port();
        let o = parse(&format!(
            "loki+http://127.0.0.1:{port}?batch_wait=0s&min_backoff=20s&max_backoff=30s"
        ))
        .unwrap();
        let mut sink = LokiSink::open(&o, &ctx(dir.clone())).unwrap();
        sink.send(&event(1)).unwrap();
        let t = Instant::now();
        while sink.stats().retries == 0 {
            assert!(t.elapsed() < Duration::from_secs(5), "no push attempt");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Now in a pause of 10 to 20 s; Loki comes up.
        let pushes = accept_all(std::net::TcpListener::bind(("127.0.0.1", port)).unwrap());
        let t = Instant::now();
        sink.close(Duration::from_secs(8)).unwrap();
        assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
        let st = sink.stats();
        assert_eq!(
            (st.delivered, st.dropped, st.spool_bytes),
            (1, 0, 0),
            "{st:?}"
        );
        assert_eq!(pushes.load(std::sync::atomic::Ordering::SeqCst), 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Without a spool, what Loki never took is lost at close, and counted.
    #[test]
    fn without_spool_undelivered_events_are_counted_at_close() {
        let dir = tempdir("nospool");
        let o = parse(&format!(
            "loki+http://127.0.0.1:{}?spool=off&min_backoff=5ms&max_backoff=20ms",
            dead_port()
        ))
        .unwrap();
        let mut sink = LokiSink::open(&o, &ctx(dir.clone())).unwrap();
        for i in 0..100 {
            sink.send(&event(i)).unwrap();
        }
        sink.close(Duration::from_millis(100)).unwrap();
        let st = sink.stats();
        assert_eq!(
            (st.delivered, st.dropped, st.queued, st.spool_bytes),
            (0, 100, 0, 0)
        );
        assert!(sink.send(&event(0)).is_err(), "closed");
        assert!(!dir.exists(), "spool=off writes nothing");
    }

    /// A Loki that accepts connections and never answers: `send` does not wait for it and
    /// `close` returns on time, keeping everything in the spool.
    #[test]
    fn a_hanging_loki_blocks_neither_send_nor_close() {
        let dir = tempdir("hang");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let o = parse(&format!(
            "loki+http://127.0.0.1:{port}?batch_size=4KiB&timeout=30s"
        ))
        .unwrap();
        let mut sink = LokiSink::open(&o, &ctx(dir.clone())).unwrap();
        let t = Instant::now();
        for i in 0..5_000 {
            sink.send(&event(i)).unwrap();
        }
        let sending = t.elapsed();
        assert!(
            sending < Duration::from_secs(10),
            "send waited for the network: {sending:?}"
        );
        let t = Instant::now();
        sink.close(Duration::from_millis(300)).unwrap();
        let closing = t.elapsed();
        assert!(
            closing >= Duration::from_millis(250) && closing < Duration::from_secs(3),
            "{closing:?}"
        );
        let st = sink.stats();
        assert_eq!((st.delivered, st.dropped, st.queued), (0, 0, 0), "{st:?}");
        drop(sink);
        let spool = Spool::open(&dir.join(o.spool_name()), u64::MAX, SPOOL_SUFFIX).unwrap();
        assert_eq!(spool.events(), 5_000);
        drop(listener);
        let _ = std::fs::remove_dir_all(dir);
    }
}
