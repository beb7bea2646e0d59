//! Malformed traffic, offline: truncated frames at every length, lying length fields,
//! VLAN stacks, IPv4 fragments and options, IPv6 extension headers, garbage on every
//! heartbeat port, hostile SIP text, and a mutation storm. Whatever arrives: no panic,
//! no event the traffic does not justify, every output line valid JSON with every
//! untrusted string escaped (decoded and compared; no raw control characters), and
//! afterwards a clean anomaly is still reported exactly. The live twin of this suite,
//! on real XDP, is tests/tests/live_malformed.rs.

use std::io::Cursor;
use std::net::IpAddr;
use std::path::Path;
use std::time::Instant;

use hbgen::frame::{FrameSpec, Tcp};
use hbgen::mutate::Mutator;
use hbgen::output;
use hbgen::scenario::Scenario;
use hbgen::{generate, TimedFrame};
use hbwatch::event::Event;
use hbwatch::offline::{analyze_reader, AnalyzeOptions, OfflineEnv, Replay};
use hbwatch::ports::{default_specs, port_table};
use hbwatch::sink::stdout::pretty;
use hbwatch::sink::Sink;
use hbwatch_common::counters::Counter;
use hbwatch_common::engine::process;
use hbwatch_common::event::{EventKind, RawEvent};
use hbwatch_common::frame::SliceFrame;
use hbwatch_common::params::ProtoParams;
use hbwatch_common::parse::{parse, TCP_ACK, TCP_PSH};
use hbwatch_common::proto::{ged125, rudp, sccp, Protocol, Role};
use hbwatch_pcap::Format;
use serde_json::Value;

const SEC: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;
/// 2026-11-22T10:00:00Z
const T0: u64 = 1_795_428_000 * SEC;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn udp(src: &str, sport: u16, dst: &str, dport: u16, payload: &[u8]) -> FrameSpec {
    FrameSpec::udp(ip(src), sport, ip(dst), dport, payload)
}

fn tcp(src: &str, sport: u16, dst: &str, dport: u16, seq: u32, payload: &[u8]) -> FrameSpec {
    let mut f = udp(src, sport, dst, dport, payload);
    f.tcp = Some(Tcp {
        seq,
        ack: 1,
        flags: TCP_PSH | TCP_ACK,
        window: 502,
    });
    f
}

fn mds(seq: u32) -> FrameSpec {
    udp("10.1.0.1", 41000, "10.1.0.2", 41000, &seq.to_be_bytes())
}

