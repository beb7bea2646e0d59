//! Transactions: a request paired with its final answer by Call-ID + CSeq number +
//! method, from either order of arrival; re-sends (`heartbeat.retry`), answers that
//! never come (`heartbeat.unanswered`, by timer), RTT. What an answer means is for
//! [`super::registration`] (REGISTER) and [`super::options`] (OPTIONS).

use hbwatch_common::event::RawEvent;
use hbwatch_common::key::FlowKey;

use super::parse::{Challenge, Message, Method};
use super::registration::RegisterInfo;
use super::{reversed, sip_key, who, Ctx, SipTracker, TimerRef, NS_PER_MS};
use crate::convert::{association, About};
use crate::event::{Action, CSeq, Event, Level, Said, SipFields};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct TxnKey {
    pub(super) family: u8,
    pub(super) client: [u8; 16],
    pub(super) server: [u8; 16],
    pub(super) call_id: String,
    pub(super) cseq: u32,
    pub(super) method: Method,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TxnState {
    Pending,
    Answered,
    /// Reported unanswered; a late answer still updates registration state.
    Unanswered,
}

#[derive(Debug)]
pub(super) struct Txn {
    /// Request sender -> receiver, ports as seen.
    pub(super) assoc: FlowKey,
    pub(super) ifindex: u32,
    pub(super) first_sent_ns: u64,
    pub(super) attempts: u32,
    pub(super) deadline_ns: u64,
    pub(super) state: TxnState,
    /// When it was answered or reported.
    pub(super) done_ns: u64,
    pub(super) register: Option<RegisterInfo>,
    /// A REGISTER's challenge answer (401/407), for the next CSeq's verdict.
    pub(super) challenges: Vec<Challenge>,
}

/// What a transaction's events need to say who it was.
pub(super) struct TxnView<'a> {
    pub(super) assoc: FlowKey,
    pub(super) ifindex: u32,
    pub(super) call_id: &'a str,
    pub(super) cseq: u32,
    pub(super) method: Method,
}

impl SipTracker {
    /// A request: a new transaction with an answer deadline, or a re-send of a known one.
    pub(super) fn on_request(
        &mut self,
        msg: &Message,
        method: Method,
        ts: u64,
        raw: &RawEvent,
        ctx: &Ctx,
        out: &mut Vec<Event>,
    ) {
        let (Some(call_id), Some(cseq)) = (msg.call_id.as_ref(), msg.cseq) else {
            self.counters.incomplete += 1;
            return;
        };
        let key = TxnKey {
            family: raw.key.family,
            client: raw.key.orig,
            server: raw.key.resp,
            call_id: call_id.clone(),
            cseq: cseq.number,
            method,
        };
        if let Some(txn) = self.txns.get_mut(&key) {
            // The same transaction again: a retransmission, not a new heartbeat.
            txn.attempts = txn.attempts.saturating_add(1);
            if txn.attempts == 2 {
                let view = TxnView {
                    assoc: txn.assoc,
                    ifindex: txn.ifindex,
                    call_id,
                    cseq: cseq.number,
                    method,
                };
                let reg = txn.register.as_ref();
                let mut ev = Self::txn_event(
                    &view,
                    reg,
                    ts,
                    ctx,
                    Said {
                        action: Action::HeartbeatRetry,
                        level: Level::Warning,
                        message: format!(
                            "{}: {} CSeq {} sent again (attempt 2): no final response yet",
                            association(&view.assoc),
                            method.name(),
                            cseq.number
                        ),
                    },
                );
                ev.heartbeat.seq = Some(cseq.number);
                ev.heartbeat.attempt = Some(2);
                out.push(ev);
            }
            return;
        }
        if self.txns.len() >= self.cfg.max_transactions {
            self.counters.dropped_at_capacity += 1;
            return;
        }
        let assoc = sip_key(&raw.key);
        let register =
            (method == Method::Register).then(|| self.register_request(msg, &key, &assoc, ts));
        let deadline_ns = ts.saturating_add(self.cfg.answer_timeout_ms.saturating_mul(NS_PER_MS));
        // Its answer came first: what it said was acted on then; count it, no timer.
        let answered_ns = self.early_answers.remove(&key);
        if answered_ns.is_none() {
            self.set_timer(deadline_ns, TimerRef::Answer(key.clone()));
        }
        self.txns.insert(
            key,
            Txn {
                assoc,
                ifindex: raw.ifindex,
                first_sent_ns: ts,
                attempts: 1,
                deadline_ns,
                state: if answered_ns.is_some() {
                    TxnState::Answered
                } else {
                    TxnState::Pending
                },
                done_ns: answered_ns.unwrap_or(0),
                register,
                challenges: Vec::new(),
            },
        );
        let mut counted = false;
        if let Some(stats) = self.assoc_stats(&assoc, raw.ifindex, ts) {
            stats.active = true;
            if let Some(answered_ns) = answered_ns {
                stats.answered();
                counted = true;
                if answered_ns >= ts {
                    stats.rtt(answered_ns - ts);
                }
            }
        }
        if let (true, Some(log)) = (counted, &mut self.beats) {
            log.beat(&assoc, ts);
        }
    }

