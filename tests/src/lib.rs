//! Fixtures for root-only integration tests: network namespaces with veth pairs,
//! frame injection with AF_PACKET, and the real `hbwatch` binary as a child process.

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use hbgen::output::PacketSocket;
use serde_json::Value;

/// True when the tests may touch the kernel. Outside CI a non-root run skips them;
/// in CI (CI=true) a non-root run is a failure, so they can never pass silently.
pub fn require_root(test: &str) -> bool {
    // SAFETY: trivial libc call.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: needs root (CI must run the kernel tests as root)");
    }
    eprintln!("SKIP {test}: needs root (CAP_BPF, CAP_NET_ADMIN)");
    false
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A veth pair: `host` stays in this namespace (the agent attaches there), `peer`
/// sits in a fresh network namespace from which frames are injected.
pub struct VethNs {
    pub ns: String,
    pub host: String,
    pub peer: String,
}

impl VethNs {
    /// Runs `hbwatch hbgen ARGS --iface PEER` in the namespace: frames arrive on the
    /// host end's ingress. Panics if hbgen fails. Returns how far (ms) hbgen fell behind
    /// the frames' timestamps at worst (what it reports).
    pub fn play_hbgen(&self, args: &[&str]) -> u64 {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(hbwatch_bin())
            .arg("hbgen")
            .args(args)
            .args(["--iface", &self.peer])
            .output()
            .expect("run hbgen");
        assert!(
            out.status.success(),
            "hbgen: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let said = String::from_utf8_lossy(&out.stderr);
        said.split("at most ")
            .nth(1)
            .and_then(|rest| rest.split(" ms behind").next())
            .and_then(|ms| ms.parse().ok())
            .unwrap_or_else(|| panic!("hbgen did not say how far behind it was: {said}"))
    }

    pub fn create() -> VethNs {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let id = format!("{}{}", std::process::id() % 100_000, n);
        let v = VethNs {
            ns: format!("hbw-{id}"),
            host: format!("hbh{id}"),
            peer: format!("hbp{id}"),
        };
        ip(&["netns", "add", &v.ns]);
        v.add_pair();
        v
    }

    fn add_pair(&self) {
        ip(&[
            "link", "add", &self.host, "type", "veth", "peer", "name", &self.peer, "netns",
            &self.ns,
        ]);
        ip(&["link", "set", &self.host, "up"]);
        ip(&["-n", &self.ns, "link", "set", &self.peer, "up"]);
    }

    /// Deletes the veth pair (the interface disappears under the agent).
    pub fn remove_pair(&self) {
        ip(&["link", "del", &self.host]);
    }

    /// Creates the pair again with the same names (a new ifindex).
    pub fn restore_pair(&self) {
        self.add_pair();
    }

    /// Sends each frame out of `peer` (so it arrives on `host`'s ingress), with a pause between.
    pub fn inject(&self, frames: &[Vec<u8>], gap: Duration) {
        let ns = self.ns.clone();
        let peer = self.peer.clone();
        let frames = frames.to_vec();
        std::thread::spawn(move || inject_from_ns(&ns, &peer, &frames, gap))
            .join()
            .expect("injector thread");
    }

    /// Sends each frame out of `peer` at its offset from now: real protocol timing.
    pub fn inject_at(&self, frames: &[(Duration, Vec<u8>)]) {
        let ns = self.ns.clone();
        let peer = self.peer.clone();
        let frames = frames.to_vec();
        std::thread::spawn(move || {
            let start = Instant::now();
            let paced = frames.into_iter().map(|(at, f)| {
                std::thread::sleep((start + at).saturating_duration_since(Instant::now()));
                f
            });
            send_from_ns(&ns, &peer, paced)
        })
        .join()
        .expect("injector thread");
    }

    /// The XDP attachment `ip link` reports for `host` ("xdp", "xdpgeneric"), if any.
    pub fn host_xdp(&self) -> Option<String> {
        let out = Command::new("ip")
            .args(["-d", "link", "show", &self.host])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.split_whitespace()
            .find(|w| w.starts_with("xdp") && *w != "xdp_features")
            .map(str::to_string)
    }
}

impl Drop for VethNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host])
            .status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// Moves the calling thread into network namespace `ns` (only this thread).
pub fn enter_netns(ns: &str) {
    hbwatch::demo::enter_netns(ns).expect("enter the test namespace");
}

fn inject_from_ns(ns: &str, ifname: &str, frames: &[Vec<u8>], gap: Duration) {
    let paced = frames.iter().map(|f| {
        std::thread::sleep(gap);
        f.clone()
    });
    send_from_ns(ns, ifname, paced)
}

