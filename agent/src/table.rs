//! Per-association state keyed by [`FlowKey`], laid out for a million associations.
//!
//! A `HashMap<FlowKey, V>` keeps each value inside its bucket, and a hash table holds up
//! to twice as many buckets as entries (it doubles when 7/8 full): with values of
//! hundreds of bytes, a million associations took ~2.5 KB each (`cargo xtask bench`,
//! scale). Here the values sit in a dense vector, each holding its own key
//! ([`Keyed`]), and the index holds only a 4-byte place in it and the key's 32-bit
//! hash: 8 bytes per bucket, not the 45 of a key and an index. A lookup compares the
//! key in the value it is about to use anyway; growing rehashes from the stored hashes,
//! without visiting a million values (that was 8 % of `analyze` at 1M associations). A
//! removed value's place is reused by the next insert; the vector's unused capacity is
//! never touched, so not resident.
//!
//! The index is hand-written ([`Index`], linear probing) rather than hashbrown's
//! `HashTable` (9 bytes per bucket, control bytes and entries apart) so that a
//! bucket's one cache line can be asked for ahead of its use ([`Table::prefetch_index`]):
//! at a million associations `analyze` waited on the index's lines as much as on the
//! values' (`cargo xtask bench`, scale, measured in BENCHMARKS.md).
//!
//! The index hashes with foldhash, randomly seeded once per process: the std SipHash
//! of a 40-byte key was a visible part of each record's cost, and keys come off the
//! wire, so the seed stays random; one seed for every table, so that a key hashed once
//! is looked up in several ([`hash32`]: `analyze` reads each frame's key ahead once, for
//! its flow and its association).
//!
//! The last key found is remembered with its place: one record leads to several lookups
//! of its association in a row (the correlator's steps, the engine's flow update), and a
//! 40-byte compare is cheaper than hashing the key again and probing.

use std::cell::Cell;
use std::hash::BuildHasher as _;
use std::sync::OnceLock;

use hbwatch_common::key::FlowKey;

/// A value that carries its association's key.
pub trait Keyed {
    fn key(&self) -> &FlowKey;
}

/// A value and its key, for values that do not hold one.
#[derive(Debug, Clone, Copy)]
pub struct WithKey<V> {
    pub key: FlowKey,
    pub value: V,
}

impl<V> Keyed for WithKey<V> {
    fn key(&self) -> &FlowKey {
        &self.key
    }
}

/// Places by 32-bit hash: open addressing with linear probing over 8-byte buckets,
/// each `(place + 1) << 32 | hash` (0: empty), at most 3/4 full (a miss then reads ~8
/// buckets, one or two cache lines). Removal shifts the entries after the hole back
/// (no tombstones: a table that churns for days probes no longer than a new one).
#[derive(Debug, Default)]
struct Index {
    buckets: Vec<u64>,
    len: usize,
}

impl Index {
    #[inline]
    fn mask(&self) -> usize {
        self.buckets.len().wrapping_sub(1)
    }

    /// The first bucket `h` may be in.
    #[inline]
    fn home(&self, h: u32) -> usize {
        h as usize & self.mask()
    }

    /// The bucket and place of the entry of hash `h` for which `is` holds.
    #[inline]
    fn find(&self, h: u32, mut is: impl FnMut(u32) -> bool) -> Option<(usize, u32)> {
        if self.buckets.is_empty() {
            return None;
        }
        let mut b = self.home(h);
        loop {
            let e = self.buckets[b];
            if e == 0 {
                return None;
            }
            let place = (e >> 32) as u32 - 1;
            if e as u32 == h && is(place) {
                return Some((b, place));
            }
            b = (b + 1) & self.mask();
        }
    }

    /// Adds `place` under `h` (not there yet).
    fn insert(&mut self, h: u32, place: u32) {
        if (self.len + 1) * 4 > self.buckets.len() * 3 {
            self.grow();
        }
        self.put((u64::from(place) + 1) << 32 | u64::from(h));
        self.len += 1;
    }

