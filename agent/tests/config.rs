//! The configuration file and privacy options, through the real binary: documented
//! error messages and exit status, the printed default accepted back, a file's settings
//! taking effect, CLI flags overriding it, SIP user parts hashed everywhere.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn hbwatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hbwatch"))
        .args(args)
        .env_remove("HBWATCH_CONFIG")
        .env_remove("HBWATCH_HASH_KEY")
        .output()
        .expect("run hbwatch")
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hbw-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn events(o: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// A built-in scenario as a capture (SIP registrations included in `story`).
fn capture(scenario: &str) -> PathBuf {
    let pcap = tmp(&format!("{scenario}.pcap"));
    if !pcap.exists() {
        let o = hbwatch(&[
            "hbgen",
            "--scenario",
            scenario,
            "--pcap",
            pcap.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    pcap
}

#[test]
fn config_errors_say_which_key_and_what_was_expected_and_exit_1() {
    let cases = [
        (
            "[protocols.mds]\ndown_after = 0\n",
            "protocols.mds.down_after = 0: missed intervals, 1-255",
        ),
        (
            "[agent]\nmode = \"fast\"\n",
            "agent.mode = \"fast\": auto, driver, skb or tc",
        ),
        ("[agent]\nintrefaces = []\n", "unknown field `intrefaces`"),
        (
            "[output]\nurls = [\"kafka://k:9092\"]\n",
            "output.urls = \"kafka://k:9092\": unknown scheme \"kafka\"",
        ),
        (
            "[metrics]\nlisten = \"everywhere\"\n",
            "metrics.listen = \"everywhere\"",
        ),
        ("not toml at all", "TOML parse error at line 1"),
    ];
    for (text, expected) in cases {
        let f = tmp("bad.toml");
        std::fs::write(&f, text).unwrap();
        for args in [
            vec!["config", "--check", f.to_str().unwrap()],
            vec!["run", "--config", f.to_str().unwrap(), "--iface", "lo"],
            vec!["analyze", "--config", f.to_str().unwrap(), "x.pcap"],
        ] {
            let o = hbwatch(&args);
            assert_eq!(o.status.code(), Some(1), "{args:?} with {text:?}");
            let err = stderr(&o);
            assert!(
                err.starts_with(&format!("hbwatch: error: config {}: ", f.display())),
                "{err}"
            );
            assert!(
                err.contains(expected),
                "{args:?}: {err:?} lacks {expected:?}"
            );
            assert!(!err.contains("backtrace"), "{err}");
        }
    }
    let o = hbwatch(&["config", "--check", "/nonexistent/hbwatch.toml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("/nonexistent/hbwatch.toml: No such file"),
        "{}",
        stderr(&o)
    );
    let o = hbwatch(&["run"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no interface to watch"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_printed_default_is_accepted_and_a_file_takes_effect_under_the_flags() {
    let o = hbwatch(&["config", "--print-default"]);
    assert!(o.status.success());
    let default = tmp("default.toml");
    std::fs::write(&default, &o.stdout).unwrap();
    let o = hbwatch(&["config", "--check", default.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));

    // The faults scenario's MDS pair is on the default ports; move them away in the
    // file: MDS goes silent. A --port flag adds them back.
    let pcap = capture("faults");
    let base = events(&hbwatch(&[
        "analyze",
        pcap.to_str().unwrap(),
        "--no-summary-events",
    ]));
    let mds = |evs: &[Value]| {
        evs.iter()
            .filter(|e| e["network"]["protocol"] == "mds")
            .count()
    };
    assert!(mds(&base) > 0, "the scenario has MDS events");
    let conf = tmp("moved.toml");
    std::fs::write(
        &conf,
        "[agent]\nsummary_period = \"0s\"\nhostname = \"from-config\"\n[protocols.mds]\nports = \"1\"\n",
    )
    .unwrap();
    let moved = events(&hbwatch(&[
        "analyze",
        "--config",
        conf.to_str().unwrap(),
        pcap.to_str().unwrap(),
    ]));
    assert_eq!(mds(&moved), 0);
    assert!(moved
        .iter()
        .all(|e| e["observer"]["hostname"] == "from-config"));
    assert!(moved
        .iter()
        .all(|e| e["event"]["action"] != "heartbeat.summary"));
    let back = events(&hbwatch(&[
        "analyze",
        "--config",
        conf.to_str().unwrap(),
        "--port",
        "mds=39500-39999",
        "--hostname",
        "from-flag",
        pcap.to_str().unwrap(),
    ]));
    assert_eq!(mds(&back), mds(&base));
    assert!(back
        .iter()
        .all(|e| e["observer"]["hostname"] == "from-flag"));
}

fn sip_users(evs: &[Value]) -> Vec<String> {
    evs.iter()
        .filter_map(|e| e["sip"]["aor"].as_str())
        .filter_map(|aor| Some(aor.split_once(':')?.1.split_once('@')?.0.to_string()))
        .collect()
}

#[test]
fn hashed_sip_users_appear_nowhere_and_stay_stable() {
    let pcap = capture("story");
    let path = pcap.to_str().unwrap();
    let plain = hbwatch(&["analyze", path]);
    let plain_evs = events(&plain);
    let users = sip_users(&plain_evs);
    assert!(!users.is_empty(), "the story registers SIP users");

    let run = |key: &str| {
        Command::new(env!("CARGO_BIN_EXE_hbwatch"))
            .args(["analyze", path, "--sip-users", "hash"])
            .env("HBWATCH_HASH_KEY", key)
            .output()
            .unwrap()
    };
    let hashed = run("a key of sixteen+ chars");
    assert!(hashed.status.success(), "{}", stderr(&hashed));
    let text = String::from_utf8_lossy(&hashed.stdout);
    for u in &users {
        assert!(!text.contains(u.as_str()), "{u} still in the output");
    }
    let hashed_evs = events(&hashed);
    assert_eq!(
        hashed_evs.len(),
        plain_evs.len(),
        "same events, other names"
    );
    assert!(sip_users(&hashed_evs).iter().all(|u| u.starts_with("h:")));
    assert_eq!(
        run("a key of sixteen+ chars").stdout,
        hashed.stdout,
        "stable"
    );
    assert_ne!(run("another key, sixteen+").stdout, hashed.stdout, "keyed");

    let o = hbwatch(&["analyze", path, "--sip-users", "hash"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("16 characters"), "{}", stderr(&o));
}
