//! Registration state: what a REGISTER's final answer means (registered, unregistered,
//! refused, credentials rejected), and the lapse when no refresh succeeds in time.

use hbwatch_common::key::FlowKey;

use super::parse::{Challenge, Credentials, Message, Method};
use super::transaction::{Txn, TxnKey, TxnState, TxnView};
use super::Ctx;
use super::{aor_user, ms, who, SipTracker, SourceKey, TimerRef, NS_PER_MS};
use crate::convert::{association, ip_text, About};
use crate::event::{Action, CSeq, Event, Level, Said, SipFields};

/// What a REGISTER asked for.
#[derive(Clone, Debug, Default)]
pub(super) struct RegisterInfo {
    pub(super) aor: String,
    pub(super) device: Option<String>,
    pub(super) contact_uri: Option<String>,
    /// The first Contact's `expires=`, else the Expires header.
    pub(super) requested_expires: Option<u32>,
    /// Expires 0 or `Contact: *`.
    pub(super) removal: bool,
    pub(super) keep_alive: bool,
    /// Built from a response whose request was not seen.
    pub(super) from_response: bool,
    /// Digest credentials it carried.
    pub(super) credentials: Vec<Credentials>,
    /// The capture cut its header section short: credentials may lie past the cut.
    pub(super) cut: bool,
    /// The challenge that answered the previous CSeq of its Call-ID, if one did.
    pub(super) earlier_challenges: Vec<Challenge>,
}

impl RegisterInfo {
    pub(super) fn of_request(msg: &Message) -> RegisterInfo {
        let first = msg.contacts.first();
        let requested_expires = first.and_then(|c| c.expires).or(msg.expires);
        RegisterInfo {
            aor: msg
                .to_aor
                .clone()
                .or_else(|| msg.from_aor.clone())
                .unwrap_or_default(),
            device: msg.contacts.iter().find_map(|c| c.device()),
            contact_uri: first.map(|c| c.uri.clone()),
            requested_expires,
            removal: msg.contact_star || requested_expires == Some(0),
            keep_alive: msg.contacts.iter().any(|c| c.cisco_keep_alive),
            from_response: false,
            credentials: msg.credentials.clone(),
            cut: msg.is_truncated(),
            earlier_challenges: Vec::new(),
        }
    }

