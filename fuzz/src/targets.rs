//! The body of every fuzz target. Each `check_*` panics when an oracle fails; libFuzzer
//! turns the panic into a crash report with the input.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;

use hbwatch::correlate::sip::parse;
use hbwatch::correlate::sip::stream::{Stream, StreamStats};
use hbwatch::offline::{analyze_reader, AnalyzeOptions, OfflineEnv};
use hbwatch::ports::{default_specs, port_table};
use hbwatch_common::counters::Counter;
use hbwatch_common::engine::process;
use hbwatch_common::event::{EventKind, RawEvent};
use hbwatch_common::frame::SliceFrame;
use hbwatch_common::parse::{Packet, IPPROTO_TCP, IPPROTO_UDP};
use hbwatch_common::proto::{self, sip as sip_dp, Protocol};

use crate::input;
use crate::oracle::{CheckSink, WindowFrame};
use crate::reference;

/// Port table of every target that runs the engine: the defaults plus the MDS
/// private-network port the scenarios and tests configure.
pub fn ports() -> BTreeMap<u32, Protocol> {
    let mut specs = default_specs();
    specs.push("mds=41000".parse().expect("port spec"));
    port_table(&specs)
}

/// One decoder on a packet the input describes (`input::Decoder`): never reads outside
/// the declared payload, agrees with the reference decoder whenever the frame holds the
/// whole payload, and gives the same answer with padding after the frame.
pub fn check_decoder(proto: Protocol, data: &[u8]) {
    let Some(d) = input::decoder(data) else {
        return;
    };
    let native = proto.transports()[0];
    let other = if native == IPPROTO_TCP {
        IPPROTO_UDP
    } else {
        IPPROTO_TCP
    };
    let pkt = Packet {
        transport: if d.flags & 1 != 0 { other } else { native },
        payload_off: d.payload_off,
        payload_len: d.payload_len,
        ..Packet::default()
    };
    let decode = |bytes: &[u8]| {
        let f = WindowFrame::new(bytes, pkt.payload_off as usize, pkt.payload_len as usize);
        proto::decode(proto, &f, &pkt)
    };
    let got = decode(d.frame);
    let Some(payload) = reference::payload(d.frame, &pkt) else {
        // The frame ends inside the payload: a heartbeat may only come from bytes that
        // are there, and those must say the same with the missing rest added.
        if let Some(msg) = got {
            let mut whole = d.frame.to_vec();
            whole.resize(pkt.payload_off as usize + pkt.payload_len as usize, 0);
            assert_eq!(
                decode(&whole),
                Some(msg),
                "a shorter frame decoded differently"
            );
        }
        return;
    };
    let want = match proto {
        Protocol::Ged125 => reference::ged125(&pkt, payload),
        Protocol::Sccp => reference::sccp(&pkt, payload),
        Protocol::Mds => reference::mds(&pkt, payload),
        Protocol::Cs1000Rudp => reference::rudp(&pkt, payload),
        Protocol::Cs1000Ipmg => reference::ipmg(&pkt, payload),
        Protocol::Mgcp => reference::mgcp(&pkt, payload),
        Protocol::Sip | Protocol::None => None,
    };
    assert_eq!(got, want, "decoder and reference disagree on {pkt:?}");
    let mut padded = d.frame.to_vec();
    padded.extend_from_slice(&[0xa5; 64]);
    assert_eq!(
        decode(&padded),
        got,
        "padding after the frame changed the decode"
    );
}

/// The SIP datapath pieces: the start-line check reads 8 bytes of the payload, and the
/// payload copy hands up exactly the payload's first bytes, as many as the frame holds.
pub fn check_decoder_sip(data: &[u8]) {
    let Some(d) = input::decoder(data) else {
        return;
    };
    let pkt = Packet {
        transport: if d.flags & 1 != 0 {
            IPPROTO_TCP
        } else {
            IPPROTO_UDP
        },
        payload_off: d.payload_off,
        payload_len: d.payload_len,
        ..Packet::default()
    };
    let (off, len) = (pkt.payload_off as usize, pkt.payload_len as usize);
    let f = WindowFrame::new(d.frame, off, len);
    let start = sip_dp::start_line(&f, &pkt);
    if let (Some(s), Some(p)) = (start, d.frame.get(off..off + 8)) {
        let want = match p {
            b"REGISTER" => sip_dp::StartLine::Register,
            b"OPTIONS " => sip_dp::StartLine::Options,
            b"SIP/2.0 " => sip_dp::StartLine::Response,
            other => panic!("start line {s:?} from {other:?}"),
        };
        assert_eq!(s, want);
        assert!(len >= 12);
    }
    let mut out = [0u8; sip_dp::CAPTURE_LEN];
    let n = sip_dp::copy_payload(&f, off, len, &mut out);
    let want = sip_dp::captured_len(len);
    assert!(
        n <= want,
        "copied {n} of a {len}-byte payload (at most {want})"
    );
    let available = d.frame.len().saturating_sub(off).min(len);
    if available >= want {
        assert_eq!(
            n, want,
            "the frame holds the payload, yet {n} of {want} copied"
        );
    }
    if n > 0 {
        assert_eq!(
            Some(&out[..n]),
            d.frame.get(off..off + n),
            "copied bytes differ"
        );
    }
}

