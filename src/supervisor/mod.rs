//! The supervisor actor: owns every model's state machine and the rules of
//! `--models-max`, LRU eviction, single-flight loads, pins and the idle TTL.
//!
//! `discovered → loading → ready → unloading → unloaded`, plus `failed`, and
//! `ready → parked → loading` when a park budget keeps an evicted model's
//! worker (`park.rs`). A loading or busy model is never evicted; loads that
//! find no free slot wait in a bounded FIFO queue; the least recently used
//! idle model goes first.

mod clock;
pub mod dry_run;
mod leases;
mod loads;
mod model_actor;
mod park;
mod pressure;
mod reconcile;
mod record;
mod restart;
mod runtime;
mod state;
mod types;
mod worker_sleep;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::catalog::{CatalogHandle, Snapshot};
use crate::loader::LoadOptions;
use crate::settings::ModelProfiles;
use crate::settings::WorkerSettings;
use crate::worker::WorkerLink;
use crate::worker::process::WorkerEnv;

pub use runtime::{ModelControl, ModelReport, ModelRuntime, ModelSpec, RuntimeReport, WorkerRef};
pub use types::{
    AcquireOptions, Eviction, LoadStatus, ModelEvent, ModelState, ModelView, RescanSummary,
    StatusView, SupervisorError, UnloadCause,
};

pub use pressure::LoadPreview;

use clock::Moment;
use model_actor::{ProcessRuntime, Report};
use state::SupervisorState;

/// How often idle models are checked against the TTL.
const TTL_TICK: Duration = Duration::from_millis(500);

/// The supervisor's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SupervisorSettings {
    /// Most active models (0 = no limit).
    pub models_max: u32,
    /// Host RAM the resident tier may hold (0 = no limit).
    pub host_cache_bytes: u64,
    /// Host RAM counted in `host_cache_bytes` that no model holds: the
    /// spare worker's (`worker::spare`).
    pub host_cache_reserved: u64,
    /// Host RAM evicted models may keep with their worker, parked (0 = none:
    /// an evicted model is released).
    pub park_bytes: u64,
    /// Loads that may wait for a slot.
    pub load_queue: usize,
    /// Idle time before an unpinned model is unloaded (None = never).
    pub idle_ttl: Option<Duration>,
    /// How loads run.
    pub load: LoadOptions,
    /// How workers run (workers started after a change use the new settings).
    pub worker: WorkerSettings,
    /// Per-model settings and aliases from the config file.
    pub profiles: Arc<ModelProfiles>,
    /// Whether `acquire` loads a model that is not loaded (else FAILED_PRECONDITION).
    pub autoload: bool,
}

type Reply<T> = oneshot::Sender<Result<T, SupervisorError>>;

enum Msg {
    /// Unload everything, answer once all is released, keep serving the rest.
    Shutdown(oneshot::Sender<()>),
    Request(Request),
}

enum Request {
    List(oneshot::Sender<Vec<ModelView>>),
    Get(String, Reply<ModelView>),
    Load(String, Reply<watch::Receiver<LoadStatus>>),
    Unload(String, Reply<ModelView>),
    Pin(String, bool, Reply<ModelView>),
    Status(oneshot::Sender<StatusView>),
    Rescan(Reply<RescanSummary>),
    ApplySettings(SupervisorSettings, oneshot::Sender<()>),
    Acquire(String, AcquireOptions, Reply<WorkerLink>),
    Ping(oneshot::Sender<()>),
    Preview(String, Reply<LoadPreview>),
}

/// Talks to the supervisor actor; cheap to clone.
#[derive(Clone)]
pub struct SupervisorHandle {
    tx: mpsc::Sender<Msg>,
    events: broadcast::Sender<ModelEvent>,
    /// Releases of leases: unbounded so that dropping a lease never blocks or fails.
    releases: mpsc::UnboundedSender<String>,
}

/// A model in use: while any lease on it lives, it is busy and never evicted.
#[derive(Debug)]
pub struct Lease {
    id: String,
    worker: WorkerLink,
    releases: mpsc::UnboundedSender<String>,
}

impl Lease {
    /// The model this lease holds.
    pub fn model(&self) -> &str {
        &self.id
    }

