//! Least privilege: once the programs are verified and attached, the agent keeps only
//! what running needs. CAP_BPF stays (every map read, the counters and SIGHUP's table
//! writes are bpf() calls, refused without it while unprivileged BPF is off) and
//! CAP_NET_ADMIN stays (detaching at exit, re-attaching an interface that comes back).
//! CAP_PERFMON (verifier only), CAP_SYS_RESOURCE (memlock, load only) and anything
//! else a root start had go, from every set, so no child regains them.

use caps::{CapSet, Capability, CapsHashSet};
use tracing::{debug, info, warn};

const KEEP: [Capability; 2] = [Capability::CAP_BPF, Capability::CAP_NET_ADMIN];

/// Drops every capability but [`KEEP`]; returns the names dropped from the effective set.
pub fn drop_after_load() -> Vec<String> {
    let keep: CapsHashSet = KEEP.into_iter().collect();
    let before = caps::read(None, CapSet::Effective).unwrap_or_default();
    // The bounding set first: that needs CAP_SETPCAP, which goes with the rest below.
    if before.contains(&Capability::CAP_SETPCAP) {
        for cap in caps::all().difference(&keep) {
            if let Err(e) = caps::drop(None, CapSet::Bounding, *cap) {
                debug!("bounding set: {cap}: {e}");
            }
        }
    }
    // Ambient must stay within inheritable and permitted: shrink it first.
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        let current = match caps::read(None, set) {
            Ok(c) => c,
            Err(e) => {
                warn!("capabilities: cannot read the {set:?} set: {e}");
                continue;
            }
        };
        let kept: CapsHashSet = current.intersection(&keep).copied().collect();
        if kept != current {
            if let Err(e) = caps::set(None, set, &kept) {
                warn!("capabilities: cannot reduce the {set:?} set: {e}");
            }
        }
    }
    let mut dropped: Vec<String> = before.difference(&keep).map(|c| c.to_string()).collect();
    dropped.sort();
    if !dropped.is_empty() {
        info!(
            "dropped {} capabilities after loading; keeping CAP_BPF and CAP_NET_ADMIN",
            dropped.len()
        );
    }
    dropped
}
