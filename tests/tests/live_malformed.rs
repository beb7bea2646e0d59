//! Malformed traffic on real XDP (a veth pair, the real agent): the live twin of
//! agent/tests/malformed.rs. Truncated frames of every protocol at every length, lying
//! length fields, VLAN stacks, fragments, IP options, IPv6 extension headers and hostile
//! SIP text are counted exactly as the offline engine counts them, raise no event the
//! traffic does not justify, and every output line is valid JSON without a raw control
//! character. Then a mutation storm at full speed (AF_PACKET onto the veth): the agent
//! survives, and still reports a clean gap on a fresh association exactly.

use std::time::{Duration, Instant};

use hbgen::frame::{FrameSpec, Tcp};
use hbgen::generate;
use hbgen::mutate::Mutator;
use hbgen::output::PacketSocket;
use hbgen::rng::Rng;
use hbgen::scenario::Scenario;
use hbwatch::offline::OfflineEnv;
use hbwatch::ports::{default_specs, port_table};
use hbwatch_common::counters::Counter;
use hbwatch_common::engine::process;
use hbwatch_common::frame::SliceFrame;
use hbwatch_common::parse::{TCP_ACK, TCP_PSH};
use hbwatch_common::proto::{ged125, rudp, sccp, Role};
use hbwatch_tests::{addr, enter_netns, require_root, Agent, VethNs};
use serde_json::Value;

const PORTS: &str = "mds=41000";

/// The agent on `net`'s host end. Single frames about parsing: MDS and IPMG announced at
/// the first heartbeat (as the offline malformed suite does).
fn start_agent(net: &VethNs) -> Agent {
    Agent::start(&[
        "--iface",
        &net.host,
        "--port",
        PORTS,
        "--tune",
        "mds.confirm_beats=1",
        "--tune",
        "cs1000-ipmg.confirm_beats=1",
        "--no-summary-events",
    ])
}

fn udp(src: &str, sport: u16, dst: &str, dport: u16, payload: &[u8]) -> FrameSpec {
    FrameSpec::udp(addr(src), sport, addr(dst), dport, payload)
}

fn tcp(src: &str, sport: u16, dst: &str, dport: u16, payload: &[u8]) -> FrameSpec {
    let mut f = udp(src, sport, dst, dport, payload);
    f.tcp = Some(Tcp {
        seq: 1000,
        ack: 1,
        flags: TCP_PSH | TCP_ACK,
        window: 502,
    });
    f
}

/// One heartbeat of every protocol from source port `sport` (each cut of a frame gets
/// its own port: its own association, so cuts that kept the heartbeat are no duplicates).
fn bases(sport: u16) -> Vec<FrameSpec> {
    let mut v6 = udp("fd00::1", sport, "fd00::2", 41000, &7u32.to_be_bytes());
    v6.vlans = vec![100, 200];
    let mut opts = udp("10.1.0.1", sport, "10.1.0.2", 41000, &8u32.to_be_bytes());
    opts.ip_options = vec![0x94, 4, 0, 0, 1, 1, 1, 0];
    let mut rudp = udp(
        "10.2.0.1",
        sport,
        "10.2.0.2",
        15000,
        &rudp::payload(9, Role::Request),
    );
    rudp.dscp = 46;
    vec![
        udp("10.1.0.1", sport, "10.1.0.2", 41000, &7u32.to_be_bytes()),
        v6,
        opts,
        rudp,
        udp("10.3.0.1", sport, "10.3.0.2", 32780, &[1, 2, 3]),
        tcp(
            "10.4.0.1",
            sport,
            "10.4.0.2",
            5000,
            &ged125::message(Role::Request, 5),
        ),
        tcp(
            "10.5.0.1",
            sport,
            "10.5.0.2",
            2000,
            &sccp::message(Role::Request),
        ),
    ]
}

