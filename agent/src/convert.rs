//! Turns datapath records into contract events.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hbwatch_common::event::{EventKind, RawEvent};
use hbwatch_common::flow::QOS_FROM_RESPONDER;
use hbwatch_common::key::FlowKey;
use hbwatch_common::parse::{AF_INET, IPPROTO_TCP};
use hbwatch_common::proto::mgcp::RestartMethod;
use hbwatch_common::proto::Protocol;

use crate::event::{
    Action, Endpoint, Event, Ingress, Interface, Level, Network, Observer, Related, Said,
};

/// Which association an event is about, the interface it was seen on and when (wall
/// clock, ns since the epoch): named, so that no two of them can swap places.
pub struct About<'a> {
    pub key: &'a FlowKey,
    pub ifindex: Option<u32>,
    pub unix_ns: i128,
}

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

/// An address as text. IPv4 by hand: std's `Display` (padding support, several writes
/// per octet) took a tenth of the event pipeline's time for the three addresses of an event.
pub fn ip_text(family: u8, addr: &[u8; 16]) -> String {
    let mut s = String::with_capacity(if family == AF_INET { 15 } else { 39 });
    push_ip(&mut s, family, addr);
    s
}

fn push_ip(s: &mut String, family: u8, addr: &[u8; 16]) {
    if family != AF_INET {
        use std::fmt::Write as _;
        let _ = write!(s, "{}", Ipv6Addr::from(*addr));
        return;
    }
    for (i, &octet) in addr[..4].iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        push_decimal(s, octet as u32);
    }
}

fn push_decimal(s: &mut String, v: u32) {
    let mut digits = [0u8; 10];
    let mut n = 0;
    let mut v = v;
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for &d in digits[..n].iter().rev() {
        s.push(d as char);
    }
}

/// Community ID v1 (github.com/corelight/community-id-spec, seed 0) of a 5-tuple:
/// `1:` and the base64 SHA-1 of seed, addresses, protocol, a zero byte and ports, the
/// lower endpoint first, so both directions of a flow hash alike.
pub fn community_id(
    family: u8,
    a: &[u8; 16],
    a_port: u16,
    b: &[u8; 16],
    b_port: u16,
    proto: u8,
) -> String {
    use base64::Engine as _;
    use sha1::{Digest, Sha1};
    let len = if family == AF_INET { 4 } else { 16 };
    let (a, b) = (&a[..len], &b[..len]);
    let ((lo, lo_port), (hi, hi_port)) = if (a, a_port) <= (b, b_port) {
        ((a, a_port), (b, b_port))
    } else {
        ((b, b_port), (a, a_port))
    };
    let mut h = Sha1::new();
    h.update(0u16.to_be_bytes());
    h.update(lo);
    h.update(hi);
    h.update([proto, 0]);
    h.update(lo_port.to_be_bytes());
    h.update(hi_port.to_be_bytes());
    let mut id = String::with_capacity(30);
    id.push_str("1:");
    base64::engine::general_purpose::STANDARD.encode_string(h.finalize(), &mut id);
    id
}

