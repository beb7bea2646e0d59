use std::io::BufReader;
use std::net::{TcpListener, TcpStream, UdpSocket};

use super::*;
use crate::event::{Action, Level, Network, Observer, Said};
use crate::sink::stdout::Format as OutFormat;
use crate::sink::SinkSpec;

fn ctx() -> SinkContext {
    SinkContext::new("cs-probe-1".into(), OutFormat::Json)
}

fn ev(n: usize, level: Level) -> Event {
    let mut e = Event::new(
        "2026-11-22T10:00:05.536897Z".into(),
        Observer {
            hostname: "cs-probe-1".into(),
            ingress: None,
        },
        Said {
            action: Action::HeartbeatGap,
            level,
            message: format!("event {n}"),
        },
    );
    e.network = Some(Network {
        protocol: "mds",
        transport: "udp",
        ip_version: "ipv4",
        iana_number: "17",
        community_id: None,
    });
    e
}

fn parse(s: &str) -> Result<SyslogOptions, String> {
    match s.parse::<SinkSpec>() {
        Ok(SinkSpec::Syslog(o)) => Ok(o),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e.to_string()),
    }
}

/// Waits up to 5 s for `f` to hold.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reads one octet-counted frame.
fn read_frame(r: &mut impl std::io::BufRead) -> Option<String> {
    let mut len = Vec::new();
    if r.read_until(b' ', &mut len).ok()? == 0 {
        return None;
    }
    let n: usize = std::str::from_utf8(&len[..len.len() - 1])
        .ok()?
        .parse()
        .ok()?;
    let mut msg = vec![0; n];
    r.read_exact(&mut msg).ok()?;
    Some(String::from_utf8(msg).unwrap())
}

fn body(msg: &str) -> serde_json::Value {
    let json = &msg[msg.find('{').unwrap()..];
    serde_json::from_str(json).unwrap()
}

#[test]
fn options_have_defaults_per_transport() {
    let o = parse("syslog+udp://siem.example").unwrap();
    assert_eq!(
        (o.transport, o.port, o.host.as_str()),
        (Transport::Udp, 514, "siem.example")
    );
    assert_eq!(
        (o.format, o.facility, o.queue),
        (Format::Rfc5424, 16, 10_000)
    );
    assert_eq!((o.max_message, o.rate), (UDP_MAX, DEFAULT_RATE));
    assert_eq!(o.name, "syslog+udp://siem.example:514");
    let o = parse("syslog+tcp://10.0.0.1").unwrap();
    assert_eq!(
        (o.transport, o.port, o.max_message),
        (Transport::Tcp, 514, 1 << 20)
    );
    let o = parse("syslog+tls://[::1]").unwrap();
    assert_eq!(
        (o.transport, o.port, o.host.as_str()),
        (Transport::Tls, 6514, "::1")
    );
    assert_eq!(o.name, "syslog+tls://[::1]:6514");
    let o = parse(
        "syslog+tls://logs:1514?format=rfc3164&facility=daemon&queue=50&max_message=8KiB\
         &timeout=2s&reconnect_max=1m&ca=/etc/ca.pem&server_name=syslog.example\
         &cert=/c.pem&key=/k.pem",
    )
    .unwrap();
    assert_eq!(
        (o.format, o.facility, o.queue, o.max_message),
        (Format::Rfc3164, 3, 50, 8192)
    );
    assert_eq!(
        (o.timeout, o.reconnect_max),
        (Duration::from_secs(2), Duration::from_secs(60))
    );
    assert_eq!(o.ca, Some(PathBuf::from("/etc/ca.pem")));
    assert_eq!(o.server_name.as_deref(), Some("syslog.example"));
    assert_eq!(parse("syslog+udp://h?rate=0").unwrap().rate, 0);
}

#[test]
fn option_errors_say_what_is_wrong() {
    let err = |s: &str| parse(s).unwrap_err();
    for (url, says) in [
        ("syslog+udp://h?fmt=x", "unknown option \"fmt\""),
        ("syslog+udp://h?format=json", "rfc5424 or rfc3164"),
        ("syslog+udp://h?facility=local9", "unknown facility"),
        ("syslog+udp://h?queue=0", "queue"),
        ("syslog+udp://h?max_message=70000", "from 480 to 65507"),
        ("syslog+tcp://h?max_message=100", "from 480"),
        ("syslog+tcp://h?rate=10", "applies to syslog+udp only"),
        (
            "syslog+udp://h?timeout=1s",
            "applies to syslog+tcp and syslog+tls only",
        ),
        ("syslog+tcp://h?ca=/x.pem", "applies to syslog+tls only"),
        ("syslog+tls://h?server_name=a%20b", "not a DNS name"),
        ("syslog+tls://h?cert=/c.pem", "cert and key go together"),
        ("syslog+udp://h?rate=1&rate=2", "given twice"),
        ("syslog+udp://h/path", "options go in the query"),
        ("syslog+udp://u:p@h", "no user or password"),
        ("syslog+udp://h:0", "port 0"),
    ] {
        let e = err(url);
        assert!(e.contains(says), "{url}: {e}");
        assert!(
            e.contains(url.split('?').next().unwrap()),
            "the URL is named: {e}"
        );
    }
}