fn set16(f: &mut [u8], at: usize, v: u16) {
    f[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// The malformed set: every cut (from the 14-byte Ethernet header on: AF_PACKET pads
/// anything shorter) of every base, and the length lies, tag stacks, fragments and
/// extension headers of the offline suite.
fn malformed() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut port = 20_000u16;
    let n = bases(0).len();
    for i in 0..n {
        let len = bases(0)[i].build().len();
        for cut in 14..=len {
            port += 1;
            out.push(bases(port)[i].build()[..cut].to_vec());
        }
    }
    let mut next = |edit: &dyn Fn(&mut Vec<u8>), tcp_base: bool| {
        port += 1;
        let mut f = bases(port)[if tcp_base { 5 } else { 0 }].build();
        edit(&mut f);
        out.push(f);
    };
    // MDS over IPv4: IP at 14, UDP at 34. GED-125: TCP at 34, data offset at 46.
    for total in [0u16, 19, 27, 31, 1400, 0xffff] {
        next(&|f| set16(f, 16, total), false);
    }
    for ihl in [0u8, 4, 6, 15] {
        next(&|f| f[14] = 0x40 | ihl, false);
    }
    for ulen in [0u16, 7, 11, 13, 0xffff] {
        next(&|f| set16(f, 38, ulen), false);
    }
    for frag in [0x2000u16, 0x2000 | 185, 185, 0x4001] {
        next(&|f| set16(f, 20, frag), false);
    }
    for doff in [0u8, 4, 6, 15] {
        next(&|f| f[46] = doff << 4, true);
    }
    for total in [39u16, 48, 2000] {
        next(&|f| set16(f, 16, total), true);
    }
    for tags in [3usize, 5] {
        port += 1;
        let mut f = bases(port).remove(0);
        f.vlans = (1..=tags as u16).collect();
        out.push(f.build());
    }
    // IPv6 (header at 14): extension headers where UDP was, payload-length lies.
    for next_header in [0u8, 43, 44, 60] {
        port += 1;
        let mut f = bases(port)[1].build(); // QinQ: IPv6 at 22
        f[22 + 6] = next_header;
        out.push(f);
    }
    for plen in [0u16, 7, 9000] {
        port += 1;
        let mut f = bases(port)[1].build();
        set16(&mut f, 22 + 4, plen);
        out.push(f);
    }
    out
}

/// What replacing control characters does to a string (the agent's SIP text rule).
fn shown(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\t' => ' ',
            c if c.is_control() => '\u{fffd}',
            c => c,
        })
        .collect()
}

const NASTY: &str =
    "\"},\"event\":{\"action\":\"peer.down\"} \\\" \x1b[2J\x1b[31mRED\x07\0\x7f\u{9b}31m\rX";

