//! Per-association state keyed by [`FlowKey`], laid out for a million associations.
//!
//! A `HashMap<FlowKey, V>` keeps each value inside its bucket, and a hash table holds up
//! to twice as many buckets as entries (it doubles when 7/8 full): with values of
//! hundreds of bytes, a million associations took ~2.5 KB each (`cargo xtask bench`,
//! scale). Here the hash table holds only the key and a 4-byte index into a dense
//! vector of values (whose unused capacity is never touched, so not resident), and a
//! removed entry's place is reused by the next insert.
//!
//! The index hashes with foldhash (randomly seeded per table, as hashbrown's default):
//! the std SipHash of a 40-byte key was a visible part of each record's cost, and keys
//! come off the wire, so the seed stays random.
//!
//! The last key found is remembered with its place: one record leads to several lookups
//! of its association in a row (the correlator's steps, the engine's flow update), and a
//! 40-byte compare is cheaper than hashing the key again and probing.

use std::cell::Cell;
use std::collections::HashMap;

use hbwatch_common::key::FlowKey;

type Index = HashMap<FlowKey, u32, foldhash::fast::RandomState>;

#[derive(Debug)]
pub struct Table<V> {
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

impl<V> Table<V> {
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Where `key`'s value is.
    #[inline]
    fn place(&self, key: &FlowKey) -> Option<usize> {
        if let Some((k, i)) = self.last.get() {
            if k == *key {
                return Some(i as usize);
            }
        }
        let &i = self.index.get(key)?;
        self.last.set(Some((*key, i)));
        Some(i as usize)
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

    /// Inserts or replaces; returns the value replaced.
    pub fn insert(&mut self, key: FlowKey, value: V) -> Option<V> {
        use std::collections::hash_map::Entry;
        match self.index.entry(key) {
            Entry::Occupied(e) => self.values[*e.get() as usize].replace(value),
            Entry::Vacant(e) => {
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
                e.insert(i);
                None
            }
        }
    }

    pub fn remove(&mut self, key: &FlowKey) -> Option<V> {
        let i = self.index.remove(key)?;
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
        self.index.keys()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&FlowKey, &V)> {
        self.index
            .iter()
            .filter_map(|(k, &i)| Some((k, self.values[i as usize].as_ref()?)))
    }
}

impl<V> std::ops::Index<&FlowKey> for Table<V> {
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

    #[test]
    fn removed_places_are_reused_and_lookups_follow_their_keys() {
        let mut t = Table::default();
        for n in 0..4 {
            assert_eq!(t.insert(key(n), n as u32 * 10), None);
        }
        assert_eq!(t.insert(key(2), 21), Some(20), "replaced in place");
        assert_eq!(t.remove(&key(1)), Some(10));
        assert_eq!(t.remove(&key(1)), None);
        assert!(!t.contains_key(&key(1)));
        t.insert(key(9), 90);
        assert_eq!(t.values.len(), 4, "the removed place was reused");
        assert_eq!(t.len(), 4);
        assert_eq!(t[&key(9)], 90);
        assert_eq!(t.get(&key(2)), Some(&21));
        *t.get_mut(&key(3)).unwrap() += 1;
        let mut all: Vec<u32> = t.values().copied().collect();
        all.sort();
        assert_eq!(all, [0, 21, 31, 90]);
        let mut pairs: Vec<(u16, u32)> = t.iter().map(|(k, v)| (k.orig_port, *v)).collect();
        pairs.sort();
        assert_eq!(pairs, [(0, 0), (2, 21), (3, 31), (9, 90)]);
    }

    #[test]
    fn a_removed_key_is_not_found_at_its_remembered_place() {
        let mut t = Table::default();
        t.insert(key(1), 10);
        t.insert(key(2), 20);
        assert_eq!(t.get(&key(1)), Some(&10), "remembered now");
        assert_eq!(t.remove(&key(1)), Some(10));
        assert!(!t.contains_key(&key(1)));
        // The place is reused by another key; the removed one must not find it.
        t.insert(key(3), 30);
        assert_eq!(t.get(&key(1)), None);
        assert_eq!(t.get(&key(3)), Some(&30));
        // Back again, at another place: found there, not at the one remembered last.
        t.insert(key(1), 11);
        assert_eq!(t.get(&key(3)), Some(&30));
        assert_eq!(t.get(&key(1)), Some(&11));
        *t.get_mut(&key(1)).unwrap() += 1;
        assert_eq!(t[&key(1)], 12);
        assert_eq!(t[&key(2)], 20);
    }
}
