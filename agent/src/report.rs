//! `hbwatch analyze --report FILE.html`: one self-contained HTML page per run, for an
//! incident write-up. No script and nothing fetched (a Content-Security-Policy says so
//! to the browser): inline CSS, and a timeline drawn here as inline SVG, one lane per
//! association: heartbeats as ticks (one mark per pixel column, never one element per
//! heartbeat), silent stretches, alerts as markers (their message on hover, an SVG
//! `<title>`), outages shaded from `peer.down`/`sip.expired` to the recovery. Then the
//! outages with their diagnosis and evidence, the `--summary` table, the alerts, and
//! the capture's metadata.
//!
//! Fed by what `analyze` already produces: the events as delivered (after the privacy
//! filter, through [`Collector::tee`]), each file's [`FileReport`] (totals, span, warnings) and,
//! with `AnalyzeOptions::timeline`, its heartbeat times (`correlate::beats`).
//! Everything from packets (SIP strings) is escaped ([`esc`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::convert::association;
use crate::correlate::beats::Track;
use crate::event::{Action, Event, Level};
use crate::offline::{Damage, FileReport};
use crate::sink::{Filter, Filtered, Sink};

/// Events kept for the report at most (heartbeat summaries are never kept); the rest
/// are counted.
pub const MAX_KEPT_EVENTS: usize = 100_000;

/// Lanes drawn at most per capture (associations with trouble first); every
/// association is in the table.
pub const MAX_LANES: usize = 400;

/// Alerts a lane draws one marker each for; past this, one marker per action and
/// 4-pixel column, with `data-count`.
pub const MAX_MARKERS_PER_LANE: usize = 200;

/// Rows of the alert list at most.
const MAX_ALERT_ROWS: usize = 2000;

/// Rows of the association table at most (those with trouble first); `--summary`
/// prints them all.
const MAX_TABLE_ROWS: usize = 10_000;

/// Plot geometry (px).
const PLOT_X: f64 = 10.0;
const PLOT_W: usize = 1340;
const AXIS_H: f64 = 30.0;
const LANE_H: f64 = 40.0;

/// An event as the report needs it.
#[derive(Debug, Clone)]
pub struct Kept {
    /// Position in the run's event stream (to split the stream by file).
    pub index: u64,
    pub ts_ns: u64,
    pub kind: &'static str,
    pub action: Action,
    pub level: Level,
    /// The association as `--summary` names it, if the event has one.
    pub lane: Option<String>,
    pub message: String,
    pub diagnosis: Option<&'static str>,
    pub evidence: Vec<String>,
    pub silence_ms: Option<u64>,
    pub downtime_ms: Option<u64>,
    pub folded: Option<BTreeMap<&'static str, u64>>,
}

/// The association an event is about, named as `convert::association` names it.
fn lane_of(ev: &Event) -> Option<String> {
    let (n, s, d) = (
        ev.network.as_ref()?,
        ev.source.as_ref()?,
        ev.destination.as_ref()?,
    );
    Some(if n.ip_version == "ipv6" {
        format!(
            "{} [{}]:{} -> [{}]:{}",
            n.protocol, s.ip, s.port, d.ip, d.port
        )
    } else {
        format!("{} {}:{} -> {}:{}", n.protocol, s.ip, s.port, d.ip, d.port)
    })
}

fn ts_ns(rfc3339: &str) -> u64 {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp_nanos().max(0) as u64)
        .unwrap_or(0)
}

/// The events of a run, as far as the report needs them.
#[derive(Debug, Default)]
pub struct Collector {
    enabled: bool,
    seen: u64,
    pub kept: Vec<Kept>,
    /// Events past [`MAX_KEPT_EVENTS`].
    pub not_kept: u64,
}

impl Collector {
    /// A collector that keeps events only when `enabled` (else it only passes them on).
    pub fn new(enabled: bool) -> Collector {
        Collector {
            enabled,
            ..Collector::default()
        }
    }

    fn note(&mut self, ev: &Event) {
        let index = self.seen;
        self.seen += 1;
        if !self.enabled || ev.event.kind == "metric" {
            return;
        }
        if self.kept.len() >= MAX_KEPT_EVENTS {
            self.not_kept += 1;
            return;
        }
        let hb = &ev.heartbeat;
        self.kept.push(Kept {
            index,
            ts_ns: ts_ns(&ev.timestamp),
            kind: ev.event.kind,
            action: ev.event.action,
            level: ev.log.level,
            lane: lane_of(ev),
            message: ev.message.clone(),
            diagnosis: hb.diagnosis,
            evidence: hb.evidence.clone().unwrap_or_default(),
            silence_ms: hb.silence_ms,
            downtime_ms: hb.downtime_ms,
            folded: hb.folded.clone(),
        });
    }

