//! Parking, sleep-mode style: a model evicted for a load may keep its
//! serving worker, without a context (KV cache, compute buffers), while the
//! parked models fit in `--park-bytes`; a request then wakes it, which
//! costs one context instead of a load. A parked model takes no
//! `--models-max` slot but counts in the host cache and keeps its GPU
//! memory; it is the first to go when the host cache or a GPU needs room,
//! and the oldest parked one goes when the park budget is full. Its worker
//! is still pinged: a parked worker that dies is a crash like any other.

use super::clock::Moment;
use super::runtime::{ModelControl, ModelRuntime};
use super::state::SupervisorState;
use super::types::{Eviction, LoadStatus, ModelState, UnloadCause};
use crate::loader::{Phase, Progress};

impl<R: ModelRuntime> SupervisorState<R> {
    /// Bytes the parked models other than `except` hold.
    pub(super) fn parked_bytes(&self, except: Option<&str>) -> u64 {
        self.models
            .iter()
            .filter(|(id, m)| m.state == ModelState::Parked && Some(id.as_str()) != except)
            .map(|(_, m)| m.host_bytes())
            .sum()
    }

    /// The least recently used parked model other than `except`.
    pub(super) fn oldest_parked(&self, except: Option<&str>) -> Option<String> {
        self.models
            .iter()
            .filter(|(id, m)| m.state == ModelState::Parked && Some(id.as_str()) != except)
            .min_by_key(|(_, m)| m.last_used.map(|t| t.mono))
            .map(|(id, _)| id.clone())
    }

    /// Parks `victim`, evicted to load `for_id` (which needs `size` more
    /// bytes of host cache), instead of unloading it: when a park budget is
    /// set and can hold it (older parked models are unloaded to make room),
    /// its worker serves, and the host cache holds it and the load together.
    /// Returns whether it did.
    pub(super) fn park(&mut self, victim: &str, for_id: &str, size: u64, now: Moment) -> bool {
        let budget = self.settings.park_bytes;
        let Some(model) = self.models.get(victim) else {
            return false;
        };
        let bytes = model.host_bytes();
        if budget == 0 || bytes > budget || !model.worker_serves() || !self.cache_fits(size) {
            return false;
        }
        while self.parked_bytes(Some(for_id)).saturating_add(bytes) > budget {
            let Some(oldest) = self.oldest_parked(Some(for_id)) else {
                break;
            };
            let cause = UnloadCause::Evicted(Eviction::ParkFull(Some(victim.to_owned())));
            self.begin_unload(&oldest, cause, now);
        }
        let Some(running) = self.models.get_mut(victim).and_then(|m| m.running.as_mut()) else {
            return false;
        };
        running.park();
        let reason = format!(
            "evicted (least recently used) to load {for_id}; its worker is kept without a context under --park-bytes"
        );
        self.transition(victim, ModelState::Parked, Some(reason), now);
        true
    }

    /// Starts waking parked `id` (its load's turn came): the worker makes its
    /// context again and [`ModelReport::Woke`](super::ModelReport::Woke)
    /// makes it ready. Returns false when nothing runs behind it to wake.
    pub(super) fn wake(&mut self, id: &str, now: Moment) -> bool {
        let Some(model) = self.models.get_mut(id) else {
            return false;
        };
        let total = model.size();
        let Some(running) = model.running.as_mut() else {
            return false;
        };
        running.wake();
        if let Some(status) = &model.waiters.load {
            status.send_replace(LoadStatus::Loading(Progress {
                phase: Phase::Prefetching,
                bytes_done: total,
                bytes_total: total,
            }));
        }
        let reason = "waking its parked worker".to_owned();
        self.transition(id, ModelState::Loading, Some(reason), now);
        true
    }

    /// Unloads the oldest parked models until the rest fit in `--park-bytes`
    /// (all of them when it is 0): after a config reload lowered it.
    pub(super) fn trim_parked(&mut self, now: Moment) {
        while self.parked_bytes(None) > self.settings.park_bytes {
            let Some(oldest) = self.oldest_parked(None) else {
                break;
            };
            let cause = UnloadCause::Evicted(Eviction::ParkFull(None));
            self.begin_unload(&oldest, cause, now);
        }
    }
}