    fn put(&mut self, e: u64) {
        let mut b = self.home(e as u32);
        while self.buckets[b] != 0 {
            b = (b + 1) & self.mask();
        }
        self.buckets[b] = e;
    }

    fn grow(&mut self) {
        let n = (self.buckets.len() * 2).max(16);
        let old = std::mem::replace(&mut self.buckets, vec![0; n]);
        for e in old.into_iter().filter(|&e| e != 0) {
            self.put(e);
        }
    }

    /// Empties bucket `b`, then moves back each entry after it that a probe from its
    /// home would no longer reach across the hole.
    fn remove_at(&mut self, mut hole: usize) {
        let mask = self.mask();
        self.buckets[hole] = 0;
        self.len -= 1;
        let mut b = hole;
        loop {
            b = (b + 1) & mask;
            let e = self.buckets[b];
            if e == 0 {
                return;
            }
            let home = self.home(e as u32);
            // Stays if its home lies cyclically in (hole, b]: probing reaches it still.
            let stays = if hole <= b {
                hole < home && home <= b
            } else {
                hole < home || home <= b
            };
            if !stays {
                self.buckets[hole] = e;
                self.buckets[b] = 0;
                hole = b;
            }
        }
    }

    #[inline]
    fn prefetch(&self, h: u32) {
        if let Some(b) = self.buckets.get(self.home(h)) {
            prefetch_lines(b);
        }
    }
}

/// The process's seed, the same in every table.
fn hasher() -> &'static foldhash::fast::RandomState {
    static SEED: OnceLock<foldhash::fast::RandomState> = OnceLock::new();
    SEED.get_or_init(Default::default)
}

/// 32 bits of the key's hash, as every table's index stores it.
#[inline]
pub fn hash32(key: &FlowKey) -> u32 {
    hasher().hash_one(key) as u32
}

#[derive(Debug)]
pub struct Table<V> {
    /// Places in `values`, found by the value's key.
    index: Index,
    values: Vec<Option<V>>,
    /// Places of removed values, reused first.
    free: Vec<u32>,
    /// The last key found and its place (forgotten when that key is removed).
    last: Cell<Option<(FlowKey, u32)>>,
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Table {
            index: Index::default(),
            values: Vec::new(),
            free: Vec::new(),
            last: Cell::new(None),
        }
    }
}

impl<V: Keyed> Table<V> {
    pub fn len(&self) -> usize {
        self.index.len
    }

    pub fn is_empty(&self) -> bool {
        self.index.len == 0
    }

    /// Where `key`'s value is.
    #[inline]
    fn place(&self, key: &FlowKey) -> Option<usize> {
        if let Some((k, i)) = self.last.get() {
            if k == *key {
                return Some(i as usize);
            }
        }
        let (_, i) = self.find(key, hash32(key))?;
        self.last.set(Some((*key, i)));
        Some(i as usize)
    }

    /// The bucket and place of `key`, whose 32-bit hash is `h`.
    #[inline]
    fn find(&self, key: &FlowKey, h: u32) -> Option<(usize, u32)> {
        let values = &self.values;
        self.index.find(h, |i| {
            values[i as usize].as_ref().is_some_and(|v| v.key() == key)
        })
    }

    /// Where `key`'s value is kept: the same place until it is removed, so a timer
    /// entry can name it in 4 bytes instead of a 40-byte key.
    pub fn place_of(&self, key: &FlowKey) -> Option<u32> {
        self.place(key).map(|i| i as u32)
    }

    /// The value at a place, if one is there (not necessarily the one that was).
    pub fn at(&self, place: u32) -> Option<&V> {
        self.values.get(place as usize)?.as_ref()
    }

    pub fn contains_key(&self, key: &FlowKey) -> bool {
        self.place(key).is_some()
    }

    pub fn get(&self, key: &FlowKey) -> Option<&V> {
        let i = self.place(key)?;
        self.values[i].as_ref()
    }

    pub fn get_mut(&mut self, key: &FlowKey) -> Option<&mut V> {
        let i = self.place(key)?;
        self.values[i].as_mut()
    }

