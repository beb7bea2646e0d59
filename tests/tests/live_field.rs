//! Live = offline on the field corpus (docs/FIELD.md): the captures marked `live` in
//! tests/field/manifest.toml are replayed with tcpreplay onto a veth pair while
//! `hbwatch run` watches it and tcpdump records it; `hbwatch analyze` of that recording
//! must report the same events as the live agent (the differential test's rules), and the
//! quiet captures none at all, live or offline.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use hbwatch::demo::agreement_key;
use hbwatch_tests::{
    agreement_counts, analyze_events, in_vm, require_root, Agent, Tcpdump, VethNs,
};
use serde_json::Value;

struct Live {
    name: String,
    quiet: bool,
    /// Replay only the first N frames.
    limit: Option<i64>,
}

fn corpus_dir() -> PathBuf {
    match std::env::var_os("HBWATCH_FIELD_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/hbwatch/field")
        }
    }
}

fn live_captures() -> Vec<Live> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/field/manifest.toml");
    let m: toml::Table = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    m["capture"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c.get("live").and_then(|v| v.as_bool()) == Some(true))
        .map(|c| Live {
            name: c["name"].as_str().unwrap().to_string(),
            quiet: c.get("quiet").and_then(|v| v.as_bool()) == Some(true),
            limit: c.get("live_limit").and_then(|v| v.as_integer()),
        })
        .collect()
}

#[test]
fn field_captures_replayed_live_agree_with_offline() {
    if !require_root("field_captures_replayed_live_agree_with_offline") {
        return;
    }
    if in_vm() {
        // The VM image carries neither the field corpus (hundreds of MB) nor tcpreplay;
        // the host run replays it, on this same program.
        eprintln!(
            "SKIP field_captures_replayed_live_agree_with_offline: no field corpus in the VM"
        );
        return;
    }
    let dir = corpus_dir();
    let live = live_captures();
    assert!(!live.is_empty(), "no capture marked live in the manifest");
    if let Some(missing) = live.iter().find(|c| !dir.join(&c.name).exists()) {
        let msg = format!(
            "{} not in {}: run `cargo xtask field`",
            missing.name,
            dir.display()
        );
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}");
        }
        eprintln!("SKIP field_captures_replayed_live_agree_with_offline: {msg}");
        return;
    }
    let net = VethNs::create();
    let work = std::env::temp_dir().join(format!("hbwatch-live-field-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let wire = work.join("wire.pcap");
    let tcpdump = Tcpdump::start(&net.host, &wire);
    let mut agent = Agent::start(&[
        "--iface",
        &net.host,
        "--hostname",
        "probe",
        "--no-summary-events",
    ]);
    // Quiet captures at 20 Mbit/s (no heartbeat timing to keep), then the others in
    // real time, each after the previous one.
    let mut order: Vec<&Live> = live.iter().filter(|c| c.quiet).collect();
    order.extend(live.iter().filter(|c| !c.quiet));
    for c in order {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &net.ns, "tcpreplay", "-q", "-i", &net.peer]);
        if c.quiet {
            cmd.args(["--mbps", "20"]);
        }
        if let Some(n) = c.limit {
            cmd.arg(format!("--limit={n}"));
        }
        let out = cmd
            .arg(dir.join(&c.name))
            .output()
            .expect("tcpreplay (cargo xtask bootstrap installs Debian's tcpreplay)");
        assert!(
            out.status.success(),
            "tcpreplay {}: {}",
            c.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let last = tcpdump.stop();
    assert_eq!(agent.stop(), 0);

    let offline = analyze_events(&wire, &[]);
    let live_events: Vec<&Value> = agent
        .heartbeat_events()
        .into_iter()
        .filter(|e| e["@timestamp"].as_str().unwrap() <= last.as_str())
        .collect();
    let offline: Vec<&Value> = offline.iter().collect();
    assert_eq!(
        agreement_counts(&live_events),
        agreement_counts(&offline),
        "field replay: live vs offline of the same wire\nlive: {live_events:#?}\noffline: {offline:#?}"
    );
    // The quiet captures' traffic gives nothing; only the SIP registrar pair may speak.
    let stray: Vec<String> = offline
        .iter()
        .filter(|e| e["network"]["protocol"] != "sip")
        .map(|e| agreement_key(e))
        .collect();
    assert!(
        stray.is_empty(),
        "events from quiet field captures: {stray:#?}"
    );
    let retries: Vec<String> = offline
        .iter()
        .filter(|e| e["event"]["action"] == "heartbeat.retry")
        .map(|e| agreement_key(e))
        .collect();
    assert!(
        retries.is_empty(),
        "sip-dup.pcap's duplicated frames taken for retries: {retries:#?}"
    );
    let _ = std::fs::remove_dir_all(&work);
}
