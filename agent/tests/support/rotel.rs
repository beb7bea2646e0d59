//! A real OpenTelemetry collector receiving the OTLP output: rotel (the `rotel` wheel on
//! PyPI bundles its Rust binary, `rotel-agent`), and what it received, parsed back.
//!
//! Each fixture starts its own `rotel-agent start` in the foreground on loopback ports
//! (OTLP/HTTP on the port asked for, gRPC on a free one), with the blackhole exporter and
//! the debug exporter for logs at `detailed` verbosity without batching: every log record
//! it accepted is printed on its stdout (resource attributes, scope, timestamps, severity,
//! event name, body, typed attributes), which goes to a file per start and is parsed
//! here. `cargo xtask bootstrap` installs the wheel (pinned) under
//! `~/.cache/hbwatch/pip/`; without it the tests fail under CI=true and skip loudly
//! otherwise. `HBWATCH_ROTEL` names another `rotel-agent`.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_tcp_port;

/// The wheel `cargo xtask bootstrap` installs, and where (its `--target` directory).
pub const ROTEL_WHEEL: &str = "rotel==0.0.1a15";

pub fn rotel_target_dir() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    Some(PathBuf::from(home).join(".cache/hbwatch/pip/rotel-0.0.1a15"))
}

/// The `rotel-agent` binary, or None (after saying so) when it is missing outside CI.
pub fn rotel_agent() -> Option<PathBuf> {
    let from_env = std::env::var_os("HBWATCH_ROTEL").map(PathBuf::from);
    let bootstrapped = rotel_target_dir().map(|d| d.join("rotel/rotel-agent"));
    // A `pip install rotel` into the Python on PATH does too.
    let from_python = || {
        let out = Command::new("python3")
            .args([
                "-c",
                "import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))",
            ])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let p = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
        out.status.success().then_some(p)
    };
    let found = from_env
        .into_iter()
        .chain(bootstrapped)
        .find(|p| p.exists())
        .or_else(|| from_python().filter(|p| p.exists()));
    if found.is_none() {
        let msg = format!(
            "rotel-agent (the OpenTelemetry collector of the PyPI wheel {ROTEL_WHEEL}) is not \
             installed; `cargo xtask bootstrap` installs it"
        );
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}");
        }
        eprintln!("\n*** SKIPPED: {msg} ***\n");
    }
    found
}

/// One log record as the collector printed it. Attribute values keep rotel's typed form:
/// `Str(peer.up)`, `Int(15000)`, `Slice(Str(network))`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    pub resource: BTreeMap<String, String>,
    /// `InstrumentationScope NAME VERSION`: `NAME VERSION`.
    pub scope: String,
    pub time: u64,
    pub observed: u64,
    pub severity_text: String,
    /// `SEVERITY_NUMBER_INFO(9)`: 9.
    pub severity_number: i32,
    pub event_name: String,
    /// `Str(...)` unwrapped.
    pub body: String,
    pub attributes: BTreeMap<String, String>,
}

/// `Str(x)`: `x`.
pub fn unstr(v: &str) -> &str {
    v.strip_prefix("Str(")
        .and_then(|v| v.strip_suffix(')'))
        .unwrap_or(v)
}

