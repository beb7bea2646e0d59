//! IP-fragmented SIP over UDP, through `hbwatch analyze`: a phone whose every REGISTER
//! leaves as IPv4 fragments (the shape of a Cisco phone with many headers behind a small
//! MTU), answered once, then refreshed into silence. Without reassembly hbwatch saw only
//! the 200 OK and missed the unanswered refresh.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;
/// 2026-11-22T10:00:00Z.
const T0: u64 = 1_795_341_600 * SEC;

const PHONE: [u8; 4] = [10, 30, 0, 50];
const CUCM: [u8; 4] = [10, 30, 0, 10];

/// Ethernet + IPv4 carrying `l4` (a whole datagram's share at byte `offset`).
fn ipv4(id: u16, offset: usize, more: bool, src: [u8; 4], dst: [u8; 4], l4: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00, 0x45, 0];
    f.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    f.extend_from_slice(&id.to_be_bytes());
    let flags = (offset / 8) as u16 | if more { 0x2000 } else { 0 };
    f.extend_from_slice(&flags.to_be_bytes());
    f.extend_from_slice(&[64, 17, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(l4);
    f.resize(f.len().max(60), 0);
    f
}

fn udp(payload: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend_from_slice(&5060u16.to_be_bytes());
    d.extend_from_slice(&5060u16.to_be_bytes());
    d.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    d
}

/// The datagram as fragments of at most 552 bytes (a 576-byte MTU), in wire order.
fn fragments(id: u16, src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<Vec<u8>> {
    let d = udp(payload);
    d.chunks(552)
        .enumerate()
        .map(|(i, part)| {
            let offset = i * 552;
            ipv4(id, offset, offset + part.len() < d.len(), src, dst, part)
        })
        .collect()
}

const HDRS: &str = "Via: SIP/2.0/UDP 10.30.0.50:5060;branch=z9hG4bK-";

/// A Cisco-style REGISTER padded with the headers real phones send (well over 1 KB).
fn register(cseq: u32) -> String {
    let mut m = format!(
        "REGISTER sip:10.30.0.10 SIP/2.0\r\n{HDRS}{cseq}\r\nFrom: <sip:1001@10.30.0.10>;tag=ab\r\n\
         To: <sip:1001@10.30.0.10>\r\nCall-ID: 00112233-reg@10.30.0.50\r\nCSeq: {cseq} REGISTER\r\n\
         Contact: <sip:1001@10.30.0.50:5060;transport=udp>;+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-001122334455>\"\r\n\
         Expires: 120\r\nContent-Length: 0\r\n"
    );
    let mut i = 0;
    while m.len() < 1350 {
        m.push_str(&format!("X-Cisco-Padding-{i}: {}\r\n", "x".repeat(60)));
        i += 1;
    }
    m.push_str("\r\n");
    m
}

fn ok(cseq: u32) -> String {
    format!(
        "SIP/2.0 200 OK\r\n{HDRS}{cseq}\r\nFrom: <sip:1001@10.30.0.10>;tag=ab\r\n\
         To: <sip:1001@10.30.0.10>;tag=cd\r\nCall-ID: 00112233-reg@10.30.0.50\r\n\
         CSeq: {cseq} REGISTER\r\nContact: <sip:1001@10.30.0.50:5060;transport=udp>;expires=120\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

fn pcap(frames: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&4u16.to_le_bytes());
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(&65535u32.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    for (t, f) in frames {
        let t = T0 + t;
        b.extend_from_slice(&((t / SEC) as u32).to_le_bytes());
        b.extend_from_slice(&((t % SEC / 1000) as u32).to_le_bytes());
        b.extend_from_slice(&(f.len() as u32).to_le_bytes());
        b.extend_from_slice(&(f.len() as u32).to_le_bytes());
        b.extend_from_slice(f);
    }
    b
}

fn analyze(name: &str, frames: &[(u64, Vec<u8>)]) -> Vec<Value> {
    let dir = std::env::temp_dir().join(format!("hbwatch-fragments-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path: PathBuf = dir.join(name);
    std::fs::write(&path, pcap(frames)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hbwatch"))
        .args(["analyze", "--no-summary-events", "--hostname", "probe"])
        .arg(&path)
        .output()
        .expect("run hbwatch analyze");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect()
}

fn action(e: &Value) -> &str {
    e["event"]["action"].as_str().unwrap_or("")
}

/// The phone registers (fragmented REGISTER, small 200 OK), refreshes after 115 s and
/// retransmits the refresh per RFC 3261 Timer E until Timer F (32 s), never answered.
fn phone(reverse_fragments: bool) -> Vec<(u64, Vec<u8>)> {
    let mut frames = Vec::new();
    let mut id = 100u16;
    let mut send = |frames: &mut Vec<(u64, Vec<u8>)>, t: u64, cseq: u32| {
        id += 1;
        let mut parts = fragments(id, PHONE, CUCM, register(cseq).as_bytes());
        if reverse_fragments {
            parts.reverse();
        }
        for (i, f) in parts.into_iter().enumerate() {
            frames.push((t + i as u64 * 20_000, f));
        }
    };
    send(&mut frames, 0, 1);
    frames.push((
        40 * MS,
        ipv4(7, 0, false, CUCM, PHONE, &udp(ok(1).as_bytes())),
    ));
    for t_ms in [
        0u64, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500,
    ] {
        send(&mut frames, 115 * SEC + t_ms * MS, 2);
    }
    // Other traffic goes on (a DNS query): the capture's clock passes the refresh's
    // timeout (Timer F, 32 s) and the lifetime.
    let mut dns = vec![0x30, 0x39, 0, 53, 0, 20, 0, 0];
    dns.extend_from_slice(&[0; 12]);
    frames.push((170 * SEC, ipv4(999, 0, false, PHONE, CUCM, &dns)));
    frames
}

#[test]
fn fragmented_registers_are_reassembled_and_an_unanswered_refresh_is_seen() {
    for reverse in [false, true] {
        let evs = analyze(&format!("frag-{reverse}.pcap"), &phone(reverse));
        let what = if reverse {
            "last fragment first"
        } else {
            "in order"
        };
        let registered: Vec<_> = evs
            .iter()
            .filter(|e| action(e) == "sip.registered")
            .collect();
        assert_eq!(registered.len(), 1, "{what}: {evs:#?}");
        assert_eq!(registered[0]["sip"]["call_id"], "00112233-reg@10.30.0.50");
        // The refresh (CSeq 2) is never answered: the registration lapses, said by an alert.
        let alerts: Vec<_> = evs
            .iter()
            .filter(|e| e["event"]["kind"] == "alert")
            .map(action)
            .collect();
        assert!(
            alerts
                .iter()
                .any(|a| *a == "sip.expired" || *a == "heartbeat.unanswered"),
            "{what}: the unanswered refresh must be reported: {alerts:?}"
        );
    }
}
