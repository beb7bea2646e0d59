//! The per-packet pipeline: parse -> port table -> decode -> flow transition -> records.
//! The kernel and the offline engine differ only in their [`Env`].

use crate::counters::Counter;
use crate::event::{EventKind, RawEvent, BEAT_INTERVAL, BEAT_PAIRED};
use crate::flow::{Finding, Findings, FlowKey, FlowState, TcpSeen};
use crate::frame::Frame;
use crate::params::ProtoParams;
use crate::parse::{self, headers, Packet, IPPROTO_TCP, TCP_FIN, TCP_RST};
use crate::proto::{decode_into, port_slot, sip, Msg, Protocol, Role, MSG_PARAMS};
use crate::zero::Zeroable as _;

/// What the pipeline needs from where it runs: maps in the kernel, collections offline.
pub trait Env {
    /// Protocol id at a port-table slot (0 = none).
    fn port_proto(&self, slot: u32) -> u8;
    fn params(&self, proto: Protocol) -> ProtoParams;
    /// Runs `f` on the association's state in place; `None` if it is not known.
    fn with_flow<R, U: FnOnce(&mut FlowState) -> R>(&mut self, key: &FlowKey, f: U) -> Option<R>;
    /// Inserts a new association, initialised in place by `init` (the kernel builds it
    /// in a per-CPU scratch slot: too big for the 512-byte stack); `false` if refused.
    fn insert_flow<U: FnOnce(&mut FlowState)>(&mut self, key: &FlowKey, init: U) -> bool;
    fn remove_flow(&mut self, key: &FlowKey);
    /// Pushes a record to userspace, filled in place by `fill` (the kernel writes it
    /// straight into reserved ring-buffer memory: no stack copy); `false` if lost.
    fn emit<U: FnOnce(&mut RawEvent)>(&mut self, fill: U) -> bool;
    /// Pushes a `SipRecord`: a header filled by `fill`, then the payload bytes at `off`
    /// (`sip::copy_payload`). The header's `aux` must then say how many bytes were
    /// copied: fewer than the headers' lengths promise when the frame ends early (a
    /// length lie, a capture cut short), and the rest of the record is not payload.
    fn emit_payload<F: Frame, U: FnOnce(&mut RawEvent)>(
        &mut self,
        fill: U,
        f: &F,
        off: usize,
        len: usize,
    ) -> bool;
    fn count(&mut self, c: Counter);
}

/// Where and when a packet was seen, and what its port said. Passed by reference:
/// BPF subprograms take at most five arguments.
#[derive(Clone, Copy)]
struct Seen {
    now: u64,
    ifindex: u32,
    proto: Protocol,
    /// Sent to the service port (TCP: by the client, the originator).
    to_service: bool,
}

/// Writes every field of a record in place (ring-buffer memory in the kernel).
#[inline(always)]
fn fill(ev: &mut RawEvent, at: &Seen, key: &FlowKey, dscp: u8, f: &Finding) {
    ev.ts_ns = at.now;
    ev.value = f.value;
    ev.key = *key;
    ev.seq = f.seq;
    ev.aux = f.aux;
    ev.ifindex = at.ifindex;
    ev.kind = f.kind as u8;
    ev.dscp = dscp;
    ev._pad = [0; 2];
}

/// Emits one finding on `key`; a record the ring buffer could not take is counted, so
/// every loss reaches `agent.events_lost`.
#[inline(always)]
fn emit_finding<E: Env>(env: &mut E, at: &Seen, key: &FlowKey, dscp: u8, f: &Finding) {
    if !env.emit(|ev| fill(ev, at, key, dscp, f)) {
        env.count(Counter::RingbufLost);
    }
}

/// Processes one frame seen at `now` (ns) on `ifindex`.
#[inline(always)]
pub fn process<F: Frame, E: Env>(f: &F, env: &mut E, now: u64, ifindex: u32) {
    process_with_clock(f, env, || now, ifindex)
}

