//! The status snapshot: what `hbwatch top` shows, as served by a running agent
//! (one JSON object per request), and the board's sort and filter over its rows.

use serde::{Deserialize, Serialize};

/// Recent RTT samples kept per association for the sparkline.
pub const RTT_SAMPLES: usize = 16;

/// An association's state on the board.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Up,
    Late,
    Missed,
    Down,
}

impl State {
    pub const ALL: [State; 4] = [State::Up, State::Late, State::Missed, State::Down];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Late => "late",
            State::Missed => "missed",
            State::Down => "down",
        }
    }
}

/// One association's row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub protocol: String,
    pub source: String,
    pub destination: String,
    pub state: State,
    /// Time since the last heartbeat, ms.
    pub age_ms: u64,
    /// Learned (or default) interval, ms.
    pub interval_ms: u64,
    /// Last RTT, µs, if the protocol pairs request and answer.
    pub rtt_us: Option<u64>,
    /// Recent RTTs, µs, oldest first (at most [`RTT_SAMPLES`]).
    #[serde(default)]
    pub rtt_recent_us: Vec<u64>,
    pub lost: u64,
    /// Last diagnosis (`hbwatch.diagnosis`), if any.
    pub diagnosis: Option<String>,
}

impl Row {
    /// Whether `text` (lowercase) occurs in its protocol, endpoints or diagnosis.
    fn matches_text(&self, text: &str) -> bool {
        [&self.protocol, &self.source, &self.destination]
            .into_iter()
            .chain(self.diagnosis.as_ref())
            .any(|s| s.to_ascii_lowercase().contains(text))
    }
}

/// One recent event, one line on the board.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventLine {
    /// RFC 3339 time.
    pub time: String,
    pub action: String,
    pub message: String,
}

/// What a running agent serves: the association table and the recent events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub associations: Vec<Row>,
    pub events: Vec<EventLine>,
}

/// Sortable columns, cycled with `s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortKey {
    #[default]
    Protocol,
    Endpoints,
    State,
    Age,
    Interval,
    Rtt,
    Lost,
}

impl SortKey {
    pub const ALL: [SortKey; 7] = [
        SortKey::Protocol,
        SortKey::Endpoints,
        SortKey::State,
        SortKey::Age,
        SortKey::Interval,
        SortKey::Rtt,
        SortKey::Lost,
    ];

    pub fn next(self) -> SortKey {
        let i = Self::ALL.iter().position(|k| *k == self).unwrap_or(0);
        Self::ALL[(i + 1) % Self::ALL.len()]
    }

    pub fn name(self) -> &'static str {
        match self {
            SortKey::Protocol => "protocol",
            SortKey::Endpoints => "endpoints",
            SortKey::State => "state",
            SortKey::Age => "age",
            SortKey::Interval => "interval",
            SortKey::Rtt => "rtt",
            SortKey::Lost => "lost",
        }
    }
}

/// The board's view settings: sort column and filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    pub sort: SortKey,
    /// Descending order (worst first for state, age, rtt, lost).
    pub descending: bool,
    /// Only this protocol (cycled with `p` over the protocols present).
    pub protocol: Option<String>,
    /// Only this state (cycled with `f`).
    pub state: Option<State>,
    /// Only rows containing this text (`/`), case-insensitive.
    pub text: String,
}

impl View {
    /// Next protocol filter: none, then each protocol in `rows` in name order, then none.
    pub fn cycle_protocol(&mut self, rows: &[Row]) {
        let mut protos: Vec<&str> = rows.iter().map(|r| r.protocol.as_str()).collect();
        protos.sort_unstable();
        protos.dedup();
        self.protocol = match &self.protocol {
            None => protos.first().map(|p| p.to_string()),
            Some(cur) => protos
                .iter()
                .find(|p| **p > cur.as_str())
                .map(|p| p.to_string()),
        };
    }

    /// Next state filter: none, up, late, missed, down, none.
    pub fn cycle_state(&mut self) {
        self.state = match self.state {
            None => Some(State::Up),
            Some(s) => State::ALL
                .iter()
                .position(|x| *x == s)
                .and_then(|i| State::ALL.get(i + 1).copied()),
        };
    }

    /// Indices into `rows` of the rows shown, in display order.
    pub fn apply(&self, rows: &[Row]) -> Vec<usize> {
        let text = self.text.to_ascii_lowercase();
        let mut shown: Vec<usize> = rows
            .iter()
            .enumerate()
            .filter(|(_, r)| self.protocol.as_ref().is_none_or(|p| &r.protocol == p))
            .filter(|(_, r)| self.state.is_none_or(|s| r.state == s))
            .filter(|(_, r)| text.is_empty() || r.matches_text(&text))
            .map(|(i, _)| i)
            .collect();
        let endpoints = |r: &Row| (r.source.clone(), r.destination.clone());
        shown.sort_by(|&a, &b| {
            let (x, y) = (&rows[a], &rows[b]);
            let ord = match self.sort {
                SortKey::Protocol => x.protocol.cmp(&y.protocol),
                SortKey::Endpoints => endpoints(x).cmp(&endpoints(y)),
                SortKey::State => x.state.cmp(&y.state),
                SortKey::Age => x.age_ms.cmp(&y.age_ms),
                SortKey::Interval => x.interval_ms.cmp(&y.interval_ms),
                SortKey::Rtt => x.rtt_us.cmp(&y.rtt_us),
                SortKey::Lost => x.lost.cmp(&y.lost),
            };
            // Ties keep a stable, readable order: by endpoints.
            let ord = ord.then_with(|| {
                x.source
                    .cmp(&y.source)
                    .then_with(|| x.destination.cmp(&y.destination))
            });
            if self.descending {
                ord.reverse()
            } else {
                ord
            }
        });
        shown
    }
}

