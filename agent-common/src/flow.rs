//! Per-association state and its transition on each heartbeat.
//!
//! An association runs from the originator (the side that sends requests, or the
//! sender of one-way heartbeats) to the responder. Both directions of a device
//! pair that both originate (RUDP) are two associations. For TCP protocols the
//! originator is the TCP client (the PIM for GED-125, the phone for SCCP).

use crate::event::{EventKind, HeldBatch, HeldBeat, BEAT_INTERVAL, BEAT_PAIRED, HELD_BEATS};
use crate::params::{ProtoParams, DSCP_ANY, P_SEQ_IS_AN_ID, P_UNANSWERED_NEEDS_ACKS};
use crate::parse::{Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};
use crate::proto::{
    rudp, Heartbeat, Role, HB_BYTE_ORDER_UNKNOWN, HB_RESTART, HB_RESTART_HOW, HB_RESTART_HOW_SHIFT,
    HB_SYNTHETIC_SEQ,
};
use crate::zero::Zeroable;

/// `FlowState::flags` bits.
pub const F_OUTSTANDING: u16 = 1 << 0;
pub const F_UNANSWERED_REPORTED: u16 = 1 << 1;
pub const F_ANOMALY_REPORTED: u16 = 1 << 2;
pub const F_ORDER_BE: u16 = 1 << 3;
pub const F_ORDER_LE: u16 = 1 << 4;
pub const F_QOS_REPORTED: u16 = 1 << 5;
pub const F_ORIG_SEQ_KNOWN: u16 = 1 << 6;
pub const F_RESP_SEQ_KNOWN: u16 = 1 << 7;
pub const F_RESPONDED: u16 = 1 << 8;
/// Like `F_QOS_REPORTED`, for packets of the responder (marking is per direction).
pub const F_QOS_REPORTED_RESP: u16 = 1 << 9;
/// Announced to userspace (`AssociationSeen`): records flow from here on.
pub const F_ANNOUNCED: u16 = 1 << 10;
/// Other traffic shared this 5-tuple while it was a candidate: not heartbeats, never
/// announced (a TFTP transfer's DATA beside its 4-byte ACKs on an MDS port).
pub const F_FOREIGN: u16 = 1 << 11;
/// `orig_frame_*` / `resp_frame_*` hold a frame (a capture's clock may start at 0).
pub const F_ORIG_FRAME: u16 = 1 << 12;
pub const F_RESP_FRAME: u16 = 1 << 13;

/// A frame seen again within this time with the same identity and (non-zero) IP id is a
/// duplicate (SPAN/mirror ports, routers: microseconds apart). A real re-send comes
/// later with a new IP id: TCP's RTO and tail-loss probe of a lone segment >= 200 ms,
/// SIP's T1 500 ms, RUDP one interval.
pub const DUP_WINDOW_NS: u64 = 100_000_000;
/// As [`DUP_WINDOW_NS`] when the IP id tells nothing: IPv6, or 0 (Linux sends DF
/// datagrams of unconnected sockets with id 0).
pub const DUP_WINDOW_NO_ID_NS: u64 = 10_000_000;

/// Bit of a `QosMismatch` finding's `value` set when the responder's packets are affected.
pub const QOS_FROM_RESPONDER: u64 = 1 << 8;

