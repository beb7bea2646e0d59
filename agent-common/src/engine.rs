//! The per-packet pipeline: parse -> port table -> decode -> flow transition -> records.
//! The kernel and the offline engine differ only in their [`Env`].

use crate::counters::Counter;
use crate::event::{EventKind, RawEvent, BEAT_INTERVAL, BEAT_PAIRED, HELD_DUPLICATE};
use crate::flow::{
    Finding, Findings, FlowState, TcpSeen, CALM_AFTER, F_ANNOUNCED, F_FOREIGN, HOLD_DONE, HOLD_FULL,
};
use crate::frag::{FragInfo, FragKey};
use crate::frame::Frame;
use crate::key::FlowKey;
use crate::params::{ProtoParams, P_HOLD_ROUTINE};
use crate::parse::{
    self, headers, Packet, FRAG_FIRST, FRAG_LATER, IPPROTO_TCP, IPPROTO_UDP, TCP_FIN, TCP_RST,
};
use crate::proto::{
    decode_into, port_slot, sip, Msg, Protocol, Role, HB_SYNTHETIC_SEQ, MSG_NONE, MSG_PARAMS,
};

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
    /// Sends the association's held beats up as one `Beats` record
    /// (`FlowState::take_held`), its header filled by `fill` (but for `seq`, `aux`);
    /// `false` if the association is gone or the record was lost.
    fn emit_held<U: FnOnce(&mut RawEvent)>(&mut self, key: &FlowKey, fill: U) -> bool;
    /// How far userspace has taken the association's held beats (`ACKS`), if it said.
    fn held_ack(&mut self, _key: &FlowKey) -> Option<u16> {
        None
    }
    fn count(&mut self, c: Counter);
    /// The ports of a fragmented datagram whose first fragment was on a SIP port.
    fn frag_get(&mut self, _key: &FragKey) -> Option<FragInfo> {
        None
    }
    /// Remembers a first fragment's ports for its datagram's later fragments.
    fn frag_put(&mut self, _key: &FragKey, _info: &FragInfo) {}
}

/// Where and when a packet was seen, and what its port said. Passed by reference:
/// BPF subprograms take at most five arguments.
#[derive(Clone, Copy, Debug)]
pub struct Seen {
    now: u64,
    ifindex: u32,
    proto: Protocol,
    /// Sent to the service port (TCP: by the client, the originator).
    to_service: bool,
    /// What holding did with the heartbeat (`V_*`), written and read back through this
    /// memory (the per-CPU scratch in the kernel).
    verdict: u8,
    /// What `on_message` found to send, for `emit_records`: from map memory the
    /// verifier checks the sending once, not once per way through `on_message` (in
    /// place, sending the held beats first tripled the instructions it processed).
    key: FlowKey,
    findings: Findings,
    beat: Finding,
}

/// `Seen::verdict` bits: the heartbeat was held; it was routine but the hold was full;
/// the association holds beats that must go up before any record about it.
const V_HELD: u8 = HOLD_DONE;
const V_FULL: u8 = HOLD_FULL;
const V_HOLDING: u8 = 4;

impl Seen {
    #[inline(always)]
    fn set_verdict(&mut self, v: u8) {
        // SAFETY: a field of a live value.
        unsafe { core::ptr::write_volatile(&mut self.verdict, v) }
    }

    #[inline(always)]
    fn verdict(&self) -> u8 {
        // SAFETY: a field of a live value.
        unsafe { core::ptr::read_volatile(&self.verdict) }
    }
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
    let mut scratch = Scratch::default();
    process_with_clock(f, env, || Some(&mut scratch), || now, ifindex)
}

/// The protocol of a packet's heartbeat port, and whether the packet goes to it:
/// requests go to the well-known port; responses come from it.
#[inline(always)]
fn service<E: Env>(env: &E, h: &parse::Headers) -> (Protocol, bool) {
    let proto = Protocol::from_u8(env.port_proto(port_slot(h.transport, h.dst_port)));
    if proto != Protocol::None {
        return (proto, true);
    }
    let proto = Protocol::from_u8(env.port_proto(port_slot(h.transport, h.src_port)));
    (proto, false)
}

