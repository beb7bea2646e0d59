//! `hbwatch hbgen` captures read back by tshark (Wireshark's own dissectors): GED-125
//! with `-d tcp.port==5000,ged125`, Skinny and SIP, RUDP/MDS payload bytes through
//! `data.data`; every count compared with what the generator says it wrote (the truth
//! sidecar's `generated.by_message`). No root needed; without tshark the tests skip
//! (and fail in CI, where `cargo xtask` installs it).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn tshark_present(test: &str) -> bool {
    let ok = Command::new("tshark")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: tshark is missing in CI"
        );
        eprintln!("SKIP {test}: tshark not installed");
    }
    ok
}

/// Runs `hbwatch hbgen ARGS --pcap <tmp>/<name>`; returns the capture and its truth.
fn hbgen(name: &str, args: &[&str]) -> (PathBuf, Value) {
    let dir = std::env::temp_dir().join(format!("hbgen-tshark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join(name);
    let out = Command::new(env!("CARGO_BIN_EXE_hbwatch"))
        .arg("hbgen")
        .args(args)
        .arg("--pcap")
        .arg(&pcap)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hbgen {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let truth_path = format!("{}.truth.json", pcap.display());
    let truth: Value = serde_json::from_str(&std::fs::read_to_string(truth_path).unwrap()).unwrap();
    (pcap, truth)
}

/// tshark `-T fields` rows for frames matching `filter`.
fn fields(pcap: &Path, filter: &str, names: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.args(["-n", "-d", "tcp.port==5000,ged125", "-r"])
        .arg(pcap)
        .args([
            "-Y",
            filter,
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-E",
            "occurrence=f",
        ]);
    for n in names {
        cmd.args(["-e", n]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "tshark {filter}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect()
}

fn count(truth: &Value, label: &str) -> usize {
    truth["generated"]["by_message"][label]
        .as_u64()
        .unwrap_or(0) as usize
}

/// Required expectations of `action` on `protocol`, by source ip.
fn expected<'a>(truth: &'a Value, protocol: &str, action: &str) -> Vec<&'a Value> {
    truth["expected"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["protocol"] == protocol && e["action"] == action && e["required"] == true)
        .collect()
}

fn no_malformed(pcap: &Path) {
    let bad = fields(
        pcap,
        "_ws.malformed || _ws.expert.severity >= error",
        &["frame.number"],
    );
    assert!(
        bad.is_empty(),
        "{}: malformed frames {bad:?}",
        pcap.display()
    );
}

#[test]
fn ged125_heartbeats_pair_by_invoke_id_in_tshark() {
    if !tshark_present("ged125_heartbeats_pair_by_invoke_id_in_tshark") {
        return;
    }
    for scenario in ["story", "faults"] {
        let (pcap, truth) = hbgen(&format!("ged-{scenario}.pcap"), &["--scenario", scenario]);
        no_malformed(&pcap);
        let rows = fields(
            &pcap,
            "ged125",
            &[
                "tcp.stream",
                "ged125.value",
                "ged125.invoke_id",
                "ged125.idle_timeout",
            ],
        );
        let of = |ty: &str| rows.iter().filter(|r| r[1] == ty).collect::<Vec<_>>();
        let (reqs, confs, opens) = (of("5"), of("6"), of("3"));
        assert_eq!(
            reqs.len(),
            count(&truth, "ged125.heartbeat_req"),
            "{scenario} HEARTBEAT_REQ"
        );
        assert_eq!(
            confs.len(),
            count(&truth, "ged125.heartbeat_conf"),
            "{scenario} HEARTBEAT_CONF"
        );
        assert_eq!(
            opens.len(),
            count(&truth, "ged125.open_req"),
            "{scenario} OPEN_REQ"
        );
        assert_eq!(
            of("4").len(),
            count(&truth, "ged125.open_conf"),
            "{scenario} OPEN_CONF"
        );
        assert!(reqs.len() >= 10, "{scenario}: {} REQs", reqs.len());
        assert!(
            opens.iter().all(|r| r[3] == "15000"),
            "IdleTimeout ms: {opens:?}"
        );
        // Per session, InvokeIDs increment by one from the OPEN_REQ's.
        let mut by_stream: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for r in reqs.iter().chain(opens.iter()) {
            by_stream
                .entry(&r[0])
                .or_default()
                .push(r[2].parse().unwrap());
        }
        for ids in by_stream.values_mut() {
            ids.sort_unstable();
            assert!(
                ids.windows(2).all(|w| w[1] == w[0] + 1),
                "{scenario}: InvokeIDs {ids:?}"
            );
        }
        // Every CONF echoes a REQ; the REQs left unconfirmed are the truth's unanswered.
        let req_ids: BTreeSet<(String, u64)> = reqs
            .iter()
            .map(|r| (r[0].clone(), r[2].parse().unwrap()))
            .collect();
        let conf_ids: BTreeSet<(String, u64)> = confs
            .iter()
            .map(|r| (r[0].clone(), r[2].parse().unwrap()))
            .collect();
        assert!(conf_ids.is_subset(&req_ids), "{scenario}: CONF without REQ");
        let unconfirmed: BTreeSet<u64> = req_ids.difference(&conf_ids).map(|x| x.1).collect();
        let unanswered: BTreeSet<u64> = expected(&truth, "ged125", "heartbeat.unanswered")
            .iter()
            .map(|e| e["fields"]["heartbeat.seq"].as_u64().unwrap())
            .collect();
        assert_eq!(unconfirmed, unanswered, "{scenario}");
        let retrans = fields(
            &pcap,
            "tcp.port==5000 && tcp.analysis.retransmission",
            &["frame.number"],
        );
        assert_eq!(
            retrans.len(),
            count(&truth, "ged125.heartbeat_req_retransmission"),
            "{scenario}"
        );
        let resets = fields(
            &pcap,
            "tcp.port==5000 && tcp.flags.reset==1",
            &["frame.number"],
        );
        assert_eq!(
            resets.len(),
            expected(&truth, "ged125", "session.closed").len(),
            "{scenario}"
        );
    }
}

#[test]
fn skinny_keepalives_and_register_ack_in_tshark() {
    if !tshark_present("skinny_keepalives_and_register_ack_in_tshark") {
        return;
    }
    for (scenario, intervals) in [("story", ("10", "20")), ("faults", ("30", "60"))] {
        let (pcap, truth) = hbgen(&format!("sccp-{scenario}.pcap"), &["--scenario", scenario]);
        no_malformed(&pcap);
        let rows = fields(
            &pcap,
            "skinny",
            &[
                "skinny.messageId",
                "skinny.hdr_version",
                "skinny.keepAliveInterval",
                "skinny.secondaryKeepAliveInterval",
                "ip.dst",
            ],
        );
        let n = |id: &str| rows.iter().filter(|r| r[0] == id).count();
        // KeepAliveMessage 0x0000, KeepAliveAckMessage 0x0100, RegisterAckMessage 0x0081.
        assert_eq!(
            n("0"),
            count(&truth, "sccp.keepalive") + count(&truth, "sccp.keepalive_retransmission"),
            "{scenario} KeepAlive"
        );
        assert_eq!(
            n("256"),
            count(&truth, "sccp.keepalive_ack"),
            "{scenario} KeepAliveAck"
        );
        assert_eq!(
            n("1"),
            count(&truth, "sccp.register"),
            "{scenario} Register"
        );
        assert!(n("0") >= 2 && n("256") >= 1, "{scenario}: {rows:?}");
        let acks: Vec<_> = rows.iter().filter(|r| r[0] == "129").collect();
        assert_eq!(acks.len(), 1);
        assert_eq!((acks[0][2].as_str(), acks[0][3].as_str()), intervals);
        assert!(
            rows.iter().all(|r| r[1] == "0x00000016"),
            "header version 0x16"
        );
        // The backup CUCM (10.30.0.11) gets keepalives but never acknowledges them in SCCP.
        assert!(rows.iter().any(|r| r[0] == "0" && r[4] == "10.30.0.11"));
        let backup_acks = fields(&pcap, "skinny && ip.src==10.30.0.11", &["frame.number"]);
        assert!(backup_acks.is_empty(), "backup answered in SCCP");
    }
}

#[test]
fn sip_register_keepalive_and_options_in_tshark() {
    if !tshark_present("sip_register_keepalive_and_options_in_tshark") {
        return;
    }
    for (scenario, granted) in [("story", "20"), ("faults", "120")] {
        let (pcap, truth) = hbgen(&format!("sip-{scenario}.pcap"), &["--scenario", scenario]);
        no_malformed(&pcap);
        let rows = fields(
            &pcap,
            "sip",
            &[
                "ip.src",
                "ip.dst",
                "sip.Method",
                "sip.Status-Code",
                "sip.CSeq.method",
                "sip.Expires",
                "sip.Contact",
                "sip.Call-ID",
            ],
        );
        let method = |m: &str| rows.iter().filter(|r| r[2] == m).collect::<Vec<_>>();
        let status = |s: &str| rows.iter().filter(|r| r[3] == s).collect::<Vec<_>>();
        let registers = method("REGISTER");
        assert_eq!(
            registers.len(),
            count(&truth, "sip.register") + count(&truth, "sip.register_keepalive"),
            "{scenario}"
        );
        assert_eq!(
            method("OPTIONS").len(),
            count(&truth, "sip.options"),
            "{scenario}"
        );
        assert_eq!(status("100").len(), count(&truth, "sip.100"), "{scenario}");
        assert_eq!(status("200").len(), count(&truth, "sip.200"), "{scenario}");
        assert_eq!(status("503").len(), count(&truth, "sip.503"), "{scenario}");
        assert!(!status("503").is_empty() && !method("OPTIONS").is_empty());
        for r in &registers {
            let keepalive = r[6].ends_with(";expires=0;cisco-keep-alive");
            // Backup keepalives: Expires 0 and cisco-keep-alive; registrations ask for 3600.
            assert_eq!(r[5], if keepalive { "0" } else { "3600" }, "{r:?}");
            assert_eq!(keepalive, r[1] == "10.70.0.2", "{r:?}");
        }
        // 200 OK to the primary's REGISTERs grant the scenario's expiry.
        let oks: Vec<_> = status("200")
            .into_iter()
            .filter(|r| r[4] == "REGISTER" && r[0] == "10.70.0.1")
            .collect();
        assert!(!oks.is_empty());
        assert!(oks.iter().all(|r| r[5] == granted), "{scenario}: {oks:?}");
        // A phone keeps one Call-ID for its registration refreshes.
        let phone_calls: BTreeSet<_> = registers
            .iter()
            .filter(|r| r[0] == "10.70.0.9" && r[1] == "10.70.0.1")
            .map(|r| r[7].clone())
            .collect();
        assert_eq!(phone_calls.len(), 1, "{scenario}: {phone_calls:?}");
        assert_eq!(
            status("503").len(),
            expected(&truth, "sip", "sip.register_failed").len()
                + expected(&truth, "sip", "sip.options_failed").len()
        );
    }
}

#[test]
fn sip_over_tcp_with_closes_and_retransmissions_in_tshark() {
    if !tshark_present("sip_over_tcp_with_closes_and_retransmissions_in_tshark") {
        return;
    }
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/sip-tcp.toml");
    let (pcap, truth) = hbgen("sip-tcp.pcap", &["--scenario", file]);
    no_malformed(&pcap);
    let rows = fields(
        &pcap,
        "sip",
        &["tcp.stream", "sip.Method", "sip.Status-Code", "udp.srcport"],
    );
    let n = |f: &dyn Fn(&Vec<String>) -> bool| rows.iter().filter(|r| f(r)).count();
    let registers = n(&|r| r[1] == "REGISTER");
    assert_eq!(
        registers,
        count(&truth, "sip.register") + count(&truth, "sip.register_keepalive")
    );
    assert_eq!(n(&|r| r[1] == "OPTIONS"), count(&truth, "sip.options"));
    assert_eq!(n(&|r| r[2] == "200"), count(&truth, "sip.200"));
    // REGISTERs ride TCP; the UDP pinger re-sends its unanswered OPTIONS (RFC 3261 timer E).
    assert!(rows
        .iter()
        .filter(|r| r[1] == "REGISTER")
        .all(|r| !r[0].is_empty()));
    let udp_options = n(&|r| r[1] == "OPTIONS" && !r[3].is_empty());
    let udp_answers = n(&|r| r[2] == "200" && !r[3].is_empty());
    assert_eq!(
        udp_options,
        udp_answers + 5,
        "one ping sent 5 times, unanswered"
    );
    let closes = fields(
        &pcap,
        "tcp.port==5060 && (tcp.flags.reset==1 || tcp.flags.fin==1)",
        &["tcp.stream"],
    );
    assert_eq!(closes.len(), 1 + 2, "an RST, and a FIN each way");
    assert_eq!(expected(&truth, "sip", "session.closed").len(), 2);
    let streams = fields(
        &pcap,
        "tcp.flags.syn==1 && tcp.flags.ack==0",
        &["tcp.stream"],
    );
    assert_eq!(
        streams.len(),
        5,
        "2 phone sessions, backup, 2 pinger sessions"
    );
}

#[test]
fn rudp_and_mds_payloads_in_tshark() {
    if !tshark_present("rudp_and_mds_payloads_in_tshark") {
        return;
    }
    let (pcap, truth) = hbgen("udp-story.pcap", &["--scenario", "story"]);
    let rudp = fields(
        &pcap,
        "udp.port==15000",
        &["ip.src", "data.data", "ip.dsfield.dscp", "udp.length"],
    );
    assert_eq!(
        rudp.len(),
        count(&truth, "rudp.request") + count(&truth, "rudp.echo")
    );
    let mut dscp = HashMap::new();
    for r in &rudp {
        assert_eq!(r[3], "14", "6-byte payload: {r:?}");
        assert!(
            r[1].len() == 12 && (r[1].ends_with("02ff") || r[1].ends_with("0100")),
            "{r:?}"
        );
        *dscp.entry(r[2].clone()).or_insert(0) += 1;
    }
    let requests = rudp.iter().filter(|r| r[1].ends_with("02ff")).count();
    assert_eq!(requests, count(&truth, "rudp.request"));
    // EF everywhere but in the re-marking window of the story.
    assert!(
        dscp["46"] > 400 && dscp.get("0").is_some_and(|&n| n > 0) && dscp.len() == 2,
        "{dscp:?}"
    );
    // The reset marker 0xFFFFFFFF, followed by 0.
    assert!(
        rudp.iter().any(|r| r[1] == "ffffffff02ff") && rudp.iter().any(|r| r[1] == "0000000002ff")
    );

    // MDS: LE seqnos counting by one per sender, except where the truth says why not.
    let mds = fields(&pcap, "udp.port==39500", &["ip.src", "data.data"]);
    assert_eq!(mds.len(), count(&truth, "mds.heartbeat"));
    let mut last: HashMap<String, u32> = HashMap::new();
    let mut jumps = 0;
    for r in &mds {
        let b = hex(&r[1]);
        let seq = u32::from_le_bytes(b.as_slice().try_into().expect("4-byte body"));
        if let Some(prev) = last.insert(r[0].clone(), seq) {
            if seq != prev.wrapping_add(1) {
                jumps += 1;
                let explained = truth["expected"].as_array().unwrap().iter().any(|e| {
                    e["protocol"] == "mds"
                        && e["source"]["ip"] == r[0].as_str()
                        && (e["action"] == "heartbeat.gap" || e["action"] == "heartbeat.restart")
                        && e["fields"]["heartbeat.seq"] == seq
                });
                assert!(
                    explained,
                    "MDS {} jumped {prev} -> {seq} with no truth entry",
                    r[0]
                );
            }
        }
    }
    assert_eq!(jumps, 2, "the story has one loss burst and one restart");
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn pcapng_nanos_vlan_ipv6_and_ordinary_traffic_in_tshark() {
    if !tshark_present("pcapng_nanos_vlan_ipv6_and_ordinary_traffic_in_tshark") {
        return;
    }
    let total = |pcap: &Path| fields(pcap, "frame", &["frame.time_epoch"]);
    let (base, base_truth) = hbgen("base.pcap", &["--scenario", "healthy"]);
    let hb = base_truth["generated"]["heartbeat_frames"]
        .as_u64()
        .unwrap() as usize;
    assert_eq!(total(&base).len(), hb);

    let (ng, ng_truth) = hbgen("healthy.pcapng", &["--scenario", "healthy", "--pcapng"]);
    let (nanos, _) = hbgen("nanos.pcap", &["--scenario", "healthy", "--nanos"]);
    let ts = |p: &Path| {
        total(p)
            .into_iter()
            .map(|r| r[0].clone())
            .collect::<Vec<_>>()
    };
    let (t_ng, t_ns, t_us) = (ts(&ng), ts(&nanos), ts(&base));
    assert_eq!(t_ng.len(), hb);
    assert_eq!(
        ng_truth["generated"]["frames"].as_u64().unwrap() as usize,
        hb
    );
    assert_eq!(
        t_ng, t_ns,
        "pcapng and nanosecond pcap carry the same ns timestamps"
    );
    assert!(
        t_ns.iter().any(|t| !t.ends_with("000")),
        "ns precision: {:?}",
        &t_ns[..3]
    );
    assert!(t_us.iter().all(|t| t.ends_with("000")), "µs pcap");
    assert!(
        t_ns[0].starts_with("1795341600."),
        "starts at the scenario's start: {}",
        t_ns[0]
    );

    let (mixed, mt) = hbgen(
        "mixed.pcap",
        &[
            "--scenario",
            "healthy",
            "--ordinary-ratio",
            "20",
            "--vlan",
            "33",
            "--ipv6",
            "--seed",
            "5",
        ],
    );
    let g = &mt["generated"];
    let frames = g["frames"].as_u64().unwrap() as usize;
    let ordinary = g["ordinary_frames"].as_u64().unwrap() as usize;
    assert_eq!(total(&mixed).len(), frames);
    assert!((ordinary as f64 / g["heartbeat_frames"].as_u64().unwrap() as f64 - 20.0).abs() < 0.5);
    // Heartbeats moved to IPv6 and VLAN 33; ordinary traffic stays off heartbeat ports.
    let hb6 = fields(
        &mixed,
        "ipv6.src == fd00:6862::a0a:a0a && vlan.id == 33 && udp.port == 15000",
        &["frame.number"],
    );
    assert!(hb6.len() > 50, "{}", hb6.len());
    let on_hb_ports = fields(&mixed, "udp.port==15000 || udp.port==39500 || tcp.port==5000 || tcp.port==2000 || udp.port==5060 || udp.port==32779", &["frame.number"]);
    assert_eq!(
        on_hb_ports.len(),
        mt["generated"]["heartbeat_frames"].as_u64().unwrap() as usize
    );
    let v4_ordinary = fields(&mixed, "ip", &["frame.number"]);
    assert!(
        !v4_ordinary.is_empty() && v4_ordinary.len() < ordinary,
        "some IPv4 ordinary traffic"
    );
    let times: Vec<f64> = ts(&mixed).iter().map(|t| t.parse().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "time order");
}

#[test]
fn cli_rejects_a_bad_scenario_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("hbgen-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "[[association]]\nname = \"r\"\nprotocol = \"mds\"\na = \"10.0.0.1\"\nb = \"10.0.0.2\"\n\n[[fault]]\nat_s = 3\nassociation = \"r\"\nkind = \"loss\"\ncuont = 3\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hbwatch"))
        .args(["hbgen", "--scenario"])
        .arg(&file)
        .arg("--pcap")
        .arg(dir.join("x.pcap"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("fault[0] (loss)") && err.contains("cuont"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn mgcp_keepalives_calls_and_restarts_in_tshark() {
    if !tshark_present("mgcp_keepalives_calls_and_restarts_in_tshark") {
        return;
    }
    let (pcap, truth) = hbgen("mgcp.pcap", &["--scenario", "mgcp"]);
    no_malformed(&pcap);
    // tshark's MGCP dissector knows 2427 and 2727 on its own.
    let rows = fields(
        &pcap,
        "mgcp",
        &[
            "mgcp.req.verb",
            "mgcp.transid",
            "mgcp.rsp.rspcode",
            "mgcp.req.endpoint",
            "mgcp.param.restartmethod",
            "mgcp.req.dup", // the duplicated transaction id
            "ip.src",
        ],
    );
    let gateways = ["10.60.0.2", "10.60.1.2"];
    let from_gw = |r: &Vec<String>| gateways.contains(&r[6].as_str());
    let n = |f: &dyn Fn(&Vec<String>) -> bool| rows.iter().filter(|r| f(r)).count();
    let keepalive = |r: &Vec<String>| r[0] == "NTFY" && r[3].starts_with("*@");
    assert_eq!(
        n(&keepalive),
        count(&truth, "mgcp.keepalive"),
        "keepalive NTFYs"
    );
    assert_eq!(
        n(&|r| r[0] == "NTFY" && !r[3].starts_with("*@")),
        count(&truth, "mgcp.ntfy"),
        "hook event NTFYs"
    );
    assert_eq!(
        n(&|r| r[0] == "RSIP" && r[4] == "restart"),
        count(&truth, "mgcp.rsip"),
        "RSIP restart"
    );
    assert_eq!(
        n(&|r| !r[2].is_empty() && !from_gw(r)),
        count(&truth, "mgcp.response"),
        "call agent answers"
    );
    assert_eq!(
        n(&|r| ["CRCX", "RQNT", "DLCX"].contains(&r[0].as_str()) && !from_gw(r)),
        count(&truth, "mgcp.ca_command"),
        "call agent commands"
    );
    assert_eq!(
        n(&|r| !r[2].is_empty() && from_gw(r)),
        count(&truth, "mgcp.gw_response"),
        "gateway answers"
    );
    assert!(count(&truth, "mgcp.ca_command") >= 4, "calls made");
    // What the agent must say, checked against tshark's own reading of the bytes.
    let retries = expected(&truth, "mgcp", "heartbeat.retry");
    assert!(!retries.is_empty());
    for e in &retries {
        let tid = e["fields"]["heartbeat.seq"].to_string();
        assert!(
            rows.iter().any(|r| r[1] == tid && r[5] == tid),
            "retry of {tid}: tshark sees no duplicate request"
        );
    }
    let unanswered = expected(&truth, "mgcp", "heartbeat.unanswered");
    assert_eq!(unanswered.len(), 2, "{unanswered:#?}");
    for e in &unanswered {
        let tid = e["fields"]["heartbeat.seq"].to_string();
        assert!(rows.iter().any(|r| r[1] == tid && from_gw(r)));
        assert!(
            !rows.iter().any(|r| r[1] == tid && !r[2].is_empty()),
            "unanswered {tid}: tshark sees an answer"
        );
    }
    let restarts = expected(&truth, "mgcp", "heartbeat.restart");
    assert_eq!(restarts.len(), 1);
    let tid = restarts[0]["fields"]["heartbeat.seq"].to_string();
    assert!(rows.iter().any(|r| r[0] == "RSIP" && r[1] == tid));
}
