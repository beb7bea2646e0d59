//! A recording Loki push endpoint, written here because no Loki server can be installed
//! on this machine.
//!
//! It implements Loki's documented push API (`POST /loki/api/v1/push`, snappy-compressed
//! protobuf `logproto.PushRequest` or the JSON body) over HTTP/1.1 with keep-alive (and TLS
//! when given a rustls configuration), decodes every request the way Loki does (protobuf
//! with Loki's published schema, `tests/data/loki/push.proto`, through `protoc`; its own
//! label parser; nothing of the agent's), answers 400 with the
//! reason for anything Loki would refuse, and records what it accepted. It can answer
//! scripted statuses (503, 429...) to the first pushes; a test that wants connections
//! refused at first starts it late on a port nothing listens on yet.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// One log entry as Loki would store it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub labels: BTreeMap<String, String>,
    pub ns: i128,
    pub line: String,
    pub metadata: BTreeMap<String, String>,
}

/// One request the endpoint answered.
#[derive(Debug, Clone)]
pub struct Request {
    pub status: u16,
    pub encoding: &'static str,
    pub tenant: Option<String>,
    pub authorization: Option<String>,
    /// Every header, names in lower case.
    pub headers: BTreeMap<String, String>,
    pub entries: Vec<Entry>,
}

/// What the endpoint expects besides Loki's own rules.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    pub tenant: Option<String>,
    /// `user:password` in basic auth.
    pub basic_auth: Option<String>,
    /// `Authorization: Bearer TOKEN` instead of basic auth.
    pub bearer: Option<String>,
    /// Headers each request must carry (name in any case, value).
    pub headers: Vec<(String, String)>,
    /// Decode only, no contract checks (throughput: measure the sink, not this endpoint).
    pub decode_only: bool,
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
pub struct Endpoint {
    pub port: u16,
    rec: Arc<Mutex<Recording>>,
}

impl Endpoint {
    /// Listens on `port` (0: any) and answers every connection in its own thread.
    pub fn start(port: u16, script: &[u16], expect: Expect) -> Endpoint {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        Self::serve(listener, script, expect, None)
    }

