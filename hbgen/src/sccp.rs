//! SCCP (Skinny) between a Cisco IP phone and CUCM on TCP 2000 (PROTOCOLS.md §2), all
//! little-endian with header version 0x16: the phone registers with its primary CUCM
//! (Register / RegisterAck announcing the keepalive intervals), sends KeepAlive every
//! 30 s answered by KeepAliveAck; to its backup CUCM it sends KeepAlive every 60 s,
//! answered only by TCP ACKs (healthy, Cisco 200410).

use hbwatch_common::proto::{sccp, Protocol, Role};

use super::keepalive::{self, ends_session, Keepalive, Link, Session};
use super::rng::Rng;
use super::scenario::{Fault, Model};
use super::truth::Cause;
use super::{Ep, ModelCtx, Out, MS};

pub const REGISTER: u32 = 0x0001;
const SEC: u64 = 1_000_000_000;

fn message(header_version: u32, id: u32, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(12 + body.len());
    m.extend_from_slice(&(4 + body.len() as u32).to_le_bytes());
    m.extend_from_slice(&header_version.to_le_bytes());
    m.extend_from_slice(&id.to_le_bytes());
    m.extend_from_slice(body);
    m
}

/// KeepAlive (request) or KeepAliveAck (response), 12 bytes, no body.
pub fn keepalive(header_version: u32, role: Role) -> Vec<u8> {
    let id = if role == Role::Response {
        sccp::KEEPALIVE_ACK
    } else {
        sccp::KEEPALIVE
    };
    message(header_version, id, &[])
}

/// Register: station identity, address, device type and stream counts.
pub fn register(header_version: u32, device: &str, ip: std::net::IpAddr) -> Vec<u8> {
    let mut b = Vec::new();
    let mut name = [0u8; 16];
    let n = device.len().min(15);
    name[..n].copy_from_slice(&device.as_bytes()[..n]);
    b.extend_from_slice(&name);
    b.extend_from_slice(&0u32.to_le_bytes()); // reserved
    b.extend_from_slice(&1u32.to_le_bytes()); // instance
    let v4 = match ip {
        std::net::IpAddr::V4(v4) => v4.octets(),
        std::net::IpAddr::V6(_) => [0; 4],
    };
    b.extend_from_slice(&v4); // stationIpAddr (network order, as phones send it)
    b.extend_from_slice(&437u32.to_le_bytes()); // deviceType: 7975
    b.extend_from_slice(&5u32.to_le_bytes()); // maxStreams
    b.extend_from_slice(&0u32.to_le_bytes()); // activeStreams
    b.extend_from_slice(&[0x16, 0, 0x72, 0x85]); // protocolVer, unknown, phoneFeatures
    b.extend_from_slice(&4u32.to_le_bytes()); // maxConferences
    b.extend_from_slice(&0u32.to_le_bytes()); // activeConferences
    message(header_version, REGISTER, &b)
}

/// RegisterAck: keepAliveInterval (s), dateTemplate, padding, secondaryKeepAliveInterval
/// (s), maxProtocolVer, unknown, phoneFeatures.
pub fn register_ack(header_version: u32, keepalive_s: u32, secondary_s: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&keepalive_s.to_le_bytes());
    b.extend_from_slice(b"M/D/YA");
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&secondary_s.to_le_bytes());
    b.extend_from_slice(&[0x16, 0, 0, 0]);
    message(header_version, sccp::REGISTER_ACK, &b)
}

pub(crate) fn generate(ctx: &ModelCtx, model: &Model, rng: &mut Rng, out: &mut Out) {
    let Model::Sccp {
        phone,
        primary,
        backup,
        keepalive_s,
        secondary_keepalive_s,
        header_version,
        ref device,
    } = *model
    else {
        return;
    };
    let phone = Phone {
        phone,
        header_version,
        device: device.clone(),
        keepalive_s,
        secondary_keepalive_s,
    };
    phone.run(ctx, rng, out, primary, false, ctx.start);
    if let Some(backup) = backup {
        // Phones connect to the backup a little after registering with the primary.
        let start = ctx.start + rng.range(500 * MS, 2000 * MS);
        phone.run(ctx, rng, out, backup, true, start);
    }
}

