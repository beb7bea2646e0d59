//! `hbwatch locate` against the truth of `hbwatch vantage`: two captures made from one
//! (generated, and a real one from the field corpus), with loss, re-marking, a route
//! change and a forged RST between them, a clock offset and jitter. What `locate`
//! reports must be exactly what was done: segment, direction, counts, sequence numbers;
//! nothing where nothing was done.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use hbwatch::locate::vantage::Truth;
use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hbwatch"))
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hbwatch-locate-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Two minutes of a built-in hbgen scenario, as `<tempdir>/<scenario>.pcap`.
fn two_minutes_of(scenario: &str) -> PathBuf {
    let p = tempdir(&format!("{scenario}-input")).join(format!("{scenario}.pcap"));
    let out = bin()
        .args([
            "hbgen",
            "--scenario",
            scenario,
            "--duration",
            "120",
            "--pcap",
        ])
        .arg(&p)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p
}

/// Two minutes of the healthy scenario (every protocol), generated once.
fn healthy() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| two_minutes_of("healthy"))
}

/// Derives `a` and `b` from `input` by `spec`; returns their paths and the truth.
fn vantage(tag: &str, input: &Path, spec: &str) -> (PathBuf, PathBuf, Truth) {
    let d = tempdir(tag);
    let (a, b, s) = (d.join("a.pcapng"), d.join("b.pcapng"), d.join("spec.toml"));
    std::fs::write(&s, spec).unwrap();
    let out = bin()
        .arg("vantage")
        .arg(input)
        .arg("--spec")
        .arg(&s)
        .arg("--out-a")
        .arg(&a)
        .arg("--out-b")
        .arg(&b)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let truth = std::fs::read_to_string(d.join("b.pcapng.truth.json")).unwrap();
    (a, b, serde_json::from_str(&truth).unwrap())
}

/// `locate` on `points` (NAME=FILE); events and exit status.
fn locate(points: &[(&str, &Path)]) -> (Vec<Value>, i32, String) {
    let mut cmd = bin();
    cmd.args(["locate", "--hostname", "probe"]);
    for (n, p) in points {
        cmd.arg(format!("{n}={}", p.display()));
    }
    let out = cmd.output().unwrap();
    let events = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON"))
        .collect();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (events, out.status.code().unwrap_or(-1), stderr)
}

/// Frames of `capture` that tshark's display `filter` keeps; `None` without tshark.
fn tshark(capture: &Path, filter: &str) -> Option<usize> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(capture)
        .args(["-Y", filter])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).lines().count())
}

fn endpoint(ev: &Value, side: &str) -> String {
    let ip: std::net::IpAddr = ev[side]["ip"].as_str().unwrap().parse().unwrap();
    std::net::SocketAddr::new(ip, ev[side]["port"].as_u64().unwrap() as u16).to_string()
}

fn action<'a>(events: &'a [Value], a: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["event"]["action"] == a)
        .collect()
}

fn on<'a>(events: &[&'a Value], src: &str, dst: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| endpoint(e, "source") == src && endpoint(e, "destination") == dst)
        .copied()
        .collect()
}

/// Every event uses only fields of the schema, with ECS's values (as agent/tests/ecs.rs).
fn valid_ecs(events: &[Value]) {
    let r = hbwatch::schema::Reference::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ecs"),
    )
    .unwrap();
    let actions: std::collections::BTreeSet<_> = events
        .iter()
        .map(|e| e["event"]["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions.into_iter().collect::<Vec<_>>(),
        [
            "path.loss",
            "path.qos_changed",
            "path.route_changed",
            "path.summary"
        ]
    );
    for e in events {
        let p = r.event_problems(e);
        assert!(p.is_empty(), "{p:?}: {e}");
    }
}

