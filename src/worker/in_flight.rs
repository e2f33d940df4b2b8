//! The requests a worker is serving, as the daemon sees them, so that its
//! crash report can list them: what kind, from which interface, for how
//! long, and how many tokens had come back. Never prompt text. Bounded: past
//! [`MAX_TRACKED`] requests, new ones are served untracked.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::crashes::CrashRequest;

/// Most requests tracked per worker.
pub const MAX_TRACKED: usize = 1024;

#[derive(Debug)]
struct Entry {
    kind: &'static str,
    client: &'static str,
    started: Instant,
    generated: u64,
}

#[derive(Debug, Default)]
struct Requests {
    next_id: u64,
    by_id: BTreeMap<u64, Entry>,
}

/// One worker's requests in flight; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<Mutex<Requests>>);

impl InFlight {
    /// Tracks a `kind` request (`generate`, `chat`, ...) from `client`
    /// (`http`, `grpc`) until the returned guard is dropped.
    pub fn begin(&self, kind: &'static str, client: &'static str) -> Tracked {
        let id = self.0.lock().ok().and_then(|mut r| {
            if r.by_id.len() >= MAX_TRACKED {
                return None;
            }
            r.next_id = r.next_id.wrapping_add(1);
            let id = r.next_id;
            let entry = Entry {
                kind,
                client,
                started: Instant::now(),
                generated: 0,
            };
            r.by_id.insert(id, entry);
            Some(id)
        });
        Tracked {
            set: self.clone(),
            id,
        }
    }

    /// The requests now, oldest first.
    pub fn snapshot(&self) -> Vec<CrashRequest> {
        let Ok(r) = self.0.lock() else {
            return Vec::new();
        };
        r.by_id
            .iter()
            .map(|(id, e)| CrashRequest {
                id: *id,
                kind: e.kind.to_owned(),
                client: e.client.to_owned(),
                running_ms: u64::try_from(e.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                generated_tokens: e.generated,
            })
            .collect()
    }
}

/// A tracked request; dropping it ends the tracking.
#[derive(Debug)]
pub struct Tracked {
    set: InFlight,
    id: Option<u64>,
}

impl Tracked {
    /// `tokens` more tokens came back.
    pub fn generated(&self, tokens: usize) {
        let (Some(id), Ok(mut r)) = (self.id, self.set.0.lock()) else {
            return;
        };
        if let Some(e) = r.by_id.get_mut(&id) {
            e.generated = e
                .generated
                .saturating_add(u64::try_from(tokens).unwrap_or(u64::MAX));
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let (Some(id), Ok(mut r)) = (self.id, self.set.0.lock()) {
            r.by_id.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_listed_while_they_run_with_their_tokens() {
        let set = InFlight::default();
        let a = set.begin("generate", "grpc");
        let b = set.begin("chat", "http");
        a.generated(3);
        a.generated(2);
        let now = set.snapshot();
        assert_eq!(now.len(), 2);
        assert_eq!(
            (now[0].kind.as_str(), now[0].client.as_str()),
            ("generate", "grpc")
        );
        assert_eq!(now[0].generated_tokens, 5);
        assert_eq!(now[1].client, "http");
        drop(a);
        drop(b);
        assert!(set.snapshot().is_empty());
    }

    #[test]
    fn tracking_is_bounded() {
        let set = InFlight::default();
        let held: Vec<Tracked> = (0..MAX_TRACKED + 10)
            .map(|_| set.begin("embed", "grpc"))
            .collect();
        assert_eq!(set.snapshot().len(), MAX_TRACKED);
        drop(held);
        assert!(set.snapshot().is_empty());
    }
}
