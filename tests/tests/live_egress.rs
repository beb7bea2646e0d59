//! TC egress: the host's own heartbeats (sent and answered by real kernel UDP sockets)
//! merge with what arrives on XDP ingress into one association per direction.

use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

use hbwatch_common::proto::{rudp, Role};
use hbwatch_tests::{require_root, summary, Agent, VethNs};

fn sh(args: &[&str]) {
    assert!(
        Command::new("ip").args(args).status().unwrap().success(),
        "ip {args:?}"
    );
}

/// One RUDP round for one peer: originate `seq`, echo the peer's request, and return
/// once both our echo arrived and we echoed theirs.
fn rudp_round(sock: &UdpSocket, peer: &str, seq: u32) {
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    sock.send_to(&rudp::payload(seq, Role::Request), peer)
        .unwrap();
    let (mut answered, mut echoed) = (false, false);
    let mut buf = [0u8; 64];
    while !(answered && echoed) {
        let (n, from) = sock.recv_from(&mut buf).unwrap();
        assert_eq!(n, 6);
        if buf[4..6] == rudp::FLAG_ORIGINATE.to_be_bytes() {
            let mut echo = [0u8; 6];
            echo.copy_from_slice(&buf[..6]);
            echo[4..].copy_from_slice(&rudp::FLAG_RESPOND.to_be_bytes());
            sock.send_to(&echo, from).unwrap();
            echoed = true;
        } else {
            assert_eq!(buf[..4], seq.to_be_bytes());
            answered = true;
        }
    }
}

#[test]
fn egress_and_ingress_merge_into_one_association_per_direction() {
    if !require_root("egress_and_ingress_merge_into_one_association_per_direction") {
        return;
    }
    let net = VethNs::create();
    sh(&["addr", "add", "10.99.0.1/24", "dev", &net.host]);
    sh(&[
        "-n",
        &net.ns,
        "addr",
        "add",
        "10.99.0.2/24",
        "dev",
        &net.peer,
    ]);
    let mut agent = Agent::start(&["--iface", &net.host, "--egress"]);

    // The device in the namespace echoes RUDP requests and originates its own.
    // Both ends are RUDP peers: each round, send our own request, echo the other's,
    // and wait for the echo of ours.
    let host = UdpSocket::bind("10.99.0.1:15000").unwrap();
    let ns = net.ns.clone();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let device = std::thread::spawn(move || {
        hbwatch_tests::enter_netns(&ns);
        let sock = UdpSocket::bind("10.99.0.2:15000").unwrap();
        ready_tx.send(()).unwrap();
        for i in 0..5u32 {
            rudp_round(&sock, "10.99.0.1:15000", 500 + i);
        }
    });
    ready.recv().unwrap();
    for i in 0..5u32 {
        rudp_round(&host, "10.99.0.2:15000", 40 + i);
        std::thread::sleep(Duration::from_millis(20));
    }
    device.join().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(agent.stop(), 0);

    // Both associations seen once, every request paired with its echo: nothing else
    // (no unanswered, no mismatch, no double counting). DSCP is 0 here, so each
    // association reports one qos.mismatch for its requests and one for its echoes.
    let mut got: Vec<_> = agent.datapath_events().into_iter().map(summary).collect();
    got.sort();
    let e = |a: &str, s: &str, d: &str, q: i64| (a.to_string(), s.to_string(), d.to_string(), q);
    let (h, d) = ("10.99.0.1:15000", "10.99.0.2:15000");
    let mut want = vec![
        e("peer.up", h, d, 40),
        e("qos.mismatch", h, d, 40),
        e("qos.mismatch", h, d, 40),
        e("peer.up", d, h, 500),
        e("qos.mismatch", d, h, 500),
        e("qos.mismatch", d, h, 500),
    ];
    want.sort();
    assert_eq!(got, want, "{:#?}", agent.datapath_events());
    let mut directions: Vec<_> = agent
        .heartbeat_events()
        .into_iter()
        .filter(|e| e["event"]["action"] == "qos.mismatch")
        .map(|e| e["heartbeat"]["direction"].as_str().unwrap().to_string())
        .collect();
    directions.sort();
    assert_eq!(directions, ["request", "request", "response", "response"]);
    let counters = &agent.events.last().unwrap()["heartbeat"]["counters"];
    assert_eq!(
        counters["heartbeats"], 20,
        "20 datagrams, each counted once: {counters}"
    );
}

/// TC egress of a TCP association: the host's own SCCP KeepAlives leave through its
/// TCP stack, which puts their payload in page fragments (a non-linear skb): the TC
/// program's paged reader must see them, the ingress acks pair with them.
#[test]
fn egress_tcp_keepalives_are_read_from_a_paged_skb() {
    use hbwatch_common::proto::sccp;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    if !require_root("egress_tcp_keepalives_are_read_from_a_paged_skb") {
        return;
    }
    let net = VethNs::create();
    sh(&["addr", "add", "10.98.0.1/24", "dev", &net.host]);
    sh(&[
        "-n",
        &net.ns,
        "addr",
        "add",
        "10.98.0.2/24",
        "dev",
        &net.peer,
    ]);
    let mut agent = Agent::start(&["--iface", &net.host, "--egress"]);

    // CUCM in the namespace acknowledges every KeepAlive.
    let ns = net.ns.clone();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let cucm = std::thread::spawn(move || {
        hbwatch_tests::enter_netns(&ns);
        let listener = TcpListener::bind("10.98.0.2:2000").unwrap();
        ready_tx.send(()).unwrap();
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_nodelay(true).unwrap();
        let mut msg = [0u8; 12];
        for _ in 0..5 {
            conn.read_exact(&mut msg).unwrap();
            assert_eq!(msg, sccp::message(Role::Request));
            conn.write_all(&sccp::message(Role::Response)).unwrap();
        }
    });
    ready.recv().unwrap();
    let mut phone = TcpStream::connect("10.98.0.2:2000").unwrap();
    phone.set_nodelay(true).unwrap();
    phone
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut ack = [0u8; 12];
    for _ in 0..5 {
        phone.write_all(&sccp::message(Role::Request)).unwrap();
        phone.read_exact(&mut ack).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    cucm.join().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(agent.stop(), 0);

    // The phone's association is announced by its first KeepAlive (seen only at egress),
    // every KeepAlive paired with its ack (no unanswered), and CUCM's close ends it.
    let got: Vec<(String, String)> = agent
        .datapath_events()
        .into_iter()
        .map(summary)
        .map(|(action, _, dst, _)| (action, dst))
        .collect();
    assert_eq!(
        got,
        [
            ("peer.up".to_string(), "10.98.0.2:2000".to_string()),
            ("session.closed".to_string(), "10.98.0.2:2000".to_string())
        ],
        "{:#?}",
        agent.datapath_events()
    );
    let counters = &agent.events.last().unwrap()["heartbeat"]["counters"];
    assert_eq!(
        counters["heartbeats"], 10,
        "5 KeepAlives (egress) and 5 acks (ingress), each counted once: {counters}"
    );
}
