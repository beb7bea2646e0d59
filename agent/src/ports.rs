//! Which ports carry which heartbeat protocol: defaults plus `--port PROTOCOL=PORTS`.

use std::collections::BTreeMap;

use hbwatch_common::params::{DSCP_ANY, P_INTERVAL_IS_A_BOUND, P_SEQ_IS_AN_ID};
use hbwatch_common::parse::{IPPROTO_TCP, IPPROTO_UDP};
use hbwatch_common::proto::{port_slot, Protocol};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PortSpecError {
    #[error("--port {0:?}: expected PROTOCOL=PORTS, e.g. mds=41000,39500-39999")]
    Syntax(String),
    #[error("--port {spec:?}: unknown protocol {name:?} (known: {known})")]
    UnknownProtocol {
        spec: String,
        name: String,
        known: String,
    },
    #[error("--port {spec:?}: {part:?} is not a port or a range LOW-HIGH of ports 1-65535")]
    BadPort { spec: String, part: String },
    #[error("--port {spec:?}: protocol {name} is not decoded by this version yet")]
    NotDecoded { spec: String, name: String },
}

/// Ports by protocol, inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    pub protocol: Protocol,
    pub ranges: Vec<(u16, u16)>,
}

impl std::str::FromStr for PortSpec {
    type Err = PortSpecError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let (name, ports) = spec
            .split_once('=')
            .ok_or_else(|| PortSpecError::Syntax(spec.to_string()))?;
        let protocol =
            Protocol::from_name(name.trim()).ok_or_else(|| PortSpecError::UnknownProtocol {
                spec: spec.to_string(),
                name: name.to_string(),
                known: Protocol::ALL.map(|p| p.name()).join(", "),
            })?;
        if !protocol.decoded() {
            return Err(PortSpecError::NotDecoded {
                spec: spec.to_string(),
                name: protocol.name().to_string(),
            });
        }
        let bad = |part: &str| PortSpecError::BadPort {
            spec: spec.to_string(),
            part: part.to_string(),
        };
        let port = |s: &str, part: &str| -> Result<u16, PortSpecError> {
            match s.trim().parse::<u16>() {
                Ok(p) if p > 0 => Ok(p),
                _ => Err(bad(part)),
            }
        };
        let mut ranges = Vec::new();
        for part in ports.split(',') {
            let range = match part.split_once('-') {
                Some((lo, hi)) => (port(lo, part)?, port(hi, part)?),
                None => {
                    let p = port(part, part)?;
                    (p, p)
                }
            };
            if range.0 > range.1 {
                return Err(bad(part));
            }
            ranges.push(range);
        }
        Ok(PortSpec { protocol, ranges })
    }
}

/// The default ports of every protocol (the protocol table).
pub fn default_specs() -> Vec<PortSpec> {
    Protocol::ALL
        .into_iter()
        .map(|protocol| PortSpec {
            protocol,
            ranges: protocol.default_ports().to_vec(),
        })
        .collect()
}

/// Port ranges as `--port` and the config file write them: `5060`, `39500-39999`, joined
/// by commas.
pub fn ranges_text(ranges: &[(u16, u16)]) -> String {
    let parts: Vec<String> = ranges
        .iter()
        .map(|&(lo, hi)| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            }
        })
        .collect();
    parts.join(",")
}

