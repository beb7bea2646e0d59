//! `hbwatch analyze`: pcap and pcapng files through the same per-packet code the
//! kernel runs (`hbwatch_common::engine`), on userspace collections, then the same
//! correlation as live. The capture's clock drives every timer.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::{IsTerminal as _, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hbwatch_common::counters::{Counter, COUNTER_COUNT};
use hbwatch_common::engine::{likely_key, process, Env};
use hbwatch_common::event::RawEvent;
use hbwatch_common::flow::FlowState;
use hbwatch_common::frag::{FragInfo, FragKey};
use hbwatch_common::frame::{Frame, SliceFrame};
use hbwatch_common::key::FlowKey;
use hbwatch_common::params::{ProtoParams, P_HOLD_ROUTINE};
use hbwatch_common::proto::{sip, Protocol, PORT_SLOTS, PROTOCOL_COUNT};

use crate::convert::Converter;
use crate::correlate::{AssocTotals, CaptureClock, Config, Correlator, Ctx};
use crate::event::Event;
use crate::sink::Sink;
use crate::table::{Table, WithKey};
use hbwatch_pcap::{read_frames, Link};

/// Associations the offline flow table holds at most (the kernel's LRU holds 65536;
/// offline memory is cheaper, and a capture is finite).
pub const MAX_FLOWS: usize = 1 << 20;

/// Datagrams whose first fragment the offline table remembers (the kernel's `FRAGS`).
const MAX_FRAG_DATAGRAMS: usize = 4096;

/// A flow's state without its hold (`FlowState::held` and the fields after it), which
/// stays all zeros unless routine beats are held: what `analyze` keeps per association by
/// default. 184 of the 456 bytes: a million associations take 260 MiB less, and a lookup
/// touches 3 cache lines instead of 8 (`analyze` at scale waits on those misses).
#[derive(Clone, Copy)]
struct FlowCore([u64; CORE_WORDS]);

const CORE_WORDS: usize = std::mem::offset_of!(FlowState, held) / 8;
const _: () = assert!(std::mem::offset_of!(FlowState, held) % 8 == 0);

impl FlowCore {
    fn of(st: &FlowState) -> FlowCore {
        let mut core = FlowCore([0; CORE_WORDS]);
        core.store(st);
        core
    }

    fn store(&mut self, st: &FlowState) {
        // SAFETY: FlowState is repr(C) integers; its first CORE_WORDS words are the
        // fields before the hold, and `self.0` is exactly that long.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (st as *const FlowState).cast::<u64>(),
                self.0.as_mut_ptr(),
                CORE_WORDS,
            )
        }
    }

    /// Into `st`, whose hold (left as it is) is all zeros.
    fn load(&self, st: &mut FlowState) {
        // SAFETY: as in `store`; any bit pattern is a valid FlowState.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.0.as_ptr(),
                (st as *mut FlowState).cast::<u64>(),
                CORE_WORDS,
            )
        }
    }
}

/// A flow's key as the offline table keeps it: a [`FlowKey`] whose padding byte is typed
/// as always zero, which leaves `Option` a niche: no tag word beside each of a million
/// flows (8 bytes each). The engine's keys are all made by `FlowKey::of`, padding 0.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct StoredKey {
    bytes: [u8; 39],
    pad: ZeroPad,
}

#[repr(u8)]
#[derive(Clone, Copy)]
enum ZeroPad {
    Zero = 0,
}

const _: () = assert!(
    std::mem::size_of::<StoredKey>() == std::mem::size_of::<FlowKey>()
        && std::mem::offset_of!(FlowKey, resp) == 16
        && std::mem::offset_of!(FlowKey, orig_port) == 32
        && std::mem::offset_of!(FlowKey, resp_port) == 34
        && std::mem::offset_of!(FlowKey, proto) == 36
        && std::mem::offset_of!(FlowKey, transport) == 38
        && std::mem::align_of::<StoredKey>() >= std::mem::align_of::<FlowKey>()
        && std::mem::offset_of!(FlowKey, _pad) == 39
);

impl StoredKey {
    fn of(key: &FlowKey) -> StoredKey {
        debug_assert_eq!(key._pad, 0, "FlowKey::of makes every key");
        // In memory's order (`get` reads it back as a FlowKey); the padding byte is typed.
        let mut bytes = [0; 39];
        bytes.copy_from_slice(&key.bytes()[..39]);
        StoredKey {
            bytes,
            pad: ZeroPad::Zero,
        }
    }

