//! The live status board in a real terminal (tmux): `hbwatch top` against a running
//! agent's status socket (rows appear, a silenced association turns `down`, sort and
//! filter keys work), and `hbwatch demo`, which shows the board on a terminal.

use std::process::Command;
use std::time::{Duration, Instant};

use hbwatch_tests::{hbwatch_bin, in_vm, mds_frame, require_root, Agent, VethNs};

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux").args(args).output().expect("tmux");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A detached 200x50 tmux session running `cmd`.
fn new_session(session: &str, cmd: &str) {
    tmux(&[
        "new-session",
        "-d",
        "-x",
        "200",
        "-y",
        "50",
        "-s",
        session,
        cmd,
    ]);
}

/// The association table's part of a pane (above the events pane, which also names
/// endpoints in its messages).
fn table(pane: &str) -> &str {
    pane.split(" events ").next().unwrap_or(pane)
}

fn wait_pane(session: &str, what: impl Fn(&str) -> bool) -> String {
    let t0 = Instant::now();
    loop {
        let pane = tmux(&["capture-pane", "-p", "-t", session]);
        if what(&pane) || t0.elapsed() > Duration::from_secs(10) {
            return pane;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn top_shows_associations_down_and_filters() {
    if !require_root("top_shows_associations_down_and_filters") || in_vm() {
        return;
    }
    let net = VethNs::create();
    let sock = std::env::temp_dir().join(format!("hbwatch-top-{}.sock", std::process::id()));
    let sock_s = sock.to_str().unwrap().to_string();
    let mut agent = Agent::start(&[
        "--iface",
        &net.host,
        "--port",
        "mds=41000",
        "--tune",
        "mds.confirm_beats=1",
        "--status-socket",
        &sock_s,
    ]);
    // Two associations at their 100 ms interval for 3 s, then only the first for 9 s:
    // the second goes down, the first stays up. Played in the background while the board is watched.
    let mut timed = Vec::new();
    for seq in 1..=120u32 {
        let at = Duration::from_millis(100 * seq as u64);
        timed.push((at, mds_frame("10.72.0.1", "10.72.0.9", seq)));
        if seq <= 30 {
            timed.push((at, mds_frame("10.72.0.2", "10.72.0.9", seq)));
        }
    }
    std::thread::scope(|scope| {
        scope.spawn(|| net.inject_at(&timed));
        let session = format!("hbtop{}", std::process::id());
        let cmd = format!("{} top --socket {sock_s}", hbwatch_bin());
        new_session(&session, &cmd);
        let pane = wait_pane(&session, |p| {
            p.contains("10.72.0.1") && p.contains("10.72.0.2")
        });
        assert!(
            pane.contains("10.72.0.1:41000 -> 10.72.0.9:41000"),
            "{pane}"
        );
        assert!(pane.contains("10.72.0.2:41000"), "{pane}");
        let down_row = |p: &str| {
            table(p)
                .lines()
                .position(|l| l.contains("10.72.0.2:41000") && l.contains(" down "))
        };
        let up_row = |p: &str| {
            table(p)
                .lines()
                .position(|l| l.contains("10.72.0.1:41000") && l.contains(" up "))
        };
        let pane = wait_pane(&session, |p| down_row(p).is_some());
        assert!(
            down_row(&pane).is_some() && up_row(&pane).is_some(),
            "{pane}"
        );
        // Sort by age (key 4), oldest first (r): the silent association leads.
        tmux(&["send-keys", "-t", &session, "4", "r"]);
        let pane = wait_pane(&session, |p| p.contains("sort age desc"));
        assert!(pane.contains("sort age desc"), "{pane}");
        let order = |p: &str| down_row(p).zip(up_row(p)).map(|(d, u)| d < u);
        assert_eq!(order(&pane), Some(true), "{pane}");
        tmux(&["send-keys", "-t", &session, "r"]);
        let pane = wait_pane(&session, |p| p.contains("sort age ") && !p.contains("desc"));
        assert_eq!(order(&pane), Some(false), "{pane}");
        tmux(&["send-keys", "-t", &session, "/", "72.0.1:", "Enter"]);
        let pane = wait_pane(&session, |p| !table(p).contains("10.72.0.2:41000"));
        assert!(pane.contains("text=72.0.1:"), "{pane}");
        assert!(!table(&pane).contains("10.72.0.2:41000"), "{pane}");
        assert!(
            table(&pane)
                .lines()
                .any(|l| l.contains("10.72.0.1:41000") && l.contains(" up ")),
            "{pane}"
        );
        tmux(&["send-keys", "-t", &session, "q"]);
        let _ = tmux(&["kill-session", "-t", &session]);
    });
    agent.stop();
    let _ = std::fs::remove_file(&sock);
}

/// A short scenario for the demo: two MDS router pairs, the second silenced at 3 s.
const TWO_ROUTERS: &str = r#"
name = "two-routers"
duration_s = 10
seed = 5
start = "2026-11-22T10:00:00Z"

[[association]]
name = "routers-1"
protocol = "mds"
a = "10.50.0.1:39500"
b = "10.50.0.2:39500"

[[association]]
name = "routers-2"
protocol = "mds"
a = "10.50.0.3:39500"
b = "10.50.0.4:39500"

[[fault]]
at_s = 3
association = "routers-2"
kind = "silence"
duration_s = 30
"#;

#[test]
fn demo_on_a_terminal_shows_the_board() {
    if !require_root("demo_on_a_terminal_shows_the_board") || in_vm() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("hbwatch-top-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let scenario = dir.join("two-routers.toml");
    std::fs::write(&scenario, TWO_ROUTERS).unwrap();
    let session = format!("hbdemo{}", std::process::id());
    let cmd = format!(
        "{} demo --scenario {} --pcap {}",
        hbwatch_bin(),
        scenario.display(),
        dir.join("demo.pcap").display()
    );
    new_session(&session, &cmd);
    // Keep the pane after the demo exits, to read what it printed last.
    tmux(&["set-option", "-t", &session, "remain-on-exit", "on"]);
    let row = |p: &str, ep: &str, state: &str| {
        table(p)
            .lines()
            .any(|l| l.contains(ep) && l.contains(&format!(" {state} ")))
    };
    let pane = wait_pane(&session, |p| {
        row(p, "10.50.0.1:39500", "up") && row(p, "10.50.0.3:39500", "up")
    });
    assert!(
        row(&pane, "10.50.0.1:39500", "up") && row(&pane, "10.50.0.3:39500", "up"),
        "{pane}"
    );
    let pane = wait_pane(&session, |p| row(p, "10.50.0.3:39500", "down"));
    assert!(row(&pane, "10.50.0.3:39500", "down"), "{pane}");
    assert!(row(&pane, "10.50.0.1:39500", "up"), "{pane}");
    // The story ends; the board keeps its last state until q.
    let pane = wait_pane(&session, |p| p.contains("the agent has stopped"));
    assert!(pane.contains("the agent has stopped"), "{pane}");
    tmux(&["send-keys", "-t", &session, "q"]);
    let pane = wait_pane(&session, |p| p.contains("live and offline agree"));
    let _ = tmux(&["kill-session", "-t", &session]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(pane.contains("live and offline agree"), "{pane}");
}

/// What the agent's status socket answers now (one `status` request).
fn status(sock: &std::path::Path) -> serde_json::Value {
    use std::io::{BufRead as _, Write as _};
    let mut s = std::os::unix::net::UnixStream::connect(sock).expect("status socket");
    s.write_all(b"status\n").unwrap();
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).expect("one JSON object")
}

/// A phone registering through a real XDP datapath: its SIP association is a row on the
/// board, and with `--sip-users redact` the board's events pane shows the redacted
/// user, as every output does (the pane was fed before the privacy filter once).
#[test]
fn the_board_shows_sip_rows_with_users_hidden() {
    if !require_root("the_board_shows_sip_rows_with_users_hidden") {
        return;
    }
    let sc = hbgen::scenario::Scenario::from_toml(
        r#"
name = "one-phone"
duration_s = 3
seed = 1
start = "2026-11-22T10:00:00Z"
[[association]]
name = "phone"
protocol = "sip"
a = "10.73.0.9"
b = "10.73.0.1"
user = "4930123456"
"#,
        "one-phone",
    )
    .unwrap();
    let capture = hbgen::generate(&sc);
    let t0 = capture.frames[0].ts_ns;
    let timed: Vec<(Duration, Vec<u8>)> = capture
        .frames
        .iter()
        .map(|f| (Duration::from_nanos(f.ts_ns - t0), f.data.clone()))
        .collect();
    let net = VethNs::create();
    let sock = std::env::temp_dir().join(format!("hbwatch-top-sip-{}.sock", std::process::id()));
    let mut agent = Agent::start(&[
        "--iface",
        &net.host,
        "--sip-users",
        "redact",
        "--status-socket",
        sock.to_str().unwrap(),
    ]);
    net.inject_at(&timed);
    let registered = agent.wait_for("sip.registered", Duration::from_secs(10));
    assert!(
        !registered.to_string().contains("4930123456"),
        "{registered}"
    );
    // The snapshot is rebuilt once per poll tick: the row may show a tick before the
    // event does.
    let t = Instant::now();
    let snap = loop {
        let snap = status(&sock);
        let has_row = snap["associations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["protocol"] == "sip" && r["source"] == "10.73.0.9:5060");
        let has_event = snap["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "sip.registered");
        if (has_row && has_event) || t.elapsed() > Duration::from_secs(5) {
            break snap;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    agent.stop();
    let _ = std::fs::remove_file(&sock);
    let row = snap["associations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["protocol"] == "sip" && r["source"] == "10.73.0.9:5060")
        .unwrap_or_else(|| panic!("no SIP row: {snap:#}"));
    assert_eq!(row["destination"], "10.73.0.1:5060", "{row}");
    assert_eq!(row["state"], "up", "{row}");
    let events = snap["events"].as_array().unwrap();
    let line = events
        .iter()
        .find(|e| e["action"] == "sip.registered")
        .unwrap_or_else(|| panic!("no sip.registered in the pane: {snap:#}"));
    assert!(
        line["message"].as_str().unwrap().contains("redacted"),
        "{line}"
    );
    assert!(!snap.to_string().contains("4930123456"), "{snap:#}");
}

/// `hbwatch run --tui`: the agent draws the board in its own terminal (tmux here) instead
/// of event lines; a silenced association turns down there, and `q` stops the agent
/// cleanly (exit status 0).
#[test]
fn run_tui_shows_the_board_and_q_stops_the_agent() {
    if !require_root("run_tui_shows_the_board_and_q_stops_the_agent") || in_vm() {
        return;
    }
    let net = VethNs::create();
    let mut timed = Vec::new();
    for seq in 1..=100u32 {
        let at = Duration::from_millis(500 + 100 * seq as u64);
        timed.push((at, mds_frame("10.74.0.1", "10.74.0.9", seq)));
        if seq <= 20 {
            timed.push((at, mds_frame("10.74.0.2", "10.74.0.9", seq)));
        }
    }
    let session = format!("hbtui{}", std::process::id());
    let cmd = format!(
        "{} run --iface {} --port mds=41000 --tune mds.confirm_beats=1 --status-socket none --tui; echo agent-exit=$?; sleep 30",
        hbwatch_bin(),
        net.host
    );
    new_session(&session, &cmd);
    // The board is up once it shows its header; then the traffic starts.
    let pane = wait_pane(&session, |p| p.contains("associations"));
    assert!(pane.contains("associations"), "{pane}");
    net.inject_at(&timed);
    let row = |p: &str, ep: &str, state: &str| {
        table(p)
            .lines()
            .any(|l| l.contains(ep) && l.contains(&format!(" {state} ")))
    };
    let pane = wait_pane(&session, |p| {
        row(p, "10.74.0.1:41000", "up") && row(p, "10.74.0.2:41000", "down")
    });
    let _ = tmux(&["send-keys", "-t", &session, "q"]);
    let after = wait_pane(&session, |p| p.contains("agent-exit="));
    let _ = tmux(&["kill-session", "-t", &session]);
    assert!(
        row(&pane, "10.74.0.1:41000", "up") && row(&pane, "10.74.0.2:41000", "down"),
        "{pane}"
    );
    // No event lines on the terminal while the board was up (they would scroll it).
    assert!(!pane.contains("\"event\""), "{pane}");
    assert!(after.contains("agent-exit=0"), "{after}");
}
