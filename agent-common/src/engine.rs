//! The per-packet pipeline: parse -> port table -> decode -> flow transition -> records.
//! The kernel and the offline engine differ only in their [`Env`].

use crate::counters::Counter;
use crate::event::{EventKind, RawEvent};
use crate::flow::{Findings, FlowKey, FlowState};
use crate::frame::Frame;
use crate::params::ProtoParams;
use crate::parse::parse;
use crate::proto::{decode, port_slot, Protocol, Role};

/// What the pipeline needs from where it runs: maps in the kernel, collections offline.
pub trait Env {
    /// Protocol id at a port-table slot (0 = none).
    fn port_proto(&self, slot: u32) -> u8;
    fn params(&self, proto: Protocol) -> ProtoParams;
    /// Runs `f` on the association's state in place; `None` if it is not known.
    fn with_flow<R, U: FnOnce(&mut FlowState) -> R>(&mut self, key: &FlowKey, f: U) -> Option<R>;
    /// Inserts a new association; `false` if the table refused it.
    fn insert_flow(&mut self, key: &FlowKey, state: &FlowState) -> bool;
    /// Pushes a record to userspace; `false` if it was lost.
    fn emit(&mut self, ev: &RawEvent) -> bool;
    fn count(&mut self, c: Counter);
}

/// Processes one frame seen at `now` (ns) on `ifindex`.
#[inline(always)]
pub fn process<F: Frame, E: Env>(f: &F, env: &mut E, now: u64, ifindex: u32) {
    env.count(Counter::Packets);
    let pkt = match parse(f) {
        Ok(p) => p,
        Err(skip) => {
            if let Some(c) = skip.counter() {
                env.count(c);
            }
            return;
        }
    };
    // Requests go to the well-known port; responses come from it.
    let mut proto = Protocol::from_u8(env.port_proto(port_slot(pkt.transport, pkt.dst_port)));
    if proto == Protocol::None {
        proto = Protocol::from_u8(env.port_proto(port_slot(pkt.transport, pkt.src_port)));
    }
    if proto == Protocol::None {
        return;
    }
    env.count(Counter::PortMatched);
    let Some(hb) = decode(proto, f, &pkt) else {
        env.count(Counter::NotHeartbeat);
        return;
    };
    env.count(Counter::Heartbeats);
    let key = FlowKey::of(proto, &pkt, hb.role);
    let params = env.params(proto);
    let findings = match env.with_flow(&key, |st| st.update(&hb, now, &params)) {
        Some(found) => found,
        None => {
            // A response for an association never seen has nothing to pair with.
            if hb.role == Role::Response {
                return;
            }
            if !env.insert_flow(&key, &FlowState::new(&hb, now)) {
                env.count(Counter::FlowInsertFailed);
                return;
            }
            let mut seen = Findings::default();
            seen.push(EventKind::AssociationSeen, hb.seq, 0, 0);
            seen
        }
    };
    // Bounded: Findings holds at most two.
    for item in findings.items {
        let Some(found) = item else { continue };
        let ev = RawEvent {
            ts_ns: now,
            value: found.value,
            key,
            seq: found.seq,
            aux: found.aux,
            ifindex,
            kind: found.kind as u8,
            dscp: pkt.dscp,
            _pad: [0; 2],
        };
        if !env.emit(&ev) {
            env.count(Counter::RingbufLost);
        }
    }
}
