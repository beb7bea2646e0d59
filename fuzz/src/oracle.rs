//! Oracles: what must hold whatever the input.

use std::cell::Cell;

use hbwatch::event::Event;
use hbwatch::sink::stdout::pretty;
use hbwatch::sink::Sink;
use hbwatch_common::frame::Frame;
use serde_json::Value;

/// A frame whose reads must stay inside a window (the L4 payload the packet declares):
/// a decoder that reads outside it reads padding or another header, and a read outside
/// panics. Reads past the end of the bytes give `None`, as in the kernel.
pub struct WindowFrame<'a> {
    pub bytes: &'a [u8],
    pub lo: usize,
    pub hi: usize,
    /// Highest offset read + 1 (0 = nothing read).
    pub read_end: Cell<usize>,
}

impl<'a> WindowFrame<'a> {
    pub fn new(bytes: &'a [u8], lo: usize, len: usize) -> Self {
        WindowFrame {
            bytes,
            lo,
            hi: lo + len,
            read_end: Cell::new(0),
        }
    }
}

impl Frame for WindowFrame<'_> {
    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let end = offset.checked_add(N)?;
        assert!(
            offset >= self.lo && end <= self.hi,
            "read of {N} bytes at {offset} outside the payload [{}, {})",
            self.lo,
            self.hi
        );
        let src = self.bytes.get(offset..end)?;
        self.read_end.set(self.read_end.get().max(end));
        let mut out = [0u8; N];
        out.copy_from_slice(src);
        Some(out)
    }
}

/// One NDJSON line as a sink writes it: UTF-8, no raw control characters (every
/// untrusted byte escaped), one JSON object with the contract's always-present fields.
pub fn check_line(line: &[u8]) -> Value {
    let text = std::str::from_utf8(line).expect("a line is UTF-8");
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        panic!("raw control character {c:?} in line {text:?}");
    }
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    assert!(v.is_object(), "{text}");
    assert!(v["@timestamp"].is_string(), "{text}");
    assert!(v["event"]["action"].is_string(), "{text}");
    assert!(v["event"]["kind"].is_string(), "{text}");
    assert!(v["event"]["severity"].is_u64(), "{text}");
    assert!(v["log"]["level"].is_string(), "{text}");
    assert!(v["message"].is_string(), "{text}");
    assert_eq!(v["event"]["category"], serde_json::json!(["network"]));
    v
}

/// An event through the JSON line and the pretty line: the line passes [`check_line`],
/// its strings decode to exactly the event's strings, and the pretty line (no colour)
/// has no control character but its final newline.
pub fn check_event(ev: &Event) -> Value {
    let mut buf = Vec::new();
    ev.write_line(&mut buf);
    assert_eq!(buf.pop(), Some(b'\n'));
    assert!(!buf.contains(&b'\n'));
    let v = check_line(&buf);
    assert_eq!(v["message"].as_str(), Some(ev.message.as_str()));
    assert_eq!(v["@timestamp"].as_str(), Some(ev.timestamp.as_str()));
    assert_eq!(
        v["observer"]["hostname"].as_str(),
        Some(ev.observer.hostname.as_str())
    );
    // Every field is one docs/EVENTS.md lists, with a value its type takes.
    let wrong = hbwatch::schema::violations(&v);
    assert!(wrong.is_empty(), "{wrong:?} in {v}");
    if let Some(sip) = &ev.sip {
        let s = &v["sip"];
        assert_eq!(s["call_id"].as_str(), sip.call_id.as_deref());
        assert_eq!(s["aor"].as_str(), sip.aor.as_deref());
        assert_eq!(s["device"].as_str(), sip.device.as_deref());
        assert_eq!(s["status"].as_str(), sip.status.as_deref());
        assert_eq!(s["method"].as_str(), sip.method.as_deref());
    }
    if let Some(evidence) = &ev.heartbeat.evidence {
        let decoded: Vec<&str> = v["heartbeat"]["evidence"]
            .as_array()
            .expect("evidence is an array")
            .iter()
            .map(|e| e.as_str().expect("evidence strings"))
            .collect();
        assert_eq!(
            decoded,
            evidence.iter().map(String::as_str).collect::<Vec<_>>()
        );
    }
    let line = pretty(ev, false);
    let body = line
        .strip_suffix('\n')
        .expect("pretty line ends in a newline");
    if let Some(c) = body.chars().find(|c| c.is_control()) {
        panic!("raw control character {c:?} in the pretty line {line:?}");
    }
    v
}

/// A sink that checks every event it gets and keeps the decoded lines.
#[derive(Default)]
pub struct CheckSink {
    pub lines: Vec<Value>,
}

impl Sink for CheckSink {
    fn send(&mut self, ev: &Event) -> anyhow::Result<()> {
        self.lines.push(check_event(ev));
        Ok(())
    }
    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}
