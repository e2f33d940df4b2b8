//! The supervisor's notion of time. Its rules take `now` as an argument, so
//! that tests drive LRU order, idle TTLs and crash back-off without sleeping.

use std::time::{Duration, Instant, SystemTime};

/// A point in time: monotonic for the rules, wall-clock for what clients see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moment {
    /// For ordering, TTLs and back-off (never jumps).
    pub mono: Instant,
    /// For display and events.
    pub wall: SystemTime,
}

impl Moment {
    /// The current time.
    pub fn now() -> Self {
        Moment {
            mono: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// `by` later (tests move the clock by hand).
    #[cfg(test)]
    pub fn later(self, by: Duration) -> Self {
        Moment {
            mono: self.mono + by,
            wall: self.wall + by,
        }
    }

    /// Time since `earlier` (zero if it is not earlier).
    pub fn since(self, earlier: Moment) -> Duration {
        self.mono.saturating_duration_since(earlier.mono)
    }
}