/// Every direction's loss and re-marking as the truth says, in the right segment; no
/// other `path.loss` or `path.qos_changed`. Returns the total lost.
fn check(events: &[Value], truth: &Truth) -> u64 {
    let losses = action(events, "path.loss");
    let qos = action(events, "path.qos_changed");
    let mut total = 0;
    for d in &truth.directions {
        let what = format!("{} {} -> {}", d.protocol, d.source, d.destination);
        let l = on(&losses, &d.source, &d.destination);
        // MDS: the truth reads seqnos big-endian, locate in the sender's byte order.
        let seq = |s: u32| {
            if d.protocol == "mds" {
                s.swap_bytes()
            } else {
                s
            }
        };
        let runs: Vec<(u32, u32, u64)> = l
            .iter()
            .map(|e| {
                assert_eq!(e["path"]["from"], d.from.as_str(), "{what}: {e}");
                assert_eq!(e["path"]["to"], d.to.as_str(), "{what}: {e}");
                (
                    e["heartbeat"]["seq"].as_u64().unwrap() as u32,
                    e["heartbeat"]["last_seq"].as_u64().unwrap() as u32,
                    e["heartbeat"]["lost"].as_u64().unwrap(),
                )
            })
            .collect();
        let want: Vec<_> = d
            .lost_runs
            .iter()
            .map(|&(f, l, n)| {
                if d.protocol == "sip" {
                    // SIP runs are compared by count: the shown number is the CSeq.
                    (
                        runs.first().map_or(0, |r| r.0),
                        runs.first().map_or(0, |r| r.1),
                        n,
                    )
                } else {
                    (seq(f), seq(l), n)
                }
            })
            .collect();
        if d.protocol == "sip" {
            let got: Vec<u64> = runs.iter().map(|r| r.2).collect();
            let want: Vec<u64> = d.lost_runs.iter().map(|r| r.2).collect();
            assert_eq!(got, want, "{what}: loss runs");
        } else {
            assert_eq!(runs, want, "{what}: loss runs");
        }
        total += d.lost;
        let remarked: u64 = on(&qos, &d.source, &d.destination)
            .iter()
            .inspect(|e| {
                assert_eq!(e["path"]["from"], d.from.as_str(), "{what}: {e}");
                assert_eq!(e["path"]["to"], d.to.as_str(), "{what}: {e}");
            })
            .map(|e| e["heartbeat"]["count"].as_u64().unwrap())
            .sum();
        assert_eq!(remarked, d.remarked, "{what}: re-marked heartbeats");
    }
    let reported: u64 = losses
        .iter()
        .map(|e| e["heartbeat"]["lost"].as_u64().unwrap())
        .sum();
    assert_eq!(reported, total, "path.loss beyond the truth: {losses:#?}");
    total
}

/// Endpoints of the healthy scenario on `a`'s side: RUDP originator, MDS router A, the
/// GED-125 PIM, the SCCP phone, the SIP device.
const NEAR_A: &str =
    r#"near_a = ["10.10.10.10", "10.50.0.1", "10.20.0.5", "10.30.0.50", "10.70.0.9"]"#;

