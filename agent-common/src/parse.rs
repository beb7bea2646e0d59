//! Ethernet / 802.1Q / QinQ / IPv4 / IPv6 / UDP / TCP parsing.
//!
//! Lengths come from the IP and UDP headers, never from the frame length: short
//! frames are padded to 60 bytes on the wire.

use crate::counters::Counter;
use crate::frame::Frame;

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
/// IPv6 Fragment extension header.
const IPPROTO_FRAGMENT: u8 = 44;

/// [`Packet::frag`]: a fragment's byte offset (a multiple of 8) in the high 13 bits,
/// these flags in the low 3. Zero for a whole datagram.
pub const FRAG_MORE: u16 = 1 << 0;
/// The first fragment (offset 0, More Fragments set): it carries the L4 header.
pub const FRAG_FIRST: u16 = 1 << 1;
/// A later fragment: no L4 header; its payload continues the datagram at the offset.
pub const FRAG_LATER: u16 = 1 << 2;
/// The byte-offset bits of [`Packet::frag`].
pub const FRAG_OFFSET: u16 = !7;

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
    /// IPv4 identification, or the IPv6 Fragment header's (0 without one): tells a
    /// duplicated frame (same id) from a re-send (new id), and groups fragments.
    pub ip_id: u32,
    /// Fragment offset and `FRAG_*` flags; 0 for a whole datagram. A first fragment's
    /// `payload_len` is what this frame holds of the datagram.
    pub frag: u16,
}

/// Why a frame was not parsed to L4; each maps to a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Not IPv4/IPv6, or not TCP/UDP: ordinary traffic, not counted.
    NotInteresting,
    Truncated,
    Malformed,
    /// A fragment no heartbeat datagram is waiting for.
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

/// What the first look at a packet finds: every header checked as [`parse`] checks
/// it, but only the ports and offsets kept. It decides whether the packet is on a
/// heartbeat port; only then are the addresses and TCP fields read ([`fill`]). Most
/// packets are not, and copying their addresses cost more than the whole check
/// (`cargo xtask bench`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Headers {
    pub src_port: u16,
    pub dst_port: u16,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub transport: u8,
    /// `AF_INET` or `AF_INET6`.
    pub family: u8,
    pub dscp: u8,
    pub vlan: u16,
    /// Offset of the IP header.
    pub l3_off: u16,
    /// Offset of the TCP/UDP header.
    pub l4_off: u16,
    pub payload_off: u16,
    pub payload_len: u16,
    pub ip_id: u32,
    /// As [`Packet::frag`]. A later fragment has no ports: `payload_*` is its share of
    /// the datagram, `transport` the protocol of the datagram.
    pub frag: u16,
}

/// Parses L2 to L4. Only whole TCP and UDP datagrams over IPv4/IPv6 come back as `Ok`;
/// fragments are [`Skip::Fragment`] (the engine reads them through [`headers`]).
#[inline(always)]
pub fn parse<F: Frame>(f: &F) -> Result<Packet, Skip> {
    let h = headers(f)?;
    if h.frag != 0 {
        return Err(Skip::Fragment);
    }
    let mut pkt = Packet::default();
    fill(f, &h, &mut pkt).map(|()| pkt)
}

