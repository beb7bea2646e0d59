//! OPTIONS pings: any final answer shows the peer's SIP stack alive, except the codes
//! that say it is overloaded or out of service (`sip.options_failed`).

use super::transaction::TxnView;
use super::{Ctx, SipTracker};
use crate::convert::association;
use crate::event::{Action, Event, Level, Said};

impl SipTracker {
    /// Outcome of a final answer to an OPTIONS ping; true when the peer is healthy.
    pub(super) fn options_answered(
        &mut self,
        view: &TxnView,
        status: u16,
        reason: &str,
        ts: u64,
        ctx: &Ctx,
        out: &mut Vec<Event>,
    ) -> bool {
        if !self.cfg.options_fail_codes.contains(&status) {
            // Any other final answer (even 404/405) shows the peer's SIP stack alive.
            return true;
        }
        let message = format!(
            "{}: OPTIONS answered {status} {reason}: the peer reports itself overloaded or out of service",
            association(&view.assoc),
        );
        let mut ev = Self::txn_event(
            view,
            None,
            ts,
            ctx,
            Said {
                action: Action::SipOptionsFailed,
                level: Level::Warning,
                message,
            },
        );
        if let Some(sip) = ev.sip.as_mut() {
            sip.code = Some(status);
            sip.status = Some(reason.to_string());
        }
        out.push(ev);
        false
    }
}
