//! Fixtures shared by the output tests (`sink_syslog`, `sink_loki`, `sink_otlp`, `sink_file`,
//! `sinks_together`): a real rsyslogd ([`rsyslog`]), a recording Loki push endpoint
//! ([`loki`]), a real OpenTelemetry collector ([`rotel`]), hbgen captures, free ports,
//! running `hbwatch` and checking the events it printed.

// Every integration test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

pub mod loki;
pub mod pki;
pub mod rotel;
pub mod rsyslog;
pub mod syslog_ng;

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::Duration;

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_hbwatch");

/// An hbgen capture of a built-in scenario (`faults`, `healthy`, `story`...) or a
/// scenario file, written as `<dir>/<scenario's name>.pcap`.
pub fn capture(dir: &Path, scenario: &str) -> PathBuf {
    let name = Path::new(scenario).file_stem().unwrap().to_string_lossy();
    let pcap = dir.join(format!("{name}.pcap"));
    let out = Command::new(BIN)
        .args(["hbgen", "--scenario", scenario, "--pcap"])
        .arg(&pcap)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hbgen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    pcap
}

pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A port with nothing listening (refused connections) that a test may listen on later.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// One line of hbwatch's NDJSON is a complete event (docs/EVENTS.md): JSON with an
/// `@timestamp` in UTC with microseconds, an ECS `event` (kind, category `network`,
/// action, severity), a `log.level`, an observer host name and a message. Returns the
/// event and its `@timestamp` in Unix nanoseconds.
pub fn check_event(line: &str) -> Result<(Value, i128), String> {
    let ev: Value =
        serde_json::from_str(line).map_err(|err| format!("line is not JSON ({err}): {line}"))?;
    let s = |p: &str| ev.pointer(p).and_then(Value::as_str).map(str::to_string);
    let ts = s("/@timestamp").ok_or("line without @timestamp")?;
    let t = time::OffsetDateTime::parse(&ts, &time::format_description::well_known::Rfc3339)
        .map_err(|err| format!("@timestamp {ts:?}: {err}"))?;
    if ts.len() != 27 || !ts.ends_with('Z') {
        return Err(format!("@timestamp {ts:?} is not UTC with microseconds"));
    }
    let kind = s("/event/kind").unwrap_or_default();
    if !["alert", "event", "metric"].contains(&kind.as_str())
        || ev.pointer("/event/category") != Some(&serde_json::json!(["network"]))
        || s("/event/action").is_none()
        || !ev.pointer("/event/severity").is_some_and(Value::is_u64)
        || s("/observer/hostname").is_none()
        || s("/message").is_none()
    {
        return Err(format!("line is not an hbwatch event: {line}"));
    }
    let level = s("/log/level").unwrap_or_default();
    if !["info", "warning", "error", "critical"].contains(&level.as_str()) {
        return Err(format!("level {level:?}"));
    }
    Ok((ev, t.unix_timestamp_nanos()))
}

/// A finished `hbwatch` run: its stdout as lines, its stderr as text.
pub struct Run {
    pub out: Output,
    pub stdout: Vec<String>,
    pub stderr: String,
}

impl Run {
    pub fn code(&self) -> Option<i32> {
        self.out.status.code()
    }
    pub fn events(&self) -> Vec<Value> {
        self.stdout
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
    pub fn lost_events(&self) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"]["action"] == "agent.events_lost")
            .collect()
    }
}

/// Waits for a child (stdout and stderr piped), killing it (by its id) if it runs past
/// `limit`.
pub fn finish(child: Child, limit: Duration) -> Run {
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

/// `n` synthetic `heartbeat.late` alerts (one in 7 an error; 250 sources, MDS and
/// GED-125) for the outputs' throughput tests.
pub fn late_alerts(n: u64) -> Vec<hbwatch::event::Event> {
    use hbwatch::event::{Action, Endpoint, Event, Level, Network, Observer, Said};
    (0..n)
        .map(|i| {
            let mut ev = Event::new(
                hbwatch::event::rfc3339_micros(1_795_341_600_000_000_000 + i as i128 * 1000),
                Observer {
                    hostname: "bench".into(),
                    ingress: None,
                },
                Said {
                    action: Action::HeartbeatLate,
                    level: if i % 7 == 0 {
                        Level::Error
                    } else {
                        Level::Warning
                    },
                    message: format!(
                        "mds 10.50.{}.1 -> 10.50.0.2: heartbeat {i} late by 120 ms",
                        i % 250
                    ),
                },
            );
            ev.network = Some(Network {
                protocol: if i % 3 == 0 { "mds" } else { "ged125" },
                transport: "udp",
                ip_version: "ipv4",
                iana_number: "17",
                community_id: None,
            });
            ev.source = Some(Endpoint {
                ip: format!("10.50.{}.1", i % 250),
                port: 41000,
            });
            ev.destination = Some(Endpoint {
                ip: "10.50.0.2".into(),
                port: 41000,
            });
            ev.heartbeat.seq = Some(i as u32);
            ev.heartbeat.interval_ms = Some(1120);
            ev.heartbeat.expected_interval_ms = Some(1000);
            ev
        })
        .collect()
}