/// `proto a:p -> b:q`, as messages name an association.
pub fn association(key: &FlowKey) -> String {
    let mut s = String::with_capacity(96);
    s.push_str(Protocol::from_u8(key.proto).name());
    s.push(' ');
    for (i, (addr, port)) in [(&key.orig, key.orig_port), (&key.resp, key.resp_port)]
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            s.push_str(" -> ");
        }
        let v6 = key.family != AF_INET;
        if v6 {
            s.push('[');
        }
        push_ip(&mut s, key.family, addr);
        if v6 {
            s.push(']');
        }
        s.push(':');
        push_decimal(&mut s, port as u32);
    }
    s
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

    /// An event about an association: network, source (originator) and destination
    /// (responder) filled; callers add `heartbeat.*` / `sip.*`.
    pub fn association_event(&self, about: About, said: Said) -> Event {
        let About {
            key,
            ifindex,
            unix_ns,
        } = about;
        let mut ev = Event::new(
            crate::event::rfc3339_micros(unix_ns),
            self.observer(ifindex),
            said,
        );
        let tcp = key.transport == IPPROTO_TCP;
        ev.network = Some(Network {
            protocol: Protocol::from_u8(key.proto).name(),
            transport: if tcp { "tcp" } else { "udp" },
            ip_version: if key.family == AF_INET {
                "ipv4"
            } else {
                "ipv6"
            },
            iana_number: if tcp { "6" } else { "17" },
            community_id: Some(community_id(
                key.family,
                &key.orig,
                key.orig_port,
                &key.resp,
                key.resp_port,
                key.transport,
            )),
        });
        let (orig, resp) = (
            ip_text(key.family, &key.orig),
            ip_text(key.family, &key.resp),
        );
        ev.related = Some(Related {
            ip: if orig == resp {
                vec![orig.clone()]
            } else {
                vec![orig.clone(), resp.clone()]
            },
        });
        ev.source = Some(Endpoint {
            ip: orig,
            port: key.orig_port,
        });
        ev.destination = Some(Endpoint {
            ip: resp,
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
            EventKind::SessionParams
                | EventKind::SipMessage
                | EventKind::Heartbeat
                | EventKind::Fragment
                | EventKind::Duplicate
                | EventKind::Beats
        ) {
            return None;
        }
        let key = &raw.key;
        let assoc = association(key);
        let seq = raw.seq;
        let (action, level, message) = match kind {
            EventKind::AssociationSeen => (
                Action::PeerUp,
                Level::Info,
                format!("{assoc}: heartbeats seen (seq {seq})"),
            ),
            EventKind::Gap => {
                let last = seq.wrapping_sub(1);
                (
                    Action::HeartbeatGap,
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
                Action::HeartbeatRetry,
                Level::Warning,
                format!(
                    "{assoc}: heartbeat seq {seq} sent again (attempt {})",
                    raw.aux
                ),
            ),
            EventKind::Unanswered => (
                Action::HeartbeatUnanswered,
                Level::Warning,
                format!(
                    "{assoc}: heartbeat seq {seq} got no response within {} ms",
                    raw.value / 1_000_000
                ),
            ),
            EventKind::Restart if raw.value != 0 => {
                // An MGCP RSIP: `value` is its restart method (proto::mgcp).
                let method = RestartMethod::from_code(raw.value as u8);
                let (level, meaning) = match method {
                    RestartMethod::Restart => (Level::Error, "its endpoints restart and come back into service"),
                    RestartMethod::Disconnected => (Level::Error, "it had lost its call agent and has reconnected"),
                    RestartMethod::Graceful => (Level::Error, "it takes its endpoints out of service as their calls end (switchover to another call agent, or maintenance)"),
                    RestartMethod::Forced => (Level::Error, "it took its endpoints out of service at once, dropping their calls"),
                    RestartMethod::CancelGraceful => (Level::Warning, "it called off a graceful shutdown"),
                };
                (
                    Action::HeartbeatRestart,
                    level,
                    format!(
                        "{assoc}: RSIP {} (transaction {seq}): {meaning}",
                        method.name()
                    ),
                )
            }
            EventKind::Restart => (
                Action::HeartbeatRestart,
                Level::Error,
                format!(
                    "{assoc}: sequence restarted at {seq} (was {}): the peer process restarted",
                    raw.aux
                ),
            ),
            EventKind::OutOfOrder => (
                Action::HeartbeatOutOfOrder,
                Level::Warning,
                format!(
                    "{assoc}: duplicate or older seq {seq} (expected {})",
                    raw.aux
                ),
            ),
            EventKind::Mismatch => (
                Action::HeartbeatMismatch,
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
                    Action::QosMismatch,
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
                    Action::SessionClosed,
                    level,
                    format!("{assoc}: heartbeat session {how} by the {by}"),
                )
            }
            EventKind::SessionParams
            | EventKind::SipMessage
            | EventKind::Heartbeat
            | EventKind::Fragment
            | EventKind::Duplicate
            | EventKind::Beats => return None,
        };
        let mut ev = self.association_event(
            About {
                key,
                ifindex: Some(raw.ifindex),
                unix_ns,
            },
            Said {
                action,
                level,
                message,
            },
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
            EventKind::Restart => {
                hb.previous_seq = Some(raw.aux);
                if raw.value != 0 {
                    let method = RestartMethod::from_code(raw.value as u8);
                    if let Some((cause, evidence)) = crate::correlate::diagnosis::rsip(method) {
                        hb.diagnosis = Some(cause);
                        hb.evidence = Some(vec![evidence]);
                    }
                }
            }
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
            | EventKind::Heartbeat
            | EventKind::Fragment
            | EventKind::Duplicate
            | EventKind::Beats => {}
        }
        Some(ev)
    }
}

#[cfg(test)]
mod tests {
    use super::{association, ip_of, ip_text};
    use hbwatch_common::key::FlowKey;

    #[test]
    fn addresses_read_as_std_writes_them() {
        for (family, text) in [
            (4, "0.0.0.0"),
            (4, "10.200.7.255"),
            (4, "255.255.255.255"),
            (6, "fd00::1"),
            (6, "2001:db8::ff00:42:8329"),
            (6, "::ffff:10.0.0.1"),
        ] {
            let ip: std::net::IpAddr = text.parse().unwrap();
            let mut addr = [0u8; 16];
            match ip {
                std::net::IpAddr::V4(v4) => addr[..4].copy_from_slice(&v4.octets()),
                std::net::IpAddr::V6(v6) => addr = v6.octets(),
            }
            assert_eq!(ip_text(family, &addr), ip_of(family, &addr).to_string());
            let key = FlowKey {
                orig: addr,
                resp: addr,
                orig_port: 15000,
                resp_port: 0,
                proto: 1,
                family,
                ..FlowKey::default()
            };
            let old = |p: u16| match ip_of(family, &addr) {
                std::net::IpAddr::V4(v4) => format!("{v4}:{p}"),
                std::net::IpAddr::V6(v6) => format!("[{v6}]:{p}"),
            };
            let name = hbwatch_common::proto::Protocol::from_u8(1).name();
            assert_eq!(
                association(&key),
                format!("{name} {} -> {}", old(15000), old(0))
            );
        }
    }
}