/// Parses the debug exporter's detailed output.
pub fn parse(text: &str) -> Vec<Record> {
    let mut out = Vec::new();
    let mut resource = BTreeMap::new();
    let mut scope = String::new();
    let mut cur: Option<Record> = None;
    // Where `-> k: v` lines go: the resource's or the record's attributes.
    let mut in_resource = false;
    for line in text.lines() {
        if line.starts_with("ResourceLog #") {
            out.extend(cur.take());
            resource = BTreeMap::new();
            in_resource = false;
        } else if line == "Resource attributes:" {
            in_resource = true;
        } else if let Some(s) = line.strip_prefix("InstrumentationScope ") {
            out.extend(cur.take());
            scope = s.trim().to_string();
            in_resource = false;
        } else if line.starts_with("LogRecord #") {
            out.extend(cur.take());
            in_resource = false;
            cur = Some(Record {
                resource: resource.clone(),
                scope: scope.clone(),
                ..Record::default()
            });
        } else if let Some(kv) = line.trim_start().strip_prefix("-> ") {
            let (k, v) = kv.split_once(": ").unwrap_or((kv, ""));
            if in_resource {
                resource.insert(k.to_string(), v.to_string());
            } else if let Some(r) = cur.as_mut() {
                r.attributes.insert(k.to_string(), v.to_string());
            }
        } else if let Some(r) = cur.as_mut() {
            if let Some(v) = line.strip_prefix("ObservedTimestamp: ") {
                r.observed = v.trim().parse().unwrap_or(0);
            } else if let Some(v) = line.strip_prefix("Timestamp: ") {
                r.time = v.trim().parse().unwrap_or(0);
            } else if let Some(v) = line.strip_prefix("SeverityText: ") {
                r.severity_text = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("SeverityNumber: ") {
                r.severity_number = v
                    .rsplit_once('(')
                    .and_then(|(_, n)| n.trim_end_matches(')').parse().ok())
                    .unwrap_or(-1);
            } else if let Some(v) = line.strip_prefix("EventName: ") {
                r.event_name = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("Body: ") {
                r.body = unstr(v).to_string();
            }
        }
    }
    out.extend(cur);
    out
}

/// A running rotel; [`Collector::records`] reads what every start of it received.
pub struct Collector {
    bin: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
    pub port: u16,
    starts: u32,
    /// No debug exporter: for throughput, where printing every record would be the
    /// bottleneck ([`Collector::records`] then finds nothing).
    quiet: bool,
}

impl Collector {
    /// Starts rotel with OTLP/HTTP on `port` (0: a free one), files under `dir`.
    pub fn start(bin: &Path, dir: &Path, port: u16) -> Collector {
        Collector::start_with(bin, dir, port, false)
    }

    /// [`Collector::start`], without printing what it receives when `quiet`.
    pub fn start_with(bin: &Path, dir: &Path, port: u16, quiet: bool) -> Collector {
        std::fs::create_dir_all(dir).unwrap();
        let mut c = Collector {
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            child: None,
            port: if port == 0 { free_tcp_port() } else { port },
            starts: 0,
            quiet,
        };
        c.restart();
        c
    }

    /// Starts it again on the same port (after [`Collector::kill`]).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        self.starts += 1;
        let out =
            std::fs::File::create(self.dir.join(format!("received-{}.txt", self.starts))).unwrap();
        let err =
            std::fs::File::create(self.dir.join(format!("stderr-{}.txt", self.starts))).unwrap();
        let child = Command::new(&self.bin)
            .args([
                "start",
                "--exporter",
                "blackhole",
                "--debug-log",
                if self.quiet { "none" } else { "logs" },
                "--debug-log-verbosity",
                "detailed",
                "--disable-batching",
                "--otlp-receiver-traces-disabled",
                "--otlp-receiver-metrics-disabled",
            ])
            .arg("--otlp-http-endpoint")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--otlp-grpc-endpoint")
            .arg(format!("127.0.0.1:{}", free_tcp_port()))
            .arg("--pid-file")
            .arg(self.dir.join("rotel.pid"))
            .arg("--log-file")
            .arg(self.dir.join("rotel.log"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "rotel exited ({st}): {}{}",
                    self.text("stdout"),
                    self.text("stderr")
                );
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "rotel does not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything this collector printed, over all its starts (`stdout` or `stderr`).
    fn text(&self, which: &str) -> String {
        (1..=self.starts)
            .map(|n| {
                let name = match which {
                    "stdout" => format!("received-{n}.txt"),
                    _ => format!("stderr-{n}.txt"),
                };
                std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
            })
            .collect()
    }

    /// The `otlp+http://` output URL for it, with `query` (`?...` or empty).
    pub fn url(&self, query: &str) -> String {
        format!("otlp+http://127.0.0.1:{}{query}", self.port)
    }

    /// Every log record received so far, over all starts.
    pub fn records(&self) -> Vec<Record> {
        parse(&self.text("stdout"))
    }

    /// Waits until `n` records arrived, or `limit` passed; returns the records.
    pub fn wait_for(&self, n: usize, limit: Duration) -> Vec<Record> {
        let t = Instant::now();
        loop {
            let r = self.records();
            if r.len() >= n || t.elapsed() >= limit {
                return r;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL (a crash, not a graceful stop) and wait for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill();
    }
}
