//! Ordinary traffic on exactly the heartbeat ports (`hbwatch hbgen --scenario quiet`): the
//! shapes that fooled port-only checks in the field (issue 20): a TFTP transfer whose
//! server port falls in the MDS range (516-byte DATA, 4-byte ACKs with incrementing block
//! numbers), G.711 RTP (20 ms, 172 bytes) with RTCP on the IPMG ports, STUN binding on the
//! RUDP port, a QUIC Initial on 5060, SNMP get/response on UDP 5000, DNS on UDP 2000.
//! None of it is a heartbeat: its truth expects no event.

use std::net::IpAddr;

use super::frame::FrameSpec;
use super::rng::Rng;
use super::truth::{Generated, Truth};
use super::TimedFrame;
use crate::rfc3339_micros;

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;

/// Scenario name for `--scenario`.
pub const SCENARIO: &str = "quiet";

/// (port class, server port) of each stream, for the docs and tests.
pub const STREAMS: [(&str, u16); 7] = [
    ("tftp on mds", 39893),
    ("rtp on cs1000-ipmg", 32780),
    ("rtcp on cs1000-ipmg", 32779),
    ("stun on cs1000-rudp", 15000),
    ("quic on sip", 5060),
    ("snmp on ged125 (udp)", 5000),
    ("dns on sccp (udp)", 2000),
];

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

struct Out {
    start: u64,
    end: u64,
    frames: Vec<TimedFrame>,
}

impl Out {
    #[allow(clippy::too_many_arguments)]
    fn udp(
        &mut self,
        t: u64,
        src: &str,
        sport: u16,
        dst: &str,
        dport: u16,
        p: &[u8],
        label: &'static str,
    ) {
        if t < self.end {
            self.frames.push(TimedFrame {
                ts_ns: self.start + t,
                data: FrameSpec::udp(ip(src), sport, ip(dst), dport, p).build(),
                label,
            });
        }
    }
}

/// TFTP RRQ to 69, then DATA blocks of 512 bytes from the server's transfer port
/// (39893, inside MDS 39500-39999), each ACKed (4 bytes: opcode 4, block), last one short.
fn tftp(o: &mut Out, rng: &mut Rng) {
    let (cli, srv) = ("10.90.0.20", "10.90.0.2");
    let mut rrq = vec![0, 1];
    rrq.extend_from_slice(b"SEP001122334455.cnf.xml\0octet\0");
    o.udp(0, cli, 50618, srv, 69, &rrq, "noise.tftp");
    let mut t = 5 * MS;
    for block in 1..=120u16 {
        let len = if block == 120 { 100 } else { 512 };
        let mut data = vec![0, 3];
        data.extend_from_slice(&block.to_be_bytes());
        data.extend((0..len).map(|_| rng.range(0x20, 0x7f) as u8));
        o.udp(t, srv, 39893, cli, 50618, &data, "noise.tftp");
        let mut ack = vec![0, 4];
        ack.extend_from_slice(&block.to_be_bytes());
        o.udp(t + 2 * MS, cli, 50618, srv, 39893, &ack, "noise.tftp");
        t += 3 * MS + rng.range(0, MS);
    }
}

/// A G.711 call leg: RTP every 20 ms (12-byte header + 160 bytes PCMU), RTCP SR every 5 s.
fn rtp(o: &mut Out, rng: &mut Rng) {
    let (a, b) = ("10.90.1.10", "10.90.1.20");
    let ssrc = rng.range(1, u32::MAX as u64) as u32;
    let (mut seq, mut ts) = (rng.range(0, 60000) as u16, rng.range(0, 1 << 30) as u32);
    let mut t = 0;
    while t < o.end {
        let mut p = vec![0x80, 0x00];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend((0..160).map(|_| 0xff ^ rng.range(0, 8) as u8));
        o.udp(t, a, 32780, b, 32780, &p, "noise.rtp");
        if t % (5 * SEC) < 20 * MS {
            // RTCP sender report: V=2, PT=200, length 6 words.
            let mut sr = vec![0x80, 200, 0, 6];
            sr.extend_from_slice(&ssrc.to_be_bytes());
            sr.extend_from_slice(&[0; 8]); // NTP timestamp
            sr.extend_from_slice(&ts.to_be_bytes());
            sr.extend_from_slice(&(seq as u32).to_be_bytes());
            sr.extend_from_slice(&(seq as u32 * 160).to_be_bytes());
            o.udp(t + MS, a, 32779, b, 32779, &sr, "noise.rtcp");
        }
        seq = seq.wrapping_add(1);
        ts = ts.wrapping_add(160);
        t += 20 * MS;
    }
}

