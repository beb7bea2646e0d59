//! Mutated frames for robustness tests (the malformed-traffic suite's mutation storm):
//! valid frames with bit flips, truncations and lying length fields, from a seeded
//! RNG, so the same seed gives the same storm on every machine.

use super::rng::Rng;

/// Where the headers of a valid frame are (found once, before mutating it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Offset of the IP header.
    pub ip: usize,
    pub ipv6: bool,
    /// Offset of the TCP/UDP header.
    pub l4: usize,
    pub tcp: bool,
}

impl Layout {
    /// The layout of an Ethernet frame as `FrameSpec` builds them (up to two VLAN tags,
    /// IPv4 with options or IPv6, then TCP or UDP); `None` for anything else.
    pub fn of(frame: &[u8]) -> Option<Layout> {
        let be16 = |at: usize| Some(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]));
        let mut at = 12;
        let mut ethertype = be16(at)?;
        while ethertype == 0x8100 || ethertype == 0x88a8 {
            at += 4;
            ethertype = be16(at)?;
        }
        let ip = at + 2;
        let (ipv6, l4, proto) = match ethertype {
            0x0800 => (
                false,
                ip + (*frame.get(ip)? as usize & 15) * 4,
                *frame.get(ip + 9)?,
            ),
            0x86dd => (true, ip + 40, *frame.get(ip + 6)?),
            _ => return None,
        };
        let tcp = match proto {
            6 => true,
            17 => false,
            _ => return None,
        };
        (l4 + if tcp { 20 } else { 8 } <= frame.len()).then_some(Layout { ip, ipv6, l4, tcp })
    }
}

/// What was done to a frame (for messages and statistics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mutation {
    BitFlips,
    Truncate,
    IpLength,
    Ihl,
    L4Length,
    TcpDataOffset,
    Fragment,
    NextHeader,
    PayloadBytes,
    Extend,
    ExtraVlan,
}

impl Mutation {
    pub const ALL: [Mutation; 11] = [
        Mutation::BitFlips,
        Mutation::Truncate,
        Mutation::IpLength,
        Mutation::Ihl,
        Mutation::L4Length,
        Mutation::TcpDataOffset,
        Mutation::Fragment,
        Mutation::NextHeader,
        Mutation::PayloadBytes,
        Mutation::Extend,
        Mutation::ExtraVlan,
    ];
}

pub struct Mutator {
    rng: Rng,
}

/// A length near `v` (off by a little either way) or any 16-bit value: lies that pass
/// a careless check and lies that do not.
fn lie(rng: &mut Rng, v: u16) -> u16 {
    if rng.chance(0.5) {
        let d = rng.range(1, 17) as u16;
        if rng.chance(0.5) {
            v.wrapping_add(d)
        } else {
            v.wrapping_sub(d)
        }
    } else {
        rng.next_u64() as u16
    }
}

fn put16(f: &mut [u8], at: usize, v: u16) {
    if let Some(b) = f.get_mut(at..at + 2) {
        b.copy_from_slice(&v.to_be_bytes());
    }
}

fn get16(f: &[u8], at: usize) -> u16 {
    f.get(at..at + 2)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
}

impl Mutator {
    pub fn new(seed: u64) -> Mutator {
        Mutator {
            rng: Rng::new(seed).fork("mutate"),
        }
    }

    /// `frame` with one to three mutations; returns the last one applied.
    pub fn mutate(&mut self, frame: &[u8]) -> (Vec<u8>, Mutation) {
        let mut f = frame.to_vec();
        let layout = Layout::of(frame);
        let n = self.rng.range(1, 4);
        let mut last = Mutation::BitFlips;
        for _ in 0..n {
            let m = Mutation::ALL[self.rng.range(0, Mutation::ALL.len() as u64) as usize];
            self.apply(&mut f, layout, m);
            last = m;
        }
        (f, last)
    }