/// Checks L2 to L4 and reads the ports. Only TCP and UDP over IPv4/IPv6 come back as
/// `Ok`; every reason to skip a frame is found here, so [`fill`] after it cannot fail.
/// Inlined: the common case (no heartbeat port) then returns without a call.
#[inline(always)]
pub fn headers<F: Frame>(f: &F) -> Result<Headers, Skip> {
    let mut off = 12usize;
    let mut ethertype = f.be16(off).ok_or(Skip::Truncated)?;
    off += 2;
    let mut vlan = 0;
    // Bounded: at most MAX_VLAN_TAGS tags are unwrapped.
    let mut tags = 0;
    while tags < MAX_VLAN_TAGS && (ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD) {
        let tci = f.be16(off).ok_or(Skip::Truncated)?;
        vlan = tci & 0x0fff;
        ethertype = f.be16(off + 2).ok_or(Skip::Truncated)?;
        off += 4;
        tags += 1;
    }
    let l3_off = off;
    let (family, dscp, mut transport, l4_end);
    let (mut ip_id, mut frag) = (0u32, 0u16);
    match ethertype {
        ETH_P_IPV4 => {
            let Some(hdr) = f.bytes::<20>(off) else {
                // A short header, unless its first byte is already wrong: the version
                // and IHL are judged before the length, as the byte order says.
                return Err(match f.u8_at(off) {
                    Some(v) if v >> 4 != 4 || v & 0x0f < 5 => Skip::Malformed,
                    _ => Skip::Truncated,
                });
            };
            if hdr[0] >> 4 != 4 {
                return Err(Skip::Malformed);
            }
            let ihl = ((hdr[0] & 0x0f) as usize) * 4;
            if ihl < 20 {
                return Err(Skip::Malformed);
            }
            let total_len = u16::from_be_bytes([hdr[2], hdr[3]]) as usize;
            if total_len < ihl {
                return Err(Skip::Malformed);
            }
            // The whole IP header, options included, must be inside the packet (without
            // options the read above says so: one read less per packet).
            if ihl > 20 {
                f.u8_at(off + ihl - 1).ok_or(Skip::Truncated)?;
            }
            family = AF_INET;
            dscp = hdr[1] >> 2;
            transport = hdr[9];
            l4_end = off + total_len;
            off += ihl;
            ip_id = u16::from_be_bytes([hdr[4], hdr[5]]) as u32;
            // A fragment offset, or More Fragments set on the first fragment: the L4
            // header and length describe a datagram this frame holds only part of.
            let flags = u16::from_be_bytes([hdr[6], hdr[7]]);
            let more = if flags & IP_MF != 0 { FRAG_MORE } else { 0 };
            frag = ((flags & IP_OFFSET) << 3) | more;
        }
        ETH_P_IPV6 => {
            // Read whole (addresses included) for the bounds check; LLVM loads only the
            // bytes used.
            let hdr = f.bytes::<40>(off).ok_or(Skip::Truncated)?;
            if hdr[0] >> 4 != 6 {
                return Err(Skip::Malformed);
            }
            let tclass = ((hdr[0] & 0x0f) << 4) | (hdr[1] >> 4);
            family = AF_INET6;
            dscp = tclass >> 2;
            transport = hdr[6];
            let payload_len = u16::from_be_bytes([hdr[4], hdr[5]]) as usize;
            off += 40;
            l4_end = off + payload_len;
            if transport == IPPROTO_FRAGMENT {
                // One Fragment header (the usual case); other extension headers are
                // not walked. Its offset field has the same layout as `frag`.
                let fh = f.bytes::<8>(off).ok_or(Skip::Truncated)?;
                transport = fh[0];
                frag = u16::from_be_bytes([fh[2], fh[3]]) & (FRAG_OFFSET | FRAG_MORE);
                ip_id = u32::from_be_bytes([fh[4], fh[5], fh[6], fh[7]]);
                off += 8;
                if off > l4_end {
                    return Err(Skip::Malformed);
                }
                if frag != 0 && transport != IPPROTO_TCP && transport != IPPROTO_UDP {
                    return Err(Skip::Fragment);
                }
            }
            match transport {
                IPPROTO_TCP | IPPROTO_UDP => {}
                // Extension headers (hop-by-hop, routing, fragment, dest opts) are not walked.
                0 | 43 | 44 | 60 => return Err(Skip::Unparsed),
                _ => return Err(Skip::NotInteresting),
            }
        }
        ETH_P_8021Q | ETH_P_8021AD => return Err(Skip::Unparsed),
        _ => return Err(Skip::NotInteresting),
    }
    // What a fragment's broken or uninteresting L4 header is: a fragment all the same.
    let fragment = frag != 0;
    let bad = |e: Skip| if fragment { Skip::Fragment } else { e };
    if frag & FRAG_OFFSET != 0 {
        // A later fragment: no L4 header, its bytes continue the datagram.
        if transport != IPPROTO_TCP && transport != IPPROTO_UDP {
            return Err(Skip::Fragment);
        }
        return Ok(Headers {
            src_port: 0,
            dst_port: 0,
            transport,
            family,
            dscp,
            vlan,
            l3_off: l3_off as u16,
            l4_off: off as u16,
            payload_off: off as u16,
            payload_len: (l4_end - off) as u16,
            ip_id,
            frag: frag | FRAG_LATER,
        });
    }
    if frag != 0 {
        frag |= FRAG_FIRST;
    }
    let (ports, payload_off, payload_len);
    match transport {
        IPPROTO_UDP => {
            let udp = f.bytes::<8>(off).ok_or(bad(Skip::Truncated))?;
            ports = [udp[0], udp[1], udp[2], udp[3]];
            let udp_len = u16::from_be_bytes([udp[4], udp[5]]) as usize;
            // A first fragment holds only the start of what the UDP length counts.
            if udp_len < 8 || (off + udp_len > l4_end && frag == 0) || off + 8 > l4_end {
                return Err(bad(Skip::Malformed));
            }
            payload_off = off + 8;
            payload_len = if frag == 0 {
                udp_len - 8
            } else {
                (l4_end - payload_off).min(udp_len - 8)
            };
        }
        IPPROTO_TCP => {
            let tcp = f.bytes::<20>(off).ok_or(bad(Skip::Truncated))?;
            ports = [tcp[0], tcp[1], tcp[2], tcp[3]];
            let doff = ((tcp[12] >> 4) as usize) * 4;
            if doff < 20 || off + doff > l4_end {
                return Err(bad(Skip::Malformed));
            }
            payload_off = off + doff;
            payload_len = l4_end - off - doff;
        }
        _ => return Err(bad(Skip::NotInteresting)),
    }
    Ok(Headers {
        src_port: u16::from_be_bytes([ports[0], ports[1]]),
        dst_port: u16::from_be_bytes([ports[2], ports[3]]),
        transport,
        family,
        dscp,
        vlan,
        l3_off: l3_off as u16,
        l4_off: off as u16,
        payload_off: payload_off as u16,
        payload_len: payload_len as u16,
        ip_id,
        frag,
    })
}

