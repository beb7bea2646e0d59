//! The correlators' one timer queue: deadlines in time order, ties in the order of their
//! payload. Entries are never searched for and removed: an owner whose deadline moved
//! (refreshed, answered, re-armed) leaves the old entry, and whoever pops it checks the
//! owner still has that deadline. Re-arming costs one push, firing one pop.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

#[derive(Debug)]
pub struct Deadlines<T: Ord> {
    heap: BinaryHeap<Reverse<(u64, T)>>,
}

impl<T: Ord> Default for Deadlines<T> {
    fn default() -> Self {
        Deadlines {
            heap: BinaryHeap::new(),
        }
    }
}

impl<T: Ord> Deadlines<T> {
    /// `what` is due at `at_ns`.
    pub fn push(&mut self, at_ns: u64, what: T) {
        self.heap.push(Reverse((at_ns, what)));
    }

    /// The earliest entry, if it is due at `now_ns` or before, taken off the queue.
    pub fn pop_due(&mut self, now_ns: u64) -> Option<(u64, T)> {
        if self.heap.peek()?.0 .0 > now_ns {
            return None;
        }
        self.heap.pop().map(|Reverse(e)| e)
    }

    /// The earliest deadline (live or not).
    pub fn next(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Drops entries off the front while `stale` says their owner moved on, so that
    /// [`Self::next`] is a live deadline.
    pub fn drop_stale(&mut self, stale: impl Fn(u64, &T) -> bool) {
        while let Some(Reverse((at, what))) = self.heap.peek() {
            if !stale(*at, what) {
                break;
            }
            self.heap.pop();
        }
    }

    /// Keeps only the entries `live` approves: a rebuild, for when stale entries pile up.
    pub fn retain(&mut self, live: impl Fn(u64, &T) -> bool) {
        self.heap.retain(|Reverse((at, what))| live(*at, what));
    }

    /// Entries queued, stale ones included.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_entries_come_out_in_time_then_payload_order() {
        let mut d = Deadlines::default();
        d.push(30, "c");
        d.push(10, "b");
        d.push(10, "a");
        d.push(20, "x");
        assert_eq!(d.next(), Some(10));
        assert_eq!(d.pop_due(9), None);
        assert_eq!(d.pop_due(20), Some((10, "a")));
        assert_eq!(d.pop_due(20), Some((10, "b")));
        assert_eq!(d.pop_due(20), Some((20, "x")));
        assert_eq!(d.pop_due(20), None);
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn stale_entries_are_dropped_from_the_front_only() {
        let mut d = Deadlines::default();
        for (at, owner) in [(1, 1), (2, 2), (3, 1), (4, 2)] {
            d.push(at, owner);
        }
        // Owner 1's deadline moved on: its entries are stale; owner 2's at 2 is live.
        d.drop_stale(|_, owner| *owner == 1);
        assert_eq!(d.next(), Some(2));
        assert_eq!(
            d.len(),
            3,
            "the stale entry behind a live one stays until it surfaces"
        );
    }
}
