//! One model's record in the supervisor: its state, who waits on it, and how
//! clients see it.

use std::time::Instant;

use tokio::sync::{oneshot, watch};

use super::clock::Moment;
use super::restart::CrashRecord;
use super::runtime::{ModelRuntime, WorkerRef};
use super::types::{LoadStatus, ModelState, ModelView, SupervisorError};
use crate::catalog::CatalogEntry;

/// A reply to a request that wants to use the model: the way to its worker.
pub(super) type LeaseReply<W> = oneshot::Sender<Result<W, SupervisorError>>;

/// The model's worker process.
#[derive(Debug, Clone, Default)]
pub(super) enum WorkerState<W> {
    /// None runs (the model may still be resident).
    #[default]
    Stopped,
    /// Started for a request; not answering yet.
    Starting,
    /// Serving since then.
    Running(W, Instant),
}

/// The clients waiting on a model.
pub(super) struct Waiters<W> {
    /// Present while a load is queued or running: every load request watches it.
    pub(super) load: Option<watch::Sender<LoadStatus>>,
    /// Unload requests, answered once the model is released.
    pub(super) unload: Vec<oneshot::Sender<Result<ModelView, SupervisorError>>>,
    /// Requests waiting for the model to be ready in order to use it: each
    /// becomes busy the moment it is, before any queued load can evict it.
    pub(super) ready: Vec<LeaseReply<W>>,
    /// Requests (already counted busy) waiting for the worker to serve.
    pub(super) worker: Vec<LeaseReply<W>>,
}

impl<W> Default for Waiters<W> {
    fn default() -> Self {
        Waiters {
            load: None,
            unload: Vec::new(),
            ready: Vec::new(),
            worker: Vec::new(),
        }
    }
}

/// One model's state in the supervisor.
pub(super) struct ModelRecord<R: ModelRuntime> {
    pub(super) entry: CatalogEntry,
    pub(super) state: ModelState,
    pub(super) failure: Option<String>,
    pub(super) last_used: Option<Moment>,
    pub(super) pinned: bool,
    /// Requests using the model right now (inference); a busy model is never evicted.
    pub(super) busy: u32,
    pub(super) resident_bytes: u64,
    /// What runs behind the current load, until it reports `Unloaded`.
    pub(super) running: Option<R::Model>,
    /// Generation of the current load; reports of older loads are ignored.
    pub(super) load_generation: u64,
    pub(super) waiters: Waiters<R::Worker>,
    pub(super) worker: WorkerState<R::Worker>,
    /// Worker crashes, for the restart back-off.
    pub(super) crashes: CrashRecord,
    /// Gone from the directory: delete once released.
    pub(super) removed: bool,
    /// Other names for it (config file).
    pub(super) aliases: Vec<String>,
    /// What its worker runs with.
    pub(super) settings: crate::settings::Effective,
    /// Load it again once released (its settings changed on a config reload).
    pub(super) reload_when_released: bool,
    /// What its running worker holds on a GPU.
    pub(super) gpu: Option<crate::gpu::placement::GpuUse>,
    /// How it runs, when the user should know (no GPU for its offload).
    pub(super) note: Option<String>,
}

impl<R: ModelRuntime> ModelRecord<R> {
    pub(super) fn new(entry: CatalogEntry) -> Self {
        let (state, failure) = match &entry.info {
            Ok(_) => (ModelState::Discovered, None),
            Err(reason) => (ModelState::Failed, Some(reason.clone())),
        };
        ModelRecord {
            entry,
            state,
            failure,
            last_used: None,
            pinned: false,
            busy: 0,
            resident_bytes: 0,
            running: None,
            load_generation: 0,
            waiters: Waiters::default(),
            worker: WorkerState::Stopped,
            crashes: CrashRecord::default(),
            removed: false,
            aliases: Vec::new(),
            reload_when_released: false,
            settings: crate::settings::Effective::default(),
            gpu: None,
            note: None,
        }
    }

    pub(super) fn size(&self) -> u64 {
        match &self.entry.info {
            Ok(s) => s.total_bytes,
            Err(_) => self.entry.fingerprint.iter().map(|(len, _)| len).sum(),
        }
    }

    pub(super) fn view(&self) -> ModelView {
        let info = self.entry.info.as_ref().ok();
        let text = |f: fn(&crate::gguf::ModelSummary) -> Option<String>| {
            info.and_then(f).unwrap_or_default()
        };
        ModelView {
            id: self.entry.id.clone(),
            state: self.state,
            files: self.entry.files.clone(),
            projector: self.entry.projector.clone(),
            size_bytes: self.size(),
            name: text(|s| s.name.clone()),
            architecture: text(|s| s.architecture.clone()),
            quantization: text(|s| s.file_type.clone().or_else(|| s.dominant_type.clone())),
            parameter_count: info.map_or(0, |s| s.parameter_count),
            context_length: info.and_then(|s| s.context_length).unwrap_or(0),
            failure_reason: self.failure.clone(),
            last_used: self.last_used.map(|m| m.wall),
            pinned: self.pinned,
            resident_bytes: self.resident_bytes,
            worker_pid: match &self.worker {
                WorkerState::Running(worker, _) => Some(worker.pid()),
                _ => None,
            },
            aliases: self.aliases.clone(),
            settings: self.settings.clone(),
            gpu: self.gpu.clone(),
            note: self.note.clone(),
        }
    }

    /// Whether the LRU may take this model's place.
    pub(super) fn evictable(&self) -> bool {
        self.state == ModelState::Ready && !self.pinned && self.busy == 0
    }

    /// Whether its worker serves (only such a worker can be parked).
    pub(super) fn worker_serves(&self) -> bool {
        matches!(self.worker, WorkerState::Running(..))
    }

    /// Host RAM it holds or is about to: what the host cache and the park
    /// budget count for it.
    pub(super) fn host_bytes(&self) -> u64 {
        self.resident_bytes.max(self.size())
    }

    /// Whether it holds host RAM: active (loading, ready, unloading) or parked.
    pub(super) fn holds_host_cache(&self) -> bool {
        self.state.is_active() || self.state == ModelState::Parked
    }

    /// Loading or ready: what `--models-max` counts once a reload lowers it.
    pub(super) fn is_loaded(&self) -> bool {
        matches!(self.state, ModelState::Loading | ModelState::Ready)
    }
}
