//! `hbwatch analyze`: pcap and pcapng files through the same per-packet code the
//! kernel runs (`hbwatch_common::engine`), on userspace collections, then the same
//! correlation as live. The capture's clock drives every timer.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::{IsTerminal as _, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hbwatch_common::counters::{Counter, COUNTER_COUNT};
use hbwatch_common::engine::{process, Env};
use hbwatch_common::event::RawEvent;
use hbwatch_common::flow::FlowState;
use hbwatch_common::frag::{FragInfo, FragKey};
use hbwatch_common::frame::{Frame, SliceFrame};
use hbwatch_common::key::FlowKey;
use hbwatch_common::params::ProtoParams;
use hbwatch_common::proto::{sip, Protocol, PORT_SLOTS, PROTOCOL_COUNT};
use pcap_parser::pcapng::Block;
use pcap_parser::{Linktype, PcapBlockOwned, PcapError};

use crate::convert::Converter;
use crate::correlate::{AssocTotals, CaptureClock, Config, Correlator, Ctx};
use crate::event::Event;
use crate::sink::Sink;

/// Associations the offline flow table holds at most (the kernel's LRU holds 65536;
/// offline memory is cheaper, and a capture is finite).
pub const MAX_FLOWS: usize = 1 << 20;

/// Datagrams whose first fragment the offline table remembers (the kernel's `FRAGS`).
const MAX_FRAG_DATAGRAMS: usize = 4096;

/// The kernel's maps as userspace collections.
pub struct OfflineEnv {
    ports: Vec<u8>,
    params: [ProtoParams; PROTOCOL_COUNT as usize],
    flows: HashMap<FlowKey, FlowState>,
    /// The kernel's `FRAGS` LRU: first fragments of SIP datagrams, oldest evicted first.
    frags: HashMap<FragKey, FragInfo>,
    frag_order: VecDeque<FragKey>,
    /// Records of the packet being processed, with SIP payloads.
    pub records: Vec<(RawEvent, Vec<u8>)>,
    pub counters: [u64; COUNTER_COUNT as usize],
}

impl OfflineEnv {
    pub fn new(ports: &BTreeMap<u32, Protocol>, params: &BTreeMap<Protocol, ProtoParams>) -> Self {
        let mut table = vec![0u8; PORT_SLOTS as usize];
        for (&slot, &p) in ports {
            if let Some(s) = table.get_mut(slot as usize) {
                *s = p as u8;
            }
        }
        let mut all = [Protocol::None.default_params(); PROTOCOL_COUNT as usize];
        for (i, p) in all.iter_mut().enumerate() {
            let proto = Protocol::from_u8(i as u8);
            *p = params
                .get(&proto)
                .copied()
                .unwrap_or(proto.default_params());
        }
        OfflineEnv {
            ports: table,
            params: all,
            flows: HashMap::new(),
            frags: HashMap::new(),
            frag_order: VecDeque::new(),
            records: Vec::new(),
            counters: [0; COUNTER_COUNT as usize],
        }
    }

    /// Counters by name, as `agent.stopped` reports the kernel's.
    pub fn counter_map(&self) -> BTreeMap<&'static str, u64> {
        Counter::ALL
            .iter()
            .map(|&c| (c.name(), self.counters[c as usize]))
            .collect()
    }
}

