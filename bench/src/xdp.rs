//! (a) Per-packet cost of the XDP program, by BPF_PROG_TEST_RUN: the kernel runs the
//! program `repeat` times on one frame and reports the average ns per run. The baseline
//! is `bench_pass` (XDP_PASS and nothing else) from the same object, run on the same
//! frame right before or after each case (the order alternates by trial).

use anyhow::{anyhow, ensure, Context as _, Result};
use aya::maps::{HashMap as BpfHashMap, MapData, RingBuf};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use hbwatch::datapath::{Datapath, XDP_PROGRAM};
use hbwatch::ports::{default_specs, port_table};
use hbwatch_common::flow::FlowState;
use hbwatch_common::key::FlowKey;
use hbwatch_common::proto::Role;
use serde_json::{json, Value};

use crate::frames::{self, ip, nth_v4};
use crate::stats::median;

pub const BASELINE_PROGRAM: &str = "bench_pass";
/// The TC hook's baseline (a classifier that does nothing), for the veth bench.
pub const TC_BASELINE_PROGRAM: &str = "bench_tc_pass";
/// Floor programs in the same object: one clock read, one ring-buffer record.
const CLOCK_PROGRAM: &str = "bench_clock";
const RECORD_PROGRAM: &str = "bench_record";
const LOOKUP_PROGRAM: &str = "bench_lookup";
const XDP_PASS: u32 = 2;
/// Two records per run for a million runs fit (72-byte records + 8 bytes of header):
/// the ring must never be full while measuring, a failed reserve is cheaper than a real one.
pub const BIG_RING: u32 = 256 << 20;
/// The kernel's flow table size (agent-ebpf `FLOWS`).
pub const FLOW_TABLE: u32 = 65536;

pub struct Options {
    pub trials: usize,
    pub repeat: u32,
    /// New associations per trial (each one BPF_PROG_TEST_RUN call with repeat = 1).
    pub new_flows: u32,
}

/// The datapath loaded with a big ring buffer, plus the baseline program.
pub struct Loaded {
    pub dp: Datapath,
    pub ring: RingBuf<MapData>,
}

impl Loaded {
    pub fn new(ring_bytes: Option<u32>) -> Result<Loaded> {
        let specs = default_specs();
        let params = hbwatch::tuning::params(&[]);
        let mut dp = Datapath::load_sized(&port_table(&specs), &params, ring_bytes, None)?;
        for name in [
            BASELINE_PROGRAM,
            CLOCK_PROGRAM,
            LOOKUP_PROGRAM,
            RECORD_PROGRAM,
        ] {
            let prog: &mut Xdp = dp
                .ebpf_mut()
                .program_mut(name)
                .ok_or_else(|| anyhow!("{name} missing from the eBPF object"))?
                .try_into()?;
            prog.load().with_context(|| format!("loading {name}"))?;
        }
        let ring = dp.take_ring()?;
        Ok(Loaded { dp, ring })
    }

    pub fn run(&self, name: &str, frame: &[u8], repeat: u32) -> Result<f64> {
        test_run(&self.dp, name, frame, repeat)
    }

    pub fn agent(&self, frame: &[u8], repeat: u32) -> Result<f64> {
        self.run(XDP_PROGRAM, frame, repeat)
    }

    /// Reads and drops every queued record; how many there were.
    pub fn drain(&mut self) -> u64 {
        let mut n = 0;
        while self.ring.next().is_some() {
            n += 1;
        }
        n
    }

    pub fn lost(&self) -> Result<u64> {
        Ok(self
            .dp
            .counters()?
            .get("ringbuf_lost")
            .copied()
            .unwrap_or(0))
    }

    fn flows(&mut self) -> Result<BpfHashMap<&mut MapData, FlowKey, FlowState>> {
        let map = self
            .dp
            .ebpf_mut()
            .map_mut("FLOWS")
            .ok_or_else(|| anyhow!("map FLOWS missing"))?;
        Ok(BpfHashMap::try_from(map)?)
    }

    /// Empties the flow table: every case starts from the same state in every trial.
    pub fn clear_flows(&mut self) -> Result<()> {
        let mut flows = self.flows()?;
        let keys: Vec<FlowKey> = flows.keys().collect::<Result<_, _>>()?;
        for k in keys {
            // Concurrent LRU eviction may have removed it already.
            let _ = flows.remove(&k);
        }
        Ok(())
    }