    /// The model's running worker.
    pub fn worker(&self) -> &WorkerLink {
        &self.worker
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // If the supervisor is gone there is nothing left to release.
        let _ = self.releases.send(std::mem::take(&mut self.id));
    }
}

impl SupervisorHandle {
    /// Starts the supervisor; it follows `catalog`'s snapshots and starts workers as `env` says.
    pub fn spawn(catalog: CatalogHandle, settings: SupervisorSettings, env: WorkerEnv) -> Self {
        let (tx, rx) = mpsc::channel(256);
        let (events, _) = broadcast::channel(1024);
        let (reports_tx, reports) = mpsc::unbounded_channel();
        let (releases, released) = mpsc::unbounded_channel();
        let runtime = ProcessRuntime::new(env, reports_tx);
        let state = SupervisorState::new(settings, events.clone(), runtime);
        tokio::spawn(run(state, catalog, rx, reports, released));
        SupervisorHandle {
            tx,
            events,
            releases,
        }
    }

    /// Marks a model (`id` or an alias) busy for as long as the returned lease lives, loading it
    /// first (queueing under `--models-max`) when autoload is on, and starting
    /// its worker if none runs.
    pub async fn acquire(&self, id: &str) -> Result<Lease, SupervisorError> {
        self.acquire_with(id, AcquireOptions::default()).await
    }

    /// As [`Self::acquire`], with this request's `options` (autoload or not).
    pub async fn acquire_with(
        &self,
        id: &str,
        options: AcquireOptions,
    ) -> Result<Lease, SupervisorError> {
        let worker = self
            .ask(|r| Request::Acquire(id.to_owned(), options, r))
            .await??;
        Ok(Lease {
            // The model's id, which `id` may only be an alias of.
            id: worker.model.clone(),
            worker,
            releases: self.releases.clone(),
        })
    }

    async fn ask<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, SupervisorError> {
        self.send(|reply| Msg::Request(request(reply))).await
    }

    async fn send<T>(
        &self,
        msg: impl FnOnce(oneshot::Sender<T>) -> Msg,
    ) -> Result<T, SupervisorError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(msg(reply))
            .await
            .map_err(|_| SupervisorError::Stopped)?;
        rx.await.map_err(|_| SupervisorError::Stopped)
    }

    /// Every model, sorted by id.
    pub async fn list(&self) -> Result<Vec<ModelView>, SupervisorError> {
        self.ask(Request::List).await
    }

    /// One model.
    pub async fn get(&self, id: &str) -> Result<ModelView, SupervisorError> {
        self.ask(|r| Request::Get(id.to_owned(), r)).await?
    }

    /// Loads a model (or joins the load in progress); watch the status until Ready or Failed.
    pub async fn load(&self, id: &str) -> Result<watch::Receiver<LoadStatus>, SupervisorError> {
        self.ask(|r| Request::Load(id.to_owned(), r)).await?
    }

    /// Loads a model and waits for the outcome.
    pub async fn load_and_wait(&self, id: &str) -> Result<ModelView, SupervisorError> {
        let mut status = self.load(id).await?;
        loop {
            match &*status.borrow_and_update() {
                LoadStatus::Ready(view) => return Ok((**view).clone()),
                LoadStatus::Failed(e) => return Err(e.clone()),
                _ => {}
            }
            status
                .changed()
                .await
                .map_err(|_| SupervisorError::Stopped)?;
        }
    }

    /// Unloads a model (cancels its load, or drops it from the queue); returns once released.
    pub async fn unload(&self, id: &str) -> Result<ModelView, SupervisorError> {
        self.ask(|r| Request::Unload(id.to_owned(), r)).await?
    }

    /// Pins (never evicted) or unpins a model.
    pub async fn pin(&self, id: &str, pinned: bool) -> Result<ModelView, SupervisorError> {
        self.ask(|r| Request::Pin(id.to_owned(), pinned, r)).await?
    }

    /// Counts by state and cache use.
    pub async fn status(&self) -> Result<StatusView, SupervisorError> {
        self.ask(Request::Status).await
    }

    /// Rescans the models directory and reconciles with it.
    pub async fn rescan(&self) -> Result<RescanSummary, SupervisorError> {
        self.ask(Request::Rescan).await?
    }

    /// What loading `id` would evict and who holds GPU memory (a dry run; changes nothing).
    pub async fn preview(&self, id: &str) -> Result<LoadPreview, SupervisorError> {
        self.ask(|r| Request::Preview(id.to_owned(), r)).await?
    }

    /// Answers once the actor has handled everything sent before (liveness probe).
    pub async fn ping(&self) -> Result<(), SupervisorError> {
        self.ask(Request::Ping).await
    }

    /// Applies new settings (config reload) without touching models that still fit them.
    pub async fn apply_settings(
        &self,
        settings: SupervisorSettings,
    ) -> Result<(), SupervisorError> {
        self.ask(|r| Request::ApplySettings(settings, r)).await
    }

    /// Unloads every model (stopping workers gracefully) and answers once all are released.
    pub async fn shutdown(&self) -> Result<(), SupervisorError> {
        self.send(Msg::Shutdown).await
    }

    /// Every state change from now on.
    pub fn events(&self) -> broadcast::Receiver<ModelEvent> {
        self.events.subscribe()
    }
}

