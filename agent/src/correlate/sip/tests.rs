//! SIP tracker tests: records in, events (as JSON) out. The seed exchange runs at the
//! seed capture's times and TCP sequence numbers (18:12:55 -> 18:14:54 -> 18:16:49, 120 s granted).

use std::collections::HashMap;
use std::net::Ipv4Addr;

use hbwatch_common::event::{EventKind, RawEvent};
use hbwatch_common::key::FlowKey;
use hbwatch_common::parse::{AF_INET, IPPROTO_TCP, IPPROTO_UDP};
use hbwatch_common::proto::sip::{captured_len, CAPTURE_LEN};
use hbwatch_common::proto::Protocol;
use serde_json::Value;

use super::fixtures::*;
use super::{SipConfig, SipTracker};
use crate::convert::Converter;
use crate::correlate::{CaptureClock, Ctx};
use crate::event::Event;

// ---------------------------------------------------------------- harness

/// Nanoseconds since the epoch of `HH:MM:SS.ffffff` on the seed's day, 2015-07-15 UTC.
fn t(time_of_day: &str) -> u64 {
    const DAY: u64 = 1_436_918_400;
    let (hms, frac) = time_of_day.split_once('.').unwrap_or((time_of_day, "0"));
    let mut parts = hms.split(':').map(|p| p.parse::<u64>().expect("number"));
    let (h, m, s) = (
        parts.next().expect("h"),
        parts.next().expect("m"),
        parts.next().expect("s"),
    );
    let frac_ns = format!("{frac:0<9}").parse::<u64>().expect("fraction");
    (DAY + h * 3600 + m * 60 + s) * 1_000_000_000 + frac_ns
}

const MS: u64 = 1_000_000;

fn endpoint(s: &str) -> ([u8; 16], u16) {
    let (ip, port) = s.rsplit_once(':').expect("ip:port");
    let ip: Ipv4Addr = ip.parse().expect("ipv4");
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&ip.octets());
    (addr, port.parse().expect("port"))
}

/// A `SipMessage` record as the datapath makes it: key as the packet travelled,
/// `value` = payload length, `aux` = bytes captured (the first 1024; none under 8).
fn record(
    src: &str,
    dst: &str,
    transport: u8,
    ts_ns: u64,
    seq: u32,
    payload: &[u8],
) -> (RawEvent, Vec<u8>) {
    let (orig, orig_port) = endpoint(src);
    let (resp, resp_port) = endpoint(dst);
    let captured = captured_len(payload.len());
    let raw = RawEvent {
        ts_ns,
        value: payload.len() as u64,
        key: FlowKey {
            orig,
            resp,
            orig_port,
            resp_port,
            proto: Protocol::Sip as u8,
            family: AF_INET,
            transport,
            _pad: 0,
        },
        seq,
        aux: captured as u32,
        ifindex: 3,
        kind: EventKind::SipMessage as u8,
        dscp: 0,
        _pad: [0; 2],
    };
    (raw, payload[..captured].to_vec())
}

struct Harness {
    tracker: SipTracker,
    conv: Converter,
    /// Next TCP sequence number per direction (`src->dst`).
    next_seq: HashMap<String, u32>,
}

impl Harness {
    fn new(cfg: SipConfig) -> Harness {
        Harness {
            tracker: SipTracker::new(cfg),
            conv: Converter {
                hostname: "probe".to_string(),
                interfaces: HashMap::new(),
                fixed_interface: Some("seed.pcap".to_string()),
            },
            next_seq: HashMap::new(),
        }
    }

    fn feed(
        &mut self,
        src: &str,
        dst: &str,
        transport: u8,
        ts: u64,
        seq: u32,
        payload: &[u8],
    ) -> Vec<Value> {
        let (raw, data) = record(src, dst, transport, ts, seq, payload);
        let ctx = Ctx {
            conv: &self.conv,
            clock: &CaptureClock,
            held: None,
        };
        let mut out = Vec::new();
        self.tracker.on_record(&raw, &data, &ctx, &mut out);
        json(out)
    }

    fn udp(&mut self, src: &str, dst: &str, ts: u64, payload: &[u8]) -> Vec<Value> {
        self.feed(src, dst, IPPROTO_UDP, ts, 0, payload)
    }

    /// A TCP segment continuing its direction's stream (first one: `isn`).
    fn tcp(&mut self, src: &str, dst: &str, isn: u32, ts: u64, payload: &[u8]) -> Vec<Value> {
        let dir = format!("{src}->{dst}");
        let seq = *self.next_seq.get(&dir).unwrap_or(&isn);
        self.next_seq
            .insert(dir, seq.wrapping_add(payload.len() as u32));
        self.feed(src, dst, IPPROTO_TCP, ts, seq, payload)
    }

    fn advance(&mut self, now: u64) -> Vec<Value> {
        let ctx = Ctx {
            conv: &self.conv,
            clock: &CaptureClock,
            held: None,
        };
        let mut out = Vec::new();
        self.tracker.advance(now, &ctx, &mut out);
        json(out)
    }

    fn summaries(&mut self, now: u64, period: u64) -> Vec<Value> {
        let ctx = Ctx {
            conv: &self.conv,
            clock: &CaptureClock,
            held: None,
        };
        let mut out = Vec::new();
        self.tracker.summaries(now, period, &ctx, &mut out);
        json(out)
    }

    /// The seed's REGISTER at `at`, answered `status_line` 1 ms later over TCP.
    fn cucm_refusal(&mut self, cseq: u32, at: u64, status_line: &str) -> Vec<Value> {
        let mut evs = self.tcp(PHONE, CUCM, PHONE_ISN, at, &cucm_register(cseq));
        let answer = cucm_answer(cseq, status_line, &[]);
        evs.extend(self.tcp(CUCM, PHONE, CUCM_ISN, at + MS, &answer));
        evs
    }

    /// The seed's first exchange (CSeq 11435 at 18:12:55).
    fn seed_cycle(&mut self) -> Vec<Value> {
        self.cucm_cycle(
            11435,
            "18:12:55.366272",
            "18:12:55.366286",
            "18:12:55.366858",
        )
    }