impl Env for OfflineEnv {
    fn port_proto(&self, slot: u32) -> u8 {
        self.ports.get(slot as usize).copied().unwrap_or(0)
    }
    fn params(&self, proto: Protocol) -> ProtoParams {
        self.params[proto as usize]
    }
    fn with_flow<R, U: FnOnce(&mut FlowState) -> R>(&mut self, key: &FlowKey, f: U) -> Option<R> {
        self.flows.get_mut(key).map(f)
    }
    fn insert_flow<U: FnOnce(&mut FlowState)>(&mut self, key: &FlowKey, init: U) -> bool {
        if self.flows.len() >= MAX_FLOWS && !self.flows.contains_key(key) {
            return false;
        }
        let mut st = FlowState::default();
        init(&mut st);
        self.flows.insert(*key, st);
        true
    }
    fn remove_flow(&mut self, key: &FlowKey) {
        self.flows.remove(key);
    }
    fn emit<U: FnOnce(&mut RawEvent)>(&mut self, fill: U) -> bool {
        let mut ev = RawEvent::default();
        fill(&mut ev);
        self.records.push((ev, Vec::new()));
        true
    }
    fn emit_payload<F: Frame, U: FnOnce(&mut RawEvent)>(
        &mut self,
        fill: U,
        f: &F,
        off: usize,
        len: usize,
    ) -> bool {
        let mut ev = RawEvent::default();
        fill(&mut ev);
        let mut buf = [0u8; sip::CAPTURE_LEN];
        let n = sip::copy_payload(f, off, len, &mut buf);
        ev.aux = n as u32;
        self.records.push((ev, buf[..n].to_vec()));
        true
    }
    fn count(&mut self, c: Counter) {
        self.counters[c as usize] += 1;
    }
    fn frag_get(&mut self, key: &FragKey) -> Option<FragInfo> {
        self.frags.get(key).copied()
    }
    fn frag_put(&mut self, key: &FragKey, info: &FragInfo) {
        if self.frags.insert(*key, *info).is_none() {
            self.frag_order.push_back(*key);
            if self.frag_order.len() > MAX_FRAG_DATAGRAMS {
                if let Some(old) = self.frag_order.pop_front() {
                    self.frags.remove(&old);
                }
            }
        }
    }
}

/// Link-layer framing of a capture, turned into the Ethernet frames the engine reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    Ethernet,
    /// Linux cooked capture v1 (`tcpdump -i any`).
    Sll,
    Sll2,
    /// Bare IPv4/IPv6.
    Raw,
}

impl Link {
    fn of(lt: Linktype) -> Option<Link> {
        match lt {
            Linktype::ETHERNET => Some(Link::Ethernet),
            Linktype::LINUX_SLL => Some(Link::Sll),
            Linktype::LINUX_SLL2 => Some(Link::Sll2),
            Linktype::RAW | Linktype::IPV4 | Linktype::IPV6 => Some(Link::Raw),
            _ => None,
        }
    }

    /// The frame as Ethernet: the original bytes, or a rebuilt 14-byte header.
    pub(crate) fn ethernet<'a>(self, data: &'a [u8], buf: &'a mut Vec<u8>) -> Option<&'a [u8]> {
        let (ethertype, rest) = match self {
            Link::Ethernet => return Some(data),
            Link::Sll => (data.get(14..16)?, data.get(16..)?),
            Link::Sll2 => (data.get(0..2)?, data.get(20..)?),
            Link::Raw => {
                let v = data.first()? >> 4;
                let t: &[u8] = match v {
                    4 => &[0x08, 0x00],
                    6 => &[0x86, 0xdd],
                    _ => return None,
                };
                (t, data)
            }
        };
        buf.clear();
        buf.extend_from_slice(&[0u8; 12]);
        buf.extend_from_slice(ethertype);
        buf.extend_from_slice(rest);
        Some(buf)
    }
}

/// Options of one `analyze` run.
#[derive(Debug, Clone)]
pub struct AnalyzeOptions {
    pub files: Vec<PathBuf>,
    pub ports: BTreeMap<u32, Protocol>,
    pub params: BTreeMap<Protocol, ProtoParams>,
    pub hostname: String,
    pub summary_period: Option<Duration>,
    /// Print the per-association table to stderr at the end.
    pub summary_table: bool,
    /// Show a progress bar (stderr is a terminal and the file is large).
    pub progress: bool,
    pub sip: crate::correlate::sip::SipConfig,
    /// Keep heartbeat times per association for a timeline (`--report`; bounded,
    /// `correlate::beats`): [`FileReport::beats`].
    pub timeline: bool,
}

/// What one file gave.
#[derive(Debug, Clone)]
pub struct FileReport {
    pub name: String,
    pub frames: u64,
    pub events: u64,
    pub counters: BTreeMap<&'static str, u64>,
    pub totals: Vec<AssocTotals>,
    /// Why the file was not read to its end, if it was not (already said on stderr).
    pub damage: Option<Damage>,
    /// First and last frame time (ns since the epoch), if any frame was read.
    pub span_ns: Option<(u64, u64)>,
    /// Warnings said on stderr about the capture (snaplen, link types).
    pub warnings: Vec<String>,
    /// Heartbeat times per association, with [`AnalyzeOptions::timeline`].
    pub beats: Option<crate::correlate::beats::BeatLog>,
}