    /// A case's starting state: the flow table with its other associations, holding
    /// on or off, its priming frames run, and (holding) every association calm.
    fn set_up(&mut self, case: &Case) -> Result<()> {
        self.clear_flows()?;
        self.fill_flows(case.table)?;
        self.dp
            .hold_routine_beats(case.hold, &hbwatch::tuning::params(&[]))?;
        for f in &case.prime {
            self.agent(f, 1)?;
        }
        if case.hold {
            self.calm_flows()?;
        }
        Ok(())
    }

    /// Fills the flow table with `n` idle associations (none of the benchmark's own).
    /// Marks every association calm: its routine heartbeats are held from the next one
    /// (`FlowState::calm`; the bench's repeated frame cannot make an interval regular).
    pub fn calm_flows(&mut self) -> Result<()> {
        let mut flows = self.flows()?;
        let all: Vec<(FlowKey, FlowState)> = flows.iter().filter_map(|e| e.ok()).collect();
        for (k, mut st) in all {
            st.calm = u8::MAX;
            flows.insert(k, st, 0)?;
        }
        Ok(())
    }

    pub fn fill_flows(&mut self, n: u32) -> Result<()> {
        let mut flows = self.flows()?;
        for i in 0..n {
            let mut key = FlowKey {
                orig_port: 15000,
                resp_port: 15000,
                proto: hbwatch_common::proto::Protocol::Cs1000Rudp as u8,
                family: 4,
                transport: 17,
                ..FlowKey::default()
            };
            key.orig[..4].copy_from_slice(&[172, 16 + (i >> 16) as u8, (i >> 8) as u8, i as u8]);
            key.resp[..4].copy_from_slice(&[172, 31, 255, 254]);
            let st = FlowState {
                last_seq: 1,
                ..FlowState::default()
            };
            flows.insert(key, st, 0)?;
        }
        Ok(())
    }
}

/// Runs program `name` `repeat` times on `frame`: the kernel's average ns per run.
pub fn test_run(dp: &Datapath, name: &str, frame: &[u8], repeat: u32) -> Result<f64> {
    let prog: &Xdp = dp
        .ebpf()
        .program(name)
        .ok_or_else(|| anyhow!("program {name} missing"))?
        .try_into()?;
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.repeat = repeat;
    let res = prog
        .test_run(opts)
        .with_context(|| format!("BPF_PROG_TEST_RUN of {name}"))?;
    ensure!(
        res.return_value == XDP_PASS,
        "{name} did not return XDP_PASS"
    );
    Ok(res.duration.as_nanos() as f64)
}

/// A case measured with `repeat` runs of one frame.
struct Case {
    name: &'static str,
    /// The program run: the agent's, or a floor program from the same object.
    program: &'static str,
    group: &'static str,
    /// What the repeated frame exercises.
    what: &'static str,
    /// Frames run once first (association set-up).
    prime: Vec<Vec<u8>>,
    frame: Vec<u8>,
    /// Other associations in the table while measuring (scale).
    table: u32,
    target: Option<f64>,
    /// Records each run must queue (checked: the ring buffer never overflows).
    records: f64,
    /// Routine heartbeats are held (the live agent's way), and the association is calm.
    hold: bool,
    /// Runs per test run at most, each test run on a fresh set-up: a held repeated frame
    /// must stay within its first copy's 100 ms (beyond, it is a second answer, an
    /// anomaly, and nothing is held). Small enough for a slow host: 200,000 runs in one
    /// go overran the 100 ms there, and the case failed its own records check.
    repeat: Option<u32>,
}

