//! Restarts after worker crashes: the first restart is immediate, repeated
//! crashes back off exponentially, and a worker that ran long enough resets it.

use std::time::{Duration, Instant};

/// First back-off after a second crash in a row.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest back-off.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A worker that served this long before crashing starts the count afresh.
const STABLE_AFTER: Duration = Duration::from_secs(300);

/// One model's crash history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CrashRecord {
    /// Crashes in a row.
    pub in_a_row: u32,
    /// No automatic restart before this.
    pub restart_after: Option<Instant>,
}

impl CrashRecord {
    /// Records a crash of a worker that started at `started` (None: it never served).
    /// Returns the back-off before the next automatic restart.
    pub fn crashed(&mut self, started: Option<Instant>, now: Instant) -> Duration {
        if started.is_some_and(|s| now.saturating_duration_since(s) >= STABLE_AFTER) {
            self.in_a_row = 0;
        }
        self.in_a_row = self.in_a_row.saturating_add(1);
        let backoff = backoff(self.in_a_row);
        self.restart_after = (!backoff.is_zero()).then(|| now + backoff);
        backoff
    }

    /// Time left before an automatic restart is allowed.
    pub fn wait_left(&self, now: Instant) -> Option<Duration> {
        self.restart_after
            .map(|t| t.saturating_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    /// A clean stop: the history is forgotten.
    pub fn reset(&mut self) {
        *self = CrashRecord::default();
    }
}

/// No wait after one crash; 1 s, 2 s, 4 s ... up to 60 s after more in a row.
pub fn backoff(in_a_row: u32) -> Duration {
    if in_a_row <= 1 {
        return Duration::ZERO;
    }
    let doublings = (in_a_row - 2).min(16);
    FIRST_BACKOFF
        .saturating_mul(1u32 << doublings)
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_after_the_first_crash_and_is_capped() {
        let secs: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [0, 1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn a_long_lived_worker_starts_the_count_afresh() {
        let t0 = Instant::now();
        let mut r = CrashRecord::default();
        assert_eq!(r.crashed(Some(t0), t0), Duration::ZERO);
        assert_eq!(r.wait_left(t0), None);
        assert_eq!(r.crashed(None, t0), Duration::from_secs(1));
        assert_eq!(r.wait_left(t0), Some(Duration::from_secs(1)));
        let later = t0 + STABLE_AFTER + Duration::from_secs(1);
        assert_eq!(r.crashed(Some(t0), later), Duration::ZERO);
        assert_eq!(r.in_a_row, 1);
        r.reset();
        assert_eq!(r, CrashRecord::default());
    }
}