    /// Applies one mutation (a header mutation on a frame without that header flips bits).
    pub fn apply(&mut self, f: &mut Vec<u8>, layout: Option<Layout>, m: Mutation) {
        let rng = &mut self.rng;
        let Some(l) = layout else {
            flip(rng, f);
            return;
        };
        match m {
            Mutation::BitFlips => flip(rng, f),
            Mutation::Truncate => {
                let len = rng.range(0, f.len() as u64) as usize;
                f.truncate(len);
            }
            Mutation::IpLength => {
                let at = l.ip + if l.ipv6 { 4 } else { 2 };
                let v = lie(rng, get16(f, at));
                put16(f, at, v);
            }
            Mutation::Ihl if !l.ipv6 => {
                if let Some(b) = f.get_mut(l.ip) {
                    *b = 0x40 | rng.range(0, 16) as u8;
                }
            }
            Mutation::L4Length if !l.tcp => {
                let v = lie(rng, get16(f, l.l4 + 4));
                put16(f, l.l4 + 4, v);
            }
            Mutation::TcpDataOffset | Mutation::L4Length if l.tcp => {
                if let Some(b) = f.get_mut(l.l4 + 12) {
                    *b = (rng.range(0, 16) as u8) << 4;
                }
            }
            Mutation::Fragment if !l.ipv6 => {
                // More Fragments and/or an offset.
                let v = match rng.range(0, 3) {
                    0 => 0x2000,
                    1 => rng.range(1, 0x2000) as u16,
                    _ => 0x2000 | rng.range(1, 0x2000) as u16,
                };
                put16(f, l.ip + 6, v);
            }
            Mutation::NextHeader | Mutation::Fragment if l.ipv6 => {
                // An extension header where TCP/UDP was: hop-by-hop, routing, fragment, dest opts.
                if let Some(b) = f.get_mut(l.ip + 6) {
                    *b = [0, 43, 44, 60][rng.range(0, 4) as usize];
                }
            }
            Mutation::PayloadBytes => {
                let start = l.l4 + if l.tcp { 20 } else { 8 };
                if start < f.len() {
                    let at = rng.range(start as u64, f.len() as u64) as usize;
                    let n = rng.range(1, 9) as usize;
                    for b in f.iter_mut().skip(at).take(n) {
                        *b = rng.next_u64() as u8;
                    }
                }
            }
            Mutation::Extend => {
                let n = rng.range(1, 64) as usize;
                let mut junk = vec![0u8; n];
                rng.fill(&mut junk);
                f.extend_from_slice(&junk);
            }
            Mutation::ExtraVlan => {
                // One to three more tags in front of whatever was there.
                for _ in 0..rng.range(1, 4) {
                    let tag = [0x81, 0x00, 0, rng.range(1, 4095) as u8];
                    let at = 12.min(f.len());
                    f.splice(at..at, tag);
                }
            }
            _ => flip(rng, f),
        }
    }
}

fn flip(rng: &mut Rng, f: &mut [u8]) {
    if f.is_empty() {
        return;
    }
    for _ in 0..rng.range(1, 9) {
        let bit = rng.range(0, f.len() as u64 * 8);
        f[(bit / 8) as usize] ^= 1 << (bit % 8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameSpec, Tcp};

    #[test]
    fn layouts_and_same_seed_same_storm() {
        let ip = |s: &str| s.parse().unwrap();
        let mut udp = FrameSpec::udp(ip("10.0.0.1"), 41000, ip("10.0.0.2"), 41000, &[0, 0, 0, 1]);
        udp.vlans = vec![10, 20];
        let udp = udp.build();
        assert_eq!(
            Layout::of(&udp),
            Some(Layout {
                ip: 22,
                ipv6: false,
                l4: 42,
                tcp: false
            })
        );
        let mut tcp = FrameSpec::udp(ip("fd00::1"), 40000, ip("fd00::2"), 5000, &[0; 12]);
        tcp.tcp = Some(Tcp::default());
        assert_eq!(
            Layout::of(&tcp.build()),
            Some(Layout {
                ip: 14,
                ipv6: true,
                l4: 54,
                tcp: true
            })
        );
        let storm = |seed| {
            let mut m = Mutator::new(seed);
            (0..100).map(|_| m.mutate(&udp)).collect::<Vec<_>>()
        };
        assert_eq!(storm(1), storm(1));
        assert_ne!(storm(1), storm(2));
        assert!(storm(1).iter().any(|(f, _)| f != &udp));
    }
}
