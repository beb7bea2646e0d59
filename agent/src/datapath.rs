//! The datapath: load the eBPF object, fill its tables (ports, per-protocol tuning),
//! attach it to interfaces (XDP or TC ingress, one agent per hook), hand out its maps.
//! The event loop that reads it is `live`; `check` and the benches use it directly.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{anyhow, bail, Context as _};
use aya::maps::{Array, MapData, PerCpuArray, ProgramArray, RingBuf};
use aya::programs::{tc, SchedClassifier, TcAttachType, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use hbwatch_common::counters::{Counter, COUNTER_COUNT};
use hbwatch_common::event::RawEvent;
use hbwatch_common::flow::FlowState;
use hbwatch_common::key::{self, FlowKey};
use hbwatch_common::params::{ProtoParams, P_HOLD_ROUTINE};
use hbwatch_common::proto::Protocol;
use tokio::io::unix::AsyncFd;
use tracing::{info, warn};

use crate::event::Attachment;

/// How to watch an interface's ingress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// XDP in native (driver) mode, falling back to generic (skb) mode with a warning.
    Auto,
    /// XDP in native (driver) mode only.
    Driver,
    /// XDP in generic (skb) mode.
    Skb,
    /// No XDP: the TC program at the clsact ingress hook, on the skb the stack has already
    /// built. On veth and other virtual interfaces it avoids the copy every XDP mode makes.
    Tc,
}

/// The loaded datapath: maps filled, program verified, attached to interfaces.
pub struct Datapath {
    ebpf: Ebpf,
    /// Held so the TC program's reader slots stay filled (see [`load_tc`]).
    _tc_readers: ProgramArray<MapData>,
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    pub attachments: Vec<Attachment>,
    pub ifnames: HashMap<u32, String>,
    /// Attached interfaces that are gone for now.
    lost: std::collections::BTreeSet<String>,
    /// The hooks this agent holds (see [`claim`]), by name.
    claims: HashMap<String, std::os::unix::net::UnixDatagram>,
    /// Routine heartbeats are held in the flow table (`hold_routine_beats`).
    hold: bool,
}

/// What [`Datapath::watch_interfaces`] saw.
#[derive(Debug, Clone)]
pub enum IfaceChange {
    Lost(String),
    Back(Attachment),
    AttachFailed(String, String),
}

pub const XDP_PROGRAM: &str = "hbwatch_xdp";

pub const TC_PROGRAM: &str = "hbwatch_tc";

/// The TC program's readers, by their slot in its `TC_READERS` map: it tail-calls one per
/// skb (linear: direct reads; paged: the load helper), so each is verified on its own.
pub const TC_READERS: [&str; 2] = ["hbwatch_tc_linear", "hbwatch_tc_paged"];

/// Bounds of `agent.max_associations` (kernel flow-table entries).
pub const MIN_FLOWS: u32 = 64;
pub const MAX_FLOWS: u32 = 1 << 24;

/// The flow table's size when the configuration does not say: one entry per 64 KiB of
/// RAM (an entry costs ~600-630 bytes of kernel memory, `bpftool map show`: FLOWS ~565
/// with its hold of routine heartbeats, ACKS 32-64; 1 % of RAM), 65,536 to 1,048,576.
pub fn default_max_associations() -> u32 {
    let ram = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024);
    (ram / 65_536).clamp(65_536, 1 << 20) as u32
}

/// Raises RLIMIT_MEMLOCK: kernels before 5.11 charge BPF maps against it.
fn raise_memlock() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        let old = aya::util::KernelVersion::current()
            .map(|v| v < aya::util::KernelVersion::new(5, 11, 0))
            .unwrap_or(true);
        if old {
            warn!("could not raise RLIMIT_MEMLOCK; map creation may fail on this kernel (< 5.11)");
        }
    }
}

/// Loads the TC program and its readers, and puts the readers in its `TC_READERS` slots
/// (they stay there while the returned map is held: the kernel empties a program array
/// when its last descriptor closes).
fn load_tc(ebpf: &mut Ebpf) -> anyhow::Result<ProgramArray<MapData>> {
    let mut slots = ProgramArray::try_from(
        ebpf.take_map("TC_READERS")
            .ok_or_else(|| anyhow!("map TC_READERS missing from the object"))?,
    )?;
    for (slot, name) in (0u32..).zip(TC_READERS) {
        let program = load_classifier(ebpf, name)?;
        slots
            .set(slot, program.fd()?, 0)
            .with_context(|| format!("putting {name} in TC_READERS"))?;
    }
    load_classifier(ebpf, TC_PROGRAM)?;
    Ok(slots)
}

