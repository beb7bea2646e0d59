//! Second implementations, written from PROTOCOLS.md on byte slices (not the
//! `Frame` reads the kernel needs), to compare the real code against. A difference is
//! a bug in one of the two; the fuzzer finds which inputs tell them apart.

use hbwatch_common::parse::{Packet, Skip, AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP};
use hbwatch_common::proto::{
    ged125, mgcp, rudp, sccp, Heartbeat, Msg, Role, HB_BYTE_ORDER_UNKNOWN, HB_RESTART,
    HB_RESTART_HOW_SHIFT, HB_SYNTHETIC_SEQ,
};

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// L2-L4 as PROTOCOLS.md and the parse module's contract describe it: up to two VLAN
/// tags, IPv4 (options, no fragments of any kind) or IPv6 without extension headers but
/// an atomic Fragment header, UDP/TCP with lengths from the headers, never from the
/// frame length; the IP id (IPv4, or the Fragment header's).
pub fn parse(f: &[u8]) -> Result<Packet, Skip> {
    use Skip::*;
    let mut p = Packet::default();
    let mut at = 12;
    let mut ethertype = be16(f, at).ok_or(Truncated)?;
    at += 2;
    for _ in 0..2 {
        if ethertype != 0x8100 && ethertype != 0x88a8 {
            break;
        }
        be16(f, at).ok_or(Truncated)?;
        ethertype = be16(f, at + 2).ok_or(Truncated)?;
        at += 4;
    }
    let l4_end = match ethertype {
        0x0800 => {
            let ip = f.get(at..).unwrap_or_default();
            let first = *ip.first().ok_or(Truncated)?;
            if first >> 4 != 4 {
                return Err(Malformed);
            }
            let ihl = (first & 15) as usize * 4;
            if ihl < 20 {
                return Err(Malformed);
            }
            if ip.len() < 20 {
                return Err(Truncated);
            }
            let total = be16(ip, 2).ok_or(Truncated)? as usize;
            if total < ihl {
                return Err(Malformed);
            }
            if ip.len() < ihl {
                return Err(Truncated);
            }
            // More-fragments or a fragment offset: not a whole datagram.
            if be16(ip, 6).ok_or(Truncated)? & 0x3fff != 0 {
                return Err(Fragment);
            }
            p.family = AF_INET;
            p.ip_id = be16(ip, 4).ok_or(Truncated)? as u32;
            p.dscp = ip[1] >> 2;
            p.transport = ip[9];
            p.src[..4].copy_from_slice(&ip[12..16]);
            p.dst[..4].copy_from_slice(&ip[16..20]);
            let end = at + total;
            at += ihl;
            end
        }
        0x86dd => {
            let ip = f.get(at..at + 40).ok_or(Truncated)?;
            if ip[0] >> 4 != 6 {
                return Err(Malformed);
            }
            p.family = AF_INET6;
            p.dscp = (((ip[0] & 15) << 4) | (ip[1] >> 4)) >> 2;
            p.transport = ip[6];
            p.src.copy_from_slice(&ip[8..24]);
            p.dst.copy_from_slice(&ip[24..40]);
            let end = at + 40 + be16(ip, 4).ok_or(Truncated)? as usize;
            at += 40;
            if p.transport == 44 {
                let fh = f.get(at..at + 8).ok_or(Truncated)?;
                p.transport = fh[0];
                let frag = be16(fh, 2).unwrap() & 0xfff9;
                p.ip_id = be32(fh, 4).unwrap();
                at += 8;
                if at > end {
                    return Err(Malformed);
                }
                // Offset or More Fragments: not a whole datagram.
                if frag != 0 {
                    return Err(Fragment);
                }
            }
            match p.transport {
                IPPROTO_TCP | IPPROTO_UDP => {}
                0 | 43 | 44 | 60 => return Err(Unparsed),
                _ => return Err(NotInteresting),
            }
            end
        }
        0x8100 | 0x88a8 => return Err(Unparsed),
        _ => return Err(NotInteresting),
    };
    let l4 = f.get(at..).unwrap_or_default();
    match p.transport {
        IPPROTO_UDP => {
            if l4.len() < 8 {
                return Err(Truncated);
            }
            p.src_port = be16(l4, 0).unwrap();
            p.dst_port = be16(l4, 2).unwrap();
            let len = be16(l4, 4).unwrap() as usize;
            if len < 8 || at + len > l4_end {
                return Err(Malformed);
            }
            p.payload_off = (at + 8) as u16;
            p.payload_len = (len - 8) as u16;
        }
        IPPROTO_TCP => {
            if l4.len() < 20 {
                return Err(Truncated);
            }
            p.src_port = be16(l4, 0).unwrap();
            p.dst_port = be16(l4, 2).unwrap();
            p.tcp_seq = be32(l4, 4).unwrap();
            p.tcp_flags = l4[13];
            let doff = (l4[12] >> 4) as usize * 4;
            if doff < 20 || at + doff > l4_end {
                return Err(Malformed);
            }
            p.payload_off = (at + doff) as u16;
            p.payload_len = (l4_end - at - doff) as u16;
        }
        _ => return Err(NotInteresting),
    }
    Ok(p)
}