fn cases() -> Vec<Case> {
    let (a4, b4) = (ip("10.0.0.1"), ip("10.0.0.2"));
    let (a6, b6) = (ip("fd00::1"), ip("fd00::2"));
    let data = vec![0x17u8; 100];
    let non_hb = |name, what, frame| Case {
        name,
        program: XDP_PROGRAM,
        group: "non-heartbeat",
        what,
        prime: vec![],
        frame,
        table: 0,
        target: Some(1.5),
        records: 0.0,
        hold: false,
        repeat: None,
    };
    let (cs, dev) = (ip("10.20.0.1"), ip("10.20.0.2"));
    let (pim, cvp) = (ip("10.30.0.1"), ip("10.30.0.2"));
    // A program that is not hbwatch, on the frame of `hb existing (rudp)`.
    let floor = |name, program, what, records| Case {
        name,
        program,
        group: "floor",
        what,
        prime: vec![],
        frame: frames::rudp(dev, cs, 100, Role::Response, &[]),
        table: 0,
        target: None,
        records,
        hold: false,
        repeat: None,
    };
    let rudp_existing = |table| Case {
        name: if table == 0 {
            "hb existing (rudp)"
        } else {
            "hb existing (rudp, full table)"
        },
        program: XDP_PROGRAM,
        group: "heartbeat",
        what: if table == 0 {
            "RUDP echo of seq 100 after request+echo of seq 100: a repeated echo of an \
             answered request (flow lookup, response path, DSCP check); a mirror duplicate \
             (one duplicate record) within 100 ms of its first copy, a second answer (one \
             heartbeat record) after"
        } else {
            "as `hb existing (rudp)` with 65535 other associations in the LRU flow table"
        },
        prime: vec![
            frames::rudp(cs, dev, 100, Role::Request, &[]),
            frames::rudp(dev, cs, 100, Role::Response, &[]),
        ],
        frame: frames::rudp(dev, cs, 100, Role::Response, &[]),
        table,
        target: Some(5.0),
        records: 1.0,
        hold: false,
        repeat: None,
    };
    vec![
        non_hb(
            "udp4",
            "UDP/IPv4 53 -> 33000, 100 bytes",
            frames::udp(a4, 53, b4, 33000, 100, &[]),
        ),
        non_hb(
            "tcp4",
            "TCP/IPv4 443 -> 40000 PSH+ACK, 100 bytes",
            frames::tcp(a4, 443, b4, 40000, 1, &data, &[]),
        ),
        non_hb(
            "udp6",
            "UDP/IPv6 53 -> 33000, 100 bytes",
            frames::udp(a6, 53, b6, 33000, 100, &[]),
        ),
        non_hb(
            "tcp6",
            "TCP/IPv6 443 -> 40000 PSH+ACK, 100 bytes",
            frames::tcp(a6, 443, b6, 40000, 1, &data, &[]),
        ),
        non_hb(
            "udp4 vlan",
            "UDP/IPv4 in 802.1Q",
            frames::udp(a4, 53, b4, 33000, 100, &[100]),
        ),
        non_hb(
            "tcp4 qinq",
            "TCP/IPv4 in QinQ (two tags)",
            frames::tcp(a4, 443, b4, 40000, 1, &data, &[10, 20]),
        ),
        rudp_existing(0),
        Case {
            name: "hb existing (ged125)",
            program: XDP_PROGRAM,
            group: "heartbeat",
            what: "GED-125 HEARTBEAT_CONF on TCP after REQ+CONF: a retransmitted answer \
                   (TCP sequence tracking, response path, one heartbeat record)",
            prime: vec![
                frames::ged125(pim, cvp, 41000, 1000, Role::Request, 7),
                frames::ged125(pim, cvp, 41000, 5000, Role::Response, 7),
            ],
            frame: frames::ged125(pim, cvp, 41000, 5000, Role::Response, 7),
            table: 0,
            target: Some(5.0),
            records: 1.0,
            hold: false,
            repeat: None,
        },
        Case {
            name: "hb existing (rudp, held)",
            program: XDP_PROGRAM,
            group: "heartbeat",
            what: "as `hb existing (rudp)`, the live agent's way: routine heartbeats held in \
                   the flow table (the association calm). Nobody takes them here, so every \
                   8th run sends the full hold up as one record; live, the agent takes them \
                   (agent/tests/held.rs: ~0.002 records per heartbeat). Test runs of \
                   50,000, each on a fresh set-up: all within the frame's first 100 ms",
            prime: vec![
                frames::rudp(cs, dev, 100, Role::Request, &[]),
                frames::rudp(dev, cs, 100, Role::Response, &[]),
            ],
            frame: frames::rudp(dev, cs, 100, Role::Response, &[]),
            table: 0,
            target: Some(5.0),
            records: 1.0 / 8.0,
            hold: true,
            repeat: Some(50_000),
        },
        // A test run repeats one frame: a copy, not a re-send (which would carry another
        // IP id). So the event case is a SPAN/mirror copy, reported as a duplicate record.
        Case {
            name: "event (mirror copy)",
            program: XDP_PROGRAM,
            group: "event",
            what: "RUDP request seen again with the same IP id (a SPAN/mirror copy): every \
                   run emits a duplicate record (counted per association)",
            prime: vec![frames::rudp(cs, dev, 200, Role::Request, &[])],
            frame: frames::rudp(cs, dev, 200, Role::Request, &[]),
            table: 0,
            target: None,
            records: 1.0,
            hold: false,
            repeat: None,
        },
        rudp_existing(FLOW_TABLE - 1),
        // What a heartbeat cannot avoid while it carries a timestamp to userspace: the
        // floor under the `hb existing` cases, measured the same way.
        floor(
            "floor: clock read",
            CLOCK_PROGRAM,
            "not hbwatch: an XDP program that reads bpf_ktime_get_ns once and passes \
             (every heartbeat is timestamped)",
            0.0,
        ),
        floor(
            "floor: clock read + flow lookup",
            LOOKUP_PROGRAM,
            "not hbwatch: an XDP program that reads the clock, looks a 40-byte flow key up \
             in the agent's LRU flow table (hashed, bucket walked, not found) and passes \
             (what a held heartbeat cannot avoid)",
            0.0,
        ),
        floor(
            "floor: ring record",
            RECORD_PROGRAM,
            "not hbwatch: an XDP program that reserves, fills and submits one 72-byte \
             ring-buffer record and passes (what a heartbeat that is not held sends)",
            1.0,
        ),
    ]
}