/// Loads the classifier `name` through the verifier.
fn load_classifier<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut SchedClassifier> {
    let program: &mut SchedClassifier = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the object"))?
        .try_into()?;
    program
        .load()
        .map_err(|e| anyhow!("the kernel verifier rejected {name}: {e:#}"))?;
    Ok(program)
}

impl Datapath {
    /// Loads the embedded object, fills the port and parameter tables, and loads the
    /// XDP program through the verifier.
    pub fn load(
        ports: &BTreeMap<u32, Protocol>,
        params: &BTreeMap<Protocol, ProtoParams>,
    ) -> anyhow::Result<Datapath> {
        Datapath::load_sized(ports, params, None, None)
    }

    /// As [`Datapath::load`], with the EVENTS ring buffer resized to `ring_bytes` (a power
    /// of two times the page size: benchmarks queue a million records without a reader)
    /// and the flow table to `flows` entries (`agent.max_associations`).
    pub fn load_sized(
        ports: &BTreeMap<u32, Protocol>,
        params: &BTreeMap<Protocol, ProtoParams>,
        ring_bytes: Option<u32>,
        flows: Option<u32>,
    ) -> anyhow::Result<Datapath> {
        raise_memlock();
        let btf = aya::Btf::from_sys_fs().ok();
        let mut loader = EbpfLoader::new();
        loader.btf(btf.as_ref());
        if let Some(bytes) = ring_bytes {
            loader.map_max_entries("EVENTS", bytes);
        }
        // ACKS: two buckets of two words per association, a power of two (the kernel
        // masks): an association shares its bucket with two others (one of the three
        // unacknowledged: its hold goes up as a record when full) in 0.7 % of cases with
        // the table a quarter full, 9 % when full (key.rs tests the spread).
        let ack_buckets = (2 * flows.unwrap_or(DEFAULT_FLOWS)).next_power_of_two();
        if let Some(n) = flows {
            loader.map_max_entries("FLOWS", n);
        }
        loader.map_max_entries("ACKS", ack_buckets);
        loader.override_global("ACK_BUCKETS", &ack_buckets, true);
        let mut ebpf = loader.load(crate::EBPF_OBJECT).context(
            "loading the eBPF object failed (needs root or CAP_BPF+CAP_NET_ADMIN+CAP_PERFMON, \
             and a kernel >= 5.8 with ring buffers)",
        )?;
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(logger) => Some(logger),
            Err(e) => {
                warn!("eBPF logger not initialised: {e}");
                None
            }
        };
        set_ports(&mut ebpf, &BTreeMap::new(), ports)?;
        set_params(&mut ebpf, params, false)?;
        let program: &mut Xdp = ebpf
            .program_mut(XDP_PROGRAM)
            .ok_or_else(|| anyhow!("program {XDP_PROGRAM} missing from the object"))?
            .try_into()?;
        program
            .load()
            .map_err(|e| anyhow!("the kernel verifier rejected {XDP_PROGRAM}: {e:#}"))?;
        let tc_readers = load_tc(&mut ebpf)?;
        Ok(Datapath {
            ebpf,
            _tc_readers: tc_readers,
            logger,
            attachments: Vec::new(),
            ifnames: HashMap::new(),
            lost: Default::default(),
            claims: HashMap::new(),
            hold: false,
        })
    }

    /// Attaches to `iface`'s ingress: XDP (`Auto` tries driver mode, then generic mode)
    /// or TC. Refuses an interface whose XDP hook another program holds, or whose ingress
    /// another hbwatch watches.
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> anyhow::Result<Attachment> {
        let ifindex = ifindex(iface)?;
        if mode != AttachMode::Tc {
            if let Some(other) = attached_xdp(iface) {
                bail!(
                    "{iface} already has an XDP program attached ({other}): another hbwatch or XDP tool owns it; \
                     stop it, or remove it with `ip link set dev {iface} xdp off`"
                );
            }
        }
        self.claim(iface, TcAttachType::Ingress)?;
        let used = match mode {
            AttachMode::Tc => {
                self.attach_tc(iface, TcAttachType::Ingress)?;
                "tc"
            }
            _ => self.attach_xdp(iface, mode)?,
        };
        info!("{iface}: attached in {used} mode");
        let a = Attachment {
            name: iface.to_string(),
            mode: used,
        };
        self.attachments.retain(|old| old.name != iface);
        self.attachments.push(a.clone());
        self.ifnames.retain(|_, name| name != iface);
        self.ifnames.insert(ifindex, iface.to_string());
        self.lost.remove(iface);
        Ok(a)
    }

    /// Attaches the XDP program in `mode` (not `Tc`); the mode it got.
    fn attach_xdp(&mut self, iface: &str, mode: AttachMode) -> anyhow::Result<&'static str> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(XDP_PROGRAM)
            .ok_or_else(|| anyhow!("program {XDP_PROGRAM} missing"))?
            .try_into()?;
        Ok(match mode {
            AttachMode::Driver => {
                program
                    .attach(iface, XdpMode::Driver)
                    .with_context(|| format!("attaching XDP in driver mode to {iface}"))?;
                "driver"
            }
            AttachMode::Skb => {
                program
                    .attach(iface, XdpMode::Skb)
                    .with_context(|| format!("attaching XDP in skb mode to {iface}"))?;
                "skb"
            }
            AttachMode::Auto => match program.attach(iface, XdpMode::Driver) {
                Ok(_) => "driver",
                Err(e) => {
                    warn!("{iface}: driver-mode XDP unavailable ({e}); falling back to skb (generic) mode");
                    program.attach(iface, XdpMode::Skb).with_context(|| {
                        format!("attaching XDP to {iface} in driver and in skb mode both failed")
                    })?;
                    "skb"
                }
            },
            AttachMode::Tc => bail!("TC is not an XDP mode"),
        })
    }

    /// Interfaces that disappeared since the last call, and those that came back
    /// (attached again, XDP and, with `egress`, TC). Called every second.
    pub fn watch_interfaces(&mut self, mode: AttachMode, egress: bool) -> Vec<IfaceChange> {
        let mut changes = Vec::new();
        let names: Vec<String> = self.attachments.iter().map(|a| a.name.clone()).collect();
        for name in names {
            let known = self
                .ifnames
                .iter()
                .find(|(_, n)| **n == name)
                .map(|(i, _)| *i);
            match (ifindex(&name).ok(), self.lost.contains(&name)) {
                (None, false) => {
                    warn!("{name}: interface gone; will attach again when it is back");
                    self.lost.insert(name.clone());
                    changes.push(IfaceChange::Lost(name));
                }
                (Some(now), lost) if lost || known != Some(now) => {
                    let attached = self.attach(&name, mode).and_then(|a| {
                        if egress {
                            self.attach_egress(&name)?;
                        }
                        Ok(a)
                    });
                    match attached {
                        Ok(a) => changes.push(IfaceChange::Back(a)),
                        Err(e) => {
                            // Tried again next second; said once.
                            if !self.lost.contains(&name) || known.is_some() {
                                changes.push(IfaceChange::AttachFailed(
                                    name.clone(),
                                    format!("{e:#}"),
                                ));
                            }
                            self.lost.insert(name.clone());
                            self.ifnames.retain(|_, n| *n != name);
                        }
                    }
                }
                _ => {}
            }
        }
        changes
    }

    /// Attaches the TC program to `iface` egress: the host's own outgoing heartbeats.
    pub fn attach_egress(&mut self, iface: &str) -> anyhow::Result<()> {
        self.claim(iface, TcAttachType::Egress)?;
        self.attach_tc(iface, TcAttachType::Egress)
    }

    /// Attaches the TC program at `hook` of `iface`, which this agent has claimed.
    fn attach_tc(&mut self, iface: &str, hook: TcAttachType) -> anyhow::Result<()> {
        let dir = hook_name(hook);
        // Before 6.6 a TC program is a netlink filter, which outlives the process that
        // attached it: a filter of ours on a hook we hold is a killed agent's, and would
        // run on every packet too. TCX links (6.6+) go with their process, as XDP's do.
        if tc::qdisc_detach_program(iface, hook, TC_PROGRAM).is_ok() {
            warn!(
                "{iface}: removed a TC {dir} filter left by an hbwatch that did not exit cleanly"
            );
        }
        // An existing clsact qdisc is fine; any other failure shows up at attach.
        let _ = tc::qdisc_add_clsact(iface);
        let program: &mut SchedClassifier = self
            .ebpf
            .program_mut(TC_PROGRAM)
            .ok_or_else(|| anyhow!("program {TC_PROGRAM} missing"))?
            .try_into()?;
        program
            .attach(iface, hook)
            .with_context(|| format!("attaching the TC {dir} program to {iface}"))?;
        info!("{iface}: TC {dir} attached");
        Ok(())
    }

    /// Claims `iface`'s `hook` for this agent until it exits (see [`claim`]).
    fn claim(&mut self, iface: &str, hook: TcAttachType) -> anyhow::Result<()> {
        let dir = hook_name(hook);
        if let std::collections::hash_map::Entry::Vacant(slot) =
            self.claims.entry(claim_name(iface, hook))
        {
            let held = claim(slot.key()).with_context(|| format!("claiming {iface} {dir}"))?;
            slot.insert(held.ok_or_else(|| {
                anyhow!(
                    "another hbwatch already watches {iface} {dir}: stop it first (two agents would each see every packet)"
                )
            })?);
        }
        Ok(())
    }

    /// Kernel counters summed over CPUs.
    pub fn counters(&self) -> anyhow::Result<BTreeMap<&'static str, u64>> {
        let map: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(
            self.ebpf
                .map("COUNTERS")
                .ok_or_else(|| anyhow!("map COUNTERS missing"))?,
        )?;
        let mut out = BTreeMap::new();
        for c in Counter::ALL {
            let per_cpu = map.get(&(c as u32), 0)?;
            out.insert(c.name(), per_cpu.iter().sum());
        }
        debug_assert_eq!(out.len(), COUNTER_COUNT as usize);
        Ok(out)
    }

    /// The loaded object, for tests that drive the program with BPF_PROG_TEST_RUN.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    /// Instructions the verifier processed per program (kernels >= 5.16 report it; None
    /// before). Its limit is 1,000,000 per program, and older kernels prune less: the
    /// margin is what keeps the datapath loadable on 5.10.
    pub fn verifier_work(&self) -> Vec<(&'static str, Option<u32>)> {
        [XDP_PROGRAM, TC_PROGRAM]
            .into_iter()
            .chain(TC_READERS)
            .map(|name| {
                let count = self
                    .ebpf
                    .program(name)
                    .and_then(|p| p.info().ok())
                    .and_then(|i| i.verified_instruction_count());
                (name, count)
            })
            .collect()
    }

    /// Forwards kernel log records (aya-log) to tracing from a task; needs a tokio runtime.
    pub fn spawn_log_forwarder(&mut self) {
        let Some(logger) = self.logger.take() else {
            return;
        };
        match readable_fd(logger) {
            Ok(mut fd) => {
                tokio::spawn(async move {
                    while let Ok(mut guard) = fd.readable_mut().await {
                        guard.get_inner_mut().flush();
                        guard.clear_ready();
                    }
                });
            }
            Err(e) => warn!("eBPF logger not polled: {e}"),
        }
    }

    /// Entries the kernel flow table holds at most.
    pub fn flow_capacity(&self) -> u32 {
        self.ebpf
            .map("FLOWS")
            .and_then(|m| match m {
                aya::maps::Map::LruHashMap(d) => d.info().ok().map(|i| i.max_entries()),
                _ => None,
            })
            .unwrap_or(0)
    }

    pub fn take_ring(&mut self) -> anyhow::Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .ok_or_else(|| anyhow!("map EVENTS missing"))?;
        Ok(RingBuf::try_from(map)?)
    }
}

