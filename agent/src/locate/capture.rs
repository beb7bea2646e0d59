//! One vantage point's capture as heartbeats: every heartbeat frame with its
//! association, direction, identity (the heartbeat's own number), time, DSCP and IP
//! TTL, and the TCP FIN/RST frames of heartbeat sessions. Frames are parsed and decoded
//! by the datapath's own code (`hbwatch_common::parse`, `proto::decode`), read by
//! `pcap::read_frames` like `hbwatch analyze`.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use hbwatch_common::frame::{Frame as _, SliceFrame};
use hbwatch_common::parse::{self, Packet, AF_INET, IPPROTO_TCP, IPPROTO_UDP, TCP_FIN, TCP_RST};
use hbwatch_common::proto::{decode, port_slot, Protocol, Role, PORT_SLOTS};

use crate::convert::ip_of;
use crate::correlate::sip::parse as sip;

/// An association: protocol and both endpoints, the lower endpoint first (both
/// directions are one association).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AssocKey {
    pub proto: Protocol,
    pub transport: u8,
    pub lo: (IpAddr, u16),
    pub hi: (IpAddr, u16),
}

impl AssocKey {
    /// The endpoints of direction `dir` (0: `lo` -> `hi`), source first.
    pub fn ends(&self, dir: usize) -> ((IpAddr, u16), (IpAddr, u16)) {
        if dir == 0 {
            (self.lo, self.hi)
        } else {
            (self.hi, self.lo)
        }
    }
}

/// One heartbeat frame as a vantage point saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Beat {
    /// Capture time, ns since the epoch (this vantage's clock).
    pub ts: u64,
    /// The heartbeat's identity within its association and direction: role and number
    /// (RUDP seq, GED-125 InvokeID, MDS seqno, SCCP TCP sequence), or a hash of SIP
    /// Call-ID, CSeq, method and status.
    pub ident: u64,
    /// The number events show: the sequence, the SIP CSeq number.
    pub seq: u32,
    pub dscp: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
}

/// A TCP FIN or RST on a heartbeat session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    pub ts: u64,
    pub dir: usize,
    pub rst: bool,
    pub tcp_seq: u32,
    pub ttl: u8,
}

/// What one vantage saw of one association: beats per direction in time order.
#[derive(Debug, Default, Clone)]
pub struct Assoc {
    pub beats: [Vec<Beat>; 2],
    pub controls: Vec<Control>,
    /// UDP datagrams on the ports that are no heartbeat: on an MDS 5-tuple, the
    /// 4-byte "heartbeats" are another protocol's (a TFTP transfer), as the datapath rules.
    foreign: u64,
}

/// One vantage point's capture.
#[derive(Debug)]
pub struct Vantage {
    pub name: String,
    /// First and last frame time (any frame), this vantage's clock.
    pub span: Option<(u64, u64)>,
    pub frames: u64,
    pub assocs: BTreeMap<AssocKey, Assoc>,
    /// Why the capture was not read to its end (everything before was used).
    pub damage: Option<String>,
    /// IPMG beats skipped: they carry no number to match by.
    pub unnumbered: u64,
}

