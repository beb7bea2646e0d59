//! Ethernet / 802.1Q / QinQ / IPv4 / IPv6 / UDP / TCP parsing.
//!
//! Lengths come from the IP and UDP headers, never from the frame length: short
//! frames are padded to 60 bytes on the wire.

use crate::counters::Counter;
use crate::frame::Frame;
use crate::zero::Zeroable;

pub const ETH_HLEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
/// Outer + inner tag (QinQ); a third tag is left unparsed.
pub const MAX_VLAN_TAGS: usize = 2;

/// IPv4 flags/fragment-offset field: More Fragments, and the offset mask.
const IP_MF: u16 = 0x2000;
const IP_OFFSET: u16 = 0x1fff;

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

/// Address family of a parsed packet.
pub const AF_INET: u8 = 4;
pub const AF_INET6: u8 = 6;

/// What the L2-L4 headers say about a packet. C layout, addresses first and 8-byte
/// aligned: in BPF, copies of the addresses (flow keys) are then 8-byte loads and stores
/// instead of byte or halfword ones.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Packet {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub tcp_seq: u32,
    pub tcp_ack: u32,
    /// Innermost VLAN id, 0 when untagged.
    pub vlan: u16,
    pub src_port: u16,
    pub dst_port: u16,
    /// Offset of the L4 payload from the start of the frame.
    pub payload_off: u16,
    /// L4 payload length per the IP/UDP length fields.
    pub payload_len: u16,
    /// `AF_INET` or `AF_INET6`; IPv4 addresses sit in the first 4 bytes.
    pub family: u8,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub transport: u8,
    /// DSCP of the IP header (IPv4 TOS >> 2, IPv6 traffic class >> 2).
    pub dscp: u8,
    /// TCP flags (0 for UDP).
    pub tcp_flags: u8,
}

// SAFETY: integers and integer arrays only; 8-byte aligned.
unsafe impl Zeroable for Packet {}

/// Why a frame was not parsed to L4; each maps to a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Not IPv4/IPv6, or not TCP/UDP: ordinary traffic, not counted.
    NotInteresting,
    Truncated,
    Malformed,
    Fragment,
    Unparsed,
}

impl Skip {
    pub const fn counter(self) -> Option<Counter> {
        match self {
            Skip::NotInteresting => None,
            Skip::Truncated => Some(Counter::Truncated),
            Skip::Malformed => Some(Counter::Malformed),
            Skip::Fragment => Some(Counter::Fragments),
            Skip::Unparsed => Some(Counter::Unparsed),
        }
    }
}

/// Parses L2 to L4. Only TCP and UDP over IPv4/IPv6 come back as `Ok`.
#[inline(always)]
pub fn parse<F: Frame>(f: &F) -> Result<Packet, Skip> {
    let mut pkt = core::mem::MaybeUninit::uninit();
    Packet::zero(&mut pkt);
    // SAFETY: zero() wrote every byte, and an all-zero Packet is valid.
    let pkt = unsafe { pkt.assume_init_mut() };
    parse_into(f, pkt).map(|()| *pkt)
}