    /// The seed's REGISTER / 100 Trying / 200 OK exchange over TCP.
    fn cucm_cycle(&mut self, cseq: u32, register: &str, trying: &str, ok: &str) -> Vec<Value> {
        let mut evs = self.tcp(PHONE, CUCM, PHONE_ISN, t(register), &cucm_register(cseq));
        evs.extend(self.tcp(CUCM, PHONE, CUCM_ISN, t(trying), &cucm_trying(cseq)));
        evs.extend(self.tcp(CUCM, PHONE, CUCM_ISN, t(ok), &cucm_ok(cseq)));
        evs
    }
}

/// Events as the NDJSON consumer sees them: field names are the contract.
fn json(events: Vec<Event>) -> Vec<Value> {
    events
        .iter()
        .map(|e| serde_json::from_str(&e.to_line()).expect("event is JSON"))
        .collect()
}

fn actions(evs: &[Value]) -> Vec<&str> {
    evs.iter()
        .map(|e| e["event"]["action"].as_str().unwrap_or("?"))
        .collect()
}

fn assert_association(ev: &Value, src: &str, dst: &str, transport: &str) {
    let (sip, sport) = src.rsplit_once(':').expect("src");
    let (dip, dport) = dst.rsplit_once(':').expect("dst");
    assert_eq!(ev["source"]["ip"], sip, "{ev}");
    assert_eq!(ev["source"]["port"].to_string(), sport, "{ev}");
    assert_eq!(ev["destination"]["ip"], dip, "{ev}");
    assert_eq!(ev["destination"]["port"].to_string(), dport, "{ev}");
    assert_eq!(ev["network"]["protocol"], "sip");
    assert_eq!(ev["network"]["transport"], transport);
    assert_eq!(ev["observer"]["ingress"]["interface"]["name"], "seed.pcap");
}

#[test]
fn random_bytes_through_the_tracker_never_panic() {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    // Random bytes through the whole tracker, over UDP and TCP.
    let mut h = Harness::new(SipConfig::default());
    for i in 0..2000u64 {
        let len = (noise(&mut rng) % 1500) as usize;
        let mut data: Vec<u8> = (0..len).map(|_| noise(&mut rng) as u8).collect();
        if i % 3 == 0 {
            data.splice(
                0..0,
                b"SIP/2.0 200 OK\r\nCSeq: 1 REGISTER\r\ni: x\r\n"
                    .iter()
                    .copied(),
            );
        }
        let seq = noise(&mut rng) as u32;
        h.feed(PHONE, CUCM, IPPROTO_TCP, i * MS, seq, &data);
        h.feed(CUCM, PHONE, IPPROTO_UDP, i * MS, 0, &data);
    }
    h.advance(u64::MAX);
}

// ---------------------------------------------------------------- REGISTER

#[test]
fn registered_on_the_first_200_ok_of_the_seed_exchange() {
    let mut h = Harness::new(SipConfig::default());
    let evs = h.seed_cycle();
    assert_eq!(actions(&evs), ["sip.registered"]);
    let ev = &evs[0];
    assert_eq!(ev["@timestamp"], "2015-07-15T18:12:55.366858Z");
    assert_eq!(ev["event"]["kind"], "event");
    assert_eq!(ev["log"]["level"], "info");
    assert_association(ev, PHONE, CUCM, "tcp");
    assert_eq!(ev["sip"]["call_id"], CALL_ID);
    assert_eq!(ev["sip"]["expires"], 120);
    assert_eq!(ev["sip"]["device"], "SEP0024142DDF24");
    assert_eq!(ev["sip"]["aor"], "sip:5678@10.106.114.161");
    assert_eq!(ev["sip"]["cseq"]["code"], 11435);
    assert_eq!(ev["sip"]["cseq"]["method"], "REGISTER");
    let msg = ev["message"].as_str().expect("message");
    assert!(
        msg.contains("SEP0024142DDF24") && msg.contains("120 s"),
        "{msg}"
    );
    // The granted 120 s plus the default 2 s grace.
    assert_eq!(
        h.tracker.next_deadline(),
        Some(t("18:12:55.366858") + 122 * SEC)
    );
}

#[test]
fn refreshes_keep_it_quiet_and_the_timer_fires_expiry_during_silence() {
    // CUCM unregisters ~15 s after a missed refresh (PROTOCOLS.md §5): the grace.
    let mut h = Harness::new(SipConfig {
        expiry_grace_ms: 15_000,
        ..SipConfig::default()
    });
    let mut evs = h.seed_cycle();
    evs.extend(h.cucm_cycle(
        11436,
        "18:14:54.368343",
        "18:14:54.369997",
        "18:14:54.370751",
    ));
    evs.extend(h.cucm_cycle(
        11437,
        "18:16:49.400028",
        "18:16:49.401468",
        "18:16:49.401833",
    ));
    assert_eq!(actions(&evs), ["sip.registered"]);

    let deadline = t("18:16:49.401833") + 135 * SEC;
    assert_eq!(h.tracker.next_deadline(), Some(deadline));
    assert!(h.advance(deadline - 1).is_empty());
    // advance() is called late: the event still carries the deadline's time.
    let evs = h.advance(deadline + 40 * SEC);
    // The phone went silent: one alert, which says so.
    assert_eq!(actions(&evs), ["sip.expired"]);
    let ev = &evs[0];
    assert_eq!(ev["log"]["level"], "error");
    assert_eq!(ev["heartbeat"]["diagnosis"], "undetermined");
    assert_eq!(ev["heartbeat"]["expected_interval_ms"], 115_031);
    assert_eq!(ev["heartbeat"]["missed"], 1);
    assert_eq!(ev["heartbeat"]["seq"], 11437);
    let msg = ev["message"].as_str().unwrap_or("");
    assert!(msg.contains("no REGISTER from the phone seen"), "{msg}");
    assert_eq!(ev["@timestamp"], "2015-07-15T18:19:04.401833Z");
    assert_eq!(ev["event"]["kind"], "alert");
    assert_association(ev, PHONE, CUCM, "tcp");
    assert_eq!(ev["sip"]["expires"], 120);
    assert_eq!(ev["sip"]["device"], "SEP0024142DDF24");
    assert_eq!(ev["heartbeat"]["silence_ms"], 135_000);
    // The refresh period the phone kept: 18:14:54.370751 -> 18:16:49.401833.
    assert_eq!(ev["heartbeat"]["interval_ms"], 115_031);
    assert_eq!(h.tracker.next_deadline(), None);
    assert!(h.advance(deadline + 3600 * SEC).is_empty(), "fires once");

    // The phone comes back: registered again, with how long it was gone.
    let evs = h.cucm_cycle(
        11438,
        "18:20:04.400000",
        "18:20:04.401000",
        "18:20:04.401833",
    );
    assert_eq!(actions(&evs), ["sip.registered"]);
    assert_eq!(evs[0]["heartbeat"]["downtime_ms"], 60_000);
}

