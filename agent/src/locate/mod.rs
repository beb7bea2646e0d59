//! `hbwatch locate NAME=FILE NAME=FILE...`: captures of the same heartbeats taken at
//! several points of a path, lined up by the heartbeats' own numbers, to say where
//! heartbeats are lost or re-marked (docs/OPERATIONS.md, "Where is the loss?").
//!
//! Every heartbeat is matched across vantages by identity, never by time. Each pair
//! of captures gets a clock offset from the matched heartbeats (both directions cancel
//! the path delay); after it, the vantage that sees a direction's heartbeats first is
//! upstream for that direction, and what it saw that the downstream one never did, in
//! the downstream capture's window, was lost between them.

pub mod capture;
pub mod events;
pub mod recorder;
pub mod segment;
pub mod vantage;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;

use hbwatch_common::proto::Protocol;

use crate::event::Action;
use capture::{AssocKey, Vantage};
use segment::{DirReport, Offset};

/// Options of one `locate` run.
#[derive(Debug, Clone)]
pub struct LocateOptions {
    /// Vantage name and capture, in any order.
    pub points: Vec<(String, PathBuf)>,
    pub ports: BTreeMap<u32, Protocol>,
    pub hostname: String,
}

/// Parses `NAME=FILE`.
pub fn parse_point(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((n, f)) if !n.is_empty() && !f.is_empty() => Ok((n.to_string(), f.into())),
        _ => Err(format!(
            "{s:?}: expected NAME=FILE, e.g. callserver=cs.pcap (a name for the vantage point, then its capture)"
        )),
    }
}

/// Reads every capture, compares every pair and writes the events; returns the exit
/// status (as `analyze`: 1 a capture could not be read, 4 one was cut short).
pub fn run(opts: &LocateOptions, out: &mut dyn Write) -> anyhow::Result<i32> {
    let mut names = std::collections::BTreeSet::new();
    for (n, _) in &opts.points {
        if !names.insert(n) {
            anyhow::bail!("vantage name {n:?} given twice: every capture needs a name of its own");
        }
    }
    if opts.points.len() < 2 {
        anyhow::bail!(
            "locate needs two captures or more (NAME=FILE NAME=FILE), one per vantage point"
        );
    }
    let started = std::time::Instant::now();
    // Each capture on its own thread: reading is most of the time.
    let results: Vec<anyhow::Result<Result<Vantage, String>>> = std::thread::scope(|s| {
        let handles: Vec<_> = opts
            .points
            .iter()
            .map(|(name, path)| s.spawn(move || capture::read(name, path, &opts.ports)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| anyhow::bail!("reader panicked"))
            })
            .collect()
    });
    let mut vantages = Vec::new();
    let (mut unreadable, mut damaged) = (0, 0);
    for r in results {
        match r? {
            Ok(v) => {
                if let Some(why) = &v.damage {
                    tracing::warn!("{why}");
                    damaged += 1;
                }
                if v.unnumbered > 0 {
                    tracing::info!(
                        "{}: {} CS1000 IPMG heartbeats skipped: they carry no number to match by",
                        v.name,
                        v.unnumbered
                    );
                }
                vantages.push(v);
            }
            Err(why) => {
                tracing::error!("{why}");
                unreadable += 1;
            }
        }
    }
    if unreadable > 0 {
        eprintln!(
            "hbwatch: error: {unreadable} of {} captures could not be read (see above)",
            opts.points.len()
        );
        return Ok(1);
    }
    let read = started.elapsed();
    let reports = compare_all(&vantages);
    write_events(&vantages, &reports, &opts.hostname, out)?;
    out.flush()?;
    let matched: u64 = reports.dirs.iter().map(|r| r.matched).sum();
    tracing::debug!(
        "read in {read:.2?}, {matched} heartbeats matched and events written in {:.2?}",
        started.elapsed() - read
    );
    if damaged > 0 {
        eprintln!(
            "hbwatch: {damaged} of {} captures were cut short or corrupt (see above): everything before the damage was used; exit status {}",
            opts.points.len(),
            crate::offline::EXIT_DAMAGED
        );
        return Ok(crate::offline::EXIT_DAMAGED);
    }
    Ok(0)
}

/// What every pair of vantages gave: the offsets and, per association and direction,
/// the segments between neighbouring vantages.
pub struct Reports {
    /// `(a, b)` -> `b`'s clock against `a`'s.
    pub offsets: BTreeMap<(usize, usize), Offset>,
    pub dirs: Vec<DirReport>,
}