/// Sends frames out of `ifname` in namespace `ns`, each when the iterator yields it.
fn send_from_ns(ns: &str, ifname: &str, frames: impl Iterator<Item = Vec<u8>>) {
    enter_netns(ns);
    let mut sock = PacketSocket::open(ifname).expect("AF_PACKET socket");
    for f in frames {
        sock.send(&f).expect("sendto");
    }
}

/// Path of the hbwatch binary under test. `cargo xtask test` builds it and sets
/// HBWATCH_BIN; otherwise it is built here once, so a plain `cargo test` never runs a
/// stale binary (cargo builds a dependency's library for tests, not its binaries).
/// `--tune` arguments for an agent watching `hbwatch hbgen --speed SPEED`: the timed
/// protocols' default intervals divided by the speed, or MDS and IPMG beats would come
/// too fast to be plausible heartbeats (`ProtoParams::confirm_beats`).
pub fn tunes_for_speed(speed: u32) -> Vec<String> {
    use hbwatch_common::proto::Protocol;
    [
        Protocol::Mds,
        Protocol::Cs1000Ipmg,
        Protocol::Sccp,
        Protocol::Ged125,
        Protocol::Cs1000Rudp,
    ]
    .into_iter()
    .flat_map(|p| {
        let ms = p.default_params().interval_ms / speed;
        [
            "--tune".to_string(),
            format!("{}.interval_ms={ms}", p.name()),
        ]
    })
    .collect()
}

pub fn hbwatch_bin() -> String {
    static BUILT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            if let Ok(bin) = std::env::var("HBWATCH_BIN") {
                return bin;
            }
            let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
            let status = Command::new(cargo)
                .args([
                    "build",
                    "--quiet",
                    "--package",
                    "hbwatch",
                    "--bin",
                    "hbwatch",
                ])
                .current_dir(root)
                .status()
                .expect("run cargo build");
            assert!(status.success(), "building hbwatch failed");
            format!("{root}/target/debug/hbwatch")
        })
        .clone()
}

/// The real agent as a child process; stdout lines parsed as JSON.
pub struct Agent {
    child: Child,
    lines: Receiver<String>,
    pub events: Vec<Value>,
    /// Every stdout line as it came, for checks on the text itself (escaping).
    pub raw: Vec<String>,
    /// How many lines arrived, kept or not.
    pub received: usize,
    /// Which lines to keep (all when `None`); see [`Agent::keep_only`].
    keep: Option<Box<LineFilter>>,
}

/// Decides from a stdout line and its parsed JSON whether a test keeps it.
type LineFilter = dyn Fn(&str, &Value) -> bool;

impl Agent {
    /// Reaps an agent that was killed; returns its exit code (-1 for a signal).
    pub fn stop_killed(&mut self) -> i32 {
        let status = self.child.wait().expect("wait agent");
        status.code().unwrap_or(-1)
    }

    /// Process id of the agent (for signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts `hbwatch run ARGS` and waits for `agent.started`.
    pub fn start(args: &[&str]) -> Agent {
        Agent::start_as(&[], args)
    }