#[derive(Default)]
struct Samples {
    base: Vec<f64>,
    agent: Vec<f64>,
    ratio: Vec<f64>,
}

impl Samples {
    fn push(&mut self, base: f64, agent: f64) {
        self.base.push(base);
        self.agent.push(agent);
        self.ratio.push(agent / base);
    }

    fn json(&self) -> Value {
        json!({
            "ratio": median(&self.ratio),
            "ns": median(&self.agent),
            "baseline_ns": median(&self.base),
            "ratios": self.ratio,
        })
    }
}

/// Runs one case's frame through the agent for `secs` seconds: something steady for
/// `perf record -a` to sample (`hbwatch-bench --profile CASE`).
pub fn spin(name: &str, secs: f64) -> Result<()> {
    let mut l = Loaded::new(Some(BIG_RING))?;
    let case = cases()
        .into_iter()
        .find(|c| c.name == name)
        .ok_or_else(|| anyhow!("no case {name:?}"))?;
    let batch = case.repeat.unwrap_or(100_000);
    let start = std::time::Instant::now();
    let mut runs = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        // As `bench` sets each trial up: a held case's repeated frame is routine only
        // within its first copy's 100 ms, so it starts afresh every batch.
        if runs == 0 || case.hold {
            l.set_up(&case)?;
        }
        l.agent(&case.frame, batch)?;
        runs += u64::from(batch);
        l.drain();
    }
    eprintln!("bench: {runs} runs of {name}");
    Ok(())
}

/// At most one record in this many may come from a repeated frame leaving the
/// duplicate window (see `bench`): one or two per 100 ms of a run of ~250 ns each.
const ONE_TIME_REPORTS_PER: u64 = 10_000;