/// The association a packet most likely belongs to, without touching any state: the
/// packet's key as a request if it goes to a heartbeat port, else as a response. A
/// guess (the decoder decides the role): what `analyze` warms the caches for, frames
/// ahead of processing them; a wrong guess only warms the wrong line.
pub fn likely_key<F: Frame, E: Env>(f: &F, env: &E) -> Option<FlowKey> {
    let h = headers(f).ok()?;
    let (proto, to_service) = service(env, &h);
    if proto == Protocol::None {
        return None;
    }
    let mut pkt = Packet::default();
    parse::fill(f, &h, &mut pkt).ok()?;
    let role = if to_service {
        Role::Request
    } else {
        Role::Response
    };
    Some(FlowKey::of(proto, &pkt, role))
}

/// One packet's parse and decoded message. In the kernel a per-CPU map slot, not the
/// stack: the verifier tracks what a program keeps on its stack, so every way through
/// the header parser (VLAN tags, IPv4/IPv6, fragment headers) and the decoders reached
/// the steps after them as a state of its own, each verified again (800k instructions:
/// seconds to load on 6.18, more than 20 minutes on 5.10 under QEMU). What is read back
/// from map memory is unknown to the verifier: those steps are verified about once.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Scratch {
    pub pkt: Packet,
    pub msg: Msg,
    at: Seen,
}

impl Default for Seen {
    fn default() -> Seen {
        Seen {
            now: 0,
            ifindex: 0,
            proto: Protocol::None,
            to_service: false,
            verdict: 0,
            key: FlowKey::default(),
            findings: Findings::default(),
            beat: Finding {
                kind: EventKind::Heartbeat,
                seq: 0,
                aux: 0,
                value: 0,
            },
        }
    }
}

/// As [`process`], reading the clock and taking the scratch (in the kernel, a per-CPU
/// map lookup) only for packets on a heartbeat port: most packets are not, and for them
/// each costs about as much as parsing the headers (`cargo xtask bench`).
#[inline(always)]
pub fn process_with_clock<'s, F: Frame, E: Env, S, C>(
    f: &F,
    env: &mut E,
    scratch: S,
    clock: C,
    ifindex: u32,
) where
    S: FnOnce() -> Option<&'s mut Scratch>,
    C: FnOnce() -> u64,
{
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
    let (proto, to_service) = service(env, &h);
    if proto == Protocol::None && h.frag & FRAG_LATER == 0 {
        if h.frag != 0 {
            env.count(Counter::Fragments);
        }
        return;
    }
    // Only now the whole packet, in place, never moved: in BPF every copy of the 56-byte
    // packet is ~50 instructions. `fill` writes every field (no zeroing call first).
    let Some(Scratch { pkt, msg, at }) = scratch() else {
        return;
    };
    if parse::fill(f, &h, pkt).is_err() {
        // headers() checked every byte fill() reads: unreachable, but never trusted.
        env.count(Counter::Truncated);
        return;
    }
    let pkt = &*pkt;
    if pkt.frag & FRAG_LATER != 0 {
        later_fragment(f, env, pkt, clock, ifindex);
        return;
    }
    env.count(Counter::PortMatched);
    at.now = clock();
    at.ifindex = ifindex;
    at.proto = proto;
    at.to_service = to_service;
    if pkt.frag != 0 {
        // Only SIP datagrams outgrow a frame; other heartbeats are a few bytes.
        if proto == Protocol::Sip && pkt.transport == IPPROTO_UDP {
            first_fragment(f, env, pkt, &*at);
        } else {
            env.count(Counter::Fragments);
        }
        return;
    }
    if proto == Protocol::Sip {
        sip_message(f, env, pkt, &*at);
        return;
    }
    // `decode_into` writes the whole message (no zeroing call first).
    let kind = decode_into(proto, f, pkt, msg);
    // Separate calls, not nested: each stage's frame is released before the next.
    let verdict = on_message(env, pkt, msg, at);
    let at = &*at;
    // Whether the packet also ends its TCP session (FIN/RST), after what it carried.
    let closes = match verdict {
        Seen::HEARTBEAT => false,
        Seen::CLOSED => true,
        Seen::EMIT => emit_records(env, pkt, at),
        Seen::HOLD_FULL => hold_with_room(env, pkt, at),
        Seen::UNKNOWN => {
            new_association(env, pkt, msg, at);
            false
        }
        _ if pkt.transport == IPPROTO_TCP => {
            tcp_segment(env, pkt, at);
            false
        }
        _ if kind == MSG_NONE => {
            foreign_datagram(env, pkt, proto);
            false
        }
        _ => false,
    };
    if closes {
        tcp_closed(env, pkt, msg.role() != Role::Response, at);
    }
}

