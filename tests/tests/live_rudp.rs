//! The real agent with XDP on a veth pair; real RUDP heartbeat frames sent from a
//! network namespace. Asserts the exact events and a clean interface afterwards.

use std::time::Duration;

use hbwatch_common::proto::Role;
use hbwatch_tests::{require_root, rudp_frame, summary, Agent, VethNs};

const CS: &str = "10.10.10.10";
const MGC: &str = "10.10.20.20";

/// One healthy round of both directions: CS->MGC seq `a`, MGC->CS seq `b`, each echoed.
fn round(frames: &mut Vec<Vec<u8>>, vlans: &[u16], a: u32, b: u32) {
    frames.push(rudp_frame(vlans, CS, MGC, a, Role::Request));
    frames.push(rudp_frame(vlans, MGC, CS, a, Role::Response));
    frames.push(rudp_frame(vlans, MGC, CS, b, Role::Request));
    frames.push(rudp_frame(vlans, CS, MGC, b, Role::Response));
}

fn ev(action: &str, src: &str, dst: &str, seq: i64) -> (String, String, String, i64) {
    (
        action.to_string(),
        format!("{src}:15000"),
        format!("{dst}:15000"),
        seq,
    )
}

#[test]
fn rudp_healthy_gap_retry_restart_on_real_xdp() {
    if !require_root("rudp_healthy_gap_retry_restart_on_real_xdp") {
        return;
    }
    let net = VethNs::create();
    let mut agent = Agent::start(&["--iface", &net.host, "--hostname", "cs-probe-1"]);
    let started = &agent.events[0];
    assert_eq!(
        started["heartbeat"]["interfaces"][0]["name"],
        net.host.as_str()
    );
    let mode = started["heartbeat"]["interfaces"][0]["mode"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(mode == "driver" || mode == "skb");
    assert!(net.host_xdp().is_some(), "XDP attached while running");

    let mut frames = Vec::new();
    // Healthy: 5 rounds both ways; the MGC's own heartbeats ride VLAN 100.
    for i in 0..5 {
        round(&mut frames, &[], 1000 + i, 7000 + i);
    }
    // CS->MGC: 1005..1007 never seen, 1008 arrives and is answered.
    frames.push(rudp_frame(&[], CS, MGC, 1008, Role::Request));
    frames.push(rudp_frame(&[], MGC, CS, 1008, Role::Response));
    // 1009 unanswered, retried with the same seq, then answered.
    frames.push(rudp_frame(&[], CS, MGC, 1009, Role::Request));
    frames.push(rudp_frame(&[], CS, MGC, 1009, Role::Request));
    frames.push(rudp_frame(&[], MGC, CS, 1009, Role::Response));
    // The CS process restarts: its sequence starts again at 3.
    frames.push(rudp_frame(&[], CS, MGC, 3, Role::Request));
    frames.push(rudp_frame(&[], MGC, CS, 3, Role::Response));
    // A tagged device pair (QinQ 10/20) stays healthy.
    for i in 0..3 {
        frames.push(rudp_frame(
            &[10, 20],
            "192.168.5.1",
            "192.168.5.2",
            40 + i,
            Role::Request,
        ));
        frames.push(rudp_frame(
            &[10, 20],
            "192.168.5.2",
            "192.168.5.1",
            40 + i,
            Role::Response,
        ));
    }
    // 150 ms apart: these frames all carry one IP id, so a re-send closer than the
    // duplicate window (100 ms) would be a mirror copy, not a retry.
    net.inject(&frames, Duration::from_millis(150));
    agent.wait_for("peer.up", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(agent.stop(), 0, "clean exit on SIGINT");

    let got: Vec<_> = agent.datapath_events().into_iter().map(summary).collect();
    let want = vec![
        ev("peer.up", CS, MGC, 1000),
        ev("peer.up", MGC, CS, 7000),
        ev("heartbeat.gap", CS, MGC, 1008),
        // Re-sent within half an interval: a retry, not (yet) unanswered.
        ev("heartbeat.retry", CS, MGC, 1009),
        ev("heartbeat.restart", CS, MGC, 3),
        ev("peer.up", "192.168.5.1", "192.168.5.2", 40),
    ];
    assert_eq!(got, want, "events: {:#?}", agent.events);

    let find = |action: &str| {
        agent
            .heartbeat_events()
            .into_iter()
            .find(|e| e["event"]["action"] == action)
            .unwrap()
            .clone()
    };
    let gap = find("heartbeat.gap");
    assert_eq!(gap["heartbeat"]["expected_seq"], 1005);
    assert_eq!(gap["heartbeat"]["lost"], 3);
    assert_eq!(gap["event"]["kind"], "alert");
    assert_eq!(gap["network"]["protocol"], "cs1000-rudp");
    assert_eq!(gap["network"]["transport"], "udp");
    assert_eq!(gap["observer"]["hostname"], "cs-probe-1");
    assert_eq!(
        gap["observer"]["ingress"]["interface"]["name"],
        net.host.as_str()
    );
    assert_eq!(find("heartbeat.retry")["heartbeat"]["attempt"], 2);
    assert_eq!(find("heartbeat.restart")["heartbeat"]["previous_seq"], 1009);
    // Timestamps are wall-clock RFC 3339 with microseconds, close to now.
    let ts = gap["@timestamp"].as_str().unwrap();
    assert_eq!(ts.len(), "2026-11-22T10:00:05.536897Z".len(), "{ts}");
    assert!(ts.ends_with('Z'));

    let stopped = agent.events.last().unwrap();
    assert_eq!(stopped["event"]["action"], "agent.stopped");
    assert_eq!(
        stopped["heartbeat"]["counters"]["heartbeats"],
        frames.len() as u64
    );
    assert_eq!(stopped["heartbeat"]["counters"]["ringbuf_lost"], 0);
    assert_eq!(net.host_xdp(), None, "no XDP program left on the interface");
}

#[test]
fn unknown_interface_is_a_clear_error() {
    if !require_root("unknown_interface_is_a_clear_error") {
        return;
    }
    let out = std::process::Command::new(hbwatch_tests::hbwatch_bin())
        .args(["run", "--iface", "hbw-nope0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"hbw-nope0\" does not exist"), "{err}");
}
