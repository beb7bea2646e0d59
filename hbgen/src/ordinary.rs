//! Ordinary (non-heartbeat) traffic mixed between the heartbeat frames, so benchmarks
//! get a realistic "mostly ordinary" capture: TCP and UDP over IPv4 and IPv6, some of
//! it VLAN-tagged, on ports no heartbeat protocol uses. Frames come from a pool built
//! once, so a million of them take well under a second.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hbwatch_common::proto::Protocol;

use super::frame::{FrameSpec, Tcp};
use super::rng::Rng;
use super::TimedFrame;

/// Distinct frames in the pool.
const POOL: usize = 1024;

/// Ports that carry heartbeats by default (the protocol table), and the TLS ports of
/// SCCP and SIP: ordinary traffic avoids them.
fn heartbeat_port(p: u16) -> bool {
    p == 2443
        || p == 5061
        || Protocol::ALL.iter().any(|proto| {
            proto
                .default_ports()
                .iter()
                .any(|&(lo, hi)| (lo..=hi).contains(&p))
        })
}

/// How the ordinary traffic looks.
#[derive(Debug, Clone)]
pub struct OrdinaryOptions {
    /// Ordinary frames per heartbeat frame (0.5 = one every other heartbeat).
    pub ratio: f64,
    /// Share of IPv6 frames.
    pub ipv6_share: f64,
    /// Share of VLAN-tagged frames, and their tag.
    pub vlan_share: f64,
    pub vlan: u16,
    /// Extra ports to avoid (the scenario's own heartbeat ports).
    pub avoid_ports: Vec<u16>,
}

impl Default for OrdinaryOptions {
    fn default() -> Self {
        OrdinaryOptions {
            ratio: 0.0,
            ipv6_share: 0.3,
            vlan_share: 0.2,
            vlan: 100,
            avoid_ports: Vec::new(),
        }
    }
}

fn pool(rng: &mut Rng, o: &OrdinaryOptions) -> Vec<Vec<u8>> {
    let port = |rng: &mut Rng| loop {
        // Mostly well-known services one way, ephemeral ports the other.
        let p = if rng.chance(0.5) {
            [
                22u16, 53, 80, 123, 161, 389, 443, 445, 514, 1433, 3306, 3389, 8080, 8443,
            ][rng.range(0, 14) as usize]
        } else {
            rng.range(1024, 65535) as u16
        };
        if !heartbeat_port(p) && !o.avoid_ports.contains(&p) {
            return p;
        }
    };
    (0..POOL)
        .map(|_| {
            let (src, dst) = if rng.chance(o.ipv6_share) {
                let h = |rng: &mut Rng| {
                    IpAddr::V6(Ipv6Addr::new(
                        0xfd00,
                        0x6f72,
                        0x64,
                        rng.range(0, 16) as u16,
                        0,
                        0,
                        0,
                        rng.range(1, 4000) as u16,
                    ))
                };
                (h(rng), h(rng))
            } else {
                let h = |rng: &mut Rng| {
                    IpAddr::V4(Ipv4Addr::new(
                        172,
                        16 + rng.range(0, 4) as u8,
                        rng.range(0, 255) as u8,
                        rng.range(1, 255) as u8,
                    ))
                };
                (h(rng), h(rng))
            };
            let len = match rng.range(0, 10) {
                0..=3 => rng.range(0, 64),
                4..=7 => rng.range(100, 600),
                _ => rng.range(1000, 1400),
            } as usize;
            let mut payload = vec![0u8; len];
            rng.fill(&mut payload);
            let mut f = FrameSpec::udp(src, port(rng), dst, port(rng), &payload);
            f.src_mac = [
                0x02,
                0x6f,
                0,
                0,
                rng.range(0, 256) as u8,
                rng.range(0, 256) as u8,
            ];
            f.dst_mac = [
                0x02,
                0x6f,
                0,
                1,
                rng.range(0, 256) as u8,
                rng.range(0, 256) as u8,
            ];
            if rng.chance(0.6) {
                f.tcp = Some(Tcp {
                    seq: rng.u32(),
                    ack: rng.u32(),
                    flags: if len == 0 { 0x10 } else { 0x18 },
                    window: 64_240,
                });
            }
            if rng.chance(o.vlan_share) {
                f.vlans = vec![o.vlan];
            }
            f.dscp = if rng.chance(0.8) { 0 } else { 10 };
            f.build()
        })
        .collect()
}

/// Heartbeat frames with ordinary frames spread between them, in time order.
pub struct Mixed {
    heartbeats: std::vec::IntoIter<TimedFrame>,
    pool: Vec<Vec<u8>>,
    rng: Rng,
    ratio: f64,
    owed: f64,
    prev_ts: u64,
    queue: VecDeque<TimedFrame>,
}

/// Mixes ordinary traffic into `frames` (sorted); `start_ns` is the capture start.
pub fn mix(frames: Vec<TimedFrame>, start_ns: u64, seed: u64, o: &OrdinaryOptions) -> Mixed {
    let mut rng = super::rng::Rng::new(seed).fork("ordinary");
    let pool = if o.ratio > 0.0 {
        pool(&mut rng, o)
    } else {
        Vec::new()
    };
    Mixed {
        heartbeats: frames.into_iter(),
        pool,
        rng,
        ratio: o.ratio.max(0.0),
        owed: 0.0,
        prev_ts: start_ns,
        queue: VecDeque::new(),
    }
}

impl Iterator for Mixed {
    type Item = TimedFrame;

    fn next(&mut self) -> Option<TimedFrame> {
        if let Some(f) = self.queue.pop_front() {
            return Some(f);
        }
        let hb = self.heartbeats.next()?;
        if self.pool.is_empty() {
            return Some(hb);
        }
        self.owed += self.ratio;
        let n = self.owed as usize;
        self.owed -= n as f64;
        let span = hb.ts_ns.saturating_sub(self.prev_ts);
        let mut times: Vec<u64> = (0..n)
            .map(|_| self.prev_ts + self.rng.range(0, span.max(1)))
            .collect();
        times.sort_unstable();
        for ts in times {
            let data = self.pool[self.rng.range(0, self.pool.len() as u64) as usize].clone();
            self.queue.push_back(TimedFrame {
                ts_ns: ts,
                data,
                label: "ordinary",
            });
        }
        self.prev_ts = hb.ts_ns;
        self.queue.push_back(hb);
        self.queue.pop_front()
    }
}
