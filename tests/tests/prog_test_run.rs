//! The real XDP program, loaded through the verifier, run by the kernel on crafted
//! frames with BPF_PROG_TEST_RUN. Asserts verdicts, counters and ring-buffer records.

use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use hbgen::frame::FrameSpec;
use hbwatch::datapath::{Datapath, XDP_PROGRAM};
use hbwatch::ports::{default_specs, port_table};
use hbwatch_common::counters::Counter;
use hbwatch_common::event::{EventKind, RawEvent, BEAT_PAIRED};
use hbwatch_common::proto::{rudp, Protocol, Role};
use hbwatch_tests::{addr, require_root, rudp_frame};

const XDP_PASS: u32 = 2;

struct Harness {
    dp: Datapath,
    ring: RingBuf<MapData>,
}

impl Harness {
    fn new() -> Harness {
        Harness::tuned(&[])
    }

    fn tuned(tunes: &[&str]) -> Harness {
        let tunes: Vec<hbwatch::tuning::Tune> = tunes.iter().map(|t| t.parse().unwrap()).collect();
        let params = hbwatch::tuning::params(&tunes);
        let started = std::time::Instant::now();
        let mut dp = Datapath::load(&port_table(&default_specs()), &params)
            .expect("verifier accepts the program");
        // The verifier's time on this kernel: the first thing to read when a VM run is slow.
        eprintln!(
            "datapath loaded in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let ring = dp.take_ring().unwrap();
        Harness { dp, ring }
    }

    fn run(&mut self, frame: &[u8]) {
        let prog: &mut Xdp = self
            .dp
            .ebpf_mut()
            .program_mut(XDP_PROGRAM)
            .unwrap()
            .try_into()
            .unwrap();
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        let res = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
        assert_eq!(res.return_value, XDP_PASS, "an observer never drops");
    }

    fn counter(&self, c: Counter) -> u64 {
        let map: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.dp.ebpf().map("COUNTERS").unwrap()).unwrap();
        map.get(&(c as u32), 0).unwrap().iter().sum()
    }

    /// Records since the last call, but per-heartbeat `Heartbeat` records (timer input).
    fn records(&mut self) -> Vec<RawEvent> {
        self.all_records()
            .into_iter()
            .filter(|r| r.kind != EventKind::Heartbeat as u8)
            .collect()
    }

    fn all_records(&mut self) -> Vec<RawEvent> {
        self.raw_records()
            .iter()
            .map(|item| RawEvent::from_bytes(item).expect("record size"))
            .collect()
    }

    /// Records as the ring holds them (SIP records: header, then payload bytes).
    fn raw_records(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(item) = self.ring.next() {
            out.push(item.to_vec());
        }
        out
    }
}

#[test]
fn rudp_over_plain_vlan_qinq_and_ipv6_is_decoded() {
    if !require_root("rudp_over_plain_vlan_qinq_and_ipv6_is_decoded") {
        return;
    }
    let mut h = Harness::new();
    let cases: [(&[u16], &str, &str); 4] = [
        (&[], "10.1.0.1", "10.1.0.2"),
        (&[100], "10.2.0.1", "10.2.0.2"),
        (&[10, 20], "10.3.0.1", "10.3.0.2"),
        (&[], "fd00::1", "fd00::2"),
    ];
    for (i, (vlans, a, b)) in cases.iter().enumerate() {
        h.run(&rudp_frame(vlans, a, b, 500, Role::Request));
        h.run(&rudp_frame(vlans, b, a, 500, Role::Response));
        h.run(&rudp_frame(vlans, a, b, 503, Role::Request));
        let all = h.all_records();
        // Every heartbeat of a known association goes up for the userspace timers: the
        // paired response with its RTT, then the gap, then the request that made it.
        let beats: Vec<_> = all
            .iter()
            .filter(|r| r.kind == EventKind::Heartbeat as u8)
            .map(|r| (r.seq, r.aux, r.value > 0))
            .collect();
        assert_eq!(
            beats,
            vec![
                (500, Role::Response as u32 | BEAT_PAIRED, true),
                (503, Role::Request as u32, false)
            ],
            "case {i}"
        );
        assert_eq!(all.last().unwrap().kind, EventKind::Heartbeat as u8);
        let recs: Vec<_> = all
            .into_iter()
            .filter(|r| r.kind != EventKind::Heartbeat as u8)
            .collect();
        let kinds: Vec<_> = recs
            .iter()
            .map(|r| (EventKind::from_u8(r.kind).unwrap(), r.seq, r.aux, r.value))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (EventKind::AssociationSeen, 500, Role::Request as u32, 0),
                (EventKind::Gap, 503, 501, 2)
            ],
            "case {i}: {vlans:?} {a}"
        );
        assert_eq!(recs[0].key.orig_port, 15000);
        assert_eq!(recs[0].dscp, 46);
        assert_eq!(recs[0].key.family, if a.contains(':') { 6 } else { 4 });
    }
    assert_eq!(h.counter(Counter::Heartbeats), 12);
    assert_eq!(h.counter(Counter::Packets), 12);
}

