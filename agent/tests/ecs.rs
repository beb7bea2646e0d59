//! ECS conformance (docs/EVENTS.md, contract v2): the event field list against Elastic's
//! own ECS definitions and Packetbeat's SIP fields (agent/tests/data/ecs/), every event
//! of every built-in and test scenario against both, `network.community_id` against the
//! reference implementation (PyPI `communityid`), and the shipped index templates
//! against the field list. The live agent's events are checked the same way by the root
//! test live_hbgen.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use hbwatch::schema::{index_template, Engine, Reference};
use serde_json::Value;
use support::{capture, BIN};

fn reference() -> Reference {
    Reference::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ecs")).unwrap()
}

fn events_md() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/EVENTS.md"))
        .unwrap()
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hbwatch-ecs-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The events of `hbwatch analyze` on `pcap`, with periodic summaries on.
fn analyze(pcap: &Path) -> Vec<Value> {
    let out = Command::new(BIN)
        .args(["analyze", "--summary-period", "30", "--hostname", "probe"])
        .arg(pcap)
        .output()
        .unwrap();
    assert!(
        out.status.code().is_some_and(|c| c <= 2),
        "analyze {}: {}",
        pcap.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every event hbgen's scenarios make the agent write: the built-in ones and the test
/// scenarios in tests/data (made once per test run).
fn scenario_events() -> &'static [Value] {
    static EVENTS: std::sync::OnceLock<Vec<Value>> = std::sync::OnceLock::new();
    EVENTS.get_or_init(make_scenario_events)
}

fn make_scenario_events() -> Vec<Value> {
    let dir = tempdir("scenarios");
    let mut events = Vec::new();
    for name in ["story", "faults", "healthy"] {
        events.extend(analyze(&capture(&dir, name)));
    }
    for file in ["escalation", "sccp-primary", "sip-tcp"] {
        let toml = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/{file}.toml"));
        events.extend(analyze(&capture(&dir, toml.to_str().unwrap())));
    }
    let _ = std::fs::remove_dir_all(&dir);
    events
}

#[test]
fn the_field_list_agrees_with_ecs_and_packetbeat() {
    let r = reference();
    assert_eq!(r.ecs_version, hbwatch::event::ECS_VERSION);
    let problems = r.field_problems();
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn every_scenario_event_is_valid_ecs() {
    let r = reference();
    let events = scenario_events();
    let mut actions = BTreeSet::new();
    let mut problems = BTreeSet::new();
    for ev in events {
        let action = ev["event"]["action"].as_str().unwrap_or("?").to_string();
        for p in r.event_problems(ev) {
            problems.insert(format!("{action}: {p}"));
        }
        actions.insert(action);
    }
    assert!(
        problems.is_empty(),
        "{} events: {problems:#?}",
        events.len()
    );
    // The scenarios reach nearly every association action of docs/EVENTS.md;
    // every_documented_action_has_ecs_values covers the rest's ECS values, live_hbgen
    // checks the live agent's agent.* events, field_corpus real captures' events.
    for want in [
        "peer.up",
        "peer.down",
        "heartbeat.gap",
        "heartbeat.late",
        "heartbeat.missed",
        "heartbeat.restart",
        "heartbeat.retry",
        "heartbeat.unanswered",
        "heartbeat.summary",
        "qos.mismatch",
        "session.closed",
        "sip.registered",
        "sip.expired",
        "sip.register_failed",
        "sip.options_failed",
    ] {
        assert!(actions.contains(want), "no {want} in {actions:?}");
    }
}

/// The reference implementation's Community ID of each association the scenarios had,
/// computed by PyPI's `communityid` in one python run.
#[test]
fn community_ids_match_the_reference_implementation() {
    let events = scenario_events();
    let mut tuples: BTreeSet<(String, u64, String, u64, String, String)> = events
        .iter()
        .filter(|e| e["network"]["community_id"].is_string())
        .map(|e| {
            (
                e["source"]["ip"].as_str().unwrap().to_string(),
                e["source"]["port"].as_u64().unwrap(),
                e["destination"]["ip"].as_str().unwrap().to_string(),
                e["destination"]["port"].as_u64().unwrap(),
                e["network"]["transport"].as_str().unwrap().to_string(),
                e["network"]["community_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(tuples.len() >= 10, "{tuples:?}");
    // IPv6, one address both ways (the ports decide the order), and ports in both
    // orders: what scenarios may not have.
    use hbwatch::convert::community_id;
    let v6 = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap().octets();
    let v4 = |s: &str| {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&s.parse::<std::net::Ipv4Addr>().unwrap().octets());
        a
    };
    let (a6, b6) = ("fd00:70::9", "fd00:70::1");
    for (src, sp, dst, dp, tcp) in [(a6, 5060, b6, 5060, false), (b6, 2000, a6, 51000, true)] {
        let id = community_id(6, &v6(src), sp, &v6(dst), dp, if tcp { 6 } else { 17 });
        let t = if tcp { "tcp" } else { "udp" };
        tuples.insert((src.into(), sp as u64, dst.into(), dp as u64, t.into(), id));
    }
    for (sp, dp) in [(5000u16, 40000u16), (40000, 5000)] {
        let id = community_id(4, &v4("10.1.1.1"), sp, &v4("10.1.1.1"), dp, 6);
        tuples.insert((
            "10.1.1.1".into(),
            sp as u64,
            "10.1.1.1".into(),
            dp as u64,
            "tcp".into(),
            id,
        ));
    }
    let script = "import sys, communityid\n\
        c = communityid.CommunityID()\n\
        for line in sys.stdin:\n\
        \x20   s, sp, d, dp, t = line.split()\n\
        \x20   make = communityid.FlowTuple.make_tcp if t == 'tcp' else communityid.FlowTuple.make_udp\n\
        \x20   print(c.calc(make(s, d, int(sp), int(dp))))\n";
    let input: String = tuples
        .iter()
        .map(|(s, sp, d, dp, t, _)| format!("{s} {sp} {d} {dp} {t}\n"))
        .collect();
    let mut py = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write as _;
    py.stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the reference implementation (pip install communityid; cargo xtask test installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    let got: Vec<&str> = tuples.iter().map(|t| t.5.as_str()).collect();
    assert_eq!(got, want, "tuples: {tuples:#?}");
}

/// The templates in packaging/elasticsearch are what `hbwatch schema` prints today.
#[test]
fn the_shipped_index_templates_are_generated_from_the_field_list() {
    for (engine, file) in [
        (Engine::Elasticsearch, "hbwatch-template.json"),
        (Engine::Opensearch, "hbwatch-template-opensearch.json"),
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../packaging/elasticsearch")
            .join(file);
        let shipped: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            shipped,
            index_template(engine),
            "{} is stale: regenerate it with `hbwatch schema --engine {}`",
            path.display(),
            if engine == Engine::Opensearch {
                "opensearch"
            } else {
                "elasticsearch"
            }
        );
    }
}

/// docs/EVENTS.md lists exactly the actions of the code's action table, each with the
/// table's `event.kind`; and each gets an `event.type` (and `event.outcome`) that ECS
/// allows with its category, whether or not a scenario produces it.
#[test]
fn every_action_is_documented_with_its_kind_and_has_ecs_values() {
    use hbwatch::event::Action;
    let r = reference();
    let docs = events_md();
    let documented: BTreeMap<&str, &str> = docs
        .lines()
        .filter(|l| l.starts_with("| `") && l.contains(" / "))
        .filter_map(|l| {
            let mut cells = l.split('|').map(str::trim);
            let action = cells.nth(1)?.trim_matches('`');
            let kind = cells.next()?.split(" / ").next()?;
            Some((action, kind))
        })
        .filter(|(a, _)| a.contains('.') && !a.starts_with("event.") && !a.starts_with("observer."))
        .collect();
    let table: BTreeMap<&str, &str> = Action::ALL.iter().map(|a| (a.name(), a.kind())).collect();
    assert_eq!(
        documented, table,
        "docs/EVENTS.md's action tables (left) and event::Action (right) disagree"
    );
    for &action in Action::ALL {
        let observer = hbwatch::event::Observer {
            hostname: "probe".into(),
            ingress: None,
        };
        let ev = hbwatch::event::Event::new(
            "2026-11-22T10:00:00.000000Z".into(),
            observer,
            hbwatch::event::Said {
                action,
                level: hbwatch::event::Level::Info,
                message: "m".into(),
            },
        );
        let v: Value = serde_json::to_value(&ev).unwrap();
        let problems = r.event_problems(&v);
        assert!(problems.is_empty(), "{action}: {problems:?}");
    }
}

/// The example lines of docs/EVENTS.md are events as the agent writes them: valid.
#[test]
fn the_examples_in_events_md_are_valid_ecs() {
    let r = reference();
    let docs = events_md();
    let block = docs
        .split("## Examples")
        .nth(1)
        .and_then(|s| s.split("```json").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("an Examples json block");
    let mut problems = Vec::new();
    let mut n = 0;
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        let ev: Value = serde_json::from_str(line).unwrap();
        n += 1;
        for p in r.event_problems(&ev) {
            problems.push(format!("{}: {p}", ev["event"]["action"]));
        }
    }
    assert!(n >= 8, "{n} examples");
    assert!(
        problems.is_empty(),
        "{} problems: {problems:#?}",
        problems.len()
    );
}