/// The payload a decoder may look at: `None` when the frame does not hold all of it
/// (then the decoder may only fail or agree with the bytes that are there).
pub fn payload<'a>(frame: &'a [u8], pkt: &Packet) -> Option<&'a [u8]> {
    let lo = pkt.payload_off as usize;
    frame.get(lo..lo + pkt.payload_len as usize)
}

/// CS1000 RUDP: exactly 6 bytes, `u32 BE seq` + flag 0x02FF (originator) / 0x0100 (echo).
pub fn rudp(pkt: &Packet, p: &[u8]) -> Option<Msg> {
    if pkt.transport != IPPROTO_UDP || p.len() != 6 {
        return None;
    }
    let role = match be16(p, 4)? {
        rudp::FLAG_ORIGINATE => Role::Request,
        rudp::FLAG_RESPOND => Role::Response,
        _ => return None,
    };
    Some(Msg::heartbeat(Heartbeat::new(role, be32(p, 0)?)))
}

/// MDS: exactly one DWORD, byte order left to the association.
pub fn mds(pkt: &Packet, p: &[u8]) -> Option<Msg> {
    if pkt.transport != IPPROTO_UDP || p.len() != 4 {
        return None;
    }
    let mut hb = Heartbeat::new(Role::OneWay, be32(p, 0)?);
    hb.flags = HB_BYTE_ORDER_UNKNOWN;
    Some(Msg::heartbeat(hb))
}

/// IPMG: any non-empty UDP datagram is a beat.
pub fn ipmg(pkt: &Packet, p: &[u8]) -> Option<Msg> {
    if pkt.transport != IPPROTO_UDP || p.is_empty() {
        return None;
    }
    // An RTCP header (V=2, PT 200-204, length within the datagram) is no beat.
    if p.len() >= 8
        && p[0] >> 6 == 2
        && (200..=204).contains(&p[1])
        && (be16(p, 2).unwrap() as usize + 1) * 4 <= p.len()
    {
        return None;
    }
    let mut hb = Heartbeat::new(Role::OneWay, 0);
    hb.flags = HB_SYNTHETIC_SEQ;
    Some(Msg::heartbeat(hb))
}

/// GED-125: the first HEARTBEAT_REQ/CONF or OPEN_REQ among the segment's first four
/// messages; a length longer than the segment ends the walk.
pub fn ged125(pkt: &Packet, p: &[u8]) -> Option<Msg> {
    if pkt.transport != IPPROTO_TCP {
        return None;
    }
    let mut rest = p;
    for _ in 0..ged125::MAX_MESSAGES {
        let len = be32(rest, 0)? as usize;
        let ty = be32(rest, 4)?;
        if len > p.len() {
            return None;
        }
        let body = rest.get(8..).unwrap_or_default();
        match ty {
            ged125::HEARTBEAT_REQ | ged125::HEARTBEAT_CONF if len == 4 && body.len() >= 4 => {
                let role = if ty == ged125::HEARTBEAT_REQ {
                    Role::Request
                } else {
                    Role::Response
                };
                return Some(Msg::heartbeat(Heartbeat::new(role, be32(body, 0)?)));
            }
            ged125::OPEN_REQ if len >= 12 && body.len() >= 12 => {
                return Some(Msg::params(Role::Request, be32(body, 8)?, 0));
            }
            _ => {}
        }
        rest = rest.get(8 + len..)?;
    }
    None
}

