//! The Loki output end to end, against a recording Loki push endpoint written here.
//!
//! No Loki server can be installed on this machine, so the endpoint implements Loki's
//! documented push API (`POST /loki/api/v1/push`, snappy-compressed protobuf
//! `logproto.PushRequest` or the JSON body) over HTTP/1.1 with keep-alive, decodes every
//! request the way Loki does (with its own protobuf declarations and label parser, not the
//! agent's), answers 400 with the reason for anything Loki would refuse, and records what
//! it accepted. The tests run the real `hbwatch analyze` on hbgen captures and compare
//! what arrived with the NDJSON the same run printed on stdout.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Loki's push messages, declared independently of the agent's.
mod logproto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PushRequest {
        #[prost(message, repeated, tag = "1")]
        pub streams: Vec<Stream>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Stream {
        #[prost(string, tag = "1")]
        pub labels: String,
        #[prost(message, repeated, tag = "2")]
        pub entries: Vec<Entry>,
        #[prost(uint64, tag = "3")]
        pub hash: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Entry {
        #[prost(message, optional, tag = "1")]
        pub timestamp: Option<Ts>,
        #[prost(string, tag = "2")]
        pub line: String,
        #[prost(message, repeated, tag = "3")]
        pub structured_metadata: Vec<Pair>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Pair {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Ts {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }
}

/// One log entry as Loki would store it.
#[derive(Debug, Clone)]
struct Entry {
    labels: BTreeMap<String, String>,
    ns: i128,
    line: String,
    metadata: BTreeMap<String, String>,
}

/// One request the endpoint answered.
#[derive(Debug, Clone)]
struct Request {
    status: u16,
    encoding: &'static str,
    tenant: Option<String>,
    authorization: Option<String>,
    entries: Vec<Entry>,
}

/// What the endpoint expects besides Loki's own rules.
#[derive(Debug, Clone, Default)]
struct Expect {
    tenant: Option<String>,
    /// `user:password` in basic auth.
    basic_auth: Option<String>,
    /// Decode only, no contract checks (throughput: measure the sink, not this endpoint).
    decode_only: bool,
}

#[derive(Debug, Default)]
struct Recording {
    /// Statuses to answer, in turn, before accepting (503, 429, 400...).
    script: VecDeque<u16>,
    requests: Vec<Request>,
    /// Everything Loki (or our contract) would refuse.
    errors: Vec<String>,
}

#[derive(Clone)]
struct Endpoint {
    port: u16,
    rec: Arc<Mutex<Recording>>,
}

impl Endpoint {
    /// Listens on `port` (0: any) and answers every connection in its own thread.
    fn start(port: u16, script: &[u16], expect: Expect) -> Endpoint {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        Self::serve(listener, script, expect, None)
    }

    fn serve(
        listener: TcpListener,
        script: &[u16],
        expect: Expect,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Endpoint {
        let ep = Endpoint {
            port: listener.local_addr().unwrap().port(),
            rec: Arc::new(Mutex::new(Recording {
                script: script.iter().copied().collect(),
                ..Recording::default()
            })),
        };
        let rec = ep.rec.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (rec, expect, tls) = (rec.clone(), expect.clone(), tls.clone());
                std::thread::spawn(move || match tls {
                    None => serve_connection(conn, &rec, &expect),
                    Some(cfg) => {
                        let Ok(server) = rustls::ServerConnection::new(cfg) else {
                            return;
                        };
                        serve_connection(rustls::StreamOwned::new(server, conn), &rec, &expect)
                    }
                });
            }
        });
        ep
    }

    fn url(&self, query: &str) -> String {
        format!("loki+http://127.0.0.1:{}{query}", self.port)
    }

    fn requests(&self) -> Vec<Request> {
        self.rec.lock().unwrap().requests.clone()
    }

    fn errors(&self) -> Vec<String> {
        self.rec.lock().unwrap().errors.clone()
    }

    /// Entries of the accepted (2xx) pushes, in arrival order.
    fn accepted(&self) -> Vec<Entry> {
        self.requests()
            .into_iter()
            .filter(|r| r.status / 100 == 2)
            .flat_map(|r| r.entries)
            .collect()
    }

    fn statuses(&self) -> Vec<u16> {
        self.requests().iter().map(|r| r.status).collect()
    }
}

/// HTTP/1.1 requests on one connection until the client closes it.
fn serve_connection<S: Read + Write>(stream: S, rec: &Mutex<Recording>, expect: &Expect) {
    let mut r = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        match r.read_line(&mut request_line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut headers = BTreeMap::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let (status, reason) = match headers.get("content-length").map(|l| l.parse::<usize>()) {
            Some(Ok(len)) => {
                let mut body = vec![0; len];
                if r.read_exact(&mut body).is_err() {
                    return;
                }
                handle(&request_line, &headers, &body, rec, expect)
            }
            _ => {
                rec.lock()
                    .unwrap()
                    .errors
                    .push(format!("no Content-Length: {headers:?}"));
                (411, "Content-Length required".to_string())
            }
        };
        let extra = if status == 429 {
            "Retry-After: 1\r\n"
        } else {
            ""
        };
        let resp = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\n{extra}Content-Length: {}\r\n\r\n{reason}",
            reason.len()
        );
        let w = r.get_mut();
        if w.write_all(resp.as_bytes())
            .and_then(|_| w.flush())
            .is_err()
        {
            return;
        }
    }
}

