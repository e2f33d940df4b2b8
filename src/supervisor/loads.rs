//! Loads: admission (host cache, the bounded queue), single flight, LRU
//! eviction to make room, unloads, and the reports a load's runtime sends.

use tokio::sync::{oneshot, watch};

use super::clock::Moment;
use super::record::WorkerState;
use super::runtime::{ModelControl, ModelReport, ModelRuntime, ModelSpec, RuntimeReport};
use super::state::SupervisorState;
use super::types::{Eviction, LoadStatus, ModelState, ModelView, SupervisorError, UnloadCause};
use crate::loader::{LoadError, LoadOptions, Phase, Progress};

/// A reply to an unload request.
pub(super) type UnloadReply = oneshot::Sender<Result<ModelView, SupervisorError>>;

impl<R: ModelRuntime> SupervisorState<R> {
    /// Loads `id`, or joins its load in progress; the receiver ends `Ready` or `Failed`.
    pub(super) fn load(
        &mut self,
        id: &str,
        now: Moment,
    ) -> Result<watch::Receiver<LoadStatus>, SupervisorError> {
        let model = self.record(id)?;
        if let Err(reason) = &model.entry.info {
            return Err(SupervisorError::FailedPrecondition(format!(
                "model {id} cannot be loaded: {reason}"
            )));
        }
        if let Some(status) = &model.waiters.load {
            return Ok(status.subscribe()); // single flight: join the load in progress
        }
        if model.state == ModelState::Ready {
            let view = model.view();
            if let Some(m) = self.models.get_mut(id) {
                m.last_used = Some(now);
            }
            return Ok(watch::channel(LoadStatus::Ready(Box::new(view))).1);
        }
        let limit = self.settings.host_cache_bytes;
        let reserved = self.settings.host_cache_reserved;
        if limit > 0 && model.size().saturating_add(reserved) > limit {
            let spare = if reserved > 0 {
                format!(", {reserved} of it held by the spare worker (--no-spare-worker frees it)")
            } else {
                String::new()
            };
            return Err(SupervisorError::ResourceExhausted(format!(
                "model {id} needs {} bytes but --host-cache-bytes is {limit}{spare}",
                model.size()
            )));
        }
        if self.queue.len() >= self.settings.load_queue {
            return Err(SupervisorError::ResourceExhausted(format!(
                "{} loads are already waiting for a free slot (--load-queue {})",
                self.queue.len(),
                self.settings.load_queue
            )));
        }
        let (tx, rx) = watch::channel(LoadStatus::Queued);
        if let Some(m) = self.models.get_mut(id) {
            m.waiters.load = Some(tx);
        }
        self.queue.push_back(id.to_owned());
        self.pump(now);
        Ok(rx)
    }

    /// Starts queued loads while there is room, evicting (or parking) idle
    /// models when there is not; a parked model in the queue is woken.
    pub(super) fn pump(&mut self, now: Moment) {
        while let Some(id) = self.queue.front().cloned() {
            let Some(model) = self.models.get(&id) else {
                self.queue.pop_front();
                continue;
            };
            if model.state == ModelState::Unloading {
                return; // it loads again once released
            }
            // A parked model's bytes are in the host cache already.
            let size = if model.state == ModelState::Parked {
                0
            } else {
                model.size()
            };
            if self.has_room_for(size) {
                self.queue.pop_front();
                self.start_load(&id, now);
                continue;
            }
            if self
                .models
                .values()
                .any(|m| m.state == ModelState::Unloading)
            {
                return; // room is on its way
            }
            let cause = UnloadCause::Evicted(Eviction::ToLoad(id.clone()));
            if !self.cache_fits(size) {
                // Parked models are the first to give the host cache back.
                if let Some(parked) = self.oldest_parked(Some(&id)) {
                    self.begin_unload(&parked, cause, now);
                    return;
                }
            }
            match self.lru_victim(Some(&id)) {
                Some(victim) if self.park(&victim, &id, size, now) => continue,
                Some(victim) => self.begin_unload(&victim, cause, now),
                None => {
                    tracing::debug!(model = %id, "load waits: every loaded model is busy, loading or pinned")
                }
            }
            return;
        }
    }