/// SCCP: little-endian; KeepAlive / KeepAliveAck (12 bytes, no body), RegisterAck's
/// keepalive intervals; at most four messages, each length checked against the segment.
pub fn sccp(pkt: &Packet, p: &[u8]) -> Option<Msg> {
    if pkt.transport != IPPROTO_TCP {
        return None;
    }
    let mut rest = p;
    for _ in 0..sccp::MAX_MESSAGES {
        let len = le32(rest, 0)? as usize;
        let version = le32(rest, 4)?;
        let id = le32(rest, 8)?;
        if len < 4 || len > p.len() || version > 0xff {
            return None;
        }
        if len == 4 && (id == sccp::KEEPALIVE || id == sccp::KEEPALIVE_ACK) {
            let role = if id == sccp::KEEPALIVE {
                Role::Request
            } else {
                Role::Response
            };
            let mut hb = Heartbeat::new(role, 0);
            hb.flags = HB_SYNTHETIC_SEQ;
            return Some(Msg::heartbeat(hb));
        }
        // data_length counts the message id: the body is len - 4 bytes after it.
        let body = rest.get(12..8 + len);
        if let Some(body) = body.filter(|_| id == sccp::REGISTER_ACK && len >= 20) {
            return Some(Msg::params(Role::Response, le32(body, 0)?, le32(body, 12)?));
        }
        rest = rest.get(8 + len..)?;
    }
    None
}

/// MGCP (PROTOCOLS.md §7): an `NTFY`/`RSIP` command line or a final response (first
/// digit 2-9), keyed by the transaction id after it (1-9 digits, not 0), which a space
/// must follow (a command) or a space, CR, LF or the text's end (a response; NUL ends
/// the text). An RSIP's method is the `RM:` line after the command line, looked for
/// when that line ends in the first whole 8-byte blocks of the first 128 bytes.
pub fn mgcp(pkt: &Packet, p: &[u8]) -> Option<Msg> {
    if pkt.transport != IPPROTO_UDP || p.len() < 6 {
        return None;
    }
    let (role, start) = match &p[..5] {
        b"NTFY " | b"RSIP " => (Role::Request, 5),
        h if h[..3].iter().all(u8::is_ascii_digit) && h[0] >= b'2' && h[3] == b' ' => {
            (Role::Response, 4)
        }
        _ => return None,
    };
    let digits = p[start..]
        .iter()
        .take(9)
        .take_while(|b| b.is_ascii_digit())
        .count();
    let tid: u32 = std::str::from_utf8(&p[start..start + digits])
        .ok()?
        .parse()
        .ok()?;
    let after = p.get(start + digits).copied().unwrap_or(0);
    let ends = match role {
        Role::Request => after == b' ',
        _ => matches!(after, 0 | b' ' | b'\r' | b'\n'),
    };
    if tid == 0 || !ends {
        return None;
    }
    let mut hb = Heartbeat::new(role, tid);
    if p.starts_with(b"RSIP") {
        let searched = &p[..(p.len() / 8 * 8).min(128)];
        let method = searched
            .iter()
            .position(|&b| b == b'\n')
            .and_then(|lf| p.get(lf + 1..lf + 7))
            .filter(|l| l[0] | 0x20 == b'r' && l[1] | 0x20 == b'm' && l[2] == b':')
            .map(|l| match (if l[3] == b' ' { l[4] } else { l[3] }) | 0x20 {
                b'd' => mgcp::RestartMethod::Disconnected,
                b'g' => mgcp::RestartMethod::Graceful,
                b'f' => mgcp::RestartMethod::Forced,
                b'c' => mgcp::RestartMethod::CancelGraceful,
                _ => mgcp::RestartMethod::Restart,
            })
            .unwrap_or(mgcp::RestartMethod::Restart);
        hb.flags = HB_RESTART | ((method as u8) << HB_RESTART_HOW_SHIFT);
    }
    Some(Msg::heartbeat(hb))
}
