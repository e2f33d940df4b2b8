//! The supervisor's state: every model's slot and the rules that move them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{broadcast, mpsc, watch};

use super::model::{ModelHandle, ModelReport, ModelSpec, Tagged};
use super::slot::{Slot, Worker};
use super::types::{
    EVICTED, LoadStatus, ModelEvent, ModelState, ModelView, RescanSummary, StatusView,
    SupervisorError,
};
use super::{Limits, Reply};
use crate::catalog::Snapshot;
use crate::loader::{LoadError, LoadOptions, Phase, Progress};
use crate::worker::process::WorkerEnv;

pub(super) struct Table {
    pub(super) limits: Limits,
    pub(super) slots: BTreeMap<String, Slot>,
    /// Loads waiting for a slot, oldest first.
    pub(super) queue: VecDeque<String>,
    pub(super) events: broadcast::Sender<ModelEvent>,
    pub(super) reports: mpsc::UnboundedSender<Tagged>,
    pub(super) next_generation: u64,
    pub(super) catalog_generation: u64,
    pub(super) env: Arc<WorkerEnv>,
}

impl Table {
    pub(super) fn new(
        limits: Limits,
        events: broadcast::Sender<ModelEvent>,
        reports: mpsc::UnboundedSender<Tagged>,
        env: Arc<WorkerEnv>,
    ) -> Self {
        Table {
            env,
            limits,
            slots: BTreeMap::new(),
            queue: VecDeque::new(),
            events,
            reports,
            next_generation: 0,
            catalog_generation: 0,
        }
    }

    /// What `id`'s worker runs with under the current limits.
    fn effective(&self, id: &str) -> crate::settings::Effective {
        let l = &self.limits;
        l.profiles.effective(id, l.worker, l.load.mlock, l.idle_ttl)
    }

    /// The model `name` means: a model id, else an alias from the config.
    pub(super) fn resolve(&self, name: &str) -> String {
        if self.slots.contains_key(name) {
            return name.to_owned();
        }
        self.limits
            .profiles
            .resolve_alias(name)
            .unwrap_or(name)
            .to_owned()
    }

    pub(super) fn slot(&self, id: &str) -> Result<&Slot, SupervisorError> {
        self.slots
            .get(id)
            .filter(|s| !s.removed)
            .ok_or_else(|| SupervisorError::NotFound(id.to_owned()))
    }

