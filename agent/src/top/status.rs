//! The status endpoint: the live loop publishes a [`Snapshot`] of the correlator
//! once per second into a [`Shared`] slot; a tokio task serves it on a unix socket
//! (mode 0660, no TCP). Protocol: the client writes one request line (`status`),
//! the server answers one JSON object on one line; a connection may repeat.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hbwatch_common::proto::Protocol;

use super::model::{EventLine, Row, Snapshot, State};
use crate::convert::ip_of;
use crate::correlate::assoc::{Assoc, MS};
use crate::correlate::Correlator;
use crate::event::Event;

/// Recent events kept for the board.
pub const RECENT_EVENTS: usize = 50;

/// Default socket path: `hbwatch.sock` in `$RUNTIME_DIRECTORY` under systemd (the
/// unit's `RuntimeDirectory=hbwatch`), else in `/run/hbwatch`: the same file either
/// way, so `hbwatch top` in an operator's shell finds the service's socket.
pub fn default_socket() -> PathBuf {
    socket_in(std::env::var_os("RUNTIME_DIRECTORY").as_deref())
}

fn socket_in(runtime_directory: Option<&std::ffi::OsStr>) -> PathBuf {
    // systemd may list several directories, colon-separated: the first.
    let dir = runtime_directory
        .map(|d| {
            d.to_string_lossy()
                .split(':')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/run/hbwatch".to_string());
    PathBuf::from(dir).join("hbwatch.sock")
}

fn endpoint(family: u8, addr: &[u8; 16], port: u16) -> String {
    match ip_of(family, addr) {
        std::net::IpAddr::V6(ip) => format!("[{ip}]:{port}"),
        ip => format!("{ip}:{port}"),
    }
}

/// One association's row at monotonic time `now` (ns).
pub fn row_of(a: &Assoc, now: u64) -> Row {
    let k = &a.key;
    let age_ns = now.saturating_sub(a.last_beat_ns);
    let expected = a.expected_ns();
    let state = if a.down.is_some() {
        State::Down
    } else if a.missed_reported {
        State::Missed
    } else if age_ns > expected.saturating_add(a.grace_ns()) {
        State::Late
    } else {
        State::Up
    };
    // This period's RTT, else the run's. Lost: the run's (it counts the period's too).
    let (period, run) = a.counts().unwrap_or_default();
    let rtt = period.rtt_avg_ns().or_else(|| run.rtt_avg_ns());
    Row {
        protocol: Protocol::from_u8(k.proto).name().to_string(),
        source: endpoint(k.family, &k.orig, k.orig_port),
        destination: endpoint(k.family, &k.resp, k.resp_port),
        state,
        age_ms: age_ns / MS,
        interval_ms: expected / MS,
        rtt_us: rtt.map(|ns| ns / 1000),
        rtt_recent_us: Vec::new(),
        lost: run.lost,
        diagnosis: a
            .trouble()
            .down_diagnosis
            .as_ref()
            .map(|d| d.cause.to_string())
            .or_else(|| a.trouble().diagnoses.last().map(|d| d.to_string())),
    }
}

/// One SIP association's row at `now`: down while a registration on it has lapsed,
/// else up (a refresh or ping is due at the registrar's or pinger's pace, not on a
/// fixed beat, so there is no late or missed state).
pub fn sip_row_of(v: &crate::correlate::sip::BoardView, now: u64) -> Row {
    let k = v.key;
    let last = v.last_beat_ns.unwrap_or(v.last_activity_ns);
    Row {
        protocol: Protocol::from_u8(k.proto).name().to_string(),
        source: endpoint(k.family, &k.orig, k.orig_port),
        destination: endpoint(k.family, &k.resp, k.resp_port),
        state: if v.lapsed { State::Down } else { State::Up },
        age_ms: now.saturating_sub(last) / MS,
        interval_ms: v.interval_ns.unwrap_or(0) / MS,
        rtt_us: v.rtt_avg_ns.map(|ns| ns / 1000),
        rtt_recent_us: Vec::new(),
        lost: v.lost,
        diagnosis: v.diagnosis.map(str::to_string),
    }
}

/// What the live loop keeps between publications: the recent events, and RTT
/// history per association for the sparklines.
#[derive(Default)]
pub struct Recorder {
    events: VecDeque<EventLine>,
    rtts: std::collections::HashMap<(String, String, String), VecDeque<u64>>,
}

impl Recorder {
    /// Remember `ev` for the events pane.
    pub fn event(&mut self, ev: &Event) {
        if self.events.len() == RECENT_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(EventLine {
            time: ev.timestamp.clone(),
            action: ev.event.action.to_string(),
            message: ev.message.clone(),
        });
    }

    /// The snapshot of `c` at `now`.
    pub fn snapshot(&mut self, c: &Correlator, now: u64) -> Snapshot {
        let mut rows: Vec<Row> = c.assocs().map(|a| row_of(a, now)).collect();
        rows.extend(c.sip_board().iter().map(|v| sip_row_of(v, now)));
        let mut seen = std::collections::HashSet::new();
        for r in &mut rows {
            let key = (r.protocol.clone(), r.source.clone(), r.destination.clone());
            let h = self.rtts.entry(key.clone()).or_default();
            if let Some(us) = r.rtt_us {
                if h.len() == super::model::RTT_SAMPLES {
                    h.pop_front();
                }
                h.push_back(us);
            }
            r.rtt_recent_us = h.iter().copied().collect();
            seen.insert(key);
        }
        self.rtts.retain(|k, _| seen.contains(k));
        Snapshot {
            associations: rows,
            events: self.events.iter().cloned().collect(),
        }
    }
}

/// The latest snapshot, shared between the live loop and the server.
pub type Shared = Arc<Mutex<Arc<Snapshot>>>;

/// When a client last asked for a snapshot: the live loop takes every association's held heartbeats for the board
/// only while someone watches (a map lookup per association per second).
static LAST_ASKED: std::sync::OnceLock<Mutex<Option<std::time::Instant>>> =
    std::sync::OnceLock::new();

fn asked() -> &'static Mutex<Option<std::time::Instant>> {
    LAST_ASKED.get_or_init(|| Mutex::new(None))
}

/// Whether a client asked for a snapshot in the last 3 seconds.
pub fn watched() -> bool {
    asked()
        .lock()
        .ok()
        .and_then(|t| *t)
        .is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(3))
}

