//! Heartbeat times per association, for `analyze --report`'s timeline. Off unless
//! asked for (`Correlator::record_beats`), and bounded either way: each association
//! keeps one bit for each of at most [`MAX_BUCKETS`] time buckets (512 bytes), whose
//! width doubles (neighbours merged) when its heartbeats outrun them; the count is kept
//! whole. A timeline up to 2048 pixels wide needs no more: a bucket stays narrower than
//! a pixel column of the whole capture.

use std::collections::HashMap;

use hbwatch_common::key::FlowKey;

/// Buckets per association at most.
pub const MAX_BUCKETS: usize = 4096;

/// Narrowest bucket, ns.
const MIN_BUCKET_NS: u64 = 1_000_000;

/// Associations recorded at most; heartbeats of more are counted, not placed.
pub const MAX_TRACKS: usize = 1 << 16;

/// When one association had heartbeats: a bit per time bucket.
#[derive(Debug, Clone)]
pub struct Track {
    /// Start of bucket 0 (the first heartbeat), ns.
    pub origin_ns: u64,
    /// Width of a bucket, ns.
    pub bucket_ns: u64,
    /// Bit i: bucket i had a heartbeat.
    bits: Vec<u64>,
    /// Buckets in use.
    len: usize,
    pub first_ns: u64,
    pub last_ns: u64,
    pub total: u64,
}

impl Track {
    fn new(ts_ns: u64) -> Track {
        Track {
            origin_ns: ts_ns,
            bucket_ns: MIN_BUCKET_NS,
            bits: Vec::new(),
            len: 0,
            first_ns: ts_ns,
            last_ns: ts_ns,
            total: 0,
        }
    }

    fn get(&self, i: usize) -> bool {
        self.bits
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    fn set(&mut self, i: usize) {
        if self.bits.len() <= i / 64 {
            self.bits.resize(i / 64 + 1, 0);
        }
        self.bits[i / 64] |= 1 << (i % 64);
        self.len = self.len.max(i + 1);
    }

    fn beat(&mut self, ts_ns: u64) {
        // A capture slightly out of order: earlier than the first goes into bucket 0.
        let offset = ts_ns.saturating_sub(self.origin_ns);
        while offset / self.bucket_ns >= MAX_BUCKETS as u64 {
            self.widen();
        }
        self.set((offset / self.bucket_ns) as usize);
        self.first_ns = self.first_ns.min(ts_ns);
        self.last_ns = self.last_ns.max(ts_ns);
        self.total += 1;
    }

    /// Doubles the bucket width, merging neighbours.
    fn widen(&mut self) {
        let old = std::mem::replace(
            self,
            Track {
                bits: Vec::new(),
                len: 0,
                bucket_ns: self.bucket_ns.saturating_mul(2),
                ..*self
            },
        );
        for i in 0..old.len.div_ceil(2) {
            if old.get(2 * i) || old.get(2 * i + 1) {
                self.set(i);
            }
        }
    }

    /// Start (ns) of every bucket that had a heartbeat.
    pub fn buckets(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.len)
            .filter(|&i| self.get(i))
            .map(|i| self.origin_ns + i as u64 * self.bucket_ns)
    }
}

/// Heartbeat tracks of every association.
#[derive(Debug, Clone, Default)]
pub struct BeatLog {
    pub tracks: HashMap<FlowKey, Track>,
    /// Heartbeats of associations past [`MAX_TRACKS`], not placed on a timeline.
    pub unplaced: u64,
}

impl BeatLog {
    /// One heartbeat of `key` at `ts_ns`.
    pub fn beat(&mut self, key: &FlowKey, ts_ns: u64) {
        if let Some(t) = self.tracks.get_mut(key) {
            t.beat(ts_ns);
            return;
        }
        if self.tracks.len() >= MAX_TRACKS {
            self.unplaced += 1;
            return;
        }
        let mut t = Track::new(ts_ns);
        t.beat(ts_ns);
        self.tracks.insert(*key, t);
    }

    /// Adds `other`'s tracks (another tracker's associations).
    pub fn merge(&mut self, other: BeatLog) {
        self.unplaced += other.unplaced;
        for (k, t) in other.tracks {
            self.tracks.entry(k).or_insert(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_every_beat_counted() {
        let key = FlowKey::default();
        let mut log = BeatLog::default();
        // 100k heartbeats 100 ms apart: 10 000 s.
        for i in 0..100_000u64 {
            log.beat(&key, 1_000_000_000 + i * 100_000_000);
        }
        let t = &log.tracks[&key];
        assert!(t.len <= MAX_BUCKETS && t.bits.len() <= MAX_BUCKETS / 64);
        assert_eq!(t.total, 100_000);
        // Narrower than 1/2048 of the span: finer than a pixel of a 2000 px timeline.
        assert!(t.bucket_ns * 2048 <= t.last_ns - t.first_ns);
        // 100 ms heartbeats in buckets of 2^k ms (< 100 ms... 4.9 s): every bucket has one.
        assert_eq!(t.buckets().count(), t.len);
        let start = t.buckets().last().unwrap();
        assert!(start <= t.last_ns && t.last_ns < start + t.bucket_ns);
        assert_eq!(t.buckets().next(), Some(1_000_000_000));
    }
}
