//! Where events go: stdout, files, Grafana Loki, OpenTelemetry (OTLP), syslog. Every sink is named by a
//! URL (`--output URL`, repeatable, or `outputs = [...]` in the config), gets every event,
//! and reports what it delivered and dropped; drops become `agent.events_lost`.

pub mod file;
pub mod loki;
pub mod otlp;
pub mod queue;
pub mod stdout;
pub mod syslog;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tracing::warn;

use crate::event::{Action, Event, Level, Observer, Said};
use stdout::{Format, LineSink};

/// Receives every event in order.
pub trait Sink {
    /// Takes one event. Network sinks queue it and must not block on the network.
    fn send(&mut self, ev: &Event) -> anyhow::Result<()>;
    /// Hands buffered events on (to the writer, to the sender thread); does not wait for
    /// a remote peer.
    fn flush(&mut self) -> anyhow::Result<()>;
    /// Delivers everything queued, waiting at most `timeout` for remote peers; what is
    /// still undelivered then is kept (a spool) or counted as dropped.
    fn close(&mut self, timeout: std::time::Duration) -> anyhow::Result<()> {
        let _ = timeout;
        self.flush()
    }
    /// What this sink is, for logs, metrics and `agent.events_lost` (`stdout`,
    /// `file:/var/log/hbwatch.ndjson`, `loki+http://loki:3100`, ...).
    fn name(&self) -> String {
        "stdout".to_string()
    }
    /// Delivery figures so far (counters only grow; gauges are current).
    fn stats(&self) -> SinkStats {
        SinkStats::default()
    }
    /// Figures per underlying sink (a fan-out has several).
    fn each_stats(&self) -> Vec<(String, SinkStats)> {
        vec![(self.name(), self.stats())]
    }
    /// SIGHUP: files are opened again by name (after logrotate moved them away).
    fn reopen(&mut self) {}
}

/// Delivery figures of one sink, for metrics and loss reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Events delivered (written, acknowledged by the peer).
    pub delivered: u64,
    /// Events given up on (queue and spool full, peer rejected them for good, shutdown
    /// timeout without a spool). Reported as `agent.events_lost`.
    pub dropped: u64,
    /// Events waiting in memory.
    pub queued: u64,
    /// Bytes waiting in the on-disk spool.
    pub spool_bytes: u64,
    /// Delivery attempts that failed and will be retried.
    pub retries: u64,
}

impl<S: Sink + ?Sized> Sink for Box<S> {
    fn send(&mut self, ev: &Event) -> anyhow::Result<()> {
        (**self).send(ev)
    }
    fn flush(&mut self) -> anyhow::Result<()> {
        (**self).flush()
    }
    fn close(&mut self, timeout: std::time::Duration) -> anyhow::Result<()> {
        (**self).close(timeout)
    }
    fn name(&self) -> String {
        (**self).name()
    }
    fn stats(&self) -> SinkStats {
        (**self).stats()
    }
    fn each_stats(&self) -> Vec<(String, SinkStats)> {
        (**self).each_stats()
    }
    fn reopen(&mut self) {
        (**self).reopen()
    }
}

/// Looks at or rewrites each event on its way to another sink (metrics, privacy).
pub trait Filter {
    fn apply<'e>(&mut self, ev: &'e Event) -> std::borrow::Cow<'e, Event>;
}

/// Every event through `filter`, then to `inner`; everything else is `inner`'s.
pub struct Filtered<'a, F> {
    inner: &'a mut dyn Sink,
    filter: F,
}

impl<'a, F: Filter> Filtered<'a, F> {
    pub fn new(inner: &'a mut dyn Sink, filter: F) -> Filtered<'a, F> {
        Filtered { inner, filter }
    }
}

impl<F: Filter> Sink for Filtered<'_, F> {
    fn send(&mut self, ev: &Event) -> anyhow::Result<()> {
        let ev = self.filter.apply(ev);
        self.inner.send(&ev)
    }
    fn flush(&mut self) -> anyhow::Result<()> {
        self.inner.flush()
    }
    fn close(&mut self, timeout: std::time::Duration) -> anyhow::Result<()> {
        self.inner.close(timeout)
    }
    fn name(&self) -> String {
        self.inner.name()
    }
    fn stats(&self) -> SinkStats {
        self.inner.stats()
    }
    fn each_stats(&self) -> Vec<(String, SinkStats)> {
        self.inner.each_stats()
    }
    fn reopen(&mut self) {
        self.inner.reopen()
    }
}