/// A capture `analyze` could not read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// Not read at all: cannot be opened, or not a pcap/pcapng capture.
    Unreadable(String),
    /// Read up to a point (cut short, e.g. copied while still being written, or
    /// corrupt further on): what came before was analyzed and delivered.
    Cut(String),
}

/// `analyze`'s exit status when a capture was damaged but everything readable was
/// analyzed and delivered (0: every file read whole; 1: a file not read at all).
pub const EXIT_DAMAGED: i32 = 4;

/// The engine over one capture: packets in, events out.
pub struct Replay {
    pub env: OfflineEnv,
    pub correlator: Correlator,
    conv: Converter,
    now: u64,
    /// Earliest frame time (u64::MAX before the first frame).
    first_ns: u64,
    pub frames: u64,
    link_buf: Vec<u8>,
}

impl Replay {
    pub fn new(opts: &AnalyzeOptions, interface: String) -> Replay {
        let cfg = Config {
            params: opts.params.clone(),
            summary_period_ns: opts.summary_period.map(|d| d.as_nanos() as u64),
            sip: opts.sip.clone(),
        };
        let mut correlator = Correlator::new(cfg);
        if opts.timeline {
            correlator.record_beats();
        }
        Replay {
            env: OfflineEnv::new(&opts.ports, &opts.params),
            correlator,
            conv: Converter {
                hostname: opts.hostname.clone(),
                interfaces: HashMap::new(),
                fixed_interface: Some(interface),
            },
            now: 0,
            first_ns: u64::MAX,
            frames: 0,
            link_buf: Vec::new(),
        }
    }

    /// First and last frame time, if any frame came.
    pub fn span_ns(&self) -> Option<(u64, u64)> {
        (self.first_ns != u64::MAX).then_some((self.first_ns, self.now.max(self.first_ns)))
    }

    /// One Ethernet frame captured at `ts_ns` (ns since the epoch).
    pub fn frame(&mut self, data: &[u8], ts_ns: u64, out: &mut Vec<Event>) {
        self.frames += 1;
        self.first_ns = self.first_ns.min(ts_ns);
        // Packets may be slightly out of order in a capture; time never runs back.
        if ts_ns > self.now {
            self.now = ts_ns;
            let ctx = Ctx {
                conv: &self.conv,
                clock: &CaptureClock,
            };
            // Timers strictly before this packet: a heartbeat on its deadline is in time.
            self.correlator.advance(ts_ns - 1, &ctx, out);
        }
        process(&SliceFrame(data), &mut self.env, ts_ns, 0);
        let ctx = Ctx {
            conv: &self.conv,
            clock: &CaptureClock,
        };
        for (raw, payload) in self.env.records.drain(..) {
            self.correlator.on_record(&raw, &payload, &ctx, out);
        }
    }

    fn link_frame(&mut self, link: Link, data: &[u8], ts_ns: u64, out: &mut Vec<Event>) {
        let mut buf = std::mem::take(&mut self.link_buf);
        match link.ethernet(data, &mut buf) {
            Some(frame) => self.frame(frame, ts_ns, out),
            None => {
                self.frames += 1;
                self.env.count(Counter::Packets);
                self.env.count(Counter::Malformed);
            }
        }
        self.link_buf = buf;
    }

    /// End of the capture: the last summary; silences still open are not outages
    /// (the capture ended, not the heartbeats).
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        let ctx = Ctx {
            conv: &self.conv,
            clock: &CaptureClock,
        };
        self.correlator.finish(self.now, &ctx, out);
    }
}

/// Timestamp resolution and offset of one pcapng interface.
#[derive(Debug, Clone, Copy)]
struct IfTime {
    link: Option<Link>,
    units_per_sec: u64,
    offset_s: i64,
}

fn to_ns(secs: u64, frac: u64, units_per_sec: u64) -> u64 {
    let frac_ns = if units_per_sec == 1_000_000_000 {
        frac
    } else {
        (frac as u128 * 1_000_000_000 / units_per_sec.max(1) as u128) as u64
    };
    secs.saturating_mul(1_000_000_000).saturating_add(frac_ns)
}