#[test]
fn a_real_unregistration_is_an_event_and_stops_the_expiry_timer() {
    let mut h = Harness::new(SipConfig::default());
    h.seed_cycle();
    let unregister = String::from_utf8(cucm_register(11436))
        .expect("text")
        .replace("Expires: 3600", "Expires: 0");
    let mut evs = h.tcp(PHONE, CUCM, PHONE_ISN, t("18:13:30"), unregister.as_bytes());
    evs.extend(h.tcp(
        CUCM,
        PHONE,
        CUCM_ISN,
        t("18:13:30.002"),
        &cucm_answer(11436, "SIP/2.0 200 OK", &[]),
    ));
    assert_eq!(actions(&evs), ["sip.unregistered"]);
    assert_eq!(evs[0]["sip"]["expires"], 0);
    assert_eq!(evs[0]["sip"]["device"], "SEP0024142DDF24");
    assert_eq!(evs[0]["@timestamp"], "2015-07-15T18:13:30.002000Z");
    assert_association(&evs[0], PHONE, CUCM, "tcp");
    assert!(
        h.advance(t("19:00:00")).is_empty(),
        "no expiry after unregistering"
    );
}

#[test]
fn the_backup_keepalive_is_healthy_while_answered_and_unanswered_otherwise() {
    let mut h = Harness::new(SipConfig::default());
    let mut evs = h.tcp(
        BACKUP_PHONE,
        BACKUP_CUCM,
        77_000,
        t("10:00:00"),
        &backup_keepalive(18800),
    );
    evs.extend(h.tcp(
        BACKUP_CUCM,
        BACKUP_PHONE,
        88_000,
        t("10:00:00.004"),
        &backup_ok(18800),
    ));
    assert!(evs.is_empty(), "no registration events: {evs:?}");
    assert!(h.advance(t("11:00:00")).is_empty());

    let evs = h.tcp(
        BACKUP_PHONE,
        BACKUP_CUCM,
        77_000,
        t("11:00:00"),
        &backup_keepalive(18801),
    );
    assert!(evs.is_empty());
    let evs = h.advance(t("11:05:00"));
    assert_eq!(actions(&evs), ["heartbeat.unanswered"]);
    let ev = &evs[0];
    assert_eq!(ev["@timestamp"], "2015-07-15T11:00:32.000000Z");
    assert_association(ev, BACKUP_PHONE, BACKUP_CUCM, "tcp");
    assert_eq!(ev["heartbeat"]["seq"], 18801);
    assert_eq!(ev["heartbeat"]["timeout_ms"], 32_000);
    assert_eq!(ev["sip"]["method"], "REGISTER");
    assert_eq!(ev["sip"]["device"], "SEPE0D1730AC1B1");
    assert!(ev["message"].as_str().unwrap_or("").contains("keepalive"));
}

#[test]
fn a_digest_challenge_is_normal_and_the_authenticated_retry_registers() {
    let mut h = Harness::new(SipConfig::default());
    let phone = "192.168.1.50:5060";
    let pbx = "192.168.1.1:5060";
    let register = |cseq: u32| {
        crlf(&[
            "REGISTER sip:pbx.example.com SIP/2.0",
            "Via: SIP/2.0/UDP 192.168.1.50:5060;branch=z9hG4bK-r",
            "From: \"Alice\" <sip:alice@pbx.example.com>;tag=a1",
            "To: \"Alice\" <sip:alice@pbx.example.com>",
            "Call-ID: reg-alice-1",
            &format!("CSeq: {cseq} REGISTER"),
            "Contact: <sip:alice@192.168.1.50:5060>",
            "Expires: 600",
            "Content-Length: 0",
        ])
    };
    let answer = |cseq: u32, status: &str, extra: &str| {
        crlf(&[
            status,
            "Via: SIP/2.0/UDP 192.168.1.50:5060;branch=z9hG4bK-r",
            "From: \"Alice\" <sip:alice@pbx.example.com>;tag=a1",
            "To: \"Alice\" <sip:alice@pbx.example.com>;tag=p",
            "Call-ID: reg-alice-1",
            &format!("CSeq: {cseq} REGISTER"),
            extra,
            "Content-Length: 0",
        ])
    };
    let mut evs = h.udp(phone, pbx, t("09:00:00"), &register(1));
    evs.extend(h.udp(
        pbx,
        phone,
        t("09:00:00.010"),
        &answer(
            1,
            "SIP/2.0 401 Unauthorized",
            "WWW-Authenticate: Digest realm=\"pbx\", nonce=\"abc\"",
        ),
    ));
    assert!(evs.is_empty(), "{evs:?}");
    let mut evs = h.udp(phone, pbx, t("09:00:00.020"), &register(2));
    evs.extend(h.udp(
        pbx,
        phone,
        t("09:00:00.030"),
        &answer(
            2,
            "SIP/2.0 200 OK",
            "Contact: <sip:alice@192.168.1.50:5060>;expires=300",
        ),
    ));
    assert_eq!(actions(&evs), ["sip.registered"]);
    assert_association(&evs[0], phone, pbx, "udp");
    // The binding's expires parameter in the answer is what the registrar granted.
    assert_eq!(evs[0]["sip"]["expires"], 300);
    assert_eq!(evs[0]["sip"]["device"], "alice");
    assert_eq!(evs[0]["sip"]["aor"], "sip:alice@pbx.example.com");
    let sum = h.summaries(t("09:01:00"), 60 * SEC);
    assert_eq!(
        sum[0]["heartbeat"]["count"], 2,
        "the challenge was answered, too"
    );
}