/// Writes the port table: slots of `new`, and zero (no protocol) for slots only in `old`.
fn set_ports(
    ebpf: &mut Ebpf,
    old: &BTreeMap<u32, Protocol>,
    new: &BTreeMap<u32, Protocol>,
) -> anyhow::Result<()> {
    let mut table: Array<&mut MapData, u8> = Array::try_from(
        ebpf.map_mut("PORTS")
            .ok_or_else(|| anyhow!("map PORTS missing"))?,
    )?;
    for slot in old.keys().filter(|s| !new.contains_key(s)) {
        table.set(*slot, Protocol::None as u8, 0)?;
    }
    for (slot, proto) in new {
        if old.get(slot) != Some(proto) {
            table.set(*slot, *proto as u8, 0)?;
        }
    }
    Ok(())
}

/// Writes the per-protocol rules. Every protocol gets a row: a missing one would be all
/// zeros (max_gap 0, expected DSCP 0), not the defaults.
fn set_params(
    ebpf: &mut Ebpf,
    params: &BTreeMap<Protocol, ProtoParams>,
    hold: bool,
) -> anyhow::Result<()> {
    let mut table: Array<&mut MapData, ProtoParams> = Array::try_from(
        ebpf.map_mut("PARAMS")
            .ok_or_else(|| anyhow!("map PARAMS missing"))?,
    )?;
    for proto in Protocol::ALL {
        let mut p = params
            .get(&proto)
            .copied()
            .unwrap_or(proto.default_params());
        if hold {
            p.flags |= P_HOLD_ROUTINE;
        }
        table.set(proto as u32, p, 0)?;
    }
    Ok(())
}

