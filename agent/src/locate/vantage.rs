//! Two vantage points made from one capture (`hbwatch vantage`): what captures at both
//! ends of a path would hold, with loss, re-marking, a route change or a forged RST
//! between them, a clock offset and jitter, and the truth of what was done. Works on
//! generated and real captures alike; `hbwatch locate` must find exactly the truth.
//!
//! The path: `a` is nearest the endpoints listed in `near_a`, `b` nearest the others.
//! The input is what `a` saw: a frame from a `near_a` source reaches `b` `delay_ms`
//! later, the others passed `b` `delay_ms` before `a`. A delay over half the round trip
//! `a` sees makes answers reach `b` before their requests (what `locate` matches is not
//! affected; a datapath replaying `b` would be). Rules of a vantage act on what that vantage
//! captures: a drop at the downstream vantage of a direction is loss between them.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use anyhow::{bail, Context, Result};
use hbwatch_common::frame::{Frame as _, SliceFrame};
use hbwatch_common::parse::{self, Packet, AF_INET, IPPROTO_TCP, TCP_ACK, TCP_RST};
use hbwatch_common::proto::{decode, port_slot, Protocol, PORT_SLOTS};
use serde::{Deserialize, Serialize};

use crate::correlate::sip::parse as sipparse;

use hbgen::frame::{checksum, FrameSpec, Tcp};
use hbgen::output::write_file;
use hbgen::rng::Rng;
use hbgen::TimedFrame;
use hbwatch_pcap::Format;

/// The spec (TOML): the path and the rules of each vantage.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    #[serde(default)]
    pub seed: u64,
    /// Source addresses on `a`'s side of the path.
    pub near_a: Vec<IpAddr>,
    /// One-way delay between `a` and `b`, ms (below half the round trips of the input to
    /// keep requests before their answers at `b`).
    #[serde(default)]
    pub delay_ms: f64,
    #[serde(default)]
    pub a: Rules,
    #[serde(default)]
    pub b: Rules,
}

/// What one vantage's capture gets.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Added to every timestamp, ms (this capture's clock is that far ahead).
    #[serde(default)]
    pub clock_offset_ms: f64,
    /// Uniform random timing error up to +- this, ms.
    #[serde(default)]
    pub jitter_ms: f64,
    /// Keep only frames from this many seconds after the input's first frame...
    #[serde(default)]
    pub start_s: Option<f64>,
    /// ...up to this many.
    #[serde(default)]
    pub end_s: Option<f64>,
    #[serde(default)]
    pub drop: Vec<Drop>,
    #[serde(default)]
    pub dscp: Vec<Remark>,
    #[serde(default)]
    pub ttl: Vec<Remark>,
    #[serde(default)]
    pub rst: Vec<Forge>,
    /// Addresses rewritten in this capture (NAT between the vantages), IPv4.
    #[serde(default)]
    pub nat: Vec<Nat>,
}

/// `addr` appears as `to` in this capture, as source and as destination.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Nat {
    pub addr: std::net::Ipv4Addr,
    pub to: std::net::Ipv4Addr,
}

/// Frames of one direction: source (and destination) address, optionally `ip:port`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Dir {
    pub from: String,
    #[serde(default)]
    pub to: Option<String>,
}

/// Drops heartbeats of a direction: by index among its heartbeats (`frames = [lo, hi]`,
/// `hi` excluded) or each with a probability.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Drop {
    #[serde(flatten)]
    pub dir: Dir,
    #[serde(default)]
    pub frames: Option<[u64; 2]>,
    #[serde(default)]
    pub probability: Option<f64>,
}

/// Sets the DSCP (or TTL) of a direction's frames from its `from_frame`th heartbeat on.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Remark {
    #[serde(flatten)]
    pub dir: Dir,
    pub from_frame: u64,
    pub value: u8,
}

/// Injects a TCP RST in a direction after its `after_frame`th heartbeat, as a firewall
/// forging it would send it: the session's addresses, a TTL of its own.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Forge {
    #[serde(flatten)]
    pub dir: Dir,
    pub after_frame: u64,
    pub ttl: u8,
}