#[test]
fn a_refused_register_fails_with_status_and_reason() {
    let mut h = Harness::new(SipConfig::default());
    let evs = h.cucm_refusal(11435, t("18:12:55"), "SIP/2.0 403 Forbidden");
    assert_eq!(actions(&evs), ["sip.register_failed"]);
    let ev = &evs[0];
    assert_eq!(ev["event"]["kind"], "alert");
    assert_eq!(ev["log"]["level"], "warning");
    assert_eq!(ev["event"]["severity"], 5);
    assert_eq!(ev["sip"]["code"], 403);
    assert_eq!(ev["sip"]["status"], "Forbidden");
    assert_eq!(ev["sip"]["device"], "SEP0024142DDF24");
    assert_association(ev, PHONE, CUCM, "tcp");
    assert!(ev["message"]
        .as_str()
        .unwrap_or("")
        .contains("403 Forbidden"));
    assert_eq!(
        h.tracker.next_deadline(),
        None,
        "answered: no unanswered timer"
    );
}

#[test]
fn the_seed_exchange_survives_split_and_combined_segments() {
    let mut h = Harness::new(SipConfig::default());
    let reg = cucm_register(11435);
    // The REGISTER in three segments, 100 Trying and 200 OK in one.
    for (i, part) in reg.chunks(reg.len() / 3 + 1).enumerate() {
        let evs = h.tcp(
            PHONE,
            CUCM,
            PHONE_ISN,
            t("18:12:55.366272") + i as u64,
            part,
        );
        assert!(evs.is_empty());
    }
    let mut answers = cucm_trying(11435);
    answers.extend(cucm_ok(11435));
    let evs = h.tcp(CUCM, PHONE, CUCM_ISN, t("18:12:55.366858"), &answers);
    assert_eq!(actions(&evs), ["sip.registered"]);
    assert_eq!(evs[0]["@timestamp"], "2015-07-15T18:12:55.366858Z");
}

#[test]
fn tcp_retransmissions_are_neither_new_requests_nor_new_answers() {
    let mut h = Harness::new(SipConfig::default());
    let reg = cucm_register(11435);
    let ok = cucm_ok(11435);
    let mut evs = h.feed(PHONE, CUCM, IPPROTO_TCP, t("18:12:55"), PHONE_ISN, &reg);
    evs.extend(h.feed(PHONE, CUCM, IPPROTO_TCP, t("18:12:55.2"), PHONE_ISN, &reg));
    evs.extend(h.feed(CUCM, PHONE, IPPROTO_TCP, t("18:12:55.3"), CUCM_ISN, &ok));
    evs.extend(h.feed(CUCM, PHONE, IPPROTO_TCP, t("18:12:55.5"), CUCM_ISN, &ok));
    assert_eq!(actions(&evs), ["sip.registered"]);
    assert_eq!(h.tracker.counters().tcp.retransmitted, 2);
    let sum = h.summaries(t("18:13:00"), 60 * SEC);
    assert_eq!(sum[0]["heartbeat"]["count"], 1);
    assert_eq!(sum[0]["heartbeat"]["rtt_us"]["max"], 300_000);
}

#[test]
fn a_register_cut_by_the_capture_still_pairs_with_its_answer() {
    let mut h = Harness::new(SipConfig::default());
    let mut big = String::from_utf8(cucm_register(11435)).expect("text");
    big = big.replace(
        "Content-Length: 0",
        &format!("X-Padding: {}\r\nContent-Length: 0", "p".repeat(400)),
    );
    assert!(big.len() > CAPTURE_LEN, "Expires is past the capture");
    let mut evs = h.udp(PHONE, CUCM, t("18:12:55"), big.as_bytes());
    evs.extend(h.udp(CUCM, PHONE, t("18:12:55.010"), &cucm_ok(11435)));
    assert_eq!(actions(&evs), ["sip.registered"]);
    assert_eq!(evs[0]["sip"]["expires"], 120);
    assert_eq!(h.tracker.counters().truncated, 1);
}

#[test]
fn an_answer_without_its_request_still_tells_the_registration() {
    let mut h = Harness::new(SipConfig::default());
    let evs = h.tcp(CUCM, PHONE, CUCM_ISN, t("18:12:55.366858"), &cucm_ok(11435));
    assert_eq!(actions(&evs), ["sip.registered"]);
    // Oriented phone -> registrar although the packet went the other way.
    assert_association(&evs[0], PHONE, CUCM, "tcp");
    assert_eq!(evs[0]["sip"]["expires"], 120);
    // Repeated, it is a duplicate, not a second answer.
    let evs = h.udp(CUCM, PHONE, t("18:12:57"), &cucm_ok(11435));
    assert!(evs.is_empty(), "{evs:?}");
    assert_eq!(h.tracker.counters().duplicate_responses, 1);
    // The backup's 200 OK (Expires 0) alone cannot tell keepalive from removal: silent.
    let evs = h.tcp(
        BACKUP_CUCM,
        BACKUP_PHONE,
        5,
        t("18:13:00"),
        &backup_ok(18800),
    );
    assert!(evs.is_empty(), "{evs:?}");
}

#[test]
fn the_granted_lifetime_is_our_bindings_among_several() {
    let mut h = Harness::new(SipConfig::default());
    h.tcp(PHONE, CUCM, PHONE_ISN, t("18:12:55"), &cucm_register(11435));
    let others = "Contact: <sip:other@10.9.9.9:5060>;expires=500";
    let ours = format!("Contact: {CONTACT};expires=90");
    let ok = cucm_answer(11435, "SIP/2.0 200 OK", &["Expires: 3600", others, &ours]);
    let evs = h.tcp(CUCM, PHONE, CUCM_ISN, t("18:12:56"), &ok);
    assert_eq!(evs[0]["sip"]["expires"], 90);
    // Plus the default 2 s grace.
    assert_eq!(h.tracker.next_deadline(), Some(t("18:14:28")));
}