#[test]
fn tls_setup_errors_show_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let open = |url: String| {
        SyslogSink::open(&parse(&url).unwrap(), &ctx())
            .err()
            .unwrap()
    };
    let e = open(format!("syslog+tls://127.0.0.1:1?ca={}", empty.display()));
    assert!(e.to_string().contains("no certificate"), "{e:#}");
    let e = open("syslog+tls://127.0.0.1:1?ca=/nonexistent/ca.pem".into());
    assert!(format!("{e:#}").contains("/nonexistent/ca.pem"), "{e:#}");
}

#[test]
fn message_is_the_header_and_the_json_line() {
    let o = parse("syslog+udp://127.0.0.1:9").unwrap();
    let mut sink = SyslogSink::open(&o, &ctx()).unwrap();
    let line = ev(1, Level::Warning).to_line();
    for seq in 1..=2 {
        let msg = String::from_utf8(sink.message(&ev(1, Level::Warning))).unwrap();
        assert_eq!(
            msg,
            format!(
                "<132>1 2026-11-22T10:00:05.536897Z cs-probe-1 hbwatch {} heartbeat.gap \
                 [meta sequenceId=\"{seq}\"] {}",
                std::process::id(),
                line.trim_end()
            )
        );
        assert!(!msg.contains('\n'));
    }
    sink.close(Duration::ZERO).unwrap();
    // sequence=off: no structured data.
    let o = parse("syslog+udp://127.0.0.1:9?sequence=off").unwrap();
    let mut sink = SyslogSink::open(&o, &ctx()).unwrap();
    let msg = String::from_utf8(sink.message(&ev(1, Level::Warning))).unwrap();
    assert!(msg.contains(" heartbeat.gap - {"), "{msg}");
    sink.close(Duration::ZERO).unwrap();
}

#[test]
fn framing_and_sequence_options() {
    let o = parse("syslog+tcp://h").unwrap();
    assert_eq!((o.framing, o.sequence), (Framing::Octet, true));
    let o = parse("syslog+tls://h?framing=newline&sequence=off").unwrap();
    assert_eq!((o.framing, o.sequence), (Framing::Newline, false));
    assert!(parse("syslog+udp://h?framing=newline")
        .unwrap_err()
        .contains("syslog+tcp and syslog+tls only"));
    assert!(parse("syslog+tcp://h?framing=lines")
        .unwrap_err()
        .contains("octet or newline"));
    assert!(parse("syslog+udp://h?sequence=maybe")
        .unwrap_err()
        .contains("on or off"));
    // RFC 3164 has no structured data: off unless asked for, an error if asked for.
    assert!(!parse("syslog+udp://h?format=rfc3164").unwrap().sequence);
    assert!(parse("syslog+udp://h?format=rfc3164&sequence=on")
        .unwrap_err()
        .contains("rfc5424"));
}

#[test]
fn newline_framing_sends_one_message_per_line() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let o = parse(&format!("syslog+tcp://127.0.0.1:{port}?framing=newline")).unwrap();
    let mut sink = SyslogSink::open(&o, &ctx()).unwrap();
    for n in 0..5 {
        sink.send(&ev(n, Level::Info)).unwrap();
    }
    let (conn, _) = listener.accept().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead as _;
        BufReader::new(conn)
            .lines()
            .map(Result::unwrap)
            .collect::<Vec<_>>()
    });
    sink.close(Duration::from_secs(5)).unwrap();
    let lines = reader.join().unwrap();
    assert_eq!(lines.len(), 5, "{lines:?}");
    for (n, l) in lines.iter().enumerate() {
        assert!(l.starts_with("<134>1 "), "no length prefix: {l}");
        assert!(
            l.contains(&format!("[meta sequenceId=\"{}\"]", n + 1)),
            "{l}"
        );
        assert_eq!(body(l)["message"], format!("event {n}"));
    }
}

