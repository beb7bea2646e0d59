//! Decoders and the whole per-packet pipeline (`engine::process`) for every heartbeat
//! family of PROTOCOLS.md: GED-125, SCCP, ICM MDS, CS1000 IPMG, SIP, plus the TCP
//! keepalive probe and the DSCP check. Frames are built by hand (Ethernet/IPv4, padded
//! to 60 bytes like on the wire) and run through a small `Env` over std collections,
//! exactly as the kernel runs them through its maps.

use std::collections::HashMap;

use hbwatch_common::counters::{Counter, COUNTER_COUNT};
use hbwatch_common::engine::{process, Env};
use hbwatch_common::event::{EventKind, RawEvent, BEAT_PAIRED};
use hbwatch_common::flow::{Findings, FlowState, QOS_FROM_RESPONDER};
use hbwatch_common::frag::{FragInfo, FragKey};
use hbwatch_common::frame::{Frame, SliceFrame};
use hbwatch_common::key::FlowKey;
use hbwatch_common::params::ProtoParams;
use hbwatch_common::parse::{parse, Packet, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN};
use hbwatch_common::proto::{
    self, mgcp, port_slot, rudp, sip, Heartbeat, Msg, Protocol, Role, MSG_HEARTBEAT, MSG_PARAMS,
};

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;
const TCP: u8 = 6;
const UDP: u8 = 17;

// ---------------------------------------------------------------------------------
// Frames

/// An IPv4 address and a port.
type Ep = ([u8; 4], u16);

const PIM: Ep = ([10, 0, 1, 10], 40123);
const CVP: Ep = ([10, 0, 2, 20], 5000);
const PHONE: Ep = ([10, 0, 3, 30], 51234);
const CUCM: Ep = ([10, 0, 4, 40], 2000);

fn be(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_be_bytes()).collect()
}

fn le(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Ethernet + IPv4 (no options) around an L4 segment, padded to 60 bytes.
fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], dscp: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&[0x08, 0x00, 0x45, dscp << 2]);
    f.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(l4);
    f.resize(f.len().max(60), 0);
    f
}

fn udp(src: Ep, dst: Ep, dscp: u8, payload: &[u8]) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&src.1.to_be_bytes());
    l4.extend_from_slice(&dst.1.to_be_bytes());
    l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    l4.extend_from_slice(&[0, 0]);
    l4.extend_from_slice(payload);
    ipv4(UDP, src.0, dst.0, dscp, &l4)
}