fn sip_register(call_id: &str) -> String {
    format!(
        "REGISTER sip:10.70.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.70.0.9:5060;branch=z9hG4bK1\r\n\
         From: <sip:1001@10.70.0.1>;tag=1\r\nTo: <sip:1001@10.70.0.1>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 REGISTER\r\nContact: <sip:1001@10.70.0.9:5060>;expires=3600\r\n\
         Expires: 3600\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The base frames: one request or one-way heartbeat of every protocol, IPv4, IPv6
/// and tagged; each must decode when whole.
fn bases() -> Vec<(&'static str, Vec<u8>)> {
    let mut v6 = mds(7);
    v6.src = ip("fd00::1");
    v6.dst = ip("fd00::2");
    v6.vlans = vec![100, 200];
    let mut opts = mds(8);
    opts.ip_options = vec![1, 1, 1, 0];
    vec![
        ("mds", mds(7).build()),
        ("mds-v6-qinq", v6.build()),
        ("mds-options", opts.build()),
        ("rudp", {
            // Marked EF as CS1000 does: an unmarked one is a (justified) qos.mismatch.
            let mut f = udp(
                "10.2.0.1",
                15000,
                "10.2.0.2",
                15000,
                &rudp::payload(9, Role::Request),
            );
            f.dscp = 46;
            f.build()
        }),
        (
            "ipmg",
            udp("10.3.0.1", 32779, "10.3.0.2", 32780, &[1, 2, 3]).build(),
        ),
        (
            "ged125",
            tcp(
                "10.4.0.1",
                40001,
                "10.4.0.2",
                5000,
                100,
                &ged125::message(Role::Request, 0xaa4c_06cc),
            )
            .build(),
        ),
        (
            "sccp",
            tcp(
                "10.5.0.1",
                40002,
                "10.5.0.2",
                2000,
                100,
                &sccp::message(Role::Request),
            )
            .build(),
        ),
        (
            "sip",
            udp(
                "10.70.0.9",
                5060,
                "10.70.0.1",
                5060,
                sip_register("trunc@x").as_bytes(),
            )
            .build(),
        ),
    ]
}

/// The per-packet engine on a fresh offline map, one frame a second.
struct Run {
    records: Vec<(RawEvent, Vec<u8>)>,
    counters: Vec<u64>,
}

impl Run {
    fn count(&self, c: Counter) -> u64 {
        self.counters[c as usize]
    }

    fn kinds(&self) -> Vec<EventKind> {
        self.records
            .iter()
            .map(|(r, _)| EventKind::from_u8(r.kind).unwrap())
            .collect()
    }
}

/// Protocol rules with MDS and IPMG announced at their first heartbeat: the cases here
/// are single frames, about parsing; the plausibility rule has tests of its own.
fn one_beat_params() -> std::collections::BTreeMap<Protocol, ProtoParams> {
    let tunes: Vec<hbwatch::tuning::Tune> = ["mds.confirm_beats=1", "cs1000-ipmg.confirm_beats=1"]
        .iter()
        .map(|t| t.parse().unwrap())
        .collect();
    hbwatch::tuning::params(&tunes)
}

fn engine(frames: &[Vec<u8>]) -> Run {
    let mut specs = default_specs();
    specs.push("mds=41000".parse().unwrap());
    let mut env = OfflineEnv::new(&port_table(&specs), &one_beat_params());
    let mut records = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        process(&SliceFrame(f), &mut env, T0 + i as u64 * SEC, 1);
        records.append(&mut env.records);
    }
    Run {
        records,
        counters: env.counters.to_vec(),
    }
}

fn options() -> AnalyzeOptions {
    let mut specs = default_specs();
    specs.push("mds=41000".parse().unwrap());
    AnalyzeOptions {
        params: one_beat_params(),
        ..AnalyzeOptions::new(port_table(&specs), "probe")
    }
}

/// Checks each event as the NDJSON sink writes it and as the terminal shows it: the
/// line is UTF-8 without a raw control character, parses, and its strings decode to
/// the event's; the pretty line has no control character but its newline.
#[derive(Default)]
struct Checked {
    lines: Vec<Value>,
}

fn check_line(ev: &Event) -> Value {
    let mut buf = Vec::new();
    ev.write_line(&mut buf);
    let text = std::str::from_utf8(&buf).expect("UTF-8 line");
    let body = text.strip_suffix('\n').expect("one line");
    if let Some(c) = body.chars().find(|c| c.is_control()) {
        panic!("raw control character {c:?} in {body:?}");
    }
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(v["message"].as_str(), Some(ev.message.as_str()));
    if let Some(sip) = &ev.sip {
        assert_eq!(v["sip"]["call_id"].as_str(), sip.call_id.as_deref());
        assert_eq!(v["sip"]["status"].as_str(), sip.status.as_deref());
        assert_eq!(v["sip"]["device"].as_str(), sip.device.as_deref());
        assert_eq!(v["sip"]["aor"].as_str(), sip.aor.as_deref());
    }
    let shown = pretty(ev, false);
    let shown = shown.strip_suffix('\n').unwrap();
    if let Some(c) = shown.chars().find(|c| c.is_control()) {
        panic!("raw control character {c:?} on the terminal: {shown:?}");
    }
    v
}

impl Sink for Checked {
    fn send(&mut self, ev: &Event) -> anyhow::Result<()> {
        self.lines.push(check_line(ev));
        Ok(())
    }
    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// `hbwatch analyze` over the frames (written as a pcap): every line checked.
fn analyze(frames: Vec<TimedFrame>) -> Vec<Value> {
    analyze_with(frames, &options())
}

fn analyze_with(frames: Vec<TimedFrame>, opts: &AnalyzeOptions) -> Vec<Value> {
    let mut pcap = Vec::new();
    output::write(&mut pcap, Format::Pcap { nanos: true }, frames).unwrap();
    analyze_bytes(pcap, opts).expect("analyzes")
}

/// Capture bytes through `hbwatch analyze`: every line checked, even on an error.
fn analyze_bytes(pcap: Vec<u8>, opts: &AnalyzeOptions) -> Result<Vec<Value>, Vec<Value>> {
    let mut sink = Checked::default();
    let len = pcap.len() as u64;
    match analyze_reader(
        Box::new(Cursor::new(pcap)),
        len,
        Path::new("malformed.pcap"),
        "malformed.pcap".into(),
        opts,
        &mut sink,
    ) {
        Ok(_) => Ok(sink.lines),
        Err(_) => Err(sink.lines),
    }
}

fn timed(frames: impl IntoIterator<Item = (u64, Vec<u8>)>) -> Vec<TimedFrame> {
    frames
        .into_iter()
        .map(|(ts_ns, data)| TimedFrame {
            ts_ns,
            data,
            label: "test",
        })
        .collect()
}

fn action(v: &Value) -> &str {
    v["event"]["action"].as_str().unwrap()
}

#[test]
fn truncated_frames_at_every_length_give_nothing_or_the_whole_heartbeat() {
    for (name, base) in bases() {
        let p = parse(&SliceFrame(&base)).unwrap();
        let (off, end) = (
            p.payload_off as usize,
            (p.payload_off + p.payload_len) as usize,
        );
        let whole = engine(std::slice::from_ref(&base));
        assert!(!whole.records.is_empty(), "{name} decodes when whole");
        for len in 0..base.len() {
            let run = engine(&[base[..len].to_vec()]);
            let needed = match name {
                // The payload of IPMG is unknown: a datagram is a beat, headers suffice.
                "ipmg" => off,
                // SIP: the start line's 8 bytes; the record then says what was captured.
                "sip" => off + 8,
                _ => end,
            };
            if len < needed {
                assert!(
                    run.records.is_empty(),
                    "{name} cut at {len} (needs {needed}): {:?}",
                    run.kinds()
                );
                assert_eq!(run.count(Counter::Heartbeats), 0, "{name} cut at {len}");
                continue;
            }
            if name == "sip" {
                let [(rec, payload)] = &run.records[..] else {
                    panic!("{name} cut at {len}: {:?}", run.kinds());
                };
                assert_eq!(rec.aux as usize, payload.len(), "{name} cut at {len}");
                assert!(payload.len() <= len - off);
                assert_eq!(payload[..], base[off..off + payload.len()]);
            } else {
                // Only padding was cut: exactly what the whole frame gives.
                assert_eq!(run.records, whole.records, "{name} cut at {len}");
            }
        }
    }
}

#[test]
fn truncations_through_the_whole_pipeline_raise_no_alert() {
    // Every cut of every base frame as its own capture: at most the association's
    // peer.up, never an alert.
    for (name, base) in bases() {
        for len in 0..base.len() {
            let mut replay = Replay::new(&options(), "cut".into());
            let mut out = Vec::new();
            replay.frame(&base[..len], T0, &mut out);
            replay.finish(&mut out);
            for ev in &out {
                let v = check_line(ev);
                assert!(
                    action(&v) == "peer.up",
                    "{name} cut at {len}: {}",
                    v["message"]
                );
            }
        }
    }
}

/// How a crafted frame must come out of the engine.
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    /// A heartbeat with this sequence (an `AssociationSeen` record).
    Heartbeat(u32),
    /// Dropped before decoding, counted here.
    Skipped(Counter),
    /// Parsed, on a heartbeat port, but not a heartbeat: no record.
    NoRecord,
}

fn outcome(frame: &[u8]) -> Expect {
    let run = engine(&[frame.to_vec()]);
    for c in [
        Counter::Truncated,
        Counter::Malformed,
        Counter::Fragments,
        Counter::Unparsed,
    ] {
        if run.count(c) > 0 {
            assert!(
                run.records.is_empty(),
                "{c:?} with records {:?}",
                run.kinds()
            );
            return Expect::Skipped(c);
        }
    }
    match &run.records[..] {
        [] => Expect::NoRecord,
        [(r, _)] if r.kind == EventKind::AssociationSeen as u8 => Expect::Heartbeat(r.seq),
        _ => panic!("unexpected records {:?}", run.kinds()),
    }
}

fn set16(f: &mut [u8], at: usize, v: u16) {
    f[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[test]
fn lying_length_fields() {
    use Counter::*;
    use Expect::*;
    let m = mds(7).build(); // IPv4 at 14, UDP at 34, payload at 42..46, padded to 60
    let g = tcp(
        "10.4.0.1",
        40001,
        "10.4.0.2",
        5000,
        100,
        &ged125::message(Role::Request, 5),
    )
    .build(); // TCP at 34, payload at 54..66
    let with = |f: &[u8], edit: &dyn Fn(&mut Vec<u8>)| {
        let mut f = f.to_vec();
        edit(&mut f);
        f
    };
    let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
        ("mds as built", m.clone(), Heartbeat(7)),
        // A total length past the frame: a capture cut short. The heartbeat's own bytes
        // (per the UDP length) are all there, so it counts.
        (
            "IPv4 total length past the frame",
            with(&m, &|f| set16(f, 16, 1400)),
            Heartbeat(7),
        ),
        (
            "IPv4 total length below the header",
            with(&m, &|f| set16(f, 16, 19)),
            Skipped(Malformed),
        ),
        (
            "IPv4 total length below IP+UDP",
            with(&m, &|f| set16(f, 16, 27)),
            Skipped(Malformed),
        ),
        (
            "IPv4 total length zero",
            with(&m, &|f| set16(f, 16, 0)),
            Skipped(Malformed),
        ),
        ("IHL 0", with(&m, &|f| f[14] = 0x40), Skipped(Malformed)),
        ("IHL 4", with(&m, &|f| f[14] = 0x44), Skipped(Malformed)),
        // IHL 15 (60 bytes) is more than a total length of 32 allows...
        (
            "IHL 15 past the total length",
            with(&m, &|f| f[14] = 0x4f),
            Skipped(Malformed),
        ),
        // ...and with a total length to match, more than the 60-byte frame holds.
        (
            "IHL 15 past the frame",
            with(&m, &|f| {
                f[14] = 0x4f;
                set16(f, 16, 80)
            }),
            Skipped(Truncated),
        ),
        // IHL 6 on a frame without options: the UDP header is read 4 bytes late, its
        // "length" is the payload: 0x0000 -> below 8.
        (
            "IHL 6 without options",
            with(&m, &|f| f[14] = 0x46),
            Skipped(Malformed),
        ),
        (
            "IP version 5",
            with(&m, &|f| f[14] = 0x55),
            Skipped(Malformed),
        ),
        (
            "UDP length 0",
            with(&m, &|f| set16(f, 38, 0)),
            Skipped(Malformed),
        ),
        (
            "UDP length 7",
            with(&m, &|f| set16(f, 38, 7)),
            Skipped(Malformed),
        ),
        (
            "UDP length past the IP datagram",
            with(&m, &|f| set16(f, 38, 13)),
            Skipped(Malformed),
        ),
        (
            "UDP length 65535",
            with(&m, &|f| set16(f, 38, 0xffff)),
            Skipped(Malformed),
        ),
        // Shorter than a heartbeat: 3 bytes of payload are not an MDS DWORD.
        (
            "UDP length short of the payload",
            with(&m, &|f| set16(f, 38, 11)),
            NoRecord,
        ),
        // A bigger UDP length inside a bigger IP length, both past the frame: the
        // payload is not 4 bytes, so not MDS (and nothing is read from the padding).
        (
            "UDP and IP lengths both past the frame",
            with(&m, &|f| {
                set16(f, 16, 20 + 8 + 40);
                set16(f, 38, 8 + 40)
            }),
            NoRecord,
        ),
        ("ged125 as built", g.clone(), Heartbeat(5)),
        (
            "TCP data offset 0",
            with(&g, &|f| f[46] = 0x00),
            Skipped(Malformed),
        ),
        (
            "TCP data offset 4",
            with(&g, &|f| f[46] = 0x40),
            Skipped(Malformed),
        ),
        (
            "TCP data offset beyond the datagram",
            with(&g, &|f| f[46] = 0xf0),
            Skipped(Malformed),
        ),
        // Data offset 6: the payload starts 4 bytes late, `00000005 00000005` is no
        // GED-125 heartbeat.
        ("TCP data offset 6", with(&g, &|f| f[46] = 0x60), NoRecord),
        (
            "IPv4 total length cutting the heartbeat",
            with(&g, &|f| set16(f, 16, 40 + 8)),
            NoRecord,
        ),
        (
            "IPv4 total length below IP+TCP",
            with(&g, &|f| set16(f, 16, 39)),
            Skipped(Malformed),
        ),
        (
            "TCP header cut by the frame",
            g[..14 + 20 + 12].to_vec(),
            Skipped(Truncated),
        ),
    ];
    for (name, frame, want) in cases {
        assert_eq!(outcome(&frame), want, "{name}");
    }
    // IPv6: payload length lies.
    let mut s = mds(7);
    s.src = ip("fd00::1");
    s.dst = ip("fd00::2");
    let v6 = s.build(); // IPv6 at 14, payload length at 18, UDP at 54
    assert_eq!(outcome(&v6), Heartbeat(7));
    assert_eq!(
        outcome(&with(&v6, &|f| set16(f, 18, 7))),
        Skipped(Malformed)
    );
    assert_eq!(
        outcome(&with(&v6, &|f| set16(f, 18, 0))),
        Skipped(Malformed)
    );
    assert_eq!(outcome(&with(&v6, &|f| set16(f, 18, 9000))), Heartbeat(7));
    assert_eq!(outcome(&v6[..14 + 39]), Skipped(Truncated));
}

#[test]
fn vlan_stacks_fragments_options_and_ipv6_extension_headers() {
    use Counter::*;
    use Expect::*;
    for (tags, want) in [
        (vec![], Heartbeat(7)),
        (vec![10], Heartbeat(7)),
        (vec![10, 20], Heartbeat(7)),
        (vec![10, 20, 30], Skipped(Unparsed)),
        (vec![10, 20, 30, 40, 50], Skipped(Unparsed)),
    ] {
        let mut f = mds(7);
        f.vlans = tags.clone();
        assert_eq!(outcome(&f.build()), want, "{} tags", tags.len());
    }
    // Fragments, first (More Fragments, offset 0) or not: no whole datagram to read.
    for (flags, want) in [
        (0x4000, Heartbeat(7)), // DF only
        (0x0000, Heartbeat(7)),
        (0x2000, Skipped(Fragments)),
        (0x2000 | 185, Skipped(Fragments)),
        (185, Skipped(Fragments)),
        (0x4000 | 1, Skipped(Fragments)),
    ] {
        let mut f = mds(7).build();
        set16(&mut f, 20, flags);
        assert_eq!(outcome(&f), want, "flags/offset {flags:#06x}");
    }
    // Options of every size up to the maximum (40 bytes): skipped over, seq intact.
    for words in 1..=10usize {
        let mut f = mds(7);
        f.ip_options = vec![1; words * 4]; // NOPs
        f.ip_options[words * 4 - 1] = 0; // EOL
        assert_eq!(outcome(&f.build()), Heartbeat(7), "{words} option words");
    }
    let mut ra = mds(7);
    ra.ip_options = vec![0x94, 0x04, 0, 0]; // Router Alert
    assert_eq!(outcome(&ra.build()), Heartbeat(7));
    // IPv6 extension headers, alone and chained: not walked, counted as unparsed.
    let v6 = |next: u8, ext: &[u8]| {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x86, 0xdd];
        let udp = {
            let mut u = 41000u16.to_be_bytes().to_vec();
            u.extend_from_slice(&41000u16.to_be_bytes());
            u.extend_from_slice(&12u16.to_be_bytes());
            u.extend_from_slice(&[0, 0, 0, 0, 0, 7]);
            u
        };
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&((ext.len() + udp.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[next, 64]);
        f.extend_from_slice(&ip6("fd00::1"));
        f.extend_from_slice(&ip6("fd00::2"));
        f.extend_from_slice(ext);
        f.extend_from_slice(&udp);
        f
    };
    assert_eq!(outcome(&v6(17, &[])), Heartbeat(7));
    let hop = [17, 0, 1, 4, 0, 0, 0, 0]; // hop-by-hop: PadN, next UDP
    let routing = [17, 0, 0, 0, 0, 0, 0, 0];
    let frag = [17, 0, 0, 0, 0, 0, 0, 1]; // fragment header, offset 0, no MF
    let dest = [17, 0, 1, 4, 0, 0, 0, 0];
    // An atomic fragment (RFC 6946) is a whole datagram; a first fragment is not.
    assert_eq!(outcome(&v6(44, &frag)), Heartbeat(7), "atomic fragment");
    let first = [17, 0, 0, 1, 0, 0, 0, 1];
    assert_eq!(
        outcome(&v6(44, &first)),
        Skipped(Counter::Fragments),
        "first fragment"
    );
    for (name, next, ext) in [
        ("hop-by-hop", 0u8, hop.to_vec()),
        ("routing", 43, routing.to_vec()),
        ("destination options", 60, dest.to_vec()),
        (
            "chain hop-by-hop, dest opts, UDP",
            0,
            [&[60, 0, 1, 4, 0, 0, 0, 0][..], &dest].concat(),
        ),
        (
            "chain routing, fragment, UDP",
            43,
            [&[44, 0, 0, 0, 0, 0, 0, 0][..], &frag].concat(),
        ),
    ] {
        assert_eq!(outcome(&v6(next, &ext)), Skipped(Unparsed), "{name}");
    }
}

fn ip6(s: &str) -> [u8; 16] {
    match ip(s) {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(_) => unreachable!(),
    }
}

#[test]
fn garbage_on_every_heartbeat_port_raises_no_anomaly() {
    // Random bytes at a steady pace on each protocol's port, in shapes that are not its
    // heartbeat (MDS: not 4 bytes, RUDP: not 6); random frames of any ethertype, too.
    let mut rng = hbgen::rng::Rng::new(8);
    let mut frames = Vec::new();
    // Each stream runs the same 100 s at its protocol's pace (a stream that stopped
    // early would rightly be missed).
    let ports: [(&str, bool, u16, u64); 7] = [
        ("mds", false, 41000, 100),
        ("rudp", false, 15000, 1000),
        ("ipmg", false, 32779, 1000),
        ("ged125", true, 5000, 5000),
        ("sccp", true, 2000, 5000),
        ("sip-udp", false, 5060, 1000),
        ("sip-tcp", true, 5060, 1000),
    ];
    for (i, &(name, is_tcp, port, every_ms)) in ports.iter().enumerate() {
        let src = format!("10.9.{i}.1");
        let dst = format!("10.9.{i}.2");
        let mut seq = 1000u32;
        for n in 0..100_000 / every_ms {
            let mut len = rng.range(1, 300) as usize;
            if (name == "mds" && len == 4) || (name == "rudp" && len == 6) {
                len += 1;
            }
            let mut payload = vec![0u8; len];
            rng.fill(&mut payload);
            let f = if is_tcp {
                let f = tcp(&src, 40000 + i as u16, &dst, port, seq, &payload);
                seq = seq.wrapping_add(len as u32);
                f
            } else {
                udp(&src, 40000 + i as u16, &dst, port, &payload)
            };
            frames.push((T0 + n * every_ms * MS, f.build()));
        }
    }
    for n in 0..2000u64 {
        let mut f = vec![0u8; rng.range(0, 200) as usize];
        rng.fill(&mut f);
        frames.push((T0 + n * 50 * MS, f));
    }
    frames.sort_by_key(|(t, _)| *t);
    let lines = analyze(timed(frames));
    // IPMG has no known payload: every datagram is a beat by design, so its garbage
    // brings the association up. Nothing else may come out, and never an alert.
    let rest: Vec<_> = lines
        .iter()
        .filter(|v| !(v["network"]["protocol"] == "cs1000-ipmg" && action(v) == "peer.up"))
        .map(|v| v["message"].clone())
        .collect();
    assert!(rest.is_empty(), "{rest:#?}");
}

/// What an event shows of an untrusted string: control characters replaced.
fn shown(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\t' => ' ',
            c if c.is_control() => '\u{fffd}',
            c => c,
        })
        .collect()
}

