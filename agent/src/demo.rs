//! `hbwatch demo`: the real thing in one command, without call servers. A network
//! namespace and a veth pair, the agent with real XDP on the host end, the generator's
//! incident story sent from the namespace end in real time, events shown as they
//! happen; then the same traffic, written to a pcap, analyzed offline, and the two
//! compared. Everything it creates is removed on exit or Ctrl-C.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::datapath::AttachMode;
use crate::event::{Action, Event};
use crate::live::LiveOptions;
use crate::offline::{AnalyzeOptions, Replay};
use crate::ports::{default_specs, port_table};
use crate::sink::stdout::Format;
use crate::sink::Sink;
use hbgen::output::{send_paced, write_file};
use hbgen::scenario::Scenario;
use hbgen::{generate, TimedFrame};
use hbwatch_pcap::Format as PcapFormat;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub scenario: String,
    pub pcap: PathBuf,
    pub format: Format,
    /// The live status board on the terminal instead of event lines.
    pub board: bool,
}

/// The namespace and veth pair; removed on drop.
struct DemoNet {
    ns: String,
    host: String,
    peer: String,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl DemoNet {
    fn create() -> anyhow::Result<DemoNet> {
        let id = std::process::id() % 100_000;
        let net = DemoNet {
            ns: format!("hbwatch-demo-{id}"),
            host: format!("hbdemo{id}h"),
            peer: format!("hbdemo{id}p"),
        };
        ip(&["netns", "add", &net.ns])?;
        ip(&[
            "link", "add", &net.host, "type", "veth", "peer", "name", &net.peer, "netns", &net.ns,
        ])?;
        ip(&["link", "set", &net.host, "up"])?;
        ip(&["-n", &net.ns, "link", "set", &net.peer, "up"])?;
        Ok(net)
    }
}

impl Drop for DemoNet {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host]);
        let _ = ip(&["netns", "del", &self.ns]);
    }
}