/// Analyzes one capture (`-` = stdin), writing NDJSON events to `out`.
pub fn analyze_file(
    path: &Path,
    opts: &AnalyzeOptions,
    out: &mut dyn Sink,
) -> anyhow::Result<FileReport> {
    let stdin = path == Path::new("-");
    let name = if stdin {
        "stdin".to_string()
    } else {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string())
    };
    let (input, size): (Box<dyn Read + Send>, u64) = if stdin {
        (Box::new(std::io::stdin()), 0)
    } else {
        match File::open(path) {
            Ok(f) => {
                let size = f.metadata().map(|m| m.len()).unwrap_or(0);
                (Box::new(f), size)
            }
            Err(e) => {
                let why = format!("cannot open {}: {e}", path.display());
                return Ok(unreadable(name, why));
            }
        }
    };
    analyze_reader(input, size, path, name, opts, out)
}

/// The report of a file not read at all; the reason goes to stderr.
fn unreadable(name: String, why: String) -> FileReport {
    tracing::error!("{why}");
    FileReport {
        name,
        frames: 0,
        events: 0,
        counters: BTreeMap::new(),
        totals: Vec::new(),
        damage: Some(Damage::Unreadable(why)),
        span_ns: None,
        warnings: Vec::new(),
        beats: None,
    }
}

/// [`analyze_file`] on any reader (`size` for the progress bar, 0 if unknown; `path`
/// names the input in messages, `name` is the interface name in events). A capture
/// that is cut short or corrupt further on gives the events up to there and a report
/// saying so; only a failing output is an error.
pub fn analyze_reader(
    input: Box<dyn Read + Send>,
    size: u64,
    path: &Path,
    name: String,
    opts: &AnalyzeOptions,
    out: &mut dyn Sink,
) -> anyhow::Result<FileReport> {
    let bar = (opts.progress && size > 32 << 20 && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(size);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message(name.clone());
        bar
    });
    let mut replay = Replay::new(opts, name.clone());
    let mut events: Vec<Event> = Vec::with_capacity(64);
    // One buffer for every line: no String per event.
    let mut written = 0u64;
    let read = read_frames(input, &mut |link, data, ts, consumed| {
        replay.link_frame(link, data, ts, &mut events);
        for ev in events.drain(..) {
            out.send(&ev)?;
            written += 1;
        }
        if let Some(bar) = &bar {
            if replay.frames.is_multiple_of(4096) {
                bar.set_position(consumed);
            }
        }
        Ok(())
    })?;
    let end = match read {
        Ok(end) => end,
        Err(why) => return Ok(unreadable(name, format!("{}: {why}", path.display()))),
    };
    let (snap, unsupported_link, damage) = (end.snaplen, end.unsupported_link, end.damage);
    let damage = damage.map(|what| {
        let why = format!(
            "{}: frame {} {what}: the {} frames before it were analyzed and their events delivered",
            path.display(),
            replay.frames + 1,
            replay.frames
        );
        tracing::warn!("{why}");
        Damage::Cut(why)
    });
    let mut warnings = Vec::new();
    if let Some(warning) = snap.warning() {
        tracing::warn!("{}: {warning}", path.display());
        warnings.push(warning);
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if unsupported_link {
        const SKIPPED: &str = "some interfaces have a link type other than Ethernet, Linux cooked or raw IP; their packets were skipped";
        tracing::warn!("{}: {SKIPPED}", path.display());
        warnings.push(SKIPPED.to_string());
    }
    replay.finish(&mut events);
    for ev in events.drain(..) {
        out.send(&ev)?;
        written += 1;
    }
    out.flush()?;
    let mut counters = replay.env.counter_map();
    counters.extend(replay.correlator.named_counters());
    Ok(FileReport {
        name,
        frames: replay.frames,
        events: written,
        counters,
        totals: replay.correlator.totals(),
        damage,
        span_ns: replay.span_ns(),
        warnings,
        beats: replay.correlator.take_beats(),
    })
}

