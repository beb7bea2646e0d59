//! One frame of the board: the association table (only the rows that fit are
//! built), the recent events pane, and a help line.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row as TRow, Table};
use ratatui::Frame;

use super::model::{fmt_ms, sparkline, Snapshot, State, View};

/// Lines of the events pane (plus its border).
const EVENT_LINES: u16 = 6;

pub const HELP: &str =
    "q quit  s sort column  r reverse  p protocol  f state  / text filter  Esc clear filters";

fn state_style(s: State) -> Style {
    match s {
        State::Up => Style::default().fg(Color::Green),
        State::Late => Style::default().fg(Color::Yellow),
        State::Missed => Style::default().fg(Color::LightRed),
        State::Down => Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
    }
}

/// Draw `snap` through `view`, the table scrolled to `offset` rows.
pub fn draw(frame: &mut Frame, snap: &Snapshot, view: &View, offset: usize, editing: Option<&str>) {
    let [table_area, events_area, help_area] = Layout::vertical([
        Constraint::Min(3),
        Constraint::Length(EVENT_LINES + 2),
        Constraint::Length(1),
    ])
    .areas(frame.area());

    let shown = view.apply(&snap.associations);
    // Borders (2) and the header (1) take three lines.
    let fit = table_area.height.saturating_sub(3) as usize;
    let offset = offset.min(shown.len().saturating_sub(fit));
    let rows = shown.iter().skip(offset).take(fit).map(|&i| {
        let r = &snap.associations[i];
        let rtt = match r.rtt_us {
            Some(us) => format!(
                "{:.1}ms {}",
                us as f64 / 1000.0,
                sparkline(&r.rtt_recent_us)
            ),
            None => "-".to_string(),
        };
        TRow::new(vec![
            Cell::from(r.protocol.clone()),
            Cell::from(format!("{} -> {}", r.source, r.destination)),
            Cell::from(r.state.as_str()).style(state_style(r.state)),
            Cell::from(format!("{} / {}", fmt_ms(r.age_ms), fmt_ms(r.interval_ms))),
            Cell::from(rtt),
            Cell::from(r.lost.to_string()),
            Cell::from(r.diagnosis.clone().unwrap_or_default()),
        ])
    });
    let header = TRow::new(
        [
            "PROTO",
            "ENDPOINTS",
            "STATE",
            "AGE / INTERVAL",
            "RTT",
            "LOST",
            "DIAGNOSIS",
        ]
        .map(Cell::from),
    )
    .style(Style::default().add_modifier(Modifier::BOLD));
    let widths = [
        // "cs1000-rudp"; two IPv4 endpoints with ports.
        Constraint::Length(11),
        Constraint::Min(43),
        Constraint::Length(7),
        Constraint::Length(15),
        Constraint::Length(26),
        Constraint::Length(6),
        Constraint::Min(12),
    ];
    let mut counts = [0usize; 4];
    for r in &snap.associations {
        counts[r.state as usize] += 1;
    }
    let mut title = format!(
        " hbwatch top: {} associations ({} up, {} late, {} missed, {} down), {} shown, sort {}{} ",
        snap.associations.len(),
        counts[0],
        counts[1],
        counts[2],
        counts[3],
        shown.len(),
        view.sort.name(),
        if view.descending { " desc" } else { "" },
    );
    if let Some(p) = &view.protocol {
        title.push_str(&format!("protocol={p} "));
    }
    if let Some(s) = view.state {
        title.push_str(&format!("state={} ", s.as_str()));
    }
    if !view.text.is_empty() {
        title.push_str(&format!("text={} ", view.text));
    }
    let table = Table::new(rows, widths)
        .header(header)
        .block(Block::default().borders(Borders::ALL).title(title));
    frame.render_widget(table, table_area);

    let skip = snap.events.len().saturating_sub(EVENT_LINES as usize);
    let events: Vec<Line> = snap.events[skip..]
        .iter()
        .map(|e| {
            // The time of day (HH:MM:SS.mmm) leaves the width to the message.
            let time = e.time.get(11..23).unwrap_or(&e.time);
            Line::from(format!("{time} {:<16} {}", e.action, e.message))
        })
        .collect();
    frame.render_widget(
        Paragraph::new(events).block(Block::default().borders(Borders::ALL).title(" events ")),
        events_area,
    );
    let help = match editing {
        Some(t) => format!("/{t}_   (Enter apply, Esc cancel)"),
        None => HELP.to_string(),
    };
    frame.render_widget(Paragraph::new(help), help_area);
}