    /// Starts `WRAPPER... hbwatch run ARGS` (e.g. setpriv with fewer privileges).
    pub fn start_as(wrapper: &[&str], args: &[&str]) -> Agent {
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(hbwatch_bin());
                c
            }
            None => Command::new(hbwatch_bin()),
        };
        let mut child = cmd
            .arg("run")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "start {}: {e} (build it first: cargo xtask build)",
                    hbwatch_bin()
                )
            });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut agent = Agent {
            child,
            lines: rx,
            events: Vec::new(),
            raw: Vec::new(),
            received: 0,
            keep: None,
        };
        agent.wait_for("agent.started", Duration::from_secs(30));
        agent
    }

    /// From now on keeps only the lines `keep` accepts (it may also assert on each):
    /// a storm's hundred thousand parsed events would not fit a 1 GiB test VM.
    pub fn keep_only(&mut self, keep: impl Fn(&str, &Value) -> bool + 'static) {
        self.keep = Some(Box::new(keep));
    }

    /// Parses one line and keeps it (and its text) unless the filter says otherwise.
    fn take(&mut self, line: String) -> Value {
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("invalid JSON {line:?}: {e}"));
        self.received += 1;
        if self.keep.as_ref().is_none_or(|keep| keep(&line, &v)) {
            self.events.push(v.clone());
            self.raw.push(line);
        }
        v
    }

    /// Collects lines until an event with `action` arrives; panics on timeout.
    pub fn wait_for(&mut self, action: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!("no {action} within {timeout:?}; got {:#?}", self.events)
            });
            let v = self.take(line);
            if v["event"]["action"] == action {
                return v;
            }
        }
    }

    /// Collects lines until an event satisfies `pred`; panics on timeout, showing only
    /// the last events (a storm test may have collected a hundred thousand).
    pub fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        self.poll_until(timeout, pred).unwrap_or_else(|| {
            let last = &self.events[self.events.len().saturating_sub(5)..];
            panic!(
                "no {what} within {timeout:?} ({} events; the last: {last:#?})",
                self.events.len()
            )
        })
    }

    /// Collects lines until an event satisfies `pred`; `None` on timeout.
    pub fn poll_until(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            let v = self.take(line);
            if pred(&v) {
                return Some(v);
            }
        }
    }

    /// SIGINT, then every remaining line until exit; returns the exit status code.
    pub fn stop(&mut self) -> i32 {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.wait_for("agent.stopped", Duration::from_secs(20));
        let status = self.child.wait().expect("wait agent");
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.take(line);
        }
        status.code().unwrap_or(-1)
    }

    /// Heartbeat events (everything but agent lifecycle), in order.
    pub fn heartbeat_events(&self) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| {
                !e["event"]["action"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("agent.")
            })
            .collect()
    }

    /// What the datapath itself found: heartbeat events without those the userspace
    /// timers derive from arrival times (late, missed, down, recovery, summaries).
    /// Datapath tests send frames in bursts, not at protocol intervals; the timers
    /// have their own tests with real timing.
    pub fn datapath_events(&self) -> Vec<&Value> {
        self.heartbeat_events()
            .into_iter()
            .filter(|e| {
                let action = e["event"]["action"].as_str().unwrap_or("");
                let recovery = action == "peer.up" && !e["heartbeat"]["downtime_ms"].is_null();
                !recovery
                    && !matches!(
                        action,
                        "heartbeat.late" | "heartbeat.missed" | "peer.down" | "heartbeat.summary"
                    )
            })
            .collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `(action, source "ip:port", destination "ip:port", seq)` of an event, for exact comparisons.
pub fn summary(e: &Value) -> (String, String, String, i64) {
    let ep = |v: &Value| format!("{}:{}", v["ip"].as_str().unwrap_or("?"), v["port"]);
    (
        e["event"]["action"].as_str().unwrap_or("?").to_string(),
        ep(&e["source"]),
        ep(&e["destination"]),
        e["heartbeat"]["seq"].as_i64().unwrap_or(-1),
    )
}

pub fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// An RUDP heartbeat (UDP 15000 -> 15000) marked EF, as CS1000 sends it.
pub fn rudp_frame(
    vlans: &[u16],
    src: &str,
    dst: &str,
    seq: u32,
    role: hbwatch_common::proto::Role,
) -> Vec<u8> {
    let payload = hbwatch_common::proto::rudp::payload(seq, role);
    let mut f = hbgen::frame::FrameSpec::udp(addr(src), 15000, addr(dst), 15000, &payload);
    f.vlans = vlans.to_vec();
    f.dscp = 46;
    f.build()
}

/// Whether the agent under test is an optimized build (`hbwatch --version` says which):
/// a debug one spends ~10x the CPU per record, and scale tests size themselves by it.
pub fn agent_is_release() -> bool {
    let out = Command::new(hbwatch_bin())
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let profile = text
        .lines()
        .find_map(|l| l.strip_prefix("profile:"))
        .unwrap_or_else(|| panic!("no profile in hbwatch --version: {text}"));
    profile.trim() == "release"
}

/// True inside `cargo xtask vm-test`'s guest, which has the agent, ip, tcpdump and
/// setpriv but not the host's other tools (promtool, tshark).
pub fn in_vm() -> bool {
    std::env::var_os("HBWATCH_VM").is_some()
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// `GET path` over plain HTTP/1.1; (status code, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    conn.read_to_string(&mut resp).expect("read response");
    let (head, body) = resp.split_once("\r\n\r\n").expect("HTTP head");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    (status, body.to_string())
}

/// An MDS heartbeat (a bare 4-byte sequence over UDP 41000 both ways: the tests add
/// `--port mds=41000`) from `src` to `dst`.
pub fn mds_frame(src: &str, dst: &str, seq: u32) -> Vec<u8> {
    hbgen::frame::FrameSpec::udp(addr(src), 41000, addr(dst), 41000, &seq.to_be_bytes()).build()
}

/// tcpdump recording an interface to a pcap file: the wire that `analyze` is compared on
/// (the differential tests).
pub struct Tcpdump {
    child: Child,
    rest: std::thread::JoinHandle<String>,
    said: String,
    pub pcap: std::path::PathBuf,
}

impl Tcpdump {
    /// Starts recording `iface` into `pcap` and returns once tcpdump listens (a fixed
    /// wait could be too short in a slow VM and lose the first frames).
    pub fn start(iface: &str, pcap: &std::path::Path) -> Tcpdump {
        Tcpdump::start_filtered(iface, pcap, None)
    }

    /// As [`Tcpdump::start`], recording only what the pcap-filter expression matches:
    /// the veths' own IPv6 chatter (router solicitations, MLD reports, seconds apart)
    /// can otherwise come after the last heartbeat and move the capture's end.
    pub fn start_filtered(iface: &str, pcap: &std::path::Path, filter: Option<&str>) -> Tcpdump {
        let mut child = Command::new("tcpdump")
            .args([
                "-i",
                iface,
                "-n",
                "-U",
                "--immediate-mode",
                "-Z",
                "root",
                "-w",
            ])
            .arg(pcap)
            .args(filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump (cargo xtask bootstrap installs it)");
        let mut lines = BufReader::new(child.stderr.take().expect("piped"));
        let mut said = String::new();
        while !said.contains("listening on") {
            let before = said.len();
            lines.read_line(&mut said).unwrap();
            assert!(
                said.len() > before,
                "tcpdump exited before listening: {said}"
            );
        }
        let rest = std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = std::io::Read::read_to_string(&mut lines, &mut rest);
            rest
        });
        Tcpdump {
            child,
            rest,
            said,
            pcap: pcap.to_path_buf(),
        }
    }

    /// SIGINT, wait, and the cut for comparisons: the last frame's capture time plus
    /// 50 ms (RFC 3339). The live clock and tcpdump's timestamps differ a little, so
    /// cutting at the last offline event could drop the live copy of that very event;
    /// the first timer after the wire ends fires >100 ms on.
    pub fn stop(self) -> String {
        hbwatch::event::rfc3339_micros(self.stop_at_last_frame() + 50_000_000)
    }

    /// SIGINT, wait, and the last frame's capture time (ns since the epoch).
    pub fn stop_at_last_frame(mut self) -> i128 {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait().unwrap();
        let rest = self.rest.join().unwrap();
        assert!(
            status.success(),
            "tcpdump exited with {status}: {}{rest}",
            self.said
        );
        let file = std::fs::File::open(&self.pcap).expect("the capture");
        let mut last = None;
        let end = hbwatch_pcap::read_frames(Box::new(file), &mut |_, _, ts, _| {
            last = Some(ts);
            Ok(())
        })
        .expect("reading the capture")
        .expect("a pcap file from tcpdump");
        assert!(end.damage.is_none(), "a well-formed capture: {end:?}");
        last.expect("the capture holds frames") as i128
    }
}

