//! A cluster's worth of associations on real XDP (issue 19): hbgen's crowd scenario
//! (hbgen/src/crowd.rs: CS1000 RUDP device pairs at their real 1 s interval, one
//! association silenced a third of the way in, one restarted halfway) onto a veth pair,
//! against `hbwatch run` with the default flow table. Every association comes up once;
//! the silenced one misses and goes down by its rule, the restarted one restarts; nothing
//! else is said, nothing is lost, routine heartbeats stay in the kernel, and `analyze` of
//! the same crowd written to a capture says the same.
//!
//! 100,000 associations (200,000 frames a second) with a release agent, or as many as
//! `HBWATCH_SCALE_ASSOCIATIONS` says: `cargo xtask dist --check` runs this test with the
//! packaged binary and 50,000 (on a 2-core host, hbgen sending 100,000 associations and
//! the kernel's veth path took ~70 % of a core, and a busy CI host put it seconds
//! behind). A debug agent (`cargo xtask test`) spends ~10x the CPU per record and would
//! fall behind on the first rounds, when every association's first beats go up: it gets
//! 10,000. QEMU's TCG (vm-test) 1,000: at 2,000, a run on 5.10 had hbgen
//! 84-146 ms behind in every attempt (emulated CPUs stall for tens of ms); what the VMs
//! check is the old kernels' verifier and maps, not the crowd's size.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hbgen::crowd::Crowd;
use hbgen::scenario::default_start_ns;
use hbwatch_pcap::Format;
use hbwatch_tests::{action_on_association, agent_is_release, in_vm, require_root, Agent, VethNs};
use serde_json::Value;

const DURATION_S: u32 = 12;
const SEED: u64 = 19;

fn unix_ns_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// An event's `@timestamp` (RFC 3339), Unix ns.
fn unix_ns_of(rfc3339: &str) -> u64 {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{rfc3339:?}: {e}"));
    t.unix_timestamp_nanos() as u64
}

