//! (b) Event pipeline: records from the kernel ring buffer through the live agent's own
//! drain (`live::drain`: correlation, then `Event::to_line` via `live::write_events`) to
//! NDJSON on /dev/null, against a consumer that only counts the same records.
//!
//! Records come from BPF_PROG_TEST_RUN of the real program on an RUDP request re-sent
//! with the same seq: each run queues a `heartbeat.retry` record (one NDJSON line) and a
//! heartbeat record (timer input, no line). The re-sends alternate between two IP ids,
//! one run per call, as real re-sends differ: a repeated identical frame is a mirror
//! copy, counted once and never a retry. Two measurements:
//! - drain rate: the ring is filled first (no reader), then one consumer empties it; the
//!   two consumers alternate over trials on identical fills;
//! - flood: the production-size ring, a producer thread running the program as fast as
//!   it can while the NDJSON consumer drains; every record is either read or counted
//!   in `ringbuf_lost` (checked exactly).

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::{ensure, Result};
use hbwatch::clock::WallClock;
use hbwatch::convert::Converter;
use hbwatch::correlate::{Config, Correlator};
use hbwatch::datapath::XDP_PROGRAM;
use hbwatch::event::Event;
use hbwatch::live;
use hbwatch::sink::stdout::LineSink;
use hbwatch_common::proto::Role;
use serde_json::{json, Value};

use crate::frames::{self, ip};
use crate::stats::{median, Span};
use crate::xdp::{Loaded, BIG_RING};

pub struct Options {
    pub trials: usize,
    /// Program runs per fill (two records each).
    pub runs: u32,
    /// Program runs in the flood.
    pub flood_runs: u32,
}

/// Records per run of the frame used here.
const RECORDS_PER_RUN: u64 = 2;

struct Ndjson {
    correlator: Correlator,
    conv: Converter,
    clock: WallClock,
    out: LineSink<BufWriter<File>>,
    batch: Vec<Event>,
    lines: u64,
}

impl Ndjson {
    fn new() -> Result<Ndjson> {
        Ok(Ndjson {
            correlator: Correlator::new(Config {
                params: hbwatch::tuning::params(&[]),
                summary_period_ns: Some(60_000_000_000),
                ..Config::default()
            }),
            conv: Converter {
                hostname: "bench".into(),
                interfaces: HashMap::new(),
                fixed_interface: None,
            },
            clock: WallClock::new(),
            out: LineSink::json(BufWriter::new(File::create("/dev/null")?)),
            batch: Vec::with_capacity(256),
            lines: 0,
        })
    }

    /// One drain call of the live loop; (records read, ring empty).
    fn step(&mut self, ring: &mut aya::maps::RingBuf<aya::maps::MapData>) -> Result<(u64, bool)> {
        let ctx = hbwatch::correlate::Ctx {
            conv: &self.conv,
            clock: &self.clock,
            held: None,
        };
        let d = live::drain(
            ring,
            &mut self.correlator,
            &ctx,
            &mut self.batch,
            None,
            None,
        );
        live::write_events(&mut self.out, &self.batch)?;
        self.lines += self.batch.len() as u64;
        self.batch.clear();
        Ok((d.records as u64, d.empty))
    }
}

const KIND_AT: usize = std::mem::offset_of!(hbwatch_common::event::RawEvent, kind);

fn count_only(ring: &mut aya::maps::RingBuf<aya::maps::MapData>) -> u64 {
    let mut n = 0u64;
    let mut kinds = 0u64;
    while let Some(item) = ring.next() {
        n += 1;
        // Touch the record as any consumer must (its kind byte).
        kinds += item.get(KIND_AT).copied().unwrap_or(0) as u64;
    }
    std::hint::black_box(kinds);
    n
}

/// Two sends of one RUDP request (same seq, IP ids 1 and 2).
fn resends(src: &str, dst: &str, seq: u32) -> [Vec<u8>; 2] {
    let (src, dst) = (ip(src), ip(dst));
    [1, 2].map(|id| frames::rudp_with_id(src, dst, seq, Role::Request, &[], id))
}

/// `runs` program runs, one per call, alternating between the two sends.
fn resend(run: impl Fn(&[u8], u32) -> Result<f64>, sends: &[Vec<u8>; 2], runs: u32) -> Result<()> {
    for i in 0..runs {
        run(&sends[i as usize % 2], 1)?;
    }
    Ok(())
}

