//! Tests of the supervisor. `loads`, `leases` and `reconcile` drive its
//! rules directly, synchronously, with a fake runtime and a hand-moved clock
//! (no tokio runtime, processes or sleeps); `handle` runs the real actor.

mod handle;
mod leases;
mod loads;
mod park;
mod pressure;
mod reconcile;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, oneshot, watch};

use super::clock::Moment;
use super::state::SupervisorState;
use super::*;
use crate::catalog::{CatalogEntry, Snapshot};
use crate::gguf::ModelSummary;
use crate::worker::{WorkerEnded, WorkerExit};

/// Worker settings for tests: short timeouts.
pub(super) fn worker_settings() -> WorkerSettings {
    WorkerSettings {
        params: crate::params::ModelParams {
            parallel: 1,
            ctx_size: 256,
            batch_size: 64,
            threads: 1,
            gpu_layers: crate::params::GpuLayers::Auto,
            main_gpu: 0,
            flash_attn: crate::params::FlashAttn::Auto,
            cache_type_k: crate::params::CacheType::F16,
            cache_type_v: crate::params::CacheType::F16,
            cache_prompt: true,
        },
        queue: 4,
        stop_timeout: Duration::from_secs(1),
        ping_timeout: Duration::from_secs(5),
        step_timeout: Duration::from_secs(5),
        start_timeout: Duration::from_secs(60),
    }
}

/// Supervisor settings for tests: `models_max`, a queue of 4, autoload on.
pub(super) fn settings(models_max: u32) -> SupervisorSettings {
    SupervisorSettings {
        models_max,
        host_cache_bytes: 0,
        host_cache_reserved: 0,
        park_bytes: 0,
        load_queue: 4,
        idle_ttl: None,
        load: LoadOptions {
            mlock: false,
            threads: 1,
            header: Default::default(),
        },
        autoload: true,
        worker: worker_settings(),
        profiles: Default::default(),
    }
}

/// `settings(models_max)` with a config file: `defaults` and model `a`'s table.
pub(super) fn with_table(
    models_max: u32,
    defaults: crate::settings::ModelSettings,
    a: crate::settings::ModelSettings,
) -> SupervisorSettings {
    let tables = [("a".to_owned(), a)].into();
    let profiles = crate::settings::ModelProfiles::new(defaults, tables).expect("valid tables");
    SupervisorSettings {
        profiles: Arc::new(profiles),
        ..settings(models_max)
    }
}

/// What the supervisor asked of the fake runtime.
#[derive(Debug, Clone, PartialEq)]
enum Call {
    Start {
        id: String,
        generation: u64,
        spec: Box<ModelSpec>,
    },
    StartWorker(String),
    Unload(String),
    Room(String, bool),
    Park(String),
    Wake(String),
}

type Calls = Arc<Mutex<Vec<Call>>>;

/// A runtime that only records what it is asked.
struct FakeRuntime {
    calls: Calls,
}

/// A worker as the fake runtime hands it out.
#[derive(Debug, Clone, PartialEq)]
struct FakeWorker(u32);

impl WorkerRef for FakeWorker {
    fn pid(&self) -> u32 {
        self.0
    }
}

struct FakeModel {
    id: String,
    calls: Calls,
}

fn push(calls: &Calls, call: Call) {
    if let Ok(mut calls) = calls.lock() {
        calls.push(call);
    }
}

impl ModelControl for FakeModel {
    fn start_worker(&mut self) {
        push(&self.calls, Call::StartWorker(self.id.clone()));
    }

    fn unload(&mut self) {
        push(&self.calls, Call::Unload(self.id.clone()));
    }

    fn room(&mut self, evicting: bool) {
        push(&self.calls, Call::Room(self.id.clone(), evicting));
    }

    fn park(&mut self) {
        push(&self.calls, Call::Park(self.id.clone()));
    }

    fn wake(&mut self) {
        push(&self.calls, Call::Wake(self.id.clone()));
    }
}

impl ModelRuntime for FakeRuntime {
    type Worker = FakeWorker;
    type Model = FakeModel;

    fn start(&mut self, id: &str, generation: u64, _: &[PathBuf], spec: ModelSpec) -> FakeModel {
        push(
            &self.calls,
            Call::Start {
                id: id.to_owned(),
                generation,
                spec: Box::new(spec),
            },
        );
        FakeModel {
            id: id.to_owned(),
            calls: self.calls.clone(),
        }
    }
}

/// A model in the directory: `size` bytes in one file, readable headers.
fn entry(id: &str, size: u64) -> CatalogEntry {
    CatalogEntry {
        id: id.to_owned(),
        files: vec![PathBuf::from(format!("/models/{id}.gguf"))],
        projector: None,
        info: Ok(ModelSummary {
            architecture: Some("llama".into()),
            name: None,
            size_label: None,
            parameter_count: 1,
            file_type: None,
            dominant_type: None,
            context_length: None,
            embedding_length: None,
            block_count: None,
            head_count: None,
            head_count_kv: None,
            tokenizer_model: None,
            vocab_size: None,
            has_chat_template: false,
            tensor_count: 1,
            shard_count: 1,
            total_bytes: size,
        }),
        fingerprint: vec![(size, SystemTime::UNIX_EPOCH)],
    }
}