    /// A final answer: paired with its request (RTT, what it means for a REGISTER or
    /// an OPTIONS), or kept for a request handed up later.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_response(
        &mut self,
        msg: &Message,
        status: u16,
        reason: &str,
        method: Method,
        ts: u64,
        raw: &RawEvent,
        ctx: &Ctx,
        out: &mut Vec<Event>,
    ) {
        let (Some(call_id), Some(cseq)) = (msg.call_id.as_ref(), msg.cseq) else {
            self.counters.incomplete += 1;
            return;
        };
        if status < 200 {
            // Provisional: the request arrived, but it is not an answer.
            return;
        }
        let key = TxnKey {
            family: raw.key.family,
            client: raw.key.resp,
            server: raw.key.orig,
            call_id: call_id.clone(),
            cseq: cseq.number,
            method,
        };
        let (assoc, ifindex, register, timely) = match self.txns.get_mut(&key) {
            Some(txn) if txn.state == TxnState::Answered => {
                self.counters.duplicate_responses += 1;
                return;
            }
            Some(txn) => {
                let timely = txn.state == TxnState::Pending;
                txn.state = TxnState::Answered;
                if self.cfg.register_challenge_codes.contains(&status) {
                    txn.challenges = msg.challenges.clone();
                }
                txn.done_ns = ts;
                // Karn: after a retransmission the answer may be to either send.
                let rtt =
                    (timely && txn.attempts == 1).then(|| ts.saturating_sub(txn.first_sent_ns));
                let found = (txn.assoc, txn.ifindex, txn.register.clone(), timely);
                let sent_ns = txn.first_sent_ns;
                let mut counted = false;
                if let Some(stats) = self.assoc_stats(&found.0, found.1, ts) {
                    stats.active = true;
                    if timely {
                        stats.answered();
                        counted = true;
                    }
                    if let Some(rtt) = rtt {
                        stats.rtt(rtt);
                    }
                }
                if let (true, Some(log)) = (counted, &mut self.beats) {
                    log.beat(&found.0, sent_ns);
                }
                found
            }
            None if self.early_answers.contains_key(&key) => {
                self.counters.duplicate_responses += 1;
                return;
            }
            None => {
                self.counters.unmatched_responses += 1;
                if self.early_answers.len() < self.cfg.max_transactions {
                    self.early_answers.insert(key.clone(), ts);
                }
                let register = (method == Method::Register).then(|| RegisterInfo::of_response(msg));
                (reversed(&raw.key), raw.ifindex, register, false)
            }
        };
        let view = TxnView {
            assoc,
            ifindex,
            call_id,
            cseq: cseq.number,
            method,
        };
        let success = match method {
            Method::Register => {
                let info = register.unwrap_or_else(|| RegisterInfo::of_response(msg));
                self.register_answered(&view, &info, msg, status, reason, ts, ctx, out)
            }
            _ => self.options_answered(&view, status, reason, ts, ctx, out),
        };
        if success && timely {
            if let Some(stats) = self.assocs.get_mut(&assoc) {
                stats.beat(ts);
            }
        }
    }

    /// An event about one transaction, `sip.*` identity filled.
    pub(super) fn txn_event(
        view: &TxnView,
        register: Option<&RegisterInfo>,
        ts: u64,
        ctx: &Ctx,
        said: Said,
    ) -> Event {
        let mut ev = ctx.conv.association_event(
            About {
                key: &view.assoc,
                ifindex: Some(view.ifindex),
                unix_ns: ctx.clock.unix_ns(ts),
            },
            said,
        );
        ev.sip = Some(SipFields {
            call_id: Some(view.call_id.to_string()),
            aor: register.map(|r| r.aor.clone()).filter(|a| !a.is_empty()),
            device: register.and_then(|r| r.device.clone()),
            method: Some(view.method.name().to_string()),
            cseq: Some(CSeq {
                code: view.cseq,
                method: view.method.name(),
            }),
            ..SipFields::default()
        });
        ev
    }

    /// A request's answer deadline passed: `heartbeat.unanswered`.
    pub(super) fn fire_unanswered(
        &mut self,
        key: &TxnKey,
        at_ns: u64,
        ctx: &Ctx,
        out: &mut Vec<Event>,
    ) {
        let Some(txn) = self.txns.get_mut(key) else {
            return;
        };
        txn.state = TxnState::Unanswered;
        txn.done_ns = at_ns;
        let (assoc, ifindex, attempts) = (txn.assoc, txn.ifindex, txn.attempts);
        let register = txn.register.clone();
        if let Some(stats) = self.assoc_stats(&assoc, ifindex, at_ns) {
            stats.lost();
            stats.active = true;
        }
        let view = TxnView {
            assoc,
            ifindex,
            call_id: &key.call_id,
            cseq: key.cseq,
            method: key.method,
        };
        let what = match &register {
            Some(info) if info.keep_alive => format!(
                "keepalive REGISTER of {} to the backup registrar",
                who(info.device.as_deref(), &info.aor)
            ),
            Some(info) => format!("REGISTER of {}", who(info.device.as_deref(), &info.aor)),
            None => key.method.name().to_string(),
        };
        let timeout_ms = self.cfg.answer_timeout_ms;
        let message = format!(
            "{}: {what} (CSeq {}) got no final response within {timeout_ms} ms (sent {attempts} time{})",
            association(&assoc),
            key.cseq,
            if attempts == 1 { "" } else { "s" }
        );
        let mut ev = Self::txn_event(
            &view,
            register.as_ref(),
            at_ns,
            ctx,
            Said {
                action: Action::HeartbeatUnanswered,
                level: Level::Warning,
                message,
            },
        );
        ev.heartbeat.seq = Some(key.cseq);
        ev.heartbeat.timeout_ms = Some(timeout_ms);
        out.push(ev);
    }
}