/// Reads `path` as vantage `name`; `Err` when it is not a capture at all.
pub fn read(
    name: &str,
    path: &Path,
    ports: &BTreeMap<u32, Protocol>,
) -> anyhow::Result<Result<Vantage, String>> {
    let mut table = vec![0u8; PORT_SLOTS as usize];
    for (&slot, &p) in ports {
        if let Some(s) = table.get_mut(slot as usize) {
            *s = p as u8;
        }
    }
    let mut v = Vantage {
        name: name.to_string(),
        span: None,
        frames: 0,
        assocs: BTreeMap::new(),
        damage: None,
        unnumbered: 0,
    };
    // A directory is one vantage's captures in name order (a flight recorder's files).
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut f: Vec<PathBuf> = match std::fs::read_dir(path) {
            Ok(d) => d
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
                .collect(),
            Err(e) => return Ok(Err(format!("cannot read {}: {e}", path.display()))),
        };
        f.sort();
        if f.is_empty() {
            return Ok(Err(format!(
                "{}: no .pcap or .pcapng file in it",
                path.display()
            )));
        }
        f
    } else {
        vec![path.to_path_buf()]
    };
    let mut buf = Vec::new();
    for file in &files {
        let input: Box<dyn Read + Send> = match File::open(file) {
            Ok(f) => Box::new(std::io::BufReader::with_capacity(1 << 20, f)),
            Err(e) => return Ok(Err(format!("cannot open {}: {e}", file.display()))),
        };
        let before = v.frames;
        let read = hbwatch_pcap::read_frames(input, &mut |link, data, ts, _| {
            v.frames += 1;
            v.span = Some(match v.span {
                None => (ts, ts),
                Some((a, b)) => (a.min(ts), b.max(ts)),
            });
            if let Some(eth) = link.ethernet(data, &mut buf) {
                frame(&mut v, &table, eth, ts);
            }
            Ok(())
        })?;
        match read {
            Ok(end) => {
                if let Some(what) = end.damage {
                    let n = v.frames - before;
                    v.damage = Some(format!(
                        "{}: frame {} {what}: the {n} frames before it were used",
                        file.display(),
                        n + 1,
                    ));
                }
            }
            Err(why) => return Ok(Err(format!("{}: {why}", file.display()))),
        }
    }
    // Only sessions with heartbeats are associations (FIN/RST alone are not).
    v.assocs.retain(|k, a| {
        let mds_foreign = k.proto == Protocol::Mds && a.foreign > 0;
        !mds_foreign && a.beats.iter().any(|b| !b.is_empty())
    });
    for (k, a) in v.assocs.iter_mut() {
        // Captures may hold frames slightly out of time order.
        a.beats.iter_mut().for_each(|b| b.sort_by_key(|x| x.ts));
        if k.proto == Protocol::Mds {
            a.beats.iter_mut().for_each(|b| mds_byte_order(b));
        }
    }
    Ok(Ok(v))
}

/// One Ethernet frame: a heartbeat, a FIN/RST on a heartbeat session, or nothing.
fn frame(v: &mut Vantage, table: &[u8], data: &[u8], ts: u64) {
    let f = SliceFrame(data);
    let Ok(h) = parse::headers(&f) else { return };
    if h.frag != 0 {
        return;
    }
    let slot = |port| table.get(port_slot(h.transport, port) as usize).copied();
    let proto = match slot(h.dst_port).filter(|&p| p != 0) {
        Some(p) => Protocol::from_u8(p),
        None => Protocol::from_u8(slot(h.src_port).unwrap_or(0)),
    };
    if proto == Protocol::None {
        return;
    }
    let mut pkt = Packet::default();
    if parse::fill(&f, &h, &mut pkt).is_err() {
        return;
    }
    // IPv4 TTL at byte 8 of the header, IPv6 hop limit at byte 7.
    let ttl_at = if h.family == AF_INET { 8 } else { 7 };
    let ttl = f.u8_at(h.l3_off as usize + ttl_at).unwrap_or(0);
    let src = (ip_of(pkt.family, &pkt.src), pkt.src_port);
    let dst = (ip_of(pkt.family, &pkt.dst), pkt.dst_port);
    let (key, dir) = if src <= dst {
        let k = AssocKey {
            proto,
            transport: pkt.transport,
            lo: src,
            hi: dst,
        };
        (k, 0)
    } else {
        let k = AssocKey {
            proto,
            transport: pkt.transport,
            lo: dst,
            hi: src,
        };
        (k, 1)
    };
    if pkt.transport == IPPROTO_TCP && pkt.tcp_flags & (TCP_RST | TCP_FIN) != 0 {
        v.assocs.entry(key).or_default().controls.push(Control {
            ts,
            dir,
            rst: pkt.tcp_flags & TCP_RST != 0,
            tcp_seq: pkt.tcp_seq,
            ttl,
        });
    }
    let Some((ident, seq)) = identity(proto, &f, &pkt) else {
        if proto == Protocol::Cs1000Ipmg && decode(proto, &f, &pkt).is_some() {
            v.unnumbered += 1;
        } else if pkt.transport == IPPROTO_UDP {
            v.assocs.entry(key).or_default().foreign += 1;
        }
        return;
    };
    v.assocs.entry(key).or_default().beats[dir].push(Beat {
        ts,
        ident,
        seq,
        dscp: pkt.dscp,
        ttl,
    });
}

/// The heartbeat's identity and shown number, if the frame carries a numbered one.
fn identity(proto: Protocol, f: &SliceFrame, pkt: &Packet) -> Option<(u64, u32)> {
    match proto {
        Protocol::Sip => sip_identity(f, pkt),
        // Unnumbered (the association counts them): nothing to match across captures.
        Protocol::Cs1000Ipmg | Protocol::None => None,
        _ => {
            let msg = decode(proto, f, pkt)?.as_heartbeat()?;
            // SCCP keepalives have no number: the TCP sequence of the segment is one.
            let seq = if proto == Protocol::Sccp {
                pkt.tcp_seq
            } else {
                msg.seq
            };
            let role = match msg.role {
                Role::Request => 1u64,
                Role::Response => 2,
                Role::OneWay => 3,
            };
            Some(((role << 32) | seq as u64, seq))
        }
    }
}