/// Frame parsing: the same as the reference parser; padding after the frame and
/// cutting the frame right after the L4 header change nothing.
pub fn check_parse(data: &[u8]) {
    let got = hbwatch_common::parse::parse(&SliceFrame(data));
    assert_eq!(got, reference::parse(data), "parse and reference disagree");
    let Ok(pkt) = got else {
        return;
    };
    let mut padded = data.to_vec();
    padded.extend_from_slice(&[0xa5; 64]);
    assert_eq!(hbwatch_common::parse::parse(&SliceFrame(&padded)), got);
    let headers = &data[..(pkt.payload_off as usize).min(data.len())];
    assert_eq!(
        hbwatch_common::parse::parse(&SliceFrame(headers)),
        got,
        "parsing read the payload"
    );
}

/// What one packet's records must look like, whatever the packet.
fn check_record(raw: &RawEvent, payload: &[u8]) {
    let kind = EventKind::from_u8(raw.kind).expect("a known record kind");
    let key = &raw.key;
    assert!(matches!(key.family, 4 | 6), "{raw:?}");
    assert!(
        matches!(key.transport, IPPROTO_TCP | IPPROTO_UDP),
        "{raw:?}"
    );
    assert!(
        Protocol::from_u8(key.proto) != Protocol::None,
        "record without a protocol: {raw:?}"
    );
    match kind {
        EventKind::Gap => {
            assert_eq!(raw.value, raw.seq.wrapping_sub(raw.aux) as u64, "{raw:?}");
            assert!(raw.value >= 1, "a gap loses something: {raw:?}");
        }
        EventKind::Retry => assert!(raw.aux >= 2, "{raw:?}"),
        EventKind::SipMessage => {
            assert_eq!(key.proto, Protocol::Sip as u8);
            assert!(raw.aux as usize <= sip_dp::CAPTURE_LEN, "{raw:?}");
            assert!(raw.aux as u64 <= raw.value, "{raw:?}");
            assert_eq!(
                payload.len(),
                raw.aux as usize,
                "the record says {} bytes captured, {} came",
                raw.aux,
                payload.len()
            );
        }
        EventKind::Heartbeat => assert!(matches!(raw.aux & 0xff, 1..=3), "{raw:?}"),
        _ => assert!(payload.is_empty()),
    }
}

/// A frame "complete" by its own headers: it parses and holds its whole payload. Bytes
/// after such a frame are padding the datapath must ignore.
fn complete(frame: &[u8]) -> bool {
    match hbwatch_common::parse::parse(&SliceFrame(frame)) {
        Ok(p) => p.payload_off as usize + p.payload_len as usize <= frame.len(),
        Err(_) => false,
    }
}

type Run = (Vec<(RawEvent, Vec<u8>)>, Vec<u64>);

fn engine_run(data: &[u8], pad: bool) -> Run {
    let mut env = OfflineEnv::new(&ports(), &Default::default());
    let mut now = 1_700_000_000_000_000_000u64;
    let mut records = Vec::new();
    let mut frames = 0u64;
    let mut buf = Vec::new();
    for (dt, frame) in input::frames(data) {
        now += dt;
        frames += 1;
        let frame = if pad && complete(frame) {
            buf.clear();
            buf.extend_from_slice(frame);
            buf.extend_from_slice(&[0x5a; 32]);
            &buf[..]
        } else {
            frame
        };
        process(&SliceFrame(frame), &mut env, now, 1);
        for (raw, payload) in env.records.drain(..) {
            assert_eq!(raw.ts_ns, now);
            check_record(&raw, &payload);
            records.push((raw, payload));
        }
    }
    let c = &env.counters;
    assert_eq!(c[Counter::Packets as usize], frames);
    assert!(c[Counter::PortMatched as usize] <= frames);
    assert!(c[Counter::Heartbeats as usize] <= c[Counter::PortMatched as usize]);
    (records, env.counters.to_vec())
}

/// The per-packet engine over a sequence of frames on the offline engine's maps (the
/// same transition code as the kernel): every record well-formed, and the records the
/// same when complete frames carry padding (lengths come from headers, never the frame).
pub fn check_engine(data: &[u8]) {
    let plain = engine_run(data, false);
    let padded = engine_run(data, true);
    assert_eq!(
        plain, padded,
        "padding after complete frames changed the records"
    );
}

