//! Every seed heartbeat family through the real agent with XDP on a veth pair: GED-125
//! sessions, an MDS router pair, SCCP primary and backup CUCMs, IPMG liveness and SIP,
//! mixed with look-alike traffic on other ports and malformed frames. Asserts the exact
//! anomaly list per association; healthy stretches must stay silent.

use std::time::Duration;

use hbgen::frame::{FrameSpec, Tcp};
use hbwatch_common::parse::{TCP_ACK, TCP_PSH, TCP_RST};
use hbwatch_common::proto::{ged125, rudp, sccp, Role};
use hbwatch_tests::{addr, require_root, summary, Agent, VethNs};

/// One direction of a TCP connection: tracks its sequence number.
struct TcpSide {
    ip: &'static str,
    port: u16,
    seq: u32,
    ip_id: u16,
}

impl TcpSide {
    fn new(ip: &'static str, port: u16, seq: u32) -> TcpSide {
        TcpSide {
            ip,
            port,
            seq,
            ip_id: 0,
        }
    }

    fn segment(&mut self, to: &TcpSide, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = FrameSpec::udp(addr(self.ip), self.port, addr(to.ip), to.port, payload);
        // Every segment a new IP id, as Linux sends them: a re-sent one is no mirror copy.
        self.ip_id = self.ip_id.wrapping_add(1);
        f.ip_id = self.ip_id;
        f.tcp = Some(Tcp {
            seq: self.seq,
            ack: to.seq,
            flags,
            window: 502,
        });
        self.seq = self.seq.wrapping_add(payload.len() as u32);
        f.build()
    }

    fn data(&mut self, to: &TcpSide, payload: &[u8]) -> Vec<u8> {
        self.segment(to, TCP_PSH | TCP_ACK, payload)
    }
}

fn udp(src: &str, sport: u16, dst: &str, dport: u16, payload: &[u8]) -> Vec<u8> {
    FrameSpec::udp(addr(src), sport, addr(dst), dport, payload).build()
}

fn ev(action: &str, src: &str, dst: &str, seq: i64) -> (String, String, String, i64) {
    (action.to_string(), src.to_string(), dst.to_string(), seq)
}