    /// Inserts or replaces the value under its own key; returns the value replaced.
    pub fn insert(&mut self, value: V) -> Option<V> {
        let key = *value.key();
        // Hashed once: looked up, then placed in the index by the same hash.
        let h = hash32(&key);
        if let Some((_, i)) = self.find(&key, h) {
            return self.values[i as usize].replace(value);
        }
        let i = match self.free.pop() {
            Some(i) => {
                self.values[i as usize] = Some(value);
                i
            }
            None => {
                self.values.push(Some(value));
                // A u32 place: the kernel's table and any capture stay far below 2^32.
                (self.values.len() - 1) as u32
            }
        };
        self.index.insert(h, i);
        None
    }

    pub fn remove(&mut self, key: &FlowKey) -> Option<V> {
        let (b, i) = self.find(key, hash32(key))?;
        self.index.remove_at(b);
        if self.last.get().is_some_and(|(k, _)| k == *key) {
            self.last.set(None);
        }
        self.free.push(i);
        self.values[i as usize].take()
    }

    /// Asks for the index bucket of a key whose hash is `h` ([`hash32`]) to be
    /// brought into the cache, and returns at once: the first of two steps `analyze`
    /// takes frames ahead of processing one (at a million associations each frame's
    /// lookups otherwise wait on memory, ~30 % of the run).
    pub fn prefetch_index(&self, h: u32) {
        self.index.prefetch(h);
    }

    /// The second step, some frames after the first: the index (in the cache by now)
    /// is probed by the hash alone (a colliding hash only brings in another value) and
    /// the value's lines are asked for. Returns the place probed, for [`Self::expect`].
    pub fn prefetch_value(&self, h: u32) -> Option<u32> {
        let (_, i) = self.index.find(h, |_| true)?;
        prefetch_lines(self.values.get(i as usize)?);
        Some(i)
    }

    /// Remembers `place` as `key`'s if its value is `key`'s (the third step, just before
    /// the frame is processed: its first lookup then neither hashes nor probes).
    pub fn expect(&self, key: &FlowKey, place: u32) {
        if self.at(place).is_some_and(|v| v.key() == key) {
            self.last.set(Some((*key, place)));
        }
    }

    /// The values, in no particular order (callers that report sort).
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.values.iter().flatten()
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.values.iter_mut().flatten()
    }

    pub fn keys(&self) -> impl Iterator<Item = &FlowKey> {
        self.values().map(|v| v.key())
    }
}