/// Decodes and checks one push; answers like Loki (204, 400 with the reason) or as the
/// script says.
fn handle(
    request_line: &str,
    headers: &BTreeMap<String, String>,
    body: &[u8],
    rec: &Mutex<Recording>,
    expect: &Expect,
) -> (u16, String) {
    let mut problems = Vec::new();
    if request_line.trim_end() != "POST /loki/api/v1/push HTTP/1.1" {
        problems.push(format!("request line {request_line:?}"));
    }
    let tenant = headers.get("x-scope-orgid").cloned();
    if tenant != expect.tenant {
        problems.push(format!(
            "X-Scope-OrgID {tenant:?}, expected {:?}",
            expect.tenant
        ));
    }
    let authorization = headers.get("authorization").cloned();
    let auth = authorization.as_ref().map(|a| {
        use base64::Engine as _;
        let b64 = a.strip_prefix("Basic ").unwrap_or("");
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map(|d| String::from_utf8_lossy(&d).into_owned())
            .unwrap_or_default()
    });
    if auth != expect.basic_auth {
        problems.push(format!(
            "basic auth {auth:?}, expected {:?}",
            expect.basic_auth
        ));
    }
    let (encoding, decoded) = match headers.get("content-type").map(String::as_str) {
        Some("application/x-protobuf") => ("protobuf", decode_protobuf(body)),
        Some("application/json") => ("json", decode_json(body)),
        other => ("?", Err(format!("unsupported Content-Type {other:?}"))),
    };
    let entries = match decoded {
        Ok(entries) => {
            for e in entries.iter().filter(|_| !expect.decode_only) {
                if let Err(why) = check_entry(e) {
                    problems.push(why);
                }
            }
            entries
        }
        Err(why) => {
            problems.push(why);
            Vec::new()
        }
    };
    let mut rec = rec.lock().unwrap();
    let (status, reason) = if !problems.is_empty() {
        rec.errors.extend(problems.iter().cloned());
        (400, problems.join("; "))
    } else {
        match rec.script.pop_front() {
            Some(s) => (s, format!("scripted answer {s}")),
            None => (204, String::new()),
        }
    };
    rec.requests.push(Request {
        status,
        encoding,
        tenant,
        authorization,
        entries,
    });
    (status, reason)
}

/// Loki's label syntax `{name="value", ...}`, read with Go's unquoting rules.
fn parse_label_set(s: &str) -> Result<BTreeMap<String, String>, String> {
    let b = s.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i] == b' ' {
            *i += 1;
        }
    };
    if b.first() != Some(&b'{') || b.last() != Some(&b'}') {
        return Err(format!("labels {s:?}: not in braces"));
    }
    i += 1;
    let mut out = BTreeMap::new();
    loop {
        skip_ws(&mut i);
        if b[i] == b'}' {
            break;
        }
        let start = i;
        while b[i].is_ascii_alphanumeric() || b[i] == b'_' {
            i += 1;
        }
        let name = &s[start..i];
        if name.is_empty() || b[start].is_ascii_digit() {
            return Err(format!("labels {s:?}: bad label name at {start}"));
        }
        skip_ws(&mut i);
        if b[i] != b'=' || b.get(i + 1) != Some(&b'"') {
            return Err(format!("labels {s:?}: expected =\" after {name}"));
        }
        i += 2;
        let mut v = Vec::new();
        loop {
            match b.get(i) {
                None => return Err(format!("labels {s:?}: unterminated value")),
                Some(b'"') => break,
                Some(b'\\') => {
                    let (c, used) = match b.get(i + 1) {
                        Some(b'n') => ('\n', 2),
                        Some(b't') => ('\t', 2),
                        Some(b'r') => ('\r', 2),
                        Some(b'\\') => ('\\', 2),
                        Some(b'"') => ('"', 2),
                        Some(b'u') => {
                            let hex = s.get(i + 2..i + 6).ok_or("short \\u")?;
                            let c = char::from_u32(
                                u32::from_str_radix(hex, 16).map_err(|e| e.to_string())?,
                            )
                            .ok_or("bad \\u")?;
                            (c, 6)
                        }
                        _ => return Err(format!("labels {s:?}: bad escape")),
                    };
                    let mut buf = [0; 4];
                    v.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    i += used;
                }
                Some(b'\n') => return Err(format!("labels {s:?}: raw newline")),
                Some(&c) => {
                    v.push(c);
                    i += 1;
                }
            }
        }
        i += 1;
        let value = String::from_utf8(v).map_err(|e| e.to_string())?;
        if out.insert(name.to_string(), value).is_some() {
            return Err(format!("labels {s:?}: duplicate label {name}"));
        }
        skip_ws(&mut i);
        match b[i] {
            b',' => i += 1,
            b'}' => break,
            _ => return Err(format!("labels {s:?}: expected , or }}")),
        }
    }
    if i != b.len() - 1 {
        return Err(format!("labels {s:?}: trailing text"));
    }
    Ok(out)
}