/// STUN binding request (20 bytes) and success response with XOR-MAPPED-ADDRESS, every 2.5 s.
fn stun(o: &mut Out, rng: &mut Rng) {
    let (cli, srv) = ("10.90.2.10", "10.90.2.1");
    let mut t = 100 * MS;
    while t < o.end {
        let txid: Vec<u8> = (0..12).map(|_| rng.range(0, 256) as u8).collect();
        let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        req.extend_from_slice(&txid);
        o.udp(t, cli, 15000, srv, 15000, &req, "noise.stun");
        let mut resp = vec![0x01, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
        resp.extend_from_slice(&txid);
        resp.extend_from_slice(&[
            0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0x1d, 0x9a, 0x2b, 0x48, 0xa5, 0x48,
        ]);
        o.udp(t + 3 * MS, srv, 15000, cli, 15000, &resp, "noise.stun");
        t += 2500 * MS;
    }
}

/// QUIC v1 Initial packets (long header, padded to 1200 bytes) and the server's reply.
fn quic(o: &mut Out, rng: &mut Rng) {
    let (cli, srv) = ("10.90.3.10", "10.90.3.1");
    let mut t = 200 * MS;
    while t < o.end {
        let mut p = vec![0xc3, 0, 0, 0, 1, 8];
        p.extend((0..8).map(|_| rng.range(0, 256) as u8));
        p.push(0);
        p.push(0); // token length
        p.extend_from_slice(&[0x44, 0x9e]); // length 1182 (varint)
        p.extend((p.len()..1200).map(|_| rng.range(0, 256) as u8));
        o.udp(t, cli, 51000, srv, 5060, &p, "noise.quic");
        let reply: Vec<u8> = (0..300)
            .map(|i| {
                if i == 0 {
                    0xc0
                } else {
                    rng.range(0, 256) as u8
                }
            })
            .collect();
        o.udp(t + 15 * MS, srv, 5060, cli, 51000, &reply, "noise.quic");
        t += 4 * SEC;
    }
}

/// SNMPv2c get of sysUpTime and its response, every second, on UDP 5000.
fn snmp(o: &mut Out) {
    let (mgr, agent) = ("10.90.4.10", "10.90.4.1");
    let mut t = 300 * MS;
    let mut id: u8 = 1;
    while t < o.end {
        let oid = [0x06, 0x08, 0x2b, 6, 1, 2, 1, 1, 3, 0];
        let pdu = |tag: u8, value: &[u8]| {
            let mut vb = oid.to_vec();
            vb.extend_from_slice(value);
            let mut varbind = vec![0x30, vb.len() as u8];
            varbind.extend(vb);
            let mut list = vec![0x30, varbind.len() as u8];
            list.extend(varbind);
            let mut body = vec![0x02, 0x01, id, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00];
            body.extend(list);
            let mut pdu = vec![tag, body.len() as u8];
            pdu.extend(body);
            let mut msg = vec![0x02, 0x01, 0x01, 0x04, 0x06];
            msg.extend_from_slice(b"public");
            msg.extend(pdu);
            let mut out = vec![0x30, msg.len() as u8];
            out.extend(msg);
            out
        };
        o.udp(
            t,
            mgr,
            40500,
            agent,
            5000,
            &pdu(0xa0, &[0x05, 0x00]),
            "noise.snmp",
        );
        o.udp(
            t + 2 * MS,
            agent,
            5000,
            mgr,
            40500,
            &pdu(0xa2, &[0x43, 0x02, 0x12, id]),
            "noise.snmp",
        );
        id = id.wrapping_add(1);
        t += SEC;
    }
}

/// DNS A queries and answers with the server on UDP 2000, every 3 s.
fn dns(o: &mut Out, rng: &mut Rng) {
    let (cli, srv) = ("10.90.5.10", "10.90.5.1");
    let mut t = 400 * MS;
    while t < o.end {
        let id = rng.range(0, 65536) as u16;
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        q.extend_from_slice(b"\x04cucm\x07example\x03net\x00\x00\x01\x00\x01");
        o.udp(t, cli, 41000 + (t / SEC) as u16, srv, 2000, &q, "noise.dns");
        let mut a = q.clone();
        a[2] = 0x81;
        a[3] = 0x80;
        a[7] = 1;
        a.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4, 10, 70, 0, 1]);
        o.udp(
            t + MS,
            srv,
            2000,
            cli,
            41000 + (t / SEC) as u16,
            &a,
            "noise.dns",
        );
        t += 3 * SEC;
    }
}