    /// A sink that hands every event to `inner` and notes it here.
    pub fn tee<'a>(&'a mut self, inner: &'a mut dyn Sink) -> Filtered<'a, &'a mut Collector> {
        Filtered::new(inner, self)
    }
}

/// [`Collector::tee`]: notes each event, passes it on unchanged.
impl Filter for &mut Collector {
    fn apply<'e>(&mut self, ev: &'e Event) -> std::borrow::Cow<'e, Event> {
        self.note(ev);
        std::borrow::Cow::Borrowed(ev)
    }
}

/// What the page says about the run itself.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// The captures as given on the command line, in the order of the reports.
    pub paths: Vec<PathBuf>,
    pub hostname: String,
}

/// Escapes text for HTML and SVG, in content and in quoted attributes; control
/// characters (none should come: events replace them) become U+FFFD.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            '\n' | '\t' => o.push(' '),
            c if c.is_control() => o.push('\u{fffd}'),
            c => o.push(c),
        }
    }
    o
}

/// `2026-11-22 10:00:34.288` (UTC).
fn clock(ns: u64) -> String {
    let s = crate::event::rfc3339_micros(ns as i128);
    s.get(..23).unwrap_or(&s).replacen('T', " ", 1)
}

fn duration(ms: u64) -> String {
    match ms {
        ms if ms < 10_000 => format!("{ms} ms"),
        ms if ms < 600_000 => format!("{:.1} s", ms as f64 / 1e3),
        ms => format!("{:.1} min", ms as f64 / 6e4),
    }
}

/// An outage on one lane: from `peer.down`/`sip.expired` to the recovery.
#[derive(Debug, Clone)]
struct Outage {
    /// When it was declared (the down event).
    start_ns: u64,
    /// The last heartbeat before it (the down event's `silence_ms` back).
    silence_ns: u64,
    end_ns: u64,
    /// Not recovered within the capture.
    open: bool,
    down: Kept,
    up: Option<Kept>,
}

fn outages(events: &[&Kept], end_ns: u64) -> Vec<Outage> {
    let mut all = Vec::new();
    let mut open: Option<Outage> = None;
    for ev in events {
        match ev.action {
            Action::PeerDown | Action::SipExpired if open.is_none() => {
                let silence = ev.silence_ms.unwrap_or(0).saturating_mul(1_000_000);
                open = Some(Outage {
                    start_ns: ev.ts_ns,
                    silence_ns: ev.ts_ns.saturating_sub(silence),
                    end_ns: end_ns.max(ev.ts_ns),
                    open: true,
                    down: (*ev).clone(),
                    up: None,
                });
            }
            Action::PeerUp | Action::SipRegistered | Action::SessionClosed => {
                if let Some(mut o) = open.take() {
                    o.end_ns = ev.ts_ns.max(o.start_ns);
                    o.open = false;
                    o.up = Some((*ev).clone());
                    all.push(o);
                }
            }
            _ => {}
        }
    }
    all.extend(open);
    all
}

/// One capture's lanes, outages and events.
struct FileView<'a> {
    report: &'a FileReport,
    path: Option<&'a Path>,
    events: Vec<&'a Kept>,
    /// Lane name -> its events, in time order.
    by_lane: BTreeMap<String, Vec<&'a Kept>>,
    tracks: HashMap<String, &'a Track>,
    outages: BTreeMap<String, Vec<Outage>>,
    span: (u64, u64),
}

impl<'a> FileView<'a> {
    fn new(report: &'a FileReport, path: Option<&'a Path>, events: Vec<&'a Kept>) -> Self {
        let mut by_lane: BTreeMap<String, Vec<&Kept>> = BTreeMap::new();
        for &e in &events {
            if let Some(l) = &e.lane {
                by_lane.entry(l.clone()).or_default().push(e);
            }
        }
        for v in by_lane.values_mut() {
            v.sort_by_key(|e| (e.ts_ns, e.index));
        }
        let mut span = report.span_ns.unwrap_or((0, 0));
        if let (Some(first), Some(last)) = (
            events.iter().map(|e| e.ts_ns).min(),
            events.iter().map(|e| e.ts_ns).max(),
        ) {
            // Timers may fire after the last frame (the end of the capture is checked).
            if report.span_ns.is_none() {
                span = (first, last);
            }
            span.1 = span.1.max(last);
        }
        if span.1 <= span.0 {
            span.1 = span.0 + 1_000_000_000;
        }
        let outages = by_lane
            .iter()
            .map(|(l, evs)| (l.clone(), outages(evs, span.1)))
            .filter(|(_, o)| !o.is_empty())
            .collect();
        let tracks = report
            .beats
            .iter()
            .flat_map(|b| b.tracks.iter())
            .map(|(k, t)| (association(k), t))
            .collect();
        FileView {
            report,
            path,
            events,
            by_lane,
            tracks,
            outages,
            span,
        }
    }