/// A `--output` URL that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("output {url:?}: {why}")]
pub struct SinkError {
    pub url: String,
    pub why: String,
}

/// One parsed `--output` URL.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkSpec {
    /// `stdout` (or `-`): NDJSON, or the aligned view on a terminal (`--format`).
    Stdout,
    /// `file:PATH[?max_size=..&max_age=..&keep=..]`.
    File(file::FileOptions),
    /// `loki+http://HOST:PORT[/path][?...]`, `loki+https://...`.
    Loki(Box<loki::LokiOptions>),
    /// `otlp+http://HOST:PORT[/path][?...]`, `otlp+https://...`: OTLP/HTTP logs.
    Otlp(Box<otlp::OtlpOptions>),
    /// `syslog+udp://`, `syslog+tcp://`, `syslog+tls://HOST:PORT[?...]`.
    Syslog(syslog::SyslogOptions),
}

pub const SCHEMES: &str = "stdout, file:PATH, loki+http://HOST:PORT, loki+https://HOST:PORT, \
                           otlp+http://HOST:PORT, otlp+https://HOST:PORT, syslog+udp://HOST:PORT, syslog+tcp://HOST:PORT, syslog+tls://HOST:PORT";

impl std::str::FromStr for SinkSpec {
    type Err = SinkError;

    fn from_str(spec: &str) -> Result<Self, SinkError> {
        let err = |why: String| SinkError {
            url: spec.to_string(),
            why,
        };
        if spec == "stdout" || spec == "-" {
            return Ok(SinkSpec::Stdout);
        }
        if let Some(rest) = spec.strip_prefix("file:") {
            return file::FileOptions::parse(rest)
                .map(SinkSpec::File)
                .map_err(err);
        }
        let url = url::Url::parse(spec)
            .map_err(|e| err(format!("not a URL ({e}); expected one of: {SCHEMES}")))?;
        match url.scheme() {
            "loki+http" | "loki+https" => loki::LokiOptions::parse(&url)
                .map(|o| SinkSpec::Loki(Box::new(o)))
                .map_err(|why| SinkError {
                    // Not the password or token given in the URL.
                    url: queue::auth::redact(&url),
                    why,
                }),
            "otlp+http" | "otlp+https" => otlp::OtlpOptions::parse(&url)
                .map(|o| SinkSpec::Otlp(Box::new(o)))
                .map_err(|why| SinkError {
                    url: queue::auth::redact(&url),
                    why,
                }),
            "syslog+udp" | "syslog+tcp" | "syslog+tls" => syslog::SyslogOptions::parse(&url)
                .map(SinkSpec::Syslog)
                .map_err(err),
            other => Err(err(format!(
                "unknown scheme {other:?}; expected one of: {SCHEMES}"
            ))),
        }
    }
}

/// What sinks need from the agent to label and store events.
#[derive(Debug, Clone)]
pub struct SinkContext {
    /// `host` stream label (Loki), HOSTNAME (syslog).
    pub hostname: String,
    /// `job` stream label (Loki), APP-NAME (syslog): `hbwatch`.
    pub job: String,
    /// Extra static labels from the config (Loki stream labels: keep them few and fixed).
    pub labels: BTreeMap<String, String>,
    /// Where sinks with an on-disk spool keep it (one subdirectory per sink).
    pub spool_dir: PathBuf,
    /// Format of `stdout`.
    pub stdout_format: Format,
}

impl SinkContext {
    pub fn new(hostname: String, stdout_format: Format) -> SinkContext {
        SinkContext {
            hostname,
            job: "hbwatch".to_string(),
            labels: BTreeMap::new(),
            spool_dir: default_spool_dir(),
            stdout_format,
        }
    }
}