/// Asks the CPU to load every cache line of `*v`; returns at once (a hint: no fault,
/// whatever the address).
#[inline(always)]
fn prefetch_lines<T>(v: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        let start = v as *const T as usize;
        let end = start + std::mem::size_of::<T>();
        // Every line the value touches: it need not start on one.
        for line in (start & !63..end).step_by(64) {
            // SAFETY: a prefetch reads nothing architecturally and cannot fault.
            unsafe {
                std::arch::x86_64::_mm_prefetch(line as *const i8, std::arch::x86_64::_MM_HINT_T0)
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

impl<V: Keyed> std::ops::Index<&FlowKey> for Table<V> {
    type Output = V;

    fn index(&self, key: &FlowKey) -> &V {
        self.get(key).expect("key in table")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u16) -> FlowKey {
        FlowKey {
            orig_port: n,
            ..FlowKey::default()
        }
    }

    fn val(n: u16, value: u32) -> WithKey<u32> {
        WithKey { key: key(n), value }
    }

    fn get(t: &Table<WithKey<u32>>, n: u16) -> Option<u32> {
        t.get(&key(n)).map(|v| v.value)
    }

    #[test]
    fn removed_places_are_reused_and_lookups_follow_their_keys() {
        let mut t = Table::default();
        for n in 0..4 {
            assert!(t.insert(val(n, n as u32 * 10)).is_none());
        }
        let replaced = t.insert(val(2, 21)).map(|v| v.value);
        assert_eq!(replaced, Some(20), "replaced in place");
        assert_eq!(t.remove(&key(1)).map(|v| v.value), Some(10));
        assert!(t.remove(&key(1)).is_none());
        assert!(!t.contains_key(&key(1)));
        t.insert(val(9, 90));
        assert_eq!(t.values.len(), 4, "the removed place was reused");
        assert_eq!(t.len(), 4);
        assert_eq!(t[&key(9)].value, 90);
        assert_eq!(get(&t, 2), Some(21));
        t.get_mut(&key(3)).unwrap().value += 1;
        let mut pairs: Vec<(u16, u32)> = t.values().map(|v| (v.key.orig_port, v.value)).collect();
        pairs.sort();
        assert_eq!(pairs, [(0, 0), (2, 21), (3, 31), (9, 90)]);
        let mut keys: Vec<u16> = t.keys().map(|k| k.orig_port).collect();
        keys.sort();
        assert_eq!(keys, [0, 2, 3, 9]);
    }

    #[test]
    fn a_removed_key_is_not_found_at_its_remembered_place() {
        let mut t = Table::default();
        t.insert(val(1, 10));
        t.insert(val(2, 20));
        assert_eq!(get(&t, 1), Some(10), "remembered now");
        assert_eq!(t.remove(&key(1)).map(|v| v.value), Some(10));
        assert!(!t.contains_key(&key(1)));
        // The place is reused by another key; the removed one must not find it.
        t.insert(val(3, 30));
        assert_eq!(get(&t, 1), None);
        assert_eq!(get(&t, 3), Some(30));
        // Back again, at another place: found there, not at the one remembered last.
        t.insert(val(1, 11));
        assert_eq!(get(&t, 3), Some(30));
        assert_eq!(get(&t, 1), Some(11));
        t.get_mut(&key(1)).unwrap().value += 1;
        assert_eq!(t[&key(1)].value, 12);
        assert_eq!(t[&key(2)].value, 20);
    }

    /// Hashes that crowd a few homes and wrap past the index's end, inserted and removed
    /// in a long pseudo-random series: after every step each entry is found from its home,
    /// and nothing removed is (removal shifts entries back across the hole).
    #[test]
    fn the_index_finds_every_entry_through_collisions_wrap_and_removal() {
        let mut index = Index::default();
        let mut model: Vec<(u32, u32)> = Vec::new();
        let mut x = 0x2545_f491_u32;
        for step in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            // Low bits from four values near the end of any table size: long runs that
            // wrap around; high bits tell the entries of one home apart.
            let h = (x & 0xffff_0000) | [0xffff, 0xfffe, 0x7fff, 0x0000][(x % 4) as usize];
            if x.is_multiple_of(3) && !model.is_empty() {
                let (h, place) = model.swap_remove((x as usize / 3) % model.len());
                let (b, found) = index.find(h, |p| p == place).expect("present");
                assert_eq!(found, place);
                index.remove_at(b);
                assert!(
                    index.find(h, |p| p == place).is_none(),
                    "step {step}: removed"
                );
            } else {
                index.insert(h, step);
                model.push((h, step));
            }
            assert_eq!(index.len, model.len());
            if step % 97 == 0 {
                for &(h, place) in &model {
                    assert!(
                        index.find(h, |p| p == place).is_some(),
                        "step {step}: {h:x}"
                    );
                }
            }
        }
        for &(h, place) in &model {
            assert!(index.find(h, |p| p == place).is_some());
        }
    }

    #[test]
    fn many_keys_survive_growth_and_removal() {
        // The index grows many times over; every key must still lead to its own value.
        let mut t = Table::default();
        for n in 0..5000u16 {
            t.insert(val(n, u32::from(n) * 3));
        }
        for n in (0..5000u16).step_by(2) {
            assert_eq!(t.remove(&key(n)).map(|v| v.value), Some(u32::from(n) * 3));
        }
        for n in 0..5000u16 {
            let want = (n % 2 == 1).then_some(u32::from(n) * 3);
            assert_eq!(get(&t, n), want, "key {n}");
        }
        assert_eq!(t.len(), 2500);
    }
}
