//! UDP sender: one datagram per event, paced so that a receiver's socket buffer is not
//! flooded when the agent emits a burst (`analyze` writes thousands at once).
//!
//! UDP has no acknowledgement: "delivered" here means handed to the kernel. A datagram
//! dropped by the receiver's full socket buffer is not seen by the sender; pacing is
//! what keeps that from happening.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::queue::Queue;

pub struct Target {
    /// `syslog+udp://host:port`, for logs.
    pub name: String,
    pub host: String,
    pub port: u16,
    /// Datagrams per second; 0: as fast as the socket takes them.
    pub rate: u32,
    pub reconnect_max: Duration,
}

/// Most datagrams sent back to back.
pub const MAX_BURST: u32 = 32;

/// Token bucket: `rate` per second, bursts of up to `burst`.
pub struct Pacer {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Pacer {
    pub fn new(rate: u32, now: Instant) -> Pacer {
        // 50 ms worth, but never more than a receiver's default socket buffer holds
        // (Linux: 212992 bytes, about 90 datagrams of 1 KiB): a burst must fit in it.
        let burst = (f64::from(rate) / 20.0).clamp(1.0, f64::from(MAX_BURST));
        Pacer {
            rate: f64::from(rate),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// How long to wait before the next datagram may go (zero: now); takes its token.
    pub fn next(&mut self, now: Instant) -> Duration {
        if self.rate <= 0.0 {
            return Duration::ZERO;
        }
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

pub fn run(q: Arc<Queue>, t: Target) {
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    let (sock, addr) = loop {
        match open(&t) {
            Ok(s) => break s,
            Err(e) => {
                q.retried();
                if std::mem::take(&mut first) {
                    warn!("{}: {e}; events are queued, retrying", t.name);
                } else {
                    debug!("{}: {e}", t.name);
                }
                if !q.sleep(backoff) {
                    return;
                }
                backoff = (backoff * 2).min(t.reconnect_max);
            }
        }
    };
    let mut pacer = Pacer::new(t.rate, Instant::now());
    let mut batch = Vec::new();
    let mut failing = false;
    while q.take(&mut batch, 64 << 10, None) {
        for frame in &batch {
            let wait = pacer.next(Instant::now());
            if !wait.is_zero() && !q.sleep(wait) {
                return;
            }
            match sock.send_to(frame, addr) {
                Ok(_) => {
                    q.delivered(1);
                    if failing {
                        failing = false;
                        info!("{}: sending again", t.name);
                    }
                }
                Err(e) => {
                    q.lost(1);
                    if !failing {
                        failing = true;
                        warn!(
                            "{}: send failed: {e} (event {} bytes); dropped, further drops counted, not logged",
                            t.name,
                            frame.len()
                        );
                    }
                }
            }
        }
        batch.clear();
    }
}

fn open(t: &Target) -> std::io::Result<(UdpSocket, SocketAddr)> {
    let addr = (t.host.as_str(), t.port)
        .to_socket_addrs()
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot resolve {}: {e}", t.host)))?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{} has no address", t.host)))?;
    let local: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    Ok((UdpSocket::bind(local)?, addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_lets_a_burst_through_then_spaces_datagrams_at_the_rate() {
        let t0 = Instant::now();
        let mut p = Pacer::new(500, t0);
        // 50 ms worth go at once.
        for _ in 0..25 {
            assert_eq!(p.next(t0), Duration::ZERO);
        }
        let w = p.next(t0);
        assert!((w.as_secs_f64() - 0.002).abs() < 1e-9, "{w:?}");
        // After waiting as told, the next one needs another 2 ms.
        let t1 = t0 + w;
        let w = p.next(t1);
        assert!((w.as_secs_f64() - 0.002).abs() < 1e-9, "{w:?}");
        // A second later 500 more have come in, but only a burst is kept.
        let t2 = t1 + Duration::from_secs(1);
        let free = (0..100).take_while(|_| p.next(t2).is_zero()).count();
        assert_eq!(free, 25);
        // Fast rates burst no more than a receiver's socket buffer holds.
        let mut fast = Pacer::new(100_000, t0);
        let free = (0..1000).take_while(|_| fast.next(t0).is_zero()).count();
        assert_eq!(free, MAX_BURST as usize);
        let mut unpaced = Pacer::new(0, t0);
        assert!((0..10_000).all(|_| unpaced.next(t0).is_zero()));
    }
}