/// Writes every field of `pkt` from what [`headers`] found: the addresses and, for TCP,
/// sequence number and flags. No zeroing first: in the kernel that was a call of its
/// own, and each call and return costs ~7 ns there (`cargo xtask bench`, a VM with
/// the SRSO return mitigation). Out of line: in the kernel its buffers get a stack frame
/// of their own, released before the flow stage runs (the BPF stack is 512 bytes for
/// the whole call chain); an out-parameter, because BPF functions may not return
/// pointers to the caller's stack.
#[inline(never)]
pub fn fill<F: Frame>(f: &F, h: &Headers, pkt: &mut Packet) -> Result<(), Skip> {
    let l3 = h.l3_off as usize;
    if h.family == AF_INET {
        let a = f.bytes::<8>(l3 + 12).ok_or(Skip::Truncated)?;
        set_v4(pkt, [a[0], a[1], a[2], a[3]], [a[4], a[5], a[6], a[7]]);
    } else {
        let a = f.bytes::<32>(l3 + 8).ok_or(Skip::Truncated)?;
        let mut i = 0;
        while i < 16 {
            pkt.src[i] = a[i];
            pkt.dst[i] = a[16 + i];
            i += 1;
        }
    }
    let (mut tcp_seq, mut tcp_flags) = (0, 0);
    if h.transport == IPPROTO_TCP && h.frag & FRAG_LATER == 0 {
        let t = f
            .bytes::<10>(h.l4_off as usize + 4)
            .ok_or(Skip::Truncated)?;
        tcp_seq = u32::from_be_bytes([t[0], t[1], t[2], t[3]]);
        tcp_flags = t[9];
    }
    pkt.tcp_seq = tcp_seq;
    pkt.tcp_flags = tcp_flags;
    pkt.src_port = h.src_port;
    pkt.dst_port = h.dst_port;
    pkt.payload_off = h.payload_off;
    pkt.payload_len = h.payload_len;
    pkt.family = h.family;
    pkt.transport = h.transport;
    pkt.dscp = h.dscp;
    pkt.ip_id = h.ip_id;
    pkt.frag = h.frag;
    Ok(())
}

/// IPv4 addresses in their 16-byte fields, the rest of each zero: 4-byte stores, the
/// zeros volatile so LLVM does not make a `memset` call of them (crate::zero).
#[inline(always)]
fn set_v4(pkt: &mut Packet, src: [u8; 4], dst: [u8; 4]) {
    const SRC: usize = core::mem::offset_of!(Packet, src) / 4;
    const DST: usize = core::mem::offset_of!(Packet, dst) / 4;
    const {
        assert!(
            SRC * 4 == core::mem::offset_of!(Packet, src)
                && DST * 4 == core::mem::offset_of!(Packet, dst)
        )
    };
    let words = (pkt as *mut Packet).cast::<u32>();
    // SAFETY: Packet is 8-byte aligned, `src` and `dst` start at multiples of 4 (checked
    // above) and are 16 bytes each: words SRC..SRC+4 and DST..DST+4 are theirs.
    unsafe {
        words.add(SRC).write(u32::from_ne_bytes(src));
        words.add(DST).write(u32::from_ne_bytes(dst));
        let mut i = 1;
        while i < 4 {
            core::ptr::write_volatile(words.add(SRC + i), 0);
            core::ptr::write_volatile(words.add(DST + i), 0);
            i += 1;
        }
    }
}