/// Hostile text in every SIP field the events carry: quotes, backslashes, JSON that
/// would close the object, CR, NUL, BEL, ANSI escapes, DEL and C1 controls, non-UTF-8.
const NASTY: &str =
    "\"},\"event\":{\"action\":\"peer.down\"} \\\" \\\\ \x1b[2J\x1b[31mRED\x07\0\x7f\u{9b}31m\rX";
/// The same without SIP's own separators (quotes, spaces, `;`, `,`): fits in a token.
const NASTY_TOKEN: &str = "\x1b[2J\x1b[31mRED\x07\0\x7f\u{9b}31m\rX\\{}";

fn sip_frame(from: (&str, u16), to: (&str, u16), text: &[u8]) -> Vec<u8> {
    udp(from.0, from.1, to.0, to.1, text).build()
}

#[test]
fn hostile_sip_text_is_escaped_in_every_field() {
    let phone = ("10.70.0.9", 5060);
    let cucm = ("10.70.0.1", 5060);
    let call_id = format!("inj{NASTY}@10.70.0.9");
    let device = format!("SEP{NASTY_TOKEN}");
    let register = format!(
        "REGISTER sip:10.70.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.70.0.9:5060;branch=z9hG4bK1\r\n\
         From: <sip:1001@10.70.0.1>;tag=1\r\nTo: \"{NASTY_TOKEN}\" <sip:1001{NASTY_TOKEN}@10.70.0.1>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 REGISTER\r\n\
         Contact: <sip:1001@10.70.0.9:5060>;+u.sip!devicename.ccm.cisco.com={device};expires=3600\r\n\
         Expires: 3600\r\nContent-Length: 0\r\n\r\n"
    );
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.70.0.9:5060;branch=z9hG4bK1\r\n\
         From: <sip:1001@10.70.0.1>;tag=1\r\nTo: <sip:1001@10.70.0.1>;tag=2\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 REGISTER\r\n\
         Contact: <sip:1001@10.70.0.9:5060>;expires=120\r\nExpires: 120\r\nContent-Length: 0\r\n\r\n"
    );
    // A second phone is refused with a hostile reason phrase.
    let phone2 = ("10.70.0.10", 5060);
    let reason = format!("Service {NASTY} Unavailable");
    let register2 = sip_register("second@10.70.0.10");
    let refused = format!(
        "SIP/2.0 503 {reason}\r\nVia: SIP/2.0/UDP 10.70.0.10:5060;branch=z9hG4bK1\r\n\
         From: <sip:1001@10.70.0.1>;tag=1\r\nTo: <sip:1001@10.70.0.1>;tag=2\r\n\
         Call-ID: second@10.70.0.10\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
    );
    // Non-UTF-8 bytes in a Call-ID: replaced, never passed on raw.
    let binary = |text: String| {
        let (head, tail) = text.split_once("BIN").unwrap();
        [head.as_bytes(), b"bin\xff\xfe\xc0\xaf\x80", tail.as_bytes()].concat()
    };
    let register3 = binary(sip_register("BIN@x"));
    let ok3 = binary(
        sip_register("BIN@x")
            .replace("REGISTER sip:10.70.0.1 SIP/2.0", "SIP/2.0 200 OK")
            .replace("Expires: 3600", "Expires: 120"),
    );
    let phone3 = ("10.70.0.11", 5060);
    let frames = vec![
        (T0, sip_frame(phone, cucm, register.as_bytes())),
        (T0 + 20 * MS, sip_frame(cucm, phone, ok.as_bytes())),
        (T0 + 100 * MS, sip_frame(phone2, cucm, register2.as_bytes())),
        (T0 + 120 * MS, sip_frame(cucm, phone2, refused.as_bytes())),
        (T0 + 200 * MS, sip_frame(phone3, cucm, &register3)),
        (T0 + 220 * MS, sip_frame(cucm, phone3, &ok3)),
    ];
    let lines = analyze(timed(frames));
    let actions: Vec<&str> = lines.iter().map(action).collect();
    assert_eq!(
        actions,
        ["sip.registered", "sip.register_failed", "sip.registered"],
        "{lines:#?}"
    );
    let reg = &lines[0]["sip"];
    assert_eq!(reg["call_id"].as_str(), Some(shown(&call_id).as_str()));
    assert_eq!(reg["device"].as_str(), Some(shown(&device).as_str()));
    let aor = format!("sip:1001{NASTY_TOKEN}@10.70.0.1");
    assert_eq!(reg["aor"].as_str(), Some(shown(&aor).as_str()));
    // The JSON-breaking text is kept verbatim, as text, and made no event of its own.
    assert!(reg["call_id"]
        .as_str()
        .unwrap()
        .contains("\"},\"event\":{\"action\":\"peer.down\"}"));
    let failed = &lines[1]["sip"];
    assert_eq!(failed["code"], 503);
    assert_eq!(failed["status"].as_str(), Some(shown(&reason).as_str()));
    assert!(lines[1]["message"]
        .as_str()
        .unwrap()
        .contains(&shown(&reason)));
    assert_eq!(
        lines[2]["sip"]["call_id"].as_str(),
        Some("bin\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}@x")
    );
}