fn decode_protobuf(body: &[u8]) -> Result<Vec<Entry>, String> {
    use prost::Message as _;
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("snappy block decode: {e}"))?;
    let req =
        logproto::PushRequest::decode(raw.as_slice()).map_err(|e| format!("protobuf: {e}"))?;
    let mut out = Vec::new();
    for s in req.streams {
        let labels = parse_label_set(&s.labels)?;
        for e in s.entries {
            let ts = e.timestamp.ok_or("entry without timestamp")?;
            if !(0..1_000_000_000).contains(&ts.nanos) {
                return Err(format!("timestamp nanos {} out of range", ts.nanos));
            }
            out.push(Entry {
                labels: labels.clone(),
                ns: ts.seconds as i128 * 1_000_000_000 + ts.nanos as i128,
                line: e.line,
                metadata: e
                    .structured_metadata
                    .into_iter()
                    .map(|p| (p.name, p.value))
                    .collect(),
            });
        }
    }
    Ok(out)
}

fn decode_json(body: &[u8]) -> Result<Vec<Entry>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("JSON: {e}"))?;
    let obj = v.as_object().ok_or("body is not an object")?;
    if obj.keys().collect::<Vec<_>>() != ["streams"] {
        return Err(format!(
            "top-level keys {:?}",
            obj.keys().collect::<Vec<_>>()
        ));
    }
    let mut out = Vec::new();
    for s in v["streams"].as_array().ok_or("streams is not an array")? {
        let so = s.as_object().ok_or("stream is not an object")?;
        if so.keys().collect::<BTreeSet<_>>()
            != BTreeSet::from([&"stream".to_string(), &"values".to_string()])
        {
            return Err(format!("stream keys {:?}", so.keys().collect::<Vec<_>>()));
        }
        let labels: BTreeMap<String, String> = so["stream"]
            .as_object()
            .ok_or("stream.stream is not an object")?
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    v.as_str().ok_or("label value not a string")?.to_string(),
                ))
            })
            .collect::<Result<_, &str>>()?;
        for val in so["values"].as_array().ok_or("values is not an array")? {
            let a = val.as_array().ok_or("value is not an array")?;
            if !(2..=3).contains(&a.len()) {
                return Err(format!("value with {} elements", a.len()));
            }
            let ts = a[0].as_str().ok_or("timestamp is not a string")?;
            if ts.is_empty() || !ts.bytes().all(|c| c.is_ascii_digit()) {
                return Err(format!("timestamp {ts:?} is not unix nanoseconds"));
            }
            let metadata = match a.get(2) {
                None => BTreeMap::new(),
                Some(m) => m
                    .as_object()
                    .ok_or("structured metadata is not an object")?
                    .iter()
                    .map(|(k, v)| {
                        Ok((
                            k.clone(),
                            v.as_str().ok_or("metadata value not a string")?.to_string(),
                        ))
                    })
                    .collect::<Result<_, &str>>()?,
            };
            out.push(Entry {
                labels: labels.clone(),
                ns: ts.parse().map_err(|e| format!("timestamp {ts}: {e}"))?,
                line: a[1].as_str().ok_or("line is not a string")?.to_string(),
                metadata,
            });
        }
    }
    Ok(out)
}