    pub fn serve(
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

    pub fn url(&self, query: &str) -> String {
        format!("loki+http://127.0.0.1:{}{query}", self.port)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.rec.lock().unwrap().requests.clone()
    }

    pub fn errors(&self) -> Vec<String> {
        self.rec.lock().unwrap().errors.clone()
    }

    /// Entries of the accepted (2xx) pushes, in arrival order.
    pub fn accepted(&self) -> Vec<Entry> {
        self.requests()
            .into_iter()
            .filter(|r| r.status / 100 == 2)
            .flat_map(|r| r.entries)
            .collect()
    }

    pub fn statuses(&self) -> Vec<u16> {
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
    if let Some(token) = &expect.bearer {
        if authorization.as_deref() != Some(format!("Bearer {token}").as_str()) {
            // Not the value: the test looks for the token in logs.
            problems.push("Authorization is not the expected bearer token".into());
        }
    } else if auth != expect.basic_auth {
        problems.push(format!(
            "basic auth {auth:?}, expected {:?}",
            expect.basic_auth
        ));
    }
    for (name, value) in &expect.headers {
        let got = headers.get(&name.to_ascii_lowercase());
        if got != Some(value) {
            problems.push(format!("header {name}: {got:?}, expected {value:?}"));
        }
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
        headers: headers.clone(),
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

/// A message as `protoc --decode` prints it (text format): fields in order, each a
/// scalar (as printed) or a nested message.
#[derive(Debug)]
enum Field {
    Scalar(String),
    Message(Vec<(String, Field)>),
}

/// Loki's push schema (`tests/data/loki/push.proto`, restated from Loki's published
/// pkg/push/push.proto), for `protoc`.
fn push_proto_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/loki")
}

/// `protoc --decode=logproto.PushRequest` of an uncompressed body: the message as text.
fn protoc_decode(raw: &[u8]) -> Result<String, String> {
    use std::process::{Command, Stdio};
    let mut child = Command::new("protoc")
        .arg("-I")
        .arg(push_proto_dir())
        .args(["--decode=logproto.PushRequest", "push.proto"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("protoc: {e} (Debian package protobuf-compiler; `cargo xtask bootstrap` installs it)")
        });
    let mut stdin = child.stdin.take().unwrap();
    let raw = raw.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&raw));
    let out = child
        .wait_with_output()
        .map_err(|e| format!("protoc: {e}"))?;
    let _ = writer.join();
    if !out.status.success() {
        return Err(format!(
            "protobuf: protoc --decode=logproto.PushRequest: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| format!("protoc output: {e}"))
}

/// Parses protoc's text format (one field or brace per line).
fn parse_text_format(text: &str) -> Result<Vec<(String, Field)>, String> {
    let mut stack: Vec<(String, Vec<(String, Field)>)> = vec![(String::new(), Vec::new())];
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line == "}" {
            let (name, fields) = stack.pop().ok_or("unbalanced }")?;
            stack
                .last_mut()
                .ok_or("unbalanced }")?
                .1
                .push((name, Field::Message(fields)));
        } else if let Some(name) = line.strip_suffix(" {") {
            stack.push((name.to_string(), Vec::new()));
        } else if let Some((name, value)) = line.split_once(": ") {
            stack
                .last_mut()
                .unwrap()
                .1
                .push((name.to_string(), Field::Scalar(value.to_string())));
        } else {
            return Err(format!("protoc output line {line:?}"));
        }
    }
    match stack.pop() {
        Some((_, fields)) if stack.is_empty() => Ok(fields),
        _ => Err("unbalanced {".into()),
    }
}

/// A text-format string literal (C escapes; protoc writes bytes past ASCII in octal).
fn unquote(lit: &str) -> Result<String, String> {
    let b = lit.as_bytes();
    if b.len() < 2 || b[0] != b'"' || b[b.len() - 1] != b'"' {
        return Err(format!("not a string literal: {lit:?}"));
    }
    let b = &b[1..b.len() - 1];
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let c = *b.get(i + 1).ok_or("trailing backslash")?;
        i += 2;
        out.push(match c {
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'"' | b'\'' | b'\\' => c,
            b'0'..=b'7' => {
                let mut v = (c - b'0') as u32;
                for _ in 0..2 {
                    match b.get(i) {
                        Some(d @ b'0'..=b'7') => {
                            v = v * 8 + (d - b'0') as u32;
                            i += 1;
                        }
                        _ => break,
                    }
                }
                u8::try_from(v).map_err(|_| "octal escape past 255")?
            }
            _ => return Err(format!("escape \\{} in {lit:?}", c as char)),
        });
    }
    String::from_utf8(out).map_err(|e| format!("string is not UTF-8: {e}"))
}

fn fields_of<'a>(f: &'a Field, what: &str) -> Result<&'a [(String, Field)], String> {
    match f {
        Field::Message(m) => Ok(m),
        Field::Scalar(s) => Err(format!("{what}: scalar {s:?} where a message belongs")),
    }
}

fn scalar<'a>(f: &'a Field, what: &str) -> Result<&'a str, String> {
    match f {
        Field::Scalar(s) => Ok(s),
        Field::Message(_) => Err(format!("{what}: message where a scalar belongs")),
    }
}

