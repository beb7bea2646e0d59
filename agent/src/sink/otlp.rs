//! `otlp+http://`, `otlp+https://`: events as OpenTelemetry log records, OTLP/HTTP with a
//! protobuf body (`ExportLogsServiceRequest`, `application/x-protobuf`, POST).
//!
//! ```text
//! --output 'otlp+http://127.0.0.1:4318'                     (path defaults to /v1/logs)
//! --output 'otlp+https://user:password@otel.example.net/v1/logs?ca=/etc/hbwatch/ca.pem'
//! ```
//!
//! Options: those of every batching output ([`super::queue::QUEUE_KEYS`]: `password_file`,
//! `bearer_token_file`, `bearer_token`, `header.NAME`, `header_file.NAME`, `ca`, `cert`,
//! `key`, `batch_size`, `batch_wait`, `queue_max`, `spool`, `spool_max`, `timeout`,
//! `min_backoff`, `max_backoff`), with the Loki output's defaults and meaning
//! (`batch_size` and `queue_max` count encoded log record bytes; `https` trusts the system
//! store unless `ca=` is given).
//!
//! Mapping: one `LogRecord` per event. `time_unix_nano` is the event's `@timestamp`,
//! `observed_time_unix_nano` the time the agent handed it to the output;
//! `severity_number`/`severity_text` come from `log.level`: info is INFO (9), warning WARN
//! (13), error ERROR (17), critical FATAL (21: the peer is down, the worst hbwatch says);
//! `body` is `message`; `event_name` is `event.action`; every other field of the event
//! (including `log.level` and `event.action`) is an attribute under its dotted name
//! (`network.protocol`, `source.ip`, `heartbeat.seq`), typed: whole numbers as int, other
//! numbers as double, true/false as bool, lists as arrays. The resource says
//! `service.name=hbwatch`, `service.version` (the agent's) and `host.name` (the observer
//! host name); the scope is `hbwatch`.
//!
//! Delivery is the Loki output's ([`super::queue`]): batches in memory, one push at a time
//! in order, a bounded spool (`<spool dir>/<output name>/<seq>-<events>.pb`, each the body
//! of one push). Retried, per the OTLP specification: 429, 502, 503, 504 and transport
//! errors (`Retry-After` seconds honoured); other answers drop the batch (counted). A
//! partial success counts the records the collector refused as dropped.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use super::queue::http::Secret;
use super::queue::{http, now_unix_ns, Outcome, Payload, Pipeline, QueueOptions, Transport};
use super::SinkContext;
use crate::event::{Event, Level};
use crate::sink::{Sink, SinkStats};

/// Path of the logs endpoint when the URL has none.
pub const DEFAULT_PATH: &str = "/v1/logs";

/// Spool file names end so: each holds one protobuf `ExportLogsServiceRequest`.
pub const SPOOL_SUFFIX: &str = ".pb";

/// A parsed `otlp+http(s)://` output.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpOptions {
    /// `otlp+http://host:port[/path]`: no credentials (logs, `where` of
    /// `agent.events_lost`, the spool directory's name).
    pub name: String,
    pub queue: QueueOptions,
    /// `compression=gzip`: bodies gzipped (`Content-Encoding: gzip`, which OTLP/HTTP
    /// receivers must take); `none` (the default) sends them as they are.
    pub gzip: bool,
}

impl OtlpOptions {
    pub fn parse(url: &url::Url) -> Result<OtlpOptions, String> {
        let (queue, parts) = QueueOptions::from_url(url, "otlp", "OTLP", DEFAULT_PATH)?;
        let mut o = OtlpOptions {
            name: String::new(),
            queue,
            gzip: false,
        };
        for (k, v) in o.queue.take_options(url, &["compression"])? {
            debug_assert_eq!(k, "compression");
            o.gzip = match v.as_str() {
                "gzip" => true,
                "none" => false,
                _ => return Err(format!("compression={v:?}: gzip or none")),
            };
        }
        o.queue.check(&parts, "otlp")?;
        o.name = format!(
            "{}://{}{}",
            url.scheme(),
            parts.authority,
            if parts.path == DEFAULT_PATH {
                ""
            } else {
                &parts.path
            }
        );
        Ok(o)
    }