pub fn shared() -> Shared {
    Arc::new(Mutex::new(Arc::new(Snapshot::default())))
}

/// What the live loop holds: the recorder and the published slot. Cloned into the
/// event tap (events) and kept by the loop (snapshots once per poll tick).
#[derive(Clone)]
pub struct Publisher {
    recorder: Arc<Mutex<Recorder>>,
    pub shared: Shared,
    /// A board is drawn in this process (`run --tui`, the demo): always watched.
    drawn_here: bool,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Publisher")
    }
}

impl Publisher {
    pub fn new(shared: Shared) -> Publisher {
        Publisher {
            recorder: Arc::default(),
            shared,
            drawn_here: false,
        }
    }

    /// A board in this process reads [`Self::shared`]: snapshots every tick.
    pub fn draw_here(&mut self) {
        self.drawn_here = true;
    }

    /// Whether anyone looks at the board: snapshots are built only then. With 100,000
    /// associations one took a fifth of the agent's CPU every second (`perf`), for
    /// nobody. A client's first request after a pause may get a snapshot up to a tick
    /// old; `hbwatch top` asks every second.
    pub fn watched(&self) -> bool {
        self.drawn_here || watched()
    }

    /// Build the snapshot of `c` at `now` and publish it (the server only clones
    /// an `Arc` under the lock, so neither side waits on the other for long).
    pub fn publish(&self, c: &Correlator, now: u64) {
        let snap = match self.recorder.lock() {
            Ok(mut r) => r.snapshot(c, now),
            Err(_) => return,
        };
        if let Ok(mut s) = self.shared.lock() {
            *s = Arc::new(snap);
        }
    }
}

