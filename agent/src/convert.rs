//! Turns datapath records into contract events.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hbwatch_common::event::{EventKind, RawEvent};
use hbwatch_common::flow::{FlowKey, QOS_FROM_RESPONDER};
use hbwatch_common::parse::{AF_INET, IPPROTO_TCP};
use hbwatch_common::proto::Protocol;

use crate::event::{Endpoint, Event, Ingress, Interface, Level, Network, Observer};

/// Context shared by all events of one run.
#[derive(Debug, Clone)]
pub struct Converter {
    pub hostname: String,
    /// ifindex -> interface name (live); offline uses `fixed_interface`.
    pub interfaces: HashMap<u32, String>,
    /// Offline: the capture file name stands for the interface.
    pub fixed_interface: Option<String>,
}

pub fn ip_of(family: u8, addr: &[u8; 16]) -> IpAddr {
    if family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*addr))
    }
}

/// `proto a:p -> b:q`, as messages name an association.
pub fn association(key: &FlowKey) -> String {
    let fmt = |ip: IpAddr, port: u16| match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    };
    format!(
        "{} {} -> {}",
        Protocol::from_u8(key.proto).name(),
        fmt(ip_of(key.family, &key.orig), key.orig_port),
        fmt(ip_of(key.family, &key.resp), key.resp_port)
    )
}

impl Converter {
    pub fn observer(&self, ifindex: Option<u32>) -> Observer {
        let name = self
            .fixed_interface
            .clone()
            .or_else(|| ifindex.and_then(|i| self.interfaces.get(&i).cloned()))
            .or_else(|| ifindex.map(|i| format!("if{i}")));
        Observer {
            hostname: self.hostname.clone(),
            ingress: name.map(|name| Ingress {
                interface: Interface { name },
            }),
        }
    }

    /// An event about the association `key`: network, source (originator) and
    /// destination (responder) filled; callers add `heartbeat.*` / `sip.*`.
    #[allow(clippy::too_many_arguments)]
    pub fn association_event(
        &self,
        key: &FlowKey,
        ifindex: Option<u32>,
        unix_ns: i128,
        kind: &'static str,
        action: &'static str,
        level: Level,
        message: String,
    ) -> Event {
        let mut ev = Event::new(
            crate::event::rfc3339_micros(unix_ns),
            kind,
            action,
            level,
            self.observer(ifindex),
            message,
        );
        ev.network = Some(Network {
            protocol: Protocol::from_u8(key.proto).name(),
            transport: if key.transport == IPPROTO_TCP {
                "tcp"
            } else {
                "udp"
            },
        });
        ev.source = Some(Endpoint {
            ip: ip_of(key.family, &key.orig).to_string(),
            port: key.orig_port,
        });
        ev.destination = Some(Endpoint {
            ip: ip_of(key.family, &key.resp).to_string(),
            port: key.resp_port,
        });
        ev
    }

    /// The event for one record; `unix_ns` is the record's time on the wall clock.
    /// `None` for records that are inputs to correlation (session timing, SIP text),
    /// not events by themselves.
    pub fn event(&self, raw: &RawEvent, unix_ns: i128) -> Option<Event> {
        let kind = EventKind::from_u8(raw.kind)?;
        if matches!(
            kind,
            EventKind::SessionParams | EventKind::SipMessage | EventKind::Heartbeat
        ) {
            return None;
        }
        let key = &raw.key;
        let assoc = association(key);
        let seq = raw.seq;
        let (ev_kind, action, level, message) = match kind {
            EventKind::AssociationSeen => (
                "event",
                "peer.up",
                Level::Info,
                format!("{assoc}: heartbeats seen (seq {seq})"),
            ),
            EventKind::Gap => {
                let last = seq.wrapping_sub(1);
                (
                    "alert",
                    "heartbeat.gap",
                    Level::Warning,
                    format!(
                        "{assoc}: {} heartbeat{} lost (seq {}..{last})",
                        raw.value,
                        if raw.value == 1 { "" } else { "s" },
                        raw.aux
                    ),
                )
            }
            EventKind::Retry => (
                "alert",
                "heartbeat.retry",
                Level::Warning,
                format!(
                    "{assoc}: heartbeat seq {seq} sent again (attempt {})",
                    raw.aux
                ),
            ),
            EventKind::Unanswered => (
                "alert",
                "heartbeat.unanswered",
                Level::Warning,
                format!(
                    "{assoc}: heartbeat seq {seq} got no response within {} ms",
                    raw.value / 1_000_000
                ),
            ),
            EventKind::Restart => (
                "alert",
                "heartbeat.restart",
                Level::Error,
                format!(
                    "{assoc}: sequence restarted at {seq} (was {}): the peer process restarted",
                    raw.aux
                ),
            ),
            EventKind::OutOfOrder => (
                "alert",
                "heartbeat.out_of_order",
                Level::Warning,
                format!(
                    "{assoc}: duplicate or older seq {seq} (expected {})",
                    raw.aux
                ),
            ),
            EventKind::Mismatch => (
                "alert",
                "heartbeat.mismatch",
                Level::Warning,
                format!("{assoc}: response seq {seq} matches no outstanding request"),
            ),
            EventKind::QosMismatch => {
                let whose = if raw.value & QOS_FROM_RESPONDER != 0 {
                    "responses"
                } else {
                    "heartbeats"
                };
                (
                    "alert",
                    "qos.mismatch",
                    Level::Warning,
                    format!(
                        "{assoc}: {whose} marked DSCP {} instead of {}: QoS marking stripped or re-marked on the path",
                        raw.value & 0xff,
                        raw.aux
                    ),
                )
            }
            EventKind::SessionClosed => {
                let (how, level) = if raw.aux != 0 {
                    ("reset (RST)", Level::Error)
                } else {
                    ("closed (FIN)", Level::Warning)
                };
                let by = if raw.value != 0 {
                    "responder"
                } else {
                    "originator"
                };
                (
                    "alert",
                    "session.closed",
                    level,
                    format!("{assoc}: heartbeat session {how} by the {by}"),
                )
            }
            EventKind::SessionParams | EventKind::SipMessage | EventKind::Heartbeat => return None,
        };
        let mut ev = self.association_event(
            key,
            Some(raw.ifindex),
            unix_ns,
            ev_kind,
            action,
            level,
            message,
        );
        let hb = &mut ev.heartbeat;
        hb.seq = Some(seq);
        match kind {
            EventKind::Gap => {
                hb.expected_seq = Some(raw.aux);
                hb.lost = Some(raw.value);
            }
            EventKind::Retry => hb.attempt = Some(raw.aux),
            EventKind::Unanswered => hb.timeout_ms = Some(raw.value / 1_000_000),
            EventKind::Restart => hb.previous_seq = Some(raw.aux),
            EventKind::OutOfOrder => hb.expected_seq = Some(raw.aux),
            EventKind::QosMismatch => {
                hb.dscp = Some((raw.value & 0xff) as u8);
                hb.direction = Some(if raw.value & QOS_FROM_RESPONDER != 0 {
                    "response"
                } else {
                    "request"
                });
                hb.expected_dscp = Some(raw.aux as u8);
            }
            EventKind::SessionClosed => {
                hb.reset = Some(raw.aux != 0);
                hb.closed_by = Some(if raw.value != 0 {
                    "destination"
                } else {
                    "source"
                });
            }
            EventKind::AssociationSeen
            | EventKind::Mismatch
            | EventKind::SessionParams
            | EventKind::SipMessage
            | EventKind::Heartbeat => {}
        }
        Some(ev)
    }
}