impl Datapath {
    /// New tunables while running (SIGHUP): the kernel's tables change in place, flow
    /// state stays.
    pub fn retune(
        &mut self,
        old_ports: &BTreeMap<u32, Protocol>,
        ports: &BTreeMap<u32, Protocol>,
        params: &BTreeMap<Protocol, ProtoParams>,
    ) -> anyhow::Result<()> {
        set_ports(&mut self.ebpf, old_ports, ports)?;
        set_params(&mut self.ebpf, params, self.hold)
    }

    /// From now on (`on`) routine heartbeats stay in the flow table for the agent to take
    /// (`flow_table`), instead of a ring-buffer record each (PROTOCOLS.md "Routine
    /// heartbeats stay in the kernel"); or (`!on`, as loaded) a record each.
    pub fn hold_routine_beats(
        &mut self,
        on: bool,
        params: &BTreeMap<Protocol, ProtoParams>,
    ) -> anyhow::Result<()> {
        self.hold = on;
        set_params(&mut self.ebpf, params, on)
    }

    /// Whether routine heartbeats are held in the flow table now.
    pub fn holds(&self) -> bool {
        self.hold
    }

    /// The flow table and its acknowledgements, for taking held beats; `taken` beats are
    /// counted in `metrics`.
    pub fn flow_table<'m>(
        &self,
        metrics: Option<&'m crate::metrics::Metrics>,
    ) -> anyhow::Result<FlowTable<'m>> {
        let flows = match self.ebpf.map("FLOWS") {
            Some(aya::maps::Map::LruHashMap(d)) | Some(aya::maps::Map::HashMap(d)) => own(d)?,
            _ => bail!("map FLOWS missing or not a hash map"),
        };
        let acks = match self.ebpf.map("ACKS") {
            Some(aya::maps::Map::Array(d)) => AckSlots::map(d)?,
            _ => bail!("map ACKS missing or not an array"),
        };
        Ok(FlowTable {
            flows: aya::maps::HashMap::try_from(aya::maps::Map::from_map_data(flows)?)?,
            acks,
            metrics,
        })
    }
}