/// "1.2s" / "850ms" for an age or interval in ms.
pub fn fmt_ms(ms: u64) -> String {
    if ms >= 1000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{ms}ms")
    }
}

/// A one-line sparkline of `values` with block characters, scaled to their maximum.
pub fn sparkline(values: &[u64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    values
        .iter()
        .map(|v| BARS[((v * 7) / max).min(7) as usize])
        .collect()
}

/// `n` synthetic rows (for the redraw measurement and tests).
pub fn synthetic(n: usize) -> Vec<Row> {
    let protos = ["ged125", "sccp", "mds", "rudp", "sip"];
    (0..n)
        .map(|i| Row {
            protocol: protos[i % protos.len()].to_string(),
            source: format!(
                "10.{}.{}.{}:{}",
                (i >> 16) & 255,
                (i >> 8) & 255,
                i & 255,
                40000 + i % 1000
            ),
            destination: format!("10.200.0.{}:2000", i % 250),
            state: State::ALL[(i / 7) % 4],
            age_ms: (i as u64 * 37) % 5000,
            interval_ms: 1000 + (i as u64 % 4) * 1000,
            rtt_us: (i % 3 != 0).then_some(200 + (i as u64 * 13) % 800),
            rtt_recent_us: (0..RTT_SAMPLES as u64)
                .map(|k| 200 + (i as u64 + k * 53) % 800)
                .collect(),
            lost: (i as u64 * 7) % 11,
            diagnosis: (i % 9 == 0).then(|| "network_loss".to_string()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(proto: &str, src: &str, state: State, age: u64, lost: u64) -> Row {
        Row {
            protocol: proto.into(),
            source: src.into(),
            destination: "10.0.0.9:2000".into(),
            state,
            age_ms: age,
            interval_ms: 1000,
            rtt_us: None,
            rtt_recent_us: vec![],
            lost,
            diagnosis: None,
        }
    }

    fn rows() -> Vec<Row> {
        vec![
            row("sccp", "10.0.0.3:1", State::Down, 9000, 4),
            row("ged125", "10.0.0.1:1", State::Up, 200, 0),
            row("sccp", "10.0.0.2:1", State::Late, 1500, 1),
        ]
    }

    #[test]
    fn snapshot_round_trips_as_one_json_line() {
        let snap = Snapshot {
            associations: rows(),
            events: vec![EventLine {
                time: "2026-12-05T20:00:00Z".into(),
                action: "peer.down".into(),
                message: "sccp down".into(),
            }],
        };
        let line = serde_json::to_string(&snap).unwrap();
        assert!(!line.contains('\n'));
        assert!(line.contains(r#""state":"down""#));
        let back: Snapshot = serde_json::from_str(&line).unwrap();
        assert_eq!(back, snap);
    }

    #[test]
    fn sorts_by_each_key() {
        let r = rows();
        let mut v = View::default();
        assert_eq!(v.apply(&r), vec![1, 2, 0]); // protocol, then endpoints
        v.sort = SortKey::State;
        assert_eq!(v.apply(&r), vec![1, 2, 0]);
        v.descending = true;
        assert_eq!(v.apply(&r), vec![0, 2, 1]);
        v.sort = SortKey::Lost;
        v.descending = false;
        assert_eq!(v.apply(&r), vec![1, 2, 0]);
        v.sort = SortKey::Endpoints;
        assert_eq!(v.apply(&r), vec![1, 2, 0]);
        assert_eq!(SortKey::Lost.next(), SortKey::Protocol);
    }

    #[test]
    fn filters_by_protocol_state_and_text() {
        let r = rows();
        let mut v = View::default();
        v.cycle_protocol(&r);
        assert_eq!(v.protocol.as_deref(), Some("ged125"));
        assert_eq!(v.apply(&r), vec![1]);
        v.cycle_protocol(&r);
        assert_eq!(v.protocol.as_deref(), Some("sccp"));
        assert_eq!(v.apply(&r), vec![2, 0]);
        v.cycle_protocol(&r);
        assert_eq!(v.protocol, None);
        v.cycle_state();
        v.cycle_state();
        v.cycle_state();
        v.cycle_state();
        assert_eq!(v.state, Some(State::Down));
        assert_eq!(v.apply(&r), vec![0]);
        v.cycle_state();
        assert_eq!(v.state, None);
        v.text = "0.0.2".into();
        assert_eq!(v.apply(&r), vec![2]);
        v.text = "SCCP".into();
        assert_eq!(v.apply(&r).len(), 2);
    }

    #[test]
    fn formats_times_and_sparklines() {
        assert_eq!(fmt_ms(1200), "1.2s");
        assert_eq!(fmt_ms(1000), "1.0s", "one format at every value: 1.0s beside 1.2s");
        assert_eq!(fmt_ms(850), "850ms");
        assert_eq!(sparkline(&[0, 7, 14]), "▁▄█");
        assert_eq!(sparkline(&[]), "");
    }
}