#[test]
fn loss_remarking_route_change_and_a_forged_rst_between_two_vantages() {
    let spec = format!(
        r#"seed = 3
{NEAR_A}
delay_ms = 3.0
[a]
# Lost between b and a: RUDP echoes, GED-125 confirms, a SIP answer, MDS the other way.
drop = [
  {{ from = "10.10.20.20", frames = [30, 33] }},
  {{ from = "10.20.0.1:5000", frames = [6, 8] }},
  {{ from = "10.70.0.1", frames = [1, 2] }},
  {{ from = "10.50.0.2", frames = [500, 501] }},
]
# A firewall between b and a resets the GED-125 session toward the PIM.
rst = [{{ from = "10.20.0.1:5000", after_frame = 15, ttl = 200 }}]
[b]
clock_offset_ms = 2500.0
jitter_ms = 0.2
drop = [
  {{ from = "10.10.10.10", frames = [20, 25] }},
  {{ from = "10.50.0.1", frames = [100, 110] }},
  {{ from = "10.50.0.1", frames = [700, 702] }},
  {{ from = "10.30.0.50", frames = [1, 2] }},
]
# QoS stripped for RUDP toward b from its 50th heartbeat (EF -> 0).
dscp = [{{ from = "10.10.10.10:15000", from_frame = 50, value = 0 }}]
ttl = [{{ from = "10.10.10.10", from_frame = 100, value = 61 }}]
"#
    );
    let (a, b, truth) = vantage("faults", healthy(), &spec);
    // Which protocols lost what: the scenario reaches every numbered protocol.
    let lost_by: std::collections::BTreeMap<&str, u64> =
        truth
            .directions
            .iter()
            .fold(Default::default(), |mut m, d| {
                *m.entry(d.protocol.as_str()).or_default() += d.lost;
                m
            });
    assert!(truth.directions.iter().map(|d| d.remarked).sum::<u64>() > 100);
    for p in ["cs1000-rudp", "mds", "ged125", "sip", "sccp"] {
        assert!(lost_by.get(p).copied().unwrap_or(0) > 0, "{p}: {lost_by:?}");
    }
    for order in [[("a", &a), ("b", &b)], [("b", &b), ("a", &a)]] {
        let points: Vec<(&str, &Path)> = order.iter().map(|(n, p)| (*n, p.as_path())).collect();
        let (events, status, stderr) = locate(&points);
        assert_eq!(status, 0, "{stderr}");
        valid_ecs(&events);
        let total = check(&events, &truth);
        assert_eq!(total, 5 + 3 + 10 + 2 + 1 + 2 + 1 + 1, "{truth:#?}");
        // The route change on RUDP a -> b, between a and b.
        let routes = action(&events, "path.route_changed");
        let ttl: Vec<_> = routes
            .iter()
            .filter(|e| e["path"]["reason"] == "ttl-changed")
            .collect();
        assert_eq!(ttl.len(), 1, "{routes:#?}");
        let changed = &truth
            .directions
            .iter()
            .find(|d| !d.ttl_changes.is_empty())
            .unwrap();
        assert_eq!(endpoint(ttl[0], "source"), changed.source);
        assert_eq!(
            (
                ttl[0]["path"]["from"].as_str(),
                ttl[0]["path"]["to"].as_str()
            ),
            (Some("a"), Some("b"))
        );
        let (seq, old, new) = changed.ttl_changes[0];
        assert_eq!(ttl[0]["heartbeat"]["seq"], seq);
        assert_eq!(ttl[0]["heartbeat"]["expected_ttl"], old);
        assert_eq!(ttl[0]["heartbeat"]["ttl"], new);
        // The forged RST, seen at a only: between b and a.
        let forged: Vec<_> = routes
            .iter()
            .filter(|e| e["path"]["reason"] == "forged-reset")
            .collect();
        assert_eq!(forged.len(), 1, "{routes:#?}");
        assert_eq!(truth.forged.len(), 1);
        assert_eq!(endpoint(forged[0], "source"), truth.forged[0].source);
        assert_eq!(forged[0]["heartbeat"]["ttl"], 200);
        assert_eq!(forged[0]["heartbeat"]["expected_ttl"], 64);
        assert_eq!(
            (
                forged[0]["path"]["from"].as_str(),
                forged[0]["path"]["to"].as_str()
            ),
            (Some("b"), Some("a"))
        );
        assert_eq!(routes.len(), 2, "{routes:#?}");
        // The clock offset, from both directions: b is 2.5 s ahead (jitter 0.2 ms).
        for s in action(&events, "path.summary") {
            let off = s["path"]["clock_offset_ms"].as_f64().unwrap();
            let want = if s["path"]["to"] == "b" {
                2500.0
            } else {
                -2500.0
            };
            assert!((off - want).abs() < 0.2, "{s}");
            assert_eq!(s["path"]["clock_offset_method"], "two-way");
            let avg = s["path"]["delay_ms"]["avg"].as_f64().unwrap();
            assert!((avg - 3.0).abs() < 0.2, "{s}");
        }
    }
}

#[test]
fn the_same_capture_with_another_clock_loses_nothing() {
    let spec = format!("{NEAR_A}\n[b]\nclock_offset_ms = -7300.0\njitter_ms = 0.05\n");
    let (a, b, truth) = vantage("same", healthy(), &spec);
    assert!(truth.directions.iter().all(|d| d.lost == 0));
    let (events, status, stderr) = locate(&[("here", &a), ("there", &b)]);
    assert_eq!(status, 0, "{stderr}");
    let alerts: Vec<_> = events
        .iter()
        .filter(|e| e["event"]["kind"] == "alert")
        .collect();
    assert!(alerts.is_empty(), "{alerts:#?}");
    let summaries = action(&events, "path.summary");
    assert!(summaries.len() >= 10, "{summaries:#?}");
    for s in summaries {
        assert_eq!(s["heartbeat"]["lost"], 0, "{s}");
        assert_eq!(s["path"]["unmatched"], 0, "{s}");
        assert!(s["path"]["matched"].as_u64().unwrap() > 0, "{s}");
        let off = s["path"]["clock_offset_ms"].as_f64().unwrap();
        let want = if s["path"]["to"] == "there" {
            -7300.0
        } else {
            7300.0
        };
        assert!((off - want).abs() < 0.1, "{s}");
    }
}

