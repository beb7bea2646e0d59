//! Reassembly of IP-fragmented SIP datagrams. Long REGISTERs over UDP (Cisco phones,
//! many headers) leave as IPv4/IPv6 fragments; the datapath passes up the fragments of
//! every datagram whose first fragment was a SIP REGISTER/OPTIONS or response
//! (`EventKind::Fragment`, see `hbwatch_common::frag`). Here they become the one
//! `SipMessage` record the datapath would have sent for the whole datagram: its first
//! `sip::CAPTURE_LEN` bytes, the length the UDP header promises. Bounded: at most
//! `MAX_PENDING` datagrams wait, each at most `FRAGMENT_TIMEOUT_NS`; what cannot be
//! completed is counted, and a datagram whose first fragment came is still delivered as
//! far as it goes (as a capture cut short would be).

use std::collections::{HashMap, VecDeque};

use hbwatch_common::event::{EventKind, RawEvent};
use hbwatch_common::key::FlowKey;
use hbwatch_common::parse::FRAG_OFFSET;
use hbwatch_common::proto::sip::CAPTURE_LEN;

/// Fragments of one datagram leave back to back; a second is generous (Linux keeps
/// fragments 30 s, but a REGISTER that waits that long has already been retransmitted).
pub const FRAGMENT_TIMEOUT_NS: u64 = 1_000_000_000;
/// Datagrams waiting for fragments at most; the oldest is given up beyond.
pub const MAX_PENDING: usize = 1024;
const UDP_HEADER: usize = 8;
/// Bytes of the datagram (UDP header included) worth keeping. The datapath copies at most
/// `CAPTURE_LEN` bytes of each fragment, and a first fragment's start with the UDP
/// header: so a reassembled record carries 8 bytes less than a whole datagram's.
const WANTED: usize = CAPTURE_LEN;

/// What reassembly did, for `agent.stopped` / `analyze` counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FragmentCounters {
    /// Datagrams delivered whole (as far as a record carries).
    pub reassembled: u64,
    /// Datagrams given up: fragments missing at the timeout, or evicted. Those whose
    /// first fragment came are delivered cut short all the same.
    pub incomplete: u64,
}

impl FragmentCounters {
    /// As they appear in `agent.stopped`'s and the summary's counters.
    pub fn named(&self) -> [(&'static str, u64); 2] {
        [
            ("fragments_reassembled", self.reassembled),
            ("fragments_incomplete", self.incomplete),
        ]
    }
}

/// One datagram being put together: its key, its IP id.
type DatagramId = (FlowKey, u32);

struct Pending {
    /// Time and interface of the first fragment seen (for the timeout and the record).
    first_ns: u64,
    ifindex: u32,
    dscp: u8,
    /// Bytes from offset 0 of the IP payload (UDP header first), as far as known.
    data: Vec<u8>,
    /// Which of `data`'s bytes arrived (fragments may come in any order).
    have: Vec<bool>,
    /// The UDP header's datagram length, once the first fragment came.
    udp_len: Option<usize>,
    delivered: bool,
}

impl Pending {
    /// Contiguous bytes from offset 0.
    fn prefix(&self) -> usize {
        self.have.iter().position(|h| !h).unwrap_or(self.have.len())
    }

    /// Bytes the record needs: the whole datagram, or what a record carries of it.
    fn needed(&self) -> Option<usize> {
        Some(self.udp_len?.min(WANTED))
    }
}

#[derive(Default)]
pub struct Reassembler {
    pending: HashMap<DatagramId, Pending>,
    /// Arrival order, for the timeout and eviction (ids may already be gone).
    order: VecDeque<(u64, DatagramId)>,
    counters: FragmentCounters,
}

impl Reassembler {
    pub fn counters(&self) -> FragmentCounters {
        self.counters
    }

