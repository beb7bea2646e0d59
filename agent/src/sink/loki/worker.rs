//! The push side of a Loki output: one thread that seals batches on time, delivers the
//! oldest pending batch (spool or memory, by sequence number), retries with capped
//! exponential backoff, and spools what it cannot deliver. The sending side
//! ([`super::LokiSink`]) only appends to the shared state.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use super::proto::{Encoding, EntryAdapter, PushRequest, StreamAdapter};
use super::spool::Spool;
use crate::event::Level;

/// Settings the worker and the sending side share.
#[derive(Debug, Clone)]
pub(super) struct Config {
    pub name: String,
    pub batch_size: u64,
    pub batch_wait: Duration,
    pub queue_max: u64,
    pub timeout: Duration,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    pub encoding: Encoding,
}

/// Stream key of an event: the labels that vary (`protocol`, `level`).
pub(super) type StreamKey = (Option<&'static str>, Level);

/// A sealed batch in memory.
#[derive(Debug)]
pub(super) struct Batch {
    pub seq: u64,
    pub events: u64,
    /// Line and metadata bytes (what `batch_size` and `queue_max` count).
    pub bytes: u64,
    pub req: PushRequest,
}

/// The batch being filled.
#[derive(Debug, Default)]
pub(super) struct Builder {
    req: PushRequest,
    keys: Vec<StreamKey>,
    pub events: u64,
    pub bytes: u64,
    since: Option<Instant>,
}

impl Builder {
    pub fn add(
        &mut self,
        key: StreamKey,
        labels: impl FnOnce() -> String,
        entry: EntryAdapter,
        bytes: u64,
    ) {
        let i = match self.keys.iter().position(|k| *k == key) {
            Some(i) => i,
            None => {
                self.keys.push(key);
                self.req.streams.push(StreamAdapter {
                    labels: labels(),
                    entries: Vec::new(),
                    hash: 0,
                });
                self.keys.len() - 1
            }
        };
        self.req.streams[i].entries.push(entry);
        self.events += 1;
        self.bytes += bytes;
        self.since.get_or_insert_with(Instant::now);
    }
}

/// Everything both sides touch, behind one mutex.
#[derive(Debug)]
pub(super) struct State {
    pub open: Builder,
    queue: VecDeque<Batch>,
    queue_bytes: u64,
    queue_events: u64,
    /// The memory batch being pushed right now (shared so that `close` can spool it if
    /// the push outlives the flush timeout).
    inflight: Option<Arc<Batch>>,
    pub spool: Option<Spool>,
    next_seq: u64,
    /// Set by `close`: deliver until then, then spool the rest.
    pub closing: Option<Instant>,
    /// `close` was called: `send` refuses events.
    pub closed: bool,
    /// The worker has exited (everything delivered, spooled or counted).
    pub finished: bool,
    /// `close` gave up waiting for the worker; it must not touch the state any more.
    pub abandoned: bool,
    pub delivered: u64,
    pub dropped: u64,
    pub retries: u64,
    /// Drops of the current episode were logged already.
    drop_logged: bool,
    spool_error_logged: bool,
}

impl State {
    pub fn new(spool: Option<Spool>) -> State {
        State {
            open: Builder::default(),
            queue: VecDeque::new(),
            queue_bytes: 0,
            queue_events: 0,
            inflight: None,
            next_seq: spool.as_ref().map_or(0, Spool::next_seq),
            spool,
            closing: None,
            closed: false,
            finished: false,
            abandoned: false,
            delivered: 0,
            dropped: 0,
            retries: 0,
            drop_logged: false,
            spool_error_logged: false,
        }
    }

    /// Events held in memory (filling, sealed, in flight).
    pub fn queued(&self) -> u64 {
        self.open.events + self.queue_events + self.inflight.as_ref().map_or(0, |b| b.events)
    }

    /// Seals the batch being filled and queues it; past `queue_max`, the oldest batches in
    /// memory move to the spool, and when the spool is full (or off) the new batch is
    /// dropped and counted.
    pub fn seal(&mut self, cfg: &Config) {
        if self.open.events == 0 {
            return;
        }
        let b = std::mem::take(&mut self.open);
        let batch = Batch {
            seq: self.next_seq,
            events: b.events,
            bytes: b.bytes,
            req: b.req,
        };
        self.next_seq += 1;
        self.push_back(batch);
        while self.queue_bytes > cfg.queue_max && self.queue.len() > 1 {
            let spooled = match self.queue.front() {
                Some(front) => spool_write(
                    &mut self.spool,
                    &mut self.spool_error_logged,
                    cfg,
                    front,
                    None,
                ),
                None => break,
            };
            if spooled {
                self.pop_front();
            } else if let Some(newest) = self.queue.pop_back() {
                self.queue_bytes -= newest.bytes;
                self.queue_events -= newest.events;
                let why = if self.spool.is_some() {
                    "memory queue and spool are full"
                } else {
                    "memory queue is full and the spool is off"
                };
                self.drop_events(cfg, newest.events, why);
                break;
            }
        }
    }

    fn push_back(&mut self, b: Batch) {
        self.queue_bytes += b.bytes;
        self.queue_events += b.events;
        self.queue.push_back(b);
    }

    fn push_front(&mut self, b: Batch) {
        self.queue_bytes += b.bytes;
        self.queue_events += b.events;
        self.queue.push_front(b);
    }

    fn pop_front(&mut self) -> Option<Batch> {
        let b = self.queue.pop_front()?;
        self.queue_bytes -= b.bytes;
        self.queue_events -= b.events;
        Some(b)
    }

    /// Writes a memory batch to the spool if there is one with room (`body`: its snappy
    /// protobuf encoding when already at hand).
    fn spool_batch(&mut self, cfg: &Config, b: &Batch, body: Option<&[u8]>) -> bool {
        spool_write(&mut self.spool, &mut self.spool_error_logged, cfg, b, body)
    }

    fn drop_events(&mut self, cfg: &Config, events: u64, why: &str) {
        self.dropped += events;
        if !self.drop_logged {
            error!(
                "output {}: {why}: dropping new events until Loki takes some \
                 (counted and reported as agent.events_lost)",
                cfg.name
            );
            self.drop_logged = true;
        }
    }

    /// Everything still in memory goes to the spool, oldest first; what does not fit is
    /// counted as dropped.
    fn spool_rest(&mut self, cfg: &Config) {
        if self.open.events > 0 {
            let b = std::mem::take(&mut self.open);
            self.push_back(Batch {
                seq: self.next_seq,
                events: b.events,
                bytes: b.bytes,
                req: b.req,
            });
            self.next_seq += 1;
        }
        let mut lost = 0;
        while let Some(b) = self.pop_front() {
            if !self.spool_batch(cfg, &b, None) {
                lost += b.events;
            }
        }
        if lost > 0 {
            self.dropped += lost;
            error!(
                "output {}: {lost} undelivered events did not fit in the spool{}: lost",
                cfg.name,
                if self.spool.is_none() { " (off)" } else { "" }
            );
        }
    }
}

fn spool_write(
    spool: &mut Option<Spool>,
    error_logged: &mut bool,
    cfg: &Config,
    b: &Batch,
    body: Option<&[u8]>,
) -> bool {
    let Some(spool) = spool.as_mut() else {
        return false;
    };
    if !spool.has_room(1) {
        return false;
    }
    let encoded;
    let body = match body {
        Some(b) => b,
        None => {
            encoded = b.req.to_snappy();
            &encoded
        }
    };
    match spool.write(b.seq, b.events, body) {
        Ok(fits) => fits,
        Err(e) => {
            if !*error_logged {
                error!(
                    "output {}: cannot write to the spool {}: {e}",
                    cfg.name,
                    spool.dir().display()
                );
                *error_logged = true;
            }
            false
        }
    }
}

pub(super) struct Shared {
    pub state: Mutex<State>,
    /// Wakes the worker: new events, close.
    pub wake: Condvar,
    /// Wakes `close`: the worker finished.
    pub done: Condvar,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counters that are still meaningful.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What one push attempt came to.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    Delivered,
    /// 4xx other than 408/429: sending the same batch again cannot help.
    Rejected(String),
    /// 408, 429, 5xx, transport errors: try again later (`Retry-After` if Loki said).
    Retry(String, Option<Duration>),
}

/// The HTTP side: one `ureq` agent (connection reuse, rustls).
pub(super) struct Client {
    agent: ureq::Agent,
    endpoint: String,
    authorization: Option<super::Secret>,
    /// Tenant and custom headers.
    headers: Vec<(String, super::Secret)>,
    encoding: Encoding,
}

impl Client {
    pub fn new(opts: &super::LokiOptions) -> anyhow::Result<Client> {
        let mut cfg = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(opts.timeout))
            .user_agent(format!("hbwatch/{}", env!("CARGO_PKG_VERSION")));
        if opts.endpoint.starts_with("https:") {
            cfg = cfg.tls_config(super::tls::config(opts)?);
        }
        Ok(Client {
            agent: cfg.build().into(),
            endpoint: opts.endpoint.clone(),
            authorization: opts.authorization()?,
            headers: opts.extra_headers()?,
            encoding: opts.encoding,
        })
    }

    pub fn push(&self, body: &[u8], timeout: Duration) -> Outcome {
        let mut req = self
            .agent
            .post(&self.endpoint)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("Content-Type", self.encoding.content_type());
        if let Some(a) = &self.authorization {
            req = req.header("Authorization", &a.0);
        }
        for (name, value) in &self.headers {
            req = req.header(name, &value.0);
        }
        let mut resp = match req.send(body) {
            Ok(r) => r,
            Err(e) => return Outcome::Retry(e.to_string(), None),
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // Read the answer to the end (the connection is then reused); keep a bit for logs.
        let text = match resp.body_mut().with_config().limit(1 << 20).read_to_vec() {
            Ok(b) => {
                let t = String::from_utf8_lossy(&b);
                let t = t.trim();
                match t.char_indices().nth(1000) {
                    Some((i, _)) => format!("{}...", &t[..i]),
                    None => t.to_string(),
                }
            }
            Err(e) => format!("(answer unreadable: {e})"),
        };
        let what = match resp.headers().get("location").and_then(|v| v.to_str().ok()) {
            Some(to) if (300..400).contains(&status) => {
                format!("HTTP {status}: redirected to {to}; give that URL instead")
            }
            _ if text.is_empty() => format!("HTTP {status}"),
            _ => format!("HTTP {status}: {text}"),
        };
        match status {
            200..=299 => Outcome::Delivered,
            408 | 429 | 500..=599 => Outcome::Retry(what, retry_after),
            _ => Outcome::Rejected(what),
        }
    }
}

/// Capped exponential backoff with jitter: half to all of `min * 2^(failures-1)`, at most
/// `max`.
pub(super) fn backoff(failures: u32, min: Duration, max: Duration) -> Duration {
    let exp = min
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
        .min(max);
    exp.mul_f64(0.5 + fastrand::f64() * 0.5)
}

enum Job {
    Memory(Arc<Batch>),
    Spooled { seq: u64, events: u64 },
}

/// The oldest pending batch: the spool's first file or the memory queue's front, whichever
/// has the lower sequence number.
fn pick(st: &mut State) -> Option<Job> {
    let spooled = st.spool.as_ref().and_then(Spool::first);
    let mem = st.queue.front().map(|b| b.seq);
    match (spooled, mem) {
        (Some((seq, f)), m) if m.is_none_or(|m| seq < m) => Some(Job::Spooled {
            seq,
            events: f.events,
        }),
        (_, Some(_)) => {
            let b = Arc::new(st.pop_front()?);
            st.inflight = Some(b.clone());
            Some(Job::Memory(b))
        }
        _ => None,
    }
}

/// The worker thread's body.
pub(super) fn run(shared: Arc<Shared>, cfg: Config, client: Client) {
    let mut failures = 0u32;
    let mut outage_since: Option<Instant> = None;
    loop {
        // Find work (under the lock).
        let mut st = shared.lock();
        let job = loop {
            if st.abandoned {
                return;
            }
            let now = Instant::now();
            let wait_over = st
                .open
                .since
                .is_some_and(|t| now.duration_since(t) >= cfg.batch_wait);
            if st.open.events > 0 && (wait_over || st.closing.is_some()) {
                st.seal(&cfg);
            }
            if st.closing.is_some_and(|d| now >= d) {
                st.spool_rest(&cfg);
                return finish(&shared, st);
            }
            if let Some(job) = pick(&mut st) {
                break job;
            }
            if st.closing.is_some() {
                // Everything delivered.
                return finish(&shared, st);
            }
            let timeout = match st.open.since {
                Some(t) => cfg.batch_wait.saturating_sub(now.duration_since(t)),
                None => Duration::from_secs(3600),
            };
            st = shared
                .wake
                .wait_timeout(st, timeout)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        };
        let (events, seq) = match &job {
            Job::Memory(b) => (b.events, b.seq),
            Job::Spooled { seq, events } => (*events, *seq),
        };
        let file = match (&job, st.spool.as_ref()) {
            (Job::Spooled { .. }, Some(spool)) => Some(spool.path(seq, events)),
            _ => None,
        };
        let timeout = match st.closing {
            Some(d) => d.saturating_duration_since(Instant::now()).min(cfg.timeout),
            None => cfg.timeout,
        };
        drop(st);

        // The body to send (no lock held: `send` goes on meanwhile).
        let body = match (&job, file) {
            (Job::Memory(b), _) => b.req.body(cfg.encoding),
            (_, Some(path)) => match std::fs::read(&path) {
                Err(e) => Err(format!("cannot read {}: {e}", path.display())),
                Ok(bytes) => match cfg.encoding {
                    Encoding::Protobuf => Ok(bytes),
                    Encoding::Json => PushRequest::from_snappy(&bytes).and_then(|r| r.to_json()),
                },
            },
            (_, None) => Err("spooled batch without a spool".to_string()),
        };
        let body = match body {
            Ok(b) => b,
            Err(why) => {
                // Cannot happen for memory batches; a damaged spool file is given up.
                error!(
                    "output {}: batch of {events} events unusable ({why}): dropped",
                    cfg.name
                );
                let mut st = shared.lock();
                if st.abandoned {
                    return;
                }
                st.dropped += events;
                st.inflight = None;
                if let Some(spool) = st.spool.as_mut() {
                    let _ = spool.remove(seq);
                }
                continue;
            }
        };

        // Push (no lock held).
        let outcome = if timeout.is_zero() {
            Outcome::Retry("flush timeout reached".into(), None)
        } else {
            client.push(&body, timeout)
        };

        let mut st = shared.lock();
        if st.abandoned {
            return;
        }
        st.inflight = None;
        let spooled = matches!(job, Job::Spooled { .. });
        match outcome {
            Outcome::Delivered => {
                st.delivered += events;
                st.drop_logged = false;
                if spooled {
                    if let Some(spool) = st.spool.as_mut() {
                        if let Err(e) = spool.remove(seq) {
                            error!(
                                "output {}: delivered spool batch not removed: {e}",
                                cfg.name
                            );
                        }
                    }
                }
                if let Some(since) = outage_since.take() {
                    info!(
                        "output {}: Loki takes pushes again after {failures} failed attempts in {:.1}s; \
                         {} events still spooled",
                        cfg.name,
                        since.elapsed().as_secs_f64(),
                        st.spool.as_ref().map_or(0, Spool::events)
                    );
                }
                failures = 0;
            }
            Outcome::Rejected(why) => {
                error!(
                    "output {}: Loki rejected a batch of {events} events for good ({why}); \
                     the batch is dropped",
                    cfg.name
                );
                st.dropped += events;
                if spooled {
                    if let Some(spool) = st.spool.as_mut() {
                        let _ = spool.remove(seq);
                    }
                }
            }
            Outcome::Retry(why, retry_after) => {
                st.retries += 1;
                failures += 1;
                if outage_since.is_none() {
                    outage_since = Some(Instant::now());
                    warn!(
                        "output {}: push failed ({why}); retrying with backoff{}",
                        cfg.name,
                        match st.spool.as_ref() {
                            Some(s) =>
                                format!(", undelivered batches wait in {}", s.dir().display()),
                            None => String::new(),
                        }
                    );
                } else {
                    debug!("output {}: push failed again ({why})", cfg.name);
                }
                if let Job::Memory(b) = job {
                    let proto_body = (cfg.encoding == Encoding::Protobuf).then_some(&body[..]);
                    if !st.spool_batch(&cfg, &b, proto_body) {
                        // Back to the front of the queue (the only other holder, `inflight`,
                        // was cleared above).
                        match Arc::try_unwrap(b) {
                            Ok(b) => st.push_front(b),
                            Err(b) => st.push_front(Batch {
                                seq: b.seq,
                                events: b.events,
                                bytes: b.bytes,
                                req: b.req.clone(),
                            }),
                        }
                    }
                }
                let mut pause = backoff(failures, cfg.min_backoff, cfg.max_backoff);
                if let Some(ra) = retry_after {
                    pause = pause.max(ra.min(cfg.max_backoff));
                }
                let until = Instant::now() + pause;
                let was_closing = st.closing.is_some();
                loop {
                    let now = Instant::now();
                    let end = st.closing.map_or(until, |d| d.min(until));
                    // A close cuts the pause short once: Loki may be back, and the flush
                    // timeout is better spent trying than waiting.
                    if now >= end || st.abandoned || (!was_closing && st.closing.is_some()) {
                        break;
                    }
                    st = shared
                        .wake
                        .wait_timeout(st, end - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }
}

/// `close` stopped waiting for the worker, still in a push that started before the close:
/// that batch and the rest of memory go to the spool, and the worker leaves the state
/// alone from now on.
pub(super) fn abandon(st: &mut State, cfg: &Config) {
    st.abandoned = true;
    if let Some(b) = st.inflight.take() {
        if st.spool_batch(cfg, &b, None) {
            warn!(
                "output {}: a push of {} events was still unanswered at exit; the batch stays \
                 in the spool and is sent again at the next start (a duplicate if Loki did take it)",
                cfg.name, b.events
            );
        } else {
            error!(
                "output {}: a push of {} events was still unanswered at exit and there is no room \
                 to spool it: counted as lost",
                cfg.name, b.events
            );
            st.dropped += b.events;
        }
    }
    st.spool_rest(cfg);
    st.finished = true;
}

fn finish(shared: &Shared, mut st: MutexGuard<'_, State>) {
    st.finished = true;
    drop(st);
    shared.done.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(5));
        for _ in 0..100 {
            let b1 = backoff(1, min, max);
            assert!(b1 >= min / 2 && b1 <= min, "{b1:?}");
            let b4 = backoff(4, min, max);
            assert!(b4 >= min * 4 && b4 <= min * 8, "{b4:?}");
            let b = backoff(60, min, max);
            assert!(b >= max / 2 && b <= max, "{b:?}");
        }
        let spread: std::collections::BTreeSet<_> = (0..20).map(|_| backoff(3, min, max)).collect();
        assert!(spread.len() > 10, "jittered: {spread:?}");
    }
}