fn check_message(m: &parse::Message) {
    let bounded = |s: &str| assert!(s.chars().count() <= parse::MAX_TEXT, "{s:?}");
    let texts = [&m.call_id, &m.from_aor, &m.to_aor];
    texts.into_iter().flatten().for_each(|s| bounded(s));
    match &m.start {
        parse::StartLine::Request { uri, .. } => bounded(uri),
        parse::StartLine::Response { status, reason } => {
            assert!((100..=699).contains(status));
            bounded(reason);
        }
    }
    for c in &m.contacts {
        bounded(&c.uri);
        [&c.user, &c.instance, &c.device_name]
            .into_iter()
            .flatten()
            .for_each(|s| bounded(s));
    }
}

/// The SIP text parser: bounded strings; a message whose headers end inside the input
/// reads the same whatever follows them.
pub fn check_sip_parse(data: &[u8]) {
    let Some(msg) = parse::parse(data) else {
        return;
    };
    check_message(&msg);
    if let Some(end) = msg.header_len {
        assert!(end <= data.len());
        assert_eq!(parse::parse(&data[..end]).as_ref(), Some(&msg));
        let mut more = data.to_vec();
        more.extend_from_slice(b"\r\nINVITE sip:x SIP/2.0\r\nCall-ID: other\r\n\r\n");
        assert_eq!(parse::parse(&more).as_ref(), Some(&msg));
    }
}

const MAX_BUFFER: usize = 16_384;

/// TCP reassembly of SIP: bounded buffer, well-formed messages; and for a clean stream
/// (in order, fully captured) the messages do not depend on where segments were cut.
pub fn check_sip_stream(data: &[u8]) {
    let mut seq = 0x1234_5678u32;
    let mut stream = Stream::new(seq, 0);
    let mut stats = StreamStats::default();
    let mut out = Vec::new();
    let mut prev: Option<(u32, Vec<u8>)> = None;
    let mut clean = true;
    let mut whole = Vec::new();
    for (i, (kind, bytes)) in input::segments(data).enumerate() {
        let ts = i as u64 + 1;
        let (at, full) = match kind {
            input::SegKind::InOrder => (seq, bytes.len() as u64),
            input::SegKind::Retransmit => match &prev {
                Some((at, b)) => {
                    clean = false;
                    stream.segment(ts, *at, b, b.len() as u64, MAX_BUFFER, &mut stats, &mut out);
                    continue;
                }
                None => (seq, bytes.len() as u64),
            },
            input::SegKind::Hole(n) => {
                clean = false;
                seq = seq.wrapping_add(n * 97);
                (seq, bytes.len() as u64)
            }
            input::SegKind::Clipped(n) => {
                clean = false;
                (seq, bytes.len() as u64 + n as u64 * 8)
            }
        };
        stream.segment(ts, at, bytes, full, MAX_BUFFER, &mut stats, &mut out);
        assert!(stream.buffered() <= MAX_BUFFER + bytes.len());
        whole.extend_from_slice(bytes);
        seq = at.wrapping_add(full as u32);
        prev = Some((at, bytes.to_vec()));
    }
    for (_, m) in &out {
        check_message(m);
    }
    if clean && whole.len() <= MAX_BUFFER / 2 {
        let mut one = Stream::new(0x1234_5678, 0);
        let mut one_out = Vec::new();
        let mut s = StreamStats::default();
        one.segment(
            1,
            0x1234_5678,
            &whole,
            whole.len() as u64,
            MAX_BUFFER,
            &mut s,
            &mut one_out,
        );
        let a: Vec<_> = out.iter().map(|(_, m)| m).collect();
        let b: Vec<_> = one_out.iter().map(|(_, m)| m).collect();
        assert_eq!(a, b, "messages depend on where the segments were cut");
    }
}

/// Bytes as a capture file through `hbwatch analyze` (pcap-parser, the engine, the
/// correlator, the JSON sink): no panic, no hang, every line checked by `check_event`.
pub fn check_pcap(data: &[u8]) {
    let opts = AnalyzeOptions {
        summary_period: Some(std::time::Duration::from_secs(60)),
        // Half the inputs through the held-beat path the live agent runs.
        hold: data.len() % 2 == 1,
        ..AnalyzeOptions::new(ports(), "fuzz")
    };
    let mut sink = CheckSink::default();
    let input = Box::new(Cursor::new(data.to_vec()));
    let _ = analyze_reader(
        input,
        data.len() as u64,
        Path::new("fuzz.pcap"),
        "fuzz.pcap".into(),
        &opts,
        &mut sink,
    );
}