    /// Moves `id` to `state` and publishes the change.
    pub(super) fn transition(&mut self, id: &str, state: ModelState, reason: Option<String>) {
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        let previous = slot.state;
        slot.state = state;
        if state == ModelState::Failed {
            slot.failure = reason.clone();
        } else if state != previous {
            slot.failure = None;
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
                at: SystemTime::now(),
            });
        }
    }

    pub(super) fn list(&self) -> Vec<ModelView> {
        self.slots
            .values()
            .filter(|s| !s.removed)
            .map(Slot::view)
            .collect()
    }

    pub(super) fn view(&self, id: &str) -> Result<ModelView, SupervisorError> {
        self.slot(id).map(Slot::view)
    }

    pub(super) fn status(&self) -> StatusView {
        let by_state = ModelState::ALL
            .iter()
            .map(|&st| {
                let n = self
                    .slots
                    .values()
                    .filter(|s| !s.removed && s.state == st)
                    .count();
                (st, u32::try_from(n).unwrap_or(u32::MAX))
            })
            .collect();
        StatusView {
            models_max: self.limits.models_max,
            host_cache_used: self.cache_used(),
            host_cache_limit: self.limits.host_cache_bytes,
            by_state,
        }
    }

    fn active(&self) -> usize {
        self.slots.values().filter(|s| s.state.is_active()).count()
    }

    fn cache_used(&self) -> u64 {
        self.slots
            .values()
            .filter(|s| s.state.is_active())
            .map(|s| s.resident_bytes.max(s.size()))
            .sum()
    }

    fn has_room_for(&self, size: u64) -> bool {
        let max = self.limits.models_max as usize;
        let slots_ok = max == 0 || self.active() < max;
        let limit = self.limits.host_cache_bytes;
        slots_ok && (limit == 0 || self.cache_used().saturating_add(size) <= limit)
    }

    pub(super) fn load(
        &mut self,
        id: &str,
    ) -> Result<watch::Receiver<LoadStatus>, SupervisorError> {
        let slot = self.slot(id)?;
        if let Err(reason) = &slot.entry.info {
            return Err(SupervisorError::FailedPrecondition(format!(
                "model {id} cannot be loaded: {reason}"
            )));
        }
        if let Some(status) = &slot.status {
            return Ok(status.subscribe()); // single flight: join the load in progress
        }
        if slot.state == ModelState::Ready {
            let view = slot.view();
            if let Some(s) = self.slots.get_mut(id) {
                s.last_used = Some(SystemTime::now());
            }
            return Ok(watch::channel(LoadStatus::Ready(Box::new(view))).1);
        }
        let limit = self.limits.host_cache_bytes;
        if limit > 0 && slot.size() > limit {
            return Err(SupervisorError::ResourceExhausted(format!(
                "model {id} needs {} bytes but --host-cache-bytes is {limit}",
                slot.size()
            )));
        }
        if self.queue.len() >= self.limits.load_queue {
            return Err(SupervisorError::ResourceExhausted(format!(
                "{} loads are already waiting for a free slot (--load-queue {})",
                self.queue.len(),
                self.limits.load_queue
            )));
        }
        let (tx, rx) = watch::channel(LoadStatus::Queued);
        if let Some(s) = self.slots.get_mut(id) {
            s.status = Some(tx);
        }
        self.queue.push_back(id.to_owned());
        self.pump();
        Ok(rx)
    }

    /// Starts queued loads while there is room, evicting idle models when there is not.
    pub(super) fn pump(&mut self) {
        while let Some(id) = self.queue.front().cloned() {
            let Some(slot) = self.slots.get(&id) else {
                self.queue.pop_front();
                continue;
            };
            if slot.state == ModelState::Unloading {
                return; // it loads again once released
            }
            if self.has_room_for(slot.size()) {
                self.queue.pop_front();
                self.start_load(&id);
                continue;
            }
            if self
                .slots
                .values()
                .any(|s| s.state == ModelState::Unloading)
            {
                return; // room is on its way
            }
            let victim = self
                .slots
                .iter()
                .filter(|(vid, s)| s.evictable() && **vid != id)
                .min_by_key(|(_, s)| s.last_used)
                .map(|(vid, _)| vid.clone());
            match victim {
                Some(victim) => self.begin_unload(
                    &victim,
                    format!("{EVICTED} (least recently used) to load {id}"),
                ),
                None => {
                    tracing::debug!(model = %id, "load waits: every loaded model is busy, loading or pinned")
                }
            }
            return;
        }
    }

    fn start_load(&mut self, id: &str) {
        self.next_generation = self.next_generation.saturating_add(1);
        let generation = self.next_generation;
        let profiles = &self.limits.profiles;
        let spec = ModelSpec {
            load: LoadOptions {
                mlock: profiles.mlock(id, self.limits.load.mlock),
                ..self.limits.load
            },
            worker: profiles.worker(id, self.limits.worker),
            env: self.env.clone(),
            extras: profiles.extras(id),
        };
        let reports = self.reports.clone();
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        slot.load_generation = generation;
        slot.actor = Some(ModelHandle::spawn(
            id.to_owned(),
            generation,
            slot.entry.files.clone(),
            spec,
            reports,
        ));
        let total = slot.size();
        if let Some(status) = &slot.status {
            status.send_replace(LoadStatus::Loading(Progress {
                phase: Phase::Mapping,
                bytes_done: 0,
                bytes_total: total,
            }));
        }
        self.transition(id, ModelState::Loading, None);
    }

    pub(super) fn begin_unload(&mut self, id: &str, reason: String) {
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        if let Some(actor) = slot.actor.as_mut() {
            actor.unload();
        }
        let cancelled = SupervisorError::Unavailable(format!("load of {id} cancelled: {reason}"));
        self.fail_worker_waiters(id, &cancelled);
        self.fail_waiters(id, cancelled);
        self.transition(id, ModelState::Unloading, Some(reason));
    }

    pub(super) fn unload(&mut self, id: &str, reply: Reply<ModelView>) {
        let Some(slot) = self.slots.get_mut(id).filter(|s| !s.removed) else {
            let _ = reply.send(Err(SupervisorError::NotFound(id.to_owned())));
            return;
        };
        match slot.state {
            ModelState::Loading | ModelState::Ready => {
                slot.unload_waiters.push(reply);
                self.begin_unload(id, "unload requested".to_owned());
            }
            ModelState::Unloading => slot.unload_waiters.push(reply),
            _ => {
                let view = slot.view();
                self.queue.retain(|q| q != id);
                let cancelled = SupervisorError::Unavailable(format!(
                    "load of {id} cancelled: unload requested"
                ));
                self.fail_waiters(id, cancelled);
                let _ = reply.send(Ok(view));
            }
        }
    }

    /// Ends a queued or running load of `id` with `error` for everyone waiting on it.
    pub(super) fn fail_waiters(&mut self, id: &str, error: SupervisorError) {
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        if let Some(status) = slot.status.take() {
            status.send_replace(LoadStatus::Failed(error.clone()));
        }
        for waiter in slot.acquire_waiters.drain(..) {
            let _ = waiter.send(Err(error.clone()));
        }
    }

    pub(super) fn pin(&mut self, id: &str, pinned: bool) -> Result<ModelView, SupervisorError> {
        self.slot(id)?;
        let slot = self
            .slots
            .get_mut(id)
            .ok_or_else(|| SupervisorError::NotFound(id.to_owned()))?;
        slot.pinned = pinned;
        Ok(slot.view())
    }

    pub(super) fn on_report(&mut self, tagged: Tagged) {
        let Tagged {
            id,
            generation,
            report,
        } = tagged;
        let Some(slot) = self
            .slots
            .get_mut(&id)
            .filter(|s| s.load_generation == generation)
        else {
            return;
        };
        match report {
            ModelReport::Progress(p) => {
                if let Some(status) = &slot.status {
                    status.send_replace(LoadStatus::Loading(p));
                }
            }
            ModelReport::Ready { bytes } if slot.state == ModelState::Loading => {
                slot.resident_bytes = bytes;
                slot.last_used = Some(SystemTime::now());
                let status = slot.status.take();
                self.transition(&id, ModelState::Ready, None);
                self.attach_acquirers(&id);
                if let (Some(status), Ok(view)) = (status, self.view(&id)) {
                    status.send_replace(LoadStatus::Ready(Box::new(view)));
                }
            }
            ModelReport::Ready { .. } => {} // unloading already
            ModelReport::WorkerReady(link) => self.on_worker_ready(&id, link),
            ModelReport::WorkerFailed(exit) => self.on_worker_failed(&id, exit),
            ModelReport::WorkerRefused(reason) => self.on_worker_refused(&id, reason),
            ModelReport::Failed(LoadError::Cancelled) => {}
            ModelReport::Failed(err) => {
                let reason = err.to_string();
                let error = match err {
                    LoadError::Invalid(_) => SupervisorError::FailedPrecondition(reason.clone()),
                    _ => SupervisorError::Unavailable(reason.clone()),
                };
                self.fail_waiters(&id, error);
                tracing::error!(model = %id, model_state = "failed", error = %reason, "loading model {id} failed: {reason}");
                self.transition(&id, ModelState::Failed, Some(reason));
            }
            ModelReport::Unloaded => self.on_released(&id),
        }
        // A finished load may leave an idle model that a queued load can now evict.
        self.pump();
    }

    /// The model actor has let go of everything.
    fn on_released(&mut self, id: &str) {
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        slot.actor = None;
        slot.resident_bytes = 0;
        slot.worker = Worker::Stopped;
        if slot.state != ModelState::Failed {
            slot.crashes.reset();
        }
        let removed = slot.removed;
        if slot.state != ModelState::Failed {
            self.transition(id, ModelState::Unloaded, None);
        }
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        let view = slot.view();
        for waiter in slot.unload_waiters.drain(..) {
            let _ = waiter.send(Ok(view.clone()));
        }
        let reload = std::mem::take(&mut slot.reload_when_released);
        if removed {
            self.slots.remove(id);
        } else if slot.entry.info.is_err() {
            let reason = slot.entry.info.clone().err();
            self.transition(id, ModelState::Failed, reason);
        } else if reload {
            if let Err(e) = self.load(id) {
                tracing::warn!(model = %id, error = %e, "cannot reload {id} with its new settings: {e}");
            }
        }
    }

    /// Brings the table in line with the directory; returns what changed.
    pub(super) fn reconcile(&mut self, snapshot: &Snapshot) -> RescanSummary {
        let mut summary = RescanSummary {
            models: u32::try_from(snapshot.entries.len()).unwrap_or(u32::MAX),
            ..RescanSummary::default()
        };
        if snapshot.generation == self.catalog_generation {
            return summary;
        }
        self.catalog_generation = snapshot.generation;
        for entry in &snapshot.entries {
            let id = entry.id.clone();
            match self.slots.get_mut(&id) {
                None => {
                    summary.added = summary.added.saturating_add(1);
                    let mut slot = Slot::new(entry.clone());
                    slot.pinned = self.limits.profiles.pinned(&id);
                    slot.aliases = self.limits.profiles.aliases_of(&id);
                    slot.settings = self.effective(&id);
                    let (state, reason) = (slot.state, slot.failure.clone());
                    self.slots.insert(id.clone(), slot);
                    let _ = self.events.send(ModelEvent {
                        id: id.clone(),
                        state,
                        previous: ModelState::Discovered,
                        reason,
                        at: SystemTime::now(),
                    });
                }
                Some(slot) if slot.entry != *entry => {
                    summary.changed = summary.changed.saturating_add(1);
                    slot.entry = entry.clone();
                    slot.removed = false;
                    if slot.state.is_active() {
                        self.begin_unload(&id, "its files changed on disk".to_owned());
                    } else {
                        let (state, reason) = match &entry.info {
                            Ok(_) => (ModelState::Discovered, None),
                            Err(r) => (ModelState::Failed, Some(r.clone())),
                        };
                        self.transition(&id, state, reason);
                    }
                }
                Some(_) => {}
            }
        }
        let gone: Vec<String> = self
            .slots
            .keys()
            .filter(|id| !snapshot.entries.iter().any(|e| &e.id == *id))
            .cloned()
            .collect();
        for id in gone {
            summary.removed = summary.removed.saturating_add(1);
            self.queue.retain(|q| q != &id);
            let Some(slot) = self.slots.get_mut(&id) else {
                continue;
            };
            slot.removed = true;
            let reason = "removed from the models directory".to_owned();
            if slot.state.is_active() {
                self.begin_unload(&id, reason);
            } else {
                self.fail_waiters(&id, SupervisorError::NotFound(id.clone()));
                self.transition(&id, ModelState::Unloaded, Some(reason));
                self.slots.remove(&id);
            }
        }
        self.pump();
        summary
    }

    /// Unloads ready, idle, unpinned models unused for longer than the TTL.
    pub(super) fn expire_idle(&mut self) {
        let now = SystemTime::now();
        let expired: Vec<(String, std::time::Duration)> = self
            .slots
            .iter()
            .filter(|(_, s)| s.evictable())
            .filter_map(|(id, s)| {
                let ttl = self.limits.profiles.idle_ttl(id, self.limits.idle_ttl)?;
                s.last_used
                    .is_some_and(|t| now.duration_since(t).unwrap_or_default() >= ttl)
                    .then(|| (id.clone(), ttl))
            })
            .collect();
        for (id, ttl) in expired {
            self.begin_unload(&id, format!("idle for {} s (idle_ttl)", ttl.as_secs()));
        }
    }

    /// New limits from a config reload: evict idle models over a lowered
    /// `--models-max` (least recently used first), start loads a raised one allows.
    pub(super) fn set_limits(&mut self, limits: Limits) {
        let max = limits.models_max as usize;
        // Models whose worker would now start differently reload; the others keep serving.
        let changed: Vec<String> = self
            .slots
            .iter()
            .filter(|(_, s)| matches!(s.state, ModelState::Loading | ModelState::Ready))
            .filter(|(id, _)| {
                let (old, new) = (&self.limits, &limits);
                old.profiles.worker(id, old.worker) != new.profiles.worker(id, new.worker)
                    || old.profiles.extras(id) != new.profiles.extras(id)
                    || old.profiles.mlock(id, old.load.mlock)
                        != new.profiles.mlock(id, new.load.mlock)
            })
            .map(|(id, _)| id.clone())
            .collect();
        self.limits = limits;
        for id in changed {
            if let Some(slot) = self.slots.get_mut(&id) {
                slot.reload_when_released = true;
            }
            self.begin_unload(&id, "its settings changed (config reload)".to_owned());
        }
        let settings: Vec<_> = self.slots.keys().map(|id| self.effective(id)).collect();
        for ((id, slot), settings) in self.slots.iter_mut().zip(settings) {
            slot.settings = settings;
            slot.aliases = self.limits.profiles.aliases_of(id);
            slot.pinned = slot.pinned || self.limits.profiles.pinned(id);
        }
        if max > 0 {
            let loaded = |t: &Self| {
                t.slots
                    .values()
                    .filter(|s| matches!(s.state, ModelState::Loading | ModelState::Ready))
                    .count()
            };
            while loaded(self) > max {
                let victim = self
                    .slots
                    .iter()
                    .filter(|(_, s)| s.evictable())
                    .min_by_key(|(_, s)| s.last_used)
                    .map(|(id, _)| id.clone());
                let Some(victim) = victim else { break };
                self.begin_unload(&victim, format!("{EVICTED}: --models-max lowered to {max}"));
            }
        }
        self.pump();
    }

    /// Whether no model actor is left.
    pub(super) fn all_released(&self) -> bool {
        self.slots.values().all(|s| s.actor.is_none())
    }

    /// Shutdown: release every model.
    pub(super) fn unload_all(&mut self) {
        for slot in self.slots.values_mut() {
            if let Some(actor) = slot.actor.as_mut() {
                actor.unload();
            }
        }
    }
}
