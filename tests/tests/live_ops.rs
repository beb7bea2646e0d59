//! Operations against the real kernel: the Prometheus endpoint (scraped, checked with
//! promtool) and SIGHUP reloading a config file's tunables without losing state.

use std::process::Command;
use std::time::Duration;

use hbwatch_tests::{free_port, http_get, in_vm, mds_frame, require_root, Agent, VethNs};

fn mds(seq: u32) -> Vec<u8> {
    mds_frame("10.71.0.1", "10.71.0.2", seq)
}

/// The value of the sample `name{labels}` in an exposition, if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_endpoint_counts_what_happened_and_passes_promtool() {
    if !require_root("metrics_endpoint_counts_what_happened_and_passes_promtool") {
        return;
    }
    let net = VethNs::create();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut agent = Agent::start(&[
        "--iface",
        &net.host,
        "--port",
        "mds=41000",
        // Frames 2 ms apart are no plausible MDS heartbeats: announced at the first.
        "--tune",
        "mds.confirm_beats=1",
        "--no-summary-events",
        "--metrics-listen",
        &port.to_string(),
    ]);
    // seq 1..5 in order, then 9: one association, 5 heartbeats, one gap of 3.
    let frames: Vec<Vec<u8>> = [1, 2, 3, 4, 5, 9].into_iter().map(mds).collect();
    net.inject(&frames, Duration::from_millis(2));
    agent.wait_for("heartbeat.gap", Duration::from_secs(10));
    // Then silence: MDS is down after 5 missed 100 ms intervals.
    agent.wait_for("peer.down", Duration::from_secs(10));
    // Kernel and association figures are refreshed every second.
    std::thread::sleep(Duration::from_millis(2200));

    let (status, text) = http_get(&listen, "/metrics");
    assert_eq!(status, 200);
    let v =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    assert_eq!(v("hbwatch_heartbeats_total{protocol=\"mds\"}"), 5.0);
    assert_eq!(
        v("hbwatch_events_total{protocol=\"mds\",action=\"heartbeat.gap\"}"),
        1.0
    );
    assert_eq!(
        v("hbwatch_events_total{protocol=\"mds\",action=\"peer.up\"}"),
        1.0
    );
    assert_eq!(
        v("hbwatch_events_total{protocol=\"mds\",action=\"peer.down\"}"),
        1.0
    );
    assert_eq!(
        v("hbwatch_associations{protocol=\"mds\",state=\"up\"}"),
        0.0
    );
    assert_eq!(
        v("hbwatch_associations{protocol=\"mds\",state=\"down\"}"),
        1.0
    );
    assert_eq!(
        v("hbwatch_associations{protocol=\"sccp\",state=\"up\"}"),
        0.0
    );
    assert!(v("hbwatch_datapath_packets_total") >= 6.0);
    assert_eq!(
        v("hbwatch_events_lost_total{where=\"kernel-ringbuf\"}"),
        0.0
    );
    let build = text
        .lines()
        .find(|l| l.starts_with("hbwatch_build_info{version=\""))
        .unwrap_or_else(|| panic!("no hbwatch_build_info in\n{text}"));
    assert!(build.ends_with("} 1"), "{build}");
    assert!(v("hbwatch_output_delivered_events_total{output=\"stdout\"}") >= 3.0);
    assert_eq!(
        v("hbwatch_output_dropped_events_total{output=\"stdout\"}"),
        0.0
    );
    assert_eq!(http_get(&listen, "/nothing").0, 404);

    if in_vm() {
        eprintln!("promtool is not in the VM: exposition checked on the host run");
    } else {
        let dir = std::env::temp_dir().join(format!("hbw-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("metrics.txt");
        std::fs::write(&file, &text).unwrap();
        let out = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::fs::File::open(&file).unwrap())
            .output()
            .expect("promtool (Debian package prometheus; cargo xtask bootstrap installs it)");
        assert!(
            out.status.success(),
            "promtool check metrics:\n{}{}\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert_eq!(agent.stop(), 0);
}

#[test]
fn sighup_reloads_tunables_into_the_kernel_and_keeps_state() {
    if !require_root("sighup_reloads_tunables_into_the_kernel_and_keeps_state") {
        return;
    }
    let net = VethNs::create();
    let dir = std::env::temp_dir().join(format!("hbw-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("hbwatch.toml");
    let write = |max_gap: &str| {
        std::fs::write(
            &config,
            format!(
                "[agent]\ninterfaces = [\"{}\"]\nsummary_period = \"0s\"\n\
                 [protocols.mds]\nports = \"41000\"\nmax_gap = {max_gap}\nconfirm_beats = 1\n",
                net.host
            ),
        )
        .unwrap()
    };
    write("10000");
    let mut agent = Agent::start(&["--config", config.to_str().unwrap()]);
    net.inject(&[mds(1), mds(2), mds(50)], Duration::from_millis(2));
    let gap = agent.wait_for("heartbeat.gap", Duration::from_secs(10));
    assert_eq!(gap["heartbeat"]["lost"], 47);

    // A jump of 50 is a gap under max_gap 10000 and a restart under max_gap 10.
    write("10");
    let hup = |pid: u32| unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    hup(agent.pid());
    let reloaded = agent.wait_for("agent.reloaded", Duration::from_secs(10));
    assert!(reloaded["heartbeat"]["config_digest"].is_string());
    net.inject(&[mds(100)], Duration::ZERO);
    let restart = agent.wait_for("heartbeat.restart", Duration::from_secs(10));
    // The flow state survived the reload: the restart knows the sequence before it.
    assert_eq!(restart["heartbeat"]["previous_seq"], 50);

    // A broken file is refused; the agent keeps the last good rules and keeps running.
    std::fs::write(&config, "[protocols.mds]\nmax_gap = \"lots\"\n").unwrap();
    hup(agent.pid());
    let failed = agent.wait_for("agent.reload_failed", Duration::from_secs(10));
    let msg = failed["message"].as_str().unwrap();
    assert!(msg.contains("protocols.mds.max_gap"), "{msg}");
    net.inject(&[mds(102)], Duration::ZERO);
    let gap = agent.wait_for("heartbeat.gap", Duration::from_secs(10));
    assert_eq!(gap["heartbeat"]["lost"], 1);
    assert_eq!(agent.stop(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `hbwatch run --output file:` under a real logrotate whose `postrotate` sends SIGHUP,
/// as /etc/logrotate.d/hbwatch would: the agent reopens the file before it writes the
/// reload's event, so `agent.reloaded` is the first line of the new file, and the rotated
/// file and the new one together are every event the agent printed on stdout, once.
#[test]
fn logrotate_postrotate_sighup_moves_the_event_file_on_without_loss() {
    if !require_root("logrotate_postrotate_sighup_moves_the_event_file_on_without_loss") {
        return;
    }
    if in_vm() || !std::path::Path::new("/usr/sbin/logrotate").exists() {
        eprintln!("logrotate is not in the VM: checked on the host run");
        return;
    }
    let net = VethNs::create();
    let dir = std::env::temp_dir().join(format!("hbw-logrotate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("hbwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\ninterfaces = [\"{}\"]\nsummary_period = \"0s\"\n\
             [protocols.mds]\nports = \"41000\"\nconfirm_beats = 1\n",
            net.host
        ),
    )
    .unwrap();
    let events = dir.join("events.ndjson");
    let mut agent = Agent::start(&[
        "--config",
        config.to_str().unwrap(),
        "--output",
        "stdout",
        "--output",
        &format!("file:{}?max_size=0&max_age=0", events.display()),
    ]);
    net.inject(&[mds(1), mds(2), mds(3)], Duration::from_millis(2));
    agent.wait_for("peer.up", Duration::from_secs(10));

    let conf = dir.join("logrotate.conf");
    std::fs::write(
        &conf,
        format!(
            "{} {{\n  rotate 5\n  missingok\n  nocompress\n  create 0640\n  postrotate\n    \
             kill -HUP {}\n  endscript\n}}\n",
            events.display(),
            agent.pid()
        ),
    )
    .unwrap();
    let out = Command::new("/usr/sbin/logrotate")
        .arg("-f")
        .arg("-s")
        .arg(dir.join("logrotate.state"))
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "logrotate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    agent.wait_for("agent.reloaded", Duration::from_secs(10));
    net.inject(&[mds(4), mds(9)], Duration::from_millis(2));
    agent.wait_for("heartbeat.gap", Duration::from_secs(10));
    assert_eq!(agent.stop(), 0);

    let lines = |p: &std::path::Path| -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    };
    let rotated = lines(&dir.join("events.ndjson.1"));
    let current = lines(&events);
    let action = |l: &String| {
        serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]["action"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(action(&rotated[0]), "agent.started");
    assert!(rotated.iter().any(|l| action(l) == "peer.up"));
    assert_eq!(
        action(&current[0]),
        "agent.reloaded",
        "reopened before the reload's event"
    );
    assert!(current.iter().any(|l| action(l) == "heartbeat.gap"));
    let mut both: Vec<String> = rotated.into_iter().chain(current).collect();
    let mut stdout = agent.raw.clone();
    both.sort();
    stdout.sort();
    assert!(
        both == stdout,
        "the two files are the stdout lines, once each"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
