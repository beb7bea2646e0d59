//! `hbwatch demo` as a newcomer runs it, non-interactively: real XDP on a veth pair,
//! the ~60 s incident story, events on stdout, live and offline agreeing, nothing left
//! behind. Without root it says what it needs in one sentence.

use std::process::Command;

use hbwatch_tests::{hbwatch_bin, require_root};
use serde_json::Value;

#[test]
fn demo_plays_the_story_and_live_and_offline_agree() {
    if !require_root("demo_plays_the_story_and_live_and_offline_agree") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("hbwatch-demo-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("demo.pcap");
    let out = Command::new(hbwatch_bin())
        .args(["demo", "--format", "json", "--pcap"])
        .arg(&pcap)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("live and offline agree"), "{stderr}");
    let events: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON"))
        .collect();
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["event"]["action"].as_str().unwrap())
        .collect();
    for want in [
        "agent.started",
        "peer.up",
        "heartbeat.gap",
        "heartbeat.missed",
        "peer.down",
        "heartbeat.restart",
        "heartbeat.unanswered",
        "session.closed",
        "qos.mismatch",
        "sip.registered",
        "sip.expired",
        "agent.stopped",
    ] {
        assert!(actions.contains(&want), "{want} missing from {actions:?}");
    }
    assert!(pcap.metadata().unwrap().len() > 50_000, "the story's pcap");
    // Nothing left behind.
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&netns.stdout).contains("hbwatch-demo-"));
    let links = Command::new("ip").args(["link"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&links.stdout).contains("hbdemo"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn demo_without_root_says_what_it_needs() {
    if !require_root("demo_without_root_says_what_it_needs") {
        return;
    }
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(hbwatch_bin())
        .arg("demo")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hbwatch demo needs root"), "{err}");
}
