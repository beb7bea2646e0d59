//! CS1000 RUDP decoder and association transitions, with the byte values of the
//! seed (shared/seeds/cs1000-rudp-heartbeat.txt): 6-byte payload, u32 seq, flag
//! 0x02ff from the originating side and 0x0100 from the responder, in 60-byte frames.

use hbwatch_common::event::EventKind;
use hbwatch_common::flow::{Findings, FlowState};
use hbwatch_common::frame::SliceFrame;
use hbwatch_common::key::FlowKey;
use hbwatch_common::parse::{parse, Packet};
use hbwatch_common::proto::{rudp, Heartbeat, Protocol, Role};

fn hbv(role: Role, seq: u32) -> Heartbeat {
    Heartbeat::new(role, seq)
}

/// A 60-byte Ethernet/IPv4/UDP 15000->15000 frame carrying `payload`, zero padded.
fn frame(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    f.extend_from_slice(&[0x45, 46 << 2]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&15000u16.to_be_bytes());
    f.extend_from_slice(&15000u16.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f.resize(60, 0);
    f
}

fn decode(f: &[u8]) -> (Packet, Option<Heartbeat>) {
    let sf = SliceFrame(f);
    let pkt = parse(&sf).expect("parses");
    (pkt, rudp::decode(&sf, &pkt).and_then(|m| m.as_heartbeat()))
}

#[test]
fn originating_and_responding_flags() {
    let (pkt, hb) = decode(&frame(
        [10, 10, 10, 10],
        [10, 10, 20, 20],
        &[0, 0, 0x12, 0x34, 0x02, 0xff],
    ));
    assert_eq!(
        pkt.payload_len, 6,
        "length from UDP, not from the padded 60-byte frame"
    );
    assert_eq!(pkt.dscp, 46);
    assert_eq!(hb, Some(hbv(Role::Request, 0x1234)));
    let (_, hb) = decode(&frame(
        [10, 10, 20, 20],
        [10, 10, 10, 10],
        &[0, 0, 0x12, 0x34, 0x01, 0x00],
    ));
    assert_eq!(hb, Some(hbv(Role::Response, 0x1234)));
    assert_eq!(
        rudp::payload(0x1234, Role::Request),
        [0, 0, 0x12, 0x34, 0x02, 0xff]
    );
}

#[test]
fn other_payloads_are_not_heartbeats() {
    // Unknown flag, 5 and 7 byte payloads (padding must not be read as payload).
    for p in [
        &[0, 0, 0, 1, 0x02, 0x00][..],
        &[0, 0, 0, 1, 0x02][..],
        &[0, 0, 0, 1, 0x02, 0xff, 0][..],
    ] {
        let (_, hb) = decode(&frame([1, 1, 1, 1], [2, 2, 2, 2], p));
        assert_eq!(hb, None, "{p:02x?}");
    }
}

fn req(seq: u32) -> Heartbeat {
    Heartbeat::new(Role::Request, seq)
}
fn resp(seq: u32) -> Heartbeat {
    Heartbeat::new(Role::Response, seq)
}
fn kinds(f: &Findings) -> Vec<(EventKind, u32, u32, u64)> {
    f.iter().map(|x| (x.kind, x.seq, x.aux, x.value)).collect()
}

const SEC: u64 = 1_000_000_000;

#[test]
fn healthy_round_trips_are_silent_and_learn_interval_and_rtt() {
    let p = Protocol::Cs1000Rudp.default_params();
    let mut st = FlowState::new(&req(100), 0);
    for i in 0..10u64 {
        let seq = 100 + i as u32;
        let t = i * SEC;
        if i > 0 {
            assert!(kinds(&st.update(&req(seq), t, &p, false)).is_empty());
            assert_eq!(st.beat_ns, SEC, "the interval sample that goes up");
        }
        assert!(kinds(&st.update(&resp(seq), t + 2_000_000, &p, false)).is_empty());
        assert_eq!(st.beat_ns, 2_000_000, "the round trip that goes up");
    }
    assert_eq!((st.responses, st.last_seq), (10, 109));
    assert_eq!(st.interval_ns, SEC);
}

#[test]
fn gap_reports_lost_count_and_expected_seq() {
    let p = Protocol::Cs1000Rudp.default_params();
    let mut st = FlowState::new(&req(10), 0);
    st.update(&resp(10), 1_000, &p, false);
    let f = st.update(&req(14), SEC, &p, false);
    assert_eq!(kinds(&f), vec![(EventKind::Gap, 14, 11, 3)]);
    assert_eq!(st.last_seq, 14);
}

#[test]
fn retry_with_same_seq_reports_unanswered_once_and_each_attempt() {
    let p = Protocol::Cs1000Rudp.default_params();
    let mut st = FlowState::new(&req(7), 0);
    let f = st.update(&req(7), SEC, &p, false);
    assert_eq!(
        kinds(&f),
        vec![
            (EventKind::Unanswered, 7, 0, SEC),
            (EventKind::Retry, 7, 2, 0)
        ]
    );
    let f = st.update(&req(7), 2 * SEC, &p, false);
    assert_eq!(
        kinds(&f),
        vec![(EventKind::Retry, 7, 3, 0)],
        "unanswered only once per seq"
    );
    // The retry is answered: RTT is measured from the latest attempt.
    assert!(kinds(&st.update(&resp(7), 2 * SEC + 500, &p, false)).is_empty());
    assert_eq!(st.beat_ns, 500);
    assert!(kinds(&st.update(&req(8), 3 * SEC, &p, false)).is_empty());
}

#[test]
fn restart_to_unrelated_value_or_reset_marker() {
    let p = Protocol::Cs1000Rudp.default_params();
    let mut st = FlowState::new(&req(50_000), 0);
    st.update(&resp(50_000), 10, &p, false);
    let f = st.update(&req(3), SEC, &p, false);
    assert_eq!(kinds(&f), vec![(EventKind::Restart, 3, 50_000, 0)]);
    st.update(&resp(3), SEC + 10, &p, false);
    let f = st.update(&req(rudp::SEQ_RESET), 2 * SEC, &p, false);
    assert_eq!(kinds(&f), vec![(EventKind::Restart, rudp::SEQ_RESET, 3, 0)]);
    st.update(&resp(rudp::SEQ_RESET), 2 * SEC + 10, &p, false);
    // After the reset marker, 0 follows as the next sequence: in order.
    assert!(kinds(&st.update(&req(0), 3 * SEC, &p, false)).is_empty());
}

#[test]
fn unanswered_when_next_seq_arrives_and_orphan_response_is_a_mismatch() {
    let p = Protocol::Cs1000Rudp.default_params();
    let mut st = FlowState::new(&req(1), 0);
    let f = st.update(&req(2), SEC, &p, false);
    assert_eq!(kinds(&f), vec![(EventKind::Unanswered, 1, 0, SEC)]);
    let f = st.update(&resp(99), SEC + 5, &p, false);
    assert_eq!(kinds(&f), vec![(EventKind::Mismatch, 99, 0, 0)]);
    assert!(
        kinds(&st.update(&resp(99), SEC + 6, &p, false)).is_empty(),
        "reported once"
    );
    assert!(kinds(&st.update(&resp(2), SEC + 7, &p, false)).is_empty());
    let f = st.update(&resp(2), SEC + 8, &p, false);
    assert_eq!(
        kinds(&f),
        vec![(EventKind::OutOfOrder, 2, 3, 0)],
        "duplicate response"
    );
}

#[test]
fn older_seq_is_out_of_order_not_restart() {
    let p = Protocol::Cs1000Rudp.default_params();
    let mut st = FlowState::new(&req(20), 0);
    st.update(&resp(20), 10, &p, false);
    let f = st.update(&req(18), SEC, &p, false);
    assert_eq!(kinds(&f), vec![(EventKind::OutOfOrder, 18, 21, 0)]);
    assert_eq!(st.last_seq, 20, "the newest seq stays the reference");
}

#[test]
fn flow_key_points_from_originator_to_responder() {
    let (pkt, hb) = decode(&frame(
        [10, 0, 0, 2],
        [10, 0, 0, 1],
        &rudp::payload(5, Role::Response),
    ));
    let k = FlowKey::of(Protocol::Cs1000Rudp, &pkt, hb.unwrap().role);
    assert_eq!(&k.orig[..4], &[10, 0, 0, 1]);
    assert_eq!(&k.resp[..4], &[10, 0, 0, 2]);
}
