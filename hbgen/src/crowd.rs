//! A crowd of associations (`hbwatch hbgen --scenario crowd --associations N`): what a
//! mirror port beside a large CS1000 or CUCM cluster sees, for the scale tests (issue 19).
//! N/2 CS1000 RUDP device pairs (PROTOCOLS.md §4), both ends originating every second,
//! every request echoed, spread evenly over the second; among them one association
//! falls silent a third of the way in (its requests stop: `heartbeat.missed`, `peer.down`)
//! and one restarts halfway (its sequence jumps to an unrelated value:
//! `heartbeat.restart`). Every other association only comes up. Frames are made as they
//! are sent, so a million of them need no memory.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{bail, Result};
use hbwatch_common::proto::{rudp, Protocol, Role};

use super::frame::FrameSpec;
use super::mds::far_from;
use super::rng::Rng;
use super::truth::{AssocKey, Cause, Collector, Tracker, Truth, TruthFault};
use super::{Ep, TimedFrame};
use crate::rfc3339_micros;

/// Scenario name for `--scenario`.
pub const SCENARIO: &str = "crowd";

const RUDP: Protocol = Protocol::Cs1000Rudp;
/// The protocol's own interval.
const INTERVAL: u64 = RUDP.default_params().interval_ms as u64 * 1_000_000;
/// Request to echo, as a probe beside the pair sees it.
const RTT: u64 = 2_000;
/// The devices' addresses start here (10.128.0.0/9 holds 8 M of them).
const BASE: u32 = u32::from_be_bytes([10, 128, 0, 0]);

/// The crowd: sizes, and which associations the faults hit.
#[derive(Debug, Clone)]
pub struct Crowd {
    pub start_unix_ns: u64,
    pub pairs: u32,
    pub rounds: u32,
    pub seed: u64,
    /// (pair, round): side A's requests stop from this round on.
    pub silenced: (u32, u32),
    /// (pair, round): side B's sequence jumps from this round on.
    pub restarted: (u32, u32),
    /// Side B of the restarted pair counts from here after the restart.
    restart_seq: u32,
}

impl Crowd {
    /// `associations` (even, at least 4) for `duration_s` (at least 10 s: the silenced
    /// association must have gone down by the end).
    pub fn new(start_unix_ns: u64, associations: u64, duration_s: f64, seed: u64) -> Result<Crowd> {
        if associations < 4 || !associations.is_multiple_of(2) || associations > 2 * (1 << 22) {
            bail!("--associations {associations}: an even number from 4 to 8388608 (device pairs, both ends originate)");
        }
        if !(duration_s.is_finite() && duration_s >= 10.0) {
            bail!("--duration {duration_s}: the crowd needs at least 10 s (the silenced association goes down after 4 missed seconds)");
        }
        let pairs = (associations / 2) as u32;
        let rounds = duration_s as u32;
        let mut rng = Rng::new(seed).fork("crowd");
        let silenced = (rng.range(0, pairs as u64) as u32, rounds / 3);
        let mut restarted = (rng.range(0, pairs as u64) as u32, rounds / 2);
        if restarted.0 == silenced.0 {
            restarted.0 = (restarted.0 + 1) % pairs;
        }
        let mut c = Crowd {
            start_unix_ns,
            pairs,
            rounds,
            seed,
            silenced,
            restarted,
            restart_seq: 0,
        };
        let before = c
            .first_seq(restarted.0, false)
            .wrapping_add(restarted.1 - 1);
        c.restart_seq = far_from(&mut rng, before);
        Ok(c)
    }

    fn addr(&self, pair: u32, b: bool) -> Ep {
        Ep::new(
            IpAddr::V4(Ipv4Addr::from(BASE + 2 * pair + b as u32)),
            RUDP.default_ports()[0].0,
        )
    }

    /// Start value of a side's sequence: unknown in the field, so spread.
    fn first_seq(&self, pair: u32, b: bool) -> u32 {
        let mut rng = Rng::new(self.seed ^ ((pair as u64) << 1 | b as u64));
        rng.range(1, 0x8000_0000) as u32
    }

    /// The request side `b` of `pair` sends in `round`: when (ns from the start) and with
    /// which seq; `None` once silenced.
    fn request(&self, pair: u32, b: bool, round: u32) -> Option<(u64, u32)> {
        if !b && pair == self.silenced.0 && round >= self.silenced.1 {
            return None;
        }
        let slot = INTERVAL / self.pairs as u64;
        let t = round as u64 * INTERVAL + pair as u64 * slot + b as u64 * (slot / 2);
        let seq = if b && pair == self.restarted.0 && round >= self.restarted.1 {
            self.restart_seq.wrapping_add(round - self.restarted.1)
        } else {
            self.first_seq(pair, b).wrapping_add(round)
        };
        Some((t, seq))
    }

    fn key(&self, pair: u32, b: bool) -> AssocKey {
        AssocKey {
            protocol: RUDP,
            tcp: false,
            src: self.addr(pair, b),
            dst: self.addr(pair, !b),
        }
    }