pub fn compare_all(vantages: &[Vantage]) -> Reports {
    let mut offsets = BTreeMap::new();
    let mut all: BTreeMap<(AssocKey, usize), Vec<DirReport>> = BTreeMap::new();
    for i in 0..vantages.len() {
        for j in i + 1..vantages.len() {
            let (a, b) = (&vantages[i], &vantages[j]);
            let pairs = segment::pairs(a, b);
            let nat = pairs.iter().filter(|p| p.a != p.b).count();
            if nat > 0 {
                tracing::info!(
                    "{} and {}: {nat} associations matched with one endpoint rewritten (NAT)",
                    a.name,
                    b.name
                );
            }
            let Some(off) = segment::clock_offset(a, b, &pairs) else {
                tracing::warn!(
                    "{} and {}: no heartbeat was seen at both: nothing to compare (other associations, another time, or addresses rewritten between them)",
                    a.name,
                    b.name
                );
                continue;
            };
            offsets.insert((i, j), off);
            for p in &pairs {
                for dir in 0..2 {
                    if let Some(r) = segment::compare(p, dir, (i, a), (j, b), &off) {
                        all.entry((p.a, dir)).or_default().push(r);
                    }
                }
            }
        }
    }
    // With three vantages or more, only neighbours along the direction's path form a
    // segment: a vantage's place is how many others are upstream of it.
    let mut dirs = Vec::new();
    for (_, rs) in all {
        let mut place: HashMap<usize, usize> = HashMap::new();
        for r in &rs {
            *place.entry(r.to).or_default() += 1;
            place.entry(r.from).or_default();
        }
        dirs.extend(
            rs.into_iter()
                .filter(|r| place[&r.to] == place[&r.from] + 1),
        );
    }
    Reports { offsets, dirs }
}

fn write_events(
    vantages: &[Vantage],
    reports: &Reports,
    hostname: &str,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut buf = Vec::with_capacity(1 << 16);
    let name = |i: usize| vantages[i].name.as_str();
    for r in &reports.dirs {
        let (from, to) = (name(r.from), name(r.to));
        for run in &r.lost {
            let what = if r.never_arrived {
                "none of this direction ever arrived: blocked one way, or another route"
            } else {
                "never arrived"
            };
            let msg = format!(
                "{} heartbeats of {} seen at {from} {what} at {to} (seq {}..{})",
                run.count,
                events::flow(&r.key, r.dir),
                run.first.seq,
                run.last.seq
            );
            let mut ev = events::base(&r.key, r.dir, run.first.ts, Action::PathLoss, hostname, msg);
            events::run_seqs(&mut ev, &run.first, &run.last);
            ev.heartbeat.lost = Some(run.count);
            ev.path = Some(events::path(Some(from), Some(to)));
            ev.write_line(&mut buf);
        }
        for q in &r.remarked {
            let msg = format!(
                "{} heartbeats of {} left {from} with DSCP {} and reached {to} with DSCP {} (seq {}..{})",
                q.count,
                events::flow(&r.key, r.dir),
                q.at_from,
                q.at_to,
                q.first.seq,
                q.last.seq
            );
            let mut ev = events::base(
                &r.key,
                r.dir,
                q.first.ts,
                Action::PathQosChanged,
                hostname,
                msg,
            );
            events::run_seqs(&mut ev, &q.first, &q.last);
            ev.heartbeat.count = Some(q.count);
            ev.heartbeat.expected_dscp = Some(q.at_from);
            ev.heartbeat.dscp = Some(q.at_to);
            ev.path = Some(events::path(Some(from), Some(to)));
            ev.write_line(&mut buf);
        }
        out.write_all(&buf)?;
        buf.clear();
    }
    route_events(vantages, reports, hostname, &mut buf);
    for r in &reports.dirs {
        let (from, to) = (name(r.from), name(r.to));
        let lost: u64 = r.lost.iter().map(|x| x.count).sum();
        let off = reports
            .offsets
            .get(&(r.from.min(r.to), r.from.max(r.to)))
            .copied();
        let ts = vantages[r.from].span.map(|s| s.1).unwrap_or(0);
        let msg = format!(
            "{} from {from} to {to}: {} matched, {lost} lost, {} outside the other capture, {} only at {to}; {to}'s clock is {:+.3} ms off {from}'s",
            events::flow(&r.key, r.dir),
            r.matched,
            r.outside,
            r.unmatched,
            events::ms(r.offset_ns)
        );
        let mut ev = events::base(&r.key, r.dir, ts, Action::PathSummary, hostname, msg);
        ev.heartbeat.lost = Some(lost);
        let mut p = events::path(Some(from), Some(to));
        p.matched = Some(r.matched);
        p.unmatched = Some(r.unmatched);
        p.outside_window = Some(r.outside);
        p.delay_ms = r
            .delay
            .map(|(lo, sum, hi)| events::delay(lo, sum, hi, r.matched));
        p.clock_offset_ms = Some(events::ms(r.offset_ns));
        if let Some(o) = off {
            p.clock_offset_samples = Some(o.samples as u64);
            p.clock_offset_spread_ms = Some(events::ms(o.spread_ns as i64));
            p.clock_offset_method = Some(if o.two_way { "two-way" } else { "one-way" });
        }
        ev.path = Some(p);
        ev.write_line(&mut buf);
    }
    out.write_all(&buf)?;
    Ok(())
}