/// What an operator would call the same trouble: the action on the association
/// (`peer.down 10.0.0.1:15000 -> 10.0.0.2:15000`), times, sequence numbers and counts aside.
pub fn action_on_association(e: &Value) -> String {
    format!(
        "{} {}:{} -> {}:{}",
        e["event"]["action"].as_str().unwrap_or("?"),
        e["source"]["ip"].as_str().unwrap_or("?"),
        e["source"]["port"],
        e["destination"]["ip"].as_str().unwrap_or("?"),
        e["destination"]["port"]
    )
}

/// Events per `hbwatch::demo::agreement_key`: what live and offline must share.
pub fn agreement_counts(evs: &[&Value]) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for e in evs {
        *m.entry(hbwatch::demo::agreement_key(e)).or_default() += 1;
    }
    m
}

/// `hbwatch analyze --hostname probe --no-summary-events ARGS PCAP`: its events (it must
/// succeed and print only JSON lines).
pub fn analyze_events(pcap: &std::path::Path, args: &[&str]) -> Vec<Value> {
    let mut all: Vec<std::ffi::OsString> =
        ["analyze", "--hostname", "probe", "--no-summary-events"]
            .iter()
            .chain(args)
            .map(Into::into)
            .collect();
    all.push(pcap.into());
    hbwatch_events(&all)
}

/// `hbwatch ARGS` (analyze, locate: commands that print events): its events (it must
/// succeed and print only JSON lines).
pub fn hbwatch_events<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Vec<Value> {
    let out = Command::new(hbwatch_bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "hbwatch {:?}: {}",
        args.iter().map(|a| a.as_ref()).collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("valid JSON"))
        .collect()
}