/// As [`process`], reading the clock only for packets on a heartbeat port: in the kernel
/// the clock read cost about as much as parsing an ordinary packet (`cargo xtask bench`).
#[inline(always)]
pub fn process_with_clock<F: Frame, E: Env, C: FnOnce() -> u64>(
    f: &F,
    env: &mut E,
    clock: C,
    ifindex: u32,
) {
    env.count(Counter::Packets);
    let h = match headers(f) {
        Ok(h) => h,
        Err(skip) => {
            if let Some(c) = skip.counter() {
                env.count(c);
            }
            return;
        }
    };
    // Requests go to the well-known port; responses come from it.
    let mut to_service = true;
    let mut proto = Protocol::from_u8(env.port_proto(port_slot(h.transport, h.dst_port)));
    if proto == Protocol::None {
        to_service = false;
        proto = Protocol::from_u8(env.port_proto(port_slot(h.transport, h.src_port)));
    }
    if proto == Protocol::None {
        return;
    }
    // Only now the whole packet, in place, never moved: in BPF every copy of the 56-byte
    // packet is ~50 instructions, and zeroed in words (crate::zero).
    let mut pkt = core::mem::MaybeUninit::uninit();
    Packet::zero(&mut pkt);
    // SAFETY: zero() wrote every byte, and an all-zero Packet is valid.
    let pkt = unsafe { pkt.assume_init_mut() };
    if parse::fill(f, &h, pkt).is_err() {
        // headers() checked every byte fill() reads: unreachable, but never trusted.
        env.count(Counter::Truncated);
        return;
    }
    let pkt = &*pkt;
    env.count(Counter::PortMatched);
    let at = Seen {
        now: clock(),
        ifindex,
        proto,
        to_service,
    };
    if proto == Protocol::Sip {
        sip_message(f, env, pkt, &at);
        return;
    }
    // Zeroed in words: a derived Default is a byte-loop memset call in BPF (crate::zero).
    let mut msg = core::mem::MaybeUninit::uninit();
    Msg::zero(&mut msg);
    // SAFETY: zero() wrote every byte, and an all-zero Msg is valid.
    let msg = unsafe { msg.assume_init_mut() };
    decode_into(proto, f, pkt, msg);
    let heartbeat = on_message(env, pkt, msg, &at);
    // Separate calls, not nested: each stage's frame is released before the next.
    if !heartbeat && pkt.transport == IPPROTO_TCP {
        tcp_segment(env, pkt, &at);
    }
}

/// Everything after decoding: flow state, findings, records. Out of line so its stack
/// frame does not add to the packet-reading temporaries above it (512-byte BPF stack).
/// Returns whether the packet carried a heartbeat.
#[inline(never)]
fn on_message<E: Env>(env: &mut E, pkt: &Packet, msg: &Msg, at: &Seen) -> bool {
    let (proto, now) = (at.proto, at.now);
    let is_tcp = pkt.transport == IPPROTO_TCP;
    let hb = match msg.as_heartbeat() {
        Some(hb) => hb,
        None if msg.kind == MSG_PARAMS => {
            let key = FlowKey::of(proto, pkt, msg.role());
            let params = Finding {
                kind: EventKind::SessionParams,
                seq: 0,
                aux: msg.aux,
                value: msg.value as u64,
            };
            emit_finding(env, at, &key, pkt.dscp, &params);
            return false;
        }
        None => {
            if !is_tcp {
                env.count(Counter::NotHeartbeat);
            }
            return false;
        }
    };
    env.count(Counter::Heartbeats);
    let key = FlowKey::of(proto, pkt, hb.role);
    let from_orig = hb.role != Role::Response;
    let params = env.params(proto);
    // The heartbeat itself, for userspace timers; filled from the updated state.
    let mut beat = Finding {
        kind: EventKind::Heartbeat,
        seq: 0,
        aux: 0,
        value: 0,
    };
    let update = |st: &mut FlowState| {
        let seen = if is_tcp {
            st.on_tcp(pkt, from_orig, now)
        } else {
            TcpSeen::default()
        };
        let responses = st.responses;
        let mut out = st.update(&hb, now, &params, seen.retransmission);
        st.check_dscp(pkt.dscp, from_orig, &params, &mut out);
        beat.seq = st.last_seq;
        beat.value = st.beat_ns;
        beat.aux = hb.role as u32;
        if st.beat_ns != 0 {
            beat.aux |= if st.responses != responses {
                BEAT_PAIRED
            } else {
                BEAT_INTERVAL
            };
        }
        out
    };
    let findings = match env.with_flow(&key, update) {
        Some(found) => found,
        None => {
            // A response for an association never seen has nothing to pair with.
            if hb.role == Role::Response {
                return true;
            }
            let mut seen = Findings::default();
            let init = |st: &mut FlowState| {
                st.init(&hb, now);
                if is_tcp {
                    st.on_tcp(pkt, true, now);
                }
                seen.push(EventKind::AssociationSeen, st.last_seq, 0, 0);
                st.check_dscp(pkt.dscp, true, &params, &mut seen);
            };
            if !env.insert_flow(&key, init) {
                env.count(Counter::FlowInsertFailed);
                return true;
            }
            seen
        }
    };
    findings.for_each(|f| emit_finding(env, at, &key, pkt.dscp, f));
    if beat.aux != 0 {
        emit_finding(env, at, &key, pkt.dscp, &beat);
    }
    if is_tcp && pkt.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        tcp_closed(env, &key, pkt, from_orig, at);
    }
    true
}