#[test]
fn heartbeats_outside_the_other_capture_are_not_lost() {
    // b started 20 s late and stopped 50 s early; a stopped 10 s before the end. Only the
    // RUDP requests dropped at b inside both windows are lost.
    let spec = format!(
        r#"{NEAR_A}
delay_ms = 1.0
[a]
end_s = 110.0
[b]
clock_offset_ms = 900.0
start_s = 20.0
end_s = 70.0
drop = [{{ from = "10.10.10.10", frames = [100, 104] }}]
"#
    );
    let (a, b, truth) = vantage("window", healthy(), &spec);
    let (events, status, stderr) = locate(&[("a", &a), ("b", &b)]);
    assert_eq!(status, 0, "{stderr}");
    assert_eq!(check(&events, &truth), 4);
    // a's heartbeats toward b in b's first 20 s and last 40 s (MDS alone 10 a second);
    // b's all fell inside a's window.
    let outside = |from: &str| -> u64 {
        action(&events, "path.summary")
            .iter()
            .filter(|s| s["path"]["from"] == from)
            .map(|s| s["path"]["outside_window"].as_u64().unwrap())
            .sum()
    };
    assert!(outside("a") > 600, "{}", outside("a"));
    assert_eq!(outside("b"), 0);
}

#[test]
fn nat_between_the_vantages_is_matched_by_the_unrewritten_side() {
    // b sees the RUDP device 10.10.10.10 as 192.0.2.10 and the MDS router 10.50.0.1 as
    // 192.0.2.1; the loss on both is still found exactly, nothing else.
    let spec = format!(
        r#"{NEAR_A}
delay_ms = 2.0
[b]
clock_offset_ms = 40000.0
nat = [{{ addr = "10.10.10.10", to = "192.0.2.10" }}, {{ addr = "10.50.0.1", to = "192.0.2.1" }}]
drop = [{{ from = "10.10.10.10", frames = [40, 43] }}, {{ from = "10.50.0.1", frames = [10, 11] }}]
"#
    );
    let (a, b, truth) = vantage("nat", healthy(), &spec);
    if let Some(frames) = tshark(&b, "ip.addr == 10.10.10.10 || ip.addr == 10.50.0.1") {
        assert_eq!(frames, 0, "b still shows the inside addresses");
    }
    let (events, status, stderr) = locate(&[("a", &a), ("b", &b)]);
    assert_eq!(status, 0, "{stderr}");
    assert_eq!(check(&events, &truth), 4);
    let rudp: Vec<_> = action(&events, "path.summary")
        .into_iter()
        .filter(|s| s["network"]["protocol"] == "cs1000-rudp")
        .collect();
    assert_eq!(rudp.len(), 2, "{rudp:#?}");
    assert!(rudp
        .iter()
        .all(|s| s["path"]["matched"].as_u64().unwrap() > 200));
}

#[test]
fn damaged_or_foreign_files_are_clear_errors() {
    let d = tempdir("damaged");
    let text = d.join("notes.txt");
    std::fs::write(&text, "not a capture\n").unwrap();
    let (events, status, stderr) = locate(&[("a", healthy()), ("b", &text)]);
    assert_eq!(status, 1, "{stderr}");
    assert!(events.is_empty());
    assert!(
        stderr.contains("notes.txt") && stderr.contains("not a pcap"),
        "{stderr}"
    );
    let (_, status, stderr) = locate(&[("a", healthy()), ("b", &d.join("missing.pcap"))]);
    assert_eq!(status, 1, "{stderr}");
    assert!(stderr.contains("cannot open"), "{stderr}");
    // Cut short: what came before is used, exit 4.
    let bytes = std::fs::read(healthy()).unwrap();
    let cut = d.join("cut.pcap");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3 + 7]).unwrap();
    let (events, status, stderr) = locate(&[("a", healthy()), ("b", &cut)]);
    assert_eq!(status, 4, "{stderr}");
    assert!(stderr.contains("cut"), "{stderr}");
    assert!(action(&events, "path.loss").is_empty(), "{events:#?}");
    let out = bin().args(["locate", "a=x.pcap"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = bin().args(["locate", "x.pcap", "y.pcap"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// The field corpus' real SIP capture (a phone registering every few seconds): `b`
/// made from it by deleting three REGISTERs and re-marking the registrar's answers.
#[test]
fn a_real_capture_split_into_two_vantages() {
    let dir = match std::env::var_os("HBWATCH_FIELD_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/hbwatch/field")
        }
    };
    let input = dir.join("ndpi-sip.pcap");
    if !input.exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "field corpus absent ({}): cargo xtask field",
            dir.display()
        );
        eprintln!("SKIP a_real_capture_split_into_two_vantages: field corpus absent");
        return;
    }
    // The recipe of docs/OPERATIONS.md: the phone's side is a.
    let spec = r#"seed = 9
near_a = ["192.168.1.2"]
delay_ms = 12.0
[a]
dscp = [{ from = "212.242.33.35", from_frame = 8, value = 46 }]
[b]
clock_offset_ms = -350.0
jitter_ms = 1.0
drop = [{ from = "192.168.1.2", to = "212.242.33.35", frames = [3, 6] }]
"#;
    let (a, b, truth) = vantage("field", &input, spec);
    let (events, status, stderr) = locate(&[("phone", &a), ("registrar", &b)]);
    assert_eq!(status, 0, "{stderr}");
    // The truth names the vantages a and b.
    let renamed: Vec<Value> = events
        .into_iter()
        .map(|mut e| {
            for k in ["from", "to"] {
                let n = match e["path"][k].as_str() {
                    Some("phone") => "a",
                    Some("registrar") => "b",
                    _ => continue,
                };
                e["path"][k] = n.into();
            }
            e
        })
        .collect();
    assert_eq!(check(&renamed, &truth), 3);
    let remarked: u64 = truth.directions.iter().map(|d| d.remarked).sum();
    assert!(remarked >= 5, "{truth:#?}");
    // tshark, independently: b holds three REGISTERs from the phone fewer than a.
    let count = |p: &Path| tshark(p, "sip.Method == \"REGISTER\" && ip.src == 192.168.1.2");
    match (count(&a), count(&b)) {
        (Some(x), Some(y)) => assert_eq!(x - y, 3, "tshark: {x} REGISTERs at a, {y} at b"),
        _ => eprintln!("tshark not available: independent check skipped"),
    }
}

