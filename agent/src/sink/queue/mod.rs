//! What the batching outputs (Loki, OTLP) share: a memory queue of batches, one worker
//! thread that seals batches on time, delivers the oldest pending batch (spool or memory,
//! by sequence number), retries with capped exponential backoff, and spools what it cannot
//! deliver; the bounded on-disk [`spool`]; the HTTP client ([`http`]); and the options
//! that tune all this ([`QueueOptions`]). The sending side (the sink's `send`) only
//! appends to the shared state through a [`Pipeline`].
//!
//! An output brings its batch type ([`Payload`]: how events accumulate and what the spool
//! keeps) and its [`Transport`] (the request body, the push and what its answers mean).

pub mod auth;
pub mod http;
pub mod spool;
mod tls;

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use self::auth::{check_header_value, is_token_byte, read_secret, Secret, HEADER, HEADER_FILE};
use self::spool::Spool;
use super::{parse_duration, parse_size};
use crate::sink::SinkStats;

/// A batch being filled or sealed: what an output's events accumulate into.
pub trait Payload: Default + Clone + Send + Sync + std::fmt::Debug + 'static {
    /// The bytes the spool keeps for this batch.
    fn spool_body(&self) -> Vec<u8>;
}

/// How an output delivers its batches.
pub trait Transport: Send + 'static {
    type Batch: Payload;
    /// The request body of a batch in memory.
    fn body(&self, batch: &Self::Batch) -> Result<Vec<u8>, String>;
    /// The request body of a spooled batch, from what the spool kept.
    fn spooled_body(&self, stored: Vec<u8>) -> Result<Vec<u8>, String>;
    /// [`Transport::body`] is also what the spool keeps (a failed push spools it as is).
    fn body_is_spool_body(&self) -> bool;
    /// One push attempt.
    fn push(&self, body: &[u8], timeout: Duration) -> Outcome;
}