#[test]
fn oversized_sip_is_parsed_for_what_was_captured() {
    let phone = ("10.70.0.9", 5060);
    let cucm = ("10.70.0.1", 5060);
    // 1400 bytes of REGISTER over UDP: the datapath hands up the first 1024, and the
    // headers that matter come first.
    let mut big = sip_register("big@10.70.0.9");
    big.truncate(big.len() - 2);
    big.push_str(&format!("X-Padding: {}\r\n\r\n", "p".repeat(800)));
    let ok = sip_register("big@10.70.0.9")
        .replace("REGISTER sip:10.70.0.1 SIP/2.0", "SIP/2.0 200 OK")
        .replace("Expires: 3600", "Expires: 120");
    // A Call-ID longer than any event keeps: cut to 256 characters.
    let long_id = "L".repeat(600);
    let long = sip_register(&long_id);
    let long_ok = ok.replace("big@10.70.0.9", &long_id);
    let frames = vec![
        (T0, sip_frame(phone, cucm, big.as_bytes())),
        (T0 + 10 * MS, sip_frame(cucm, phone, ok.as_bytes())),
        (
            T0 + 100 * MS,
            sip_frame(("10.70.0.12", 5060), cucm, long.as_bytes()),
        ),
        (
            T0 + 110 * MS,
            sip_frame(cucm, ("10.70.0.12", 5060), long_ok.as_bytes()),
        ),
    ];
    assert!(big.len() > 1024);
    let lines = analyze(timed(frames));
    let ids: Vec<_> = lines
        .iter()
        .filter(|v| action(v) == "sip.registered")
        .map(|v| v["sip"]["call_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["big@10.70.0.9".to_string(), "L".repeat(256)]);

    // Over TCP: an endless header section across many segments is dropped at the
    // stream's limit; a proper REGISTER after it on the same connection still counts.
    let mut seq = 5000u32;
    let mut frames = Vec::new();
    let mut t = T0;
    let mut seg = |payload: &[u8], from_phone: bool, frames: &mut Vec<(u64, Vec<u8>)>| {
        t += MS;
        let f = if from_phone {
            let f = tcp("10.70.0.20", 40500, "10.70.0.1", 5060, seq, payload);
            seq = seq.wrapping_add(payload.len() as u32);
            f
        } else {
            tcp("10.70.0.1", 5060, "10.70.0.20", 40500, 1, payload)
        };
        frames.push((t, f.build()));
    };
    seg(b"REGISTER sip:10.70.0.1 SIP/2.0\r\n", true, &mut frames);
    for _ in 0..40 {
        seg(
            &b"X-Junk: 0123456789abcdef\r\n".repeat(40),
            true,
            &mut frames,
        );
    }
    seg(b"\r\n", true, &mut frames);
    let reg = sip_register("after@10.70.0.20");
    seg(reg.as_bytes(), true, &mut frames);
    let ok = reg
        .replace("REGISTER sip:10.70.0.1 SIP/2.0", "SIP/2.0 200 OK")
        .replace("Expires: 3600", "Expires: 120");
    seg(ok.as_bytes(), false, &mut frames);
    let lines = analyze(timed(frames));
    let acts: Vec<_> = lines
        .iter()
        .map(|v| (action(v), v["sip"]["call_id"].clone()))
        .collect();
    assert_eq!(acts, [("sip.registered", Value::from("after@10.70.0.20"))]);
}

/// Valid heartbeat frames of every protocol (the demo's story, IPv4 and IPv6 tagged).
fn storm_bases() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for o in [
        Default::default(),
        hbgen::scenario::Overrides {
            ipv6: true,
            vlan: Some(42),
            ..Default::default()
        },
    ] {
        let mut sc = Scenario::load("story").unwrap();
        sc.apply(&o).unwrap();
        out.extend(generate(&sc).take_frames().into_iter().map(|f| f.data));
    }
    out
}

/// A fresh MDS association after the storm: seq 0..=9 every 100 ms, then 17.
fn clean_gap(start: u64) -> Vec<(u64, Vec<u8>)> {
    let beat = |seq: u32| {
        udp(
            "203.0.113.7",
            41000,
            "203.0.113.8",
            41000,
            &seq.to_be_bytes(),
        )
        .build()
    };
    let mut v: Vec<_> = (0..10u32)
        .map(|s| (start + s as u64 * 100 * MS, beat(s)))
        .collect();
    v.push((start + 1000 * MS, beat(17)));
    v
}

#[test]
fn mutation_storm_then_a_clean_gap_is_still_exact() {
    // 300k mutated heartbeats (bit flips, truncations, length lies, fragments, extension
    // headers, VLAN stacks, junk), 20 µs apart: a 6 s storm. Then a fresh association
    // loses 7 heartbeats: exactly that gap must come out.
    const N: usize = 300_000;
    let started = Instant::now();
    let bases = storm_bases();
    let mut m = Mutator::new(42);
    let mut rng = hbgen::rng::Rng::new(42);
    let mut frames: Vec<(u64, Vec<u8>)> = (0..N)
        .map(|i| {
            let base = &bases[rng.range(0, bases.len() as u64) as usize];
            (T0 + i as u64 * 20_000, m.mutate(base).0)
        })
        .collect();
    let end = T0 + N as u64 * 20_000;
    frames.extend(clean_gap(end + SEC));
    let lines = analyze(timed(frames));
    let fresh: Vec<_> = lines
        .iter()
        .filter(|v| v["source"]["ip"] == "203.0.113.7" && v["event"]["kind"] == "alert")
        .collect();
    assert_eq!(fresh.len(), 1, "{fresh:#?}");
    let gap = fresh[0];
    assert_eq!(action(gap), "heartbeat.gap");
    assert_eq!(gap["heartbeat"]["lost"], 7);
    assert_eq!(gap["heartbeat"]["expected_seq"], 10);
    assert_eq!(gap["heartbeat"]["seq"], 17);
    eprintln!(
        "storm: {N} mutated frames, {} events, {:.1} s",
        lines.len(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_jump_of_the_capture_clock_does_not_walk_every_summary_period() {
    // Found by the pcap fuzz target (a timeout): a corrupt timestamp decades after the
    // others made analyze walk every empty 60 s summary period in between, 16 million
    // of them here.
    let frames = timed(vec![
        (T0, mds(1).build()),
        (T0 + 1_000_000_000 * SEC, mds(2).build()),
    ]);
    let mut opts = options();
    opts.summary_period = Some(std::time::Duration::from_secs(60));
    let started = Instant::now();
    let lines = analyze_with(frames, &opts);
    assert!(started.elapsed().as_secs() < 5, "{:?}", started.elapsed());
    let summaries: Vec<_> = lines
        .iter()
        .filter(|v| action(v) == "heartbeat.summary")
        .map(|v| {
            (
                v["heartbeat"]["count"].as_u64(),
                v["heartbeat"]["period_ms"].as_u64(),
            )
        })
        .collect();
    // The first heartbeat's period; the second's, ending with the capture: one period
    // long, as if every empty period had been walked.
    assert_eq!(summaries[0], (Some(1), Some(60_000)));
    assert_eq!(summaries.len(), 2, "{summaries:?}");
    assert_eq!(summaries[1].0, Some(1));
    assert!(summaries[1].1.unwrap() <= 60_000, "{summaries:?}");
}

#[test]
fn truncated_and_corrupt_captures_end_cleanly() {
    // A capture cut at every length: the frames before the cut are analyzed (valid
    // lines), the cut record ends the file or is an error, never a panic or a hang.
    let frames: Vec<_> = (0..12u32)
        .map(|s| (T0 + s as u64 * 100 * MS, mds(s).build()))
        .collect();
    let opts = options();
    let started = Instant::now();
    let mut runs = 0;
    for format in [Format::Pcap { nanos: false }, Format::PcapNg] {
        let mut whole = Vec::new();
        output::write(&mut whole, format, timed(frames.clone())).unwrap();
        for cut in 0..whole.len() {
            let _ = analyze_bytes(whole[..cut].to_vec(), &opts);
            runs += 1;
        }
        // Flipped bytes in the file structure (block lengths, link types, timestamps).
        let mut rng = hbgen::rng::Rng::new(5);
        for _ in 0..300 {
            let mut bad = whole.clone();
            for _ in 0..rng.range(1, 4) {
                let at = rng.range(0, bad.len() as u64) as usize;
                bad[at] = rng.next_u64() as u8;
            }
            let _ = analyze_bytes(bad, &opts);
            runs += 1;
        }
    }
    eprintln!(
        "{runs} captures in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn extreme_timing_fields_do_not_overflow() {
    // Intervals announced at their maximum: SCCP RegisterAck keepalives of 2^32-1 s,
    // GED-125 OPEN_REQ IdleTimeout of 2^32-1 ms. The timers' arithmetic used to
    // overflow on them (a panic in debug builds, wrapped deadlines in release).
    let mut frames = Vec::new();
    let mut t = T0;
    let mut phone_seq = 100u32;
    let mut cucm_seq = 900u32;
    let mut reg_ack = Vec::new();
    for w in [20u32, 0x16, sccp::REGISTER_ACK, u32::MAX, 0, 0, u32::MAX] {
        reg_ack.extend_from_slice(&w.to_le_bytes());
    }
    let mut open_req = Vec::new();
    for w in [12u32, ged125::OPEN_REQ, 1, 13, u32::MAX] {
        open_req.extend_from_slice(&w.to_be_bytes());
    }
    let mut pim_seq = 5000u32;
    let mut cvp_seq = 7000u32;
    frames.push((
        t,
        tcp("10.4.0.9", 40009, "10.4.0.2", 5000, pim_seq, &open_req).build(),
    ));
    pim_seq += open_req.len() as u32;
    for i in 0..6u32 {
        t += 10 * SEC;
        let ka = sccp::message(Role::Request);
        frames.push((
            t,
            tcp("10.5.0.9", 40010, "10.5.0.2", 2000, phone_seq, &ka).build(),
        ));
        phone_seq += 12;
        let answer = if i == 0 {
            reg_ack.clone()
        } else {
            sccp::message(Role::Response).to_vec()
        };
        frames.push((
            t + MS,
            tcp("10.5.0.2", 2000, "10.5.0.9", 40010, cucm_seq, &answer).build(),
        ));
        cucm_seq += answer.len() as u32;
        let req = ged125::message(Role::Request, i);
        frames.push((
            t,
            tcp("10.4.0.9", 40009, "10.4.0.2", 5000, pim_seq, &req).build(),
        ));
        pim_seq += 12;
        let conf = ged125::message(Role::Response, i);
        frames.push((
            t + MS,
            tcp("10.4.0.2", 5000, "10.4.0.9", 40009, cvp_seq, &conf).build(),
        ));
        cvp_seq += 12;
    }
    let mut opts = options();
    opts.summary_period = Some(std::time::Duration::from_secs(60));
    let lines = analyze_with(timed(frames), &opts);
    let alerts: Vec<_> = lines
        .iter()
        .filter(|v| v["event"]["kind"] == "alert")
        .map(|v| v["message"].clone())
        .collect();
    assert!(alerts.is_empty(), "{alerts:#?}");
}

#[test]
fn timestamps_at_the_end_of_the_clock() {
    // Found by the pcap fuzz target: a pcapng timestamp that saturated to u64::MAX ns
    // overflowed the first summary boundary (a panic in debug builds).
    let mut opts = options();
    opts.summary_period = Some(std::time::Duration::from_secs(60));
    for (first, later) in [
        (u64::MAX, u64::MAX),
        (T0, u64::MAX),
        (T0, u64::MAX - 1),
        (u64::MAX - 30 * SEC, u64::MAX),
    ] {
        let mut replay = Replay::new(&opts, "end".into());
        let mut out = Vec::new();
        replay.frame(&mds(1).build(), first, &mut out);
        replay.frame(&mds(2).build(), later, &mut out);
        replay.frame(&mds(4).build(), later, &mut out);
        replay.finish(&mut out);
        let actions: Vec<String> = out
            .iter()
            .map(|ev| action(&check_line(ev)).to_string())
            .collect();
        assert!(
            actions.contains(&"heartbeat.gap".to_string()),
            "{actions:?}"
        );
    }
}

#[test]
fn capture_timestamps_running_backwards() {
    // Found by the pcap fuzz target: GED-125 requests dated ever earlier (a merged or
    // corrupt capture) went unanswered twice, and the peer.down's silence was computed
    // as "record time - last heartbeat", negative: an overflow panic in debug builds,
    // a silence of 584 years in release.
    let req = |invoke: u32, seq: u32| {
        tcp(
            "10.4.0.7",
            40007,
            "10.4.0.2",
            5000,
            seq,
            &ged125::message(Role::Request, invoke),
        )
        .build()
    };
    let frames = timed(vec![
        (T0 + 100 * SEC, req(1, 100)),
        (T0 + 50 * SEC, req(2, 112)),
        (T0 + 40 * SEC, req(3, 124)),
        (T0 + 30 * SEC, req(4, 136)),
    ]);
    let lines = analyze(frames);
    let down = lines
        .iter()
        .find(|v| action(v) == "peer.down")
        .expect("two unanswered requests in a row: down");
    assert!(
        down["heartbeat"]["silence_ms"].as_u64().unwrap() <= 100_000,
        "{down}"
    );
}
