//! Live and offline agree: the same frames, with real protocol timing, go through real
//! XDP (and, as a second test, the TC ingress hook) on a veth pair while tcpdump
//! captures that wire; `hbwatch analyze` on the capture must report the same anomalies
//! (action, association, sequence numbers) as the live agent did, timers included.
//! Every protocol family is on the wire: MDS, RUDP, SIP (UDP and TCP), MGCP.

use std::net::IpAddr;
use std::time::Duration;

use hbgen::frame::{FrameSpec, Tcp};
use hbwatch_tests::{agreement_counts, analyze_events, require_root, Agent, Tcpdump, VethNs};
use serde_json::Value;

const MS: u64 = 1;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const A: &str = "10.50.0.1";
const B: &str = "10.50.0.2";

fn mds(from: &str, to: &str, seq: u32) -> Vec<u8> {
    FrameSpec::udp(ip(from), 41000, ip(to), 41000, &seq.to_le_bytes()).build()
}

fn rudp(from: &str, to: &str, seq: u32, flag: u16) -> Vec<u8> {
    let mut p = seq.to_be_bytes().to_vec();
    p.extend_from_slice(&flag.to_be_bytes());
    let mut spec = FrameSpec::udp(ip(from), 15000, ip(to), 15000, &p);
    spec.dscp = 46;
    spec.build()
}

fn sip_udp(from: &str, to: &str, text: &str) -> Vec<u8> {
    FrameSpec::udp(ip(from), 5060, ip(to), 5060, text.as_bytes()).build()
}

fn sip_tcp(from: &str, sport: u16, to: &str, dport: u16, seq: u32, data: &[u8]) -> Vec<u8> {
    let mut spec = FrameSpec::udp(ip(from), sport, ip(to), dport, data);
    spec.tcp = Some(Tcp {
        seq,
        ack: 1,
        flags: 0x18,
        window: 65535,
    });
    spec.build()
}

fn mgcp(from: &str, to: &str, text: &str) -> Vec<u8> {
    FrameSpec::udp(ip(from), 2427, ip(to), 2427, text.as_bytes()).build()
}

const SIP_HDRS: &str = "Via: SIP/2.0/UDP 10.30.0.50:5060;branch=z9hG4bK1\r\nFrom: <sip:1001@10.30.0.10>;tag=a1\r\nTo: <sip:1001@10.30.0.10>\r\nCall-ID: reg-1@10.30.0.50\r\n";

fn register(cseq: u32, expires: u32) -> String {
    format!("REGISTER sip:10.30.0.10 SIP/2.0\r\n{SIP_HDRS}CSeq: {cseq} REGISTER\r\nContact: <sip:1001@10.30.0.50:5060>\r\nExpires: {expires}\r\nContent-Length: 0\r\n\r\n")
}

fn ok_register(cseq: u32, expires: u32) -> String {
    format!("SIP/2.0 200 OK\r\n{SIP_HDRS}CSeq: {cseq} REGISTER\r\nContact: <sip:1001@10.30.0.50:5060>;expires={expires}\r\nContent-Length: 0\r\n\r\n")
}