fn valid_label_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Loki's rules for a stream and entry, then hbwatch's contract: labels exactly
/// job/host/protocol/level agreeing with the line, the line a full event, the entry time
/// its `@timestamp`, metadata agreeing with the line.
fn check_entry(e: &Entry) -> Result<(), String> {
    if e.labels.is_empty() {
        return Err("stream without labels".into());
    }
    for (k, v) in &e.labels {
        if !valid_label_name(k) || k.starts_with("__") {
            return Err(format!("invalid label name {k:?}"));
        }
        if v.is_empty() {
            return Err(format!("empty value for label {k}"));
        }
    }
    let names: Vec<&str> = e.labels.keys().map(String::as_str).collect();
    if names != ["host", "job", "level", "protocol"] {
        return Err(format!("label names {names:?}"));
    }
    let ev: Value = serde_json::from_str(&e.line)
        .map_err(|err| format!("line is not JSON ({err}): {}", e.line))?;
    let s = |p: &str| ev.pointer(p).and_then(Value::as_str).map(str::to_string);
    let ts = s("/@timestamp").ok_or("line without @timestamp")?;
    let t = time::OffsetDateTime::parse(&ts, &time::format_description::well_known::Rfc3339)
        .map_err(|err| format!("@timestamp {ts:?}: {err}"))?;
    if ts.len() != 27 || !ts.ends_with('Z') {
        return Err(format!("@timestamp {ts:?} is not UTC with microseconds"));
    }
    if t.unix_timestamp_nanos() != e.ns {
        return Err(format!("entry time {} differs from @timestamp {ts}", e.ns));
    }
    let kind = s("/event/kind").unwrap_or_default();
    if !["alert", "event", "metric"].contains(&kind.as_str())
        || ev.pointer("/event/category") != Some(&serde_json::json!(["network"]))
        || s("/event/action").is_none()
        || !ev.pointer("/event/severity").is_some_and(Value::is_u64)
        || s("/observer/hostname").is_none()
        || s("/message").is_none()
    {
        return Err(format!("line is not an hbwatch event: {}", e.line));
    }
    let level = s("/log/level").unwrap_or_default();
    let want = [
        ("job", Some("hbwatch".to_string())),
        ("host", s("/observer/hostname")),
        (
            "protocol",
            Some(s("/network/protocol").unwrap_or_else(|| "agent".into())),
        ),
        ("level", Some(level.clone())),
    ];
    for (k, v) in want {
        if e.labels.get(k) != v.as_ref() {
            return Err(format!("label {k}={:?}, line says {v:?}", e.labels.get(k)));
        }
    }
    if !["info", "warning", "error", "critical"].contains(&level.as_str()) {
        return Err(format!("level {level:?}"));
    }
    let n = |p: &str| ev.pointer(p).map(|v| v.to_string());
    let want_md: BTreeMap<String, String> = [
        ("event_action", s("/event/action")),
        ("source_ip", s("/source/ip")),
        ("source_port", n("/source/port")),
        ("destination_ip", s("/destination/ip")),
        ("destination_port", n("/destination/port")),
        ("heartbeat_diagnosis", s("/heartbeat/diagnosis")),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k.to_string(), v?)))
    .collect();
    if e.metadata != want_md {
        return Err(format!(
            "structured metadata {:?}, line says {want_md:?}",
            e.metadata
        ));
    }
    Ok(())
}

// ---- running hbwatch ----

fn tempdir(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "hbwatch-sink-loki-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// An hbgen capture of a built-in scenario.
fn capture(dir: &Path, scenario: &str) -> PathBuf {
    let pcap = dir.join(format!("{scenario}.pcap"));
    let out = Command::new(env!("CARGO_BIN_EXE_hbwatch"))
        .args(["hbgen", "--scenario", scenario, "--pcap"])
        .arg(&pcap)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    pcap
}

/// A port with nothing listening (refused connections) that a test may listen on later.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Run {
    out: Output,
    stdout: Vec<String>,
    stderr: String,
}

impl Run {
    fn code(&self) -> Option<i32> {
        self.out.status.code()
    }
    fn events(&self) -> Vec<Value> {
        self.stdout
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
    fn lost_events(&self) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"]["action"] == "agent.events_lost")
            .collect()
    }
}

fn analyze_cmd(pcap: &Path, host: &str, state: &Path, flush: &str, outputs: &[String]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hbwatch"));
    c.arg("analyze")
        .arg(pcap)
        .args([
            "--hostname",
            host,
            "--flush-timeout",
            flush,
            "--format",
            "json",
        ])
        .env("STATE_DIRECTORY", state)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for o in outputs {
        c.args(["--output", o]);
    }
    c
}

/// Waits for a child, killing it (by its id) if it runs past `limit`.
fn finish(child: std::process::Child, limit: Duration) -> Run {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: kill(2) on the pid of the child this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("hbwatch did not finish within {limit:?}");
        }
    };
    let stdout = String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    Run {
        out,
        stdout,
        stderr,
    }
}

