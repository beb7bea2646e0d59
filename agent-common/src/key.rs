//! The association key: which flow-table entry, ring record and userspace association a
//! packet belongs to. Apart from `flow` (the state) so that `event` (the records) needs
//! only the key, not the state machine.

use crate::parse::Packet;
use crate::proto::{Protocol, Role};

/// Flow-table key: originator -> responder. 8-byte aligned: built, hashed and copied
/// into records in words (BPF).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowKey {
    pub orig: [u8; 16],
    pub resp: [u8; 16],
    pub orig_port: u16,
    pub resp_port: u16,
    /// A [`Protocol`] id.
    pub proto: u8,
    /// 4 or 6.
    pub family: u8,
    /// IPPROTO_TCP / IPPROTO_UDP.
    pub transport: u8,
    pub _pad: u8,
}

/// One write of the key's 40 bytes: the derived field-by-field hash made eight hasher
/// calls per lookup, a twentieth of the event pipeline's time (userspace maps only).
impl core::hash::Hash for FlowKey {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        state.write(&self.bytes());
    }
}

impl FlowKey {
    /// The key's 40 bytes in memory's order (repr(C), no padding between fields).
    #[inline(always)]
    pub fn bytes(&self) -> [u8; 40] {
        let mut b = [0u8; 40];
        b[..16].copy_from_slice(&self.orig);
        b[16..32].copy_from_slice(&self.resp);
        b[32..34].copy_from_slice(&self.orig_port.to_ne_bytes());
        b[34..36].copy_from_slice(&self.resp_port.to_ne_bytes());
        b[36] = self.proto;
        b[37] = self.family;
        b[38] = self.transport;
        b[39] = self._pad;
        b
    }

    /// The association a packet belongs to: a response travels responder -> originator.
    #[inline(always)]
    pub fn of(proto: Protocol, pkt: &Packet, role: Role) -> FlowKey {
        let (orig, resp, orig_port, resp_port) = match role {
            Role::Response => (pkt.dst, pkt.src, pkt.dst_port, pkt.src_port),
            _ => (pkt.src, pkt.dst, pkt.src_port, pkt.dst_port),
        };
        FlowKey {
            orig,
            resp,
            orig_port,
            resp_port,
            proto: proto as u8,
            family: pkt.family,
            transport: pkt.transport,
            _pad: 0,
        }
    }
}

/// The agent's acknowledgement of an association's held beats (`ACKS`, a shared-memory
/// array userspace writes without a system call): one 64-bit word in either of the two of
/// the bucket the key's [`FlowKey::ack_hash`] picks, holding the top 48 bits of that hash
/// (which association) and the index of the next beat not taken yet. Another
/// association's word has another tag; one whose bucket two others fill gets no
/// acknowledgement, and its hold goes up as a record when full, as without any.
pub type AckBucket = [u64; 2];