/// The flow table's compiled size (`FLOWS` in the eBPF object).
const DEFAULT_FLOWS: u32 = 65_536;

/// A map of the object on a descriptor of its own (the object keeps its handle).
fn own(data: &MapData) -> anyhow::Result<MapData> {
    use std::os::fd::AsFd as _;
    let fd = data.fd().as_fd().try_clone_to_owned()?;
    Ok(MapData::from_fd(fd)?)
}

/// The kernel's `ACKS` array mapped into this process: an acknowledgement is one store,
/// not a system call (a map update allocated a hash-table element each time, and with
/// the flow-table reads it was most of the agent's CPU at 100,000 associations).
struct AckSlots {
    /// `buckets` of `key::AckBucket`'s two words.
    words: std::ptr::NonNull<AtomicU64>,
    buckets: usize,
    /// The map, kept open while mapped.
    _map: MapData,
}

impl AckSlots {
    fn map(data: &MapData) -> anyhow::Result<AckSlots> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let map = own(data)?;
        let info = map.info()?;
        let buckets = info.max_entries() as usize;
        anyhow::ensure!(
            info.value_size() as usize == size_of::<key::AckBucket>() && buckets.is_power_of_two(),
            "ACKS: {buckets} entries of {} bytes, not a power of two of buckets",
            info.value_size()
        );
        // SAFETY: a shared mapping of the map's own memory (created BPF_F_MMAPABLE), its
        // size exactly; unmapped in drop.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                buckets * size_of::<key::AckBucket>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if at == libc::MAP_FAILED {
            bail!("mapping ACKS: {}", std::io::Error::last_os_error());
        }
        Ok(AckSlots {
            words: std::ptr::NonNull::new(at.cast()).expect("mmap returned a mapping"),
            buckets,
            _map: map,
        })
    }

    /// The two words of the bucket of the key whose hash is `hash`.
    fn bucket(&self, hash: u64) -> &[AtomicU64; 2] {
        let i = hash as usize & (self.buckets - 1);
        // SAFETY: the index is masked below `buckets`, all mapped; AtomicU64 has u64's
        // layout, and the kernel reads each word whole (one 8-byte load).
        unsafe { &*self.words.as_ptr().add(2 * i).cast() }
    }
}