#[test]
fn malformed_frames_are_counted_and_never_misread() {
    if !require_root("malformed_frames_are_counted_and_never_misread") {
        return;
    }
    let mut h = Harness::new();
    let good = rudp_frame(&[], "10.9.0.1", "10.9.0.2", 1, Role::Request);
    // Truncated inside the UDP header.
    h.run(&good[..14 + 20 + 4]);
    // Bad IHL (4).
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x44;
    h.run(&bad_ihl);
    // Non-first fragment (offset 185*8).
    let mut frag = good.clone();
    frag[14 + 6] = 0x00;
    frag[14 + 7] = 185;
    h.run(&frag);
    // Three VLAN tags: beyond what is parsed.
    h.run(&rudp_frame(
        &[1, 2, 3],
        "10.9.0.1",
        "10.9.0.2",
        1,
        Role::Request,
    ));
    // UDP length claims 7 bytes of payload: not an RUDP heartbeat.
    let mut long_udp = good.clone();
    long_udp[14 + 20 + 5] = 15;
    long_udp[14 + 3] = 35;
    h.run(&long_udp);
    assert_eq!(h.counter(Counter::Truncated), 1);
    assert_eq!(h.counter(Counter::Malformed), 1);
    assert_eq!(h.counter(Counter::Fragments), 1);
    assert_eq!(h.counter(Counter::Unparsed), 1);
    assert_eq!(h.counter(Counter::NotHeartbeat), 1);
    assert_eq!(h.counter(Counter::Heartbeats), 0);
    assert!(h.records().is_empty(), "no event from malformed frames");
    // IPv4 options: still parsed and decoded.
    let mut f = FrameSpec::udp(
        addr("10.9.0.1"),
        15000,
        addr("10.9.0.2"),
        15000,
        &rudp::payload(1, Role::Request),
    );
    f.ip_options = vec![1, 1, 1, 0];
    f.dscp = 46;
    h.run(&f.build());
    assert_eq!(h.counter(Counter::Heartbeats), 1);
    assert_eq!(h.records().len(), 1);
}

#[test]
fn stripped_ef_marking_is_reported_once_per_value() {
    if !require_root("stripped_ef_marking_is_reported_once_per_value") {
        return;
    }
    let mut h = Harness::new();
    let mut frame = |seq: u32, dscp: u8| {
        let mut f = FrameSpec::udp(
            addr("10.4.0.1"),
            15000,
            addr("10.4.0.2"),
            15000,
            &rudp::payload(seq, Role::Request),
        );
        f.dscp = dscp;
        h.run(&f.build());
        // Requests only (no responses): `unanswered` records are expected and not looked at.
        h.records()
            .iter()
            .map(|r| (EventKind::from_u8(r.kind).unwrap(), r.value, r.aux))
            .filter(|(k, _, _)| *k != EventKind::Unanswered)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        frame(1, 46),
        vec![(EventKind::AssociationSeen, 0, Role::Request as u32)]
    );
    assert_eq!(frame(2, 0), vec![(EventKind::QosMismatch, 0, 46)]);
    assert_eq!(frame(3, 0), vec![], "same wrong marking: reported once");
    assert_eq!(frame(4, 10), vec![(EventKind::QosMismatch, 10, 46)]);
    assert_eq!(frame(5, 46), vec![], "marking restored");
    assert_eq!(
        frame(6, 0),
        vec![(EventKind::QosMismatch, 0, 46)],
        "stripped again"
    );
}

