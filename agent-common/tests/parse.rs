//! L2-L4 parsing on crafted frames: tags, IPv6, bad headers, fragments.

use hbwatch_common::frame::SliceFrame;
use hbwatch_common::parse::{headers, parse, Skip, AF_INET6, IPPROTO_TCP, IPPROTO_UDP};

fn eth(ethertype: u16) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

fn ipv4(ihl_words: u8, total: u16, frag: u16, proto: u8) -> Vec<u8> {
    let mut h = vec![0x40 | ihl_words, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    h
}

fn udp(len: u16) -> Vec<u8> {
    let mut h = 15000u16.to_be_bytes().to_vec();
    h.extend_from_slice(&15000u16.to_be_bytes());
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h
}

fn v4_udp_frame(prefix: Vec<u8>) -> Vec<u8> {
    let mut f = prefix;
    f.extend(ipv4(5, 34, 0, 17));
    f.extend(udp(14));
    f.extend_from_slice(&[0, 0, 0, 1, 2, 0xff]);
    f
}

#[test]
fn plain_vlan_and_qinq() {
    let p = headers(&SliceFrame(&v4_udp_frame(eth(0x0800)))).unwrap();
    assert_eq!(
        (p.transport, p.dst_port, p.payload_len, p.vlan),
        (IPPROTO_UDP, 15000, 6, 0)
    );
    let mut tagged = eth(0x8100);
    tagged.extend_from_slice(&[0x00, 0x64, 0x08, 0x00]);
    let p = headers(&SliceFrame(&v4_udp_frame(tagged))).unwrap();
    assert_eq!((p.vlan, p.payload_off), (100, 14 + 4 + 28));
    let mut qinq = eth(0x88a8);
    qinq.extend_from_slice(&[0x00, 0x0a, 0x81, 0x00, 0x00, 0x14, 0x08, 0x00]);
    let p = headers(&SliceFrame(&v4_udp_frame(qinq))).unwrap();
    assert_eq!((p.vlan, p.payload_off, p.payload_len), (20, 14 + 8 + 28, 6));
    let mut three = eth(0x88a8);
    three.extend_from_slice(&[0, 1, 0x81, 0x00, 0, 2, 0x81, 0x00, 0, 3, 0x08, 0x00]);
    assert_eq!(
        parse(&SliceFrame(&v4_udp_frame(three))),
        Err(Skip::Unparsed)
    );
}

#[test]
fn ipv6_udp_and_extension_headers() {
    let mut f = eth(0x86dd);
    f.extend_from_slice(&[0x60 | (46 >> 2), (46 << 6) as u8, 0, 0, 0, 14, 17, 64]);
    f.extend_from_slice(&[0xfd; 16]);
    f.extend_from_slice(&[0xfe; 16]);
    f.extend(udp(14));
    f.extend_from_slice(&[0, 0, 0, 1, 2, 0xff]);
    let p = parse(&SliceFrame(&f)).unwrap();
    assert_eq!(
        (p.family, p.payload_len, p.dscp, p.src[0]),
        (AF_INET6, 6, 46, 0xfd)
    );
    f[14 + 6] = 0; // hop-by-hop first: not walked
    assert_eq!(parse(&SliceFrame(&f)), Err(Skip::Unparsed));
}

#[test]
fn bad_ihl_options_total_length_and_fragments() {
    // IHL 4 (< 5) is malformed.
    let mut f = eth(0x0800);
    f.extend(ipv4(4, 34, 0, 17));
    f.extend(udp(14));
    assert_eq!(parse(&SliceFrame(&f)), Err(Skip::Malformed));
    // IHL 15 reaching beyond the frame is truncated.
    let mut f = eth(0x0800);
    f.extend(ipv4(15, 80, 0, 17));
    assert_eq!(parse(&SliceFrame(&f)), Err(Skip::Truncated));
    // IPv4 options (IHL 6) are skipped over.
    let mut f = eth(0x0800);
    f.extend(ipv4(6, 38, 0, 17));
    f.extend_from_slice(&[1, 1, 1, 0]);
    f.extend(udp(14));
    f.extend_from_slice(&[0, 0, 0, 1, 2, 0xff]);
    let p = parse(&SliceFrame(&f)).unwrap();
    assert_eq!((p.payload_off, p.payload_len), (14 + 24 + 8, 6));
    // Non-first fragment has no UDP header.
    let mut f = eth(0x0800);
    f.extend(ipv4(5, 34, 185, 17));
    f.extend(udp(14));
    assert_eq!(parse(&SliceFrame(&f)), Err(Skip::Fragment));
    // The first fragment (More Fragments, offset 0) has a UDP header, but its length
    // describes a datagram the frame holds only part of. It used to parse as a whole
    // datagram (seen writing the parse_frame fuzz target's reference parser).
    let mut f = eth(0x0800);
    f.extend(ipv4(5, 34, 0x2000, 17));
    f.extend(udp(14));
    f.extend_from_slice(&[0, 0, 0, 1, 2, 0xff]);
    assert_eq!(parse(&SliceFrame(&f)), Err(Skip::Fragment));
    // Don't Fragment alone is a whole datagram.
    let mut f = eth(0x0800);
    f.extend(ipv4(5, 34, 0x4000, 17));
    f.extend(udp(14));
    f.extend_from_slice(&[0, 0, 0, 1, 2, 0xff]);
    assert!(parse(&SliceFrame(&f)).is_ok());
    // UDP length larger than the IP total length says is malformed.
    let mut f = eth(0x0800);
    f.extend(ipv4(5, 34, 0, 17));
    f.extend(udp(40));
    assert_eq!(parse(&SliceFrame(&f)), Err(Skip::Malformed));
    // Truncated Ethernet header.
    assert_eq!(parse(&SliceFrame(&[0u8; 10])), Err(Skip::Truncated));
}

#[test]
fn tcp_payload_from_total_length_not_padding() {
    let mut f = eth(0x0800);
    f.extend(ipv4(5, 40 + 12, 0, 6));
    let mut tcp = 40000u16.to_be_bytes().to_vec();
    tcp.extend_from_slice(&5000u16.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2, 5 << 4, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend(tcp);
    f.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 5, 0xaa, 0x4c, 0x06, 0xcc]);
    f.resize(80, 0);
    let p = parse(&SliceFrame(&f)).unwrap();
    assert_eq!(
        (p.transport, p.payload_len, p.tcp_flags, p.tcp_seq),
        (IPPROTO_TCP, 12, 0x18, 1)
    );
}