    /// Every frame, in time order: per pair A's request, its echo, B's request, its echo.
    pub fn frames(&self) -> impl Iterator<Item = TimedFrame> + '_ {
        (0..self.rounds)
            .flat_map(move |r| (0..self.pairs).map(move |p| (r, p)))
            .flat_map(move |(r, p)| {
                [false, true].into_iter().flat_map(move |b| {
                    self.request(p, b, r).into_iter().flat_map(move |(t, seq)| {
                        let (src, dst) = (self.addr(p, b), self.addr(p, !b));
                        [
                            self.frame(t, src, dst, seq, Role::Request),
                            self.frame(t + RTT, dst, src, seq, Role::Response),
                        ]
                    })
                })
            })
    }

    fn frame(&self, t: u64, src: Ep, dst: Ep, seq: u32, role: Role) -> TimedFrame {
        let mut spec = FrameSpec::udp(
            src.ip,
            src.port,
            dst.ip,
            dst.port,
            &rudp::payload(seq, role),
        );
        // The marking RUDP expects (EF): healthy associations raise nothing.
        spec.dscp = RUDP.default_params().expected_dscp;
        TimedFrame {
            ts_ns: self.start_unix_ns + t,
            data: spec.build(),
            label: match role {
                Role::Request => "rudp.request",
                _ => "rudp.response",
            },
        }
    }

    /// What the agent should say: every association comes up; the silenced one misses
    /// and goes down, the restarted one restarts.
    pub fn truth(&self) -> Truth {
        let end = self.rounds as u64 * INTERVAL;
        let mut c = Collector {
            start_ns: self.start_unix_ns,
            end_ns: self.start_unix_ns + end,
            ..Collector::default()
        };
        // The silenced side still echoes its peer's requests: from the wire, a sender
        // that stopped and a path lost one way look alike, so no diagnosis is expected.
        let silence = Cause {
            fault: Some((0, "silence")),
            diagnosis: None,
            late: false,
        };
        let restart = Cause {
            fault: Some((1, "restart")),
            diagnosis: Some("peer-restart"),
            late: false,
        };
        for p in 0..self.pairs {
            for b in [false, true] {
                let key = self.key(p, b);
                let name = format!("pair-{p}");
                c.association(&name, if b { "b-to-a" } else { "a-to-b" }, &key, INTERVAL);
                let mut tr = Tracker::new(key, INTERVAL, true);
                for r in 0..self.rounds {
                    if b && (p, r) == self.restarted {
                        tr.restarted(restart);
                    }
                    match self.request(p, b, r) {
                        Some((t, seq)) => tr.seen(&mut c, t, Some(seq)),
                        None => tr.hidden(silence),
                    }
                }
                tr.finish(&mut c, end);
            }
        }
        c.expected.sort_by_key(|e| e.at_ns);
        let fault = |index: usize, kind: &'static str, (pair, round): (u32, u32), b: bool| {
            let key = self.key(pair, b);
            let at_ns = self.start_unix_ns + round as u64 * INTERVAL;
            TruthFault {
                index,
                kind,
                association: format!("pair-{pair}"),
                target: if b { "b" } else { "a" },
                at: rfc3339_micros(at_ns as i128),
                at_ns,
                detail: format!("{kind} of {} -> {} from round {round}", key.src, key.dst),
            }
        };
        Truth {
            version: 1,
            scenario: SCENARIO.to_string(),
            seed: self.seed,
            start: rfc3339_micros(self.start_unix_ns as i128),
            start_unix_ns: self.start_unix_ns,
            end_unix_ns: self.start_unix_ns + end,
            associations: c.associations,
            faults: vec![
                fault(0, "silence", self.silenced, false),
                fault(1, "restart", self.restarted, true),
            ],
            generated: Default::default(),
            expected: c.expected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_association_comes_up_and_only_the_two_faults_alert() {
        let crowd = Crowd::new(crate::scenario::default_start_ns(), 200, 12.0, 3).unwrap();
        let truth = crowd.truth();
        assert_eq!(truth.associations.len(), 200);
        let ups = truth
            .expected
            .iter()
            .filter(|e| e.action == "peer.up")
            .count();
        assert_eq!(ups, 200);
        let mut alerts: Vec<(&str, String)> = truth
            .expected
            .iter()
            .filter(|e| e.required && e.action != "peer.up")
            .map(|e| (e.action, e.source.ip.clone()))
            .collect();
        alerts.sort();
        let silenced = crowd.addr(crowd.silenced.0, false).ip.to_string();
        let restarted = crowd.addr(crowd.restarted.0, true).ip.to_string();
        assert_eq!(
            alerts,
            vec![
                ("heartbeat.missed", silenced.clone()),
                ("heartbeat.restart", restarted),
                ("peer.down", silenced),
            ]
        );
        let frames: Vec<TimedFrame> = crowd.frames().collect();
        // 12 rounds of 4 frames per pair, less the silenced side's 8 rounds of 2.
        assert_eq!(frames.len(), 12 * 4 * 100 - 8 * 2);
        assert!(frames.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns));
    }

    #[test]
    fn odd_or_tiny_crowds_and_short_durations_are_refused() {
        let start = crate::scenario::default_start_ns();
        assert!(Crowd::new(start, 3, 12.0, 1).is_err());
        assert!(Crowd::new(start, 2, 12.0, 1).is_err());
        assert!(Crowd::new(start, 100, 5.0, 1).is_err());
    }
}
