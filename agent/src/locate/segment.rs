//! Two vantage points compared by heartbeat identity: their clock offset, which one is
//! upstream in each direction, and what went missing or was re-marked between them.

use super::capture::{AssocKey, Beat, Index, Vantage};

/// Heartbeats due at the other vantage within this long of its first or last frame
/// (plus the largest delay seen) may have fallen outside its window: never lost.
pub const EDGE_NS: u64 = 1_000_000_000;
/// How far (corrected) times of one heartbeat's copies at two vantages may lie apart,
/// beyond the delay seen: a repeated identity further away is another heartbeat (a
/// sequence restarted).
pub const PAIR_WINDOW_NS: i64 = 5_000_000_000;

/// The clock of vantage `b` against vantage `a`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Offset {
    /// `b`'s clock minus `a`'s, ns.
    pub ns: i64,
    /// Heartbeats matched once at each side that it was estimated from.
    pub samples: usize,
    /// Largest spread (95th - 5th percentile) of one direction's time differences: how
    /// far a single heartbeat's timing wanders (jitter), ns.
    pub spread_ns: u64,
    /// Both directions of some association were seen: path delay cancelled. Without,
    /// the offset includes the one-way delay (taken as 0).
    pub two_way: bool,
}

fn median(v: &mut [i64]) -> i64 {
    v.sort_unstable();
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        // Halves first: no overflow.
        v[n / 2 - 1] / 2 + v[n / 2] / 2
    }
}

fn percentile(sorted: &[i64], p: usize) -> i64 {
    sorted[(sorted.len() - 1) * p / 100]
}

/// Differences `t_b - t_a` of heartbeats seen exactly once at each side.
fn unique_diffs(a: &[Beat], b: &[Beat]) -> Vec<i64> {
    unique_diffs_in(a, &Index::new(a), b, &Index::new(b))
}

fn unique_diffs_in(a: &[Beat], ia: &Index, b: &[Beat], ib: &Index) -> Vec<i64> {
    let mut d = Vec::new();
    for (ident, (ai, an)) in ia.iter() {
        if let (1, Some((bi, 1))) = (an, ib.first(ident)) {
            d.push(b[bi as usize].ts as i64 - a[ai as usize].ts as i64);
        }
    }
    d
}

/// One association as two vantages saw it: its key at each (equal unless NAT rewrote
/// one endpoint between them), and whether `b`'s directions run the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair {
    pub a: AssocKey,
    pub b: AssocKey,
    pub flip: bool,
}

impl Pair {
    pub fn dir_b(&self, dir: usize) -> usize {
        dir ^ self.flip as usize
    }
}

/// Heartbeat identities an association of `b` shares with one of `a` (directions
/// mapped by `flip`), and how many `a` has.
fn overlap(xa: &super::capture::Assoc, xb: &super::capture::Assoc, flip: bool) -> (usize, usize) {
    let mut shared = 0;
    let mut total = 0;
    for dir in 0..2 {
        let ib = Index::new(&xb.beats[dir ^ flip as usize]);
        total += xa.beats[dir].len();
        shared += xa.beats[dir]
            .iter()
            .filter(|x| ib.contains(x.ident))
            .count();
    }
    (shared, total)
}