/// Per-association state, updated in place in the flow table. Only what the transition
/// itself reads: totals (requests, RTT min/max/sum, lost) are userspace's to count from
/// the records (`correlate`); kept here they were 64 bytes of stores per heartbeat in
/// the kernel, and in each of a million associations `analyze` holds, that nobody read.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowState {
    /// Last request (any attempt) or one-way heartbeat.
    pub last_req_ns: u64,
    /// First send of the outstanding (or last) request sequence.
    pub seq_since_ns: u64,
    pub last_resp_ns: u64,
    /// Last segment of any kind from the responder (TCP: the transport is alive).
    pub resp_seen_ns: u64,
    /// Learned interval between consecutive sequences (EWMA, 1/8 weight); 0 = not yet.
    pub interval_ns: u64,
    /// What the last heartbeat measured: its interval sample (in-order request) or RTT
    /// (paired response), 0 = neither. Read by the engine for the `Heartbeat` record.
    pub beat_ns: u64,
    /// Responses paired (wraps): the engine sees a pairing by its change.
    pub responses: u32,
    pub last_seq: u32,
    /// Last sequence as read from the wire (big-endian), for byte-order detection.
    pub last_raw: u32,
    /// Sequence of the last out-of-order/mismatch report (same anomaly once per seq).
    pub reported_seq: u32,
    /// TCP: next expected sequence number from the originator / the responder.
    pub orig_next: u32,
    pub resp_next: u32,
    /// Sends of `last_seq` beyond the first.
    pub attempts: u16,
    pub flags: u16,
    /// DSCP last reported in a `qos.mismatch`, for the originator's / responder's packets.
    pub qos_dscp: u8,
    pub qos_dscp_resp: u8,
    /// Plausible heartbeats in a row while a candidate (see `ProtoParams::confirm_beats`).
    pub confirmed: u8,
    pub _pad: u8,
    /// Payload length of the candidate's heartbeats (IPMG: the same each time).
    pub probe_len: u16,
    pub _pad2: [u16; 3],
    /// The last heartbeat frame from the originator / the responder: when, its IP id, and
    /// its identity (TCP sequence number, or the wire's heartbeat seq): a frame seen
    /// twice is a duplicate, not a re-send.
    pub orig_frame_ns: u64,
    pub resp_frame_ns: u64,
    pub orig_ip_id: u32,
    pub resp_ip_id: u32,
    pub orig_ident: u32,
    pub resp_ident: u32,
    /// Routine heartbeats held back from userspace, in slot `index % HELD_BEATS` of
    /// `held.beats`, behind the header of the `Beats` record that sends them up: the
    /// record goes to the ring buffer in one copy from here (`bpf_ringbuf_output`; copied
    /// by the program, the verifier checked its 200 bytes again on every way to it).
    pub held: HeldBatch,
    /// Index of the next beat to hold.
    pub held_next: u16,
    /// Held beats before this index are with userspace: sent up the ring, or read from
    /// this table and acknowledged. The slots from here to `held_next` are not to be
    /// overwritten.
    pub held_sent: u16,
    /// Regular in-order heartbeats in a row (`routine`).
    pub calm: u8,
    pub _pad3: [u8; 3],
}

/// Regular heartbeats in a row after which the next ones are routine: the interval was
/// regular twice running, so whatever came before is over. Exactness does not depend on
/// it (userspace takes held beats before any decision they bear on); latency does: a
/// heartbeat that ends trouble is irregular itself, and goes up at once.
pub const CALM_AFTER: u8 = 1;

/// What [`FlowState::hold`] did.
pub const HOLD_NO: u8 = 0;
pub const HOLD_DONE: u8 = 1;
/// Routine, but the hold is full of beats userspace has not taken.
pub const HOLD_FULL: u8 = 2;

/// An anomaly found by a transition, before the engine adds key and time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finding {
    pub kind: EventKind,
    pub seq: u32,
    pub aux: u32,
    pub value: u64,
}

/// Findings of one packet: at most three (unanswered + retry + qos).
///
/// Plain integers, and an empty slot (kind 0) is all zeros: with `[Option<Finding>; 3]` the
/// fields of an empty slot are undefined, LLVM then "reads" them from any stack slot,
/// and kernels before 6.3 reject reading stack never written ("invalid read from
/// stack"; seen on 5.10 and 6.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Findings {
    // One array per field, no padding: 56 bytes where three 24-byte `Finding`s
    // would take 72 (every byte counts against the 512-byte BPF stack).
    values: [u64; 3],
    seqs: [u32; 3],
    auxs: [u32; 3],
    kinds: [u8; 3],
    _pad: [u8; 5],
}