impl Seen {
    /// What [`on_message`] found: no heartbeat, a heartbeat applied to its association,
    /// or a heartbeat of an association not in the table (for [`new_association`]).
    const NOT_HEARTBEAT: u8 = 0;
    const HEARTBEAT: u8 = 1;
    const UNKNOWN: u8 = 2;
    /// A heartbeat in a segment with FIN or RST: applied, then the session ends.
    const CLOSED: u8 = 3;
    /// Records to send, left in the scratch (`emit_records`).
    const EMIT: u8 = 4;
    /// A routine heartbeat to hold, left in the scratch, whose hold is full
    /// (`hold_with_room`).
    const HOLD_FULL: u8 = 5;
}

/// The identity of a heartbeat frame for duplicate detection: the TCP sequence number,
/// or the heartbeat's own seq (IPMG has none: its size).
#[inline(always)]
fn frame_ident(pkt: &Packet, msg: &Msg) -> u32 {
    if pkt.transport == IPPROTO_TCP {
        pkt.tcp_seq
    } else if msg.flags & HB_SYNTHETIC_SEQ != 0 {
        pkt.payload_len as u32
    } else {
        msg.seq
    }
}

/// Everything after decoding on a known association: flow state, findings, records.
/// Out of line so its stack frame does not add to the packet-reading temporaries above
/// it (512-byte BPF stack). Returns a `Seen::*` verdict.
#[inline(never)]
fn on_message<E: Env>(env: &mut E, pkt: &Packet, msg: &Msg, at: &mut Seen) -> u8 {
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
            if env.with_flow(&key, |st| st.holding()) == Some(true) {
                flush_held(env, &key, at);
            }
            emit_finding(env, at, &key, pkt.dscp, &params);
            return Seen::NOT_HEARTBEAT;
        }
        None => {
            if !is_tcp {
                env.count(Counter::NotHeartbeat);
            }
            return Seen::NOT_HEARTBEAT;
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
    // Whether userspace knows the association (a duplicate frame then turns `beat` into
    // a `Duplicate` record: one Finding less on the 512-byte BPF stack).
    let mut announced = true;
    // What became of a routine heartbeat (`HOLD_*`), and whether beats are held that
    // must go up before any record about the association.
    let holds = params.flags & P_HOLD_ROUTINE != 0;
    at.set_verdict(0);
    let verdict = &mut *at;
    let update = |st: &mut FlowState| {
        announced = st.flags & F_ANNOUNCED != 0;
        if let Some(since) = st.duplicate(pkt.ip_id, frame_ident(pkt, msg), from_orig, now) {
            beat.kind = EventKind::Duplicate;
            beat.seq = st.last_seq;
            beat.aux = hb.role as u32;
            beat.value = since;
            if holds {
                let mut v = 0;
                if announced && st.calm > CALM_AFTER {
                    v = st.hold(now, since, beat.seq, hb.role as u16 | HELD_DUPLICATE);
                }
                if st.holding() {
                    v |= V_HOLDING;
                }
                verdict.set_verdict(v);
            }
            return Findings::default();
        }
        let seen = if is_tcp {
            st.on_tcp(pkt, from_orig, now)
        } else {
            TcpSeen::default()
        };
        let responses = st.responses;
        let prev_interval = st.interval_ns;
        let mut out = st.update(&hb, now, &params, seen.retransmission);
        if !announced {
            // A candidate: nothing goes up until its traffic looks like heartbeats.
            out = Findings::default();
            if st.flags & F_FOREIGN == 0 && st.confirm(&hb, pkt.payload_len, prev_interval, &params)
            {
                st.flags |= F_ANNOUNCED;
                out.push(EventKind::AssociationSeen, st.last_seq, hb.role as u32, 0);
                st.check_dscp(pkt.dscp, from_orig, &params, &mut out);
            }
            return out;
        }
        st.check_dscp(pkt.dscp, from_orig, &params, &mut out);
        beat.seq = st.last_seq;
        beat.value = st.beat_ns;
        beat.aux = hb.role as u32;
        // Paired even with a round trip of 0: a capture's clock may put the answer in its
        // request's microsecond (pcap), or stamp a batch of frames alike.
        if st.responses != responses {
            beat.aux |= BEAT_PAIRED;
        } else if st.beat_ns != 0 {
            beat.aux |= BEAT_INTERVAL;
        }
        if holds {
            let mut v = 0;
            if !out.is_empty() {
                st.calm = 0;
            } else if st.routine(hb.role, beat.aux, prev_interval, &params) {
                v = st.hold(now, beat.value, beat.seq, beat.aux as u16);
            }
            if st.holding() {
                v |= V_HOLDING;
            }
            verdict.set_verdict(v);
        }
        out
    };
    let Some(findings) = env.with_flow(&key, update) else {
        // A response for an association never seen has nothing to pair with.
        return if hb.role == Role::Response {
            Seen::HEARTBEAT
        } else {
            Seen::UNKNOWN
        };
    };
    let v = at.verdict();
    if beat.kind == EventKind::Duplicate {
        env.count(Counter::Duplicates);
    }
    let closes = is_tcp && pkt.tcp_flags & (TCP_FIN | TCP_RST) != 0;
    if v & (V_HELD | V_FULL) != 0 {
        env.count(Counter::Held);
        if v & V_FULL != 0 {
            // Held by the caller, from this scratch memory (`hold_with_room`).
            at.key = key;
            at.beat = beat;
            return Seen::HOLD_FULL;
        }
        return if closes && beat.kind != EventKind::Duplicate {
            Seen::CLOSED
        } else {
            Seen::HEARTBEAT
        };
    }
    let mut findings = findings;
    if beat.kind == EventKind::Duplicate {
        if !announced {
            return Seen::HEARTBEAT;
        }
    } else if !announced {
        env.count(Counter::Unconfirmed);
        // Nothing of a candidate's heartbeat goes up but its announcement.
        beat.aux = 0;
    }
    if beat.kind != EventKind::Duplicate && beat.aux == 0 && findings.is_empty() {
        return if closes {
            Seen::CLOSED
        } else {
            Seen::HEARTBEAT
        };
    }
    if beat.kind == EventKind::Duplicate {
        findings = Findings::default();
    }
    // Emitted by the caller, from this scratch memory (`emit_records`).
    at.key = key;
    at.findings = findings;
    at.beat = beat;
    Seen::EMIT
}

