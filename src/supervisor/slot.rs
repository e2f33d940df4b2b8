//! One model's slot in the supervisor's table: its state and how clients see it.

use std::time::{Instant, SystemTime};

use tokio::sync::{oneshot, watch};

use super::model::ModelHandle;
use super::restart::CrashRecord;
use super::types::{LoadStatus, ModelState, ModelView, SupervisorError};
use crate::catalog::CatalogEntry;
use crate::worker::WorkerLink;

/// A reply to a request that wants to use the model.
pub(super) type LeaseReply = oneshot::Sender<Result<WorkerLink, SupervisorError>>;

/// The model's worker process.
#[derive(Debug, Clone, Default)]
pub(super) enum Worker {
    /// None runs (the model may still be resident).
    #[default]
    Stopped,
    /// Started for a request; not answering yet.
    Starting,
    /// Serving since then.
    Running(WorkerLink, Instant),
}

/// One model's state in the supervisor.
pub(super) struct Slot {
    pub(super) entry: CatalogEntry,
    pub(super) state: ModelState,
    pub(super) failure: Option<String>,
    pub(super) last_used: Option<SystemTime>,
    pub(super) pinned: bool,
    /// Requests using the model right now (inference); a busy model is never evicted.
    pub(super) busy: u32,
    pub(super) resident_bytes: u64,
    pub(super) actor: Option<ModelHandle>,
    /// Generation of the current load; reports of older loads are ignored.
    pub(super) load_generation: u64,
    /// Present while a load is queued or running: every waiter watches it.
    pub(super) status: Option<watch::Sender<LoadStatus>>,
    pub(super) unload_waiters: Vec<oneshot::Sender<Result<ModelView, SupervisorError>>>,
    /// Requests waiting for the model to be ready in order to use it: each
    /// becomes busy the moment it is, before any queued load can evict it.
    pub(super) acquire_waiters: Vec<LeaseReply>,
    /// Requests (already counted busy) waiting for the worker to serve.
    pub(super) worker_waiters: Vec<LeaseReply>,
    /// The worker process.
    pub(super) worker: Worker,
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
}

impl Slot {
    pub(super) fn new(entry: CatalogEntry) -> Self {
        let (state, failure) = match &entry.info {
            Ok(_) => (ModelState::Discovered, None),
            Err(reason) => (ModelState::Failed, Some(reason.clone())),
        };
        Slot {
            entry,
            state,
            failure,
            last_used: None,
            pinned: false,
            busy: 0,
            resident_bytes: 0,
            actor: None,
            load_generation: 0,
            status: None,
            unload_waiters: Vec::new(),
            acquire_waiters: Vec::new(),
            worker_waiters: Vec::new(),
            worker: Worker::Stopped,
            crashes: CrashRecord::default(),
            removed: false,
            aliases: Vec::new(),
            reload_when_released: false,
            settings: crate::settings::Effective::default(),
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
            last_used: self.last_used,
            pinned: self.pinned,
            resident_bytes: self.resident_bytes,
            worker_pid: match &self.worker {
                Worker::Running(link, _) => Some(link.pid),
                _ => None,
            },
            aliases: self.aliases.clone(),
            settings: self.settings.clone(),
        }
    }

    /// Whether the LRU may take this model's slot.
    pub(super) fn evictable(&self) -> bool {
        self.state == ModelState::Ready && !self.pinned && self.busy == 0
    }
}
