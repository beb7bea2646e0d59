//! Where events go and how they look: NDJSON for machines, one aligned coloured line
//! per event for people at a terminal (`--format pretty`).

use std::io::Write;

use crate::event::{Event, Level};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    /// `pretty` when stdout is a terminal, `json` otherwise.
    Auto,
    Json,
    Pretty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Pretty { color: bool },
}

impl FormatArg {
    /// The format for stdout.
    pub fn resolve(self) -> Format {
        let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
        match self {
            FormatArg::Json => Format::Json,
            FormatArg::Pretty => Format::Pretty { color: tty },
            FormatArg::Auto if tty => Format::Pretty { color: true },
            FormatArg::Auto => Format::Json,
        }
    }
}

/// Events as lines on a writer (stdout, a file, a test buffer).
pub struct LineSink<W: Write> {
    out: W,
    format: Format,
    delivered: u64,
    /// Reused line buffer (NDJSON at line rate allocates nothing per event).
    buf: Vec<u8>,
}

impl<W: Write> LineSink<W> {
    pub fn new(out: W, format: Format) -> Self {
        LineSink {
            out,
            format,
            delivered: 0,
            buf: Vec::with_capacity(1024),
        }
    }

    pub fn json(out: W) -> Self {
        LineSink::new(out, Format::Json)
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write> Sink for LineSink<W> {
    fn send(&mut self, ev: &Event) -> anyhow::Result<()> {
        match self.format {
            Format::Json => {
                self.buf.clear();
                ev.write_line(&mut self.buf);
                self.out.write_all(&self.buf)?;
            }
            Format::Pretty { color } => self.out.write_all(pretty(ev, color).as_bytes())?,
        }
        self.delivered += 1;
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.out.flush()?;
        Ok(())
    }

    fn stats(&self) -> SinkStats {
        SinkStats {
            delivered: self.delivered,
            ..SinkStats::default()
        }
    }
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

const RESET: &str = "\x1b[0m";
const DIM: &str = "\x1b[2m";
const BOLD: &str = "\x1b[1m";

fn level_style(l: Level) -> (&'static str, &'static str) {
    match l {
        Level::Info => ("INFO", "\x1b[32m"),
        Level::Warning => ("WARN", "\x1b[33m"),
        Level::Error => ("ERR ", "\x1b[31m"),
        Level::Critical => ("CRIT", "\x1b[1;41;97m"),
    }
}

/// One line: time, severity, protocol, what happened (the message without its
/// association prefix, which gets its own column), diagnosis.
pub fn pretty(ev: &Event, color: bool) -> String {
    let (paint, dim, bold, reset) = if color {
        (level_style(ev.log.level).1, DIM, BOLD, RESET)
    } else {
        ("", "", "", "")
    };
    let label = level_style(ev.log.level).0;
    // `2026-11-22T10:00:10.450000Z` -> `10:00:10.450`
    let time = ev.timestamp.get(11..23).unwrap_or(&ev.timestamp);
    let proto = ev.network.as_ref().map_or("agent", |n| n.protocol);
    let assoc = match (&ev.source, &ev.destination) {
        (Some(s), Some(d)) => format!("{}:{} -> {}:{}", s.ip, s.port, d.ip, d.port),
        _ => String::new(),
    };
    let what = ev
        .message
        .split_once(": ")
        .filter(|(head, _)| !assoc.is_empty() && head.ends_with(&format!("{}", d_port(ev))))
        .map_or(ev.message.as_str(), |(_, rest)| rest);
    let what = printable(what);
    let diag = ev
        .heartbeat
        .diagnosis
        .filter(|d| !what.contains(d))
        .map(|d| format!(" {bold}[{d}]{reset}"))
        .unwrap_or_default();
    format!(
        "{dim}{time}{reset} {paint}{label}{reset} {proto:<11} {assoc:<44} {bold}{:<22}{reset} {what}{diag}\n",
        ev.event.action
    )
}

/// Text for a terminal: control characters shown escaped (`\u{1b}`), never raw. Messages
/// quote packet text (SIP reasons, Call-IDs), which the SIP parser already cleans; this
/// keeps any other source from moving the cursor or recolouring the screen.
fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return s.into();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

fn d_port(ev: &Event) -> u16 {
    ev.destination.as_ref().map_or(0, |d| d.port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gap() -> Event {
        crate::event::mds_alert(
            "2026-11-22T10:00:20.001200Z".into(),
            crate::event::Action::PeerDown,
            Level::Critical,
            "p",
            "mds 10.50.0.1:41000 -> 10.50.0.2:41000: peer down: 5 missed".into(),
        )
    }

    #[test]
    fn pretty_line_has_time_level_association_action_and_diagnosis() {
        let line = pretty(&gap(), false);
        assert_eq!(
            line,
            format!(
                "10:00:20.001 CRIT mds         {:<44} {:<22} peer down: 5 missed [path-interruption]\n",
                "10.50.0.1:41000 -> 10.50.0.2:41000", "peer.down"
            )
        );
        let colored = pretty(&gap(), true);
        assert!(colored.contains("\x1b[1;41;97mCRIT\x1b[0m"), "{colored:?}");
    }

    #[test]
    fn pretty_line_escapes_control_characters() {
        let mut ev = gap();
        ev.message = "mds 10.50.0.1:41000 -> 10.50.0.2:41000: \x1b[2J\rX\u{9b}\u{7f}".into();
        let line = pretty(&ev, false);
        assert!(line.contains("\\u{1b}[2J\\rX\\u{9b}\\u{7f}"), "{line:?}");
        assert!(!line.trim_end_matches('\n').chars().any(char::is_control));
    }

    #[test]
    fn json_sink_writes_the_contract_line() {
        let mut sink = LineSink::json(Vec::new());
        sink.send(&gap()).unwrap();
        let out = String::from_utf8(sink.into_inner()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["event"]["action"], "peer.down");
        assert!(out.ends_with('\n'));
    }
}