/// Found by the `parse_frame` fuzz target: a 27-byte frame whose IPv4 header is both
/// short and of the wrong version is malformed, as the version byte comes first.
#[test]
fn a_short_ip_header_with_a_wrong_version_is_malformed_not_truncated() {
    let frame = [
        0x02, 0x68, 0x0a, 0x0a, 0x0a, 0x0a, 0x02, 0x68, 0x0a, 0x0a, 0x14, 0x14, 0x08, 0x00, 0xb8,
        0x02, 0x45, 0x68, 0x00, 0x22, 0x00, 0x01, 0x40, 0x00, 0x40, 0x11, 0x07,
    ];
    assert_eq!(parse(&SliceFrame(&frame)), Err(Skip::Malformed));
    // IHL below 5, short header: malformed too.
    let mut low_ihl = frame;
    low_ihl[14] = 0x44;
    assert_eq!(parse(&SliceFrame(&low_ihl)), Err(Skip::Malformed));
    // A good first byte and a short header: truncated.
    let mut short = frame;
    short[14] = 0x45;
    assert_eq!(parse(&SliceFrame(&short)), Err(Skip::Truncated));
}

/// The kernel parses every frame into the same per-CPU memory: `fill` must leave nothing
/// of the frame before (an IPv6 address's tail in an IPv4 flow key, a TCP segment's
/// sequence number on a UDP heartbeat). What it writes over another frame's packet is
/// what it writes over a fresh one.
#[test]
fn fill_leaves_nothing_of_the_frame_before() {
    use hbwatch_common::parse::{fill, Packet};
    let mut v6 = eth(0x86dd);
    v6.extend_from_slice(&[0x60, 0, 0, 0, 0, 20, 6, 64]);
    v6.extend_from_slice(&[0xfd; 16]);
    v6.extend_from_slice(&[0xfe; 16]);
    // TCP 2000 -> 40000, seq 0x01020304, PSH+ACK, no payload.
    v6.extend_from_slice(&[0x07, 0xd0, 0x9c, 0x40, 1, 2, 3, 4, 0, 0, 0, 0, 0x50, 0x18]);
    v6.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
    let v4 = v4_udp_frame(eth(0x0800));
    let mut scratch = Packet::default();
    for (before, frame) in [(&v6, &v4), (&v4, &v6), (&v6, &v6)] {
        let h = headers(&SliceFrame(before)).unwrap();
        fill(&SliceFrame(before), &h, &mut scratch).unwrap();
        let h = headers(&SliceFrame(frame)).unwrap();
        fill(&SliceFrame(frame), &h, &mut scratch).unwrap();
        assert_eq!(scratch, parse(&SliceFrame(frame)).unwrap());
    }
    assert_eq!((scratch.tcp_seq, scratch.tcp_flags), (0x01020304, 0x18));
}