/// Sends up what [`on_message`] left in `at`: the association's held beats first, if
/// any (they came before), then the findings and the heartbeat's record. Read back from
/// map memory, so verified about once, not once per way through `on_message`. Returns
/// whether the packet also ends a TCP session.
#[inline(never)]
fn emit_records<E: Env>(env: &mut E, pkt: &Packet, at: &Seen) -> bool {
    let key = at.key;
    if at.verdict() & V_HOLDING != 0 {
        flush_held(env, &key, at);
    }
    at.findings
        .for_each(|f| emit_finding(env, at, &key, pkt.dscp, f));
    let beat = at.beat;
    let duplicate = beat.kind == EventKind::Duplicate;
    if duplicate || beat.aux != 0 {
        emit_finding(env, at, &key, pkt.dscp, &beat);
    }
    !duplicate && pkt.transport == IPPROTO_TCP && pkt.tcp_flags & (TCP_FIN | TCP_RST) != 0
}

/// A routine heartbeat (`at.beat`) whose association's hold is full: room is made from
/// what userspace took (`ACKS`), else by sending the hold up, and the beat is held.
/// Returns whether the packet also ends a TCP session.
#[inline(never)]
fn hold_with_room<E: Env>(env: &mut E, pkt: &Packet, at: &Seen) -> bool {
    let (key, beat) = (&at.key, &at.beat);
    let closes = beat.kind != EventKind::Duplicate
        && pkt.transport == IPPROTO_TCP
        && pkt.tcp_flags & (TCP_FIN | TCP_RST) != 0;
    let ack = env.held_ack(key);
    let full = env.with_flow(key, |st| {
        if let Some(a) = ack {
            st.acked(a);
        }
        st.hold(at.now, beat.value, beat.seq, held_aux(beat)) == HOLD_FULL
    });
    if full != Some(true) {
        return closes;
    }
    flush_held(env, key, at);
    if env.with_flow(key, |st| {
        st.hold(at.now, beat.value, beat.seq, held_aux(beat))
    }) != Some(HOLD_DONE)
    {
        // The hold could not go up (ring buffer full): this beat is lost with it.
        env.count(Counter::RingbufLost);
    }
    closes
}

