//! Requests using models: leases, the worker each needs, and what a worker's
//! start, crash or hang does to the model.

use std::time::{Instant, SystemTime};

use super::slot::{LeaseReply, Worker};
use super::table::Table;
use super::types::{ModelState, SupervisorError};
use crate::worker::{WorkerExit, WorkerLink};

impl Table {
    /// Makes the model busy now if it is ready, or once its load (started here
    /// when autoload is on) completes, then starts its worker if none runs;
    /// `reply` gets the worker, or why not.
    pub(super) fn acquire(&mut self, id: &str, reply: LeaseReply) {
        let (state, restart_wait) = match self.slot(id) {
            Ok(slot) => (slot.state, slot.crashes.wait_left(Instant::now())),
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        if state == ModelState::Ready {
            if let Some(slot) = self.slots.get_mut(id) {
                slot.busy = slot.busy.saturating_add(1);
                slot.last_used = Some(SystemTime::now());
                slot.worker_waiters.push(reply);
            }
            self.ensure_worker(id);
            return;
        }
        if let (ModelState::Failed, Some(wait)) = (state, restart_wait) {
            let (reason, crashes) = self
                .slots
                .get(id)
                .map(|s| (s.failure.clone().unwrap_or_default(), s.crashes.in_a_row))
                .unwrap_or_default();
            let _ = reply.send(Err(SupervisorError::Unavailable(format!(
                "model {id} failed ({reason}); its worker crashed {crashes} times in a row, so it restarts no sooner than {:.1} s from now",
                wait.as_secs_f64()
            ))));
            return;
        }
        if !self.limits.autoload {
            let _ = reply.send(Err(SupervisorError::FailedPrecondition(format!(
                "model {id} is not loaded and autoload is off (--no-models-autoload): load it first"
            ))));
            return;
        }
        match self.load(id) {
            Ok(_) => {
                if let Some(slot) = self.slots.get_mut(id) {
                    slot.acquire_waiters.push(reply);
                }
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Answers the requests waiting for `id`'s worker, starting it if none runs.
    pub(super) fn ensure_worker(&mut self, id: &str) {
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        match &slot.worker {
            Worker::Running(link, _) => {
                for waiter in slot.worker_waiters.drain(..) {
                    let _ = waiter.send(Ok(link.clone()));
                }
            }
            Worker::Starting => {}
            Worker::Stopped => {
                if let Some(actor) = slot.actor.as_mut() {
                    slot.worker = Worker::Starting;
                    actor.start_worker();
                    tracing::info!(model = %id, "starting a worker for {id}");
                }
            }
        }
    }

    /// Ends the requests waiting for `id`'s worker with `error`; they were never leased.
    pub(super) fn fail_worker_waiters(&mut self, id: &str, error: &SupervisorError) {
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        for waiter in slot.worker_waiters.drain(..) {
            slot.busy = slot.busy.saturating_sub(1);
            let _ = waiter.send(Err(error.clone()));
        }
    }

    /// A lease ended: the model is idle again once no lease holds it.
    pub(super) fn release(&mut self, id: &str) {
        if let Some(slot) = self.slots.get_mut(id) {
            slot.busy = slot.busy.saturating_sub(1);
            slot.last_used = Some(SystemTime::now());
        }
        self.pump();
    }

    /// The model is ready: every request waiting to use it becomes busy now
    /// (so no queued load can evict it) and waits for the worker.
    pub(super) fn attach_acquirers(&mut self, id: &str) {
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        if slot.acquire_waiters.is_empty() {
            return;
        }
        let waiters: Vec<LeaseReply> = slot.acquire_waiters.drain(..).collect();
        slot.busy = slot
            .busy
            .saturating_add(u32::try_from(waiters.len()).unwrap_or(u32::MAX));
        slot.worker_waiters.extend(waiters);
        self.ensure_worker(id);
    }

    pub(super) fn on_worker_ready(&mut self, id: &str, link: WorkerLink) {
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        if slot.state == ModelState::Ready {
            slot.worker = Worker::Running(link, Instant::now());
            self.ensure_worker(id);
        }
    }

    /// The worker could not start, crashed or hung: the model fails with the
    /// reason, waiting and in-flight requests with it; the next request
    /// restarts it (after a back-off when it keeps crashing).
    pub(super) fn on_worker_failed(&mut self, id: &str, exit: WorkerExit) {
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        let started = match std::mem::take(&mut slot.worker) {
            Worker::Running(_, since) => Some(since),
            _ => None,
        };
        if !exit.crashed {
            return;
        }
        let backoff = slot.crashes.crashed(started, Instant::now());
        let mut reason = exit.reason;
        if !backoff.is_zero() {
            reason = format!(
                "{reason} (crash {} in a row; automatic restarts wait {} s)",
                slot.crashes.in_a_row,
                backoff.as_secs()
            );
        }
        let error = SupervisorError::Unavailable(format!("worker for model {id} failed: {reason}"));
        self.fail_worker(id, error, reason);
    }

    /// The worker was not started because its GPU offload does not fit:
    /// waiting requests get RESOURCE_EXHAUSTED with the numbers, no crash is
    /// counted, and the next request tries again (VRAM may have been freed).
    pub(super) fn on_worker_refused(&mut self, id: &str, reason: String) {
        if let Some(slot) = self.slots.get_mut(id) {
            slot.worker = Worker::Stopped;
        }
        let error = SupervisorError::ResourceExhausted(reason.clone());
        self.fail_worker(id, error, reason);
    }

    /// Fails everything waiting on `id`'s worker and releases its resident copy.
    fn fail_worker(&mut self, id: &str, error: SupervisorError, reason: String) {
        self.fail_worker_waiters(id, &error);
        self.fail_waiters(id, error);
        self.transition(id, ModelState::Failed, Some(reason));
        if let Some(actor) = self.slots.get_mut(id).and_then(|s| s.actor.as_mut()) {
            actor.unload(); // release the resident copy; the next request loads afresh
        }
    }
}