/// The associations both vantages saw: by equal keys, then those NAT rewrote: same
/// protocol, one endpoint unrewritten, most heartbeats (half or more, 3 at least) the
/// same, and the only such partner of each other; otherwise unmatched, never loss.
pub fn pairs(a: &Vantage, b: &Vantage) -> Vec<Pair> {
    let mut out: Vec<Pair> = a
        .assocs
        .keys()
        .filter(|k| b.assocs.contains_key(k))
        .map(|k| Pair {
            a: *k,
            b: *k,
            flip: false,
        })
        .collect();
    let only_a: Vec<_> = a
        .assocs
        .iter()
        .filter(|(k, _)| !b.assocs.contains_key(k))
        .collect();
    let only_b: Vec<_> = b
        .assocs
        .iter()
        .filter(|(k, _)| !a.assocs.contains_key(k))
        .collect();
    let mut cands: Vec<(Pair, usize)> = Vec::new();
    for (ka, xa) in &only_a {
        for (kb, xb) in &only_b {
            if ka.proto != kb.proto || ka.transport != kb.transport {
                continue;
            }
            // The unrewritten endpoint orients the directions.
            let shared = [ka.lo, ka.hi]
                .into_iter()
                .filter(|e| *e == kb.lo || *e == kb.hi)
                .collect::<Vec<_>>();
            let [e] = shared[..] else { continue };
            let flip = (ka.lo == e) != (kb.lo == e);
            let (n, total) = overlap(xa, xb, flip);
            if n >= 3 && n * 2 >= total.min(xb.beats.iter().map(Vec::len).sum()) {
                cands.push((
                    Pair {
                        a: **ka,
                        b: **kb,
                        flip,
                    },
                    n,
                ));
            }
        }
    }
    for (p, _) in &cands {
        let a_alone = cands.iter().filter(|(q, _)| q.a == p.a).count() == 1;
        let b_alone = cands.iter().filter(|(q, _)| q.b == p.b).count() == 1;
        if a_alone && b_alone {
            out.push(*p);
        }
    }
    out
}

/// Estimates `b`'s clock against `a`'s from every association both saw. With both
/// directions of an association the path delay cancels: offset = (d_ab + d_ba) / 2,
/// d the median of `t_b - t_a` per direction; the median over associations is taken.
pub fn clock_offset(a: &Vantage, b: &Vantage, pairs: &[Pair]) -> Option<Offset> {
    let mut per_assoc = Vec::new();
    let mut pooled = Vec::new();
    let mut spread = 0u64;
    let mut samples = 0;
    for p in pairs {
        let (Some(xa), Some(xb)) = (a.assocs.get(&p.a), b.assocs.get(&p.b)) else {
            continue;
        };
        let mut meds = [None, None];
        for (dir, med) in meds.iter_mut().enumerate() {
            let mut d = unique_diffs(&xa.beats[dir], &xb.beats[p.dir_b(dir)]);
            if d.is_empty() {
                continue;
            }
            samples += d.len();
            *med = Some(median(&mut d));
            spread = spread.max((percentile(&d, 95) - percentile(&d, 5)) as u64);
            pooled.extend_from_slice(&d);
        }
        if let [Some(m0), Some(m1)] = meds {
            per_assoc.push(m0 / 2 + m1 / 2);
        }
    }
    if pooled.is_empty() {
        return None;
    }
    let two_way = !per_assoc.is_empty();
    let ns = if two_way {
        median(&mut per_assoc)
    } else {
        median(&mut pooled)
    };
    Some(Offset {
        ns,
        samples,
        spread_ns: spread,
        two_way,
    })
}

/// What happened to one association's heartbeats of one direction between two
/// vantages: `from` (upstream, sees them first) and `to`.
#[derive(Debug, Clone, PartialEq)]
pub struct DirReport {
    /// As the pair's first vantage saw it (the events' addresses).
    pub key: AssocKey,
    pub dir: usize,
    /// The association and direction as `from` and `to` each saw them (NAT).
    pub from_key: (AssocKey, usize),
    pub to_key: (AssocKey, usize),
    /// Vantage indexes.
    pub from: usize,
    pub to: usize,
    /// `to`'s clock minus `from`'s, ns.
    pub offset_ns: i64,
    pub matched: u64,
    pub lost: Vec<Run>,
    /// Seen at `from` but due at `to` outside its capture window.
    pub outside: u64,
    /// Seen at `to` and never at `from` (a capture dropped them, or another path).
    pub unmatched: u64,
    /// One-way delay from `from` to `to` after the offset: min, sum, max, ns.
    pub delay: Option<(i64, i64, i64)>,
    pub remarked: Vec<QosRun>,
    /// No heartbeat of this direction ever reached `to`: upstream is whoever saw them.
    pub never_arrived: bool,
}

/// Consecutive heartbeats lost on the way: first and last at `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub first: Beat,
    pub last: Beat,
    pub count: u64,
}

/// Consecutive matched heartbeats whose DSCP at `to` differs from `from`'s the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QosRun {
    pub first: Beat,
    pub last: Beat,
    pub count: u64,
    pub at_from: u8,
    pub at_to: u8,
}