/// The `quiet` capture: every stream above for `duration_ns`, and a truth expecting nothing.
pub fn generate(start_unix_ns: u64, duration_ns: u64, seed: u64) -> (Vec<TimedFrame>, Truth) {
    let root = Rng::new(seed);
    let mut o = Out {
        start: start_unix_ns,
        end: duration_ns,
        frames: Vec::new(),
    };
    tftp(&mut o, &mut root.fork("tftp"));
    rtp(&mut o, &mut root.fork("rtp"));
    stun(&mut o, &mut root.fork("stun"));
    quic(&mut o, &mut root.fork("quic"));
    snmp(&mut o);
    dns(&mut o, &mut root.fork("dns"));
    o.frames.sort_by_key(|f| f.ts_ns);
    let truth = Truth {
        version: 1,
        scenario: SCENARIO.to_string(),
        seed,
        start: rfc3339_micros(start_unix_ns as i128),
        start_unix_ns,
        end_unix_ns: start_unix_ns + duration_ns,
        associations: Vec::new(),
        faults: Vec::new(),
        generated: Generated::default(),
        expected: Vec::new(),
    };
    (o.frames, truth)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// UDP (dst port, payload length) of an untagged IPv4 frame.
    fn udp(f: &[u8]) -> (u16, u16, usize) {
        let sport = u16::from_be_bytes([f[34], f[35]]);
        let dport = u16::from_be_bytes([f[36], f[37]]);
        let len = u16::from_be_bytes([f[38], f[39]]) as usize - 8;
        (sport, dport, len)
    }

    #[test]
    fn every_port_class_gets_its_stream_in_the_shape_that_fooled_port_checks() {
        let (frames, truth) = generate(default_start(), 30 * SEC, 7);
        assert!(truth.expected.is_empty() && truth.associations.is_empty());
        for (what, port) in STREAMS {
            assert!(
                frames.iter().any(|f| {
                    let (s, d, _) = udp(&f.data);
                    s == port || d == port
                }),
                "no {what} on {port}"
            );
        }
        // TFTP ACKs: 4 bytes, block numbers 1, 2, 3... toward 39893.
        let acks: Vec<u16> = frames
            .iter()
            .filter(|f| f.label == "noise.tftp" && udp(&f.data).1 == 39893)
            .map(|f| u16::from_be_bytes([f.data[44], f.data[45]]))
            .collect();
        assert_eq!(acks, (1..=120).collect::<Vec<u16>>());
        // G.711: 172-byte RTP every 20 ms.
        let rtp: Vec<&TimedFrame> = frames.iter().filter(|f| f.label == "noise.rtp").collect();
        assert_eq!(rtp.len(), 1500);
        assert!(rtp.iter().all(|f| udp(&f.data).2 == 172));
        assert!(rtp.windows(2).all(|w| w[1].ts_ns - w[0].ts_ns == 20 * MS));
    }

    fn default_start() -> u64 {
        super::super::scenario::default_start_ns()
    }
}