fn analyze(pcap: &Path, host: &str, state: &Path, flush: &str, outputs: &[String]) -> Run {
    let child = analyze_cmd(pcap, host, state, flush, outputs)
        .spawn()
        .unwrap();
    finish(child, Duration::from_secs(60))
}

fn lines(entries: &[Entry]) -> Vec<String> {
    entries.iter().map(|e| e.line.clone()).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Every stream's lines arrive in the order the agent produced them.
fn assert_stream_order(expected: &[String], got: &[Entry]) {
    let mut per_stream: BTreeMap<&BTreeMap<String, String>, Vec<&str>> = BTreeMap::new();
    for e in got {
        per_stream.entry(&e.labels).or_default().push(&e.line);
    }
    for (labels, got_lines) in per_stream {
        let want: Vec<&str> = expected
            .iter()
            .map(String::as_str)
            .filter(|l| got_lines.contains(l))
            .collect();
        assert_eq!(got_lines, want, "order within stream {labels:?}");
    }
}

/// Batches in a spool directory (files named `<seq>-<events>.pb.snappy`), decoded.
fn spooled(state: &Path) -> (Vec<PathBuf>, Vec<Entry>) {
    let mut files = Vec::new();
    if let Ok(dirs) = std::fs::read_dir(state.join("spool")) {
        for d in dirs {
            for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
                let p = f.unwrap().path();
                if p.to_string_lossy().ends_with(".pb.snappy") {
                    files.push(p);
                }
            }
        }
    }
    files.sort();
    let entries = files
        .iter()
        .flat_map(|p| decode_protobuf(&std::fs::read(p).unwrap()).unwrap())
        .collect();
    (files, entries)
}

// ---- scenarios ----

