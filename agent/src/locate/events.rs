//! `path.*` events (docs/EVENTS.md, "Where is the loss"), in the envelope every event has.

use std::net::IpAddr;

use hbwatch_common::parse::{AF_INET, AF_INET6, IPPROTO_TCP};

use super::capture::{AssocKey, Beat};
use crate::convert::community_id;
use crate::event::{
    rfc3339_micros, Action, DelayMs, Endpoint, Event, Level, Network, Observer, PathFields,
    Related, Said,
};

fn addr16(ip: IpAddr) -> (u8, [u8; 16]) {
    let mut a = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => {
            a[..4].copy_from_slice(&v4.octets());
            (AF_INET, a)
        }
        IpAddr::V6(v6) => (AF_INET6, v6.octets()),
    }
}

/// An event on one association's direction `dir`: source and destination as it travels.
/// `path.summary` is a metric, every other `path.*` action a warning alert.
pub fn base(
    key: &AssocKey,
    dir: usize,
    ts_ns: u64,
    action: Action,
    hostname: &str,
    message: String,
) -> Event {
    let level = if action == Action::PathSummary {
        Level::Info
    } else {
        Level::Warning
    };
    let observer = Observer {
        hostname: hostname.to_string(),
        ingress: None,
    };
    let mut ev = Event::new(
        rfc3339_micros(ts_ns as i128),
        observer,
        Said {
            action,
            level,
            message,
        },
    );
    let (src, dst) = key.ends(dir);
    let (family, a) = addr16(src.0);
    let (_, b) = addr16(dst.0);
    let tcp = key.transport == IPPROTO_TCP;
    ev.network = Some(Network {
        protocol: key.proto.name(),
        transport: if tcp { "tcp" } else { "udp" },
        ip_version: if family == AF_INET { "ipv4" } else { "ipv6" },
        iana_number: if tcp { "6" } else { "17" },
        community_id: Some(community_id(family, &a, src.1, &b, dst.1, key.transport)),
    });
    ev.source = Some(Endpoint {
        ip: src.0.to_string(),
        port: src.1,
    });
    ev.destination = Some(Endpoint {
        ip: dst.0.to_string(),
        port: dst.1,
    });
    ev.related = Some(Related {
        ip: vec![src.0.to_string(), dst.0.to_string()],
    });
    ev
}

/// `proto a:p -> b:q` for messages.
pub fn flow(key: &AssocKey, dir: usize) -> String {
    let (s, d) = key.ends(dir);
    let ep = |(ip, port): (IpAddr, u16)| match ip {
        IpAddr::V4(_) => format!("{ip}:{port}"),
        IpAddr::V6(_) => format!("[{ip}]:{port}"),
    };
    format!("{} {} -> {}", key.proto.name(), ep(s), ep(d))
}

pub fn path(from: Option<&str>, to: Option<&str>) -> PathFields {
    PathFields {
        from: from.map(str::to_string),
        to: to.map(str::to_string),
        ..PathFields::default()
    }
}

pub fn ms(ns: i64) -> f64 {
    // Microsecond precision: what the captures hold at best for most.
    (ns as f64 / 1000.0).round() / 1000.0
}

pub fn delay(lo: i64, sum: i64, hi: i64, n: u64) -> DelayMs {
    DelayMs {
        min: ms(lo),
        avg: ms(sum / n.max(1) as i64),
        max: ms(hi),
    }
}

/// Sets `heartbeat.seq`/`last_seq` of a run.
pub fn run_seqs(ev: &mut Event, first: &Beat, last: &Beat) {
    ev.heartbeat.seq = Some(first.seq);
    ev.heartbeat.last_seq = Some(last.seq);
}
