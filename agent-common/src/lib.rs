//! Per-packet heartbeat logic, written once and compiled twice: into the XDP/TC
//! programs (`agent-ebpf`) and into the userspace replay engine (`hbwatch analyze`).
//!
//! Rules that keep it verifier-safe: no allocation, no panics (no slicing or
//! unchecked indexing), bounded loops only, every packet read bounds-checked by
//! the [`frame::Frame`] implementation.
#![cfg_attr(not(test), no_std)]

pub mod counters;
pub mod engine;
pub mod event;
pub mod flow;
pub mod frag;
pub mod frame;
pub mod key;
pub mod params;
pub mod parse;
pub mod proto;
pub mod zero;
