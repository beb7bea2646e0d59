//! A kernel flow table smaller than the site (`--max-associations`): evictions are
//! counted and reported, never a false alert, and live still equals offline analysis
//! of the same frames (whose table holds them all).

use std::time::Duration;

use hbwatch_common::proto::Role;
use hbwatch_tests::{agreement_counts, analyze_events, require_root, rudp_frame, Agent, VethNs};
use serde_json::Value;

/// Device pairs: 2 associations each (both ends originate), 240 in all.
const PAIRS: u32 = 120;
const ROUNDS: u32 = 4;
/// Far fewer entries than associations: each round evicts most of them.
const TABLE: &str = "64";

#[test]
fn evicted_associations_come_back_without_false_alerts() {
    if !require_root("evicted_associations_come_back_without_false_alerts") {
        return;
    }
    let net = VethNs::create();
    let dir = std::env::temp_dir().join(format!("hbwatch-flowtable-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("wire.pcap");
    let mut agent = Agent::start(&[
        "--iface",
        &net.host,
        "--hostname",
        "probe",
        "--max-associations",
        TABLE,
        "--no-summary-events",
    ]);
    // RUDP device pairs, one round a second (the protocol's interval): each end sends
    // its request and echoes the other's, EF-marked as the ELAN expects.
    let mut frames = Vec::new();
    for round in 0..ROUNDS {
        let at = Duration::from_secs(round as u64);
        for p in 0..PAIRS {
            let a = format!("10.77.{}.{}", p / 200, 1 + p % 200);
            let b = format!("10.78.{}.{}", p / 200, 1 + p % 200);
            for (from, to) in [(&a, &b), (&b, &a)] {
                let seq = 100 + round;
                frames.push((at, rudp_frame(&[], from, to, seq, Role::Request)));
                frames.push((at, rudp_frame(&[], to, from, seq, Role::Response)));
            }
        }
    }
    net.inject_at(&frames);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(agent.stop(), 0);
    // Offline gets the frames as sent (tcpdump drops some of a 960-frame burst in a
    // slow VM; XDP does not).
    let mut w = hbwatch_pcap::Writer::new(
        std::fs::File::create(&pcap).unwrap(),
        hbwatch_pcap::Format::Pcap { nanos: true },
        "test",
    )
    .unwrap();
    for (at, f) in &frames {
        w.write(1_800_000_000_000_000_000 + at.as_nanos() as u64, f)
            .unwrap();
    }
    drop(w);

    // Each association announced once, nothing else: no peer.up again, no peer.down,
    // no gap or restart when an evicted one comes back.
    let live: Vec<&Value> = agent.heartbeat_events();
    let mut actions: Vec<&str> = live
        .iter()
        .map(|e| e["event"]["action"].as_str().unwrap())
        .collect();
    actions.dedup();
    assert_eq!(actions, ["peer.up"], "{live:#?}");
    assert_eq!(live.len() as u32, 2 * PAIRS);
    // The same as offline analysis of the wire.
    let offline = analyze_events(&pcap, &[]);
    let offline: Vec<&Value> = offline.iter().collect();
    let (l, o) = (agreement_counts(&live), agreement_counts(&offline));
    let differ: Vec<_> = l
        .keys()
        .chain(o.keys())
        .filter(|k| l.get(*k) != o.get(*k))
        .map(|k| (k, l.get(k), o.get(k)))
        .collect();
    assert!(
        differ.is_empty(),
        "live vs offline (key, live, offline): {differ:#?}"
    );

    // The evictions were said, with the table's size, and counted.
    let full: Vec<&Value> = agent
        .events
        .iter()
        .filter(|e| e["event"]["action"] == "agent.flow_table_full")
        .collect();
    assert!(!full.is_empty(), "no agent.flow_table_full");
    let reported: u64 = full
        .iter()
        .map(|e| e["heartbeat"]["count"].as_u64().unwrap())
        .sum();
    assert!(
        full[0]["message"]
            .as_str()
            .unwrap()
            .contains("(64 associations)"),
        "{}",
        full[0]["message"]
    );
    // From the first eviction on, routine heartbeats are no longer held in the table (an
    // evicted association's would be lost with it): said once.
    let stops: Vec<&&Value> = full
        .iter()
        .filter(|e| {
            e["message"]
                .as_str()
                .unwrap()
                .contains("routine heartbeats now go up one record each")
        })
        .collect();
    assert_eq!(stops.len(), 1, "{full:#?}");
    let counters = &agent.events.last().unwrap()["heartbeat"]["counters"];
    assert_eq!(counters["associations_reannounced"], reported, "{counters}");
    // Most associations were evicted before their next round.
    assert!(
        reported >= u64::from(PAIRS),
        "only {reported} re-announcements with {} associations in {TABLE} entries",
        2 * PAIRS
    );
    let _ = std::fs::remove_dir_all(&dir);
}