/// A held beat's `aux`: the record's, or a duplicate's mark.
#[inline(always)]
fn held_aux(beat: &Finding) -> u16 {
    if beat.kind == EventKind::Duplicate {
        beat.aux as u16 | HELD_DUPLICATE
    } else {
        beat.aux as u16
    }
}

/// Sends the association's held beats up (a `Beats` record), before a record about it.
#[inline(never)]
fn flush_held<E: Env>(env: &mut E, key: &FlowKey, at: &Seen) {
    let header = |ev: &mut RawEvent| {
        ev.ts_ns = at.now;
        ev.value = 0;
        ev.key = *key;
        ev.ifindex = at.ifindex;
        ev.kind = EventKind::Beats as u8;
        ev.dscp = 0;
        ev._pad = [0; 2];
    };
    if !env.emit_held(key, header) {
        env.count(Counter::RingbufLost);
    }
}

/// The first heartbeat (a request or one-way) of an association not in the table:
/// inserted, and announced at once where one heartbeat is signature enough
/// (`ProtoParams::confirm_beats`). Out of line: its findings stay off `on_message`'s
/// stack frame.
#[inline(never)]
fn new_association<E: Env>(env: &mut E, pkt: &Packet, msg: &Msg, at: &Seen) {
    let Some(hb) = msg.as_heartbeat() else {
        return;
    };
    let (proto, now) = (at.proto, at.now);
    let key = FlowKey::of(proto, pkt, hb.role);
    let params = env.params(proto);
    let ident = frame_ident(pkt, msg);
    let mut seen = Findings::default();
    let init = |st: &mut FlowState| {
        st.init(&hb, now);
        st.duplicate(pkt.ip_id, ident, true, now);
        st.confirmed = 1;
        st.probe_len = pkt.payload_len;
        if pkt.transport == IPPROTO_TCP {
            st.on_tcp(pkt, true, now);
        }
        if params.confirm_beats <= 1 {
            st.flags |= F_ANNOUNCED;
            seen.push(EventKind::AssociationSeen, st.last_seq, hb.role as u32, 0);
            st.check_dscp(pkt.dscp, true, &params, &mut seen);
        }
    };
    if !env.insert_flow(&key, init) {
        env.count(Counter::FlowInsertFailed);
        return;
    }
    if params.confirm_beats > 1 {
        env.count(Counter::Unconfirmed);
    }
    seen.for_each(|f| emit_finding(env, at, &key, pkt.dscp, f));
    if pkt.transport == IPPROTO_TCP && pkt.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        tcp_closed(env, pkt, true, at);
    }
}

/// A datagram on a heartbeat port that is no heartbeat: the 5-tuple carries other
/// traffic, so a candidate association on it (either direction) is none.
#[inline(never)]
fn foreign_datagram<E: Env>(env: &mut E, pkt: &Packet, proto: Protocol) {
    let mark = |st: &mut FlowState| {
        if st.flags & F_ANNOUNCED == 0 {
            st.flags |= F_FOREIGN;
        }
    };
    env.with_flow(&FlowKey::of(proto, pkt, Role::Request), mark);
    env.with_flow(&FlowKey::of(proto, pkt, Role::Response), mark);
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
        tcp_closed(env, pkt, at.to_service, at);
    }
}

