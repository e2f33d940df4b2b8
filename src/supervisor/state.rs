//! The supervisor's state: every model's record and the rules that move
//! them. Plain data driven by method calls that take `now`: the actor in
//! `mod.rs` feeds it messages and the clock, and a [`ModelRuntime`] starts
//! and stops what runs behind each model, so the rules are tested without
//! processes (`tests/rules.rs`). The rules themselves are split by concern:
//! `loads.rs` (admission, the queue, LRU), `leases.rs` (requests and
//! workers), `park.rs` (parked workers), `pressure.rs` (GPU memory),
//! `reconcile.rs` (the directory, TTL, config reloads).

use std::collections::{BTreeMap, VecDeque};

use tokio::sync::broadcast;

use super::SupervisorSettings;
use super::clock::Moment;
use super::record::ModelRecord;
use super::runtime::ModelRuntime;
use super::types::{ModelEvent, ModelState, ModelView, StatusView, SupervisorError, UnloadCause};

pub(super) struct SupervisorState<R: ModelRuntime> {
    pub(super) settings: SupervisorSettings,
    pub(super) models: BTreeMap<String, ModelRecord<R>>,
    /// Loads waiting for room, oldest first.
    pub(super) queue: VecDeque<String>,
    pub(super) events: broadcast::Sender<ModelEvent>,
    pub(super) runtime: R,
    pub(super) next_generation: u64,
    pub(super) catalog_generation: u64,
}

impl<R: ModelRuntime> SupervisorState<R> {
    pub(super) fn new(
        settings: SupervisorSettings,
        events: broadcast::Sender<ModelEvent>,
        runtime: R,
    ) -> Self {
        SupervisorState {
            settings,
            models: BTreeMap::new(),
            queue: VecDeque::new(),
            events,
            runtime,
            next_generation: 0,
            catalog_generation: 0,
        }
    }

    /// What `id`'s worker runs with under the current settings.
    pub(super) fn effective(&self, id: &str) -> crate::settings::Effective {
        let l = &self.settings;
        l.profiles.effective(id, l.worker, l.load.mlock, l.idle_ttl)
    }

    /// The model `name` means: a model id, else an alias from the config.
    pub(super) fn resolve(&self, name: &str) -> String {
        if self.models.contains_key(name) {
            return name.to_owned();
        }
        self.settings
            .profiles
            .resolve_alias(name)
            .unwrap_or(name)
            .to_owned()
    }

    pub(super) fn record(&self, id: &str) -> Result<&ModelRecord<R>, SupervisorError> {
        self.models
            .get(id)
            .filter(|m| !m.removed)
            .ok_or_else(|| SupervisorError::NotFound(id.to_owned()))
    }

    /// Moves `id` to `state` and publishes the change.
    pub(super) fn transition(
        &mut self,
        id: &str,
        state: ModelState,
        reason: Option<String>,
        now: Moment,
    ) {
        self.publish(id, state, reason, None, now);
    }

    /// Moves `id` to `state` because of `cause` and publishes the change.
    pub(super) fn transition_for(
        &mut self,
        id: &str,
        state: ModelState,
        cause: UnloadCause,
        now: Moment,
    ) {
        self.publish(id, state, Some(cause.to_string()), Some(cause), now);
    }

    fn publish(
        &mut self,
        id: &str,
        state: ModelState,
        reason: Option<String>,
        cause: Option<UnloadCause>,
        now: Moment,
    ) {
        let Some(model) = self.models.get_mut(id) else {
            return;
        };
        let previous = model.state;
        model.state = state;
        if state == ModelState::Failed {
            model.failure = reason.clone();
        } else if state != previous {
            model.failure = None;
        }
        if state != previous || reason.is_some() {
            if let Some(reason) = reason.as_deref() {
                tracing::info!(model = %id, model_state = state.name(), previous_state = previous.name(), reason, "model {id} is {}: {reason}", state.name());
            } else {
                tracing::info!(model = %id, model_state = state.name(), previous_state = previous.name(), "model {id} is {}", state.name());
            }
            let _ = self.events.send(ModelEvent {
                id: id.to_owned(),
                state,
                previous,
                reason,
                cause,
                at: now.wall,
            });
        }
    }

    pub(super) fn list(&self) -> Vec<ModelView> {
        self.models
            .values()
            .filter(|m| !m.removed)
            .map(ModelRecord::view)
            .collect()
    }

    pub(super) fn view(&self, id: &str) -> Result<ModelView, SupervisorError> {
        self.record(id).map(ModelRecord::view)
    }

    pub(super) fn status(&self) -> StatusView {
        let by_state = ModelState::ALL
            .iter()
            .map(|&st| {
                let n = self
                    .models
                    .values()
                    .filter(|m| !m.removed && m.state == st)
                    .count();
                (st, u32::try_from(n).unwrap_or(u32::MAX))
            })
            .collect();
        StatusView {
            models_max: self.settings.models_max,
            host_cache_used: self.cache_used(),
            host_cache_limit: self.settings.host_cache_bytes,
            by_state,
        }
    }

    fn active(&self) -> usize {
        self.models.values().filter(|m| m.state.is_active()).count()
    }

    /// Host RAM that active and parked models hold or are about to, and
    /// what is reserved beside them.
    pub(super) fn cache_used(&self) -> u64 {
        self.models
            .values()
            .filter(|m| m.holds_host_cache())
            .map(ModelRecord::host_bytes)
            .fold(self.settings.host_cache_reserved, u64::saturating_add)
    }

    /// Whether `size` more bytes fit in the host cache.
    pub(super) fn cache_fits(&self, size: u64) -> bool {
        let limit = self.settings.host_cache_bytes;
        limit == 0 || self.cache_used().saturating_add(size) <= limit
    }

    /// Whether a model of `size` bytes fits next to the active ones.
    pub(super) fn has_room_for(&self, size: u64) -> bool {
        let max = self.settings.models_max as usize;
        let count_ok = max == 0 || self.active() < max;
        count_ok && self.cache_fits(size)
    }

    /// The least recently used model that may be evicted, other than `keep`.
    pub(super) fn lru_victim(&self, keep: Option<&str>) -> Option<String> {
        self.models
            .iter()
            .filter(|(id, m)| m.evictable() && Some(id.as_str()) != keep)
            .min_by_key(|(_, m)| m.last_used.map(|t| t.mono))
            .map(|(id, _)| id.clone())
    }

    /// Whether nothing runs behind any model any more.
    pub(super) fn all_released(&self) -> bool {
        self.models.values().all(|m| m.running.is_none())
    }

    /// Shutdown: release every model.
    pub(super) fn unload_all(&mut self) {
        for model in self.models.values_mut() {
            if let Some(running) = model.running.as_mut() {
                super::runtime::ModelControl::unload(running);
            }
        }
    }
}