impl Findings {
    /// Adds a finding; a fourth would be dropped (no transition makes four).
    ///
    /// Shifts the others one slot to the front and appends at the end: constant
    /// indices only. Choosing a free slot by index becomes pointer arithmetic on the
    /// stack that the verifier rejects ("bitwise operator |= on pointer").
    #[inline(always)]
    pub fn push(&mut self, kind: EventKind, seq: u32, aux: u32, value: u64) {
        if self.kinds[0] != 0 {
            return;
        }
        self.kinds = [self.kinds[1], self.kinds[2], kind as u8];
        self.seqs = [self.seqs[1], self.seqs[2], seq];
        self.auxs = [self.auxs[1], self.auxs[2], aux];
        self.values = [self.values[1], self.values[2], value];
    }

    /// Slot `i` (0..3), if it holds a finding.
    #[inline(always)]
    fn get(&self, i: usize) -> Option<Finding> {
        Some(Finding {
            kind: EventKind::from_u8(*self.kinds.get(i)?)?,
            seq: *self.seqs.get(i)?,
            aux: *self.auxs.get(i)?,
            value: *self.values.get(i)?,
        })
    }

    /// Calls `f` on each finding in the order they were pushed; unrolled by hand
    /// (constant slot indices, see `push`).
    #[inline(always)]
    pub fn for_each(&self, mut f: impl FnMut(&Finding)) {
        if let Some(x) = self.get(0) {
            f(&x);
        }
        if let Some(x) = self.get(1) {
            f(&x);
        }
        if let Some(x) = self.get(2) {
            f(&x);
        }
    }

    /// No finding.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.kinds[2] == 0
    }

    /// The findings in the order they were pushed.
    pub fn iter(&self) -> impl Iterator<Item = Finding> + '_ {
        (0..3).filter_map(|i| self.get(i))
    }
}

/// What a TCP segment told the association about its transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpSeen {
    /// Every payload byte was seen before: a retransmission.
    pub retransmission: bool,
    /// A keepalive probe (PROTOCOLS.md §6).
    pub keepalive: bool,
}

#[inline(always)]
fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

#[inline(always)]
fn swap_seq(raw: u32) -> u32 {
    raw.swap_bytes()
}

impl FlowState {
    /// State of an association first seen with `hb` at `now`.
    pub fn new(hb: &Heartbeat, now: u64) -> FlowState {
        let mut st = FlowState::default();
        st.init(hb, now);
        st
    }

    /// (Re)initialises in place for an association first seen with `hb` at `now`.
    #[inline(always)]
    pub fn init(&mut self, hb: &Heartbeat, now: u64) {
        // Zeroed in words, not by a struct update from Default: that is three calls of
        // a byte-loop memset in BPF (crate::zero).
        self.clear();
        self.last_seq = hb.seq;
        self.last_raw = hb.seq;
        let st = self;
        if hb.flags & HB_SYNTHETIC_SEQ != 0 {
            st.last_seq = 1;
        } else if hb.flags & HB_BYTE_ORDER_UNKNOWN != 0 {
            // Counters start at 0: the smaller reading is the likelier until proven.
            let le = swap_seq(hb.seq);
            if le < hb.seq {
                st.last_seq = le;
            }
        }
        match hb.role {
            Role::Response => {
                st.last_resp_ns = now;
                st.resp_seen_ns = now;
                st.responses = 1;
                st.flags = F_RESPONDED;
            }
            _ => {
                st.last_req_ns = now;
                st.seq_since_ns = now;
                if hb.role == Role::Request {
                    st.flags = F_OUTSTANDING;
                }
            }
        }
    }