/// (a) Both encodings: every event of the run arrives exactly once, in order, with the
/// labels, time, tenant and metadata a Loki user queries by.
#[test]
fn every_event_arrives_exactly_once_in_both_encodings() {
    let dir = tempdir("both");
    let pcap = capture(&dir, "faults");
    for (encoding, query) in [
        ("protobuf", "?tenant=ops&batch_wait=1m"),
        ("json", "?encoding=json&tenant=ops&batch_size=8KiB"),
    ] {
        let t = Instant::now();
        let ep = Endpoint::start(
            0,
            &[],
            Expect {
                tenant: Some("ops".into()),
                ..Expect::default()
            },
        );
        let run = analyze(
            &pcap,
            "probe-1",
            &dir.join(encoding),
            "10s",
            &["stdout".into(), ep.url(query)],
        );
        assert_eq!(run.code(), Some(0), "{encoding}: {}", run.stderr);
        assert!(ep.errors().is_empty(), "{encoding}: {:?}", ep.errors());
        let got = ep.accepted();
        assert!(
            run.stdout.len() > 100,
            "a real run: {} events",
            run.stdout.len()
        );
        assert_eq!(
            sorted(lines(&got)),
            sorted(run.stdout.clone()),
            "{encoding}: what Loki got is what stdout showed, each once"
        );
        assert_stream_order(&run.stdout, &got);
        let reqs = ep.requests();
        assert!(reqs
            .iter()
            .all(|r| r.encoding == encoding && r.status == 204));
        assert!(reqs.iter().all(|r| r.tenant.as_deref() == Some("ops")));
        assert!(reqs.iter().all(|r| r.authorization.is_none()));
        if encoding == "json" {
            assert!(reqs.len() > 3, "8 KiB batches: {} pushes", reqs.len());
        } else {
            assert_eq!(reqs.len(), 1, "everything fits one default batch");
        }
        // Labels stay few: one stream per protocol and level.
        let streams: BTreeSet<_> = got.iter().map(|e| e.labels.clone()).collect();
        let protocols: BTreeSet<_> = got.iter().map(|e| e.labels["protocol"].clone()).collect();
        assert!(protocols.len() >= 3, "{protocols:?}");
        assert!(streams.len() < 30, "{} streams", streams.len());
        assert!(got
            .iter()
            .any(|e| e.metadata.contains_key("heartbeat_diagnosis")));
        eprintln!(
            "{encoding}: {} events in {} pushes, run took {:.2}s",
            got.len(),
            reqs.len(),
            t.elapsed().as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// (b) Loki down (connections refused), then overloaded (503 three times, 429 once), then
/// fine: after recovery nothing is lost or duplicated, and nothing is reported lost.
#[test]
fn outage_loses_and_duplicates_nothing() {
    let dir = tempdir("outage");
    let pcap = capture(&dir, "faults");
    let port = free_port();
    let url =
        format!("loki+http://127.0.0.1:{port}?batch_size=4KiB&min_backoff=20ms&max_backoff=200ms");
    let child = analyze_cmd(&pcap, "probe-1", &dir, "20s", &["stdout".into(), url])
        .spawn()
        .unwrap();
    // Connections are refused until a batch had to go to the spool, and a little longer...
    let t = Instant::now();
    while spooled(&dir).0.is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "nothing spooled during the outage"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    // ...then Loki comes up overloaded.
    let ep = Endpoint::start(port, &[503, 503, 503, 429], Expect::default());
    let run = finish(child, Duration::from_secs(30));
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    assert!(ep.errors().is_empty(), "{:?}", ep.errors());
    assert!(
        run.stderr.contains("push failed") && run.stderr.contains("refused"),
        "the outage is logged: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("Loki takes pushes again"),
        "{}",
        run.stderr
    );
    let statuses = ep.statuses();
    assert_eq!(&statuses[..4], [503, 503, 503, 429], "{statuses:?}");
    assert!(statuses[4..].iter().all(|s| *s == 204), "{statuses:?}");
    let got = ep.accepted();
    assert_eq!(
        sorted(lines(&got)),
        sorted(run.stdout.clone()),
        "exactly once"
    );
    assert_stream_order(&run.stdout, &got);
    assert!(run.lost_events().is_empty());
    // The batches refused during the outage were the ones delivered afterwards.
    let refused: BTreeSet<String> = ep
        .requests()
        .iter()
        .filter(|r| r.status != 204)
        .flat_map(|r| lines(&r.entries))
        .collect();
    assert!(!refused.is_empty());
    assert!(refused.iter().all(|l| run.stdout.contains(l)));
    let (files, _) = spooled(&dir);
    assert!(
        files.is_empty(),
        "the spool is empty after delivery: {files:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// (c) Loki down at exit: the events stay in the spool (nothing lost, exit 0); the next
/// run delivers them first, once.
#[test]
fn spool_survives_a_restart() {
    let dir = tempdir("restart");
    let faults = capture(&dir, "faults");
    let healthy = capture(&dir, "healthy");
    let port = free_port();
    let url = format!("loki+http://127.0.0.1:{port}?min_backoff=20ms&max_backoff=100ms");

    let t = Instant::now();
    let first = analyze(
        &faults,
        "first",
        &dir,
        "300ms",
        &["stdout".into(), url.clone()],
    );
    let took = t.elapsed();
    assert_eq!(
        first.code(),
        Some(0),
        "spooled is not lost: {}",
        first.stderr
    );
    assert!(
        took < Duration::from_secs(5),
        "the flush timeout holds: {took:?}"
    );
    assert!(first.lost_events().is_empty());
    assert!(
        first
            .stderr
            .contains(&format!("{} events not delivered", first.stdout.len()))
            && first.stderr.contains("stay in the spool"),
        "{}",
        first.stderr
    );
    let (files, entries) = spooled(&dir);
    assert!(!files.is_empty());
    assert_eq!(
        sorted(lines(&entries)),
        sorted(first.stdout.clone()),
        "all of run 1 on disk"
    );

    let ep = Endpoint::start(port, &[], Expect::default());
    let second = analyze(&healthy, "second", &dir, "10s", &["stdout".into(), url]);
    assert_eq!(second.code(), Some(0), "{}", second.stderr);
    assert!(
        second.stderr.contains("from an earlier run"),
        "{}",
        second.stderr
    );
    assert!(ep.errors().is_empty(), "{:?}", ep.errors());
    let got = ep.accepted();
    let (from_first, from_second): (Vec<Entry>, Vec<Entry>) = got
        .iter()
        .cloned()
        .partition(|e| e.labels["host"] == "first");
    assert_eq!(sorted(lines(&from_first)), sorted(first.stdout.clone()));
    assert_eq!(sorted(lines(&from_second)), sorted(second.stdout.clone()));
    // The spooled events go first.
    let first_of_second = got
        .iter()
        .position(|e| e.labels["host"] == "second")
        .unwrap();
    assert_eq!(first_of_second, from_first.len());
    assert_stream_order(&first.stdout, &from_first);
    let (files, _) = spooled(&dir);
    assert!(files.is_empty(), "{files:?}");
    let _ = std::fs::remove_dir_all(dir);
}

/// (d) A long outage past the spool bound: drops are counted and reported (agent.events_lost
/// on stdout, a message on stderr, exit status 3); the spool keeps to its bound, and what
/// it kept is delivered later. Nothing is unaccounted for.
#[test]
fn spool_bound_drops_are_counted_and_reported() {
    let dir = tempdir("bound");
    let faults = capture(&dir, "faults");
    let healthy = capture(&dir, "healthy");
    let port = free_port();
    let url = format!(
        "loki+http://127.0.0.1:{port}?batch_size=1KiB&queue_max=2KiB&spool_max=8KiB&min_backoff=20ms&max_backoff=100ms"
    );
    let first = analyze(
        &faults,
        "first",
        &dir,
        "200ms",
        &["stdout".into(), url.clone()],
    );
    assert_eq!(first.code(), Some(3), "{}", first.stderr);
    let name = format!("loki+http://127.0.0.1:{port}");
    let lost_msg = format!("hbwatch: not every event was delivered: {name}: ");
    let reported: u64 = first
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix(lost_msg.as_str()))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no loss message: {}", first.stderr));
    let lost = first.lost_events();
    assert_eq!(lost.len(), 1, "{:?}", first.stdout);
    assert_eq!(lost[0]["heartbeat"]["where"], format!("sink:{name}"));
    let lost_n = lost[0]["heartbeat"]["lost"].as_u64().unwrap();
    assert!(
        lost_n > 0 && lost_n <= reported,
        "{lost_n} reported on stdout, {reported} in total"
    );
    let spool_bytes: u64 = spooled(&dir)
        .0
        .iter()
        .map(|f| f.metadata().unwrap().len())
        .sum();
    assert!(
        spool_bytes > 0 && spool_bytes <= 8 << 10,
        "{spool_bytes} bytes spooled"
    );

    // Same output (same name, same spool), default bounds: room for the second run's own
    // events while the spool drains.
    let ep = Endpoint::start(port, &[], Expect::default());
    let second = analyze(
        &healthy,
        "second",
        &dir,
        "10s",
        &["stdout".into(), name.clone()],
    );
    assert_eq!(second.code(), Some(0), "{}", second.stderr);
    assert!(
        second.stderr.contains("from an earlier run"),
        "{}",
        second.stderr
    );
    let delivered_from_first: Vec<String> = ep
        .accepted()
        .into_iter()
        .filter(|e| e.labels["host"] == "first")
        .map(|e| e.line)
        .collect();
    // Every event of run 1 (the agent.events_lost line included) was spooled and
    // delivered now, or counted as lost: nothing else.
    assert_eq!(
        delivered_from_first.len() as u64 + reported,
        first.stdout.len() as u64,
        "{} delivered later + {reported} lost != {} sent",
        delivered_from_first.len(),
        first.stdout.len()
    );
    let uniq: BTreeSet<_> = delivered_from_first.iter().collect();
    assert_eq!(uniq.len(), delivered_from_first.len(), "no duplicates");
    assert!(delivered_from_first
        .iter()
        .all(|l| first.stdout.contains(l)));
    let _ = std::fs::remove_dir_all(dir);
}

/// A 4xx other than 429 is final: that batch is dropped and counted, Loki's reason is
/// logged, the other batches arrive.
#[test]
fn a_rejected_batch_is_dropped_counted_and_explained() {
    let dir = tempdir("reject");
    let pcap = capture(&dir, "faults");
    let ep = Endpoint::start(0, &[400], Expect::default());
    let run = analyze(
        &pcap,
        "probe-1",
        &dir,
        "10s",
        &["stdout".into(), ep.url("?batch_size=4KiB")],
    );
    assert_eq!(run.code(), Some(3), "{}", run.stderr);
    assert!(
        run.stderr.contains("Loki rejected a batch")
            && run.stderr.contains("HTTP 400: scripted answer 400"),
        "Loki's answer is in the log: {}",
        run.stderr
    );
    let reqs = ep.requests();
    assert_eq!(reqs[0].status, 400);
    assert_eq!(
        reqs.iter().filter(|r| r.status == 400).count(),
        1,
        "not retried"
    );
    let dropped = reqs[0].entries.len();
    assert!(
        run.stderr.contains(&format!(": {dropped} events lost")),
        "{}",
        run.stderr
    );
    let got = ep.accepted();
    assert_eq!(got.len() + dropped, run.stdout.len());
    let _ = std::fs::remove_dir_all(dir);
}

/// `loki+https` with a private CA (`ca=`) and basic auth from the URL; without the CA
/// the certificate is refused and the events wait in the spool.
#[test]
fn https_with_a_private_ca_and_basic_auth() {
    let dir = tempdir("tls");
    let pcap = capture(&dir, "healthy");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "hbwatch test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let ep = Endpoint::serve(
        TcpListener::bind("127.0.0.1:0").unwrap(),
        &[],
        Expect {
            tenant: Some("t1".into()),
            basic_auth: Some("hb@watch:p:w/d".into()),
            ..Expect::default()
        },
        Some(Arc::new(tls)),
    );
    let base = format!(
        "loki+https://hb%40watch:p%3Aw%2Fd@localhost:{}?tenant=t1&min_backoff=20ms&max_backoff=100ms",
        ep.port
    );

    // Not trusting the private CA: nothing delivered, everything kept.
    let untrusted = analyze(
        &pcap,
        "probe-1",
        &dir.join("a"),
        "500ms",
        &["stdout".into(), base.clone()],
    );
    assert_eq!(untrusted.code(), Some(0), "{}", untrusted.stderr);
    assert!(
        untrusted.stderr.to_lowercase().contains("certificate"),
        "{}",
        untrusted.stderr
    );
    assert!(ep.requests().is_empty());
    assert_eq!(spooled(&dir.join("a")).1.len(), untrusted.stdout.len());

    let run = analyze(
        &pcap,
        "probe-1",
        &dir.join("b"),
        "10s",
        &["stdout".into(), format!("{base}&ca={}", ca_file.display())],
    );
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    assert!(ep.errors().is_empty(), "{:?}", ep.errors());
    assert_eq!(sorted(lines(&ep.accepted())), sorted(run.stdout.clone()));
    assert!(ep.requests().iter().all(|r| r
        .authorization
        .as_deref()
        .is_some_and(|a| a.starts_with("Basic "))));
    // The password stays out of the logs.
    assert!(
        !run.stderr.contains("p:w/d") && !untrusted.stderr.contains("p%3Aw"),
        "{}",
        untrusted.stderr
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Throughput of the sink itself (library, no capture): events pushed per second to the
/// recording endpoint, both encodings. Prints the figures; asserts only delivery.
#[test]
fn throughput_to_the_recording_endpoint() {
    use hbwatch::event::{Endpoint as Ep, Event, Level, Network, Observer};
    use hbwatch::output::{Format, Sink as _};
    let n: u64 = std::env::var("LOKI_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = tempdir("throughput");
    let events: Vec<Event> = (0..n)
        .map(|i| {
            let mut ev = Event::new(
                hbwatch::event::rfc3339_micros(1_795_341_600_000_000_000 + i as i128 * 1000),
                "alert",
                "heartbeat.late",
                if i % 7 == 0 {
                    Level::Error
                } else {
                    Level::Warning
                },
                Observer {
                    hostname: "bench".into(),
                    ingress: None,
                },
                format!(
                    "mds 10.50.{}.1 -> 10.50.0.2: heartbeat {i} late by 120 ms",
                    i % 250
                ),
            );
            ev.network = Some(Network {
                protocol: if i % 3 == 0 { "mds" } else { "ged125" },
                transport: "udp",
            });
            ev.source = Some(Ep {
                ip: format!("10.50.{}.1", i % 250),
                port: 41000,
            });
            ev.destination = Some(Ep {
                ip: "10.50.0.2".into(),
                port: 41000,
            });
            ev.heartbeat.interval_ms = Some(1120);
            ev.heartbeat.expected_interval_ms = Some(1000);
            ev
        })
        .collect();
    for encoding in ["protobuf", "json"] {
        let ep = Endpoint::start(
            0,
            &[],
            Expect {
                decode_only: true,
                ..Expect::default()
            },
        );
        let spec: hbwatch::sink::SinkSpec =
            ep.url(&format!("?encoding={encoding}")).parse().unwrap();
        let mut ctx = hbwatch::sink::SinkContext::new("bench".into(), Format::Json);
        ctx.spool_dir = dir.join(encoding);
        let mut sink = hbwatch::sink::open(&spec, &ctx).unwrap();
        let t = Instant::now();
        for ev in &events {
            sink.send(ev).unwrap();
        }
        let queued = t.elapsed();
        sink.close(Duration::from_secs(60)).unwrap();
        let total = t.elapsed();
        let st = sink.stats();
        assert_eq!((st.delivered, st.dropped, st.queued), (n, 0, 0), "{st:?}");
        assert!(ep.errors().is_empty(), "{:?}", ep.errors());
        assert_eq!(ep.accepted().len() as u64, n);
        let bytes: usize = events.iter().map(|e| e.to_line().len()).sum();
        eprintln!(
            "{encoding}: {n} events ({:.1} MB of NDJSON) queued in {:.3}s, delivered in {:.3}s: {:.0} events/s, {} pushes",
            bytes as f64 / 1e6,
            queued.as_secs_f64(),
            total.as_secs_f64(),
            n as f64 / total.as_secs_f64(),
            ep.requests().len()
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