    fn start_load(&mut self, id: &str, now: Moment) {
        let parked = self
            .models
            .get(id)
            .is_some_and(|m| m.state == ModelState::Parked);
        if parked && self.wake(id, now) {
            return;
        }
        self.next_generation = self.next_generation.saturating_add(1);
        let generation = self.next_generation;
        let profiles = &self.settings.profiles;
        let spec = ModelSpec {
            load: LoadOptions {
                mlock: profiles.mlock(id, self.settings.load.mlock),
                ..self.settings.load
            },
            worker: profiles.worker(id, self.settings.worker),
            extras: profiles.extras(id),
        };
        let Some(model) = self.models.get_mut(id) else {
            return;
        };
        model.load_generation = generation;
        model.running = Some(self.runtime.start(id, generation, &model.entry.files, spec));
        let total = model.size();
        if let Some(status) = &model.waiters.load {
            status.send_replace(LoadStatus::Loading(Progress {
                phase: Phase::Mapping,
                bytes_done: 0,
                bytes_total: total,
            }));
        }
        self.transition(id, ModelState::Loading, None, now);
    }

    /// Cancels `id`'s load or releases it; everyone waiting to use it is told why.
    pub(super) fn begin_unload(&mut self, id: &str, cause: UnloadCause, now: Moment) {
        let Some(model) = self.models.get_mut(id) else {
            return;
        };
        if let Some(running) = model.running.as_mut() {
            running.unload();
        }
        let cancelled = SupervisorError::Unavailable(format!("load of {id} cancelled: {cause}"));
        self.fail_worker_waiters(id, &cancelled);
        self.fail_waiters(id, cancelled);
        self.transition_for(id, ModelState::Unloading, cause, now);
    }

    /// A client's unload: answered once the model is released (at once if it is not loaded).
    pub(super) fn unload(&mut self, id: &str, reply: UnloadReply, now: Moment) {
        let Some(model) = self.models.get_mut(id).filter(|m| !m.removed) else {
            let _ = reply.send(Err(SupervisorError::NotFound(id.to_owned())));
            return;
        };
        match model.state {
            ModelState::Loading | ModelState::Ready | ModelState::Parked => {
                model.waiters.unload.push(reply);
                self.begin_unload(id, UnloadCause::Requested, now);
            }
            ModelState::Unloading => model.waiters.unload.push(reply),
            _ => {
                let view = model.view();
                self.queue.retain(|q| q != id);
                let cancelled = SupervisorError::Unavailable(format!(
                    "load of {id} cancelled: {}",
                    UnloadCause::Requested
                ));
                self.fail_waiters(id, cancelled);
                let _ = reply.send(Ok(view));
            }
        }
    }

    /// Ends a queued or running load of `id` with `error` for everyone waiting on it.
    pub(super) fn fail_waiters(&mut self, id: &str, error: SupervisorError) {
        let Some(model) = self.models.get_mut(id) else {
            return;
        };
        if let Some(status) = model.waiters.load.take() {
            status.send_replace(LoadStatus::Failed(error.clone()));
        }
        for waiter in model.waiters.ready.drain(..) {
            let _ = waiter.send(Err(error.clone()));
        }
    }

    pub(super) fn pin(&mut self, id: &str, pinned: bool) -> Result<ModelView, SupervisorError> {
        self.record(id)?;
        let model = self
            .models
            .get_mut(id)
            .ok_or_else(|| SupervisorError::NotFound(id.to_owned()))?;
        model.pinned = pinned;
        Ok(model.view())
    }

