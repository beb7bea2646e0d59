//! Which ports carry which heartbeat protocol: defaults plus `--port PROTOCOL=PORTS`.

use std::collections::BTreeMap;

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

/// The default ports of every protocol the datapath decodes (PROTOCOLS.md).
pub fn default_specs() -> Vec<PortSpec> {
    let all = [
        (Protocol::Ged125, vec![(5000, 5000)]),
        (Protocol::Sccp, vec![(2000, 2000)]),
        (Protocol::Mds, vec![(39500, 39999)]),
        (Protocol::Cs1000Rudp, vec![(15000, 15000)]),
        (Protocol::Cs1000Ipmg, vec![(32779, 32780)]),
        (Protocol::Sip, vec![(5060, 5060)]),
    ];
    all.into_iter()
        .filter(|(p, _)| p.decoded())
        .map(|(protocol, ranges)| PortSpec { protocol, ranges })
        .collect()
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
}