/// The protocol table as `hbwatch protocols` prints it: aligned text, or markdown for
/// docs/PROTOCOLS.md.
pub fn protocol_table(markdown: bool) -> String {
    let head = [
        "protocol",
        "transports",
        "default ports",
        "interval",
        "late after",
        "down after",
        "expected DSCP",
        "confirm beats",
        "gap up to",
    ];
    let rows: Vec<[String; 9]> = Protocol::ALL
        .into_iter()
        .map(|p| {
            let d = p.default_params();
            let transports: Vec<&str> = p
                .transports()
                .iter()
                .map(|&t| if t == IPPROTO_TCP { "tcp" } else { "udp" })
                .collect();
            [
                p.name().to_string(),
                transports.join("+"),
                ranges_text(p.default_ports()),
                if d.flags & P_INTERVAL_IS_A_BOUND != 0 {
                    format!("at most {} ms", d.interval_ms)
                } else {
                    format!("{} ms", d.interval_ms)
                },
                format!("+{}%", d.tolerance_pct),
                format!("{} missed", d.down_after),
                match d.expected_dscp {
                    DSCP_ANY => "any".to_string(),
                    dscp => dscp.to_string(),
                },
                d.confirm_beats.to_string(),
                if d.flags & P_SEQ_IS_AN_ID != 0 {
                    "ids, not counted".to_string()
                } else {
                    d.max_gap.to_string()
                },
            ]
        })
        .collect();
    let mut out = String::new();
    if markdown {
        out.push_str(&format!("| {} |\n", head.join(" | ")));
        out.push_str(&format!("|{}\n", " --- |".repeat(head.len())));
        for r in &rows {
            out.push_str(&format!("| {} |\n", r.join(" | ")));
        }
        return out;
    }
    let mut width = head.map(str::len);
    for r in &rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l: String = cells
            .zip(width)
            .map(|(c, w)| format!("{c:<w$}  "))
            .collect();
        l.truncate(l.trim_end().len());
        l + "\n"
    };
    out.push_str(&line(&mut head.iter().copied()));
    for r in &rows {
        out.push_str(&line(&mut r.iter().map(String::as_str)));
    }
    out
}

/// The default ports plus `extra` (`--port`, which wins), as a port table.
pub fn defaults_and(extra: Vec<PortSpec>) -> BTreeMap<u32, Protocol> {
    let mut specs = default_specs();
    specs.extend(extra);
    port_table(&specs)
}

/// Port-table slot -> protocol, as loaded into the `PORTS` map. Later specs win.
pub fn port_table(specs: &[PortSpec]) -> BTreeMap<u32, Protocol> {
    let mut table = BTreeMap::new();
    for spec in specs {
        for t in spec.protocol.transports() {
            debug_assert!(*t == IPPROTO_TCP || *t == IPPROTO_UDP);
            for &(lo, hi) in &spec.ranges {
                for port in lo..=hi {
                    table.insert(port_slot(*t, port), spec.protocol);
                }
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_ranges() {
        let s: PortSpec = "cs1000-rudp=15000,15010-15012".parse().unwrap();
        assert_eq!(s.protocol, Protocol::Cs1000Rudp);
        assert_eq!(s.ranges, vec![(15000, 15000), (15010, 15012)]);
        let t = port_table(&[s]);
        assert_eq!(t.len(), 4);
        assert_eq!(
            t.get(&port_slot(IPPROTO_UDP, 15011)),
            Some(&Protocol::Cs1000Rudp)
        );
        assert_eq!(t.get(&port_slot(IPPROTO_TCP, 15011)), None);
    }

    #[test]
    fn rejects_bad_specs_with_the_reason() {
        assert!(matches!(
            "rudp".parse::<PortSpec>(),
            Err(PortSpecError::Syntax(_))
        ));
        assert!(matches!(
            "nope=1".parse::<PortSpec>(),
            Err(PortSpecError::UnknownProtocol { .. })
        ));
        for bad in [
            "cs1000-rudp=0",
            "cs1000-rudp=70000",
            "cs1000-rudp=9-3",
            "cs1000-rudp=a",
        ] {
            assert!(
                matches!(bad.parse::<PortSpec>(), Err(PortSpecError::BadPort { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn defaults_cover_rudp() {
        let t = port_table(&default_specs());
        assert_eq!(
            t.get(&port_slot(IPPROTO_UDP, 15000)),
            Some(&Protocol::Cs1000Rudp)
        );
    }

    /// docs/PROTOCOLS.md shows the table as this version prints it.
    #[test]
    fn protocols_md_has_the_current_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOLS.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let start = "<!-- generated: hbwatch protocols --markdown -->\n";
        let from = doc
            .find(start)
            .expect("the generated section's start marker")
            + start.len();
        let to = doc.find("<!-- end generated -->").expect("its end marker");
        assert_eq!(
            &doc[from..to],
            protocol_table(true),
            "docs/PROTOCOLS.md is stale: replace its generated table with `hbwatch protocols --markdown`"
        );
    }
}