    /// One `Fragment` record; the whole datagram's `SipMessage` record and bytes once
    /// it can be delivered.
    pub fn on_fragment(&mut self, raw: &RawEvent, bytes: &[u8]) -> Option<(RawEvent, Vec<u8>)> {
        let id = (raw.key, raw.seq);
        let frag = raw.value as u16;
        let offset = (frag & FRAG_OFFSET) as usize;
        let captured = (raw.aux as usize).min(bytes.len());
        if !self.pending.contains_key(&id) {
            if self.pending.len() >= MAX_PENDING {
                self.evict_oldest();
            }
            self.pending.insert(
                id,
                Pending {
                    first_ns: raw.ts_ns,
                    ifindex: raw.ifindex,
                    dscp: raw.dscp,
                    data: Vec::new(),
                    have: Vec::new(),
                    udp_len: None,
                    delivered: false,
                },
            );
            self.order.push_back((raw.ts_ns, id));
        }
        let p = self.pending.get_mut(&id)?;
        if p.delivered {
            return None;
        }
        if offset == 0 && captured >= UDP_HEADER {
            p.udp_len = Some(u16::from_be_bytes([bytes[4], bytes[5]]) as usize);
            p.dscp = raw.dscp;
        }
        // Keep only what a record can carry.
        let keep = captured.min(WANTED.saturating_sub(offset));
        if keep > 0 {
            if p.data.len() < offset + keep {
                p.data.resize(offset + keep, 0);
                p.have.resize(offset + keep, false);
            }
            p.data[offset..offset + keep].copy_from_slice(&bytes[..keep]);
            p.have[offset..offset + keep].fill(true);
        }
        match p.needed() {
            Some(n) if p.prefix() >= n => {
                self.counters.reassembled += 1;
                self.deliver(&id, raw.ts_ns)
            }
            _ => None,
        }
    }

    /// Gives up datagrams older than the timeout at `now`; each whose first fragment
    /// came is delivered as far as it goes.
    pub fn expire(&mut self, now: u64) -> Vec<(RawEvent, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(&(first, id)) = self.order.front() {
            if now.saturating_sub(first) < FRAGMENT_TIMEOUT_NS {
                break;
            }
            self.order.pop_front();
            out.extend(self.give_up(&id, first.saturating_add(FRAGMENT_TIMEOUT_NS)));
        }
        out
    }

    fn evict_oldest(&mut self) {
        while let Some((first, id)) = self.order.pop_front() {
            if self.pending.contains_key(&id) {
                // Its record would come out of time order: counted, not delivered.
                let _ = self.give_up(&id, first);
                return;
            }
        }
    }

    fn give_up(&mut self, id: &DatagramId, at: u64) -> Option<(RawEvent, Vec<u8>)> {
        let p = self.pending.get(id)?;
        if p.delivered {
            self.pending.remove(id);
            return None;
        }
        self.counters.incomplete += 1;
        if p.udp_len.is_none() || p.prefix() <= UDP_HEADER {
            self.pending.remove(id);
            return None;
        }
        let out = self.deliver(id, at);
        self.pending.remove(id);
        out
    }

