//! The OTLP output end to end, against a real OpenTelemetry collector (rotel, see
//! `support/rotel.rs`) on loopback: the real `hbwatch analyze` on hbgen captures, what the
//! collector printed compared with the NDJSON the same run printed on stdout.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::rotel::{rotel_agent, unstr, Collector, Record};
use support::{capture, check_event, finish};

fn tempdir(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "hbwatch-sink-otlp-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn analyze_cmd(pcap: &Path, state: &Path, flush: &str, outputs: &[String]) -> Command {
    let mut c = Command::new(support::BIN);
    c.arg("analyze")
        .arg(pcap)
        .args([
            "--hostname",
            "probe-1",
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

/// What identifies an event on both sides: its time in Unix nanoseconds and its message.
fn key_of_line(line: &str) -> (u64, String) {
    let (ev, ns) = check_event(line).unwrap();
    (ns as u64, ev["message"].as_str().unwrap().to_string())
}

fn keys_of_records(r: &[Record]) -> Vec<(u64, String)> {
    let mut k: Vec<_> = r.iter().map(|r| (r.time, r.body.clone())).collect();
    k.sort();
    k
}

fn keys_of_stdout(lines: &[String]) -> Vec<(u64, String)> {
    let mut k: Vec<_> = lines.iter().map(|l| key_of_line(l)).collect();
    k.sort();
    k
}

/// OTLP spool files (`<seq>-<events>.pb`) under a state directory.
fn spooled(state: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Ok(dirs) = std::fs::read_dir(state.join("spool")) {
        for d in dirs.flatten() {
            for f in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
                if f.path().extension().is_some_and(|e| e == "pb") {
                    files.push(f.path());
                }
            }
        }
    }
    files
}

/// Every event of the run arrives once, as a log record with the event's time, severity,
/// message, action and typed fields, under the hbwatch resource and scope.
/// `analyze` of the faults capture to stdout and to a fresh collector (URL `options`):
/// the run, and the records, which must be what stdout showed, each once.
fn faults_to_a_collector(bin: &Path, dir: &Path, options: &str) -> (support::Run, Vec<Record>) {
    let pcap = capture(dir, "faults");
    let col = Collector::start(bin, &dir.join("rotel"), 0);
    let child = analyze_cmd(
        &pcap,
        &dir.join("state"),
        "10s",
        &["stdout".into(), col.url(options)],
    )
    .spawn()
    .unwrap();
    let run = finish(child, Duration::from_secs(60));
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    let n = run.stdout.len();
    assert!(n > 100, "a real run: {n} events");
    // The collector prints what it took; the run's close waited for its answers.
    let got = col.wait_for(n, Duration::from_secs(5));
    assert_eq!(
        keys_of_records(&got),
        keys_of_stdout(&run.stdout),
        "what the collector got is what stdout showed, each once"
    );
    (run, got)
}

#[test]
fn every_event_arrives_once_as_a_log_record() {
    let Some(bin) = rotel_agent() else { return };
    let dir = tempdir("once");
    let t = Instant::now();
    let (run, got) = faults_to_a_collector(&bin, &dir, "?batch_size=16KiB");
    let n = run.stdout.len();
    let by_key: BTreeMap<(u64, String), &Record> =
        got.iter().map(|r| ((r.time, r.body.clone()), r)).collect();
    let version = env!("CARGO_PKG_VERSION");
    for line in &run.stdout {
        let ev: Value = serde_json::from_str(line).unwrap();
        let r = by_key[&key_of_line(line)];
        let action = ev["event"]["action"].as_str().unwrap();
        assert_eq!(r.event_name, action);
        assert_eq!(unstr(&r.attributes["event.action"]), action, "{r:?}");
        let (text, number) = match ev["log"]["level"].as_str().unwrap() {
            "info" => ("INFO", 9),
            "warning" => ("WARN", 13),
            "error" => ("ERROR", 17),
            "critical" => ("FATAL", 21),
            l => panic!("level {l}"),
        };
        assert_eq!(
            (r.severity_text.as_str(), r.severity_number),
            (text, number)
        );
        assert!(r.observed >= r.time, "{r:?}");
        if let Some(p) = ev["network"]["protocol"].as_str() {
            assert_eq!(r.attributes["network.protocol"], format!("Str({p})"));
        }
        if let Some(port) = ev["source"]["port"].as_u64() {
            assert_eq!(r.attributes["source.port"], format!("Int({port})"));
            assert_eq!(
                unstr(&r.attributes["source.ip"]),
                ev["source"]["ip"].as_str().unwrap()
            );
        }
        if let Some(seq) = ev["heartbeat"]["seq"].as_u64() {
            assert_eq!(r.attributes["heartbeat.seq"], format!("Int({seq})"));
        }
        assert_eq!(r.attributes["event.category"], "Slice(Str(network))");
        assert!(!r.attributes.contains_key("message"));
        assert_eq!(r.resource["service.name"], "Str(hbwatch)");
        assert_eq!(r.resource["service.version"], format!("Str({version})"));
        assert_eq!(r.resource["host.name"], "Str(probe-1)");
        assert_eq!(r.scope, format!("hbwatch {version}"));
    }
    let levels: std::collections::BTreeSet<_> =
        got.iter().map(|r| r.severity_text.clone()).collect();
    assert!(levels.len() >= 2, "{levels:?}");
    assert!(run.lost_events().is_empty());
    assert!(spooled(&dir.join("state")).is_empty());
    eprintln!(
        "{n} events, {} records, run took {:.2}s",
        got.len(),
        t.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The collector crashes (SIGKILL) in the middle of a run and comes back on the same port:
/// what it missed waits in the spool and arrives afterwards; every event arrives exactly
/// once (the crash comes while no push is in flight: a push the collector took but did
/// not answer would be sent again, OTLP delivery being at-least-once) and none is lost.
#[test]
fn a_collector_crash_loses_nothing() {
    let Some(bin) = rotel_agent() else { return };
    let dir = tempdir("crash");
    let pcap = capture(&dir, "faults");
    let bytes = std::fs::read(&pcap).unwrap();
    // The capture reaches hbwatch through a FIFO in two halves, so that the crash falls
    // between events the collector took and events it has to wait for.
    let fifo = dir.join("capture.fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let mut col = Collector::start(&bin, &dir.join("rotel"), 0);
    let state = dir.join("state");
    let child = analyze_cmd(
        &fifo,
        &state,
        "30s",
        &[
            "stdout".into(),
            col.url("?batch_wait=0s&min_backoff=20ms&max_backoff=200ms"),
        ],
    )
    .spawn()
    .unwrap();
    let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    writer.write_all(&bytes[..bytes.len() / 2]).unwrap();
    writer.flush().unwrap();
    // The first half's events arrive; once the count holds still, nothing is in flight.
    let t = Instant::now();
    let mut before = 0;
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = col.records().len();
        if now > 0 && now == before {
            break;
        }
        before = now;
        assert!(t.elapsed() < Duration::from_secs(20), "no record arrives");
    }
    col.kill();
    // The second half is analyzed while the collector is down: its batches go to the spool.
    writer.write_all(&bytes[bytes.len() / 2..]).unwrap();
    drop(writer);
    let t = Instant::now();
    while spooled(&state).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "nothing spooled during the outage"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    col.restart();
    let run = finish(child, Duration::from_secs(60));
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    let n = run.stdout.len();
    let got = col.wait_for(n, Duration::from_secs(5));
    assert!(
        before > 0 && before < n,
        "the crash fell mid-run: {before} of {n}"
    );
    assert_eq!(
        keys_of_records(&got),
        keys_of_stdout(&run.stdout),
        "every event exactly once, across the crash"
    );
    assert!(
        run.stderr.contains("push failed")
            && run.stderr.contains("the collector takes pushes again"),
        "the outage is logged: {}",
        run.stderr
    );
    assert!(run.lost_events().is_empty());
    assert!(
        spooled(&state).is_empty(),
        "the spool is empty after delivery"
    );
    eprintln!("{before} records before the crash, {} after", n - before);
    let _ = std::fs::remove_dir_all(dir);
}

/// No collector at all and a tiny spool: what neither memory nor spool holds is counted
/// and reported as `agent.events_lost`, and the rest stays in the spool.
#[test]
fn without_a_collector_losses_are_counted_and_reported() {
    let dir = tempdir("nocol");
    let pcap = capture(&dir, "faults");
    let port = support::free_tcp_port();
    let state = dir.join("state");
    let url = format!(
        "otlp+http://127.0.0.1:{port}?batch_size=1KiB&queue_max=2KiB&spool_max=8KiB&min_backoff=10ms&max_backoff=50ms"
    );
    let child = analyze_cmd(&pcap, &state, "1s", &["stdout".into(), url])
        .spawn()
        .unwrap();
    let run = finish(child, Duration::from_secs(60));
    assert_eq!(run.code(), Some(3), "exit 3: events lost; {}", run.stderr);
    let name = format!("otlp+http://127.0.0.1:{port}");
    let lost_msg = format!("hbwatch: not every event was delivered: {name}: ");
    let total_lost: u64 = run
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix(lost_msg.as_str()))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no loss message: {}", run.stderr));
    let reports = run.lost_events();
    assert!(!reports.is_empty(), "{}", run.stderr);
    assert!(reports
        .iter()
        .all(|e| e["heartbeat"]["where"] == format!("sink:{name}")));
    let reported: u64 = reports
        .iter()
        .map(|e| e["heartbeat"]["lost"].as_u64().unwrap())
        .sum();
    assert!(reported > 0 && reported <= total_lost);
    let files = spooled(&state);
    let bytes: u64 = files
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(bytes > 0 && bytes <= 8 << 10, "the bound holds: {bytes}");
    let spooled_events: u64 = files
        .iter()
        .map(|p| {
            let name = p.file_stem().unwrap().to_str().unwrap();
            name.split_once('-').unwrap().1.parse::<u64>().unwrap()
        })
        .sum();
    // Every event the output was given is in the spool or counted as lost.
    assert_eq!(
        spooled_events + total_lost,
        run.stdout.len() as u64,
        "{spooled_events} spooled, {total_lost} lost"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The output's throughput to a real collector (rotel, not printing), against NDJSON to
/// nowhere, on the same events in the same run: `OTLP_BENCH_EVENTS` (default 20 000)
/// synthetic events through the sink API, timed until the collector answered for all.
#[test]
fn throughput_against_ndjson() {
    use hbwatch::sink::stdout::{Format, LineSink};
    use hbwatch::sink::Sink as _;
    let Some(bin) = rotel_agent() else { return };
    let n: u64 = std::env::var("OTLP_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let dir = tempdir("throughput");
    let events = support::late_alerts(n);

    let t = Instant::now();
    let mut ndjson = LineSink::json(std::io::sink());
    for ev in &events {
        ndjson.send(ev).unwrap();
    }
    ndjson.close(Duration::from_secs(1)).unwrap();
    let ndjson_s = t.elapsed().as_secs_f64();

    let col = Collector::start_with(&bin, &dir.join("rotel"), 0, true);
    let spec: hbwatch::sink::SinkSpec = col.url("").parse().unwrap();
    let mut ctx = hbwatch::sink::SinkContext::new("bench".into(), Format::Json);
    ctx.spool_dir = dir.join("state");
    let mut sink = hbwatch::sink::open(&spec, &ctx).unwrap();
    let t = Instant::now();
    for ev in &events {
        sink.send(ev).unwrap();
    }
    let queued = t.elapsed();
    sink.close(Duration::from_secs(120)).unwrap();
    let otlp_s = t.elapsed().as_secs_f64();
    let st = sink.stats();
    assert_eq!((st.delivered, st.dropped, st.queued), (n, 0, 0), "{st:?}");
    eprintln!(
        "{n} events: NDJSON to nowhere {:.0} events/s; OTLP to rotel {:.0} events/s \
         (queued in {:.3}s, all answered in {otlp_s:.3}s); OTLP/NDJSON = {:.3}",
        n as f64 / ndjson_s,
        n as f64 / otlp_s,
        queued.as_secs_f64(),
        ndjson_s / otlp_s
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `compression=gzip` against a real collector: every event arrives once, as with
/// plain bodies (the collector inflates what `Content-Encoding: gzip` says).
#[test]
fn gzipped_bodies_arrive_whole() {
    let Some(bin) = rotel_agent() else { return };
    let dir = tempdir("gzip");
    let (run, _) = faults_to_a_collector(&bin, &dir, "?batch_size=16KiB&compression=gzip");
    assert!(run.lost_events().is_empty());
    let _ = std::fs::remove_dir_all(dir);
}