fn tcp(src: Ep, dst: Ep, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&src.1.to_be_bytes());
    l4.extend_from_slice(&dst.1.to_be_bytes());
    l4.extend_from_slice(&seq.to_be_bytes());
    l4.extend_from_slice(&[0, 0, 0, 1, 5 << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
    l4.extend_from_slice(payload);
    ipv4(TCP, src.0, dst.0, 0, &l4)
}

/// One TCP connection: each side's next sequence number advances with its data.
struct Conn {
    client: Ep,
    server: Ep,
    cseq: u32,
    sseq: u32,
}

impl Conn {
    fn new(client: Ep, server: Ep) -> Conn {
        Conn {
            client,
            server,
            cseq: 1_000,
            sseq: 700_000,
        }
    }
    /// Client data (PSH,ACK).
    fn c(&mut self, payload: &[u8]) -> Vec<u8> {
        let f = tcp(
            self.client,
            self.server,
            self.cseq,
            TCP_PSH | TCP_ACK,
            payload,
        );
        self.cseq += payload.len() as u32;
        f
    }
    /// Server data (PSH,ACK).
    fn s(&mut self, payload: &[u8]) -> Vec<u8> {
        let f = tcp(
            self.server,
            self.client,
            self.sseq,
            TCP_PSH | TCP_ACK,
            payload,
        );
        self.sseq += payload.len() as u32;
        f
    }
    /// Client segment at an explicit sequence number (re-sends, probes).
    fn c_at(&self, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        tcp(self.client, self.server, seq, flags, payload)
    }
    /// Bare server segment (ACK, RST) at its next sequence number.
    fn s_bare(&self, flags: u8) -> Vec<u8> {
        tcp(self.server, self.client, self.sseq, flags, &[])
    }
}

fn pkt(f: &[u8]) -> Packet {
    parse(&SliceFrame(f)).expect("parses")
}

fn decode(proto: Protocol, f: &[u8]) -> Option<Msg> {
    let sf = SliceFrame(f);
    proto::decode(proto, &sf, &parse(&sf).expect("parses"))
}

fn hb(proto: Protocol, f: &[u8]) -> Option<Heartbeat> {
    decode(proto, f).and_then(|m| m.as_heartbeat())
}

fn kinds(f: &Findings) -> Records {
    f.iter().map(|x| (x.kind, x.seq, x.aux, x.value)).collect()
}

// ---------------------------------------------------------------------------------
// A test Env: the kernel's maps as std collections.

#[derive(Default)]
struct TestEnv {
    ports: HashMap<u32, u8>,
    flows: HashMap<FlowKey, FlowState>,
    events: Vec<RawEvent>,
    /// Payload bytes of each `emit_payload` (SIP), in emit order.
    captures: Vec<Vec<u8>>,
    counters: [u64; COUNTER_COUNT as usize],
    frags: HashMap<FragKey, FragInfo>,
    /// Routine heartbeats are held (`P_HOLD_ROUTINE`), as the live agent has it.
    hold: bool,
    /// What userspace says it took of each hold (`ACKS`).
    acks: HashMap<FlowKey, u16>,
    /// The `Beats` records, whole.
    batches: Vec<hbwatch_common::event::HeldBatch>,
    /// What the records told userspace of heartbeats, all along (`take` keeps it).
    told: Told,
}

/// Heartbeats as userspace counts them from the records: requests or one-way beats
/// (an announcement or a `Heartbeat`), answers paired with their round trips, re-sends.
#[derive(Debug, Default, PartialEq)]
struct Told {
    requests: u64,
    rtts: Vec<u64>,
    retries: u64,
}

impl Told {
    fn note(&mut self, ev: &RawEvent) {
        let role = ev.aux & 0xff;
        let originated = role == Role::Request as u32 || role == Role::OneWay as u32;
        match EventKind::from_u8(ev.kind) {
            Some(EventKind::AssociationSeen) if originated => self.requests += 1,
            Some(EventKind::Heartbeat) if originated => self.requests += 1,
            Some(EventKind::Heartbeat) if ev.aux & BEAT_PAIRED != 0 => self.rtts.push(ev.value),
            Some(EventKind::Retry) => self.retries += 1,
            _ => {}
        }
    }

    /// (requests, answers paired, re-sends).
    fn counts(&self) -> (u64, usize, u64) {
        (self.requests, self.rtts.len(), self.retries)
    }
}

impl TestEnv {
    fn with(ports: &[(u8, u16, Protocol)]) -> TestEnv {
        let mut env = TestEnv::default();
        for &(transport, port, p) in ports {
            env.ports.insert(port_slot(transport, port), p as u8);
        }
        env
    }
    fn feed(&mut self, frame: &[u8], now: u64) {
        process(&SliceFrame(frame), self, now, 3);
    }
    /// Records emitted since the last call, but the per-heartbeat `Heartbeat` records
    /// (timer input, checked on their own below).
    fn take(&mut self) -> Records {
        self.events
            .drain(..)
            .map(|e| (EventKind::from_u8(e.kind).unwrap(), e.seq, e.aux, e.value))
            .filter(|r| r.0 != EventKind::Heartbeat)
            .collect()
    }
    fn counter(&self, c: Counter) -> u64 {
        self.counters[c as usize]
    }
}

impl Env for TestEnv {
    fn port_proto(&self, slot: u32) -> u8 {
        self.ports.get(&slot).copied().unwrap_or(0)
    }
    fn params(&self, proto: Protocol) -> ProtoParams {
        let mut p = proto.default_params();
        if self.hold {
            p.flags |= hbwatch_common::params::P_HOLD_ROUTINE;
        }
        p
    }
    fn with_flow<R, U: FnOnce(&mut FlowState) -> R>(&mut self, key: &FlowKey, f: U) -> Option<R> {
        self.flows.get_mut(key).map(f)
    }
    fn insert_flow<U: FnOnce(&mut FlowState)>(&mut self, key: &FlowKey, init: U) -> bool {
        let mut st = FlowState::default();
        init(&mut st);
        self.flows.insert(*key, st);
        true
    }
    fn remove_flow(&mut self, key: &FlowKey) {
        self.flows.remove(key);
    }
    fn emit<U: FnOnce(&mut RawEvent)>(&mut self, fill: U) -> bool {
        let mut ev = RawEvent::default();
        fill(&mut ev);
        self.told.note(&ev);
        self.events.push(ev);
        true
    }
    fn emit_payload<F: Frame, U: FnOnce(&mut RawEvent)>(
        &mut self,
        fill: U,
        f: &F,
        off: usize,
        len: usize,
    ) -> bool {
        let mut ev = RawEvent::default();
        fill(&mut ev);
        let mut buf = [0u8; sip::CAPTURE_LEN];
        let n = sip::copy_payload(f, off, len, &mut buf);
        self.events.push(ev);
        self.captures.push(buf[..n].to_vec());
        true
    }
    fn emit_held<U: FnOnce(&mut RawEvent)>(&mut self, key: &FlowKey, fill: U) -> bool {
        let Some(st) = self.flows.get_mut(key) else {
            return false;
        };
        fill(&mut st.held.hdr);
        let b = *st.take_held();
        self.events.push(b.hdr);
        self.batches.push(b);
        true
    }
    fn held_ack(&mut self, key: &FlowKey) -> Option<u16> {
        self.acks.get(key).copied()
    }
    fn count(&mut self, c: Counter) {
        self.counters[c as usize] += 1;
    }
    fn frag_get(&mut self, key: &FragKey) -> Option<FragInfo> {
        self.frags.get(key).copied()
    }
    fn frag_put(&mut self, key: &FragKey, info: &FragInfo) {
        self.frags.insert(*key, *info);
    }
}

fn assert_key(k: &FlowKey, orig: Ep, resp: Ep, p: Protocol, transport: u8) {
    assert_eq!(&k.orig[..4], &orig.0, "originator address");
    assert_eq!(&k.resp[..4], &resp.0, "responder address");
    assert_eq!((k.orig_port, k.resp_port), (orig.1, resp.1), "ports");
    assert_eq!((k.proto, k.family, k.transport), (p as u8, 4, transport));
}

// ---------------------------------------------------------------------------------
// 1. GED-125 (TCP 5000, BE: u32 body length, u32 type, body)

const SEED_REQ: [u8; 12] = [0, 0, 0, 4, 0, 0, 0, 5, 0xaa, 0x4c, 0x06, 0xcc];

fn ged(payload: &[u8]) -> Option<Msg> {
    decode(
        Protocol::Ged125,
        &tcp(PIM, CVP, 1, TCP_PSH | TCP_ACK, payload),
    )
}

fn ged_env() -> TestEnv {
    TestEnv::with(&[(TCP, 5000, Protocol::Ged125)])
}

#[test]
fn ged125_seed_heartbeat_is_a_request_and_conf_a_response() {
    let m = ged(&SEED_REQ).expect("seed heartbeat");
    assert_eq!(m.kind, MSG_HEARTBEAT);
    assert_eq!(
        m.as_heartbeat(),
        Some(Heartbeat::new(Role::Request, 0xaa4c06cc))
    );
    let conf = tcp(CVP, PIM, 9, TCP_PSH | TCP_ACK, &be(&[4, 6, 0xaa4c06cc]));
    assert_eq!(
        hb(Protocol::Ged125, &conf),
        Some(Heartbeat::new(Role::Response, 0xaa4c06cc))
    );
    assert_eq!(
        proto::ged125::message(Role::Request, 0xaa4c06cc),
        SEED_REQ,
        "generator matches the seed bytes"
    );
}

#[test]
fn ged125_heartbeat_shares_a_segment_with_other_messages() {
    // CONF first, then a 16-byte call-control message.
    let mut seg = be(&[4, 6, 0x1234_5678]);
    seg.extend(be(&[8, 20, 1, 2]));
    let got = ged(&seg).and_then(|m| m.as_heartbeat());
    assert_eq!(got, Some(Heartbeat::new(Role::Response, 0x1234_5678)));
    // A 12-byte non-heartbeat (len 4, type 9) first, then the REQ.
    let mut seg = be(&[4, 9, 77]);
    seg.extend_from_slice(&SEED_REQ);
    let got = ged(&seg).and_then(|m| m.as_heartbeat());
    assert_eq!(got, Some(Heartbeat::new(Role::Request, 0xaa4c06cc)));
}

#[test]
fn ged125_open_req_announces_idle_timeout_ms() {
    // OPEN_REQ body: InvokeID, VersionNumber, IdleTimeout (ms).
    let m = ged(&be(&[12, 3, 0x11, 11, 15_000])).expect("OPEN_REQ");
    assert_eq!(m.kind, MSG_PARAMS);
    assert_eq!((m.value, m.role()), (15_000, Role::Request));
    assert_eq!(m.as_heartbeat(), None);
}

#[test]
fn ged125_other_messages_are_not_heartbeats() {
    for ty in [1, 2, 3, 4, 7, 8, 9, 49] {
        assert_eq!(ged(&be(&[4, ty, 0xaa4c06cc])), None, "12-byte type {ty}");
    }
    // FAILURE_EVENT with a status body.
    assert_eq!(ged(&be(&[8, 2, 0xaa4c06cc, 5])), None, "FAILURE_EVENT");
    // Length field longer than the whole segment.
    assert_eq!(ged(&be(&[0x100, 5, 0xaa4c06cc])), None, "length > segment");
    // Header of a heartbeat whose InvokeID is in the next segment.
    assert_eq!(ged(&be(&[4, 5])), None, "split heartbeat");
}

#[test]
fn ged125_seed_sequence_every_5s_is_healthy_and_learns_5s() {
    let p = Protocol::Ged125.default_params();
    let req = |id: u32| {
        hb(
            Protocol::Ged125,
            &tcp(PIM, CVP, 1, TCP_PSH | TCP_ACK, &be(&[4, 5, id])),
        )
        .unwrap()
    };
    let conf = |id: u32| {
        hb(
            Protocol::Ged125,
            &tcp(CVP, PIM, 1, TCP_PSH | TCP_ACK, &be(&[4, 6, id])),
        )
        .unwrap()
    };
    let mut st = FlowState::new(&req(0xaa4c06cc), 0);
    assert!(kinds(&st.update(&conf(0xaa4c06cc), 3 * MS, &p, false)).is_empty());
    for (i, id) in [0xaa4c06cd, 0xaa4c06ce].into_iter().enumerate() {
        let t = (i as u64 + 1) * 5 * SEC;
        assert!(
            kinds(&st.update(&req(id), t, &p, false)).is_empty(),
            "{id:x}"
        );
        assert_eq!(st.beat_ns, 5 * SEC, "the interval sample that goes up");
        assert!(kinds(&st.update(&conf(id), t + 3 * MS, &p, false)).is_empty());
        assert_eq!(st.beat_ns, 3 * MS, "the round trip that goes up");
    }
    assert_eq!(st.interval_ns, 5 * SEC);
    assert_eq!((st.last_seq, st.responses, st.attempts), (0xaa4c06ce, 3, 0));
}

#[test]
fn ged125_engine_session_is_one_association_pim_to_cvp() {
    let mut env = ged_env();
    let mut c = Conn::new(PIM, CVP);
    for (i, id) in [0xaa4c06ccu32, 0xaa4c06cd, 0xaa4c06ce]
        .into_iter()
        .enumerate()
    {
        let t = i as u64 * 5 * SEC;
        env.feed(&c.c(&be(&[4, 5, id])), t);
        env.feed(&c.s(&be(&[4, 6, id])), t + 2 * MS);
        env.feed(&c.c_at(c.cseq, TCP_ACK, &[]), t + 3 * MS);
    }
    let evs = env.events.clone();
    assert_eq!(
        env.take(),
        vec![(EventKind::AssociationSeen, 0xaa4c06cc, 1, 0)]
    );
    assert_key(&evs[0].key, PIM, CVP, Protocol::Ged125, TCP);
    assert_eq!(env.flows.len(), 1);
    let st = env.flows.values().next().unwrap();
    assert_eq!((st.responses, st.interval_ns), (3, 5 * SEC));
    assert_eq!(env.told.counts(), (3, 3, 0));
    assert_eq!(env.told.rtts, [2 * MS; 3]);
    assert_eq!(env.counter(Counter::Heartbeats), 6);
}

#[test]
fn ged125_engine_resent_req_is_retry_and_unanswered() {
    let mut env = ged_env();
    let mut c = Conn::new(PIM, CVP);
    let seq = c.cseq;
    env.feed(&c.c(&SEED_REQ), 0);
    env.feed(&c.c_at(seq, TCP_PSH | TCP_ACK, &SEED_REQ), SEC);
    assert_eq!(
        env.take(),
        vec![
            (EventKind::AssociationSeen, 0xaa4c06cc, 1, 0),
            (EventKind::Unanswered, 0xaa4c06cc, 0, SEC),
            (EventKind::Retry, 0xaa4c06cc, 2, 0),
        ]
    );
}

#[test]
fn ged125_engine_rst_from_cvp_closes_and_next_heartbeat_reopens() {
    let mut env = ged_env();
    let mut c = Conn::new(PIM, CVP);
    env.feed(&c.c(&SEED_REQ), 0);
    env.feed(&c.s(&be(&[4, 6, 0xaa4c06cc])), 2 * MS);
    assert_eq!(env.take().len(), 1, "AssociationSeen");
    env.feed(&c.s_bare(TCP_RST | TCP_ACK), SEC);
    let evs = env.events.clone();
    assert_eq!(
        env.take(),
        vec![(EventKind::SessionClosed, 0xaa4c06cc, 1, 1)],
        "aux 1 = reset, value 1 = closed by the responder"
    );
    assert_key(&evs[0].key, PIM, CVP, Protocol::Ged125, TCP);
    assert!(env.flows.is_empty(), "association forgotten");
    // A new session (new ISN) starts a fresh association.
    let mut c = Conn::new(PIM, CVP);
    c.cseq = 9_000_000;
    env.feed(&c.c(&be(&[4, 5, 0xaa4c06cd])), 20 * SEC);
    assert_eq!(
        env.take(),
        vec![(EventKind::AssociationSeen, 0xaa4c06cd, 1, 0)]
    );
}

#[test]
fn ged125_engine_fin_from_pim_closes_by_originator() {
    let mut env = ged_env();
    let mut c = Conn::new(PIM, CVP);
    env.feed(&c.c(&SEED_REQ), 0);
    env.take();
    env.feed(&c.c_at(c.cseq, TCP_FIN | TCP_ACK, &[]), SEC);
    assert_eq!(
        env.take(),
        vec![(EventKind::SessionClosed, 0xaa4c06cc, 0, 0)]
    );
}

#[test]
fn ged125_engine_open_req_is_a_session_params_record() {
    let mut env = ged_env();
    let mut c = Conn::new(PIM, CVP);
    env.feed(&c.c(&be(&[12, 3, 1, 11, 15_000])), 0);
    let evs = env.events.clone();
    assert_eq!(env.take(), vec![(EventKind::SessionParams, 0, 0, 15_000)]);
    assert_key(&evs[0].key, PIM, CVP, Protocol::Ged125, TCP);
}

// ---------------------------------------------------------------------------------
// 2. SCCP (TCP 2000, LE: u32 data_length, u32 header_version, u32 message_id)

const SEED_KEEPALIVE: [u8; 12] = [4, 0, 0, 0, 0x16, 0, 0, 0, 0, 0, 0, 0];

fn sccp(payload: &[u8]) -> Option<Msg> {
    decode(
        Protocol::Sccp,
        &tcp(PHONE, CUCM, 1, TCP_PSH | TCP_ACK, payload),
    )
}

fn sccp_env() -> TestEnv {
    TestEnv::with(&[(TCP, 2000, Protocol::Sccp)])
}

/// A RegisterAck (0x0081): keepAliveInterval, dateTemplate, padding, secondary, features.
fn register_ack(primary: u32, secondary: u32) -> Vec<u8> {
    let mut m = le(&[4 + 20, 0x16, 0x0081, primary]);
    m.extend_from_slice(b"M/D/YA\0\0");
    m.extend(le(&[secondary, 0x14]));
    m
}

#[test]
fn sccp_seed_keepalive_and_ack() {
    let m = sccp(&SEED_KEEPALIVE).expect("seed keepalive");
    assert_eq!(m.kind, MSG_HEARTBEAT);
    assert_eq!(m.role(), Role::Request);
    let ack = sccp(&le(&[4, 0x16, 0x0100])).expect("KeepAliveAck");
    assert_eq!((ack.kind, ack.role()), (MSG_HEARTBEAT, Role::Response));
    assert_eq!(proto::sccp::message(Role::Request), SEED_KEEPALIVE);
}

#[test]
fn sccp_header_versions_and_other_messages() {
    for v in [0x00, 0x0a, 0x12] {
        let m = sccp(&le(&[4, v, 0])).and_then(|m| m.as_heartbeat());
        assert_eq!(m.map(|h| h.role), Some(Role::Request), "version {v:#x}");
        let m = sccp(&le(&[4, v, 0x100])).and_then(|m| m.as_heartbeat());
        assert_eq!(m.map(|h| h.role), Some(Role::Response), "version {v:#x}");
    }
    // Unregister, a keepalive id with a body, a GED-125-looking BE header.
    assert_eq!(sccp(&le(&[4, 0x16, 0x0027])), None);
    assert_eq!(sccp(&le(&[8, 0x16, 0, 0])), None);
    assert_eq!(sccp(&SEED_REQ), None);
}

#[test]
fn sccp_register_ack_announces_keepalive_intervals() {
    let m = sccp(&register_ack(30, 60)).expect("RegisterAck");
    assert_eq!(m.kind, MSG_PARAMS);
    assert_eq!((m.value, m.aux, m.role()), (30, 60, Role::Response));
    // Through the engine: a record on the phone -> CUCM association.
    let mut env = sccp_env();
    let mut c = Conn::new(PHONE, CUCM);
    env.feed(&c.s(&register_ack(30, 60)), 0);
    let evs = env.events.clone();
    assert_eq!(env.take(), vec![(EventKind::SessionParams, 0, 60, 30)]);
    assert_key(&evs[0].key, PHONE, CUCM, Protocol::Sccp, TCP);
}

#[test]
fn sccp_engine_acked_keepalives_are_silent() {
    let mut env = sccp_env();
    let mut c = Conn::new(PHONE, CUCM);
    for i in 0..5u64 {
        let t = i * 30 * SEC;
        env.feed(&c.c(&SEED_KEEPALIVE), t);
        env.feed(&c.s(&le(&[4, 0x16, 0x100])), t + 4 * MS);
        env.feed(&c.c_at(c.cseq, TCP_ACK, &[]), t + 5 * MS);
    }
    let evs = env.events.clone();
    assert_eq!(env.take(), vec![(EventKind::AssociationSeen, 1, 1, 0)]);
    assert_key(&evs[0].key, PHONE, CUCM, Protocol::Sccp, TCP);
    let st = env.flows.values().next().unwrap();
    assert_eq!(st.interval_ns, 30 * SEC);
    assert_eq!(env.told.counts(), (5, 5, 0));
}

#[test]
fn sccp_engine_backup_cucm_only_tcp_acks_and_is_never_unanswered() {
    let mut env = sccp_env();
    let mut c = Conn::new(PHONE, CUCM);
    for i in 0..6u64 {
        let t = i * 60 * SEC;
        env.feed(&c.c(&SEED_KEEPALIVE), t);
        env.feed(&c.s_bare(TCP_ACK), t + 4 * MS);
    }
    assert_eq!(env.take(), vec![(EventKind::AssociationSeen, 1, 1, 0)]);
    let st = env.flows.values().next().unwrap();
    assert_eq!((st.responses, st.attempts), (0, 0));
    assert_eq!(env.told.counts(), (6, 0, 0));
}

#[test]
fn sccp_engine_primary_missing_ack_is_one_unanswered() {
    let mut env = sccp_env();
    let mut c = Conn::new(PHONE, CUCM);
    let ack = le(&[4, 0x16, 0x100]);
    env.feed(&c.c(&SEED_KEEPALIVE), 0);
    env.feed(&c.s(&ack), 4 * MS);
    env.feed(&c.c(&SEED_KEEPALIVE), 30 * SEC);
    env.feed(&c.s(&ack), 30 * SEC + 4 * MS);
    env.feed(&c.c(&SEED_KEEPALIVE), 60 * SEC); // seq 3: never acked
    env.feed(&c.s_bare(TCP_ACK), 60 * SEC + 4 * MS);
    env.feed(&c.c(&SEED_KEEPALIVE), 90 * SEC);
    env.feed(&c.s(&ack), 90 * SEC + 4 * MS);
    env.feed(&c.c(&SEED_KEEPALIVE), 120 * SEC);
    env.feed(&c.s(&ack), 120 * SEC + 4 * MS);
    assert_eq!(
        env.take(),
        vec![
            (EventKind::AssociationSeen, 1, 1, 0),
            // aux 1: the CUCM's TCP ACK showed its transport alive (peer-unresponsive evidence).
            (EventKind::Unanswered, 3, 1, 30 * SEC),
        ]
    );
}

#[test]
fn sccp_engine_tcp_resend_of_a_keepalive_is_a_retry_not_a_new_keepalive() {
    let mut env = sccp_env();
    let mut c = Conn::new(PHONE, CUCM);
    env.feed(&c.c(&SEED_KEEPALIVE), 0);
    env.feed(&c.s(&le(&[4, 0x16, 0x100])), 4 * MS);
    let seq = c.cseq;
    env.feed(&c.c(&SEED_KEEPALIVE), 30 * SEC);
    env.feed(
        &c.c_at(seq, TCP_PSH | TCP_ACK, &SEED_KEEPALIVE),
        30 * SEC + 200 * MS,
    );
    assert_eq!(
        env.take(),
        vec![
            (EventKind::AssociationSeen, 1, 1, 0),
            (EventKind::Unanswered, 2, 0, 200 * MS),
            (EventKind::Retry, 2, 2, 0),
        ]
    );
}

// ---------------------------------------------------------------------------------
// 3. ICM MDS (UDP, configurable port, one-way 4-byte counter of unknown byte order)

const ROUTER_A: Ep = ([192, 168, 10, 1], 41000);
const ROUTER_B: Ep = ([192, 168, 10, 2], 41000);

fn mds_env() -> TestEnv {
    TestEnv::with(&[(UDP, 41000, Protocol::Mds)])
}

/// Records as (kind, seq, aux, value).
type Records = Vec<(EventKind, u32, u32, u64)>;

/// Feeds counters `seqs` A->B little-endian and B->A big-endian, 100 ms apart;
/// returns each direction's records.
fn mds_both_orders(seqs: &[u32]) -> (Records, Records) {
    let mut env = mds_env();
    for (i, &s) in seqs.iter().enumerate() {
        let t = i as u64 * 100 * MS;
        env.feed(&udp(ROUTER_A, ROUTER_B, 0, &s.to_le_bytes()), t);
        env.feed(&udp(ROUTER_B, ROUTER_A, 0, &s.to_be_bytes()), t + MS);
    }
    let evs = std::mem::take(&mut env.events);
    let split = |from: [u8; 4]| {
        evs.iter()
            .filter(|e| e.key.orig[..4] == from && e.kind != EventKind::Heartbeat as u8)
            .map(|e| (EventKind::from_u8(e.kind).unwrap(), e.seq, e.aux, e.value))
            .collect::<Vec<_>>()
    };
    (split(ROUTER_A.0), split(ROUTER_B.0))
}

/// Holding (the live agent's way): after a few regular heartbeats the next ones stay in
/// the flow table; a full hold goes up as one `Beats` record unless userspace took it;
/// a gap sends the hold up first, so records stay in the order of the wire, and the
/// count of regular heartbeats starts again.
#[test]
fn routine_heartbeats_are_held_and_go_up_in_order_before_an_anomaly() {
    let mut env = mds_env();
    env.hold = true;
    let beat = |env: &mut TestEnv, seq: u32| {
        env.feed(
            &udp(ROUTER_A, ROUTER_B, 0, &seq.to_be_bytes()),
            seq as u64 * 100 * MS,
        )
    };
    let kinds = |env: &mut TestEnv| -> Vec<(EventKind, u32)> {
        env.events
            .drain(..)
            .map(|e| (EventKind::from_u8(e.kind).unwrap(), e.seq))
            .collect()
    };
    // Announced at seq 3 (confirm_beats); seq 4 is the first regular interval, a record;
    // from 5 on (two regular in a row) they are held.
    for seq in 0..=12 {
        beat(&mut env, seq);
    }
    let first = kinds(&mut env);
    assert_eq!(
        first,
        [(EventKind::AssociationSeen, 3), (EventKind::Heartbeat, 4)]
    );
    assert_eq!(env.counter(Counter::Held), 8, "5..=12 held");
    let key = *env.flows.keys().next().unwrap();
    let st = env.flows[&key];
    assert_eq!((st.held_sent, st.held_next), (0, 8));
    // The hold is full: the next goes up with the eight before it.
    beat(&mut env, 13);
    assert_eq!(kinds(&mut env), [(EventKind::Beats, 0)]);
    let b = env.batches.pop().unwrap();
    assert_eq!(b.hdr.aux, 8);
    let seqs: Vec<u32> = (0..8).map(|i| b.beats[i].seq).collect();
    assert_eq!(seqs, [5, 6, 7, 8, 9, 10, 11, 12], "slot i holds index i");
    // Userspace took the held beats up to index 12 (it reads the flow table at its
    // deadlines): when the hold fills again (indices 8..=15), no record goes up.
    env.acks.insert(key, 12);
    for seq in 14..=21 {
        beat(&mut env, seq);
    }
    assert_eq!(kinds(&mut env), []);
    assert_eq!(
        (env.flows[&key].held_sent, env.flows[&key].held_next),
        (12, 17)
    );
    // A gap: the hold goes up first, then the gap, and the heartbeat after it is a
    // record again (the interval must be regular twice in a row once more).
    beat(&mut env, 24);
    beat(&mut env, 25);
    beat(&mut env, 26);
    assert_eq!(
        kinds(&mut env),
        [
            (EventKind::Beats, 12),
            (EventKind::Gap, 24),
            (EventKind::Heartbeat, 24),
            (EventKind::Heartbeat, 25),
        ]
    );
    assert_eq!(env.batches.last().unwrap().hdr.aux, 5, "indices 12..=16");
}

#[test]
fn mds_consecutive_counters_are_silent_in_either_byte_order() {
    // Announced on the 4th plausible heartbeat (ProtoParams::confirm_beats), then silent.
    let (le_evs, be_evs) = mds_both_orders(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert_eq!(le_evs, vec![(EventKind::AssociationSeen, 3, 3, 0)]);
    assert_eq!(be_evs, vec![(EventKind::AssociationSeen, 3, 3, 0)]);
}

#[test]
fn mds_gap_reports_lost_in_either_byte_order() {
    let (le_evs, be_evs) = mds_both_orders(&[0, 1, 2, 3, 7, 8, 9]);
    for evs in [le_evs, be_evs] {
        assert_eq!(
            evs,
            vec![
                (EventKind::AssociationSeen, 3, 3, 0),
                (EventKind::Gap, 7, 4, 3),
            ]
        );
    }
    // A jump before the association was announced (and before the order could be
    // learned) starts the count again: announced 4 in-order beats later, no gap.
    let (le_evs, be_evs) = mds_both_orders(&[0, 4, 5, 6, 7, 9]);
    for evs in [le_evs, be_evs] {
        assert_eq!(
            evs,
            vec![
                (EventKind::AssociationSeen, 7, 3, 0),
                (EventKind::Gap, 9, 8, 1),
            ]
        );
    }
}

#[test]
fn mds_counter_back_to_zero_is_a_restart() {
    let (le_evs, be_evs) = mds_both_orders(&[497, 498, 499, 500, 0, 1, 2]);
    for evs in [le_evs, be_evs] {
        assert_eq!(
            evs,
            vec![
                (EventKind::AssociationSeen, 500, 3, 0),
                (EventKind::Restart, 0, 500, 0),
            ]
        );
    }
}

#[test]
fn mds_duplicate_is_out_of_order_once() {
    // Sent again 100 ms later (not a copy of the frame): the sender repeated it.
    let (le_evs, be_evs) = mds_both_orders(&[0, 1, 2, 3, 3, 3, 4, 5]);
    for evs in [le_evs, be_evs] {
        assert_eq!(
            evs,
            vec![
                (EventKind::AssociationSeen, 3, 3, 0),
                (EventKind::OutOfOrder, 3, 4, 0),
            ]
        );
    }
}

#[test]
fn mds_only_4_byte_payloads_are_heartbeats() {
    let mut env = mds_env();
    env.feed(&udp(ROUTER_A, ROUTER_B, 0, &[0, 0, 0]), 0);
    env.feed(&udp(ROUTER_A, ROUTER_B, 0, &[0, 0, 0, 0, 0]), MS);
    assert!(env.take().is_empty());
    assert_eq!(env.counter(Counter::NotHeartbeat), 2);
    assert_eq!(
        hb(Protocol::Mds, &udp(ROUTER_A, ROUTER_B, 0, &[1, 0, 0, 0])).map(|h| h.role),
        Some(Role::OneWay)
    );
}

// ---------------------------------------------------------------------------------
// 4. CS1000 IPMG (UDP 32779/32780, payload unknown: liveness only)

#[test]
fn ipmg_any_payload_is_a_one_way_beat_seen_once() {
    let mut env = TestEnv::with(&[
        (UDP, 32779, Protocol::Cs1000Ipmg),
        (UDP, 32780, Protocol::Cs1000Ipmg),
    ]);
    let cs = ([10, 9, 0, 1], 32779);
    let mg = ([10, 9, 0, 2], 32780);
    for i in 0..10u64 {
        // Any content, one size per direction, once a second.
        let body = [i as u8, 0x5a, 0xa5, 0, 0, 0, 0x42];
        env.feed(&udp(cs, mg, 0, &body), i * SEC);
        env.feed(&udp(mg, cs, 0, &body[..5]), i * SEC + MS);
    }
    let evs = env.events.clone();
    assert_eq!(
        env.take(),
        vec![
            (EventKind::AssociationSeen, 4, 3, 0),
            (EventKind::AssociationSeen, 4, 3, 0),
        ],
        "one association per direction once 4 beats looked alike, nothing else"
    );
    assert_key(&evs[0].key, cs, mg, Protocol::Cs1000Ipmg, UDP);
    assert_key(&evs[1].key, mg, cs, Protocol::Cs1000Ipmg, UDP);
    assert!(env.flows.values().all(|st| st.last_seq == 10));
    // From the 4th beat on, each direction's: 7 each.
    assert_eq!(env.told.counts(), (14, 0, 0));
    // An empty datagram is not a beat.
    env.feed(&udp(cs, mg, 0, &[]), 11 * SEC);
    assert!(env.take().is_empty());
    assert_eq!(env.counter(Counter::NotHeartbeat), 1);
}

// ---------------------------------------------------------------------------------
// 5. SIP (5060): start lines, and the first bytes handed to userspace

const SIP_UA: Ep = ([10, 0, 5, 50], 5060);
const SIP_CUCM: Ep = ([10, 0, 4, 40], 5060);

/// A SIP message of exactly `len` bytes starting with `start`.
fn sip_msg(start: &str, len: usize) -> Vec<u8> {
    let mut m = format!("{start}\r\nVia: SIP/2.0/UDP 10.0.5.50:5060\r\n").into_bytes();
    let mut i = 0u8;
    while m.len() < len {
        m.push(b'a' + i % 26);
        i = i.wrapping_add(1);
    }
    m.truncate(len);
    m
}

#[test]
fn sip_start_lines() {
    let line = |s: &str| {
        let f = udp(SIP_UA, SIP_CUCM, 0, &sip_msg(s, 120));
        sip::start_line(&SliceFrame(&f), &pkt(&f))
    };
    use sip::StartLine;
    assert_eq!(
        line("REGISTER sip:10.0.4.40 SIP/2.0"),
        Some(StartLine::Register)
    );
    assert_eq!(line("OPTIONS sip:cvp SIP/2.0"), Some(StartLine::Options));
    assert_eq!(line("SIP/2.0 200 OK"), Some(StartLine::Response));
    assert_eq!(line("INVITE sip:1000@10.0.4.40 SIP/2.0"), None);
    assert_eq!(line("BYE sip:1000@10.0.4.40 SIP/2.0"), None);
}

#[test]
fn sip_engine_captures_whole_messages_up_to_capture_len() {
    let mut env = TestEnv::with(&[(UDP, 5060, Protocol::Sip), (TCP, 5060, Protocol::Sip)]);
    let cases = [
        // The tail that is not a whole 8-byte chunk is read overlapping: all 203 bytes.
        ("REGISTER sip:10.0.4.40 SIP/2.0", 203usize, 203u32),
        ("SIP/2.0 200 OK", 512, 512),
        ("OPTIONS sip:cvp SIP/2.0", 1029, 1024),
        ("REGISTER sip:10.0.4.40 SIP/2.0", 1400, 1024),
    ];
    for (i, &(start, len, captured)) in cases.iter().enumerate() {
        let msg = sip_msg(start, len);
        env.feed(&udp(SIP_UA, SIP_CUCM, 0, &msg), i as u64 * SEC);
        assert_eq!(
            env.take(),
            vec![(EventKind::SipMessage, 0, captured, len as u64)],
            "{start} ({len} bytes)"
        );
        let cap = env.captures.pop().unwrap();
        assert_eq!(cap.len(), captured as usize);
        assert_eq!(cap[..], msg[..captured as usize]);
    }
    // Over TCP, seq is the segment's sequence number and the key follows the packet.
    let msg = sip_msg("SIP/2.0 200 OK", 300);
    env.feed(
        &tcp(SIP_CUCM, SIP_UA, 4242, TCP_PSH | TCP_ACK, &msg),
        9 * SEC,
    );
    let evs = env.events.clone();
    assert_eq!(env.take(), vec![(EventKind::SipMessage, 4242, 300, 300)]);
    assert_key(&evs[0].key, SIP_CUCM, SIP_UA, Protocol::Sip, TCP);
    assert_eq!(env.captures.pop().unwrap()[..], msg[..]);
    // A TCP continuation (no start line) goes up too, for reassembly; bare ACKs do not.
    let rest = b"Expires: 120\r\nContent-Length: 0\r\n\r\n";
    env.feed(
        &tcp(SIP_CUCM, SIP_UA, 4542, TCP_PSH | TCP_ACK, rest),
        9 * SEC,
    );
    env.feed(&tcp(SIP_UA, SIP_CUCM, 9, TCP_ACK, &[]), 9 * SEC);
    assert_eq!(
        env.take(),
        vec![(
            EventKind::SipMessage,
            4542,
            rest.len() as u32,
            rest.len() as u64
        )]
    );
    assert_eq!(env.captures.pop().unwrap()[..], rest[..]);
    // INVITE and BYE are not passed up.
    env.feed(
        &udp(SIP_UA, SIP_CUCM, 0, &sip_msg("INVITE sip:1@x SIP/2.0", 400)),
        10 * SEC,
    );
    env.feed(
        &udp(SIP_UA, SIP_CUCM, 0, &sip_msg("BYE sip:1@x SIP/2.0", 400)),
        11 * SEC,
    );
    assert!(env.take().is_empty());
    assert!(env.captures.is_empty());
    assert_eq!(env.counter(Counter::NotHeartbeat), 2);
}

// ---------------------------------------------------------------------------------
// 6. TCP keepalive probe: 0/1 byte, seq == next expected - 1, ACK only

#[test]
fn tcp_keepalive_probe_is_not_a_retransmission() {
    let mut c = Conn::new(PIM, CVP);
    let first = c.c(&SEED_REQ);
    let mut st = FlowState::new(&Heartbeat::new(Role::Request, 0xaa4c06cc), 0);
    st.on_tcp(&pkt(&first), true, 0);
    let next = c.cseq;
    assert_eq!(st.orig_next, next);
    for payload in [&[][..], &[0u8][..]] {
        let seen = st.on_tcp(&pkt(&c.c_at(next - 1, TCP_ACK, payload)), true, SEC);
        assert!(seen.keepalive, "{} byte probe", payload.len());
        assert!(!seen.retransmission, "{} byte probe", payload.len());
        assert_eq!(st.orig_next, next, "a probe carries no new data");
    }
    // Not probes: a FIN at next - 1, a 2-byte segment, a re-sent 12-byte message.
    let seen = st.on_tcp(&pkt(&c.c_at(next - 1, TCP_FIN | TCP_ACK, &[])), true, SEC);
    assert!(!seen.keepalive);
    let seen = st.on_tcp(&pkt(&c.c_at(next - 1, TCP_ACK, &[0, 0])), true, SEC);
    assert!(!seen.keepalive);
    let seen = st.on_tcp(
        &pkt(&c.c_at(next - 12, TCP_PSH | TCP_ACK, &SEED_REQ)),
        true,
        SEC,
    );
    assert_eq!((seen.keepalive, seen.retransmission), (false, true));
}

#[test]
fn tcp_keepalive_probe_through_the_engine_creates_no_findings() {
    let mut env = ged_env();
    let mut c = Conn::new(PIM, CVP);
    env.feed(&c.c(&SEED_REQ), 0);
    env.feed(&c.s(&be(&[4, 6, 0xaa4c06cc])), 2 * MS);
    env.feed(&c.c_at(c.cseq - 1, TCP_ACK, &[]), 2 * SEC);
    env.feed(&c.c_at(c.cseq - 1, TCP_ACK, &[0]), 3 * SEC);
    env.feed(&c.s_bare(TCP_ACK), 3 * SEC + MS);
    env.feed(&c.c(&be(&[4, 5, 0xaa4c06cd])), 5 * SEC);
    env.feed(&c.s(&be(&[4, 6, 0xaa4c06cd])), 5 * SEC + 2 * MS);
    assert_eq!(
        env.take(),
        vec![(EventKind::AssociationSeen, 0xaa4c06cc, 1, 0)]
    );
    let st = env.flows.values().next().unwrap();
    assert_eq!((st.attempts, st.responses), (0, 2));
    assert_eq!(env.told.counts(), (2, 2, 0), "the probes are no heartbeats");
    assert_eq!(st.orig_next, c.cseq);
}

// ---------------------------------------------------------------------------------
// 7. DSCP: RUDP heartbeats should be EF (46)

const CS_A: Ep = ([10, 10, 10, 10], 15000);
const CS_B: Ep = ([10, 10, 20, 20], 15000);

fn rudp_env() -> TestEnv {
    TestEnv::with(&[(UDP, 15000, Protocol::Cs1000Rudp)])
}

fn rudp_frame(src: Ep, dst: Ep, dscp: u8, seq: u32, role: Role) -> Vec<u8> {
    udp(src, dst, dscp, &rudp::payload(seq, role))
}

#[test]
fn rudp_wrong_dscp_is_reported_once_per_direction_and_value() {
    let mut env = rudp_env();
    for i in 0..5u32 {
        let t = i as u64 * SEC;
        env.feed(&rudp_frame(CS_A, CS_B, 0, 100 + i, Role::Request), t);
        env.feed(&rudp_frame(CS_B, CS_A, 0, 100 + i, Role::Response), t + MS);
    }
    let evs = env.events.clone();
    assert_eq!(
        env.take(),
        vec![
            (EventKind::AssociationSeen, 100, 1, 0),
            (EventKind::QosMismatch, 100, 46, 0),
            (EventKind::QosMismatch, 100, 46, QOS_FROM_RESPONDER),
        ]
    );
    assert_eq!(evs[1].dscp, 0);
    assert_key(&evs[1].key, CS_A, CS_B, Protocol::Cs1000Rudp, UDP);
    // Another wrong value is a new report.
    env.feed(&rudp_frame(CS_A, CS_B, 10, 105, Role::Request), 5 * SEC);
    env.feed(
        &rudp_frame(CS_B, CS_A, 10, 105, Role::Response),
        5 * SEC + MS,
    );
    assert_eq!(
        env.take(),
        vec![
            (EventKind::QosMismatch, 105, 46, 10),
            (EventKind::QosMismatch, 105, 46, 10 | QOS_FROM_RESPONDER),
        ]
    );
    // The other direction's association is checked on its own.
    env.feed(
        &rudp_frame(CS_B, CS_A, 0, 7, Role::Request),
        5 * SEC + 2 * MS,
    );
    assert_eq!(
        env.take(),
        vec![
            (EventKind::AssociationSeen, 7, 1, 0),
            (EventKind::QosMismatch, 7, 46, 0),
        ]
    );
    // Correct marking is silent.
    let mut env = rudp_env();
    for i in 0..3u32 {
        env.feed(
            &rudp_frame(CS_A, CS_B, 46, i, Role::Request),
            i as u64 * SEC,
        );
        env.feed(
            &rudp_frame(CS_B, CS_A, 46, i, Role::Response),
            i as u64 * SEC + MS,
        );
    }
    assert_eq!(env.take(), vec![(EventKind::AssociationSeen, 0, 1, 0)]);
}

/// Requests leave A marked EF, but the WAN re-marks the B -> A direction to 0: reported
/// once, for the responses (marking is tracked per direction).
#[test]
fn rudp_dscp_remarked_in_one_direction_is_reported_once() {
    let mut env = rudp_env();
    for i in 0..5u32 {
        let t = i as u64 * SEC;
        env.feed(&rudp_frame(CS_A, CS_B, 46, 100 + i, Role::Request), t);
        env.feed(&rudp_frame(CS_B, CS_A, 0, 100 + i, Role::Response), t + MS);
    }
    assert_eq!(
        env.take(),
        vec![
            (EventKind::AssociationSeen, 100, 1, 0),
            (EventKind::QosMismatch, 100, 46, QOS_FROM_RESPONDER),
        ]
    );
}

/// The phone reboots and reconnects from the same port with a lower ISN; the old
/// connection's FIN/RST was not seen. The SYN starts the sequence tracking afresh,
/// so the new session's keepalives are not mistaken for TCP re-sends.
#[test]
fn sccp_reconnect_on_same_port_is_not_a_stream_of_retries() {
    let mut env = sccp_env();
    let ack = le(&[4, 0x16, 0x100]);
    let mut old = Conn::new(PHONE, CUCM);
    old.cseq = 3_000_000;
    env.feed(&old.c(&SEED_KEEPALIVE), 0);
    env.feed(&old.s(&ack), 4 * MS);
    let mut new = Conn::new(PHONE, CUCM);
    env.feed(&new.c_at(new.cseq - 1, TCP_SYN, &[]), 100 * SEC);
    for i in 0..4u64 {
        let t = 130 * SEC + i * 30 * SEC;
        env.feed(&new.c(&SEED_KEEPALIVE), t);
        env.feed(&new.s(&ack), t + 4 * MS);
    }
    let evs = env.take();
    assert!(
        !evs.iter()
            .any(|e| e.0 == EventKind::Retry || e.0 == EventKind::Unanswered),
        "{evs:?}"
    );
}

#[test]
fn every_heartbeat_of_a_known_association_is_a_record_with_interval_or_rtt() {
    use hbwatch_common::event::{BEAT_INTERVAL, BEAT_PAIRED};
    let mut env = TestEnv::with(&[(TCP, 5000, Protocol::Ged125)]);
    let mut c = Conn::new(PIM, CVP);
    let req = |id: u32| be(&[4, 5, id]);
    let conf = |id: u32| be(&[4, 6, id]);
    env.feed(&c.c(&req(7)), 0);
    env.feed(&c.s(&conf(7)), 3 * MS);
    env.feed(&c.c(&req(8)), 5 * SEC);
    env.feed(&c.s(&conf(8)), 5 * SEC + 2 * MS);
    let beats: Vec<_> = env
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Heartbeat as u8)
        .map(|e| (e.seq, e.aux, e.value, e.ts_ns))
        .collect();
    assert_eq!(
        beats,
        vec![
            (7, Role::Response as u32 | BEAT_PAIRED, 3 * MS, 3 * MS),
            (8, Role::Request as u32 | BEAT_INTERVAL, 5 * SEC, 5 * SEC),
            (
                8,
                Role::Response as u32 | BEAT_PAIRED,
                2 * MS,
                5 * SEC + 2 * MS
            ),
        ]
    );
}

#[test]
fn interval_and_rtt_learning_survive_a_clock_jump_of_centuries() {
    // A capture's corrupt timestamp: the interval average multiplied the old interval
    // by 7 and overflowed (malformed suite; a panic in debug, garbage in release).
    let p = Protocol::Cs1000Rudp.default_params();
    let hb = |seq, role| Heartbeat::new(role, seq);
    let mut st = FlowState::new(&hb(1, Role::Request), 0);
    st.update(&hb(1, Role::Response), MS, &p, false);
    st.update(&hb(2, Role::Request), SEC, &p, false);
    st.update(&hb(3, Role::Request), u64::MAX / 2, &p, false);
    st.update(&hb(3, Role::Response), u64::MAX - SEC, &p, false);
    st.update(&hb(4, Role::Request), u64::MAX, &p, false);
    st.update(&hb(4, Role::Response), u64::MAX, &p, false);
    assert!(st.interval_ns > SEC);
    assert_eq!(st.responses, 3);
}

// ---------------------------------------------------------------------------------
// 7. Field fidelity: duplicated frames, ports that are no signature, IP fragments

/// `f` (Ethernet + IPv4) with IP identification `id`.
fn with_ip_id(mut f: Vec<u8>, id: u16) -> Vec<u8> {
    f[18..20].copy_from_slice(&id.to_be_bytes());
    f
}

const US: u64 = 1_000;

#[test]
fn duplicated_rudp_frames_are_counted_not_retries() {
    let mut env = TestEnv::with(&[(UDP, 15000, Protocol::Cs1000Rudp)]);
    let (cs, mg) = (([10, 7, 0, 1], 15000), ([10, 7, 0, 2], 15000));
    let req = |seq, id| with_ip_id(udp(cs, mg, 46, &rudp::payload(seq, Role::Request)), id);
    let resp = |seq, id| with_ip_id(udp(mg, cs, 46, &rudp::payload(seq, Role::Response)), id);
    // A SPAN port copies every frame: the same bytes and IP id, microseconds apart.
    for (i, seq) in (100..104u32).enumerate() {
        let t = i as u64 * SEC;
        let id = 7 + 2 * i as u16;
        env.feed(&req(seq, id), t);
        env.feed(&req(seq, id), t + 20 * US);
        env.feed(&resp(seq, id + 1), t + MS);
        env.feed(&resp(seq, id + 1), t + MS + 20 * US);
    }
    let recs = env.take();
    assert_eq!(recs[0], (EventKind::AssociationSeen, 100, 1, 0));
    assert!(
        recs[1..].iter().all(|r| r.0 == EventKind::Duplicate),
        "only duplicates, no retry/out-of-order: {recs:?}"
    );
    assert_eq!(recs.len() - 1, 8);
    assert_eq!(env.counter(Counter::Duplicates), 8);
    assert_eq!(
        recs[1],
        (EventKind::Duplicate, 100, Role::Request as u32, 20 * US)
    );
    // A real re-send: one interval later, a new IP id.
    env.feed(&req(104, 50), 4 * SEC);
    env.feed(&req(104, 51), 5 * SEC);
    assert_eq!(
        env.take(),
        vec![
            (EventKind::Unanswered, 104, 0, SEC),
            (EventKind::Retry, 104, 2, 0)
        ]
    );
}

#[test]
fn duplicated_tcp_keepalive_is_neither_retry_nor_out_of_order() {
    let mut env = sccp_env();
    let mut c = Conn::new(PHONE, CUCM);
    for i in 0..3u64 {
        let t = i * 30 * SEC;
        let ka = with_ip_id(c.c(&SEED_KEEPALIVE), 300 + i as u16);
        env.feed(&ka, t);
        env.feed(&ka, t + 30 * US);
        let ack = with_ip_id(c.s(&le(&[4, 0x16, 0x100])), 900 + i as u16);
        env.feed(&ack, t + 4 * MS);
        env.feed(&ack, t + 4 * MS + 30 * US);
    }
    let recs = env.take();
    assert_eq!(recs[0], (EventKind::AssociationSeen, 1, 1, 0));
    assert!(
        recs[1..].iter().all(|r| r.0 == EventKind::Duplicate),
        "{recs:?}"
    );
    assert_eq!(env.counter(Counter::Duplicates), 6);
    // Every keepalive paired with its ack: nothing lost, nothing retried.
    assert_eq!(env.told.counts(), (3, 3, 0));
}

/// A TFTP transfer (RRQ answered from server port 39893, inside the MDS range): 516-byte
/// DATA one way, 4-byte ACKs counting up by one the other way, `rtt` apart.
fn tftp_transfer(env: &mut TestEnv, rtt: u64, blocks: u16) {
    let client = ([10, 3, 0, 9], 51515);
    let server = ([10, 3, 0, 1], 39893);
    for b in 1..=blocks {
        let t = b as u64 * rtt;
        let mut data = vec![0, 3];
        data.extend_from_slice(&b.to_be_bytes());
        data.resize(516, 0xab);
        env.feed(&udp(server, client, 0, &data), t);
        let mut ack = vec![0, 4];
        ack.extend_from_slice(&b.to_be_bytes());
        env.feed(&udp(client, server, 0, &ack), t + rtt / 2);
    }
}

#[test]
fn tftp_on_an_mds_port_is_no_association() {
    let mds = || TestEnv::with(&[(UDP, 39893, Protocol::Mds)]);
    // On a LAN (ACKs 400 us apart: far too fast for MDS) and over a 100 ms WAN (as
    // regular as MDS, but DATA shares the 5-tuple): nothing at all goes up.
    for rtt in [400 * US, 100 * MS] {
        let mut env = mds();
        tftp_transfer(&mut env, rtt, 60);
        assert_eq!(env.take(), vec![], "rtt {rtt} ns");
        assert_eq!(env.counter(Counter::Unconfirmed), 60, "rtt {rtt} ns");
    }
}

#[test]
fn rtp_and_dns_on_ipmg_ports_are_no_association() {
    let mut env = TestEnv::with(&[
        (UDP, 32779, Protocol::Cs1000Ipmg),
        (UDP, 32780, Protocol::Cs1000Ipmg),
    ]);
    // G.711 RTP, 20 ms: too fast for a liveness beat.
    let (a, b) = (([10, 4, 0, 1], 32780), ([10, 4, 0, 2], 20000));
    for i in 0..200u64 {
        env.feed(&udp(a, b, 46, &[0x80; 172]), i * 20 * MS);
    }
    // DNS from an ephemeral port that happens to be 32779: queries of other sizes.
    let (c, d) = (([10, 4, 0, 3], 32779), ([10, 4, 0, 53], 53));
    for i in 0..10u64 {
        env.feed(&udp(c, d, 0, &vec![1; 30 + i as usize]), i * SEC);
        env.feed(&udp(d, c, 0, &vec![2; 60 + i as usize]), i * SEC + 2 * MS);
    }
    assert_eq!(env.take(), vec![]);
}

/// An IPv4 fragment: `l4` is this fragment's share of the IP payload at byte `offset`.
fn ipv4_fragment(
    src: [u8; 4],
    dst: [u8; 4],
    id: u16,
    offset: u16,
    more: bool,
    l4: &[u8],
) -> Vec<u8> {
    let mut f = ipv4(UDP, src, dst, 0, l4);
    f[18..20].copy_from_slice(&id.to_be_bytes());
    let flags = (offset / 8) | if more { 0x2000 } else { 0 };
    f[20..22].copy_from_slice(&flags.to_be_bytes());
    f
}

/// A UDP datagram (header + payload) from `src` to `dst`.
fn udp_datagram(src: Ep, dst: Ep, payload: &[u8]) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&src.1.to_be_bytes());
    l4.extend_from_slice(&dst.1.to_be_bytes());
    l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    l4.extend_from_slice(&[0, 0]);
    l4.extend_from_slice(payload);
    l4
}

