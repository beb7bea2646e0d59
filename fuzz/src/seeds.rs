//! Seed corpora, generated from the traffic generator's built-in scenarios (every
//! protocol, healthy and faulty, IPv4 and IPv6 with VLAN tags): valid inputs in each
//! target's format, so the fuzzer starts deep inside the decoders instead of at
//! "not Ethernet".

use std::collections::BTreeSet;
use std::path::Path;

use hbgen::output;
use hbgen::scenario::{Overrides, Scenario};
use hbgen::{generate, TimedFrame};
use hbwatch_common::frame::SliceFrame;
use hbwatch_common::parse::{parse, Packet, IPPROTO_TCP};
use hbwatch_pcap::Format;

use crate::input;

/// Most seeds per group (protocol, kind of seed): enough variety, a quick start.
const CAP: usize = 48;

/// Every frame of the scenarios, in time order per scenario.
pub fn scenario_frames() -> Vec<Vec<TimedFrame>> {
    let sip_tcp = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../agent/tests/data/sip-tcp.toml"
    );
    let mut out = Vec::new();
    let variants = [
        ("healthy", Overrides::default()),
        ("faults", Overrides::default()),
        ("story", Overrides::default()),
        ("mgcp", Overrides::default()),
        (
            "story",
            Overrides {
                ipv6: true,
                vlan: Some(42),
                ..Overrides::default()
            },
        ),
        (sip_tcp, Overrides::default()),
    ];
    for (name, o) in variants {
        let Ok(mut sc) = Scenario::load(name) else {
            continue;
        };
        if sc.apply(&o).is_err() {
            continue;
        }
        out.push(generate(&sc).take_frames());
    }
    out
}

fn protocol_of(label: &str) -> &str {
    label.split('.').next().unwrap_or(label)
}

fn parsed(f: &TimedFrame) -> Option<Packet> {
    parse(&SliceFrame(&f.data)).ok()
}

fn payload<'a>(f: &'a TimedFrame, p: &Packet) -> &'a [u8] {
    let lo = p.payload_off as usize;
    f.data
        .get(lo..lo + p.payload_len as usize)
        .unwrap_or_default()
}

/// Adds `v` unless seen or the group is full.
fn add(out: &mut Vec<Vec<u8>>, seen: &mut BTreeSet<Vec<u8>>, v: Vec<u8>) {
    if out.len() < CAP && seen.insert(v.clone()) {
        out.push(v);
    }
}

/// Seed inputs of one target.
pub fn for_target(target: &str) -> Vec<Vec<u8>> {
    let captures = scenario_frames();
    let all = || captures.iter().flatten();
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let decoder = |proto: &str, out: &mut Vec<Vec<u8>>, seen: &mut BTreeSet<Vec<u8>>| {
        for f in all().filter(|f| protocol_of(f.label) == proto) {
            if let Some(p) = parsed(f) {
                add(
                    out,
                    seen,
                    input::encode_decoder(p.payload_off, p.payload_len, &f.data),
                );
            }
        }
    };
    match target {
        "decode_ged125" => decoder("ged125", &mut out, &mut seen),
        "decode_sccp" => decoder("sccp", &mut out, &mut seen),
        "decode_mds" => decoder("mds", &mut out, &mut seen),
        "decode_rudp" => decoder("rudp", &mut out, &mut seen),
        "decode_ipmg" => decoder("ipmg", &mut out, &mut seen),
        "decode_mgcp" => decoder("mgcp", &mut out, &mut seen),
        "decode_sip" => decoder("sip", &mut out, &mut seen),
        "parse_frame" => {
            // One frame per (message kind, length, tagging): every header layout.
            let mut kinds = BTreeSet::new();
            for f in all() {
                if kinds.insert((
                    f.label,
                    f.data.len(),
                    f.data.get(12..14).map(<[u8]>::to_vec),
                )) {
                    add(&mut out, &mut seen, f.data.clone());
                }
            }
        }
        "engine" => {
            // Runs of consecutive frames of one protocol, then mixed runs.
            for frames in &captures {
                let protos: BTreeSet<&str> = frames.iter().map(|f| protocol_of(f.label)).collect();
                for proto in protos {
                    let mine: Vec<&TimedFrame> = frames
                        .iter()
                        .filter(|f| protocol_of(f.label) == proto)
                        .collect();
                    for run in mine.chunks(24).take(4) {
                        let v = input::encode_frames(run.iter().map(|f| (f.ts_ns, &f.data[..])));
                        seen.insert(v.clone());
                        out.push(v);
                    }
                }
                for run in frames.chunks(48).take(4) {
                    let v = input::encode_frames(run.iter().map(|f| (f.ts_ns, &f.data[..])));
                    seen.insert(v.clone());
                    out.push(v);
                }
            }
        }
        "sip_parse" => {
            for f in all().filter(|f| protocol_of(f.label) == "sip") {
                if let Some(p) = parsed(f) {
                    add(&mut out, &mut seen, payload(f, &p).to_vec());
                }
            }
        }
        "sip_stream" => {
            // Each direction of each SIP/TCP connection, a dozen segments at a time.
            for frames in &captures {
                let mut dirs: std::collections::BTreeMap<_, Vec<Vec<u8>>> = Default::default();
                for f in frames.iter().filter(|f| protocol_of(f.label) == "sip") {
                    let Some(p) = parsed(f).filter(|p| p.transport == IPPROTO_TCP) else {
                        continue;
                    };
                    let pl = payload(f, &p);
                    if !pl.is_empty() {
                        let key = (p.src, p.src_port, p.dst, p.dst_port);
                        dirs.entry(key).or_default().push(pl.to_vec());
                    }
                }
                for segs in dirs.values() {
                    for run in segs.chunks(12).take(3) {
                        let v = input::encode_segments(run.iter().map(Vec::as_slice));
                        add(&mut out, &mut seen, v);
                    }
                }
            }
        }
        "pcap" => {
            // Small captures: per protocol and mixed, in every format the reader takes.
            let formats = [
                Format::Pcap { nanos: false },
                Format::Pcap { nanos: true },
                Format::PcapNg,
            ];
            for (i, frames) in captures.iter().enumerate() {
                let protos: BTreeSet<&str> = frames.iter().map(|f| protocol_of(f.label)).collect();
                for proto in protos {
                    let mine: Vec<TimedFrame> = frames
                        .iter()
                        .filter(|f| protocol_of(f.label) == proto)
                        .take(40)
                        .cloned()
                        .collect();
                    let mut buf = Vec::new();
                    if output::write(&mut buf, formats[i % 3], mine).is_ok() {
                        add(&mut out, &mut seen, buf);
                    }
                }
                for format in formats {
                    let mixed: Vec<TimedFrame> = frames.iter().take(60).cloned().collect();
                    let mut buf = Vec::new();
                    if output::write(&mut buf, format, mixed).is_ok() {
                        add(&mut out, &mut seen, buf);
                    }
                }
            }
        }
        _ => {}
    }
    out
}

/// Writes the inputs as `seed-NNNN` files into `dir`.
pub fn write(dir: &Path, inputs: &[Vec<u8>]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (i, v) in inputs.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:04}")), v)?;
    }
    Ok(())
}