#[test]
fn a_register_handed_up_late_by_a_tcp_hole_is_not_unanswered() {
    // The REGISTER's second segment is lost; the 200 OK comes (no request known yet);
    // the next refresh reveals the hole and hands up the first REGISTER, dated then.
    let mut h = Harness::new(SipConfig::default());
    let reg = cucm_register(11435);
    let sent = t("18:12:55.366272");
    let mut evs = h.feed(PHONE, CUCM, IPPROTO_TCP, sent, PHONE_ISN, &reg[..400]);
    evs.extend(h.tcp(CUCM, PHONE, CUCM_ISN, t("18:12:55.366858"), &cucm_ok(11435)));
    assert_eq!(actions(&evs), ["sip.registered"], "from the answer alone");
    let next_seq = PHONE_ISN.wrapping_add(reg.len() as u32);
    let refresh = t("18:14:54.368343");
    let evs = h.feed(
        PHONE,
        CUCM,
        IPPROTO_TCP,
        refresh,
        next_seq,
        &cucm_register(11436),
    );
    assert!(evs.is_empty(), "{evs:?}");
    let mut evs = h.tcp(CUCM, PHONE, CUCM_ISN, t("18:14:54.370751"), &cucm_ok(11436));
    evs.extend(h.advance(refresh + 60 * SEC));
    assert!(
        evs.is_empty(),
        "no unanswered for the late REGISTER: {evs:?}"
    );
    let sum = h.summaries(refresh + 60 * SEC, 180 * SEC);
    assert_eq!(sum[0]["heartbeat"]["count"], 2);
    assert_eq!(sum[0]["heartbeat"]["lost"], 0);
    assert_eq!(
        sum[0]["heartbeat"]["rtt_us"]["min"], 586,
        "18:12:55.366272 -> .366858"
    );
}

// ---------------------------------------------------------------- OPTIONS

#[test]
fn options_pings_measure_rtt_and_summarise() {
    let mut h = Harness::new(SipConfig::default());
    for (i, rtt_ms) in [1u64, 2, 6].into_iter().enumerate() {
        let sent = t("12:00:00") + i as u64 * 30 * SEC;
        let cseq = 100 + i as u32;
        assert!(h
            .udp(CVP, SIP_SERVER, sent, &options("ping-1", cseq))
            .is_empty());
        let answer = options_answer("ping-1", cseq, "SIP/2.0 200 OK");
        assert!(h
            .udp(SIP_SERVER, CVP, sent + rtt_ms * MS, &answer)
            .is_empty());
    }
    let evs = h.summaries(t("12:01:00"), 60 * SEC);
    assert_eq!(actions(&evs), ["heartbeat.summary"]);
    let ev = &evs[0];
    assert_eq!(ev["event"]["kind"], "metric");
    assert_eq!(ev["@timestamp"], "2015-07-15T12:01:00.000000Z");
    assert_association(ev, CVP, SIP_SERVER, "udp");
    let hb = &ev["heartbeat"];
    assert_eq!(hb["count"], 3);
    assert_eq!(hb["lost"], 0);
    assert_eq!(hb["rtt_us"]["min"], 1000);
    assert_eq!(hb["rtt_us"]["avg"], 3000);
    assert_eq!(hb["rtt_us"]["max"], 6000);
    assert_eq!(hb["period_ms"], 60_000);
    // Answers at 0.001 s, 30.002 s, 60.006 s: 30.0025 s apart on average.
    assert_eq!(hb["interval_ms"], 30_002);
    // The words and units of every protocol's summary (correlate::summary).
    let message = ev["message"].as_str().unwrap();
    assert!(
        message.ends_with(
            ": 3 REGISTER/OPTIONS transactions answered, 0 unanswered, RTT 1.000/3.000/6.000 ms min/avg/max in 60 s (interval 30002 ms)"
        ),
        "{message}"
    );
    assert!(
        h.summaries(t("12:02:00"), 60 * SEC).is_empty(),
        "idle: no summary"
    );
}

#[test]
fn options_answered_overloaded_fails() {
    let mut h = Harness::new(SipConfig::default());
    h.udp(CVP, SIP_SERVER, t("12:00:00"), &options("ping-2", 1));
    let evs = h.udp(
        SIP_SERVER,
        CVP,
        t("12:00:00.003"),
        &options_answer("ping-2", 1, "SIP/2.0 503 Service Unavailable"),
    );
    assert_eq!(actions(&evs), ["sip.options_failed"]);
    let ev = &evs[0];
    // As docs/EVENTS.md says: alert / warning.
    assert_eq!(
        (
            ev["log"]["level"].as_str(),
            ev["event"]["severity"].as_u64()
        ),
        (Some("warning"), Some(5))
    );
    assert_eq!(ev["sip"]["code"], 503);
    assert_eq!(ev["sip"]["status"], "Service Unavailable");
    assert_eq!(ev["event"]["outcome"], "failure");
    assert_eq!(ev["sip"]["method"], "OPTIONS");
    assert_eq!(ev["@timestamp"], "2015-07-15T12:00:00.003000Z");
    assert_association(ev, CVP, SIP_SERVER, "udp");
    // 404 is an answer too: the peer's stack is alive.
    h.udp(CVP, SIP_SERVER, t("12:00:30"), &options("ping-2", 2));
    let evs = h.udp(
        SIP_SERVER,
        CVP,
        t("12:00:30.003"),
        &options_answer("ping-2", 2, "SIP/2.0 404 Not Found"),
    );
    assert!(evs.is_empty());
}

#[test]
fn options_without_a_final_answer_are_unanswered_by_the_timer() {
    let mut h = Harness::new(SipConfig::default());
    let sent = t("12:00:00");
    h.udp(CVP, SIP_SERVER, sent, &options("ping-3", 42));
    // A provisional answer is not an answer.
    h.udp(
        SIP_SERVER,
        CVP,
        sent + MS,
        &options_answer("ping-3", 42, "SIP/2.0 100 Trying"),
    );
    assert_eq!(h.tracker.next_deadline(), Some(sent + 32 * SEC));
    assert!(h.advance(sent + 32 * SEC - 1).is_empty());
    let evs = h.advance(sent + 45 * SEC);
    assert_eq!(actions(&evs), ["heartbeat.unanswered"]);
    let ev = &evs[0];
    assert_eq!(ev["@timestamp"], "2015-07-15T12:00:32.000000Z");
    assert_eq!(ev["heartbeat"]["seq"], 42);
    assert_eq!(ev["heartbeat"]["timeout_ms"], 32_000);
    assert_eq!(ev["sip"]["cseq"]["code"], 42);
    assert_eq!(ev["sip"]["cseq"]["method"], "OPTIONS");
    assert_eq!(ev["sip"]["call_id"], "ping-3");
    assert_association(ev, CVP, SIP_SERVER, "udp");
    // A late answer is not counted as answered.
    h.udp(
        SIP_SERVER,
        CVP,
        sent + 50 * SEC,
        &options_answer("ping-3", 42, "SIP/2.0 200 OK"),
    );
    let sum = h.summaries(t("12:01:00"), 60 * SEC);
    assert_eq!(sum[0]["heartbeat"]["count"], 0);
    assert_eq!(sum[0]["heartbeat"]["lost"], 1);
    assert!(sum[0]["heartbeat"].get("rtt_us").is_none());
}