impl FlowKey {
    /// A 64-bit mix of the key's five words (multiply and fold per word, then murmur3's
    /// finalizer: without it, keys that differ in a few bytes crowd into few buckets):
    /// the bucket in its low bits, the tag in its top 48. The same in the kernel and in
    /// userspace.
    #[inline(always)]
    pub fn ack_hash(&self) -> u64 {
        let words = (self as *const FlowKey).cast::<u64>();
        let mut h = 0u64;
        let mut i = 0;
        while i < 5 {
            // SAFETY: FlowKey is 40 bytes and 8-byte aligned: five aligned words.
            h = (h ^ unsafe { words.add(i).read() }).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            h ^= h >> 32;
            i += 1;
        }
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// The `ACKS` word that says beats before `index` were taken, for the key whose
/// [`FlowKey::ack_hash`] is `hash`.
#[inline(always)]
pub const fn ack_word(hash: u64, index: u16) -> u64 {
    (hash & !0xffff) | index as u64
}

/// The index an `ACKS` word acknowledges for the key whose hash is `hash`; None if the
/// word is another association's (or empty).
#[inline(always)]
pub const fn acked_index(word: u64, hash: u64) -> Option<u16> {
    if word != 0 && word & !0xffff == hash & !0xffff {
        Some(word as u16)
    } else {
        None
    }
}

/// What a bucket acknowledges for the key whose hash is `hash`.
#[inline(always)]
pub const fn bucket_acked(bucket: &AckBucket, hash: u64) -> Option<u16> {
    match acked_index(bucket[0], hash) {
        Some(i) => Some(i),
        None => acked_index(bucket[1], hash),
    }
}

/// Which word of `bucket` the key whose hash is `hash` writes: its own or an empty one,
/// else (both another's) the one its hash picks, taking it over.
#[inline(always)]
pub const fn bucket_word(bucket: &AckBucket, hash: u64) -> usize {
    if acked_index(bucket[0], hash).is_some() {
        0
    } else if acked_index(bucket[1], hash).is_some() {
        1
    } else if bucket[0] == 0 {
        0
    } else if bucket[1] == 0 {
        1
    } else {
        (hash >> 63) as usize
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for FlowKey {}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(last: u8, port: u16) -> FlowKey {
        let mut k = FlowKey {
            orig_port: port,
            resp_port: 15000,
            proto: Protocol::Cs1000Rudp as u8,
            family: 4,
            transport: 17,
            ..FlowKey::default()
        };
        k.orig[..4].copy_from_slice(&[10, 0, 0, last]);
        k.resp[..4].copy_from_slice(&[10, 0, 1, 1]);
        k
    }

    #[test]
    fn an_acknowledgement_is_its_associations_only() {
        let (a, b) = (key(1, 15000), key(2, 15000));
        let (ha, hb) = (a.ack_hash(), b.ack_hash());
        assert_eq!(ha, key(1, 15000).ack_hash(), "the same key, the same hash");
        assert_ne!(ha >> 16, hb >> 16, "neighbouring keys, other tags");
        assert_eq!(acked_index(ack_word(ha, 7), ha), Some(7));
        assert_eq!(acked_index(ack_word(ha, 0), ha), Some(0));
        assert_eq!(acked_index(ack_word(ha, 7), hb), None, "another's word");
        assert_eq!(acked_index(0, ha), None, "an empty slot");
    }

    #[test]
    fn a_bucket_keeps_two_and_a_third_takes_one_over() {
        let (a, b, c) = (key(1, 1), key(2, 2), key(3, 3));
        let mut bucket: AckBucket = [0; 2];
        let mut ack = |k: &FlowKey, index| {
            let h = k.ack_hash();
            bucket[bucket_word(&bucket, h)] = ack_word(h, index);
        };
        ack(&a, 1);
        ack(&b, 2);
        ack(&a, 3);
        ack(&c, 4);
        let acked = |k: &FlowKey| bucket_acked(&bucket, k.ack_hash());
        assert_eq!(acked(&c), Some(4), "the newest takes a word over");
        let kept: Vec<Option<u16>> = [a, b].iter().map(acked).collect();
        assert!(
            kept == [Some(3), None] || kept == [None, Some(2)],
            "one of the two kept, its own latest: {kept:?}"
        );
    }

    #[test]
    fn a_crowd_spreads_over_the_buckets() {
        // 65,536 associations of one /16, as a registrar sees phones, into 131,072
        // buckets (ACKS's size for a full table of them): a random spread leaves e^-0.5
        // of them empty, and 1 - 1.5 e^-0.5 (9.0 %) of the associations in a bucket with
        // two or more others.
        let buckets = 1 << 17;
        let mut count = vec![0u32; buckets];
        let keys: Vec<FlowKey> = (0..1u32 << 16)
            .map(|i| {
                let mut k = key(0, 15000);
                k.orig[2..4].copy_from_slice(&(i as u16).to_be_bytes());
                k
            })
            .collect();
        for k in &keys {
            count[k.ack_hash() as usize & (buckets - 1)] += 1;
        }
        let empty = count.iter().filter(|&&n| n == 0).count() as f64 / buckets as f64;
        assert!(
            (0.59..0.62).contains(&empty),
            "{empty:.3} of the buckets empty"
        );
        let crowded = keys
            .iter()
            .filter(|k| count[k.ack_hash() as usize & (buckets - 1)] >= 3)
            .count() as f64
            / keys.len() as f64;
        assert!(
            (0.08..0.10).contains(&crowded),
            "{crowded:.4} of the associations crowded out"
        );
    }
}