/// [`parse`] into `pkt`. Out of line: in the kernel its header buffers get a stack
/// frame of their own, released before the flow stage runs (the BPF stack is 512
/// bytes for the whole call chain); an out-parameter, because BPF functions may
/// not return pointers to the caller's stack.
#[inline(never)]
pub fn parse_into<F: Frame>(f: &F, pkt: &mut Packet) -> Result<(), Skip> {
    let mut off = 12usize;
    let mut ethertype = f.be16(off).ok_or(Skip::Truncated)?;
    off += 2;
    // Bounded: at most MAX_VLAN_TAGS tags are unwrapped.
    let mut tags = 0;
    while tags < MAX_VLAN_TAGS && (ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD) {
        let tci = f.be16(off).ok_or(Skip::Truncated)?;
        pkt.vlan = tci & 0x0fff;
        ethertype = f.be16(off + 2).ok_or(Skip::Truncated)?;
        off += 4;
        tags += 1;
    }
    let l4_end;
    match ethertype {
        ETH_P_IPV4 => {
            let vihl = f.u8_at(off).ok_or(Skip::Truncated)?;
            if vihl >> 4 != 4 {
                return Err(Skip::Malformed);
            }
            let ihl = ((vihl & 0x0f) as usize) * 4;
            if ihl < 20 {
                return Err(Skip::Malformed);
            }
            let hdr = f.bytes::<20>(off).ok_or(Skip::Truncated)?;
            let total_len = u16::from_be_bytes([hdr[2], hdr[3]]) as usize;
            if total_len < ihl {
                return Err(Skip::Malformed);
            }
            // The whole IP header, options included, must be inside the packet.
            f.u8_at(off + ihl - 1).ok_or(Skip::Truncated)?;
            // A fragment offset, or More Fragments set on the first fragment: the L4
            // header and length describe a datagram this frame holds only part of.
            let frag = u16::from_be_bytes([hdr[6], hdr[7]]);
            if frag & (IP_MF | IP_OFFSET) != 0 {
                return Err(Skip::Fragment);
            }
            pkt.family = AF_INET;
            pkt.dscp = hdr[1] >> 2;
            pkt.transport = hdr[9];
            copy4(&mut pkt.src, [hdr[12], hdr[13], hdr[14], hdr[15]]);
            copy4(&mut pkt.dst, [hdr[16], hdr[17], hdr[18], hdr[19]]);
            l4_end = off + total_len;
            off += ihl;
        }
        ETH_P_IPV6 => {
            let hdr = f.bytes::<40>(off).ok_or(Skip::Truncated)?;
            if hdr[0] >> 4 != 6 {
                return Err(Skip::Malformed);
            }
            let tclass = ((hdr[0] & 0x0f) << 4) | (hdr[1] >> 4);
            pkt.family = AF_INET6;
            pkt.dscp = tclass >> 2;
            pkt.transport = hdr[6];
            let mut i = 0;
            while i < 16 {
                pkt.src[i] = hdr[8 + i];
                pkt.dst[i] = hdr[24 + i];
                i += 1;
            }
            let payload_len = u16::from_be_bytes([hdr[4], hdr[5]]) as usize;
            off += 40;
            l4_end = off + payload_len;
            match pkt.transport {
                IPPROTO_TCP | IPPROTO_UDP => {}
                // Extension headers (hop-by-hop, routing, fragment, dest opts) are not walked.
                0 | 43 | 44 | 60 => return Err(Skip::Unparsed),
                _ => return Err(Skip::NotInteresting),
            }
        }
        ETH_P_8021Q | ETH_P_8021AD => return Err(Skip::Unparsed),
        _ => return Err(Skip::NotInteresting),
    }
    match pkt.transport {
        IPPROTO_UDP => {
            let udp = f.bytes::<8>(off).ok_or(Skip::Truncated)?;
            pkt.src_port = u16::from_be_bytes([udp[0], udp[1]]);
            pkt.dst_port = u16::from_be_bytes([udp[2], udp[3]]);
            let udp_len = u16::from_be_bytes([udp[4], udp[5]]) as usize;
            if udp_len < 8 || off + udp_len > l4_end {
                return Err(Skip::Malformed);
            }
            pkt.payload_off = (off + 8) as u16;
            pkt.payload_len = (udp_len - 8) as u16;
        }
        IPPROTO_TCP => {
            let tcp = f.bytes::<20>(off).ok_or(Skip::Truncated)?;
            pkt.src_port = u16::from_be_bytes([tcp[0], tcp[1]]);
            pkt.dst_port = u16::from_be_bytes([tcp[2], tcp[3]]);
            pkt.tcp_seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
            pkt.tcp_ack = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
            let doff = ((tcp[12] >> 4) as usize) * 4;
            pkt.tcp_flags = tcp[13];
            if doff < 20 || off + doff > l4_end {
                return Err(Skip::Malformed);
            }
            pkt.payload_off = (off + doff) as u16;
            pkt.payload_len = (l4_end - off - doff) as u16;
        }
        _ => return Err(Skip::NotInteresting),
    }
    Ok(())
}

#[inline(always)]
fn copy4(dst: &mut [u8; 16], src: [u8; 4]) {
    dst[0] = src[0];
    dst[1] = src[1];
    dst[2] = src[2];
    dst[3] = src[3];
}