#[test]
fn udp_retransmissions_are_retries_not_new_pings() {
    let mut h = Harness::new(SipConfig::default());
    let sent = t("12:00:00");
    let ping = options("ping-4", 5);
    let mut evs = h.udp(CVP, SIP_SERVER, sent, &ping);
    // A mirror copy 150 ms later is no retry (the UA waits T1 = 500 ms).
    evs.extend(h.udp(CVP, SIP_SERVER, sent + 150 * MS, &ping));
    // Nor one stamped a little before the original (another CPU, another source).
    evs.extend(h.udp(CVP, SIP_SERVER, sent - 30_000, &ping));
    assert!(evs.is_empty(), "{evs:?}");
    evs.extend(h.udp(CVP, SIP_SERVER, sent + 500 * MS, &ping));
    evs.extend(h.udp(CVP, SIP_SERVER, sent + 1500 * MS, &ping));
    assert_eq!(actions(&evs), ["heartbeat.retry"]);
    assert_eq!(evs[0]["heartbeat"]["attempt"], 2);
    assert_eq!(evs[0]["heartbeat"]["seq"], 5);
    assert_eq!(evs[0]["@timestamp"], "2015-07-15T12:00:00.500000Z");
    let answer = options_answer("ping-4", 5, "SIP/2.0 200 OK");
    assert!(h.udp(SIP_SERVER, CVP, sent + 1600 * MS, &answer).is_empty());
    // The server answers the third send again (non-INVITE: on each retransmission).
    assert!(h.udp(SIP_SERVER, CVP, sent + 2100 * MS, &answer).is_empty());
    assert_eq!(h.tracker.counters().duplicate_responses, 1);
    assert_eq!(
        h.tracker.counters().duplicates,
        2,
        "the copy; retransmissions are none"
    );
    let sum = h.summaries(t("12:01:00"), 60 * SEC);
    assert_eq!(sum[0]["heartbeat"]["count"], 1);
    assert_eq!(sum[0]["heartbeat"]["lost"], 0);
    // Karn: after a retransmission the RTT is ambiguous, so not sampled.
    assert!(sum[0]["heartbeat"].get("rtt_us").is_none());
    assert!(h.advance(t("13:00:00")).is_empty());
}

// ---------------------------------------------------------------- bounds

#[test]
fn untrusted_strings_are_bounded_valid_utf8() {
    let mut h = Harness::new(SipConfig::default());
    let short = format!("{}@h", "d".repeat(300));
    h.udp(CVP, SIP_SERVER, t("12:00:00"), &options(&short, 1));
    let mut answer = options_answer(&short, 1, "SIP/2.0 503 Serv\u{e9}ce \u{2603}");
    // Invalid UTF-8 in the reason phrase.
    let at = answer
        .windows(4)
        .position(|w| w == b"Serv")
        .expect("reason");
    answer[at + 1] = 0xff;
    let evs = h.udp(SIP_SERVER, CVP, t("12:00:00.001"), &answer);
    assert_eq!(actions(&evs), ["sip.options_failed"]);
    let call_id = evs[0]["sip"]["call_id"].as_str().expect("call id");
    assert_eq!(call_id.chars().count(), 256);
    let reason = evs[0]["sip"]["status"].as_str().expect("reason");
    assert!(reason.starts_with("S\u{fffd}rv"), "{reason}");
    assert!(reason.ends_with('\u{2603}'));
}

#[test]
fn state_is_capped_and_forgotten_when_idle() {
    let mut h = Harness::new(SipConfig {
        max_transactions: 3,
        idle_forget_ms: 600_000,
        ..SipConfig::default()
    });
    h.cucm_cycle(11435, "12:00:01", "12:00:01.001", "12:00:01.002");
    for i in 0..5 {
        h.udp(
            CVP,
            SIP_SERVER,
            t("12:00:02") + i,
            &options(&format!("cap-{i}"), 1),
        );
    }
    assert_eq!(h.tracker.txns.len(), 3);
    assert_eq!(h.tracker.counters().dropped_at_capacity, 3);
    // Transactions go after the answer timeout plus the linger time.
    let evs = h.advance(t("12:01:10"));
    assert_eq!(
        actions(&evs),
        ["heartbeat.unanswered", "heartbeat.unanswered"]
    );
    assert!(h.tracker.txns.is_empty());
    // The registration expires; after the idle time it, its stream and its counters go.
    let evs = h.advance(t("12:02:04"));
    assert_eq!(actions(&evs), ["sip.expired"]);
    h.summaries(t("12:03:00"), 60 * SEC);
    h.advance(t("12:30:00"));
    assert!(h.tracker.regs.is_empty());
    assert!(h.tracker.streams.is_empty());
    assert!(h.tracker.assocs.is_empty());
    assert!(h.tracker.timers.is_empty());
}

// ---------------------------------------------------------------- a real SIPp exchange

struct Packet {
    ts: u64,
    src: String,
    dst: String,
    seq: u32,
    payload: Vec<u8>,
}

/// The packets of a `testdata/sipp-*.txt` capture.
fn sipp_packets(text: &str) -> Vec<Packet> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let hex = f[4].as_bytes();
            Packet {
                ts: f[0].parse().expect("time"),
                src: f[1].to_string(),
                dst: f[2].to_string(),
                seq: f[3].parse().expect("seq"),
                payload: hex
                    .chunks(2)
                    .map(|pair| {
                        u8::from_str_radix(std::str::from_utf8(pair).expect("hex"), 16)
                            .expect("hex")
                    })
                    .collect(),
            }
        })
        .collect()
}