/// An MDS pair every 100 ms for 9 s with every kind of trouble the timers and the
/// datapath tell apart, and a CS1000 RUDP pair every 500 ms with an unanswered retry.
fn scenario() -> Vec<(Duration, Vec<u8>)> {
    let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
    let (mut seq_a, mut seq_b) = (1000u32, 5000u32);
    for i in 0..90u64 {
        let t = i * 100 * MS;
        // 3.0-4.0 s: both directions silent, counters keep running (firewall).
        let both_silent = (30..40).contains(&i);
        // 6.0-7.0 s: only A -> B lost.
        let a_lost = (60..70).contains(&i);
        // 2.0 s: A's 3 datagrams lost (a gap).
        let a_gap = (20..23).contains(&i);
        if i == 50 {
            // A's router process restarts: counting from 0.
            seq_a = 0;
        }
        if !(both_silent || a_lost || a_gap) {
            out.push((t, mds(A, B, seq_a)));
        }
        // 8.0 s: B's heartbeat 100 ms late (200 ms interval).
        let b_at = if i == 80 { t + 100 * MS } else { t } + 7 * MS;
        if !both_silent {
            out.push((b_at, mds(B, A, seq_b)));
        }
        seq_a += 1;
        seq_b += 1;
    }
    // RUDP: 100..119 every 500 ms; 108 goes unanswered and is re-sent 500 ms later. It
    // runs on for a second after the MDS pair stops, so that the pair's end-of-wire
    // silence (missed at ~9.15 s, down at ~9.45 s) falls well inside the capture, not
    // at its edge, where the live clock and tcpdump's stamps could disagree on which
    // side of the last frame a timer fired (seen under TCG).
    let (cs, mgc) = ("10.10.10.10", "10.10.20.20");
    let mut t = 30 * MS;
    for seq in 100..120u32 {
        out.push((t, rudp(cs, mgc, seq, 0x02ff)));
        if seq == 108 {
            t += 500 * MS;
            out.push((t, rudp(cs, mgc, seq, 0x02ff)));
        }
        out.push((t + 3 * MS, rudp(mgc, cs, seq, 0x0100)));
        t += 500 * MS;
    }
    // SIP: a phone registers for 2 s, refreshes once, then lapses; an OPTIONS ping
    // is answered 503 (over TCP 5060 split in two segments).
    let (phone, cucm) = ("10.30.0.50", "10.30.0.10");
    out.push((200 * MS, sip_udp(phone, cucm, &register(1, 2))));
    out.push((205 * MS, sip_udp(cucm, phone, &ok_register(1, 2))));
    out.push((1200 * MS, sip_udp(phone, cucm, &register(2, 2))));
    out.push((1206 * MS, sip_udp(cucm, phone, &ok_register(2, 2))));
    let options = b"OPTIONS sip:cvp@10.30.0.10 SIP/2.0\r\nVia: SIP/2.0/TCP 10.30.0.50:5061;branch=z9hG4bK77\r\nFrom: <sip:ping@10.30.0.50>;tag=9\r\nTo: <sip:cvp@10.30.0.10>\r\nCall-ID: opt-1@10.30.0.50\r\nCSeq: 5 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    out.push((
        1500 * MS,
        sip_tcp(phone, 5061, cucm, 5060, 100, &options[..60]),
    ));
    out.push((
        1501 * MS,
        sip_tcp(phone, 5061, cucm, 5060, 160, &options[60..]),
    ));
    let busy = b"SIP/2.0 503 Service Unavailable\r\nVia: SIP/2.0/TCP 10.30.0.50:5061;branch=z9hG4bK77\r\nFrom: <sip:ping@10.30.0.50>;tag=9\r\nTo: <sip:cvp@10.30.0.10>;tag=1\r\nCall-ID: opt-1@10.30.0.50\r\nCSeq: 5 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    out.push((1510 * MS, sip_tcp(cucm, 5060, phone, 5061, 900, busy)));
    // MGCP: a gateway's keepalive answered; an event NTFY left unanswered and re-sent;
    // the call agent's own command and the answer to it (no heartbeats); the next NTFY
    // 7.6 s later, over half the 15 s bound (the first was unanswered); an RSIP graceful
    // (the gateway leaves).
    let (gw, ca) = ("10.60.0.2", "10.60.0.1");
    let ka = "NTFY 1000 *@vg224 MGCP 0.1\nX: 0\nO: \n";
    out.push((500 * MS, mgcp(gw, ca, ka)));
    out.push((504 * MS, mgcp(ca, gw, "200 1000 OK\n")));
    let hook = "NTFY 1001 aaln/S2/1@vg224 MGCP 0.1\nX: 1\nO: L/hd\n";
    out.push((1000 * MS, mgcp(gw, ca, hook)));
    out.push((1500 * MS, mgcp(gw, ca, hook)));
    out.push((
        2000 * MS,
        mgcp(ca, gw, "RQNT 77 aaln/S2/1@vg224 MGCP 0.1\nX: 2\n"),
    ));
    out.push((2004 * MS, mgcp(gw, ca, "200 77 OK\n")));
    out.push((
        8600 * MS,
        mgcp(gw, ca, "NTFY 1002 *@vg224 MGCP 0.1\nX: 0\nO: \n"),
    ));
    out.push((8604 * MS, mgcp(ca, gw, "200 1002 OK\n")));
    out.push((
        8800 * MS,
        mgcp(gw, ca, "RSIP 1003 *@vg224 MGCP 0.1\nRM: graceful\n"),
    ));
    out.push((8804 * MS, mgcp(ca, gw, "200 1003 OK\n")));
    out.sort_by_key(|(t, _)| *t);
    out.into_iter()
        .map(|(t, f)| (Duration::from_millis(t), f))
        .collect()
}

