//! hbwatch: telephony heartbeat watcher (userspace side).

pub mod check;
pub mod clock;
pub mod config;
pub mod convert;
pub mod correlate;
pub mod datapath;
pub mod demo;
pub mod event;
pub mod live;
pub mod locate;
pub mod metrics;
pub mod offline;
pub mod ports;
pub mod privacy;
pub mod privileges;
pub mod report;
pub mod schema;
pub mod sink;
pub mod table;
pub mod top;
pub mod tuning;

/// The eBPF object built from `agent-ebpf` by build.rs, embedded in the binary.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hbwatch"));

/// A short, stable digest of the effective configuration (for `agent.started`).
pub fn config_digest(text: &str) -> String {
    // FNV-1a: stable across builds and platforms, enough to tell two configs apart.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}