#[test]
fn a_real_sipp_exchange_over_tcp_and_udp() {
    let captures = [
        (include_str!("testdata/sipp-tcp.txt"), IPPROTO_TCP, "tcp"),
        (include_str!("testdata/sipp-udp.txt"), IPPROTO_UDP, "udp"),
    ];
    for (text, transport, name) in captures {
        let packets = sipp_packets(text);
        assert_eq!(packets.len(), 11);
        let stamp = |ts: u64| crate::event::rfc3339_micros(ts as i128);
        let mut h = Harness::new(SipConfig::default());
        let mut evs = Vec::new();
        for p in &packets {
            evs.extend(h.feed(&p.src, &p.dst, transport, p.ts, p.seq, &p.payload));
        }
        // 401 challenge: quiet; 200 OK to the authenticated REGISTER: registered for the
        // `;expires=5` the registrar put on the binding; OPTIONS 200: quiet; 503: failed.
        assert_eq!(
            actions(&evs),
            ["sip.registered", "sip.options_failed"],
            "{name}"
        );
        let registered = &evs[0];
        assert_association(registered, "127.0.0.1:5070", "127.0.0.2:5060", name);
        assert_eq!(registered["@timestamp"], stamp(packets[3].ts));
        assert_eq!(registered["sip"]["expires"], 5);
        assert_eq!(registered["sip"]["device"], "1001");
        assert_eq!(registered["sip"]["aor"], "sip:1001@127.0.0.2");
        assert_eq!(registered["sip"]["cseq"]["code"], 2);
        let failed = &evs[1];
        assert_eq!(failed["@timestamp"], stamp(packets[7].ts));
        assert_eq!(failed["sip"]["code"], 503);
        assert_eq!(failed["sip"]["cseq"]["code"], 11);

        // Then silence: the refreshed registration lapses 5 s (+ 2 s grace) after its
        // 200 OK, the third OPTIONS was never answered.
        let refreshed = packets[10].ts;
        let evs = h.advance(refreshed + 60 * SEC);
        assert_eq!(
            actions(&evs),
            ["sip.expired", "heartbeat.unanswered"],
            "{name}"
        );
        assert_eq!(evs[0]["@timestamp"], stamp(refreshed + 7 * SEC));
        assert_eq!(evs[0]["heartbeat"]["silence_ms"], 7000);
        assert_eq!(evs[1]["@timestamp"], stamp(packets[8].ts + 32 * SEC));
        assert_eq!(evs[1]["heartbeat"]["seq"], 12);

        let sum = h.summaries(refreshed + 60 * SEC, 60 * SEC);
        assert_eq!(actions(&sum), ["heartbeat.summary"]);
        assert_eq!(
            sum[0]["heartbeat"]["count"], 5,
            "3 REGISTER (one challenged), 2 OPTIONS"
        );
        assert_eq!(sum[0]["heartbeat"]["lost"], 1);
        let counters = h.tracker.counters();
        assert_eq!((counters.truncated, counters.incomplete), (0, 0));
    }
}

// ---------------------------------------------------------------- field fidelity

#[test]
fn mirror_copies_over_tcp_are_duplicates_and_real_retransmissions_are_not() {
    let mut h = Harness::new(SipConfig::default());
    let reg = cucm_register(11435);
    let ok = cucm_ok(11435);
    let at = t("18:12:55");
    // A SPAN port: each segment twice, 30 us apart.
    let mut evs = Vec::new();
    for (from, to, isn, ts, data) in [
        (PHONE, CUCM, PHONE_ISN, at, &reg),
        (CUCM, PHONE, CUCM_ISN, at + 2 * MS, &ok),
    ] {
        evs.extend(h.feed(from, to, IPPROTO_TCP, ts, isn, data));
        evs.extend(h.feed(from, to, IPPROTO_TCP, ts + 30_000, isn, data));
    }
    assert_eq!(actions(&evs), ["sip.registered"]);
    let c = h.tracker.counters();
    assert_eq!((c.duplicates, c.tcp.retransmitted), (2, 0));
    // The phone's TCP retransmits the segment 300 ms later: no copy, and no new request.
    assert!(h
        .feed(PHONE, CUCM, IPPROTO_TCP, at + 300 * MS, PHONE_ISN, &reg)
        .is_empty());
    let c = h.tracker.counters();
    assert_eq!((c.duplicates, c.tcp.retransmitted), (2, 1));
    let sum = h.summaries(t("18:13:00"), 60 * SEC);
    assert_eq!(sum[0]["heartbeat"]["count"], 1);
    assert_eq!(sum[0]["heartbeat"]["duplicates"], 2);
    assert!(sum[0]["message"]
        .as_str()
        .unwrap_or("")
        .contains("2 duplicate frames"));
}

/// A REGISTER of alice at the PBX with `auth` headers, and its answer.
fn alice(cseq: u32, auth: &[&str]) -> Vec<u8> {
    let mut lines = vec![
        "REGISTER sip:pbx.example.com SIP/2.0".to_string(),
        "Via: SIP/2.0/UDP 192.168.1.50:5060;branch=z9hG4bK-r".into(),
        "From: <sip:alice@pbx.example.com>;tag=a1".into(),
        "To: <sip:alice@pbx.example.com>".into(),
        "Call-ID: reg-alice-2".into(),
        format!("CSeq: {cseq} REGISTER"),
        "Contact: <sip:alice@192.168.1.50:5060>".into(),
    ];
    lines.extend(auth.iter().map(|a| a.to_string()));
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    crlf(&refs)
}

fn alice_answer(cseq: u32, status: &str, extra: &[&str]) -> Vec<u8> {
    let mut lines = vec![
        status.to_string(),
        "Via: SIP/2.0/UDP 192.168.1.50:5060;branch=z9hG4bK-r".into(),
        "From: <sip:alice@pbx.example.com>;tag=a1".into(),
        "To: <sip:alice@pbx.example.com>;tag=p".into(),
        "Call-ID: reg-alice-2".into(),
        format!("CSeq: {cseq} REGISTER"),
    ];
    lines.extend(extra.iter().map(|a| a.to_string()));
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    crlf(&refs)
}

