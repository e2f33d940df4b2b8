//! What changes around the models: the directory (rescans), the clock (idle
//! TTL) and the settings (config reloads).

use std::sync::Arc;

use super::SupervisorSettings;
use super::clock::Moment;
use super::record::ModelRecord;
use super::runtime::ModelRuntime;
use super::state::SupervisorState;
use super::types::{Eviction, ModelEvent, ModelState, RescanSummary, SupervisorError, UnloadCause};
use crate::catalog::Snapshot;

impl<R: ModelRuntime> SupervisorState<R> {
    /// Brings the records in line with the directory; returns what changed.
    pub(super) fn reconcile(&mut self, snapshot: &Snapshot, now: Moment) -> RescanSummary {
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
            match self.models.get_mut(&id) {
                None => {
                    summary.added = summary.added.saturating_add(1);
                    let mut model = ModelRecord::new(entry.clone());
                    model.pinned = self.settings.profiles.pinned(&id);
                    model.aliases = self.settings.profiles.aliases_of(&id);
                    model.settings = self.effective(&id);
                    let (state, reason) = (model.state, model.failure.clone());
                    self.models.insert(id.clone(), model);
                    let _ = self.events.send(ModelEvent {
                        id: id.clone(),
                        state,
                        previous: ModelState::Discovered,
                        reason,
                        cause: None,
                        at: now.wall,
                    });
                }
                Some(model) if model.entry != *entry => {
                    summary.changed = summary.changed.saturating_add(1);
                    model.entry = entry.clone();
                    model.removed = false;
                    if model.holds_host_cache() {
                        self.begin_unload(&id, UnloadCause::FilesChanged, now);
                    } else {
                        let (state, reason) = match &entry.info {
                            Ok(_) => (ModelState::Discovered, None),
                            Err(r) => (ModelState::Failed, Some(r.clone())),
                        };
                        self.transition(&id, state, reason, now);
                    }
                }
                Some(_) => {}
            }
        }
        let gone: Vec<String> = self
            .models
            .keys()
            .filter(|id| !snapshot.entries.iter().any(|e| &e.id == *id))
            .cloned()
            .collect();
        for id in gone {
            summary.removed = summary.removed.saturating_add(1);
            self.queue.retain(|q| q != &id);
            let Some(model) = self.models.get_mut(&id) else {
                continue;
            };
            model.removed = true;
            if model.holds_host_cache() {
                self.begin_unload(&id, UnloadCause::Removed, now);
            } else {
                self.fail_waiters(&id, SupervisorError::NotFound(id.clone()));
                self.transition_for(&id, ModelState::Unloaded, UnloadCause::Removed, now);
                self.models.remove(&id);
            }
        }
        self.pump(now);
        summary
    }

    /// Unloads ready, idle, unpinned models (and parked ones) unused for
    /// longer than their TTL.
    pub(super) fn expire_idle(&mut self, now: Moment) {
        let expired: Vec<(String, std::time::Duration)> = self
            .models
            .iter()
            .filter(|(_, m)| m.evictable() || m.state == ModelState::Parked)
            .filter_map(|(id, m)| {
                let ttl = self
                    .settings
                    .profiles
                    .idle_ttl(id, self.settings.idle_ttl)?;
                m.last_used
                    .is_some_and(|t| now.since(t) >= ttl)
                    .then(|| (id.clone(), ttl))
            })
            .collect();
        for (id, ttl) in expired {
            self.begin_unload(&id, UnloadCause::Idle(ttl), now);
        }
    }

    /// New limits from a config reload: models whose worker would start
    /// differently reload, idle models over a lowered `--models-max` are
    /// evicted (least recently used first), and loads a raised one allows start.
    pub(super) fn apply_settings(&mut self, limits: SupervisorSettings, now: Moment) {
        let changed: Vec<String> = self
            .models
            .iter()
            .filter(|(_, m)| m.is_loaded())
            .filter(|(id, _)| starts_differently(&self.settings, &limits, id))
            .map(|(id, _)| id.clone())
            .collect();
        let parked_changed: Vec<String> = self
            .models
            .iter()
            .filter(|(_, m)| m.state == ModelState::Parked)
            .filter(|(id, _)| starts_differently(&self.settings, &limits, id))
            .map(|(id, _)| id.clone())
            .collect();
        self.settings = limits;
        // A parked worker runs the old settings: it goes, and a request
        // loads the model afresh.
        for id in parked_changed {
            self.begin_unload(&id, UnloadCause::Reload, now);
        }
        self.trim_parked(now);
        for id in changed {
            if let Some(model) = self.models.get_mut(&id) {
                model.reload_when_released = true;
            }
            self.begin_unload(&id, UnloadCause::Reload, now);
        }
        let profiles = Arc::clone(&self.settings.profiles);
        let settings: Vec<_> = self.models.keys().map(|id| self.effective(id)).collect();
        for ((id, model), settings) in self.models.iter_mut().zip(settings) {
            model.settings = settings;
            model.aliases = profiles.aliases_of(id);
            model.pinned = model.pinned || profiles.pinned(id);
        }
        let max = self.settings.models_max;
        if max > 0 {
            while self.models.values().filter(|m| m.is_loaded()).count() > max as usize {
                let Some(victim) = self.lru_victim(None) else {
                    break;
                };
                let cause = UnloadCause::Evicted(Eviction::ModelsMaxLowered(max));
                self.begin_unload(&victim, cause, now);
            }
        }
        self.pump(now);
    }
}

/// Whether `id`'s worker would start differently under `new` than under `old`.
fn starts_differently(old: &SupervisorSettings, new: &SupervisorSettings, id: &str) -> bool {
    old.profiles.worker(id, old.worker) != new.profiles.worker(id, new.worker)
        || old.profiles.extras(id) != new.profiles.extras(id)
        || old.profiles.mlock(id, old.load.mlock) != new.profiles.mlock(id, new.load.mlock)
}