    /// The spool directory's name.
    pub fn spool_name(&self) -> String {
        super::queue::spool_name(&self.name)
    }
}

/// `log.level` as OpenTelemetry severity.
pub fn severity(l: Level) -> (SeverityNumber, &'static str) {
    match l {
        Level::Info => (SeverityNumber::Info, "INFO"),
        Level::Warning => (SeverityNumber::Warn, "WARN"),
        Level::Error => (SeverityNumber::Error, "ERROR"),
        Level::Critical => (SeverityNumber::Fatal, "FATAL"),
    }
}

fn kv(key: String, value: Value) -> KeyValue {
    KeyValue {
        key,
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// A JSON value as an `AnyValue` (`None` for null).
fn any_value(v: serde_json::Value) -> Option<Value> {
    use serde_json::Value as J;
    Some(match v {
        J::Null => return None,
        J::Bool(b) => Value::BoolValue(b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Value::IntValue(i),
            None => Value::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => Value::StringValue(s),
        J::Array(a) => Value::ArrayValue(ArrayValue {
            values: a
                .into_iter()
                .map(|v| AnyValue {
                    value: any_value(v),
                })
                .collect(),
        }),
        J::Object(m) => Value::KvlistValue(KeyValueList {
            values: m
                .into_iter()
                .filter_map(|(k, v)| any_value(v).map(|v| kv(k, v)))
                .collect(),
        }),
    })
}

/// Objects flattened to dotted keys; anything else is one attribute.
fn flatten(prefix: &str, v: serde_json::Value, out: &mut Vec<KeyValue>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        v => {
            if let Some(v) = any_value(v) {
                out.push(kv(prefix.to_string(), v));
            }
        }
    }
}

/// One event as a log record (`observed`: now, in Unix nanoseconds).
pub fn log_record(ev: &Event, time_unix_nano: u64, observed: u64) -> LogRecord {
    let mut attributes = Vec::with_capacity(16);
    // The event's fields, read generically: whatever fields events have, they all go.
    if let Ok(serde_json::Value::Object(mut m)) = serde_json::to_value(ev) {
        m.remove("@timestamp");
        m.remove("message");
        flatten("", serde_json::Value::Object(m), &mut attributes);
    }
    let (number, text) = severity(ev.log.level);
    LogRecord {
        time_unix_nano,
        observed_time_unix_nano: observed,
        severity_number: number as i32,
        severity_text: text.to_string(),
        body: Some(AnyValue {
            value: Some(Value::StringValue(ev.message.clone())),
        }),
        attributes,
        event_name: ev.event.action.to_string(),
        ..Default::default()
    }
}

/// An OTLP batch: one request, one resource, one scope.
#[derive(Debug, Clone, Default)]
pub struct OtlpBatch {
    req: ExportLogsServiceRequest,
}

impl Payload for OtlpBatch {
    fn spool_body(&self) -> Vec<u8> {
        self.req.encode_to_vec()
    }
}

impl OtlpBatch {
    fn add(&mut self, template: &ResourceLogs, record: LogRecord) {
        if self.req.resource_logs.is_empty() {
            self.req.resource_logs.push(template.clone());
        }
        self.req.resource_logs[0].scope_logs[0]
            .log_records
            .push(record);
    }
}

/// The resource and scope every batch carries.
fn template(ctx: &SinkContext) -> ResourceLogs {
    let host = if ctx.hostname.is_empty() {
        "unknown".to_string()
    } else {
        ctx.hostname.clone()
    };
    let s = |k: &str, v: String| kv(k.to_string(), Value::StringValue(v));
    ResourceLogs {
        resource: Some(Resource {
            attributes: vec![
                s("service.name", ctx.job.clone()),
                s("service.version", env!("CARGO_PKG_VERSION").to_string()),
                s("host.name", host),
            ],
            ..Default::default()
        }),
        scope_logs: vec![ScopeLogs {
            scope: Some(InstrumentationScope {
                name: "hbwatch".to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                ..Default::default()
            }),
            log_records: Vec::new(),
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }
}

/// Answers worth a retry (OTLP/HTTP specification: "Retryable response codes").
fn retryable(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

struct OtlpTransport {
    client: http::Client,
    gzip: bool,
}

impl OtlpTransport {
    /// The request body of a protobuf request: gzipped if asked (the spool keeps it
    /// uncompressed, so a later run with other options still sends it right).
    fn encoded(&self, protobuf: Vec<u8>) -> Result<Vec<u8>, String> {
        if !self.gzip {
            return Ok(protobuf);
        }
        use std::io::Write as _;
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&protobuf)
            .and_then(|_| z.finish())
            .map_err(|e| format!("gzip: {e}"))
    }
}

impl Transport for OtlpTransport {
    type Batch = OtlpBatch;

    fn body(&self, b: &OtlpBatch) -> Result<Vec<u8>, String> {
        self.encoded(b.req.encode_to_vec())
    }

    fn spooled_body(&self, stored: Vec<u8>) -> Result<Vec<u8>, String> {
        self.encoded(stored)
    }

    fn body_is_spool_body(&self) -> bool {
        !self.gzip
    }

    fn push(&self, body: &[u8], timeout: Duration) -> Outcome {
        let answer = match self.client.post(body, timeout, retryable) {
            Ok(a) => a,
            Err(o) => return o,
        };
        // A JSON or empty answer to a protobuf request is no partial success to read.
        match ExportLogsServiceResponse::decode(answer.body.as_slice()) {
            Ok(r) => match r.partial_success {
                Some(p) if p.rejected_log_records > 0 => Outcome::Partial(
                    p.rejected_log_records as u64,
                    format!("HTTP {}: {}", answer.status, p.error_message),
                ),
                _ => Outcome::Delivered,
            },
            Err(_) => Outcome::Delivered,
        }
    }
}

/// One OTLP logs output.
pub struct OtlpSink {
    pipe: Pipeline<OtlpBatch>,
    template: ResourceLogs,
}

pub fn open(opts: &OtlpOptions, ctx: &SinkContext) -> anyhow::Result<Box<dyn Sink + Send>> {
    Ok(Box::new(OtlpSink::open(opts, ctx)?))
}

impl OtlpSink {
    pub fn open(opts: &OtlpOptions, ctx: &SinkContext) -> anyhow::Result<OtlpSink> {
        let q = &opts.queue;
        let encoding = opts
            .gzip
            .then(|| ("Content-Encoding".to_string(), Secret("gzip".to_string())));
        let client = q
            .client(
                &opts.name,
                "application/x-protobuf",
                encoding.into_iter().collect(),
            )
            .map_err(|e| e.context(format!("output {}", opts.name)))?;
        let pipe = Pipeline::open(
            q.config(&opts.name, "the collector"),
            q,
            &ctx.spool_dir.join(opts.spool_name()),
            SPOOL_SUFFIX,
            OtlpTransport {
                client,
                gzip: opts.gzip,
            },
            "otlp-push",
        )?;
        Ok(OtlpSink {
            pipe,
            template: template(ctx),
        })
    }

    fn record(&mut self, ev: &Event) -> LogRecord {
        let now = now_unix_ns();
        let time = self.pipe.event_time_ns(&ev.timestamp);
        log_record(ev, time.max(0) as u64, now.max(0) as u64)
    }
}

impl Sink for OtlpSink {
    fn send(&mut self, ev: &Event) -> anyhow::Result<()> {
        let record = self.record(ev);
        let bytes = record.encoded_len() as u64;
        let template = &self.template;
        self.pipe.add(bytes, |b| b.add(template, record))
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
    use super::*;
    use crate::sink::stdout::Format;
    use crate::sink::SinkSpec;

    fn parse(s: &str) -> Result<OtlpOptions, String> {
        OtlpOptions::parse(&url::Url::parse(s).unwrap())
    }

    #[test]
    fn urls_and_options() {
        let o = parse("otlp+http://127.0.0.1:4318").unwrap();
        assert_eq!(o.queue.endpoint, "http://127.0.0.1:4318/v1/logs");
        assert_eq!(o.name, "otlp+http://127.0.0.1:4318");
        assert_eq!(o.spool_name(), "otlp_http___127.0.0.1_4318");
        assert!(o.queue.spool);
        let o =
            parse("otlp+https://u:p@otel.example.net/custom?ca=/ca.pem&batch_size=64KiB").unwrap();
        assert_eq!(o.queue.endpoint, "https://otel.example.net/custom");
        assert_eq!(o.name, "otlp+https://otel.example.net/custom");
        assert_eq!(o.queue.batch_size, 64 << 10);
        assert!(o.queue.authorization().unwrap().is_some());
        assert!(!o.gzip);
        assert!(parse("otlp+http://c:1?compression=gzip").unwrap().gzip);
        assert!(!parse("otlp+http://c:1?compression=none").unwrap().gzip);
        for (url, want) in [
            (
                "otlp+http://c:1?compression=zstd",
                "compression=\"zstd\": gzip or none",
            ),
            (
                "otlp+http://c:1?ca=/x.pem",
                "option ca only applies to otlp+https",
            ),
            (
                "otlp+http://c:1?tenant=a",
                "unknown option \"tenant\" (known: compression, password_file, bearer_token,",
            ),
            (
                "otlp+http://c:1?spool=on&spool=off",
                "option spool given twice",
            ),
            ("otlp+http:///v1/logs", "no host"),
        ] {
            let e = parse(url).unwrap_err();
            assert!(e.contains(want), "{url}: {e}");
        }
        assert!(matches!(
            "otlp+http://c:4318".parse::<SinkSpec>(),
            Ok(SinkSpec::Otlp(_))
        ));
    }

    /// Answers the HTTP requests on `listener` with `script` in order (status, protobuf
    /// body), then 200; returns how many requests came.
    fn scripted(
        listener: std::net::TcpListener,
        script: Vec<(u16, Vec<u8>)>,
    ) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
        use std::io::{BufRead, Read, Write};
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = count.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let mut r = std::io::BufReader::new(conn);
                loop {
                    let mut len = 0;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    if line != "\r\n" {
                        break;
                    }
                    let mut body = vec![0; len];
                    r.read_exact(&mut body).unwrap();
                    ExportLogsServiceRequest::decode(body.as_slice()).unwrap();
                    let n = c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let (status, answer) = script.get(n).cloned().unwrap_or((200, Vec::new()));
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
                        answer.len()
                    );
                    let w = r.get_mut();
                    let _ = w.write_all(head.as_bytes());
                    let _ = w.write_all(&answer);
                }
            }
        });
        count
    }

    /// OTLP's own answers: 503 is retried, a partial success counts the refused records
    /// as dropped, 500 is final (Loki would retry it).
    #[test]
    fn retryable_final_and_partial_answers() {
        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsPartialSuccess;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let partial = ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records: 1,
                error_message: "too old".into(),
            }),
        }
        .encode_to_vec();
        let requests = scripted(
            listener,
            vec![(503, Vec::new()), (200, partial), (500, Vec::new())],
        );
        let o = parse(&format!(
            "otlp+http://127.0.0.1:{port}?batch_size=1B&min_backoff=5ms&max_backoff=10ms&spool=off"
        ))
        .unwrap();
        let mut ctx = SinkContext::new("probe-1".into(), Format::Json);
        ctx.spool_dir = std::path::PathBuf::from("/nonexistent");
        let mut sink = OtlpSink::open(&o, &ctx).unwrap();
        let ev = crate::event::mds_alert(
            crate::event::rfc3339_micros(1_795_341_600_005_000_000),
            crate::event::Action::HeartbeatGap,
            Level::Warning,
            "probe-1",
            "gap".into(),
        );
        // One event per batch (batch_size 1 byte): 503 then partial; 500; 200.
        for _ in 0..3 {
            let before = sink.stats();
            sink.send(&ev).unwrap();
            let t = std::time::Instant::now();
            while sink.stats().delivered + sink.stats().dropped == before.delivered + before.dropped
            {
                assert!(t.elapsed() < Duration::from_secs(5), "{:?}", sink.stats());
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        sink.close(Duration::from_secs(1)).unwrap();
        let st = sink.stats();
        assert_eq!((st.delivered, st.dropped, st.retries), (1, 2, 1), "{st:?}");
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 4);
    }

    #[test]
    fn records_carry_time_severity_body_and_typed_attributes() {
        let mut ev = crate::event::mds_alert(
            crate::event::rfc3339_micros(1_795_341_600_005_000_000),
            crate::event::Action::HeartbeatGap,
            Level::Critical,
            "probe-1",
            "mds 10.50.0.1 -> 10.50.0.2: gap".into(),
        );
        ev.heartbeat.seq = Some(42);
        let r = log_record(&ev, 1_795_341_600_005_000_000, 7);
        assert_eq!(r.time_unix_nano, 1_795_341_600_005_000_000);
        assert_eq!(r.observed_time_unix_nano, 7);
        assert_eq!((r.severity_number, r.severity_text.as_str()), (21, "FATAL"));
        assert_eq!(r.event_name, "heartbeat.gap");
        assert_eq!(
            r.body.unwrap().value,
            Some(Value::StringValue("mds 10.50.0.1 -> 10.50.0.2: gap".into()))
        );
        let get = |k: &str| {
            r.attributes
                .iter()
                .find(|a| a.key == k)
                .and_then(|a| a.value.clone()?.value)
        };
        assert_eq!(
            get("event.action"),
            Some(Value::StringValue("heartbeat.gap".into()))
        );
        assert_eq!(
            get("source.ip"),
            Some(Value::StringValue("10.50.0.1".into()))
        );
        assert_eq!(get("source.port"), Some(Value::IntValue(41000)));
        assert_eq!(get("heartbeat.seq"), Some(Value::IntValue(42)));
        assert_eq!(get("message"), None);
        assert_eq!(get("@timestamp"), None);
        assert_eq!(
            any_value(serde_json::json!(["a", 1, 1.5, true])),
            Some(Value::ArrayValue(ArrayValue {
                values: vec![
                    AnyValue {
                        value: Some(Value::StringValue("a".into()))
                    },
                    AnyValue {
                        value: Some(Value::IntValue(1))
                    },
                    AnyValue {
                        value: Some(Value::DoubleValue(1.5))
                    },
                    AnyValue {
                        value: Some(Value::BoolValue(true))
                    },
                ]
            }))
        );
        for (l, n) in [
            (Level::Info, 9),
            (Level::Warning, 13),
            (Level::Error, 17),
            (Level::Critical, 21),
        ] {
            assert_eq!(severity(l).0 as i32, n);
        }
        let mut ctx = SinkContext::new("probe-1".into(), Format::Json);
        ctx.spool_dir = std::path::PathBuf::from("/nonexistent");
        let t = template(&ctx);
        let res = t.resource.unwrap().attributes;
        assert_eq!(res[0].key, "service.name");
        assert_eq!(res[2].key, "host.name");
        assert_eq!(t.scope_logs[0].scope.as_ref().unwrap().name, "hbwatch");
    }
}
