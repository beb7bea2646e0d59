//! Routine heartbeats the live datapath holds back in its flow table instead of sending a
//! record for each (`FlowState::held`, PROTOCOLS.md "Routine heartbeats stay in the
//! kernel"). The correlator takes them before any decision they bear on: an
//! association's silence timer, a diagnosis that looks at the reverse direction, a
//! summary, the status board. Taken in order and only up to the moment of the decision,
//! they give the same events as a record for each would (the differential test: live,
//! holding, against offline, where every heartbeat is a record).

use hbwatch_common::event::RawEvent;
use hbwatch_common::flow::FlowState;
use hbwatch_common::key::FlowKey;

/// Where held beats are read: the kernel's flow table live.
pub trait Held {
    /// The association's state in the datapath now, its hold included; None if the
    /// datapath does not know it (never did, closed, or evicted).
    fn flow(&self, key: &FlowKey) -> Option<FlowState>;
    /// Userspace has taken the association's held beats before `index`: their slots may
    /// be reused without sending them up.
    fn ack(&self, key: &FlowKey, index: u16);
    /// The association ended or starts over in the datapath: its acknowledgement goes.
    fn forget(&self, key: &FlowKey);
    /// A held beat was taken, as the record it stands for (metrics count it).
    fn taken(&self, _raw: &RawEvent) {}
}

/// Which held beats a take applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Those not after the association's silence deadline, as it moves with each.
    Deadline,
    /// Those not after this time (record clock).
    Time(u64),
}

/// `a` comes before `b` in a hold's wrapping index.
pub fn before(a: u16, b: u16) -> bool {
    (a.wrapping_sub(b) as i16) < 0
}