    /// The datagram's `SipMessage` record: the contiguous bytes after the UDP header.
    fn deliver(&mut self, id: &DatagramId, at: u64) -> Option<(RawEvent, Vec<u8>)> {
        let p = self.pending.get_mut(id)?;
        p.delivered = true;
        let prefix = p.prefix().min(WANTED);
        let payload = p.data.get(UDP_HEADER..prefix)?.to_vec();
        let len = p
            .udp_len
            .map_or(payload.len(), |l| l.saturating_sub(UDP_HEADER));
        let raw = RawEvent {
            ts_ns: at.max(p.first_ns),
            value: len as u64,
            key: id.0,
            seq: 0,
            aux: payload.len() as u32,
            ifindex: p.ifindex,
            kind: EventKind::SipMessage as u8,
            dscp: p.dscp,
            _pad: [0; 2],
        };
        // Later fragments of a delivered datagram are dropped quietly until it expires.
        p.data = Vec::new();
        p.have = Vec::new();
        Some((raw, payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hbwatch_common::parse::{FRAG_FIRST, FRAG_LATER, FRAG_MORE};

    const MS: u64 = 1_000_000;

    fn record(ts: u64, id: u32, frag: u16, bytes: &[u8]) -> (RawEvent, Vec<u8>) {
        let n = bytes.len().min(CAPTURE_LEN);
        let raw = RawEvent {
            ts_ns: ts,
            value: frag as u64,
            seq: id,
            aux: n as u32,
            kind: EventKind::Fragment as u8,
            ..RawEvent::default()
        };
        (raw, bytes[..n].to_vec())
    }

    /// A UDP datagram carrying `payload`.
    fn datagram(payload: &[u8]) -> Vec<u8> {
        let mut d = vec![0x13, 0xc4, 0x13, 0xc4];
        d.extend_from_slice(&((payload.len() + 8) as u16).to_be_bytes());
        d.extend_from_slice(&[0, 0]);
        d.extend_from_slice(payload);
        d
    }

    fn register(len: usize) -> Vec<u8> {
        let mut m = b"REGISTER sip:cucm SIP/2.0\r\n".to_vec();
        while m.len() < len {
            m.push(b'a' + (m.len() % 26) as u8);
        }
        m
    }

    #[test]
    fn small_fragments_in_any_order_make_one_message() {
        // MTU 576 path: 552-byte fragments, the last one first.
        let msg = register(1200);
        let d = datagram(&msg);
        let mut r = Reassembler::default();
        let parts = [(1104usize, d.len()), (0, 552), (552, 1104)];
        let mut got = None;
        for (i, &(a, b)) in parts.iter().enumerate() {
            let flag = if a == 0 {
                FRAG_FIRST | FRAG_MORE
            } else if b == d.len() {
                FRAG_LATER | a as u16
            } else {
                FRAG_LATER | FRAG_MORE | a as u16
            };
            let (raw, bytes) = record(i as u64 * MS, 9, flag, &d[a..b]);
            if let Some(done) = r.on_fragment(&raw, &bytes) {
                got = Some(done);
            }
        }
        let (raw, payload) = got.expect("reassembled");
        assert_eq!(raw.kind, EventKind::SipMessage as u8);
        assert_eq!(raw.value, 1200);
        assert_eq!(payload, msg[..CAPTURE_LEN - 8]);
        assert_eq!(r.counters().reassembled, 1);
    }

    #[test]
    fn a_first_fragment_holding_a_record_s_worth_is_delivered_at_once() {
        let msg = register(1800);
        let d = datagram(&msg);
        let mut r = Reassembler::default();
        let (raw, bytes) = record(0, 5, FRAG_FIRST | FRAG_MORE, &d[..1480]);
        let (rec, payload) = r.on_fragment(&raw, &bytes).expect("delivered");
        assert_eq!((rec.value, rec.aux), (1800, CAPTURE_LEN as u32 - 8));
        assert_eq!(payload, msg[..CAPTURE_LEN - 8]);
        // Its last fragment changes nothing.
        let (raw, bytes) = record(MS, 5, FRAG_LATER | 1480, &d[1480..]);
        assert!(r.on_fragment(&raw, &bytes).is_none());
        assert!(r.expire(10 * FRAGMENT_TIMEOUT_NS).is_empty());
        assert_eq!(
            r.counters(),
            FragmentCounters {
                reassembled: 1,
                incomplete: 0
            }
        );
    }

    #[test]
    fn missing_fragments_are_counted_and_what_came_is_delivered() {
        let msg = register(900);
        let d = datagram(&msg);
        let mut r = Reassembler::default();
        // First fragment only (the rest lost): delivered cut short at the timeout.
        let (raw, bytes) = record(0, 1, FRAG_FIRST | FRAG_MORE, &d[..552]);
        assert!(r.on_fragment(&raw, &bytes).is_none());
        // A later fragment of another datagram whose first never came: counted only.
        let (raw, bytes) = record(MS, 2, FRAG_LATER | 552, &d[552..]);
        assert!(r.on_fragment(&raw, &bytes).is_none());
        assert!(r.expire(FRAGMENT_TIMEOUT_NS - 1).is_empty());
        let out = r.expire(2 * FRAGMENT_TIMEOUT_NS);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].0.value, out[0].1.len()), (900, 544));
        assert_eq!(out[0].0.ts_ns, FRAGMENT_TIMEOUT_NS);
        assert_eq!(r.counters().incomplete, 2);
    }

    #[test]
    fn memory_is_bounded() {
        let mut r = Reassembler::default();
        let d = datagram(&register(900));
        for id in 0..(MAX_PENDING as u32 + 10) {
            let (raw, bytes) = record(id as u64, id, FRAG_FIRST | FRAG_MORE, &d[..552]);
            assert!(r.on_fragment(&raw, &bytes).is_none());
        }
        assert_eq!(r.pending.len(), MAX_PENDING);
        assert_eq!(r.counters().incomplete, 10);
    }
}