/// Settings the worker and the sending side share.
#[derive(Debug, Clone)]
pub struct Config {
    /// The output's name (logs).
    pub name: String,
    /// What the receiving end is called in logs: `Loki`, `the collector`.
    pub peer: &'static str,
    pub batch_size: u64,
    pub batch_wait: Duration,
    pub queue_max: u64,
    pub timeout: Duration,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

/// A sealed batch in memory.
#[derive(Debug)]
pub(crate) struct Batch<B> {
    pub seq: u64,
    pub events: u64,
    /// What `batch_size` and `queue_max` count (the output says what an event weighs).
    pub bytes: u64,
    pub req: B,
}

/// The batch being filled.
#[derive(Debug, Default)]
pub struct Builder<B> {
    pub req: B,
    pub events: u64,
    pub bytes: u64,
    since: Option<Instant>,
}

impl<B> Builder<B> {
    /// Counts one event of `bytes` the caller just put in `req`.
    fn added(&mut self, bytes: u64) {
        self.events += 1;
        self.bytes += bytes;
        self.since.get_or_insert_with(Instant::now);
    }
}

/// Everything both sides touch, behind one mutex.
#[derive(Debug)]
pub(crate) struct State<B> {
    pub open: Builder<B>,
    queue: VecDeque<Batch<B>>,
    queue_bytes: u64,
    queue_events: u64,
    /// The memory batch being pushed right now (shared so that `close` can spool it if
    /// the push outlives the flush timeout).
    inflight: Option<Arc<Batch<B>>>,
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

impl<B: Payload> State<B> {
    pub fn new(spool: Option<Spool>) -> State<B> {
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

    fn push_back(&mut self, b: Batch<B>) {
        self.queue_bytes += b.bytes;
        self.queue_events += b.events;
        self.queue.push_back(b);
    }

    fn push_front(&mut self, b: Batch<B>) {
        self.queue_bytes += b.bytes;
        self.queue_events += b.events;
        self.queue.push_front(b);
    }

    fn pop_front(&mut self) -> Option<Batch<B>> {
        let b = self.queue.pop_front()?;
        self.queue_bytes -= b.bytes;
        self.queue_events -= b.events;
        Some(b)
    }

    /// Writes a memory batch to the spool if there is one with room (`body`: what the
    /// spool keeps of it, when already at hand).
    fn spool_batch(&mut self, cfg: &Config, b: &Batch<B>, body: Option<&[u8]>) -> bool {
        spool_write(&mut self.spool, &mut self.spool_error_logged, cfg, b, body)
    }

    fn drop_events(&mut self, cfg: &Config, events: u64, why: &str) {
        self.dropped += events;
        if !self.drop_logged {
            error!(
                "output {}: {why}: dropping new events until {} takes some \
                 (counted and reported as agent.events_lost)",
                cfg.name, cfg.peer
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

fn spool_write<B: Payload>(
    spool: &mut Option<Spool>,
    error_logged: &mut bool,
    cfg: &Config,
    b: &Batch<B>,
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
            encoded = b.req.spool_body();
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

pub(crate) struct Shared<B> {
    pub state: Mutex<State<B>>,
    /// Wakes the worker: new events, close.
    pub wake: Condvar,
    /// Wakes `close`: the worker finished.
    pub done: Condvar,
}

impl<B> Shared<B> {
    pub fn lock(&self) -> MutexGuard<'_, State<B>> {
        // A panic while holding the lock leaves counters that are still meaningful.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What one push attempt came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Taken, but the receiver refused this many of the batch's events for good (OTLP's
    /// partial success): they are counted as dropped, the rest as delivered.
    Partial(u64, String),
    /// Sending the same batch again cannot help (most 4xx).
    Rejected(String),
    /// Overload, outage, transport errors: try again later (`Retry-After` if the receiver
    /// said).
    Retry(String, Option<Duration>),
}

/// Capped exponential backoff with jitter: half to all of `min * 2^(failures-1)`, at most
/// `max`.
pub(crate) fn backoff(failures: u32, min: Duration, max: Duration) -> Duration {
    let exp = min
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
        .min(max);
    exp.mul_f64(0.5 + fastrand::f64() * 0.5)
}

enum Job<B> {
    Memory(Arc<Batch<B>>),
    Spooled { seq: u64, events: u64 },
}

/// The oldest pending batch: the spool's first file or the memory queue's front, whichever
/// has the lower sequence number.
fn pick<B: Payload>(st: &mut State<B>) -> Option<Job<B>> {
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
fn run<T: Transport>(shared: Arc<Shared<T::Batch>>, cfg: Config, client: T) {
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
            (Job::Memory(b), _) => client.body(&b.req),
            (_, Some(path)) => match std::fs::read(&path) {
                Err(e) => Err(format!("cannot read {}: {e}", path.display())),
                Ok(bytes) => client.spooled_body(bytes),
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
            Outcome::Delivered | Outcome::Partial(..) => {
                if let Outcome::Partial(rejected, why) = outcome {
                    let rejected = rejected.min(events);
                    error!(
                        "output {}: {} refused {rejected} of a batch of {events} events for good \
                         ({why}); they are dropped",
                        cfg.name, cfg.peer
                    );
                    st.dropped += rejected;
                    st.delivered += events - rejected;
                } else {
                    st.delivered += events;
                }
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
                        "output {}: {} takes pushes again after {failures} failed attempts in {:.1}s; \
                         {} events still spooled",
                        cfg.name,
                        cfg.peer,
                        since.elapsed().as_secs_f64(),
                        st.spool.as_ref().map_or(0, Spool::events)
                    );
                }
                failures = 0;
            }
            Outcome::Rejected(why) => {
                error!(
                    "output {}: {} rejected a batch of {events} events for good ({why}); \
                     the batch is dropped",
                    cfg.name, cfg.peer
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
                    let spool_body = client.body_is_spool_body().then_some(&body[..]);
                    if !st.spool_batch(&cfg, &b, spool_body) {
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
                    // A close cuts the pause short once: the receiver may be back, and the flush
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
fn abandon<B: Payload>(st: &mut State<B>, cfg: &Config) {
    st.abandoned = true;
    if let Some(b) = st.inflight.take() {
        if st.spool_batch(cfg, &b, None) {
            warn!(
                "output {}: a push of {} events was still unanswered at exit; the batch stays \
                 in the spool and is sent again at the next start (a duplicate if {} did take it)",
                cfg.name, b.events, cfg.peer
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

fn finish<B>(shared: &Shared<B>, mut st: MutexGuard<'_, State<B>>) {
    st.finished = true;
    drop(st);
    shared.done.notify_all();
}

/// The options every batching output takes (`?batch_size=..&spool=..`), the HTTP
/// endpoint and credentials of its URL, and their checks: one place for both outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueOptions {
    /// `https://...` or `http://...`: where batches are POSTed.
    pub endpoint: String,
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// `password_file=`: the basic-auth password, read at start ([`auth::credential_path`]).
    pub password_file: Option<PathBuf>,
    /// `bearer_token=` (discouraged: it shows on command lines and in configs).
    pub bearer_token: Option<Secret>,
    /// `bearer_token_file=`: the token, read at start.
    pub bearer_token_file: Option<PathBuf>,
    /// `header.NAME=VALUE`, in the order given.
    pub headers: Vec<(String, Secret)>,
    /// `header_file.NAME=PATH`: the value read at start.
    pub header_files: Vec<(String, PathBuf)>,
    /// `ca=`: the only CAs trusted (instead of the system store).
    pub ca: Option<PathBuf>,
    /// `cert=`, `key=`: client certificate (chain) and its private key, PEM (mutual TLS).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub batch_size: u64,
    pub batch_wait: Duration,
    pub queue_max: u64,
    pub spool: bool,
    pub spool_max: u64,
    pub timeout: Duration,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    queue_max_given: bool,
}

/// The option names [`QueueOptions::set`] knows.
pub const QUEUE_KEYS: &[&str] = &[
    "password_file",
    "bearer_token",
    "bearer_token_file",
    "ca",
    "cert",
    "key",
    "batch_size",
    "batch_wait",
    "queue_max",
    "spool",
    "spool_max",
    "timeout",
    "min_backoff",
    "max_backoff",
];

/// What [`QueueOptions::from_url`] found besides the options.
#[derive(Debug)]
pub struct UrlParts {
    pub tls: bool,
    /// `host:port` (or `host`).
    pub authority: String,
    /// The path of the endpoint (`default_path` when the URL has none).
    pub path: String,
}

pub fn on_off(v: &str) -> Result<bool, String> {
    match v {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err("expected on or off".into()),
    }
}

impl QueueOptions {
    /// The endpoint and credentials of `url` (`<prefix>+http(s)://[user[:password]@]host[:port][/path]`),
    /// with the default options. `kind` names the output in messages (`Loki`).
    pub fn from_url(
        url: &url::Url,
        prefix: &str,
        kind: &str,
        default_path: &str,
    ) -> Result<(QueueOptions, UrlParts), String> {
        let tls = match url.scheme().strip_prefix(prefix) {
            Some("+http") => false,
            Some("+https") => true,
            _ => {
                return Err(format!(
                    "{:?} is not a {kind} scheme ({prefix}+http, {prefix}+https)",
                    url.scheme()
                ))
            }
        };
        let host = url.host_str().filter(|h| !h.is_empty()).ok_or(format!(
            "no host: expected {prefix}+http://HOST:PORT[/path]"
        ))?;
        if url.fragment().is_some() {
            return Err(format!("a #fragment has no meaning in a {kind} URL"));
        }
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        let path = match url.path() {
            "" | "/" => default_path,
            p => p,
        };
        let endpoint = format!("{}://{authority}{path}", if tls { "https" } else { "http" });
        url::Url::parse(&endpoint).map_err(|e| format!("push URL {endpoint}: {e}"))?;
        let decode = |s: &str, what: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| format!("{what} in the URL is not UTF-8 once percent-decoded"))
        };
        let user = match url.username() {
            "" => None,
            u => Some(decode(u, "user")?),
        };
        let password = url
            .password()
            .map(|p| decode(p, "password").map(Secret))
            .transpose()?;
        if password.is_some() && user.is_none() {
            return Err("a password without a user name".into());
        }
        Ok((
            QueueOptions {
                endpoint,
                user,
                password,
                password_file: None,
                bearer_token: None,
                bearer_token_file: None,
                headers: Vec::new(),
                header_files: Vec::new(),
                ca: None,
                cert: None,
                key: None,
                batch_size: 1 << 20,
                batch_wait: Duration::from_secs(1),
                queue_max: 8 << 20,
                spool: true,
                spool_max: 256 << 20,
                timeout: Duration::from_secs(10),
                min_backoff: Duration::from_millis(500),
                max_backoff: Duration::from_secs(30),
                queue_max_given: false,
            },
            UrlParts {
                tls,
                authority,
                path: path.to_string(),
            },
        ))
    }

    /// Takes option `k` if it is one of [`QUEUE_KEYS`] (`Ok(false)` if not).
    pub fn set(&mut self, k: &str, v: &str) -> Result<bool, String> {
        let bad = |why: String| format!("option {k}={v:?}: {why}");
        let positive = |d: Duration| {
            if d.is_zero() {
                Err(bad("must be more than 0".into()))
            } else {
                Ok(d)
            }
        };
        match k {
            "ca" | "cert" | "key" | "password_file" | "bearer_token_file" => {
                if v.is_empty() {
                    return Err(bad("expected the path of a file".into()));
                }
                let p = Some(PathBuf::from(v));
                match k {
                    "ca" => self.ca = p,
                    "cert" => self.cert = p,
                    "key" => self.key = p,
                    "password_file" => self.password_file = p,
                    _ => self.bearer_token_file = p,
                }
            }
            "bearer_token" => {
                // Never echoed: a token in an error message ends up in logs.
                check_header_value(v).map_err(|why| format!("option bearer_token: {why}"))?;
                self.bearer_token = Some(Secret(v.to_string()));
            }
            "batch_size" => {
                self.batch_size = parse_size(v).map_err(bad)?;
                if self.batch_size == 0 {
                    return Err(bad("must be more than 0".into()));
                }
            }
            "batch_wait" => self.batch_wait = parse_duration(v).map_err(bad)?,
            "queue_max" => {
                self.queue_max = parse_size(v).map_err(bad)?;
                self.queue_max_given = true;
            }
            "spool" => self.spool = on_off(v).map_err(bad)?,
            "spool_max" => self.spool_max = parse_size(v).map_err(bad)?,
            "timeout" => self.timeout = positive(parse_duration(v).map_err(bad)?)?,
            "min_backoff" => self.min_backoff = positive(parse_duration(v).map_err(bad)?)?,
            "max_backoff" => self.max_backoff = positive(parse_duration(v).map_err(bad)?)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The URL's options: header options and [`QUEUE_KEYS`] taken here, each at most
    /// once; the rest, if in `own` (the output's own options), returned in order.
    pub fn take_options(
        &mut self,
        url: &url::Url,
        own: &[&str],
    ) -> Result<Vec<(String, String)>, String> {
        let known: Vec<&str> = own.iter().chain(QUEUE_KEYS).copied().collect();
        let mut seen = BTreeSet::new();
        let mut header_names = BTreeSet::new();
        let mut rest = Vec::new();
        for (k, v) in url.query_pairs() {
            let (k, v) = (k.into_owned(), v.into_owned());
            if k.starts_with(HEADER) || k.starts_with(HEADER_FILE) {
                self.set_header(&k, v, &mut header_names)?;
                continue;
            }
            if !known.contains(&k.as_str()) {
                return Err(format!(
                    "unknown option {k:?} (known: {}, header.NAME, header_file.NAME)",
                    known.join(", ")
                ));
            }
            if !seen.insert(k.clone()) {
                return Err(format!("option {k} given twice"));
            }
            if !self.set(&k, &v)? {
                rest.push((k, v));
            }
        }
        Ok(rest)
    }

    /// `header.NAME=VALUE` or `header_file.NAME=PATH`.
    fn set_header(
        &mut self,
        k: &str,
        v: String,
        names: &mut BTreeSet<String>,
    ) -> Result<(), String> {
        let (name, from_file) = match k.strip_prefix(HEADER_FILE) {
            Some(n) => (n, true),
            None => (&k[HEADER.len()..], false),
        };
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(format!(
                "option {k}: {name:?} is not an HTTP header name (letters, digits, !#$%&'*+-.^_`|~)"
            ));
        }
        let lower = name.to_ascii_lowercase();
        if auth::RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(format!(
                "option {k}: hbwatch sets {name} itself (use user and password, \
                 bearer_token_file or tenant for the usual ones)"
            ));
        }
        if !names.insert(lower) {
            return Err(format!("header {name} given twice"));
        }
        if from_file {
            if v.is_empty() {
                return Err(format!("option {k}: expected the path of a file"));
            }
            self.header_files.push((name.to_string(), PathBuf::from(v)));
        } else {
            // The value is not echoed: it may be a key.
            check_header_value(&v).map_err(|why| format!("option {k}: {why}"))?;
            self.headers.push((name.to_string(), Secret(v)));
        }
        Ok(())
    }

    /// Checks the options together, once all are set.
    pub fn check(&mut self, parts: &UrlParts, prefix: &str) -> Result<(), String> {
        for (k, given) in [
            ("ca", self.ca.is_some()),
            ("cert", self.cert.is_some()),
            ("key", self.key.is_some()),
        ] {
            if given && !parts.tls {
                return Err(format!("option {k} only applies to {prefix}+https"));
            }
        }
        if self.cert.is_some() != self.key.is_some() {
            return Err("options cert and key go together (client certificate and its key)".into());
        }
        if self.password.is_some() && self.password_file.is_some() {
            return Err("a password in the URL and password_file: give one".into());
        }
        if self.password_file.is_some() && self.user.is_none() {
            return Err(format!(
                "password_file without a user name ({prefix}+https://USER@host...)"
            ));
        }
        if self.bearer_token.is_some() && self.bearer_token_file.is_some() {
            return Err("bearer_token and bearer_token_file: give one".into());
        }
        if self.user.is_some() && (self.bearer_token.is_some() || self.bearer_token_file.is_some())
        {
            return Err(
                "basic auth (user in the URL) and a bearer token: a request takes one Authorization"
                    .into(),
            );
        }
        if self.queue_max < self.batch_size {
            if self.queue_max_given {
                return Err(format!(
                    "queue_max ({}) must be at least batch_size ({})",
                    self.queue_max, self.batch_size
                ));
            }
            self.queue_max = self.batch_size;
        }
        if self.min_backoff > self.max_backoff {
            return Err(format!(
                "min_backoff ({:?}) is more than max_backoff ({:?})",
                self.min_backoff, self.max_backoff
            ));
        }
        Ok(())
    }

    /// The worker's settings for output `name`, whose receiver logs call `peer`.
    pub fn config(&self, name: &str, peer: &'static str) -> Config {
        Config {
            name: name.to_string(),
            peer,
            batch_size: self.batch_size,
            batch_wait: self.batch_wait,
            queue_max: self.queue_max,
            timeout: self.timeout,
            min_backoff: self.min_backoff,
            max_backoff: self.max_backoff,
        }
    }

    /// The names of every header the options add (`header.NAME`, `header_file.NAME`).
    pub fn header_names(&self) -> impl Iterator<Item = &str> {
        self.headers
            .iter()
            .map(|h| h.0.as_str())
            .chain(self.header_files.iter().map(|h| h.0.as_str()))
    }

    /// The `Authorization` header: basic auth (password from the URL or `password_file`)
    /// or a bearer token (inline or `bearer_token_file`). Reads the files.
    pub fn authorization(&self) -> anyhow::Result<Option<Secret>> {
        if let Some(u) = &self.user {
            let pass = match (&self.password, &self.password_file) {
                (Some(p), _) => p.clone(),
                (None, Some(f)) => read_secret("password_file", f)?,
                (None, None) => Secret(String::new()),
            };
            return Ok(Some(Secret(http::basic_auth(u, &pass.0).1)));
        }
        let token = match (&self.bearer_token, &self.bearer_token_file) {
            (Some(t), _) => t.clone(),
            (None, Some(f)) => read_secret("bearer_token_file", f)?,
            (None, None) => return Ok(None),
        };
        Ok(Some(Secret(format!("Bearer {}", token.0))))
    }

    /// The HTTP client of output `name`: TLS (CAs, client certificate), `Content-Type`,
    /// `Authorization`, `extra` headers (the output's own: Loki's tenant), then
    /// `header.NAME` and `header_file.NAME` (read now). Warns about an inline token.
    pub fn client(
        &self,
        name: &str,
        content_type: &str,
        extra: Vec<(String, Secret)>,
    ) -> anyhow::Result<http::Client> {
        if self.bearer_token.is_some() {
            warn!(
                "output {name}: bearer_token in the URL shows in the command line and the config; \
                 prefer bearer_token_file (with systemd, LoadCredential=)"
            );
        }
        let tls = if self.endpoint.starts_with("https:") {
            Some(tls::config(self, name)?)
        } else {
            None
        };
        let mut headers = vec![("Content-Type".to_string(), Secret(content_type.to_string()))];
        if let Some(a) = self.authorization()? {
            headers.push(("Authorization".into(), a));
        }
        headers.extend(extra);
        headers.extend(self.header_values()?);
        http::Client::new(&self.endpoint, self.timeout, tls, headers)
    }

    /// `header.NAME` and `header_file.NAME` (read now), in the order given.
    pub fn header_values(&self) -> anyhow::Result<Vec<(String, Secret)>> {
        let mut out = self.headers.clone();
        for (h, file) in &self.header_files {
            out.push((h.clone(), read_secret(&format!("header_file.{h}"), file)?));
        }
        Ok(out)
    }
}

/// An output name made a directory name: anything but `[A-Za-z0-9.-]` becomes `_`.
pub fn spool_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub fn now_unix_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// `300ms`, `2.5s`: for logs.
fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// How long `close` waits past its timeout for the worker to come back from a push
/// (pushes started during `close` end by the deadline; one started before may not).
const CLOSE_GRACE: Duration = Duration::from_millis(100);

/// The sending side of a batching output: appends events to the shared state and wakes
/// the worker; closes within a deadline; reports figures.
pub struct Pipeline<B: Payload> {
    cfg: Config,
    shared: Arc<Shared<B>>,
    worker: Option<JoinHandle<()>>,
    bad_timestamp_logged: bool,
}

impl<B: Payload> Pipeline<B> {
    /// Opens the spool (`dir`, files ending in `suffix`; none when `opts.spool` is off)
    /// and starts the worker thread `thread`.
    pub fn open<T: Transport<Batch = B>>(
        cfg: Config,
        opts: &QueueOptions,
        dir: &Path,
        suffix: &'static str,
        transport: T,
        thread: &str,
    ) -> anyhow::Result<Pipeline<B>> {
        let spool = if opts.spool {
            let s = Spool::open(dir, opts.spool_max, suffix).map_err(|e| {
                anyhow::anyhow!(
                    "output {}: {e} (set STATE_DIRECTORY, or add spool=off to run without a spool)",
                    cfg.name
                )
            })?;
            if !s.is_empty() {
                info!(
                    "output {}: {} events in {} batches wait in the spool {} from an earlier run; \
                     delivering them first",
                    cfg.name,
                    s.events(),
                    s.len(),
                    dir.display()
                );
            }
            Some(s)
        } else {
            let left = spool::batches_in(dir, suffix);
            if left > 0 {
                warn!(
                    "output {}: spool=off: {left} batches an earlier run left in {} are not delivered",
                    cfg.name,
                    dir.display()
                );
            }
            None
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(spool)),
            wake: Condvar::new(),
            done: Condvar::new(),
        });
        let worker = {
            let (shared, cfg) = (shared.clone(), cfg.clone());
            std::thread::Builder::new()
                .name(thread.into())
                .spawn(move || run(shared, cfg, transport))?
        };
        Ok(Pipeline {
            cfg,
            shared,
            worker: Some(worker),
            bad_timestamp_logged: false,
        })
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// An event's `@timestamp` in Unix nanoseconds; the current time (logged once) if it
    /// is not RFC 3339.
    pub fn event_time_ns(&mut self, timestamp: &str) -> i128 {
        match time::OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339)
        {
            Ok(t) => t.unix_timestamp_nanos(),
            Err(e) => {
                if !self.bad_timestamp_logged {
                    warn!(
                        "output {}: event time {timestamp:?} is not RFC 3339 ({e}); using the current time",
                        self.cfg.name
                    );
                    self.bad_timestamp_logged = true;
                }
                now_unix_ns()
            }
        }
    }

    /// Puts one event of `bytes` into the batch being filled (`add` does the putting).
    pub fn add(&self, bytes: u64, add: impl FnOnce(&mut B)) -> anyhow::Result<()> {
        let mut st = self.shared.lock();
        if st.closed {
            anyhow::bail!("output {} is closed", self.cfg.name);
        }
        let first = st.open.events == 0;
        add(&mut st.open.req);
        st.open.added(bytes);
        if st.open.bytes >= self.cfg.batch_size {
            st.seal(&self.cfg);
            self.shared.wake.notify_one();
        } else if first {
            // The worker arms the batch_wait timer.
            self.shared.wake.notify_one();
        }
        Ok(())
    }

    pub fn flush(&self) {
        // Events are with the worker already; it sends them on `batch_wait`.
        self.shared.wake.notify_one();
    }

    /// Delivers until `timeout`, then spools the rest.
    pub fn close(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        if st.closed {
            return;
        }
        st.closed = true;
        st.closing = Some(deadline);
        self.shared.wake.notify_all();
        let give_up = deadline + CLOSE_GRACE;
        while !st.finished {
            let now = Instant::now();
            if now >= give_up {
                break;
            }
            st = self
                .shared
                .done
                .wait_timeout(st, give_up - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if st.finished {
            drop(st);
            if let Some(w) = self.worker.take() {
                let _ = w.join();
            }
            st = self.shared.lock();
        } else {
            // The worker is stuck in a push despite its timeout: keep what memory holds
            // and count the batch it is pushing as lost.
            abandon(&mut st, &self.cfg);
        }
        if let Some(spool) = st.spool.as_mut() {
            // Nothing writes to it any more (an abandoned worker leaves the state alone).
            spool.unlock();
        }
        if let Some(spool) = st.spool.as_ref().filter(|s| !s.is_empty()) {
            warn!(
                "output {}: {} events not delivered within {} stay in the spool {} \
                 ({} bytes); the next start delivers them first",
                self.cfg.name,
                spool.events(),
                human(timeout),
                spool.dir().display(),
                spool.bytes()
            );
        }
    }

    pub fn stats(&self) -> SinkStats {
        let st = self.shared.lock();
        SinkStats {
            delivered: st.delivered,
            dropped: st.dropped,
            queued: st.queued(),
            spool_bytes: st.spool.as_ref().map_or(0, Spool::bytes),
            retries: st.retries,
        }
    }
}

impl<B: Payload> Drop for Pipeline<B> {
    fn drop(&mut self) {
        // Not closed by the agent (an error path): keep what memory holds in the spool.
        self.close(Duration::ZERO);
    }
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