/// What was done, per association direction (`source` -> `destination`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Truth {
    /// Per direction: `from` and `to` name the segment (`a`, `b`) in travel order.
    pub directions: Vec<DirTruth>,
    pub forged: Vec<ForgedTruth>,
    /// `b`'s clock minus `a`'s, ms.
    pub clock_offset_ms: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DirTruth {
    pub protocol: String,
    pub source: String,
    pub destination: String,
    pub from: String,
    pub to: String,
    /// Heartbeats kept at `from`, dropped at `to`: lost between them.
    pub lost: u64,
    /// Runs of consecutive lost heartbeats: first seq, last seq, count.
    pub lost_runs: Vec<(u32, u32, u64)>,
    /// Dropped at `from` (upstream) but kept at `to`: not loss.
    pub missing_upstream: u64,
    /// Heartbeats at both whose DSCP differs at `to`.
    pub remarked: u64,
    /// TTL changes done at either vantage (first seq, old TTL, new TTL).
    pub ttl_changes: Vec<(u32, u8, u8)>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ForgedTruth {
    pub at: String,
    pub source: String,
    pub destination: String,
    pub ttl: u8,
}

/// A direction as `source`, `destination` text.
type DirKey = (String, String);

/// One input frame as far as the rules care.
struct In {
    ts: u64,
    data: Vec<u8>,
    /// Direction key (src, dst) and whether it is a heartbeat, with its number.
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    proto: Protocol,
    heartbeat: Option<u32>,
    pkt: Option<Packet>,
}

fn matches(d: &Dir, src: (IpAddr, u16), dst: (IpAddr, u16)) -> bool {
    let ep = |s: &str, e: (IpAddr, u16)| match s.parse::<std::net::SocketAddr>() {
        Ok(sa) => sa.ip() == e.0 && sa.port() == e.1,
        Err(_) => s.parse::<IpAddr>().is_ok_and(|ip| ip == e.0),
    };
    ep(&d.from, src) && d.to.as_deref().is_none_or(|t| ep(t, dst))
}

fn ep_text((ip, port): (IpAddr, u16)) -> String {
    std::net::SocketAddr::new(ip, port).to_string()
}

/// Reads the input capture's frames with their heartbeat numbers.
fn read_input(path: &Path, ports: &BTreeMap<u32, Protocol>) -> Result<Vec<In>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut table = vec![0u8; PORT_SLOTS as usize];
    for (&slot, &p) in ports {
        if let Some(s) = table.get_mut(slot as usize) {
            *s = p as u8;
        }
    }
    let mut frames = Vec::new();
    let mut buf = Vec::new();
    let read = hbwatch_pcap::read_frames(
        Box::new(std::io::BufReader::new(file)),
        &mut |link, data, ts, _| {
            let Some(eth) = link.ethernet(data, &mut buf) else {
                return Ok(());
            };
            frames.push(classify(&table, eth, ts));
            Ok(())
        },
    )?;
    match read {
        Ok(end) => {
            if let Some(d) = end.damage {
                bail!("{}: {d}", path.display());
            }
        }
        Err(why) => bail!("{}: {why}", path.display()),
    }
    Ok(frames)
}

fn classify(table: &[u8], eth: &[u8], ts: u64) -> In {
    let mut fr = In {
        ts,
        data: eth.to_vec(),
        src: (IpAddr::from([0, 0, 0, 0]), 0),
        dst: (IpAddr::from([0, 0, 0, 0]), 0),
        proto: Protocol::None,
        heartbeat: None,
        pkt: None,
    };
    let f = SliceFrame(eth);
    let Ok(h) = parse::headers(&f) else { return fr };
    let mut pkt = Packet::default();
    if h.frag != 0 || parse::fill(&f, &h, &mut pkt).is_err() {
        return fr;
    }
    fr.src = (crate::convert::ip_of(pkt.family, &pkt.src), pkt.src_port);
    fr.dst = (crate::convert::ip_of(pkt.family, &pkt.dst), pkt.dst_port);
    let slot = |port| {
        table
            .get(port_slot(h.transport, port) as usize)
            .copied()
            .unwrap_or(0)
    };
    let p = match slot(h.dst_port) {
        0 => slot(h.src_port),
        p => p,
    };
    fr.proto = Protocol::from_u8(p);
    fr.heartbeat = match fr.proto {
        Protocol::None | Protocol::Cs1000Ipmg => None,
        // REGISTER and OPTIONS transactions (as `locate` matches them), by CSeq.
        Protocol::Sip => {
            let at = pkt.payload_off as usize;
            eth.get(at..at + pkt.payload_len as usize)
                .and_then(sipparse::parse)
                .and_then(|m| m.cseq)
                .filter(|c| c.method != sipparse::Method::Other)
                .map(|c| c.number)
        }
        Protocol::Sccp => decode(fr.proto, &f, &pkt).map(|_| pkt.tcp_seq),
        proto => decode(proto, &f, &pkt)
            .and_then(|m| m.as_heartbeat())
            .map(|h| h.seq),
    };
    fr.pkt = Some(pkt);
    fr
}

