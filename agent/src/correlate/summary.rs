//! `heartbeat.summary`, built once for every tracker: what one association did in one
//! period, in the same fields, words and units (RTT in ms to the µs) whether it beats
//! (GED-125, SCCP, MDS, RUDP, IPMG, MGCP) or answers REGISTER/OPTIONS (SIP).

use hbwatch_common::key::FlowKey;

use super::assoc::{Stats, MS};
use super::Ctx;
use crate::convert::{association, About};
use crate::event::{Action, Event, Level, RttUs, Said};

/// What `count` and `lost` of a tracker's [`Stats`] are, in a summary's message.
pub struct Counted {
    /// `count`: one, many ("heartbeat", "heartbeats").
    pub one: &'static str,
    pub many: &'static str,
    /// `lost`: "lost", "unanswered".
    pub lost: &'static str,
}

pub const HEARTBEATS: Counted = Counted {
    one: "heartbeat",
    many: "heartbeats",
    lost: "lost",
};

pub const SIP_TRANSACTIONS: Counted = Counted {
    one: "REGISTER/OPTIONS transaction answered",
    many: "REGISTER/OPTIONS transactions answered",
    lost: "unanswered",
};

/// One association's period.
pub struct Period<'a> {
    pub key: &'a FlowKey,
    pub ifindex: u32,
    /// End of the period, record clock (ns).
    pub at_ns: u64,
    pub length_ns: u64,
    pub stats: &'a Stats,
    /// The interval heartbeats keep (expected or measured), if known.
    pub interval_ms: Option<u64>,
    pub counted: &'a Counted,
}

/// The `heartbeat.summary` event of `p`; None when nothing happened in it.
pub fn event(p: &Period, ctx: &Ctx) -> Option<Event> {
    let s = p.stats;
    if s.count == 0 && s.lost == 0 && s.rtt_n == 0 && s.folded.total() == 0 && s.duplicates == 0 {
        return None;
    }
    let rtt = s.rtt_avg_ns().map(|avg| RttUs {
        min: s.rtt_min_ns / 1000,
        avg: avg / 1000,
        max: s.rtt_max_ns / 1000,
    });
    let rtt_text = rtt.map_or(String::new(), |r| {
        format!(
            ", RTT {:.3}/{:.3}/{:.3} ms min/avg/max",
            r.min as f64 / 1000.0,
            r.avg as f64 / 1000.0,
            r.max as f64 / 1000.0
        )
    });
    let interval_text = p
        .interval_ms
        .map_or(String::new(), |ms| format!(" (interval {ms} ms)"));
    let folded_text = match s.folded.total() {
        0 => String::new(),
        _ => format!("; alerts folded: {}", s.folded.describe()),
    };
    let dups_text = match s.duplicates {
        0 => String::new(),
        n => format!("; {n} duplicate frames ignored (mirror copies)"),
    };
    let c = p.counted;
    let message = format!(
        "{}: {} {}, {} {}{rtt_text} in {} s{interval_text}{folded_text}{dups_text}",
        association(p.key),
        s.count,
        if s.count == 1 { c.one } else { c.many },
        s.lost,
        c.lost,
        p.length_ns / 1_000_000_000,
    );
    let mut ev = ctx.conv.association_event(
        About {
            key: p.key,
            ifindex: Some(p.ifindex),
            unix_ns: ctx.clock.unix_ns(p.at_ns),
        },
        Said {
            action: Action::HeartbeatSummary,
            level: Level::Info,
            message,
        },
    );
    let hb = &mut ev.heartbeat;
    hb.count = Some(s.count);
    hb.lost = Some(s.lost);
    hb.rtt_us = rtt;
    hb.interval_ms = p.interval_ms;
    hb.period_ms = Some(p.length_ns / MS);
    hb.folded = s.folded.by_action();
    hb.duplicates = (s.duplicates > 0).then_some(s.duplicates);
    Some(ev)
}