/// How reading a capture ended ([`read_frames`]).
#[derive(Debug, Default)]
pub(crate) struct ReadEnd {
    /// Why the file was not read to its end ("is cut off: ..."), if it was not.
    pub damage: Option<String>,
    pub snaplen: Snaplen,
    /// Some interface had a link type other than Ethernet, Linux cooked or raw IP.
    pub unsupported_link: bool,
}

/// [`read_frames`]' callback: link type, bytes, time (ns), bytes of the file consumed.
pub(crate) type OnFrame<'a> = dyn FnMut(Link, &[u8], u64, u64) -> anyhow::Result<()> + 'a;

/// Reads every frame of a pcap or pcapng capture in file order, calling
/// `on_frame(link, bytes, ts_ns, bytes_consumed)` for each frame of a supported link
/// type; an error of `on_frame` stops reading and is returned. `Ok(Err(why))`: not a
/// capture at all. Damage further on ends the reading with what came before delivered.
pub(crate) fn read_frames(
    input: Box<dyn Read + Send>,
    on_frame: &mut OnFrame<'_>,
) -> anyhow::Result<Result<ReadEnd, String>> {
    let mut reader = match pcap_parser::create_reader(1 << 20, input) {
        Ok(r) => r,
        Err(e) => return Ok(Err(format!("not a pcap or pcapng capture ({e:?})"))),
    };
    let mut end = ReadEnd::default();
    let mut legacy: Option<(Option<Link>, u64)> = None;
    let mut interfaces: Vec<IfTime> = Vec::new();
    let mut consumed = 0u64;
    // Simple packet blocks have no timestamp: they share the latest one.
    let mut last_ts = 0u64;
    loop {
        match reader.next() {
            Ok((offset, block)) => {
                match block {
                    PcapBlockOwned::LegacyHeader(h) => {
                        let units = if h.is_nanosecond_precision() {
                            1_000_000_000
                        } else {
                            1_000_000
                        };
                        legacy = Some((Link::of(h.network), units));
                        end.unsupported_link |= Link::of(h.network).is_none();
                    }
                    PcapBlockOwned::Legacy(b) => {
                        let (link, units) = legacy.unwrap_or((Some(Link::Ethernet), 1_000_000));
                        end.snaplen.frame(b.caplen, b.origlen);
                        if let Some(link) = link {
                            let ts = to_ns(b.ts_sec as u64, b.ts_usec as u64, units);
                            last_ts = last_ts.max(ts);
                            on_frame(link, b.data, ts, consumed)?;
                        }
                    }
                    PcapBlockOwned::NG(Block::SectionHeader(_)) => interfaces.clear(),
                    PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                        let link = Link::of(idb.linktype);
                        end.unsupported_link |= link.is_none();
                        interfaces.push(IfTime {
                            link,
                            units_per_sec: idb.ts_resolution().unwrap_or(1_000_000),
                            offset_s: idb.ts_offset(),
                        });
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                        end.snaplen.frame(epb.caplen, epb.origlen);
                        if let Some(it) = interfaces.get(epb.if_id as usize).copied() {
                            if let Some(link) = it.link {
                                let raw = ((epb.ts_high as u64) << 32) | epb.ts_low as u64;
                                let secs = (raw / it.units_per_sec) as i64 + it.offset_s;
                                let ts = to_ns(
                                    secs.max(0) as u64,
                                    raw % it.units_per_sec,
                                    it.units_per_sec,
                                );
                                let caplen = (epb.caplen as usize).min(epb.data.len());
                                last_ts = last_ts.max(ts);
                                on_frame(link, &epb.data[..caplen], ts, consumed)?;
                            }
                        }
                    }
                    PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                        if let Some(link) = interfaces.first().and_then(|i| i.link) {
                            on_frame(link, spb.data, last_ts, consumed)?;
                        }
                    }
                    PcapBlockOwned::NG(_) => {}
                }
                reader.consume(offset);
                consumed += offset as u64;
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => {
                if reader.reader_exhausted() {
                    end.damage = Some(CUT_SHORT.to_string());
                    break;
                }
                if let Err(e) = reader.refill() {
                    end.damage = Some(format!("could not be read ({e:?})"));
                    break;
                }
            }
            Err(PcapError::UnexpectedEof) => {
                end.damage = Some(CUT_SHORT.to_string());
                break;
            }
            Err(e) => {
                end.damage = Some(format!(
                    "is corrupt ({e:?}); the rest of the file was skipped"
                ));
                break;
            }
        }
    }
    Ok(Ok(end))
}

