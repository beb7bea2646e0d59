//! Per-protocol tuning from the command line: `--tune PROTOCOL.KEY=VALUE`, loaded into
//! the `PARAMS` map, so thresholds change without recompiling.

use std::collections::BTreeMap;

use hbwatch_common::params::{ProtoParams, DSCP_ANY};
use hbwatch_common::proto::Protocol;

pub const KEYS: &str = "interval_ms, max_gap, reorder_window, tolerance_pct, down_after, \
     expected_dscp (0-63 or any), confirm_beats";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TuneError {
    #[error("--tune {0:?}: expected PROTOCOL.KEY=VALUE, e.g. cs1000-rudp.expected_dscp=any")]
    Syntax(String),
    #[error("--tune {spec:?}: unknown protocol {name:?}")]
    UnknownProtocol { spec: String, name: String },
    #[error("--tune {spec:?}: unknown key {key:?} (known: {KEYS})")]
    UnknownKey { spec: String, key: String },
    #[error("--tune {spec:?}: {value:?} is not valid for {key} ({expected})")]
    BadValue {
        spec: String,
        key: String,
        value: String,
        expected: &'static str,
    },
}

/// One `--tune` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tune {
    pub protocol: Protocol,
    key: String,
    value: u32,
}

impl std::str::FromStr for Tune {
    type Err = TuneError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let syntax = || TuneError::Syntax(spec.to_string());
        let (lhs, value) = spec.split_once('=').ok_or_else(syntax)?;
        let (name, key) = lhs.split_once('.').ok_or_else(syntax)?;
        let protocol = Protocol::from_name(name).ok_or_else(|| TuneError::UnknownProtocol {
            spec: spec.to_string(),
            name: name.to_string(),
        })?;
        let bad = |expected| TuneError::BadValue {
            spec: spec.to_string(),
            key: key.to_string(),
            value: value.to_string(),
            expected,
        };
        let number = |max: u32, expected| match value.parse::<u32>() {
            Ok(v) if v <= max => Ok(v),
            _ => Err(bad(expected)),
        };
        let value = match key {
            "interval_ms" => number(86_400_000, "milliseconds, 1 day at most")?,
            "max_gap" | "reorder_window" => number(u32::MAX, "a count")?,
            "tolerance_pct" => number(1000, "percent, 0-1000")?,
            "down_after" => number(255, "missed intervals, 1-255")?,
            "confirm_beats" => number(255, "heartbeats, 1-255")?,
            "expected_dscp" if value == "any" => DSCP_ANY as u32,
            "expected_dscp" => number(63, "a DSCP 0-63 or `any`")?,
            _ => {
                return Err(TuneError::UnknownKey {
                    spec: spec.to_string(),
                    key: key.to_string(),
                })
            }
        };
        if key == "down_after" && value == 0 {
            return Err(bad("missed intervals, 1-255"));
        }
        if key == "confirm_beats" && value == 0 {
            return Err(bad("heartbeats, 1-255"));
        }
        Ok(Tune {
            protocol,
            key: key.to_string(),
            value,
        })
    }
}

/// Protocol defaults with the settings applied in order.
pub fn params(tunes: &[Tune]) -> BTreeMap<Protocol, ProtoParams> {
    let mut all: BTreeMap<Protocol, ProtoParams> = Protocol::ALL
        .into_iter()
        .map(|p| (p, p.default_params()))
        .collect();
    for t in tunes {
        let p = all
            .get_mut(&t.protocol)
            .expect("every protocol has defaults");
        match t.key.as_str() {
            "interval_ms" => p.interval_ms = t.value,
            "max_gap" => p.max_gap = t.value,
            "reorder_window" => p.reorder_window = t.value,
            "tolerance_pct" => p.tolerance_pct = t.value as u16,
            "down_after" => p.down_after = t.value as u8,
            "expected_dscp" => p.expected_dscp = t.value as u8,
            "confirm_beats" => p.confirm_beats = t.value as u8,
            _ => unreachable!("keys are validated when parsed"),
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_settings_over_defaults() {
        let tunes: Vec<Tune> = [
            "cs1000-rudp.expected_dscp=any",
            "mds.max_gap=50",
            "mds.down_after=7",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let p = params(&tunes);
        assert_eq!(p[&Protocol::Cs1000Rudp].expected_dscp, DSCP_ANY);
        assert_eq!(p[&Protocol::Mds].max_gap, 50);
        assert_eq!(p[&Protocol::Mds].down_after, 7);
        assert_eq!(p[&Protocol::Ged125], Protocol::Ged125.default_params());
    }

    #[test]
    fn rejects_with_the_reason() {
        assert!(matches!("rudp".parse::<Tune>(), Err(TuneError::Syntax(_))));
        assert!(matches!(
            "x.max_gap=1".parse::<Tune>(),
            Err(TuneError::UnknownProtocol { .. })
        ));
        assert!(matches!(
            "mds.speed=1".parse::<Tune>(),
            Err(TuneError::UnknownKey { .. })
        ));
        for bad in [
            "mds.expected_dscp=64",
            "mds.down_after=0",
            "mds.max_gap=-1",
            "sip.tolerance_pct=x",
        ] {
            assert!(
                matches!(bad.parse::<Tune>(), Err(TuneError::BadValue { .. })),
                "{bad}"
            );
        }
    }
}
