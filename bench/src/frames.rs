//! Frames the benchmarks feed the datapath and write into the capture.

use std::net::IpAddr;

use hbgen::frame::{FrameSpec, Tcp};
use hbwatch_common::proto::{ged125, rudp, sccp, Role};

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("valid address literal")
}

/// An RUDP heartbeat marked EF, as CS1000 sends it.
pub fn rudp(src: IpAddr, dst: IpAddr, seq: u32, role: Role, vlans: &[u16]) -> Vec<u8> {
    rudp_with_id(src, dst, seq, role, vlans, 1)
}

/// [`rudp`] with this IPv4 identification: two sends of one message differ in it, two
/// copies of one send (a mirror port) do not.
pub fn rudp_with_id(
    src: IpAddr,
    dst: IpAddr,
    seq: u32,
    role: Role,
    vlans: &[u16],
    ip_id: u16,
) -> Vec<u8> {
    let mut f = FrameSpec::udp(src, 15000, dst, 15000, &rudp::payload(seq, role));
    f.dscp = 46;
    f.vlans = vlans.to_vec();
    f.ip_id = ip_id;
    f.build()
}

pub fn udp(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, len: usize, vlans: &[u16]) -> Vec<u8> {
    let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
    let mut f = FrameSpec::udp(src, sport, dst, dport, &payload);
    f.vlans = vlans.to_vec();
    f.build()
}

/// A TCP segment (PSH+ACK when it carries data, else a bare ACK).
pub fn tcp(
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
    seq: u32,
    payload: &[u8],
    vlans: &[u16],
) -> Vec<u8> {
    let mut f = FrameSpec::udp(src, sport, dst, dport, payload);
    f.tcp = Some(Tcp {
        seq,
        ack: 1,
        flags: if payload.is_empty() { 0x10 } else { 0x18 },
        window: 501,
    });
    f.vlans = vlans.to_vec();
    f.build()
}

/// A GED-125 HEARTBEAT_REQ (PIM -> CVP port 5000) or CONF (back) on TCP.
pub fn ged125(pim: IpAddr, cvp: IpAddr, sport: u16, tcp_seq: u32, role: Role, id: u32) -> Vec<u8> {
    let msg = ged125::message(role, id);
    match role {
        Role::Response => tcp(cvp, 5000, pim, sport, tcp_seq, &msg, &[]),
        _ => tcp(pim, sport, cvp, 5000, tcp_seq, &msg, &[]),
    }
}

/// An SCCP KeepAlive (phone -> CUCM port 2000) or KeepAliveAck (back) on TCP.
pub fn sccp(phone: IpAddr, cucm: IpAddr, sport: u16, tcp_seq: u32, role: Role) -> Vec<u8> {
    let msg = sccp::message(role);
    match role {
        Role::Response => tcp(cucm, 2000, phone, sport, tcp_seq, &msg, &[]),
        _ => tcp(phone, sport, cucm, 2000, tcp_seq, &msg, &[]),
    }
}

/// The `i`-th address of a /8-sized IPv4 block starting at `first.0.0.0` (never .0/.255).
pub fn nth_v4(first: u8, i: u32) -> IpAddr {
    let host = i % 250 + 1;
    let rest = i / 250;
    IpAddr::from([
        first.wrapping_add((rest >> 16) as u8),
        (rest >> 8) as u8,
        rest as u8,
        host as u8,
    ])
}
