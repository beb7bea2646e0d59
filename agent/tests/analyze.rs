//! `hbwatch analyze` end to end: captures written as real pcap/pcapng bytes, read by
//! the same engine as live, correlated with the capture's clock. Each scenario asserts
//! the exact anomaly events a user would look for, and silence everywhere else.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use hbgen::frame::{FrameSpec, Tcp};
use hbwatch::offline::{analyze_file, AnalyzeOptions, Damage};
use hbwatch::ports::{default_specs, port_table};
use hbwatch::sink::stdout::LineSink;
use serde_json::Value;

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;
/// 2026-11-22T10:00:00Z: captures start at a real date.
const T0: u64 = 1_795_341_600 * SEC;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Frames with capture times (ns since the epoch).
#[derive(Default)]
struct Capture {
    frames: Vec<(u64, Vec<u8>)>,
}

impl Capture {
    fn push(&mut self, t: u64, f: Vec<u8>) {
        self.frames.push((T0 + t, f));
    }
    fn sorted(&self) -> Vec<(u64, Vec<u8>)> {
        let mut v = self.frames.clone();
        v.sort_by_key(|(t, _)| *t);
        v
    }
    /// Classic pcap, microsecond or nanosecond magic.
    fn pcap(&self, nanos: bool) -> Vec<u8> {
        let mut b = Vec::new();
        let magic: u32 = if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 };
        b.extend_from_slice(&magic.to_le_bytes());
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&4u16.to_le_bytes());
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&65535u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        for (t, f) in self.sorted() {
            let frac = if nanos { t % SEC } else { t % SEC / 1000 };
            b.extend_from_slice(&((t / SEC) as u32).to_le_bytes());
            b.extend_from_slice(&(frac as u32).to_le_bytes());
            b.extend_from_slice(&(f.len() as u32).to_le_bytes());
            b.extend_from_slice(&(f.len() as u32).to_le_bytes());
            b.extend_from_slice(&f);
        }
        b
    }
    /// pcapng with one Ethernet interface at nanosecond resolution (if_tsresol 9).
    fn pcapng(&self) -> Vec<u8> {
        fn block(b: &mut Vec<u8>, kind: u32, body: &[u8]) {
            let len = 12 + body.len().div_ceil(4) * 4;
            b.extend_from_slice(&kind.to_le_bytes());
            b.extend_from_slice(&(len as u32).to_le_bytes());
            b.extend_from_slice(body);
            b.resize(b.len() + (4 - body.len() % 4) % 4, 0);
            b.extend_from_slice(&(len as u32).to_le_bytes());
        }
        let mut b = Vec::new();
        let mut shb = 0x1a2b_3c4du32.to_le_bytes().to_vec();
        shb.extend_from_slice(&1u16.to_le_bytes());
        shb.extend_from_slice(&0u16.to_le_bytes());
        shb.extend_from_slice(&(-1i64).to_le_bytes());
        block(&mut b, 0x0a0d_0d0a, &shb);
        let mut idb = 1u16.to_le_bytes().to_vec();
        idb.extend_from_slice(&[0, 0]);
        idb.extend_from_slice(&0u32.to_le_bytes());
        // if_tsresol = 9 (nanoseconds), then opt_endofopt.
        idb.extend_from_slice(&[9, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
        block(&mut b, 1, &idb);
        for (t, f) in self.sorted() {
            let mut epb = 0u32.to_le_bytes().to_vec();
            epb.extend_from_slice(&((t >> 32) as u32).to_le_bytes());
            epb.extend_from_slice(&(t as u32).to_le_bytes());
            epb.extend_from_slice(&(f.len() as u32).to_le_bytes());
            epb.extend_from_slice(&(f.len() as u32).to_le_bytes());
            epb.extend_from_slice(&f);
            epb.resize(epb.len().div_ceil(4) * 4, 0);
            block(&mut b, 6, &epb);
        }
        b
    }
}

fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hbwatch-analyze-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn opts(files: Vec<PathBuf>) -> AnalyzeOptions {
    // The MDS private-network port is site-specific: configured like a user would.
    let mut specs = default_specs();
    specs.push("mds=41000".parse().unwrap());
    AnalyzeOptions {
        files,
        ..AnalyzeOptions::new(port_table(&specs), "probe")
    }
}

fn run(path: &Path, o: &AnalyzeOptions) -> Vec<Value> {
    let mut out = LineSink::json(Vec::new());
    analyze_file(path, o, &mut out).expect("analyzes");
    String::from_utf8(out.into_inner())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect()
}

fn analyze(cap: &Capture, name: &str) -> Vec<Value> {
    let p = write(name, &cap.pcap(false));
    run(&p, &opts(vec![p.clone()]))
}

fn action(e: &Value) -> &str {
    e["event"]["action"].as_str().unwrap()
}

fn src(e: &Value) -> String {
    format!(
        "{}:{}",
        e["source"]["ip"].as_str().unwrap(),
        e["source"]["port"]
    )
}

/// (action, source) of every event but `peer.up` of new associations.
fn anomalies(evs: &[Value]) -> Vec<(String, String)> {
    evs.iter()
        .filter(|e| !(action(e) == "peer.up" && e["heartbeat"]["downtime_ms"].is_null()))
        .map(|e| (action(e).to_string(), src(e)))
        .collect()
}

// ---------------------------------------------------------------------------------
// Protocol traffic

fn mds(cap: &mut Capture, from: &str, to: &str, t: u64, seq: u32) {
    let f = FrameSpec::udp(ip(from), 41000, ip(to), 41000, &seq.to_le_bytes()).build();
    cap.push(t, f);
}

fn rudp(cap: &mut Capture, from: &str, to: &str, t: u64, seq: u32, flag: u16) {
    let mut p = seq.to_be_bytes().to_vec();
    p.extend_from_slice(&flag.to_be_bytes());
    let mut spec = FrameSpec::udp(ip(from), 15000, ip(to), 15000, &p);
    spec.dscp = 46;
    cap.push(t, spec.build());
}

/// An MDS router pair: A and B both send every 100 ms (with `jitter` ns of wobble),
/// except where `skip(direction, t)` says the datagram is not on the wire.
fn mds_pair(
    cap: &mut Capture,
    until: u64,
    jitter: u64,
    mut seq_at: impl FnMut(bool, u64) -> Option<u32>,
) {
    let mut t = 0;
    let mut i = 0u64;
    while t < until {
        let wobble = if i.is_multiple_of(2) { jitter } else { 0 };
        if let Some(s) = seq_at(true, t) {
            mds(cap, "10.50.0.1", "10.50.0.2", t + wobble, s);
        }
        if let Some(s) = seq_at(false, t) {
            mds(cap, "10.50.0.2", "10.50.0.1", t + 3 * MS + wobble, s);
        }
        t += 100 * MS;
        i += 1;
    }
}

const A: &str = "10.50.0.1:41000";
const B: &str = "10.50.0.2:41000";

#[test]
fn healthy_mds_with_jitter_is_silent() {
    let mut cap = Capture::default();
    // 3% jitter on every other heartbeat for 60 s.
    mds_pair(&mut cap, 60 * SEC, 3 * MS, |_, t| {
        Some((t / (100 * MS)) as u32)
    });
    let evs = analyze(&cap, "healthy.pcap");
    assert_eq!(anomalies(&evs), vec![], "{evs:#?}");
    let ups: Vec<_> = evs.iter().map(src).collect();
    assert_eq!(ups, vec![A, B], "one peer.up per direction");
}

#[test]
fn firewall_silence_of_both_directions_is_down_then_up_as_path_interruption() {
    let mut cap = Capture::default();
    // Both directions vanish from 10 s to 12 s; the counters keep running.
    mds_pair(&mut cap, 20 * SEC, 0, |_, t| {
        (!(10 * SEC..12 * SEC).contains(&t)).then_some((t / (100 * MS)) as u32)
    });
    let evs = analyze(&cap, "firewall.pcap");
    let got = anomalies(&evs);
    let want: Vec<(String, String)> = [
        ("heartbeat.missed", A),
        ("heartbeat.missed", B),
        ("peer.down", A),
        ("peer.down", B),
        ("heartbeat.gap", A),
        ("peer.up", A),
        ("heartbeat.gap", B),
        ("peer.up", B),
    ]
    .iter()
    .map(|(a, s)| (a.to_string(), s.to_string()))
    .collect();
    assert_eq!(got, want, "{evs:#?}");
    let down = evs.iter().find(|e| action(e) == "peer.down").unwrap();
    assert_eq!(down["heartbeat"]["diagnosis"], "path-interruption");
    assert_eq!(down["heartbeat"]["missed"], 5);
    assert_eq!(down["heartbeat"]["silence_ms"], 550);
    // The timer fired during the silence, at the deadline: 9.9 s + 550 ms.
    assert_eq!(down["@timestamp"], "2026-11-22T10:00:10.450000Z");
    let missed = evs
        .iter()
        .find(|e| action(e) == "heartbeat.missed")
        .unwrap();
    assert_eq!(missed["@timestamp"], "2026-11-22T10:00:10.150000Z");
    assert_eq!(missed["heartbeat"]["missed"], 2);
    let ups: Vec<&Value> = evs
        .iter()
        .filter(|e| action(e) == "peer.up" && !e["heartbeat"]["downtime_ms"].is_null())
        .collect();
    assert_eq!(ups.len(), 2);
    for up in ups {
        // B recovers 3 ms after A: still the outage both directions shared.
        assert_eq!(up["heartbeat"]["downtime_ms"], 2100);
        assert_eq!(up["heartbeat"]["diagnosis"], "path-interruption");
    }
    let gap = evs.iter().find(|e| action(e) == "heartbeat.gap").unwrap();
    assert_eq!(gap["heartbeat"]["lost"], 20);
}

#[test]
fn one_direction_lost_is_one_way_loss() {
    let mut cap = Capture::default();
    mds_pair(&mut cap, 20 * SEC, 0, |a_to_b, t| {
        (!(a_to_b && (10 * SEC..13 * SEC).contains(&t))).then_some((t / (100 * MS)) as u32)
    });
    let evs = analyze(&cap, "oneway.pcap");
    let got: Vec<_> = anomalies(&evs);
    assert!(
        got.iter().all(|(_, s)| s == A),
        "only A->B is affected: {got:?}"
    );
    let down = evs.iter().find(|e| action(e) == "peer.down").unwrap();
    assert_eq!(down["heartbeat"]["diagnosis"], "one-way-loss");
}

#[test]
fn router_restart_after_silence_is_peer_restart() {
    let mut cap = Capture::default();
    // A's process dies at 10 s and comes back at 13 s counting from 0.
    mds_pair(&mut cap, 20 * SEC, 0, |a_to_b, t| {
        let n = (t / (100 * MS)) as u32;
        match (a_to_b, t) {
            (true, t) if (10 * SEC..13 * SEC).contains(&t) => None,
            (true, t) if t >= 13 * SEC => Some(n - 130),
            _ => Some(n),
        }
    });
    let evs = analyze(&cap, "restart.pcap");
    let got: Vec<_> = anomalies(&evs).into_iter().map(|(a, _)| a).collect();
    assert_eq!(
        got,
        [
            "heartbeat.missed",
            "peer.down",
            "heartbeat.restart",
            "peer.up"
        ],
        "{evs:#?}"
    );
    let up = evs.iter().rev().find(|e| action(e) == "peer.up").unwrap();
    assert_eq!(up["heartbeat"]["diagnosis"], "peer-restart");
    assert_eq!(up["heartbeat"]["seq"], 0);
}

#[test]
fn late_rudp_heartbeat_is_late_not_missed() {
    let mut cap = Capture::default();
    let (a, b) = ("10.0.0.1", "10.0.0.2");
    let mut t = 0;
    for seq in 100..130u32 {
        // Seq 120 comes 700 ms late (interval 1.7 s against 1 s, tolerance 50%).
        if seq == 120 {
            t += 700 * MS;
        }
        rudp(&mut cap, a, b, t, seq, 0x02ff);
        rudp(&mut cap, b, a, t + 2 * MS, seq, 0x0100);
        t += SEC;
    }
    let evs = analyze(&cap, "late.pcap");
    assert_eq!(
        anomalies(&evs),
        vec![("heartbeat.late".to_string(), "10.0.0.1:15000".to_string())],
        "{evs:#?}"
    );
    let late = &evs[1]["heartbeat"];
    assert_eq!(late["interval_ms"], 1700);
    assert_eq!(late["expected_interval_ms"], 1000);
    assert_eq!(late["seq"], 120);
}

#[test]
fn summaries_report_count_loss_and_rtt_per_period() {
    let mut cap = Capture::default();
    let (a, b) = ("10.0.0.1", "10.0.0.2");
    for i in 0..130u32 {
        let t = i as u64 * SEC;
        // Seq 50 lost on the wire: a gap of 1.
        if i != 50 {
            rudp(&mut cap, a, b, t, i, 0x02ff);
            rudp(&mut cap, b, a, t + (2 + i as u64 % 3) * MS, i, 0x0100);
        }
    }
    let p = write("summary.pcap", &cap.pcap(false));
    let mut o = opts(vec![p.clone()]);
    o.summary_period = Some(Duration::from_secs(60));
    let evs = run(&p, &o);
    let sums: Vec<&Value> = evs
        .iter()
        .filter(|e| action(e) == "heartbeat.summary")
        .collect();
    assert_eq!(sums.len(), 3, "two full periods and the last partial one");
    assert_eq!(sums[0]["event"]["kind"], "metric");
    assert_eq!(sums[0]["@timestamp"], "2026-11-22T10:01:00.000000Z");
    assert_eq!(sums[0]["heartbeat"]["count"], 60);
    assert_eq!(sums[0]["heartbeat"]["lost"], 1);
    assert_eq!(sums[1]["heartbeat"]["lost"], 0);
    assert_eq!(sums[0]["heartbeat"]["rtt_us"]["min"], 2000);
    assert_eq!(sums[0]["heartbeat"]["rtt_us"]["max"], 4000);
    assert_eq!(sums[0]["heartbeat"]["interval_ms"], 1000);
    // Same words and units as SIP's summaries (RTT in ms, to the µs).
    let message = sums[0]["message"].as_str().unwrap();
    assert!(
        message.contains(": 60 heartbeats, 1 lost, RTT 2.000/")
            && message.ends_with("/4.000 ms min/avg/max in 60 s (interval 1000 ms)"),
        "{message}"
    );
    // The last period ends with the capture's last frame (129 s + 2 ms).
    assert_eq!(sums[2]["heartbeat"]["period_ms"], 9002);
}

/// GED-125 over a real-looking TCP session: PIM (client) -> CVP:5000.
#[test]
fn ged125_silence_is_down_after_two_missed_and_fin_ends_the_association() {
    let mut cap = Capture::default();
    let (pim, cvp) = (ip("10.0.1.10"), ip("10.0.2.20"));
    let (mut cseq, mut sseq) = (1000u32, 9000u32);
    let seg = |src, sport, dst, dport, seq: u32, flags: u8, payload: &[u8]| {
        let mut s = FrameSpec::udp(src, sport, dst, dport, payload);
        s.tcp = Some(Tcp {
            seq,
            ack: 1,
            flags,
            window: 65535,
        });
        s.build()
    };
    let mut t = 0;
    for id in 0..40u32 {
        // The PIM stops sending from 60 s to 90 s (a hung PIM), then resumes.
        if !(60 * SEC..90 * SEC).contains(&t) {
            let req = [0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, id as u8];
            cap.push(t, seg(pim, 40123, cvp, 5000, cseq, 0x18, &req));
            cseq += 12;
            let conf = [0, 0, 0, 4, 0, 0, 0, 6, 0, 0, 0, id as u8];
            cap.push(t + 3 * MS, seg(cvp, 5000, pim, 40123, sseq, 0x18, &conf));
            sseq += 12;
        }
        t += 5 * SEC;
    }
    // FIN from CVP ends it: no timer may fire afterwards.
    cap.push(t, seg(cvp, 5000, pim, 40123, sseq, 0x11, &[]));
    cap.push(
        t + 600 * SEC,
        seg(ip("10.9.9.9"), 1, ip("10.9.9.8"), 2, 1, 0x10, &[]),
    );
    let evs = analyze(&cap, "ged.pcap");
    let got: Vec<_> = anomalies(&evs).into_iter().map(|(a, _)| a).collect();
    assert_eq!(
        got,
        ["peer.down", "heartbeat.gap", "peer.up", "session.closed"],
        "{evs:#?}"
    );
    let down = &evs[1]["heartbeat"];
    assert_eq!(down["missed"], 2);
    assert_eq!(down["expected_interval_ms"], 5000);
}

#[test]
fn pcapng_nanoseconds_and_stdin_give_the_same_events_as_pcap() {
    let mut cap = Capture::default();
    mds_pair(&mut cap, 15 * SEC, 0, |_, t| {
        (!(5 * SEC..8 * SEC).contains(&t)).then_some((t / (100 * MS)) as u32)
    });
    let from_pcap = analyze(&cap, "same.pcap");
    let p_ns = write("same-ns.pcap", &cap.pcap(true));
    let from_ns = run(&p_ns, &opts(vec![p_ns.clone()]));
    let p_ng = write("same.pcapng", &cap.pcapng());
    let from_ng = run(&p_ng, &opts(vec![p_ng.clone()]));
    let strip = |evs: &[Value]| -> Vec<Value> {
        evs.iter()
            .map(|e| {
                let mut e = e.clone();
                e["observer"] = Value::Null;
                e
            })
            .collect()
    };
    assert!(from_pcap.len() >= 6, "{from_pcap:#?}");
    assert_eq!(strip(&from_pcap), strip(&from_ns));
    assert_eq!(strip(&from_pcap), strip(&from_ng));
    assert_eq!(
        from_ng[0]["observer"]["ingress"]["interface"]["name"],
        "same.pcapng"
    );

    // The binary reading stdin, with --summary on stderr.
    let mut child = Command::new(env!("CARGO_BIN_EXE_hbwatch"))
        .args(["analyze", "-", "--summary", "--hostname", "probe"])
        .args(["--port", "mds=41000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&cap.pcapng())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from_stdin: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &Value| action(e) != "heartbeat.summary")
        .collect();
    assert_eq!(strip(&from_pcap), strip(&from_stdin));
    let table = String::from_utf8(out.stderr).unwrap();
    assert!(
        table.contains("mds 10.50.0.1:41000 -> 10.50.0.2:41000"),
        "{table}"
    );
    assert!(table.contains("path-interruption"), "{table}");
}

#[test]
fn not_a_capture_is_a_clear_error() {
    let p = write("notes.txt", b"this is not a capture at all, just text\n");
    let mut out = LineSink::json(Vec::new());
    let r = analyze_file(&p, &opts(vec![p.clone()]), &mut out).unwrap();
    let Some(Damage::Unreadable(why)) = &r.damage else {
        panic!("{:?}", r.damage)
    };
    assert!(why.contains("not a pcap or pcapng capture"), "{why}");
    let missing = Path::new("/nonexistent/capture.pcap");
    let r = analyze_file(missing, &opts(vec![]), &mut out).unwrap();
    let Some(Damage::Unreadable(why)) = &r.damage else {
        panic!("{:?}", r.damage)
    };
    assert!(why.contains("cannot open"), "{why}");
    assert_eq!((r.frames, r.events), (0, 0));
}

// ---------------------------------------------------------------------------------
// SIP as real captures show it: mirror copies, rejected passwords, lapses, --summary

const PHONE: &str = "10.40.0.50";
const PBX: &str = "10.40.0.1";
const PINGER: &str = "10.40.0.9";

/// A SIP message from the phone's dialog `call_id`: start line, the usual headers,
/// `extra` headers.
fn sip_text(start: &str, call_id: &str, cseq: u32, method: &str, extra: &[&str]) -> Vec<u8> {
    let mut lines = vec![
        start.to_string(),
        format!("Via: SIP/2.0/UDP {PHONE}:5060;branch=z9hG4bK-{call_id}-{cseq}"),
        format!("From: <sip:2001@{PBX}>;tag=ph1"),
        format!("To: <sip:2001@{PBX}>"),
        format!("Call-ID: {call_id}"),
        format!("CSeq: {cseq} {method}"),
    ];
    lines.extend(extra.iter().map(|s| s.to_string()));
    lines.push("Content-Length: 0".into());
    (lines.join("\r\n") + "\r\n\r\n").into_bytes()
}

fn register(cseq: u32, extra: &[&str]) -> Vec<u8> {
    let mut headers = vec!["Contact: <sip:2001@10.40.0.50:5060>", "Expires: 60"];
    headers.extend_from_slice(extra);
    sip_text(
        "REGISTER sip:10.40.0.1 SIP/2.0",
        "reg-2001",
        cseq,
        "REGISTER",
        &headers,
    )
}

fn register_answer(cseq: u32, status: &str, extra: &[&str]) -> Vec<u8> {
    sip_text(status, "reg-2001", cseq, "REGISTER", extra)
}

const OK_60: &[&str] = &["Contact: <sip:2001@10.40.0.50:5060>;expires=60"];

fn sip_udp(cap: &mut Capture, from: &str, to: &str, t: u64, payload: &[u8]) {
    let f = FrameSpec::udp(ip(from), 5060, ip(to), 5060, payload).build();
    cap.push(t, f);
}

/// Runs the binary: (exit code, events, stderr).
fn hbwatch_analyze(args: &[&str]) -> (Option<i32>, Vec<Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hbwatch"))
        .arg("analyze")
        .args(["--hostname", "probe"])
        .args(args)
        .output()
        .unwrap();
    let events = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect();
    (
        out.status.code(),
        events,
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// The `--summary` row of an association: its columns after the name.
fn table_row<'a>(table: &'a str, assoc: &str) -> Vec<&'a str> {
    let line = table
        .lines()
        .find(|l| l.starts_with(assoc))
        .unwrap_or_else(|| panic!("no row for {assoc}:\n{table}"));
    line[assoc.len()..].split_whitespace().collect()
}

#[test]
fn sip_mirror_copies_are_counted_never_retries_and_the_summary_lists_sip() {
    // A SPAN port: every frame twice, 40 us apart. A phone refreshing its registration
    // every 50 s and making one call (INVITE..BYE), a pinger sending OPTIONS every
    // 30 s, one of which really is retransmitted (after T1 = 500 ms).
    let mut cap = Capture::default();
    let mut sends: Vec<(u64, &'static str, &'static str, Vec<u8>)> = Vec::new();
    for (i, t) in (0..300 * SEC).step_by(50 * SEC as usize).enumerate() {
        let cseq = i as u32 + 1;
        sends.push((t, PHONE, PBX, register(cseq, &[])));
        sends.push((
            t + 4 * MS,
            PBX,
            PHONE,
            register_answer(cseq, "SIP/2.0 200 OK", OK_60),
        ));
    }
    fn call(
        t: u64,
        from: &'static str,
        to: &'static str,
        start: &str,
        cseq: u32,
        method: &str,
    ) -> (u64, &'static str, &'static str, Vec<u8>) {
        (t, from, to, sip_text(start, "call-77", cseq, method, &[]))
    }
    let invite = "INVITE sip:3001@10.40.0.1 SIP/2.0";
    sends.extend([
        call(70 * SEC, PHONE, PBX, invite, 1, "INVITE"),
        call(
            70 * SEC + 2 * MS,
            PBX,
            PHONE,
            "SIP/2.0 100 Trying",
            1,
            "INVITE",
        ),
        call(71 * SEC, PBX, PHONE, "SIP/2.0 180 Ringing", 1, "INVITE"),
        call(75 * SEC, PBX, PHONE, "SIP/2.0 200 OK", 1, "INVITE"),
        call(
            75 * SEC + 5 * MS,
            PHONE,
            PBX,
            "ACK sip:3001@10.40.0.1 SIP/2.0",
            1,
            "ACK",
        ),
        call(
            135 * SEC,
            PHONE,
            PBX,
            "BYE sip:3001@10.40.0.1 SIP/2.0",
            2,
            "BYE",
        ),
        call(135 * SEC + 3 * MS, PBX, PHONE, "SIP/2.0 200 OK", 2, "BYE"),
    ]);
    let options = |cseq: u32| {
        sip_text(
            "OPTIONS sip:10.40.0.1 SIP/2.0",
            "ping-9",
            cseq,
            "OPTIONS",
            &[],
        )
    };
    for (i, t) in (0..300 * SEC).step_by(30 * SEC as usize).enumerate() {
        let cseq = i as u32 + 1;
        let answer_at = if cseq == 4 {
            // Lost on the way: sent again after T1, then answered.
            sends.push((t + 500 * MS, PINGER, PBX, options(cseq)));
            t + 503 * MS
        } else {
            t + 3 * MS
        };
        sends.push((t, PINGER, PBX, options(cseq)));
        sends.push((
            answer_at,
            PBX,
            PINGER,
            sip_text("SIP/2.0 200 OK", "ping-9", cseq, "OPTIONS", &[]),
        ));
    }
    for (t, from, to, payload) in &sends {
        sip_udp(&mut cap, from, to, *t, payload);
        sip_udp(&mut cap, from, to, *t + 40_000, payload);
    }
    // A phone registering over TCP, every 50 s: its segments mirrored too.
    let (tcp_phone, mut phone_seq, mut pbx_seq) = (ip("10.40.0.60"), 7_000u32, 90_000u32);
    for cseq in 1..=6u32 {
        let t = u64::from(cseq) * 50 * SEC - 20 * SEC;
        let text = |start: &str| {
            let text = String::from_utf8(sip_text(start, "tcp-reg", cseq, "REGISTER", OK_60));
            text.unwrap().replace(PHONE, "10.40.0.60").into_bytes()
        };
        for (at, src, sport, dst, dport, seq, payload) in [
            (
                t,
                tcp_phone,
                40_600,
                ip(PBX),
                5060,
                &mut phone_seq,
                text("REGISTER sip:10.40.0.1 SIP/2.0"),
            ),
            (
                t + 4 * MS,
                ip(PBX),
                5060,
                tcp_phone,
                40_600,
                &mut pbx_seq,
                text("SIP/2.0 200 OK"),
            ),
        ] {
            let mut f = FrameSpec::udp(src, sport, dst, dport, &payload);
            f.tcp = Some(Tcp {
                seq: *seq,
                ack: 1,
                flags: 0x18,
                window: 65535,
            });
            *seq += payload.len() as u32;
            cap.push(at, f.build());
            cap.push(at + 40_000, f.build());
        }
    }
    let p = write("span.pcap", &cap.pcap(true));
    let (code, evs, table) =
        hbwatch_analyze(&[p.to_str().unwrap(), "--summary", "--summary-period", "3600"]);
    assert_eq!(code, Some(0), "{table}");
    let alerts: Vec<(String, String)> = evs
        .iter()
        .filter(|e| e["event"]["kind"] == "alert")
        .map(|e| (action(e).to_string(), src(e)))
        .collect();
    assert_eq!(
        alerts,
        [("heartbeat.retry".to_string(), format!("{PINGER}:5060"))],
        "only the real re-send: {evs:#?}"
    );
    let registered = evs.iter().filter(|e| action(e) == "sip.registered").count();
    assert_eq!(registered, 2, "the UDP and the TCP phone");
    let summary = |from: &str| {
        evs.iter()
            .find(|e| action(e) == "heartbeat.summary" && src(e) == format!("{from}:5060"))
            .unwrap_or_else(|| panic!("summary of {from}: {evs:#?}"))
    };
    // 6 REGISTER transactions, not the INVITE or BYE; every copy counted (over UDP the
    // datapath hands up REGISTER, OPTIONS and responses: here the call's 4 responses).
    let phone = &summary(PHONE)["heartbeat"];
    assert_eq!(
        (phone["count"].as_u64(), phone["lost"].as_u64()),
        (Some(6), Some(0))
    );
    assert_eq!(phone["duplicates"], 6 * 2 + 4);
    let pinger = &summary(PINGER)["heartbeat"];
    assert_eq!(pinger["count"], 10);
    assert_eq!(pinger["duplicates"], 10 * 2 + 1);

    // The table lists both SIP associations with the same numbers.
    let row = table_row(&table, "sip 10.40.0.50:5060 -> 10.40.0.1:5060");
    assert_eq!(
        &row[..3],
        ["6", "0", "16"],
        "heartbeats lost dups:\n{table}"
    );
    assert_eq!(row[6], "0", "no outage");
    let row = table_row(&table, "sip 10.40.0.9:5060 -> 10.40.0.1:5060");
    assert_eq!(&row[..3], ["10", "0", "21"], "{table}");
    assert_eq!(row[8], "30000ms", "the OPTIONS interval:\n{table}");
    let row = table_row(&table, "sip 10.40.0.60:40600 -> 10.40.0.1:5060");
    assert_eq!(&row[..3], ["6", "0", "12"], "over TCP:\n{table}");
    assert!(table.contains("49 duplicates ignored"), "{table}");
}

#[test]
fn sip_rejected_password_fails_each_time_it_matters_and_counts_the_streak() {
    let mut cap = Capture::default();
    let challenge = |nonce: &str, stale: bool| {
        format!(
            "WWW-Authenticate: Digest realm=\"pbx\", nonce=\"{nonce}\", algorithm=MD5{}",
            if stale { ", stale=TRUE" } else { "" }
        )
    };
    let creds = |nonce: &str, realm: &str| {
        format!("Authorization: Digest username=\"2001\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"sip:10.40.0.1\", response=\"0123456789abcdef0123456789abcdef\"")
    };
    let mut cseq = 0;
    let mut exchange = |cap: &mut Capture, t: u64, req: Vec<&str>, status: &str, ans: Vec<&str>| {
        cseq += 1;
        sip_udp(cap, PHONE, PBX, t, &register(cseq, &req));
        sip_udp(
            cap,
            PBX,
            PHONE,
            t + 3 * MS,
            &register_answer(cseq, status, &ans),
        );
    };
    let unauthorized = "SIP/2.0 401 Unauthorized";
    // Six attempts a minute apart: challenged (normal), then the password refused.
    for round in 0..6u64 {
        let t = round * 60 * SEC;
        let n1 = format!("n{round}a");
        let n2 = format!("n{round}b");
        exchange(
            &mut cap,
            t,
            vec![],
            unauthorized,
            vec![&challenge(&n1, false)],
        );
        exchange(
            &mut cap,
            t + 10 * MS,
            vec![&creds(&n1, "pbx")],
            unauthorized,
            vec![&challenge(&n2, false)],
        );
    }
    let t = 400 * SEC;
    let ok = OK_60[0].to_string();
    for (at, cred, status, answer) in [
        // Credentials for another realm: a new challenge, not a rejection.
        (t, creds("x", "other"), unauthorized, challenge("y", false)),
        // A stale nonce is no rejection either; then the right password registers.
        (
            t + 10 * MS,
            creds("y", "pbx"),
            unauthorized,
            challenge("z", true),
        ),
        (t + 20 * MS, creds("z", "pbx"), "SIP/2.0 200 OK", ok),
        // Refused again later: the streak started over after the success.
        (
            t + 30 * SEC,
            creds("z", "pbx"),
            unauthorized,
            challenge("w", false),
        ),
    ] {
        exchange(&mut cap, at, vec![&cred], status, vec![&answer]);
    }

    let evs = analyze(&cap, "password.pcap");
    let seen: Vec<(&str, Option<u64>)> = evs
        .iter()
        .filter(|e| action(e) != "peer.up")
        .map(|e| (action(e), e["sip"]["rejections"].as_u64()))
        .collect();
    let failed = |n| ("sip.register_failed", Some(n));
    assert_eq!(
        seen,
        [
            failed(1),
            failed(2),
            failed(3),
            failed(5),
            ("sip.registered", None),
            failed(1)
        ],
        "{evs:#?}"
    );
    let first = &evs[0];
    assert_eq!(first["log"]["level"], "warning");
    assert_eq!(first["sip"]["code"], 401);
    assert_eq!(first["sip"]["status"], "Unauthorized");
    assert_eq!(first["sip"]["credentials_rejected"], true);
    assert_eq!(first["event"]["outcome"], "failure");
    assert_eq!(first["sip"]["aor"], "sip:2001@10.40.0.1");
    assert_eq!(first["@timestamp"], "2026-11-22T10:00:00.013000Z");
    let fifth = evs[3]["message"].as_str().unwrap();
    assert!(
        fifth.contains("credentials rejected (401 Unauthorized); 5 rejections in a row from 10.40.0.50 (1 since the last alert)"),
        "{fifth}"
    );
}

#[test]
fn sip_lapse_is_one_alert_and_a_refresh_just_after_expiry_is_within_the_grace() {
    let mut cap = Capture::default();
    let mut cseq = 0;
    let mut cycle = |cap: &mut Capture, t: u64, answered: bool| {
        cseq += 1;
        sip_udp(cap, PHONE, PBX, t, &register(cseq, &[]));
        if answered {
            let ok = register_answer(cseq, "SIP/2.0 200 OK", OK_60);
            sip_udp(cap, PBX, PHONE, t + 5 * MS, &ok);
        } else {
            // Unanswered: the phone re-sends after T1 and 2*T1.
            sip_udp(cap, PHONE, PBX, t + 500 * MS, &register(cseq, &[]));
            sip_udp(cap, PHONE, PBX, t + 1500 * MS, &register(cseq, &[]));
        }
    };
    cycle(&mut cap, 0, true);
    // 60 s granted; this refresh is answered 600 ms after that ran out.
    cycle(&mut cap, 60_595 * MS, true);
    cycle(&mut cap, 110 * SEC, true);
    // The registrar stops answering: the refresh sent at 160 s (in time) is waited for
    // until its answer times out (32 s), then the registration has lapsed.
    cycle(&mut cap, 160 * SEC, false);
    // Back 100 s later.
    cycle(&mut cap, 260 * SEC, true);
    // An OPTIONS pinger keeps the capture going.
    for t in (0..300 * SEC).step_by(30 * SEC as usize) {
        let n = (t / SEC) as u32;
        let ping = sip_text("OPTIONS sip:10.40.0.1 SIP/2.0", "p", n, "OPTIONS", &[]);
        sip_udp(&mut cap, PINGER, PBX, t, &ping);
        let ok = sip_text("SIP/2.0 200 OK", "p", n, "OPTIONS", &[]);
        sip_udp(&mut cap, PBX, PINGER, t + 2 * MS, &ok);
    }
    let p = write("lapse.pcap", &cap.pcap(false));
    let (code, evs, table) =
        hbwatch_analyze(&[p.to_str().unwrap(), "--summary", "--no-summary-events"]);
    assert_eq!(code, Some(0), "{table}");
    let seen: Vec<&str> = evs.iter().map(action).collect();
    assert_eq!(
        seen,
        [
            "sip.registered",
            "heartbeat.retry",
            "heartbeat.unanswered",
            "sip.expired",
            "sip.registered"
        ],
        "{evs:#?}"
    );
    let expired = &evs[3];
    assert_eq!(expired["log"]["level"], "error");
    assert_eq!(expired["@timestamp"], "2026-11-22T10:03:12.000000Z");
    let hb = &expired["heartbeat"];
    // Since the last success at 110.005 s.
    assert_eq!(hb["silence_ms"], 81_995);
    // The last refresh period: 60.600 s -> 110.005 s.
    assert_eq!(hb["expected_interval_ms"], 49_405);
    assert_eq!(hb["diagnosis"], "peer-unresponsive");
    let msg = expired["message"].as_str().unwrap();
    assert!(
        msg.contains("the phone sent 1 REGISTER since, the registrar answered none"),
        "{msg}"
    );
    // From the lapse (192 s) to the 200 OK at 260.005 s.
    assert_eq!(evs[4]["heartbeat"]["downtime_ms"], 68_005);
    let row = table_row(&table, "sip 10.40.0.50:5060 -> 10.40.0.1:5060");
    // heartbeats, lost, dups, 3 x rtt, outages, interval, diagnosis.
    assert_eq!(&row[..3], ["4", "1", "0"], "{table}");
    assert_eq!(row[6], "1", "one outage:\n{table}");
    assert_eq!(row[9], "peer-unresponsive", "{table}");
}

#[test]
fn the_expiry_grace_is_a_config_key() {
    // A refresh answered 600 ms after the lifetime ran out: within the default grace,
    // a lapse with `sip.expiry_grace = "0s"`.
    let mut cap = Capture::default();
    for (cseq, t) in [(1, 0), (2, 60_595 * MS)] {
        sip_udp(&mut cap, PHONE, PBX, t, &register(cseq, &[]));
        let ok = register_answer(cseq, "SIP/2.0 200 OK", OK_60);
        sip_udp(&mut cap, PBX, PHONE, t + 5 * MS, &ok);
    }
    let p = write("grace.pcap", &cap.pcap(false));
    let actions_with = |config: &str| {
        let conf = write("grace.toml", config.as_bytes());
        let (code, evs, stderr) = hbwatch_analyze(&[
            p.to_str().unwrap(),
            "--no-summary-events",
            "--config",
            conf.to_str().unwrap(),
        ]);
        assert_eq!(code, Some(0), "{stderr}");
        evs.iter()
            .map(|e| action(e).to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(actions_with(""), ["sip.registered"]);
    assert_eq!(
        actions_with("[sip]\nexpiry_grace = \"0s\"\n"),
        ["sip.registered", "sip.expired", "sip.registered"]
    );
    let conf = write("bad-grace.toml", b"[sip]\nexpiry_grace = \"soon\"\n");
    let (code, _, stderr) =
        hbwatch_analyze(&[p.to_str().unwrap(), "--config", conf.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("sip.expiry_grace"), "{stderr}");
}

// ---------------------------------------------------------------------------------
// Damaged files

/// A capture of the built-in faults scenario, written by `hbwatch hbgen`.
fn hbgen_capture(name: &str, pcapng: bool) -> PathBuf {
    let p = write(name, b"");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hbwatch"));
    cmd.args([
        "hbgen",
        "--scenario",
        "faults",
        "--pcap",
        p.to_str().unwrap(),
    ]);
    if pcapng {
        cmd.arg("--pcapng");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p
}

#[test]
fn a_capture_cut_mid_packet_warns_and_everything_else_is_delivered() {
    for pcapng in [false, true] {
        let whole = hbgen_capture(if pcapng { "whole.pcapng" } else { "whole.pcap" }, pcapng);
        let bytes = std::fs::read(&whole).unwrap();
        let (_, alone, _) = hbwatch_analyze(&[whole.to_str().unwrap(), "--no-summary-events"]);
        // Cut in the middle of a record, as a copy of a capture still being written.
        let cut_name = if pcapng { "cut.pcapng" } else { "cut.pcap" };
        let cut = write(cut_name, &bytes[..bytes.len() * 2 / 3 + 7]);
        let (code, evs, stderr) = hbwatch_analyze(&[
            cut.to_str().unwrap(),
            whole.to_str().unwrap(),
            "--summary",
            "--no-summary-events",
        ]);
        assert_eq!(code, Some(4), "{stderr}");
        let warning = stderr
            .lines()
            .find(|l| l.contains(cut_name) && l.contains("cut off"))
            .unwrap_or_else(|| panic!("no warning: {stderr}"));
        // The frame number is the cut one's: the frames before it were analyzed.
        let frames: u64 = stderr
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!("{cut_name}: "))?
                    .split(' ')
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no table for {cut_name}: {stderr}"));
        assert!(frames > 1000, "{stderr}");
        assert!(
            warning.contains(&format!("frame {} ", frames + 1)),
            "{warning}"
        );
        let of = |name: &str| -> Vec<&Value> {
            evs.iter()
                .filter(|e| e["observer"]["ingress"]["interface"]["name"] == name)
                .collect()
        };
        // Events up to the cut, and the whole file after it exactly as alone.
        let from_cut = of(cut_name);
        assert!(
            from_cut.iter().any(|e| action(e) == "heartbeat.gap"),
            "{from_cut:#?}"
        );
        let whole_name = whole.file_name().unwrap().to_str().unwrap();
        assert_eq!(of(whole_name), alone.iter().collect::<Vec<_>>());
        assert!(
            stderr.contains(&format!("{whole_name}: ")),
            "both tables: {stderr}"
        );
        assert!(stderr.contains("exit status 4"), "{stderr}");
    }
}

#[test]
fn a_small_snaplen_says_payloads_are_truncated() {
    // The faults capture again, rewritten with a 96-byte snaplen (tcpdump -s 96).
    let whole = std::fs::read(hbgen_capture("snap-src.pcap", false)).unwrap();
    // hbgen writes big-endian pcap; either order is read here.
    let big = whole[..4] == [0xa1, 0xb2, 0xc3, 0xd4];
    let rd = |b: &[u8]| {
        let b: [u8; 4] = b.try_into().unwrap();
        if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    let wr = |v: u32| {
        if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let mut cut = whole[..24].to_vec();
    cut[16..20].copy_from_slice(&wr(96));
    let mut at = 24;
    let mut shortened = 0;
    while at + 16 <= whole.len() {
        let len = rd(&whole[at + 8..at + 12]) as usize;
        let keep = len.min(96);
        shortened += usize::from(keep < len);
        cut.extend_from_slice(&whole[at..at + 8]);
        cut.extend_from_slice(&wr(keep as u32));
        cut.extend_from_slice(&whole[at + 12..at + 16]);
        cut.extend_from_slice(&whole[at + 16..at + 16 + keep]);
        at += 16 + len;
    }
    let p = write("snap96.pcap", &cut);
    let (code, evs, stderr) = hbwatch_analyze(&[p.to_str().unwrap(), "--no-summary-events"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "snap96.pcap: {shortened} frames were cut to the capture's snaplen (96 bytes): payloads are truncated"
        )),
        "{stderr}"
    );
    // Heartbeats fit in 96 bytes: the MDS and RUDP anomalies are still found.
    assert!(evs.iter().any(|e| action(e) == "heartbeat.gap"), "{evs:#?}");
}

#[test]
fn an_unreadable_capture_is_an_error_but_the_others_are_analyzed() {
    let whole = hbgen_capture("other.pcap", false);
    let text = write("notes.pcap", b"not a capture\n");
    let (code, evs, stderr) = hbwatch_analyze(&[
        "/nonexistent/capture.pcap",
        text.to_str().unwrap(),
        whole.to_str().unwrap(),
        "--summary",
        "--no-summary-events",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot open /nonexistent/capture.pcap"),
        "{stderr}"
    );
    assert!(
        stderr.contains("notes.pcap: not a pcap or pcapng capture"),
        "{stderr}"
    );
    assert!(
        stderr.contains("2 of 3 captures could not be read"),
        "{stderr}"
    );
    // No table for what was not read; the readable file's events and table are there.
    assert!(!stderr.contains("notes.pcap: 0 frames"), "{stderr}");
    assert!(stderr.contains("other.pcap: "), "{stderr}");
    assert!(evs.iter().any(|e| action(e) == "heartbeat.gap"), "{evs:#?}");
}

// ---------------------------------------------------------------------------------
// Field fidelity (issue 20): SCCP primary vs backup, late arrivals, one-way loss,
// outage counts, causes in sequence, alerts that escalate and then stop.

/// One TCP connection in a capture: client `a`, server `b`, sequence numbers kept.
struct TcpSession {
    a: (IpAddr, u16),
    b: (IpAddr, u16),
    next: [u32; 2],
}

impl TcpSession {
    fn new(a: (&str, u16), b: (&str, u16)) -> TcpSession {
        TcpSession {
            a: (ip(a.0), a.1),
            b: (ip(b.0), b.1),
            next: [1000, 9000],
        }
    }

    fn segment(&self, from_a: bool, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let ((src, sport), (dst, dport)) = if from_a {
            (self.a, self.b)
        } else {
            (self.b, self.a)
        };
        let mut s = FrameSpec::udp(src, sport, dst, dport, payload);
        s.tcp = Some(Tcp {
            seq,
            ack: self.next[usize::from(from_a)],
            flags,
            window: 65535,
        });
        s.build()
    }

    /// Data from `a` (or `b`) at `t`; returns its sequence number (for a re-send).
    fn send(&mut self, cap: &mut Capture, t: u64, from_a: bool, payload: &[u8]) -> u32 {
        let side = usize::from(!from_a);
        let seq = self.next[side];
        cap.push(t, self.segment(from_a, seq, 0x18, payload));
        self.next[side] = seq.wrapping_add(payload.len() as u32);
        seq
    }

    /// The same bytes again (a TCP retransmission).
    fn resend(&self, cap: &mut Capture, t: u64, from_a: bool, seq: u32, payload: &[u8]) {
        cap.push(t, self.segment(from_a, seq, 0x18, payload));
    }

    /// A bare ACK (the stack answering, not the application).
    fn ack(&self, cap: &mut Capture, t: u64, from_a: bool) {
        let seq = self.next[usize::from(!from_a)];
        cap.push(t, self.segment(from_a, seq, 0x10, &[]));
    }
}

fn sccp_message(id: u32, body: &[u8]) -> Vec<u8> {
    let mut m = (4 + body.len() as u32).to_le_bytes().to_vec();
    m.extend_from_slice(&0x16u32.to_le_bytes());
    m.extend_from_slice(&id.to_le_bytes());
    m.extend_from_slice(body);
    m
}

fn ged_message(kind: u32, invoke: u32) -> Vec<u8> {
    let mut m = 4u32.to_be_bytes().to_vec();
    m.extend_from_slice(&kind.to_be_bytes());
    m.extend_from_slice(&invoke.to_be_bytes());
    m
}

fn report(cap: &Capture, name: &str) -> (Vec<Value>, hbwatch::offline::FileReport) {
    let p = write(name, &cap.pcap(false));
    let mut out = LineSink::json(Vec::new());
    let r = analyze_file(&p, &opts(vec![p.clone()]), &mut out).expect("analyzes");
    let evs = String::from_utf8(out.into_inner())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect();
    (evs, r)
}

fn named<'a>(evs: &'a [Value], what: &str) -> Vec<&'a Value> {
    evs.iter().filter(|e| action(e) == what).collect()
}

fn actions(evs: &[Value]) -> Vec<String> {
    anomalies(evs).into_iter().map(|(a, _)| a).collect()
}

#[test]
fn sccp_primary_connection_keeps_the_primary_interval_and_the_backup_the_secondary() {
    // A phone registers with CUCM 10.30.0.10 (RegisterAck: keepalive 30 s, secondary
    // 60 s) and keeps a backup connection to 10.30.0.11, KeepAlives only TCP-ACKed.
    // The primary's KeepAlives stop after 60 s; the backup stays healthy for 10 min.
    let mut cap = Capture::default();
    let mut primary = TcpSession::new(("10.30.0.50", 50001), ("10.30.0.10", 2000));
    let mut backup = TcpSession::new(("10.30.0.50", 50002), ("10.30.0.11", 2000));
    primary.send(&mut cap, 0, true, &sccp_message(0x0001, &[0; 28]));
    let mut ack = 30u32.to_le_bytes().to_vec();
    ack.extend_from_slice(b"M/D/YA\0\0");
    ack.extend_from_slice(&60u32.to_le_bytes());
    ack.extend_from_slice(&[0x16, 0, 0, 0]);
    primary.send(&mut cap, 5 * MS, false, &sccp_message(0x0081, &ack));
    for k in 1..=2u64 {
        let t = k * 30 * SEC;
        primary.send(&mut cap, t, true, &sccp_message(0x0000, &[]));
        primary.send(&mut cap, t + 2 * MS, false, &sccp_message(0x0100, &[]));
    }
    for k in 0..10u64 {
        let t = SEC + k * 60 * SEC;
        backup.send(&mut cap, t, true, &sccp_message(0x0000, &[]));
        backup.ack(&mut cap, t + 40 * MS, false);
    }
    let (evs, r) = report(&cap, "sccp-primary-backup.pcap");
    let primary_src = "10.30.0.50:50001".to_string();
    assert_eq!(
        anomalies(&evs),
        [
            ("heartbeat.missed", &primary_src),
            ("peer.down", &primary_src)
        ]
        .map(|(a, s)| (a.to_string(), s.clone()))
        .to_vec(),
        "{evs:#?}"
    );
    // Judged on 30 s: missed once two are overdue (60 s + 2 x 30 s + 30%), down after
    // three; on the secondary interval both would have come a minute later.
    let missed = &named(&evs, "heartbeat.missed")[0];
    assert_eq!(missed["@timestamp"], "2026-11-22T10:02:09.000000Z");
    assert_eq!(missed["heartbeat"]["expected_interval_ms"], 30000);
    let down = &named(&evs, "peer.down")[0];
    assert_eq!(down["@timestamp"], "2026-11-22T10:02:39.000000Z");
    let interval = |port: u16| {
        r.totals
            .iter()
            .find(|t| t.key.orig_port == port)
            .map(|t| t.expected_interval_ms)
    };
    assert_eq!(interval(50001), Some(30000));
    assert_eq!(interval(50002), Some(60000));
}

#[test]
fn echoes_dropped_for_a_minute_escalate_to_one_peer_down_and_fold_the_retries() {
    // A firewall ACL drops every echo of B (10.0.0.2) from 10 s to 70 s: A keeps
    // re-sending seq 110 each second. B's own requests are echoed by A all along.
    let mut cap = Capture::default();
    let (a, b) = ("10.0.0.1", "10.0.0.2");
    let mut seq_a = 100u32;
    for i in 0..100u64 {
        let t = i * SEC;
        rudp(&mut cap, a, b, t, seq_a, 0x02ff);
        if !(10 * SEC..70 * SEC).contains(&t) {
            rudp(&mut cap, b, a, t + 2 * MS, seq_a, 0x0100);
            seq_a += 1;
        }
        rudp(&mut cap, b, a, t + 500 * MS, 5000 + i as u32, 0x02ff);
        rudp(&mut cap, a, b, t + 502 * MS, 5000 + i as u32, 0x0100);
    }
    let p = write("acl.pcap", &cap.pcap(false));
    let mut o = opts(vec![p.clone()]);
    o.summary_period = Some(Duration::from_secs(60));
    let mut out = LineSink::json(Vec::new());
    let r = analyze_file(&p, &o, &mut out).unwrap();
    let evs: Vec<Value> = String::from_utf8(out.into_inner())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &Value| action(e) != "heartbeat.summary" || e["source"]["ip"] == a)
        .collect();
    let got: Vec<_> = actions(&evs)
        .into_iter()
        .filter(|a| a != "heartbeat.summary")
        .collect();
    // The first re-send says unanswered, three retries, then the outage: no echo for
    // 4 intervals (RUDP down_after). The other 56 retries are folded into it.
    assert_eq!(
        got,
        [
            "heartbeat.unanswered",
            "heartbeat.retry",
            "heartbeat.retry",
            "heartbeat.retry",
            "peer.down",
            "peer.up"
        ],
        "{evs:#?}"
    );
    for e in evs.iter().filter(|e| {
        matches!(
            action(e),
            "heartbeat.unanswered" | "heartbeat.retry" | "peer.down"
        )
    }) {
        assert_eq!(e["source"]["ip"], a);
        assert_eq!(e["heartbeat"]["diagnosis"], "one-way-loss", "{e:#}");
        let evidence = e["heartbeat"]["evidence"].as_array().unwrap();
        assert!(
            evidence.iter().any(|x| x
                .as_str()
                .unwrap()
                .contains("the reverse direction kept its heartbeats")),
            "{e:#}"
        );
    }
    let down = &named(&evs, "peer.down")[0];
    assert_eq!(down["@timestamp"], "2026-11-22T10:00:14.000000Z");
    assert_eq!(down["heartbeat"]["missed"], 4);
    let up = &named(&evs, "peer.up")
        .into_iter()
        .find(|e| !e["heartbeat"]["downtime_ms"].is_null())
        .unwrap()
        .clone();
    assert_eq!(up["@timestamp"], "2026-11-22T10:01:10.002000Z");
    assert_eq!(up["heartbeat"]["downtime_ms"], 60002);
    assert_eq!(up["heartbeat"]["folded"]["heartbeat.retry"], 57);
    assert!(up["message"]
        .as_str()
        .unwrap()
        .contains("57 heartbeat.retry"));
    // Each second without an echo is a heartbeat lost: 60, not 1.
    let sums = named(&evs, "heartbeat.summary");
    let lost: u64 = sums
        .iter()
        .map(|s| s["heartbeat"]["lost"].as_u64().unwrap())
        .sum();
    assert_eq!(lost, 60, "{sums:#?}");
    let folded: u64 = sums
        .iter()
        .filter_map(|s| s["heartbeat"]["folded"]["heartbeat.retry"].as_u64())
        .sum();
    assert_eq!(folded, 57, "{sums:#?}");
    let t = r.totals.iter().find(|t| ip_text_of(&t.key) == a).unwrap();
    assert_eq!((t.stats.lost, t.stats.outages), (60, 1));
    // The healthy reverse association says nothing.
    assert!(anomalies(&evs).iter().all(|(_, s)| s.starts_with(a)));
}

fn ip_text_of(k: &hbwatch_common::key::FlowKey) -> String {
    hbwatch::convert::ip_text(k.family, &k.orig)
}

#[test]
fn ged125_peer_down_by_unanswered_requests_stops_the_unanswered_alerts() {
    // The CVP's TCP stack ACKs every HEARTBEAT_REQ from 30 s to 90 s, the application
    // answers none; then it recovers.
    let mut cap = Capture::default();
    let mut s = TcpSession::new(("10.0.1.10", 40123), ("10.0.2.20", 5000));
    for id in 0..30u32 {
        let t = id as u64 * 5 * SEC;
        s.send(&mut cap, t, true, &ged_message(5, id));
        if (30 * SEC..90 * SEC).contains(&t) {
            s.ack(&mut cap, t + 40 * MS, false);
        } else {
            s.send(&mut cap, t + 3 * MS, false, &ged_message(6, id));
        }
    }
    let (evs, r) = report(&cap, "ged-unanswered.pcap");
    assert_eq!(
        actions(&evs),
        [
            "heartbeat.unanswered",
            "heartbeat.unanswered",
            "peer.down",
            "peer.up"
        ],
        "{evs:#?}"
    );
    let down = &named(&evs, "peer.down")[0];
    assert_eq!(down["@timestamp"], "2026-11-22T10:00:40.000000Z");
    assert_eq!(down["heartbeat"]["diagnosis"], "peer-unresponsive");
    let up = named(&evs, "peer.up")
        .into_iter()
        .find(|e| !e["heartbeat"]["downtime_ms"].is_null())
        .unwrap();
    // REQ 6..17 unanswered (30 s to 85 s); two alerts went out, ten folded.
    assert_eq!(up["heartbeat"]["folded"]["heartbeat.unanswered"], 10);
    assert_eq!(up["heartbeat"]["downtime_ms"], 60003);
    let t = &r.totals[0];
    assert_eq!((t.stats.lost, t.stats.outages), (12, 1));
    assert_eq!(summary_cell(&r, 0, "lost"), "12");
    assert_eq!(summary_cell(&r, 0, "folded"), "10");
    assert_eq!(summary_cell(&r, 0, "diagnosis"), "peer-unresponsive");
}

#[test]
fn a_ged125_request_delayed_by_tcp_retransmission_is_late_not_lost() {
    // HEARTBEAT_REQ 10 (sent at 50 s) is lost before the probe; REQ 11 arrives at
    // 55 s and waits in the CVP's TCP buffer; TCP re-sends REQ 10 at 59 s, 9 s late,
    // and both are answered.
    let mut cap = Capture::default();
    let mut s = TcpSession::new(("10.0.1.10", 40123), ("10.0.2.20", 5000));
    for id in 0..20u32 {
        let t = id as u64 * 5 * SEC;
        match id {
            10 => {
                let seq = s.next[0];
                s.next[0] += 12;
                s.resend(&mut cap, 59 * SEC, true, seq, &ged_message(5, 10));
                s.send(&mut cap, 59 * SEC + 3 * MS, false, &ged_message(6, 10));
                s.send(&mut cap, 59 * SEC + 4 * MS, false, &ged_message(6, 11));
            }
            11 => {
                s.send(&mut cap, t, true, &ged_message(5, id));
            }
            _ => {
                s.send(&mut cap, t, true, &ged_message(5, id));
                s.send(&mut cap, t + 3 * MS, false, &ged_message(6, id));
            }
        }
    }
    let (evs, r) = report(&cap, "ged-late.pcap");
    assert_eq!(
        actions(&evs),
        ["heartbeat.gap", "heartbeat.late"],
        "{evs:#?}"
    );
    let late = &named(&evs, "heartbeat.late")[0];
    assert_eq!(late["@timestamp"], "2026-11-22T10:00:59.000000Z");
    assert_eq!(late["heartbeat"]["seq"], 10);
    // From REQ 9 (45 s) to REQ 10 (59 s).
    assert_eq!(late["heartbeat"]["interval_ms"], 14000);
    assert_eq!(late["heartbeat"]["expected_interval_ms"], 5000);
    assert!(late["message"].as_str().unwrap().ends_with("it was late"));
    let t = &r.totals[0];
    assert_eq!((t.stats.count, t.stats.lost), (20, 0));
}

/// MDS heartbeats of A only (the reverse direction is routed elsewhere): every 100 ms,
/// `seq_at(t)` = what A sends at `t`, `None` = nothing on the wire.
fn mds_one_way(cap: &mut Capture, until: u64, seq_at: impl Fn(u64) -> Option<u32>) {
    let mut t = 0;
    while t < until {
        if let Some(s) = seq_at(t) {
            mds(cap, "10.50.0.1", "10.50.0.2", t, s);
        }
        t += 100 * MS;
    }
}

#[test]
fn summary_outages_count_every_peer_down() {
    let mut cap = Capture::default();
    mds_one_way(&mut cap, 40 * SEC, |t| {
        let off = (10 * SEC..12 * SEC).contains(&t) || (30 * SEC..33 * SEC).contains(&t);
        (!off).then_some((t / (100 * MS)) as u32)
    });
    let (evs, r) = report(&cap, "two-outages.pcap");
    assert_eq!(named(&evs, "peer.down").len(), 2, "{evs:#?}");
    assert_eq!(r.totals[0].stats.outages, 2);
    assert_eq!(summary_cell(&r, 0, "outages"), "2");
}

/// Row `row`'s value in `column` of the `--summary` table.
fn summary_cell(r: &hbwatch::offline::FileReport, row: usize, column: &str) -> String {
    let table = hbwatch::offline::summary_table(r);
    let lines: Vec<&str> = table.lines().collect();
    let i = lines[1]
        .split_whitespace()
        .position(|c| c == column)
        .unwrap();
    // The association's name holds three words ("mds a -> b").
    let cells: Vec<&str> = lines[2 + row].split_whitespace().collect();
    cells[i + 3].to_string()
}

#[test]
fn network_loss_then_a_restart_keeps_both_causes() {
    // A's heartbeats thin out (single losses at 7.0 s and 7.5 s), stop at 8 s, and A
    // comes back at 11 s counting from 0: the router was rebooted.
    let mut cap = Capture::default();
    mds_one_way(&mut cap, 15 * SEC, |t| match t {
        t if t == 7 * SEC || t == 7500 * MS => None,
        t if (8 * SEC..11 * SEC).contains(&t) => None,
        t if t >= 11 * SEC => Some(((t - 11 * SEC) / (100 * MS)) as u32),
        t => Some((t / (100 * MS)) as u32),
    });
    let (evs, r) = report(&cap, "loss-then-reboot.pcap");
    assert_eq!(
        actions(&evs),
        [
            "heartbeat.gap",
            "heartbeat.gap",
            "heartbeat.missed",
            "peer.down",
            "heartbeat.restart",
            "peer.up"
        ],
        "{evs:#?}"
    );
    let down = &named(&evs, "peer.down")[0];
    assert_eq!(down["heartbeat"]["diagnosis"], "network-loss");
    let up = named(&evs, "peer.up")
        .into_iter()
        .find(|e| !e["heartbeat"]["downtime_ms"].is_null())
        .unwrap();
    assert_eq!(up["heartbeat"]["diagnosis"], "peer-restart");
    let evidence: Vec<&str> = up["heartbeat"]["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(evidence[0].contains("restarted at 0"), "{evidence:?}");
    assert_eq!(
        evidence[1],
        "before the outage (network-loss): 2 gaps in the 20 intervals before"
    );
    assert!(up["message"]
        .as_str()
        .unwrap()
        .contains("likely network-loss, then peer-restart"));
    assert_eq!(r.totals[0].diagnoses, ["network-loss", "peer-restart"]);
    let table = hbwatch::offline::summary_table(&r);
    assert!(table.contains("network-loss,peer-restart"), "{table}");
}

#[test]
fn a_tcp_retransmission_answered_at_once_is_a_retry_not_unanswered() {
    // REQ 4's segment is lost past the probe; TCP re-sends it 200 ms later and the CVP
    // answers: one re-send, nothing unanswered (the interval is 5 s).
    let mut cap = Capture::default();
    let mut s = TcpSession::new(("10.0.1.10", 40123), ("10.0.2.20", 5000));
    for id in 0..10u32 {
        let t = id as u64 * 5 * SEC;
        let seq = s.send(&mut cap, t, true, &ged_message(5, id));
        let mut answer = t + 3 * MS;
        if id == 4 {
            s.resend(&mut cap, t + 200 * MS, true, seq, &ged_message(5, id));
            answer += 200 * MS;
        }
        s.send(&mut cap, answer, false, &ged_message(6, id));
    }
    let (evs, r) = report(&cap, "ged-rto.pcap");
    assert_eq!(actions(&evs), ["heartbeat.retry"], "{evs:#?}");
    assert_eq!(r.totals[0].stats.lost, 0);
}

/// An MGCP gateway's RSIP is `heartbeat.restart` with the diagnosis its restart method
/// gives: restart -> peer-restart, disconnected (it had lost its call agent) ->
/// path-interruption, graceful/forced -> out-of-service; a cancelled graceful shutdown
/// is no trouble, no diagnosis. The evidence quotes the method.
#[test]
fn mgcp_rsip_restart_methods_are_diagnosed() {
    let mgcp = |cap: &mut Capture, t: u64, text: &str, from_gw: bool| {
        let (gw, ca) = ((ip("10.61.0.2"), 2427), (ip("10.61.0.1"), 2727));
        let ((s, sp), (d, dp)) = if from_gw { (gw, ca) } else { (ca, gw) };
        cap.push(t, FrameSpec::udp(s, sp, d, dp, text.as_bytes()).build());
    };
    let methods = [
        ("restart", Some("peer-restart")),
        ("disconnected", Some("path-interruption")),
        ("graceful", Some("out-of-service")),
        ("forced", Some("out-of-service")),
        ("cancel-graceful", None),
    ];
    for (method, want) in methods {
        let mut cap = Capture::default();
        // Two keepalives answered, then the RSIP 10 s later (one per capture: a gateway's
        // RSIPs fold as a repeating alert).
        for (i, tid) in [101u32, 102].into_iter().enumerate() {
            let t = i as u64 * 15 * SEC;
            mgcp(
                &mut cap,
                t,
                &format!("NTFY {tid} *@gw.example MGCP 0.1\nX: 0\nO:\n"),
                true,
            );
            mgcp(&mut cap, t + 5 * MS, &format!("200 {tid} OK\n"), false);
        }
        let t = 25 * SEC;
        mgcp(
            &mut cap,
            t,
            &format!("RSIP 103 *@gw.example MGCP 0.1\nRM: {method}\n"),
            true,
        );
        mgcp(&mut cap, t + 5 * MS, "200 103 OK\n", false);
        let evs = analyze(&cap, &format!("rsip-{method}.pcap"));
        let restarts: Vec<&Value> = evs
            .iter()
            .filter(|e| action(e) == "heartbeat.restart")
            .collect();
        assert_eq!(restarts.len(), 1, "{method}: {evs:#?}");
        let hb = &restarts[0]["heartbeat"];
        assert!(
            restarts[0]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("RSIP {method}")),
            "{method}: {}",
            restarts[0]
        );
        match want {
            Some(d) => {
                assert_eq!(hb["diagnosis"], d, "{method}");
                let evidence = hb["evidence"][0].as_str().unwrap();
                assert!(
                    evidence.ends_with(&format!("RestartMethod: {method}")),
                    "{evidence}"
                );
            }
            None => assert!(hb["diagnosis"].is_null(), "{method}: {hb}"),
        }
    }
}