#[test]
fn every_protocol_on_real_xdp() {
    if !require_root("every_protocol_on_real_xdp") {
        return;
    }
    let net = VethNs::create();
    // The frames go out 1 ms apart: MDS and IPMG are announced at their first beat here
    // (their plausibility rule has tests of its own: prog_test_run, hbwatch-common).
    let mut agent = Agent::start(&[
        "--iface",
        &net.host,
        "--port",
        "mds=41000",
        "--tune",
        "mds.confirm_beats=1",
        "--tune",
        "cs1000-ipmg.confirm_beats=1",
    ]);
    // Sent in batches 1 ms a frame, with a pause between batches: a request is
    // unanswered once the next one comes at least half an interval later; one re-sent
    // sooner (a quick TCP retransmission) is a retry only.
    let mut batches: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut frames: Vec<Vec<u8>> = Vec::new();

    // GED-125: PIM (TCP client) -> CVP:5000. OPEN_REQ, then heartbeats from the seed.
    let mut pim = TcpSide::new("10.20.0.5", 40001, 1000);
    let mut cvp = TcpSide::new("10.20.0.1", 5000, 9000);
    let mut open_req = Vec::new();
    for w in [12u32, 3, 0x11, 13, 60_000] {
        open_req.extend_from_slice(&w.to_be_bytes());
    }
    frames.push(pim.data(&cvp, &open_req));
    frames.push(cvp.segment(&pim, TCP_ACK, &[]));
    let mut invoke = 0xaa4c_06ccu32;
    // A batch per heartbeat: the interval is the pause, ~30 ms.
    for _ in 0..3 {
        frames.push(pim.data(&cvp, &ged125::message(Role::Request, invoke)));
        frames.push(cvp.data(&pim, &ged125::message(Role::Response, invoke)));
        batches.push(std::mem::take(&mut frames));
        invoke += 1;
    }
    // 0xaa4c06cf is never confirmed; the next REQ, a pause later, reveals it.
    frames.push(pim.data(&cvp, &ged125::message(Role::Request, invoke)));
    frames.push(cvp.segment(&pim, TCP_ACK, &[]));
    batches.push(std::mem::take(&mut frames));
    invoke += 1;
    frames.push(pim.data(&cvp, &ged125::message(Role::Request, invoke)));
    frames.push(cvp.data(&pim, &ged125::message(Role::Response, invoke)));
    batches.push(std::mem::take(&mut frames));
    invoke += 1;
    // 0xaa4c06d1 retransmitted by TCP (same sequence number) 1 ms later, then confirmed.
    let seq_before = pim.seq;
    frames.push(pim.data(&cvp, &ged125::message(Role::Request, invoke)));
    pim.seq = seq_before;
    frames.push(pim.data(&cvp, &ged125::message(Role::Request, invoke)));
    frames.push(cvp.data(&pim, &ged125::message(Role::Response, invoke)));
    batches.push(std::mem::take(&mut frames));
    // Three heartbeats never seen, then 0xaa4c06d5; the CONF shares a segment with a
    // call-control message.
    invoke += 4;
    frames.push(pim.data(&cvp, &ged125::message(Role::Request, invoke)));
    let mut conf_and_more = ged125::message(Role::Response, invoke).to_vec();
    conf_and_more.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 9, 0, 0, 0, 1]);
    frames.push(cvp.data(&pim, &conf_and_more));
    // CVP resets the session.
    frames.push(cvp.segment(&pim, TCP_RST | TCP_ACK, &[]));

    // MDS router pair: A counts little-endian, B big-endian, every 100 ms.
    for i in 0..10u32 {
        frames.push(udp(
            "10.50.0.1",
            41000,
            "10.50.0.2",
            41000,
            &i.to_le_bytes(),
        ));
        frames.push(udp(
            "10.50.0.2",
            41000,
            "10.50.0.1",
            41000,
            &(100 + i).to_be_bytes(),
        ));
    }
    // A loses 10..16, then its router process restarts at 0.
    frames.push(udp(
        "10.50.0.1",
        41000,
        "10.50.0.2",
        41000,
        &17u32.to_le_bytes(),
    ));
    frames.push(udp(
        "10.50.0.1",
        41000,
        "10.50.0.2",
        41000,
        &0u32.to_le_bytes(),
    ));
    frames.push(udp(
        "10.50.0.1",
        41000,
        "10.50.0.2",
        41000,
        &1u32.to_le_bytes(),
    ));

    // SCCP: a phone with a primary CUCM (KeepAliveAck) and a backup (TCP ACKs only).
    let mut phone_p = TcpSide::new("10.30.0.50", 51000, 100);
    let mut primary = TcpSide::new("10.30.0.10", 2000, 700);
    let mut phone_b = TcpSide::new("10.30.0.50", 51001, 300);
    let mut backup = TcpSide::new("10.30.0.11", 2000, 900);
    for _ in 0..3 {
        frames.push(phone_p.data(&primary, &sccp::message(Role::Request)));
        frames.push(primary.data(&phone_p, &sccp::message(Role::Response)));
        frames.push(phone_b.data(&backup, &sccp::message(Role::Request)));
        frames.push(backup.segment(&phone_b, TCP_ACK, &[]));
    }
    // The primary stops acknowledging: keepalive #4 is unanswered when #5 goes out.
    frames.push(phone_p.data(&primary, &sccp::message(Role::Request)));
    frames.push(primary.segment(&phone_p, TCP_ACK, &[]));
    // #5 after a pause.
    batches.push(std::mem::take(&mut frames));
    frames.push(phone_p.data(&primary, &sccp::message(Role::Request)));
    frames.push(primary.data(&phone_p, &sccp::message(Role::Response)));

    // IPMG liveness both ways.
    for _ in 0..3 {
        frames.push(udp(
            "10.60.0.2",
            32779,
            "10.60.0.1",
            32780,
            &[1, 2, 3, 4, 5, 6, 7, 8],
        ));
    }
    // SIP REGISTER refresh answered 200 OK: no anomaly.
    let register = "REGISTER sip:10.70.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.70.0.9:5060\r\nCall-ID: a@b\r\nCSeq: 101 REGISTER\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n";
    frames.push(udp(
        "10.70.0.9",
        5060,
        "10.70.0.1",
        5060,
        register.as_bytes(),
    ));
    let ok = "SIP/2.0 200 OK\r\nCall-ID: a@b\r\nCSeq: 101 REGISTER\r\nExpires: 120\r\nContent-Length: 0\r\n\r\n";
    frames.push(udp("10.70.0.1", 5060, "10.70.0.9", 5060, ok.as_bytes()));

    // Look-alikes: RUDP payload on another port, GED-125 bytes on another TCP port,
    // an INVITE on 5060, and malformed frames on heartbeat ports.
    frames.push(udp(
        "10.80.0.1",
        15001,
        "10.80.0.2",
        15001,
        &rudp::payload(5, Role::Request),
    ));
    let mut other = TcpSide::new("10.80.0.3", 40100, 1);
    let web = TcpSide::new("10.80.0.4", 8080, 1);
    frames.push(other.data(&web, &ged125::message(Role::Request, 1)));
    frames.push(udp(
        "10.70.0.9",
        5060,
        "10.70.0.1",
        5060,
        b"INVITE sip:x SIP/2.0\r\n\r\n",
    ));
    let good = udp(
        "10.90.0.1",
        15000,
        "10.90.0.2",
        15000,
        &rudp::payload(1, Role::Request),
    );
    frames.push(good[..40].to_vec());
    let mut bad_len = good.clone();
    bad_len[14 + 20 + 5] = 200; // UDP length beyond the IP packet
    frames.push(bad_len);
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x4f; // IHL 15 reaching past the frame
    frames.push(bad_ihl);

    batches.push(frames);
    for batch in &batches {
        net.inject(batch, Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(30));
    }
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(agent.stop(), 0);

    let got: Vec<_> = agent.datapath_events().into_iter().map(summary).collect();
    let pim_ep = "10.20.0.5:40001";
    let cvp_ep = "10.20.0.1:5000";
    let (a, b) = ("10.50.0.1:41000", "10.50.0.2:41000");
    let want = vec![
        ev("peer.up", pim_ep, cvp_ep, 0xaa4c_06cc),
        ev("heartbeat.unanswered", pim_ep, cvp_ep, 0xaa4c_06cf),
        // Re-sent by TCP (a new IP id) and then answered: a retry, not unanswered.
        ev("heartbeat.retry", pim_ep, cvp_ep, 0xaa4c_06d1),
        ev("heartbeat.gap", pim_ep, cvp_ep, 0xaa4c_06d5),
        ev("session.closed", pim_ep, cvp_ep, 0xaa4c_06d5),
        ev("peer.up", a, b, 0),
        ev("peer.up", b, a, 100),
        ev("heartbeat.gap", a, b, 17),
        ev("heartbeat.restart", a, b, 0),
        ev("peer.up", "10.30.0.50:51000", "10.30.0.10:2000", 1),
        ev("peer.up", "10.30.0.50:51001", "10.30.0.11:2000", 1),
        ev(
            "heartbeat.unanswered",
            "10.30.0.50:51000",
            "10.30.0.10:2000",
            4,
        ),
        ev("peer.up", "10.60.0.2:32779", "10.60.0.1:32780", 1),
    ];
    assert_eq!(got, want, "events: {:#?}", agent.datapath_events());

    let find = |action: &str, src: &str| {
        agent
            .heartbeat_events()
            .into_iter()
            .find(|e| e["event"]["action"] == action && summary(e).1 == src)
            .unwrap()
            .clone()
    };
    let closed = find("session.closed", pim_ep);
    assert_eq!(closed["heartbeat"]["reset"], true);
    assert_eq!(closed["heartbeat"]["closed_by"], "destination");
    assert_eq!(closed["network"]["protocol"], "ged125");
    assert_eq!(closed["network"]["transport"], "tcp");
    let gap = find("heartbeat.gap", pim_ep);
    assert_eq!(gap["heartbeat"]["lost"], 3);
    assert_eq!(find("heartbeat.retry", pim_ep)["heartbeat"]["attempt"], 2);
    let mds_gap = find("heartbeat.gap", a);
    assert_eq!(mds_gap["heartbeat"]["expected_seq"], 10);
    assert_eq!(mds_gap["heartbeat"]["lost"], 7);
    assert_eq!(mds_gap["network"]["protocol"], "mds");
    assert_eq!(
        find("heartbeat.restart", a)["heartbeat"]["previous_seq"],
        17
    );

    let counters = &agent.events.last().unwrap()["heartbeat"]["counters"];
    assert_eq!(counters["truncated"], 1, "{counters}");
    assert_eq!(counters["malformed"], 2, "{counters}");
    assert_eq!(counters["ringbuf_lost"], 0);
    assert_eq!(net.host_xdp(), None);
}
