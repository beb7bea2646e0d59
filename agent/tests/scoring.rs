//! Recall and false positives per association: every built-in hbgen scenario (healthy
//! hours, every fault kind, the demo story; plain, VLAN and IPv6 variants) through the
//! offline engine, scored against the generator's ground truth the way the issue
//! scores unseen captures. The timestamp window has the same 1.5 s slack for all.

use hbgen::scenario::{Overrides, Scenario};
use hbgen::truth::Expected;
use hbgen::{generate, Capture};
use hbwatch::offline::{AnalyzeOptions, Replay};
use hbwatch::ports::{default_specs, port_table};
use serde_json::Value;

const SLACK_NS: u64 = 1_500_000_000;

fn capture(name: &str, o: &Overrides) -> Capture {
    // A built-in scenario, or one of the test files in `tests/data/`.
    let path = format!("{}/tests/data/{name}.toml", env!("CARGO_MANIFEST_DIR"));
    let name = if std::path::Path::new(&path).exists() {
        path.as_str()
    } else {
        name
    };
    let mut sc = Scenario::load(name).expect("scenario");
    sc.apply(o).expect("overrides");
    generate(&sc)
}

fn analyze(cap: &mut Capture) -> Vec<Value> {
    let opts = AnalyzeOptions::new(port_table(&default_specs()), "probe");
    let mut replay = Replay::new(&opts, "scenario".into());
    let mut events = Vec::new();
    for f in cap.take_frames() {
        replay.frame(&f.data, f.ts_ns, &mut events);
    }
    replay.finish(&mut events);
    events
        .iter()
        .map(|e| serde_json::from_str(&e.to_line()).unwrap())
        .collect()
}

fn assoc_of(e: &Value) -> String {
    format!(
        "{}:{}->{}:{}",
        e["source"]["ip"].as_str().unwrap_or("?"),
        e["source"]["port"],
        e["destination"]["ip"].as_str().unwrap_or("?"),
        e["destination"]["port"]
    )
}

fn assoc_expected(x: &Expected) -> String {
    format!(
        "{}:{}->{}:{}",
        x.source.ip, x.source.port, x.destination.ip, x.destination.port
    )
}

fn ts_ns(e: &Value) -> u64 {
    let t = time::OffsetDateTime::parse(
        e["@timestamp"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    t.unix_timestamp_nanos() as u64
}

struct Score {
    required: usize,
    found: usize,
    missing: Vec<String>,
    extra: Vec<String>,
    wrong_diagnosis: Vec<String>,
}

fn score(cap: &mut Capture) -> Score {
    let expected = cap.truth.expected.clone();
    let events = analyze(cap);
    let mut used = vec![false; events.len()];
    let mut s = Score {
        required: expected.iter().filter(|x| x.required).count(),
        found: 0,
        missing: vec![],
        extra: vec![],
        wrong_diagnosis: vec![],
    };
    for x in &expected {
        let (lo, hi) = (x.window_ns[0] - SLACK_NS, x.window_ns[1] + SLACK_NS);
        let a = assoc_expected(x);
        let hit = events.iter().enumerate().position(|(i, e)| {
            !used[i]
                && e["event"]["action"] == x.action
                && assoc_of(e) == a
                && (lo..=hi).contains(&ts_ns(e))
        });
        match hit {
            Some(i) => {
                used[i] = true;
                s.found += x.required as usize;
                // Only these actions carry a diagnosis (EVENTS.md).
                let diagnosed = matches!(x.action, "heartbeat.missed" | "peer.down" | "peer.up");
                if let Some(d) = x.diagnosis.filter(|_| diagnosed) {
                    let got = events[i]["heartbeat"]["diagnosis"].as_str().unwrap_or("-");
                    if got != d {
                        s.wrong_diagnosis
                            .push(format!("{} {a}: {got} instead of {d}", x.action));
                    }
                }
            }
            None if x.required => s.missing.push(format!("{} {a} at {}", x.action, x.at)),
            None => {}
        }
    }
    for (i, e) in events.iter().enumerate() {
        let action = e["event"]["action"].as_str().unwrap();
        let new_assoc = action == "peer.up" && e["heartbeat"]["downtime_ms"].is_null();
        if !used[i] && !new_assoc {
            s.extra
                .push(format!("{action} {} at {}", assoc_of(e), e["@timestamp"]));
        }
    }
    s
}

fn check(name: &str, o: Overrides) {
    let mut cap = capture(name, &o);
    let s = score(&mut cap);
    eprintln!(
        "{name} {o:?}: recall {}/{} false positives {}",
        s.found,
        s.required,
        s.extra.len()
    );
    assert!(s.missing.is_empty(), "{name}: missing {:#?}", s.missing);
    assert!(s.extra.is_empty(), "{name}: false positives {:#?}", s.extra);
    assert!(
        s.wrong_diagnosis.is_empty(),
        "{name}: diagnosis {:#?}",
        s.wrong_diagnosis
    );
    assert_eq!(s.found, s.required);
}

#[test]
fn healthy_hours_raise_nothing() {
    check("healthy", Overrides::default());
}

#[test]
fn every_fault_kind_is_found_with_no_false_positive() {
    check("faults", Overrides::default());
}

#[test]
fn the_demo_story_is_found() {
    check("story", Overrides::default());
}

#[test]
fn mgcp_gateways_keepalives_calls_and_faults_are_found() {
    check("mgcp", Overrides::default());
    check(
        "mgcp",
        Overrides {
            seed: Some(3),
            ipv6: true,
            ..Overrides::default()
        },
    );
}

#[test]
fn vlan_and_ipv6_variants_score_the_same() {
    check(
        "faults",
        Overrides {
            seed: Some(9),
            vlan: Some(77),
            ipv6: true,
            ..Overrides::default()
        },
    );
}

#[test]
fn failing_requests_escalate_once_and_their_alerts_stop() {
    check("escalation", Overrides::default());
}

#[test]
fn sccp_primary_is_judged_on_the_primary_interval_from_the_start() {
    check("sccp-primary", Overrides::default());
}
