//! The stdout sink: NDJSON for machines, one aligned coloured line per event for people
//! at a terminal (`--format pretty`). [`LineSink`] writes either to any writer.

use std::io::Write;

use super::{Sink, SinkStats};
use crate::event::{Event, Level};

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