#[test]
fn ordinary_traffic_passes_without_matching() {
    if !require_root("ordinary_traffic_passes_without_matching") {
        return;
    }
    let mut h = Harness::new();
    h.run(&FrameSpec::udp(addr("10.0.0.1"), 53, addr("10.0.0.2"), 5353, b"dns?").build());
    let mut tcp = FrameSpec::udp(addr("10.0.0.1"), 443, addr("10.0.0.2"), 40000, &[0; 100]);
    tcp.tcp = Some(hbgen::frame::Tcp {
        seq: 1,
        ack: 1,
        flags: 0x10,
        window: 100,
    });
    h.run(&tcp.build());
    // Right port, wrong transport (TCP 15000) is not RUDP.
    let mut tcp15k = FrameSpec::udp(
        addr("10.0.0.1"),
        15000,
        addr("10.0.0.2"),
        15000,
        &rudp::payload(1, Role::Request),
    );
    tcp15k.tcp = Some(hbgen::frame::Tcp::default());
    h.run(&tcp15k.build());
    assert_eq!(h.counter(Counter::Packets), 3);
    assert_eq!(h.counter(Counter::PortMatched), 0);
    assert!(h.records().is_empty());
}

/// One heartbeat frame of each protocol, and the record kind + protocol it must yield.
fn protocol_frames(
    src: &str,
    dst: &str,
    vlans: &[u16],
) -> Vec<(&'static str, Vec<u8>, EventKind, Protocol)> {
    use hbgen::frame::Tcp;
    use hbwatch_common::proto::{ged125, sccp};
    let tcp = |sport: u16, dport: u16, payload: &[u8]| {
        let mut f = FrameSpec::udp(addr(src), sport, addr(dst), dport, payload);
        f.tcp = Some(Tcp {
            seq: 1,
            ack: 1,
            flags: 0x18,
            window: 100,
        });
        f.vlans = vlans.to_vec();
        f.build()
    };
    let udp = |sport: u16, dport: u16, payload: &[u8], dscp: u8| {
        let mut f = FrameSpec::udp(addr(src), sport, addr(dst), dport, payload);
        f.vlans = vlans.to_vec();
        f.dscp = dscp;
        f.build()
    };
    vec![
        (
            "rudp",
            udp(15000, 15000, &rudp::payload(9, Role::Request), 46),
            EventKind::AssociationSeen,
            Protocol::Cs1000Rudp,
        ),
        (
            "ged125",
            tcp(40000, 5000, &ged125::message(Role::Request, 0xaa4c06cc)),
            EventKind::AssociationSeen,
            Protocol::Ged125,
        ),
        (
            "sccp",
            tcp(51000, 2000, &sccp::message(Role::Request)),
            EventKind::AssociationSeen,
            Protocol::Sccp,
        ),
        (
            "mds",
            udp(39600, 39600, &7u32.to_le_bytes(), 0),
            EventKind::AssociationSeen,
            Protocol::Mds,
        ),
        (
            "ipmg",
            udp(32779, 32780, &[1, 2, 3, 4], 0),
            EventKind::AssociationSeen,
            Protocol::Cs1000Ipmg,
        ),
        (
            "sip",
            udp(
                5060,
                5060,
                b"OPTIONS sip:ping@x SIP/2.0\r\nCSeq: 1 OPTIONS\r\n\r\n",
                0,
            ),
            EventKind::SipMessage,
            Protocol::Sip,
        ),
    ]
}