/// SIP: Call-ID, CSeq number and method, and the status of a response.
fn sip_identity(f: &SliceFrame, pkt: &Packet) -> Option<(u64, u32)> {
    if pkt.transport != IPPROTO_TCP && pkt.transport != IPPROTO_UDP {
        return None;
    }
    let start = pkt.payload_off as usize;
    let payload = f.0.get(start..start + pkt.payload_len as usize)?;
    let msg = sip::parse(payload)?;
    let (call_id, cseq) = (msg.call_id.as_ref()?, msg.cseq?);
    // The heartbeats: REGISTER and OPTIONS transactions, as the datapath passes up.
    if cseq.method == sip::Method::Other {
        return None;
    }
    let status = match msg.start {
        sip::StartLine::Request { .. } => 0,
        sip::StartLine::Response { status, .. } => status,
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (call_id, cseq.number, cseq.method.name(), status).hash(&mut h);
    Some((h.finish(), cseq.number))
}

/// MDS seqnos in the order the sender writes them (undocumented, PROTOCOLS.md §3: the
/// reading under which consecutive beats count up by one wins), for the events only.
fn mds_byte_order(beats: &mut [Beat]) {
    let steps = |swap: bool| {
        let n = |b: &Beat| if swap { b.seq.swap_bytes() } else { b.seq };
        beats
            .windows(2)
            .filter(|w| n(&w[1]).wrapping_sub(n(&w[0])) == 1)
            .count()
    };
    if steps(true) > steps(false) {
        beats.iter_mut().for_each(|b| b.seq = b.seq.swap_bytes());
    }
}

/// Beats of one association and direction by identity: the first index per identity
/// and a chain through the later ones (no allocation per identity: matching a million
/// heartbeats spent most of its time allocating).
pub struct Index {
    head: HashMap<u64, (u32, u32), BuildHasherDefault<IdentHasher>>,
    next: Vec<u32>,
}

const NONE: u32 = u32::MAX;

impl Index {
    pub fn new(beats: &[Beat]) -> Index {
        let mut head: HashMap<u64, (u32, u32), _> =
            HashMap::with_capacity_and_hasher(beats.len(), Default::default());
        let mut next = vec![NONE; beats.len()];
        let mut last: Vec<u32> = vec![NONE; beats.len()];
        for (i, b) in beats.iter().enumerate() {
            let e = head.entry(b.ident).or_insert((i as u32, 0));
            if e.1 > 0 {
                // Append after the chain's tail, kept at the head's slot of `last`.
                let tail = last[e.0 as usize];
                next[if tail == NONE { e.0 } else { tail } as usize] = i as u32;
                last[e.0 as usize] = i as u32;
            }
            e.1 += 1;
        }
        Index { head, next }
    }

    /// How many beats carry `ident`, and the first.
    pub fn first(&self, ident: u64) -> Option<(u32, u32)> {
        self.head.get(&ident).copied()
    }

    /// Every beat carrying `ident`, in capture order.
    pub fn all(&self, ident: u64) -> impl Iterator<Item = u32> + '_ {
        let mut at = self.head.get(&ident).map_or(NONE, |e| e.0);
        std::iter::from_fn(move || {
            (at != NONE).then(|| {
                let i = at;
                at = self.next[i as usize];
                i
            })
        })
    }

    pub fn contains(&self, ident: u64) -> bool {
        self.head.contains_key(&ident)
    }

    /// Identities and (first beat, count).
    pub fn iter(&self) -> impl Iterator<Item = (u64, (u32, u32))> + '_ {
        self.head.iter().map(|(k, v)| (*k, *v))
    }
}

/// Identities are sequence numbers (MDS ones big-endian readings of little-endian
/// counters: only their high bits move) or already hashes: a 64-bit finalizer (MurmurHash3's
/// fmix64) spreads every bit to the low ones that pick the bucket.
#[derive(Default)]
pub struct IdentHasher(u64);

impl Hasher for IdentHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        let mut x = v ^ (v >> 33);
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        self.0 = x ^ (x >> 33);
    }
}