    /// Tracks a TCP segment of the session; `from_orig` = sent by the originator.
    #[inline(always)]
    pub fn on_tcp(&mut self, pkt: &Packet, from_orig: bool, now: u64) -> TcpSeen {
        let mut seen = TcpSeen::default();
        let flags = pkt.tcp_flags;
        let mut len = pkt.payload_len as u32;
        if flags & (TCP_SYN | TCP_FIN) != 0 {
            len += 1;
        }
        let (next, mut known) = if from_orig {
            (self.orig_next, self.flags & F_ORIG_SEQ_KNOWN != 0)
        } else {
            self.resp_seen_ns = now;
            (self.resp_next, self.flags & F_RESP_SEQ_KNOWN != 0)
        };
        if flags & TCP_SYN != 0 {
            // A new connection on the same ports (its close went unseen): start afresh.
            known = false;
        }
        let mut new_next = pkt.tcp_seq.wrapping_add(len);
        if known {
            let plain = flags & (TCP_SYN | TCP_FIN | TCP_RST) == 0 && flags & TCP_ACK != 0;
            if plain && pkt.payload_len <= 1 && pkt.tcp_seq == next.wrapping_sub(1) {
                // seq == next - 1 with 0/1 byte: a keepalive probe, not new data.
                seen.keepalive = true;
                new_next = next;
            } else if len > 0 && !seq_after(new_next, next) {
                seen.retransmission = true;
            }
            if !seq_after(new_next, next) {
                new_next = next;
            }
        }
        if from_orig {
            self.orig_next = new_next;
            self.flags |= F_ORIG_SEQ_KNOWN;
        } else {
            self.resp_next = new_next;
            self.flags |= F_RESP_SEQ_KNOWN;
        }
        seen
    }

    /// Applies a heartbeat to the association and reports what is anomalous.
    /// `retransmission`: the TCP segment carrying it was sent before.
    #[inline(always)]
    pub fn update(
        &mut self,
        hb: &Heartbeat,
        now: u64,
        p: &ProtoParams,
        retransmission: bool,
    ) -> Findings {
        let mut hb = *hb;
        self.beat_ns = 0;
        if hb.flags & HB_SYNTHETIC_SEQ != 0 {
            // Numbered by the association: a request is the next one unless re-sent.
            hb.seq = match hb.role {
                Role::Response => self.last_seq,
                _ if retransmission => self.last_seq,
                _ => self.last_seq.wrapping_add(1),
            };
        } else if hb.flags & HB_BYTE_ORDER_UNKNOWN != 0 {
            hb.seq = self.learn_byte_order(hb.seq);
        }
        match hb.role {
            Role::Response => self.on_response(hb.seq, now, p),
            Role::Request | Role::OneWay => self.on_request(&hb, now, p),
        }
    }

    /// Reads `raw` in the byte order the association has shown: the order in which
    /// consecutive heartbeats increase by one.
    #[inline(always)]
    fn learn_byte_order(&mut self, raw: u32) -> u32 {
        let last_raw = self.last_raw;
        self.last_raw = raw;
        if self.flags & F_ORDER_BE != 0 {
            return raw;
        }
        if self.flags & F_ORDER_LE != 0 {
            return swap_seq(raw);
        }
        if raw == last_raw.wrapping_add(1) {
            self.flags |= F_ORDER_BE;
            self.last_seq = last_raw;
            return raw;
        }
        if swap_seq(raw) == swap_seq(last_raw).wrapping_add(1) {
            self.flags |= F_ORDER_LE;
            self.last_seq = swap_seq(last_raw);
            return swap_seq(raw);
        }
        let le = swap_seq(raw);
        if le < raw {
            le
        } else {
            raw
        }
    }

