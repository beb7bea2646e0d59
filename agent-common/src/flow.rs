//! Per-association state and its transition on each heartbeat.
//!
//! An association runs from the originator (the side that sends requests, or the
//! sender of one-way heartbeats) to the responder. Both directions of a device
//! pair that both originate (RUDP) are two associations.

use crate::event::EventKind;
use crate::params::ProtoParams;
use crate::parse::Packet;
use crate::proto::{rudp, Heartbeat, Protocol, Role};

/// Flow-table key: originator -> responder.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
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

impl FlowKey {
    /// The association a heartbeat belongs to: a response travels responder -> originator.
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

/// `FlowState::flags` bits.
pub const F_OUTSTANDING: u16 = 1 << 0;
pub const F_UNANSWERED_REPORTED: u16 = 1 << 1;
pub const F_ANOMALY_REPORTED: u16 = 1 << 2;

/// Per-association state, updated in place in the flow table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowState {
    pub first_ns: u64,
    /// Last request (any attempt) or one-way heartbeat.
    pub last_req_ns: u64,
    /// First send of the outstanding (or last) request sequence.
    pub seq_since_ns: u64,
    pub last_resp_ns: u64,
    /// Learned interval between consecutive sequences (EWMA, 1/8 weight); 0 = not yet.
    pub interval_ns: u64,
    pub rtt_last_ns: u64,
    pub rtt_min_ns: u64,
    pub rtt_max_ns: u64,
    pub rtt_sum_ns: u64,
    pub requests: u64,
    pub responses: u64,
    pub lost: u64,
    pub retries: u32,
    pub last_seq: u32,
    /// Sequence of the last out-of-order/mismatch report (same anomaly once per seq).
    pub reported_seq: u32,
    /// Sends of `last_seq` beyond the first.
    pub attempts: u16,
    pub flags: u16,
}

/// An anomaly found by a transition, before the engine adds key and time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finding {
    pub kind: EventKind,
    pub seq: u32,
    pub aux: u32,
    pub value: u64,
}

/// At most two findings per packet (e.g. unanswered + retry).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Findings {
    pub items: [Option<Finding>; 2],
}

impl Findings {
    /// Adds a finding; a third one would be dropped (no transition makes three).
    #[inline(always)]
    pub fn push(&mut self, kind: EventKind, seq: u32, aux: u32, value: u64) {
        let f = Some(Finding {
            kind,
            seq,
            aux,
            value,
        });
        if self.items[0].is_none() {
            self.items[0] = f;
        } else if self.items[1].is_none() {
            self.items[1] = f;
        }
    }
}

impl FlowState {
    /// State of an association first seen with `hb` at `now`.
    #[inline(always)]
    pub fn new(hb: &Heartbeat, now: u64) -> FlowState {
        let mut st = FlowState {
            first_ns: now,
            last_seq: hb.seq,
            ..FlowState::default()
        };
        match hb.role {
            Role::Response => {}
            _ => {
                st.last_req_ns = now;
                st.seq_since_ns = now;
                st.requests = 1;
                if hb.role == Role::Request {
                    st.flags = F_OUTSTANDING;
                }
            }
        }
        st
    }

    /// Applies a heartbeat to the association and reports what is anomalous.
    #[inline(always)]
    pub fn update(&mut self, hb: &Heartbeat, now: u64, p: &ProtoParams) -> Findings {
        match hb.role {
            Role::Response => self.on_response(hb.seq, now),
            Role::Request | Role::OneWay => self.on_request(hb, now, p),
        }
    }

    #[inline(always)]
    fn on_request(&mut self, hb: &Heartbeat, now: u64, p: &ProtoParams) -> Findings {
        let mut out = Findings::default();
        let seq = hb.seq;
        let outstanding = self.flags & F_OUTSTANDING != 0;
        if hb.role == Role::Request && outstanding && self.flags & F_UNANSWERED_REPORTED == 0 {
            // A new send while the previous one waits: the previous went unanswered.
            out.push(
                EventKind::Unanswered,
                self.last_seq,
                0,
                now.saturating_sub(self.seq_since_ns),
            );
            self.flags |= F_UNANSWERED_REPORTED;
        }
        self.requests += 1;
        if seq == self.last_seq {
            self.attempts = self.attempts.saturating_add(1);
            self.retries += 1;
            self.last_req_ns = now;
            if hb.role == Role::Request {
                self.flags |= F_OUTSTANDING;
            }
            out.push(EventKind::Retry, seq, self.attempts as u32 + 1, 0);
            return out;
        }
        let jump = seq.wrapping_sub(self.last_seq);
        let back = self.last_seq.wrapping_sub(seq);
        if seq == rudp::SEQ_RESET && hb.role == Role::Request {
            out.push(EventKind::Restart, seq, self.last_seq, 0);
        } else if jump == 1 {
            // In order: learn the interval from consecutive first sends.
            let sample = now.saturating_sub(self.seq_since_ns);
            self.interval_ns = if self.interval_ns == 0 {
                sample
            } else {
                (self.interval_ns * 7 + sample) / 8
            };
        } else if jump <= p.max_gap {
            let lost = (jump - 1) as u64;
            self.lost += lost;
            out.push(EventKind::Gap, seq, self.last_seq.wrapping_add(1), lost);
        } else if back <= p.reorder_window {
            // Older than the last one: report once per seq, keep the newest as reference.
            self.requests -= 1;
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
    fn on_response(&mut self, seq: u32, now: u64) -> Findings {
        let mut out = Findings::default();
        if self.flags & F_OUTSTANDING != 0 && seq == self.last_seq {
            // RTT from the latest attempt: the one most likely answered.
            let rtt = now.saturating_sub(self.last_req_ns);
            self.rtt_last_ns = rtt;
            if self.responses == 0 || rtt < self.rtt_min_ns {
                self.rtt_min_ns = rtt;
            }
            if rtt > self.rtt_max_ns {
                self.rtt_max_ns = rtt;
            }
            self.rtt_sum_ns += rtt;
            self.responses += 1;
            self.last_resp_ns = now;
            self.flags &= !F_OUTSTANDING;
            return out;
        }
        if self.flags & F_ANOMALY_REPORTED != 0 && self.reported_seq == seq {
            return out;
        }
        self.flags |= F_ANOMALY_REPORTED;
        self.reported_seq = seq;
        if seq == self.last_seq {
            // A second answer to a request already answered.
            out.push(EventKind::OutOfOrder, seq, self.last_seq.wrapping_add(1), 0);
        } else {
            out.push(EventKind::Mismatch, seq, 0, 0);
        }
        out
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for FlowKey {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for FlowState {}