/// A snappy-compressed `logproto.PushRequest`, decoded by `protoc` with Loki's schema
/// (not the agent's declarations): every field must be one the schema knows (protoc prints
/// unknown ones by number), with its type.
pub fn decode_protobuf(body: &[u8]) -> Result<Vec<Entry>, String> {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("snappy block decode: {e}"))?;
    let req = parse_text_format(&protoc_decode(&raw)?)?;
    let mut out = Vec::new();
    for (name, stream) in &req {
        match name.as_str() {
            "streams" => {}
            "format" => return Err("PushRequest.format set: a client leaves it empty".into()),
            other => return Err(format!("PushRequest: unknown field {other}")),
        }
        let mut labels = None;
        let mut entries = Vec::new();
        for (name, f) in fields_of(stream, "streams")? {
            match name.as_str() {
                "labels" => labels = Some(parse_label_set(&unquote(scalar(f, "labels")?)?)?),
                "entries" => entries.push(fields_of(f, "entries")?),
                "hash" => {}
                other => return Err(format!("StreamAdapter: unknown field {other}")),
            }
        }
        let labels = labels.ok_or("stream without labels")?;
        for e in entries {
            let (mut seconds, mut nanos, mut ts_seen) = (0i64, 0i64, false);
            let mut line = String::new();
            let mut metadata = BTreeMap::new();
            for (name, f) in e {
                match name.as_str() {
                    "timestamp" => {
                        ts_seen = true;
                        for (n, v) in fields_of(f, "timestamp")? {
                            let v: i64 = scalar(v, n)?
                                .parse()
                                .map_err(|e| format!("timestamp.{n}: {e}"))?;
                            match n.as_str() {
                                "seconds" => seconds = v,
                                "nanos" => nanos = v,
                                other => return Err(format!("Timestamp: unknown field {other}")),
                            }
                        }
                    }
                    "line" => line = unquote(scalar(f, "line")?)?,
                    "structuredMetadata" => {
                        let (mut k, mut v) = (String::new(), String::new());
                        for (n, x) in fields_of(f, "structuredMetadata")? {
                            match n.as_str() {
                                "name" => k = unquote(scalar(x, n)?)?,
                                "value" => v = unquote(scalar(x, n)?)?,
                                other => {
                                    return Err(format!("LabelPairAdapter: unknown field {other}"))
                                }
                            }
                        }
                        metadata.insert(k, v);
                    }
                    "parsed" => return Err("EntryAdapter.parsed set by a client".into()),
                    other => return Err(format!("EntryAdapter: unknown field {other}")),
                }
            }
            if !ts_seen {
                return Err("entry without timestamp".into());
            }
            if !(0..1_000_000_000).contains(&nanos) {
                return Err(format!("timestamp nanos {nanos} out of range"));
            }
            out.push(Entry {
                labels: labels.clone(),
                ns: seconds as i128 * 1_000_000_000 + nanos as i128,
                line,
                metadata,
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
/// job/host/protocol/level agreeing with the line, the line a full event
/// ([`super::check_event`]), the entry time its `@timestamp`, metadata agreeing with the
/// line.
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
    let (ev, ns) = super::check_event(&e.line)?;
    if ns != e.ns {
        return Err(format!(
            "entry time {} differs from @timestamp {}",
            e.ns,
            ev["@timestamp"].as_str().unwrap_or_default()
        ));
    }
    let s = |p: &str| ev.pointer(p).and_then(Value::as_str).map(str::to_string);
    let want = [
        ("job", Some("hbwatch".to_string())),
        ("host", s("/observer/hostname")),
        (
            "protocol",
            Some(s("/network/protocol").unwrap_or_else(|| "agent".into())),
        ),
        ("level", s("/log/level")),
    ];
    for (k, v) in want {
        if e.labels.get(k) != v.as_ref() {
            return Err(format!("label {k}={:?}, line says {v:?}", e.labels.get(k)));
        }
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

pub fn lines(entries: &[Entry]) -> Vec<String> {
    entries.iter().map(|e| e.line.clone()).collect()
}

/// Every stream's lines arrive in the order the agent produced them.
pub fn assert_stream_order(expected: &[String], got: &[Entry]) {
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
pub fn spooled(state: &Path) -> (Vec<PathBuf>, Vec<Entry>) {
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