    /// What the runtime behind a load says; reports of an earlier load are ignored.
    pub(super) fn on_report(&mut self, report: RuntimeReport<R::Worker>, now: Moment) {
        let RuntimeReport {
            id,
            generation,
            report,
        } = report;
        let Some(model) = self
            .models
            .get_mut(&id)
            .filter(|m| m.load_generation == generation)
        else {
            return;
        };
        match report {
            ModelReport::Progress(p) => {
                if let Some(status) = &model.waiters.load {
                    status.send_replace(LoadStatus::Loading(p));
                }
            }
            ModelReport::Ready { bytes } if model.state == ModelState::Loading => {
                model.resident_bytes = bytes;
                self.on_ready(&id, now);
            }
            ModelReport::Ready { .. } => {} // unloading already
            ModelReport::Woke if model.state == ModelState::Loading => self.on_ready(&id, now),
            ModelReport::Woke => {}
            ModelReport::SleepFailed(reason) => self.on_sleep_failed(&id, reason, now),
            ModelReport::WorkerReady(worker) => self.on_worker_ready(&id, worker, now),
            ModelReport::WorkerFailed(exit) => self.on_worker_failed(&id, exit, now),
            ModelReport::WorkerRefused(reason) => self.on_worker_refused(&id, reason, now),
            ModelReport::NeedsRoom { device, need, free } => {
                self.on_needs_room(&id, &device, need, free, now);
            }
            ModelReport::Offloaded(gpu) => model.gpu = Some(gpu),
            ModelReport::Note(note) => model.note = Some(note),
            ModelReport::Failed(LoadError::Cancelled) => {}
            ModelReport::Failed(err) => {
                let reason = err.to_string();
                let error = match err {
                    LoadError::Invalid(_) => SupervisorError::FailedPrecondition(reason.clone()),
                    _ => SupervisorError::Unavailable(reason.clone()),
                };
                self.fail_waiters(&id, error);
                tracing::error!(model = %id, model_state = "failed", error = %reason, "loading model {id} failed: {reason}");
                self.transition(&id, ModelState::Failed, Some(reason), now);
            }
            ModelReport::Unloaded => self.on_released(&id, now),
        }
        // A finished load may leave an idle model that a queued load can now evict.
        self.pump(now);
    }

    /// Loaded (or woken): the model is ready and its waiters get it.
    fn on_ready(&mut self, id: &str, now: Moment) {
        let Some(model) = self.models.get_mut(id) else {
            return;
        };
        model.last_used = Some(now);
        let status = model.waiters.load.take();
        self.transition(id, ModelState::Ready, None, now);
        self.attach_acquirers(id);
        if let (Some(status), Ok(view)) = (status, self.view(id)) {
            status.send_replace(LoadStatus::Ready(Box::new(view)));
        }
    }

    /// Nothing runs behind the model any more.
    fn on_released(&mut self, id: &str, now: Moment) {
        let Some(model) = self.models.get_mut(id) else {
            return;
        };
        model.running = None;
        model.resident_bytes = 0;
        model.worker = WorkerState::Stopped;
        model.gpu = None;
        model.note = None;
        if model.state != ModelState::Failed {
            model.crashes.reset();
        }
        let removed = model.removed;
        if model.state != ModelState::Failed {
            self.transition(id, ModelState::Unloaded, None, now);
        }
        let Some(model) = self.models.get_mut(id) else {
            return;
        };
        let view = model.view();
        for waiter in model.waiters.unload.drain(..) {
            let _ = waiter.send(Ok(view.clone()));
        }
        let reload = std::mem::take(&mut model.reload_when_released);
        if removed {
            self.models.remove(id);
        } else if model.entry.info.is_err() {
            let reason = model.entry.info.clone().err();
            self.transition(id, ModelState::Failed, reason, now);
        } else if reload {
            if let Err(e) = self.load(id, now) {
                tracing::warn!(model = %id, error = %e, "cannot reload {id} with its new settings: {e}");
            }
        }
    }
}