    #[inline(always)]
    fn on_request(&mut self, hb: &Heartbeat, now: u64, p: &ProtoParams) -> Findings {
        let mut out = Findings::default();
        let seq = hb.seq;
        let outstanding = self.flags & F_OUTSTANDING != 0;
        let acks_known = p.flags & P_UNANSWERED_NEEDS_ACKS == 0 || self.flags & F_RESPONDED != 0;
        // Transactions may overlap (MGCP: an event NTFY while the keepalive's answer is on
        // its way): only a request left waiting half the interval is unanswered (the rule
        // userspace applies to every protocol: correlate::release_held).
        let waited = p.flags & P_SEQ_IS_AN_ID == 0
            || now.saturating_sub(self.seq_since_ns) >= p.interval_ms as u64 * 500_000;
        if hb.role == Role::Request
            && outstanding
            && acks_known
            && waited
            && self.flags & F_UNANSWERED_REPORTED == 0
        {
            // A new send while the previous one waits: the previous went unanswered.
            let transport_alive = self.resp_seen_ns > self.seq_since_ns;
            out.push(
                EventKind::Unanswered,
                self.last_seq,
                transport_alive as u32,
                now.saturating_sub(self.seq_since_ns),
            );
            self.flags |= F_UNANSWERED_REPORTED;
        }
        if seq == self.last_seq {
            if hb.role == Role::OneWay {
                // One-way heartbeats are never re-sent: a duplicate.
                if !(self.flags & F_ANOMALY_REPORTED != 0 && self.reported_seq == seq) {
                    self.flags |= F_ANOMALY_REPORTED;
                    self.reported_seq = seq;
                    out.push(EventKind::OutOfOrder, seq, seq.wrapping_add(1), 0);
                }
                return out;
            }
            self.attempts = self.attempts.saturating_add(1);
            self.last_req_ns = now;
            self.flags |= F_OUTSTANDING;
            out.push(EventKind::Retry, seq, self.attempts as u32 + 1, 0);
            return out;
        }
        let jump = seq.wrapping_sub(self.last_seq);
        let back = self.last_seq.wrapping_sub(seq);
        let fresh_start = hb.role == Role::OneWay && seq < 4 && seq < self.last_seq;
        // Transaction ids: any new one is the next heartbeat.
        let next = jump == 1 || p.flags & P_SEQ_IS_AN_ID != 0;
        let announced = hb.flags & HB_RESTART != 0;
        if (seq == rudp::SEQ_RESET && hb.role == Role::Request) || fresh_start || announced {
            // RUDP reset marker; a one-way counter back at 0..3; a restart the message
            // announces (MGCP RSIP, how in `value`): the peer restarted, or says it leaves.
            let how = (hb.flags & HB_RESTART_HOW) >> HB_RESTART_HOW_SHIFT;
            out.push(EventKind::Restart, seq, self.last_seq, how as u64);
        } else if next {
            // In order: learn the interval from consecutive first sends.
            let sample = now.saturating_sub(self.seq_since_ns);
            self.beat_ns = sample;
            self.interval_ns = if self.interval_ns == 0 {
                sample
            } else {
                // interval * 7/8 + sample/8, without the product: a capture's clock can
                // jump by centuries, and `interval * 7` overflowed (malformed suite).
                self.interval_ns - self.interval_ns / 8 + sample / 8
            };
        } else if jump <= p.max_gap {
            let lost = (jump - 1) as u64;
            out.push(EventKind::Gap, seq, self.last_seq.wrapping_add(1), lost);
        } else if back <= p.reorder_window {
            // Older than the last one: report once per seq, keep the newest as reference.
            if !(self.flags & F_ANOMALY_REPORTED != 0 && self.reported_seq == seq) {
                self.flags |= F_ANOMALY_REPORTED;
                self.reported_seq = seq;
                out.push(EventKind::OutOfOrder, seq, self.last_seq.wrapping_add(1), 0);
            }
            return out;
        } else {
            out.push(EventKind::Restart, seq, self.last_seq, 0);
        }
        self.last_seq = seq;
        self.attempts = 0;
        self.last_req_ns = now;
        self.seq_since_ns = now;
        self.flags &= !F_UNANSWERED_REPORTED;
        if hb.role == Role::Request {
            self.flags |= F_OUTSTANDING;
        }
        out
    }

