//! Per-association state keyed by [`FlowKey`], laid out for a million associations.
//!
//! A `HashMap<FlowKey, V>` keeps each value inside its bucket, and a hash table holds up
//! to twice as many buckets as entries (it doubles when 7/8 full): with values of
//! hundreds of bytes, a million associations took ~2.5 KB each (`cargo xtask bench`,
//! scale). Here the values sit in a dense vector, each holding its own key
//! ([`Keyed`]), and the hash table holds only a 4-byte index into it and the key's
//! 32-bit hash: 9 bytes per bucket with its control byte, not the 45 of a key and an
//! index (94 MiB of buckets at a million associations, and as much again while it
//! doubles). A lookup compares the key in the value it is about to use anyway; growing
//! rehashes from the stored hashes, without visiting a million values (that was 8 % of
//! `analyze` at 1M associations). A removed value's place is reused by the next insert;
//! the vector's unused capacity is never touched, so not resident.
//!
//! The index hashes with foldhash (randomly seeded per table, as hashbrown's default):
//! the std SipHash of a 40-byte key was a visible part of each record's cost, and keys
//! come off the wire, so the seed stays random.
//!
//! The last key found is remembered with its place: one record leads to several lookups
//! of its association in a row (the correlator's steps, the engine's flow update), and a
//! 40-byte compare is cheaper than hashing the key again and probing.

use std::cell::Cell;
use std::hash::BuildHasher as _;

use hashbrown::HashTable;
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

#[derive(Debug)]
pub struct Table<V> {
    /// (place in `values`, hash of its key), found by the value's key.
    index: HashTable<(u32, u32)>,
    hasher: foldhash::fast::RandomState,
    values: Vec<Option<V>>,
    /// Places of removed values, reused first.
    free: Vec<u32>,
    /// The last key found and its place (forgotten when that key is removed).
    last: Cell<Option<(FlowKey, u32)>>,
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Table {
            index: HashTable::new(),
            hasher: Default::default(),
            values: Vec::new(),
            free: Vec::new(),
            last: Cell::new(None),
        }
    }
}

impl<V: Keyed> Table<V> {
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// 32 bits of the key's hash, stored in the index.
    #[inline]
    fn hash32(&self, key: &FlowKey) -> u32 {
        self.hasher.hash_one(key) as u32
    }

    /// The hash the index places by: the 32 bits in both halves, since hashbrown takes
    /// the bucket from the low bits and the control tag from the top 7.
    #[inline]
    fn spread(h: u32) -> u64 {
        u64::from(h) | (u64::from(h) << 32)
    }

    /// Where `key`'s value is.
    #[inline]
    fn place(&self, key: &FlowKey) -> Option<usize> {
        if let Some((k, i)) = self.last.get() {
            if k == *key {
                return Some(i as usize);
            }
        }
        let i = self.find(key, self.hash32(key))?;
        self.last.set(Some((*key, i)));
        Some(i as usize)
    }

    /// The place of `key`, whose 32-bit hash is `h`, by the index alone.
    #[inline]
    fn find(&self, key: &FlowKey, h: u32) -> Option<u32> {
        let &(i, _) = self
            .index
            .find(Self::spread(h), is_key(&self.values, key, h))?;
        Some(i)
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
        let h = self.hash32(&key);
        if let Some(i) = self.find(&key, h) {
            return self.values[i as usize].replace(value);
        }
        let i = match self.free.pop() {
            Some(i) => {
                self.values[i as usize] = Some(value);
                i
            }
            None => {
                self.values.push(Some(value));
                // A u32 index: the kernel's table and any capture stay far below 2^32.
                (self.values.len() - 1) as u32
            }
        };
        self.index
            .insert_unique(Self::spread(h), (i, h), |&(_, h)| Self::spread(h));
        None
    }

    pub fn remove(&mut self, key: &FlowKey) -> Option<V> {
        let h = self.hash32(key);
        let entry = self
            .index
            .find_entry(Self::spread(h), is_key(&self.values, key, h))
            .ok()?;
        let ((i, _), _) = entry.remove();
        if self.last.get().is_some_and(|(k, _)| k == *key) {
            self.last.set(None);
        }
        self.free.push(i);
        self.values[i as usize].take()
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

/// Whether an index entry is `key`'s (hash `h`): the stored hash first, then the key
/// in the value itself.
fn is_key<'a, V: Keyed>(
    values: &'a [Option<V>],
    key: &'a FlowKey,
    h: u32,
) -> impl Fn(&(u32, u32)) -> bool + 'a {
    move |&(i, ih)| ih == h && values[i as usize].as_ref().is_some_and(|v| v.key() == key)
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