impl Drop for AckSlots {
    fn drop(&mut self) {
        let len = self.buckets * size_of::<key::AckBucket>();
        // SAFETY: the mapping made in `map`, not used after this.
        unsafe { libc::munmap(self.words.as_ptr().cast(), len) };
    }
}

/// The kernel's flow table, read for the routine heartbeats it holds
/// (`correlate::held`): one lookup per association when a decision needs its beats, one
/// store into `ACKS` when some were taken.
pub struct FlowTable<'m> {
    flows: aya::maps::HashMap<MapData, FlowKey, FlowState>,
    acks: AckSlots,
    metrics: Option<&'m crate::metrics::Metrics>,
}

impl FlowTable<'_> {
    /// The association's flow state, if the table has it.
    pub fn get(&self, key: &FlowKey) -> Option<FlowState> {
        self.flows.get(key, 0).ok()
    }
}

impl crate::correlate::held::Held for FlowTable<'_> {
    fn flow(&self, key: &FlowKey) -> Option<FlowState> {
        self.get(key)
    }
    fn ack(&self, key: &FlowKey, index: u16) {
        let hash = key.ack_hash();
        let bucket = self.acks.bucket(hash);
        let now = bucket.each_ref().map(|w| w.load(Ordering::Relaxed));
        bucket[key::bucket_word(&now, hash)].store(key::ack_word(hash, index), Ordering::Relaxed);
    }
    fn forget(&self, key: &FlowKey) {
        let hash = key.ack_hash();
        for word in self.acks.bucket(hash) {
            if key::acked_index(word.load(Ordering::Relaxed), hash).is_some() {
                word.store(0, Ordering::Relaxed);
            }
        }
    }
    fn taken(&self, raw: &RawEvent) {
        if let Some(m) = self.metrics {
            m.record(raw);
        }
    }
}

/// Registers an fd-owning object with tokio for readability.
pub(crate) fn readable_fd<T: std::os::fd::AsRawFd>(inner: T) -> anyhow::Result<AsyncFd<T>> {
    // SAFETY: ring buffers and the logger own their map fd for their whole lifetime
    // and always return the same fd.
    unsafe { AsyncFd::register_with_interest(inner, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow!("registering a ring buffer with tokio: {e}"))
}

pub fn ifindex(iface: &str) -> anyhow::Result<u32> {
    let name =
        std::ffi::CString::new(iface).map_err(|_| anyhow!("bad interface name {iface:?}"))?;
    // SAFETY: valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if idx == 0 {
        bail!("interface {iface:?} does not exist (see `ip link`)");
    }
    Ok(idx)
}

fn hook_name(hook: TcAttachType) -> &'static str {
    match hook {
        TcAttachType::Egress => "egress",
        _ => "ingress",
    }
}

fn claim_name(iface: &str, hook: TcAttachType) -> String {
    format!("hbwatch/{}/{iface}", hook_name(hook))
}

/// An interface's hook claimed by one agent: an abstract Unix socket named after both,
/// which the kernel releases when the process ends, however it ends (a netlink TC
/// filter does not go with its process, so it cannot tell a live agent from a dead one).
/// Abstract names are per network namespace, as interface names are. None: another
/// process holds it.
fn claim(name: &str) -> std::io::Result<Option<std::os::unix::net::UnixDatagram>> {
    use std::os::linux::net::SocketAddrExt as _;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    match std::os::unix::net::UnixDatagram::bind_addr(&addr) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether another process (another hbwatch) watches `iface`'s ingress.
pub fn ingress_claimed(iface: &str) -> bool {
    matches!(claim(&claim_name(iface, TcAttachType::Ingress)), Ok(None))
}

/// The XDP program attached to `iface` (`ip -d link` JSON), if any.
pub fn attached_xdp(iface: &str) -> Option<String> {
    let out = std::process::Command::new("ip")
        .args(["-j", "-d", "link", "show", "dev", iface])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let xdp = &v.get(0)?["xdp"];
    if xdp.is_null() {
        return None;
    }
    let mode = match xdp["mode"].as_u64() {
        Some(1) => "driver",
        Some(2) => "skb",
        Some(3) => "offload",
        _ => "multi",
    };
    Some(format!("program id {} in {mode} mode", xdp["prog"]["id"]))
}
