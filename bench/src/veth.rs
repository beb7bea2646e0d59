//! (d) CPU per packet on a veth pair. Frames are sent from a network namespace into a
//! veth whose host end has nothing attached, an empty program (the cost of the hook
//! itself: on veth, native XDP moves receive to NAPI and copies each skb into an XDP
//! buffer; generic XDP expands each skb's headroom; TC ingress runs on the skb as it is),
//! the agent (`hbwatch run`), each in XDP driver, XDP skb (generic) and TC mode, or
//! tcpdump capturing the heartbeat ports. The receive side runs in the sender's softirq
//! context,
//! so the CPU of a run is the sending thread's + ksoftirqd's + the observer process's,
//! counted over the sending only (the agent's start-up and verification are not in it).
//! Each observer's figure is its CPU beyond the run with nothing attached, same trial.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use aya::programs::{tc, SchedClassifier, TcAttachType, Xdp, XdpMode};
use hbgen::output::PacketSocket;
use hbwatch_common::proto::Role;
use hbwatch_tests::{enter_netns, VethNs};
use serde_json::{json, Value};

use crate::frames::{self, nth_v4};
use crate::stats::median;

/// tcpdump's filter: the heartbeat ports of the traffic sent.
const TCPDUMP_FILTER: &str = "udp port 15000 or tcp port 5000 or tcp port 2000";
/// One frame in this many is a heartbeat (~2.5 %, as in the offline capture).
const HEARTBEAT_EVERY: u64 = 40;

/// Where a program watches the host end's ingress: the agent's `--mode`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Hook {
    XdpDriver,
    XdpSkb,
    Tc,
}

impl Hook {
    /// `hbwatch run --mode` and the summary's key.
    fn name(self) -> &'static str {
        match self {
            Hook::XdpDriver => "driver",
            Hook::XdpSkb => "skb",
            Hook::Tc => "tc",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Nothing,
    Empty(Hook),
    Agent(Hook),
    Tcpdump,
}

const HOOKS: [Hook; 3] = [Hook::XdpDriver, Hook::XdpSkb, Hook::Tc];

/// The observers of a trial, in `bench`'s index order.
const MODES: [Mode; 8] = [
    Mode::Nothing,
    Mode::Empty(Hook::XdpDriver),
    Mode::Agent(Hook::XdpDriver),
    Mode::Empty(Hook::XdpSkb),
    Mode::Agent(Hook::XdpSkb),
    Mode::Empty(Hook::Tc),
    Mode::Agent(Hook::Tc),
    Mode::Tcpdump,
];
/// Indices into [`MODES`]: nothing attached, tcpdump, and per hook (as in [`HOOKS`]) the
/// empty program's and the agent's.
const NOTHING: usize = 0;
const TCPDUMP: usize = 7;
const PAIRS: [(usize, usize); 3] = [(1, 2), (3, 4), (5, 6)];

/// An observer for one run.
enum Observer {
    Process(Child),
    /// The baseline program attached from here (detached on drop).
    Program(Box<crate::xdp::Loaded>),
}

/// The frames of one run: ordinary traffic from a pool, RUDP heartbeats of 50 device
/// pairs in order (request, echo) in between.
struct Traffic {
    pool: Vec<Vec<u8>>,
    beats: Vec<Vec<u8>>,
}

impl Traffic {
    fn new(packets: u64) -> Traffic {
        let mut rng = crate::offline::Rng(0x5eed_0003);
        let pool = (0..8192)
            .map(|_| crate::offline::ordinary(&mut rng))
            .collect();
        let n = packets / HEARTBEAT_EVERY + 1;
        let beats = (0..n)
            .map(|i| {
                let pair = (i / 2) % 50;
                let seq = (i / 100) as u32 + 1;
                let (a, b) = (nth_v4(30, 2 * pair as u32), nth_v4(30, 2 * pair as u32 + 1));
                if i % 2 == 0 {
                    frames::rudp(a, b, seq, Role::Request, &[])
                } else {
                    frames::rudp(b, a, seq, Role::Response, &[])
                }
            })
            .collect();
        Traffic { pool, beats }
    }