#[test]
fn proxy_credentials_refused_and_a_403_after_credentials_are_rejections() {
    let (phone, pbx) = ("192.168.1.50:5060", "192.168.1.1:5060");
    let mut h = Harness::new(SipConfig::default());
    // One REGISTER of alice with `auth`, answered `answer` 10 ms later.
    let mut exchange = |cseq: u32, auth: &[&str], answer: Vec<u8>| {
        let at = t("09:00:00") + u64::from(cseq) * SEC;
        h.udp(phone, pbx, at, &alice(cseq, auth));
        h.udp(pbx, phone, at + 10 * MS, &answer)
    };
    let proxy_creds = "Proxy-Authorization: Digest username=\"alice\", realm=\"edge\", nonce=\"1\", response=\"x\"";
    let required = "SIP/2.0 407 Proxy Authentication Required";
    let challenge = "Proxy-Authenticate: Digest realm=\"edge\", nonce=\"2\"";
    let evs = exchange(1, &[proxy_creds], alice_answer(1, required, &[challenge]));
    let reasons = |evs: &[Value]| -> Vec<(String, Value)> {
        evs.iter()
            .map(|e| {
                (
                    format!(
                        "{}: {} {}",
                        if e["sip"]["credentials_rejected"] == true {
                            "credentials rejected"
                        } else {
                            "refused"
                        },
                        e["sip"]["code"],
                        e["sip"]["status"].as_str().unwrap_or("?")
                    ),
                    e["sip"]["rejections"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(
        reasons(&evs),
        [(
            "credentials rejected: 407 Proxy Authentication Required".into(),
            1.into()
        )]
    );
    let creds =
        "Authorization: Digest username=\"alice\", realm=\"pbx\", nonce=\"3\", response=\"x\"";
    let forbidden = "SIP/2.0 403 Forbidden";
    let evs = exchange(2, &[creds], alice_answer(2, forbidden, &[]));
    assert_eq!(
        reasons(&evs),
        [("credentials rejected: 403 Forbidden".into(), 2.into())]
    );
    assert_eq!(evs[0]["sip"]["code"], 403);
    // A challenge the capture cut off before its WWW-Authenticate: cannot tell, quiet.
    let mut cut = alice_answer(3, "SIP/2.0 401 Unauthorized", &[]);
    cut.truncate(cut.len() - 2);
    assert!(exchange(3, &[creds], cut).is_empty());
    // Without credentials, a 403 is a plain refusal.
    let evs = exchange(4, &[], alice_answer(4, forbidden, &[]));
    assert_eq!(
        reasons(&evs),
        [("refused: 403 Forbidden".into(), Value::Null)]
    );
    assert_eq!(h.tracker.counters().credentials_rejected, 2);
}

#[test]
fn a_register_cut_before_its_credentials_is_judged_by_the_challenge_before() {
    // Only the first 1024 bytes of a message are captured: a long REGISTER loses its
    // Authorization header. Challenged again at once for the same realm: rejected.
    let (phone, pbx) = ("192.168.1.50:5060", "192.168.1.1:5060");
    let padding = format!("X-Padding: {}", "p".repeat(1100));
    let creds =
        "Authorization: Digest username=\"alice\", realm=\"pbx\", nonce=\"1\", response=\"x\"";
    let challenge =
        |nonce: &str| format!("WWW-Authenticate: Digest realm=\"pbx\", nonce=\"{nonce}\"");
    let unauthorized = "SIP/2.0 401 Unauthorized";
    let mut h = Harness::new(SipConfig::default());
    let mut exchange = |cseq: u32, at: u64, auth: &[&str], nonce: &str| {
        let mut headers = vec![padding.as_str()];
        headers.extend_from_slice(auth);
        h.udp(phone, pbx, at, &alice(cseq, &headers));
        let answer = alice_answer(cseq, unauthorized, &[&challenge(nonce)]);
        h.udp(pbx, phone, at + 10 * MS, &answer)
    };
    assert!(
        exchange(1, t("10:00:00"), &[], "1").is_empty(),
        "first challenge"
    );
    let evs = exchange(2, t("10:00:00.030"), &[creds], "2");
    assert_eq!(actions(&evs), ["sip.register_failed"]);
    assert_eq!(evs[0]["sip"]["credentials_rejected"], true);
    assert_eq!(evs[0]["sip"]["code"], 401);
    // A minute later the phone starts over: a first challenge again, quiet.
    assert!(exchange(3, t("10:01:00"), &[], "3").is_empty());
}

#[test]
fn rejections_are_alerted_one_two_three_then_at_five_ten_twenty_fifty() {
    let alerted: Vec<u64> = (1..=1000)
        .filter(|&n| super::registration::worth_alerting(n))
        .collect();
    assert_eq!(alerted, [1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000]);
}

#[test]
fn a_refresh_sent_in_time_and_answered_late_is_no_lapse() {
    let mut h = Harness::new(SipConfig::default());
    h.seed_cycle();
    // Refreshed at 18:14:54, two seconds before the 120 s run out; a loaded registrar
    // answers 8 s later (after the lifetime and its grace).
    let mut evs = h.tcp(PHONE, CUCM, PHONE_ISN, t("18:14:54"), &cucm_register(11436));
    evs.extend(h.advance(t("18:15:01")));
    evs.extend(h.tcp(CUCM, PHONE, CUCM_ISN, t("18:15:02"), &cucm_ok(11436)));
    assert!(evs.is_empty(), "{evs:?}");
    // Unanswered, the same refresh ends in one lapse once its answer timed out.
    let mut evs = h.tcp(PHONE, CUCM, PHONE_ISN, t("18:16:58"), &cucm_register(11437));
    evs.extend(h.advance(t("18:20:00")));
    assert_eq!(actions(&evs), ["heartbeat.unanswered", "sip.expired"]);
    assert_eq!(evs[1]["@timestamp"], "2015-07-15T18:17:30.000000Z");
    assert_eq!(evs[1]["heartbeat"]["diagnosis"], "peer-unresponsive");
}

#[test]
fn a_lapse_after_refusals_says_the_registrar_refused() {
    let mut h = Harness::new(SipConfig::default());
    h.seed_cycle();
    let evs = h.cucm_refusal(11436, t("18:14:54"), "SIP/2.0 503 Service Unavailable");
    assert_eq!(actions(&evs), ["sip.register_failed"]);
    let evs = h.advance(t("18:20:00"));
    assert_eq!(actions(&evs), ["sip.expired"]);
    let msg = evs[0]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("the registrar refused the refresh: 503 Service Unavailable"),
        "{msg}"
    );
    assert!(evs[0]["heartbeat"].get("diagnosis").is_none());
}