fn run_tc(dp: &mut Datapath, frame: &[u8]) {
    use aya::programs::SchedClassifier;
    let prog: &mut SchedClassifier = dp
        .ebpf_mut()
        .program_mut(hbwatch::datapath::TC_PROGRAM)
        .unwrap()
        .try_into()
        .unwrap();
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    let res = prog.test_run(opts).expect("BPF_PROG_TEST_RUN (tc)");
    assert_eq!(
        res.return_value as i32, -1,
        "TC_ACT_UNSPEC: continue unchanged"
    );
}

#[test]
fn every_protocol_over_ipv4_ipv6_and_vlan_through_xdp_and_tc() {
    if !require_root("every_protocol_over_ipv4_ipv6_and_vlan_through_xdp_and_tc") {
        return;
    }
    let variants: [(&str, &str, &[u16]); 3] = [
        ("10.11.0.1", "10.11.0.2", &[]),
        ("fd11::1", "fd11::2", &[]),
        ("10.12.0.1", "10.12.0.2", &[300]),
    ];
    for tc in [false, true] {
        // A fresh load per path: the flow table starts empty. One heartbeat each:
        // MDS and IPMG announce at once too (their plausibility test has its own).
        let mut h = Harness::tuned(&["mds.confirm_beats=1", "cs1000-ipmg.confirm_beats=1"]);
        for (src, dst, vlans) in variants {
            for (name, frame, kind, proto) in protocol_frames(src, dst, vlans) {
                if tc {
                    run_tc(&mut h.dp, &frame);
                } else {
                    h.run(&frame);
                }
                let recs = h.records();
                let what = format!(
                    "{name} {src} vlan {vlans:?} via {}",
                    if tc { "tc" } else { "xdp" }
                );
                assert_eq!(recs.len(), 1, "{what}: {recs:?}");
                assert_eq!(EventKind::from_u8(recs[0].kind), Some(kind), "{what}");
                assert_eq!(recs[0].key.proto, proto as u8, "{what}");
                assert_eq!(
                    recs[0].key.family,
                    if src.contains(':') { 6 } else { 4 },
                    "{what}"
                );
            }
        }
        assert_eq!(h.counter(Counter::Heartbeats), 18);
    }
}

#[test]
fn tuning_changes_the_kernel_rules_without_recompiling() {
    if !require_root("tuning_changes_the_kernel_rules_without_recompiling") {
        return;
    }
    // seq 1 asked and echoed, then seq 6: all unmarked (DSCP 0).
    let play = |h: &mut Harness| {
        for (seq, role) in [(1, Role::Request), (1, Role::Response), (6, Role::Request)] {
            let (s, d) = match role {
                Role::Response => ("10.5.0.2", "10.5.0.1"),
                _ => ("10.5.0.1", "10.5.0.2"),
            };
            let payload = rudp::payload(seq, role);
            h.run(&FrameSpec::udp(addr(s), 15000, addr(d), 15000, &payload).build());
        }
        h.records()
            .iter()
            .map(|r| (EventKind::from_u8(r.kind).unwrap(), r.seq))
            .collect::<Vec<_>>()
    };
    // Defaults: EF expected in both directions, a jump of 5 is a gap.
    assert_eq!(
        play(&mut Harness::new()),
        vec![
            (EventKind::AssociationSeen, 1),
            (EventKind::QosMismatch, 1),
            (EventKind::QosMismatch, 1),
            (EventKind::Gap, 6)
        ]
    );
    // Tuned: no DSCP expectation, and jumps of more than 3 count as a restart.
    let mut tuned = Harness::tuned(&["cs1000-rudp.expected_dscp=any", "cs1000-rudp.max_gap=3"]);
    assert_eq!(
        play(&mut tuned),
        vec![(EventKind::AssociationSeen, 1), (EventKind::Restart, 6)]
    );
}