    #[inline(always)]
    fn on_response(&mut self, seq: u32, now: u64, p: &ProtoParams) -> Findings {
        let mut out = Findings::default();
        self.resp_seen_ns = now;
        if self.flags & F_OUTSTANDING != 0 && seq == self.last_seq {
            // RTT from the latest attempt: the one most likely answered.
            let rtt = now.saturating_sub(self.last_req_ns);
            self.beat_ns = rtt;
            self.responses = self.responses.wrapping_add(1);
            self.last_resp_ns = now;
            self.flags &= !F_OUTSTANDING;
            self.flags |= F_RESPONDED;
            return out;
        }
        if p.flags & P_SEQ_IS_AN_ID != 0 {
            // The answer to another transaction on the same channel (MGCP: an event
            // NTFY's, a re-sent answer): not this heartbeat's business.
            return out;
        }
        if self.flags & F_ANOMALY_REPORTED != 0 && self.reported_seq == seq {
            return out;
        }
        self.flags |= F_ANOMALY_REPORTED;
        self.reported_seq = seq;
        if seq == self.last_seq && self.flags & F_RESPONDED != 0 {
            // A second answer to a request already answered.
            out.push(EventKind::OutOfOrder, seq, self.last_seq.wrapping_add(1), 0);
        } else {
            out.push(EventKind::Mismatch, seq, 0, 0);
        }
        out
    }

    /// DSCP check against the protocol's expectation: once per association, direction
    /// and wrong value; again after the marking was restored and lost again.
    #[inline(always)]
    pub fn check_dscp(&mut self, dscp: u8, from_orig: bool, p: &ProtoParams, out: &mut Findings) {
        if p.expected_dscp == DSCP_ANY {
            return;
        }
        let (flag, last) = if from_orig {
            (F_QOS_REPORTED, self.qos_dscp)
        } else {
            (F_QOS_REPORTED_RESP, self.qos_dscp_resp)
        };
        if dscp == p.expected_dscp {
            self.flags &= !flag;
            return;
        }
        if self.flags & flag != 0 && last == dscp {
            return;
        }
        self.flags |= flag;
        let side = if from_orig {
            self.qos_dscp = dscp;
            0
        } else {
            self.qos_dscp_resp = dscp;
            QOS_FROM_RESPONDER
        };
        out.push(
            EventKind::QosMismatch,
            self.last_seq,
            p.expected_dscp as u32,
            dscp as u64 | side,
        );
    }
}

impl FlowState {
    /// Whether a heartbeat just applied without findings is routine: userspace learns of
    /// it when it next reads the association, and nothing it does with it would be an
    /// event. A request or one-way heartbeat is, in order and within half the tolerance
    /// of the learned interval, after [`CALM_AFTER`] such in a row; an answer paired
    /// with its request is while the association is calm. Whatever else happens (a
    /// finding, an irregular interval, a re-send) starts the count again. `aux` is the
    /// heartbeat record's, `prev_interval` the learned interval before this heartbeat.
    ///
    /// This only decides how soon userspace hears of a heartbeat, never what it makes
    /// of it: userspace reads the held ones before any decision they bear on.
    #[inline(always)]
    pub fn routine(&mut self, role: Role, aux: u32, prev_interval: u64, p: &ProtoParams) -> bool {
        if role == Role::Response {
            return aux & BEAT_PAIRED != 0 && self.calm > CALM_AFTER;
        }
        let sample = self.beat_ns;
        let slack = prev_interval / 200 * p.tolerance_pct as u64;
        let regular = aux & BEAT_INTERVAL != 0
            && prev_interval != 0
            && sample.saturating_add(slack) >= prev_interval
            && sample <= prev_interval.saturating_add(slack);
        if !regular {
            self.calm = 0;
            return false;
        }
        self.calm = self.calm.saturating_add(1);
        self.calm > CALM_AFTER
    }

    /// Holds a routine heartbeat (its record's fields); `HOLD_FULL` if there is no room.
    #[inline(always)]
    pub fn hold(&mut self, ts_ns: u64, value: u64, seq: u32, aux: u16) -> u8 {
        if self.held_next.wrapping_sub(self.held_sent) as usize >= HELD_BEATS {
            return HOLD_FULL;
        }
        let index = self.held_next;
        self.held.beats[index as usize % HELD_BEATS] = HeldBeat {
            ts_ns,
            value,
            seq,
            aux,
            index,
        };
        self.held_next = index.wrapping_add(1);
        HOLD_DONE
    }

