//! All the network outputs of one run at once, the way a deployment (and its acceptance
//! check) uses them: `hbwatch analyze` of an hbgen capture with `--output stdout`, syslog
//! over UDP and over TCP to a real rsyslogd (`support/rsyslog.rs`), and Loki
//! (`support/loki.rs`) that is down when the run starts (connections refused), then
//! overloaded (HTTP 503 to the first pushes), then takes pushes.
//!
//! Every output must get every event the run printed on stdout, exactly once (equal as
//! multisets), validly encoded: RFC 5424 headers and MSG for syslog; for Loki, pushes that
//! decode (snappy protobuf or JSON) with the labels, timestamps and structured metadata of
//! the line; and nothing reported lost (`agent.events_lost`, exit status).

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::loki::{assert_stream_order, lines, spooled, Endpoint, Expect};
use support::rsyslog::{check, rsyslogd, Inputs, Rsyslog, HOSTNAME};
use support::{capture, check_event, finish, free_tcp_port, sorted, BIN};

/// What Loki answers once it listens: three times 503, then 204.
const OVERLOADED: [u16; 3] = [503, 503, 503];

/// `loki_query`: options after the Loki URL (empty: the defaults, snappy protobuf).
fn every_output_gets_every_event_once(scenario: &str, loki_query: &str, encoding: &str) {
    // imudp and imtcp come in the same package.
    let Some(bin) = rsyslogd("imtcp.so") else {
        return;
    };
    let case = format!("{scenario}/{encoding}");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rs = Rsyslog::start(
        &bin,
        d,
        Inputs {
            udp: true,
            tcp: Some(0),
            ..Inputs::default()
        },
    );
    let pcap = capture(d, scenario);
    // A private spool: nothing left by another run is delivered, nothing is left behind.
    let state = d.join("state");
    // Nothing listens there yet: Loki refuses connections.
    let loki_port = free_tcp_port();
    let outputs = [
        "stdout".to_string(),
        format!("syslog+udp://127.0.0.1:{}", rs.udp.unwrap()),
        format!("syslog+tcp://127.0.0.1:{}", rs.tcp.unwrap()),
        format!("loki+http://127.0.0.1:{loki_port}{loki_query}"),
    ];
    let mut cmd = Command::new(BIN);
    cmd.arg("analyze")
        .arg(&pcap)
        .args(["--summary-period", "5", "--hostname", HOSTNAME])
        // Long enough for Loki's default backoff through the outage.
        .args(["--flush-timeout", "60s"])
        .env("STATE_DIRECTORY", &state)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for o in &outputs {
        cmd.args(["--output", o]);
    }
    let started = Instant::now();
    let child = cmd.spawn().unwrap();

    // Loki stays down until a push was refused and its batch went to the spool, and a
    // little longer (another refused attempt or so)...
    while spooled(&state).0.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{case}: nothing spooled while Loki was down"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(700));
    // ...then comes up overloaded.
    let ep = Endpoint::start(loki_port, &OVERLOADED, Expect::default());
    let up = started.elapsed();
    let run = finish(child, Duration::from_secs(120));
    let took = started.elapsed();

    assert_eq!(run.code(), Some(0), "{case}: {}", run.stderr);
    assert!(
        run.stdout.len() > 100,
        "{case}: a real run: {} events",
        run.stdout.len()
    );
    // stdout: one complete event per line, and no loss reported.
    for l in &run.stdout {
        let (ev, _) = check_event(l).unwrap_or_else(|e| panic!("{case}: stdout: {e}"));
        assert_eq!(ev["observer"]["hostname"], HOSTNAME, "{case}: {l}");
    }
    assert!(
        run.lost_events().is_empty(),
        "{case}: {:?}",
        run.lost_events()
    );
    assert!(
        !run.stderr.contains("not every event was delivered"),
        "{case}: {}",
        run.stderr
    );

    // syslog: every stdout line once as MSG over each transport, RFC 5424 headers right
    // (default facility local0).
    for input in ["udp", "tcp"] {
        let got = rs.received(input, run.stdout.len(), Duration::from_secs(10));
        check(&format!("{case} {input}"), &got, &run.stdout, 16, true);
    }

    // Loki: the outage happened as staged and was ridden out...
    assert!(
        run.stderr.contains("push failed") && run.stderr.contains("refused"),
        "{case}: the refused connections are logged: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("Loki takes pushes again"),
        "{case}: {}",
        run.stderr
    );
    let statuses = ep.statuses();
    assert!(
        statuses.len() > OVERLOADED.len()
            && statuses[..OVERLOADED.len()] == OVERLOADED
            && statuses[OVERLOADED.len()..].iter().all(|s| *s == 204),
        "{case}: {statuses:?}"
    );
    // ...every push decoded and met Loki's rules and hbwatch's label/metadata contract...
    assert!(ep.errors().is_empty(), "{case}: {:?}", ep.errors());
    assert!(
        ep.requests().iter().all(|r| r.encoding == encoding),
        "{case}: pushes not all {encoding}"
    );
    // ...and every stdout line arrived exactly once, in order within its stream.
    let got = ep.accepted();
    assert_eq!(
        sorted(lines(&got)),
        sorted(run.stdout.clone()),
        "{case}: what Loki took is what stdout showed, each once"
    );
    assert_stream_order(&run.stdout, &got);
    let (left, _) = spooled(&state);
    assert!(left.is_empty(), "{case}: spool not empty: {left:?}");
    eprintln!(
        "{case}: {} events to 4 outputs; Loki up after {:.2}s, pushes {statuses:?}, run took {:.2}s",
        run.stdout.len(),
        up.as_secs_f64(),
        took.as_secs_f64()
    );
}

#[test]
fn faults_to_stdout_syslog_udp_tcp_and_a_recovering_loki_protobuf() {
    every_output_gets_every_event_once("faults", "", "protobuf");
}

#[test]
fn faults_to_stdout_syslog_udp_tcp_and_a_recovering_loki_json() {
    every_output_gets_every_event_once("faults", "?encoding=json", "json");
}

/// Small batches: many pushes through the outage, spooled and in-memory batches mixed.
#[test]
fn story_to_stdout_syslog_udp_tcp_and_a_recovering_loki_small_batches() {
    every_output_gets_every_event_once("story", "?batch_size=4KiB", "protobuf");
}