/// Over the help line: the agent has stopped, the board shows its last state.
pub fn stopped_note(frame: &mut Frame) {
    let a = frame.area();
    let line = Rect::new(
        a.x,
        a.y + a.height.saturating_sub(1),
        a.width,
        a.height.min(1),
    );
    frame.render_widget(Clear, line);
    frame.render_widget(
        Paragraph::new("the agent has stopped; this is its last state. q quits")
            .style(Style::default().add_modifier(Modifier::REVERSED)),
        line,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::model::{synthetic, EventLine, SortKey};
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn text(term: &Terminal<TestBackend>) -> String {
        let buf = term.backend().buffer();
        let mut s = String::new();
        for y in 0..buf.area.height {
            for x in 0..buf.area.width {
                s.push_str(buf[(x, y)].symbol());
            }
            s.push('\n');
        }
        s
    }

    #[test]
    fn renders_rows_events_and_help() {
        let mut snap = Snapshot {
            associations: synthetic(20),
            events: vec![],
        };
        snap.events.push(EventLine {
            time: "2026-12-05T20:00:00Z".into(),
            action: "peer.down".into(),
            message: "sccp 10.0.0.1 down".into(),
        });
        let mut term = Terminal::new(TestBackend::new(200, 50)).unwrap();
        let view = View {
            state: Some(State::Down),
            ..View::default()
        };
        term.draw(|f| draw(f, &snap, &view, 0, None)).unwrap();
        let t = text(&term);
        assert!(t.contains("20 associations"), "{t}");
        assert!(t.contains("peer.down"));
        assert!(t.contains("q quit"));
        assert!(t.contains(" down "));
        assert!(!t.contains(" up  "), "{t}");
    }

    /// Redraw time with 10,000 associations (sort + filter + render of the visible
    /// rows), printed, not asserted: `cargo test -p hbwatch --lib top -- --nocapture`.
    #[test]
    fn redraw_10k_associations() {
        let snap = Snapshot {
            associations: synthetic(10_000),
            events: vec![],
        };
        let empty = Snapshot::default();
        let mut term = Terminal::new(TestBackend::new(200, 50)).unwrap();
        let view = View {
            sort: SortKey::Age,
            descending: true,
            ..View::default()
        };
        let time = |term: &mut Terminal<TestBackend>, s: &Snapshot| {
            let n = 20;
            let t0 = std::time::Instant::now();
            for _ in 0..n {
                term.draw(|f| draw(f, s, &view, 0, None)).unwrap();
            }
            t0.elapsed() / n
        };
        let base = time(&mut term, &empty);
        let full = time(&mut term, &snap);
        println!(
            "redraw: empty board {base:?}, 10000 associations {full:?} ({:.1}x)",
            full.as_secs_f64() / base.as_secs_f64().max(1e-9)
        );
        assert!(text(&term).contains("10000 associations"));
        // What each refresh also costs: the agent writes the snapshot as one JSON line,
        // the board parses it.
        let t0 = std::time::Instant::now();
        let line = serde_json::to_string(&snap).unwrap();
        let written = t0.elapsed();
        let t0 = std::time::Instant::now();
        let back: Snapshot = serde_json::from_str(&line).unwrap();
        let parsed = t0.elapsed();
        println!(
            "snapshot of 10000 associations: {} bytes, written in {written:?}, parsed in {parsed:?}",
            line.len()
        );
        assert_eq!(back.associations.len(), 10_000);
    }
}