/// `path.route_changed`: a direction's TTL changing mid-capture at a vantage, and FIN/RST
/// frames whose TTL is not the sender's usual one. Located between the upstream
/// neighbour and the vantage when the neighbour saw no such thing.
fn route_events(vantages: &[Vantage], reports: &Reports, hostname: &str, buf: &mut Vec<u8>) {
    let beats_at = |v: usize, (k, d): (AssocKey, usize)| -> &[capture::Beat] {
        vantages[v].assocs.get(&k).map_or(&[], |x| &x.beats[d])
    };
    // (key, dir, downstream vantage) -> (upstream vantage, downstream clock - upstream's,
    // key and dir there).
    type Up = (usize, i64, (AssocKey, usize));
    let mut upstream: HashMap<(AssocKey, usize, usize), Up> = HashMap::new();
    for r in &reports.dirs {
        upstream.insert(
            (r.to_key.0, r.to_key.1, r.to),
            (r.from, r.offset_ns, r.from_key),
        );
    }
    for (vi, v) in vantages.iter().enumerate() {
        for (key, assoc) in &v.assocs {
            for dir in 0..2 {
                let beats = &assoc.beats[dir];
                let up = upstream.get(&(*key, dir, vi)).copied();
                for (beat, old) in segment::ttl_changes(beats) {
                    // The same change upstream (same TTLs, about the same time) happened
                    // before the upstream vantage: it reports it.
                    let seen_up = up.is_some_and(|(u, off, at_u)| {
                        let ub = beats_at(u, at_u);
                        segment::ttl_changes(ub).iter().any(|(b, o)| {
                            b.ttl.wrapping_sub(*o) == beat.ttl.wrapping_sub(old)
                                && (b.ts as i64 + off - beat.ts as i64).abs()
                                    < segment::PAIR_WINDOW_NS
                        })
                    });
                    if seen_up {
                        continue;
                    }
                    let from = up.map(|(u, _, _)| vantages[u].name.as_str());
                    let msg = format!(
                        "the IP TTL of {} changed from {old} to {} at {} (seq {}): another route{}",
                        events::flow(key, dir),
                        beat.ttl,
                        v.name,
                        beat.seq,
                        match from {
                            Some(f) => format!(", between {f} and {}", v.name),
                            None => " upstream of every vantage".to_string(),
                        }
                    );
                    let mut ev =
                        events::base(key, dir, beat.ts, Action::PathRouteChanged, hostname, msg);
                    ev.heartbeat.seq = Some(beat.seq);
                    ev.heartbeat.ttl = Some(beat.ttl);
                    ev.heartbeat.expected_ttl = Some(old);
                    let mut p = events::path(from, Some(&v.name));
                    p.reason = Some("ttl-changed");
                    ev.path = Some(p);
                    ev.write_line(buf);
                }
            }
            for c in &assoc.controls {
                let beats = &assoc.beats[c.dir];
                // The sender's usual TTL: its heartbeats' just before (or the first).
                let Some(usual) = segment::ttl_before(beats, c.ts).or(beats.first().map(|b| b.ttl))
                else {
                    continue;
                };
                if c.ttl == usual {
                    continue;
                }
                let up = upstream.get(&(*key, c.dir, vi)).copied();
                let seen_up = up.is_some_and(|(u, _, (k, d))| {
                    vantages[u].assocs.get(&k).is_some_and(|x| {
                        x.controls
                            .iter()
                            .any(|o| o.dir == d && o.rst == c.rst && o.tcp_seq == c.tcp_seq)
                    })
                });
                if seen_up {
                    continue;
                }
                let from = up.map(|(u, _, _)| vantages[u].name.as_str());
                let what = if c.rst { "RST" } else { "FIN" };
                let msg = format!(
                    "a TCP {what} on {} at {} has TTL {}, the sender's heartbeats {usual}: forged on the way{}",
                    events::flow(key, c.dir),
                    v.name,
                    c.ttl,
                    match from {
                        Some(f) => format!(", between {f} and {}", v.name),
                        None => String::new(),
                    }
                );
                let mut ev =
                    events::base(key, c.dir, c.ts, Action::PathRouteChanged, hostname, msg);
                ev.heartbeat.ttl = Some(c.ttl);
                ev.heartbeat.expected_ttl = Some(usual);
                ev.heartbeat.reset = Some(c.rst);
                let mut p = events::path(from, Some(&v.name));
                p.reason = Some(if c.rst { "forged-reset" } else { "forged-fin" });
                ev.path = Some(p);
                ev.write_line(buf);
            }
        }
    }
}