    fn frame(&self, i: u64) -> &[u8] {
        if i.is_multiple_of(HEARTBEAT_EVERY) {
            &self.beats[(i / HEARTBEAT_EVERY) as usize]
        } else {
            &self.pool[(i % self.pool.len() as u64) as usize]
        }
    }
}

fn ticks_per_s() -> f64 {
    // SAFETY: plain sysconf.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// utime + stime of a process (all threads), seconds.
fn proc_cpu(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat
        .rsplit_once(')')
        .ok_or_else(|| anyhow!("odd /proc/{pid}/stat"))?
        .1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    Ok(ticks / ticks_per_s())
}

/// CPU of every ksoftirqd thread, seconds.
fn softirqd_cpu() -> f64 {
    let mut total = 0.0;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.starts_with("ksoftirqd/") {
            total += proc_cpu(pid).unwrap_or(0.0);
        }
    }
    total
}

/// Sends `packets` frames out of the namespace's end; the sending thread's CPU seconds.
fn send(net: &VethNs, traffic: &Traffic, packets: u64) -> Result<f64> {
    let (ns, peer) = (net.ns.clone(), net.peer.clone());
    std::thread::scope(|s| {
        s.spawn(move || -> Result<f64> {
            enter_netns(&ns);
            // A full queue is waited out by PacketSocket::send, never dropped silently.
            let mut sock = PacketSocket::open(&peer)?;
            let cpu0 = crate::stats::thread_cpu();
            for i in 0..packets {
                sock.send(traffic.frame(i))?;
            }
            Ok(crate::stats::thread_cpu() - cpu0)
        })
        .join()
        .map_err(|_| anyhow!("sender thread panicked"))?
    })
}

/// Starts the observer and waits until it watches the interface.
fn start(mode: Mode, hbwatch: &Path, iface: &str) -> Result<Option<Observer>> {
    let mut child = match mode {
        Mode::Nothing => return Ok(None),
        Mode::Empty(hook) => {
            let mut l = crate::xdp::Loaded::new(None)?;
            let ebpf = l.dp.ebpf_mut();
            match hook {
                Hook::Tc => {
                    let prog: &mut SchedClassifier = ebpf
                        .program_mut(crate::xdp::TC_BASELINE_PROGRAM)
                        .ok_or_else(|| anyhow!("TC baseline program missing"))?
                        .try_into()?;
                    prog.load()?;
                    let _ = tc::qdisc_add_clsact(iface);
                    prog.attach(iface, TcAttachType::Ingress)
                        .context("attaching the empty TC program")?;
                }
                _ => {
                    let prog: &mut Xdp = ebpf
                        .program_mut(crate::xdp::BASELINE_PROGRAM)
                        .ok_or_else(|| anyhow!("baseline program missing"))?
                        .try_into()?;
                    let xdp = if hook == Hook::XdpSkb {
                        XdpMode::Skb
                    } else {
                        XdpMode::Driver
                    };
                    // The same mode as the agent's run it is compared with (checked by
                    // the caller).
                    prog.attach(iface, xdp)
                        .context("attaching the empty XDP program")?;
                }
            }
            return Ok(Some(Observer::Program(Box::new(l))));
        }
        Mode::Agent(hook) => Command::new(hbwatch)
            .args(["run", "--iface", iface, "--hostname", "bench", "--mode"])
            .arg(hook.name())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting hbwatch run")?,
        Mode::Tcpdump => Command::new("tcpdump")
            .args(["-i", iface, "-n", "-w", "/dev/null", TCPDUMP_FILTER])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting tcpdump")?,
    };
    // hbwatch: the agent.started line; tcpdump: "listening on ...". The rest of the
    // stream is read (and dropped) by a thread, so the observer never blocks on it.
    let stream: Box<dyn std::io::Read + Send> = match mode {
        Mode::Agent(_) => Box::new(child.stdout.take().expect("piped")),
        _ => Box::new(child.stderr.take().expect("piped")),
    };
    let mut lines = BufReader::new(stream);
    let want = if matches!(mode, Mode::Agent(_)) {
        "agent.started"
    } else {
        "listening on"
    };
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line)? == 0 {
            let _ = child.kill();
            bail!("{mode:?} exited before it was ready");
        }
        if line.contains(want) {
            break;
        }
    }
    std::thread::spawn(move || std::io::copy(&mut lines, &mut std::io::sink()));
    Ok(Some(Observer::Process(child)))
}

fn stop(mut child: Child) -> Result<()> {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait()?;
    ensure!(
        status.success() || status.code().is_none(),
        "observer exited with {status}"
    );
    Ok(())
}

