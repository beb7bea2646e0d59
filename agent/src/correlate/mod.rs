//! Correlation in userspace: what needs time, memory or text the datapath does not
//! have. Timers that fire during silence (missed, down), learned intervals (late),
//! recovery (up), diagnosis, periodic summaries, SIP registration state. Live and
//! offline feed it the same records; only the clock behind the timestamps differs.

pub mod sip;

use crate::convert::Converter;

/// Turns record time (`RawEvent::ts_ns`) into wall-clock nanoseconds since the epoch:
/// the monotonic-to-realtime offset live, the identity offline (capture time).
pub trait Clock {
    fn unix_ns(&self, ts_ns: u64) -> i128;
}

impl Clock for crate::clock::WallClock {
    fn unix_ns(&self, ts_ns: u64) -> i128 {
        crate::clock::WallClock::unix_ns(self, ts_ns)
    }
}

/// Offline: record times already are capture times since the epoch.
#[derive(Debug, Clone, Copy, Default)]
pub struct CaptureClock;

impl Clock for CaptureClock {
    fn unix_ns(&self, ts_ns: u64) -> i128 {
        ts_ns as i128
    }
}

/// What every correlation stage needs to build events.
pub struct Ctx<'a> {
    pub conv: &'a Converter,
    pub clock: &'a dyn Clock,
}