/// Sets the DSCP and/or TTL of an IP frame in place, IPv4 checksum redone.
fn patch(data: &mut [u8], dscp: Option<u8>, ttl: Option<u8>) {
    let Ok(h) = parse::headers(&SliceFrame(data)) else {
        return;
    };
    let l3 = h.l3_off as usize;
    if h.family == AF_INET {
        let ihl = ((data[l3] & 0x0f) as usize) * 4;
        if let Some(d) = dscp {
            data[l3 + 1] = (d << 2) | (data[l3 + 1] & 3);
        }
        if let Some(t) = ttl {
            data[l3 + 8] = t;
        }
        data[l3 + 10] = 0;
        data[l3 + 11] = 0;
        let c = checksum(&data[l3..l3 + ihl], 0);
        data[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    } else {
        if let Some(d) = dscp {
            let tc = ((data[l3] & 0x0f) << 4 | data[l3 + 1] >> 4) & 3 | d << 2;
            data[l3] = (data[l3] & 0xf0) | tc >> 4;
            data[l3 + 1] = (data[l3 + 1] & 0x0f) | tc << 4;
        }
        if let Some(t) = ttl {
            data[l3 + 7] = t;
        }
    }
}

/// Rewrites IPv4 address `from` to `to` (source and destination), checksums redone.
fn rewrite(data: &mut [u8], from: std::net::Ipv4Addr, to: std::net::Ipv4Addr) {
    let Ok(h) = parse::headers(&SliceFrame(data)) else {
        return;
    };
    if h.family != AF_INET || h.frag != 0 {
        return;
    }
    let l3 = h.l3_off as usize;
    let mut hit = false;
    for at in [l3 + 12, l3 + 16] {
        if data[at..at + 4] == from.octets() {
            data[at..at + 4].copy_from_slice(&to.octets());
            hit = true;
        }
    }
    if !hit {
        return;
    }
    patch(data, None, None);
    // The TCP/UDP checksum covers the addresses (pseudo-header).
    let (l4, end) = (
        h.l4_off as usize,
        h.payload_off as usize + h.payload_len as usize,
    );
    let at = l4 + if h.transport == IPPROTO_TCP { 16 } else { 6 };
    if h.transport != IPPROTO_TCP && data[at..at + 2] == [0, 0] {
        return;
    }
    data[at] = 0;
    data[at + 1] = 0;
    let mut pseudo = data[l3 + 12..l3 + 20].to_vec();
    pseudo.extend_from_slice(&[0, h.transport]);
    pseudo.extend_from_slice(&((end - l4) as u16).to_be_bytes());
    pseudo.extend_from_slice(&data[l4..end]);
    let c = match checksum(&pseudo, 0) {
        0 if h.transport != IPPROTO_TCP => 0xffff,
        c => c,
    };
    data[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// A RST after `template` (a TCP frame of the session) in the same direction.
fn forged_rst(template: &In, ttl: u8) -> Option<Vec<u8>> {
    let pkt = template.pkt?;
    if pkt.transport != IPPROTO_TCP {
        return None;
    }
    let h = parse::headers(&SliceFrame(&template.data)).ok()?;
    let ack = SliceFrame(&template.data).be32(h.l4_off as usize + 8)?;
    let mut spec = FrameSpec::udp(
        template.src.0,
        template.src.1,
        template.dst.0,
        template.dst.1,
        &[],
    );
    spec.src_mac.copy_from_slice(&template.data[6..12]);
    spec.dst_mac.copy_from_slice(&template.data[0..6]);
    if h.vlan != 0 {
        spec.vlans = vec![h.vlan];
    }
    spec.dscp = pkt.dscp;
    spec.ip_id = 0x4242;
    spec.tcp = Some(Tcp {
        seq: pkt.tcp_seq.wrapping_add(pkt.payload_len as u32),
        ack,
        flags: TCP_RST | TCP_ACK,
        window: 0,
    });
    let mut data = spec.build();
    patch(&mut data, None, Some(ttl));
    Some(data)
}

/// `hbwatch vantage`: reads the spec, derives, writes the truth (default
/// `<out_b>.truth.json`).
pub fn run(
    input: &Path,
    spec: &Path,
    ports: &BTreeMap<u32, Protocol>,
    out_a: &Path,
    out_b: &Path,
    truth: Option<std::path::PathBuf>,
) -> Result<()> {
    let text =
        std::fs::read_to_string(spec).with_context(|| format!("reading {}", spec.display()))?;
    let spec: Spec = toml::from_str(&text).with_context(|| format!("{}", spec.display()))?;
    let t = derive(input, &spec, ports, out_a, out_b)?;
    let path = truth.unwrap_or_else(|| hbgen::output::truth_path(out_b));
    std::fs::write(&path, serde_json::to_string_pretty(&t)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

/// What each vantage did with each input frame.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    Kept,
    Dropped,
    OutsideWindow,
}

/// Derives the two captures; returns the truth.
pub fn derive(
    input: &Path,
    spec: &Spec,
    ports: &BTreeMap<u32, Protocol>,
    out_a: &Path,
    out_b: &Path,
) -> Result<Truth> {
    let frames = read_input(input, ports)?;
    let Some(t0) = frames.iter().map(|f| f.ts).min() else {
        bail!("{}: no frames", input.display());
    };
    let rng = Rng::new(spec.seed);
    let mut fates: [Vec<Fate>; 2] = [Vec::new(), Vec::new()];
    let mut seen_dscp: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut ttl_done: BTreeMap<DirKey, Vec<(u32, u8, u8)>> = BTreeMap::new();
    let mut forged = Vec::new();
    for (vi, (rules, name, out)) in [(&spec.a, "a", out_a), (&spec.b, "b", out_b)]
        .into_iter()
        .enumerate()
    {
        let mut rng = rng.fork(name);
        // Heartbeats of each rule's direction so far.
        let count = |n: &mut Vec<u64>, i: usize| {
            let c = n[i];
            n[i] += 1;
            c
        };
        let mut n_drop = vec![0u64; rules.drop.len()];
        let mut n_dscp = vec![0u64; rules.dscp.len()];
        let mut n_ttl = vec![0u64; rules.ttl.len()];
        let mut n_rst = vec![0u64; rules.rst.len()];
        let mut outv = Vec::with_capacity(frames.len());
        for fr in &frames {
            let rel = (fr.ts - t0) as f64 / 1e9;
            let inside =
                rules.start_s.is_none_or(|s| rel >= s) && rules.end_s.is_none_or(|e| rel < e);
            let mut fate = if inside {
                Fate::Kept
            } else {
                Fate::OutsideWindow
            };
            let mut data = fr.data.clone();
            let (mut dscp, mut ttl) = (None, None);
            let mut inject = None;
            if fr.heartbeat.is_some() {
                for (i, d) in rules.drop.iter().enumerate() {
                    if matches(&d.dir, fr.src, fr.dst) {
                        let k = count(&mut n_drop, i);
                        let hit = d.frames.is_some_and(|[lo, hi]| (lo..hi).contains(&k))
                            || d.probability.is_some_and(|p| rng.chance(p));
                        if hit && fate == Fate::Kept {
                            fate = Fate::Dropped;
                        }
                    }
                }
                for (i, r) in rules.rst.iter().enumerate() {
                    if matches(&r.dir, fr.src, fr.dst) && count(&mut n_rst, i) == r.after_frame {
                        inject = forged_rst(fr, r.ttl);
                        if inject.is_some() && inside {
                            forged.push(ForgedTruth {
                                at: name.to_string(),
                                source: ep_text(fr.src),
                                destination: ep_text(fr.dst),
                                ttl: r.ttl,
                            });
                        }
                    }
                }
            }
            // Re-marking holds for every later frame of the direction, heartbeat or not:
            // from the rule's heartbeat on.
            let hb = fr.heartbeat.is_some() as u64;
            for (i, r) in rules.dscp.iter().enumerate() {
                if matches(&r.dir, fr.src, fr.dst) {
                    n_dscp[i] += hb;
                    if n_dscp[i] > r.from_frame {
                        dscp = Some(r.value);
                    }
                }
            }
            for (i, r) in rules.ttl.iter().enumerate() {
                if matches(&r.dir, fr.src, fr.dst) {
                    n_ttl[i] += hb;
                    if n_ttl[i] > r.from_frame {
                        ttl = Some(r.value);
                        let old = classify_ttl(&fr.data);
                        if hb == 1 && n_ttl[i] == r.from_frame + 1 && old != r.value && inside {
                            let key = (ep_text(fr.src), ep_text(fr.dst));
                            let seq = fr.heartbeat.unwrap_or(0);
                            ttl_done.entry(key).or_default().push((seq, old, r.value));
                        }
                    }
                }
            }
            if dscp.is_some() || ttl.is_some() {
                patch(&mut data, dscp, ttl);
            }
            for n in &rules.nat {
                rewrite(&mut data, n.addr, n.to);
            }
            seen_dscp[vi].push(classify_dscp(&data));
            fates[vi].push(fate);
            if fate != Fate::Kept {
                continue;
            }
            // The input is what `a` saw; `b` sees frames from `a`'s side later, the
            // others earlier.
            let shift = match (vi, spec.near_a.contains(&fr.src.0)) {
                (0, _) => 0.0,
                (_, true) => spec.delay_ms * 1e6,
                (_, false) => -spec.delay_ms * 1e6,
            };
            let mut ts = fr.ts as f64 + shift + rules.clock_offset_ms * 1e6;
            if rules.jitter_ms > 0.0 {
                ts += (rng.unit() * 2.0 - 1.0) * rules.jitter_ms * 1e6;
            }
            let ts = ts.max(0.0) as u64;
            outv.push(TimedFrame {
                ts_ns: ts,
                data,
                label: "frame",
            });
            if let Some(mut rst) = inject.take().filter(|_| inside) {
                for n in &rules.nat {
                    rewrite(&mut rst, n.addr, n.to);
                }
                outv.push(TimedFrame {
                    ts_ns: ts + 1_000_000,
                    data: rst,
                    label: "forged.rst",
                });
            }
        }
        outv.sort_by_key(|f| f.ts_ns);
        write_file(out, Format::PcapNg, outv)?;
    }
    // The truth, per direction in input order.
    let mut dirs: BTreeMap<(String, String), DirTruth> = BTreeMap::new();
    let mut runs: BTreeMap<DirKey, Option<(u32, u32, u64)>> = BTreeMap::new();
    for (i, fr) in frames.iter().enumerate() {
        let Some(seq) = fr.heartbeat else { continue };
        let key = (ep_text(fr.src), ep_text(fr.dst));
        let near = spec.near_a.contains(&fr.src.0);
        let (up, down) = if near { (0, 1) } else { (1, 0) };
        let d = dirs.entry(key.clone()).or_insert_with(|| DirTruth {
            protocol: fr.proto.name().to_string(),
            source: key.0.clone(),
            destination: key.1.clone(),
            from: ["a", "b"][up].to_string(),
            to: ["a", "b"][down].to_string(),
            ..DirTruth::default()
        });
        let run = runs.entry(key).or_default();
        let (fu, fd) = (fates[up][i], fates[down][i]);
        if fu == Fate::Kept && fd == Fate::Dropped {
            d.lost += 1;
            *run = Some(match *run {
                None => (seq, seq, 1),
                Some((first, _, n)) => (first, seq, n + 1),
            });
            continue;
        }
        if fu == Fate::Kept && fd == Fate::Kept {
            d.lost_runs.extend(run.take());
            if seen_dscp[up][i] != seen_dscp[down][i] {
                d.remarked += 1;
            }
        } else if fu == Fate::Dropped && fd == Fate::Kept {
            d.missing_upstream += 1;
        }
    }
    for (k, r) in runs {
        if let (Some(d), Some(r)) = (dirs.get_mut(&k), r) {
            d.lost_runs.push(r);
        }
    }
    for (k, changes) in ttl_done {
        if let Some(d) = dirs.get_mut(&k) {
            d.ttl_changes = changes;
        }
    }
    Ok(Truth {
        directions: dirs.into_values().collect(),
        forged,
        clock_offset_ms: spec.b.clock_offset_ms - spec.a.clock_offset_ms,
    })
}

fn classify_ttl(data: &[u8]) -> u8 {
    parse::headers(&SliceFrame(data))
        .ok()
        .and_then(|h| {
            let at = if h.family == AF_INET { 8 } else { 7 };
            data.get(h.l3_off as usize + at).copied()
        })
        .unwrap_or(0)
}

fn classify_dscp(data: &[u8]) -> u8 {
    parse::headers(&SliceFrame(data))
        .map(|h| h.dscp)
        .unwrap_or(0)
}
