//! Ethernet frames with optional 802.1Q/QinQ tags, IPv4/IPv6, UDP/TCP, valid checksums.

use std::net::IpAddr;

/// TCP header fields a frame needs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tcp {
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
}

/// A frame to build. Defaults: untagged, DSCP 0, UDP.
#[derive(Debug, Clone)]
pub struct FrameSpec {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// 802.1Q tags, outermost first (QinQ: the outer one uses TPID 0x88a8).
    pub vlans: Vec<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub dscp: u8,
    /// IPv4 identification: a re-sent segment gets a new one, a mirrored copy keeps it.
    pub ip_id: u16,
    /// `None` = UDP.
    pub tcp: Option<Tcp>,
    /// IPv4 options (multiple of 4 bytes).
    pub ip_options: Vec<u8>,
    pub payload: Vec<u8>,
}

impl FrameSpec {
    pub fn udp(
        src: IpAddr,
        src_port: u16,
        dst: IpAddr,
        dst_port: u16,
        payload: &[u8],
    ) -> FrameSpec {
        FrameSpec {
            src_mac: [0x02, 0, 0, 0, 0, 0x01],
            dst_mac: [0x02, 0, 0, 0, 0, 0x02],
            vlans: Vec::new(),
            src,
            dst,
            src_port,
            dst_port,
            dscp: 0,
            ip_id: 1,
            tcp: None,
            ip_options: Vec::new(),
            payload: payload.to_vec(),
        }
    }

    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(128 + self.payload.len());
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        for (i, vid) in self.vlans.iter().enumerate() {
            let tpid: u16 = if i == 0 && self.vlans.len() > 1 {
                0x88a8
            } else {
                0x8100
            };
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
        }
        let l4 = self.l4();
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend_from_slice(&0x0800u16.to_be_bytes());
                let ihl = 20 + self.ip_options.len();
                let total = (ihl + l4.len()) as u16;
                // Sized up front here and below: a crowd builds 200,000 frames a second,
                // and each regrowth is an allocation and a copy (slow in musl's libc).
                let mut ip = Vec::with_capacity(ihl);
                ip.extend_from_slice(&[
                    0x40 | (ihl / 4) as u8,
                    self.dscp << 2,
                    0,
                    0,
                    0,
                    1,
                    0x40, // DF
                    0,
                    64,
                    self.proto(),
                    0,
                    0,
                ]);
                ip[2..4].copy_from_slice(&total.to_be_bytes());
                ip[4..6].copy_from_slice(&self.ip_id.to_be_bytes());
                ip.extend_from_slice(&s.octets());
                ip.extend_from_slice(&d.octets());
                ip.extend_from_slice(&self.ip_options);
                let c = checksum(&ip, 0);
                ip[10..12].copy_from_slice(&c.to_be_bytes());
                f.extend_from_slice(&ip);
                let mut l4 = l4;
                let mut pseudo = Vec::with_capacity(12);
                pseudo.extend_from_slice(&s.octets());
                pseudo.extend_from_slice(&d.octets());
                pseudo.extend_from_slice(&[0, self.proto()]);
                pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
                self.fill_l4_checksum(&mut l4, &pseudo);
                f.extend_from_slice(&l4);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend_from_slice(&0x86ddu16.to_be_bytes());
                let tc = self.dscp << 2;
                f.extend_from_slice(&[0x60 | (tc >> 4), tc << 4, 0, 0]);
                f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
                f.extend_from_slice(&[self.proto(), 64]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                let mut l4 = l4;
                let mut pseudo = Vec::with_capacity(40);
                pseudo.extend_from_slice(&s.octets());
                pseudo.extend_from_slice(&d.octets());
                pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
                pseudo.extend_from_slice(&[0, 0, 0, self.proto()]);
                self.fill_l4_checksum(&mut l4, &pseudo);
                f.extend_from_slice(&l4);
            }
            _ => panic!("source and destination must be the same address family"),
        }
        // Ethernet minimum: pad to 60 bytes (the datapath must use IP/UDP lengths).
        if f.len() < 60 {
            f.resize(60, 0);
        }
        f
    }

    fn proto(&self) -> u8 {
        if self.tcp.is_some() {
            6
        } else {
            17
        }
    }

    fn l4(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(20 + self.payload.len());
        h.extend_from_slice(&self.src_port.to_be_bytes());
        h.extend_from_slice(&self.dst_port.to_be_bytes());
        match self.tcp {
            None => {
                h.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                h.extend_from_slice(&[0, 0]);
            }
            Some(t) => {
                h.extend_from_slice(&t.seq.to_be_bytes());
                h.extend_from_slice(&t.ack.to_be_bytes());
                h.extend_from_slice(&[5 << 4, t.flags]);
                h.extend_from_slice(&t.window.to_be_bytes());
                h.extend_from_slice(&[0, 0, 0, 0]);
            }
        }
        h.extend_from_slice(&self.payload);
        h
    }

    fn fill_l4_checksum(&self, l4: &mut [u8], pseudo: &[u8]) {
        let at = if self.tcp.is_some() { 16 } else { 6 };
        let mut c = checksum(l4, sum(pseudo));
        if c == 0 && self.tcp.is_none() {
            c = 0xffff;
        }
        l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
}

fn sum(data: &[u8]) -> u32 {
    let mut s = 0u32;
    for pair in data.chunks(2) {
        let word = if pair.len() == 2 {
            u16::from_be_bytes([pair[0], pair[1]])
        } else {
            u16::from_be_bytes([pair[0], 0])
        };
        s = s.wrapping_add(word as u32);
    }
    s
}

/// Internet checksum of `data` plus a partial sum.
pub fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut s = initial.wrapping_add(sum(data));
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}