/// `$STATE_DIRECTORY` (systemd `StateDirectory=`), else `/var/lib/hbwatch` as root, else
/// `$XDG_STATE_HOME/hbwatch` or `~/.local/state/hbwatch`.
pub fn default_spool_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("STATE_DIRECTORY") {
        // systemd may pass several, colon-separated: the first is ours.
        let first = d
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_string();
        if !first.is_empty() {
            return PathBuf::from(first).join("spool");
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/hbwatch/spool");
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("hbwatch/spool")
}

/// Opens one sink.
pub fn open(spec: &SinkSpec, ctx: &SinkContext) -> anyhow::Result<Box<dyn Sink + Send>> {
    Ok(match spec {
        SinkSpec::Stdout => Box::new(LineSink::new(
            std::io::BufWriter::with_capacity(1 << 16, std::io::stdout()),
            ctx.stdout_format,
        )),
        SinkSpec::File(o) => file::open(o)?,
        SinkSpec::Loki(o) => loki::open(o, ctx)?,
        SinkSpec::Otlp(o) => otlp::open(o, ctx)?,
        SinkSpec::Syslog(o) => syslog::open(o, ctx)?,
    })
}

/// Every event to every sink. A sink that fails does not stop the others: its failures
/// count as its drops.
pub struct Fanout {
    sinks: Vec<Box<dyn Sink + Send>>,
    /// Events a sink's `send` refused, per sink.
    refused: Vec<u64>,
}

impl Fanout {
    pub fn new(sinks: Vec<Box<dyn Sink + Send>>) -> Fanout {
        let n = sinks.len();
        Fanout {
            sinks,
            refused: vec![0; n],
        }
    }

    /// Opens every spec; stdout alone when there are none.
    pub fn open(specs: &[SinkSpec], ctx: &SinkContext) -> anyhow::Result<Fanout> {
        let specs = if specs.is_empty() {
            &[SinkSpec::Stdout][..]
        } else {
            specs
        };
        let mut sinks = Vec::with_capacity(specs.len());
        for s in specs {
            sinks.push(open(s, ctx)?);
        }
        Ok(Fanout::new(sinks))
    }

    /// Each sink's name and figures (drops include refused sends).
    pub fn each_stats(&self) -> Vec<(String, SinkStats)> {
        self.sinks
            .iter()
            .zip(&self.refused)
            .map(|(s, refused)| {
                let mut st = s.stats();
                st.dropped += refused;
                (s.name(), st)
            })
            .collect()
    }
}

impl Sink for Fanout {
    fn send(&mut self, ev: &Event) -> anyhow::Result<()> {
        for (i, s) in self.sinks.iter_mut().enumerate() {
            if let Err(e) = s.send(ev) {
                if self.refused[i] == 0 {
                    warn!("output {}: {e:#}", s.name());
                }
                self.refused[i] += 1;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        for s in &mut self.sinks {
            if let Err(e) = s.flush() {
                warn!("output {}: {e:#}", s.name());
            }
        }
        Ok(())
    }

    /// Closes every sink within one shared deadline.
    fn close(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        for s in &mut self.sinks {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Err(e) = s.close(left) {
                warn!("output {}: {e:#}", s.name());
            }
        }
        Ok(())
    }

    fn name(&self) -> String {
        self.sinks
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn each_stats(&self) -> Vec<(String, SinkStats)> {
        Fanout::each_stats(self)
    }

    fn reopen(&mut self) {
        for s in &mut self.sinks {
            s.reopen();
        }
    }

    fn stats(&self) -> SinkStats {
        Fanout::each_stats(self)
            .into_iter()
            .fold(SinkStats::default(), |a, (_, s)| SinkStats {
                delivered: a.delivered + s.delivered,
                dropped: a.dropped + s.dropped,
                queued: a.queued + s.queued,
                spool_bytes: a.spool_bytes + s.spool_bytes,
                retries: a.retries + s.retries,
            })
    }
}

/// Turns sinks' growing drop counters into `agent.events_lost` events, once per drop.
#[derive(Debug, Default)]
pub struct LossTracker {
    reported: BTreeMap<String, u64>,
}

impl LossTracker {
    /// `agent.events_lost` for every sink of `out` that dropped events since the last call.
    pub fn check(&mut self, out: &dyn Sink, observer: &Observer, unix_ns: i128) -> Vec<Event> {
        let mut events = Vec::new();
        for (name, st) in out.each_stats() {
            let seen = self.reported.entry(name.clone()).or_default();
            if st.dropped <= *seen {
                continue;
            }
            let delta = st.dropped - *seen;
            *seen = st.dropped;
            let mut ev = Event::new(
                crate::event::rfc3339_micros(unix_ns),
                observer.clone(),
                Said {
                    action: Action::AgentEventsLost,
                    level: Level::Error,
                    message: format!(
                        "{delta} events lost by output {name} ({} since start)",
                        st.dropped
                    ),
                },
            );
            ev.heartbeat.lost = Some(delta);
            ev.heartbeat.where_ = Some(format!("sink:{name}"));
            events.push(ev);
        }
        events
    }
}

/// Splits `a=b&c=d` into pairs, refusing keys not in `known` (sinks' option parsing).
pub fn query_pairs<'a>(
    pairs: impl Iterator<Item = (String, String)> + 'a,
    known: &[&str],
) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        if !known.contains(&k.as_str()) {
            return Err(format!(
                "unknown option {k:?} (known: {})",
                known.join(", ")
            ));
        }
        out.push((k, v));
    }
    Ok(out)
}

/// `10MiB`, `512k`, `1G`, `4096`: bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 4096, 512KiB, 10MB, 1GiB)"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("{s:?}: unknown size unit (use B, KiB, MiB or GiB)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// `500ms`, `10s`, `5m`, `1h`, `1d`: a duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 10s, 5m, 1h, 1d)"))?;
    let ms = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "{s:?}: unknown duration unit (use ms, s, m, h or d)"
            ))
        }
    };
    n.checked_mul(ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("1TB").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("1y").is_err());
    }

    #[test]
    fn unknown_schemes_say_what_is_accepted() {
        let e = "kafka://broker:9092".parse::<SinkSpec>().unwrap_err();
        assert!(e.to_string().contains("unknown scheme \"kafka\""), "{e}");
        assert!(e.to_string().contains("syslog+udp://"), "{e}");
        assert_eq!("stdout".parse::<SinkSpec>(), Ok(SinkSpec::Stdout));
    }

    /// A sink that refuses everything: its refusals are drops, reported once each.
    struct Refuser;
    impl Sink for Refuser {
        fn send(&mut self, _: &Event) -> anyhow::Result<()> {
            anyhow::bail!("refused")
        }
        fn flush(&mut self) -> anyhow::Result<()> {
            Ok(())
        }
        fn name(&self) -> String {
            "refuser".into()
        }
    }

    #[test]
    fn a_failing_sink_does_not_stop_the_others_and_its_drops_are_reported() {
        let obs = Observer {
            hostname: "h".into(),
            ingress: None,
        };
        let ev = Event::new(
            "t".into(),
            obs.clone(),
            Said {
                action: Action::PeerUp,
                level: Level::Info,
                message: "m".into(),
            },
        );
        let mut fan = Fanout::new(vec![
            Box::new(Refuser),
            Box::new(LineSink::json(Vec::<u8>::new())),
        ]);
        fan.send(&ev).unwrap();
        fan.send(&ev).unwrap();
        let st = fan.each_stats();
        assert_eq!(st[0].1.dropped, 2);
        assert_eq!(st[1].1.delivered, 2);
        let mut tracker = LossTracker::default();
        let lost = tracker.check(&fan, &obs, 0);
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].heartbeat.lost, Some(2));
        assert_eq!(lost[0].heartbeat.where_.as_deref(), Some("sink:refuser"));
        assert!(tracker.check(&fan, &obs, 0).is_empty(), "reported once");
        fan.send(&ev).unwrap();
        assert_eq!(tracker.check(&fan, &obs, 0)[0].heartbeat.lost, Some(1));
    }
}
