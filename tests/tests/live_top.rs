//! `hbwatch top` in tmux against a running agent's status socket: rows appear for the
//! associations, a silenced one turns `down`, the text filter changes what is shown.

use std::process::Command;
use std::time::{Duration, Instant};

use hbwatch_tests::{hbwatch_bin, in_vm, mds_frame, require_root, Agent, VethNs};

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux").args(args).output().expect("tmux");
    String::from_utf8_lossy(&out.stdout).into_owned()
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
        tmux(&[
            "new-session",
            "-d",
            "-x",
            "200",
            "-y",
            "50",
            "-s",
            &session,
            &cmd,
        ]);
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