impl crate::sink::Filter for Publisher {
    fn apply<'e>(&mut self, ev: &'e Event) -> std::borrow::Cow<'e, Event> {
        if let Ok(mut r) = self.recorder.lock() {
            r.event(ev);
        }
        std::borrow::Cow::Borrowed(ev)
    }
}

/// `hbwatch run`'s status socket: `path` if given (`none`: off), else the default
/// path when running as root or under systemd. Binds it and returns the publisher the
/// live loop feeds (None: no socket). Call inside the runtime, before privileges are
/// dropped.
pub fn start(path: Option<PathBuf>) -> anyhow::Result<Option<Publisher>> {
    let (path, asked) = match path {
        Some(p) if p.as_os_str() == "none" => return Ok(None),
        Some(p) => (p, true),
        None if unsafe { libc::geteuid() } == 0
            || std::env::var_os("RUNTIME_DIRECTORY").is_some() =>
        {
            (default_socket(), false)
        }
        None => return Ok(None),
    };
    let shared = shared();
    if let Err(e) = serve(&path, shared.clone()) {
        let e = anyhow::anyhow!("status socket {}: {e}", path.display());
        if asked {
            return Err(e);
        }
        // The board is an extra: a second agent on the host (the default path taken)
        // still watches, without one.
        tracing::warn!(
            "{e}; `hbwatch top` cannot attach to this agent (--status-socket PATH gives it one)"
        );
        return Ok(None);
    }
    tracing::info!("status socket on {}", path.display());
    Ok(Some(Publisher::new(shared)))
}

/// Bind `path` (mode 0660, parent created 0750) and serve `shared` on it until the
/// runtime ends.
pub fn serve(path: &Path, shared: Shared) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(dir)?;
        }
    }
    if path.exists() {
        // A socket left by an earlier run; anything else is not ours to remove, nor is a
        // socket another agent still answers on.
        use std::os::unix::fs::FileTypeExt as _;
        if !std::fs::symlink_metadata(path)?.file_type().is_socket() {
            anyhow::bail!("{} exists and is not a socket", path.display());
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("another running hbwatch serves it");
        }
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    // Created with no permissions for others from the start, then set exactly.
    let old = unsafe { libc::umask(0o117) };
    let listener = tokio::net::UnixListener::bind(path);
    unsafe { libc::umask(old) };
    let listener = listener?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let _ = answer(stream, shared).await;
            });
        }
    }))
}

async fn answer(stream: tokio::net::UnixStream, shared: Shared) -> std::io::Result<()> {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let (r, mut w) = stream.into_split();
    let mut lines = tokio::io::BufReader::new(r).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        if let Ok(mut t) = asked().lock() {
            *t = Some(std::time::Instant::now());
        }
        let snap = shared.lock().map(|s| s.clone()).unwrap_or_default();
        let mut out = serde_json::to_vec(&*snap).map_err(std::io::Error::other)?;
        out.push(b'\n');
        w.write_all(&out).await?;
    }
    Ok(())
}

/// A blocking client: one connection, one snapshot per [`Client::fetch`].
pub struct Client {
    reader: std::io::BufReader<std::os::unix::net::UnixStream>,
    writer: std::os::unix::net::UnixStream,
}

impl Client {
    pub fn connect(path: &Path) -> anyhow::Result<Client> {
        let s = std::os::unix::net::UnixStream::connect(path)
            .map_err(|e| anyhow::anyhow!("{}: {e} (is `hbwatch run` running?)", path.display()))?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        Ok(Client {
            reader: std::io::BufReader::new(s.try_clone()?),
            writer: s,
        })
    }