/// Two agents' flight recordings (`hbwatch run --record`), made here by replaying each
/// vantage's capture through the datapath's engine into the recorder: `locate` on the two
/// recording directories finds the same loss and re-marking as on the captures (SCCP
/// aside: its keepalives carry no number of their own, so they are not recorded).
#[test]
fn two_flight_recordings_locate_the_loss() {
    use hbwatch::locate::recorder::{replay_capture, RecordSpec};
    let spec = format!(
        r#"seed = 4
{NEAR_A}
# Below half the scenario's round trips: the datapath replays b with requests first.
delay_ms = 0.1
[a]
drop = [{{ from = "10.10.20.20", frames = [30, 33] }}, {{ from = "10.70.0.1", frames = [1, 2] }}]
[b]
clock_offset_ms = 1500.0
drop = [{{ from = "10.10.10.10", frames = [20, 25] }}, {{ from = "10.50.0.1", frames = [100, 110] }}]
dscp = [{{ from = "10.10.10.10:15000", from_frame = 50, value = 0 }}]
"#
    );
    let (a, b, mut truth) = vantage("record", healthy(), &spec);
    let ports = hbwatch::ports::port_table(&hbwatch::ports::default_specs());
    let dir = a.parent().unwrap().to_path_buf();
    let mut dirs = Vec::new();
    for (name, capture) in [("ra", &a), ("rb", &b)] {
        // Two minutes kept in files of 10 s: several files per vantage.
        let rec: RecordSpec = format!("{}?keep=150s", dir.join(name).display())
            .parse()
            .unwrap();
        replay_capture(capture, &ports, &rec).unwrap();
        let files = std::fs::read_dir(&rec.dir).unwrap().count();
        assert!(files >= 10, "{files} files");
        dirs.push(rec.dir);
    }
    let (events, status, stderr) = locate(&[("a", &dirs[0]), ("b", &dirs[1])]);
    assert_eq!(status, 0, "{stderr}");
    truth.directions.retain(|d| d.protocol != "sccp");
    assert_eq!(check(&events, &truth), 3 + 1 + 5 + 10);
    assert!(events.iter().all(|e| e["network"]["protocol"] != "sccp"));
    let summaries = action(&events, "path.summary");
    assert!(summaries.len() >= 10, "{summaries:#?}");
    for s in summaries {
        let off = s["path"]["clock_offset_ms"].as_f64().unwrap();
        let want = if s["path"]["to"] == "b" {
            1500.0
        } else {
            -1500.0
        };
        assert!((off - want).abs() < 0.1, "{s}");
    }
}