/// One process's peak resident memory (MiB) and CPU time (s), from /proc.
fn rss_and_cpu(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command's closing parenthesis; utime and stime are 14 and 15.
    let rest: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: f64 = rest[11].parse::<f64>().unwrap() + rest[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (hwm_kib / 1024.0, ticks / hz)
}

#[test]
fn a_crowd_of_associations_comes_up_once_and_only_its_two_faults_alert() {
    if !require_root("a_crowd_of_associations_comes_up_once_and_only_its_two_faults_alert") {
        return;
    }
    let associations: u64 = if let Ok(n) = std::env::var("HBWATCH_SCALE_ASSOCIATIONS") {
        n.parse().expect("HBWATCH_SCALE_ASSOCIATIONS: a number")
    } else if in_vm() {
        1_000
    } else if agent_is_release() {
        100_000
    } else {
        10_000
    };
    // The crowd hbgen sends below (same start, size, duration and seed).
    let crowd = Crowd::new(default_start_ns(), associations, DURATION_S as f64, SEED).unwrap();
    let truth = crowd.truth();
    let required: BTreeSet<String> = truth
        .expected
        .iter()
        .filter(|e| e.required && e.action != "peer.up")
        .map(|e| {
            action_on_association(&serde_json::json!({
                "event": {"action": e.action},
                "source": e.source,
                "destination": e.destination,
            }))
        })
        .collect();
    assert_eq!(required.len(), 3, "{required:?}");

    let net = VethNs::create();
    // A run is the protocol's only if hbgen kept its pace; on a busy 2-core host it may
    // not (it and the kernel's veth path need ~70 % of a core). Such a run says nothing
    // of the agent: try again, and fail if no run in ATTEMPTS kept the pace.
    let mut attempt = 0;
    let CrowdRun {
        agent,
        up,
        ups,
        sent_in,
        down_said_after,
        calm_cpu,
        ended,
        rss_mib,
        cpu_s,
        ..
    } = loop {
        attempt += 1;
        let run = crowd_run(&net, associations);
        if run.behind_ms <= MAX_BEHIND_MS {
            break run;
        }
        let behind = run.behind_ms;
        eprintln!(
            "run {attempt}: hbgen fell {behind} ms behind its timestamps (more than {MAX_BEHIND_MS}): not the protocol's timing, run again"
        );
        assert!(
            attempt < ATTEMPTS,
            "hbgen fell behind its timestamps in {ATTEMPTS} runs: this host is too busy to send 200,000 frames a second in real time"
        );
    };

    let counters = agent.events.last().unwrap()["heartbeat"]["counters"].clone();
    let held = counters["held"].as_u64().unwrap();
    let records = counters["heartbeat_records_read"].as_u64().unwrap();
    eprintln!(
        "{associations} associations, {DURATION_S} s sent in {:.1} s: agent peak RSS {rss_mib:.0} MiB, {cpu_s:.1} s CPU ({:.0} % of a CPU once all were calm); {records} heartbeat records, {held} heartbeats held; peer.down said {down_said_after:?} after its time",
        sent_in.as_secs_f64(),
        calm_cpu * 100.0
    );
    assert_eq!(counters["ringbuf_lost"].as_u64(), Some(0), "{counters}");
    assert_eq!(
        counters["flow_insert_failed"].as_u64(),
        Some(0),
        "{counters}"
    );
    // Once calm, an association's beats stay in the kernel: the first three rounds and
    // their answers go up, the other nine mostly not.
    assert!(held > records, "{counters}");

    // Every association came up, once.
    assert_eq!(up.lock().unwrap().len() as u64, associations);
    assert_eq!(*ups.lock().unwrap(), associations);
    // The two faults, by their rules, and nothing else.
    let alerts: Vec<&Value> = agent
        .heartbeat_events()
        .into_iter()
        .filter(|e| e["@timestamp"].as_str().unwrap() <= ended.as_str())
        .collect();
    let got: BTreeSet<String> = alerts.iter().map(|e| action_on_association(e)).collect();
    assert_eq!(got, required, "{alerts:#?}");
    assert_eq!(alerts.len(), 3, "{alerts:#?}");
    // peer.down when the 4th beat is missed and half an interval more has passed (the
    // rule; the interval as learned from the wire, ~1 s: hbgen's pacing at 200,000 frames
    // a second bunches a little), at its time although the kernel held the last beats
    // before the silence; said within 30 ms of it by design (the 20 ms the timers wait for
    // records on their way, one 10 ms tick), 29-39 ms measured with the write and the
    // pipe: 100 ms here, QEMU's TCG is slower.
    let down = alerts
        .iter()
        .find(|e| e["event"]["action"] == "peer.down")
        .unwrap();
    let silence = down["heartbeat"]["silence_ms"].as_u64().unwrap();
    let interval = down["heartbeat"]["expected_interval_ms"].as_u64().unwrap();
    assert!((850..=1150).contains(&interval), "{down}");
    assert!(silence.abs_diff(interval * 9 / 2) <= 5, "{down}");
    let bound = Duration::from_millis(if in_vm() { 300 } else { 100 });
    assert!(
        down_said_after <= bound,
        "peer.down said {down_said_after:?} after its time: {down}"
    );

    // Live equals offline: `analyze` of the same crowd written to a capture says the same.
    let dir = std::env::temp_dir().join(format!("hbwatch-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("crowd.pcap");
    hbgen::output::write_file(&pcap, Format::Pcap { nanos: false }, crowd.frames()).unwrap();
    let offline = hbwatch_tests::analyze_events(&pcap, &[]);
    std::fs::remove_dir_all(&dir).ok();
    let offline_ups = offline
        .iter()
        .filter(|e| e["event"]["action"] == "peer.up")
        .count() as u64;
    let offline_alerts: Vec<String> = offline
        .iter()
        .filter(|e| e["event"]["action"] != "peer.up")
        .map(action_on_association)
        .collect();
    let live_alerts: Vec<String> = alerts.iter().map(|e| action_on_association(e)).collect();
    assert_eq!(offline_ups, associations);
    assert_eq!(offline_alerts, live_alerts);
}

/// Runs so many worst-case frames late, hbgen's pace is not the protocol's: the learned
/// interval and the regularity that keeps beats in the kernel allow 10 % of it (100 ms).
const MAX_BEHIND_MS: u64 = 75;
const ATTEMPTS: u32 = 3;

/// What one crowd run leaves.
struct CrowdRun {
    /// How far hbgen fell behind its timestamps at worst (ms).
    behind_ms: u64,
    /// Stopped.
    agent: Agent,
    /// peer.up lines: the distinct associations, and all of them.
    up: Arc<Mutex<HashSet<String>>>,
    ups: Arc<Mutex<u64>>,
    /// How long the sending took.
    sent_in: Duration,
    /// How long after its time peer.down was said.
    down_said_after: Duration,
    /// The agent's share of a CPU once every association was calm.
    calm_cpu: f64,
    /// When the traffic ended (RFC 3339).
    ended: String,
    /// The agent's peak RSS (MiB) and CPU time (s).
    rss_mib: f64,
    cpu_s: f64,
}

/// One crowd played onto `net` against a fresh agent.
fn crowd_run(net: &VethNs, associations: u64) -> CrowdRun {
    let mut agent = Agent::start(&["--iface", &net.host, "--no-summary-events"]);
    // A hundred thousand peer.up lines: count them, keep the rest.
    let up: Arc<Mutex<HashSet<String>>> = Arc::default();
    let ups = Arc::new(Mutex::new(0u64));
    {
        let (up, ups) = (up.clone(), ups.clone());
        agent.keep_only(move |_, e| {
            if e["event"]["action"] != "peer.up" {
                return true;
            }
            *ups.lock().unwrap() += 1;
            up.lock().unwrap().insert(action_on_association(e));
            false
        });
    }
    let started = std::time::Instant::now();
    let n = associations.to_string();
    // While hbgen plays, the silenced association's peer.down arrives: how long after the
    // moment its rule names (the event's time) the agent said it.
    let (behind, sent_in, down_said_after, calm_cpu) = std::thread::scope(|s| {
        let play = s.spawn(|| {
            let behind = net.play_hbgen(&[
                "--scenario",
                "crowd",
                "--associations",
                &n,
                "--duration",
                &DURATION_S.to_string(),
                "--seed",
                &SEED.to_string(),
            ]);
            (behind, started.elapsed())
        });
        let down = agent.wait_for("peer.down", Duration::from_secs(DURATION_S as u64 + 30));
        let said = unix_ns_now();
        let due = unix_ns_of(down["@timestamp"].as_str().unwrap());
        // From here to the end of the traffic every association is calm: the agent's
        // steady-state cost, reported (not asserted: a timing figure, machines differ).
        let calm_from = (std::time::Instant::now(), rss_and_cpu(agent.pid()).1);
        let (behind, sent_in) = play.join().unwrap();
        let calm_cpu = (rss_and_cpu(agent.pid()).1 - calm_from.1)
            / calm_from.0.elapsed().as_secs_f64().max(1e-3);
        (
            behind,
            sent_in,
            Duration::from_nanos(said.saturating_sub(due)),
            calm_cpu,
        )
    });
    // The traffic ends here: every association falls silent, truly, 2.5 s before its
    // first missed. Stop well before that.
    let ended = hbwatch::event::rfc3339_micros(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i128,
    );
    std::thread::sleep(Duration::from_millis(200));
    let (rss_mib, cpu_s) = rss_and_cpu(agent.pid());
    assert_eq!(agent.stop(), 0);

    CrowdRun {
        behind_ms: behind,
        agent,
        up,
        ups,
        sent_in,
        down_said_after,
        calm_cpu,
        ended,
        rss_mib,
        cpu_s,
    }
}
