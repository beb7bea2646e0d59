//! Routine heartbeats held in the flow table, as the live datapath holds them
//! (`correlate::held`, PROTOCOLS.md "Routine heartbeats stay in the kernel"): the same
//! events, in the same order, as a record for each heartbeat; the same per-association
//! totals; and on healthy traffic at most one ring-buffer record per 20 heartbeats. Run
//! on every built-in hbgen scenario with three seeds, over IPv6 and VLAN too (no root
//! needed; the live differential test holds them in the kernel).

use std::time::Duration;

use hbgen::scenario::{Overrides, Scenario, BUILTIN};
use hbgen::{generate, TimedFrame};
use hbwatch::offline::{AnalyzeOptions, Replay};
use hbwatch::ports::{default_specs, port_table};
use hbwatch_common::counters::Counter;

struct Run {
    lines: Vec<String>,
    totals: Vec<[String; 11]>,
    beat_records: u64,
    held: u64,
}

fn run(frames: &[TimedFrame], hold: bool) -> Run {
    let opts = AnalyzeOptions {
        hold,
        summary_period: Some(Duration::from_secs(60)),
        ..AnalyzeOptions::new(port_table(&default_specs()), "probe")
    };
    let mut r = Replay::new(&opts, "wire.pcap".into());
    let mut out = Vec::new();
    for f in frames {
        r.frame(&f.data, f.ts_ns, &mut out);
    }
    r.finish(&mut out);
    Run {
        lines: out.iter().map(|e| e.to_line()).collect(),
        totals: r
            .correlator
            .totals()
            .iter()
            .map(|t| t.summary_cells())
            .collect(),
        beat_records: r.beat_records,
        held: r.env.counters[Counter::Held as usize],
    }
}

fn frames(name: &str, o: &Overrides) -> Vec<TimedFrame> {
    let mut s = Scenario::load(name).unwrap();
    s.apply(o).unwrap();
    generate(&s).frames
}

#[test]
fn holding_routine_heartbeats_changes_no_event() {
    for (name, _) in BUILTIN {
        for (seed, ipv6, vlan) in [(1, false, None), (2, true, None), (3, false, Some(42))] {
            let o = Overrides {
                seed: Some(seed),
                ipv6,
                vlan,
                ..Overrides::default()
            };
            let f = frames(name, &o);
            let (every, held) = (run(&f, false), run(&f, true));
            let what = format!("{name} seed {seed} ipv6 {ipv6} vlan {vlan:?}");
            assert!(held.held > 0, "{what}: nothing held");
            eprintln!(
                "{what}: {} events; {} heartbeat records, {} with {} held",
                every.lines.len(),
                every.beat_records,
                held.beat_records,
                held.held
            );
            assert_eq!(every.held, 0, "{what}");
            for (i, (a, b)) in every.lines.iter().zip(&held.lines).enumerate() {
                assert_eq!(a, b, "{what}: event {i} differs");
            }
            assert_eq!(every.lines.len(), held.lines.len(), "{what}: event count");
            assert_eq!(every.totals, held.totals, "{what}: per-association totals");
        }
    }
}

#[test]
fn healthy_heartbeats_send_at_most_one_record_in_twenty() {
    let o = Overrides {
        duration_s: Some(600.0),
        ..Overrides::default()
    };
    let f = frames("healthy", &o);
    let (every, held) = (run(&f, false), run(&f, true));
    // Without holding, every heartbeat of a known association is one record.
    let ratio = held.beat_records as f64 / every.beat_records as f64;
    eprintln!(
        "healthy, 600 s: {} heartbeat records without holding, {} with ({ratio:.4} per heartbeat), {} held",
        every.beat_records, held.beat_records, held.held
    );
    assert!(
        ratio <= 0.05,
        "{} records for {} heartbeats: {ratio:.3} per heartbeat",
        held.beat_records,
        every.beat_records
    );
    assert_eq!(every.lines, held.lines);
}

/// Answers stamped with their request's time (a capture's microsecond clock, or a capture
/// host that timestamps frames in batches): each is still the answer, with a round trip
/// of 0. They were dropped as "no measurement", so every request looked unanswered and
/// each association went down after four (found on `cargo xtask bench`'s scale capture).
#[test]
fn answers_in_their_requests_microsecond_are_answers() {
    use hbgen::frame::FrameSpec;
    use hbwatch_common::proto::{rudp, Role};
    let (a, b) = ("10.40.0.1".parse().unwrap(), "10.40.0.2".parse().unwrap());
    let frame = |src, dst, seq, role| {
        let mut f = FrameSpec::udp(src, 15000, dst, 15000, &rudp::payload(seq, role));
        f.dscp = 46;
        f.build()
    };
    let start = 1_700_000_000_000_000_000u64;
    let mut frames = Vec::new();
    for k in 0..12u32 {
        let t = start + u64::from(k) * 1_000_000_000;
        for (src, dst, seq) in [(a, b, 100 + k), (b, a, 5000 + k)] {
            for role in [Role::Request, Role::Response] {
                let (s, d) = if role == Role::Request {
                    (src, dst)
                } else {
                    (dst, src)
                };
                frames.push(TimedFrame {
                    ts_ns: t,
                    data: frame(s, d, seq, role),
                    label: "rudp",
                });
            }
        }
    }
    for hold in [false, true] {
        let run = run(&frames, hold);
        let actions: Vec<&str> = run
            .lines
            .iter()
            .map(|l| {
                l.split("\"action\":\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
            })
            .filter(|a| *a != "heartbeat.summary")
            .collect();
        assert_eq!(
            actions,
            ["peer.up", "peer.up"],
            "hold {hold}: {:#?}",
            run.lines
        );
        // Both associations: 12 heartbeats, 12 answers (RTT 0), nothing lost.
        for t in &run.totals {
            assert_eq!((t[1].as_str(), t[2].as_str()), ("12", "0"), "{t:?}");
            assert_eq!(t[4], "0.0ms", "{t:?}");
        }
    }
}