/// Three vantages along the path (a, m, b): loss between m and b is reported on that
/// segment only, not again as a -> b; the clock of each neighbour pair is its own.
#[test]
fn three_vantages_report_the_segment_between_neighbours() {
    let first = format!("{NEAR_A}\ndelay_ms = 0.2\n[b]\nclock_offset_ms = 300.0\n");
    let (a, m, _) = vantage("three-am", healthy(), &first);
    let second = format!(
        r#"{NEAR_A}
delay_ms = 0.2
[b]
clock_offset_ms = -800.0
drop = [{{ from = "10.10.10.10", frames = [60, 64] }}]
"#
    );
    let (m2, b, truth) = vantage("three-mb", &m, &second);
    assert_eq!(std::fs::read(&m).unwrap(), std::fs::read(&m2).unwrap());
    // Any order on the command line.
    let (events, status, stderr) = locate(&[("b", &b), ("a", &a), ("m", &m)]);
    assert_eq!(status, 0, "{stderr}");
    let renamed: Vec<Value> = events
        .into_iter()
        .map(|mut e| {
            // The second truth names m "a".
            for k in ["from", "to"] {
                if e["path"][k] == "m" {
                    e["path"][k] = "a".into();
                } else if e["path"][k] == "a" {
                    e["path"][k] = "first".into();
                }
            }
            e
        })
        .collect();
    assert_eq!(check(&renamed, &truth), 4);
    // Segments join neighbours: a-m and m-b, never a-b.
    for s in action(&renamed, "path.summary") {
        let seg = (
            s["path"]["from"].as_str().unwrap(),
            s["path"]["to"].as_str().unwrap(),
        );
        assert!(
            matches!(
                seg,
                ("first", "a") | ("a", "first") | ("a", "b") | ("b", "a")
            ),
            "{s}"
        );
    }
}

/// With `privacy.sip_users` hash or redact the recorder writes no SIP message (their
/// bytes name the users); every other heartbeat is recorded as before.
#[test]
fn recordings_hold_no_sip_when_users_are_hidden() {
    use hbwatch::locate::recorder::{replay_capture, RecordSpec};
    let ports = hbwatch::ports::port_table(&hbwatch::ports::default_specs());
    let dir = tempdir("record-privacy");
    // (frames with SIP text, other frames) over a recording directory.
    let count = |dir: &Path| {
        let (mut sip, mut other) = (0, 0);
        for e in std::fs::read_dir(dir).unwrap() {
            let file = std::fs::File::open(e.unwrap().path()).unwrap();
            let read = hbwatch_pcap::read_frames(
                Box::new(std::io::BufReader::new(file)),
                &mut |_, data, _, _| {
                    if data.windows(7).any(|w| w == b"SIP/2.0") {
                        sip += 1;
                    } else {
                        other += 1;
                    }
                    Ok(())
                },
            );
            assert!(matches!(read, Ok(Ok(_))));
        }
        (sip, other)
    };
    let mut counts = Vec::new();
    for sip_messages in [true, false] {
        let mut rec: RecordSpec = format!("{}/{sip_messages}", dir.display()).parse().unwrap();
        rec.sip_messages = sip_messages;
        replay_capture(healthy(), &ports, &rec).unwrap();
        counts.push(count(&rec.dir));
    }
    let (kept, hidden) = (counts[0], counts[1]);
    assert!(
        kept.0 > 0,
        "the healthy scenario's REGISTERs are recorded: {kept:?}"
    );
    assert_eq!(hidden.0, 0, "no SIP with users hidden: {hidden:?}");
    assert_eq!(hidden.1, kept.1, "the other heartbeats are all recorded");
}

/// MGCP from captures (not recordings): the gateways' commands and the call agents'
/// answers are matched by transaction id between two vantages with different clocks;
/// keepalives lost on the way out and answers lost on the way back are placed in their
/// segment and direction, and nothing else is (the scenario's own faults, seen at both
/// vantages, are no path loss).
#[test]
fn mgcp_loss_between_two_vantages_by_transaction_id() {
    let input = two_minutes_of("mgcp");
    let spec = r#"seed = 2
near_a = ["10.60.0.2", "10.60.1.2"]
delay_ms = 1.0
[a]
drop = [{ from = "10.60.1.1", frames = [2, 4] }]
[b]
clock_offset_ms = 800.0
drop = [{ from = "10.60.0.2", frames = [5, 7] }]
"#;
    let (a, b, truth) = vantage("mgcp", &input, spec);
    let (events, status, stderr) = locate(&[("a", &a), ("b", &b)]);
    assert_eq!(status, 0, "{stderr}");
    assert!(events.iter().all(|e| e["network"]["protocol"] == "mgcp"));
    assert_eq!(check(&events, &truth), 4);
}
