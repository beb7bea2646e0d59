//! The most likely cause of an outage, from the facts the correlator holds
//! (EVENTS.md `heartbeat.diagnosis` and `heartbeat.evidence`). Rules run in order;
//! the first that matches names the cause, and its facts become the evidence.

use super::assoc::{Assoc, Diagnosis, DownCause, Trouble, MS};

pub const PEER_RESTART: &str = "peer-restart";
pub const PATH_INTERRUPTION: &str = "path-interruption";
pub const ONE_WAY_LOSS: &str = "one-way-loss";
pub const NETWORK_LOSS: &str = "network-loss";
pub const PEER_UNRESPONSIVE: &str = "peer-unresponsive";
pub const QOS_STRIPPED: &str = "qos-stripped";
/// No rule matched: said plainly rather than guessed.
pub const UNDETERMINED: &str = "undetermined";
/// An MGCP gateway announced (RSIP) that it takes its endpoints out of service.
pub const OUT_OF_SERVICE: &str = "out-of-service";

/// What an MGCP gateway's RSIP says of itself: the diagnosis and its evidence (None:
/// a cancelled shutdown, nothing went wrong).
pub fn rsip(method: hbwatch_common::proto::mgcp::RestartMethod) -> Option<(&'static str, String)> {
    use hbwatch_common::proto::mgcp::RestartMethod::*;
    let cause = match method {
        Restart => PEER_RESTART,
        // RFC 3435 2.3.9: the endpoint lost contact with its call agent, now regained.
        Disconnected => PATH_INTERRUPTION,
        Graceful | Forced => OUT_OF_SERVICE,
        CancelGraceful => return None,
    };
    Some((
        cause,
        format!("the gateway's RSIP says RestartMethod: {}", method.name()),
    ))
}

/// Intervals before an outage searched for earlier trouble.
const LOOKBACK_INTERVALS: u64 = 20;
/// Earlier anomalies that make an outage look like the end of rising loss.
const TROUBLE_FOR_LOSS: usize = 2;

/// When the diagnosis is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `heartbeat.missed` or `peer.down` at `now`.
    Outage,
    /// `peer.up` at `now`, ending an outage.
    Recovery,
}

/// Causes found in what happened before an outage: a restart during the outage does
/// not explain them away. The others describe the silence itself, which the restart does.
const BEFORE_OUTAGE: [&str; 3] = [NETWORK_LOSS, QOS_STRIPPED, PEER_UNRESPONSIVE];

/// The reverse association `r` is healthy at `now`: beating within its interval plus
/// tolerance, not down, its requests not waiting unanswered. Then this association's
/// unanswered or re-sent requests are a loss in one direction only.
pub fn reverse_healthy(r: &Assoc, now: u64) -> Option<Diagnosis> {
    let since = now.saturating_sub(r.last_beat_ns);
    if r.down.is_some()
        || r.unanswered_streak > 0
        || since > r.expected_ns().saturating_add(r.grace_ns())
    {
        return None;
    }
    let answered = if r.last_answer_ns > 0 {
        format!(
            ", last answered {} ms ago",
            ms(now.saturating_sub(r.last_answer_ns))
        )
    } else {
        String::new()
    };
    Some(Diagnosis {
        cause: ONE_WAY_LOSS,
        evidence: vec![format!(
            "the reverse direction kept its heartbeats (last {} ms ago{answered})",
            ms(since)
        )],
        earlier: None,
    })
}

fn ms(ns: u64) -> u64 {
    ns / MS
}