#[test]
fn udp_sends_one_datagram_per_event_and_drops_oversized_ones() {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let port = rx.local_addr().unwrap().port();
    let o = parse(&format!(
        "syslog+udp://127.0.0.1:{port}?max_message=1000&format=rfc3164"
    ))
    .unwrap();
    let mut sink = SyslogSink::open(&o, &ctx()).unwrap();
    for n in 0..20 {
        sink.send(&ev(n, Level::Critical)).unwrap();
    }
    let mut big = ev(99, Level::Info);
    big.message = "x".repeat(2000);
    sink.send(&big).unwrap();
    sink.close(Duration::from_secs(5)).unwrap();
    let mut buf = vec![0; 70_000];
    for n in 0..20 {
        let len = rx.recv(&mut buf).unwrap();
        let msg = std::str::from_utf8(&buf[..len]).unwrap();
        assert!(
            msg.starts_with("<130>Nov 22 10:00:05 cs-probe-1 hbwatch["),
            "{msg}"
        );
        assert_eq!(body(msg)["message"], format!("event {n}"));
    }
    let st = sink.stats();
    assert_eq!((st.delivered, st.dropped, st.queued), (20, 1, 0));
}

#[test]
fn tcp_frames_are_octet_counted_and_survive_a_receiver_that_comes_late_and_one_that_closes() {
    // Nothing listens at first: events wait in the queue.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = parse(&format!(
        "syslog+tcp://127.0.0.1:{port}?reconnect_max=200ms"
    ))
    .unwrap();
    let mut sink = SyslogSink::open(&o, &ctx()).unwrap();
    for n in 0..10 {
        sink.send(&ev(n, Level::Info)).unwrap();
    }
    eventually("connection attempts", || sink.stats().retries >= 2);
    assert_eq!(sink.stats().queued, 10);
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();

    // The first receiver reads 10 and hangs up.
    let (conn, _) = listener.accept().unwrap();
    let mut r = BufReader::new(conn);
    let mut got: Vec<String> = (0..10).map(|_| read_frame(&mut r).unwrap()).collect();
    eventually("10 acknowledged", || sink.stats().delivered == 10);
    drop(r);
    std::thread::sleep(Duration::from_millis(50));

    // The next ones go to the next connection.
    for n in 10..30 {
        sink.send(&ev(n, Level::Info)).unwrap();
    }
    let (conn, _) = listener.accept().unwrap();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(conn);
        std::iter::from_fn(|| read_frame(&mut r)).collect::<Vec<_>>()
    });
    sink.close(Duration::from_secs(5)).unwrap();
    got.extend(reader.join().unwrap());
    let numbers: Vec<String> = got
        .iter()
        .map(|m| body(m)["message"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = (0..30).map(|n| format!("event {n}")).collect();
    assert_eq!(numbers, want, "every event once, in order");
    assert!(got[0].starts_with("<134>1 2026-11-22T10:00:05.536897Z cs-probe-1 hbwatch "));
    let st = sink.stats();
    assert_eq!((st.delivered, st.dropped, st.queued), (30, 0, 0));
    assert!(st.retries >= 3, "{st:?}");
}

#[test]
fn a_full_queue_drops_new_events_and_close_counts_the_rest() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = parse(&format!("syslog+tcp://127.0.0.1:{port}?queue=5")).unwrap();
    let mut sink = SyslogSink::open(&o, &ctx()).unwrap();
    let t = Instant::now();
    for n in 0..12 {
        sink.send(&ev(n, Level::Info)).unwrap();
    }
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "send does not wait for the network"
    );
    let st = sink.stats();
    assert_eq!((st.dropped, st.queued), (7, 5));
    sink.close(Duration::from_millis(100)).unwrap();
    let st = sink.stats();
    assert_eq!((st.delivered, st.dropped, st.queued), (0, 12, 0));
}

#[test]
fn a_receiver_that_reads_nothing_does_not_hold_close_past_its_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let o = parse(&format!("syslog+tcp://127.0.0.1:{port}?queue=100000")).unwrap();
    let mut sink = SyslogSink::open(&o, &ctx()).unwrap();
    let (_conn, _): (TcpStream, _) = listener.accept().unwrap();
    // Far more than the socket buffers hold.
    let mut big = ev(0, Level::Info);
    big.message = "y".repeat(10_000);
    for _ in 0..2000 {
        sink.send(&big).unwrap();
    }
    let t = Instant::now();
    sink.close(Duration::from_millis(300)).unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let st = sink.stats();
    assert_eq!(st.delivered + st.dropped, 2000);
    assert!(st.dropped > 1000, "{st:?}");
}