#[test]
fn fragments_of_a_sip_register_go_up_with_their_bytes() {
    let mut env = TestEnv::with(&[(UDP, 5060, Protocol::Sip)]);
    let register = sip_msg("REGISTER sip:10.0.4.40 SIP/2.0", 1800);
    let dgram = udp_datagram(SIP_UA, SIP_CUCM, &register);
    // MTU 1500: 1480 bytes of IP payload per fragment.
    env.feed(
        &ipv4_fragment(SIP_UA.0, SIP_CUCM.0, 77, 0, true, &dgram[..1480]),
        0,
    );
    env.feed(
        &ipv4_fragment(SIP_UA.0, SIP_CUCM.0, 77, 1480, false, &dgram[1480..]),
        20 * US,
    );
    let evs = std::mem::take(&mut env.events);
    assert_eq!(evs.len(), 2, "{evs:?}");
    for e in &evs {
        assert_eq!(e.kind, EventKind::Fragment as u8);
        assert_eq!(e.seq, 77);
        assert_key(&e.key, SIP_UA, SIP_CUCM, Protocol::Sip, UDP);
    }
    use hbwatch_common::parse::{FRAG_FIRST, FRAG_LATER, FRAG_MORE};
    assert_eq!(evs[0].value, (FRAG_FIRST | FRAG_MORE) as u64);
    assert_eq!(evs[1].value, (1480 | FRAG_LATER) as u64);
    assert_eq!(env.captures[0], dgram[..sip::CAPTURE_LEN]);
    assert_eq!(env.captures[1], dgram[1480..]);
    assert_eq!(env.counter(Counter::FragmentsPassed), 2);
    // A later fragment whose first was never seen, and a fragmented INVITE: not passed.
    env.feed(
        &ipv4_fragment(SIP_UA.0, SIP_CUCM.0, 78, 1480, false, &dgram[1480..]),
        SEC,
    );
    let invite = udp_datagram(
        SIP_UA,
        SIP_CUCM,
        &sip_msg("INVITE sip:1002@10.0.4.40 SIP/2.0", 1800),
    );
    env.feed(
        &ipv4_fragment(SIP_UA.0, SIP_CUCM.0, 79, 0, true, &invite[..1480]),
        SEC,
    );
    env.feed(
        &ipv4_fragment(SIP_UA.0, SIP_CUCM.0, 79, 1480, false, &invite[1480..]),
        SEC,
    );
    assert!(env.events.is_empty(), "{:?}", env.events);
    assert_eq!(env.counter(Counter::Fragments), 3);
}