    fn get(&self) -> &FlowKey {
        // SAFETY: the same size and layout, aligned at least as FlowKey; any bytes are
        // a FlowKey (integers only).
        unsafe { &*(self as *const StoredKey).cast::<FlowKey>() }
    }
}

/// A flow in the offline table by default: 160 bytes, `Option` and all.
#[derive(Clone, Copy)]
struct FlowEntry {
    key: StoredKey,
    core: FlowCore,
}

impl crate::table::Keyed for FlowEntry {
    fn key(&self) -> &FlowKey {
        self.key.get()
    }
}

const _: () = assert!(std::mem::size_of::<Option<FlowEntry>>() == 40 + CORE_WORDS * 8);

/// The offline flow table: whole states when routine beats are held (tests and
/// benchmarks of holding), else only their [`FlowCore`].
enum Flows {
    Full(Table<WithKey<FlowState>>),
    Core {
        table: Table<FlowEntry>,
        /// Where the engine works on a flow: its hold is never written, so stays zero.
        work: Box<FlowState>,
    },
}

impl Flows {
    fn len(&self) -> usize {
        match self {
            Flows::Full(t) => t.len(),
            Flows::Core { table, .. } => table.len(),
        }
    }

    fn contains_key(&self, key: &FlowKey) -> bool {
        match self {
            Flows::Full(t) => t.contains_key(key),
            Flows::Core { table, .. } => table.contains_key(key),
        }
    }

    fn insert(&mut self, key: FlowKey, st: &FlowState) {
        match self {
            Flows::Full(t) => {
                t.insert(WithKey { key, value: *st });
            }
            Flows::Core { table, .. } => {
                table.insert(FlowEntry {
                    key: StoredKey::of(&key),
                    core: FlowCore::of(st),
                });
            }
        }
    }

    fn remove(&mut self, key: &FlowKey) {
        match self {
            Flows::Full(t) => {
                t.remove(key);
            }
            Flows::Core { table, .. } => {
                table.remove(key);
            }
        }
    }

    fn with<R>(&mut self, key: &FlowKey, f: impl FnOnce(&mut FlowState) -> R) -> Option<R> {
        match self {
            Flows::Full(t) => t.get_mut(key).map(|e| f(&mut e.value)),
            Flows::Core { table, work } => {
                let core = &mut table.get_mut(key)?.core;
                core.load(work);
                let r = f(work);
                debug_assert!(
                    (work.held_next, work.held_sent, work.calm) == (0, 0, 0),
                    "a flow's hold was written without P_HOLD_ROUTINE"
                );
                core.store(work);
                Some(r)
            }
        }
    }

    /// The three steps of warming the cache for a flow (`Table::prefetch_index`,
    /// `prefetch_value`, `expect`), `h` its key's `table::hash32`.
    fn prefetch_index(&self, h: u32) {
        match self {
            Flows::Full(t) => t.prefetch_index(h),
            Flows::Core { table, .. } => table.prefetch_index(h),
        }
    }

    fn prefetch_value(&self, h: u32) -> Option<u32> {
        match self {
            Flows::Full(t) => t.prefetch_value(h),
            Flows::Core { table, .. } => table.prefetch_value(h),
        }
    }

    fn expect(&self, key: &FlowKey, place: u32) {
        match self {
            Flows::Full(t) => t.expect(key, place),
            Flows::Core { table, .. } => table.expect(key, place),
        }
    }

    /// The whole state, hold and all, where kept (only when holding).
    fn full(&mut self) -> Option<&mut Table<WithKey<FlowState>>> {
        match self {
            Flows::Full(t) => Some(t),
            Flows::Core { .. } => None,
        }
    }
}