type LeaseRx = oneshot::Receiver<Result<FakeWorker, SupervisorError>>;

/// The supervisor's state over a fake runtime, a directory and a clock.
struct Harness {
    state: SupervisorState<FakeRuntime>,
    calls: Calls,
    events: broadcast::Receiver<ModelEvent>,
    now: Moment,
    entries: Vec<CatalogEntry>,
    catalog_generation: u64,
}

impl Harness {
    /// `models` (id, size) in the directory, under `settings`.
    fn new(settings: SupervisorSettings, models: &[(&str, u64)]) -> Self {
        let (events_tx, events) = broadcast::channel(1024);
        let calls = Calls::default();
        let runtime = FakeRuntime {
            calls: calls.clone(),
        };
        let mut h = Harness {
            state: SupervisorState::new(settings, events_tx, runtime),
            calls,
            events,
            now: Moment::now(),
            entries: models.iter().map(|&(id, size)| entry(id, size)).collect(),
            catalog_generation: 0,
        };
        h.rescan();
        h
    }

    /// Models of 100 bytes each, at most `models_max` loaded.
    fn with(models_max: u32, ids: &[&str]) -> Self {
        let models: Vec<(&str, u64)> = ids.iter().map(|&id| (id, 100)).collect();
        Harness::new(settings(models_max), &models)
    }

    fn tick(&mut self, secs: u64) {
        self.now = self.now.later(Duration::from_secs(secs));
    }

    /// The catalog publishes the current `entries`.
    fn rescan(&mut self) -> RescanSummary {
        self.catalog_generation += 1;
        let snapshot = Snapshot {
            generation: self.catalog_generation,
            dir_exists: true,
            entries: self.entries.clone(),
            problem: None,
        };
        self.state.reconcile(&snapshot, self.now)
    }

    fn load(&mut self, id: &str) -> Result<watch::Receiver<LoadStatus>, SupervisorError> {
        self.state.load(id, self.now)
    }

    fn report(&mut self, id: &str, report: ModelReport<FakeWorker>) {
        let generation = self.state.models.get(id).map_or(0, |m| m.load_generation);
        let report = RuntimeReport {
            id: id.to_owned(),
            generation,
            report,
        };
        self.state.on_report(report, self.now);
    }

    /// The runtime says `id` is resident.
    fn resident(&mut self, id: &str) {
        self.report(id, ModelReport::Ready { bytes: 100 });
    }

    /// The runtime says `id` has let go of everything.
    fn released(&mut self, id: &str) {
        self.report(id, ModelReport::Unloaded);
    }

    /// Loads `id` to ready.
    fn load_ready(&mut self, id: &str) {
        self.load(id).expect("the load is admitted");
        self.resident(id);
        assert_eq!(self.state_of(id), ModelState::Ready, "{id} is ready");
    }

    fn acquire(&mut self, id: &str) -> LeaseRx {
        self.acquire_with(id, AcquireOptions::default())
    }

    /// A request for `id` with its own options.
    fn acquire_with(&mut self, id: &str, options: AcquireOptions) -> LeaseRx {
        let (tx, rx) = oneshot::channel();
        self.state.acquire(id, options, tx, self.now);
        rx
    }

    /// The runtime says `id`'s worker serves.
    fn serve(&mut self, id: &str, pid: u32) {
        self.report(id, ModelReport::WorkerReady(FakeWorker(pid)));
    }

    /// `id` ready, leased once with its worker serving: one lease held.
    fn lease(&mut self, id: &str) -> FakeWorker {
        let mut rx = self.acquire(id);
        self.serve(id, 7);
        rx.try_recv()
            .expect("answered")
            .expect("leased a serving worker")
    }

    fn release(&mut self, id: &str) {
        self.state.release(id, self.now);
    }

    fn state_of(&self, id: &str) -> ModelState {
        self.state
            .view(id)
            .map_or(ModelState::Unloaded, |v| v.state)
    }

    /// Calls since the last look.
    fn take_calls(&mut self) -> Vec<Call> {
        self.calls
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default()
    }

    /// Models started since the last look, in order.
    fn started(&mut self) -> Vec<String> {
        self.take_calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Start { id, .. } => Some(id),
                _ => None,
            })
            .collect()
    }

    /// Models asked to unload since the last look, in order.
    fn unloaded(&mut self) -> Vec<String> {
        self.take_calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Unload(id) => Some(id),
                _ => None,
            })
            .collect()
    }

    /// Unload causes published since the last look, with their model.
    fn causes(&mut self) -> Vec<(String, UnloadCause)> {
        let mut out = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            if let (ModelState::Unloading, Some(cause)) = (e.state, e.cause) {
                out.push((e.id, cause));
            }
        }
        out
    }
}

/// The error a lease request got.
fn lease_error(rx: &mut LeaseRx) -> SupervisorError {
    match rx.try_recv() {
        Ok(Err(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// A crash: the worker exited with `code`.
fn exited(code: i32) -> WorkerEnded {
    WorkerEnded::from(WorkerExit::Exited { code })
}

/// A crash: a signal killed the worker.
fn killed(signal: i32) -> WorkerEnded {
    WorkerEnded::from(WorkerExit::Signaled {
        signal,
        core_dumped: false,
    })
}