/// Runs every case `trials` times; JSON results.
pub fn bench(opts: &Options) -> Result<Value> {
    let mut l = Loaded::new(Some(BIG_RING))?;
    let cases = cases();
    let mut samples: Vec<Samples> = cases.iter().map(|_| Samples::default()).collect();
    let mut fresh = Samples::default();
    let mut churn = Samples::default();
    // Sources of new associations: distinct in every trial.
    let n = opts.new_flows;
    for trial in 0..opts.trials {
        for (case, s) in cases.iter().zip(samples.iter_mut()) {
            let batch = case.repeat.map_or(opts.repeat, |r| r.min(opts.repeat));
            let batches = opts.repeat.div_ceil(batch);
            let repeat = batch * batches;
            let mut records = 0;
            // The agent's runs, `batch` at a time, each on a fresh set-up and after a
            // warm-up (first-time reports and cold caches are not what is measured);
            // ns per run, and the records they queued in `records`.
            let mut agent_runs = |l: &mut Loaded| -> Result<f64> {
                let mut ns = 0.0;
                for _ in 0..batches {
                    l.set_up(case)?;
                    l.run(case.program, &case.frame, 1)?;
                    l.drain();
                    let lost = l.lost()?;
                    ns += l.run(case.program, &case.frame, batch)? * batch as f64;
                    records += l.drain();
                    ensure!(
                        l.lost()? == lost,
                        "{}: the ring buffer overflowed while measuring",
                        case.name
                    );
                }
                Ok(ns / repeat as f64)
            };
            let (base, agent) = if trial % 2 == 0 {
                let b = l.run(BASELINE_PROGRAM, &case.frame, repeat)?;
                (b, agent_runs(&mut l)?)
            } else {
                let a = agent_runs(&mut l)?;
                (l.run(BASELINE_PROGRAM, &case.frame, repeat)?, a)
            };
            // A repeated frame is a mirror copy only within 100 ms of its first copy
            // (flow::DUP_WINDOW_NS); a run of 10^6 takes longer, so every 100 ms the
            // frame comes as a new send once (a second answer: heartbeat.out_of_order
            // once; a request: a retry), a record or two beyond the per-run ones.
            let want = (case.records * repeat as f64) as u64;
            let once = want / ONE_TIME_REPORTS_PER + 2;
            ensure!(
                (want..=want + once).contains(&records),
                "{}: {records} records for {} runs, expected {} per run (+ at most {once})",
                case.name,
                repeat,
                case.records
            );
            s.push(base, agent);
        }
        // New associations: a repeated frame inserts only once, so one run per call on
        // distinct sources; the kernel's figure then includes its clock reads, and so does
        // the baseline's (both at repeat = 1).
        for (full, s) in [(false, &mut fresh), (true, &mut churn)] {
            l.clear_flows()?;
            if full {
                l.fill_flows(FLOW_TABLE)?;
            }
            l.drain();
            let lost = l.lost()?;
            let dst = ip("10.250.0.1");
            let (mut sb, mut sa) = (0.0, 0.0);
            for i in 0..n {
                let src = nth_v4(11, (trial as u32 * 2 + full as u32) * n + i);
                let f = frames::rudp(src, dst, 1, Role::Request, &[]);
                if i % 2 == 0 {
                    sb += l.run(BASELINE_PROGRAM, &f, 1)?;
                    sa += l.agent(&f, 1)?;
                } else {
                    sa += l.agent(&f, 1)?;
                    sb += l.run(BASELINE_PROGRAM, &f, 1)?;
                }
            }
            let records = l.drain();
            ensure!(l.lost()? == lost, "new associations: ring buffer overflow");
            ensure!(
                records == n as u64,
                "new associations: {records} records for {n} inserts (association.seen each)"
            );
            s.push(sb / n as f64, sa / n as f64);
        }
        eprintln!("bench: xdp trial {}/{} done", trial + 1, opts.trials);
    }
    l.clear_flows()?;
    let mut out: Vec<Value> = Vec::new();
    for (case, s) in cases.iter().zip(&samples) {
        let mut v = s.json();
        v["name"] = json!(case.name);
        v["group"] = json!(case.group);
        v["what"] = json!(case.what);
        v["target"] = json!(case.target);
        v["records_per_run"] = json!(case.records);
        v["repeat"] = json!(case.repeat.map_or(opts.repeat, |r| r.min(opts.repeat)));
        out.push(v);
    }
    for (name, what, s) in [
        (
            "new association",
            "RUDP request from a new source: LRU insert + association.seen record \
             (repeat = 1 per call, distinct sources, table emptied before each trial)",
            &fresh,
        ),
        (
            "new association (full table)",
            "as `new association` with the 65536-entry LRU table full: every insert evicts",
            &churn,
        ),
    ] {
        let mut v = s.json();
        v["name"] = json!(name);
        v["group"] = json!("new association");
        v["what"] = json!(what);
        v["target"] = Value::Null;
        v["records_per_run"] = json!(1);
        v["repeat"] = json!(1);
        v["calls"] = json!(n);
        out.push(v);
    }
    Ok(json!({
        "trials": opts.trials,
        "repeat": opts.repeat,
        "cases": out,
    }))
}
