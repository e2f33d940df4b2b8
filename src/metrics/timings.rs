//! The figures of each model's recent generations (time to first token,
//! tokens per second), for the console's chart: the histograms `/metrics`
//! exports cannot say what the last few minutes looked like. One ring per
//! model, bounded in entries and in age, at most `MODELS` rings.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Generations kept per model.
pub const PER_MODEL: usize = 240;
/// Generations older than this are dropped.
pub const MAX_AGE: Duration = Duration::from_secs(30 * 60);
/// Models with a ring; past this the one written least recently is dropped.
pub const MODELS: usize = 256;

/// One finished generation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// When it finished, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// Time to its first token, in milliseconds.
    pub ttft_ms: f64,
    /// Generation speed after the first token (0 when unknown).
    pub tokens_per_second: f64,
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Generated tokens.
    pub completion_tokens: u32,
}

#[derive(Debug, Default)]
struct Rings {
    models: HashMap<String, (u64, VecDeque<Timing>)>,
    clock: u64,
}

/// Every model's recent generations; cheap to clone, clones share the rings.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    inner: Arc<Mutex<Rings>>,
}

impl Timings {
    /// Keeps `timing` as `model`'s newest.
    pub fn record(&self, model: &str, timing: Timing) {
        let Ok(mut rings) = self.inner.lock() else {
            return;
        };
        rings.clock += 1;
        let clock = rings.clock;
        if !rings.models.contains_key(model) && rings.models.len() >= MODELS {
            let oldest = rings
                .models
                .iter()
                .min_by_key(|(_, (touched, _))| *touched)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                rings.models.remove(&oldest);
            }
        }
        let (touched, ring) = rings.models.entry(model.to_owned()).or_default();
        *touched = clock;
        ring.push_back(timing);
        while ring.len() > PER_MODEL {
            ring.pop_front();
        }
    }

    /// `model`'s generations of the last `MAX_AGE`, oldest first.
    pub fn recent(&self, model: &str, now: SystemTime) -> Vec<Timing> {
        let since = crate::util::unix_ms(now)
            .saturating_sub(u64::try_from(MAX_AGE.as_millis()).unwrap_or(0));
        let Ok(rings) = self.inner.lock() else {
            return Vec::new();
        };
        rings.models.get(model).map_or_else(Vec::new, |(_, ring)| {
            ring.iter()
                .filter(|t| t.at_unix_ms >= since)
                .copied()
                .collect()
        })
    }
}

/// A timing of a generation that finished `now`.
pub fn timing_now(
    ttft: Duration,
    tokens_per_second: f64,
    prompt_tokens: u32,
    completion_tokens: u32,
) -> Timing {
    Timing {
        at_unix_ms: crate::util::unix_ms(SystemTime::now()),
        ttft_ms: ttft.as_secs_f64() * 1000.0,
        tokens_per_second: if tokens_per_second.is_finite() {
            tokens_per_second
        } else {
            0.0
        },
        prompt_tokens,
        completion_tokens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Timing {
        Timing {
            at_unix_ms: ms,
            ttft_ms: 1.0,
            tokens_per_second: 2.0,
            prompt_tokens: 3,
            completion_tokens: 4,
        }
    }

    #[test]
    fn rings_are_bounded_in_count_and_age() {
        let t = Timings::default();
        let now = std::time::UNIX_EPOCH + Duration::from_secs(100_000);
        let now_ms = crate::util::unix_ms(now);
        for i in 0..1000 {
            t.record("m", at(now_ms - 1000 + i));
        }
        let recent = t.recent("m", now);
        assert_eq!(recent.len(), PER_MODEL);
        assert_eq!(recent.last().unwrap().at_unix_ms, now_ms - 1);
        let later = now + MAX_AGE + Duration::from_secs(1);
        assert!(t.recent("m", later).is_empty());
        assert!(t.recent("other", now).is_empty());
    }

    #[test]
    fn models_past_the_bound_drop_the_oldest() {
        let t = Timings::default();
        let now = SystemTime::now();
        for i in 0..=MODELS {
            t.record(
                &format!("m{i}"),
                timing_now(Duration::from_millis(5), f64::NAN, 1, 2),
            );
        }
        assert!(t.recent("m0", now).is_empty());
        let last = t.recent(&format!("m{MODELS}"), now);
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].tokens_per_second, 0.0);
        assert!((last[0].ttft_ms - 5.0).abs() < 1e-9);
    }
}