/// A TCP segment of a heartbeat session that carries no heartbeat: ACKs, keepalive
/// probes, other messages, FIN/RST. The TCP client is the originator.
#[inline(never)]
fn tcp_segment<E: Env>(env: &mut E, pkt: &Packet, at: &Seen) {
    let role = if at.to_service {
        Role::Request
    } else {
        Role::Response
    };
    let key = FlowKey::of(at.proto, pkt, role);
    let known = env.with_flow(&key, |st| {
        st.on_tcp(pkt, at.to_service, at.now);
    });
    if known.is_some() && pkt.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        tcp_closed(env, &key, pkt, at.to_service, at);
    }
}

/// FIN/RST ends the association: report it once and forget the flow.
/// Out of line: rare, and keeps its record off the hot path's stack frame.
#[inline(never)]
fn tcp_closed<E: Env>(env: &mut E, key: &FlowKey, pkt: &Packet, from_orig: bool, at: &Seen) {
    let closed = Finding {
        kind: EventKind::SessionClosed,
        seq: env.with_flow(key, |st| st.last_seq).unwrap_or(0),
        aux: (pkt.tcp_flags & TCP_RST != 0) as u32,
        value: (!from_orig) as u64,
    };
    env.remove_flow(key);
    emit_finding(env, at, key, pkt.dscp, &closed);
}

/// REGISTER/OPTIONS requests and responses go to userspace with their first bytes;
/// over TCP every segment with data does (continuations of split messages).
#[inline(never)]
fn sip_message<F: Frame, E: Env>(f: &F, env: &mut E, pkt: &Packet, at: &Seen) {
    let is_tcp = pkt.transport == IPPROTO_TCP;
    if sip::start_line(f, pkt).is_some() {
        env.count(Counter::Heartbeats);
    } else if !is_tcp || pkt.payload_len == 0 {
        if !is_tcp {
            env.count(Counter::NotHeartbeat);
        }
        return;
    }
    let key = FlowKey::of(Protocol::Sip, pkt, Role::Request);
    let len = pkt.payload_len as usize;
    let sip = Finding {
        kind: EventKind::SipMessage,
        seq: pkt.tcp_seq,
        aux: sip::captured_len(len) as u32,
        value: len as u64,
    };
    let header = |ev: &mut RawEvent| fill(ev, at, &key, pkt.dscp, &sip);
    if !env.emit_payload(header, f, pkt.payload_off as usize, len) {
        env.count(Counter::RingbufLost);
    }
}