/// Compares one association's direction `dir` at vantages `ia` (`a`) and `ib` (`b`),
/// `off` being `b`'s clock against `a`'s. `None` when neither side saw heartbeats in
/// that direction, or both did and none matched (identities rewritten between them,
/// e.g. TCP sequence randomisation by a firewall): unmatched, never loss.
pub fn compare<'a>(
    pair: &Pair,
    dir: usize,
    (ia, a): (usize, &'a Vantage),
    (ib, b): (usize, &'a Vantage),
    off: &Offset,
) -> Option<DirReport> {
    let key = pair.a;
    let beats = |v: &'a Vantage, key: &AssocKey, dir: usize| -> &'a [Beat] {
        v.assocs.get(key).map_or(&[], |x| &x.beats[dir])
    };
    let (ba, bb) = (beats(a, &pair.a, dir), beats(b, &pair.b, pair.dir_b(dir)));
    let (xa, xb) = (Index::new(ba), Index::new(bb));
    let mut d = unique_diffs_in(ba, &xa, bb, &xb);
    // Which side sees the heartbeats first (after the offset) is upstream.
    let (a_first, med_delay) = if d.is_empty() {
        match (ba.is_empty(), bb.is_empty()) {
            (false, true) => (true, 0),
            (true, false) => (false, 0),
            _ => return None,
        }
    } else {
        let m = median(&mut d) - off.ns;
        (m >= 0, m.abs())
    };
    let never_arrived = d.is_empty();
    // Everything in the upstream vantage's clock: `to` times are shifted by `shift`.
    let (from, to, fb, tb, tidx, tv, shift) = if a_first {
        (ia, ib, ba, bb, &xb, b, off.ns)
    } else {
        (ib, ia, bb, ba, &xa, a, -off.ns)
    };
    let mut used = vec![false; tb.len()];
    let (to_lo, to_hi) = tv.span.unwrap_or((0, 0));
    let window = PAIR_WINDOW_NS + med_delay + off.spread_ns as i64;
    let (ka, kb) = ((pair.a, dir), (pair.b, pair.dir_b(dir)));
    let mut r = DirReport {
        key,
        dir,
        from_key: if a_first { ka } else { kb },
        to_key: if a_first { kb } else { ka },
        from,
        to,
        offset_ns: shift,
        matched: 0,
        lost: Vec::new(),
        outside: 0,
        unmatched: 0,
        delay: None,
        remarked: Vec::new(),
        never_arrived,
    };
    let mut run: Option<Run> = None;
    let mut qos: Option<QosRun> = None;
    let mut max_delay = 0i64;
    let mut classified = Vec::with_capacity(fb.len());
    for fbeat in fb {
        // The copy at `to` nearest in corrected time.
        let found = tidx
            .all(fbeat.ident)
            .map(|i| (i, tb[i as usize].ts as i64 - shift - fbeat.ts as i64))
            .filter(|(_, dt)| dt.abs() <= window)
            .min_by_key(|(_, dt)| (dt - med_delay).abs());
        if let Some((i, dt)) = found {
            used[i as usize] = true;
            max_delay = max_delay.max(dt);
        }
        classified.push(found.map(|(i, dt)| (tb[i as usize], dt)));
    }
    let edge = EDGE_NS as i64 + max_delay.max(med_delay);
    for (fbeat, found) in fb.iter().zip(classified) {
        match found {
            Some((tbeat, dt)) => {
                r.matched += 1;
                r.delay = Some(match r.delay {
                    None => (dt, dt, dt),
                    Some((lo, sum, hi)) => (lo.min(dt), sum + dt, hi.max(dt)),
                });
                r.lost.extend(run.take());
                if fbeat.dscp != tbeat.dscp {
                    match &mut qos {
                        Some(q) if q.at_from == fbeat.dscp && q.at_to == tbeat.dscp => {
                            q.last = *fbeat;
                            q.count += 1;
                        }
                        _ => {
                            r.remarked.extend(qos.take());
                            qos = Some(QosRun {
                                first: *fbeat,
                                last: *fbeat,
                                count: 1,
                                at_from: fbeat.dscp,
                                at_to: tbeat.dscp,
                            });
                        }
                    }
                } else {
                    r.remarked.extend(qos.take());
                }
            }
            None => {
                // When it was due at `to`, in `to`'s clock.
                let due = fbeat.ts as i64 + shift + med_delay;
                let inside =
                    tv.span.is_some() && due >= to_lo as i64 + edge && due <= to_hi as i64 - edge;
                if !inside {
                    r.outside += 1;
                    r.lost.extend(run.take());
                    continue;
                }
                match &mut run {
                    Some(x) => {
                        x.last = *fbeat;
                        x.count += 1;
                    }
                    None => {
                        run = Some(Run {
                            first: *fbeat,
                            last: *fbeat,
                            count: 1,
                        })
                    }
                }
            }
        }
    }
    r.lost.extend(run);
    r.remarked.extend(qos);
    r.unmatched = used.iter().filter(|u| !**u).count() as u64;
    Some(r)
}

/// Route changes at one vantage: the TTL of one direction moving to a new value that
/// holds for at least [`TTL_HOLD`] heartbeats. `(beat where it changed, old TTL)`.
pub const TTL_HOLD: usize = 3;

pub fn ttl_changes(beats: &[Beat]) -> Vec<(Beat, u8)> {
    let mut out = Vec::new();
    let Some(first) = beats.first() else {
        return out;
    };
    let mut cur = first.ttl;
    let mut i = 1;
    while i < beats.len() {
        let b = beats[i];
        if b.ttl != cur {
            let held = beats[i..].iter().take(TTL_HOLD).all(|x| x.ttl == b.ttl);
            if held && beats.len() - i >= TTL_HOLD {
                out.push((b, cur));
                cur = b.ttl;
            }
        }
        i += 1;
    }
    out
}

/// The TTL a direction's heartbeats carried at a vantage just before `ts` (the
/// peer's usual TTL then), if any came before.
pub fn ttl_before(beats: &[Beat], ts: u64) -> Option<u8> {
    let n = beats.partition_point(|b| b.ts <= ts);
    n.checked_sub(1).map(|i| beats[i].ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(ts: u64, seq: u32, ttl: u8) -> Beat {
        Beat {
            ts,
            ident: seq as u64,
            seq,
            dscp: 46,
            ttl,
        }
    }

    #[test]
    fn a_ttl_change_counts_once_it_holds() {
        let ttls = [64, 64, 64, 61, 64, 64, 60, 60, 60, 60, 59, 59];
        let beats: Vec<Beat> = ttls
            .iter()
            .enumerate()
            .map(|(i, &t)| beat(i as u64, i as u32, t))
            .collect();
        // The lone 61 is no route change; 60 holds; 59 comes too late to hold 3 beats.
        let changes: Vec<(u32, u8, u8)> = ttl_changes(&beats)
            .iter()
            .map(|(b, old)| (b.seq, *old, b.ttl))
            .collect();
        assert_eq!(changes, [(6, 64, 60)]);
        assert_eq!(ttl_before(&beats, 5), Some(64));
        assert_eq!(ttl_before(&beats, 7), Some(60));
    }

    #[test]
    fn the_index_chains_repeated_identities() {
        let beats: Vec<Beat> = [7, 8, 7, 9, 7, 8]
            .iter()
            .enumerate()
            .map(|(i, &s)| beat(i as u64, s, 64))
            .collect();
        let ix = Index::new(&beats);
        assert_eq!(ix.all(7).collect::<Vec<_>>(), [0, 2, 4]);
        assert_eq!(ix.all(8).collect::<Vec<_>>(), [1, 5]);
        assert_eq!(ix.first(9), Some((3, 1)));
        assert_eq!(ix.all(10).count(), 0);
    }

    #[test]
    fn medians_and_percentiles() {
        assert_eq!(median(&mut [5, 1, 3]), 3);
        assert_eq!(median(&mut [-4, 4, 10, 0]), 2);
        let sorted: Vec<i64> = (0..101).collect();
        assert_eq!((percentile(&sorted, 5), percentile(&sorted, 95)), (5, 95));
    }
}