/// FIN/RST ends the association: report it once and forget the flow.
/// Out of line: rare, and keeps its record off the hot path's stack frame.
#[inline(never)]
fn tcp_closed<E: Env>(env: &mut E, pkt: &Packet, from_orig: bool, at: &Seen) {
    let role = if from_orig {
        Role::Request
    } else {
        Role::Response
    };
    let key = &FlowKey::of(at.proto, pkt, role);
    let Some((seq, flags, holding)) =
        env.with_flow(key, |st| (st.last_seq, st.flags, st.holding()))
    else {
        return;
    };
    if holding && flags & F_ANNOUNCED != 0 {
        flush_held(env, key, at);
    }
    let closed = Finding {
        kind: EventKind::SessionClosed,
        seq,
        aux: (pkt.tcp_flags & TCP_RST != 0) as u32,
        value: (!from_orig) as u64,
    };
    env.remove_flow(key);
    if flags & F_ANNOUNCED != 0 {
        emit_finding(env, at, key, pkt.dscp, &closed);
    }
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

/// The first fragment of a SIP datagram over UDP: REGISTER/OPTIONS requests and
/// responses go up with the fragment's bytes, and the datagram is remembered so its later
/// fragments follow (`later_fragment`); userspace reassembles.
#[inline(never)]
fn first_fragment<F: Frame, E: Env>(f: &F, env: &mut E, pkt: &Packet, at: &Seen) {
    if sip::start_line(f, pkt).is_none() {
        env.count(Counter::Fragments);
        return;
    }
    env.count(Counter::Heartbeats);
    env.count(Counter::FragmentsPassed);
    let info = FragInfo {
        src_port: pkt.src_port,
        dst_port: pkt.dst_port,
        proto: at.proto as u8,
        _pad: [0; 3],
    };
    env.frag_put(&FragKey::of(pkt), &info);
    let key = FlowKey::of(at.proto, pkt, Role::Request);
    emit_fragment(f, env, pkt, &key, at);
}

/// A later fragment (no ports of its own): goes up if its datagram's first fragment did.
#[inline(never)]
fn later_fragment<F: Frame, E: Env, C: FnOnce() -> u64>(
    f: &F,
    env: &mut E,
    pkt: &Packet,
    clock: C,
    ifindex: u32,
) {
    let Some(info) = env.frag_get(&FragKey::of(pkt)) else {
        env.count(Counter::Fragments);
        return;
    };
    env.count(Counter::FragmentsPassed);
    let at = Seen {
        now: clock(),
        ifindex,
        proto: Protocol::from_u8(info.proto),
        ..Seen::default()
    };
    let mut key = FlowKey::of(at.proto, pkt, Role::Request);
    key.orig_port = info.src_port;
    key.resp_port = info.dst_port;
    emit_fragment(f, env, pkt, &key, &at);
}

/// One fragment's bytes as a `SipRecord` of kind `Fragment` (see `EventKind::Fragment`).
#[inline(always)]
fn emit_fragment<F: Frame, E: Env>(f: &F, env: &mut E, pkt: &Packet, key: &FlowKey, at: &Seen) {
    let frag = Finding {
        kind: EventKind::Fragment,
        seq: pkt.ip_id,
        aux: 0,
        value: pkt.frag as u64,
    };
    // The first fragment's bytes start at its UDP header (the datagram's length): every
    // fragment's offset then counts from the same place.
    let (mut off, mut len) = (pkt.payload_off as usize, pkt.payload_len as usize);
    if pkt.frag & FRAG_FIRST != 0 {
        off -= 8;
        len += 8;
    }
    let header = |ev: &mut RawEvent| fill(ev, at, key, pkt.dscp, &frag);
    if !env.emit_payload(header, f, off, len) {
        env.count(Counter::RingbufLost);
    }
}