/// A REGISTER with a hostile Call-ID answered 200 OK, and one refused with a hostile
/// reason phrase.
fn hostile_sip() -> (Vec<Vec<u8>>, String, String) {
    let call_id = format!("live{NASTY}@10.70.0.9");
    let reason = format!("Busy {NASTY}");
    let msg = |start: &str, call_id: &str, expires: u32| {
        format!(
            "{start}\r\nVia: SIP/2.0/UDP 10.70.0.9:5060;branch=z9hG4bK1\r\n\
             From: <sip:1001@10.70.0.1>;tag=1\r\nTo: <sip:1001@10.70.0.1>\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 REGISTER\r\n\
             Contact: <sip:1001@10.70.0.9:5060>;expires={expires}\r\n\
             Expires: {expires}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let frames = vec![
        udp(
            "10.70.0.9",
            5060,
            "10.70.0.1",
            5060,
            msg("REGISTER sip:10.70.0.1 SIP/2.0", &call_id, 3600).as_bytes(),
        )
        .build(),
        udp(
            "10.70.0.1",
            5060,
            "10.70.0.9",
            5060,
            msg("SIP/2.0 200 OK", &call_id, 120).as_bytes(),
        )
        .build(),
        udp(
            "10.70.0.10",
            5060,
            "10.70.0.1",
            5060,
            msg("REGISTER sip:10.70.0.1 SIP/2.0", "two@x", 3600).as_bytes(),
        )
        .build(),
        udp(
            "10.70.0.1",
            5060,
            "10.70.0.10",
            5060,
            msg(&format!("SIP/2.0 486 {reason}"), "two@x", 0).as_bytes(),
        )
        .build(),
    ];
    (frames, shown(&call_id), shown(&reason))
}

/// The offline engine's counters over the same frames: what the kernel must count.
fn offline_counters(frames: &[Vec<u8>]) -> Vec<u64> {
    let mut specs = default_specs();
    specs.push(PORTS.parse().unwrap());
    let mut env = OfflineEnv::new(&port_table(&specs), &Default::default());
    for (i, f) in frames.iter().enumerate() {
        process(&SliceFrame(f), &mut env, 1_000_000 * i as u64, 1);
    }
    env.counters.to_vec()
}

/// Each line as the agent wrote it: no raw control character (JSON escapes C0; the agent
/// must not pass DEL or C1 from packets either).
fn check_raw_lines(agent: &Agent) {
    for line in &agent.raw {
        if let Some(c) = line.chars().find(|c| c.is_control()) {
            panic!("raw control character {c:?} in {line:?}");
        }
    }
}

/// No IPv6 of its own on the veth pair: router solicitations and MLD reports (a
/// hop-by-hop header: "unparsed") would blur the exact counter comparison.
fn quiet_ipv6(net: &VethNs) {
    let off = |iface: &str| {
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{iface}/disable_ipv6"), "1");
    };
    off(&net.host);
    let (ns, peer) = (net.ns.clone(), net.peer.clone());
    std::thread::spawn(move || {
        enter_netns(&ns);
        off(&peer);
    })
    .join()
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
}

fn counter(stopped: &Value, c: Counter) -> u64 {
    stopped["heartbeat"]["counters"][c.name()]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn malformed_traffic_on_real_xdp_is_counted_like_offline_and_never_misread() {
    if !require_root("malformed_traffic_on_real_xdp_is_counted_like_offline_and_never_misread") {
        return;
    }
    let net = VethNs::create();
    quiet_ipv6(&net);
    let mut agent = start_agent(&net);
    let mut frames = malformed();
    let (sip, call_id, reason) = hostile_sip();
    frames.extend(sip);
    net.inject(&frames, Duration::ZERO);
    agent.wait_until("sip.register_failed", Duration::from_secs(30), |v| {
        v["event"]["action"] == "sip.register_failed"
    });
    assert_eq!(agent.stop(), 0);
    check_raw_lines(&agent);

    // Counted exactly as the offline engine counts the same frames.
    let stopped = agent.events.last().unwrap().clone();
    let want = offline_counters(&frames);
    for c in [
        Counter::Truncated,
        Counter::Malformed,
        Counter::Fragments,
        Counter::Unparsed,
        Counter::PortMatched,
        Counter::Heartbeats,
        Counter::NotHeartbeat,
    ] {
        assert_eq!(
            counter(&stopped, c),
            want[c as usize],
            "{c:?}: kernel vs offline ({})",
            stopped["heartbeat"]["counters"]
        );
    }
    assert!(counter(&stopped, Counter::Packets) >= frames.len() as u64);

    // What the datapath reported: associations coming up (cuts that kept the whole
    // heartbeat) and the SIP outcomes, never an anomaly.
    let events = agent.datapath_events();
    let odd: Vec<_> = events
        .iter()
        .filter(|e| {
            !matches!(
                e["event"]["action"].as_str(),
                Some("peer.up" | "sip.registered" | "sip.register_failed")
            )
        })
        .map(|e| e["message"].clone())
        .collect();
    assert!(odd.is_empty(), "{odd:#?}");
    let ups = events
        .iter()
        .filter(|e| e["event"]["action"] == "peer.up")
        .count() as u64;
    assert_eq!(
        ups,
        want[Counter::Heartbeats as usize] - 4,
        "one per intact cut (4 SIP)"
    );
    let reg = events
        .iter()
        .find(|e| e["event"]["action"] == "sip.registered")
        .unwrap();
    assert_eq!(reg["sip"]["call_id"].as_str(), Some(call_id.as_str()));
    let failed = events
        .iter()
        .find(|e| e["event"]["action"] == "sip.register_failed")
        .unwrap();
    assert_eq!(failed["sip"]["status"].as_str(), Some(reason.as_str()));
    assert_eq!(failed["sip"]["code"], 486);
}

/// Mutates `bases` (seeded) and sends each result out of the veth peer as fast as the
/// socket takes it: `max` frames, or fewer when `budget` runs out first (a slow VM);
/// returns how many went out. Frames that no longer fit Ethernet are skipped.
fn storm(net: &VethNs, bases: Vec<Vec<u8>>, max: usize, budget: Duration) -> usize {
    let (ns, peer) = (net.ns.clone(), net.peer.clone());
    std::thread::spawn(move || {
        enter_netns(&ns);
        let mut sock = PacketSocket::open(&peer).unwrap();
        let mut m = Mutator::new(7);
        let mut rng = Rng::new(7);
        let start = Instant::now();
        let mut sent = 0;
        while sent < max && (sent % 1024 != 0 || start.elapsed() < budget) {
            let base = &bases[rng.range(0, bases.len() as u64) as usize];
            let (f, _) = m.mutate(base);
            if (14..=1514).contains(&f.len()) {
                sock.send(&f).unwrap();
                sent += 1;
            }
        }
        sent
    })
    .join()
    .unwrap()
}

#[test]
fn mutation_storm_on_real_xdp_then_a_clean_gap_is_exact() {
    if !require_root("mutation_storm_on_real_xdp_then_a_clean_gap_is_exact") {
        return;
    }
    // 200k mutated heartbeats of every protocol (the demo story's frames, IPv4 and IPv6
    // tagged): bit flips, truncations, length lies, fragments, extension headers, VLAN
    // stacks, junk. Mutated and sent for at most 15 s (a slow VM sends fewer).
    const N: usize = 200_000;
    let mut bases = Vec::new();
    for o in [
        Default::default(),
        hbgen::scenario::Overrides {
            ipv6: true,
            vlan: Some(42),
            ..Default::default()
        },
    ] {
        let mut sc = Scenario::load("story").unwrap();
        sc.apply(&o).unwrap();
        bases.extend(generate(&sc).take_frames().into_iter().map(|f| f.data));
    }
    let net = VethNs::create();
    let mut agent = start_agent(&net);
    // Every line is checked for raw control characters as it comes; only what the
    // test asserts on is kept (agent events, the marker and the fresh association).
    agent.keep_only(|line, v| {
        if let Some(c) = line.chars().find(|c| c.is_control()) {
            panic!("raw control character {c:?} in {line:?}");
        }
        let action = v["event"]["action"].as_str().unwrap_or("");
        let ip = v["source"]["ip"].as_str().unwrap_or("");
        action.starts_with("agent.") || ["203.0.113.7", "203.0.113.9"].contains(&ip)
    });
    let started = Instant::now();
    let sent = storm(&net, bases, N, Duration::from_secs(15));
    let storm_s = started.elapsed().as_secs_f64();

    // The storm's records may still be queued (and some lost: the ring buffer holds
    // ~50k; a loss is reported, never silent). A marker association, sent again until
    // it comes up, shows everything before it was read.
    let marker = |i: u16| udp("203.0.113.9", 42000 + i, "203.0.113.10", 41000, &[0; 4]).build();
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0.. {
        net.inject(&[marker(i)], Duration::ZERO);
        let seen = agent.poll_until(Duration::from_secs(1), |v| {
            v["source"]["ip"] == "203.0.113.9" && v["event"]["action"] == "peer.up"
        });
        if seen.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent never caught up with the storm"
        );
    }
    let drained_s = started.elapsed().as_secs_f64();

    // A fresh MDS association after the storm: 0..=9 every 100 ms, then 17.
    let beat = |seq: u32| {
        udp(
            "203.0.113.7",
            41000,
            "203.0.113.8",
            41000,
            &seq.to_be_bytes(),
        )
        .build()
    };
    let mut clean: Vec<_> = (0..10u32)
        .map(|s| (Duration::from_millis(100 * s as u64), beat(s)))
        .collect();
    clean.push((Duration::from_millis(1000), beat(17)));
    net.inject_at(&clean);
    let fresh = |v: &Value| v["source"]["ip"] == "203.0.113.7";
    agent.wait_until(
        "the fresh association's gap",
        Duration::from_secs(60),
        |v| fresh(v) && v["event"]["action"] == "heartbeat.gap",
    );
    assert_eq!(
        agent.stop(),
        0,
        "the agent survived the storm and stopped cleanly"
    );

    let mine: Vec<&Value> = agent
        .datapath_events()
        .into_iter()
        .filter(|v| fresh(v))
        .collect();
    let actions: Vec<&str> = mine
        .iter()
        .map(|v| v["event"]["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["peer.up", "heartbeat.gap"], "{mine:#?}");
    let gap = mine[1];
    assert_eq!(gap["heartbeat"]["lost"], 7);
    assert_eq!(gap["heartbeat"]["expected_seq"], 10);
    assert_eq!(gap["heartbeat"]["seq"], 17);
    let stopped = agent.events.last().unwrap();
    let lost = counter(stopped, Counter::RingbufLost);
    let reported: u64 = agent
        .events
        .iter()
        .filter(|e| {
            e["event"]["action"] == "agent.events_lost"
                && e["heartbeat"]["where"] == "kernel-ringbuf"
        })
        .map(|e| e["heartbeat"]["lost"].as_u64().unwrap())
        .sum();
    assert_eq!(reported, lost, "every lost record reported");
    eprintln!(
        "storm: {sent} frames sent in {storm_s:.1} s, drained after {drained_s:.1} s; kernel saw {} \
         packets, lost {lost} records; {} events",
        counter(stopped, Counter::Packets),
        agent.received
    );
    assert!(counter(stopped, Counter::Packets) >= sent as u64);
}