    pub fn fetch(&mut self) -> anyhow::Result<Snapshot> {
        use std::io::{BufRead as _, Write as _};
        self.writer.write_all(b"status\n")?;
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            anyhow::bail!("the agent closed the status socket");
        }
        Ok(serde_json::from_str(&line)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SIP registrations and OPTIONS pings are on the board: the demo's phone 2 loses
    /// its network at 20 s for 25 s (registration of 20 s: lapsed from ~41 s until it
    /// registers again at ~45 s); phone 1 and the OPTIONS ping stay up.
    #[test]
    fn sip_associations_are_on_the_board_and_a_lapse_shows_down() {
        use crate::offline::{AnalyzeOptions, Replay};
        use crate::ports::{default_specs, port_table};
        let sc = hbgen::scenario::Scenario::load("story").unwrap();
        let capture = hbgen::generate(&sc);
        let opts = AnalyzeOptions::new(port_table(&default_specs()), "probe");
        let mut replay = Replay::new(&opts, "eth0".into());
        let mut recorder = Recorder::default();
        let start = sc.start_unix_ns;
        let mut events = Vec::new();
        let mut boards = Vec::new();
        // hbwatch_associations{protocol="sip",state="down"} at each look.
        let mut downs = Vec::new();
        let mut next_look = start + 10 * 1_000_000_000;
        for f in &capture.frames {
            while f.ts_ns >= next_look {
                let sip_down = replay.correlator.health()[&Protocol::Sip].1;
                boards.push(((next_look - start) / 1_000_000_000, {
                    recorder.snapshot(&replay.correlator, next_look)
                }));
                downs.push(sip_down);
                next_look += 1_000_000_000;
            }
            replay.frame(&f.data, f.ts_ns, &mut events);
        }
        let sip = |snap: &Snapshot, src: &str, dst: &str| {
            snap.associations
                .iter()
                .find(|r| {
                    r.protocol == "sip"
                        && r.source.starts_with(src)
                        && r.destination.starts_with(dst)
                })
                .map(|r| r.state)
        };
        let at = |s: u64| &boards.iter().find(|(t, _)| *t == s).unwrap().1;
        // Before the lapse, all three are up.
        assert_eq!(sip(at(15), "10.70.0.10:", "10.70.0.1:"), Some(State::Up));
        assert_eq!(sip(at(15), "10.70.0.9:", "10.70.0.1:"), Some(State::Up));
        assert_eq!(sip(at(15), "10.20.0.1:", "10.70.1.1:"), Some(State::Up));
        // Lapsed: down, the others up.
        let down: Vec<u64> = boards
            .iter()
            .filter(|(_, b)| sip(b, "10.70.0.10:", "10.70.0.1:") == Some(State::Down))
            .map(|(t, _)| *t)
            .collect();
        // Exactly the looks between its sip.expired and its next sip.registered.
        let phone2 = |action: &str| -> Vec<u64> {
            events
                .iter()
                .filter(|e: &&Event| {
                    e.event.action.to_string() == action
                        && e.source.as_ref().is_some_and(|s| s.ip == "10.70.0.10")
                })
                .map(|e| {
                    let t = time::OffsetDateTime::parse(
                        &e.timestamp,
                        &time::format_description::well_known::Rfc3339,
                    )
                    .unwrap();
                    (t.unix_timestamp_nanos() as u64 - start).div_ceil(1_000_000_000)
                })
                .collect()
        };
        let expired = phone2("sip.expired");
        assert_eq!(expired.len(), 1, "one lapse: {expired:?}");
        let back = *phone2("sip.registered")
            .iter()
            .find(|&&t| t > expired[0])
            .expect("registers again");
        assert_eq!(down, (expired[0]..back).collect::<Vec<_>>());
        // The metric says what the board shows (phone 1's late refresh lapses too).
        for ((t, b), n) in boards.iter().zip(&downs) {
            let rows = b
                .associations
                .iter()
                .filter(|r| r.protocol == "sip" && r.state == State::Down)
                .count();
            assert_eq!(*n, rows as u64, "SIP associations down at {t} s");
        }
        assert!(downs.iter().any(|&n| n > 0));
        for (t, b) in &boards {
            assert_eq!(
                sip(b, "10.20.0.1:", "10.70.1.1:"),
                Some(State::Up),
                "OPTIONS at {t} s"
            );
        }
        // Back up once it registered again.
        let last = &boards.last().unwrap().1;
        assert_eq!(sip(last, "10.70.0.10:", "10.70.0.1:"), Some(State::Up));
    }

    /// The board's `lost` is the heartbeats the association lost in the run, each once
    /// (it added this period's, already in the run's, a second time); RTT is this
    /// period's mean.
    #[test]
    fn a_row_counts_each_lost_heartbeat_once() {
        let params = Protocol::Cs1000Rudp.default_params();
        let mut a = Assoc::new(Default::default(), 1, params, 0, 1);
        a.keep_counts();
        a.gap(2, 3);
        a.answered(1_000_000_000, 4_000_000);
        let row = row_of(&a, 1_000_000_000);
        assert_eq!((row.lost, row.rtt_us), (3, Some(4000)));
    }

    /// The packaged service (RUNTIME_DIRECTORY set by its unit) binds the socket
    /// `hbwatch top` looks for in an operator's shell (no RUNTIME_DIRECTORY).
    #[test]
    fn the_service_and_an_operator_shell_agree_on_the_socket() {
        let unit = include_str!("../../../packaging/hbwatch.service");
        let dir = unit
            .lines()
            .find_map(|l| l.strip_prefix("RuntimeDirectory="))
            .expect("the unit gives the agent a runtime directory for its socket");
        let service = socket_in(Some(std::ffi::OsStr::new(&format!("/run/{dir}"))));
        assert_eq!(service, socket_in(None));
        assert_eq!(service, PathBuf::from("/run/hbwatch/hbwatch.sock"));
        // systemd lists several directories colon-separated: the first is ours.
        let several = socket_in(Some(std::ffi::OsStr::new("/run/hbwatch:/run/other")));
        assert_eq!(several, service);
    }

    #[tokio::test]
    async fn serves_the_published_snapshot_on_a_0660_socket() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("hbwatch-status-{}", std::process::id()));
        let path = dir.join("s.sock");
        let shared = shared();
        *shared.lock().unwrap() = Arc::new(Snapshot {
            associations: super::super::model::synthetic(3),
            events: vec![],
        });
        let task = serve(&path, shared.clone()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let p = path.clone();
        let snap = tokio::task::spawn_blocking(move || {
            let mut c = Client::connect(&p).unwrap();
            c.fetch().unwrap();
            c.fetch().unwrap()
        })
        .await
        .unwrap();
        assert_eq!(snap.associations.len(), 3);
        task.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Two agents on one host: the second does not take the first's live socket (the
    /// differential tests run two at once); a socket nobody answers on is replaced.
    #[tokio::test]
    async fn a_live_socket_is_not_taken_a_stale_one_is_replaced() {
        let dir = std::env::temp_dir().join(format!("hbwatch-status2-{}", std::process::id()));
        let path = dir.join("s.sock");
        let first = serve(&path, shared()).unwrap();
        let e = serve(&path, shared()).unwrap_err().to_string();
        assert!(e.contains("another running hbwatch"), "{e}");
        let p = path.clone();
        tokio::task::spawn_blocking(move || Client::connect(&p).unwrap().fetch().unwrap())
            .await
            .unwrap();
        // The first agent is gone (its listener closed, the file left behind).
        first.abort();
        let _ = first.await;
        assert!(path.exists());
        let second = serve(&path, shared()).unwrap();
        let p = path.clone();
        tokio::task::spawn_blocking(move || Client::connect(&p).unwrap().fetch().unwrap())
            .await
            .unwrap();
        second.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