pub fn bench(opts: &Options) -> Result<Value> {
    let sends = resends("10.40.0.1", "10.40.0.2", 300);
    let mut l = Loaded::new(Some(BIG_RING))?;
    let mut nd = Ndjson::new()?;
    // The association exists for both consumers before anything is measured.
    resend(|f, n| l.agent(f, n), &sends, 2)?;
    while !nd.step(&mut l.ring)?.1 {}
    let expected = opts.runs as u64 * RECORDS_PER_RUN;
    let (mut count_rate, mut nd_rate, mut ratio, mut nd_wall_rate, mut nd_lines_rate) =
        (vec![], vec![], vec![], vec![], vec![]);
    for trial in 0..opts.trials {
        let mut rates = [0.0f64; 2];
        let order: [usize; 2] = if trial % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            let lost = l.lost()?;
            resend(|f, n| l.agent(f, n), &sends, opts.runs)?;
            ensure!(
                l.lost()? == lost,
                "the ring buffer overflowed while filling"
            );
            let lines0 = nd.lines;
            let span = Span::start();
            let read = if which == 0 {
                count_only(&mut l.ring)
            } else {
                let mut read = 0;
                loop {
                    let (n, empty) = nd.step(&mut l.ring)?;
                    read += n;
                    if empty {
                        break;
                    }
                }
                read
            };
            let (wall, cpu) = span.stop();
            ensure!(read == expected, "read {read} records, {expected} queued");
            rates[which] = read as f64 / cpu;
            if which == 1 {
                nd_wall_rate.push(read as f64 / wall);
                nd_lines_rate.push((nd.lines - lines0) as f64 / cpu);
            }
        }
        count_rate.push(rates[0]);
        nd_rate.push(rates[1]);
        ratio.push(rates[1] / rates[0]);
        eprintln!("bench: pipeline trial {}/{} done", trial + 1, opts.trials);
    }
    let flood = flood(opts.flood_runs, opts.trials)?;
    Ok(json!({
        "trials": opts.trials,
        "records_per_fill": expected,
        "records_per_line": RECORDS_PER_RUN,
        "ndjson_records_per_cpu_s": median(&nd_rate),
        "ndjson_records_per_wall_s": median(&nd_wall_rate),
        "ndjson_lines_per_cpu_s": median(&nd_lines_rate),
        "count_records_per_cpu_s": median(&count_rate),
        "ratio": median(&ratio),
        "ratios": ratio,
        "flood": flood,
    }))
}

/// One flood's outcome.
struct Flood {
    produced: u64,
    read: u64,
    lost: u64,
    wall: f64,
}

/// The production ring (4 MiB) flooded by a producer thread running the program as fast
/// as it can, drained by each consumer in turn (alternating by trial): how much of the
/// kernel's output each keeps, and whether every record was read or counted lost.
fn flood(runs: u32, trials: usize) -> Result<Value> {
    let sends = resends("10.41.0.1", "10.41.0.2", 400);
    let Loaded { dp, mut ring } = Loaded::new(None)?;
    let l = |f: &[u8], repeat: u32| crate::xdp::test_run(&dp, XDP_PROGRAM, f, repeat);
    let mut nd = Ndjson::new()?;
    resend(l, &sends, 2)?;
    while !nd.step(&mut ring)?.1 {}
    let lost_now =
        || -> Result<u64> { Ok(dp.counters()?.get("ringbuf_lost").copied().unwrap_or(0)) };
    let mut one = |ndjson: bool| -> Result<Flood> {
        let lost0 = lost_now()?;
        let done = AtomicBool::new(false);
        let produced_runs = AtomicU64::new(0);
        let chunk = 10_000u32;
        let (read, wall) = std::thread::scope(|s| -> Result<(u64, f64)> {
            let producer = s.spawn(|| -> Result<()> {
                let mut left = runs;
                while left > 0 {
                    let n = left.min(chunk);
                    resend(l, &sends, n)?;
                    produced_runs.fetch_add(n as u64, Ordering::Relaxed);
                    left -= n;
                }
                done.store(true, Ordering::Release);
                Ok(())
            });
            let start = std::time::Instant::now();
            let mut read = 0u64;
            loop {
                let finished = done.load(Ordering::Acquire);
                let (n, empty) = if ndjson {
                    nd.step(&mut ring)?
                } else {
                    (count_only(&mut ring), true)
                };
                read += n;
                if empty {
                    if finished {
                        break;
                    }
                    // Wait for the kernel's wake-up, as the live agent does (epoll there).
                    let mut pfd = libc::pollfd {
                        fd: ring.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut pfd, 1, 10) };
                }
            }
            let wall = start.elapsed().as_secs_f64();
            producer.join().expect("producer thread")?;
            Ok((read, wall))
        })?;
        Ok(Flood {
            produced: produced_runs.load(Ordering::Relaxed) * RECORDS_PER_RUN,
            read,
            lost: lost_now()? - lost0,
            wall,
        })
    };
    let (mut ratio, mut nd_rate, mut count_rate) = (vec![], vec![], vec![]);
    let (mut produced, mut read, mut lost, mut unaccounted) = (0u64, 0u64, 0u64, 0i64);
    let (mut nd_kept, mut count_kept) = (vec![], vec![]);
    for trial in 0..trials {
        let order = if trial % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        let mut got: [Option<Flood>; 2] = [None, None];
        for ndjson in order {
            let f = one(ndjson)?;
            unaccounted += f.produced as i64 - f.read as i64 - f.lost as i64;
            if ndjson {
                produced += f.produced;
                read += f.read;
                lost += f.lost;
            }
            got[ndjson as usize] = Some(f);
        }
        let [Some(c), Some(n)] = got else {
            unreachable!("both consumers ran")
        };
        count_rate.push(c.read as f64 / c.wall);
        nd_rate.push(n.read as f64 / n.wall);
        count_kept.push(c.read as f64 / c.produced as f64);
        nd_kept.push(n.read as f64 / n.produced as f64);
        ratio.push((n.read as f64 / n.wall) / (c.read as f64 / c.wall));
    }
    Ok(json!({
        "ring_bytes": 4 << 20,
        "runs": runs,
        "trials": trials,
        "ndjson_produced": produced,
        "ndjson_read": read,
        "ndjson_lost_counted": lost,
        "unaccounted": unaccounted,
        "ndjson_read_per_wall_s": median(&nd_rate),
        "count_read_per_wall_s": median(&count_rate),
        "ndjson_kept": median(&nd_kept),
        "count_kept": median(&count_kept),
        "ratio": median(&ratio),
        "ratios": ratio,
    }))
}
