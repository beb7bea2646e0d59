//! GED-125 between an ICM VRU PIM (TCP client) and the CVP Call Server on 5000
//! (PROTOCOLS.md §1): handshake, OPEN_REQ (InvokeID, VersionNumber, IdleTimeout ms) /
//! OPEN_CONF, then HEARTBEAT_REQ every interval with an incrementing InvokeID, answered
//! by HEARTBEAT_CONF echoing it, and the PIM's delayed bare ACK (seed capture).

use hbwatch_common::proto::{ged125, Protocol, Role};

use super::keepalive::{self, delayed_ack, ends_session, Keepalive, Link, Session};
use super::rng::Rng;
use super::scenario::{Fault, Model};
use super::truth::Cause;
use super::{ModelCtx, Out, MS};

pub const OPEN_CONF: u32 = 4;

/// OPEN_REQ: InvokeID, VersionNumber, IdleTimeout (ms), all u32 BE.
pub fn open_req(invoke_id: u32, version: u32, idle_timeout_ms: u32) -> Vec<u8> {
    words(&[12, ged125::OPEN_REQ, invoke_id, version, idle_timeout_ms])
}

/// OPEN_CONF: InvokeID and the five feature booleans (Wireshark's layout).
pub fn open_conf(invoke_id: u32) -> Vec<u8> {
    // UseEventFeed, UsePolledFeed, UseCallRouting, UseTimeSynch, UseServiceControl.
    words(&[24, OPEN_CONF, invoke_id, 1, 0, 1, 1, 1])
}

fn words(w: &[u32]) -> Vec<u8> {
    w.iter().flat_map(|x| x.to_be_bytes()).collect()
}

pub(crate) fn generate(ctx: &ModelCtx, model: &Model, rng: &mut Rng, out: &mut Out) {
    let Model::Ged125 {
        pim,
        cvp,
        interval_ns: interval,
        idle_timeout_ms,
        version,
        invoke_id,
    } = model.clone()
    else {
        return;
    };
    let mut pim_session = Pim {
        invoke: invoke_id.unwrap_or_else(|| rng.u32()),
        version,
        idle_timeout_ms,
    };
    let mut port = if pim.port != 0 {
        pim.port
    } else {
        rng.ephemeral_port()
    };
    let mut ends: Vec<&Fault> = ctx.faults.list.iter().filter(|f| ends_session(f)).collect();
    let mut connect_at = ctx.start;
    let mut session = 0;
    while connect_at < out.duration_ns {
        session += 1;
        let link = Link {
            ctx,
            protocol: Protocol::Ged125,
            client: super::Ep::new(pim.ip, port),
            server: cvp,
            backup: false,
            interval,
            part: &format!("session {session}"),
        };
        let next = keepalive::run(&mut pim_session, &link, rng, out, &mut ends, connect_at);
        port = rng.ephemeral_port();
        match next {
            Some(t) => connect_at = t,
            None => break,
        }
    }
}

/// The VRU PIM's side: OPEN_REQ/OPEN_CONF, then HEARTBEAT_REQ/CONF with an InvokeID
/// one higher each time (a new random one after a restart).
struct Pim {
    invoke: u32,
    version: u32,
    idle_timeout_ms: u32,
}

impl Keepalive for Pim {
    const LABELS: [&'static str; 3] = [
        "ged125.heartbeat_req",
        "ged125.heartbeat_conf",
        "ged125.heartbeat_req_retransmission",
    ];
    // CVP's TCP stack acknowledges a HEARTBEAT_REQ its application leaves unanswered.
    const SILENT_ACK_FROM_REQUEST: bool = true;

    fn open(&mut self, s: &mut Session, out: &mut Out, rng: &mut Rng, opened: u64) -> u64 {
        let t = opened + 2 * MS;
        let (dc, ds) = s.dscp_pair(t);
        let req = open_req(self.invoke, self.version, self.idle_timeout_ms);
        s.conn.send(out, t, true, dc, &req, "ged125.open_req", true);
        let conf = open_conf(self.invoke);
        s.conn
            .send(out, t + s.rtt, false, ds, &conf, "ged125.open_conf", true);
        s.conn
            .ack(out, t + s.rtt + delayed_ack(rng), true, dc, true);
        self.invoke = self.invoke.wrapping_add(1);
        t
    }

    fn request(&self) -> Vec<u8> {
        ged125::message(Role::Request, self.invoke).to_vec()
    }

    fn response(&self) -> Option<Vec<u8>> {
        Some(ged125::message(Role::Response, self.invoke).to_vec())
    }

    fn id(&self) -> Option<u32> {
        Some(self.invoke)
    }

    fn next(&mut self) {
        self.invoke = self.invoke.wrapping_add(1);
    }

    fn restart(&mut self, s: &mut Session, out: &mut Out, rng: &mut Rng, at: u64, f: &Fault) {
        // The PIM process exits (its OS closes the socket), then comes back with new
        // InvokeIDs on a new port.
        let d = s.dscp_pair(at);
        s.conn.fin(out, at, true, s.rtt, d);
        s.tr.closed(&mut out.truth, at, false, true, Some(Cause::of(f)));
        self.invoke = rng.u32();
    }
}