struct Phone {
    phone: Ep,
    header_version: u32,
    device: String,
    keepalive_s: u32,
    secondary_keepalive_s: u32,
}

impl Phone {
    /// One CUCM connection (and its reconnections) from `start`.
    fn run(
        &self,
        ctx: &ModelCtx,
        rng: &mut Rng,
        out: &mut Out,
        cucm: Ep,
        backup: bool,
        start: u64,
    ) {
        let interval = if backup {
            self.secondary_keepalive_s
        } else {
            self.keepalive_s
        } as u64
            * SEC;
        let mut ends: Vec<&Fault> = ctx
            .faults
            .list
            .iter()
            .filter(|f| f.backup == backup && ends_session(f))
            .collect();
        let mut port = if self.phone.port != 0 {
            self.phone.port.wrapping_add(u16::from(backup))
        } else {
            rng.ephemeral_port()
        };
        let mut session = ToCucm {
            header_version: self.header_version,
            device: &self.device,
            phone_ip: self.phone.ip,
            keepalive_s: self.keepalive_s,
            secondary_keepalive_s: self.secondary_keepalive_s,
            backup,
        };
        let mut connect_at = start;
        while connect_at < out.duration_ns {
            let link = Link {
                ctx,
                protocol: Protocol::Sccp,
                client: Ep::new(self.phone.ip, port),
                server: cucm,
                backup,
                interval,
                part: if backup { "backup" } else { "primary" },
            };
            let next = keepalive::run(&mut session, &link, rng, out, &mut ends, connect_at);
            port = rng.ephemeral_port();
            match next {
                Some(t) => connect_at = t,
                None => break,
            }
        }
    }
}

/// The phone's side of one CUCM connection: Register/RegisterAck with the primary,
/// then KeepAlive/KeepAliveAck; to a backup only KeepAlives, which it TCP-ACKs.
struct ToCucm<'a> {
    header_version: u32,
    device: &'a str,
    phone_ip: std::net::IpAddr,
    keepalive_s: u32,
    secondary_keepalive_s: u32,
    backup: bool,
}

impl Keepalive for ToCucm<'_> {
    const LABELS: [&'static str; 3] = [
        "sccp.keepalive",
        "sccp.keepalive_ack",
        "sccp.keepalive_retransmission",
    ];
    const SILENT_ACK_FROM_REQUEST: bool = false;

    fn open(&mut self, s: &mut Session, out: &mut Out, _rng: &mut Rng, opened: u64) -> u64 {
        let mut t = opened;
        if !self.backup {
            t += 5 * MS;
            let hv = self.header_version;
            let (dp, dc) = s.dscp_pair(t);
            let reg = register(hv, self.device, self.phone_ip);
            s.conn.send(out, t, true, dp, &reg, "sccp.register", true);
            let ack = register_ack(hv, self.keepalive_s, self.secondary_keepalive_s);
            s.conn.send(
                out,
                t + s.rtt + MS,
                false,
                dc,
                &ack,
                "sccp.register_ack",
                true,
            );
            s.conn.ack(out, t + s.rtt + 40 * MS, true, dp, true);
        }
        t
    }

    fn request(&self) -> Vec<u8> {
        keepalive(self.header_version, Role::Request)
    }

    fn response(&self) -> Option<Vec<u8>> {
        (!self.backup).then(|| keepalive(self.header_version, Role::Response))
    }

    fn restart(&mut self, s: &mut Session, _out: &mut Out, _rng: &mut Rng, _at: u64, f: &Fault) {
        // The phone reboots: no FIN; the old session just goes quiet (the truth
        // expects missed/down on it) and a new one opens.
        s.tr.hidden(Cause::of(f));
    }
}
