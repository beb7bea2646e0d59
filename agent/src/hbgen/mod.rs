//! Heartbeat traffic generator: builds real frames (tests, demo, benchmarks).

pub mod frame;
