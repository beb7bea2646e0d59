//! Copies of one SIP packet, as SPAN/mirror ports and some routers capture every frame
//! twice: the same bytes microseconds apart. They are counted, never parsed again.
//!
//! A real re-send comes much later: a SIP UA retransmits over UDP after T1 = 500 ms
//! at the earliest (RFC 3261 §17.1.2.2), and a registrar repeats its final answer only
//! when the request comes again. A copy of the same bytes within [`WINDOW_NS`], well
//! below T1 but far above the microseconds a mirror port adds, is a duplicate. Over
//! TCP the same rule takes a mirrored segment (same sequence number, same bytes) as
//! a duplicate rather than a retransmission: the stream would drop its bytes either
//! way, it is counted once, as one or the other.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};

use hbwatch_common::key::FlowKey;

/// Byte-identical copies closer than this are one packet seen twice (see the module).
pub const WINDOW_NS: u64 = 200_000_000;
/// Packets remembered per direction: copies of a burst may interleave (A B A' B').
const PER_DIRECTION: usize = 8;

/// Recent packets per direction (the key as the packet travelled).
#[derive(Debug, Default)]
pub struct Recent {
    seen: HashMap<FlowKey, VecDeque<(u64, u64)>>,
}

impl Recent {
    /// Whether this packet (`seq`: TCP sequence number, `len`: its full payload length,
    /// `data`: the bytes captured) repeats one seen on `key` less than [`WINDOW_NS`]
    /// before `ts`. Otherwise remembers it; `max_keys` bounds the directions tracked.
    pub fn is_duplicate(
        &mut self,
        key: &FlowKey,
        seq: u32,
        len: u64,
        data: &[u8],
        ts: u64,
        max_keys: usize,
    ) -> bool {
        let mut h = DefaultHasher::new();
        (seq, len, data).hash(&mut h);
        let digest = h.finish();
        if !self.seen.contains_key(key) && self.seen.len() >= max_keys {
            return false;
        }
        let recent = self.seen.entry(*key).or_default();
        // Either copy may be stamped first (two CPUs, two mirror sources merged).
        recent.retain(|&(at, _)| ts.abs_diff(at) < WINDOW_NS);
        if recent.iter().any(|&(_, d)| d == digest) {
            return true;
        }
        if recent.len() >= PER_DIRECTION {
            recent.pop_front();
        }
        recent.push_back((ts, digest));
        false
    }

    /// Forgets directions with nothing recent enough to be copied.
    pub fn forget_before(&mut self, now_ns: u64) {
        self.seen.retain(|_, recent| {
            recent
                .back()
                .is_some_and(|&(at, _)| at.saturating_add(WINDOW_NS) > now_ns)
        });
    }
}