#[test]
fn sip_record_counts_only_the_bytes_the_frame_holds() {
    if !require_root("sip_record_counts_only_the_bytes_the_frame_holds") {
        return;
    }
    use hbwatch_common::event::RAW_EVENT_SIZE;
    let mut h = Harness::new();
    // A REGISTER whose IP and UDP lengths promise 600 payload bytes; the frame holds
    // 46. The record used to claim 600 captured, so userspace read the bytes of an older
    // record left in the (never zeroed) ring memory as the rest of this message.
    let text = b"REGISTER sip:10.70.0.1 SIP/2.0\r\nCall-ID: lie\r\n";
    let mut f = FrameSpec::udp(addr("10.70.0.9"), 5060, addr("10.70.0.1"), 5060, text).build();
    let claim = 600u16;
    f[14 + 2..14 + 4].copy_from_slice(&(20 + 8 + claim).to_be_bytes());
    f[34 + 4..34 + 6].copy_from_slice(&(8 + claim).to_be_bytes());
    h.run(&f);
    let recs = h.raw_records();
    let [item] = &recs[..] else {
        panic!("one SIP record, got {}", recs.len());
    };
    let raw = RawEvent::from_bytes(item).unwrap();
    assert_eq!(raw.kind, EventKind::SipMessage as u8);
    assert_eq!(
        raw.value, claim as u64,
        "the payload length the headers claim"
    );
    // Whole 8-byte chunks of what is there.
    assert_eq!(raw.aux as usize, text.len() / 8 * 8);
    let data = &item[RAW_EVENT_SIZE..RAW_EVENT_SIZE + raw.aux as usize];
    assert_eq!(data, &text[..raw.aux as usize]);
}

#[test]
fn mds_is_announced_only_after_plausibly_timed_heartbeats() {
    if !require_root("mds_is_announced_only_after_plausibly_timed_heartbeats") {
        return;
    }
    let mut h = Harness::new();
    let mds = |seq: u32, port: u16| {
        FrameSpec::udp(
            addr("10.13.0.1"),
            port,
            addr("10.13.0.2"),
            port,
            &seq.to_le_bytes(),
        )
        .build()
    };
    // A counter at line rate (a TFTP ACK train looks like this): never an association.
    for seq in 0..20 {
        h.run(&mds(seq, 39700));
    }
    assert!(h.records().is_empty());
    assert_eq!(h.counter(Counter::Unconfirmed), 20);
    // Every 30 ms (MDS runs at 100 ms; a quarter of it is plausible): the 4th announces.
    for seq in 0..6 {
        h.run(&mds(seq, 39701));
        std::thread::sleep(std::time::Duration::from_millis(30));
    }
    let recs: Vec<_> = h
        .records()
        .iter()
        .map(|r| (EventKind::from_u8(r.kind), r.seq))
        .collect();
    // Then only per-heartbeat timer records (not counted by records()).
    assert_eq!(recs, vec![(Some(EventKind::AssociationSeen), 3)]);
}

/// The verifier walks every way through the program; its limit is 1,000,000 instructions
/// per program, and older kernels (5.10) prune far less than this one. A program that
/// needs 800k here took over 20 minutes to load on 5.10 under QEMU: a change that makes
/// the verifier's work grow fails here, on the host, before the VM matrix.
#[test]
fn the_verifier_work_leaves_room_for_older_kernels() {
    if !require_root("the_verifier_work_leaves_room_for_older_kernels") {
        return;
    }
    /// A quarter of the limit: ~2x what the datapath needs on 6.18 today (86k per
    /// program), 1.4x on 6.1 (178k), which prunes less. The TC program's two readers are
    /// tail calls, each counted (and bounded) on its own.
    const BUDGET: u32 = 250_000;
    let h = Harness::new();
    for (program, work) in h.dp.verifier_work() {
        match work {
            Some(n) => {
                eprintln!("{program}: {n} instructions processed");
                assert!(
                    n <= BUDGET,
                    "{program}: the verifier processed {n} instructions, over the budget of \
                     {BUDGET} (limit 1000000); older kernels may not load it in time"
                );
            }
            // Kernels before 5.16 do not report it; loading at all is the check there.
            None => eprintln!("{program}: this kernel does not report the verifier's work"),
        }
    }
}