#[test]
fn ipv6_fragments_of_a_sip_register_go_up() {
    let mut env = TestEnv::with(&[(UDP, 5060, Protocol::Sip)]);
    let register = sip_msg("REGISTER sip:[2001:db8::40] SIP/2.0", 1600);
    let mut dgram = Vec::new();
    dgram.extend_from_slice(&5060u16.to_be_bytes());
    dgram.extend_from_slice(&5060u16.to_be_bytes());
    dgram.extend_from_slice(&((8 + register.len()) as u16).to_be_bytes());
    dgram.extend_from_slice(&[0, 0]);
    dgram.extend_from_slice(&register);
    let frame = |offset: u16, more: bool, part: &[u8]| {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend_from_slice(&((8 + part.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[44, 64]);
        f.extend_from_slice(&[
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x50,
        ]);
        f.extend_from_slice(&[
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40,
        ]);
        f.extend_from_slice(&[UDP, 0]);
        f.extend_from_slice(&(offset | more as u16).to_be_bytes());
        f.extend_from_slice(&0xdead_beefu32.to_be_bytes());
        f.extend_from_slice(part);
        f
    };
    env.feed(&frame(0, true, &dgram[..1232]), 0);
    env.feed(&frame(1232, false, &dgram[1232..]), 10 * US);
    let kinds: Vec<_> = env
        .events
        .iter()
        .map(|e| (e.kind, e.seq, e.key.family))
        .collect();
    assert_eq!(kinds, vec![(EventKind::Fragment as u8, 0xdead_beef, 6); 2]);
    assert_eq!(env.captures[1], dgram[1232..]);
}

// ---------------------------------------------------------------------------------
// MGCP (PROTOCOLS.md §7). Payloads as a Cisco VG224 and CUCM sent them (nDPI's
// tests/cfgs/default/pcap/mgcp.pcap, frames 15-26), byte for byte.

const GW: Ep = ([10, 10, 228, 72], 2427);
const CA: Ep = ([10, 10, 244, 2], 2427);
const KEEPALIVE: &[u8] = b"NTFY 262662138 *@vg224 MGCP 0.1\nX: 0\nO: \n";
const RSIP_RESTART: &[u8] = b"RSIP 262662135 *@vg224 MGCP 0.1\nRM: restart\n";
const ANSWER: &[u8] = b"200 262662138 \n";

fn mgcp(payload: &[u8]) -> Option<Heartbeat> {
    hb(Protocol::Mgcp, &udp(GW, CA, 0, payload))
}

fn mgcp_env() -> TestEnv {
    TestEnv::with(&[(UDP, 2427, Protocol::Mgcp)])
}

#[test]
fn mgcp_keepalive_rsip_and_answers_decode_by_transaction_id() {
    let k = mgcp(KEEPALIVE).unwrap();
    assert_eq!((k.role, k.seq, k.flags), (Role::Request, 262662138, 0));
    let r = mgcp(RSIP_RESTART).unwrap();
    assert_eq!((r.role, r.seq), (Role::Request, 262662135));
    assert_eq!(
        mgcp::RestartMethod::from_flags(r.flags),
        Some(mgcp::RestartMethod::Restart)
    );
    let a = mgcp(ANSWER).unwrap();
    assert_eq!((a.role, a.seq), (Role::Response, 262662138));
    // An answer may end at the datagram's end, or carry a commentary.
    assert_eq!(mgcp(b"200 80").map(|h| h.seq), Some(80));
    assert_eq!(mgcp(b"250 7 OK\r\n").map(|h| h.seq), Some(7));
    // Event NTFYs prove the link as keepalives do.
    let ev = mgcp(b"NTFY 31 aaln/S2/1@vg224 MGCP 0.1\nX: 1\nO: L/hd\n").unwrap();
    assert_eq!((ev.role, ev.seq), (Role::Request, 31));
}

#[test]
fn mgcp_rsip_restart_methods() {
    for (rm, want) in [
        ("restart", mgcp::RestartMethod::Restart),
        ("graceful", mgcp::RestartMethod::Graceful),
        ("forced", mgcp::RestartMethod::Forced),
        ("disconnected", mgcp::RestartMethod::Disconnected),
        ("cancel-graceful", mgcp::RestartMethod::CancelGraceful),
    ] {
        // The command line's length varies with the endpoint name: the line feed may
        // fall anywhere in an 8-byte chunk.
        for domain in ["vg224", "kl2951-router.shelfdrilling.com", "g"] {
            let text = format!("RSIP 329754022 *@{domain} MGCP 0.1\r\nRM: {rm}\r\n");
            let h = mgcp(text.as_bytes()).unwrap();
            assert_eq!(
                mgcp::RestartMethod::from_flags(h.flags),
                Some(want),
                "{text}"
            );
        }
    }
    // No RM line: restart (RFC 3435 §2.3.12).
    let h = mgcp(b"RSIP 5 *@gw MGCP 1.0\n").unwrap();
    assert_eq!(
        mgcp::RestartMethod::from_flags(h.flags),
        Some(mgcp::RestartMethod::Restart)
    );
}

#[test]
fn mgcp_call_control_provisional_and_malformed_are_not_heartbeats() {
    for p in [
        &b"RQNT 80 AALN/S2/1@vg224 MGCP 0.1\nX: 1\n"[..],
        b"CRCX 719 aaln/S0/SU1/1@gw MGCP 0.1\n",
        b"AUEP 81 AALN/S2/1@vg224 MGCP 0.1\n",
        // Provisional answers and response acknowledgements: the final answer follows.
        b"100 262662138 pending\n",
        b"000 262662138\n",
        // No transaction id, id 0, ten digits, no space after the id.
        b"NTFY *@vg224 MGCP 0.1\n",
        b"NTFY 0 *@vg224 MGCP 0.1\n",
        b"NTFY 1234567890 *@vg224 MGCP 0.1\n",
        b"NTFY 12x *@vg224 MGCP 0.1\n",
        b"200 12x\n",
        b"NTFYX 1 *@gw\n",
        b"SIP/2.0 200 OK\r\n",
    ] {
        assert_eq!(mgcp(p), None, "{}", String::from_utf8_lossy(p));
    }
}

#[test]
fn mgcp_engine_pairs_by_id_and_ignores_other_transactions() {
    let mut env = mgcp_env();
    env.feed(&udp(GW, CA, 0, KEEPALIVE), 0);
    // An event NTFY before the keepalive's answer: transactions overlap, no alert.
    env.feed(
        &udp(
            GW,
            CA,
            0,
            b"NTFY 262662139 aaln/S2/1@vg224 MGCP 0.1\nO: L/hd\n",
        ),
        MS,
    );
    env.feed(&udp(CA, GW, 0, ANSWER), 2 * MS);
    env.feed(&udp(CA, GW, 0, b"200 262662139 OK\n"), 3 * MS);
    // The call agent's own command and the gateway's answer to it: not this
    // association's business (the gateway's answer decodes, but pairs with nothing).
    env.feed(
        &udp(CA, GW, 0, b"RQNT 80 AALN/S2/1@vg224 MGCP 0.1\nX: 1\n"),
        4 * MS,
    );
    env.feed(&udp(GW, CA, 0, b"200 80 OK\n"), 5 * MS);
    // Transaction ids do not count: a jump is no gap.
    env.feed(
        &udp(GW, CA, 0, b"NTFY 262662150 *@vg224 MGCP 0.1\nX: 0\nO: \n"),
        15 * SEC,
    );
    assert_eq!(
        env.take(),
        vec![(EventKind::AssociationSeen, 262662138, 1, 0)]
    );
}

#[test]
fn mgcp_engine_resend_is_retry_unanswered_after_half_an_interval_and_rsip_restarts() {
    let mut env = mgcp_env();
    env.feed(&udp(GW, CA, 0, KEEPALIVE), 0);
    // Re-sent with its id after 500 ms: a retry, not yet unanswered.
    env.feed(&udp(GW, CA, 0, KEEPALIVE), 500 * MS);
    // Given up; the next keepalive 15 s later says the first went unanswered.
    env.feed(
        &udp(GW, CA, 0, b"NTFY 262662139 *@vg224 MGCP 0.1\nX: 0\nO: \n"),
        15 * SEC,
    );
    // The gateway reboots and comes back: RSIP restart, method in `value`.
    env.feed(&udp(GW, CA, 0, RSIP_RESTART), 40 * SEC);
    let graceful = b"RSIP 262662140 *@vg224 MGCP 0.1\nRM: graceful\n";
    env.feed(&udp(GW, CA, 0, graceful), 41 * SEC);
    assert_eq!(
        env.take(),
        vec![
            (EventKind::AssociationSeen, 262662138, 1, 0),
            (EventKind::Retry, 262662138, 2, 0),
            (EventKind::Unanswered, 262662138, 0, 15 * SEC),
            (EventKind::Unanswered, 262662139, 0, 25 * SEC),
            (
                EventKind::Restart,
                262662135,
                262662139,
                mgcp::RestartMethod::Restart as u64
            ),
            // Graceful: it leaves (one second later: no unanswered yet).
            (
                EventKind::Restart,
                262662140,
                262662135,
                mgcp::RestartMethod::Graceful as u64
            ),
        ]
    );
}