    /// A response without its request: what the registrar's answer says.
    pub(super) fn of_response(msg: &Message) -> RegisterInfo {
        RegisterInfo {
            aor: msg
                .to_aor
                .clone()
                .or_else(|| msg.from_aor.clone())
                .unwrap_or_default(),
            device: msg.contacts.iter().find_map(|c| c.device()),
            from_response: true,
            ..RegisterInfo::default()
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct RegKey {
    pub(super) family: u8,
    pub(super) phone: [u8; 16],
    pub(super) registrar: [u8; 16],
    pub(super) aor: String,
}

impl RegKey {
    /// The registration of `aor` a REGISTER on `assoc` (phone -> registrar) is about.
    pub(super) fn new(assoc: &FlowKey, aor: &str) -> RegKey {
        RegKey {
            family: assoc.family,
            phone: assoc.orig,
            registrar: assoc.resp,
            aor: aor.to_string(),
        }
    }

    /// The registration a REGISTER transaction is about.
    pub(super) fn of(view: &TxnView, info: &RegisterInfo) -> RegKey {
        RegKey::new(&view.assoc, &info.aor)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RegState {
    Registered,
    Expired,
    Unregistered,
}

#[derive(Debug)]
pub(super) struct Registration {
    pub(super) assoc: FlowKey,
    pub(super) ifindex: u32,
    pub(super) call_id: String,
    pub(super) device: Option<String>,
    pub(super) state: RegState,
    pub(super) granted_s: u32,
    pub(super) last_success_ns: u64,
    /// Time between the last two successful registrations (the refresh period).
    pub(super) refresh_interval_ns: Option<u64>,
    /// `last_success + granted + grace`: `sip.expired` fires here.
    pub(super) expiry_ns: u64,
    pub(super) expired_at_ns: u64,
    pub(super) last_seen_ns: u64,
    /// CSeq of the last successful REGISTER.
    pub(super) cseq: u32,
    /// REGISTER requests (not re-sends) since the last success.
    pub(super) requests_since_success: u32,
    /// The latest of them: if still unanswered when the lifetime ends, the lapse waits
    /// for its answer (the registrar had the refresh in time).
    pub(super) refresh: Option<TxnKey>,
    /// The registrar's last refusal since the last success (status, reason).
    pub(super) refusal: Option<(u16, String)>,
}

/// A UA answers a digest challenge at once (milliseconds): a REGISTER this soon after
/// one is its answer, a later one a new attempt.
const CHALLENGE_ANSWERED_WITHIN_NS: u64 = 5_000_000_000;

impl SipTracker {
    /// What a new REGISTER (transaction `key` on `assoc`, at `ts`) asks, with the
    /// challenge it may be answering; counted as a refresh attempt of its registration.
    pub(super) fn register_request(
        &mut self,
        msg: &Message,
        key: &TxnKey,
        assoc: &FlowKey,
        ts: u64,
    ) -> RegisterInfo {
        let mut info = RegisterInfo::of_request(msg);
        if info.cut && info.credentials.is_empty() {
            let previous = TxnKey {
                cseq: key.cseq.wrapping_sub(1),
                ..key.clone()
            };
            let answers_it =
                |t: &&Txn| ts.saturating_sub(t.done_ns) <= CHALLENGE_ANSWERED_WITHIN_NS;
            if let Some(txn) = self.txns.get(&previous).filter(answers_it) {
                info.earlier_challenges = txn.challenges.clone();
            }
        }
        if !info.keep_alive {
            if let Some(reg) = self.regs.get_mut(&RegKey::new(assoc, &info.aor)) {
                reg.requests_since_success = reg.requests_since_success.saturating_add(1);
                reg.refresh = Some(key.clone());
            }
        }
        info
    }

    /// Registration outcome of a final answer to a REGISTER; true for a success.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn register_answered(
        &mut self,
        view: &TxnView,
        info: &RegisterInfo,
        msg: &Message,
        status: u16,
        reason: &str,
        ts: u64,
        ctx: &Ctx,
        out: &mut Vec<Event>,
    ) -> bool {
        let source = SourceKey {
            family: view.assoc.family,
            source: view.assoc.orig,
            registrar: view.assoc.resp,
        };
        if (200..300).contains(&status) {
            self.rejections.remove(&source);
            let granted = if info.from_response {
                // Request not seen: only a lifetime the answer itself states counts
                // (an Expires 0 answer could be to a backup keepalive or a removal).
                granted_expires(msg, info).filter(|&g| g > 0)
            } else if info.removal {
                if info.keep_alive {
                    // Cisco keepalive to the backup registrar: answered is all it asks.
                    return true;
                }
                Some(0)
            } else if info.contact_uri.is_none() {
                // No Contact: a query of the bindings, not a registration.
                None
            } else {
                Some(granted_expires(msg, info).unwrap_or(self.cfg.default_expires_s))
            };
            match granted {
                Some(0) => self.unregistered(view, info, msg, ts, ctx, out),
                Some(granted) => self.registered(view, info, msg, granted, ts, ctx, out),
                None => {}
            }
            return true;
        }
        let challenge = self.cfg.register_challenge_codes.contains(&status);
        let rejected = credentials_rejected(info, msg, status, challenge);
        if challenge && !rejected {
            // A first challenge (or a stale nonce): digest authentication at work.
            return false;
        }
        let key = RegKey::of(view, info);
        let why = if rejected {
            format!("credentials rejected ({status} {reason})")
        } else {
            format!("{status} {reason}")
        };
        if let Some(reg) = self.regs.get_mut(&key) {
            reg.refusal = Some((status, why.clone()));
        }
        let mut streak = None;
        if rejected {
            self.counters.credentials_rejected += 1;
            if self.rejections.contains_key(&source)
                || self.rejections.len() < self.cfg.max_registrations
            {
                let r = self.rejections.entry(source).or_default();
                r.in_row += 1;
                r.last_ns = ts;
                if !worth_alerting(r.in_row) {
                    r.unreported += 1;
                    return false;
                }
                streak = Some((r.in_row, std::mem::take(&mut r.unreported)));
            } else {
                self.counters.dropped_at_capacity += 1;
            }
        }
        let device = self.device_of(info, msg);
        let source_ip = ip_text(view.assoc.family, &view.assoc.orig);
        let streak_text = match streak {
            Some((n, _)) if n < 2 => String::new(),
            Some((n, 0)) => format!("; {n} rejections in a row from {source_ip}"),
            Some((n, quiet)) => {
                format!("; {n} rejections in a row from {source_ip} ({quiet} since the last alert)")
            }
            None => String::new(),
        };
        let mut ev = Self::txn_event(
            view,
            Some(info),
            ts,
            ctx,
            Said {
                action: Action::SipRegisterFailed,
                level: Level::Warning,
                message: format!(
                    "{}: REGISTER{} of {} failed: {why}{streak_text}",
                    association(&view.assoc),
                    if info.keep_alive { " keepalive" } else { "" },
                    who(device.as_deref(), &info.aor),
                ),
            },
        );
        if let Some(sip) = ev.sip.as_mut() {
            sip.code = Some(status);
            sip.status = Some(reason.to_string());
            sip.credentials_rejected = rejected.then_some(true);
            sip.device = device;
            sip.rejections = streak.map(|(n, _)| n);
        }
        out.push(ev);
        false
    }

    fn device_of(&self, info: &RegisterInfo, msg: &Message) -> Option<String> {
        info.device
            .clone()
            .or_else(|| msg.contacts.iter().find_map(|c| c.device()))
            .or_else(|| aor_user(&info.aor))
    }

    #[allow(clippy::too_many_arguments)]
    fn registered(
        &mut self,
        view: &TxnView,
        info: &RegisterInfo,
        msg: &Message,
        granted_s: u32,
        ts: u64,
        ctx: &Ctx,
        out: &mut Vec<Event>,
    ) {
        let device = self.device_of(info, msg);
        let key = RegKey::of(view, info);
        if !self.regs.contains_key(&key) && self.regs.len() >= self.cfg.max_registrations {
            self.counters.dropped_at_capacity += 1;
            return;
        }
        let expiry_ns = ts
            .saturating_add(u64::from(granted_s).saturating_mul(1_000_000_000))
            .saturating_add(self.cfg.expiry_grace_ms.saturating_mul(NS_PER_MS));
        let reg = self
            .regs
            .entry(key.clone())
            .or_insert_with(|| Registration {
                assoc: view.assoc,
                ifindex: view.ifindex,
                call_id: String::new(),
                device: None,
                state: RegState::Unregistered,
                granted_s,
                last_success_ns: ts,
                refresh_interval_ns: None,
                expiry_ns,
                expired_at_ns: 0,
                last_seen_ns: ts,
                cseq: view.cseq,
                requests_since_success: 0,
                refresh: None,
                refusal: None,
            });
        // A new Call-ID is a new registration by a restarted UA (RFC 3261 §10.2.4).
        let announce = reg.state != RegState::Registered || reg.call_id != view.call_id;
        let downtime_ns =
            (reg.state == RegState::Expired).then(|| ts.saturating_sub(reg.expired_at_ns));
        reg.refresh_interval_ns = (reg.state == RegState::Registered && !announce)
            .then(|| ts.saturating_sub(reg.last_success_ns));
        reg.assoc = view.assoc;
        reg.ifindex = view.ifindex;
        reg.call_id = view.call_id.to_string();
        if device.is_some() {
            reg.device = device;
        }
        reg.state = RegState::Registered;
        reg.granted_s = granted_s;
        reg.last_success_ns = ts;
        reg.expiry_ns = expiry_ns;
        reg.last_seen_ns = ts;
        reg.cseq = view.cseq;
        reg.requests_since_success = 0;
        reg.refresh = None;
        reg.refusal = None;
        let device = reg.device.clone();
        self.set_timer(expiry_ns, TimerRef::Expiry(key));
        if !announce {
            return;
        }
        let again = match downtime_ns {
            Some(d) => format!(
                " (again, {} s after its registration expired)",
                d / 1_000_000_000
            ),
            None => String::new(),
        };
        let what = format!("registered for {granted_s} s{again}");
        let mut ev = Self::state_event(
            view,
            info,
            ts,
            ctx,
            Action::SipRegistered,
            &what,
            granted_s,
            device,
        );
        ev.heartbeat.downtime_ms = downtime_ns.map(ms);
        out.push(ev);
    }

    /// `sip.registered` / `sip.unregistered`: `{who} {what}`, with the lifetime granted.
    #[allow(clippy::too_many_arguments)]
    fn state_event(
        view: &TxnView,
        info: &RegisterInfo,
        ts: u64,
        ctx: &Ctx,
        action: Action,
        what: &str,
        expires: u32,
        device: Option<String>,
    ) -> Event {
        let message = format!(
            "{}: {} {what}",
            association(&view.assoc),
            who(device.as_deref(), &info.aor),
        );
        let mut ev = Self::txn_event(
            view,
            Some(info),
            ts,
            ctx,
            Said {
                action,
                level: Level::Info,
                message,
            },
        );
        if let Some(sip) = ev.sip.as_mut() {
            sip.expires = Some(expires);
            sip.device = device;
        }
        ev
    }

    fn unregistered(
        &mut self,
        view: &TxnView,
        info: &RegisterInfo,
        msg: &Message,
        ts: u64,
        ctx: &Ctx,
        out: &mut Vec<Event>,
    ) {
        let key = RegKey::of(view, info);
        let mut device = self.device_of(info, msg);
        if let Some(reg) = self.regs.get_mut(&key) {
            reg.state = RegState::Unregistered;
            reg.last_seen_ns = ts;
            device = device.or_else(|| reg.device.clone());
        }
        let what = "unregistered (REGISTER with Expires 0 accepted)";
        out.push(Self::state_event(
            view,
            info,
            ts,
            ctx,
            Action::SipUnregistered,
            what,
            0,
            device,
        ));
    }

    /// The registration lapsed: one `sip.expired` that says what the phone and the
    /// registrar did since the last success (no `peer.down` beside it: one lapse, one alert).
    pub(super) fn fire_expired(
        &mut self,
        key: &RegKey,
        at_ns: u64,
        ctx: &Ctx,
        out: &mut Vec<Event>,
    ) {
        let Some(reg) = self.regs.get_mut(key) else {
            return;
        };
        // A refresh sent before this deadline and not answered yet (a slow or lossy
        // registrar, retransmissions): the registrar had it in time; decide when its
        // answer comes or times out.
        let waiting = reg
            .refresh
            .as_ref()
            .and_then(|k| self.txns.get(k))
            .filter(|t| {
                t.state == TxnState::Pending && t.first_sent_ns < at_ns && t.deadline_ns >= at_ns
            });
        if let Some(txn) = waiting {
            // At its answer deadline; ties fire in the order set: its unanswered first.
            reg.expiry_ns = txn.deadline_ns;
            let at = reg.expiry_ns;
            self.set_timer(at, TimerRef::Expiry(key.clone()));
            return;
        }
        reg.state = RegState::Expired;
        reg.expired_at_ns = at_ns;
        let silence_ns = at_ns.saturating_sub(reg.last_success_ns);
        let sent = reg.requests_since_success;
        let (diagnosis, cause) = match (&reg.refusal, sent) {
            (Some((_, why)), _) => (None, format!("the registrar refused the refresh: {why}")),
            (None, 0) => (
                Some(crate::correlate::diagnosis::UNDETERMINED),
                "no REGISTER from the phone seen since: the phone is gone (power, network) or registers elsewhere".to_string(),
            ),
            (None, n) => (
                Some(crate::correlate::diagnosis::PEER_UNRESPONSIVE),
                format!(
                    "the phone sent {n} REGISTER{} since, the registrar answered none",
                    if n == 1 { "" } else { "s" }
                ),
            ),
        };
        let refresh = reg.refresh_interval_ns;
        let message = format!(
            "{}: registration of {} expired: no successful refresh within its {} s lifetime ({} s since the last{}); {cause}",
            association(&reg.assoc),
            who(reg.device.as_deref(), &key.aor),
            reg.granted_s,
            silence_ns / 1_000_000_000,
            match refresh {
                Some(i) => format!(", refreshes came every {} s", i / 1_000_000_000),
                None => String::new(),
            }
        );
        let mut ev = ctx.conv.association_event(
            About {
                key: &reg.assoc,
                ifindex: Some(reg.ifindex),
                unix_ns: ctx.clock.unix_ns(at_ns),
            },
            Said {
                action: Action::SipExpired,
                level: Level::Error,
                message,
            },
        );
        ev.sip = Some(SipFields {
            call_id: Some(reg.call_id.clone()),
            aor: Some(key.aor.clone()).filter(|a| !a.is_empty()),
            device: reg.device.clone(),
            expires: Some(reg.granted_s),
            cseq: Some(CSeq {
                code: reg.cseq,
                method: Method::Register.name(),
            }),
            ..SipFields::default()
        });
        let hb = &mut ev.heartbeat;
        hb.seq = Some(reg.cseq);
        hb.silence_ms = Some(ms(silence_ns));
        hb.interval_ms = refresh.map(ms);
        hb.expected_interval_ms = refresh.map(ms);
        // Refreshes that were due in the silence (one when the period is not known yet),
        // to the nearest period: the silence is lifetime + grace, often a whole number
        // of periods, and a refresh a millisecond early must not change the count.
        hb.missed = Some(
            refresh
                .filter(|&i| i > 0)
                .map(|i| silence_ns.saturating_add(i / 2) / i)
                .unwrap_or(1)
                .max(1),
        );
        hb.diagnosis = diagnosis;
        hb.evidence = Some(vec![
            format!(
                "no successful REGISTER refresh within the granted {} s",
                reg.granted_s
            ),
            cause,
        ]);
        let assoc = reg.assoc;
        if let Some(stats) = self.assocs.get_mut(&assoc) {
            stats.run.outages += 1;
            stats.period.outages += 1;
            stats.diagnoses.extend(diagnosis);
        }
        out.push(ev);
    }
}

/// Which rejection in a row is alerted: the first three, then 5, 10, 20, 50, 100, ...:
/// a phone with a wrong password retrying all day, or a password guesser, gives a
/// handful of alerts that say how many, not one per attempt.
pub(super) fn worth_alerting(in_row: u64) -> bool {
    if in_row <= 3 {
        return true;
    }
    let mut decade = 1u64;
    while decade <= in_row / 5 {
        decade = decade.saturating_mul(10);
    }
    // `in_row` is now below 5 * decade: it is 1, 2 or 5 times a power of ten or not.
    [decade, 2 * decade, 5 * decade / 10].contains(&in_row)
}

/// Whether a failure answer to a REGISTER rejects the credentials it carried: a
/// challenge (401/407) for a realm it already had credentials for, without
/// `stale=true`, or one offering no new challenge at all; or a 403 to it.
///
/// When the capture cut the request before any credentials (a long REGISTER, only its
/// first bytes captured), a non-stale challenge for the realm that also challenged
/// the previous CSeq of the Call-ID is the rejection: digest answers a challenge
/// once, so being challenged again in a row means the answer was refused.
fn credentials_rejected(info: &RegisterInfo, msg: &Message, status: u16, challenge: bool) -> bool {
    let again = |c: &Challenge| {
        info.earlier_challenges
            .iter()
            .any(|e| e.proxy == c.proxy && e.realm == c.realm)
    };
    if info.credentials.is_empty() {
        return challenge && info.cut && msg.challenges.iter().any(|c| !c.stale && again(c));
    }
    if status == 403 {
        return true;
    }
    if !challenge {
        return false;
    }
    if msg.challenges.is_empty() {
        // Nothing to answer with; unless the capture cut the challenge off.
        return !msg.is_truncated();
    }
    msg.challenges.iter().any(|c| {
        !c.stale
            && info
                .credentials
                .iter()
                .any(|cred| cred.proxy == c.proxy && cred.realm == c.realm)
    })
}

/// The lifetime a registrar granted (RFC 3261 §10.2.4): the `expires` parameter of our
/// own binding in its answer, else of its only binding, else its Expires header; else
/// what we asked for.
fn granted_expires(resp: &Message, info: &RegisterInfo) -> Option<u32> {
    let own = info.contact_uri.as_ref().and_then(|uri| {
        resp.contacts
            .iter()
            .find(|c| c.uri.eq_ignore_ascii_case(uri))
    });
    let only = match resp.contacts.as_slice() {
        [only] => Some(only),
        _ => None,
    };
    own.and_then(|c| c.expires)
        .or_else(|| only.and_then(|c| c.expires))
        .or(resp.expires)
        .or(info.requested_expires)
}