/// Moves the calling thread (only it) into network namespace `ns`.
pub fn enter_netns(ns: &str) -> anyhow::Result<()> {
    let path = format!("/var/run/netns/{ns}");
    let f = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    // SAFETY: setns on an fd we own; it affects the calling thread only.
    let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
    if rc != 0 {
        bail!("setns {ns}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Shows events as they come and keeps them for the comparison.
struct Tee<'a> {
    show: &'a mut dyn Sink,
    kept: Vec<Event>,
}

impl Sink for Tee<'_> {
    fn send(&mut self, ev: &Event) -> anyhow::Result<()> {
        self.kept.push(ev.clone());
        self.show.send(ev)
    }
    fn flush(&mut self) -> anyhow::Result<()> {
        self.show.flush()
    }
}

/// What must agree between live and offline: action, association, sequence numbers,
/// loss counts and diagnosis (not times: live stamps kernel time, offline pcap time).
pub fn agreement_key(e: &serde_json::Value) -> String {
    let h = &e["heartbeat"];
    format!(
        "{} {}:{} -> {}:{} seq={} lost={} missed={} diag={} status={}",
        e["event"]["action"].as_str().unwrap_or("?"),
        e["source"]["ip"].as_str().unwrap_or("?"),
        e["source"]["port"],
        e["destination"]["ip"].as_str().unwrap_or("?"),
        e["destination"]["port"],
        h["seq"],
        h["lost"],
        h["missed"],
        h["diagnosis"],
        e["sip"]["code"]
    )
}

/// Counts per key of the heartbeat events (lifecycle and summaries left out) up to
/// `until` (RFC 3339: they sort as text).
pub fn agreement_counts(events: &[Event], until: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for ev in events {
        let a = ev.event.action;
        if a.is_agent() || a == Action::HeartbeatSummary || ev.timestamp.as_str() > until {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&ev.to_line()).unwrap_or_default();
        *m.entry(agreement_key(&v)).or_default() += 1;
    }
    m
}

/// Runs the demo; `Ok(true)` when live and offline agree.
pub fn run(opts: &DemoOptions, out: &mut dyn Sink) -> anyhow::Result<bool> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("hbwatch demo needs root: it creates a network namespace and a veth pair and attaches XDP (try `sudo hbwatch demo`)");
    }
    let mut sc = Scenario::load(&opts.scenario)?;
    sc.apply(&Default::default())?;
    let mut cap = generate(&sc);
    let frames = cap.take_frames();
    let duration_s = frames
        .last()
        .map_or(0, |f| (f.ts_ns - frames[0].ts_ns) / 1_000_000_000);
    let net = DemoNet::create()?;
    eprintln!(
        "hbwatch demo: {} ({} frames, {duration_s} s) from namespace {} into {} with XDP; Ctrl-C stops",
        sc.name,
        frames.len(),
        net.ns,
        net.host
    );

    let stop = Arc::new(AtomicBool::new(false));
    let sent: Arc<Mutex<Vec<TimedFrame>>> = Arc::default();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let sender = {
        let (ns, peer) = (net.ns.clone(), net.peer.clone());
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let result = (|| {
                enter_netns(&ns)?;
                // Start once the agent is attached.
                let _ = ready_rx.recv_timeout(Duration::from_secs(30));
                let keep_going = || !stop.load(Ordering::Relaxed);
                send_paced(&peer, frames, 1.0, &keep_going, &mut |f, wall| {
                    let mut s = sent.lock().expect("sent frames");
                    s.push(TimedFrame {
                        ts_ns: wall,
                        data: f.data.clone(),
                        label: f.label,
                    });
                })
            })();
            let _ = done_tx.send(result);
        })
    };

    let specs = default_specs();
    let mut live = LiveOptions {
        interfaces: vec![net.host.clone()],
        mode: AttachMode::Auto,
        egress: false,
        max_associations: crate::datapath::default_max_associations(),
        ports: port_table(&specs),
        params: crate::tuning::params(&[]),
        hostname: "hbwatch-demo".into(),
        poll: Duration::from_secs(1),
        config_digest: crate::config_digest("demo"),
        summary_period: None,
        sip: Default::default(),
        metrics_listen: None,
        metrics_web: Default::default(),
        reload: None,
        drop_privileges: false,
        status: None,
        privacy: Default::default(),
        record: None,
    };
    let board = opts.board.then(|| {
        let mut publisher = crate::top::status::Publisher::new(crate::top::status::shared());
        publisher.draw_here();
        let shared = publisher.shared.clone();
        live.status = Some(publisher);
        crate::top::app::attach(shared, crate::top::app::interrupt_self)
    });
    let mut tee = Tee {
        show: out,
        kept: Vec::new(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stop_flag = stop.clone();
    let finished = async move {
        let _ = ready_tx.send(());
        let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .expect("SIGINT handler");
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = done_rx => {
                // The last heartbeats' records and timers settle.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            _ = sigint.recv() => stop_flag.store(true, Ordering::Relaxed),
            _ = sigterm.recv() => stop_flag.store(true, Ordering::Relaxed),
        }
    };
    let live_result = rt.block_on(crate::live::run_until(live, &mut tee, finished));
    stop.store(true, Ordering::Relaxed);
    if let Some(b) = board {
        b.finish()?;
    }
    let _ = sender.join();
    live_result?;
    let interrupted = stop_interrupted(&sent, &cap.truth);
    drop(net);

    let sent = std::mem::take(&mut *sent.lock().expect("sent frames"));
    if sent.is_empty() {
        bail!("no frame was sent");
    }
    let last_ns = sent.last().map_or(0, |f| f.ts_ns);
    write_file(&opts.pcap, PcapFormat::Pcap { nanos: true }, sent.clone())?;
    eprintln!(
        "hbwatch demo: {} frames written to {}; analyzing it offline",
        sent.len(),
        opts.pcap.display()
    );
    let aopts = AnalyzeOptions {
        files: vec![opts.pcap.clone()],
        params: crate::tuning::params(&[]),
        ..AnalyzeOptions::new(port_table(&specs), "hbwatch-demo")
    };
    let mut replay = Replay::new(&aopts, "demo".into());
    let mut offline = Vec::new();
    for f in &sent {
        replay.frame(&f.data, f.ts_ns, &mut offline);
    }
    replay.finish(&mut offline);
    // Up to the last frame + 20 ms: the kernel's timestamp of that frame can be a little
    // later than the sender's clock read (NAPI on veth, clock conversion), and an event it
    // raises must not fall off the live side. Heartbeat silences fire >= 250 ms after the
    // last beat (MDS); only a SIP expiry due inside those 20 ms would show live alone.
    let until = crate::event::rfc3339_micros(last_ns as i128 + 20_000_000);
    let (l, o) = (
        agreement_counts(&tee.kept, &until),
        agreement_counts(&offline, &until),
    );
    let live_n: usize = l.values().sum();
    if l == o {
        eprintln!(
            "hbwatch demo: live and offline agree: the same {live_n} heartbeat events from the kernel and from the capture{}",
            if interrupted { " (story interrupted)" } else { "" }
        );
        return Ok(true);
    }
    eprintln!("hbwatch demo: live and offline DISAGREE:");
    for k in l
        .keys()
        .chain(o.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let (a, b) = (
            l.get(k).copied().unwrap_or(0),
            o.get(k).copied().unwrap_or(0),
        );
        if a != b {
            eprintln!("  live {a} offline {b}: {k}");
        }
    }
    Ok(false)
}

/// Whether the story was cut short (fewer frames sent than generated).
fn stop_interrupted(sent: &Mutex<Vec<TimedFrame>>, truth: &hbgen::truth::Truth) -> bool {
    let n = sent.lock().map(|s| s.len() as u64).unwrap_or(0);
    n < truth.generated.frames
}
