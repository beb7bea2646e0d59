//! The flight recorder on a live agent: `hbwatch run --record DIR` on real XDP keeps the
//! heartbeats the kernel sent up, and `hbwatch locate` lines that recording up with
//! tcpdump's capture of the same wire: every RUDP and MGCP heartbeat matched both ways, none
//! lost, and the two clocks (the same host's) agree.

use std::time::Duration;

use hbgen::frame::FrameSpec;
use hbwatch_common::proto::Role;
use hbwatch_tests::{addr, hbwatch_events, require_root, rudp_frame, Agent, Tcpdump, VethNs};
use serde_json::Value;

fn mgcp(from: &str, to: &str, text: &str) -> Vec<u8> {
    FrameSpec::udp(addr(from), 2427, addr(to), 2427, text.as_bytes()).build()
}

#[test]
fn a_live_recording_lines_up_with_a_capture_of_the_same_wire() {
    if !require_root("a_live_recording_lines_up_with_a_capture_of_the_same_wire") {
        return;
    }
    let net = VethNs::create();
    let dir = std::env::temp_dir().join(format!("hbwatch-record-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let record = dir.join("record");
    let pcap = dir.join("wire.pcap");
    let tcpdump = Tcpdump::start(&net.host, &pcap);
    let mut agent = Agent::start(&[
        "--iface",
        &net.host,
        "--hostname",
        "probe",
        "--no-summary-events",
        "--record",
        &format!("{}?keep=5m", record.display()),
    ]);
    // A CS1000 pair: 20 requests every 200 ms, each echoed 3 ms later.
    let (cs, mgc) = ("10.10.10.10", "10.10.20.20");
    let mut frames = Vec::new();
    for i in 0..20u32 {
        let t = Duration::from_millis(200 * i as u64);
        frames.push((t, rudp_frame(&[], cs, mgc, 500 + i, Role::Request)));
        frames.push((
            t + Duration::from_millis(3),
            rudp_frame(&[], mgc, cs, 500 + i, Role::Response),
        ));
    }
    // An MGCP gateway (default port 2427): 10 keepalives, each answered 2 ms later.
    let (gw, ca) = ("10.60.0.2", "10.60.0.1");
    for i in 0..10u32 {
        let t = Duration::from_millis(50 + 400 * i as u64);
        let tid = 7000 + i;
        let ntfy = format!("NTFY {tid} *@vg224 MGCP 0.1\nX: 0\nO: \n");
        let answer = format!("200 {tid} OK\n");
        frames.push((t, mgcp(gw, ca, &ntfy)));
        frames.push((t + Duration::from_millis(2), mgcp(ca, gw, &answer)));
    }
    frames.sort_by_key(|(t, _)| *t);
    net.inject_at(&frames);
    std::thread::sleep(Duration::from_millis(300));
    tcpdump.stop();
    assert_eq!(agent.stop(), 0);

    let files: Vec<_> = std::fs::read_dir(&record)
        .unwrap_or_else(|e| panic!("{}: {e}", record.display()))
        .collect();
    assert!(!files.is_empty(), "no recording in {}", record.display());
    let events = hbwatch_events(&[
        "locate".to_string(),
        format!("wire={}", pcap.display()),
        format!("agent={}", record.display()),
    ]);
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["event"]["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.iter().all(|a| *a == "path.summary"),
        "only summaries expected: {events:#?}"
    );
    // One summary per direction of each pair: all matched, none lost.
    for (protocol, n) in [("cs1000-rudp", 20), ("mgcp", 10)] {
        let summaries: Vec<&Value> = events
            .iter()
            .filter(|e| e["network"]["protocol"] == protocol)
            .collect();
        assert_eq!(summaries.len(), 2, "{protocol}: {events:#?}");
        for e in summaries {
            assert_eq!(e["path"]["matched"], n, "{e:#}");
            assert_eq!(e["heartbeat"]["lost"], 0, "{e:#}");
            let offset = e["path"]["clock_offset_ms"].as_f64().unwrap_or(f64::NAN);
            assert!(
                offset.abs() < 50.0,
                "one host, one clock: offset {offset} ms"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