/// Diagnoses `a`'s outage at `now`. `reverse` is the association running the other
/// way between the same endpoints (RUDP, MDS), if the agent sees it.
pub fn diagnose(a: &Assoc, reverse: Option<&Assoc>, now: u64, phase: Phase) -> Diagnosis {
    let d = |cause, evidence| Diagnosis {
        cause,
        evidence,
        earlier: None,
    };
    let from = if a.down.is_some() {
        a.trouble().outage_from_ns
    } else {
        a.last_beat_ns
    };
    if phase == Phase::Recovery {
        if let Some((seq, prev)) = a.trouble().restart_in_outage {
            let mut restart = d(
                PEER_RESTART,
                vec![format!(
                    "sequence restarted at {seq} after the outage (was {prev})"
                )],
            );
            if let Some(before) = a
                .trouble()
                .down_diagnosis
                .as_ref()
                .filter(|b| BEFORE_OUTAGE.contains(&b.cause))
            {
                restart.earlier = Some(before.cause);
                restart.evidence.extend(
                    before
                        .evidence
                        .iter()
                        .map(|e| format!("before the outage ({}): {e}", before.cause)),
                );
            }
            return restart;
        }
    }
    let mut continued = Vec::new();
    if phase == Phase::Recovery {
        continued.push(match a.trouble().gap_in_outage {
            Some(lost) => {
                format!("sequence continued after the outage ({lost} heartbeats never seen)")
            }
            None => format!("sequence continued at {} after the outage", a.last_seq),
        });
    }
    if phase == Phase::Recovery {
        // What was true when the outage began (the reverse direction may have
        // recovered first by now); the recovery adds how the sequence went on.
        if let Some(at_down) = &a.trouble().down_diagnosis {
            let mut d = Diagnosis::clone(at_down);
            d.evidence.extend(continued);
            return d;
        }
    }
    if a.down == Some(DownCause::Unanswered) && a.transport_alive {
        let mut ev = vec![format!(
            "{} requests in a row unanswered while the responder's TCP stayed alive",
            a.unanswered_streak
        )];
        ev.extend(continued);
        return d(PEER_UNRESPONSIVE, ev);
    }
    if let (Some(DownCause::Unanswered), Some(r)) = (a.down, reverse) {
        // Requests still arrive; what fails is the way back (answers), or the answers
        // alone while the reverse direction is healthy: one direction either way.
        let mut ev = vec![format!(
            "{} requests in a row unanswered while requests still arrive",
            a.unanswered_streak
        )];
        match reverse_healthy(r, now) {
            Some(h) => ev.extend(h.evidence),
            None => ev.push(format!(
                "the reverse direction stopped too (last heartbeat {} ms ago)",
                ms(now.saturating_sub(r.last_beat_ns))
            )),
        }
        ev.extend(continued);
        return d(ONE_WAY_LOSS, ev);
    }
    if let Some(r) = reverse {
        let r_expected = r.expected_ns();
        // The reverse direction stopped within two of its intervals of this one.
        let r_stopped = now.saturating_sub(r.last_beat_ns)
            > r_expected.saturating_add(r.grace_ns())
            || r.down.is_some();
        let r_stop_at = if r.down.is_some() {
            r.trouble().outage_from_ns
        } else {
            r.last_beat_ns
        };
        if r_stopped
            && r_stop_at.abs_diff(from) <= r_expected.max(a.expected_ns()).saturating_mul(2)
        {
            let mut ev = vec![format!(
                "both directions stopped within {} ms of each other",
                ms(r_stop_at.abs_diff(from))
            )];
            ev.extend(continued);
            return d(PATH_INTERRUPTION, ev);
        }
        if !r_stopped {
            let mut ev = vec![format!(
                "the reverse direction kept its heartbeats (last {} ms ago)",
                ms(now.saturating_sub(r.last_beat_ns))
            )];
            ev.extend(continued);
            return d(ONE_WAY_LOSS, ev);
        }
    }
    let window = LOOKBACK_INTERVALS.saturating_mul(a.expected_ns());
    let troubles = a.troubles_before(from.max(now.min(from.saturating_add(window))), window);
    if let Some((seen, expected)) = a.trouble().qos_wrong {
        let mut ev = vec![format!(
            "heartbeats marked DSCP {seen} instead of {expected} before the outage"
        )];
        if !troubles.is_empty() {
            ev.push(describe(&troubles));
        }
        ev.extend(continued);
        return d(QOS_STRIPPED, ev);
    }
    if troubles.len() >= TROUBLE_FOR_LOSS {
        let mut ev = vec![describe(&troubles)];
        ev.extend(continued);
        return d(NETWORK_LOSS, ev);
    }
    if a.down == Some(DownCause::Unanswered) {
        let mut ev = vec![format!(
            "{} requests in a row unanswered; requests still arrive",
            a.unanswered_streak
        )];
        ev.extend(continued);
        return d(PEER_UNRESPONSIVE, ev);
    }
    let mut ev = vec![format!(
        "silent since {} ms before; no reverse direction seen and no trouble before",
        ms(now.saturating_sub(from))
    )];
    ev.extend(continued);
    d(UNDETERMINED, ev)
}