async fn run(
    mut state: SupervisorState<ProcessRuntime>,
    catalog: CatalogHandle,
    mut rx: mpsc::Receiver<Msg>,
    mut reports: mpsc::UnboundedReceiver<Report>,
    mut released: mpsc::UnboundedReceiver<String>,
) {
    let mut snapshots = catalog.subscribe();
    let first: Arc<Snapshot> = snapshots.borrow_and_update().clone();
    state.reconcile(&first, Moment::now());
    let mut tick = tokio::time::interval(TTL_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown: Vec<oneshot::Sender<()>> = Vec::new();
    loop {
        tokio::select! {
            msg = rx.recv() => {
                match msg {
                    None => break,
                    Some(Msg::Shutdown(reply)) => {
                        state.unload_all();
                        shutdown.push(reply);
                    }
                    Some(Msg::Request(request)) => handle(&mut state, &catalog, request).await,
                }
            }
            Some(report) = reports.recv() => state.on_report(report, Moment::now()),
            Some(id) = released.recv() => state.release(&id, Moment::now()),
            Ok(()) = snapshots.changed() => {
                let snapshot: Arc<Snapshot> = snapshots.borrow_and_update().clone();
                state.reconcile(&snapshot, Moment::now());
            }
            _ = tick.tick() => state.expire_idle(Moment::now()),
        }
        if !shutdown.is_empty() && state.all_released() {
            for reply in shutdown.drain(..) {
                let _ = reply.send(());
            }
        }
    }
    state.unload_all();
}

async fn handle(
    state: &mut SupervisorState<ProcessRuntime>,
    catalog: &CatalogHandle,
    request: Request,
) {
    let now = Moment::now();
    match request {
        Request::List(reply) => {
            let _ = reply.send(state.list());
        }
        Request::Get(id, reply) => {
            let _ = reply.send(state.view(&state.resolve(&id)));
        }
        Request::Load(id, reply) => {
            let id = state.resolve(&id);
            let _ = reply.send(state.load(&id, now));
        }
        Request::Unload(id, reply) => {
            let id = state.resolve(&id);
            state.unload(&id, reply, now);
        }
        Request::Pin(id, pinned, reply) => {
            let id = state.resolve(&id);
            let _ = reply.send(state.pin(&id, pinned));
        }
        Request::Status(reply) => {
            let _ = reply.send(state.status());
        }
        Request::Rescan(reply) => {
            let result = match catalog.rescan().await {
                Ok(snapshot) => {
                    let summary = state.reconcile(&snapshot, Moment::now());
                    // The list was kept, not re-read: say why instead of "no change".
                    match &snapshot.problem {
                        Some(problem) => Err(SupervisorError::Unavailable(problem.clone())),
                        None => Ok(summary),
                    }
                }
                Err(_) => Err(SupervisorError::Stopped),
            };
            let _ = reply.send(result);
        }
        Request::Ping(reply) => {
            let _ = reply.send(());
        }
        Request::Preview(id, reply) => {
            let _ = reply.send(state.preview(&state.resolve(&id)));
        }
        Request::Acquire(id, options, reply) => {
            let id = state.resolve(&id);
            state.acquire(&id, options, reply, now);
        }
        Request::ApplySettings(settings, reply) => {
            state.apply_settings(settings, now);
            let _ = reply.send(());
        }
    }
}
