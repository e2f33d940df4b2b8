//! Requests using models: leases, the worker each needs, and what a worker's
//! start, crash or hang does to the model.

use super::clock::Moment;
use super::record::{LeaseReply, WorkerState};
use super::runtime::{ModelControl, ModelRuntime};
use super::state::SupervisorState;
use super::types::{AcquireOptions, ModelState, SupervisorError};
use crate::worker::WorkerEnded;

impl<R: ModelRuntime> SupervisorState<R> {
    /// Makes the model busy now if it is ready, or once its load (started here
    /// when autoload is on, or `options` turn it on for this request)
    /// completes, then starts its worker if none runs; `reply` gets the
    /// worker, or why not.
    pub(super) fn acquire(
        &mut self,
        id: &str,
        options: AcquireOptions,
        reply: LeaseReply<R::Worker>,
        now: Moment,
    ) {
        let (state, restart_wait) = match self.record(id) {
            Ok(model) => (model.state, model.crashes.wait_left(now.mono)),
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        if state == ModelState::Ready {
            if let Some(model) = self.models.get_mut(id) {
                model.busy = model.busy.saturating_add(1);
                model.last_used = Some(now);
                model.waiters.worker.push(reply);
            }
            self.ensure_worker(id);
            return;
        }
        if let (ModelState::Failed, Some(wait)) = (state, restart_wait) {
            let (reason, crashes) = self
                .models
                .get(id)
                .map(|m| (m.failure.clone().unwrap_or_default(), m.crashes.in_a_row))
                .unwrap_or_default();
            let _ = reply.send(Err(SupervisorError::Unavailable(format!(
                "model {id} failed ({reason}); its worker crashed {crashes} times in a row, so it restarts no sooner than {:.1} s from now",
                wait.as_secs_f64()
            ))));
            return;
        }
        match options.autoload {
            Some(true) => {}
            Some(false) => {
                let _ = reply.send(Err(SupervisorError::FailedPrecondition(format!(
                    "model {id} is not loaded and the request says autoload=false: load it first"
                ))));
                return;
            }
            None if !self.settings.autoload => {
                let _ = reply.send(Err(SupervisorError::FailedPrecondition(format!(
                    "model {id} is not loaded and autoload is off (--no-models-autoload): load it first"
                ))));
                return;
            }
            None => {}
        }
        match self.load(id, now) {
            Ok(_) => {
                if let Some(model) = self.models.get_mut(id) {
                    model.waiters.ready.push(reply);
                }
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Answers the requests waiting for `id`'s worker, starting it if none runs.
    pub(super) fn ensure_worker(&mut self, id: &str) {
        let Some(model) = self.models.get_mut(id) else {
            return;
        };
        match &model.worker {
            WorkerState::Running(worker, _) => {
                for waiter in model.waiters.worker.drain(..) {
                    let _ = waiter.send(Ok(worker.clone()));
                }
            }
            WorkerState::Starting => {}
            WorkerState::Stopped => {
                if let Some(running) = model.running.as_mut() {
                    model.worker = WorkerState::Starting;
                    running.start_worker();
                    tracing::info!(model = %id, "starting a worker for {id}");
                }
            }
        }
    }

    /// Ends the requests waiting for `id`'s worker with `error`; they were never leased.
    pub(super) fn fail_worker_waiters(&mut self, id: &str, error: &SupervisorError) {
        let Some(model) = self.models.get_mut(id) else {
            return;
        };
        for waiter in model.waiters.worker.drain(..) {
            model.busy = model.busy.saturating_sub(1);
            let _ = waiter.send(Err(error.clone()));
        }
    }

    /// A lease ended: the model is idle again once no lease holds it.
    pub(super) fn release(&mut self, id: &str, now: Moment) {
        if let Some(model) = self.models.get_mut(id) {
            model.busy = model.busy.saturating_sub(1);
            model.last_used = Some(now);
        }
        self.pump(now);
    }

    /// The model is ready: every request waiting to use it becomes busy now
    /// (so no queued load can evict it) and waits for the worker.
    pub(super) fn attach_acquirers(&mut self, id: &str) {
        let Some(model) = self.models.get_mut(id) else {
            return;
        };
        if model.waiters.ready.is_empty() {
            return;
        }
        let waiters: Vec<LeaseReply<R::Worker>> = model.waiters.ready.drain(..).collect();
        model.busy = model
            .busy
            .saturating_add(u32::try_from(waiters.len()).unwrap_or(u32::MAX));
        model.waiters.worker.extend(waiters);
        self.ensure_worker(id);
    }

    pub(super) fn on_worker_ready(&mut self, id: &str, worker: R::Worker, now: Moment) {
        let Some(model) = self.models.get_mut(id) else {
            return;
        };
        if model.state == ModelState::Ready {
            model.worker = WorkerState::Running(worker, now.mono);
            self.ensure_worker(id);
        }
    }

    /// The worker could not start, crashed or hung: the model fails with the
    /// reason, waiting and in-flight requests with it; the next request
    /// restarts it (after a back-off when it keeps crashing).
    pub(super) fn on_worker_failed(&mut self, id: &str, exit: WorkerEnded, now: Moment) {
        let Some(model) = self.models.get_mut(id) else {
            return;
        };
        let started = match std::mem::take(&mut model.worker) {
            WorkerState::Running(_, since) => Some(since),
            _ => None,
        };
        model.gpu = None;
        if !exit.crashed() {
            return;
        }
        let backoff = model.crashes.crashed(started, now.mono);
        let mut reason = exit.to_string();
        if !backoff.is_zero() {
            reason = format!(
                "{reason} (crash {} in a row; automatic restarts wait {} s)",
                model.crashes.in_a_row,
                backoff.as_secs()
            );
        }
        let error = SupervisorError::Unavailable(format!("worker for model {id} failed: {reason}"));
        self.fail_worker(id, error, reason, now);
    }

    /// The worker was not started because its GPU offload does not fit:
    /// waiting requests get RESOURCE_EXHAUSTED with the numbers, no crash is
    /// counted, and the next request tries again (VRAM may have been freed).
    pub(super) fn on_worker_refused(&mut self, id: &str, reason: String, now: Moment) {
        if let Some(model) = self.models.get_mut(id) {
            model.worker = WorkerState::Stopped;
        }
        let error = SupervisorError::ResourceExhausted(reason.clone());
        self.fail_worker(id, error, reason, now);
    }

    /// Parking or waking the worker failed: the model fails with the reason
    /// (no crash counted) and is released; the next request loads it afresh.
    pub(super) fn on_sleep_failed(&mut self, id: &str, reason: String, now: Moment) {
        let Some(model) = self.models.get_mut(id) else {
            return;
        };
        if !matches!(model.state, ModelState::Parked | ModelState::Loading) {
            return; // being unloaded already
        }
        model.worker = WorkerState::Stopped;
        model.gpu = None;
        let error = SupervisorError::Unavailable(format!("worker for model {id} failed: {reason}"));
        self.fail_worker(id, error, reason, now);
    }

    /// Fails everything waiting on `id`'s worker and releases its resident copy.
    fn fail_worker(&mut self, id: &str, error: SupervisorError, reason: String, now: Moment) {
        self.fail_worker_waiters(id, &error);
        self.fail_waiters(id, error);
        self.transition(id, ModelState::Failed, Some(reason), now);
        if let Some(running) = self.models.get_mut(id).and_then(|m| m.running.as_mut()) {
            running.unload(); // release the resident copy; the next request loads afresh
        }
    }
}