fn describe(troubles: &[Trouble]) -> String {
    let count = |k| troubles.iter().filter(|t| **t == k).count();
    let parts: Vec<String> = [
        (Trouble::Gap, "gap"),
        (Trouble::Late, "late heartbeat"),
        (Trouble::Retry, "retry"),
        (Trouble::Unanswered, "unanswered request"),
        (Trouble::OutOfOrder, "out-of-order heartbeat"),
    ]
    .into_iter()
    .filter(|(k, _)| count(*k) > 0)
    .map(|(k, name)| {
        let n = count(k);
        format!("{n} {name}{}", if n == 1 { "" } else { "s" })
    })
    .collect();
    format!(
        "{} in the {LOOKBACK_INTERVALS} intervals before",
        parts.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use hbwatch_common::key::FlowKey;
    use hbwatch_common::proto::Protocol;

    const SEC: u64 = 1_000_000_000;

    /// An MDS-like association with a learned 1 s interval, last heard at `last`.
    fn assoc(last: u64) -> Assoc {
        let mut p = Protocol::Mds.default_params();
        p.interval_ms = 1000;
        let mut a = Assoc::new(FlowKey::default(), 1, p, 0, 0);
        let mut t = 0;
        let mut seq = 0;
        while t + SEC <= last {
            t += SEC;
            seq += 1;
            a.on_beat(t, seq, Some(SEC));
        }
        a
    }

    fn down_silence(a: &mut Assoc, now: u64) {
        while a.down.is_none() {
            assert!(a.on_timer(now).is_some(), "silence reaches down by {now}");
        }
    }

    #[test]
    fn restart_seen_at_recovery_is_peer_restart() {
        let mut a = assoc(10 * SEC);
        down_silence(&mut a, 20 * SEC);
        a.trouble_mut().restart_in_outage = Some((0, 10));
        let d = diagnose(&a, None, 30 * SEC, Phase::Recovery);
        assert_eq!(d.cause, PEER_RESTART);
        assert!(d.evidence[0].contains("restarted at 0"), "{:?}", d.evidence);
        // Before the recovery the restart is not known yet.
        assert_ne!(
            diagnose(&a, None, 20 * SEC, Phase::Outage).cause,
            PEER_RESTART
        );
    }

    #[test]
    fn both_directions_stopping_together_is_path_interruption() {
        let mut a = assoc(10 * SEC);
        let mut b = assoc(10 * SEC);
        b.on_beat(10 * SEC + 300 * MS, 11, None);
        down_silence(&mut a, 20 * SEC);
        down_silence(&mut b, 20 * SEC);
        let d = diagnose(&a, Some(&b), 20 * SEC, Phase::Outage);
        assert_eq!(d.cause, PATH_INTERRUPTION);
        assert!(d.evidence[0].contains("300 ms"), "{:?}", d.evidence);
        a.trouble_mut().gap_in_outage = Some(9);
        let d = diagnose(&a, Some(&b), 21 * SEC, Phase::Recovery);
        assert_eq!(d.cause, PATH_INTERRUPTION);
        assert!(d.evidence[1].contains("9 heartbeats never seen"));
    }

    #[test]
    fn recovery_keeps_the_cause_seen_when_the_outage_began() {
        let mut a = assoc(10 * SEC);
        let b = assoc(10 * SEC);
        down_silence(&mut a, 20 * SEC);
        a.trouble_mut().down_diagnosis =
            Some(Box::new(diagnose(&a, Some(&b), 20 * SEC, Phase::Outage)));
        assert_eq!(
            a.trouble().down_diagnosis.as_ref().unwrap().cause,
            PATH_INTERRUPTION
        );
        // By the time `a` recovers, `b` already has: still the same outage.
        let b_back = assoc(21 * SEC);
        let d = diagnose(&a, Some(&b_back), 21 * SEC, Phase::Recovery);
        assert_eq!(d.cause, PATH_INTERRUPTION);
        assert_eq!(d.evidence.len(), 2, "{:?}", d.evidence);
    }

    #[test]
    fn reverse_still_alive_is_one_way_loss() {
        let mut a = assoc(10 * SEC);
        let b = assoc(19 * SEC);
        down_silence(&mut a, 19 * SEC);
        let d = diagnose(&a, Some(&b), 19 * SEC + 500 * MS, Phase::Outage);
        assert_eq!(d.cause, ONE_WAY_LOSS);
    }

    #[test]
    fn reverse_that_stopped_long_before_is_not_this_outage() {
        let mut a = assoc(30 * SEC);
        let mut b = assoc(5 * SEC);
        down_silence(&mut b, 15 * SEC);
        down_silence(&mut a, 40 * SEC);
        let d = diagnose(&a, Some(&b), 40 * SEC, Phase::Outage);
        assert_ne!(d.cause, PATH_INTERRUPTION);
        assert_ne!(d.cause, ONE_WAY_LOSS);
    }

    #[test]
    fn rising_gaps_and_late_before_are_network_loss() {
        let mut a = assoc(10 * SEC);
        a.note(7 * SEC, Trouble::Gap);
        a.note(8 * SEC, Trouble::Late);
        a.note(9 * SEC, Trouble::Gap);
        down_silence(&mut a, 20 * SEC);
        let d = diagnose(&a, None, 20 * SEC, Phase::Outage);
        assert_eq!(d.cause, NETWORK_LOSS);
        assert_eq!(
            d.evidence[0],
            "2 gaps, 1 late heartbeat in the 20 intervals before"
        );
        // One old gap long before is no trend.
        let mut b = assoc(100 * SEC);
        b.note(5 * SEC, Trouble::Gap);
        b.note(6 * SEC, Trouble::Gap);
        down_silence(&mut b, 200 * SEC);
        assert_eq!(
            diagnose(&b, None, 200 * SEC, Phase::Outage).cause,
            UNDETERMINED
        );
    }

    #[test]
    fn unanswered_with_transport_alive_is_peer_unresponsive() {
        let mut a = assoc(10 * SEC);
        a.unanswered_streak = 3;
        a.transport_alive = true;
        a.down_unanswered(7 * SEC);
        let d = diagnose(&a, None, 10 * SEC, Phase::Outage);
        assert_eq!(d.cause, PEER_UNRESPONSIVE);
        assert!(d.evidence[0].contains("TCP stayed alive"));
    }

    #[test]
    fn wrong_marking_before_the_outage_is_qos_stripped() {
        let mut a = assoc(10 * SEC);
        a.trouble_mut().qos_wrong = Some((0, 46));
        a.note(9 * SEC, Trouble::Gap);
        down_silence(&mut a, 20 * SEC);
        let d = diagnose(&a, None, 20 * SEC, Phase::Outage);
        assert_eq!(d.cause, QOS_STRIPPED);
        assert!(d.evidence[0].contains("DSCP 0 instead of 46"));
    }

    #[test]
    fn nothing_to_go_on_says_undetermined() {
        let mut a = assoc(10 * SEC);
        down_silence(&mut a, 20 * SEC);
        assert_eq!(
            diagnose(&a, None, 20 * SEC, Phase::Outage).cause,
            UNDETERMINED
        );
    }

    #[test]
    fn a_restart_after_network_loss_keeps_the_loss() {
        let mut a = assoc(10 * SEC);
        a.note(9 * SEC, Trouble::Gap);
        a.note(9_500 * MS, Trouble::Gap);
        down_silence(&mut a, 20 * SEC);
        a.trouble_mut().down_diagnosis =
            Some(Box::new(diagnose(&a, None, 20 * SEC, Phase::Outage)));
        a.trouble_mut().restart_in_outage = Some((0, 10));
        let d = diagnose(&a, None, 30 * SEC, Phase::Recovery);
        assert_eq!((d.cause, d.earlier), (PEER_RESTART, Some(NETWORK_LOSS)));
        assert_eq!(
            d.evidence[1],
            "before the outage (network-loss): 2 gaps in the 20 intervals before"
        );
        // A silence both directions shared is what the restart explains: no second cause.
        let mut b = assoc(10 * SEC);
        let mut r = assoc(10 * SEC);
        down_silence(&mut b, 20 * SEC);
        down_silence(&mut r, 20 * SEC);
        b.trouble_mut().down_diagnosis =
            Some(Box::new(diagnose(&b, Some(&r), 20 * SEC, Phase::Outage)));
        b.trouble_mut().restart_in_outage = Some((0, 10));
        let d = diagnose(&b, Some(&r), 30 * SEC, Phase::Recovery);
        assert_eq!((d.cause, d.earlier), (PEER_RESTART, None));
    }

    #[test]
    fn a_healthy_reverse_makes_failing_requests_one_way_loss() {
        let r = assoc(10 * SEC);
        let d = reverse_healthy(&r, 10_400 * MS).expect("beating");
        assert_eq!(d.cause, ONE_WAY_LOSS);
        assert!(
            d.evidence[0].contains("last 400 ms ago"),
            "{:?}",
            d.evidence
        );
        // Silent beyond its interval and tolerance, or waiting for answers: not healthy.
        assert_eq!(reverse_healthy(&r, 11_600 * MS), None);
        let mut waiting = assoc(10 * SEC);
        waiting.unanswered_streak = 1;
        assert_eq!(reverse_healthy(&waiting, 10_400 * MS), None);
    }
}
