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

/// Default socket path: `$RUNTIME_DIRECTORY/hbwatch.sock` under systemd, else
/// `/run/hbwatch/status.sock`.
pub fn default_socket() -> PathBuf {
    match std::env::var_os("RUNTIME_DIRECTORY") {
        Some(d) if !d.is_empty() => {
            // systemd may list several directories, colon-separated: the first.
            let d = d
                .to_string_lossy()
                .split(':')
                .next()
                .unwrap_or("")
                .to_string();
            PathBuf::from(d).join("hbwatch.sock")
        }
        _ => PathBuf::from("/run/hbwatch/status.sock"),
    }
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
    let rtt = a.stats.rtt_avg_ns().or_else(|| a.totals.rtt_avg_ns());
    Row {
        protocol: Protocol::from_u8(k.proto).name().to_string(),
        source: endpoint(k.family, &k.orig, k.orig_port),
        destination: endpoint(k.family, &k.resp, k.resp_port),
        state,
        age_ms: age_ns / MS,
        interval_ms: expected / MS,
        rtt_us: rtt.map(|ns| ns / 1000),
        rtt_recent_us: Vec::new(),
        lost: a.totals.lost.saturating_add(a.stats.lost),
        diagnosis: a
            .down_diagnosis
            .as_ref()
            .map(|d| d.cause.to_string())
            .or_else(|| a.diagnoses.last().map(|d| d.to_string())),
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

pub fn shared() -> Shared {
    Arc::new(Mutex::new(Arc::new(Snapshot::default())))
}

/// What the live loop holds: the recorder and the published slot. Cloned into the
/// event tap (events) and kept by the loop (snapshots once per poll tick).
#[derive(Clone)]
pub struct Publisher {
    recorder: Arc<Mutex<Recorder>>,
    pub shared: Shared,
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
        }
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