/// The last record announces more bytes than the file holds.
const CUT_SHORT: &str = "is cut off: the file ends in the middle of it (cut short, e.g. copied while still being written)";

/// How much of each packet a capture kept: a small snaplen cuts payloads.
#[derive(Debug, Default)]
pub(crate) struct Snaplen {
    /// Frames captured shorter than they were on the wire.
    cut: u64,
    /// The longest of them: the snaplen in effect (headers may declare another, e.g.
    /// `editcap -s` keeps the original header).
    kept: u32,
}

impl Snaplen {
    fn frame(&mut self, caplen: u32, origlen: u32) {
        if caplen < origlen {
            self.cut += 1;
            self.kept = self.kept.max(caplen);
        }
    }

    /// What to tell the user, if packets were cut.
    fn warning(&self) -> Option<String> {
        (self.cut > 0).then(|| {
            let frames = match self.cut {
                1 => "1 frame was".to_string(),
                n => format!("{n} frames were"),
            };
            format!(
                "{frames} cut to the capture's snaplen ({} bytes): payloads are truncated (SIP headers and heartbeat fields past the cut are not seen)",
                self.kept
            )
        })
    }
}

/// Analyzes every file in turn; each starts from empty state (files are separate
/// captures unless said otherwise).
///
/// A damaged or unreadable file does not stop the run: its report says so.
pub fn analyze(opts: &AnalyzeOptions, out: &mut dyn Sink) -> anyhow::Result<Vec<FileReport>> {
    let mut reports = Vec::new();
    for f in &opts.files {
        let r = analyze_file(f, opts, out)?;
        let unread = matches!(r.damage, Some(Damage::Unreadable(_)));
        if opts.summary_table && !unread {
            eprint!("{}", summary_table(&r));
        }
        reports.push(r);
    }
    Ok(reports)
}

/// `analyze`'s exit status for these reports, with a last line on stderr when not 0:
/// 1 if a file could not be read at all, [`EXIT_DAMAGED`] if one was cut short or
/// corrupt (everything readable was analyzed and delivered either way).
pub fn exit_status(reports: &[FileReport]) -> i32 {
    let count = |unreadable: bool| {
        reports
            .iter()
            .filter(|r| matches!(r.damage, Some(Damage::Unreadable(_))) == unreadable)
            .filter(|r| r.damage.is_some())
            .count()
    };
    let (unreadable, cut) = (count(true), count(false));
    if unreadable > 0 {
        eprintln!(
            "hbwatch: error: {unreadable} of {} captures could not be read (see above)",
            reports.len()
        );
        return 1;
    }
    if cut > 0 {
        eprintln!(
            "hbwatch: {cut} of {} captures were cut short or corrupt (see above): everything before the damage was analyzed; exit status {EXIT_DAMAGED}",
            reports.len()
        );
        return EXIT_DAMAGED;
    }
    0
}

/// The `--summary` table: one line per association.
pub fn summary_table(r: &FileReport) -> String {
    let count = |name: &str| r.counters.get(name).copied().unwrap_or(0);
    let mut s = format!(
        "{}: {} frames, {} heartbeats, {} events",
        r.name,
        r.frames,
        count("heartbeats"),
        r.events
    );
    match count("duplicates") + count("sip_duplicates") {
        0 => s.push('\n'),
        n => s.push_str(&format!(", {n} duplicates ignored (mirror copies)\n")),
    }
    s.push_str(&format!(
        "{:<58} {:>10} {:>7} {:>6} {:>9} {:>9} {:>9} {:>8} {:>7} {:>9}  {}\n",
        "association",
        "heartbeats",
        "lost",
        "dups",
        "rtt_min",
        "rtt_avg",
        "rtt_max",
        "outages",
        "folded",
        "interval",
        "diagnosis"
    ));
    for t in &r.totals {
        let c = t.summary_cells();
        s.push_str(&format!(
            "{:<58} {:>10} {:>7} {:>6} {:>9} {:>9} {:>9} {:>8} {:>7} {:>9}  {}\n",
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10]
        ));
    }
    s
}