    /// Every association: in the totals, with heartbeats, or named by an event.
    fn lanes(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .report
            .totals
            .iter()
            .map(|t| association(&t.key))
            .chain(self.tracks.keys().cloned())
            .chain(self.by_lane.keys().cloned())
            .collect();
        all.sort();
        all.dedup();
        all
    }

    fn x(&self, ns: u64) -> f64 {
        let (t0, t1) = self.span;
        let f = (ns.clamp(t0, t1) - t0) as f64 / (t1 - t0) as f64;
        PLOT_X + f * PLOT_W as f64
    }

    fn col(&self, ns: u64) -> usize {
        ((self.x(ns) - PLOT_X) as usize).min(PLOT_W - 1)
    }
}

const STYLE: &str = r#"
body{font:14px/1.4 system-ui,sans-serif;margin:16px;color:#1d2329;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:24px 0 8px;border-bottom:1px solid #ccd}
h3{font-size:15px;margin:16px 0 6px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #d5d9de;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#eef1f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
.mono,td.assoc{font-family:ui-monospace,monospace;font-size:12px}
.muted{color:#66707a}.warn{color:#a05a00}
ul.ev{margin:0;padding-left:18px}
svg.timeline{background:#fbfcfd;border:1px solid #d5d9de}
svg text{font:11px ui-monospace,monospace;fill:#1d2329}
svg .axis line{stroke:#c9ced4}svg .axis text{fill:#66707a}
svg .lane-bg{fill:#fff}svg .lane:nth-child(even) .lane-bg{fill:#f4f6f8}
svg .span{stroke:#b8c0c8;stroke-width:1}
svg .beats{fill:#2f6fb3}svg .ticks{stroke:#2f6fb3;stroke-width:1;fill:none;shape-rendering:crispEdges}
svg .gaps{fill:#f0b429;opacity:.35}
svg .silence{fill:#e5484d;opacity:.15}
svg .outage{fill:#e5484d;opacity:.35}
svg .marker path{stroke:#fff;stroke-width:.6}
svg .lv-warning path{fill:#d48806}svg .lv-error path{fill:#d4380d}svg .lv-critical path{fill:#a8071a}svg .lv-info path{fill:#389e0d}
svg .recovery path{fill:#389e0d;stroke:#fff;stroke-width:.6}
.legend span{display:inline-block;margin-right:14px}
.sw{display:inline-block;width:12px;height:12px;vertical-align:-2px;margin-right:4px}
"#;

/// The whole page.
pub fn render(reports: &[FileReport], events: &Collector, run: &RunInfo) -> String {
    // Split the event stream by file: each report counts the events it delivered.
    let mut views = Vec::new();
    let mut from = 0u64;
    for (i, r) in reports.iter().enumerate() {
        let to = from + r.events;
        let evs: Vec<&Kept> = events
            .kept
            .iter()
            .filter(|e| e.index >= from && e.index < to)
            .collect();
        from = to;
        views.push(FileView::new(
            r,
            run.paths.get(i).map(PathBuf::as_path),
            evs,
        ));
    }
    let names: Vec<&str> = reports.iter().map(|r| r.name.as_str()).collect();
    let mut h = String::with_capacity(1 << 20);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
         <meta name=\"generator\" content=\"hbwatch {v}\">\
         <title>hbwatch incident report: {t}</title><style>{STYLE}</style></head><body>\n\
         <h1>hbwatch incident report</h1><p class=\"muted\">{t} &middot; hbwatch {v} analyze &middot; observer {o} &middot; times in UTC</p>\n",
        v = esc(env!("CARGO_PKG_VERSION")),
        t = esc(&names.join(", ")),
        o = esc(&run.hostname),
    );
    capture_section(&mut h, &views, events);
    for v in &views {
        if views.len() > 1 {
            let _ = write!(h, "<h2>{}</h2>", esc(&v.report.name));
        }
        outage_section(&mut h, v);
        timeline_section(&mut h, v);
        summary_section(&mut h, v);
        alert_section(&mut h, v);
    }
    h.push_str("</body></html>\n");
    h
}

/// Writes the page to `path`.
pub fn write(
    path: &Path,
    reports: &[FileReport],
    events: &Collector,
    run: &RunInfo,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let started = std::time::Instant::now();
    let page = render(reports, events, run);
    std::fs::write(path, &page)
        .with_context(|| format!("writing the report {}", path.display()))?;
    tracing::info!(
        "report written to {} ({} kB, rendered in {} ms)",
        path.display(),
        page.len().div_ceil(1024),
        started.elapsed().as_millis()
    );
    Ok(())
}

fn capture_section(h: &mut String, views: &[FileView], events: &Collector) {
    h.push_str(
        "<h2>Captures</h2><table class=\"captures\"><tr><th>file</th><th>frames</th><th>heartbeats</th>\
         <th>events</th><th>associations</th><th>first frame</th><th>last frame</th><th>span</th><th>notes</th></tr>\n",
    );
    for v in views {
        let r = v.report;
        let c = |n: &str| r.counters.get(n).copied().unwrap_or(0);
        let mut notes: Vec<String> = r.warnings.clone();
        match &r.damage {
            Some(Damage::Unreadable(why)) | Some(Damage::Cut(why)) => notes.push(why.clone()),
            None => {}
        }
        let dups = c("duplicates") + c("sip_duplicates");
        if dups > 0 {
            notes.push(format!("{dups} duplicates ignored (mirror copies)"));
        }
        if let Some(b) = r.beats.as_ref().filter(|b| b.unplaced > 0) {
            notes.push(format!(
                "{} heartbeats of associations past the timeline's limit not drawn",
                b.unplaced
            ));
        }
        let (first, last, span) = match r.span_ns {
            Some((a, b)) => (clock(a), clock(b), duration((b - a) / 1_000_000)),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let path = v
            .path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| r.name.clone());
        let _ = writeln!(
            h,
            "<tr><td class=\"mono\" title=\"{}\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"mono\">{first}</td><td class=\"mono\">{last}</td><td class=\"n\">{span}</td><td class=\"warn\">{}</td></tr>",
            esc(&path),
            esc(&r.name),
            r.frames,
            c("heartbeats"),
            r.events,
            r.totals.len(),
            notes.iter().map(|n| esc(n)).collect::<Vec<_>>().join("<br>"),
        );
    }
    h.push_str("</table>\n");
    if events.not_kept > 0 {
        let _ = writeln!(
            h,
            "<p class=\"warn\">{} events past the report's limit of {MAX_KEPT_EVENTS} are in the NDJSON output only.</p>",
            events.not_kept
        );
    }
}

fn outage_section(h: &mut String, v: &FileView) {
    let n: usize = v.outages.values().map(Vec::len).sum();
    let _ = write!(h, "<h2>Outages ({n})</h2>");
    if n == 0 {
        h.push_str("<p class=\"muted\">No association went down.</p>\n");
        return;
    }
    h.push_str(
        "<table class=\"outages\"><tr><th>association</th><th>last heartbeat</th><th>declared</th><th>recovered</th>\
         <th>down</th><th>diagnosis</th><th>evidence</th></tr>\n",
    );
    let mut all: Vec<(&String, &Outage)> = v
        .outages
        .iter()
        .flat_map(|(l, os)| os.iter().map(move |o| (l, o)))
        .collect();
    all.sort_by_key(|(l, o)| (o.start_ns, l.as_str()));
    for (lane, o) in all {
        let recovered = match &o.up {
            Some(up) => format!("{} ({})", clock(o.end_ns), esc(up.action.name())),
            None => "not within the capture".to_string(),
        };
        let down_ms = match o.up.as_ref().and_then(|u| u.downtime_ms) {
            Some(ms) => ms,
            None => (o.end_ns - o.silence_ns) / 1_000_000,
        };
        let mut diag = esc(o.down.diagnosis.unwrap_or("-"));
        let mut evidence: Vec<String> = o.down.evidence.clone();
        if let Some(up) = &o.up {
            if let Some(d) = up.diagnosis.filter(|&d| Some(d) != o.down.diagnosis) {
                let _ = write!(diag, " &rarr; {} (at recovery)", esc(d));
            }
            for e in &up.evidence {
                if !evidence.contains(e) {
                    evidence.push(e.clone());
                }
            }
            if let Some(f) = &up.folded {
                let folded: Vec<String> = f.iter().map(|(a, n)| format!("{n} {a}")).collect();
                evidence.push(format!(
                    "alerts folded into the outage: {}",
                    folded.join(", ")
                ));
            }
        }
        let _ = writeln!(
            h,
            "<tr class=\"outage-row\" data-assoc=\"{a}\" data-diagnosis=\"{d}\"><td class=\"assoc\">{a}</td><td class=\"mono\">{}</td>\
             <td class=\"mono\">{} ({})</td><td class=\"mono\">{recovered}</td><td class=\"n\">{}</td><td>{diag}</td><td><ul class=\"ev\">{}</ul></td></tr>",
            clock(o.silence_ns),
            clock(o.start_ns),
            esc(o.down.action.name()),
            duration(down_ms),
            evidence
                .iter()
                .map(|e| format!("<li>{}</li>", esc(e)))
                .collect::<String>(),
            a = esc(lane),
            d = esc(o.down.diagnosis.unwrap_or("")),
        );
    }
    h.push_str("</table>\n");
}

/// A round axis step for about 10 ticks over `span_ms`: 1, 2, 5 x 10^k ms below a
/// second, clock-like steps above (1 s ... 30 min, 1 h ... 1 day).
fn axis_step_ms(span_ms: f64) -> f64 {
    let raw = (span_ms / 10.0).max(1.0);
    if raw <= 1000.0 {
        let mag = 10f64.powf(raw.log10().floor());
        return [1.0, 2.0, 5.0, 10.0]
            .into_iter()
            .map(|m| m * mag)
            .find(|s| *s >= raw)
            .unwrap_or(10.0 * mag);
    }
    const S: f64 = 1000.0;
    [
        1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
        10800.0, 21600.0, 43200.0, 86400.0,
    ]
    .into_iter()
    .map(|s| s * S)
    .find(|s| *s >= raw)
    .unwrap_or_else(|| (raw / (86400.0 * S)).ceil() * 86400.0 * S)
}

fn timeline_section(h: &mut String, v: &FileView) {
    let mut lanes = v.lanes();
    let _ = write!(h, "<h2>Timeline</h2>");
    if lanes.is_empty() {
        h.push_str("<p class=\"muted\">No association in this capture.</p>\n");
        return;
    }
    let omitted = lanes.len().saturating_sub(MAX_LANES);
    if omitted > 0 {
        // Trouble first, then by name.
        lanes.sort_by_key(|l| {
            let quiet = v
                .by_lane
                .get(l)
                .is_none_or(|e| e.iter().all(|e| e.kind != "alert"));
            (quiet, l.clone())
        });
        lanes.truncate(MAX_LANES);
        lanes.sort();
    }
    h.push_str(
        "<p class=\"legend\"><span><i class=\"sw\" style=\"background:#2f6fb3\"></i>heartbeats</span>\
         <span><i class=\"sw\" style=\"background:#f0b429;opacity:.5\"></i>silent over 2 intervals</span>\
         <span><i class=\"sw\" style=\"background:#e5484d;opacity:.2\"></i>silence before the outage was declared</span>\
         <span><i class=\"sw\" style=\"background:#e5484d;opacity:.45\"></i>outage (down to recovery)</span>\
         <span><i class=\"sw\" style=\"background:#d48806\"></i>warning</span><span><i class=\"sw\" style=\"background:#d4380d\"></i>error</span>\
         <span><i class=\"sw\" style=\"background:#a8071a\"></i>critical</span><span><i class=\"sw\" style=\"background:#389e0d\"></i>recovery</span>\
         <span class=\"muted\">hover a marker for its message</span></p>\n",
    );
    if omitted > 0 {
        let _ = writeln!(
            h,
            "<p class=\"warn\">{omitted} quiet associations not drawn (limit {MAX_LANES} lanes); all are in the table below.</p>"
        );
    }
    let width = PLOT_X * 2.0 + PLOT_W as f64;
    let height = AXIS_H + LANE_H * lanes.len() as f64 + 4.0;
    let (t0, t1) = v.span;
    let _ = writeln!(
        h,
        "<svg class=\"timeline\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" \
         data-start-ms=\"{}\" data-end-ms=\"{}\"><title>Heartbeat timeline of {}</title>",
        t0 / 1_000_000,
        t1 / 1_000_000,
        esc(&v.report.name)
    );
    // Axis: time of day, gridlines through every lane.
    let span_ms = (t1 - t0) as f64 / 1e6;
    let step = axis_step_ms(span_ms);
    h.push_str("<g class=\"axis\">");
    let first = ((t0 as f64 / 1e6) / step).ceil() * step;
    let mut t = first;
    while t <= t1 as f64 / 1e6 {
        let x = v.x((t * 1e6) as u64);
        let label = clock((t * 1e6) as u64);
        let label = if step >= 1000.0 {
            label.get(11..19).unwrap_or(&label).to_string()
        } else {
            label.get(11..).unwrap_or(&label).to_string()
        };
        let _ = write!(
            h,
            "<line x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{height}\"/><text x=\"{x:.1}\" y=\"14\" text-anchor=\"middle\">{label}</text>",
            AXIS_H - 8.0
        );
        t += step;
    }
    h.push_str("</g>\n");
    let mut markers_total = 0usize;
    for (i, lane) in lanes.iter().enumerate() {
        let y = AXIS_H + LANE_H * i as f64;
        let band = (y + 18.0, 14.0);
        let _ = write!(
            h,
            "<g class=\"lane\" data-assoc=\"{a}\"><rect class=\"lane-bg\" x=\"0\" y=\"{y}\" width=\"{width}\" height=\"{LANE_H}\"/>\
             <text x=\"{PLOT_X}\" y=\"{:.1}\">{a}</text>",
            y + 13.0,
            a = esc(lane),
        );
        let expected_ms = v
            .report
            .totals
            .iter()
            .find(|t| association(&t.key) == *lane)
            .map(|t| t.expected_interval_ms)
            .unwrap_or(0);
        if let Some(track) = v.tracks.get(lane) {
            beats(h, v, track, band, expected_ms);
        }
        for o in v.outages.get(lane).into_iter().flatten() {
            let (xs, xd, xe) = (v.x(o.silence_ns), v.x(o.start_ns), v.x(o.end_ns));
            let title = format!(
                "{}: {} from {} to {}{}",
                lane,
                o.down.action,
                clock(o.start_ns),
                clock(o.end_ns),
                o.down
                    .diagnosis
                    .map(|d| format!("; likely {d}"))
                    .unwrap_or_default()
            );
            let _ = write!(
                h,
                "<rect class=\"silence\" x=\"{xs:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\"/>\
                 <rect class=\"outage\" x=\"{xd:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" data-start-ms=\"{}\" data-end-ms=\"{}\" \
                 data-silence-start-ms=\"{}\" data-action=\"{}\" data-diagnosis=\"{}\" data-open=\"{}\"><title>{}</title></rect>",
                y + 15.0,
                (xd - xs).max(0.0),
                LANE_H - 17.0,
                y + 15.0,
                (xe - xd).max(1.0),
                LANE_H - 17.0,
                o.start_ns / 1_000_000,
                o.end_ns / 1_000_000,
                o.silence_ns / 1_000_000,
                esc(o.down.action.name()),
                esc(o.down.diagnosis.unwrap_or("")),
                o.open,
                esc(&title),
            );
        }
        if let Some(evs) = v.by_lane.get(lane) {
            markers_total += markers(h, v, evs, band);
        }
        h.push_str("</g>\n");
    }
    let _ = writeln!(
        h,
        "</svg><p class=\"muted\">{} lanes, {markers_total} markers.</p>",
        lanes.len()
    );
}

/// The heartbeat ticks of one lane: one path for the ticks (runs of pixel columns with
/// a heartbeat), one for silent stretches longer than two intervals.
fn beats(h: &mut String, v: &FileView, track: &Track, band: (f64, f64), expected_ms: u64) {
    let mut cols = vec![0u32; PLOT_W];
    for start in track.buckets() {
        let c = v.col(start + track.bucket_ns / 2);
        cols[c] = cols[c].saturating_add(1);
    }
    let (y, hgt) = band;
    let (x0, x1) = (v.x(track.first_ns), v.x(track.last_ns));
    let _ = write!(
        h,
        "<line class=\"span\" x1=\"{x0:.1}\" y1=\"{:.1}\" x2=\"{x1:.1}\" y2=\"{:.1}\"/>",
        y + hgt / 2.0,
        y + hgt / 2.0
    );
    // Runs of 3 columns or more as filled rectangles; shorter ones as 1-pixel strokes,
    // written relative to the previous one (a few bytes each).
    let mut runs = String::new();
    let mut ticks = String::new();
    let mut last: Option<usize> = None;
    let mut i = 0;
    while i < PLOT_W {
        if cols[i] == 0 {
            i += 1;
            continue;
        }
        let start = i;
        while i < PLOT_W && cols[i] > 0 {
            i += 1;
        }
        let w = i - start;
        if w >= 3 {
            let _ = write!(runs, "M{:.0} {y:.0}h{w}v{hgt}h-{w}z", PLOT_X + start as f64);
            continue;
        }
        for c in start..i {
            match last {
                None => {
                    let _ = write!(ticks, "M{:.1} {y:.0}v{hgt}", PLOT_X + c as f64 + 0.5);
                }
                Some(p) => {
                    let _ = write!(ticks, "m{} -{hgt}v{hgt}", c - p);
                }
            }
            last = Some(c);
        }
    }
    let _ = write!(
        h,
        "<path class=\"beats\" data-heartbeats=\"{}\" d=\"{runs}\"/><path class=\"ticks\" d=\"{ticks}\"/>",
        track.total
    );
    // Silent stretches: empty columns between heartbeats lasting over two intervals.
    if expected_ms == 0 {
        return;
    }
    let ns_per_col = (v.span.1 - v.span.0) as f64 / PLOT_W as f64;
    let min_cols = ((2 * expected_ms) as f64 * 1e6 / ns_per_col).ceil() as usize;
    let (c0, c1) = (v.col(track.first_ns), v.col(track.last_ns));
    let mut g = String::new();
    let mut i = c0;
    while i < c1 {
        if cols[i] > 0 {
            i += 1;
            continue;
        }
        let start = i;
        while i < c1 && cols[i] == 0 {
            i += 1;
        }
        if i - start >= min_cols.max(1) {
            let _ = write!(
                g,
                "M{:.0} {y:.0}h{}v{hgt}h-{}z",
                PLOT_X + start as f64,
                i - start,
                i - start
            );
        }
    }
    if !g.is_empty() {
        let _ = write!(h, "<path class=\"gaps\" d=\"{g}\"/>");
    }
}

/// Alert markers (and recoveries) of one lane; returns the alert markers drawn.
fn markers(h: &mut String, v: &FileView, evs: &[&Kept], band: (f64, f64)) -> usize {
    let (y, hgt) = band;
    let cy = y + hgt / 2.0;
    let mut drawn = 0;
    for e in evs
        .iter()
        .filter(|e| e.kind != "alert" && e.downtime_ms.is_some())
    {
        let x = v.x(e.ts_ns);
        let _ = write!(
            h,
            "<g class=\"recovery\" data-action=\"{}\" data-ts-ms=\"{}\"><title>{} {}</title><path d=\"M{:.1} {:.1}l4 -4l4 4l-4 4z\"/></g>",
            esc(e.action.name()),
            e.ts_ns / 1_000_000,
            clock(e.ts_ns),
            esc(&e.message),
            x - 4.0,
            cy
        );
    }
    let alerts: Vec<&&Kept> = evs.iter().filter(|e| e.kind == "alert").collect();
    let mut groups: BTreeMap<(usize, &str), Vec<&Kept>> = BTreeMap::new();
    for e in &alerts {
        let bucket = if alerts.len() <= MAX_MARKERS_PER_LANE {
            groups.len() // one group per alert
        } else {
            v.col(e.ts_ns) / 4
        };
        groups.entry((bucket, e.action.name())).or_default().push(e);
    }
    for ((_, action), es) in groups {
        let e = es[0];
        let level = es.iter().map(|e| e.level).max().unwrap_or(Level::Warning);
        let lv = match level {
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
            Level::Critical => "critical",
        };
        let x = v.x(e.ts_ns);
        let more = match es.len() {
            1 => String::new(),
            n => format!(" (and {} more {action} here)", n - 1),
        };
        // Critical ones sit above the band, the rest on it.
        let my = if level == Level::Critical {
            y - 1.0
        } else {
            cy
        };
        let _ = write!(
            h,
            "<g class=\"marker lv-{lv}\" data-action=\"{}\" data-ts-ms=\"{}\" data-count=\"{}\"><title>{} {}{}</title>\
             <path d=\"M{:.1} {:.1}l5 -5l5 5l-5 5z\"/></g>",
            esc(action),
            e.ts_ns / 1_000_000,
            es.len(),
            clock(e.ts_ns),
            esc(&e.message),
            esc(&more),
            x - 5.0,
            my,
        );
        drawn += 1;
    }
    drawn
}

fn summary_section(h: &mut String, v: &FileView) {
    let r = v.report;
    h.push_str(
        "<h2>Associations</h2><table class=\"summary\"><tr><th>association</th><th>heartbeats</th><th>lost</th><th>dups</th>\
         <th>rtt min</th><th>rtt avg</th><th>rtt max</th><th>outages</th><th>folded</th><th>interval</th><th>diagnosis</th></tr>\n",
    );
    let mut rows: Vec<&crate::correlate::AssocTotals> = r.totals.iter().collect();
    let omitted = rows.len().saturating_sub(MAX_TABLE_ROWS);
    if omitted > 0 {
        // Trouble first (the order is stable: by name within each kind).
        rows.sort_by_key(|t| t.stats.outages == 0 && t.stats.lost == 0);
        rows.truncate(MAX_TABLE_ROWS);
        rows.sort_by_cached_key(|t| association(&t.key));
    }
    for t in rows {
        let c = t.summary_cells().map(|cell| esc(&cell));
        let _ = write!(
            h,
            "<tr data-assoc=\"{a}\"><td class=\"assoc\">{a}</td>",
            a = c[0]
        );
        for cell in &c[1..10] {
            let _ = write!(h, "<td class=\"n\">{cell}</td>");
        }
        let _ = writeln!(h, "<td>{}</td></tr>", c[10]);
    }
    h.push_str("</table>\n");
    if omitted > 0 {
        let _ = writeln!(
            h,
            "<p class=\"warn\">{omitted} associations without loss or outage left out (limit {MAX_TABLE_ROWS} rows): <code>analyze --summary</code> lists every one.</p>"
        );
    }
}

fn alert_section(h: &mut String, v: &FileView) {
    let alerts: Vec<&&Kept> = v.events.iter().filter(|e| e.kind == "alert").collect();
    let _ = write!(h, "<h2>Alerts ({})</h2>", alerts.len());
    if alerts.is_empty() {
        h.push_str("<p class=\"muted\">None.</p>\n");
        return;
    }
    h.push_str("<table class=\"alerts\"><tr><th>time</th><th>level</th><th>action</th><th>message</th></tr>\n");
    for e in alerts.iter().take(MAX_ALERT_ROWS) {
        let _ = writeln!(
            h,
            "<tr><td class=\"mono\">{}</td><td>{:?}</td><td class=\"mono\">{}</td><td>{}</td></tr>",
            clock(e.ts_ns),
            e.level,
            esc(e.action.name()),
            esc(&e.message)
        );
    }
    h.push_str("</table>\n");
    if alerts.len() > MAX_ALERT_ROWS {
        let _ = writeln!(
            h,
            "<p class=\"muted\">{} more alerts in the NDJSON output.</p>",
            alerts.len() - MAX_ALERT_ROWS
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_packet_text() {
        assert_eq!(
            esc("<script>alert(\"x\")</script> & 'y'\u{7}"),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;\u{fffd}"
        );
    }

    #[test]
    fn axis_steps_are_round() {
        assert_eq!(axis_step_ms(60_000.0), 10_000.0);
        assert_eq!(axis_step_ms(3_600_000.0), 600_000.0);
        assert_eq!(axis_step_ms(120_000.0), 15_000.0);
        assert_eq!(axis_step_ms(5.0), 1.0);
    }

    fn kept(action: Action, ts_s: u64, silence_ms: Option<u64>) -> Kept {
        Kept {
            index: 0,
            ts_ns: ts_s * 1_000_000_000,
            kind: "alert",
            action,
            level: Level::Critical,
            lane: Some("mds 10.0.0.1:1 -> 10.0.0.2:1".into()),
            message: format!("{} <b>", action.name()),
            diagnosis: Some("network-loss"),
            evidence: vec![],
            silence_ms,
            downtime_ms: None,
            folded: None,
        }
    }

    #[test]
    fn hostile_packet_text_stays_text() {
        let evil = "</title></svg><script>alert('x')</script><img src=x onerror=y>&";
        let mut down = kept(Action::SipExpired, 10, Some(1000));
        down.message = format!("sip registration of {evil} expired");
        down.evidence = vec![format!("aor {evil}")];
        down.lane = Some(format!("sip 10.0.0.1:5060 -> 10.0.0.2:5060 {evil}"));
        let mut up = kept(Action::SipRegistered, 12, None);
        up.kind = "event";
        up.index = 1;
        up.lane = down.lane.clone();
        let report = FileReport {
            name: format!("{evil}.pcap"),
            frames: 3,
            events: 2,
            counters: BTreeMap::new(),
            totals: Vec::new(),
            damage: Some(Damage::Cut(evil.to_string())),
            span_ns: Some((9_000_000_000, 13_000_000_000)),
            warnings: vec![evil.to_string()],
            beats: None,
        };
        let collector = Collector {
            kept: vec![down, up],
            ..Collector::default()
        };
        let run = RunInfo {
            paths: vec![PathBuf::from(format!("/tmp/{evil}.pcap"))],
            hostname: evil.to_string(),
        };
        let page = render(&[report], &collector, &run);
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("<img"));
        assert!(!page.contains("alert('x')"));
        assert!(page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
        // One outage on the hostile lane, one marker.
        assert_eq!(page.matches("<rect class=\"outage\"").count(), 1);
        assert_eq!(page.matches("<g class=\"marker").count(), 1);
        assert_eq!(page.matches("<g class=\"lane\"").count(), 1);
    }

    #[test]
    fn outages_pair_down_and_recovery() {
        let down = kept(Action::PeerDown, 10, Some(2000));
        let up = kept(Action::PeerUp, 15, None);
        let late = kept(Action::HeartbeatLate, 15, None);
        let down2 = kept(Action::SipExpired, 20, Some(0));
        let o = outages(&[&down, &up, &late, &down2], 30_000_000_000);
        assert_eq!(o.len(), 2);
        assert_eq!(
            (o[0].silence_ns, o[0].start_ns, o[0].end_ns),
            (8e9 as u64, 10e9 as u64, 15e9 as u64)
        );
        assert!(!o[0].open);
        assert!(o[1].open);
        assert_eq!(o[1].end_ns, 30_000_000_000);
    }
}