/// One run: CPU seconds of sending `packets` with `mode` watching, and the XDP
/// attachment `ip link` showed meanwhile (none for TC).
fn run(
    mode: Mode,
    hbwatch: &Path,
    net: &VethNs,
    traffic: &Traffic,
    packets: u64,
) -> Result<(f64, Option<String>)> {
    let observer = start(mode, hbwatch, &net.host)?;
    let attached = net.host_xdp();
    let pid = match &observer {
        Some(Observer::Process(c)) => Some(c.id()),
        _ => None,
    };
    let obs0 = pid.map(proc_cpu).transpose()?.unwrap_or(0.0);
    let soft0 = softirqd_cpu();
    let sent = send(net, traffic, packets)?;
    // Let the observer catch up with what is queued for it.
    std::thread::sleep(Duration::from_millis(300));
    let soft = softirqd_cpu() - soft0;
    let obs = pid.map(proc_cpu).transpose()?.unwrap_or(0.0) - obs0;
    match observer {
        Some(Observer::Process(c)) => stop(c)?,
        Some(Observer::Program(l)) => drop(l),
        None => {}
    }
    Ok((sent + soft + obs, attached))
}

pub fn bench(hbwatch: &Path, trials: usize, packets: u64) -> Result<Value> {
    ensure!(crate::which("tcpdump"), "tcpdump not found");
    let net = VethNs::create();
    let traffic = Traffic::new(packets);
    // Warm-up: caches, the namespace's first sends.
    run(MODES[NOTHING], hbwatch, &net, &traffic, packets / 10)?;
    let per_m = |cpu: f64| cpu / packets as f64 * 1e6;
    let mut per: [Vec<f64>; MODES.len()] = Default::default();
    let mut attach_modes: [Option<String>; MODES.len()] = Default::default();
    // Per hook: the ratios of each trial.
    let (mut ratio, mut ratio_prog): ([Vec<f64>; 3], [Vec<f64>; 3]) = Default::default();
    for trial in 0..trials {
        let mut cpu = [0.0f64; MODES.len()];
        // Rotate the order so drift does not favour one.
        for k in 0..MODES.len() {
            let i = (k + trial) % MODES.len();
            let (c, attached) = run(MODES[i], hbwatch, &net, &traffic, packets)?;
            cpu[i] = c;
            attach_modes[i] = attached;
        }
        for (v, c) in per.iter_mut().zip(cpu) {
            v.push(per_m(c));
        }
        let dump = cpu[TCPDUMP] - cpu[NOTHING];
        for (m, (empty, agent)) in PAIRS.into_iter().enumerate() {
            ratio[m].push((cpu[agent] - cpu[NOTHING]) / dump);
            ratio_prog[m].push((cpu[agent] - cpu[empty]) / dump);
        }
        eprintln!("bench: veth trial {}/{trials} done", trial + 1);
    }
    for (hook, (empty, agent)) in HOOKS.into_iter().zip(PAIRS) {
        ensure!(
            attach_modes[empty] == attach_modes[agent],
            "the agent got XDP {:?}, the baseline {:?}: not comparable",
            attach_modes[agent],
            attach_modes[empty]
        );
        ensure!(
            (hook == Hook::Tc) == attach_modes[agent].is_none(),
            "{hook:?}: XDP attachment {:?}",
            attach_modes[agent]
        );
    }
    // Each observer's CPU beyond nothing attached, per trial, then the median.
    let extra = |i: usize| {
        let v: Vec<f64> = per[i]
            .iter()
            .zip(&per[NOTHING])
            .map(|(a, b)| a - b)
            .collect();
        median(&v)
    };
    let by_hook = |m: usize| {
        let (empty, agent) = PAIRS[m];
        json!({
            "attach": attach_modes[agent].clone().unwrap_or_else(|| "tc ingress".into()),
            "empty_cpu_s_per_m": median(&per[empty]),
            "agent_cpu_s_per_m": median(&per[agent]),
            "empty_extra_cpu_s_per_m": extra(empty),
            "agent_extra_cpu_s_per_m": extra(agent),
            "ratio": median(&ratio[m]),
            "ratios": ratio[m],
            "ratio_program_only": median(&ratio_prog[m]),
        })
    };
    let mut out = json!({
        "trials": trials,
        "packets": packets,
        "heartbeat_share": 1.0 / HEARTBEAT_EVERY as f64,
        "tcpdump_filter": TCPDUMP_FILTER,
        "nothing_cpu_s_per_m": median(&per[NOTHING]),
        "tcpdump_cpu_s_per_m": median(&per[TCPDUMP]),
        "tcpdump_extra_cpu_s_per_m": extra(TCPDUMP),
    });
    for (m, hook) in HOOKS.into_iter().enumerate() {
        out[hook.name()] = by_hook(m);
    }
    Ok(out)
}
