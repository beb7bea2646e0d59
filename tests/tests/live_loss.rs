//! A ring-buffer storm: the agent is stopped (SIGSTOP) while frames that each make two
//! records arrive, so the 4 MiB ring buffer overflows. Every record is either read or
//! counted lost in the kernel, the loss is reported as `agent.events_lost` with the
//! exact count, and afterwards the agent still reports a clean anomaly.

use std::time::Duration;

use hbwatch_tests::{mds_frame, require_root, Agent, VethNs};

fn mds(seq: u32) -> Vec<u8> {
    mds_frame("10.70.0.1", "10.70.0.2", seq)
}

#[test]
fn ring_buffer_storm_is_counted_exactly_and_reported() {
    if !require_root("ring_buffer_storm_is_counted_exactly_and_reported") {
        return;
    }
    let net = VethNs::create();
    let mut agent = Agent::start(&[
        "--iface",
        &net.host,
        "--port",
        "mds=41000",
        // Line-rate frames are no plausible MDS heartbeats: announced at the first.
        "--tune",
        "mds.confirm_beats=1",
        "--no-summary-events",
    ]);
    // 40k frames, each seq 2 ahead of the last: a gap record and a heartbeat record
    // per frame after the first (80k records of 80 bytes against ~52k slots).
    const N: u32 = 40_000;
    let frames: Vec<Vec<u8>> = (0..N).map(|i| mds(i * 2)).collect();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGSTOP) };
    net.inject(&frames, Duration::ZERO);
    unsafe { libc::kill(agent.pid() as i32, libc::SIGCONT) };

    let lost_ev = agent.wait_for("agent.events_lost", Duration::from_secs(30));
    assert_eq!(lost_ev["heartbeat"]["where"], "kernel-ringbuf");
    // Still responsive: a restart after the storm is reported.
    net.inject(&[mds(5), mds(6)], Duration::from_millis(5));
    agent.wait_for("heartbeat.restart", Duration::from_secs(10));
    assert_eq!(agent.stop(), 0);

    let stopped = agent.events.last().unwrap();
    let counters = &stopped["heartbeat"]["counters"];
    let kernel_lost = counters["ringbuf_lost"].as_u64().unwrap();
    let read = counters["records_read"].as_u64().unwrap();
    assert_eq!(counters["heartbeats"].as_u64().unwrap(), N as u64 + 2);
    assert!(kernel_lost > 0, "the storm overflowed the ring: {counters}");
    // Storm: 1 association record + 2 per later frame; then restart + heartbeat record
    // for seq 5 and one heartbeat record for seq 6.
    let produced = 1 + 2 * (N as u64 - 1) + 2 + 1;
    assert_eq!(read + kernel_lost, produced, "{counters}");
    let reported: u64 = agent
        .events
        .iter()
        .filter(|e| e["event"]["action"] == "agent.events_lost")
        .map(|e| e["heartbeat"]["lost"].as_u64().unwrap())
        .sum();
    assert_eq!(reported, kernel_lost, "every lost record reported, once");
    let gaps = agent
        .events
        .iter()
        .filter(|e| e["event"]["action"] == "heartbeat.gap")
        .count() as u64;
    assert!(gaps > 0 && gaps < N as u64 - 1, "gaps seen: {gaps}");
}