#[test]
fn live_xdp_and_offline_analysis_of_the_same_wire_agree() {
    if require_root("live_xdp_and_offline_analysis_of_the_same_wire_agree") {
        live_and_offline_agree("auto");
    }
}

/// The same with the agent at the TC ingress hook instead of XDP (`--mode tc`): another
/// program type, reading the skb instead of an XDP buffer, and on kernels before 6.6 a
/// netlink filter instead of a BPF link.
#[test]
fn live_tc_ingress_and_offline_analysis_of_the_same_wire_agree() {
    if require_root("live_tc_ingress_and_offline_analysis_of_the_same_wire_agree") {
        live_and_offline_agree("tc");
    }
}

/// Captures the scenario with tcpdump while the agent watches in `mode`, analyzes the
/// capture, and compares.
fn live_and_offline_agree(mode: &str) {
    let net = VethNs::create();
    let dir = std::env::temp_dir().join(format!("hbwatch-diff-{mode}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("wire.pcap");
    let tcpdump = Tcpdump::start(&net.host, &pcap);
    let mut agent = Agent::start(&[
        "--iface",
        &net.host,
        "--mode",
        mode,
        "--hostname",
        "probe",
        "--port",
        "mds=41000",
        "--no-summary-events",
    ]);
    net.inject_at(&scenario());
    std::thread::sleep(Duration::from_millis(300));
    let last = tcpdump.stop();
    assert_eq!(agent.stop(), 0);

    let offline = analyze_events(&pcap, &["--port", "mds=41000"]);
    // The capture ends; the live agent watched on: compare up to the wire's end.
    let live: Vec<&Value> = agent
        .heartbeat_events()
        .into_iter()
        .filter(|e| e["@timestamp"].as_str().unwrap() <= last.as_str())
        .collect();
    let offline: Vec<&Value> = offline.iter().collect();
    let (l, o) = (agreement_counts(&live), agreement_counts(&offline));
    assert_eq!(
        l, o,
        "live ({mode}) vs offline:\nlive: {live:#?}\noffline: {offline:#?}"
    );
    // Live held routine heartbeats in the kernel (offline every one is a record), and
    // the events agree all the same.
    let stopped = agent
        .events
        .iter()
        .find(|e| e["event"]["action"] == "agent.stopped")
        .expect("agent.stopped");
    let held = stopped["heartbeat"]["counters"]["held"].as_u64().unwrap();
    assert!(held > 50, "live ({mode}) held {held} heartbeats");

    // And both found what the scenario holds.
    let actions: Vec<&str> = offline
        .iter()
        .map(|e| e["event"]["action"].as_str().unwrap())
        .collect();
    for want in [
        "heartbeat.gap",
        "heartbeat.missed",
        "peer.down",
        "peer.up",
        "heartbeat.restart",
        "heartbeat.late",
        "heartbeat.unanswered",
        "heartbeat.retry",
        "sip.registered",
        "sip.expired",
        "sip.options_failed",
    ] {
        assert!(actions.contains(&want), "{want} missing: {actions:?}");
    }
    let diags: Vec<&str> = offline
        .iter()
        .filter_map(|e| e["heartbeat"]["diagnosis"].as_str())
        .collect();
    assert!(diags.contains(&"path-interruption"), "{diags:?}");
    assert!(diags.contains(&"one-way-loss"), "{diags:?}");
    // MGCP: exactly what the gateway's transactions say, in the kernel's reading.
    let mgcp: Vec<(&str, u64)> = offline
        .iter()
        .filter(|e| e["network"]["protocol"] == "mgcp")
        .map(|e| {
            (
                e["event"]["action"].as_str().unwrap(),
                e["heartbeat"]["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        mgcp,
        [
            ("peer.up", 1000),
            ("heartbeat.retry", 1001),
            ("heartbeat.unanswered", 1001),
            ("heartbeat.restart", 1003),
        ],
        "{offline:#?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