    /// Held beats not yet with userspace.
    #[inline(always)]
    pub fn holding(&self) -> bool {
        self.held_next != self.held_sent
    }

    /// Userspace has taken the held beats before `index` (from `ACKS`): their slots may
    /// be reused. An index outside what is held (an acknowledgement of an earlier life of
    /// this key) changes nothing.
    #[inline(always)]
    pub fn acked(&mut self, index: u16) {
        let ahead = index.wrapping_sub(self.held_sent) as i16;
        let within = self.held_next.wrapping_sub(index) as i16;
        if ahead > 0 && within >= 0 {
            self.held_sent = index;
        }
    }

    /// Makes `held` the `Beats` record of the beats not sent yet, and counts them sent:
    /// the header's `seq` and `aux` say which (the caller fills the rest of it); the
    /// whole hold goes up.
    #[inline(always)]
    pub fn take_held(&mut self) -> &HeldBatch {
        self.held.hdr.seq = self.held_sent as u32;
        self.held.hdr.aux = self.held_next.wrapping_sub(self.held_sent) as u32;
        self.held_sent = self.held_next;
        &self.held
    }

    /// Whether a heartbeat frame from one side repeats that side's previous one: the same
    /// identity and IP id within the duplicate window. Returns the time since the first
    /// copy; otherwise remembers this frame as the side's last.
    #[inline(always)]
    pub fn duplicate(&mut self, ip_id: u32, ident: u32, from_orig: bool, now: u64) -> Option<u64> {
        let (flag, last_ns, last_id, last_ident) = if from_orig {
            (
                F_ORIG_FRAME,
                self.orig_frame_ns,
                self.orig_ip_id,
                self.orig_ident,
            )
        } else {
            (
                F_RESP_FRAME,
                self.resp_frame_ns,
                self.resp_ip_id,
                self.resp_ident,
            )
        };
        let window = if ip_id != 0 {
            DUP_WINDOW_NS
        } else {
            DUP_WINDOW_NO_ID_NS
        };
        let since = now.wrapping_sub(last_ns);
        if self.flags & flag != 0
            && now >= last_ns
            && since < window
            && last_id == ip_id
            && last_ident == ident
        {
            return Some(since);
        }
        self.flags |= flag;
        if from_orig {
            self.orig_frame_ns = now;
            self.orig_ip_id = ip_id;
            self.orig_ident = ident;
        } else {
            self.resp_frame_ns = now;
            self.resp_ip_id = ip_id;
            self.resp_ident = ident;
        }
        None
    }

    /// A candidate's heartbeat, after `update`: counts it if plausible (in order, at
    /// least a quarter of the protocol's interval after the previous one and within a
    /// factor of two of the interval before, the candidate's size), else starts the
    /// count again from it. `prev_interval` is the learned interval before `update`.
    /// True once enough plausible heartbeats in a row say it is an association.
    #[inline(always)]
    pub fn confirm(
        &mut self,
        hb: &Heartbeat,
        payload_len: u16,
        prev_interval: u64,
        p: &ProtoParams,
    ) -> bool {
        if hb.role == Role::Response {
            // Responses neither prove nor disprove a request stream.
            return false;
        }
        let sample = self.beat_ns;
        let min = p.interval_ms as u64 * 250_000;
        let steady = prev_interval == 0
            || (sample.saturating_mul(2) >= prev_interval
                && sample <= prev_interval.saturating_mul(2));
        if sample != 0 && sample >= min && steady && payload_len == self.probe_len {
            self.confirmed = self.confirmed.saturating_add(1);
        } else {
            self.confirmed = 1;
            self.probe_len = payload_len;
        }
        self.confirmed >= p.confirm_beats
    }
}

// SAFETY: integers only; 8-byte aligned (u64 fields).
unsafe impl Zeroable for FlowState {}

#[cfg(feature = "user")]
unsafe impl aya::Pod for FlowState {}