/// The kernel's maps as userspace collections.
pub struct OfflineEnv {
    ports: Vec<u8>,
    params: [ProtoParams; PROTOCOL_COUNT as usize],
    /// In a cell so the correlator can take held beats (`correlate::held::Held`) while
    /// the engine is not running; the engine reaches it through `get_mut`, at no cost.
    flows: std::cell::RefCell<Flows>,
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
        let hold = all.iter().any(|p| p.flags & P_HOLD_ROUTINE != 0);
        let flows = if hold {
            Flows::Full(Table::default())
        } else {
            Flows::Core {
                table: Table::default(),
                work: Box::default(),
            }
        };
        OfflineEnv {
            ports: table,
            params: all,
            flows: std::cell::RefCell::new(flows),
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
        self.flows.get_mut().with(key, f)
    }
    fn insert_flow<U: FnOnce(&mut FlowState)>(&mut self, key: &FlowKey, init: U) -> bool {
        let flows = self.flows.get_mut();
        if flows.len() >= MAX_FLOWS && !flows.contains_key(key) {
            return false;
        }
        let mut st = FlowState::default();
        init(&mut st);
        flows.insert(*key, &st);
        true
    }
    fn remove_flow(&mut self, key: &FlowKey) {
        self.flows.get_mut().remove(key);
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
    fn emit_held<U: FnOnce(&mut RawEvent)>(&mut self, key: &FlowKey, fill: U) -> bool {
        // Only a flow that holds beats sends them up, and only whole states hold.
        let flow = self.flows.get_mut().full().and_then(|t| t.get_mut(key));
        let Some(WithKey { value: st, .. }) = flow else {
            return false;
        };
        fill(&mut st.held.hdr);
        let b = st.take_held();
        // The beats as the ring buffer carries them: after the header.
        // SAFETY: HeldBeat is plain integers without padding; the slice covers the array.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                b.beats.as_ptr() as *const u8,
                std::mem::size_of_val(&b.beats),
            )
        };
        self.records.push((b.hdr, bytes.to_vec()));
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

/// The offline flow table as the live correlator reads the kernel's, when routine beats
/// are held offline too (`AnalyzeOptions::hold`: the tests that prove holding changes
/// no event).
impl crate::correlate::held::Held for OfflineEnv {
    fn flow(&self, key: &FlowKey) -> Option<FlowState> {
        let mut flows = self.flows.borrow_mut();
        flows.full()?.get(key).map(|e| e.value)
    }
    fn ack(&self, key: &FlowKey, index: u16) {
        // The kernel reads `ACKS` when a hold fills; the result is the same.
        let mut flows = self.flows.borrow_mut();
        if let Some(e) = flows.full().and_then(|t| t.get_mut(key)) {
            e.value.acked(index);
        }
    }
    fn forget(&self, _key: &FlowKey) {}
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
    /// Hold routine heartbeats in the flow table as the live datapath does, instead of a
    /// record each (tests and benchmarks: the events are the same).
    pub hold: bool,
    /// Flows known from which a file is read ahead ([`READ_AHEAD_FROM`]; 0: from the
    /// start, for the tests that show reading ahead changes no event).
    pub read_ahead_from: usize,
    /// Per-association totals in the reports ([`FileReport::totals`], for `--summary` and
    /// `--report`): ~250 bytes per association at the end, on top of the tables.
    pub totals: bool,
}

impl AnalyzeOptions {
    /// No files yet, the protocols' default rules, no summary events, table, progress or
    /// timeline, with totals: what a test or the demo starts from.
    pub fn new(ports: BTreeMap<u32, Protocol>, hostname: &str) -> AnalyzeOptions {
        AnalyzeOptions {
            files: Vec::new(),
            ports,
            params: Default::default(),
            hostname: hostname.into(),
            summary_period: None,
            summary_table: false,
            progress: false,
            sip: Default::default(),
            timeline: false,
            hold: false,
            read_ahead_from: READ_AHEAD_FROM,
            totals: true,
        }
    }
}

/// What one file gave.
#[derive(Debug, Clone)]
pub struct FileReport {
    pub name: String,
    pub frames: u64,
    pub events: u64,
    pub counters: BTreeMap<&'static str, u64>,
    /// Per association, when [`AnalyzeOptions::totals`] asked for them.
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
    /// Datapath records carrying heartbeats of known associations the correlator read:
    /// one `Heartbeat` record each, or held ones in a `Beats` record.
    pub beat_records: u64,
    /// Routine heartbeats are held in the flow table (`AnalyzeOptions::hold`).
    hold: bool,
    link_buf: Vec<u8>,
    /// Frames read but not processed yet, oldest first ([`READ_AHEAD`]), and the
    /// buffers of frames processed, for the next ones.
    ahead: VecDeque<Ahead>,
    spare: Vec<Vec<u8>>,
    /// [`Self::read_frame`] reads [`READ_AHEAD`] frames ahead (since the flows reached
    /// `read_ahead_from`).
    reading_ahead: bool,
    /// Reading from a file: read ahead once this many flows are known
    /// ([`AnalyzeOptions::read_ahead_from`]); never from a stream (a pipe from tcpdump
    /// must not wait for 8 more frames to report).
    read_ahead_from: Option<usize>,
}

/// Frames `analyze` reads ahead of the one it processes: the index buckets of their
/// likely association are asked into the cache on reading, its values [`WARM_AT`]
/// frames later (the bucket is there by then and says where they are), and both are
/// there by processing: at a million associations each frame's lookups otherwise wait
/// on memory (`cargo xtask bench`, scale).
const READ_AHEAD: usize = 8;
/// Flows from which their tables outgrow a server's caches (~350 bytes each with
/// their associations, against an L3 of tens of MiB): below, the values are in the
/// cache anyway, and reading ahead only costs (half as much time again per frame at 1,000
/// associations, `cargo xtask bench`, scale).
pub const READ_AHEAD_FROM: usize = 1 << 16;
const WARM_AT: usize = READ_AHEAD / 2;

/// A frame read ahead: its link, bytes, time, and the likely key of its flow and
/// association (none if it is on no heartbeat port) with the key's hash, then where
/// the flow and the association are in their tables.
struct Ahead {
    link: Link,
    data: Vec<u8>,
    ts_ns: u64,
    likely: Option<(FlowKey, u32)>,
    places: (Option<u32>, Option<u32>),
}

impl Replay {
    pub fn new(opts: &AnalyzeOptions, interface: String) -> Replay {
        let cfg = Config {
            params: opts.params.clone(),
            summary_period_ns: opts.summary_period.map(|d| d.as_nanos() as u64),
            sip: opts.sip.clone(),
            counts: opts.totals,
            totals: opts.totals,
        };
        let mut correlator = Correlator::new(cfg);
        if opts.timeline {
            correlator.record_beats();
        }
        let mut params = opts.params.clone();
        if opts.hold {
            for proto in Protocol::ALL {
                params.entry(proto).or_insert(proto.default_params()).flags |= P_HOLD_ROUTINE;
            }
        }
        Replay {
            env: OfflineEnv::new(&opts.ports, &params),
            correlator,
            conv: Converter {
                hostname: opts.hostname.clone(),
                interfaces: HashMap::new(),
                fixed_interface: Some(interface),
            },
            now: 0,
            first_ns: u64::MAX,
            frames: 0,
            beat_records: 0,
            hold: opts.hold,
            link_buf: Vec::new(),
            ahead: VecDeque::with_capacity(READ_AHEAD + 1),
            spare: Vec::new(),
            reading_ahead: false,
            read_ahead_from: None,
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
            // Timers strictly before this packet: a heartbeat on its deadline is in time.
            let ctx = replay_ctx(&self.conv, &self.env, self.hold);
            self.correlator.advance(ts_ns - 1, &ctx, out);
        }
        process(&SliceFrame(data), &mut self.env, ts_ns, 0);
        let mut records = std::mem::take(&mut self.env.records);
        self.beat_records += records
            .iter()
            .filter(|(r, _)| r.carries_heartbeats())
            .count() as u64;
        let ctx = replay_ctx(&self.conv, &self.env, self.hold);
        for (raw, payload) in records.drain(..) {
            self.correlator.on_record(&raw, &payload, &ctx, out);
        }
        self.env.records = records;
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

    /// A frame of the capture, processed [`READ_AHEAD`] frames later (or by
    /// [`Self::drain`]): its association's state is asked into the cache now.
    fn read_frame(&mut self, link: Link, data: &[u8], ts_ns: u64, out: &mut Vec<Event>) {
        if !self.reading_ahead {
            let flows = self.env.flows.get_mut().len();
            if self.read_ahead_from.is_none_or(|from| flows < from) {
                return self.link_frame(link, data, ts_ns, out);
            }
            self.reading_ahead = true;
        }
        let likely = (link == Link::Ethernet)
            .then(|| likely_key(&SliceFrame(data), &self.env))
            .flatten()
            .map(|key| {
                let h = crate::table::hash32(&key);
                self.env.flows.get_mut().prefetch_index(h);
                self.correlator.prefetch_index(h);
                (key, h)
            });
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(data);
        self.ahead.push_back(Ahead {
            link,
            data: buf,
            ts_ns,
            likely,
            places: (None, None),
        });
        let n = self.ahead.len();
        if n > WARM_AT {
            let a = &mut self.ahead[n - 1 - WARM_AT];
            if let Some((_, h)) = a.likely {
                a.places = (
                    self.env.flows.get_mut().prefetch_value(h),
                    self.correlator.prefetch_value(h),
                );
            }
        }
        if n > READ_AHEAD {
            self.process_oldest(out);
        }
    }

    /// Processes the frames read ahead.
    fn drain(&mut self, out: &mut Vec<Event>) {
        while !self.ahead.is_empty() {
            self.process_oldest(out);
        }
    }

    fn process_oldest(&mut self, out: &mut Vec<Event>) {
        if let Some(a) = self.ahead.pop_front() {
            if let Some((key, _)) = &a.likely {
                if let Some(p) = a.places.0 {
                    self.env.flows.get_mut().expect(key, p);
                }
                if let Some(p) = a.places.1 {
                    self.correlator.expect(key, p);
                }
            }
            self.link_frame(a.link, &a.data, a.ts_ns, out);
            self.spare.push(a.data);
        }
    }

    /// End of the capture: the last summary; silences still open are not outages
    /// (the capture ended, not the heartbeats).
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        let ctx = replay_ctx(&self.conv, &self.env, self.hold);
        self.correlator.finish(self.now, &ctx, out);
    }
}

/// Sends the events made so far, counting them in `written`.
fn deliver(events: &mut Vec<Event>, out: &mut dyn Sink, written: &mut u64) -> anyhow::Result<()> {
    for ev in events.drain(..) {
        out.send(&ev)?;
        *written += 1;
    }
    Ok(())
}

/// The correlator's context offline: capture time, and the flow table's held beats when
/// `hold`.
fn replay_ctx<'a>(conv: &'a Converter, env: &'a OfflineEnv, hold: bool) -> Ctx<'a> {
    Ctx {
        conv,
        clock: &CaptureClock,
        held: hold.then_some(env as &dyn crate::correlate::held::Held),
    }
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
    if size > 0 {
        replay.read_ahead_from = Some(opts.read_ahead_from);
    }
    let mut events: Vec<Event> = Vec::with_capacity(64);
    // One buffer for every line: no String per event.
    let mut written = 0u64;
    let read = read_frames(input, &mut |link, data, ts, consumed| {
        replay.read_frame(link, data, ts, &mut events);
        deliver(&mut events, out, &mut written)?;
        if let Some(bar) = &bar {
            if replay.frames.is_multiple_of(4096) {
                bar.set_position(consumed);
            }
        }
        Ok(())
    })?;
    replay.drain(&mut events);
    deliver(&mut events, out, &mut written)?;
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
    deliver(&mut events, out, &mut written)?;
    out.flush()?;
    let mut counters = replay.env.counter_map();
    counters.extend(replay.correlator.named_counters());
    Ok(FileReport {
        name,
        frames: replay.frames,
        events: written,
        counters,
        totals: if opts.totals {
            replay.correlator.totals()
        } else {
            Vec::new()
        },
        damage,
        span_ns: replay.span_ns(),
        warnings,
        beats: replay.correlator.take_beats(),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_key_reads_back_as_the_key_it_stores() {
        let key = FlowKey {
            orig: std::array::from_fn(|i| i as u8 + 1),
            resp: std::array::from_fn(|i| 0xf0 - i as u8),
            orig_port: 0x1234,
            resp_port: 15000,
            proto: Protocol::Cs1000Rudp as u8,
            family: 6,
            transport: 17,
            _pad: 0,
        };
        assert_eq!(*StoredKey::of(&key).get(), key);
        let mut t = Flows::Core {
            table: Table::default(),
            work: Box::default(),
        };
        let st = FlowState {
            last_seq: 7,
            ..Default::default()
        };
        t.insert(key, &st);
        assert!(t.contains_key(&key));
        assert_eq!(t.with(&key, |s| s.last_seq), Some(7));
        assert!(!t.contains_key(&FlowKey {
            resp_port: 15001,
            ..key
        }));
    }
}
